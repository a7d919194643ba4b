"""`integrity migrate apply`: upgrade the live database, only as rehearsed.

Only revisions whose dry run passed for this store, from this database's revision, with
the same revision files (SHA-256) are applied; then, after consent, a backup of live is
taken and pinned (the way back: `integrity restore ID`), the upgrade runs in ONE
transaction under the database's writer lock (a failure leaves live at its old
revision), and the audits run on live. Exit 0 clean, 3 when the audits fail afterwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

from game_core.errors import ExitCode, PreconditionFailed
from integrity.errors import VerificationFailed


class NoPassingDryRun(PreconditionFailed):
    """No dry run passed for exactly these revisions on this store."""


@dataclass(frozen=True)
class ApplyReport:
    database: str
    start_revision: str | None
    target_revision: str | None
    applied: tuple[str, ...] = ()
    backup_id: str | None = None
    pinned_until: str | None = None
    dry_run_at: str | None = None
    audit_ok: bool = True
    audit_errors: int = 0  # error rules of the data that fail on live after the upgrade
    consent: str | None = None
    seconds: float = 0.0
    note: str | None = None

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.audit_ok else ExitCode.PROBLEMS_FOUND

    def summary(self) -> dict:
        return {"applied": list(self.applied), "target_revision": self.target_revision, "backup_id": self.backup_id,
                "audit_ok": self.audit_ok}


def apply_migrations(settings, ledger, *, alembic_config: Path | None = None, to: str | None = None, consent=None,
                     command: str = "migrate apply", lock_wait: float = 0) -> ApplyReport:
    from game_core.schema_state import current_revision
    from integrity.backups.statistics import store_identity
    from integrity.db.connect import Database
    from integrity.guarded import require_game_revision
    from integrity.migrate.project import MigrationProject
    from integrity.migrate.records import passing_dry_run
    from integrity.recovery.consent import database_name

    started = time.perf_counter()
    project = MigrationProject.load(alembic_config)
    project.check_graph()
    database = Database.of(settings)
    live = database.target
    with database.reader() as engine, engine.connect() as connection:
        start, identity = current_revision(connection), store_identity(connection)
        if start is None:  # empty (init's job) or not the game's database: exit 4, named
            require_game_revision(connection, live.display)
    pending = project.pending(start, to)
    if not pending:
        return ApplyReport(live.display, start, start, note=f"nothing to apply: {live.display} is at {start or 'base'}")
    target = pending[-1].id
    hashes = tuple((r.id, r.sha256) for r in pending)
    record = passing_dry_run(ledger, store_identity=identity, engine=live.kind, start_revision=start, revisions=hashes)
    if record is None:
        raise NoPassingDryRun(
            f"no passing dry run of {', '.join(r.id for r in pending)} from {start or 'base'} on this store with these "
            f"revision files; run `integrity migrate dry-run --to {target}` first (editing a revision after its dry "
            "run needs a new one)"
        )
    if consent is None:
        raise PreconditionFailed("migrate apply needs consent; pass --yes")
    how = consent.confirm(
        f"upgrade {live.display} from {start or 'base'} to {target} ({len(pending)} revision(s))",
        expected=database_name(live),
    )
    backup_id, until = _pinned_backup(settings, target, command)
    _upgrade(project, settings, database, start, target, command=command, lock_wait=lock_wait)
    errors = _audit_errors(database)
    return ApplyReport(
        database=live.display, start_revision=start, target_revision=target, applied=tuple(r.id for r in pending),
        backup_id=backup_id, pinned_until=until, dry_run_at=str(record.finished_at), audit_ok=errors == 0,
        audit_errors=errors, consent=how, seconds=round(time.perf_counter() - started, 3),
    )


def _pinned_backup(settings, target: str, command: str) -> tuple[str, str]:
    from integrity.backups.catalog import pin
    from integrity.backups.create import create_backup
    from integrity.backups.repository import Repository

    created = create_backup(settings, label=f"before migrate to {target}", command=command)
    until = datetime.now(timezone.utc) + timedelta(hours=settings.restore.safety_pin_hours)
    change = pin(Repository.of(settings), created.manifest.id, until=until)
    return created.manifest.id, change.until


def _upgrade(project, settings, database, start, target: str, *, command: str, lock_wait: float) -> None:
    from alembic import command as alembic_command

    from game_core.schema_state import current_revision
    from integrity.db.connect import Write
    from integrity.db.locks import database_lock
    from integrity.db.sql import error_reason

    live = database.target
    with database_lock(live, state_dir=settings.state.dir, command=command, wait_seconds=lock_wait):
        with database.writer(Write.MIGRATE_APPLY) as engine:
            try:
                with engine.begin() as connection:  # one transaction: all revisions or none
                    now_at = current_revision(connection)
                    if now_at != start:
                        raise PreconditionFailed(
                            f"{live.display} moved from {start or 'base'} to {now_at} since the check; run the dry run again"
                        )
                    alembic_command.upgrade(project.config(connection), target)
                    if current_revision(connection) != target:
                        raise VerificationFailed(
                            f"after the upgrade {live.display} is not at {target}: env.py ignores the handed connection; "
                            "rolled back, nothing was changed"
                        )
            except sa.exc.DBAPIError as exc:
                raise VerificationFailed(
                    f"the upgrade failed and was rolled back, live is still at {start or 'base'}: {error_reason(exc)}"
                ) from None


def _audit_errors(database) -> int:
    from integrity.migrate.dry_run import data_audit_failures

    with database.reader() as engine, engine.connect() as connection:
        return sum(1 for failing in data_audit_failures(connection).values() if failing)
