"""`integrity audit`: run the audits on the guarded database and record them.

One read-only connection, one read transaction (REPEATABLE READ on PostgreSQL, a
deferred BEGIN on SQLite), so rows the game writes meanwhile never make a false
failure: `checks.run_audits`, the watermarks it reports and the day's figures the drift
rules use all come from that one snapshot. Nothing is written to the guarded database;
the run, its rule counts and its drift warnings go to the ledger's audit history
(`integrity.audit_history`), which is then trimmed to `[audits] history_retention_days`.

Exit codes: 0 when no error-severity rule fails (warnings, warn-severity rules and
drift included), 3 when one does, 4 when the audit could not run (database missing, no
game schema, a revision this code does not know or none: integrity.guarded; statement
timeout, ...), 2 for an unknown rule, table or engine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from game_core.errors import ExitCode, InvalidInput, PreconditionFailed
from integrity.audit_history import (
    FULL,
    INCREMENTAL,
    AuditHistory,
    DriftWarning,
    NewAudit,
    RuleCount,
    StoredAudit,
    daily_drift,
    previous_counts,
    share_jumps,
)
from integrity.db.connect import Database
from integrity.db.sql import error_reason
from integrity.settings import Settings

ENGINES = ("sql", "pandera")
# How many earlier runs of the same scope are searched for a rule's previous count.
_COMPARE_RUNS = 50


class AuditTimedOut(PreconditionFailed):
    """PostgreSQL cancelled an audit query at its statement or lock timeout."""


class AuditCouldNotRun(PreconditionFailed):
    """The database refused or failed a query of the audit."""


@dataclass(frozen=True)
class RuleOutcome:
    """One rule's outcome in this run, with its count in the previous comparable run."""

    rule: str
    table: str
    severity: str
    kind: str  # "row" or "cross"
    status: str  # "ok", "fail", or "skipped" (a schema difference kept the rule from running)
    failing_rows: int
    checked_rows: int
    share: float | None
    previous_failing_rows: int | None
    previous_share: float | None
    meaning: str
    action: str
    sample_keys: tuple = ()
    samples: tuple[dict, ...] = ()
    sql: str = ""
    change: int | None = None  # failing rows now minus in the previous comparable run


@dataclass(frozen=True)
class AuditOutcome:
    """A recorded audit run: what ran, on what, what it found, and what drifted."""

    audit_id: int
    engine: str
    database: str
    scope: str  # "full" or "incremental"
    since: dict[str, int] | None
    note: str | None
    audited_at: datetime
    seconds: float
    rules_selected: tuple[str, ...] | None
    watermarks: dict[str, int]
    compared_with: int | None  # the previous run of the same scope, if any
    day: str | None
    mean_wpm_day: float | None
    rows_per_day: int | None
    rules: tuple[RuleOutcome, ...]
    drift: tuple[DriftWarning, ...]
    history_removed: int
    ok: bool = True  # no error-severity rule failed
    error_rules: tuple[str, ...] = ()  # failing error-severity rules
    warn_rules: tuple[str, ...] = ()  # failing warn-severity rules

    @property
    def failed_errors(self) -> tuple[RuleOutcome, ...]:
        return tuple(r for r in self.rules if r.status == "fail" and r.severity == "error")

    @property
    def failed_warnings(self) -> tuple[RuleOutcome, ...]:
        return tuple(r for r in self.rules if r.status == "fail" and r.severity != "error")

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.ok else ExitCode.PROBLEMS_FOUND

    def summary(self) -> dict[str, Any]:
        return {
            "audit_id": self.audit_id,
            "engine": self.engine,
            "scope": self.scope,
            "ok": self.ok,
            "rules": len(self.rules),
            "error_rules": list(self.error_rules),
            "warn_rules": list(self.warn_rules),
            "drift": len(self.drift),
        }


