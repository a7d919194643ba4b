"""Run the audits on a connection: read only, in the caller's transaction.

`run_audits` is the one entry point (backups, restores, drills, dry runs and
`integrity audit` call it). Nothing here begins, commits or writes: the caller opens ONE
read transaction (REPEATABLE READ on PostgreSQL) whose snapshot it means to judge, so
rows written meanwhile never create false failures, and the watermarks read here belong
to the same snapshot as the counts.

What one run does, in order:

1. reads the layout of the game tables (one catalogue query) and turns every difference
   from the catalogue into a `schema.<table>` finding; rules whose tables or columns are
   missing (or of a type the engine cannot compare) are reported as skipped, the others
   still run;
2. row rules, per table: the SQL engine counts every rule's failures in ONE pass
   (`count(*) FILTER (WHERE (p) IS NOT TRUE)`), the Pandera engine validates bounded
   chunks (`checks.pandera_engine`); `since` limits them to rows above a watermark;
3. cross-table rules, in SQL for both engines: the groups of rules sharing a source are
   counted in one statement (the shared aggregate of results is computed once); with
   `since`, the rules that aggregate results judge only the players the new rows touch
   (`checks.cross_rules`);
4. samples: only failing rules cost a query for their first `sample_limit` rows;
5. watermarks: the highest players and results id, for the next `since`.

The SQL engine imports neither pandas nor pandera (a test runs it in a fresh interpreter).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from checks import catalogue_spec
from checks.chunks import DEFAULT_CHUNK_SIZE, check_chunk_size
from checks.model import (
    AuditContext,
    AuditReport,
    CrossRule,
    Finding,
    QueryRule,
    Rule,
    RowRule,
    SchemaRule,
    mask_username,
)
from checks.rules import RULES_BY_ID, TABLE_KEYS, WATERMARK_TABLES, check_tables, select_rules
from game_core.errors import InvalidInput
from game_core.schema import metadata

ENGINES = ("sql", "pandera")
WATERMARK_SOURCES = ("players", "results")


class InvalidAuditOption(InvalidInput, ValueError):
    """An impossible option (engine, sample limit, chunk size, watermark): exit 2."""


def run_audits(
    connection: Connection,
    *,
    rules: Iterable[Rule | str] | None = None,
    tables: Iterable[str] | None = None,
    engine: str = "sql",
    since: dict[str, int] | None = None,
    sample_limit: int = 5,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    now: datetime | None = None,
    on_progress: Callable[[int, int], object] | None = None,
) -> AuditReport:
    """Run the audits (the whole catalogue, or `rules`, narrowed to `tables`) and report
    every rule's outcome.

    `engine` is "sql" or "pandera" (row rules only; cross-table rules are SQL in both).
    `since` maps players/results to a watermark id: their row rules then only look at
    rows with a higher id, and the cross-table rules at the new results and the players
    they touch (the rows of progress and personal_bests row rules are always all read). `now` is when "the
    future" starts for timestamp rules (naive means UTC; default the current UTC time).
    `on_progress(done, total)` is told how many of the rules that run are done (a progress bar).
    Failing counts are exact; `sample_limit` only bounds the samples taken per rule.
    Unknown rules or tables raise UnknownRule / UnknownTable, impossible options
    InvalidInput (all exit 2).
    """
    if engine not in ENGINES:
        raise InvalidAuditOption(f"unknown audit engine {engine!r}; engines: {', '.join(ENGINES)}")
    if not isinstance(sample_limit, int) or isinstance(sample_limit, bool) or sample_limit < 0:
        raise InvalidAuditOption(f"sample limit {sample_limit!r} is not a non-negative integer")
    if engine == "pandera":
        check_chunk_size(chunk_size)
    elif not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise InvalidAuditOption(f"chunk size {chunk_size!r} is not a positive integer of rows")
    watermarks_in = _check_since(since)
    selected = select_rules(rules, tables)
    context = AuditContext.at(now, watermarks_in)
    layout = read_layout(connection)
    drift = {table: schema_differences(table, layout, connection.dialect.name) for table in catalogue_spec.TABLES}

    outcomes: dict[str, Finding] = {}
    skipped = {rule.id: _skip_reason(rule, layout, drift) for rule in selected}
    runnable = [rule for rule in selected if not skipped[rule.id]]

    def done() -> None:
        if on_progress is not None:
            on_progress(len(outcomes), len(runnable))

    done()

    # Row rules, per table.
    row_rules: dict[str, list[RowRule]] = {}
    for rule in runnable:
        if isinstance(rule, RowRule):
            row_rules.setdefault(rule.table, []).append(rule)
    for table_name, table_rules in row_rules.items():
        after = watermarks_in.get(table_name)
        present = tuple(name for name in _table(table_name).c.keys() if name in layout[table_name])
        if engine == "pandera":
            outcomes.update(
                _pandera_row_findings(connection, table_name, table_rules, context, after, chunk_size, sample_limit, present)
            )
        else:
            outcomes.update(_sql_row_findings(connection, table_name, table_rules, context, after, sample_limit, present))
        done()

    cross = [rule for rule in runnable if isinstance(rule, CrossRule)]
    if cross:
        outcomes.update(_cross_findings(connection, cross, context, sample_limit))
        done()
    for rule in runnable:
        if isinstance(rule, QueryRule):
            outcomes[rule.id] = _query_rule_finding(connection, rule, context, sample_limit)
        elif isinstance(rule, SchemaRule):
            outcomes[rule.id] = _schema_finding(rule, drift[rule.table], connection.dialect.name, sample_limit)
        elif not isinstance(rule, (RowRule, CrossRule)):
            raise TypeError(f"rule {rule.id} is of no kind the engines can run")
        done()

    findings: list[Finding] = []
    explained: set[str] = {rule.id for rule in selected}
    for rule in selected:
        reason = skipped[rule.id]
        if reason:
            # The schema finding that explains the skip is reported even when not selected.
            for table, _columns in rule.reads or ((rule.table, ()),):
                schema_id = f"schema.{table}"
                if drift.get(table) and schema_id not in explained and schema_id in RULES_BY_ID:
                    explained.add(schema_id)
                    findings.append(
                        _schema_finding(RULES_BY_ID[schema_id], drift[table], connection.dialect.name, sample_limit)
                    )
            findings.append(Finding(rule=rule, failing_rows=0, checked_rows=0, skipped=reason))
        else:
            findings.append(outcomes[rule.id])

    return AuditReport(
        findings=tuple(findings),
        engine=engine,
        audited_at=context.now,
        watermarks=read_watermarks(connection, layout),
        dialect=connection.dialect.name,
        since=dict(watermarks_in),
    )


def _check_since(since) -> dict[str, int]:
    if not since:
        return {}
    if not isinstance(since, dict):
        raise InvalidAuditOption(f"since must map tables to watermark ids, got {since!r}")
    check_tables(since)
    checked = {}
    for table, watermark in since.items():
        if table not in WATERMARK_TABLES:
            raise InvalidAuditOption(
                f"table {table!r} has no id watermark; since applies to: {', '.join(WATERMARK_TABLES)}"
            )
        if watermark is None:
            continue
        if not isinstance(watermark, int) or isinstance(watermark, bool) or watermark < 0:
            raise InvalidAuditOption(f"watermark for {table} is {watermark!r}; it must be a non-negative id")
        checked[table] = watermark
    return checked


# ---------------------------------------------------------------- schema drift


def read_layout(connection: Connection) -> dict[str, dict[str, tuple[str, bool]]]:
    """{table: {column: (declared type, nullable)}} of the game tables, in one query."""
    names = list(catalogue_spec.TABLES)
    if connection.dialect.name == "sqlite":
        statement = sa.text(
            'SELECT m.name, p.name, p.type, p."notnull" FROM sqlite_master AS m '
            "JOIN pragma_table_info(m.name) AS p "
            "WHERE m.type = 'table' AND m.name IN :names"
        ).bindparams(sa.bindparam("names", expanding=True))
    else:
        statement = sa.text(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull "
            "FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.oid "
            "WHERE c.relkind IN ('r', 'p') AND pg_catalog.pg_table_is_visible(c.oid) "
            "AND a.attnum > 0 AND NOT a.attisdropped AND c.relname IN :names"
        ).bindparams(sa.bindparam("names", expanding=True))
    layout: dict[str, dict[str, tuple[str, bool]]] = {}
    for table, column, declared, not_null in connection.execute(statement, {"names": names}):
        layout.setdefault(table, {})[column] = ((declared or "").lower(), not bool(not_null))
    return layout


def type_family(declared: str) -> str:
    """integer, number, text, timestamp, boolean or unknown, from a declared SQL type."""
    text = declared.upper()
    if "INT" in text:
        return "integer"
    if any(word in text for word in ("CHAR", "TEXT", "CLOB", "STRING")):
        return "text"
    if "TIME" in text or "DATE" in text:
        return "timestamp"
    if any(word in text for word in ("NUMERIC", "DECIMAL", "REAL", "FLOA", "DOUB")):
        return "number"
    if "BOOL" in text:
        return "boolean"
    return "unknown"


def expected_family(dtype: str) -> str:
    if dtype.startswith("Int") or dtype.startswith("int"):
        return "integer"
    if dtype.startswith("float") or dtype.startswith("Float"):
        return "number"
    if dtype.startswith("datetime64"):
        return "timestamp"
    return "text"


def schema_differences(table: str, layout, dialect: str) -> list[dict]:
    """Each difference between the database and what the catalogue needs of `table`:
    {"column", "expected", "found", "usable"} ("usable": the rules can still compare it)."""
    spec = catalogue_spec.TABLES[table]["columns"]
    found = layout.get(table)
    if found is None:
        return [{"column": None, "expected": f"table {table}", "found": "no such table", "usable": False}]
    differences = []
    for column, declared in spec.items():
        want = expected_family(declared["dtype"])
        expected = f"{want}{'' if declared['nullable'] else ' NOT NULL'}"
        if column not in found:
            differences.append({"column": column, "expected": expected, "found": "missing", "usable": False})
            continue
        type_text, nullable = found[column]
        family = type_family(type_text)
        problems = []
        usable = True
        if family != want:
            problems.append(f"{type_text or 'untyped'} ({family})")
            numeric = {family, want} <= {"integer", "number"}
            # SQLite compares any storage class without error; PostgreSQL refuses to
            # compare text with numbers: such a column cannot be audited there.
            usable = numeric or dialect == "sqlite"
        elif want == "timestamp" and dialect == "postgresql" and "without time zone" in type_text:
            problems.append(f"{type_text} (the catalogue stores UTC instants: with time zone)")
        if nullable and not declared["nullable"]:
            problems.append("nullable")
        if problems:
            differences.append(
                {"column": column, "expected": expected, "found": "; ".join(problems), "usable": usable}
            )
    return differences


def _describe(table: str, differences: list[dict]) -> str:
    parts = []
    for difference in differences:
        if difference["column"] is None:
            return f"table {table} is missing"
        where = f"{table}.{difference['column']}"
        if difference["found"] == "missing":
            parts.append(f"{where} is missing (expected {difference['expected']})")
        else:
            parts.append(f"{where} is {difference['found']}, expected {difference['expected']}")
    return "; ".join(parts)


def _skip_reason(rule: Rule, layout, drift) -> str:
    if isinstance(rule, SchemaRule):
        return ""
    reasons = []
    for table, columns in rule.reads:
        if table not in layout:
            reasons.append(f"table {table} is missing")
            continue
        unusable = {d["column"] for d in drift.get(table, ()) if not d["usable"]}
        blocked = [column for column in columns if column in unusable or column not in layout[table]]
        if blocked:
            reasons.append("cannot read " + ", ".join(f"{table}.{column}" for column in blocked))
    if not rule.reads and rule.table not in layout:
        reasons.append(f"table {rule.table} is missing")
    return "; ".join(reasons)


def _schema_finding(rule: Rule, differences: list[dict], dialect: str, sample_limit: int) -> Finding:
    expected = catalogue_spec.TABLES[rule.table]["columns"]
    failing = len(expected) if differences and differences[0]["column"] is None else len(differences)
    samples = tuple(
        {"column": d["column"], "expected": d["expected"], "found": d["found"]} for d in differences[:sample_limit]
    )
    if dialect == "sqlite":
        sql = f"SELECT name, type, \"notnull\" FROM pragma_table_info('{rule.table}') ORDER BY cid"
    else:
        sql = (
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            f"WHERE table_schema = current_schema() AND table_name = '{rule.table}' ORDER BY ordinal_position"
        )
    return Finding(
        rule=rule,
        failing_rows=failing,
        checked_rows=len(expected),
        sample_keys=tuple(d["column"] or rule.table for d in differences[:sample_limit]),
        samples=samples,
        sql_source=sql,
        detail=_describe(rule.table, differences),
    )


# ---------------------------------------------------------------- row rules


def count_row_failures(
    connection: Connection,
    source: sa.FromClause,
    rules: Sequence[RowRule],
    context: AuditContext,
    *,
    where: sa.ColumnElement[bool] | None = None,
) -> tuple[int, tuple[int, ...]]:
    """Rows in `source` (matching `where`) and, per rule, how many are not TRUE for it,
    in one pass. `source` is the rules' table or anything with its column names."""
    columns = [sa.func.count().label("checked_rows")]
    columns += [
        sa.func.count().filter(rule.predicate(source.c, context).is_not(True)).label(f"failing_{index}")
        for index, rule in enumerate(rules)
    ]
    statement = sa.select(*columns).select_from(source)
    if where is not None:
        statement = statement.where(where)
    row = connection.execute(statement).one()
    return row[0], tuple(row[1:])


