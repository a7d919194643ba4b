"""Point-in-time recovery of PostgreSQL through the real pgBackRest (issue 16).

A throwaway cluster of the test's own (tests/pg_cluster.py) archives through our
archive_command into a repository (state, repository and scratch clusters in a home in
/dev/shm, see pitr_helpers.make_home): stanza-create, check, a full backup, then game writes (the game's
schema, players created through the game's store) with two marker players on either side of
a moment read from the server's own clock. A restore to that moment has the first and not
the second, and does not archive; a moment after the archive's last commit restores the
archive's end; a moment outside the window is one Error line naming the window; the scratch
cluster is gone afterwards, after an exception inside the with-block too, and after its run
was killed (the next run removes it). A cluster whose archive_command fails, or pushes
elsewhere, reports it in its window.

Without pgbackrest these tests skip, unless INTEGRITY_REQUIRE_POSTGRES=1 (CI), where they
fail: `.ci/run` installs Debian's `pgbackrest` package.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from game_core.db import create_engine
from game_core.errors import PreconditionFailed
from game_core.store import Store
from integrity.db.scratch_cluster import CLUSTER_PREFIX
from integrity.pitr.pgbackrest import PgBackRestEngine
from integrity.settings import resolve_settings
from pg_cluster import ThrowawayCluster
from pitr_helpers import (
    admin,
    archive_everything,
    cluster_in_home,
    create_game_database,
    players_in,
    postgres_running_in,
    read_only_connection,
    require_pgbackrest,
    server_now,
    show,
    switch_wal,
    wait_for,
    wait_for_server_clock,
)

require_pgbackrest()


def engine_for_cluster(cluster: ThrowawayCluster, home: Path, database: str, **pitr) -> PgBackRestEngine:
    """The engine as `integrity` builds it from settings, its state and repository in `home`."""
    environ = {"XDG_DATA_HOME": str(home / "xdg"), "INTEGRITY_STATE__DIR": str(home / "state"),
               "INTEGRITY_PITR__ENABLED": "true", "INTEGRITY_PITR__REPOSITORY": str(home / "repo"),
               "INTEGRITY_PITR__PG_DATA_DIR": str(cluster.data), "INTEGRITY_BACKUPS__RETENTION__KEEP_LAST": "3",
               **{f"INTEGRITY_PITR__{key.upper()}": value for key, value in pitr.items()}}
    settings = resolve_settings(environ=environ, cwd=home, database_url_option=cluster.url(database))
    return PgBackRestEngine.from_settings(settings)


@pytest.fixture(scope="module")
def archived():
    """A cluster archiving through pgBackRest, a full backup of it, then two marker
    players committed on either side of `moment`, all archived."""
    with cluster_in_home() as (home, cluster):
        game = create_engine(create_game_database(cluster))
        engine = engine_for_cluster(cluster, home, "game")
        engine.write_config()
        engine.create_stanza()
        engine.check()
        backup = engine.backup("full")
        # The window opens a second after the backup's stop (whole seconds): write after it.
        wait_for_server_clock(cluster, backup.stopped + timedelta(seconds=1), what="the backup's second to pass")
        store = Store(game)
        store.create_player("before_moment")
        moment = server_now(cluster)  # after the first commit, before the second: the server's own clock
        store.create_player("after_moment")
        before_switch = engine.window()
        game.dispose()
        archive_everything(cluster, engine)
        yield cluster, engine, backup, moment, before_switch


def home_of(engine: PgBackRestEngine) -> Path:
    return engine.state_dir.parent.parent  # HOME/state/pitr


def scratch_dir(archived, tmp_path) -> Path:
    """A scratch directory in the test's home (see pitr_helpers.make_home)."""
    return home_of(archived[1]) / f"scratch-{tmp_path.name}"


def setting_in(target, name: str) -> str:
    with read_only_connection(target) as connection:
        return connection.execute(sa.text(f"SHOW {name}")).scalar()


# ---------------------------------------------------------------- configuration


def test_the_configuration_names_the_repository_the_cluster_and_the_retention(archived):
    cluster, engine, _, _, _ = archived
    home = home_of(engine)
    text = engine.config_files()[engine.config_path]
    assert f"repo1-path={home / 'repo'}" in text
    assert f"pg1-path={cluster.data}" in text
    assert f"pg1-port={cluster.port}" in text
    assert f"pg1-socket-path={cluster.directory}" in text  # from postmaster.pid: pgBackRest has no TCP
    assert "pg1-user=postgres" in text and "pg1-database=game" in text
    assert "repo1-retention-full=3" in text  # [backups.retention] keep_last
    assert f"log-path={home / 'state' / 'pitr' / 'log'}" in text
    server = engine.server_settings()
    assert server["archive_mode"] == "on" and server["wal_level"] == "replica"
    assert f"--config={engine.config_path}" in server["archive_command"] and server["archive_command"].endswith("archive-push %p")
    assert {command.step for command in engine.commands()} >= {"archive-push", "stanza-create", "check", "backup", "info", "restore"}


