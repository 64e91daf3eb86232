"""Deploy windows: parse, is_open and next_open, checked against a plain reading of the rule."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saltcd.config import deploy_windows

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe",
         "Pacific/Chatham"]
DAY_NAMES = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
# 2001..2039: zones' offsets are whole minutes there.
TIMES = st.floats(min_value=978_307_200, max_value=2_208_988_800, allow_nan=False)


@st.composite
def window_texts(draw):
    if draw(st.booleans()):
        days = "*"
    else:
        parts = []
        for _ in range(draw(st.integers(1, 3))):
            first = draw(st.sampled_from(DAY_NAMES))
            parts.append(first if draw(st.booleans()) else f"{first}-{draw(st.sampled_from(DAY_NAMES))}")
        days = ",".join(parts)
    start = draw(st.integers(0, 24 * 60 - 1))
    end = draw(st.integers(1, 24 * 60).filter(lambda m: m != start))
    zone = draw(st.sampled_from(ZONES + [None]))
    text = f"{days} {start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
    return text + (f" {zone}" if zone else "")


def reference_open(text, now):
    """The rule as the docs state it (docs/security.md), read straight off the text."""
    days_text, hours, *zone = text.split()
    zone = ZoneInfo(zone[0] if zone else "UTC")
    days = set()
    for part in days_text.split(","):
        if part == "*":
            days = set(range(7))
            continue
        first, _, last = part.partition("-")
        lo, hi = DAY_NAMES.index(first), DAY_NAMES.index(last or first)
        days |= {d % 7 for d in range(lo, hi + 1 if lo <= hi else hi + 8)}
    start, end = ((int(t[:2]) * 60 + int(t[3:])) for t in hours.split("-"))
    local = datetime.fromtimestamp(now, zone)
    minute, weekday = local.hour * 60 + local.minute, local.weekday()
    if start < end:
        return weekday in days and start <= minute < end
    return (weekday in days and minute >= start) or ((weekday - 1) % 7 in days and minute < end)


# No deadline, as for the other property tests here: the first example loads the
# time zone database, which took 478 ms on a busy 2-core machine (Salt 3006 run).
@settings(deadline=None)
@given(window_texts(), TIMES)
def test_is_open_follows_the_rule(text, now):
    assert deploy_windows.is_open([deploy_windows.parse(text)], now) == reference_open(text, now)


@settings(max_examples=60, deadline=None)
@given(st.lists(window_texts(), min_size=1, max_size=3), TIMES)
def test_next_open_is_the_first_open_minute(texts, now):
    parsed = [deploy_windows.parse(t) for t in texts]
    try:
        opens = deploy_windows.next_open(parsed, now)
    except deploy_windows.WindowError:
        # Only a window that never opens within a week (a DST gap) may do this.
        pytest.skip("no window within a week")
    assert opens >= now and deploy_windows.is_open(parsed, opens)
    if opens > now:
        assert opens % 60 == 0                      # windows open on whole minutes
        before = opens - 60
        assert before < now or not deploy_windows.is_open(parsed, before)


@given(st.text(max_size=60))
def test_parse_refuses_garbage_with_a_reason(text):
    try:
        window = deploy_windows.parse(text)
    except deploy_windows.WindowError as exc:
        assert str(exc)
    else:
        assert window.start != window.end and window.days <= set(range(7))


@pytest.mark.parametrize("text, message", [
    ("Mon-Fri 09:00-17:00 Mars/Olympus", "unknown time zone"),
    ("Mon-Fry 09:00-17:00", "unknown day"),
    ("Mon 25:00-26:00", "invalid time"),
    ("Mon 09:00-09:00", "same minute"),
    ("weekdays 9-5", "is not 'DAYS HH:MM-HH:MM"),
    ("Mon 09:00-17:00 ../../etc/passwd", "is not 'DAYS"),
    ("Mon 09:00-17:00 /etc/passwd", "unknown time zone"),
])
def test_parse_errors_name_the_part(text, message):
    with pytest.raises(deploy_windows.WindowError, match=message):
        deploy_windows.parse(text)


def test_a_berlin_office_window():
    window = deploy_windows.parse("Mon-Fri 09:00-17:00 Europe/Berlin")
    berlin = ZoneInfo("Europe/Berlin")
    friday_evening = datetime(2026, 11, 27, 17, 0, tzinfo=berlin).timestamp()
    monday_morning = datetime(2026, 11, 30, 9, 0, tzinfo=berlin).timestamp()
    assert not deploy_windows.is_open([window], friday_evening)
    assert deploy_windows.next_open([window], friday_evening) == monday_morning
    assert deploy_windows.is_open([], friday_evening)  # no windows: always open


def _first_open_minute(parsed, now):
    """The reference: step minute by minute (what next_open did before it computed openings)."""
    if deploy_windows.is_open(parsed, now):
        return now
    moment = now - now % 60
    for _ in range(8 * 24 * 60):
        moment += 60
        if deploy_windows.is_open(parsed, moment):
            return moment
    return None


@settings(max_examples=40, deadline=None)
@given(st.lists(window_texts(), min_size=1, max_size=3), TIMES)
def test_next_open_agrees_with_stepping_minute_by_minute(texts, now):
    parsed = [deploy_windows.parse(t) for t in texts]
    expected = _first_open_minute(parsed, now)
    if expected is None:
        with pytest.raises(deploy_windows.WindowError):
            deploy_windows.next_open(parsed, now)
    else:
        assert deploy_windows.next_open(parsed, now) == expected


def test_a_window_that_starts_at_24_00_opens_at_the_days_end():
    parsed = [deploy_windows.parse("Mon 24:00-01:00")]
    now = 1764000000  # Mon 2025-11-24 16:00 UTC
    assert deploy_windows.next_open(parsed, now) == _first_open_minute(parsed, now) == 1764028800