def _above(table: sa.Table, after) -> sa.ColumnElement[bool] | None:
    if after is None:
        return None
    return table.c.id > after


def _sql_row_findings(connection, table_name, rules, context, after, sample_limit, present=None) -> dict[str, Finding]:
    table = _table(table_name)
    where = _above(table, after)
    checked, failing = count_row_failures(connection, table, rules, context, where=where)
    findings = {}
    for rule, count in zip(rules, failing):
        samples = _row_samples(connection, rule, context, where, sample_limit) if count and sample_limit else ()
        listing = _listing(rule, context, after=after, columns=present)
        findings[rule.id] = _finding(rule, count, checked, samples, listing, connection)
    return findings


def _row_samples(connection, rule: RowRule, context, where, limit) -> list[dict]:
    table = _table(rule.table)
    key = _key_names(rule)
    names = list(dict.fromkeys([*key, *rule.columns]))
    statement = (
        sa.select(*(_sample_column(table.c[name], connection) for name in names))
        .where(rule.predicate(table.c, context).is_not(True))
        .order_by(*(table.c[name] for name in key))
        .limit(limit)
    )
    if where is not None:
        statement = statement.where(where)
    return [dict(row) for row in connection.execute(statement).mappings()]


def _pandera_row_findings(connection, table_name, rules, context, after, chunk_size, sample_limit, present=None):
    from checks import pandera_engine

    native = [rule for rule in rules if pandera_engine.supports(rule)]
    foreign = [rule for rule in rules if not pandera_engine.supports(rule)]
    findings = {}
    if foreign:  # a caller's own row rules have no contract: they run in SQL
        findings.update(_sql_row_findings(connection, table_name, foreign, context, after, sample_limit, present))
    if not native:
        return findings
    table = _table(table_name)
    key = TABLE_KEYS[table_name]
    outcomes = pandera_engine.run_row_rules(
        connection,
        table_name,
        native,
        context,
        source=table,
        key=key,
        chunk_size=chunk_size,
        sample_limit=sample_limit,
        after=after,
    )
    for rule in native:
        outcome = outcomes[rule.id]
        listing = _listing(rule, context, after=after, columns=present)
        findings[rule.id] = _finding(rule, outcome.failing, outcome.checked, outcome.samples, listing, connection)
    return findings


