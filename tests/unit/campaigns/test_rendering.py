"""Content rendered once per locale gives every customer exactly what Jinja would."""

from __future__ import annotations

import pytest

from campaigns import rendering

PLAIN = {
    "email": {
        "fr": {
            "subject": "Bonjour {{ first_name }}",
            "html": "<p>{{ first_name }} {{ last_name }}, {{ attributes.points }} points</p>"
            '<a href="{{ unsubscribe_url }}">désabonner</a>{{ attributes.missing }}\n',
            "text": "{{ first_name }} : {{ attributes.points }} points {{ unsubscribe_url }}",
        }
    }
}

TRICKY_VALUES = [
    "Marie",
    "<script>alert('x')</script>",
    'Tom & "Jerry"',
    "Zoë — ☃ 🎉",
    "%text% %html%",
    "",
    None,
    0,
    12.5,
    True,
    ["a", "<b>"],
    {"k": "<v>"},
]


def context(value) -> dict:
    return {
        "first_name": value if isinstance(value, str) else "Jo",
        "last_name": "O'Brien & <Co>",
        "attributes": {"points": value},
        "portal_url": "https://prefs.example.com/p/abc",
        "unsubscribe_url": "https://prefs.example.com/u/a.b-c_d?x=1&y=<2>",
    }


@pytest.mark.parametrize("value", TRICKY_VALUES, ids=repr)
def test_shared_content_with_a_customer_s_values_is_what_jinja_renders_for_them(value):
    variant = rendering.variant(PLAIN, "email", "fr")
    assert variant.shared is not None
    values = context(value)

    substitutions = variant.shared.substitutions(values)
    expected = rendering.render(PLAIN, "email", "fr", values).parts

    assert {p: variant.shared.fill(p, substitutions) for p in expected} == expected


def test_html_gets_escaped_values_and_text_gets_them_as_written():
    shared = rendering.variant(PLAIN, "email", "fr").shared
    substitutions = shared.substitutions(context("<b>Tom & Jerry</b>"))

    assert "&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;" in shared.fill("html", substitutions)
    assert "<b>Tom & Jerry</b>" in shared.fill("subject", substitutions)
    assert "<b>" not in shared.body.html  # the shared body holds keys, not values


@pytest.mark.parametrize(
    "template",
    [
        "{{ first_name | upper }}",
        "{% if first_name %}Bonjour {{ first_name }}{% endif %}",
        "{{ attributes['points'] }}",
        "{{ attributes.items }}",
        "{% for x in attributes %}{{ x }}{% endfor %}",
        "{{ first_name ~ '!' }}",
        "{{ attributes }} {{ attributes.points }}",
        "literal %pc:0% in the text {{ first_name }}",
    ],
)
def test_content_that_is_not_plain_outputs_is_rendered_for_each_customer(template):
    content = {"email": {"fr": {"subject": "s", "text": template}}}

    assert rendering.variant(content, "email", "fr").shared is None


def test_a_customer_value_that_looks_like_a_key_is_rendered_by_jinja_instead():
    shared = rendering.variant(PLAIN, "email", "fr").shared

    assert shared.substitutions(context("%pc:1%")) is None


def test_the_variant_knows_which_links_its_templates_use():
    variant = rendering.variant(PLAIN, "email", "fr")

    assert "unsubscribe_url" in variant.names and "portal_url" not in variant.names
