"""Model constraints that protect the data whatever code writes it."""

import datetime as dt

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, StatementError

from prefcenter.models import (
    ChannelConsent,
    ConsentLedgerEntry,
    ContactPreference,
    Customer,
    Interaction,
    LedgerIsAppendOnly,
    Topic,
)

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def test_external_id_is_unique(dbsession):
    dbsession.add(Customer(external_id="M-1", email="a@example.com"))
    dbsession.flush()
    dbsession.add(Customer(external_id="M-1", email="b@example.com"))
    with pytest.raises(IntegrityError):
        dbsession.flush()


def test_several_customers_without_external_id_are_allowed(dbsession):
    dbsession.add_all([Customer(email="a@example.com"), Customer(email="b@example.com")])
    dbsession.flush()
    count = dbsession.scalar(sa.select(sa.func.count()).select_from(Customer))
    assert count == 2


def test_one_consent_row_per_customer_and_channel(dbsession):
    customer = Customer(external_id="M-2")
    dbsession.add(customer)
    dbsession.flush()
    dbsession.add(ChannelConsent(customer_id=customer.id, channel="email", status="granted"))
    dbsession.flush()
    dbsession.add(ChannelConsent(customer_id=customer.id, channel="email", status="refused"))
    with pytest.raises(IntegrityError):
        dbsession.flush()


def test_unknown_channel_is_refused(dbsession):
    customer = Customer(external_id="M-3")
    dbsession.add(customer)
    dbsession.flush()
    dbsession.add(ChannelConsent(customer_id=customer.id, channel="fax", status="granted"))
    with pytest.raises(StatementError):
        dbsession.flush()


def test_unknown_channel_is_refused_by_the_database_itself(dbsession):
    customer = Customer(external_id="M-3b")
    dbsession.add(customer)
    dbsession.flush()
    with pytest.raises(IntegrityError):
        dbsession.execute(
            sa.text(
                "INSERT INTO channel_consents (id, customer_id, channel, status, created_at,"
                " updated_at) VALUES (:id, :customer, 'fax', 'granted', :now, :now)"
            ).bindparams(
                sa.bindparam("id", type_=sa.Uuid()),
                sa.bindparam("customer", type_=sa.Uuid()),
            ),
            {"id": __import__("uuid").uuid4(), "customer": customer.id, "now": NOW},
        )


def test_contact_hours_must_be_minutes_of_a_day(dbsession):
    customer = Customer(external_id="M-4")
    dbsession.add(customer)
    dbsession.flush()
    dbsession.add(ContactPreference(customer_id=customer.id, contact_start=1500))
    with pytest.raises(IntegrityError):
        dbsession.flush()


def test_interaction_idempotency_key_is_unique_per_source(dbsession):
    customer = Customer(external_id="M-5")
    dbsession.add(customer)
    dbsession.flush()

    def interaction(source):
        return Interaction(
            customer_id=customer.id,
            kind="purchase",
            occurred_at=NOW,
            source=source,
            idempotency_key="order-1",
        )

    dbsession.add_all([interaction("shop"), interaction("loyalty")])
    dbsession.flush()
    dbsession.add(interaction("shop"))
    with pytest.raises(IntegrityError):
        dbsession.flush()


def test_times_come_back_timezone_aware_in_utc(dbsession):
    paris = dt.timezone(dt.timedelta(hours=1))
    customer = Customer(
        external_id="M-6", last_interaction_at=dt.datetime(2026, 1, 1, 9, tzinfo=paris)
    )
    dbsession.add(customer)
    dbsession.flush()
    dbsession.expire_all()
    loaded = dbsession.get(Customer, customer.id)
    assert loaded.last_interaction_at == dt.datetime(2026, 1, 1, 8, tzinfo=dt.UTC)
    assert loaded.last_interaction_at.utcoffset() == dt.timedelta(0)


def test_naive_times_are_refused(dbsession):
    dbsession.add(Customer(external_id="M-7", last_interaction_at=dt.datetime(2026, 1, 1, 9)))
    with pytest.raises(StatementError, match="timezone-aware"):
        dbsession.flush()


def test_topic_key_is_unique(dbsession):
    dbsession.add(Topic(key="newsletter", kind="marketing", regime="opt_in"))
    dbsession.flush()
    dbsession.add(Topic(key="newsletter", kind="alert", regime="opt_out"))
    with pytest.raises(IntegrityError):
        dbsession.flush()


@pytest.fixture
def ledger_entry(dbsession):
    customer = Customer(external_id="M-8")
    dbsession.add(customer)
    dbsession.flush()
    entry = ConsentLedgerEntry(
        customer_id=customer.id,
        actor_type="customer",
        field="consent.email",
        before=None,
        after="granted",
    )
    dbsession.add(entry)
    dbsession.flush()
    return entry


def test_ledger_entries_cannot_be_updated(dbsession, ledger_entry):
    ledger_entry.after = "refused"
    with pytest.raises(LedgerIsAppendOnly):
        dbsession.flush()


def test_ledger_entries_cannot_be_deleted(dbsession, ledger_entry):
    dbsession.delete(ledger_entry)
    with pytest.raises(LedgerIsAppendOnly):
        dbsession.flush()


def test_ledger_refuses_bulk_update_and_delete(dbsession, ledger_entry):
    with pytest.raises(LedgerIsAppendOnly):
        dbsession.execute(sa.update(ConsentLedgerEntry).values(after="refused"))
    with pytest.raises(LedgerIsAppendOnly):
        dbsession.execute(sa.delete(ConsentLedgerEntry))


def test_ledger_accepts_new_entries(dbsession, ledger_entry):
    dbsession.add(
        ConsentLedgerEntry(
            customer_id=ledger_entry.customer_id,
            actor_type="customer",
            field="consent.email",
            before="granted",
            after="refused",
        )
    )
    dbsession.flush()
    rows = dbsession.scalars(
        sa.select(ConsentLedgerEntry.after)
        .where(ConsentLedgerEntry.customer_id == ledger_entry.customer_id)
        .order_by(ConsentLedgerEntry.id)
    ).all()
    assert rows == ["granted", "refused"]


def test_unknown_actor_type_is_refused(dbsession, ledger_entry):
    dbsession.add(
        ConsentLedgerEntry(
            customer_id=ledger_entry.customer_id, actor_type="robot", field="x", after="y"
        )
    )
    with pytest.raises(StatementError):
        dbsession.flush()
