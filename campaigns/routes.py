"""Every route of the campaign engine, in one place."""

from typing import Any


def includeme(config: Any) -> None:
    config.add_route("sendgrid_events", "/webhooks/sendgrid")
    config.add_route("sendgrid_inbound", "/webhooks/sendgrid/inbound")
    config.add_route("api_campaigns", "/api/v1/campaigns")
    config.add_route("api_campaign", "/api/v1/campaigns/{campaign_id}")
    for action in ("launch", "pause", "resume", "cancel", "preview", "forecast"):
        config.add_route(f"api_campaign_{action}", f"/api/v1/campaigns/{{campaign_id}}/{action}")
    config.add_route("api_segment_count", "/api/v1/segments/count")
    config.add_route("api_programs", "/api/v1/reengagement-programs")
    config.add_route("api_program", "/api/v1/reengagement-programs/{program_id}")
