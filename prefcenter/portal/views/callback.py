"""Ask to be called back: a business day and a slot inside business hours."""

from __future__ import annotations

import uuid
from typing import Any

from pyramid.httpexceptions import HTTPSeeOther
from pyramid.view import view_config

from ...consent_settings import format_minute
from ...errors import InvalidInput
from ...models import CallbackRequest, Customer
from ...services.callbacks import request_callback
from ..auth import require_customer
from ..forms import callback_day, whole_number
from ..rendering import zone_of
from .common import portal_settings, rejected, utcnow

PAGE = "prefcenter.portal:templates/callback.html"


def _page(request: Any, customer: Customer, errors: list[str], **extra: Any) -> dict[str, Any]:
    hours = portal_settings(request).business_hours
    today = utcnow().astimezone(zone_of(request)).date()
    return {
        "errors": errors,
        "days": hours.open_days(today),
        "slots": [(s, f"{format_minute(s)}-{format_minute(e)}") for s, e in hours.slots()],
        "hours": f"{format_minute(hours.start)}-{format_minute(hours.end)}",
        "phone": request.POST.get("phone", customer.phone or ""),
        "note": request.POST.get("note", ""),
        # After an error the day and slot chosen stay chosen.
        "chosen_day": request.POST.get("day", ""),
        "chosen_slot": request.POST.get("slot", ""),
        "done": None,
        **extra,
    }


@view_config(route_name="portal_callback", request_method="GET", renderer=PAGE)
def callback_form(request: Any) -> dict[str, Any]:
    customer = require_customer(request)
    return _page(request, customer, [], done=_requested(request, customer))


def _requested(request: Any, customer: Customer) -> dict[str, Any] | None:
    """The confirmation after the redirect: the customer's own open request, if named."""
    try:
        callback_id = uuid.UUID(request.GET.get("requested", ""))
    except ValueError:
        return None
    callback = request.dbsession.get(CallbackRequest, callback_id)
    if callback is None or callback.customer_id != customer.id or callback.status != "requested":
        return None
    return {
        "day": callback.day,
        "slot": f"{format_minute(callback.slot_start)}-{format_minute(callback.slot_end)}",
        "phone": callback.phone,
    }


@view_config(route_name="portal_callback", request_method="POST", renderer=PAGE)
def ask_callback(request: Any) -> Any:
    customer = require_customer(request)
    try:
        callback = request_callback(
            request.dbsession,
            customer,
            callback_day(request.POST.get("day", "")),
            whole_number(request.POST.get("slot", ""), "slot", "bad_slot"),
            hours=portal_settings(request).business_hours,
            phone=request.POST.get("phone"),
            note=request.POST.get("note"),
            now=utcnow(),
        )
    except InvalidInput as error:
        return _page(request, customer, rejected(request, error))
    request.dbsession.flush()
    # Post/redirect/get: reloading the confirmation does not send the form again.
    return HTTPSeeOther(request.route_url("portal_callback", _query={"requested": callback.id}))
