"""What the point-in-time recovery tests share, written once: a wait on a condition with a
deadline, [pitr] enabled on the test's own game database, the game writing in a thread,
Litestream replicating under a Supervisor as `integrity pitr replicate` runs it, reading
players back, and throwaway PostgreSQL clusters archiving through the real pgBackRest.

Nothing sleeps a fixed time and assumes: every wait is on a condition, with a deadline.

Two fixtures live here (`pitr_env`, `replication`). A test module makes one available by
binding it to a module name (`pitr_env = pitr_helpers.pitr_env`): pytest finds fixtures
among a module's names, and pyflakes reads a fixture imported by name and then taken as a
test's argument as an unused import redefined.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from backup_helpers import BackupEnv, fill_database
from cli_runner import CliRunner
from conftest import REQUIRE_POSTGRES
from game_core.db import create_engine
from game_core.schema_state import upgrade_to_head
from game_core.store import Store
from integrity.cli import app
from integrity.pitr import engine_for
from integrity.pitr.litestream import LISTING_STEP, LitestreamEngine
from integrity.pitr.supervise import Supervisor
from integrity.settings import resolve_settings
from pg_cluster import ThrowawayCluster

DEADLINE_SECONDS = 30.0
runner = CliRunner()


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


def invoke(*args: str):
    """`integrity ARGS` in this process, under the environment the test set."""
    return runner.invoke(app, list(args), catch_exceptions=False, prog_name="integrity")


# ---------------------------------------------------------------- [pitr] on a SQLite game database


def pitr_environ(tmp_path: Path, database: Path, **extra: str) -> dict[str, str]:
    """[pitr] enabled on `database`, its replica, state and data home in tmp_path; `extra`
    adds variables by their full names."""
    return {
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "INTEGRITY_DATABASE_URL": f"sqlite:///{database}",
        "INTEGRITY_PITR__ENABLED": "true",
        "INTEGRITY_PITR__REPOSITORY": str(tmp_path / "replica"),
        "INTEGRITY_STATE__DIR": str(tmp_path / "state"),
        **extra,
    }


@pytest.fixture
def pitr_env(tmp_path, sqlite_path, monkeypatch) -> dict[str, str]:
    """pitr_environ on the test's own game database, set in the environment (for `invoke`)."""
    environ = pitr_environ(tmp_path, sqlite_path)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return environ


def pitr_backup_env(home: Path, url: str, **pitr: str) -> BackupEnv:
    """A BackupEnv in `home` with [pitr] enabled; `pitr` sets more of its keys."""
    return BackupEnv(home, url, extra_env={
        "INTEGRITY_STATE__DIR": str(home / "state"),
        "INTEGRITY_PITR__ENABLED": "true",
        **{f"INTEGRITY_PITR__{key.upper()}": value for key, value in pitr.items()},
    })


def litestream_engine(settings) -> LitestreamEngine:
    engine = engine_for(settings)
    assert isinstance(engine, LitestreamEngine)
    return engine


# ---------------------------------------------------------------- the game writing, players read back


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


def write_player(database: Path, username: str) -> None:
    """One player written through the game's store, its engine closed again."""
    engine = create_engine(f"sqlite:///{database}")
    try:
        Store(engine).create_player(username)
    finally:
        engine.dispose()


@contextmanager
def read_only_connection(target) -> Iterator[sa.Connection]:
    """A read-only connection to `target` (a URL or a restored copy's target), closed after."""
    engine = create_engine(target, read_only=True)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def players_in(target) -> set[str]:
    with read_only_connection(target) as connection:
        return set(connection.execute(sa.text("SELECT username FROM players")).scalars())


# ---------------------------------------------------------------- Litestream replicating


