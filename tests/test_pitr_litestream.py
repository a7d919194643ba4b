"""Litestream (the real 0.5.17 binary) replicating a real game database while the game
writes: the window read back, a restore to a time between two writes, the window's edges,
and a killed replicator restarted with its death reported.

Nothing sleeps a fixed time and assumes: every wait is on a condition, with a deadline.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from game_core.db import create_engine
from game_core.errors import PreconditionFailed
from game_core.store import Store
from integrity.pitr import engine_for
from integrity.pitr.litestream import LISTING_STEP, LitestreamEngine
from integrity.pitr.supervise import Supervisor
from integrity.settings import resolve_settings

DEADLINE_SECONDS = 30.0


def wait_for(condition, *, what: str, deadline: float = DEADLINE_SECONDS):
    """The first truthy value of `condition()`, polled until the deadline."""
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline}s waiting for {what}")
        time.sleep(0.1)


def pitr_settings(tmp_path: Path, database: Path, **extra: str):
    environ = {
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "INTEGRITY_DATABASE_URL": f"sqlite:///{database}",
        "INTEGRITY_PITR__ENABLED": "true",
        "INTEGRITY_PITR__REPOSITORY": str(tmp_path / "replica"),
        "INTEGRITY_STATE__DIR": str(tmp_path / "state"),
        **{f"INTEGRITY_PITR__{key.upper()}": value for key, value in extra.items()},
    }
    return resolve_settings(environ=environ, cwd=tmp_path)


class Writer:
    """The game writing players through its store every 0.1 s, in a thread, so that
    Litestream ships a new file every second (as a live game makes it do)."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        self.store = Store(self.engine)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.count = 0

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            self.count += 1
            self.store.create_player(f"background_{self.count}")

    def mark(self, username: str) -> datetime:
        """Write one marker player; returns a moment after its commit."""
        self.store.create_player(username)
        return datetime.now(UTC)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.engine.dispose()


