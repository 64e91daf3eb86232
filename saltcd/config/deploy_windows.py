"""Deploy windows: when an environment's auto rollouts may start.

A window is `DAYS HH:MM-HH:MM [ZONE]`, e.g. `Mon-Fri 09:00-17:00 Europe/Berlin`:
days as a range (`Mon-Fri`), a list (`Mon,Wed,Fri`) or `*`; a time range on
those days (an end before the start runs past midnight into the next day); an
IANA zone (UTC when left out). An environment with no windows may change at
any time; with several, any one of them open is enough.
"""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW_RE = re.compile(
    r"^(?P<days>\*|[A-Za-z]{3}(?:-[A-Za-z]{3})?(?:,[A-Za-z]{3}(?:-[A-Za-z]{3})?)*)\s+"
    r"(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})(?:\s+(?P<zone>[A-Za-z0-9_+\-/]{1,64}))?$")
# How far ahead next_open looks: a week covers every day-of-week pattern.
_HORIZON_MINUTES = 8 * 24 * 60


class WindowError(ValueError):
    """A window that does not parse; the message says which part."""


@dataclass(frozen=True)
class Window:
    """One parsed window: weekdays (0 = Monday), start and end minute of the day, zone."""

    text: str
    days: frozenset
    start: int
    end: int
    zone: str

    def is_open(self, now):
        """True when the Unix time `now` lies inside this window."""
        local = datetime.fromtimestamp(now, ZoneInfo(self.zone))
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            return local.weekday() in self.days and self.start <= minute < self.end
        # Past midnight: open from `start` on a listed day until `end` the next morning.
        yesterday = (local.weekday() - 1) % 7
        return ((local.weekday() in self.days and minute >= self.start)
                or (yesterday in self.days and minute < self.end))


def _day(name, text):
    try:
        return DAYS.index(name.lower())
    except ValueError:
        raise WindowError(f"unknown day {name!r} in {text!r} (use Mon..Sun)") from None


def _minute(hhmm, text):
    hours, minutes = (int(part) for part in hhmm.split(":"))
    if hours > 24 or minutes > 59 or (hours == 24 and minutes):
        raise WindowError(f"invalid time {hhmm!r} in {text!r}")
    return hours * 60 + minutes


def parse(text):
    """One window from its text, or WindowError."""
    if not isinstance(text, str):
        raise WindowError(f"a window must be a string like 'Mon-Fri 09:00-17:00 Europe/Berlin', got {text!r}")
    match = _WINDOW_RE.fullmatch(text.strip())
    if not match:
        raise WindowError(f"{text[:80]!r} is not 'DAYS HH:MM-HH:MM [ZONE]', e.g. 'Mon-Fri 09:00-17:00 UTC'")
    days = set()
    if match["days"] == "*":
        days = set(range(7))
    else:
        for part in match["days"].split(","):
            first, _, last = part.partition("-")
            lo, hi = _day(first, text), _day(last or first, text)
            days.update(range(lo, hi + 1) if lo <= hi else [*range(lo, 7), *range(0, hi + 1)])
    start, end = _minute(match["start"], text), _minute(match["end"], text)
    if start == end:
        raise WindowError(f"{text!r} opens and closes at the same minute")
    zone = match["zone"] or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise WindowError(f"unknown time zone {zone!r} in {text!r}") from None
    return Window(text.strip(), frozenset(days), start, min(end, 24 * 60), zone)


def is_open(windows, now):
    """True when no windows are configured or one of them is open at `now`."""
    return not windows or any(window.is_open(now) for window in windows)


def _openings(window, now):
    """Unix times at which `window` opens, from the day before `now` to a week after."""
    zone = ZoneInfo(window.zone)
    today = datetime.fromtimestamp(now, zone).date()
    for offset in range(-1, 9):
        day = today + timedelta(days=offset)
        if day.weekday() in window.days:
            # Added, not set: a window may start at 24:00 (midnight at the day's end).
            midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
            yield (midnight + timedelta(minutes=window.start)).timestamp()


def next_open(windows, now):
    """The first Unix time >= `now` at which a window is open (now itself when open)."""
    if is_open(windows, now):
        return now
    # A closed window opens at its start time on one of its days: try those
    # (about ten per window) before stepping minute by minute, which is left for
    # a start that a DST change skips over on that day.
    for moment in sorted(m for window in windows for m in _openings(window, now) if m > now):
        if is_open(windows, moment):
            return moment
    start = datetime.fromtimestamp(now, timezone.utc).replace(second=0, microsecond=0)
    for step in range(1, _HORIZON_MINUTES):
        moment = (start + timedelta(minutes=step)).timestamp()
        if is_open(windows, moment):
            return moment
    raise WindowError("no window opens within a week")
