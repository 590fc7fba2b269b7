"""The loyalty API's views: gather the validated input, call one service, shape the answer.

Each view takes a :class:`~prefcenter.api.security.Call` (authorized and validated against
openapi.yaml by :func:`~prefcenter.api.security.api_view`) and returns a Reply.
"""

from __future__ import annotations

import datetime as dt
import uuid

from .. import explanations, policy
from ..errors import InvalidInput
from ..models import Customer
from ..services import contacts, customers, interactions, pressure, topics, webhooks
from . import representations as shown
from .problems import ApiProblem
from .security import Call, Reply


def _customer(call: Call, *, with_preferences: bool = False) -> Customer:
    customer = customers.get_customer(
        call.session, call.params["external_id"], with_preferences=with_preferences
    )
    if customer is None:
        raise ApiProblem(404, f"No customer has the external id {call.params['external_id']!r}.")
    return customer


def _rejected(exc: InvalidInput) -> ApiProblem:
    return ApiProblem.invalid(exc)


# --- customers --------------------------------------------------------------------------------


def put_customer(call: Call) -> Reply:
    try:
        customer, created = customers.upsert_customer(
            call.session,
            call.params["external_id"],
            call.body,
            call.actor,
            cfg=call.config.consent,
            now=call.now,
        )
    except InvalidInput as exc:
        raise _rejected(exc) from None
    return Reply(201 if created else 200, shown.customer_json(customer))


def get_customer(call: Call) -> Reply:
    return Reply(200, shown.customer_json(_customer(call)))


def list_customers(call: Call) -> Reply:
    try:
        page, following = customers.list_customers(
            call.session, cursor=call.params.get("cursor"), limit=call.params["limit"]
        )
    except InvalidInput as exc:
        raise ApiProblem(400, "A query parameter is invalid.", exc.errors, in_query=True) from None
    return Reply(
        200, {"customers": [shown.customer_json(c) for c in page], "next_cursor": following}
    )


# --- preferences ------------------------------------------------------------------------------


def get_preferences(call: Call) -> Reply:
    found = customers.read_preferences(call.session, call.params["external_id"])
    if found is None:
        raise ApiProblem(404, f"No customer has the external id {call.params['external_id']!r}.")
    return Reply(200, shown.preferences_json(found, call.config.consent))


def patch_preferences(call: Call) -> Reply:
    customer = _customer(call, with_preferences=True)
    by_key = {t.key: t for t in topics.list_topics(call.session)}
    try:
        challenges = customers.apply_preference_changes(
            call.session,
            customer,
            call.body,
            by_key,
            call.actor,
            cfg=call.config.consent,
            secret=call.config.secret,
            now=call.now,
        )
    except InvalidInput as exc:
        raise _rejected(exc) from None
    body = shown.preferences_json(
        customers.preferences_shown(customer, topics.list_topics(call.session)),
        call.config.consent,
    )
    body["confirmations"] = [
        {"channel": c.channel, "status": "confirmation_sent", "expires_at": shown.iso(c.expires_at)}
        for c in challenges
    ]
    return Reply(200, body)


def get_decision(call: Call) -> Reply:
    customer = _customer(call)
    topic = topics.get_topic(call.session, call.params["topic"])
    if topic is None:
        raise ApiProblem(
            400,
            "A query parameter is invalid.",
            InvalidInput.one("topic", call.params["topic"], "is not a topic", "unknown").errors,
            in_query=True,
        )
    told = explanations.explain(
        call.session,
        customer,
        call.params["channel"],
        topic,
        call.params.get("kind") or topic.kind,
        call.now,
        cfg=call.config.consent,
        locale=call.params.get("locale"),
    )
    decision = told.decision
    return Reply(
        200,
        {
            "decision": decision.decision,
            "channel": decision.channel,
            "reason": decision.reason,
            "until": shown.iso(decision.until),
            "summary": told.summary,
            "explanation": [
                {"rule": line.rule, "passed": line.passed, "text": line.text} for line in told.lines
            ],
        },
    )


# --- interactions and alerts ------------------------------------------------------------------


