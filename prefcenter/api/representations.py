"""How the API shows customers, preferences, topics and webhooks (plain dicts for JSON)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from ..consent_settings import ConsentSettings, format_minute
from ..models import Customer, Topic, WebhookEndpoint
from ..models.vocabulary import CHANNELS
from ..services.preferences import consent_for


def iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if moment else None


def postal_address(customer: Customer) -> dict[str, Any] | None:
    lines = {
        "line1": customer.postal_line1,
        "line2": customer.postal_line2,
        "postal_code": customer.postal_code,
        "city": customer.city,
        "country": customer.country,
    }
    return lines if any(lines.values()) else None


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


def _channel_address(customer: Customer, channel: str) -> Any:
    if channel == "email":
        return customer.email
    if channel == "post":
        return postal_address(customer)
    return customer.phone


def preferences_json(
    customer: Customer, topics: Sequence[Topic], cfg: ConsentSettings
) -> dict[str, Any]:
    channels = {}
    for channel in CHANNELS:
        consent = consent_for(customer, channel)
        channels[channel] = {
            "status": consent.status if consent else "none",
            "address": _channel_address(customer, channel),
        }
    subscriptions = {s.topic_id: s for s in customer.subscriptions}
    receives: dict[str, bool] = {}
    topic_frequency: dict[str, str] = {}
    for topic in topics:
        subscription = subscriptions.get(topic.id)
        if subscription is None:
            receives[topic.key] = topic.regime == "opt_out"
            continue
        receives[topic.key] = subscription.status == "subscribed"
        if subscription.frequency:
            topic_frequency[topic.key] = subscription.frequency
    preference = customer.preference
    start, end = cfg.default_contact_hours
    if preference is not None and preference.contact_start is not None:
        start, end = preference.contact_start, preference.contact_end or 0
    order = preference.channels if preference is not None else []
    return {
        "channels": channels,
        "topics": receives,
        "frequency": preference.frequency if preference else "any",
        "topic_frequency": topic_frequency,
        "paused_until": iso(preference.paused_until) if preference else None,
        "contact_hours": {"start": format_minute(start), "end": format_minute(end)},
        "timezone": customer.timezone,
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
