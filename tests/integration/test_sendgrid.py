"""Email through the real `sendgrid` client against the fake SendGrid server (tests/fakes)."""

from __future__ import annotations

import functools
import uuid
from html import escape as html_escape

from campaigns.channels import Outgoing, SharedBody
from campaigns.channels.sendgrid import SendGridTransport
from tests.fakes.sendgrid import Answer, fake_sendgrid

KEY = "SG.fake-key-for-tests"


def message(n: int, to: str | None = None, **fields) -> Outgoing:
    values = {
        "delivery_id": uuid.uuid4(),
        "channel": "email",
        "to": to or f"customer{n}@example.com",
        "subject": f"Hello {n}",
        "text": f"Text for {n}",
        "html": f"<p>HTML for {n}</p>",
        "headers": {
            "List-Unsubscribe": f"<https://prefs.example.com/u/token{n}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        "categories": ("campaign:c1", "topic:offers"),
    }
    values.update(fields)
    return Outgoing(**values)


def transport(fake, **options) -> tuple[SendGridTransport, list[float]]:
    slept: list[float] = []
    sender = SendGridTransport(
        KEY, "Maison <bonjour@example.com>", host=fake.url, sleep=slept.append, **options
    )
    return sender, slept


def test_the_payload_carries_each_message_in_its_own_personalization():
    with fake_sendgrid(api_key=KEY) as fake:
        sender, _ = transport(fake)
        messages = [message(1), message(2)]

        answers = sender.send(None, messages)

    assert [a.ok for a in answers] == [True, True]
    (call,) = fake.calls
    assert call.path == "/v3/mail/send"
    assert call.headers["Authorization"] == f"Bearer {KEY}"
    body = call.body
    assert body["from"] == {"email": "bonjour@example.com", "name": "Maison"}
    assert body["content"] == [
        {"type": "text/plain", "value": "%text%"},
        {"type": "text/html", "value": "%html%"},
    ]
    assert body["categories"] == ["campaign:c1", "topic:offers"]
    first = body["personalizations"][0]
    assert first["to"] == [{"email": "customer1@example.com"}]
    assert first["subject"] == "Hello 1"
    assert first["substitutions"] == {"%text%": "Text for 1", "%html%": "<p>HTML for 1</p>"}
    assert first["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # Nothing personal in custom_args: SendGrid keeps them for good.
    assert first["custom_args"] == {"delivery_id": str(messages[0].delivery_id)}
    assert answers[0].provider_message_id == "fake-1"


def test_batches_hold_at_most_1000_personalizations():
    with fake_sendgrid() as fake:
        sender, _ = transport(fake)
        answers = sender.send(None, [message(n) for n in range(2500)])

    assert [len(c.body["personalizations"]) for c in fake.calls] == [1000, 1000, 500]
    assert len(answers) == 2500 and all(a.ok for a in answers)
    delivered = [p["custom_args"]["delivery_id"] for p in fake.personalizations()]
    assert len(set(delivered)) == 2500


def test_an_address_appears_once_per_call_even_when_two_customers_share_it():
    with fake_sendgrid() as fake:
        sender, _ = transport(fake)
        sender.send(None, [message(1, "family@example.com"), message(2, "Family@example.com")])

    assert [len(c.body["personalizations"]) for c in fake.calls] == [1, 1]


def test_a_message_too_large_for_substitutions_travels_alone_with_its_body():
    big = message(1, html="<p>" + "x" * 12_000 + "</p>")
    with fake_sendgrid() as fake:
        sender, _ = transport(fake)
        sender.send(None, [big, message(2)])

    alone = next(c.body for c in fake.calls if len(c.body["personalizations"]) == 1)
    assert alone["content"][1]["value"] == big.html
    assert "substitutions" not in alone["personalizations"][0]


def test_429_is_retried_after_the_time_it_asks_for():
    with fake_sendgrid([Answer(429, {"Retry-After": "7"}), 202]) as fake:
        sender, slept = transport(fake)
        answers = sender.send(None, [message(1)])

    assert slept == [7.0]
    assert len(fake.calls) == 2 and answers[0].ok


def test_5xx_is_retried_with_back_off():
    with fake_sendgrid([500, 503, 202]) as fake:
        sender, slept = transport(fake)
        answers = sender.send(None, [message(1)])

    assert slept == [1.0, 2.0]
    assert answers[0].ok


def test_a_provider_that_stays_down_hands_the_messages_back_for_later():
    with fake_sendgrid([500] * 4) as fake:
        sender, _ = transport(fake)
        (answer,) = sender.send(None, [message(1)])

    assert len(fake.calls) == 4
    assert not answer.ok and answer.error is None and answer.retry_after >= 60


def test_another_4xx_fails_the_messages_with_sendgrid_s_words():
    refusal = Answer(400, {}, {"errors": [{"message": "The from address is not verified"}]})
    with fake_sendgrid([refusal]) as fake:
        sender, slept = transport(fake)
        (answer,) = sender.send(None, [message(1)])

    assert slept == [] and len(fake.calls) == 1
    assert answer.error == "SendGrid refused the message (400): The from address is not verified"


def test_a_wrong_key_is_refused_by_the_provider():
    with fake_sendgrid(api_key="SG.the-right-one") as fake:
        sender, _ = transport(fake)
        (answer,) = sender.send(None, [message(1)])

    assert answer.error.startswith("SendGrid refused the message (401)")


def test_sandbox_mode_is_accepted_with_200():
    with fake_sendgrid() as fake:
        sender, _ = transport(fake, sandbox_mode=True)
        (answer,) = sender.send(None, [message(1)])

    assert fake.calls[0].body["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert answer.ok


def test_text_only_messages_have_no_html_part():
    with fake_sendgrid() as fake:
        sender, _ = transport(fake)
        sender.send(None, [message(1, html=None)])

    assert fake.calls[0].body["content"] == [{"type": "text/plain", "value": "%text%"}]


def shared_message(n: int, body: SharedBody, first_name: str) -> Outgoing:
    """A message rendered from ``body`` (its text and HTML are the body with its values in)."""
    substitutions = {"%pc:0%": first_name, "%pc:0:h%": html_escape(first_name)}
    return message(
        n,
        text=body.text.replace("%pc:0%", first_name),
        html=None if body.html is None else body.html.replace("%pc:0:h%", html_escape(first_name)),
        shared=body,
        substitutions=substitutions,
    )


def test_a_shared_body_travels_once_per_call_with_each_customer_s_values():
    body = SharedBody("Bonjour %pc:0%", "<p>%pc:0:h%</p>")
    messages = [shared_message(1, body, "Marie"), shared_message(2, body, "Tom & <Jerry>")]
    with fake_sendgrid() as fake:
        sender, _ = transport(fake)
        answers = sender.send(None, messages)

    assert all(a.ok for a in answers)
    (call,) = fake.calls
    assert call.headers["Content-Type"].startswith("application/json")
    assert call.body["content"] == [
        {"type": "text/plain", "value": "Bonjour %pc:0%"},
        {"type": "text/html", "value": "<p>%pc:0:h%</p>"},
    ]
    # What SendGrid does with them: each key replaced by the personalization's value.
    for sent, personalization in zip(messages, call.body["personalizations"], strict=True):
        filled = [
            functools.reduce(
                lambda text, kv: text.replace(*kv),
                personalization["substitutions"].items(),
                part["value"],
            )
            for part in call.body["content"]
        ]
        assert filled == [sent.text, sent.html]
        assert personalization["custom_args"] == {"delivery_id": str(sent.delivery_id)}


def test_two_shared_bodies_and_rendered_messages_never_share_a_call():
    french = SharedBody("Bonjour %pc:0%", None)
    english = SharedBody("Hello %pc:0%", None)
    messages = [
        shared_message(1, french, "Marie"),
        shared_message(2, english, "Ann"),
        message(3, html=None),
    ]
    with fake_sendgrid() as fake:
        sender, _ = transport(fake)
        sender.send(None, messages)

    contents = sorted(c.body["content"][0]["value"] for c in fake.calls)
    assert contents == ["%text%", "Bonjour %pc:0%", "Hello %pc:0%"]


def test_values_over_the_substitution_limit_travel_alone_with_their_body():
    body = SharedBody("Bonjour %pc:0%", "<p>%pc:0:h%</p>")
    long_name = "x" * 6_000  # twice (text and HTML): over SendGrid's 10,000 bytes
    with fake_sendgrid() as fake:
        sender, _ = transport(fake)
        sender.send(None, [shared_message(1, body, long_name), shared_message(2, body, "Jo")])

    alone = next(c.body for c in fake.calls if c.body["content"][0]["value"] != body.text)
    assert alone["content"][0]["value"] == f"Bonjour {long_name}"
    assert "substitutions" not in alone["personalizations"][0]
