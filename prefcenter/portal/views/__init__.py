"""Portal views: each gathers input, calls one service, and renders or redirects."""
