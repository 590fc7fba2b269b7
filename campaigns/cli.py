"""``prefcenter campaign …`` and ``prefcenter scheduler``: the campaign engine's commands.

prefcenter's CLI loads this module when the campaign engine is installed (it never
imports campaigns otherwise) and calls :func:`register` with its command factory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from prefcenter import cli as base
from prefcenter import tasks as base_tasks
from prefcenter.consent_settings import ConsentSettings
from prefcenter.db import make_engine, make_session_factory, task_session
from prefcenter.errors import InvalidInput, NotFound
from prefcenter.models import Customer, utcnow
from prefcenter.models.vocabulary import CHANNELS

from . import dispatch, services
from . import tasks as campaign_tasks
from .channels import printing

Command = Callable[..., argparse.ArgumentParser]


def _read_spec(path: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise base.CommandFailed(f"cannot read {path}: {exc.strerror}", 2) from None
    try:
        return yaml.safe_load(text) if path.endswith((".yaml", ".yml")) else json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise base.CommandFailed(f"{path} is not valid JSON or YAML: {exc}", 2) from None


def _launch_settings(settings: dict[str, Any]) -> services.Settings:
    base_tasks.use_settings(settings)
    return campaign_tasks._launch_settings()


def _print_status(session: Any, campaign: Any) -> None:
    counts = dispatch.campaign_counts(session, campaign.id)
    print(f"campaign {campaign.id} {campaign.name!r}: {campaign.status}")
    for status in ("planned", "deferred", "queued", "sent", "delivered", "failed", "cancelled"):
        print(f"  {status:<10} {counts[status]:>9}")
    for reason, n in counts["skipped"].items():
        print(f"  skipped    {n:>9}  ({reason})")
    progress = Progress.of(counts)
    if campaign.status in ("running", "paused") and progress.total:
        print(progress.bar())


DONE = ("sent", "delivered", "opened", "clicked", "failed", "cancelled")
WAITING = ("planned", "queued", "sending")


@dataclass(frozen=True)
class Progress:
    """How far a campaign's sending is: handed over (or failed) out of all to send."""

    done: int
    failed: int
    waiting: int  # planned, queued or being sent
    deferred: int  # waiting for their own contact window

    @classmethod
    def of(cls, counts: dict[str, Any]) -> Progress:
        return cls(
            done=sum(counts.get(s, 0) for s in DONE),
            failed=counts.get("failed", 0),
            waiting=sum(counts.get(s, 0) for s in WAITING),
            deferred=counts.get("deferred", 0),
        )

    @property
    def total(self) -> int:
        return self.done + self.waiting + self.deferred

    @property
    def sending(self) -> bool:
        """Anything left to send now (deferred messages wait for their window)."""
        return self.waiting > 0

    def bar(self, width: int = 30) -> str:
        share = self.done / self.total if self.total else 1.0
        filled = int(share * width)
        line = (
            f"  [{'#' * filled}{'-' * (width - filled)}] {share:4.0%}  "
            f"{self.done:,} of {self.total:,} done"
        )
        if self.failed:
            line += f" ({self.failed:,} failed)"
        if self.deferred:
            line += f", {self.deferred:,} wait for their contact window"
        return line


def _watch(url: str, campaign_id: str, interval: float, out: Any = None) -> int:
    """Redraw the progress bar until nothing is left to send now (or Ctrl-C)."""
    out = out or sys.stdout
    redraw = out.isatty()
    engine = make_engine(url)  # one engine for every refresh, each its own transaction
    sessions = make_session_factory(engine)
    try:
        while True:
            with task_session(sessions) as session:
                campaign = _campaign(session, campaign_id)
                progress = Progress.of(dispatch.campaign_counts(session, campaign.id))
                status = campaign.status
            line = f"{progress.bar()}  ({status})"
            out.write(f"\r{line}\033[K" if redraw else f"{line}\n")
            out.flush()
            if status not in ("running", "scheduled") or not progress.sending:
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        engine.dispose()
    if redraw:
        out.write("\n")
    return 0


def _cmd_create(args: argparse.Namespace) -> int:
    settings = base.load_settings(args.config)
    data = _read_spec(args.file)
    with base._session(settings["sqlalchemy.url"]) as session:
        try:
            campaign = services.create_campaign(session, data, created_by="cli")
        except InvalidInput as exc:
            base._print_invalid(exc)
            return 2
        print(campaign.id)
    return 0


