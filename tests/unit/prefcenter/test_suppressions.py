import datetime as dt

import pytest
import sqlalchemy as sa

from prefcenter.addresses import address_hmac
from prefcenter.consent_settings import ConsentSettings
from prefcenter.errors import InvalidInput
from prefcenter.models import Suppression
from prefcenter.services import suppressions
from prefcenter.services.ledger import Actor
from prefcenter.services.preferences import set_address
from prefcenter.services.suppressions import (
    RejectedLine,
    import_phone_opposition,
    is_suppressed,
    suppress,
    suppress_customer_addresses,
)
from tests.factories import make_customer

NOW = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def cfg():
    return ConsentSettings(address_key=b"suppression-test-key-0123456789ab")


def _all(session):
    return session.execute(
        sa.select(Suppression.channel, Suppression.address_hmac, Suppression.reason).order_by(
            Suppression.channel, Suppression.reason
        )
    ).all()


def test_suppress_stores_only_the_hmac_of_the_normalized_address_once(dbsession, cfg):
    assert suppress(dbsession, "email", " Claire@Example.FR ", "hard_bounce", cfg=cfg, now=NOW)
    assert not suppress(dbsession, "email", "claire@example.fr", "hard_bounce", cfg=cfg, now=NOW)

    expected = address_hmac(cfg.address_key, "email", "claire@example.fr")
    assert _all(dbsession) == [("email", expected, "hard_bounce")]
    row = dbsession.scalar(sa.select(Suppression))
    assert row.created_at == NOW
    assert "claire" not in (row.note or "") + row.address_hmac


def test_is_suppressed_lists_every_reason_for_that_channel_only(dbsession, cfg):
    suppress(dbsession, "email", "a@example.com", "hard_bounce", cfg=cfg, now=NOW)
    suppress(dbsession, "email", "a@example.com", "spam_complaint", cfg=cfg, now=NOW)
    suppress(dbsession, "sms", "+33612345678", "manual", cfg=cfg, note="asked by phone", now=NOW)

    assert is_suppressed(dbsession, "email", "A@example.com", cfg=cfg) == [
        "hard_bounce",
        "spam_complaint",
    ]
    assert is_suppressed(dbsession, "email", "b@example.com", cfg=cfg) == []
    assert is_suppressed(dbsession, "sms", "06 12 34 56 78", cfg=cfg) == ["manual"]
    assert is_suppressed(dbsession, "phone", "+33612345678", cfg=cfg) == []


def test_phone_opposition_blocks_marketing_calls_only(dbsession, cfg):
    suppress(dbsession, "phone", "0612345678", "phone_opposition", cfg=cfg, now=NOW)

    assert is_suppressed(dbsession, "phone", "+33612345678", cfg=cfg) == ["phone_opposition"]
    assert is_suppressed(dbsession, "phone", "+33612345678", cfg=cfg, kind="alert") == []
    assert is_suppressed(dbsession, "sms", "+33612345678", cfg=cfg) == []


def test_a_suppression_matches_the_hmac_the_preference_services_give_the_customer(dbsession, cfg):
    customer = make_customer(dbsession, email=None)
    set_address(dbsession, customer, "email", "Jo@Example.com", Actor.system("test"), cfg=cfg)
    set_address(dbsession, customer, "phone", "06 12 34 56 78", Actor.system("test"), cfg=cfg)

    suppress(dbsession, "email", "jo@example.com", "manual", cfg=cfg, now=NOW)
    suppress(dbsession, "sms", "+33 6 12 34 56 78", "manual", cfg=cfg, now=NOW)

    hmacs = {channel: h for channel, h, _ in _all(dbsession)}
    assert hmacs == {"email": customer.email_hmac, "sms": customer.phone_hmac}


@pytest.mark.parametrize(
    ("channel", "address", "reason", "field"),
    [
        ("fax", "a@example.com", "manual", "channel"),
        ("email", "a@example.com", "bored", "reason"),
        ("sms", "+33612345678", "phone_opposition", "reason"),
        ("email", "not an email", "manual", "address"),
        ("phone", "12", "manual", "address"),
        ("post", {"city": "Lyon"}, "manual", "address"),
    ],
)
def test_bad_suppressions_name_the_field_and_add_nothing(
    dbsession, cfg, channel, address, reason, field
):
    with pytest.raises(InvalidInput) as caught:
        suppress(dbsession, channel, address, reason, cfg=cfg, now=NOW)

    assert [e.field for e in caught.value.errors] == [field]
    assert caught.value.errors[0].code
    assert _all(dbsession) == []


def test_a_postal_address_is_suppressed_for_post(dbsession, cfg):
    address = {"line1": "12 rue de la Paix", "postal_code": "75002", "country": "FR"}

    assert suppress(dbsession, "post", address, "manual", cfg=cfg, now=NOW)

    assert is_suppressed(
        dbsession, "post", {**address, "line1": "12  Rue de la PAIX"}, cfg=cfg
    ) == ["manual"]