def post_interactions(call: Call) -> Reply:
    items = [
        interactions.NewInteraction(
            external_id=item["external_id"],
            kind=item["kind"],
            occurred_at=dt.datetime.fromisoformat(item["occurred_at"]),
            idempotency_key=item["idempotency_key"],
            data=item.get("data") or {},
        )
        for item in call.body["interactions"]
    ]
    outcomes = interactions.ingest(call.session, f"api:{call.api_key.prefix}", items, now=call.now)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("created", "duplicate")}
    return Reply(
        200,
        {
            "created": counts["created"],
            "duplicates": counts["duplicate"],
            "unknown_customers": sum(o.status == interactions.UNKNOWN_CUSTOMER for o in outcomes),
            "results": [
                {"index": o.index, "idempotency_key": o.idempotency_key, "status": o.status}
                for o in outcomes
            ],
        },
    )


def post_alert(call: Call) -> Reply:
    body = call.body
    customer = customers.get_customer(call.session, body["external_id"])
    topic = topics.get_topic(call.session, body["topic"])
    errors = []
    if customer is None:
        errors += InvalidInput.one(
            "external_id", body["external_id"], "is not a customer", "unknown"
        ).errors
    if topic is None or topic.kind != "alert" or not topic.active:
        errors += InvalidInput.one(
            "topic", body["topic"], "is not an active alert topic", "not_alert_topic"
        ).errors
    if errors or customer is None or topic is None:
        raise ApiProblem(422, "The alert was rejected; nothing was changed.", errors)
    alert_id = str(uuid.uuid4())
    channels = body.get("channels") or list(call.config.consent.default_channel_order)
    message = policy.Message.for_topic(topic, channels, "alert", message_ref=f"alert:{alert_id}")
    decision = contacts.reserve(call.session, customer, message, call.now, cfg=call.config.consent)
    return Reply(
        200,
        {
            "alert_id": alert_id,
            "decision": decision.decision,
            "channel": decision.channel,
            "reason": decision.reason,
            "until": shown.iso(decision.until),
            "text": body["text"],
        },
    )


# --- GDPR ---------------------------------------------------------------------------------------


def export_customer(call: Call) -> Reply:
    from ..services import gdpr

    return Reply(200, gdpr.export_customer(call.session, _customer(call)))


def erase_customer(call: Call) -> Reply:
    from ..services import gdpr

    gdpr.erase_customer(
        call.session, _customer(call), call.actor, cfg=call.config.consent, now=call.now
    )
    return Reply(204)


# --- administration ---------------------------------------------------------------------------


def list_topics(call: Call) -> Reply:
    return Reply(200, {"topics": [shown.topic_json(t) for t in topics.list_topics(call.session)]})


def put_topic(call: Call) -> Reply:
    try:
        topic, created = topics.upsert_topic(call.session, call.params["key"], call.body)
    except InvalidInput as exc:
        raise _rejected(exc) from None
    return Reply(201 if created else 200, shown.topic_json(topic))


def get_pressure_policy(call: Call) -> Reply:
    return Reply(200, {"rules": [r.as_dict() for r in pressure.current_rules(call.session)]})


def put_pressure_policy(call: Call) -> Reply:
    try:
        rules = pressure.replace_rules(call.session, call.body["rules"])
    except InvalidInput as exc:
        raise _rejected(exc) from None
    return Reply(200, {"rules": [r.as_dict() for r in rules]})


def list_webhooks(call: Call) -> Reply:
    found = webhooks.list_endpoints(call.session, call.api_key)
    return Reply(200, {"webhooks": [shown.webhook_json(e) for e in found]})


def post_webhook(call: Call) -> Reply:
    try:
        endpoint = webhooks.register_endpoint(
            call.session,
            call.api_key,
            call.body["url"],
            call.body.get("events"),
            allow_private=call.config.allow_private_webhooks,
        )
    except InvalidInput as exc:
        raise _rejected(exc) from None
    secret = webhooks.signing_secret(call.config.secret, endpoint.id)
    return Reply(201, shown.webhook_json(endpoint, secret=secret))


def delete_webhook(call: Call) -> Reply:
    if not webhooks.delete_endpoint(
        call.session, call.api_key, uuid.UUID(call.params["webhook_id"])
    ):
        raise ApiProblem(404, "No such webhook endpoint for this API key.")
    return Reply(204)
