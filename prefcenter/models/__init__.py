"""prefcenter's data model: one module per concept, all on one ``Base``."""

from .apikey import ApiKey
from .base import Base, utcnow
from .callback import CallbackRequest
from .consent import ChannelConsent
from .contact import ContactLogEntry, PressureRule
from .customer import Customer
from .interaction import Interaction
from .ledger import ConsentLedgerEntry, LedgerIsAppendOnly
from .policy_state import PolicyState
from .preference import ContactPreference
from .suppression import Suppression
from .throttle import ThrottleWindow
from .topic import Topic, TopicSubscription
from .user import User
from .webhook import WebhookDelivery, WebhookEndpoint
from .worker import WorkerPing

__all__ = [
    "ApiKey",
    "Base",
    "CallbackRequest",
    "ChannelConsent",
    "ConsentLedgerEntry",
    "ContactLogEntry",
    "ContactPreference",
    "Customer",
    "Interaction",
    "LedgerIsAppendOnly",
    "PolicyState",
    "PressureRule",
    "Suppression",
    "ThrottleWindow",
    "Topic",
    "TopicSubscription",
    "User",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WorkerPing",
    "utcnow",
]
