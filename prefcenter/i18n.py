"""French and English through Babel message catalogs (prefcenter/locale).

Catalogs are read from the ``.po`` files and compiled in memory, so a fresh clone,
a test run and a production install all see the same translations with no build
step. Message ids are English; ``prefcenter/locale/<lang>/LC_MESSAGES/prefcenter.po``
translates them (``make messages`` re-extracts and updates them).
"""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from babel.messages import mofile, pofile
from babel.support import Translations
from pyramid.i18n import Localizer, TranslationString, TranslationStringFactory

DOMAIN = "prefcenter"
LOCALES = ("fr", "en")
DEFAULT_LOCALE = "fr"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"

_ = TranslationStringFactory(DOMAIN)


def negotiate(*candidates: str | None) -> str:
    """The first supported locale among the candidates ("en-GB" counts as "en")."""
    for candidate in candidates:
        if not candidate:
            continue
        language = candidate.replace("_", "-").split("-")[0].lower()
        if language in LOCALES:
            return language
    return DEFAULT_LOCALE


@functools.cache
def translations(locale: str) -> Translations:
    path = LOCALE_DIR / locale / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not path.exists():
        return Translations(domain=DOMAIN)
    with path.open("rb") as po:
        catalog = pofile.read_po(po, locale=locale, domain=DOMAIN)
    buffer = io.BytesIO()
    mofile.write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(fp=buffer, domain=DOMAIN)


@functools.cache
def localizer(locale: str) -> Localizer:
    return Localizer(locale, translations(negotiate(locale)))


def translate(
    message: str | TranslationString, locale: str, mapping: Mapping[str, Any] | None = None
) -> str:
    """``message`` in ``locale``, with ``${name}`` placeholders filled from ``mapping``."""
    if not isinstance(message, TranslationString):
        message = _(message)
    if mapping:
        message = TranslationString(message, domain=message.domain, mapping=dict(mapping))
    return localizer(negotiate(locale)).translate(message)


def includeme(config: Any) -> None:
    """Let Pyramid's request.localizer use our in-memory catalogs."""
    from pyramid.interfaces import ILocalizer

    for locale in LOCALES:
        config.registry.registerUtility(localizer(locale), ILocalizer, name=locale)
    config.registry.settings.setdefault("pyramid.default_locale_name", DEFAULT_LOCALE)