# ---------------------------------------------------------------- cross-table rules


def count_cross_failures(connection, rules: Sequence[CrossRule], context) -> dict[str, tuple[int, int]]:
    """(checked, failing) per rule. Every group without its own counter becomes one
    single-row subquery and all of them are read in ONE statement, so the CTEs the
    groups share (results per player and mode) are computed once, as a hand-written
    audit would."""
    groups: dict[str, list[CrossRule]] = {}
    for rule in rules:
        if rule.counter is None:
            groups.setdefault(rule.group, []).append(rule)
    counted = []
    for index, group_rules in enumerate(groups.values()):
        source = group_rules[0].source(context).subquery(f"audited_{index}")
        columns = [sa.func.count().label(f"g{index}_rows")] + [
            sa.func.count().filter(rule.predicate(source.c).is_not(True)).label(f"g{index}_{number}")
            for number, rule in enumerate(group_rules)
        ]
        counted.append(sa.select(*columns).select_from(source).subquery(f"group_{index}"))
    counts: dict[str, tuple[int, int]] = {}
    if counted:
        joined = counted[0]
        for part in counted[1:]:
            joined = joined.join(part, sa.true())  # single-row subqueries side by side
        row = connection.execute(sa.select(*(column for part in counted for column in part.c)).select_from(joined)).one()
        values = iter(row)
        for group_rules in groups.values():
            checked = int(next(values))
            for rule in group_rules:
                counts[rule.id] = (checked, int(next(values)))
    return counts


