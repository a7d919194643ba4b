"""One stored value, whichever driver or column type returned it.

Two questions need it. Matching keys across the sides (`canonical`, `same_key`): the
walk only knows the values, so the value's Python type decides. Telling a changed value
from another spelling of the same one (`normaliser_for`): the backup-vs-live diff knows
each column's declared type from game_core.schema, and normalises by it (SQLite keeps a
timestamp as text and a NUMERIC(6, 2) as a float, PostgreSQL returns datetimes and
Decimals).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken as UTC (the sessions' time zone, and
    what SQLAlchemy's SQLite dialect writes after dropping the offset)."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# ---------------------------------------------------------------- by the value's type


def canonical(value: Any) -> Any:
    """One canonical Python value per stored value, whatever column type returned it:
    floats as decimals (0.1 equals numeric 0.1), naive timestamps and dates as UTC
    instants, byte buffers as bytes."""
    kind = type(value)
    if kind is int or kind is str or value is None:
        return value
    if kind is float:
        try:
            return Decimal(repr(value))
        except InvalidOperation:
            return value
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value


def canonical_key(values: Sequence) -> tuple:
    return tuple(map(canonical, values))


def same_key(left: tuple | None, right: tuple | None) -> bool:
    """Whether two sides' keys are one key (None: the side has no rows left)."""
    if left is None or right is None:
        return left is right
    return canonical_key(left) == canonical_key(right)


# ---------------------------------------------------------------- by the declared column type


def _utc_datetime(value: Any) -> Any:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value) if isinstance(value, datetime) else value


def _numeric(scale: int | None, as_decimal: bool) -> Callable[[Any], Any]:
    quantum = None if scale is None else Decimal(1).scaleb(-scale)

    def normalise(value: Any) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, float) and scale is not None and not as_decimal:
            return round(value, scale)  # SQLite's REAL: ten times cheaper than through Decimal
        # str() first: Decimal(0.1) is the binary float's long expansion, str(0.1) is '0.1'.
        number = value if isinstance(value, Decimal) else Decimal(str(value))
        if quantum is not None:
            number = number.quantize(quantum)
        return number if as_decimal else float(number)

    return normalise


def _integer(value: Any) -> Any:
    if isinstance(value, (str, float, Decimal)) and not isinstance(value, bool):
        number = Decimal(str(value))
        return int(number) if number == number.to_integral_value() else value
    return value


def _text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _identity(value: Any) -> Any:
    return value


def normaliser_for(column: sa.Column) -> Callable[[Any], Any]:
    """The function that turns either driver's value of `column` into one canonical value."""
    kind = column.type
    if isinstance(kind, sa.DateTime):
        convert = _utc_datetime
    elif isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float):
        convert = _numeric(kind.scale, bool(kind.asdecimal))
    elif isinstance(kind, sa.Integer):
        convert = _integer
    elif isinstance(kind, sa.String):
        convert = _text
    else:
        convert = _identity

    def safe(value: Any) -> Any:
        if value is None:
            return None
        try:
            return convert(value)
        except (ValueError, TypeError, InvalidOperation, ArithmeticError):
            return value  # a damaged value stays as it is and shows up as a change

    return safe
