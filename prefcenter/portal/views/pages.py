"""The logged-in pages: what you will receive, channels, topics."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pyramid.httpexceptions import HTTPNotFound
from pyramid.view import view_config

from ... import tokens
from ...errors import InvalidInput
from ...explanations import CHANNEL_NAMES
from ...i18n import _
from ...models import Customer, Topic
from ...models.vocabulary import CHANNELS
from ...services import preferences
from ...services.preferences import ConfirmResult
from ..auth import actor_for, require_customer
from ..courier import PortalMessage
from ..rendering import translator
from ..summary import active_topics, channel_states, outlook, receives_topic, subscription_status
from .common import back_to, portal_settings, rejected, submitted, utcnow

TEMPLATES = "prefcenter.portal:templates/"
CONSENT_NOTICE = _("Yes, I agree to receive marketing messages by ${channel}.")
CONFIRM_MESSAGES = {
    ConfirmResult.CONFIRMED: _("Thank you: your address is confirmed."),
    ConfirmResult.WRONG_CODE: _("This code is not the one we sent. Check it and try again."),
    ConfirmResult.EXPIRED: _("This code has expired: ask for a new one."),
    ConfirmResult.TOO_MANY_ATTEMPTS: _("Too many wrong codes: ask for a new one."),
    ConfirmResult.NO_PENDING: _("There is nothing to confirm for this channel."),
    ConfirmResult.ADDRESS_CHANGED: _(
        "The address changed since this code was sent: ask for a new one."
    ),
}


@view_config(route_name="portal_home", request_method="GET", renderer=TEMPLATES + "home.html")
def home(request: Any) -> dict[str, Any]:
    customer = require_customer(request)
    settings = portal_settings(request)
    return {
        "outlook": outlook(
            request.dbsession,
            customer,
            utcnow(),
            cfg=settings.consent,
            locale=request.localizer.locale_name,
        ),
        "preference": customer.preference,
    }


def _channels_page(
    request: Any,
    customer: Customer,
    errors: list[str],
    typed: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The channels page; ``typed`` (by address kind) refills a form after an error."""
    states = channel_states(customer, portal_settings(request).consent)
    return {
        "typed": typed or {},
        "channels": states,
        "states": {state.channel: state for state in states},
        "errors": errors,
        "notice": CONSENT_NOTICE,
    }


@view_config(
    route_name="portal_channels", request_method="GET", renderer=TEMPLATES + "channels.html"
)
def channels(request: Any) -> dict[str, Any]:
    return _channels_page(request, require_customer(request), [])


def _address_value(kind: str, post: Any) -> Any:
    if kind == "postal":
        return {
            key: post.get(key, "") for key in ("line1", "line2", "postal_code", "city", "country")
        }
    return post.get(kind, "")


# The topics form's two buttons.
SUBSCRIBED = {"yes": True, "no": False}
# What the customer is told after changing an address, by what was sent to it.
ADDRESS_SAVED = _("Your address is saved.")
ADDRESS_UNCHANGED = _("Nothing changed: this is already your address.")
ADDRESS_REMOVED = _("The address is removed: we will no longer use it.")
NOTHING_TO_REMOVE = _("There was no address to remove.")
EMAIL_SENT = _("We sent you an email: open its link to confirm.")
SMS_SENT = _("We sent you a code by SMS: type it below to confirm.")
NEW_EMAIL_SENT = _(
    "Your email address is saved. We sent a confirmation email to ${address}: "
    "open its link to confirm it. Until then we do not write to this address."
)
NEW_PHONE_SENT = _(
    "Your phone number is saved. We sent a code by SMS to ${address}: type it below to "
    "confirm it. Until then we send no SMS to this number."
)
# The opt-in channel whose consent box sits on an address form.
CONSENT_OF_ADDRESS = {"email": "email", "phone": "sms"}


