"""How a value changed across a migration: one kind per changed value, the same rules in
SQLite's SQL (`sqlite_code`, evaluated inside the database) and in Python (`classify`,
for the rows PostgreSQL's walk fetches). The kinds are documented in
`integrity.tablediff.migration`.

A classification is an int: 0 unchanged, else a code of VALUE_CODES, plus SORT_FLAG when
the value moved between number and text.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from integrity.db.sql import quote
from integrity.tablediff.values import canonical

CHANGE_KINDS = ("precision_lost", "truncated", "became_null", "storage_class", "sort_order", "rewritten")
# The value kinds, each with its code (sort_order is a flag, 8).
VALUE_CODES = {"became_null": 1, "storage_class": 2, "truncated": 3, "precision_lost": 4, "rewritten": 5}
SORT_FLAG = 8
KIND_OF_CODE = {code: kind for kind, code in VALUE_CODES.items()}
# Decimals up to which SQLite recognises a lost precision (NUMERIC(p, s) with s <= 9).
_SQLITE_DECIMALS = 10


def sqlite_code(column: str, collate: str) -> str:
    """The classification of one column's value pair in a row: 0 unchanged, else a
    code of VALUE_CODES plus SORT_FLAG when the value moved between number and text.

    The unary + strips column affinity, so that '10' in a TEXT column is not turned into
    10 for comparison with an INTEGER column's 10 (the change this module exists to
    see); CAST(... AS NUMERIC) has numeric affinity again, which converts a well-formed
    number text (and only that) when asking "is this text the same number?"."""
    b, a = f"+b.{quote(column)}", f"+a.{quote(column)}"
    number = "('integer', 'real')"
    decimals = " OR ".join(
        f"(round({a}, {d}) = {a} AND abs({a} - {b}) * 1e{d} < 1 AND round({b}, {d}) <> {b})"
        for d in range(_SQLITE_DECIMALS)
    )
    precision = f"(CASE WHEN typeof({a}) = 'integer' THEN abs({a} - {b}) < 1 ELSE ({decimals}) END)"
    sort = SORT_FLAG
    return (
        f"(CASE WHEN {b} IS {a}{collate} THEN 0 WHEN {a} IS NULL THEN 1 WHEN {b} IS NULL THEN 5"
        f" WHEN typeof({b}) IN {number} THEN (CASE"
        f" WHEN typeof({a}) IN {number} THEN (CASE WHEN {precision} THEN 4 ELSE 5 END)"
        f" WHEN typeof({a}) = 'text' THEN (CASE WHEN CAST({b} AS NUMERIC) = {a} THEN 2 ELSE 5 END) + {sort}"
        f" ELSE 5 END)"
        f" WHEN typeof({b}) = 'text' THEN (CASE"
        f" WHEN typeof({a}) = 'text' THEN (CASE WHEN length({a}) < length({b})"
        f" AND substr({b}, 1, length({a})) = {a} COLLATE BINARY THEN 3 ELSE 5 END)"
        f" WHEN typeof({a}) IN {number} THEN (CASE WHEN CAST({a} AS NUMERIC) = {b} THEN 2 ELSE 5 END) + {sort}"
        f" WHEN typeof({a}) = 'blob' AND CAST({b} AS BLOB) = {a} THEN 2"
        f" ELSE 5 END)"
        f" WHEN typeof({b}) = 'blob' AND typeof({a}) = 'text' AND CAST({a} AS BLOB) = {b} THEN 2"
        f" ELSE 5 END)"
    )



def _is_number(value: Any) -> bool:
    return isinstance(value, (int, Decimal)) and not isinstance(value, bool)


def _equal(old: Any, new: Any) -> bool:
    if isinstance(old, bool) != isinstance(new, bool):
        return False
    if isinstance(old, Decimal) and isinstance(new, Decimal) and old.is_nan() and new.is_nan():
        return True
    return old == new




def classify(old: Any, new: Any) -> int:
    """The same classification as sqlite_code, for values as the driver returns them."""
    old, new = canonical(old), canonical(new)
    if _equal(old, new):
        return 0
    if new is None:
        return VALUE_CODES["became_null"]
    if old is None:
        return VALUE_CODES["rewritten"]
    if _is_number(old):
        if _is_number(new):
            return VALUE_CODES["precision_lost" if _precision_lost(old, new) else "rewritten"]
        if isinstance(new, str):
            return VALUE_CODES["storage_class" if _text_is_number(new, old) else "rewritten"] | SORT_FLAG
        return VALUE_CODES["rewritten"]
    if isinstance(old, str):
        if isinstance(new, str):
            truncated = len(new) < len(old) and old.startswith(new)
            return VALUE_CODES["truncated" if truncated else "rewritten"]
        if _is_number(new):
            return VALUE_CODES["storage_class" if _text_is_number(old, new) else "rewritten"] | SORT_FLAG
        if isinstance(new, bytes) and old.encode() == new:
            return VALUE_CODES["storage_class"]
        return VALUE_CODES["rewritten"]
    if isinstance(old, bytes) and isinstance(new, str) and new.encode() == old:
        return VALUE_CODES["storage_class"]
    return VALUE_CODES["rewritten"]


def classify_texts(old: str | None, new: str | None, number_text: bool) -> int:
    """A column whose type category changed, compared through both sides' text: every
    non-NULL value changed type; it kept its value when the texts agree (or, between
    number and text, when both read as the same number)."""
    if old is None and new is None:
        return 0
    if new is None:
        return VALUE_CODES["became_null"]
    if old is None:
        return VALUE_CODES["rewritten"]
    same = old == new or (number_text and _same_number_text(old, new))
    code = VALUE_CODES["storage_class" if same else "rewritten"]
    return code | SORT_FLAG if number_text else code


def _decimal(text: str) -> Decimal | None:
    try:
        number = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _text_is_number(text: str, number: int | Decimal) -> bool:
    parsed = _decimal(text)
    return parsed is not None and parsed == number


def _same_number_text(left: str, right: str) -> bool:
    a, b = _decimal(left), _decimal(right)
    return a is not None and a == b


def _decimals(number: int | Decimal) -> int:
    if isinstance(number, int):
        return 0
    return max(0, -number.normalize().as_tuple().exponent)


def _precision_lost(old: int | Decimal, new: int | Decimal) -> bool:
    """`new` has fewer decimals than `old` and lies within one unit of its own last
    decimal of it: 12.37 to 12.4, 12.3 or 12 (rounded, cut or even rounded up)."""
    if isinstance(old, Decimal) and not old.is_finite() or isinstance(new, Decimal) and not new.is_finite():
        return False
    if type(new) is int:
        # The common case (a column made integer), without Decimal's normalisation: the
        # values differ, so within one unit means `old` had decimals.
        return abs(old - new) < 1
    places = _decimals(new)
    return places < _decimals(old) and abs(Decimal(new) - Decimal(old)) * (Decimal(10) ** places) < 1
