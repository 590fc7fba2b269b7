"""The time zones a customer may choose in the portal (preferences.customer_timezones)."""

from __future__ import annotations

import zoneinfo

import pytest

from prefcenter.services import preferences

NOT_PLACES = {"Factory", "localtime", "Etc/UTC", "Etc/GMT+3", "US/Eastern", "GB", "EST5EDT"}


@pytest.fixture
def fresh_cache():
    preferences.customer_timezones.cache_clear()
    yield
    preferences.customer_timezones.cache_clear()


def test_customer_time_zones_are_real_places(fresh_cache):
    zones = preferences.customer_timezones()
    assert {"Europe/Paris", "Europe/London", "Indian/Reunion", "Pacific/Noumea"} <= set(zones)
    assert not NOT_PLACES & set(zones)
    assert list(zones) == sorted(zones)
    assert set(zones) <= zoneinfo.available_timezones()


def test_without_zone_tab_the_region_names_are_used(fresh_cache, monkeypatch):
    monkeypatch.setattr(preferences, "_zone_tab", lambda: None)
    zones = set(preferences.customer_timezones())
    assert "Europe/Paris" in zones and not NOT_PLACES & zones
    assert all(zone.split("/")[0] in preferences.TIMEZONE_REGIONS for zone in zones)