def test_a_missing_data_directory_setting_is_one_error_naming_the_key(archived, tmp_path):
    cluster, engine, _, _, _ = archived
    with pytest.raises(PreconditionFailed, match=r"\[pitr\] pg_data_dir is empty"):
        engine_for_cluster(cluster, home_of(engine), "game", pg_data_dir="")
    # Disabled, the configuration is only shown (`integrity pitr config`): no error, a placeholder.
    disabled = engine_for_cluster(cluster, tmp_path, "game", pg_data_dir="", enabled="false")
    assert "pg1-path=PG_DATA_DIR" in disabled.config_files()[disabled.config_path]
    with pytest.raises(PreconditionFailed, match="pgbackrest.conf does not exist; run `integrity pitr config`"):
        disabled.window()


# ---------------------------------------------------------------- the window


def test_the_window_runs_from_the_backup_to_the_last_archived_wal(archived):
    cluster, engine, backup, moment, before_switch = archived
    assert not before_switch.caught_up  # the second marker's commit was not archived yet
    window = engine.window()
    assert window.errors == ()
    assert window.oldest == backup.stopped + timedelta(seconds=1)
    assert window.newest is not None and window.newest > moment
    assert window.contains(moment)
    # Nothing is written after the switch (autovacuum is off): once archived, nothing waits.
    wait_for(lambda: engine.window().caught_up, what="the window to be caught up")


def test_right_after_the_first_backup_nothing_is_restorable_until_the_next_segment(archived, monkeypatch):
    """The backup's last segment is archived as the backup ends, and a restore needs WAL
    from after its end (the window opens a second after its stop): until the next segment
    is archived, the window is empty with one line saying why (it used to read oldest after
    newest, and nothing fit in it). Whether the archiver's time of that segment lands before
    or after the backup's stop second depends on the machine's load, so the server's
    archiver state is read for real and only its time set to the backup's last moments."""
    _, engine, backup, _, _ = archived
    real = engine.archiver_state()
    monkeypatch.setattr(engine, "archiver_state",
                        lambda: replace(real, last_archived_time=backup.stopped + timedelta(milliseconds=500)))
    window = engine.window()
    assert window.oldest is None and window.newest is None
    (error,) = window.errors
    assert error.startswith(f"nothing is restorable yet: no WAL has been archived since backup {backup.label} ended")
    assert "pg_switch_wal()" in error
    monkeypatch.undo()  # the control: the real archiver state opens the window
    assert engine.window().oldest == backup.stopped + timedelta(seconds=1)


def set_archive_command(cluster: ThrowawayCluster, command: str) -> None:
    with admin(cluster) as connection:
        connection.execute(sa.text(f"ALTER SYSTEM SET archive_command = '{command}'"))
        connection.execute(sa.text("SELECT pg_reload_conf()"))
    wait_for(lambda: show(cluster, "archive_command") == command, what="the reload to reach new sessions")


def test_an_archive_command_that_fails_or_pushes_elsewhere_is_reported_in_the_window():
    def start_without_a_command(home: Path) -> ThrowawayCluster:
        # archive_mode on and no archive_command yet: the test sets each one it tries.
        return ThrowawayCluster.start(settings={"archive_mode": "on", "wal_level": "replica", "autovacuum": "off"})

    with cluster_in_home(start_without_a_command) as (home, cluster):
        engine = engine_for_cluster(cluster, home, "postgres")
        engine.write_config()
        set_archive_command(cluster, "/bin/false")
        switch_wal(cluster)
        wait_for(lambda: engine.archiver_state().failed_count > 0, what="archive_command to fail")
        window = engine.window()
        assert window.newest is None and not window.contains(server_now(cluster)) and not window.caught_up
        assert any(error.startswith("archiving is failing: archive_command failed") for error in window.errors), window.errors
        assert any("stanza game" in error for error in window.errors), window.errors  # never stanza-created

        set_archive_command(cluster, "/bin/true")  # succeeds, and pushes nothing into our repository
        wait_for(lambda: engine.archiver_state().last_archived_wal, what="a segment to be 'archived'")
        window = engine.window()
        assert window.newest is None
        assert any("archive_command does not push into" in error for error in window.errors), window.errors
        assert not any(error.startswith("archiving is failing") for error in window.errors)  # it succeeds now


