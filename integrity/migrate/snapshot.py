"""The two copies a dry run works on: `before`, never migrated, and `work`, migrated.

Both come from one consistent snapshot of the source, and `work` is proven identical to
the source (per-table fingerprints) before anything runs on it (DESIGN.md invariant 8).
The source is only ever read; both copies are removed afterwards unless `--keep-copy`,
and both are claimed while they exist, so that a killed run's are removed by the next
(`integrity.db.claims`).

- SQLite (live database or a snapshot file): one read transaction on the source pins
  its state; the backup API copies it twice from that transaction (source -> before ->
  work, page for page) and the source's fingerprints are taken inside the same
  transaction, so a game writing meanwhile cannot make the proof fail or lie.
- SQLite from a backup: the backup is restored into scratch (hashes checked), which is
  then the source of the two copies.
- PostgreSQL from a backup (the default: the newest deep-verified one): pg_restore into
  a scratch database (`before`), then `CREATE DATABASE work TEMPLATE before`, which is
  possible because nobody else knows that database: never a template of live.
- PostgreSQL live: pg_dump in an exported REPEATABLE READ snapshot of live, piped into
  pg_restore; live's fingerprints are taken in that same snapshot.
- PostgreSQL snapshot database: a database nobody uses; it serves as `before` (read only)
  and is the template of `work`.

What the copies are and how they are proven lives here; the engines make them
(`DatabaseEngine.snapshot_copies`: `integrity.db.sqlite_snapshot`,
`integrity.db.postgres_snapshot`), so this package never opens a database to copy it.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

from game_core.db import DatabaseTarget
from game_core.errors import PreconditionFailed
from integrity.errors import VerificationFailed
from integrity.fingerprint import TableFingerprint
from integrity.phases import Phase, PhaseTimer

LIVE, BACKUP, SNAPSHOT = "live", "backup", "snapshot"


class SnapshotUnavailable(PreconditionFailed):
    """The copies could not be made (rights, a missing snapshot, a database in use)."""


class CopyDiffers(VerificationFailed):
    """The work copy's fingerprints differ from its source's: nothing may run on it."""


@dataclass(frozen=True)
class SourceChoice:
    kind: str  # live | backup | snapshot
    backup_id: str | None = None  # an id or "latest" (the newest deep-verified backup)
    snapshot: str | None = None  # a SQLite file, or a PostgreSQL database name or URL


@dataclass
class Copies:
    engine: str
    source: str  # what was copied, for humans (masked)
    source_kind: str
    backup_id: str | None
    source_target: DatabaseTarget | None  # the database the run must never write (None for a backup)
    before: DatabaseTarget
    work: DatabaseTarget
    fingerprints: dict[str, TableFingerprint]  # the source's = the work copy's before the run
    phases: tuple[Phase, ...] = ()  # making them, timed (the dry run reports them among its own)
    kept: tuple[str, ...] = ()  # where the copies stay with --keep-copy

    @property
    def rows(self) -> int:
        return fingerprint_rows(self.fingerprints)


def fingerprint_rows(fingerprints: dict[str, TableFingerprint]) -> int:
    return sum(f.rows for f in fingerprints.values())


def prove_identical(source: dict[str, TableFingerprint], copy: dict[str, TableFingerprint], what: str) -> None:
    differing = sorted(
        name for name in set(source) | set(copy)
        if name not in source or name not in copy or source[name].digest != copy[name].digest
    )
    if differing:
        raise CopyDiffers(
            f"the work copy differs from {what} in {', '.join(differing)} before anything ran; "
            "the copy is not trustworthy, so the dry run stops (check the disk and run it again)"
        )


def restore_backup(stack: ExitStack, restored_backup, backup_id: str, timer: PhaseTimer) -> tuple[str, DatabaseTarget]:
    """The backup restored into scratch until `stack` closes, timed as a phase; its id
    (`latest` resolved) and the scratch copy."""
    with timer.phase("restore backup"):
        resolved_id, restored = stack.enter_context(restored_backup(backup_id))
    return resolved_id, restored.target


