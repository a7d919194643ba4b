"""Keyset pagination: one key range of a walk as SQL conditions, never OFFSET."""

from __future__ import annotations

from collections.abc import Sequence


def keyset_range(keys: Sequence[str], after: tuple | None, upto: tuple | None, params: dict) -> list[str]:
    """The conditions `keys > after` and `keys <= upto` (row values for a composite key),
    their bounds bound into `params`. `keys` are SQL expressions (quoted, collated)."""
    lhs = keys[0] if len(keys) == 1 else "(" + ", ".join(keys) + ")"
    parts = []
    for operator, bound, prefix in ((">", after, "a"), ("<=", upto, "u")):
        if bound is None:
            continue
        names = []
        for index, value in enumerate(bound):
            params[f"{prefix}{index}"] = value
            names.append(f":{prefix}{index}")
        rhs = names[0] if len(names) == 1 else "(" + ", ".join(names) + ")"
        parts.append(f"{lhs} {operator} {rhs}")
    return parts