class Replication:
    """Litestream replicating the engine's database under a Supervisor in a thread, as
    `integrity pitr replicate` runs it (its log where that puts it), started when the test
    says so; every start's pid and every death recorded."""

    def __init__(self, engine: LitestreamEngine) -> None:
        self.engine = engine
        self.pids: list[int] = []
        self.deaths: list = []
        self.supervisor = Supervisor(engine.replicator(), log_path=engine.config_path.with_name("litestream.log"),
                                     on_start=self.pids.append, on_death=self.deaths.append, restart_delay=0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.supervisor.run, args=(self._stop,), daemon=True)

    def start(self) -> LitestreamEngine:
        self.engine.write_config()
        self._thread.start()
        return self.engine

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
            assert not self._thread.is_alive(), "the supervisor did not stop litestream"

    def __enter__(self) -> Replication:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture
def replication(tmp_path, pitr_env) -> Iterator[Replication]:
    """Litestream for the test's own game database (pitr_env), not started yet."""
    with Replication(litestream_engine(resolve_settings(environ=pitr_env, cwd=tmp_path))) as replication:
        yield replication


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


# ---------------------------------------------------------------- PostgreSQL archiving through pgBackRest


def require_pgbackrest() -> None:
    """Skip without pgbackrest, unless INTEGRITY_REQUIRE_POSTGRES=1 (CI), where that fails:
    `.ci/run` installs Debian's `pgbackrest` package."""
    if shutil.which("pgbackrest") and shutil.which("pg_config"):
        return
    if REQUIRE_POSTGRES:
        raise RuntimeError("pgbackrest (or pg_config) is missing and INTEGRITY_REQUIRE_POSTGRES=1: "
                           "install Debian's pgbackrest package (.ci/run does)")
    pytest.skip("pgbackrest is not installed (apt-get install pgbackrest)", allow_module_level=True)


def make_home() -> Path:
    """Where a test keeps integrity's state, the repository and the scratch clusters: in
    memory when it can (pgBackRest fsyncs each of a cluster's ~1,000 files: a restore took
    5.4 s on this disk, 0.4 s in /dev/shm), reachable by the server's OS user (pytest's tmp
    dirs are 0700), and removed by a watcher if this run is killed."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    home = Path(tempfile.mkdtemp(prefix="integrity-pitr-test-", dir=base))
    home.chmod(0o755)
    subprocess.Popen(["sh", "-c", f"while kill -0 {os.getpid()} 2>/dev/null && [ -d '{home}' ]; do sleep 1; done; rm -rf '{home}'"],
                     start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return home


def archive_command_for(home: Path) -> str:
    # Known before the engine exists: the server must have it before anything is archived.
    return f"'{shutil.which('pgbackrest')} --config={home / 'state' / 'pitr' / 'pgbackrest.conf'} --stanza=game archive-push %p'"


def start_archiving_cluster(home: Path, *, archive_timeout: int = 600) -> ThrowawayCluster:
    """A cluster archiving through our archive_command, set through ALTER SYSTEM and a
    reload once the cluster exists (a -c option would win over ALTER SYSTEM); until then
    WAL waits (PostgreSQL 15: archive_mode on, no command)."""
    # autovacuum off: no commit but the test's own may reach the archive (the restores' markers).
    # archive_timeout 600: segments switch when a test says so (pg_switch_wal), never by the
    # clock; a test of what waits on the archive by itself (backup check) asks for 1 s.
    cluster = ThrowawayCluster.start(settings={"archive_mode": "on", "wal_level": "replica",
                                                "archive_timeout": str(archive_timeout), "autovacuum": "off"})
    with admin(cluster) as connection:  # archive_command takes a reload, archive_mode a restart
        connection.execute(sa.text(f"ALTER SYSTEM SET archive_command = {archive_command_for(home)}"))
        # In postgresql.auto.conf too, so that a restored copy would archive unless told not to.
        connection.execute(sa.text("ALTER SYSTEM SET archive_mode = on"))
        connection.execute(sa.text("SELECT pg_reload_conf()"))
    wait_for(lambda: "archive-push" in show(cluster, "archive_command"), what="the reload to reach new sessions")  # signalled, not awaited
    return cluster


@contextmanager
def cluster_in_home(start: Callable[[Path], ThrowawayCluster] = start_archiving_cluster
                    ) -> Iterator[tuple[Path, ThrowawayCluster]]:
    """(home, cluster): a home (make_home) and a cluster `start`ed for it, both removed
    afterwards; skips (or fails under CI) without pgbackrest."""
    require_pgbackrest()
    home = make_home()
    cluster = start(home)
    try:
        yield home, cluster
    finally:
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)


def create_game_database(cluster: ThrowawayCluster) -> str:
    """A `game` database on the cluster at the game's schema head; its URL."""
    with admin(cluster) as connection:
        connection.execute(sa.text("CREATE DATABASE game"))
    url = cluster.url("game")
    game = create_engine(url)
    with game.begin() as connection:
        upgrade_to_head(connection)
    game.dispose()
    return url


