"""Email through SendGrid's v3 Mail Send API, with the official ``sendgrid`` client.

One call carries up to 1,000 personalizations. A message whose body is shared with
others (content rendered once per locale, see campaigns.rendering) travels in a call
with that body as the content and its own values as substitutions; any other message
travels in a call whose content is ``%text%`` / ``%html%``, its rendered body being its
substitutions. SendGrid caps substitutions at 10,000 bytes per personalization: a message
whose substitutions are larger travels in a call of its own with its body as the content.
``custom_args`` carry only the delivery id (SendGrid keeps them and cannot redact them).
An address appears at most once per call: a second customer sharing it goes in the next
call.

429 and 5xx are retried in place with back-off (honouring ``Retry-After``) up to a few
times, then the deliveries are handed back to be retried later; any other 4xx fails
the batch's deliveries with SendGrid's own message.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from python_http_client import exceptions
from sendgrid import SendGridAPIClient

from . import Outgoing, Sent

log = logging.getLogger(__name__)

MAX_PERSONALIZATIONS = 1000
MAX_SUBSTITUTION_BYTES = 10_000
TEXT, HTML = "%text%", "%html%"
_JSON = json.JSONEncoder(ensure_ascii=False, check_circular=False, separators=(",", ":"))
_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


class SendGridTransport:
    in_database = False

    def __init__(
        self,
        api_key: str,
        sender: str,
        *,
        host: str = "https://api.sendgrid.com",
        sandbox_mode: bool = False,
        max_attempts: int = 4,
        max_wait: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = SendGridAPIClient(api_key=api_key, host=host.rstrip("/"))
        name, address = email.utils.parseaddr(sender)
        self.sender = {"email": address, **({"name": name} if name else {})}
        self.sandbox_mode = sandbox_mode
        self.max_attempts = max_attempts
        self.max_wait = max_wait
        self.sleep = sleep

    # -- batching ------------------------------------------------------------------------

    @staticmethod
    def substitutions(message: Outgoing) -> dict[str, str]:
        """What this message's personalization substitutes in the call's content."""
        if message.shared is not None and message.substitutions is not None:
            return message.substitutions  # type: ignore[return-value]  # read, never changed
        values = {TEXT: message.text}
        if message.html is not None:
            values[HTML] = message.html
        return values

    @staticmethod
    def _fits(substitutions: dict[str, str]) -> bool:
        chars = sum(len(k) + len(v) for k, v in substitutions.items())
        if chars * 4 <= MAX_SUBSTITUTION_BYTES:  # UTF-8 takes at most 4 bytes a character
            return True
        size = sum(len(k.encode()) + len(v.encode()) for k, v in substitutions.items())
        return size <= MAX_SUBSTITUTION_BYTES

    def batches(self, messages: list[Outgoing]) -> Iterator[list[tuple[Outgoing, Any]]]:
        """Calls to make, each message with its substitutions (None: it travels alone with
        its body): ≤ 1,000 personalizations, each address once, one content, same categories.
        """
        pending: dict[tuple[Any, ...], list[tuple[list[tuple[Outgoing, Any]], set[str]]]] = {}
        for message in messages:
            substitutions = self.substitutions(message)
            if not self._fits(substitutions):
                yield [(message, None)]
                continue
            shared = message.shared if message.substitutions is not None else None
            key = (message.categories, shared, message.html is not None)
            groups = pending.setdefault(key, [])
            address = message.to.lower()
            for group, addresses in groups:
                if len(group) < MAX_PERSONALIZATIONS and address not in addresses:
                    group.append((message, substitutions))
                    addresses.add(address)
                    break
            else:
                groups.append(([(message, substitutions)], {address}))
        for groups in pending.values():
            for group, _addresses in groups:
                yield group

    def payload(self, batch: list[tuple[Outgoing, Any]]) -> dict[str, Any]:
        personalizations = []
        for message, substitutions in batch:
            personalization: dict[str, Any] = {
                "to": [{"email": message.to}],
                "subject": message.subject or "",
                "headers": message.headers,
                "custom_args": {"delivery_id": str(message.delivery_id)},
            }
            if substitutions is not None:
                personalization["substitutions"] = substitutions
            personalizations.append(personalization)
        first, substitutions = batch[0]
        if substitutions is None:  # alone, with its own body
            text, html = first.text, first.html
        elif first.shared is not None and first.substitutions is not None:
            text, html = first.shared.text, first.shared.html
        else:
            text, html = TEXT, HTML if first.html is not None else None
        content = [{"type": "text/plain", "value": text}]
        if html is not None:
            content.append({"type": "text/html", "value": html})
        body: dict[str, Any] = {
            "personalizations": personalizations,
            "from": self.sender,
            "content": content,
            "categories": list(first.categories)[:10],
        }
        if self.sandbox_mode:
            body["mail_settings"] = {"sandbox_mode": {"enable": True}}
        return body

    # -- sending -------------------------------------------------------------------------

    def send(self, session: Any, messages: list[Outgoing]) -> list[Sent]:
        results: list[Sent] = []
        for batch in self.batches(messages):
            results.extend(self._send(batch))
        return results

    def _send(self, batch: list[tuple[Outgoing, Any]]) -> list[Sent]:
        # Encoded here, compactly (the client's own json.dumps is twice as slow on a
        # thousand personalizations); a JSON content type other than the bare
        # "application/json" makes the client send the text as it is.
        body = _JSON.encode(self.payload(batch))
        messages = [message for message, _substitutions in batch]
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self.client.client.mail.send.post(
                    request_body=body, request_headers=_JSON_HEADERS
                )
            except exceptions.HTTPError as exc:
                status = exc.status_code
                if status == 429 or status >= 500:
                    wait = _retry_after(exc) or min(self.max_wait, 2.0 ** (attempt - 1))
                    if attempt < self.max_attempts and wait <= self.max_wait:
                        log.warning("SendGrid answered %s; retrying in %.1f s", status, wait)
                        self.sleep(wait)
                        continue
                    retry = max(wait, 60.0)
                    return [Sent(m.delivery_id, retry_after=retry) for m in messages]
                reason = f"SendGrid refused the message ({status}): {_errors(exc)}"
                return [Sent(m.delivery_id, error=reason) for m in messages]
            # 202 normally; 200 in sandbox mode: both mean accepted.
            message_id = response.headers.get("X-Message-Id") if response.headers else None
            return [Sent(m.delivery_id, message_id) for m in messages]
        raise AssertionError("unreachable")  # the loop always returns


def _retry_after(exc: exceptions.HTTPError) -> float | None:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _errors(exc: exceptions.HTTPError) -> str:
    try:
        errors = json.loads(exc.body or b"{}").get("errors") or []
        return "; ".join(str(e.get("message")) for e in errors) or str(exc.body)
    except (ValueError, AttributeError):
        return str(exc.body)
