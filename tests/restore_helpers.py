"""Shared helpers of the restore and salvage tests (test_restore*.py, test_salvage.py):
content digests of whole databases, the incident's damage, PostgreSQL databases a restore
leaves behind, and a game writer that survives its sessions being ended (backup_helpers'
writer in its `resilient-writer` mode: a failed write, from a session ended by a
restore's swap or a database being renamed, is counted and retried, as a game with a
reconnecting pool would).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from backup_helpers import writer_process

# Every phase boundary of `integrity restore`, in order; "swapped" and later ones are
# after the commit of the swap.
RESTORE_CRASH_PHASES = (
    "restore:planned",
    "restore:locked",
    "restore:verified",
    "restore:safety-backup-taken",
    "restore:staged",
    "restore:staging-verified",
    "restore:swapping",
    "restore:swapped",
    "restore:checked",
)
AFTER_SWAP = ("restore:swapped", "restore:checked")


def content(url: str) -> dict[str, str]:
    """{table: digest of every row in primary-key order} of every table present."""
    from game_core.db import create_engine
    from integrity.fingerprint import database_fingerprints

    engine = create_engine(url, read_only=True)
    try:
        with engine.connect() as connection:
            return {name: f"{fp.rows}:{fp.digest}" for name, fp in database_fingerprints(connection).items()}
    finally:
        engine.dispose()


def sqlite_opens_cleanly(path: Path) -> None:
    """The file is a whole database: integrity_check and foreign_key_check pass."""
    import sqlite3

    connection = sqlite3.connect(str(path))
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        connection.close()


def damage_like_the_incident(url: str) -> None:
    """Levels reset for 80% of players, every wpm rewritten in another unit (characters
    per minute), and a table dropped."""
    from backup_helpers import execute

    execute(
        url,
        "UPDATE progress SET level = 1 WHERE player_id % 5 <> 0",
        "UPDATE results SET wpm = wpm * 5",
        "DROP TABLE personal_bests",
    )


def pg_leftover_databases(admin, live_name: str) -> list[str]:
    import sqlalchemy as sa

    with admin.connect() as connection:
        return list(connection.execute(
            sa.text("SELECT datname FROM pg_database WHERE starts_with(datname, :p) AND datname <> :n ORDER BY 1"),
            {"p": live_name + "_", "n": live_name},
        ).scalars())


def drop_restore_leftovers(admin, live_name: str) -> None:
    """The databases a restore keeps or a killed one leaves (conftest drops only live)."""
    import sqlalchemy as sa

    for name in pg_leftover_databases(admin, live_name):
        if "_restore_" in name:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# ---------------------------------------------------------------- a writer that reconnects


@dataclass
class ResilientWriter:
    process: subprocess.Popen
    committed: int | None = None
    failed: int | None = None


@contextmanager
def resilient_writer(url: str, tmp_path: Path, *, min_commits: int = 3) -> Iterator[ResilientWriter]:
    with writer_process(url, tmp_path, min_commits=min_commits, mode="resilient-writer") as process:
        handle = ResilientWriter(process)
        yield handle
    committed, failed = process.output.split()[-2:]
    handle.committed, handle.failed = int(committed), int(failed)
