import pytest

from prefcenter.errors import InvalidInput
from prefcenter.services.pressure import Rule, current_rules, replace_rules


def test_replace_and_read_the_policy(dbsession):
    rules = replace_rules(
        dbsession,
        [
            {"channel": None, "period_days": 7, "max_messages": 3},
            {"channel": None, "period_days": 1, "max_messages": 1},
            {"channel": "sms", "period_days": 7, "max_messages": 1},
        ],
    )
    assert rules == [Rule(None, 1, 1), Rule(None, 7, 3), Rule("sms", 7, 1)]
    assert replace_rules(dbsession, []) == []
    assert current_rules(dbsession) == []


@pytest.mark.parametrize(
    ("rule", "field", "code"),
    [
        (
            {"channel": "fax", "period_days": 7, "max_messages": 3},
            "rules/0/channel",
            "unknown_channel",
        ),
        (
            {"channel": None, "period_days": 0, "max_messages": 3},
            "rules/0/period_days",
            "out_of_range",
        ),
        (
            {"channel": None, "period_days": 7, "max_messages": -1},
            "rules/0/max_messages",
            "out_of_range",
        ),
        (
            {"channel": None, "period_days": "7", "max_messages": 1},
            "rules/0/period_days",
            "out_of_range",
        ),
        (
            {"channel": None, "period_days": 7, "max_messages": 1, "extra": 1},
            "rules/0/extra",
            "unknown_field",
        ),
    ],
)
def test_bad_rules_are_named_and_change_nothing(dbsession, rule, field, code):
    replace_rules(dbsession, [{"channel": None, "period_days": 7, "max_messages": 3}])
    with pytest.raises(InvalidInput) as caught:
        replace_rules(dbsession, [rule])
    assert [(e.field, e.code) for e in caught.value.errors] == [(field, code)]
    assert current_rules(dbsession) == [Rule(None, 7, 3)]


def test_duplicate_channel_and_period_is_refused(dbsession):
    rule = {"channel": "email", "period_days": 7, "max_messages": 3}
    with pytest.raises(InvalidInput) as caught:
        replace_rules(dbsession, [rule, dict(rule, max_messages=1)])
    assert caught.value.errors[0].field == "rules/1"
