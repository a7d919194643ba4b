"""SQLite restores: a staging file in the state directory, then the online backup API
from the staging file INTO the live file.

Never a file rename over the live database: the game's open connections and the live
file's `-wal` and `-shm` would then belong to another database (PITFALLS.md). The backup
API writes every page of the destination in one write transaction of the destination,
through its own WAL: a kill before the commit frame leaves the old database, after it
the new one, never a mixture, and the game's connections simply see a new snapshot (and
a new schema cookie) at their next transaction.

Writers are held out from the safety backup to the commit (issue 14): a game write
committed after the safety backup's copy and before the swap would be in neither. So the
copy runs in two steps of one backup: the first takes the live file's write lock and
writes all pages but the last (uncommitted WAL frames, which readers ignore); then
`while_held` takes the safety backup through a read-only connection, which sees live as
last committed; the second step writes the last page and commits. The lock is the
backup's own write transaction, so nothing can slip in between. The game's writers wait
their busy timeout meanwhile, then fail with "database is locked": never told "saved".
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from game_core.errors import PreconditionFailed
from integrity.backups.archive import decompress_to
from integrity.backups.durable import fsync_directory
from integrity.backups.repository import Manifest, Repository
from integrity.crashpoints import crash_point
from integrity.errors import VerificationFailed

STAGING_PREFIX = "staging-"
# Besides the data file, SQLite may leave these beside it.
COMPANIONS = ("-wal", "-shm", "-journal")


class NotEnoughSpace(PreconditionFailed):
    """The staging copy, or the live database's journal during the swap, does not fit."""


class SwapFailed(VerificationFailed):
    """SQLite refused the swap; the transaction rolled back and live is unchanged."""


def staging_directory(state_dir: Path) -> Path:
    return state_dir / "restore"


def _live_key(live_path: Path) -> str:
    # Staging files of different databases sharing one state directory never collide,
    # and a restore cleans up only its own database's leftovers.
    return hashlib.sha256(str(live_path).encode()).hexdigest()[:12]


def leftovers(state_dir: Path, live_path: Path) -> list[Path]:
    """Staging files of earlier restores of this database that were killed mid-way."""
    found: list[Path] = []
    directory = staging_directory(state_dir)
    if directory.is_dir():
        prefix = f"{STAGING_PREFIX}{_live_key(live_path)}-"
        found += [p for p in directory.iterdir() if p.name.startswith(prefix) and p.name.endswith(".db")]
    # A restore onto a missing live file writes it beside the live path first.
    if live_path.parent.is_dir():
        found += [p for p in live_path.parent.glob(f".{live_path.name}.restoring-*") if "-" not in p.name.rsplit("restoring-", 1)[1]]
    return sorted(found)


def remove(path: Path) -> None:
    for candidate in (path, *(Path(f"{path}{suffix}") for suffix in COMPANIONS)):
        candidate.unlink(missing_ok=True)


def remove_leftovers(state_dir: Path, live_path: Path) -> list[str]:
    """Remove them; the caller holds the database lock, so no restore is using them."""
    found = leftovers(state_dir, live_path)
    for path in found:
        remove(path)
    return [str(path) for path in found]