# ---------------------------------------------------------------- restore


def test_a_restore_to_a_moment_has_what_was_committed_before_it_and_nothing_after(archived, tmp_path):
    _, engine, backup, moment, _ = archived
    scratch = scratch_dir(archived, tmp_path)
    with engine.restored_at(moment, scratch) as copy:
        assert players_in(copy.target) == {"before_moment"}
        assert backup.label in copy.description
        assert setting_in(copy.target, "archive_mode") == "off"  # it never pushes into our archive
        folders = list(scratch.glob(CLUSTER_PREFIX + "*[!m]"))  # the folder, not its .claim
        assert len(folders) == 1 and postgres_running_in(folders[0] / "data")
        socket_dir = Path(copy.target.url.host)
    assert list(scratch.iterdir()) == []  # folder and claim both gone
    assert not postgres_running_in(folders[0] / "data") and not socket_dir.exists()


def test_a_moment_after_the_last_archived_commit_restores_the_end_of_the_archive(archived, tmp_path):
    # PostgreSQL refuses to promote when no commit follows the target ("recovery ended
    # before configured recovery target was reached"); the archive's end is the answer.
    _, engine, _, _, _ = archived
    newest = engine.window().newest
    with engine.restored_at(newest, scratch_dir(archived, tmp_path)) as copy:
        assert players_in(copy.target) == {"before_moment", "after_moment"}
        assert "no commit archived after the target: replayed to the archive's end" in copy.description


def test_the_scratch_cluster_is_removed_after_an_exception_inside(archived, tmp_path):
    _, engine, _, moment, _ = archived
    scratch = scratch_dir(archived, tmp_path)
    with pytest.raises(RuntimeError, match="inside"):
        with engine.restored_at(moment, scratch):
            data = next(scratch.glob(CLUSTER_PREFIX + "*[!m]")) / "data"
            raise RuntimeError("inside")
    assert list(scratch.iterdir()) == [] and not postgres_running_in(data)


@pytest.mark.parametrize("offset", [timedelta(hours=-1), timedelta(hours=1)], ids=["before the backup", "in the future"])
def test_a_moment_outside_the_window_is_one_error_naming_the_window(archived, tmp_path, offset):
    _, engine, backup, _, _ = archived
    moment = (backup.stopped if offset < timedelta(0) else datetime.now(UTC)) + offset
    with pytest.raises(PreconditionFailed, match=r"is outside the point-in-time window \(\S+ to \S+\)") as raised:
        with engine.restored_at(moment, scratch_dir(archived, tmp_path)):
            pass
    assert "\n" not in str(raised.value)
    assert not scratch_dir(archived, tmp_path).exists()


KILLED_RUN = """
import sys, time
sys.path[:0] = {paths!r}
from datetime import datetime
from pathlib import Path
from test_pitr_pgbackrest import engine_for_cluster
from pg_cluster import ThrowawayCluster
cluster = ThrowawayCluster(Path({directory!r}), {port}, Path({bindir!r}))
engine = engine_for_cluster(cluster, Path({home!r}), "game")
with engine.restored_at(datetime.fromisoformat({moment!r}), Path({scratch!r})):
    print("inside", flush=True)
    time.sleep(600)
"""


def test_a_killed_runs_scratch_cluster_is_removed_by_the_next_run(archived, tmp_path):
    cluster, engine, _, moment, _ = archived
    scratch = scratch_dir(archived, tmp_path)
    tests = str(Path(__file__).parent)
    script = KILLED_RUN.format(paths=[tests, str(Path(tests).parent)], directory=str(cluster.directory), port=cluster.port,
                               bindir=str(cluster.bindir), moment=moment.isoformat(), scratch=str(scratch),
                               home=str(home_of(engine)))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tests,
                             env={**{k: v for k, v in os.environ.items() if k != "PYTEST_XDIST_WORKER"}, "PYTHONPATH": os.pathsep.join([tests, str(Path(tests).parent)])})
    try:
        assert child.stdout.readline().strip() == "inside"
        killed = next(scratch.glob(CLUSTER_PREFIX + "*[!m]"))  # the folder, not its .claim
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert killed.is_dir()  # the kill skipped every `finally`
    with engine.restored_at(moment, scratch) as copy:
        assert not killed.exists()  # the next run removed it (and its server) before making its own
        assert players_in(copy.target) == {"before_moment"}
    assert list(scratch.iterdir()) == [] and not postgres_running_in(killed / "data")