def test_erasure_suppresses_every_address_on_every_channel_using_it(dbsession, cfg):
    customer = make_customer(dbsession, email=None)
    actor = Actor.system("test")
    set_address(dbsession, customer, "email", "erase.me@example.com", actor, cfg=cfg)
    set_address(dbsession, customer, "phone", "+33612345678", actor, cfg=cfg)
    postal = {"line1": "1 place Bellecour", "postal_code": "69002", "city": "Lyon"}
    set_address(dbsession, customer, "postal", postal, actor, cfg=cfg)

    added = suppress_customer_addresses(dbsession, customer, "erased", cfg=cfg, now=NOW)

    assert added == 4
    assert _all(dbsession) == [
        ("email", customer.email_hmac, "erased"),
        ("phone", customer.phone_hmac, "erased"),
        ("post", customer.postal_hmac, "erased"),
        ("sms", customer.phone_hmac, "erased"),
    ]
    assert suppress_customer_addresses(dbsession, customer, "erased", cfg=cfg, now=NOW) == 0


def test_erasure_of_a_customer_without_addresses_adds_nothing(dbsession, cfg):
    customer = make_customer(dbsession, email=None)

    assert suppress_customer_addresses(dbsession, customer, "erased", cfg=cfg, now=NOW) == 0
    assert _all(dbsession) == []


def test_phone_opposition_cannot_be_applied_to_all_of_a_customers_addresses(dbsession, cfg):
    customer = make_customer(dbsession)

    with pytest.raises(InvalidInput) as caught:
        suppress_customer_addresses(dbsession, customer, "phone_opposition", cfg=cfg, now=NOW)

    assert caught.value.errors[0].field == "reason"
    assert _all(dbsession) == []


OPPOSITION_LIST = """\
# Bloctel extract 2026-03
0612345678
+33 6 98 76 54 32

06 12 34 56 78
not a number
0145678901
12
"""


def test_opposition_import_reports_added_duplicates_and_bad_lines(dbsession, cfg):
    report = import_phone_opposition(dbsession, OPPOSITION_LIST.splitlines(), cfg=cfg, now=NOW)

    assert (report.added, report.already_present) == (3, 1)
    assert report.rejected == [
        RejectedLine(6, "not a number", "is not a phone number"),
        RejectedLine(8, "12", report.rejected[1].reason),
    ]
    assert "not a valid phone number" in report.rejected[1].reason
    rows = _all(dbsession)
    assert {(c, r) for c, _, r in rows} == {("phone", "phone_opposition")}
    assert {h for _, h, _ in rows} == {
        address_hmac(cfg.address_key, "phone", n)
        for n in ("+33612345678", "+33698765432", "+33145678901")
    }
    assert is_suppressed(dbsession, "phone", "+33145678901", cfg=cfg) == ["phone_opposition"]


def test_importing_the_same_list_again_adds_nothing(dbsession, cfg):
    import_phone_opposition(dbsession, OPPOSITION_LIST.splitlines(), cfg=cfg, now=NOW)

    again = import_phone_opposition(dbsession, OPPOSITION_LIST.splitlines(), cfg=cfg, now=NOW)

    assert (again.added, again.already_present, len(again.rejected)) == (0, 4, 2)
    assert len(_all(dbsession)) == 3


def test_an_opposition_number_already_suppressed_for_another_reason_is_still_added(dbsession, cfg):
    suppress(dbsession, "phone", "+33612345678", "manual", cfg=cfg, now=NOW)

    report = import_phone_opposition(dbsession, ["0612345678"], cfg=cfg, now=NOW)

    assert report.added == 1
    assert is_suppressed(dbsession, "phone", "+33612345678", cfg=cfg) == [
        "manual",
        "phone_opposition",
    ]


def test_opposition_import_inserts_a_batch_per_statement_not_a_row_per_line(
    dbsession, cfg, monkeypatch
):
    monkeypatch.setattr(suppressions, "IMPORT_BATCH_SIZE", 3)
    numbers = [f"+3361234560{n}" for n in range(7)] + ["+33612345600", "+33612345601"]
    inserts = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO SUPPRESSIONS"):
            inserts.append(statement)

    bind = dbsession.connection()
    sa.event.listen(bind, "before_cursor_execute", count)
    try:
        report = import_phone_opposition(dbsession, numbers, cfg=cfg, now=NOW)
    finally:
        sa.event.remove(bind, "before_cursor_execute", count)

    # 9 valid lines in batches of 3: three statements; the last two lines repeat the first.
    assert len(inserts) == 3
    assert all("ON CONFLICT DO NOTHING" in s.upper() for s in inserts)
    assert (report.added, report.already_present) == (7, 2)
    assert len(_all(dbsession)) == 7


def test_is_suppressed_names_a_bad_channel_or_kind(dbsession, cfg):
    with pytest.raises(InvalidInput) as channel:
        is_suppressed(dbsession, "fax", "+33612345678", cfg=cfg)
    with pytest.raises(InvalidInput) as kind:
        is_suppressed(dbsession, "phone", "+33612345678", cfg=cfg, kind="urgent")

    assert channel.value.errors[0].field == "channel"
    assert kind.value.errors[0].field == "kind"
