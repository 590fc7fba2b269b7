"""The product's fixed vocabularies, shared by models, services and validation."""

CHANNELS = ("email", "sms", "phone", "post")
CONSENT_STATUSES = ("granted", "pending", "refused")
TOPIC_KINDS = ("marketing", "alert")
REGIMES = ("opt_in", "opt_out")
FREQUENCIES = ("any", "weekly", "monthly")
SUBSCRIPTION_STATUSES = ("subscribed", "unsubscribed")
ACTOR_TYPES = ("customer", "api_key", "marketer", "provider", "system")
SUPPRESSION_REASONS = ("hard_bounce", "spam_complaint", "erased", "manual", "phone_opposition")
USER_ROLES = ("admin", "marketer", "viewer")
LOCALES = ("fr", "en")
API_SCOPES = (
    "customers:read",
    "customers:write",
    "preferences:read",
    "preferences:write",
    "interactions:write",
    "alerts:send",
    "gdpr",
    "admin",
    "campaigns:read",
    "campaigns:write",
)
# Inbound interactions: any of these means the customer is engaged (not dormant).
INTERACTION_KINDS = (
    "purchase",
    "loyalty_activity",
    "visit",
    "portal_visit",
    "email_open",
    "email_click",
    "inbound_call",
    "reply",
    "callback_request",
)
