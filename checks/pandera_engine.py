"""The Pandera engine: row rules validated by the Pandera contracts on bounded chunks.

Rows are read by keyset pagination on the primary key (`WHERE key > :last ORDER BY key
LIMIT :n`, never OFFSET: every chunk costs the same wherever it lies), straight from the
driver cursor in the caller's transaction (a server-side cursor on PostgreSQL, so psycopg
never buffers more than one fetch batch), batch by batch into frames with the dtypes the
contracts pin (`Int64`, `float64`, `string[python]`, `datetime64[us, UTC]`).

Each rule's checks are the contracts' own Pandera `Check` objects (built-ins and the
registered ones of `checks.pandera_checks`), applied to the chunk; a row fails a rule when
a check is not TRUE for it or a column the rule reads is NULL, exactly as the SQL engine
counts. Counts are summed across chunks and exact. Pandera's cost is in failure cases
(`validate(lazy=True)` builds a report row per failing value and column: 78 rows for one
bad result), so the engine calls each Check on the chunk (row-level checks on only the
columns they read) and reads its boolean output; each rule keeps at most `sample_limit`
sample rows, the first ones in key order, like the SQL engine's samples.

Cross-table rules are not run here: `checks.audit` runs them through the same SQL as the
SQL engine.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from checks import pandera_checks
from checks.contracts import MODELS_BY_TABLE
from checks.model import AuditContext, RowRule

# Rows fetched from the driver per round: the Python tuples of one batch are the only
# per-row Python objects alive at a time, the chunk itself lives in typed columns.
FETCH_BATCH = 20_000


@dataclass
class RowOutcome:
    failing: int = 0
    checked: int = 0
    samples: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class _Plan:
    rule: RowRule
    columns: tuple[str, ...]
    checks: tuple  # ((column or None, pandera Check), ...)


def _plans(table: str, rules: Sequence[RowRule]) -> list[_Plan]:
    model = MODELS_BY_TABLE[table]
    schema = model.to_schema()
    available = {}
    for name, column in schema.columns.items():
        for check in column.checks:
            available[(name, check.name)] = check
    for check in schema.checks:
        available[(None, check.name)] = check
    by_id = {entry["id"]: entry for entry in model.Config.metadata["rules"]}
    plans = []
    for rule in rules:
        entry = by_id[rule.id]
        checks = tuple((column, available[(column, name)]) for column, name in entry["checks"])
        plans.append(_Plan(rule=rule, columns=tuple(rule.columns), checks=checks))
    return plans


def supports(rule: RowRule) -> bool:
    """True when the contracts define this rule (a caller's own RowRule runs in SQL)."""
    model = MODELS_BY_TABLE.get(rule.table)
    return model is not None and any(entry["id"] == rule.id for entry in model.Config.metadata["rules"])


def pinned_dtypes(table: str) -> dict[str, str]:
    """The dtypes the contracts pin for a table's columns ('Int64', 'float64', ...)."""
    schema = MODELS_BY_TABLE[table].to_schema()
    return {name: str(column.dtype) for name, column in schema.columns.items()}


# ---------------------------------------------------------------- reading


# How the driver hands a column over: SQLite timestamps as text, PostgreSQL ones as
# integer microseconds since the epoch (converted on the server: no datetime objects).
TEXT_TIME = "text"
EPOCH_US = "epoch_us"
FAR_FUTURE_US = 2**62  # about 146,000 years: within datetime64[us]


def _to_dtype(values: list, dtype: str, time_format: str = TEXT_TIME):
    if dtype == "Int64":
        try:
            return pd.array(values, dtype="Int64")
        except (TypeError, ValueError):
            # A value of another storage class (SQLite keeps what it is given): not an
            # integer, so NULL for the checks, which then fail the row.
            numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
            numbers = numbers.where(numbers == np.floor(numbers))
            return pd.array(numbers, dtype="Int64")
    if dtype == "float64":
        try:
            return np.array(values, dtype="float64")
        except (TypeError, ValueError):
            return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype="float64")
    if dtype.startswith("datetime64"):
        if time_format == EPOCH_US:
            stamps = pd.to_datetime(pd.Series(pd.array(values, dtype="Int64")), unit="us", utc=True)
        else:
            stamps = pd.to_datetime(pd.Series(values, dtype=object), format="ISO8601", utc=True, errors="coerce")
        return stamps.dt.as_unit("us").array
    if dtype.startswith("string"):
        return pd.Series(values, dtype=object).astype(pd.StringDtype("python")).array
    raise ValueError(f"no reader for dtype {dtype}")


