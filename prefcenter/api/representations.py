"""How the API shows customers, preferences, topics and webhooks (plain dicts for JSON)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..consent_settings import ConsentSettings, format_minute
from ..models import Customer, Topic, WebhookEndpoint
from ..models.vocabulary import CHANNELS
from ..services import customers


def iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if moment else None


def postal_address(customer: Customer) -> dict[str, Any] | None:
    return customers.postal_address(
        customer.postal_line1,
        customer.postal_line2,
        customer.postal_code,
        customer.city,
        customer.country,
    )


def customer_json(customer: Customer) -> dict[str, Any]:
    return {
        "id": str(customer.id),
        "external_id": customer.external_id,
        "email": customer.email,
        "phone": customer.phone,
        "first_name": customer.first_name,
        "last_name": customer.last_name,
        "locale": customer.locale,
        "timezone": customer.timezone,
        "postal_address": postal_address(customer),
        "attributes": customer.attributes or {},
        "last_interaction_at": iso(customer.last_interaction_at),
        "created_at": iso(customer.created_at),
        "updated_at": iso(customer.updated_at),
    }


def preferences_json(shown: customers.PreferencesShown, cfg: ConsentSettings) -> dict[str, Any]:
    addresses = {"email": shown.email, "post": shown.postal_address}
    channels = {
        channel: {
            "status": shown.consents.get(channel, "none"),
            "address": addresses.get(channel, shown.phone),
        }
        for channel in CHANNELS
    }
    receives: dict[str, bool] = {}
    topic_frequency: dict[str, str] = {}
    for topic in shown.topics:
        if topic.status is None:
            receives[topic.key] = topic.regime == "opt_out"
            continue
        receives[topic.key] = topic.status == "subscribed"
        if topic.frequency:
            topic_frequency[topic.key] = topic.frequency
    start, end = cfg.default_contact_hours
    if shown.has_preference and shown.contact_start is not None:
        start, end = shown.contact_start, shown.contact_end or 0
    order = [c for c in (shown.channel_order or "").split(",") if c]
    return {
        "channels": channels,
        "topics": receives,
        "frequency": shown.frequency if shown.has_preference else "any",
        "topic_frequency": topic_frequency,
        "paused_until": iso(shown.paused_until),
        "contact_hours": {"start": format_minute(start), "end": format_minute(end)},
        "timezone": shown.timezone,
        "channel_order": order or list(cfg.default_channel_order),
    }


def topic_json(topic: Topic) -> dict[str, Any]:
    return {
        "key": topic.key,
        "names": topic.names or {},
        "descriptions": topic.descriptions or {},
        "kind": topic.kind,
        "regime": topic.regime,
        "active": topic.active,
    }


def webhook_json(endpoint: WebhookEndpoint, secret: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(endpoint.id),
        "url": endpoint.url,
        "events": list(endpoint.events),
        "active": endpoint.active,
        "created_at": iso(endpoint.created_at),
    }
    if secret is not None:
        body["secret"] = secret
    return body
