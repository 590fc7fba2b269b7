"""The campaign engine: a Pyramid include that builds on prefcenter."""

from typing import Any

from . import models  # noqa: F401  (register the engine's tables on prefcenter's Base)


def includeme(config: Any) -> None:
    config.include(".routes")
    _webhooks(config)
    _api(config)
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


def _api(config: Any) -> None:
    from prefcenter.api import add_operations

    from . import services
    from .tasks import build_dispatcher
    from .views.api import FRAGMENT, OPERATIONS, EngineConfig

    settings = config.get_settings()
    dispatcher = build_dispatcher(settings)
    days = int(settings.get("prefcenter.dormancy.days", services.segments.DEFAULT_DORMANCY_DAYS))
    config.registry["campaigns.engine"] = EngineConfig(
        dispatcher, services.Settings(dispatcher.cfg, days)
    )
    add_operations(config, FRAGMENT, OPERATIONS)
