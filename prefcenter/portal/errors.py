"""Rejected input as sentences the customer can act on, in their language."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..errors import InvalidField, InvalidInput
from ..explanations import CHANNEL_NAMES
from ..i18n import _

MESSAGES = {
    "invalid_email": _("This is not a valid email address."),
    "invalid_phone": _(
        "This is not a valid phone number: use the international form, +33612345678."
    ),
    "invalid_postal": _("This is not a complete postal address."),
    "required": _("This field is required."),
    "invalid": _("This value is not valid."),
    "too_long": _("This is too long."),
    "no_address": _("Add an address for this channel first."),
    "suppressed": _("This address cannot receive messages from us."),
    "already_granted": _("This channel is already confirmed."),
    "erased": _("This account was erased."),
    "unknown_channel": _("This is not one of our channels."),
    "unknown_frequency": _("Choose one of the frequencies offered."),
    "unknown_topic": _("This topic does not exist."),
    "inactive": _("This topic is no longer offered."),
    "not_subscribed": _("Subscribe to this topic before choosing how often you get it."),
    "past": _("This date or time is already past."),
    "invalid_datetime": _("This is not a valid date."),
    "unknown": _("This is not a time zone we know (for example Europe/Paris)."),
    "incomplete": _("Give both a start and an end time."),
    "out_of_range": _("This time is not valid."),
    "empty_window": _("The start and end times must differ."),
    "duplicate": _("Each channel can appear only once in the order."),
    "bad_day": _("We do not call back on that day: choose a business day."),
    "bad_slot": _("Choose one of the slots offered."),
    "no_double_opt_in": _("This channel does not need a confirmation."),
    "empty_address": _("Enter an address, or use “Remove” to delete the one you have."),
    "confirm_remove": _("Tick the box to confirm that you want this address removed."),
    "subscribe_choice": _("Use the Subscribe or Unsubscribe button."),
}
GENERIC = _("This value was refused.")

FIELD_NAMES = {
    "email": _("Email address"),
    "phone": _("Phone number"),
    "postal": _("Postal address"),
    "channel": _("Channel"),
    "topic": _("Topic"),
    "frequency": _("Frequency"),
    "paused_until": _("Pause"),
    "contact_hours": _("Contact hours"),
    "timezone": _("Time zone"),
    "channel_order": _("Channel order"),
    "day": _("Day"),
    "slot": _("Time slot"),
    "note": _("Message"),
    "code": _("Code"),
    "customer": _("Account"),
    "subscribed": _("Subscription"),
    "consent": _("Consent"),
    "action": _("Action"),
}


def field_label(field: str, t: Callable[..., str]) -> str:
    head = field.split(".")[0]
    if head in ("topic", "topic_frequency"):
        return t(FIELD_NAMES["topic"])
    if head == "postal":
        return t(FIELD_NAMES["postal"])
    if head in ("sms",):
        return t(FIELD_NAMES["phone"])
    return t(FIELD_NAMES.get(head, FIELD_NAMES["channel"]))


WITH_VALUE = _("${field} — “${value}”: ${reason}")
# Longer values are cut (a pasted paragraph must not fill the error box).
MAX_SHOWN = 60
# Values that mean nothing to the customer (an account id).
HIDDEN_VALUES = ("customer",)


def messages(
    error: InvalidInput, t: Callable[..., str], shown: Mapping[str, str] | None = None
) -> list[str]:
    """One sentence per rejected field, naming the value that was refused:
    "Phone number — “12”: This is not a valid phone number…".

    ``shown`` replaces a field's value by what the customer typed, when the service saw
    it in another form (minutes for contact hours, a UTC time for a pause).
    """
    return [_sentence(e, t, (shown or {}).get(e.field)) for e in error.errors]


def shown_value(error: InvalidField, t: Callable[..., str]) -> str | None:
    """The rejected value as the customer would recognise it, or None to name none."""
    value = error.value
    if error.field.split(".")[0] in HIDDEN_VALUES or value is None:
        return None
    if isinstance(value, Mapping | bool):
        return None
    if error.field == "channel_order" and isinstance(value, str):
        value = ", ".join(
            t(CHANNEL_NAMES[c]) if c in CHANNEL_NAMES else c for c in value.split(",")
        )
    if isinstance(value, list | tuple):
        value = ", ".join(str(v) for v in value)
    text = " ".join(str(value).split())
    if not text:
        return None
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def _sentence(error: InvalidField, t: Callable[..., str], typed: str | None) -> str:
    message = t(MESSAGES.get(error.code or "", GENERIC))
    field = field_label(error.field, t)
    value = typed.strip() if typed is not None and typed.strip() else shown_value(error, t)
    if value is None:
        return f"{field} — {message}"
    return t(WITH_VALUE, field=field, value=value, reason=message)
