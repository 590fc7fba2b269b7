"""The demo data set: topics, 2,400 customers with consents, preferences and history.

Deterministic (one ``random.Random(2026)``), idempotent (customers are keyed by
``external_id`` DEMO-000001..., topics by key, users by e-mail, the API key by its
prefix: a second run inserts nothing) and set-based (rows go in with
``session.execute(insert(Model), rows)`` in batches, never one ORM object each).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import unicodedata
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .consent_settings import ConsentSettings
from .models import (
    ApiKey,
    ChannelConsent,
    ConsentLedgerEntry,
    ContactPreference,
    Customer,
    Interaction,
    Topic,
    TopicSubscription,
    User,
)
from .models.vocabulary import API_SCOPES
from .services.apikeys import register_api_key
from .services.interactions import move_last_interaction
from .services.suppressions import current_address_hmac
from .services.users import create_user

SEED = 2026
CUSTOMER_COUNT = 2400
BATCH_SIZE = 1000
SOURCE = "seed-demo"
EXTERNAL_ID_PREFIX = "DEMO-"
LEDGER_DETAILS = {"mechanism": "demo seed"}
MECHANISM = "demo_seed"
ADDRESS_FIELDS = ("email", "phone", "postal_line1", "postal_code", "country")


@dataclasses.dataclass(frozen=True)
class DemoLogin:
    email: str
    password: str
    role: str


DEMO_LOGINS = (
    DemoLogin("demo@example.com", "demo-password", "marketer"),
    DemoLogin("admin@example.com", "admin-password", "admin"),
)
DEMO_API_KEY_NAME = "Demo loyalty program"
# Fixed so it can be printed on every run; it is public, like the demo passwords.
DEMO_API_KEY = "pc_demo0000_DEMO-key-NOT-secret-shown-to-everyone-00000"

TABLES = (
    "topics",
    "customers",
    "channel_consents",
    "topic_subscriptions",
    "contact_preferences",
    "interactions",
    "consent_ledger",
    "users",
    "api_keys",
)


@dataclasses.dataclass
class SeedSummary:
    inserted: dict[str, int]  # rows this run added, per table
    totals: dict[str, int]  # demo rows in the database afterwards, per table
    logins: tuple[DemoLogin, ...] = DEMO_LOGINS
    api_key: str = DEMO_API_KEY


# key, kind, regime, names, descriptions
TOPICS: tuple[tuple[str, str, str, dict[str, str], dict[str, str]], ...] = (
    (
        "offers_fashion",
        "marketing",
        "opt_in",
        {"fr": "Offres mode", "en": "Fashion offers"},
        {
            "fr": "Nouvelles collections, ventes privées et soldes mode.",
            "en": "New collections, private sales and fashion sales.",
        },
    ),
    (
        "offers_home",
        "marketing",
        "opt_in",
        {"fr": "Offres maison", "en": "Home offers"},
        {
            "fr": "Décoration, linge de maison et arts de la table à prix doux.",
            "en": "Decoration, household linen and tableware at gentle prices.",
        },
    ),
    (
        "offers_beauty",
        "marketing",
        "opt_in",
        {"fr": "Offres beauté", "en": "Beauty offers"},
        {
            "fr": "Soins, parfums et maquillage : nouveautés et offres.",
            "en": "Skincare, fragrance and make-up: new arrivals and offers.",
        },
    ),
    (
        "newsletter",
        "marketing",
        "opt_in",
        {"fr": "La lettre de la Maison", "en": "The Maison newsletter"},
        {
            "fr": "Une fois par mois : inspirations, coulisses et événements en boutique.",
            "en": "Once a month: inspiration, behind the scenes and in-store events.",
        },
    ),
    (
        "loyalty_alerts",
        "alert",
        "opt_in",
        {"fr": "Alertes fidélité", "en": "Loyalty alerts"},
        {
            "fr": "Vos points arrivent à expiration, une récompense vous attend.",
            "en": "Your points are about to expire, a reward is waiting for you.",
        },
    ),
    (
        "order_updates",
        "alert",
        "opt_out",
        {"fr": "Suivi de commande", "en": "Order updates"},
        {
            "fr": "Confirmation, expédition et livraison de vos commandes.",
            "en": "Confirmation, shipping and delivery of your orders.",
        },
    ),
)
CATEGORIES = ("fashion", "home", "beauty")

FR_FIRST_NAMES = (
    "Camille", "Léa", "Manon", "Chloé", "Emma", "Inès", "Jade", "Louise", "Alice", "Lina",
    "Sarah", "Juliette", "Zoé", "Clémence", "Margaux", "Anaïs", "Élodie", "Nathalie", "Isabelle",
    "Sylvie", "Catherine", "Brigitte", "Hélène", "Céline", "Amélie", "Lucas", "Hugo", "Louis",
    "Gabriel", "Arthur", "Jules", "Raphaël", "Théo", "Nathan", "Thomas", "Maxime", "Antoine",
    "Nicolas", "Julien", "Pierre", "François", "Philippe", "Olivier", "Laurent", "Stéphane",
    "Mathieu", "Benoît", "Jérôme", "Yannick", "Loïc", "Mohamed", "Karim", "Yasmine", "Nadia",
)  # fmt: skip
FR_LAST_NAMES = (
    "Martin", "Bernard", "Thomas", "Petit", "Robert", "Richard", "Durand", "Dubois", "Moreau",
    "Laurent", "Simon", "Michel", "Lefèvre", "Leroy", "Roux", "David", "Bertrand", "Morel",
    "Fournier", "Girard", "Bonnet", "Dupont", "Lambert", "Fontaine", "Rousseau", "Vincent",
    "Muller", "Lefebvre", "Faure", "André", "Mercier", "Blanc", "Guérin", "Boyer", "Garnier",
    "Chevalier", "François", "Legrand", "Gauthier", "Garcia", "Perrin", "Robin", "Clément",
    "Morin", "Nicolas", "Henry", "Roussel", "Mathieu", "Gautier", "Masson", "Le Goff", "Benali",
)  # fmt: skip
EN_FIRST_NAMES = (
    "Olivia", "Amelia", "Isla", "Ava", "Emily", "Sophie", "Grace", "Charlotte", "Jessica",
    "Hannah", "Eleanor", "Lucy", "Oliver", "George", "Harry", "Jack", "Charlie", "Oscar",
    "James", "William", "Thomas", "Henry", "Alfie", "Daniel", "Samuel", "Matthew", "Priya",
    "Aisha", "Ryan", "Connor",
)  # fmt: skip
EN_LAST_NAMES = (
    "Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas",
    "Johnson", "Roberts", "Robinson", "Thompson", "Wright", "Walker", "White", "Edwards",
    "Hughes", "Green", "Hall", "Wood", "Harris", "Lewis", "Martin", "Jackson", "Clarke",
    "Patel", "Khan", "O'Brien", "Murphy",
)  # fmt: skip
FR_STREETS = (
    "rue de la République", "rue Victor Hugo", "avenue Jean Jaurès", "rue Pasteur",
    "boulevard Gambetta", "rue du Général de Gaulle", "place de l'Église", "rue des Écoles",
    "allée des Tilleuls", "chemin des Vignes", "rue Nationale", "avenue de la Gare",
)  # fmt: skip
# city, postal code, country, timezone
FR_CITIES = (
    ("Paris", "75011", "FR"), ("Paris", "75015", "FR"), ("Paris", "75018", "FR"),
    ("Lyon", "69003", "FR"), ("Marseille", "13006", "FR"), ("Toulouse", "31000", "FR"),
    ("Nantes", "44000", "FR"), ("Bordeaux", "33000", "FR"), ("Lille", "59000", "FR"),
    ("Strasbourg", "67000", "FR"), ("Rennes", "35000", "FR"), ("Montpellier", "34000", "FR"),
    ("Nice", "06000", "FR"), ("Grenoble", "38000", "FR"), ("Dijon", "21000", "FR"),
    ("Angers", "49000", "FR"), ("Reims", "51100", "FR"), ("Tours", "37000", "FR"),
    ("Clermont-Ferrand", "63000", "FR"), ("Annecy", "74000", "FR"), ("Brest", "29200", "FR"),
    ("Versailles", "78000", "FR"), ("Saint-Étienne", "42000", "FR"), ("Rouen", "76000", "FR"),
)  # fmt: skip
OVERSEAS = {
    "Indian/Reunion": ("Saint-Denis", "97400", "FR"),
    "America/Guadeloupe": ("Pointe-à-Pitre", "97110", "FR"),
    "Pacific/Noumea": ("Nouméa", "98800", "NC"),
}
GB_STREETS = ("High Street", "Station Road", "Church Lane", "Victoria Road", "Park Avenue")
GB_CITIES = (
    ("London", "SW1A 1AA"), ("London", "E1 6AN"), ("Manchester", "M1 1AE"),
    ("Bristol", "BS1 4DJ"), ("Edinburgh", "EH1 1YZ"),
)  # fmt: skip
FR_TIMEZONES = (
    ("Europe/Paris", 88),
    ("America/Toronto", 4),  # Québec keeps Toronto's time (America/Montreal is a legacy alias)
    ("Indian/Reunion", 3),
    ("America/Guadeloupe", 3),
    ("Pacific/Noumea", 2),
)
# English speakers: mostly living in France, some in the United Kingdom.
EN_TIMEZONES = (("Europe/Paris", 70), ("Europe/London", 30))


def seed_demo(
    session: Session, *, now: dt.datetime, cfg: ConsentSettings, customers: int = CUSTOMER_COUNT
) -> SeedSummary:
    """Insert what is missing of the demo data set; flush, never commit.

    ``cfg`` gives the address HMAC key: the contact policy matches suppressions and
    confirmed addresses on the HMACs kept beside each address.
    """
    rng = random.Random(SEED)
    inserted = dict.fromkeys(TABLES, 0)

    topic_ids = _seed_topics(session, rng, inserted)
    phones = _PhoneNumbers()
    people = [_person(rng, n, now, phones) for n in range(1, customers + 1)]
    for number, interaction in enumerate((i for p in people for i in p.interactions), 1):
        interaction["idempotency_key"] = f"seed-{number}"
    new = _missing_people(session, people)
    for person in new:
        _add_address_hmacs(person, cfg)

    _insert(session, Customer, [p.customer for p in new], inserted)
    _insert(session, ChannelConsent, [c for p in new for c in p.consents], inserted)
    subscriptions = [
        {
            "customer_id": p.customer["id"],
            "topic_id": topic_ids[key],
            "status": status,
            "frequency": frequency,
            "created_at": at,
            "updated_at": at,
        }
        for p in new
        for key, status, frequency, at in p.subscriptions
    ]
    _insert(session, TopicSubscription, subscriptions, inserted)
    _insert(session, ContactPreference, [p.preference for p in new], inserted)
    seeded_keys = set(
        session.scalars(sa.select(Interaction.idempotency_key).where(Interaction.source == SOURCE))
    )
    interactions = [i for p in new for i in p.interactions]
    _insert(
        session,
        Interaction,
        [i for i in interactions if i["idempotency_key"] not in seeded_keys],
        inserted,
    )
    _insert(session, ConsentLedgerEntry, [e for p in new for e in _ledger(p)], inserted)
    if new:
        _set_last_interaction(session, now)

    for login in DEMO_LOGINS:
        if session.scalar(sa.select(User.id).where(User.email == login.email)) is None:
            create_user(session, login.email, login.password, login.role)
            inserted["users"] += 1
    demo_prefix = DEMO_API_KEY[3:11]
    if session.scalar(sa.select(ApiKey.id).where(ApiKey.prefix == demo_prefix)) is None:
        register_api_key(session, DEMO_API_KEY_NAME, API_SCOPES, DEMO_API_KEY)
        inserted["api_keys"] += 1

    session.flush()
    return SeedSummary(inserted=inserted, totals=demo_totals(session))


def _missing_people(session: Session, people: Sequence[_Person]) -> list[_Person]:
    """The demo people not in the database yet, by id or by loyalty member id.

    By id too: an erased customer keeps their row (``erased_at``) but loses the external
    id, and must never come back; a customer whose member id or address changed since is
    still the same person.
    """
    ids = {p.customer["id"] for p in people}
    external_ids = {p.customer["external_id"] for p in people}
    known_ids: set[uuid.UUID] = set()
    known_external: set[str | None] = set()
    id_list, external_list = sorted(ids), sorted(external_ids)
    for start in range(0, len(id_list), BATCH_SIZE):
        known_ids.update(
            session.scalars(
                sa.select(Customer.id).where(Customer.id.in_(id_list[start : start + BATCH_SIZE]))
            )
        )
        known_external.update(
            session.scalars(
                sa.select(Customer.external_id).where(
                    Customer.external_id.in_(external_list[start : start + BATCH_SIZE])
                )
            )
        )
    return [
        p
        for p in people
        if p.customer["id"] not in known_ids and p.customer["external_id"] not in known_external
    ]


def demo_totals(session: Session) -> dict[str, int]:
    """How many rows of each table belong to the demo data set."""
    demo_customers = sa.select(Customer.id).where(
        Customer.external_id.like(f"{EXTERNAL_ID_PREFIX}%")
    )

    def count(model: Any, *where: Any) -> int:
        return session.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0

    return {
        "topics": count(Topic, Topic.key.in_([t[0] for t in TOPICS])),
        "customers": count(Customer, Customer.id.in_(demo_customers)),
        "channel_consents": count(ChannelConsent, ChannelConsent.customer_id.in_(demo_customers)),
        "topic_subscriptions": count(
            TopicSubscription, TopicSubscription.customer_id.in_(demo_customers)
        ),
        "contact_preferences": count(
            ContactPreference, ContactPreference.customer_id.in_(demo_customers)
        ),
        "interactions": count(Interaction, Interaction.source == SOURCE),
        "consent_ledger": count(
            ConsentLedgerEntry,
            ConsentLedgerEntry.actor_type == "system",
            ConsentLedgerEntry.actor_id == SOURCE,
        ),
        "users": count(User, User.email.in_([login.email for login in DEMO_LOGINS])),
        "api_keys": count(ApiKey, ApiKey.prefix == DEMO_API_KEY[3:11]),
    }


@dataclasses.dataclass
class _Person:
    customer: dict[str, Any]
    consents: list[dict[str, Any]]
    subscriptions: list[tuple[str, str, str | None, dt.datetime]]
    preference: dict[str, Any]
    interactions: list[dict[str, Any]]


def _seed_topics(session: Session, rng: random.Random, inserted: dict[str, int]) -> dict[str, Any]:
    ids = {key: _uuid(rng) for key, *_ in TOPICS}
    existing = dict(session.execute(sa.select(Topic.key, Topic.id).where(Topic.key.in_(ids))).all())
    # A demo topic a marketer renamed keeps its id: it is there, under another key.
    taken = set(session.scalars(sa.select(Topic.id).where(Topic.id.in_(ids.values()))))
    rows = [
        {
            "id": ids[key],
            "key": key,
            "kind": kind,
            "regime": regime,
            "names": names,
            "descriptions": descriptions,
        }
        for key, kind, regime, names, descriptions in TOPICS
        if key not in existing and ids[key] not in taken
    ]
    _insert(session, Topic, rows, inserted)
    return {**ids, **existing}


def _insert(
    session: Session, model: Any, rows: Sequence[dict[str, Any]], inserted: dict[str, int]
) -> None:
    # render_nulls: one statement per batch instead of one per pattern of None values.
    statement = sa.insert(model).execution_options(render_nulls=True)
    for start in range(0, len(rows), BATCH_SIZE):
        session.execute(statement, rows[start : start + BATCH_SIZE])
    inserted[model.__tablename__] += len(rows)


def _set_last_interaction(session: Session, now: dt.datetime) -> None:
    move_last_interaction(
        session,
        sa.and_(
            Customer.external_id.like(f"{EXTERNAL_ID_PREFIX}%"),
            Customer.last_interaction_at.is_(None),
            sa.exists().where(Interaction.customer_id == Customer.id),
        ),
        updated_at=now,
    )


def _add_address_hmacs(person: _Person, cfg: ConsentSettings) -> None:
    """The HMACs the services keep, and a confirmed address for granted e-mail/SMS."""
    customer = person.customer
    # A transient Customer, so the HMACs are computed exactly as the services do.
    addresses = Customer(**{k: customer[k] for k in ADDRESS_FIELDS})
    hmacs = {
        f"{kind}_hmac": current_address_hmac(addresses, kind, cfg)
        for kind in ("email", "phone", "postal")
    }
    customer.update(hmacs)
    address_of = {"email": hmacs["email_hmac"], "sms": hmacs["phone_hmac"]}
    for consent in person.consents:
        # Granted through a double opt-in that proved the address; half of the refusals
        # come from customers who had proved it before opting out.
        proved = consent["status"] == "granted" or (
            consent["status"] == "refused" and consent["id"].int % 2 == 0
        )
        confirmed = proved and consent["channel"] in address_of
        consent["confirmed_hmac"] = address_of[consent["channel"]] if confirmed else None


def _ledger(person: _Person) -> list[dict[str, Any]]:
    customer_id = person.customer["id"]
    entry = {
        "customer_id": customer_id,
        "actor_type": "system",
        "actor_id": SOURCE,
        "before": None,
        "details": LEDGER_DETAILS,
    }
    entries = [
        {
            **entry,
            "field": f"consent.{c['channel']}",
            "after": c["status"],
            "at": c["granted_at"] or c["refused_at"] or c["created_at"],
        }
        for c in person.consents
    ]
    entries.extend(
        {**entry, "field": f"topic.{key}", "after": status, "at": at}
        for key, status, _, at in person.subscriptions
    )
    return entries


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _weighted(rng: random.Random, choices: Sequence[tuple[str, int]]) -> str:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


def _ascii(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _ago(now: dt.datetime, days: float) -> dt.datetime:
    return (now - dt.timedelta(days=days)).replace(microsecond=0)


@dataclasses.dataclass
class _PhoneNumbers:
    """Mobile numbers the app's own validator (``phonenumbers``) accepts.

    The ranges reserved for fiction (ARCEP 06 39 98, Ofcom 07700 900) are not valid
    numbers for ``phonenumbers``, so a demo customer could not save their own number or ask
    for a call back. These are ordinary mobile ranges: demo messages must stay in the
    outbox (the embedded default), never go to a real SMS provider.
    """

    french: int = 0
    british: int = 0

    def next_french(self) -> str:
        # 06 12 00 00 01, 06 12 00 00 02, ...
        self.french += 1
        return f"+33612{self.french % 1_000_000:06d}"

    def next_british(self) -> str:
        # 07400 000001, 07400 000002, ...
        self.british += 1
        return f"+447400{self.british % 1_000_000:06d}"


def _person(rng: random.Random, n: int, now: dt.datetime, phones: _PhoneNumbers) -> _Person:
    customer_id = _uuid(rng)
    locale = "fr" if rng.random() < 0.70 else "en"
    if locale == "fr":
        first, last = rng.choice(FR_FIRST_NAMES), rng.choice(FR_LAST_NAMES)
        timezone = _weighted(rng, FR_TIMEZONES)
        domain = _weighted(rng, (("example.fr", 5), ("example.com", 3), ("example.org", 2)))
        phone = phones.next_french() if rng.random() < 0.60 else None
    else:
        first, last = rng.choice(EN_FIRST_NAMES), rng.choice(EN_LAST_NAMES)
        timezone = _weighted(rng, EN_TIMEZONES)
        domain = _weighted(rng, (("example.com", 6), ("example.org", 4)))
        phone = phones.next_british() if rng.random() < 0.60 else None

    style = rng.randrange(3)
    local = (f"{_ascii(first)}.{_ascii(last)}", f"{_ascii(first)[0]}{_ascii(last)}", _ascii(last))[
        style
    ]
    email = f"{local}{n}@{domain}"

    address: dict[str, Any] = dict.fromkeys(
        ("postal_line1", "postal_code", "city", "country"), None
    )
    if rng.random() < 0.50 and timezone != "America/Toronto":
        number = rng.randint(1, 180)
        if timezone == "Europe/London":
            city, code = rng.choice(GB_CITIES)
            address = {
                "postal_line1": f"{number} {rng.choice(GB_STREETS)}",
                "postal_code": code,
                "city": city,
                "country": "GB",
            }
        else:
            city, code, country = OVERSEAS.get(timezone) or rng.choice(FR_CITIES)
            address = {
                "postal_line1": f"{number} {rng.choice(FR_STREETS)}",
                "postal_code": code,
                "city": city,
                "country": country,
            }

    tier = _weighted(rng, (("bronze", 60), ("silver", 30), ("gold", 10)))
    points = rng.randint(0, {"bronze": 800, "silver": 3000, "gold": 12000}[tier])
    favourite = rng.choice(CATEGORIES)

    # Activity: ~70% active (an interaction in the last 180 days), ~30% dormant.
    active = rng.random() < 0.70
    if active:
        signup_age = rng.uniform(1, 1095)
        last_age = rng.uniform(0, min(179.5, signup_age))
        extra = rng.randint(2, 14)
    else:
        signup_age = rng.uniform(200, 1095)
        silent = rng.random() < 1 / 3  # never interacted at all
        last_age = None if silent else rng.uniform(181, min(729, signup_age))
        extra = 0 if silent else rng.randint(0, 4)
    signed_up = _ago(now, signup_age)

    customer = {
        "id": customer_id,
        "external_id": f"{EXTERNAL_ID_PREFIX}{n:06d}",
        "email": email,
        "phone": phone,
        "first_name": first,
        "last_name": last,
        **address,
        "locale": locale,
        "timezone": timezone,
        "attributes": {"tier": tier, "points": points, "favourite_category": favourite},
        "created_at": signed_up,
        "updated_at": signed_up,
    }

    def when() -> dt.datetime:
        return _ago(now, rng.uniform(0, signup_age))

    consents = []

    def consent(channel: str, status: str) -> None:
        at = when()
        consents.append(
            {
                "id": _uuid(rng),
                "customer_id": customer_id,
                "channel": channel,
                "status": status,
                "source": SOURCE,
                "mechanism": MECHANISM,
                "granted_at": at if status == "granted" else None,
                "refused_at": at if status == "refused" else None,
                "created_at": at,
                "updated_at": at,
            }
        )

    draw = rng.random()
    if draw < 0.65:
        consent("email", "granted")
    elif draw < 0.70:
        consent("email", "pending")
    elif draw < 0.85:
        consent("email", "refused")
    if phone:
        draw = rng.random()
        if draw < 0.35:
            consent("sms", "granted")
        elif draw < 0.50:
            consent("sms", "refused")
        if rng.random() < 0.10:
            consent("phone", "refused")
    if address["postal_line1"] and rng.random() < 0.05:
        consent("post", "refused")

    subscriptions: list[tuple[str, str, str | None, dt.datetime]] = []
    for key, kind, regime, *_ in TOPICS:
        if key.startswith("offers_"):
            subscribe = 0.60 if key == f"offers_{favourite}" else 0.25
            unsubscribe = 0.10
        elif key == "newsletter":
            subscribe, unsubscribe = 0.45, 0.10
        elif regime == "opt_in":
            subscribe, unsubscribe = 0.55, 0.05
        else:  # opt-out alerts: no row means allowed
            subscribe, unsubscribe = 0.10, 0.05
        draw = rng.random()
        if draw < subscribe:
            frequency = None
            if kind == "marketing" and rng.random() < 0.15:
                frequency = rng.choice(("weekly", "monthly"))
            subscriptions.append((key, "subscribed", frequency, when()))
        elif draw < subscribe + unsubscribe:
            subscriptions.append((key, "unsubscribed", None, when()))

    channels = ["email"]
    if phone:
        channels += ["sms", "phone"]
    if address["postal_line1"]:
        channels.append("post")
    rng.shuffle(channels)
    if rng.random() < 0.06:  # a window crossing midnight (night workers)
        start, end = rng.choice((20, 21, 22)) * 60, rng.choice((1, 2, 6, 8)) * 60
    else:
        start = rng.choice((8, 9, 9, 9, 10)) * 60 + rng.choice((0, 30))
        end = rng.choice((18, 19, 20, 20, 21)) * 60
    paused_until = None
    if rng.random() < 0.04:
        paused_until = (now + dt.timedelta(days=rng.randint(7, 90))).replace(microsecond=0)
    preference = {
        "customer_id": customer_id,
        "frequency": _weighted(rng, (("any", 50), ("weekly", 30), ("monthly", 20))),
        "channel_order": ",".join(channels),
        "contact_start": start,
        "contact_end": end,
        "paused_until": paused_until,
        "created_at": signed_up,
        "updated_at": signed_up,
    }

    interactions = []
    if last_age is not None:
        oldest = min(730.0, signup_age)
        ages = [last_age] + [rng.uniform(last_age, oldest) for _ in range(extra)]
        for age in ages:
            kind = _weighted(rng, (("purchase", 45), ("loyalty_activity", 30), ("visit", 25)))
            if kind == "purchase":
                category = favourite if rng.random() < 0.6 else rng.choice(CATEGORIES)
                data: dict[str, Any] = {
                    "amount_eur": round(rng.uniform(9, 260), 2),
                    "category": category,
                }
            elif kind == "loyalty_activity":
                data = {"points": rng.choice((50, 100, 150, 250, -500, -1000))}
            else:
                data = {"store": rng.choice(("online", "boutique"))}
            occurred = _ago(now, age)
            interactions.append(
                {
                    "id": _uuid(rng),
                    "customer_id": customer_id,
                    "kind": kind,
                    "occurred_at": occurred,
                    "source": SOURCE,
                    "idempotency_key": "",  # numbered below, in a stable order
                    "data": data,
                    "created_at": occurred,
                }
            )
    return _Person(customer, consents, subscriptions, preference, interactions)
