"""The campaign engine: a Pyramid include that builds on prefcenter."""

from typing import Any

from . import models  # noqa: F401  (register the engine's tables on prefcenter's Base)


def includeme(config: Any) -> None:
    from .tasks import build_dispatcher

    config.include(".routes")
    # Read the settings once: the API views and the webhook share the consent settings.
    dispatcher = build_dispatcher(config.get_settings())
    _webhooks(config, dispatcher.cfg)
    _api(config, dispatcher)
    interval = float(config.get_settings().get("prefcenter.scheduler.interval", 5))
    config.registry.setdefault("in_process_services", []).append(
        lambda: _start_scheduler(config.registry, interval)
    )


def _start_scheduler(registry: Any, interval: float) -> Any:
    from .scheduler import Scheduler

    scheduler = Scheduler(interval).start()
    registry["campaign_scheduler"] = scheduler
    return scheduler.stop


def _webhooks(config: Any, cfg: Any) -> None:
    from .events import WebhookConfig, WebhookSettings
    from .views.webhooks import sendgrid_events

    config.registry["campaigns.webhook"] = WebhookConfig(
        WebhookSettings.from_settings(config.get_settings()), cfg
    )
    config.add_view(
        sendgrid_events,
        route_name="sendgrid_events",
        request_method="POST",
        renderer="json",
        require_csrf=False,  # SendGrid signs its requests; no cookie, nothing to forge
    )
    from .inbound import InboundSettings
    from .views.inbound import sendgrid_inbound

    config.registry["campaigns.inbound"] = InboundSettings.from_settings(config.get_settings())
    config.add_view(
        sendgrid_inbound,
        route_name="sendgrid_inbound",
        request_method="POST",
        renderer="json",
        require_csrf=False,  # basic auth with a secret; no cookie, nothing to forge
    )


def _api(config: Any, dispatcher: Any) -> None:
    from prefcenter.api import add_operations

    from .tasks import build_launch_settings
    from .views.api import FRAGMENT, OPERATIONS, EngineConfig

    launch = build_launch_settings(config.get_settings(), dispatcher.cfg)
    config.registry["campaigns.engine"] = EngineConfig(dispatcher, launch)
    add_operations(config, FRAGMENT, OPERATIONS)
