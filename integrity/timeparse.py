"""Times given on the command line: ISO dates and times (UTC unless they say) or durations."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from game_core.errors import InvalidInput

_DURATION = re.compile(r"^([1-9][0-9]*)([smhdw])$")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_until(text: str, now: datetime | None = None) -> datetime:
    now = now or datetime.now(timezone.utc)
    match = _DURATION.match(text.strip())
    if match:
        return now + timedelta(**{_UNIT[match.group(2)]: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"--until {text!r} is neither a date/time (2026-12-31, 2026-12-31T18:00) nor a duration (30d, 12h)") from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    if moment <= now:
        raise InvalidInput(f"--until {text!r} is in the past; give a future time or a duration like 30d")
    return moment
