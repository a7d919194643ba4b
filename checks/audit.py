"""The SQL engine: run rules on a connection, read only, in the caller's transaction.

Per table, one pass counts the rows and every row rule's failures together
(`count(*) FILTER (WHERE (p) IS NOT TRUE)`, portable to SQLite >= 3.30 and PostgreSQL);
each cross-table rule is one count over its failing-rows query. Only failing rules cost
a second query, for their first sample keys. Nothing here begins, commits or writes:
backups, restores, drills and dry runs call this inside the transaction whose snapshot
they mean to judge.
"""

from __future__ import annotations

from datetime import datetime
from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from checks.model import AuditContext, AuditReport, Finding, QueryRule, Rule, RowRule
from checks.rules import select_rules
from game_core.schema import metadata


def run_audits(
    connection: Connection,
    *,
    rules: Iterable[Rule | str] | None = None,
    sample_limit: int = 5,
    now: datetime | None = None,
) -> AuditReport:
    """Run the audits (the whole catalogue, or `rules`) and report every rule's outcome.

    `now` is when "the future" starts for timestamp rules (naive means UTC; default the
    current UTC time). Failing counts are exact; `sample_limit` only bounds the sample
    keys taken per failing rule.
    """
    if sample_limit < 0:
        raise ValueError("sample_limit cannot be negative")
    selected = select_rules(rules)
    context = AuditContext.at(now)
    counts: dict[str, int] = {}
    checked: dict[str, int] = {}
    for table_name, table_rules in _by_table(selected).items():
        table = _table(table_name)
        row_rules = [rule for rule in table_rules if isinstance(rule, RowRule)]
        checked[table_name], failing = count_row_failures(connection, table, row_rules, context)
        counts.update(zip((rule.id for rule in row_rules), failing))
        for rule in table_rules:
            if isinstance(rule, QueryRule):
                failing_rows = rule.failing_rows(context).subquery()
                counts[rule.id] = connection.execute(sa.select(sa.func.count()).select_from(failing_rows)).scalar_one()
    findings = tuple(
        Finding(
            rule=rule,
            failing_rows=counts[rule.id],
            checked_rows=checked[rule.table],
            sample_keys=_sample_keys(connection, rule, context, sample_limit) if counts[rule.id] else (),
            sql=_literal_sql(failing_rows_query(rule, context), connection.dialect),
        )
        for rule in selected
    )
    return AuditReport(findings=findings, engine=connection.dialect.name, audited_at=context.now)


def count_row_failures(
    connection: Connection,
    source: sa.FromClause,
    rules: Sequence[RowRule],
    context: AuditContext,
) -> tuple[int, tuple[int, ...]]:
    """Rows in `source` and, per rule, how many are not TRUE for it, in one pass.

    `source` is the rules' table or anything with its column names: a slice above a
    watermark, a scratch copy.
    """
    columns = [sa.func.count().label("checked_rows")]
    columns += [
        sa.func.count().filter(rule.predicate(source.c, context).is_not(True)).label(f"failing_{index}")
        for index, rule in enumerate(rules)
    ]
    row = connection.execute(sa.select(*columns).select_from(source)).one()
    return row[0], tuple(row[1:])


def failing_rows_query(rule: Rule, context: AuditContext) -> sa.Select:
    """The SELECT that lists every failing row of `rule`, ordered by primary key."""
    table = _table(rule.table)
    if isinstance(rule, RowRule):
        statement = sa.select(table).where(rule.predicate(table.c, context).is_not(True))
    elif isinstance(rule, QueryRule):
        statement = rule.failing_rows(context)
    else:
        raise TypeError(f"rule {rule.id} is neither a RowRule nor a QueryRule; the SQL engine cannot run it")
    return statement.order_by(*table.primary_key.columns)


def _sample_keys(connection: Connection, rule: Rule, context: AuditContext, limit: int) -> tuple:
    if limit == 0:
        return ()
    names = [column.name for column in _table(rule.table).primary_key.columns]
    failing = failing_rows_query(rule, context).order_by(None).subquery()
    keys = [failing.c[name] for name in names]
    rows = connection.execute(sa.select(*keys).order_by(*keys).limit(limit)).all()
    return tuple(row[0] if len(names) == 1 else tuple(row) for row in rows)


def _literal_sql(statement: sa.Select, dialect) -> str:
    """The statement as text for this dialect, values inlined, to paste into a shell."""
    return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def _by_table(rules: Sequence[Rule]) -> dict[str, list[Rule]]:
    grouped: dict[str, list[Rule]] = {}
    for rule in rules:
        grouped.setdefault(rule.table, []).append(rule)
    return grouped


def _table(name: str) -> sa.Table:
    try:
        return metadata.tables[name]
    except KeyError:
        raise ValueError(f"no game table named {name!r}; tables: {', '.join(metadata.tables)}") from None