def run_audit(
    settings: Settings,
    ledger,
    *,
    run_id: str | None = None,
    rules: list[str] | None = None,
    tables: list[str] | None = None,
    engine: str = "sql",
    since_last: bool = False,
    chunk_size: int | None = None,
    samples: int | None = None,
    now: datetime | None = None,
) -> AuditOutcome:
    """Audit the guarded database read-only, record the run in `ledger`, trim the history.

    `rules`/`tables` narrow the catalogue; `since_last` audits rows above the watermarks
    of the newest whole-catalogue run: row rules on the new rows, cross-table rules on the
    new results and the players they touch (checks.cross_rules says why).
    `now` is for tests: the audit time ("the future" starts there; the history's clock).
    """
    import checks

    audit_settings = settings.audits
    samples = audit_settings.samples if samples is None else samples
    chunk_size = audit_settings.chunk_size if chunk_size is None else chunk_size
    _validate(checks, engine=engine, rules=rules, tables=tables, samples=samples, chunk_size=chunk_size)
    now = _utc(now)
    history = AuditHistory(ledger.engine)
    whole_catalogue = not rules and not tables
    since, note = _since_last(history) if since_last else (None, None)
    day = (now.date() - timedelta(days=1)).isoformat()
    live = Database.of(settings)
    read = _read(settings, live, history, since=since, note=note, day=day, whole_catalogue=whole_catalogue,
                 rules=rules, tables=tables, engine=engine, samples=samples, chunk_size=chunk_size, now=now)
    scope = INCREMENTAL if read.since is not None else FULL

    earlier = history.runs(limit=_COMPARE_RUNS, scope=scope)
    outcomes = tuple(_outcome(finding, earlier) for finding in read.report.findings)
    counts = tuple(RuleCount(o.rule, o.severity, o.failing_rows, o.checked_rows) for o in outcomes)
    drift = share_jumps(counts, earlier, audit_settings.max_share_jump)
    mean_wpm = rows_per_day = None
    if read.day_figures is not None:
        mean_wpm, rows_per_day = read.day_figures
        drift += daily_drift(
            day=day, mean_wpm=mean_wpm, rows=rows_per_day,
            recorded=history.daily_values(before_day=day, days=audit_settings.drift_window_runs),
            min_history=audit_settings.drift_min_history,
        )
    watermarks = {str(k): int(v) for k, v in (read.report.watermarks or {}).items()}
    selected = None if whole_catalogue else tuple(o.rule for o in outcomes)
    error_rules = tuple(o.rule for o in outcomes if o.status == "fail" and o.severity == "error")
    warn_rules = tuple(o.rule for o in outcomes if o.status == "fail" and o.severity != "error")
    recorded_day = day if read.day_figures is not None else None
    audit_id = history.record(NewAudit(
        run_id=run_id, started_at=now, seconds=read.seconds, engine=engine, scope=scope, rules=selected,
        since=read.since, watermarks=watermarks, ok=not error_rules,
        counts=counts, day=recorded_day, mean_wpm_day=mean_wpm,
        rows_per_day=rows_per_day, drift=tuple(w.message for w in drift),
    ))
    removed = history.prune(now=now, retention_days=audit_settings.history_retention_days)
    return AuditOutcome(
        audit_id=audit_id, engine=engine, database=live.display, scope=scope, since=read.since, note=read.note,
        audited_at=now, seconds=read.seconds, rules_selected=selected, watermarks=watermarks,
        compared_with=earlier[0].id if earlier else None,
        day=recorded_day, mean_wpm_day=mean_wpm, rows_per_day=rows_per_day,
        rules=outcomes, drift=tuple(drift), history_removed=removed,
        ok=not error_rules, error_rules=error_rules, warn_rules=warn_rules,
    )


def _since_last(history: AuditHistory) -> tuple[dict[str, int] | None, str | None]:
    """The watermarks of the newest whole-catalogue run (None: audit everything), and why not."""
    last = history.last(whole_catalogue=True)
    if last is None:
        return None, "--since-last: no earlier whole-catalogue audit in the history, so this is a full audit"
    return {str(k): int(v) for k, v in last.watermarks.items()}, None


@dataclass(frozen=True)
class _Read:
    """What the audit read in its one snapshot."""

    report: Any  # checks.AuditReport
    day_figures: tuple[float | None, int] | None  # mean wpm and rows of the day, when measured
    since: dict[str, int] | None  # None: a full audit
    note: str | None
    seconds: float


def _read(settings: Settings, live: Database, history: AuditHistory, *, since, note, day: str, whole_catalogue: bool,
          rules, tables, engine: str, samples: int, chunk_size: int, now: datetime) -> _Read:
    """The audits and the day's figures, in one read-only snapshot of the guarded database."""
    import checks

    started = time.perf_counter()
    try:
        with live.snapshot() as connection:  # it only reads; rolled back
            _require_schema(connection, live.display)
            if since is not None:
                went_back = _watermarks_went_back(connection, since)
                if went_back:
                    note = f"--since-last: {went_back} (a restore?), so this is a full audit"
                    since = None
            report = checks.run_audits(
                connection, rules=rules or None, tables=tables or None, engine=engine, since=since,
                sample_limit=samples, chunk_size=chunk_size, now=now,
            )
            day_figures = None
            if whole_catalogue and (since is None or not history.has_day(day)):
                day_figures = _day_figures(connection, date.fromisoformat(day))
    except sa.exc.DBAPIError as exc:
        raise _could_not_run(exc, settings, live.display) from None
    return _Read(report, day_figures, since, note, time.perf_counter() - started)


# ---------------------------------------------------------------- history


@dataclass(frozen=True)
class AuditHistoryReport:
    """`integrity audit history`: recorded runs, newest first; with `rule`, that rule's counts."""

    rule: str | None
    runs: tuple[StoredAudit, ...]


def read_audit_history(ledger, *, rule: str | None = None, limit: int = 20) -> AuditHistoryReport:
    if limit < 1:
        raise InvalidInput("--limit must be at least 1")
    history = AuditHistory(ledger.engine)
    if rule:
        import checks

        known = {r.id for r in checks.catalogue()}
        if rule not in known and not history.runs(limit=1, rule=rule, with_counts=False):
            raise checks.UnknownRule(f"unknown audit rule {rule!r}; known rules: {', '.join(sorted(known))}")
    return AuditHistoryReport(rule=rule, runs=tuple(history.runs(limit=limit, rule=rule)))


