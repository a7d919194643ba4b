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

    @property
    def counts(self) -> bool:
        """Whether it takes part in the exit-code decision."""
        return not self.declared and self.ignored_by is None

    def key(self) -> tuple:
        """Deterministic order for reports: revision, severity, rule, table, column."""
        order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
        return (self.revision or "", order[self.severity], self.rule, self.table or "", self.column or "", self.message)

