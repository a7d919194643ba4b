"""Scratch copies claimed for their whole life, so that a killed run's are reclaimed.

DESIGN.md says scratch copies are always removed, and every user removes its own in a
`finally`. A SIGKILL, the OOM killer or a lost host skips that `finally`: without more, a
restored copy of the database (a gigabyte on the benchmark) would stay in the state
directory, or as a database on the production server, for good. So each scratch copy is
claimed by a lock that dies with its holder, however it dies, and every run that makes a
scratch copy first removes the copies whose claim is free: their run is gone.

- A file or folder in the state directory's scratch: `flock` on `NAME.claim` beside it.
  The claim is taken before the copy is made and dropped after the copy is removed, so
  a copy that exists while its claim file can be locked belongs to a dead run. A copy
  without a claim file is left alone: it was kept on purpose (`--keep-copy`) or made
  before claims existed.
- A PostgreSQL scratch database: a session advisory lock on its name, held in the
  maintenance database by the connection that creates and drops it. The lock is taken
  before CREATE DATABASE, so a sweep never sees a database whose claim is not yet held.
  A database kept on purpose carries a comment that says so and is left alone. An orphan
  someone is connected to (an engineer looking into it) is left for a later sweep.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

CLAIM_SUFFIX = ".claim"
SCRATCH_PREFIX = "integrity_scratch_"  # every scratch database's name starts so
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")

# The first key of the two-key advisory locks that claim scratch databases; the second
# is hashtext(name). A collision only makes a sweep leave an orphan for a later one.
CLAIM_LOCK_CLASS = 0x5C7A
KEPT_COMMENT = "kept by integrity"


# ---------------------------------------------------------------- files in the state directory


@contextmanager
def claimed_path(scratch_dir: Path, name: str, *, keep: bool = False) -> Iterator[Path]:
    """`scratch_dir / name`, claimed while in use and removed on the way out (a file with
    its SQLite companions, or a folder), unless `keep`: then it stays, unclaimed, for good.
    Removes dead runs' copies first."""
    scratch_dir.mkdir(parents=True, exist_ok=True)
    reclaim_files(scratch_dir)
    path = scratch_dir / name
    claim = _claim_path(path)
    descriptor = os.open(claim, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            if not keep:
                _remove_copy(path)
            claim.unlink(missing_ok=True)  # after the copy: a kill in between leaves a claim alone, never a copy unclaimed
    finally:
        os.close(descriptor)


def reclaim_files(scratch_dir: Path) -> list[str]:
    """Remove the copies in `scratch_dir` whose claim is free; return their names."""
    reclaimed = []
    for entry in sorted(scratch_dir.iterdir()) if scratch_dir.is_dir() else []:
        if entry.name.endswith(CLAIM_SUFFIX) or entry.name.endswith(SQLITE_COMPANIONS):
            continue
        claim = _claim_path(entry)
        try:
            descriptor = os.open(claim, os.O_RDWR)
        except OSError:
            continue  # no claim: kept on purpose or older than claims; or another user's
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _remove_copy(entry)
            claim.unlink(missing_ok=True)
            reclaimed.append(entry.name)
        except BlockingIOError:
            continue  # its run is alive
        except OSError:
            continue  # not ours to remove: a sweep must never fail the run that makes it
        finally:
            os.close(descriptor)
    return reclaimed


def _claim_path(path: Path) -> Path:
    return path.with_name(path.name + CLAIM_SUFFIX)


def _remove_copy(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        return
    for candidate in (path, *(Path(f"{path}{suffix}") for suffix in SQLITE_COMPANIONS)):
        candidate.unlink(missing_ok=True)


# ---------------------------------------------------------------- PostgreSQL scratch databases


class ScratchDatabases:
    """Scratch databases made through one maintenance connection, which claims each of
    them from before it exists until it is dropped (or kept)."""

    def __init__(self, connection: sa.Connection) -> None:
        self._connection = connection
        self._made: list[tuple[str, bool]] = []  # (name, keep), in creation order

    def create(self, name: str, *, template: str | None = None, keep: bool = False) -> None:
        """CREATE DATABASE `name`, claimed first; errors are the server's, unchanged."""
        self._connection.execute(sa.text("SELECT pg_advisory_lock(:c, hashtext(:n))"), {"c": CLAIM_LOCK_CLASS, "n": name})
        clause = f' TEMPLATE "{template}"' if template else ""
        try:
            self._connection.execute(sa.text(f'CREATE DATABASE "{name}"{clause}'))
        except BaseException:
            self._release(name)
            raise
        self._made.append((name, keep))

    def close(self) -> None:
        """Drop every database made here but the kept ones, which get the comment that
        keeps sweeps away; each claim is released once its database is settled."""
        first_error: BaseException | None = None
        for name, keep in reversed(self._made):
            try:
                if keep:
                    comment = f"{KEPT_COMMENT}: drop it when done"
                    self._connection.execute(sa.text(f"COMMENT ON DATABASE \"{name}\" IS '{comment}'"))
                else:
                    self._connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                self._release(name)
            except sa.exc.DBAPIError as exc:
                first_error = first_error or exc
        self._made.clear()
        if first_error is not None:
            raise first_error

    def _release(self, name: str) -> None:
        self._connection.execute(sa.text("SELECT pg_advisory_unlock(:c, hashtext(:n))"), {"c": CLAIM_LOCK_CLASS, "n": name})


@contextmanager
def scratch_databases(admin: sa.Engine) -> Iterator[ScratchDatabases]:
    """Scratch databases on `admin`'s server (an AUTOCOMMIT engine on the maintenance
    database), dropped on the way out. Removes dead runs' scratch databases first."""
    with admin.connect() as connection:
        reclaim_databases(connection)
        databases = ScratchDatabases(connection)
        try:
            yield databases
        finally:
            databases.close()


def reclaim_databases(connection: sa.Connection) -> list[str]:
    """Drop the scratch databases whose claim is free and that are neither kept nor in
    use; return their names. Must run on a connection that holds no claims itself:
    advisory locks are re-entrant within a session."""
    names = connection.execute(sa.text(
        "SELECT datname FROM pg_database WHERE starts_with(datname, :prefix) "
        "AND NOT starts_with(coalesce(shobj_description(oid, 'pg_database'), ''), :kept) ORDER BY datname"
    ), {"prefix": SCRATCH_PREFIX, "kept": KEPT_COMMENT}).scalars().all()
    reclaimed = []
    for name in names:
        claimed = {"c": CLAIM_LOCK_CLASS, "n": name}
        if not connection.execute(sa.text("SELECT pg_try_advisory_lock(:c, hashtext(:n))"), claimed).scalar():
            continue  # its run is alive
        try:
            # No FORCE: an orphan someone is looking into, or one this role may not drop,
            # is left for a later sweep.
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
            reclaimed.append(name)
        except sa.exc.DBAPIError:
            pass
        finally:
            connection.execute(sa.text("SELECT pg_advisory_unlock(:c, hashtext(:n))"), claimed)
    return reclaimed