def _transition(action: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        settings = base.load_settings(args.config)
        launch_settings = _launch_settings(settings)
        now = utcnow()
        with base._session(settings["sqlalchemy.url"]) as session:
            try:
                campaign = services.get_campaign(session, args.campaign_id)
                if action == "launch":
                    services.launch(session, campaign, now, launch_settings)
                elif action == "pause":
                    services.pause(session, campaign)
                elif action == "resume":
                    services.resume(session, campaign)
                else:
                    services.cancel(session, campaign, now)
            except (NotFound, services.WrongState) as exc:
                raise base.CommandFailed(str(exc)) from None
            session.flush()
            _print_status(session, campaign)
        return 0

    return run


def _cmd_status(args: argparse.Namespace) -> int:
    settings = base.load_settings(args.config)
    with base._session(settings["sqlalchemy.url"]) as session:
        campaign = _campaign(session, args.campaign_id)
        _print_status(session, campaign)
        running = campaign.status in ("running", "scheduled")
    if args.watch and running:
        return _watch(settings["sqlalchemy.url"], args.campaign_id, args.interval)
    return 0


def _cmd_forecast(args: argparse.Namespace) -> int:
    settings = base.load_settings(args.config)
    launch_settings = _launch_settings(settings)
    with base._session(settings["sqlalchemy.url"]) as session:
        campaign = _campaign(session, args.campaign_id)
        counts = services.forecast(session, campaign, utcnow(), launch_settings)
        print(json.dumps(counts.as_dict(), indent=2))
    return 0


def _campaign(session: Any, campaign_id: str) -> Any:
    try:
        return services.get_campaign(session, campaign_id)
    except NotFound as exc:
        raise base.CommandFailed(str(exc)) from None


def _customer(session: Any, external_id: str) -> Any:
    customer = session.scalar(sa.select(Customer).where(Customer.external_id == external_id))
    if customer is None or customer.erased_at is not None:
        raise base.CommandFailed(f"no customer with external id {external_id!r}")
    return customer


def _show(message: Any) -> None:
    print(f"To: {message.to}")
    for name, value in message.headers.items():
        print(f"{name}: {value}")
    if message.subject is not None:
        print(f"Subject: {message.subject}")
    print()
    print(message.text)
    if message.html:
        print("\n--- HTML ---")
        print(message.html)


def _one_customer_s_message(
    args: argparse.Namespace, make: Callable[..., Any]
) -> tuple[Any, int | None]:
    """Call ``make(session, campaign, customer, dispatcher)`` for the command's campaign and
    customer; (result, None), or (None, exit code) after printing the refused input."""
    settings = base.load_settings(args.config)
    base_tasks.use_settings(settings)
    dispatcher = campaign_tasks._dispatcher()
    with base._session(settings["sqlalchemy.url"]) as session:
        try:
            campaign = _campaign(session, args.campaign_id)
            customer = _customer(session, args.external_id)
            return make(session, campaign, customer, dispatcher), None
        except InvalidInput as exc:
            base._print_invalid(exc)
            return None, 2


def _cmd_preview(args: argparse.Namespace) -> int:
    message, failed = _one_customer_s_message(
        args,
        lambda session, campaign, customer, dispatcher: dispatch.preview(
            session, campaign, customer, args.channel, dispatcher.links, utcnow()
        ),
    )
    if failed is not None:
        return failed
    _show(message)
    return 0


def _cmd_test_send(args: argparse.Namespace) -> int:
    sent, failed = _one_customer_s_message(
        args,
        lambda session, campaign, customer, dispatcher: dispatch.test_send(
            session, campaign, customer, args.channel, args.to, dispatcher, utcnow()
        ),
    )
    if failed is not None:
        return failed
    if not sent.ok:
        raise base.CommandFailed(f"not sent: {sent.error or 'the provider asked to retry later'}")
    print(f"test message sent to {args.to} ({sent.provider_message_id})")
    return 0


def _write(text: str, output: str | None) -> None:
    if output:
        Path(output).write_text(text, encoding="utf-8")
        print(f"written to {output}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _cmd_call_list(args: argparse.Namespace) -> int:
    settings = base.load_settings(args.config)
    cfg = ConsentSettings.from_settings(settings)
    with base._session(settings["sqlalchemy.url"]) as session:
        entries = printing.call_list(session, args.day, cfg)
    text = (
        printing.as_json(entries)
        if args.format == "json"
        else printing.as_csv(entries, printing.CallEntry)
    )
    _write(text, args.output)
    return 0


def _cmd_print_file(args: argparse.Namespace) -> int:
    settings = base.load_settings(args.config)
    with base._session(settings["sqlalchemy.url"]) as session:
        campaign = _campaign(session, args.campaign_id)
        letters = printing.print_file(session, campaign.id)
    text = (
        printing.as_json(letters)
        if args.format == "json"
        else printing.as_csv(letters, printing.Letter)
    )
    _write(text, args.output)
    return 0


def _day(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a day (YYYY-MM-DD)") from None


def _cmd_scheduler(args: argparse.Namespace) -> int:
    settings = base.load_settings(args.config)
    base._connected_broker(settings, "schedule", stub_exit_code=2)
    base_tasks.configure(settings)
    stop = threading.Event()
    restore = base._stop_on_signals(stop)
    print(f"scheduler running every {args.interval:g} s; Ctrl-C stops it", file=sys.stderr)
    try:
        while not stop.is_set():
            campaign_tasks.tick()
            if args.once:
                break
            stop.wait(args.interval)
    finally:
        restore()
        base_tasks.dispose()
    return 0


def register(command: Command) -> None:
    sub = command(
        "campaign",
        None,
        "Create, launch and follow campaigns",
        "Example: prefcenter campaign create spring.yaml, then\n"
        "prefcenter campaign forecast ID, prefcenter campaign launch ID.",
    )
    actions = sub.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, run: Callable[[argparse.Namespace], int], summary: str):
        parser = actions.add_parser(name, help=summary, description=f"{summary}.")
        parser.add_argument("-c", "--config", default=argparse.SUPPRESS, help="ini file")
        parser.set_defaults(run=run)
        return parser

    action("create", _cmd_create, "Create a draft campaign from a JSON or YAML file").add_argument(
        "file", help="the campaign, in the shape POST /api/v1/campaigns takes"
    )
    for name, summary in (
        ("launch", "Plan the campaign now (or at its schedule) and start sending"),
        ("pause", "Stop sending until resumed"),
        ("resume", "Send again after a pause"),
        ("cancel", "Stop for good; unsent messages are cancelled"),
    ):
        action(name, _transition(name), summary).add_argument("campaign_id")
    parser = action("status", _cmd_status, "Show the counts per status and skip reason")
    parser.add_argument("campaign_id")
    parser.add_argument(
        "--watch", action="store_true", help="show a progress bar until the sending is done"
    )
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (2)")
    action("forecast", _cmd_forecast, "Dry run: the counts launching now would give").add_argument(
        "campaign_id"
    )
    for name, run, summary in (
        ("preview", _cmd_preview, "Show the message one customer would get"),
        ("test-send", _cmd_test_send, "Send one customer's message to your own address"),
    ):
        parser = action(name, run, summary)
        parser.add_argument("campaign_id")
        parser.add_argument("--external-id", required=True, help="whose message (member id)")
        parser.add_argument("--channel", default="email", choices=CHANNELS, help="(email)")
        if name == "test-send":
            parser.add_argument("--to", required=True, help="the address to send the test to")
    parser = action("call-list", _cmd_call_list, "The contact center's call list for a day")
    parser.add_argument("--day", type=_day, default=dt.date.today(), help="YYYY-MM-DD (today)")
    parser.add_argument("--format", choices=("csv", "json"), default="csv")
    parser.add_argument("--output", help="file to write (default: standard output)")
    parser = action("print-file", _cmd_print_file, "The letters of a campaign, for the printer")
    parser.add_argument("campaign_id")
    parser.add_argument("--format", choices=("csv", "json"), default="csv")
    parser.add_argument("--output", help="file to write (default: standard output)")

    sub = command(
        "scheduler",
        _cmd_scheduler,
        "Run the campaign scheduler",
        "Starts scheduled campaigns on time, queues due deliveries for the workers and\n"
        "re-queues those a lost broker message left behind. One is enough; more are harmless.",
    )
    sub.add_argument("--interval", type=float, default=5.0, help="seconds between passes (5)")
    sub.add_argument("--once", action="store_true", help="run one pass and exit")
