"""Every route of the campaign engine, in one place."""

from typing import Any


def includeme(config: Any) -> None:
    """The campaign engine adds its back-office and API routes here."""