def _cross_findings(connection, rules: Sequence[CrossRule], context, sample_limit) -> dict[str, Finding]:
    findings = {}
    counts = count_cross_failures(connection, rules, context)
    for rule in rules:
        if rule.counter is not None:
            checked, failing = connection.execute(rule.counter(context)).one()
            counts[rule.id] = (int(checked), int(failing))
    for rule in rules:
        checked, failing = counts[rule.id]
        samples = ()
        if failing and sample_limit:
            source = rule.source(context).subquery("audited")
            names = list(dict.fromkeys([*rule.key, *rule.explain]))
            statement = (
                sa.select(*(_sample_column(source.c[name], connection) for name in names))
                .where(rule.predicate(source.c).is_not(True))
                .order_by(*(source.c[name] for name in rule.key))
                .limit(sample_limit)
            )
            samples = [dict(row) for row in connection.execute(statement).mappings()]
        findings[rule.id] = _finding(rule, failing, checked, samples, _listing(rule, context), connection)
    return findings


def _query_rule_finding(connection, rule: QueryRule, context, sample_limit) -> Finding:
    failing_rows = rule.failing_rows(context).subquery()
    failing = connection.execute(sa.select(sa.func.count()).select_from(failing_rows)).scalar_one()
    checked = connection.execute(sa.select(sa.func.count()).select_from(_table(rule.table))).scalar_one()
    samples = ()
    if failing and sample_limit:
        key = [column.name for column in _table(rule.table).primary_key.columns]
        listed = failing_rows_query(rule, context).order_by(None).subquery()
        statement = sa.select(*(listed.c[name] for name in key)).order_by(*(listed.c[name] for name in key))
        samples = [dict(row) for row in connection.execute(statement.limit(sample_limit)).mappings()]
    return _finding(rule, failing, checked, samples, _listing(rule, context), connection)