@pytest.fixture
def replicating(tmp_path, sqlite_path):
    """(engine, supervisor, deaths) with Litestream replicating the test's game database."""
    settings = pitr_settings(tmp_path, sqlite_path)
    engine = engine_for(settings)
    assert isinstance(engine, LitestreamEngine)
    engine.write_config()
    deaths, pids = [], []
    supervisor = Supervisor(engine.replicator(), log_path=tmp_path / "state" / "pitr" / "litestream.log",
                            on_start=pids.append, on_death=deaths.append, restart_delay=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield engine, supervisor, deaths, pids
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the supervisor did not stop its child"


def restorable_moment_after(engine: LitestreamEngine, moment: datetime) -> datetime:
    """A moment inside the window at which every commit before `moment` is restorable.

    The listing gives whole seconds, and a file stamped after `moment` may have read the WAL
    before it. The second file stamped after `moment` began its read after the first was
    written, so it holds every earlier commit; a restore takes files made strictly before
    its time, so a listed second at least one second later than that file covers it."""

    def ready():
        level0 = sorted((f for f in engine.ltx_files() if f.level == 0), key=lambda f: f.max_txid)
        after = [f for f in level0 if f.created > moment]
        if len(after) < 2:
            return None
        later = [f.created for f in level0 if f.created >= after[1].created + LISTING_STEP]
        return later[0] if later else None

    return wait_for(ready, what=f"Litestream to ship the commits before {moment:%H:%M:%S.%f}")


def usernames(path: Path) -> set[str]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {name for (name,) in connection.execute("SELECT username FROM players")}
    finally:
        connection.close()


def test_restore_to_a_time_between_two_writes_has_the_first_and_not_the_second(replicating, sqlite_url, tmp_path):
    engine, _, deaths, _ = replicating
    with Writer(sqlite_url) as writer:
        first = writer.mark("written_before")
        between = restorable_moment_after(engine, first)
        second = writer.mark("written_after")  # after `between`: its commit is later
        assert second > between
        later = restorable_moment_after(engine, second)
    window = engine.window()
    assert window.contains(between) and window.contains(later)
    with engine.restored_at(between, tmp_path / "scratch") as copy:
        at_between = usernames(copy.target.sqlite_path)
        assert "Litestream restore to" in copy.description
    with engine.restored_at(later, tmp_path / "scratch") as copy:
        at_later = usernames(copy.target.sqlite_path)
        restored_path = copy.target.sqlite_path
    assert "written_before" in at_between
    assert "written_after" not in at_between
    # The same check on a restore after the second write sees it: a restore that ignored
    # the time (or restored nothing) fails one of the two.
    assert {"written_before", "written_after"} <= at_later
    assert not restored_path.exists() and not restored_path.parent.exists()  # the scratch copy is removed
    assert deaths == []


def test_the_window_is_read_back_from_litestream_and_times_outside_it_are_refused(replicating, sqlite_url, tmp_path):
    engine, _, _, _ = replicating
    with Writer(sqlite_url) as writer:
        restorable_moment_after(engine, writer.mark("marker"))
    window = engine.window()
    assert window.oldest is not None and window.newest is not None and window.oldest <= window.newest
    assert window.errors == ()
    files = engine.ltx_files()
    # Listed at S, a file was made in [S, S + 1 s): the newest restorable point is one step
    # past the newest listed second, so that a restore to it holds the newest file.
    assert window.newest == max(f.created for f in files) + LISTING_STEP
    for outside in (window.oldest - timedelta(hours=1), window.newest + timedelta(hours=1)):
        with pytest.raises(PreconditionFailed) as caught:
            with engine.restored_at(outside, tmp_path / "scratch"):
                pass
        message = str(caught.value)
        assert "outside the point-in-time window" in message and "\n" not in message
        assert "integrity pitr status" in message
    # The edge itself restores (the refusal above is about the window, not about restoring).
    with engine.restored_at(window.oldest, tmp_path / "scratch") as copy:
        assert copy.target.sqlite_path.is_file()
    assert list((tmp_path / "scratch").glob("pitr-*")) == []


def test_the_last_write_shipped_is_restorable_at_the_newest_point(replicating, sqlite_url, tmp_path):
    """The newest point is what `pitr last-clean` probes and `pitr status` calls the recovery
    point: a restore there must hold the newest file. At the newest file's listed second it
    did not (Litestream takes files made strictly before the time, and the listing truncates
    to the second), so when the damage was the last write, a search for the last clean
    moment called the newest point clean. Here a marker is the last write: a restore at the
    newest point must come to hold it once it is shipped (it never did)."""
    engine, _, _, _ = replicating
    with Writer(sqlite_url) as writer:
        restorable_moment_after(engine, writer.mark("warm_up"))
    last = create_engine(sqlite_url)  # the writer has stopped: nothing is written after this
    try:
        Store(last).create_player("the_last_write")
    finally:
        last.dispose()

    def restored_with_it() -> bool:
        window = engine.window()
        if window.newest is None:
            return False
        with engine.restored_at(window.newest, tmp_path / "scratch") as copy:
            return "the_last_write" in usernames(copy.target.sqlite_path)

    wait_for(restored_with_it, what="a restore at the newest point to hold the last write", deadline=15)


def test_a_killed_litestream_is_restarted_and_its_death_reported(replicating, sqlite_url):
    engine, supervisor, deaths, pids = replicating
    first_pid = wait_for(lambda: supervisor.pid, what="litestream to start")
    import os

    os.kill(first_pid, signal.SIGKILL)
    death = wait_for(lambda: deaths[0] if deaths else None, what="the death to be reported")
    assert death.pid == first_pid and death.returncode == -signal.SIGKILL
    assert "killed by SIGKILL" in death.describe()
    second_pid = wait_for(lambda: supervisor.pid if supervisor.pid not in (None, first_pid) else None,
                          what="litestream to be restarted")
    assert pids == [first_pid, second_pid]
    # The restarted one replicates: a new write reaches the replica.
    with Writer(sqlite_url) as writer:
        restorable_moment_after(engine, writer.mark("after_restart"))


def test_a_replicator_that_exits_by_itself_is_reported_with_its_last_line_and_restarted(tmp_path):
    missing = tmp_path / "nowhere.yml"
    from integrity.pitr.litestream import locate_litestream

    deaths = []
    stop = threading.Event()

    def on_death(death):
        deaths.append(death)
        if len(deaths) == 2:
            stop.set()

    supervisor = Supervisor((str(locate_litestream()), "replicate", "-config", str(missing)),
                            log_path=tmp_path / "litestream.log", on_death=on_death, restart_delay=0.05)
    runner = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
    runner.start()
    runner.join(timeout=DEADLINE_SECONDS)
    assert not runner.is_alive()
    assert len(deaths) == 2  # reported, restarted, reported again
    assert deaths[0].returncode == 1
    assert "nowhere.yml" in deaths[0].last_output  # litestream's own reason, from its log