def _driver_statement(connection: Connection, statement: sa.Select) -> tuple[str, object]:
    compiled = statement.compile(dialect=connection.dialect)
    params = compiled.construct_params()
    if connection.dialect.positional:
        return str(compiled), tuple(params[name] for name in compiled.positiontup)
    return str(compiled), params


def read_frame(connection: Connection, statement: sa.Select, dtypes: dict[str, str]) -> pd.DataFrame:
    """Run `statement` on the driver cursor (in the caller's transaction) into a typed frame.

    Rows arrive FETCH_BATCH at a time and are converted batch by batch, so only one
    batch of Python tuples is alive at once: on PostgreSQL through a server-side cursor
    (psycopg otherwise buffers the whole result client-side), on SQLite the cursor streams.
    """
    sql, params = _driver_statement(connection, statement)
    names = list(dtypes)
    postgres = connection.dialect.name == "postgresql"
    time_format = EPOCH_US if postgres else TEXT_TIME
    driver = connection.connection.driver_connection
    cursor = driver.cursor(name="audit_chunk") if postgres else driver.cursor()
    parts: list[pd.DataFrame] = []
    try:
        cursor.execute(sql, params)
        while True:
            rows = cursor.fetchmany(FETCH_BATCH)
            if not rows:
                break
            columns = list(zip(*rows))
            del rows
            parts.append(
                pd.DataFrame(
                    {name: _to_dtype(list(values), dtypes[name], time_format) for name, values in zip(names, columns)},
                    copy=False,
                )
            )
            del columns
    finally:
        cursor.close()
    if not parts:
        return pd.DataFrame({name: _to_dtype([], dtypes[name], time_format) for name in names})
    if len(parts) == 1:
        return parts[0]
    return pd.concat(parts, ignore_index=True)


def read_chunks(
    connection: Connection,
    source: sa.Table,
    key: Sequence[str],
    columns: Sequence[str],
    dtypes: dict[str, str],
    *,
    chunk_size: int,
    after: object = None,
) -> Iterator[pd.DataFrame]:
    """The rows of `source` in key order, `chunk_size` at a time, by keyset pagination."""
    names = list(dict.fromkeys([*key, *columns]))
    postgres = connection.dialect.name == "postgresql"
    selected = [_read_as(source.c[name], dtypes[name], postgres) for name in names]
    key_columns = [source.c[name] for name in key]
    last = after
    frame_dtypes = {name: dtypes[name] for name in names}
    while True:
        # LIMIT as a suffix: SQLAlchemy's SQLite dialect would render `.limit()` as
        # LIMIT ? OFFSET ?, and this read never uses OFFSET.
        statement = sa.select(*selected).order_by(*key_columns).suffix_with(f"LIMIT {int(chunk_size)}")
        if last is not None:
            if len(key_columns) == 1:
                statement = statement.where(key_columns[0] > last)
            else:
                statement = statement.where(sa.tuple_(*key_columns) > sa.tuple_(*last))
        frame = read_frame(connection, statement, frame_dtypes)
        if len(frame) == 0:
            return
        yield frame
        if len(frame) < chunk_size:
            return
        tail = frame.iloc[-1]
        last = _python(tail[key[0]]) if len(key) == 1 else tuple(_python(tail[name]) for name in key)


