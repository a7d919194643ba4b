"""Dry runs in the ledger (table `migration_dry_runs`, ledger layout 4).

`migrate apply` trusts a revision only when a dry run of the same store, from the
same starting revision to the same target, passed with exactly the same revision files
(SHA-256 of each): editing a revision after its dry run makes the record not match.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from integrity.ledger import Ledger, migration_dry_runs, utc_now


@dataclass(frozen=True)
class DryRunRecord:
    run_id: str | None
    finished_at: datetime
    store_identity: str | None
    engine: str
    source: str
    start_revision: str | None
    target_revision: str
    revisions: tuple[tuple[str, str], ...]  # (id, sha256) in upgrade order
    passed: bool
    errors: int
    warnings: int


def record_dry_run(ledger: Ledger, record: DryRunRecord) -> None:
    with ledger.engine.begin() as connection:
        connection.execute(migration_dry_runs.insert().values(
            run_id=record.run_id,
            finished_at=record.finished_at or utc_now(),
            store_identity=record.store_identity,
            engine=record.engine,
            source=record.source,
            start_revision=record.start_revision,
            target_revision=record.target_revision,
            revisions=json.dumps([{"id": rev, "sha256": digest} for rev, digest in record.revisions]),
            passed=record.passed,
            errors=record.errors,
            warnings=record.warnings,
        ))


def passing_dry_run(
    ledger: Ledger,
    *,
    store_identity: str | None,
    engine: str,
    start_revision: str | None,
    revisions: tuple[tuple[str, str], ...],
) -> DryRunRecord | None:
    """The newest passed dry run of this store and engine that ran exactly `revisions`
    (ids and file hashes) from `start_revision`, or None."""
    target = revisions[-1][0]
    query = (
        sa.select(migration_dry_runs)
        .where(
            migration_dry_runs.c.passed.is_(True),
            migration_dry_runs.c.engine == engine,
            migration_dry_runs.c.target_revision == target,
        )
        .order_by(migration_dry_runs.c.finished_at.desc())
    )
    if store_identity is not None:
        query = query.where(migration_dry_runs.c.store_identity == store_identity)
    with ledger.engine.connect() as connection:
        for row in connection.execute(query).mappings():
            record = _record(row)
            if record.start_revision == start_revision and record.revisions == revisions:
                return record
    return None


def _record(row) -> DryRunRecord:
    return DryRunRecord(
        run_id=row["run_id"],
        finished_at=row["finished_at"],
        store_identity=row["store_identity"],
        engine=row["engine"],
        source=row["source"],
        start_revision=row["start_revision"],
        target_revision=row["target_revision"],
        revisions=tuple((item["id"], item["sha256"]) for item in json.loads(row["revisions"])),
        passed=bool(row["passed"]),
        errors=row["errors"],
        warnings=row["warnings"],
    )
