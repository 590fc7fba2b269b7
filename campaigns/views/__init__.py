"""The campaign engine's HTTP views (thin: gather input, call one service, answer)."""
