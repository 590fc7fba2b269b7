import pytest

from prefcenter.addresses import derive_key
from prefcenter.consent_settings import (
    ConsentSettings,
    format_contact_hours,
    parse_contact_hours,
)
from prefcenter.settings import SettingsError

SECRET = "consent-settings-secret-" + "z" * 32


def test_defaults_are_french_consent_law():
    cfg = ConsentSettings.from_settings({"prefcenter.secret": SECRET})

    assert cfg.address_key == derive_key(SECRET, "address-hmac")
    assert cfg.regimes == {
        "email": "opt_in",
        "sms": "opt_in",
        "phone": "opt_out",
        "post": "opt_out",
    }
    assert cfg.confirm_channels == frozenset({"email", "sms"})
    assert (cfg.double_opt_in_hours, cfg.max_code_attempts) == (48, 5)
    assert cfg.default_timezone == "Europe/Paris"
    assert cfg.default_contact_hours == (540, 1200)
    assert cfg.default_channel_order == ("email", "sms", "phone", "post")
    assert cfg == ConsentSettings(address_key=derive_key(SECRET, "address-hmac"))


def test_every_consent_setting_can_be_overridden():
    cfg = ConsentSettings.from_settings(
        {
            "prefcenter.secret": SECRET,
            "prefcenter.address_hmac_key": "k" * 40,
            "prefcenter.policy.regime.post": "opt_in",
            "prefcenter.policy.confirm_channels": "email",
            "prefcenter.double_opt_in.hours": "24",
            "prefcenter.double_opt_in.max_attempts": "3",
            "prefcenter.default_timezone": "America/Montreal",
            "prefcenter.default_contact_hours": "22:00-08:00",
            "prefcenter.default_channel_order": "sms, email, post, phone",
        }
    )

    assert cfg.address_key == b"k" * 40
    assert cfg.regime("post") == "opt_in"
    assert cfg.needs_confirmation("email") and not cfg.needs_confirmation("sms")
    assert (cfg.double_opt_in_hours, cfg.max_code_attempts) == (24, 3)
    assert cfg.default_timezone == "America/Montreal"
    assert cfg.default_contact_hours == (1320, 480)
    assert cfg.default_channel_order == ("sms", "email", "post", "phone")


def test_every_bad_setting_is_reported_at_once():
    with pytest.raises(SettingsError) as caught:
        ConsentSettings.from_settings(
            {
                "prefcenter.address_hmac_key": "short",
                "prefcenter.policy.regime.sms": "maybe",
                "prefcenter.policy.confirm_channels": "email fax",
                "prefcenter.double_opt_in.hours": "two days",
                "prefcenter.default_timezone": "Paris",
                "prefcenter.default_contact_hours": "9h-20h",
                "prefcenter.default_channel_order": "email sms",
            }
        )

    problems = caught.value.problems
    assert [p.split(":")[0] for p in problems] == [
        "prefcenter.address_hmac_key",
        "prefcenter.policy.regime.sms",
        "prefcenter.policy.confirm_channels",
        "prefcenter.double_opt_in.hours",
        "prefcenter.default_timezone",
        "prefcenter.default_contact_hours",
        "prefcenter.default_channel_order",
    ]
    assert "'maybe' is not a regime" in problems[1]
    assert "fax" in problems[2]


def test_without_a_secret_or_key_there_is_no_address_key():
    with pytest.raises(SettingsError, match=r"prefcenter\.secret"):
        ConsentSettings.from_settings({})


@pytest.mark.parametrize(
    ("text", "window"),
    [("09:00-20:00", (540, 1200)), ("22:00-08:00", (1320, 480)), ("00:00-24:00", (0, 1440))],
)
def test_contact_hours_round_trip(text, window):
    assert parse_contact_hours(text) == window
    assert format_contact_hours(*window) == text


@pytest.mark.parametrize("text", ["09:00-09:00", "24:00-08:00", "09:60-10:00", "9-20", ""])
def test_contact_hours_that_are_not_a_window(text):
    assert parse_contact_hours(text) is None