# ---------------------------------------------------------------- helpers


def _validate(checks, *, engine: str, rules, tables, samples: int, chunk_size: int) -> None:
    """Usage errors (exit 2) before the database is opened."""
    if engine not in ENGINES:
        raise InvalidInput(f"unknown audit engine {engine!r}; use one of: {', '.join(ENGINES)}")
    if samples < 0:
        raise InvalidInput(f"--samples must be 0 or more, not {samples}")
    catalogue = checks.catalogue()
    known_rules = [r.id for r in catalogue]
    for rule in rules or ():
        if rule not in known_rules:
            raise checks.UnknownRule(f"unknown audit rule {rule!r}; known rules: {', '.join(known_rules)}")
    known_tables = list(dict.fromkeys(r.table for r in catalogue))
    for table in tables or ():
        if table not in known_tables:
            raise checks.UnknownTable(f"unknown audit table {table!r}; audited tables: {', '.join(known_tables)}")
    if engine == "pandera":
        checks.check_chunk_size(chunk_size)


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    return now.replace(tzinfo=timezone.utc) if now.tzinfo is None else now.astimezone(timezone.utc)


def _require_schema(connection, display: str) -> None:
    from integrity.guarded import require_game_revision

    # Rules written for this code's tables say nothing true about another application's,
    # nor about a revision this code does not know (they would pass on what they do not
    # understand): refused, exit 4. A database behind head is audited (status says it is behind).
    require_game_revision(connection, display)


def _watermarks_went_back(connection, since: dict[str, int]) -> str | None:
    """A table whose highest id is now below the recorded watermark: ids were reused."""
    from game_core.schema import metadata

    for name, watermark in since.items():
        table = metadata.tables.get(name)
        if table is None or len(table.primary_key.columns) != 1:
            continue
        key = next(iter(table.primary_key.columns))
        highest = connection.execute(sa.select(sa.func.max(key))).scalar()
        if (highest or 0) < watermark:
            return f"the highest {name} id went back from {watermark:,} to {highest or 0:,} since the last audit"
    return None


def _day_figures(connection, day: date) -> tuple[float | None, int]:
    """Mean wpm and number of results that started on `day` (UTC), in the audit's snapshot."""
    from game_core.schema import UTC_DATETIME, results

    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    query = sa.select(sa.func.count(), sa.func.avg(results.c.wpm)).where(
        results.c.started_at >= sa.bindparam("day_start", start, type_=UTC_DATETIME),
        results.c.started_at < sa.bindparam("day_end", start + timedelta(days=1), type_=UTC_DATETIME),
    )
    rows, mean = connection.execute(query).one()
    return (None if mean is None else round(float(mean), 4)), int(rows)


def _outcome(finding, earlier: list[StoredAudit]) -> RuleOutcome:
    rule = finding.rule
    previous = previous_counts(earlier, rule.id)
    before = previous[1] if previous else None
    return RuleOutcome(
        rule=rule.id,
        table=rule.table,
        severity=rule.severity,
        kind=getattr(rule, "kind", "row"),
        status=finding.status,  # ok, fail, or skipped (schema drift kept it from running)
        failing_rows=int(finding.failing_rows),
        checked_rows=int(finding.checked_rows),
        share=finding.failing_rows / finding.checked_rows if finding.checked_rows else None,
        previous_failing_rows=before.failing_rows if before else None,
        previous_share=before.share if before else None,
        meaning=rule.meaning,
        action=rule.action,
        sample_keys=tuple(_plain(k) for k in finding.sample_keys),
        samples=tuple({str(k): _plain(v) for k, v in sample.items()} for sample in getattr(finding, "samples", ()) or ()),
        sql=finding.sql,
        change=None if before is None else int(finding.failing_rows) - before.failing_rows,
    )


def _plain(value: Any) -> Any:
    """A value as JSON and the ledger can hold it."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _could_not_run(exc: sa.exc.DBAPIError, settings: Settings, display: str) -> PreconditionFailed:
    sqlstate = getattr(exc.orig, "sqlstate", None)
    reason = error_reason(exc)
    database = settings.database
    if sqlstate == "57014":  # query_canceled: statement_timeout
        return AuditTimedOut(
            f"the audit was cancelled by the PostgreSQL statement timeout ([database] statement_timeout_ms = "
            f"{database.statement_timeout_ms}); raise it (INTEGRITY_DATABASE__STATEMENT_TIMEOUT_MS, 0 for none) "
            "or audit less at once (`integrity audit --since-last`, `--table`)"
        )
    if sqlstate == "55P03":  # lock_not_available: lock_timeout
        return AuditTimedOut(
            f"the audit waited longer than [database] lock_timeout_ms = {database.lock_timeout_ms} for a table lock "
            "(a migration or restore holds it?); run it again when that is done"
        )
    return AuditCouldNotRun(f"the audit could not run on {display}: {reason}")
