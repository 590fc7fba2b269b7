"""Every route of the campaign engine, in one place."""

from typing import Any


def includeme(config: Any) -> None:
    config.add_route("sendgrid_events", "/webhooks/sendgrid")
