"""Litestream (the real 0.5.17 binary) replicating a real game database while the game
writes: the window read back, a restore to a time between two writes, the window's edges,
and a killed replicator restarted with its death reported.

Nothing sleeps a fixed time and assumes: every wait is on a condition, with a deadline.
"""

from __future__ import annotations

import os
import signal
import threading
from datetime import timedelta

import pytest

import pitr_helpers
from game_core.errors import PreconditionFailed
from integrity.pitr.litestream import LISTING_STEP
from integrity.pitr.supervise import Supervisor
from pitr_helpers import DEADLINE_SECONDS, Writer, players_in, restorable_moment_after, wait_for, write_player

# Fixtures (pitr_helpers says why they are bound, not imported by name).
pitr_env = pitr_helpers.pitr_env
replication = pitr_helpers.replication


def test_restore_to_a_time_between_two_writes_has_the_first_and_not_the_second(replication, sqlite_url, tmp_path):
    engine = replication.start()
    with Writer(sqlite_url) as writer:
        first = writer.mark("written_before")
        between = restorable_moment_after(engine, first)
        second = writer.mark("written_after")  # after `between`: its commit is later
        assert second > between
        later = restorable_moment_after(engine, second)
    window = engine.window()
    assert window.contains(between) and window.contains(later)
    with engine.restored_at(between, tmp_path / "scratch") as copy:
        at_between = players_in(copy.target)
        assert "Litestream restore to" in copy.description
    with engine.restored_at(later, tmp_path / "scratch") as copy:
        at_later = players_in(copy.target)
        restored_path = copy.target.sqlite_path
    assert "written_before" in at_between
    assert "written_after" not in at_between
    # The same check on a restore after the second write sees it: a restore that ignored
    # the time (or restored nothing) fails one of the two.
    assert {"written_before", "written_after"} <= at_later
    assert not restored_path.exists() and not restored_path.parent.exists()  # the scratch copy is removed
    assert replication.deaths == []


def test_the_window_is_read_back_from_litestream_and_times_outside_it_are_refused(replication, sqlite_url, tmp_path):
    engine = replication.start()
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


def test_the_last_write_shipped_is_restorable_at_the_newest_point(replication, sqlite_path, sqlite_url, tmp_path):
    """The newest point is what `pitr last-clean` probes and `pitr status` calls the recovery
    point: a restore there must hold the newest file. At the newest file's listed second it
    did not (Litestream takes files made strictly before the time, and the listing truncates
    to the second), so when the damage was the last write, a search for the last clean
    moment called the newest point clean. Here a marker is the last write: a restore at the
    newest point must come to hold it once it is shipped (it never did)."""
    engine = replication.start()
    with Writer(sqlite_url) as writer:
        restorable_moment_after(engine, writer.mark("warm_up"))
    write_player(sqlite_path, "the_last_write")  # the writer has stopped: nothing is written after this

    def restored_with_it() -> bool:
        window = engine.window()
        if window.newest is None:
            return False
        with engine.restored_at(window.newest, tmp_path / "scratch") as copy:
            return "the_last_write" in players_in(copy.target)

    wait_for(restored_with_it, what="a restore at the newest point to hold the last write", deadline=15)


def test_a_killed_litestream_is_restarted_and_its_death_reported(replication, sqlite_url):
    engine = replication.start()
    supervisor, deaths = replication.supervisor, replication.deaths
    first_pid = wait_for(lambda: supervisor.pid, what="litestream to start")
    os.kill(first_pid, signal.SIGKILL)
    death = wait_for(lambda: deaths[0] if deaths else None, what="the death to be reported")
    assert death.pid == first_pid and death.returncode == -signal.SIGKILL
    assert "killed by SIGKILL" in death.describe()
    second_pid = wait_for(lambda: supervisor.pid if supervisor.pid not in (None, first_pid) else None,
                          what="litestream to be restarted")
    assert replication.pids == [first_pid, second_pid]
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


def test_a_restored_file_that_fails_sqlites_quick_check_is_refused(tmp_path):
    # `litestream restore` runs with `-integrity-check none` and we run the pragma ourselves
    # (its own is slower): a damaged page, or a file that is no database, must still refuse
    # the restore.
    import sqlite3

    from integrity.db.scratch import RestoreFailed
    from integrity.db.scratch import require_quick_check

    path = tmp_path / "restored.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    connection.executemany("INSERT INTO t (body) VALUES (?)", [("x" * 200,) for _ in range(2000)])
    connection.commit()
    page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    connection.close()
    require_quick_check(path, what="a good file")  # passes

    with path.open("r+b") as handle:  # an interior page of the table's b-tree, overwritten
        handle.seek(page_size * 2)
        handle.write(b"\x0d" + b"\xff" * (page_size - 1))
    with pytest.raises(RestoreFailed, match="^litestream restore to T: "):
        require_quick_check(path, what="litestream restore to T")

    not_a_database = tmp_path / "text.db"
    not_a_database.write_bytes(b"not sqlite at all" * 512)
    with pytest.raises(RestoreFailed, match="not a readable SQLite database"):
        require_quick_check(not_a_database, what="litestream restore to T")


def test_the_archive_keeps_keep_last_snapshots_and_never_the_newest_point(tmp_path, pitr_env, sqlite_url, monkeypatch):
    """[backups.retention] keep_last is Litestream's snapshot retention, in snapshot
    intervals; the real binary deletes older snapshots and keeps the newest point restorable.
    A snapshot a second (not a day) so that the test sees retention act."""
    from dataclasses import replace

    from integrity.pitr.litestream import SNAPSHOT_INTERVAL_SECONDS
    from integrity.settings import resolve_settings
    from pitr_helpers import Replication, litestream_engine

    monkeypatch.setenv("INTEGRITY_BACKUPS__RETENTION__KEEP_LAST", "3")
    settings = resolve_settings(environ={**pitr_env, "INTEGRITY_BACKUPS__RETENTION__KEEP_LAST": "3"}, cwd=tmp_path)
    configured = litestream_engine(settings)
    text = next(iter(configured.config_files().values()))
    assert configured.keep_snapshots == 3
    assert f'snapshot:\n  interval: "{SNAPSHOT_INTERVAL_SECONDS}s"\n  retention: "{3 * SNAPSHOT_INTERVAL_SECONDS}s"\n' in text

    engine = replace(configured, snapshot_interval_seconds=1, keep_snapshots=2)
    with Replication(engine) as replication, Writer(sqlite_url) as writer:
        replication.start()
        first = wait_for(lambda: min((f.created for f in engine.ltx_files() if f.level == 9), default=None),
                         what="the first snapshot")
        # Retention acted: the first snapshot is gone, and the snapshots kept span about keep_last intervals.
        kept = wait_for(lambda: (lambda snaps: snaps if snaps and min(snaps) > first + timedelta(seconds=2) else None)(
            [f.created for f in engine.ltx_files() if f.level == 9]), what="the first snapshot to be deleted")
        assert max(kept) - min(kept) <= timedelta(seconds=5)
        last = writer.mark("the_newest_write")
        restorable_moment_after(engine, last)
    # The newest point is restorable (the level-0 files, kept l0-retention, still reach back
    # before the deleted snapshots, so the window's oldest point need not move yet).
    window = engine.window()
    with engine.restored_at(window.newest, tmp_path / "scratch") as copy:
        assert "the_newest_write" in players_in(copy.target)
    assert replication.deaths == []
