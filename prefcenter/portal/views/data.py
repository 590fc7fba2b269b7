"""My data: download everything held (JSON) and erase the account, with a confirmation."""

from __future__ import annotations

import json
from typing import Any

from pyramid.response import Response
from pyramid.view import view_config

from ...i18n import _
from ...services import gdpr
from ..auth import actor_for, log_out, require_customer
from ..rendering import translator
from .common import portal_settings, utcnow

TEMPLATES = "prefcenter.portal:templates/"


@view_config(route_name="portal_data", request_method="GET", renderer=TEMPLATES + "data.html")
def data_page(request: Any) -> dict[str, Any]:
    require_customer(request)
    return {}


@view_config(route_name="portal_export", request_method="GET")
def export(request: Any) -> Response:
    customer = require_customer(request)
    document = gdpr.export_customer(request.dbsession, customer)
    response = Response(
        json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True),
        content_type="application/json",
        charset="utf-8",
    )
    response.content_disposition = 'attachment; filename="my-data.json"'
    response.cache_control = "no-store"
    return response


@view_config(route_name="portal_erase", request_method="GET", renderer=TEMPLATES + "erase.html")
def erase_form(request: Any) -> dict[str, Any]:
    require_customer(request)
    return {"errors": [], "erased": False}


@view_config(route_name="portal_erase", request_method="POST", renderer=TEMPLATES + "erase.html")
def erase(request: Any) -> dict[str, Any]:
    customer = require_customer(request)
    if request.POST.get("confirm") != "yes":
        request.response.status_int = 400
        t = translator(request)
        return {
            "errors": [t(_("Tick the box to confirm that you want to erase your account."))],
            "erased": False,
        }
    gdpr.erase_customer(
        request.dbsession,
        customer,
        actor_for(request, customer),
        cfg=portal_settings(request).consent,
        now=utcnow(),
    )
    lang = request.localizer.locale_name
    log_out(request)
    request.session["lang"] = lang
    return {"errors": [], "erased": True}
