"""Times as people write and read them: given on the command line (ISO dates and times,
UTC unless they say, or durations), and ages as reports and status details show them."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from game_core.errors import InvalidInput

_DURATION = re.compile(r"^([1-9][0-9]*)([smhdw])$")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# The longest duration or the latest time accepted: a pin for a century is already "for
# ever", and beyond it lie timedelta's and datetime's limits (an OverflowError, not a message).
MAX_UNTIL = timedelta(days=36_500)
ALLOWED = "a date/time (2026-12-31, 2026-12-31T18:00) or a duration (30d, 12h) of at most 100 years"


def parse_until(text: str, now: datetime | None = None) -> datetime:
    now = now or datetime.now(timezone.utc)
    match = _DURATION.match(text.strip())
    if match:
        number, unit = match.groups()
        # Compared in seconds before any timedelta is built: 99999999999999d overflows one.
        if len(number) > 12 or int(number) * timedelta(**{_UNIT[unit]: 1}).total_seconds() > MAX_UNTIL.total_seconds():
            raise InvalidInput(f"--until {text!r} is too far ahead; allowed: {ALLOWED}")
        return now + timedelta(**{_UNIT[unit]: int(number)})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"--until {text!r} is neither a date/time (2026-12-31, 2026-12-31T18:00) nor a duration (30d, 12h)") from None
    try:
        moment = (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except OverflowError:  # 9999-12-31T23:00-05:00 lies past datetime's last UTC instant
        raise InvalidInput(f"--until {text!r} is too far ahead; allowed: {ALLOWED}") from None
    if moment <= now:
        raise InvalidInput(f"--until {text!r} is in the past; give a future time or a duration like 30d")
    if moment - now > MAX_UNTIL:
        raise InvalidInput(f"--until {text!r} is too far ahead; allowed: {ALLOWED}")
    return moment


def age_text(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago `moment` was, in its largest whole unit: "3h ago", "never"."""
    if moment is None:
        return "never"
    seconds = int(((now or datetime.now(timezone.utc)) - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"


# A moment in the past, as an operator types it mid-incident: "90s ago", "10 minutes ago".
_AGO = re.compile(r"^([0-9]+)\s*([a-z]+)\s+ago$")
_AGO_UNITS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), "seconds"),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), "minutes"),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), "hours"),
    **dict.fromkeys(("d", "day", "days"), "days"),
    **dict.fromkeys(("w", "week", "weeks"), "weeks"),
}
MOMENT_FORMS = ("a UTC time (2026-12-07T12:00:00Z; one without an offset is UTC) or a time ago "
                "(90s ago, 10 minutes ago, 2 hours ago)")


def parse_moment(text: str, now: datetime | None = None, *, option: str = "--to-time") -> datetime:
    """A moment in the past as an aware UTC datetime: an ISO time (naive means UTC, an offset
    is honoured) or "N UNIT ago". Whether the moment can be restored is the point-in-time
    engine's to say (its window); text that is neither form is InvalidInput (exit 2)."""
    now = now or datetime.now(timezone.utc)
    cleaned = " ".join(text.strip().lower().split())
    match = _AGO.match(cleaned)
    if match:
        number, unit = match.groups()
        if unit not in _AGO_UNITS:
            raise InvalidInput(f"{option} {text!r}: {unit!r} is not a unit; give {MOMENT_FORMS}")
        # Compared in seconds before any timedelta is built (a huge number overflows one).
        seconds = int(number) * timedelta(**{_AGO_UNITS[unit]: 1}).total_seconds() if len(number) <= 12 else float("inf")
        if seconds > MAX_UNTIL.total_seconds():
            raise InvalidInput(f"{option} {text!r} is more than 100 years ago; give {MOMENT_FORMS}")
        return now - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"{option} {text!r} is not {MOMENT_FORMS}") from None
    try:
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00+01:00 lies before datetime's first UTC instant
        raise InvalidInput(f"{option} {text!r} is out of range; give {MOMENT_FORMS}") from None


def utc_text(moment: datetime) -> str:
    """A moment as reports show it: ISO 8601 in UTC with a Z, to the microsecond when it has one."""
    spec = "microseconds" if moment.microsecond else "seconds"
    return moment.astimezone(timezone.utc).isoformat(timespec=spec).replace("+00:00", "Z")
