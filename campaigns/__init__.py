"""The campaign engine: a Pyramid include that builds on prefcenter."""

from typing import Any

from . import models  # noqa: F401  (register the engine's tables on prefcenter's Base)


def includeme(config: Any) -> None:
    config.include(".routes")
