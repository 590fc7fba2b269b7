"""Quiet hours: windows in the customer's zone, across midnight and DST switches."""

import datetime as dt

import pytest

from prefcenter.policy import Window, contact_window
from tests.policy_builders import settings

CFG = settings()
UTC = dt.UTC


def utc(*args):
    return dt.datetime(*args, tzinfo=UTC)


def window(start, end, at, tz="Europe/Paris", cfg=CFG):
    return contact_window(tz, start, end, at, cfg)


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        # 22:00-08:00 Paris (UTC+1 in winter).
        (utc(2026, 11, 23, 21, 30), Window(True, None)),  # 22:30 local
        (utc(2026, 11, 23, 23, 59), Window(True, None)),  # 00:59 local, after midnight
        (utc(2026, 11, 24, 6, 59), Window(True, None)),  # 07:59 local
        (utc(2026, 11, 24, 7, 0), Window(False, utc(2026, 11, 24, 21, 0))),  # 08:00: closes
        (utc(2026, 11, 24, 12, 0), Window(False, utc(2026, 11, 24, 21, 0))),  # 13:00 -> 22:00
    ],
)
def test_window_crossing_midnight(at, expected):
    assert window(22 * 60, 8 * 60, at) == expected


def test_start_is_inclusive_and_end_exclusive():
    assert window(9 * 60, 20 * 60, utc(2026, 11, 23, 8, 0)).open_now  # 09:00 Paris
    assert not window(9 * 60, 20 * 60, utc(2026, 11, 23, 19, 0)).open_now  # 20:00 Paris
    assert not window(9 * 60, 20 * 60, utc(2026, 11, 23, 7, 59, 59)).open_now  # 08:59:59


def test_same_start_and_end_means_any_time():
    assert window(600, 600, utc(2026, 11, 23, 3, 0)) == Window(True, None)
    assert window(0, 1440, utc(2026, 11, 23, 3, 0)) == Window(True, None)


def test_spring_forward_in_paris():
    # 29 March 2026: 02:00 CET becomes 03:00 CEST (01:00 UTC).
    before = utc(2026, 3, 28, 20, 0)  # Saturday 21:00 CET
    assert window(9 * 60, 20 * 60, before).next_open == utc(2026, 3, 29, 7, 0)  # 09:00 CEST
    # A window opening at 02:30, a time that does not exist that night, opens at 03:00 CEST.
    assert window(150, 300, before).next_open == utc(2026, 3, 29, 1, 0)


def test_fall_back_in_paris():
    # 25 October 2026: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:30 happens twice.
    before = utc(2026, 10, 24, 20, 0)
    assert window(9 * 60, 20 * 60, before).next_open == utc(2026, 10, 25, 8, 0)  # 09:00 CET
    assert window(150, 300, before).next_open == utc(2026, 10, 25, 0, 30)  # first 02:30
    # During the repeated hour the local clock reads 02:xx twice; both are inside 02:00-04:00.
    assert window(120, 240, utc(2026, 10, 25, 0, 30)).open_now
    assert window(120, 240, utc(2026, 10, 25, 1, 30)).open_now


def test_next_opening_is_always_in_the_future():
    at = utc(2026, 3, 29, 0, 59)  # 01:59 CET, one minute before the jump
    result = window(150, 300, at)
    assert not result.open_now
    assert result.next_open > at


def test_customer_timezone_and_default_window():
    at = utc(2026, 11, 23, 9, 0)
    assert window(None, None, at, tz="America/New_York").next_open == utc(2026, 11, 23, 14, 0)
    assert window(None, None, at, tz="Asia/Kolkata").open_now  # 14:30 local
    # An unknown zone falls back to the default zone rather than failing.
    assert window(None, None, at, tz="Mars/Olympus").open_now
