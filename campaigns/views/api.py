"""The campaign engine's /api/v1 operations (thin: validated input in, one service call)."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from prefcenter.api.problems import ApiProblem
from prefcenter.api.security import Call, Reply
from prefcenter.errors import InvalidField, InvalidInput, NotFound
from prefcenter.models import Customer, Topic

from .. import dispatch, dormancy, segments, services
from ..models import Campaign, ReengagementProgram

FRAGMENT = Path(__file__).resolve().parent.parent / "api.yaml"


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """What the views need besides the request: links and transports, launch settings."""

    dispatcher: dispatch.Dispatcher
    launch: services.Settings


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def campaign_json(call: Call, campaign: Campaign) -> dict[str, Any]:
    topic = call.session.get_one(Topic, campaign.topic_id)
    return {
        "id": str(campaign.id),
        "name": campaign.name,
        "topic": topic.key,
        "kind": campaign.kind,
        "channels": list(campaign.channels),
        "segment": campaign.segment,
        "status": campaign.status,
        "schedule_at": _iso(campaign.schedule_at),
        "throttle_per_minute": campaign.throttle_per_minute,
        "planned_at": _iso(campaign.planned_at),
        "completed_at": _iso(campaign.completed_at),
        "created_at": _iso(campaign.created_at),
        "plan": dict(campaign.plan_counts or {}),
        "counts": dispatch.campaign_counts(call.session, campaign.id),
    }


def _engine(call: Call) -> Any:
    return call.request.registry["campaigns.engine"]


def _campaign(call: Call) -> Campaign:
    try:
        return services.get_campaign(call.session, uuid.UUID(str(call.params["campaign_id"])))
    except (NotFound, ValueError):
        raise ApiProblem(404, f"No campaign has the id {call.params['campaign_id']!r}.") from None


def post_campaign(call: Call) -> Reply:
    try:
        campaign = services.create_campaign(
            call.session, call.body, created_by=f"api_key:{call.api_key.prefix}"
        )
    except InvalidInput as exc:
        raise ApiProblem.invalid(exc) from None
    return Reply(201, campaign_json(call, campaign))


def get_campaign(call: Call) -> Reply:
    return Reply(200, campaign_json(call, _campaign(call)))


def _transition(action: str):
    def view(call: Call) -> Reply:
        campaign = _campaign(call)
        try:
            if action == "launch":
                services.launch(call.session, campaign, call.now, _engine(call).launch)
            elif action == "pause":
                services.pause(call.session, campaign)
            elif action == "resume":
                services.resume(call.session, campaign)
            else:
                services.cancel(call.session, campaign, call.now)
        except services.WrongState as exc:
            raise ApiProblem(409, f"{str(exc)[0].upper()}{str(exc)[1:]}.") from None
        call.session.flush()
        return Reply(200, campaign_json(call, campaign))

    view.__name__ = f"{action}_campaign"
    view.__doc__ = f"{action.capitalize()} the campaign."
    return view


def preview_campaign(call: Call) -> Reply:
    campaign = _campaign(call)
    customer = call.session.scalar(
        sa.select(Customer).where(Customer.external_id == call.params["external_id"])
    )
    if customer is None or customer.erased_at is not None:
        raise ApiProblem(404, f"No customer has the external id {call.params['external_id']!r}.")
    try:
        message = dispatch.preview(
            call.session,
            campaign,
            customer,
            call.params["channel"],
            _engine(call).dispatcher.links,
            call.now,
        )
    except InvalidInput as exc:
        raise ApiProblem.invalid(exc) from None
    return Reply(
        200,
        {
            "channel": message.channel,
            "to": message.to,
            "subject": message.subject,
            "text": message.text,
            "html": message.html,
            "headers": dict(message.headers),
        },
    )


def forecast_campaign(call: Call) -> Reply:
    campaign = _campaign(call)
    counts = services.forecast(call.session, campaign, call.now, _engine(call).launch)
    return Reply(200, counts.as_dict())


def count_segment(call: Call) -> Reply:
    try:
        count = segments.count(
            call.session,
            call.body["segment"],
            at=call.now,
            dormancy_days=_engine(call).launch.dormancy_days,
        )
    except segments.SegmentError as exc:
        problems = [
            InvalidField(f"/segment{p.field}", p.value, p.reason, p.code) for p in exc.errors
        ]
        raise ApiProblem.invalid(InvalidInput(problems)) from None
    return Reply(200, {"count": count})


def program_json(call: Call, program: ReengagementProgram) -> dict[str, Any]:
    topic = call.session.get_one(Topic, program.topic_id)
    return {
        "id": str(program.id),
        "name": program.name,
        "topic": topic.key,
        "channels": list(program.channels),
        "steps": [
            {"day": step["day"], "campaign_id": campaign_id}
            for step, campaign_id in zip(program.steps, program.step_campaigns, strict=True)
        ],
        "sunset_after_days": program.sunset_after_days,
        "active": program.active,
        "counts": dormancy.program_counts(call.session, program),
    }


def post_reengagement_program(call: Call) -> Reply:
    try:
        program = dormancy.create_program(call.session, call.body)
    except InvalidInput as exc:
        raise ApiProblem.invalid(exc) from None
    return Reply(201, program_json(call, program))


def get_reengagement_program(call: Call) -> Reply:
    try:
        program = call.session.get(ReengagementProgram, uuid.UUID(str(call.params["program_id"])))
    except ValueError:
        program = None
    if program is None:
        raise ApiProblem(404, f"No re-engagement program has the id {call.params['program_id']!r}.")
    return Reply(200, program_json(call, program))


# (route, method, operationId in api.yaml, view)
OPERATIONS = (
    ("api_campaigns", "POST", "post_campaign", post_campaign),
    ("api_campaign", "GET", "get_campaign", get_campaign),
    ("api_campaign_launch", "POST", "launch_campaign", _transition("launch")),
    ("api_campaign_pause", "POST", "pause_campaign", _transition("pause")),
    ("api_campaign_resume", "POST", "resume_campaign", _transition("resume")),
    ("api_campaign_cancel", "POST", "cancel_campaign", _transition("cancel")),
    ("api_campaign_preview", "GET", "preview_campaign", preview_campaign),
    ("api_campaign_forecast", "POST", "forecast_campaign", forecast_campaign),
    ("api_segment_count", "POST", "count_segment", count_segment),
    ("api_programs", "POST", "post_reengagement_program", post_reengagement_program),
    ("api_program", "GET", "get_reengagement_program", get_reengagement_program),
)
