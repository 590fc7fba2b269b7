"""A fake SendGrid v3 API: records Mail Send requests and answers scripted statuses.

The real ``sendgrid`` client is pointed at it (``host=fake.url``), so the requests it
records are exactly what production would send. Answers are scripted per call:
``FakeSendGrid(script=[429, 500, 202])``; once the script is used up every call gets 202
(or 200 in sandbox mode, as SendGrid does). A 429 carries ``Retry-After``.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_PERSONALIZATIONS = 1000


@dataclasses.dataclass(frozen=True)
class Call:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: dict[str, Any] | None = None


def _answer(item: int | Answer) -> Answer:
    if isinstance(item, Answer):
        return item
    if item == 429:
        return Answer(429, {"Retry-After": "1"}, {"errors": [{"message": "too many requests"}]})
    if item >= 400:
        return Answer(item, {}, {"errors": [{"message": f"scripted {item}", "field": None}]})
    return Answer(item)


class FakeSendGrid:
    def __init__(
        self,
        script: list[int | Answer] | None = None,
        api_key: str = "",
        keep_bodies: bool = True,
        count_deliveries: bool = False,
    ) -> None:
        self.script = [_answer(item) for item in (script or [])]
        self.api_key = api_key
        # Benchmarks send hundreds of thousands of messages: they keep only the count, and
        # (count_deliveries) how many times each delivery id arrived in an accepted call.
        self.keep_bodies = keep_bodies
        self.count_deliveries = count_deliveries
        self.received_personalizations = 0
        self.received_deliveries: collections.Counter[str] = collections.Counter()
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw)
                except ValueError:
                    return self._reply(Answer(400, {}, {"errors": [{"message": "bad JSON"}]}))
                with fake._lock:
                    fake.received_personalizations += len(body.get("personalizations") or [])
                    if fake.keep_bodies:
                        fake.calls.append(Call(self.path, dict(self.headers), body))
                    answer = fake.script.pop(0) if fake.script else None
                    message_id = f"fake-{next(fake._ids)}"
                if answer is None:
                    answer = fake._default(self.path, self.headers, body, message_id)
                if fake.count_deliveries and answer.status < 300:
                    ids = [
                        (p.get("custom_args") or {}).get("delivery_id")
                        for p in body.get("personalizations") or []
                    ]
                    with fake._lock:
                        fake.received_deliveries.update(ids)
                self._reply(answer)

            def _reply(self, answer: Answer) -> None:
                payload = json.dumps(answer.body).encode() if answer.body is not None else b""
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                if payload:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True

    def _default(self, path: str, headers: Any, body: dict[str, Any], message_id: str) -> Answer:
        if path != "/v3/mail/send":
            return Answer(404, {}, {"errors": [{"message": "not found"}]})
        if self.api_key and headers.get("Authorization") != f"Bearer {self.api_key}":
            return Answer(401, {}, {"errors": [{"message": "authorization required"}]})
        personalizations = body.get("personalizations") or []
        if not 1 <= len(personalizations) <= MAX_PERSONALIZATIONS:
            message = f"between 1 and {MAX_PERSONALIZATIONS} personalizations are allowed"
            return Answer(400, {}, {"errors": [{"message": message, "field": "personalizations"}]})
        sandbox = body.get("mail_settings", {}).get("sandbox_mode", {}).get("enable")
        return Answer(200 if sandbox else 202, {"X-Message-Id": message_id})

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def personalizations(self) -> list[dict[str, Any]]:
        return [p for call in self.calls for p in call.body.get("personalizations", [])]


@contextmanager
def fake_sendgrid(
    script: list[int | Answer] | None = None, api_key: str = ""
) -> Iterator[FakeSendGrid]:
    fake = FakeSendGrid(script, api_key)
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()
