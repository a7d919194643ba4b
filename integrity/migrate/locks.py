"""Severity of the PostgreSQL lock rules from the hold the dry run measured (issue 18).

The static pass knows that a statement takes a write-blocking lock (a plain CREATE INDEX,
a constraint validated in one step, a table rewrite), not for how long: that depends on
the table's size and the server. A dry run on PostgreSQL runs the revision on a copy and
traces every lock it holds until commit (integrity.migrate.runner), so there the rule's
severity comes from the measured hold, scaled to production's row count when the copy is
smaller, against `[migrate] lock_budget`:

- over the budget: an error (writers would queue for longer than the budget in production);
- within it: info, with the measurement (a 0.06 s index build blocks nobody for long);
- not measured (a lint without data, a run that failed before the statement): a warning
  that names the fix, as the rule catalogue has it.

A downgrade's lock findings (their message starts "downgrade: ") are measured on the
round trip's downgrade the same way.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Mapping

from integrity.migrate.findings import Finding, LockHold, Severity
from integrity.migrate.rules import RULES

LOCK_RULES = frozenset({"pg-index-not-concurrent", "pg-constraint-validated", "pg-table-rewrite"})
DOWNGRADE_PREFIX = "downgrade: "  # integrity.migrate.static_pass starts a downgrade's messages so
# Lock modes that make INSERT, UPDATE and DELETE on the table wait (pg_locks' names).
WRITE_BLOCKING = ("ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")


def unmeasured(findings: Iterable[Finding], why: str = "not measured without data") -> list[Finding]:
    """The lock findings of a lint (or of a dry run that could not measure them): warnings
    that say their lock time is unknown and how to avoid the lock."""
    return [_unmeasured(f, why) if f.rule in LOCK_RULES else f for f in findings]


def _unmeasured(finding: Finding, why: str) -> Finding:
    return replace(finding, severity=Severity.WARNING, message=f"{finding.message} ({why}; fix: {RULES[finding.rule].hint})")


def measured(
    findings: Iterable[Finding],
    *,
    upgrade_locks: Mapping[str, Iterable[Mapping]],
    downgrade_locks: Mapping[str, Iterable[Mapping]],
    copy_rows: Mapping[str, int],
    production_rows: Mapping[str, int],
    budget: float,
) -> list[Finding]:
    """The findings with each lock rule's severity decided by its measured hold.

    `*_locks`: revision id -> the locks its run held (dicts with relation, mode and
    seconds, as RevisionRun.locks_held); `copy_rows`: rows per table on the copy before the
    run; `production_rows`: rows per table in production where known (else the copy's)."""
    result = []
    for finding in findings:
        if finding.rule not in LOCK_RULES or finding.table is None:
            result.append(finding)
            continue
        runs = downgrade_locks if finding.message.startswith(DOWNGRADE_PREFIX) else upgrade_locks
        held = _longest_write_blocking(runs.get(finding.revision or "", ()), finding.table)
        rows = copy_rows.get(finding.table, 0)
        if held is None:
            why = "the table is empty on this copy" if rows == 0 else "its lock was not measured: the run did not reach it"
            result.append(_unmeasured(finding, why))
            continue
        mode, seconds = held
        hold = scaled_hold(mode, seconds, rows, production_rows.get(finding.table, rows), budget)
        severity = Severity.ERROR if hold.scaled_seconds > budget else Severity.INFO
        result.append(replace(finding, severity=severity, lock_hold=hold, message=f"{finding.message}; {hold.text()}"))
    return result


def scaled_hold(mode: str, seconds: float, copy_rows: int, production_rows: int, budget: float) -> LockHold:
    """A measured hold scaled linearly to production's rows (index builds, rewrites and
    validation scans are linear in the rows), never scaled down."""
    hold = LockHold(mode=mode, seconds=round(seconds, 4), copy_rows=copy_rows, production_rows=production_rows,
                    scaled_seconds=0.0, budget=budget)
    return replace(hold, scaled_seconds=round(hold.seconds * hold.scale, 4))  # from the seconds shown


def _longest_write_blocking(locks: Iterable[Mapping], table: str) -> tuple[str, float] | None:
    held = [lock for lock in locks if lock["relation"] == table and lock["mode"] in WRITE_BLOCKING]
    if not held:
        return None
    longest = max(held, key=lambda lock: (lock["seconds"], WRITE_BLOCKING.index(lock["mode"])))
    return longest["mode"], longest["seconds"]


def production_rows(database, tables: Iterable[str]) -> dict[str, int]:
    """Rows per table in the configured database (production, which the copy was made
    from): PostgreSQL's estimate (pg_class.reltuples, kept by ANALYZE and autovacuum), an
    exact count for a table never analyzed. {} when it cannot be read (a CI job without
    production access): the copy's own counts are then used, unscaled. A table estimated
    at 0 rows is counted: CREATE INDEX on an empty table sets the estimate to 0 until the
    next ANALYZE, however many rows arrive meanwhile."""
    import sqlalchemy as sa

    from game_core.errors import PreconditionFailed

    wanted = sorted(set(tables))
    if not wanted or database.target.kind != "postgresql":
        return {}
    try:
        with database.reader() as engine, engine.connect() as connection:
            estimates = dict(connection.execute(sa.text(
                "SELECT c.relname, c.reltuples::bigint FROM pg_catalog.pg_class c "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname = ANY(:names)"
            ), {"names": wanted}).all())
            counts = {}
            for table, estimate in estimates.items():
                # -1: never analyzed; 0: analyzed (or indexed) while empty, maybe filled since.
                if estimate is None or estimate <= 0:
                    from integrity.db.sql import quote

                    estimate = connection.execute(sa.text(f"SELECT count(*) FROM {quote(table)}")).scalar_one()
                counts[table] = int(estimate)
            return counts
    except (PreconditionFailed, sa.exc.DBAPIError):
        return {}
