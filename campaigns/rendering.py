"""Campaign content rendered for one customer, in a sandbox, in their language.

Marketers write Jinja2: ``{{ first_name }}``, ``{{ attributes.points }}``,
``{{ portal_url }}``, ``{{ unsubscribe_url }}``. The sandbox refuses attribute
access to Python internals, HTML is autoescaped, text is not.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

from jinja2.sandbox import SandboxedEnvironment

# Which parts each channel's content has, per locale.
PARTS = {
    "email": ("subject", "html", "text"),
    "sms": ("text",),
    "phone": ("script",),
    "post": ("text",),
}


@dataclasses.dataclass(frozen=True)
class Rendered:
    locale: str
    parts: dict[str, str]


@functools.cache
def _environment(autoescape: bool) -> SandboxedEnvironment:
    return SandboxedEnvironment(autoescape=autoescape, keep_trailing_newline=False)


def compile_template(source: str, *, html: bool) -> Any:
    """A sandboxed template; ``jinja2.TemplateSyntaxError`` says what is wrong with it."""
    return _compiled(source, html)


# A campaign renders the same few templates for every customer: compile each once.
@functools.lru_cache(maxsize=512)
def _compiled(source: str, html: bool) -> Any:
    return _environment(html).from_string(source)


def pick_locale(content: Mapping[str, Any], channel: str, locale: str | None) -> str | None:
    """The customer's locale if the channel has content in it, else the campaign's first one."""
    variants = content.get(channel) or {}
    if locale in variants:
        return locale
    return next(iter(variants), None)


def render(
    content: Mapping[str, Any], channel: str, locale: str | None, context: Mapping[str, Any]
) -> Rendered:
    """Render every part of ``channel``'s content; KeyError if the channel has none."""
    chosen = pick_locale(content, channel, locale)
    if chosen is None:
        raise KeyError(channel)
    variant = content[channel][chosen]
    parts = {}
    for part in PARTS[channel]:
        source = variant.get(part)
        if source is None:
            continue
        parts[part] = compile_template(str(source), html=part == "html").render(**context)
    return Rendered(chosen, parts)
