"""What a dry run found: one `Finding` per problem, with the rule that raised it.

Static rules (no data) and data rules (on the copy) report the same shape, so one
report, one exit-code decision and one declared-intent check serve both passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Severity(str, Enum):
    ERROR = "error"  # exit 3
    WARNING = "warning"  # exit 3 only with --fail-on warning
    INFO = "info"  # never changes the exit code


@dataclass(frozen=True)
class LockHold:
    """How long the statement a lock rule names kept its table locked on the copy."""

    mode: str  # as pg_locks names it, e.g. "ShareLock"
    seconds: float  # measured on the copy: from the statement's start to the commit
    copy_rows: int  # rows of the table on the copy
    production_rows: int  # rows of the table in production (the source), as counted or estimated
    scaled_seconds: float  # seconds x max(1, production_rows / copy_rows)
    budget: float  # [migrate] lock_budget

    @property
    def scale(self) -> float:
        return max(1.0, self.production_rows / self.copy_rows) if self.copy_rows else 1.0

    def text(self) -> str:
        scaled = (f", {self.scaled_seconds:.2f} s scaled to production's {self.production_rows:,} rows "
                  f"(copy: {self.copy_rows:,})" if self.scale > 1 else "")
        verdict = "over" if self.scaled_seconds > self.budget else "within"
        return f"measured: {self.mode} held {self.seconds:.2f} s{scaled}, {verdict} the lock budget of {self.budget:g} s"


@dataclass(frozen=True)
class Finding:
    rule: str  # a stable id from integrity.migrate.rules.RULES
    severity: Severity
    revision: str | None  # the revision that caused it, when one is known
    message: str  # one line, names the table/column and what happens to the data
    table: str | None = None
    column: str | None = None
    rows: int | None = None  # rows affected, when measured (data pass) or known
    samples: tuple[str, ...] = ()  # primary keys (rendered) of affected rows, at most --limit
    phase: str = "static"  # static | run | diff | audit | round-trip | intent
    declared: bool = False  # covered by the revision's declared intent: reported, not failed
    ignored_by: str | None = None  # the reason of the `ignore` entry that silenced it
    # The one engine a static finding concerns (offline mode failing for one dialect);
    # None: both, or decided by its rule (integrity.migrate.dry_run.for_engine).
    engine: str | None = None
    # PostgreSQL lock rules in a dry run: the hold measured on the copy, scaled to
    # production's rows, against [migrate] lock_budget (see dry_run.measured_locks).
    lock_hold: LockHold | None = None

    @property
    def counts(self) -> bool:
        """Whether it takes part in the exit-code decision."""
        return not self.declared and self.ignored_by is None

    def key(self) -> tuple:
        """Deterministic order for reports: revision, severity, rule, table, column."""
        order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
        return (self.revision or "", order[self.severity], self.rule, self.table or "", self.column or "", self.message)

