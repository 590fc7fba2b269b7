"""The policy's verdicts told in plain French or English sentences.

Only words live here: every decision comes from :mod:`prefcenter.policy`, so the
portal's "what you will receive", the API and the back office explain exactly what
the engine does.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from sqlalchemy.orm import Session

from . import policy
from .consent_settings import ConsentSettings
from .i18n import _, negotiate, translate
from .models import Customer, Topic

CHANNEL_NAMES = {
    "email": _("email"),
    "sms": _("SMS"),
    "phone": _("phone"),
    "post": _("postal mail"),
}
SUPPRESSION_NAMES = {
    "hard_bounce": _("the address bounced"),
    "spam_complaint": _("a spam complaint"),
    "erased": _("an erasure request"),
    "manual": _("a do-not-contact request"),
    "phone_opposition": _("the telephone opposition list (Bloctel)"),
}
PER = {"weekly": _("per week"), "monthly": _("per month")}


@dataclasses.dataclass(frozen=True)
class Line:
    rule: str
    passed: bool
    text: str


@dataclasses.dataclass(frozen=True)
class Explanation:
    decision: policy.Decision
    summary: str
    lines: list[Line]


def explain(
    session: Session,
    customer: Customer,
    channel: str,
    topic: Topic,
    kind: str,
    at: dt.datetime,
    *,
    cfg: ConsentSettings,
    locale: str | None = None,
) -> Explanation:
    """The policy's decision for one channel, with every rule's verdict as a sentence."""
    locale = negotiate(locale, customer.locale)
    decision, verdicts = policy.explain(session, customer, channel, topic, kind, at, cfg=cfg)
    zone = _zone(customer.timezone, cfg)
    say = _Sayer(locale, zone, channel, topic)
    lines = [Line(v.rule, v.passed, say.verdict(v)) for v in verdicts]
    return Explanation(decision, say.summary(decision), lines)


def _zone(name: str | None, cfg: ConsentSettings) -> ZoneInfo:
    try:
        return ZoneInfo(name or cfg.default_timezone)
    except (KeyError, ValueError):
        return ZoneInfo(cfg.default_timezone)


class _Sayer:
    def __init__(self, locale: str, zone: ZoneInfo, channel: str, topic: Topic) -> None:
        self.locale = locale
        self.zone = zone
        self.mapping: dict[str, Any] = {
            "channel": translate(CHANNEL_NAMES[channel], locale),
            "topic": topic.name(locale),
        }

    def t(self, message: str, **mapping: Any) -> str:
        return translate(message, self.locale, {**self.mapping, **mapping})

    def when(self, moment: dt.datetime) -> str:
        return format_datetime(moment, "EEEE d MMMM, HH:mm", tzinfo=self.zone, locale=self.locale)

    def summary(self, decision: policy.Decision) -> str:
        if decision.decision == policy.SEND:
            return self.t(_("You would receive it now by ${channel}."))
        if decision.decision == policy.DEFER:
            assert decision.until is not None
            return self.t(
                _("You would receive it by ${channel} on ${when}."), when=self.when(decision.until)
            )
        return self.t(_("You would not receive it by ${channel}."))

    def verdict(self, verdict: policy.Verdict) -> str:
        method = getattr(self, f"_{verdict.rule}")
        return method(verdict.passed, verdict.detail)

    def _erased(self, passed: bool, detail: dict[str, Any]) -> str:
        return self.t(_("Your account is active.") if passed else _("This account was erased."))

    def _suppressed(self, passed: bool, detail: dict[str, Any]) -> str:
        if passed:
            return self.t(_("Your ${channel} address is not on a do-not-contact list."))
        reasons = ", ".join(translate(SUPPRESSION_NAMES[r], self.locale) for r in detail["reasons"])
        return self.t(
            _("Your ${channel} address is on a do-not-contact list (${reasons})."),
            reasons=reasons,
        )

    def _unreachable(self, passed: bool, detail: dict[str, Any]) -> str:
        if passed:
            return self.t(_("We have a usable ${channel} address for you."))
        if not detail["has_address"]:
            return self.t(_("We have no ${channel} address for you."))
        return self.t(_("Your ${channel} address has not been confirmed yet."))

    def _no_consent(self, passed: bool, detail: dict[str, Any]) -> str:
        status, regime = detail["status"], detail["regime"]
        if passed:
            if regime == "opt_in":
                return self.t(_("You agreed to receive messages by ${channel}."))
            return self.t(_("You have not refused messages by ${channel}."))
        if status == "refused":
            return self.t(_("You refused messages by ${channel}."))
        if status == "pending":
            return self.t(_("You have not yet confirmed that you want messages by ${channel}."))
        return self.t(_("You have not agreed to receive messages by ${channel}."))

    def _topic_unsubscribed(self, passed: bool, detail: dict[str, Any]) -> str:
        if passed:
            if detail["status"] == "subscribed":
                return self.t(_("You are subscribed to “${topic}”."))
            return self.t(_("You have not unsubscribed from “${topic}”."))
        if detail["status"] == "unsubscribed":
            return self.t(_("You unsubscribed from “${topic}”."))
        return self.t(_("You are not subscribed to “${topic}”."))

    def _paused(self, passed: bool, detail: dict[str, Any]) -> str:
        if passed:
            return self.t(_("Marketing messages are not paused."))
        return self.t(
            _("You paused marketing messages until ${when}."), when=self.when(detail["until"])
        )

    def _frequency_cap(self, passed: bool, detail: dict[str, Any]) -> str:
        if passed:
            return self.t(_("This stays within the frequency you chose."))
        sentences = [self._cap(cap) for cap in detail["exceeded"]]
        return " ".join(sentences)

    def _cap(self, cap: dict[str, Any]) -> str:
        if cap["cap"] == "frequency":
            return self.t(
                _("You asked for at most one message ${per}, and one is already sent or planned."),
                per=translate(PER[cap["frequency"]], self.locale),
            )
        if cap["cap"] == "topic_frequency":
            return self.t(
                _(
                    "You asked for at most one “${topic}” message ${per}, and one is already "
                    "sent or planned."
                ),
                per=translate(PER[cap["frequency"]], self.locale),
            )
        return self.t(
            _("The brand limits itself to ${max} messages per ${days} days, reached already."),
            max=cap["max_messages"],
            days=cap["period_days"],
        )

    def _quiet_hours(self, passed: bool, detail: dict[str, Any]) -> str:
        if passed:
            return self.t(_("It is within your contact hours."))
        return self.t(
            _("It is outside your contact hours: it would wait until ${when}."),
            when=self.when(detail["until"]),
        )
