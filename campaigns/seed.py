"""The demo data set's campaigns: two drafts a marketer can forecast and launch at once.

Called by ``prefcenter seed-demo`` when the campaign engine is installed. Idempotent:
a campaign of the same name is never added twice. Drafts send nothing until launched.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .models import Campaign
from .services import create_campaign

DEMO_CAMPAIGNS = (
    {
        "name": "Soldes d'hiver (démo)",
        "topic": "offers_fashion",
        "channels": ["email", "sms"],
        "segment": {"all": [{"not": {"dormant": True}}]},
        "content": {
            "email": {
                "fr": {
                    "subject": "{{ first_name }}, les soldes d'hiver commencent",
                    "html": "<p>Bonjour {{ first_name }},</p><p>Jusqu'à -40 % sur la mode.</p>"
                    '<p><a href="{{ portal_url }}">Mes préférences</a></p>',
                    "text": "Bonjour {{ first_name }}, jusqu'à -40 % sur la mode. "
                    "Mes préférences : {{ portal_url }}",
                },
                "en": {
                    "subject": "{{ first_name }}, the winter sale starts",
                    "text": "Hello {{ first_name }}, up to 40% off fashion. "
                    "Your preferences: {{ portal_url }}",
                },
            },
            "sms": {"fr": {"text": "Soldes d'hiver : jusqu'à -40 % sur la mode !"}},
        },
    },
    {
        "name": "On vous a manqué (démo)",
        "topic": "newsletter",
        "channels": ["email", "post"],
        "segment": {"dormant": True},
        "content": {
            "email": {
                "fr": {
                    "subject": "{{ first_name }}, ça fait longtemps",
                    "text": "Bonjour {{ first_name }}, voici ce qui a changé chez nous.",
                }
            },
            "post": {"fr": {"text": "Bonjour {{ first_name }}, voici ce qui a changé chez nous."}},
        },
    },
)


def seed_demo_campaigns(session: Session) -> int:
    """Add the demo campaigns that are missing; return how many were added."""
    names = set(session.scalars(sa.select(Campaign.name)))
    added = 0
    for spec in DEMO_CAMPAIGNS:
        if spec["name"] not in names:
            create_campaign(session, spec, created_by="seed-demo")
            added += 1
    return added
