"""Campaign content rendered for one customer, in a sandbox, in their language.

Marketers write Jinja2: ``{{ first_name }}``, ``{{ attributes.points }}``,
``{{ portal_url }}``, ``{{ unsubscribe_url }}``. The sandbox refuses attribute
access to Python internals, HTML is autoescaped, text is not.

A locale's content made only of plain outputs of the customer's fields (``{{ name }}``,
``{{ attributes.name }}``: no filter, test, loop or condition) is rendered once, each
field left as a key (:class:`Shared`); a customer's message is then the shared parts with
their own values put in, escaped in HTML as Jinja would, which a provider can also do
(SendGrid substitutions). Any other content is rendered by Jinja for each customer.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping
from typing import Any

from jinja2 import meta, nodes
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape

from .channels import SharedBody

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


# The names dispatch puts in a customer's context (see campaigns.dispatch).
CUSTOMER_FIELDS = frozenset(
    ("first_name", "last_name", "attributes", "portal_url", "unsubscribe_url")
)
KEY_PREFIX = "%pc:"
_KEY = re.compile(r"%pc:\d+(?::h)?%")
_UNDEFINED = object()


@dataclasses.dataclass(frozen=True)
class Field:
    """One customer value a shared content leaves out: ``name`` or ``attributes.<attr>``."""

    name: str
    attr: str | None
    key: str  # in the subject and the text
    html_key: str  # in the HTML, where the value is escaped

    def value(self, context: Mapping[str, Any]) -> Any:
        value = context.get(self.name, _UNDEFINED)
        if self.attr is not None and value is not _UNDEFINED:
            value = value.get(self.attr, _UNDEFINED)
        return value


@dataclasses.dataclass(frozen=True, eq=False)
class Shared:
    """One locale's parts rendered once, with a key where each customer's value goes."""

    locale: str
    parts: dict[str, str]
    fields: tuple[Field, ...]
    body: SharedBody  # the text and HTML parts, as messages carry them

    def substitutions(self, context: Mapping[str, Any]) -> dict[str, str] | None:
        """Key -> this customer's value (text as is, HTML escaped), as Jinja would output
        them; None when a value itself looks like a key (then render this one with Jinja)."""
        html = "html" in self.parts
        values: dict[str, str] = {}
        for field in self.fields:
            value = field.value(context)
            text = "" if value is _UNDEFINED else str(value)
            if KEY_PREFIX in text:
                return None
            values[field.key] = text
            if html:
                values[field.html_key] = "" if value is _UNDEFINED else str(escape(value))
        return values

    def fill(self, part: str, substitutions: Mapping[str, str]) -> str:
        """The part with the values in, in one pass (a value is never scanned for keys)."""
        source = self.parts[part]
        if not self.fields:
            return source
        return _KEY.sub(lambda m: substitutions[m.group()], source)


@dataclasses.dataclass(frozen=True)
class Variant:
    """What rendering a channel's content in one locale needs to know."""

    locale: str
    names: frozenset[str]  # the context names its templates use
    shared: Shared | None  # None: each customer's message is rendered by Jinja


def variant(content: Mapping[str, Any], channel: str, locale: str | None) -> Variant:
    """The content's variant for a customer's locale; KeyError if the channel has none."""
    chosen = pick_locale(content, channel, locale)
    if chosen is None:
        raise KeyError(channel)
    parts = content[channel][chosen]
    sources = tuple(
        (part, str(parts[part])) for part in PARTS[channel] if parts.get(part) is not None
    )
    return _variant(chosen, sources)


@functools.lru_cache(maxsize=512)
def _variant(locale: str, sources: tuple[tuple[str, str], ...]) -> Variant:
    names: set[str] = set()
    fields: dict[tuple[str, str | None], Field] = {}
    plain = True
    for part, source in sources:
        tree = _environment(part == "html").parse(source)
        names |= meta.find_undeclared_variables(tree)
        found = _plain_fields(tree)
        if found is None or KEY_PREFIX in source:
            plain = False
            continue
        for name, attr in found:
            if (name, attr) not in fields:
                i = len(fields)
                fields[name, attr] = Field(name, attr, f"%pc:{i}%", f"%pc:{i}:h%")
    if plain and {(n, a) for n, a in fields if a is None} & {(n, None) for n, a in fields if a}:
        plain = False  # ``{{ attributes }}`` and ``{{ attributes.x }}`` in one content
    shared = None
    if plain:
        rendered = {}
        for part, source in sources:
            html = part == "html"
            placeholders: dict[str, Any] = {}
            for field in fields.values():
                key = Markup(field.html_key) if html else field.key
                if field.attr is None:
                    placeholders[field.name] = key
                else:
                    placeholders.setdefault(field.name, {})[field.attr] = key
            rendered[part] = compile_template(source, html=html).render(**placeholders)
        body = SharedBody(rendered.get("text", ""), rendered.get("html"))
        shared = Shared(locale, rendered, tuple(fields.values()), body)
    return Variant(locale, frozenset(names), shared)


def _plain_fields(tree: nodes.Template) -> list[tuple[str, str | None]] | None:
    """The customer fields a template outputs, if it only outputs them plainly; else None."""
    found: list[tuple[str, str | None]] = []
    for statement in tree.body:
        if not isinstance(statement, nodes.Output):
            return None
        for node in statement.nodes:
            if isinstance(node, nodes.TemplateData | nodes.Const):
                continue
            if isinstance(node, nodes.Name) and node.ctx == "load":
                if node.name in CUSTOMER_FIELDS:
                    found.append((node.name, None))
                continue  # not a customer's: renders the same for everyone
            if (
                isinstance(node, nodes.Getattr)
                and isinstance(node.node, nodes.Name)
                and node.node.name == "attributes"
                and not hasattr(dict, node.attr)  # attributes.items is the dict's method
            ):
                found.append(("attributes", node.attr))
                continue
            return None
    return found


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
