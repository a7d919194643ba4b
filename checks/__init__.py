"""Audits of what the game's data means: `run_audits` is the one entry point.

Backups, restores, drills and migration dry runs call `run_audits(connection)` on a
SQLAlchemy connection (SQLite or PostgreSQL) inside their own read transaction; it only
reads. The catalogue (`catalogue()`) has its source of truth in the Pandera contracts
(`checks.contracts`), exported to `checks/catalogue_spec.py` for the SQL engine.

`import checks` imports neither pandas nor pandera, and the SQL engine never does: only
`engine="pandera"` and the export load them. Names are resolved lazily, so that
`python -m checks.export` works even while the generated catalogue is being rewritten.
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "ERROR": "checks.model",
    "WARN": "checks.model",
    "ROW": "checks.model",
    "CROSS": "checks.model",
    "SCHEMA": "checks.model",
    "AuditContext": "checks.model",
    "AuditReport": "checks.model",
    "CrossRule": "checks.model",
    "Finding": "checks.model",
    "QueryRule": "checks.model",
    "RowRule": "checks.model",
    "Rule": "checks.model",
    "SchemaRule": "checks.model",
    "mask_username": "checks.model",
    "RULES": "checks.rules",
    "RULES_BY_ID": "checks.rules",
    "TABLES": "checks.rules",
    "UnknownRule": "checks.rules",
    "UnknownTable": "checks.rules",
    "catalogue": "checks.rules",
    "select_rules": "checks.rules",
    "ENGINES": "checks.audit",
    "count_row_failures": "checks.audit",
    "failing_rows_query": "checks.audit",
    "run_audits": "checks.audit",
    "DEFAULT_CHUNK_SIZE": "checks.chunks",
    "check_chunk_size": "checks.chunks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'checks' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
