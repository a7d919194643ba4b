"""Audits of what the game's data means: `run_audits` is the one entry point.

Backups, restores, drills and migration dry runs call `run_audits(connection)` on a
SQLAlchemy connection (SQLite or PostgreSQL) inside their own read transaction; it only
reads. The rules live in one catalogue (`checks.rules.RULES`). Nothing here imports
pandas or pandera: the SQL engine must stay light enough for every command.
"""

from __future__ import annotations

from checks.audit import count_row_failures, failing_rows_query, run_audits
from checks.model import ERROR, WARN, AuditContext, AuditReport, Finding, QueryRule, RowRule, Rule
from checks.rules import RULES, RULES_BY_ID, UnknownRule, select_rules

__all__ = [
    "ERROR",
    "RULES",
    "RULES_BY_ID",
    "WARN",
    "AuditContext",
    "AuditReport",
    "Finding",
    "QueryRule",
    "RowRule",
    "Rule",
    "UnknownRule",
    "count_row_failures",
    "failing_rows_query",
    "run_audits",
    "select_rules",
]
