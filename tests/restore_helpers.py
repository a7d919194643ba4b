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
    "restore:staged",
    "restore:staging-verified",
    # SQLite: inside the swap's write transaction (writers held out), all pages but the
    # last written and not committed; PostgreSQL: just before the rename transaction.
    "restore:safety-backup-taken",
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
    """The databases a restore keeps or a killed one leaves (conftest drops only live).
    Dropped by the session's database supply while the next tests run (a DROP DATABASE
    waits for a checkpoint; the supply's drops are checked when the session ends), or at
    once without one."""
    from conftest import DatabaseSupply, drop_pg_database

    supply = DatabaseSupply.current
    for name in pg_leftover_databases(admin, live_name):
        if "_restore_" in name:
            if supply is not None and supply.serves(admin):
                supply.drop_later(name)
            else:
                drop_pg_database(admin, name)


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


# ---------------------------------------------------------------- a writer that logs every saved write


HAMMER_PLAYER = "hammer"


@dataclass
class Hammer:
    """What the hammering writer was told: the started_at (ISO, UTC) of every result the
    store said was saved, and every failure it got instead."""

    process: subprocess.Popen
    log: Path

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    @property
    def saved(self) -> list[str]:
        return [line.split()[2] for line in self.lines() if line.startswith("saved ")]

    @property
    def failures(self) -> list[str]:
        return [line.removeprefix("failed ") for line in self.lines() if line.startswith("failed ")]


@contextmanager
def hammering_writer(url: str, tmp_path: Path, *, busy_timeout_ms: int, min_saved: int = 3) -> Iterator[Hammer]:
    """A subprocess recording results for HAMMER_PLAYER (who must exist) through the game's
    store as fast as it can, with the game's connection settings (`busy_timeout_ms`; on
    PostgreSQL also its lock_timeout). After each call it logs `saved ID STARTED_AT` when
    the store returned, or `failed REASON` when it raised (then it reconnects, as a game
    with a pool would). Yields once `min_saved` are logged; stopped with SIGTERM."""
    import os
    import signal
    import sys
    import time

    log = tmp_path / f"hammer-{time.monotonic_ns()}.log"
    env = dict(os.environ)
    project = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(project), os.environ.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "hammer", url, str(log), str(busy_timeout_ms)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    handle = Hammer(process, log)
    try:
        deadline = time.monotonic() + 30
        while len(handle.saved) < min_saved:
            if process.poll() is not None:
                raise AssertionError(f"the writer died: {process.stderr.read()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the writer saved nothing within 30 s: {handle.lines()[-5:]}")
            time.sleep(0.01)
        yield handle
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err


def saved_started_at(url: str, username: str = HAMMER_PLAYER) -> set[str]:
    """The started_at (ISO, UTC) of every result of `username` in the database."""
    import sqlalchemy as sa

    from game_core.db import create_engine
    from integrity.backups.statistics import _iso_time

    engine = create_engine(url, read_only=True)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text(
                "SELECT r.started_at FROM results AS r JOIN players AS p ON p.id = r.player_id WHERE p.username = :u"
            ), {"u": username}).scalars()
            return {_iso_time(value) for value in rows}
    finally:
        engine.dispose()


def _hammer_main(url: str, log_path: str, busy_timeout_ms: int) -> None:
    import signal
    import time
    from datetime import datetime, timedelta, timezone

    import sqlalchemy as sa

    from game_core.db import ConnectionSettings, create_engine
    from game_core.errors import Failure
    from game_core.store import Store, TestOutcome
    from integrity.backups.statistics import _iso_time

    stop = False

    def on_term(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    settings = ConnectionSettings(busy_timeout_ms=busy_timeout_ms, lock_timeout_ms=busy_timeout_ms)
    engine = None
    last = datetime.now(timezone.utc)
    with open(log_path, "a", buffering=1) as log:
        while not stop:
            # Strictly increasing, so every result has its own natural key.
            started_at = max(datetime.now(timezone.utc), last + timedelta(microseconds=1))
            last = started_at
            outcome = TestOutcome(
                mode="time", mode_param=30, started_at=started_at, duration_ms=30_000,
                correct_word_chars=200, correct_spaces=40, correct_chars=205, incorrect_chars=3, extra_chars=0,
                missed_chars=1, correct_keystrokes=245, incorrect_keystrokes=3,
            )
            try:
                if engine is None:
                    engine = create_engine(url, settings=settings)
                recorded = Store(engine).record_result(HAMMER_PLAYER, outcome)
            except (sa.exc.DBAPIError, Failure) as exc:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
                log.write(f"failed {type(exc).__name__}: {reason[0] if reason else ''}\n")
                if engine is not None:
                    engine.dispose()
                engine = None
                time.sleep(0.01)  # a reconnecting game backs off; the server is not flooded
                continue
            log.write(f"saved {recorded.result.id} {_iso_time(recorded.result.started_at)}\n")
            # A pause between tests, as players between games: without it each restore's
            # salvage would re-apply thousands of rows and the test would crawl. 20 ms
            # still puts dozens of writes into each window a restore must account for (the
            # safety backup to the swap's commit: 0.2-1 s); at 5 ms the writer itself was
            # the file's largest CPU cost (25 of 63 s in a whole suite run), and the rows
            # every salvage and every next backup carry grew with it.
            time.sleep(0.02)
    if engine is not None:
        engine.dispose()


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 5 and sys.argv[1] == "hammer":
        _hammer_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit("usage: restore_helpers.py hammer URL LOG BUSY_TIMEOUT_MS")


def filled_restore_env(request, tmp_path: Path, filled_copy, *, players: int = 10, results_per_player: int = 20):
    """Consistent game data on `request.param`'s engine, a copy of a template filled once
    per session (conftest's filled_copy), and an empty repository; on PostgreSQL the
    databases a restore keeps (and its staging leftovers) are dropped after the test."""
    from backup_helpers import BackupEnv

    url = filled_copy(request.param, players=players, results_per_player=results_per_player)
    drop_restore_leftovers_after(request, url)
    return BackupEnv(tmp_path, url)


def drop_restore_leftovers_after(request, database_url: str) -> None:
    """On PostgreSQL, drop the databases a restore keeps (the old live, staging) after the
    test: left on the shared server they outlive the run."""
    import sqlalchemy as sa

    if database_url.startswith("postgresql"):
        admin = request.getfixturevalue("pg_admin")
        request.addfinalizer(lambda: drop_restore_leftovers(admin, sa.make_url(database_url).database))
