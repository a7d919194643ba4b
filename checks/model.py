"""What an audit is made of: rules, the context they run in, findings and the report.

A `Rule` is what a reader sees (id, table, severity, meaning, on-call action, kind). The
kinds the engines run add how to find the failing rows:

- `RowRule` (kind "row"): a predicate on one row of its table, compiled from the
  catalogue (`checks/catalogue_spec.py`, exported from the Pandera contracts). It is built
  against a column collection handed in (`t`), not bound to the table, so the same rule
  runs on the table, on the rows above a watermark or on a copy of another shape.
- `CrossRule` (kind "cross"): a predicate on the rows of a shared SQL source that joins
  or aggregates several tables (orphans, per-player aggregates, personal bests); rules
  of one `group` share the source and are counted in one query. Both engines run these
  in SQL.
- `QueryRule` (kind "cross"): a SELECT of exactly the failing rows, for a caller's own
  rules.
- `SchemaRule` (kind "schema"): the table and the columns the catalogue needs exist with
  the declared types (`schema.<table>`).

A row passes only when its predicate is TRUE: NULL (a missing value, a NULLIF'd
division) is a failure, which is why counts use `IS NOT TRUE`, never `NOT (...)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from sqlalchemy.sql import ColumnElement, Select
    from sqlalchemy.sql.base import ReadOnlyColumnCollection

ERROR = "error"
WARN = "warn"
SEVERITIES = (ERROR, WARN)
ROW = "row"
CROSS = "cross"
SCHEMA = "schema"
KINDS = (ROW, CROSS, SCHEMA)
REPORT_SCHEMA_VERSION = 2
# Recomputed values are compared as |stored - recomputed| <= tolerance + FLOAT_SLACK in
# IEEE doubles by both engines: 49.61 - 49.6 is 0.010000000000005 in binary, and a
# documented tolerance of 0.01 must include 0.01.
FLOAT_SLACK = 1e-9


@dataclass(frozen=True)
class AuditContext:
    """The values every rule of one run sees: `now` is the instant "the future" starts.

    Always an aware UTC datetime: SQLite stores timestamps as naive UTC text, and
    SQLAlchemy's SQLite type drops any offset instead of converting it.
    """

    now: datetime
    # An incremental run's watermarks (None: the whole table). Cross-table rules that
    # aggregate results judge only the players these rows touch.
    results_after: int | None = None
    players_after: int | None = None

    @classmethod
    def at(cls, now: datetime | None = None, since: dict[str, int] | None = None) -> AuditContext:
        """A context at `now` (naive means UTC), or at the current UTC time; `since` maps
        players/results to the watermark ids of an incremental run."""
        if now is None:
            now = datetime.now(timezone.utc)
        elif now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)
        else:
            now = now.astimezone(timezone.utc)
        since = since or {}
        return cls(now=now, results_after=since.get("results"), players_after=since.get("players"))

    @property
    def incremental(self) -> bool:
        return self.results_after is not None or self.players_after is not None


@dataclass(frozen=True)
class Rule:
    """One audited property: stable id `<table>.<name>`, severity, meaning, action.

    `reads` names what the rule needs, as (table, columns) pairs: a rule whose table or
    columns are missing from the database is reported as skipped, not run.
    """

    id: str
    table: str
    severity: str
    meaning: str
    action: str
    reads: tuple[tuple[str, tuple[str, ...]], ...] = field(default=(), kw_only=True, compare=False, repr=False)

    kind = "rule"

    def __post_init__(self) -> None:
        # Ids are namespaced by table so that `--table T` and `--rule R` never disagree
        # (schema rules are `schema.<table>`).
        name_ok = self.id.startswith(f"{self.table}.") and len(self.id) > len(self.table) + 1
        if not name_ok and self.id != f"schema.{self.table}":
            raise ValueError(f"rule id {self.id!r} must be '{self.table}.<name>'")
        if self.severity not in SEVERITIES:
            raise ValueError(f"rule {self.id}: severity {self.severity!r} is not one of {SEVERITIES}")
        for name in ("meaning", "action"):
            text = getattr(self, name)
            if not text or "\n" in text:
                raise ValueError(f"rule {self.id}: {name} must be one non-empty line")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "table": self.table,
            "kind": self.kind,
            "severity": self.severity,
            "meaning": self.meaning,
            "action": self.action,
        }


@dataclass(frozen=True)
class RowRule(Rule):
    """A rule a row of `table` passes when `predicate(t, context)` is TRUE.

    `t` is a column collection with the table's column names (`table.c`, a subquery's
    `.c`); the predicate must only read those columns (`columns`), so it can run in one
    pass per table together with every other row rule of that table.
    """

    predicate: Callable[[ReadOnlyColumnCollection, AuditContext], ColumnElement[bool]] = field(
        kw_only=True, compare=False, repr=False
    )
    columns: tuple[str, ...] = field(default=(), kw_only=True, compare=False, repr=False)

    kind = ROW


@dataclass(frozen=True)
class CrossRule(Rule):
    """A rule over a SQL source that joins or aggregates tables: a source row passes when
    `predicate(s.c)` is TRUE.

    `source(context)` is a SELECT whose first columns are the key (`key`, named as in
    `table`); rules with the same `group` share one source and are counted together.
    `explain` names the source columns shown in samples next to the key. `counter`, when
    set, counts (checked, failing) more cheaply than the shared pass; it must agree with
    the listing.
    """

    group: str = field(kw_only=True, compare=False)
    source: Callable[[AuditContext], Select] = field(kw_only=True, compare=False, repr=False)
    predicate: Callable[[ReadOnlyColumnCollection], ColumnElement[bool]] = field(
        kw_only=True, compare=False, repr=False
    )
    key: tuple[str, ...] = field(kw_only=True, compare=False)
    explain: tuple[str, ...] = field(default=(), kw_only=True, compare=False)
    counter: Callable[[AuditContext], Select] | None = field(default=None, kw_only=True, compare=False, repr=False)

    kind = CROSS


@dataclass(frozen=True)
class QueryRule(Rule):
    """A rule whose failing rows of `table` only a query across tables can list.

    `failing_rows(context)` returns a SELECT of exactly the failing rows; it must
    include the table's primary-key columns under their own names (samples are taken
    from them) and may add columns that explain the failure.
    """

    failing_rows: Callable[[AuditContext], Select] = field(kw_only=True, compare=False, repr=False)

    kind = CROSS


@dataclass(frozen=True)
class SchemaRule(Rule):
    """The table exists with every column the catalogue reads, of the declared type."""

    kind = SCHEMA


@dataclass(frozen=True)
class Finding:
    """The outcome of one rule: exact count, bounded samples, and the SQL to list all.

    `failing_rows` is exact, never capped; `samples` holds at most `sample_limit` dicts of
    the key and the offending values (usernames masked). `skipped` says why a rule could
    not run (schema drift): it then neither passed nor counted anything. `detail` spells
    out a schema finding's differences in one line.
    """

    rule: Rule
    failing_rows: int
    checked_rows: int
    sample_keys: tuple = ()
    # The SQL as text, or what renders it: rendering a statement with its values inlined
    # was over half of a small audit's time, and the audits inside restores, drills and
    # dry runs mostly never show it. Read it as `sql`.
    sql_source: str | Callable[[], str] = field(default="", repr=False, compare=False)
    samples: tuple[dict, ...] = ()
    skipped: str = ""
    detail: str = ""

    @property
    def sql(self) -> str:
        """The SQL that lists every failing row, values inlined, to paste into a shell."""
        source = self.sql_source
        if callable(source):
            source = source()
            object.__setattr__(self, "sql_source", source)  # rendered once
        return source

    @property
    def passed(self) -> bool:
        return self.failing_rows == 0 and not self.skipped

    @property
    def status(self) -> str:
        """'ok', 'fail' or 'skipped'."""
        if self.skipped:
            return "skipped"
        return "ok" if self.failing_rows == 0 else "fail"

    @property
    def share(self) -> float:
        """failing_rows / checked_rows (0 when nothing was checked)."""
        return self.failing_rows / self.checked_rows if self.checked_rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.id,
            "table": self.rule.table,
            "kind": self.rule.kind,
            "severity": self.rule.severity,
            "meaning": self.rule.meaning,
            "action": self.rule.action,
            "status": self.status,
            "passed": self.passed,
            "failing_rows": self.failing_rows,
            "checked_rows": self.checked_rows,
            "share": self.share,
            "sample_keys": [_json_value(key) for key in self.sample_keys],
            "samples": [{name: _json_value(value) for name, value in sample.items()} for sample in self.samples],
            "sql": self.sql,
            "skipped": self.skipped or None,
            "detail": self.detail or None,
        }


@dataclass(frozen=True)
class AuditReport:
    """Every finding of one run, in catalogue order.

    `engine` is the audit engine ("sql" or "pandera"), `dialect` the database
    ("sqlite" or "postgresql"); `watermarks` holds the highest players and results id at
    audit time, read in the audit's transaction: pass it as `since` to the next run.
    """

    findings: tuple[Finding, ...]
    engine: str
    audited_at: datetime | None = None
    watermarks: dict[str, int] = field(default_factory=dict)
    dialect: str | None = None
    since: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no error-severity rule failed (warnings do not make a run dirty)."""
        return not self.errors

    @property
    def violations(self) -> tuple[Finding, ...]:
        """Findings with failing rows (a schema finding counts its differences)."""
        return tuple(f for f in self.findings if f.failing_rows > 0)

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.violations if f.rule.severity == ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.violations if f.rule.severity == WARN)

    @property
    def skipped(self) -> tuple[Finding, ...]:
        """Rules that could not run (their tables or columns are missing or of another type)."""
        return tuple(f for f in self.findings if f.skipped)

    def finding(self, rule_id: str) -> Finding:
        """The finding of one rule by id (KeyError when that rule did not run)."""
        for finding in self.findings:
            if finding.rule.id == rule_id:
                return finding
        raise KeyError(rule_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": REPORT_SCHEMA_VERSION,
            "engine": self.engine,
            "dialect": self.dialect,
            "audited_at": self.audited_at.isoformat() if self.audited_at else None,
            "ok": self.ok,
            "rules": len(self.findings),
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "skipped": len(self.skipped),
            "watermarks": dict(self.watermarks),
            "since": dict(self.since),
            "findings": [finding.to_dict() for finding in self.findings],
        }


def mask_username(name: Any) -> Any:
    """'alice' -> 'a***e': enough to tell rows apart, not enough to identify a player."""
    if not isinstance(name, str):
        return name
    if len(name) <= 1:
        return "***"
    if len(name) == 2:
        return name[0] + "***"
    return f"{name[0]}***{name[-1]}"


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json_value(part) for part in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value