def space_problems(state_dir: Path, live_path: Path, raw_size: int) -> list[str]:
    """What will not fit: the staging copy in the state directory, and the swap's journal
    (up to the database's size of WAL frames) beside the live file."""
    problems = []
    directory = staging_directory(state_dir)
    probe = directory if directory.exists() else _existing_parent(directory)
    free = shutil.disk_usage(probe).free
    if free < raw_size:
        problems.append(
            f"the staging copy needs {_mb(raw_size)} in {directory} but only {_mb(free)} is free; "
            "free space or set [state] dir to a larger disk"
        )
    live_dir = _existing_parent(live_path.parent)
    live_free = shutil.disk_usage(live_dir).free
    same_disk = os.stat(probe).st_dev == os.stat(live_dir).st_dev
    needed = raw_size * (2 if same_disk else 1)
    if not problems and live_free < needed:
        where = f"{live_dir} (staging copy and the swap's journal)" if same_disk else f"{live_dir} (the swap's journal)"
        problems.append(f"the restore needs {_mb(needed)} free in {where} but only {_mb(live_free)} is free; free space first")
    return problems


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def stage(repository: Repository, manifest: Manifest, *, state_dir: Path, live_path: Path) -> Path:
    """Decompress the backup (both hashes checked on the way) into a new staging file."""
    directory = staging_directory(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{STAGING_PREFIX}{_live_key(live_path)}-{manifest.id}-{secrets.token_hex(3)}.db"
    entry = manifest.files[0]
    try:
        with path.open("xb") as handle:
            decompress_to(repository.file_of(manifest.id, entry.name), entry, handle.write, backup_id=manifest.id)
    except OSError as exc:
        remove(path)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(directory).free
            raise NotEnoughSpace(
                f"the disk of {directory} filled up while staging backup {manifest.id} "
                f"(needs {_mb(entry.raw_size)}, {_mb(free)} free); the partial staging copy was removed and "
                "the live database was not touched; free space or set [state] dir to a larger disk"
            ) from None
        raise
    except BaseException:
        remove(path)
        raise
    return path


def swap(staging_path: Path, live_path: Path, *, busy_timeout_ms: int,
         while_held: Callable[[], None] | None = None) -> float:
    """Write the staging database into the live file in one transaction of the live file.

    `while_held` runs once the live file's write lock is ours and before the commit (the
    restore takes its safety backup there); if it raises, the swap rolls back and live is
    as it was. Returns the seconds from `while_held` to the commit, which the game's
    writers waited (0 when live had to be created).
    """
    if not live_path.exists():
        if while_held is not None:
            while_held()  # nobody writes a file that does not exist
        _create_live(staging_path, live_path)
        return 0.0
    source = sqlite3.connect(f"file:{quote(str(staging_path))}?mode=ro", uri=True)
    try:
        pages = source.execute("PRAGMA page_count").fetchone()[0]
        if pages < 2:
            # One page would be copied and committed in the first step, before
            # `while_held` could run; no game database is that small.
            raise SwapFailed(f"the staging copy {staging_path} holds {pages} page(s), not a game database; "
                             "the live database is as it was")
        # The game's own settings: wait for its write transactions as long as it waits for ours.
        live = sqlite3.connect(str(live_path), timeout=busy_timeout_ms / 1000, isolation_level=None)
        try:
            live.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            # In WAL mode the safety backup's reader never waits for our uncommitted pages;
            # with a rollback journal it would once they spill into the file. The game's
            # connect hook sets WAL anyway.
            live.execute("PRAGMA journal_mode = WAL")
            hold = _HoldThenCommit(while_held)
            source.backup(live, pages=pages - 1, progress=hold)
            return time.perf_counter() - hold.since
        except _Busy:
            raise _busy_error(live_path) from None
        except sqlite3.OperationalError as exc:
            raise _swap_error(exc, live_path) from None
        finally:
            live.close()
    finally:
        source.close()


class _Busy(Exception):
    """The live file's write lock stayed taken for longer than busy_timeout."""


class _HoldThenCommit:
    """The backup's progress callback. After the first step (the write lock held, all pages
    but the last written, nothing committed) it runs `while_held`, once. Whatever it
    raises makes the backup roll back: CPython finishes the backup without its commit."""

    def __init__(self, while_held: Callable[[], None] | None):
        self.while_held = while_held
        self.held = False
        self.since = 0.0

    def __call__(self, status: int, remaining: int, total: int) -> None:
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            # The connection's busy handler has already waited busy_timeout; CPython
            # would sleep and retry for ever.
            raise _Busy()
        if self.held:
            return
        self.held = True
        self.since = time.perf_counter()
        if status == sqlite3.SQLITE_DONE:
            raise AssertionError("the swap committed in its first step, before the safety backup")
        if self.while_held is not None:
            self.while_held()
        crash_point("restore:swapping")


def _create_live(staging_path: Path, live_path: Path) -> None:
    """No live file at all (deleted, or a new machine): nobody can have it open, so the
    copy is written beside it and renamed into place, which is atomic."""
    live_path.parent.mkdir(parents=True, exist_ok=True)
    temp = live_path.with_name(f".{live_path.name}.restoring-{secrets.token_hex(3)}")
    try:
        source = sqlite3.connect(f"file:{quote(str(staging_path))}?mode=ro", uri=True)
        try:
            target = sqlite3.connect(str(temp))
            try:
                source.backup(target, pages=-1)
                target.execute("PRAGMA journal_mode = WAL")  # what the game's connect hook uses
            finally:
                target.close()
        finally:
            source.close()
        with temp.open("rb") as handle:
            os.fsync(handle.fileno())
        crash_point("restore:swapping")
        os.rename(temp, live_path)
        fsync_directory(live_path.parent)
    finally:
        remove(temp)


def _swap_error(exc: sqlite3.OperationalError, live_path: Path) -> Exception:
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL or "full" in str(exc):
        return NotEnoughSpace(
            f"the disk of {live_path.parent} filled up during the swap; SQLite rolled the swap back and the live "
            "database is as it was; free space and run the restore again"
        )
    if code == sqlite3.SQLITE_BUSY or "locked" in str(exc) or "busy" in str(exc):
        return _busy_error(live_path)
    return SwapFailed(f"SQLite refused to write the backup into {live_path}: {exc}; the live database is as it was")


def _busy_error(live_path: Path) -> PreconditionFailed:
    return PreconditionFailed(
        f"the live database {live_path} stayed locked by another writer for longer than busy_timeout; "
        "nothing was changed; stop the writer or raise [database] busy_timeout_ms and run again"
    )