@view_config(
    route_name="portal_address", request_method="POST", renderer=TEMPLATES + "channels.html"
)
def change_address(request: Any) -> Any:
    """A new email, phone or postal address; confirmed channels using it need confirming
    again, so the confirmation is sent to the new address at once."""
    customer = require_customer(request)
    kind = request.matchdict["kind"]
    if kind not in preferences.ADDRESS_KINDS:
        raise HTTPNotFound()
    action, consent = request.POST.get("action", ""), request.POST.get("consent", "")
    if action not in ("", "remove") or consent not in ("", "yes"):
        field, value = ("action", action) if action not in ("", "remove") else ("consent", consent)
        error = InvalidInput.one(field, value, "is not one of the choices offered", "invalid")
        return _channels_page(request, customer, rejected(request, error))
    if action == "remove":
        return _remove_address(request, customer, kind)
    t = translator(request)
    settings = portal_settings(request)
    consent_channel = CONSENT_OF_ADDRESS.get(kind)
    notice = (
        t(CONSENT_NOTICE, channel=t(CHANNEL_NAMES[consent_channel]))
        if consent_channel and consent == "yes"
        else None
    )
    try:
        change = preferences.change_address(
            request.dbsession,
            customer,
            kind,
            _address_value(kind, request.POST),
            actor_for(request, customer),
            cfg=settings.consent,
            secret=settings.secret,
            notice_text=notice,
            now=utcnow(),
        )
    except InvalidInput as error:
        return _channels_page(
            request, customer, rejected(request, error), typed={kind: submitted(request)}
        )
    for challenge in change.challenges:
        _send_challenge(request, customer, challenge)
    channels_sent = {c.channel for c in change.challenges}
    if "email" in channels_sent:
        message = NEW_EMAIL_SENT if change.changed else EMAIL_SENT
        return back_to(request, "portal_channels", message, address=customer.email)
    if "sms" in channels_sent:
        message = NEW_PHONE_SENT if change.changed else SMS_SENT
        return back_to(request, "portal_channels", message, address=customer.phone)
    return back_to(
        request, "portal_channels", ADDRESS_SAVED if change.changed else ADDRESS_UNCHANGED
    )


def _remove_address(request: Any, customer: Customer, kind: str) -> Any:
    """Deleting an address is its own form, with a box to tick: never a blank field."""
    if request.POST.get("confirm_remove") != "yes":
        error = InvalidInput.one(
            kind, request.POST.get("confirm_remove", ""), "removal not confirmed", "confirm_remove"
        )
        return _channels_page(request, customer, rejected(request, error))
    removed = preferences.remove_address(
        request.dbsession,
        customer,
        kind,
        actor_for(request, customer),
        cfg=portal_settings(request).consent,
        now=utcnow(),
    )
    return back_to(request, "portal_channels", ADDRESS_REMOVED if removed else NOTHING_TO_REMOVE)


def _send_challenge(request: Any, customer: Customer, challenge: preferences.Challenge) -> None:
    if challenge.channel == "email":
        message = PortalMessage(
            kind="confirm_email",
            customer_id=customer.id,
            channel="email",
            to=customer.email or "",
            locale=request.localizer.locale_name,
            link=request.route_url("portal_confirm_email", token=challenge.token),
        )
    else:
        message = PortalMessage(
            kind="confirm_sms",
            customer_id=customer.id,
            channel="sms",
            to=customer.phone or "",
            locale=request.localizer.locale_name,
            code=challenge.code,
        )
    request.registry["portal.courier"].send(message)


@view_config(
    route_name="portal_consent", request_method="POST", renderer=TEMPLATES + "channels.html"
)
def change_consent(request: Any) -> Any:
    """Grant (starting a double opt-in for email and SMS), confirm a code, or refuse."""
    customer = require_customer(request)
    channel, action = request.matchdict["channel"], request.matchdict["action"]
    if channel not in CHANNELS or action not in ("grant", "confirm", "refuse"):
        raise HTTPNotFound()
    t = translator(request)
    settings = portal_settings(request)
    actor = actor_for(request, customer)
    try:
        if action == "refuse":
            preferences.refuse(
                request.dbsession, customer, channel, actor, now=utcnow(), source="portal"
            )
            return back_to(
                request, "portal_channels", _("Done: we will no longer use this channel.")
            )
        if action == "grant":
            notice = t(CONSENT_NOTICE, channel=t(CHANNEL_NAMES[channel]))
            challenge = preferences.grant_from_form(
                request.dbsession,
                customer,
                channel,
                actor,
                notice_text=notice,
                cfg=settings.consent,
                secret=settings.secret,
                now=utcnow(),
            )
            if challenge is None:
                return back_to(request, "portal_channels", _("Thank you: your choice is saved."))
            _send_challenge(request, customer, challenge)
            if challenge.channel == "email":
                return back_to(request, "portal_channels", EMAIL_SENT)
            return back_to(request, "portal_channels", SMS_SENT)
        result = preferences.confirm_double_opt_in(
            request.dbsession,
            customer,
            channel,
            request.POST.get("code", ""),
            actor,
            cfg=settings.consent,
            secret=settings.secret,
            now=utcnow(),
        )
    except InvalidInput as error:
        return _channels_page(request, customer, rejected(request, error))
    if result is ConfirmResult.CONFIRMED:
        return back_to(request, "portal_channels", CONFIRM_MESSAGES[result])
    # A wrong code is counted (it stops guessing), so this answer is not rolled back.
    request.response.status_int = 400
    return _channels_page(request, customer, [t(CONFIRM_MESSAGES[result])])


