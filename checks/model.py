"""What an audit is made of: rules, the context they run in, findings and the report.

A `Rule` is what a reader sees (id, table, severity, meaning, on-call action). The two
kinds the SQL engine runs add how to find the failing rows:

- `RowRule`: a predicate on one row of its table. It is built against a column
  collection handed in (`t`), not bound to the table, so the same rule can run on the
  table, on a slice of it (rows above a watermark) or on a copy with another shape of
  storage; a future Pandera catalogue compiles its column checks into these.
- `QueryRule`: a SELECT of the failing rows of its table, for what one row cannot tell
  (orphans, per-player aggregates).

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
REPORT_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class AuditContext:
    """The values every rule of one run sees: `now` is the instant "the future" starts.

    Always an aware UTC datetime: SQLite stores timestamps as naive UTC text, and
    SQLAlchemy's SQLite type drops any offset instead of converting it.
    """

    now: datetime

    @classmethod
    def at(cls, now: datetime | None = None) -> AuditContext:
        """A context at `now` (naive means UTC), or at the current UTC time."""
        if now is None:
            now = datetime.now(timezone.utc)
        elif now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)
        else:
            now = now.astimezone(timezone.utc)
        return cls(now=now)


@dataclass(frozen=True)
class Rule:
    """One audited property: stable id `<table>.<name>`, severity, meaning, action."""

    id: str
    table: str
    severity: str
    meaning: str
    action: str

    def __post_init__(self) -> None:
        # Ids are namespaced by table so that `--table T` and `--rule R` never disagree.
        if not self.id.startswith(f"{self.table}.") or len(self.id) == len(self.table) + 1:
            raise ValueError(f"rule id {self.id!r} must be '{self.table}.<name>'")
        if self.severity not in SEVERITIES:
            raise ValueError(f"rule {self.id}: severity {self.severity!r} is not one of {SEVERITIES}")
        for name in ("meaning", "action"):
            text = getattr(self, name)
            if not text or "\n" in text:
                raise ValueError(f"rule {self.id}: {name} must be one non-empty line")


@dataclass(frozen=True)
class RowRule(Rule):
    """A rule a row of `table` passes when `predicate(t, context)` is TRUE.

    `t` is a column collection with the table's column names (`table.c`, a subquery's
    `.c`); the predicate must only read those columns, so it can run in one pass per
    table together with every other row rule of that table.
    """

    predicate: Callable[[ReadOnlyColumnCollection, AuditContext], ColumnElement[bool]] = field(
        kw_only=True, compare=False, repr=False
    )


@dataclass(frozen=True)
class QueryRule(Rule):
    """A rule whose failing rows of `table` only a query across tables can list.

    `failing_rows(context)` returns a SELECT of exactly the failing rows; it must
    include the table's primary-key columns under their own names (samples are taken
    from them) and may add columns that explain the failure.
    """

    failing_rows: Callable[[AuditContext], Select] = field(kw_only=True, compare=False, repr=False)


@dataclass(frozen=True)
class Finding:
    """The outcome of one rule: exact count, bounded samples, and the SQL to list all."""

    rule: Rule
    failing_rows: int
    checked_rows: int
    sample_keys: tuple = ()
    sql: str = ""

    @property
    def passed(self) -> bool:
        return self.failing_rows == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.id,
            "table": self.rule.table,
            "severity": self.rule.severity,
            "meaning": self.rule.meaning,
            "action": self.rule.action,
            "passed": self.passed,
            "failing_rows": self.failing_rows,
            "checked_rows": self.checked_rows,
            "sample_keys": [_json_key(key) for key in self.sample_keys],
            "sql": self.sql,
        }


@dataclass(frozen=True)
class AuditReport:
    """Every finding of one run, in catalogue order, and the engine it ran on."""

    findings: tuple[Finding, ...]
    engine: str
    audited_at: datetime | None = None

    @property
    def ok(self) -> bool:
        """True when no error-severity rule failed (warnings do not make a run dirty)."""
        return not self.errors

    @property
    def violations(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if not f.passed)

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.violations if f.rule.severity == ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.violations if f.rule.severity == WARN)

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
            "audited_at": self.audited_at.isoformat() if self.audited_at else None,
            "ok": self.ok,
            "rules": len(self.findings),
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [finding.to_dict() for finding in self.findings],
        }


def _json_key(key: Any) -> Any:
    if isinstance(key, tuple):
        return [_json_key(part) for part in key]
    if isinstance(key, datetime):
        return key.isoformat()
    return key
