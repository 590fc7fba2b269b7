"""The campaign engine: a Pyramid include that builds on prefcenter."""

from typing import Any


def includeme(config: Any) -> None:
    config.include(".routes")
