"""The campaign engine: a Pyramid include that builds on prefcenter."""

from typing import Any

from . import models  # noqa: F401  (register the engine's tables on prefcenter's Base)


def includeme(config: Any) -> None:
    config.include(".routes")
    _webhooks(config)
    interval = float(config.get_settings().get("prefcenter.scheduler.interval", 5))
    config.registry.setdefault("in_process_services", []).append(
        lambda: _start_scheduler(config.registry, interval)
    )


def _start_scheduler(registry: Any, interval: float) -> Any:
    from .scheduler import Scheduler

    scheduler = Scheduler(interval).start()
    registry["campaign_scheduler"] = scheduler
    return scheduler.stop


def _webhooks(config: Any) -> None:
    from .events import WebhookConfig
    from .views.webhooks import sendgrid_events

    config.registry["campaigns.webhook"] = WebhookConfig.from_settings(config.get_settings())
    config.add_view(
        sendgrid_events,
        route_name="sendgrid_events",
        request_method="POST",
        renderer="json",
        require_csrf=False,  # SendGrid signs its requests; no cookie, nothing to forge
    )
