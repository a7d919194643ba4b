"""Compile the catalogue's checks (Pandera names and statistics) to SQLAlchemy Core.

One function per check name, the SQL twin of the Pandera check of the same name
(`pandera`'s built-ins, and `checks.pandera_checks` for the registered ones). Each returns
an expression that is TRUE for a good row and NULL or FALSE otherwise, and means the same
on SQLite and PostgreSQL:

- recomputed values are compared in double precision (`CAST(... AS FLOAT)`), every integer
  converted before it is added or multiplied, so PostgreSQL's int4 never overflows and
  the arithmetic is the IEEE arithmetic pandas does. SQLite gets no CAST: its integers
  are 64-bit already and a float literal makes the arithmetic IEEE, while a CAST per
  column and row cost a quarter of the results pass (and CAST AS BIGINT would truncate
  a REAL stored by mistake into a passing integer);
- divisions are guarded with `NULLIF(d, 0)` and `d > 0` (PostgreSQL aborts the whole
  query on a division by zero; SQLite gives NULL);
- expressions that an OR or CASE could make TRUE with a NULL input are wrapped in a
  not-NULL guard, so a NULL in any column a rule reads always fails it.

No pandas, no pandera here: the SQL engine must stay light.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles as compiles_sql
from sqlalchemy.sql.visitors import InternalTraversal

from checks.model import FLOAT_SLACK, AuditContext
from game_core import metrics
from game_core.schema import UTC_DATETIME

Compiler = Callable[..., sa.ColumnElement[bool]]
COMPILERS: dict[str, Compiler] = {}


def compiles(name: str):
    def register(function: Compiler) -> Compiler:
        COMPILERS[name] = function
        return function

    return register


def _present(*columns) -> sa.ColumnElement[bool]:
    return sa.and_(*(column.is_not(None) for column in columns))


class PostgresCast(sa.sql.expression.ColumnElement):
    """CAST(column AS type) on PostgreSQL, the bare column on SQLite (see the docstring)."""

    inherit_cache = True
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("type", InternalTraversal.dp_type),
    ]

    def __init__(self, column, type_):
        self.column = column
        self.type = type_


@compiles_sql(PostgresCast)
def _render_cast(element, compiler, **kw):
    return compiler.process(sa.cast(element.column, element.type), **kw)


@compiles_sql(PostgresCast, "sqlite")
def _render_sqlite_column(element, compiler, **kw):
    return compiler.process(element.column, **kw)


def _float(column) -> sa.ColumnElement:
    return PostgresCast(column, sa.Float())


def _exact(column) -> sa.ColumnElement:
    # int4 * int4 products of the counts fit int8 (both engines); see xp_matches_counts.
    return PostgresCast(column, sa.BigInteger())


def audit_now(context: AuditContext) -> sa.BindParameter:
    # A bound parameter of the column's own type: on SQLite it is rendered as the same
    # naive UTC 'YYYY-MM-DD HH:MM:SS.ffffff' text the column holds, so text comparison
    # orders correctly; on PostgreSQL it is a timestamptz.
    return sa.bindparam("audit_now", context.now, type_=UTC_DATETIME)


# ---------------------------------------------------------------- Pandera built-ins


@compiles("greater_than_or_equal_to")
def _ge(t, column, context, *, min_value):
    return t[column] >= min_value


@compiles("less_than_or_equal_to")
def _le(t, column, context, *, max_value):
    return t[column] <= max_value


@compiles("greater_than")
def _gt(t, column, context, *, min_value):
    return t[column] > min_value


@compiles("less_than")
def _lt(t, column, context, *, max_value):
    return t[column] < max_value


@compiles("in_range")
def _in_range(t, column, context, *, min_value, max_value, include_min=True, include_max=True):
    low = t[column] >= min_value if include_min else t[column] > min_value
    high = t[column] <= max_value if include_max else t[column] < max_value
    return sa.and_(low, high)


@compiles("isin")
def _isin(t, column, context, *, allowed_values):
    return t[column].in_(list(allowed_values))


@compiles("str_length")
def _str_length(t, column, context, *, min_value=None, max_value=None, exact_value=None):
    length = sa.func.length(t[column])
    if exact_value is not None:
        return length == exact_value
    parts = []
    if min_value is not None:
        parts.append(length >= min_value)
    if max_value is not None:
        parts.append(length <= max_value)
    return sa.and_(t[column].is_not(None), *parts)


# ---------------------------------------------------------------- registered checks


@compiles("chars_within")
def _chars_within(t, column, context, *, allowed):
    # ltrim(x, set) strips every leading character in the set: '' when all are allowed.
    return sa.func.ltrim(t[column], allowed) == ""


@compiles("not_after_audit_time")
def _not_after_audit_time(t, column, context):
    return t[column] <= audit_now(context)


def _per_minute(t, stored, chars, duration, tolerance):
    total = _float(t[chars[0]])
    for column in chars[1:]:
        total = total + _float(t[column])
    expected = total * 12000.0 / sa.func.nullif(_float(t[duration]), 0)
    return sa.and_(t[duration] > 0, sa.func.abs(_float(t[stored]) - expected) <= tolerance + FLOAT_SLACK)


@compiles("wpm_matches_counts")
def _wpm_matches(t, column, context, *, stored, chars, duration, tolerance):
    return _per_minute(t, stored, chars, duration, tolerance)


@compiles("raw_wpm_matches_counts")
def _raw_wpm_matches(t, column, context, *, stored, chars, duration, tolerance):
    return _per_minute(t, stored, chars, duration, tolerance)


@compiles("column_not_below")
def _column_not_below(t, column_, context, *, column, floor):
    return t[column] >= t[floor]


@compiles("at_most_unless_short")
def _at_most_unless_short(t, column_, context, *, column, max_value, duration, min_duration):
    return sa.and_(_present(t[column], t[duration]), sa.or_(t[column] <= max_value, t[duration] < min_duration))


@compiles("accuracy_matches_keystrokes")
def _accuracy_matches(t, column_, context, *, stored, correct, incorrect, tolerance):
    right = _float(t[correct])
    keys = right + _float(t[incorrect])
    expected = sa.case((keys > 0, right * 100.0 / sa.func.nullif(keys, 0)), else_=100.0)
    return sa.and_(_present(t[stored]), keys >= 0, sa.func.abs(_float(t[stored]) - expected) <= tolerance + FLOAT_SLACK)


@compiles("xp_matches_counts")
def _xp_matches(t, column_, context, *, stored, chars, correct, incorrect):
    # xp = floor(N * c / D), checked without division: xp * D <= N * c < (xp + 1) * D.
    # In BIGINT: the columns are int4, so N < 2^32, c and xp < 2^31 and every product
    # stays under 2^63 on PostgreSQL; SQLite turns an overflowing product into a float.
    xp, c, i = _exact(t[stored]), _exact(t[correct]), _exact(t[incorrect])
    n = _exact(t[chars[0]])
    for column in chars[1:]:
        n = n + _exact(t[column])
    d = c + i
    counts = sa.and_(*(t[column] >= 0 for column in (*chars, correct, incorrect)))
    identity = sa.case(
        (d == 0, xp == 0),
        else_=sa.and_(xp * d <= n * c, n * c < (xp + 1) * d),
    )
    return sa.and_(_present(t[stored], t[correct], t[incorrect], *(t[column] for column in chars)), counts, identity)


@compiles("level_matches_xp")
def _level_matches_xp(t, column_, context, *, level, xp):
    # metrics.level_matches_xp_sql computes in NUMERIC: a corrupt level or xp would
    # overflow PostgreSQL's integers and abort the whole audit.
    return metrics.level_matches_xp_sql(t[level], t[xp])


def compile_checks(checks) -> Callable[..., sa.ColumnElement[bool]]:
    """The predicate of a rule made of `checks` ((column, name, statistics), ...)."""
    parts = []
    for column, name, statistics in checks:
        if name not in COMPILERS:
            raise ValueError(f"the SQL engine has no compiler for the check {name!r}")
        parts.append((COMPILERS[name], column, dict(statistics)))

    def predicate(t, context: AuditContext) -> sa.ColumnElement[bool]:
        clauses = [compiler(t, column, context, **statistics) for compiler, column, statistics in parts]
        return clauses[0] if len(clauses) == 1 else sa.and_(*clauses)

    return predicate