# ---------------------------------------------------------------- listing, samples, watermarks


def failing_rows_query(
    rule: Rule, context: AuditContext, *, after: int | None = None, columns: Sequence[str] | None = None
) -> sa.Select:
    """The SELECT that lists every failing row of `rule`, ordered by its key.

    For a row rule run with a watermark, `after` limits it to the rows the run checked;
    `columns` names the columns to list (default all: under schema drift, the ones the
    database still has, so the SQL runs as printed).
    """
    if isinstance(rule, RowRule):
        table = _table(rule.table)
        shown = table.c if columns is None else [table.c[name] for name in columns]
        statement = sa.select(*shown).where(rule.predicate(table.c, context).is_not(True))
        if after is not None:
            statement = statement.where(table.c.id > after)
        return statement.order_by(*(table.c[name] for name in _key_names(rule)))
    if isinstance(rule, CrossRule):
        source = rule.source(context).subquery("audited")
        return (
            sa.select(source)
            .where(rule.predicate(source.c).is_not(True))
            .order_by(*(source.c[name] for name in rule.key))
        )
    if isinstance(rule, QueryRule):
        table = _table(rule.table)
        return rule.failing_rows(context).order_by(*table.primary_key.columns)
    raise TypeError(f"rule {rule.id} has no listing query")


