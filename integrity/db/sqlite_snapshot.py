"""A dry run's two copies of a SQLite database (`integrity.migrate.snapshot` says what
they are): from one read transaction on the source, the backup API copies it to `before`
and `before` to `work`, page for page, and the source's fingerprints are taken in that
same transaction, so a game writing meanwhile can neither fail nor fool the proof.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

import sqlalchemy as sa

from game_core.db import POSTGRESQL, DatabaseTarget, parse_database_url
from integrity.db.claims import claimed_path
from integrity.db.connect import Database
from integrity.fingerprint import TableFingerprint, database_fingerprints
from integrity.migrate.beside import fingerprints_beside
from integrity.migrate.snapshot import (
    BACKUP, SNAPSHOT, Copies, SnapshotUnavailable, fingerprint_rows, prove_identical, restore_backup,
)
from integrity.phases import PhaseTimer
from integrity.progress import NO_PROGRESS, Reporter


def snapshot_source(snapshot: str) -> DatabaseTarget:
    """The SQLite file a `--snapshot` names; a PostgreSQL URL is refused."""
    source = parse_database_url(snapshot)
    if source.kind == POSTGRESQL:
        raise SnapshotUnavailable(f"--snapshot {source.masked} is a PostgreSQL database but the configured database is SQLite; give a SQLite file")
    return source


@contextmanager
def sqlite_copies(live, choice, scratch_dir: Path, settings, keep_copy: bool, restored_backup,
                  progress: Reporter = NO_PROGRESS) -> Iterator[Copies]:
    name = f"dry-run-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
    with ExitStack() as stack:
        try:
            folder = stack.enter_context(claimed_path(scratch_dir, name, keep=keep_copy))
            folder.mkdir()
        except OSError as exc:
            raise SnapshotUnavailable(
                f"cannot create the scratch folder {scratch_dir / name}: {exc.strerror}; "
                "set [state] dir to a writable directory with room for two copies"
            ) from None
        timer = PhaseTimer()
        backup_id = None
        if choice.kind == BACKUP:
            backup_id, source = restore_backup(stack, restored_backup, choice.backup_id, timer)
            described = f"backup {backup_id}"
        elif choice.kind == SNAPSHOT:
            source = snapshot_source(choice.snapshot)
            described = f"snapshot {source.display}"
        else:
            source = live
            described = f"live {live.display}"
        before, work = folder / "before.db", folder / "work.db"
        fingerprints = _copy_sqlite(source, before, work, settings, timer, progress)
        yield Copies(
            engine="sqlite", source=described, source_kind=choice.kind, backup_id=backup_id,
            source_target=None if choice.kind == BACKUP else source,
            before=parse_database_url(str(before)), work=parse_database_url(str(work)),
            fingerprints=fingerprints, phases=timer.done,
            kept=(str(before), str(work)) if keep_copy else (),
        )


def _copy_sqlite(source: DatabaseTarget, before: Path, work: Path, settings, timer: PhaseTimer,
                 progress: Reporter = NO_PROGRESS) -> dict[str, TableFingerprint]:
    with Database(source, settings).reader() as engine, engine.connect() as connection:
        # The first read starts the transaction that pins what every step below sees.
        connection.execute(sa.text("SELECT count(*) FROM sqlite_schema")).all()
        reader = connection.connection.driver_connection
        with timer.phase("snapshot"), progress.task("snapshot copy (one step)", unit="bytes"):
            backup_api_copy(reader, before)
        with timer.phase("work copy"), closing(sqlite3.connect(f"file:{before}?mode=ro", uri=True)) as frozen, \
                progress.task("work copy (one step)", unit="bytes"):
            backup_api_copy(frozen, work)
        with timer.phase("fingerprint source") as phase:
            work_prints = fingerprints_beside(parse_database_url(str(work)), settings)
            source_prints = database_fingerprints(connection, progress=progress, what="fingerprinting the source")
            phase.rows = fingerprint_rows(source_prints)
    with timer.phase("fingerprint copy (beside the source's)") as phase, \
            progress.task("fingerprinting the work copy (beside)", unit="rows"):
        work_prints = work_prints()
        phase.rows = fingerprint_rows(work_prints)
    prove_identical(source_prints, work_prints, f"its source {source.display}")
    return source_prints


def backup_api_copy(reader, destination: Path) -> None:
    writer = sqlite3.connect(str(destination))
    try:
        reader.backup(writer, pages=-1)
        # A plain rollback-journal file: nothing beside it to lose or to leave behind.
        writer.execute("PRAGMA journal_mode = DELETE")
    except sqlite3.OperationalError as exc:
        raise SnapshotUnavailable(f"cannot write the copy {destination}: {exc}; free space under [state] dir (two copies of the database are needed)") from None
    finally:
        writer.close()