@dataclass
class ArchivedGame:
    home: Path
    cluster: ThrowawayCluster
    env: BackupEnv
    engine: object  # the PgBackRestEngine integrity builds from env's settings
    backup: object  # the full backup the window starts from


@contextmanager
def archived_game(*, players: int, results_per_player: int, archive_timeout: int = 600) -> Iterator[ArchivedGame]:
    """A filled game database on a cluster archiving through pgBackRest, its stanza created
    and a full backup taken, as `integrity` configures it (state and repositories in the
    home); all removed afterwards."""
    with cluster_in_home(lambda home: start_archiving_cluster(home, archive_timeout=archive_timeout)) as (home, cluster):
        url = create_game_database(cluster)
        fill_database(url, players=players, results_per_player=results_per_player)
        env = pitr_backup_env(home, url, repository=str(home / "archive"), pg_data_dir=str(cluster.data))
        engine = engine_for(env.settings())
        engine.write_config()
        engine.create_stanza()
        backup = engine.backup("full")
        yield ArchivedGame(home, cluster, env, engine, backup)


class admin:
    """An autocommit connection to the cluster's maintenance database."""

    def __init__(self, cluster: ThrowawayCluster, database: str = "postgres") -> None:
        self._engine = sa.create_engine(cluster.url(database), isolation_level="AUTOCOMMIT")

    def __enter__(self) -> sa.Connection:
        self._connection = self._engine.connect()
        return self._connection

    def __exit__(self, *exc) -> None:
        self._connection.close()
        self._engine.dispose()


def show(cluster: ThrowawayCluster, setting: str) -> str:
    with admin(cluster) as connection:
        return connection.execute(sa.text(f"SHOW {setting}")).scalar()


def server_now(cluster: ThrowawayCluster) -> datetime:
    with admin(cluster) as connection:
        return connection.execute(sa.text("SELECT clock_timestamp()")).scalar()


def wait_for_server_clock(cluster: ThrowawayCluster, past: datetime, *, what: str) -> None:
    """Until the server's own clock (the one its commits are stamped by) is past `past`."""
    wait_for(lambda: server_now(cluster) > past, what=what)


def switch_wal(cluster: ThrowawayCluster) -> str:
    with admin(cluster) as connection:
        return connection.execute(sa.text("SELECT pg_walfile_name(pg_switch_wal())")).scalar()


def archive_everything(cluster: ThrowawayCluster, engine) -> None:
    """Every commit so far in the archive: the WAL segment switched from, archived."""
    switched = switch_wal(cluster)
    wait_for(lambda: (engine.archiver_state().last_archived_wal or "")[:24] >= switched, what=f"{switched} to be archived")


def postgres_running_in(data: Path) -> bool:
    # The server's command line, not the watcher's (which names pg_ctl -D).
    found = subprocess.run(["pgrep", "-f", "--", f"bin/postgres -D {data}"], capture_output=True, text=True)
    return found.returncode == 0