@view_config(
    route_name="portal_confirm_email",
    request_method="GET",
    renderer=TEMPLATES + "confirm_email.html",
)
def confirm_email_form(request: Any) -> dict[str, Any]:
    """The link in a confirmation email: a button, because mail scanners follow GET links."""
    try:
        preferences.double_opt_in_target(
            portal_settings(request).secret, request.matchdict["token"], now=utcnow()
        )
    except tokens.TokenExpired:
        request.response.status_int = 403
        return {"state": "expired"}
    except tokens.BadToken:
        request.response.status_int = 400
        return {"state": "invalid"}
    return {"state": "ask"}


@view_config(
    route_name="portal_confirm_email",
    request_method="POST",
    renderer=TEMPLATES + "confirm_email.html",
)
def confirm_email(request: Any) -> dict[str, Any]:
    settings = portal_settings(request)
    token = request.matchdict["token"]
    try:
        customer_id, channel = preferences.double_opt_in_target(
            settings.secret, token, now=utcnow()
        )
    except tokens.TokenExpired:
        request.response.status_int = 403
        return {"state": "expired"}
    except tokens.BadToken:
        request.response.status_int = 400
        return {"state": "invalid"}
    customer = request.dbsession.get(Customer, customer_id)
    if customer is None or customer.erased_at is not None:
        request.response.status_int = 400
        return {"state": "invalid"}
    result = preferences.confirm_double_opt_in(
        request.dbsession,
        customer,
        channel,
        token,
        actor_for(request, customer),
        cfg=settings.consent,
        secret=settings.secret,
        now=utcnow(),
    )
    if result is not ConfirmResult.CONFIRMED:
        request.response.status_int = 400
    return {
        "state": "done",
        "message": CONFIRM_MESSAGES[result],
        "confirmed": result is ConfirmResult.CONFIRMED,
    }


def _topics_page(request: Any, customer: Customer, errors: list[str]) -> dict[str, Any]:
    locale = request.localizer.locale_name
    rows = [
        {
            "topic": topic,
            "name": topic.name(locale),
            "description": (topic.descriptions or {}).get(locale)
            or (topic.descriptions or {}).get("fr")
            or "",
            "status": subscription_status(customer, topic),
            "receives": receives_topic(customer, topic),
        }
        for topic in active_topics(request.dbsession)
    ]
    return {"topics": rows, "errors": errors}


@view_config(route_name="portal_topics", request_method="GET", renderer=TEMPLATES + "topics.html")
def topics(request: Any) -> dict[str, Any]:
    return _topics_page(request, require_customer(request), [])


@view_config(route_name="portal_topics", request_method="POST", renderer=TEMPLATES + "topics.html")
def change_topic(request: Any) -> Any:
    customer = require_customer(request)
    key = request.POST.get("topic", "")
    topic = request.dbsession.scalar(sa.select(Topic).where(Topic.key == key))
    if topic is None:
        error = InvalidInput.one("topic", key, "is not a topic", "unknown_topic")
        return _topics_page(request, customer, rejected(request, error))
    choice = request.POST.get("subscribed", "")
    if choice not in SUBSCRIBED:
        error = InvalidInput.one(
            "subscribed", choice, "must be yes (subscribe) or no (unsubscribe)", "subscribe_choice"
        )
        return _topics_page(request, customer, rejected(request, error))
    subscribed = SUBSCRIBED[choice]
    try:
        preferences.set_subscription(
            request.dbsession,
            customer,
            topic,
            subscribed,
            actor_for(request, customer),
            now=utcnow(),
        )
    except InvalidInput as error:
        return _topics_page(request, customer, rejected(request, error))
    return back_to(
        request,
        "portal_topics",
        _("You are subscribed.") if subscribed else _("You are unsubscribed."),
    )