def _read_as(column, dtype: str, postgres: bool):
    """The column as the reader wants it from the driver."""
    if not postgres:
        return column
    if dtype == "float64":
        # NUMERIC arrives as Decimal from psycopg: ask for double precision, as pandas would.
        return sa.cast(column, sa.Float).label(column.name)
    if dtype.startswith("datetime64"):
        # Microseconds since the epoch (exact: EXTRACT gives NUMERIC); 'infinity' and
        # '-infinity' become the farthest instants pandas holds, so they compare as SQL does.
        epoch = sa.extract("epoch", column)
        return sa.case(
            (column.is_(None), None),
            (sa.func.isfinite(column), sa.cast(epoch * 1_000_000, sa.BigInteger)),
            (epoch > 0, FAR_FUTURE_US),
            else_=-FAR_FUTURE_US,
        ).label(column.name)
    return column


# ---------------------------------------------------------------- validating


def _check_output(check, frame: pd.DataFrame, column: str | None) -> np.ndarray:
    """The check's pass/fail per row (NULLs pass here: the caller fails them)."""
    result = check(frame[column]) if column is not None else check(frame)
    output = result.check_output
    if isinstance(output, (bool, np.bool_)):
        return np.full(len(frame), bool(output))
    if len(output) != len(frame):
        # ignore_na dropped the NULL rows before the check: they pass it here.
        output = output.reindex(frame.index, fill_value=True)
    return output.to_numpy(dtype=bool, na_value=False)


def run_row_rules(
    connection: Connection,
    table: str,
    rules: Sequence[RowRule],
    context: AuditContext,
    *,
    source: sa.Table,
    key: Sequence[str],
    chunk_size: int,
    sample_limit: int,
    after: object = None,
) -> dict[str, RowOutcome]:
    """Validate the rows of `source` (above `after` in key order) against `rules`."""
    plans = _plans(table, rules)
    outcomes = {rule.id: RowOutcome() for rule in rules}
    columns = list(dict.fromkeys(name for plan in plans for name in plan.columns))
    dtypes = pinned_dtypes(table)
    token = pandera_checks.AUDIT_NOW.set(context.now)
    try:
        for frame in read_chunks(
            connection, source, key, columns, dtypes, chunk_size=chunk_size, after=after
        ):
            rows = len(frame)
            nulls = {name: frame[name].isna().to_numpy() for name in columns}
            for plan in plans:
                failing = np.zeros(rows, dtype=bool)
                for name in plan.columns:
                    failing |= nulls[name]
                narrow = frame[list(plan.columns)] if any(column is None for column, _ in plan.checks) else frame
                for column, check in plan.checks:
                    failing |= ~_check_output(check, narrow, column)
                outcome = outcomes[plan.rule.id]
                outcome.checked += rows
                count = int(failing.sum())
                outcome.failing += count
                room = sample_limit - len(outcome.samples)
                if count and room > 0:
                    picked = frame.iloc[np.flatnonzero(failing)[:room]]
                    names = list(dict.fromkeys([*key, *plan.columns]))
                    for _, row in picked[names].iterrows():
                        outcome.samples.append({name: _python(row[name]) for name in names})
    finally:
        pandera_checks.AUDIT_NOW.reset(token)
    return outcomes


def count_rows(connection: Connection, source: sa.Table, key: Sequence[str], chunk_size: int, after=None) -> int:
    """Rows of `source` above `after` (a table with no row rules still reports its size)."""
    statement = sa.select(sa.func.count()).select_from(source)
    if after is not None:
        key_columns = [source.c[name] for name in key]
        if len(key_columns) == 1:
            statement = statement.where(key_columns[0] > after)
        else:
            statement = statement.where(sa.tuple_(*key_columns) > sa.tuple_(*after))
    return connection.execute(statement).scalar_one()


def _python(value):
    """A pandas/numpy scalar as a plain Python value (NULLs as None, timestamps as datetime)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        if not 1 <= value.year <= 9999:
            return None  # an infinite PostgreSQL timestamp: no Python datetime holds it
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        value = value.item()
        if isinstance(value, float) and np.isnan(value):
            return None
    return value
