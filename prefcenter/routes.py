"""Every route of the preference center, in one place.

Sections: site, portal (customers), API (loyalty programs). A test pins the table.
"""

from typing import Any


def includeme(config: Any) -> None:
    # -- site
    config.add_static_view("static", "prefcenter:static", cache_max_age=3600)
    config.add_route("home", "/")
    config.add_route("healthz", "/healthz")

    # -- portal (customers) -- BEGIN portal routes
    config.add_route("portal_link", "/p/{token}")
    config.add_route("portal_login", "/portal/login")
    config.add_route("portal_logout", "/portal/logout")
    config.add_route("portal_home", "/portal")
    config.add_route("portal_channels", "/portal/channels")
    config.add_route("portal_address", "/portal/address/{kind}")
    config.add_route("portal_consent", "/portal/channels/{channel}/{action}")
    config.add_route("portal_confirm_email", "/portal/confirm/{token}")
    config.add_route("portal_topics", "/portal/topics")
    config.add_route("portal_frequency", "/portal/frequency")
    config.add_route("portal_pause", "/portal/pause")
    config.add_route("portal_resume", "/portal/resume")
    config.add_route("portal_hours", "/portal/hours")
    config.add_route("portal_order", "/portal/order")
    config.add_route("portal_callback", "/portal/callback")
    config.add_route("portal_data", "/portal/data")
    config.add_route("portal_export", "/portal/data/export.json")
    config.add_route("portal_erase", "/portal/data/erase")
    # Signed links in every message (no login); POST is RFC 8058 one-click.
    config.add_route("unsubscribe", "/u/{token}")
    config.add_route("unsubscribe_all", "/u/{token}/all")
    # -- portal (customers) -- END portal routes

    # -- API /api/v1 (loyalty programs) -- BEGIN api routes
    config.add_route("api_openapi", "/api/v1/openapi.yaml")
    config.add_route("api_docs", "/api/v1/docs")
    config.add_route("api_customers", "/api/v1/customers")
    config.add_route("api_customer", "/api/v1/customers/{external_id}")
    config.add_route("api_preferences", "/api/v1/customers/{external_id}/preferences")
    config.add_route("api_decision", "/api/v1/customers/{external_id}/decision")
    config.add_route("api_export", "/api/v1/customers/{external_id}/export")
    config.add_route("api_interactions", "/api/v1/interactions")
    config.add_route("api_alerts", "/api/v1/alerts")
    config.add_route("api_topics", "/api/v1/topics")
    config.add_route("api_topic", "/api/v1/topics/{key}")
    config.add_route("api_pressure_policy", "/api/v1/pressure-policy")
    config.add_route("api_webhooks", "/api/v1/webhooks")
    config.add_route("api_webhook", "/api/v1/webhooks/{webhook_id}")
    # -- API /api/v1 (loyalty programs) -- END api routes
