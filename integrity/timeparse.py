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