def _listing(rule: Rule, context: AuditContext, **options) -> Callable[[], sa.Select]:
    """What builds `failing_rows_query(rule, context, **options)` when it is asked for.

    Building the listing SELECT (a cross rule's whole source as a subquery, its column
    collection included) was over half of a clean SQLite audit's CPU, and the audits
    inside backups, restores, drills and dry runs mostly never show their SQL: like the
    rendering, it waits until `Finding.sql` is read."""
    return functools.partial(failing_rows_query, rule, context, **options)


def _finding(rule: Rule, failing: int, checked: int, samples, listing: Callable[[], sa.Select], connection) -> Finding:
    key = _key_names(rule)
    cleaned = tuple(_clean_sample(sample) for sample in samples)
    keys = tuple(
        sample[key[0]] if len(key) == 1 else tuple(sample[name] for name in key) for sample in cleaned
    )
    return Finding(
        rule=rule,
        failing_rows=int(failing),
        checked_rows=int(checked),
        sample_keys=keys,
        samples=cleaned,
        sql_source=functools.partial(_literal_sql, listing, connection.dialect),
    )


def _sample_column(column, connection):
    """A column as a sample shows it. PostgreSQL timestamps may be 'infinity', which no
    Python datetime holds: shown as None (the finding's SQL shows the stored value)."""
    if connection.dialect.name == "postgresql" and isinstance(column.type, sa.DateTime):
        return sa.case((sa.func.isfinite(column), column)).label(column.name)
    return column


def _clean_sample(sample: dict) -> dict:
    cleaned = {}
    for name, value in sample.items():
        if isinstance(value, datetime):
            value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
        elif isinstance(value, Decimal):
            value = float(value)
        if name == "username":
            value = mask_username(value)
        cleaned[name] = value
    return cleaned


def _key_names(rule: Rule) -> tuple[str, ...]:
    if isinstance(rule, CrossRule):
        return rule.key
    if rule.table in TABLE_KEYS:
        return TABLE_KEYS[rule.table]
    return tuple(column.name for column in _table(rule.table).primary_key.columns)


def read_watermarks(connection: Connection, layout=None) -> dict[str, int]:
    """The highest id of players and results (0 when empty), in the caller's snapshot."""
    present = [name for name in WATERMARK_SOURCES if layout is None or "id" in layout.get(name, {})]
    if not present:
        return {}
    columns = [
        sa.select(sa.func.coalesce(sa.func.max(_table(name).c.id), 0)).scalar_subquery().label(name) for name in present
    ]
    row = connection.execute(sa.select(*columns)).one()
    return {name: int(value) for name, value in zip(present, row)}


def _literal_sql(listing: Callable[[], sa.Select], dialect) -> str:
    """The statement `listing` builds, as text for this dialect, values inlined, to paste
    into a shell."""
    return str(listing().compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def _table(name: str) -> sa.Table:
    try:
        return metadata.tables[name]
    except KeyError:
        raise InvalidAuditOption(f"no game table named {name!r}; tables: {', '.join(metadata.tables)}") from None
