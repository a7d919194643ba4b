"""Benchmark: point-in-time recovery against issue 16's targets, with the real Litestream.

    .venv/bin/python bench/pitr.py                                      # every section, about 3 min
    .venv/bin/python bench/pitr.py --smoke                              # a quick look, under 1 min
    .venv/bin/python bench/pitr.py --only last-clean --players 100000 --tests-per-player 65   # the 1 GB case

Every figure is printed with its target and MET or MISSED. Sections (`--only` picks some):

lag: SQLite replica lag under a steady write load. Litestream replicates a game database
    through `integrity pitr replicate` (api.pitr_replicate: our LitestreamEngine's
    configuration, the supervised real binary) while a load writes: `typing-game simulate`
    run again and again in a subprocess (its bulk transactions of 200,000 rows), and
    separately the game's store at a steady rate (`--game-rate` results/s). A marker player
    is committed every `--marker-interval` s; right after each commit the WAL is read
    (its salts and the end of its last commit frame, SQLite's WAL format). A replica file
    covers the marker when its LTX header (Litestream 0.5, superfly/ltx 0.5: bytes 48..72
    are WALOffset, WALSize, WALSalt1, WALSalt2, big-endian) names the same WAL generation
    (salts) and WALOffset + WALSize reaches that end. The lag of a marker is the covering
    file's ctime in the replica (the file replica renames the finished file into place,
    then sets its mtime: ctime is when it was complete) minus the marker's commit time.
    The game's writes wait while a marker commits and its WAL is read; simulate's
    subprocess cannot be held, so a commit of it in between makes the end that later
    commit's: under simulate the lag can only be overstated. p50/p95/p99/max over `--samples`
    markers per load; target p99 <= 2 s.

overhead: simulate's write rate (results/s, `game_core.simulate.simulate` in this process,
    as bench/simulate.py times it) into a fresh copy of an empty migrated database, with
    Litestream replicating it (started and its first snapshot made before the clock starts,
    stopped after it) against without, same seed and size (`--load-players` x
    `--load-tests-per-player`), median of `--repeats` runs alternating which goes first;
    target ratio >= 0.8.

pg-lag: PostgreSQL archive lag (needs pgbackrest and pg_config; skipped otherwise). A
    throwaway cluster (tests/pg_cluster.py, its own port, never the server at 5432)
    archives through pgBackRest (our PgBackRestEngine's pgbackrest.conf and
    archive_command, stanza-create and a full backup) with `--archive-timeout` s; the
    game's store writes at `--game-rate` results/s; a marker commit's WAL file
    (pg_walfile_name of pg_current_wal_lsn() after it) is covered once pg_stat_archiver's
    last_archived_wal reaches it (WAL file names sort in WAL order); the lag is the time
    that was first seen (polled every 0.1 s) minus the commit. Target <= archive_timeout + 5 s.

last-clean: `integrity pitr last-clean` (api.pitr_last_clean, the whole command: the window,
    the bisection of restores into scratch and SQL audits, salvage's dry run of what would
    come back) on a database of `--players` x `--tests-per-player` (built with simulate
    --seed 1), replicated by Litestream while the game writes `--clean-seconds` of good
    results, then the damage (every stored wpm of 1% of the players multiplied by 5: the
    rule results.wpm_recomputed fails), then `--after-seconds` of good writes. A one-hour
    window is not waited for: the real window (snapshot to newest, about a minute) is
    searched at a resolution of window / `--window-steps` (3600: the grid of a one-hour
    window at Litestream's 1 s), by giving the engine that resolution for the run (the only
    stand-in; Litestream restores to a fractional second by its files' millisecond
    times). Each probe is a real `litestream restore` of the whole database and the real
    audits, so the number of restores and their cost are those of an hour's window at 1 s
    (a real hour's archive holds more, compacted, files; a restore reads the snapshot and
    a handful of them either way). The probes are audited with every rule until one is
    dirty, then with the error rules that one failed (its row rules), and the moment found
    with every rule on its kept copy (integrity/pitr/search.py); the window is read once for
    the whole search. Anchor, in the same run: one restore as our engine makes it (the same
    `litestream restore` command, `-integrity-check none`, then `PRAGMA quick_check` of the
    file, at the moment found) plus one SQL audit of the copy with every rule (`audit_copy`),
    median of `--repeats`; beside it a window check alone (`litestream ltx` and `status`). Targets: restores <= 12 (log2(3600) = 11.8;
    the search's own bound is ceil(log2(steps + 2)), 12 for 3600 steps, see
    integrity/pitr/search.py), total < 10x the anchor. The moment found is compared with
    the damage's replica file (its LTX header's timestamp, when Litestream read the WAL):
    a restore to T holds the files made before T, so the boundary lies there, up to one
    monitor interval (1 s) after the damage's commit. That holds while the level-0 files
    exist: Litestream 0.5 deletes them l0-retention (5 min) after compacting them into
    level 1, whose files span 30 s and carry their newest source's time (superfly/ltx's
    compactor); a search that runs later (the 1 GB case) finds the damage's level-1
    file's time, and a restore there holds the state at the previous level-1 file's end.

Scratch files live under bench/.work/pitr-PID/ (removed at the end, the benchmark
database too); the throwaway cluster is stopped and removed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
WORK_DIR = BENCH_DIR / ".work"

sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from bench.common import build_sqlite_database, machine_line  # noqa: E402
from game_core.db import create_engine  # noqa: E402
from game_core.schema_state import upgrade_to_head  # noqa: E402
from game_core.store import Store, TestOutcome  # noqa: E402

LAG_TARGET_P99 = 2.0
OVERHEAD_TARGET = 0.8
PG_LAG_MARGIN = 5.0
RESTORES_TARGET = 12
ANCHOR_MULTIPLE_TARGET = 10.0
DEADLINE_SECONDS = 120.0
POLL_SECONDS = 0.05

WAL_HEADER = 32
WAL_FRAME_HEADER = 24
LTX_HEADER = 100
LTX_LEVELS = ("0", "9")  # level-0 files come from the WAL; level 9 holds snapshots


def verdict(met: bool) -> str:
    return "MET" if met else "MISSED"


def wait_for(condition, *, what: str, deadline: float = DEADLINE_SECONDS, poll: float = 0.1):
    """The first truthy value of `condition()`, polled until the deadline."""
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise RuntimeError(f"timed out after {deadline:.0f}s waiting for {what}")
        time.sleep(poll)


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (no interpolation): a value that was measured."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * share // 100))
    return ordered[int(rank) - 1]


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def make_template(path: Path) -> Path:
    """An empty database migrated by the Alembic history, checkpointed into one file."""
    engine = create_engine(str(path), create_missing=True)
    with engine.begin() as connection:
        upgrade_to_head(connection)
    engine.dispose()
    return path


def good_outcome(started_at: datetime) -> TestOutcome:
    return TestOutcome(mode="time", mode_param=30, started_at=started_at, duration_ms=30_000, correct_word_chars=200,
                       correct_spaces=40, correct_chars=205, incorrect_chars=3, extra_chars=0, missed_chars=1,
                       correct_keystrokes=245, incorrect_keystrokes=3)


# ---------------------------------------------------------------- Litestream through integrity


def sqlite_settings(home: Path, database: Path, **pitr: str):
    from integrity.settings import resolve_settings

    environ = {
        "XDG_DATA_HOME": str(home / "xdg"),
        "INTEGRITY_DATABASE_URL": f"sqlite:///{database}",
        "INTEGRITY_PITR__ENABLED": "true",
        "INTEGRITY_PITR__REPOSITORY": str(home / "replica"),
        "INTEGRITY_STATE__DIR": str(home / "state"),
        **{f"INTEGRITY_PITR__{key.upper()}": value for key, value in pitr.items()},
    }
    return resolve_settings(environ=environ, cwd=home)


class Replication:
    """`integrity pitr replicate` (api.pitr_replicate) in a thread, stopped on exit; waits
    until Litestream's first snapshot is in the replica."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.replica = Path(settings.pitr.repository)
        self.stop = threading.Event()
        self.deaths: list[str] = []
        self.report = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from integrity import api
        from integrity.invocation import Invocation

        def heard(line: str) -> None:
            if " died: " in line:
                self.deaths.append(line)

        self.report = api.pitr_replicate(Invocation(self.settings, command="pitr replicate", notify=heard), stop=self.stop)

    def __enter__(self) -> Replication:
        self.thread.start()
        wait_for(lambda: any((self.replica / "ltx" / "9").glob("*.ltx")), what="Litestream's first snapshot")
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        if self.thread.is_alive():
            raise RuntimeError("the replicator did not stop")


# ---------------------------------------------------------------- WAL positions and replica coverage


@dataclasses.dataclass(frozen=True)
class WalPosition:
    salts: tuple[int, int]
    end: int  # the byte just after the last commit frame of that WAL generation


class WalReader:
    """The end of the last committed transaction in a SQLite WAL file (SQLite's WAL format:
    a 32-byte header with the salts at 16..24; frames of a 24-byte header, whose bytes 4..8
    are non-zero on a transaction's commit frame and 8..16 repeat the salts, and a page).
    Frames only append within one generation, so a scan resumes from the last commit end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.known: WalPosition | None = None

    def position(self) -> WalPosition:
        for _ in range(5):  # the WAL may restart (new salts) while it is read: read again
            with self.path.open("rb") as handle:
                header = handle.read(WAL_HEADER)
                page_size = struct.unpack(">I", header[8:12])[0]
                salts = struct.unpack(">II", header[16:24])
                end = self.known.end if self.known and self.known.salts == salts else WAL_HEADER
                offset, frame = end, WAL_FRAME_HEADER + page_size
                while True:
                    handle.seek(offset)
                    frame_header = handle.read(WAL_FRAME_HEADER)
                    if len(frame_header) < WAL_FRAME_HEADER or struct.unpack(">II", frame_header[8:16]) != salts:
                        break
                    offset += frame
                    if struct.unpack(">I", frame_header[4:8])[0]:
                        end = offset
                handle.seek(16)
                if struct.unpack(">II", handle.read(8)) == salts:
                    self.known = WalPosition(salts, end)
                    return self.known
        raise RuntimeError(f"the WAL {self.path} kept restarting while it was read")


@dataclasses.dataclass(frozen=True)
class ReplicaFile:
    level: str
    wal_offset: int
    wal_size: int
    salts: tuple[int, int]
    made_at: float  # the LTX header's timestamp: when Litestream read the WAL (ms)
    complete_at: float  # the file's ctime: renamed into place and its mtime set
    path: Path

    def covers(self, position: WalPosition) -> bool:
        return self.salts == position.salts and self.wal_offset + self.wal_size >= position.end


class ReplicaWatcher:
    """Every LTX file of levels 0 and 9 that appears in a file replica, with its header's
    WAL range, read as it appears (compaction may delete level-0 files later)."""

    def __init__(self, replica: Path) -> None:
        self.replica = replica
        self.files: dict[Path, ReplicaFile] = {}
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def scan(self) -> None:
        for level in LTX_LEVELS:
            directory = self.replica / "ltx" / level
            try:
                names = os.listdir(directory)
            except FileNotFoundError:
                continue
            for name in names:
                path = directory / name
                if not name.endswith(".ltx") or path in self.files:
                    continue
                try:
                    with path.open("rb") as handle:
                        header = handle.read(LTX_HEADER)
                    complete_at = path.stat().st_ctime
                except FileNotFoundError:
                    continue
                if len(header) < LTX_HEADER or header[:4] != b"LTX1":
                    continue
                made_ms = struct.unpack(">q", header[32:40])[0]
                wal_offset, wal_size, salt1, salt2 = struct.unpack(">qqII", header[48:72])
                self.files[path] = ReplicaFile(level, wal_offset, wal_size, (salt1, salt2), made_ms / 1000, complete_at,
                                               path)

    def _run(self) -> None:
        while not self.halt.wait(POLL_SECONDS):
            self.scan()

    def first_covering(self, position: WalPosition) -> ReplicaFile | None:
        self.scan()
        covering = [f for f in list(self.files.values()) if f.covers(position)]
        return min(covering, key=lambda f: f.complete_at) if covering else None

    def covered_at(self, position: WalPosition) -> float | None:
        first = self.first_covering(position)
        return None if first is None else first.complete_at

    def __enter__(self) -> ReplicaWatcher:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.halt.set()
        self.thread.join()


@dataclasses.dataclass
class Marker:
    committed_at: float
    position: WalPosition
    covered_at: float | None = None


class MarkerWriter:
    """A marker player committed every `interval` s on a fixed schedule, its WAL position
    read right after the commit."""

    def __init__(self, database: Path, samples: int, interval: float, gate: threading.Lock | None = None) -> None:
        self.gate = gate or threading.Lock()  # held by the load's writer around each of its writes, when it has one
        self.engine = create_engine(str(database))
        self.store = Store(self.engine)
        self.wal = WalReader(Path(f"{database}-wal"))
        self.samples, self.interval = samples, interval
        self.markers: list[Marker] = []

    def run(self) -> list[Marker]:
        began = time.monotonic()
        try:
            for number in range(self.samples):
                delay = began + number * self.interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                with self.gate:  # no write of the load between the commit and the WAL read
                    self.store.create_player(f"marker_{os.getpid()}_{number}")
                    committed_at = time.time()
                    self.markers.append(Marker(committed_at, self.wal.position()))
        finally:
            self.engine.dispose()
        return self.markers


class GameLoad:
    """The game's store recording results at a steady rate, in a thread. Each write holds
    `gate`, so that another writer can read the WAL position of its own commit (SQLite's
    write lock would make the game wait for that commit anyway)."""

    def __init__(self, url: str, rate: float) -> None:
        self.gate = threading.Lock()
        self.engine = create_engine(url)
        self.store = Store(self.engine)
        self.rate = rate
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.written = 0
        self.last = datetime.now(UTC)

    def _run(self) -> None:
        began = time.monotonic()
        while not self.halt.is_set():
            self.written += 1
            name = f"game_{self.written % 50}"
            with self.gate:
                self.store.get_or_create_player(name)
                self.last = max(datetime.now(UTC), self.last + timedelta(microseconds=1))
                self.store.record_result(name, good_outcome(self.last))
            delay = began + self.written / self.rate - time.monotonic()
            if delay > 0:
                self.halt.wait(delay)

    def __enter__(self) -> GameLoad:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.halt.set()
        self.thread.join()
        self.engine.dispose()


class SimulateLoad:
    """`typing-game simulate` run again and again in a subprocess (each run adds players)."""

    def __init__(self, database: Path, players: int, tests: int) -> None:
        self.argv = [sys.executable, "-m", "game_core.cli", "--database-url", f"sqlite:///{database}", "simulate",
                     "--players", str(players), "--tests-per-player", str(tests), "--seed", "7"]
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.runs = 0
        self.failure: str | None = None

    def _run(self) -> None:
        while not self.halt.is_set():
            done = subprocess.run(self.argv, cwd=ROOT, capture_output=True, text=True)
            if done.returncode != 0:
                self.failure = (done.stderr or done.stdout).strip().splitlines()[-1:]
                return
            self.runs += 1

    def __enter__(self) -> SimulateLoad:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.halt.set()
        self.thread.join()


def lag_under(load_name: str, work: Path, template: Path, args) -> list[float]:
    home = work / f"lag-{load_name}"
    home.mkdir()
    database = home / "game.db"
    shutil.copyfile(template, database)
    settings = sqlite_settings(home, database)
    with Replication(settings) as replication, ReplicaWatcher(replication.replica) as watcher:
        if load_name == "simulate":
            load = SimulateLoad(database, args.load_players // 4, args.load_tests_per_player)
        else:
            load = GameLoad(f"sqlite:///{database}", args.game_rate)
        with load:
            gate = load.gate if isinstance(load, GameLoad) else None  # simulate's subprocess cannot be held
            markers = MarkerWriter(database, args.samples, args.marker_interval, gate).run()
        for marker in markers:
            marker.covered_at = wait_for(lambda: watcher.covered_at(marker.position),
                                         what="the replica to cover every marker", deadline=60)
        if replication.deaths:
            print(f"  Litestream died during the run: {replication.deaths}")
    if isinstance(load, SimulateLoad) and load.failure:
        print(f"  simulate failed: {load.failure}")
    lags = [marker.covered_at - marker.committed_at for marker in markers]
    if min(lags) < 0:  # a file completed before the commit cannot hold it: the measure is broken
        raise RuntimeError(f"a marker was covered {min(lags):.3f} s before its commit: the WAL or LTX reading is wrong")
    extra = f", {load.runs} simulate runs" if isinstance(load, SimulateLoad) else f", {load.written} results written"
    p50, p95, p99 = (percentile(lags, share) for share in (50, 95, 99))
    print(f"  {load_name} load ({len(lags)} markers{extra}): p50 {p50:.2f} s, p95 {p95:.2f} s, "
          f"p99 {p99:.2f} s, max {max(lags):.2f} s; target p99 <= {LAG_TARGET_P99:.0f} s: {verdict(p99 <= LAG_TARGET_P99)}")
    return lags


def bench_lag(work: Path, template: Path, args) -> None:
    print(f"\n[lag] SQLite replica lag (commit to the replica file covering it), one marker every "
          f"{args.marker_interval} s, sync-interval 1s")
    lag_under("game", work, template, args)
    lag_under("simulate", work, template, args)


# ---------------------------------------------------------------- overhead on the game


def timed_simulate(database: Path, players: int, tests: int) -> float:
    from game_core.simulate import simulate

    engine = create_engine(str(database))
    try:
        began = time.perf_counter()
        summary = simulate(engine, players=players, tests_per_player=tests, seed=1)
        seconds = time.perf_counter() - began
    finally:
        engine.dispose()
    return summary.results / seconds


def bench_overhead(work: Path, template: Path, args) -> None:
    players, tests = args.load_players, args.load_tests_per_player
    print(f"\n[overhead] simulate {players:,} x {tests} = {players * tests:,} results, seed 1, "
          f"with Litestream replicating vs without, median of {args.repeats} alternating runs")
    rates: dict[str, list[float]] = {"with": [], "without": []}
    for attempt in range(args.repeats):
        order = ("without", "with") if attempt % 2 == 0 else ("with", "without")
        line = []
        for side in order:
            home = work / f"overhead-{attempt}-{side}"
            home.mkdir()
            database = home / "game.db"
            shutil.copyfile(template, database)
            if side == "with":
                with Replication(sqlite_settings(home, database)):
                    rate = timed_simulate(database, players, tests)
            else:
                rate = timed_simulate(database, players, tests)
            rates[side].append(rate)
            line.append(f"{side} {rate:,.0f}")
            shutil.rmtree(home)
        print(f"  run {attempt + 1}: " + ", ".join(line) + " results/s")
    with_rate, without_rate = statistics.median(rates["with"]), statistics.median(rates["without"])
    ratio = with_rate / without_rate
    print(f"  simulate with Litestream: {with_rate:,.0f} results/s; without: {without_rate:,.0f} results/s (medians)")
    print(f"  ratio {ratio:.2f}; target >= {OVERHEAD_TARGET}: {verdict(ratio >= OVERHEAD_TARGET)}")


# ---------------------------------------------------------------- PostgreSQL archive lag


def bench_pg_lag(work: Path, args) -> None:
    print(f"\n[pg-lag] PostgreSQL archive lag through pgBackRest, archive_timeout {args.archive_timeout} s, "
          f"the game writing {args.game_rate:g} results/s")
    if not shutil.which("pgbackrest") or not shutil.which("pg_config"):
        print("  skipped: pgbackrest or pg_config is not installed (apt-get install pgbackrest)")
        return
    sys.path.insert(0, str(ROOT / "tests"))
    import sqlalchemy as sa
    from pg_cluster import ThrowawayCluster

    from integrity.pitr.pgbackrest import PgBackRestEngine
    from integrity.settings import resolve_settings

    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # pgBackRest fsyncs every file
    home = Path(tempfile.mkdtemp(prefix="bench-pitr-pg-", dir=base))
    home.chmod(0o755)  # the server's OS user runs archive-push with this configuration
    # archive_command comes once the cluster exists (the engine needs its data directory);
    # until then WAL waits for it (archive_mode on, no command).
    cluster = ThrowawayCluster.start(settings={"archive_mode": "on", "wal_level": "replica",
                                                "archive_timeout": str(args.archive_timeout)})
    try:
        environ = {"XDG_DATA_HOME": str(home / "xdg"), "INTEGRITY_STATE__DIR": str(home / "state"),
                   "INTEGRITY_PITR__ENABLED": "true", "INTEGRITY_PITR__REPOSITORY": str(home / "repo"),
                   "INTEGRITY_PITR__PG_DATA_DIR": str(cluster.data),
                   "INTEGRITY_PITR__ARCHIVE_TIMEOUT_SECONDS": str(args.archive_timeout)}
        settings = resolve_settings(environ=environ, cwd=home, database_url_option=cluster.url("game"))
        engine = PgBackRestEngine.from_settings(settings)
        engine.write_config()
        admin = sa.create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            quoted = engine.server_settings()["archive_command"].replace("'", "''")
            connection.execute(sa.text(f"ALTER SYSTEM SET archive_command = '{quoted}'"))
            connection.execute(sa.text("SELECT pg_reload_conf()"))
            connection.execute(sa.text("CREATE DATABASE game"))

        def reloaded() -> bool:
            with admin.connect() as connection:
                return "archive-push" in connection.execute(sa.text("SHOW archive_command")).scalar()

        wait_for(reloaded, what="the reload to reach new sessions")
        engine.create_stanza()
        engine.backup("full")
        game = create_engine(cluster.url("game"))
        with game.begin() as connection:
            upgrade_to_head(connection)
        game.dispose()
        lags = []
        with GameLoad(cluster.url("game"), args.game_rate), admin.connect() as watch:
            marker_engine = create_engine(cluster.url("game"))
            store = Store(marker_engine)
            pending: list[tuple[float, str]] = []
            interval = max(args.marker_interval, 0.5)
            count = max(args.samples // 4, 10)
            began = time.monotonic()
            number = 0
            while len(lags) < count:
                if number < count and time.monotonic() >= began + number * interval:
                    store.create_player(f"marker_{number}")
                    committed_at = time.time()
                    with marker_engine.connect() as connection:
                        wal = connection.execute(sa.text("SELECT pg_walfile_name(pg_current_wal_lsn())")).scalar()
                    pending.append((committed_at, wal))
                    number += 1
                archived = watch.execute(sa.text("SELECT last_archived_wal FROM pg_stat_archiver")).scalar()
                now = time.time()
                # Timeline-prefixed names of the same length sort in WAL order.
                done = [item for item in pending if archived is not None and archived[:24] >= item[1]]
                for item in done:
                    lags.append(now - item[0])
                    pending.remove(item)
                if time.monotonic() - began > count * interval + args.archive_timeout * 3 + 60:
                    raise RuntimeError("the archive did not cover every marker")
                time.sleep(0.1)
            marker_engine.dispose()
        admin.dispose()
    finally:
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)
    p50, p95, p99 = (percentile(lags, share) for share in (50, 95, 99))
    target = args.archive_timeout + PG_LAG_MARGIN
    print(f"  {len(lags)} markers: p50 {p50:.2f} s, p95 {p95:.2f} s, p99 {p99:.2f} s, max {max(lags):.2f} s; "
          f"target max <= {target:.0f} s: {verdict(max(lags) <= target)}")


# ---------------------------------------------------------------- --last-clean


@contextmanager
def searched_at_resolution(resolution_seconds: float):
    """The engine `integrity pitr last-clean` builds, with the given resolution (the one
    stand-in of this section: a one-hour grid over a window of about a minute)."""
    from integrity.pitr import operations

    real = operations.engine_for
    operations.engine_for = lambda settings: dataclasses.replace(real(settings), resolution_seconds=resolution_seconds)
    try:
        yield
    finally:
        operations.engine_for = real


def damage(url: str) -> int:
    """Every stored wpm of 1% of the players multiplied by 5; the rows changed."""
    writer = create_engine(url)
    try:
        with writer.begin() as connection:
            return connection.exec_driver_sql("UPDATE results SET wpm = wpm * 5 WHERE player_id % 100 = 7").rowcount
    finally:
        writer.dispose()


def anchor_seconds(engine, live, moment: datetime, folder: Path) -> tuple[float, float]:
    """One restore as our engine makes it (its `litestream restore` command line, then the
    quick check of the file) and one SQL audit of the copy with every rule."""
    from integrity.backups.verify import audit_copy
    from integrity.db.scratch import require_quick_check

    output = folder / "anchor.db"
    remove_database(output)
    began = time.perf_counter()
    subprocess.run(engine.restore_argv(moment, output), check=True, capture_output=True)
    require_quick_check(output, what="the anchor's restore")
    restored = time.perf_counter()
    with live.beside(f"sqlite:///{output}").reader() as reader, reader.connect() as connection:
        audit_copy(connection)
    audited = time.perf_counter()
    remove_database(output)
    return restored - began, audited - restored


def bench_last_clean(work: Path, args) -> None:
    from integrity import api
    from integrity.db.connect import Database
    from integrity.invocation import Invocation
    from integrity.pitr import engine_for

    players, tests = args.players, args.tests_per_player
    print(f"\n[last-clean] {players:,} players x {tests} tests, {args.clean_seconds:g} s clean then damage then "
          f"{args.after_seconds:g} s of good writes (the game at {args.game_rate:g} results/s)")
    # bench/common.py keeps the database it builds in bench/.work: copied when there (the
    # same simulate command), as this run damages and writes its own copy.
    prebuilt, wal = WORK_DIR / f"bench-{players}x{tests}.db", Path(f"{WORK_DIR / f'bench-{players}x{tests}.db'}-wal")
    if prebuilt.exists() and (not wal.exists() or wal.stat().st_size == 0):  # nothing written to it since it was built
        shutil.copyfile(prebuilt, work / prebuilt.name)
    database = build_sqlite_database(work, players, tests)
    print(f"  database: {database.stat().st_size / 1e6:,.0f} MB")
    home = work / "last-clean"
    home.mkdir()
    settings = sqlite_settings(home, database)
    url = f"sqlite:///{database}"
    with Replication(settings) as replication:
        engine = engine_for(settings)
        with ReplicaWatcher(replication.replica) as watcher:
            wal = WalReader(Path(f"{database}-wal"))
            with GameLoad(url, args.game_rate) as game:
                time.sleep(args.clean_seconds)  # the clean period: a duration of the scenario, not a wait on a condition
                with game.gate:  # the damage's own WAL position, no game write after it
                    damaged_at = datetime.now(UTC)
                    changed = damage(url)
                    damage_committed = datetime.now(UTC)
                    damage_position = wal.position()
                time.sleep(args.after_seconds)
            last = wal.position()
            wait_for(lambda: watcher.covered_at(last), what="the replica to hold every write")
            damage_file = watcher.first_covering(damage_position)
            covered = damage_file.complete_at
        # The newest restorable point holds the damage once a file listed a second later exists.
        wait_for(lambda: engine.window().newest and engine.window().newest.timestamp() >= covered + 1,
                 what="the window to hold the damage")
        window = engine.window()
        span = (window.newest - window.oldest).total_seconds()
        resolution = span / args.window_steps
        print(f"  damage: {changed:,} results rows at {damaged_at:%H:%M:%S.%f} to {damage_committed:%H:%M:%S.%f}Z; "
              f"window {span:.1f} s searched at {resolution * 1000:.1f} ms ({args.window_steps} steps, as a one-hour "
              "window at 1 s)")
        invocation = Invocation(settings, command="pitr last-clean", notify=lambda line: print(f"    {line}", flush=True))
        with searched_at_resolution(resolution):
            began = time.perf_counter()
            report = api.pitr_last_clean(invocation)
            total = time.perf_counter() - began
        # Litestream deletes level-0 files l0-retention (5 min) after compacting them into
        # level 1 (30 s spans stamped with their newest source's time): a restore then lands
        # on level-1 boundaries, and the boundary found is the damage's level-1 file's.
        damage_file_kept = damage_file.path.exists()
        if report.found is None:
            raise RuntimeError(f"last-clean found no clean moment: {report.error}")
        live = Database.of(settings)
        restores, audits, checks = [], [], []
        for _ in range(args.repeats):
            restore_seconds, audit_seconds = anchor_seconds(engine, live, report.found, home)
            restores.append(restore_seconds)
            audits.append(audit_seconds)
            began = time.perf_counter()
            engine.window()
            checks.append(time.perf_counter() - began)
        if replication.deaths:
            print(f"  Litestream died during the run: {replication.deaths}")
    anchor = statistics.median(restores) + statistics.median(audits)
    probe_seconds = sum(probe.seconds for probe in report.bisection.probes)
    after = report.after.seconds if report.after is not None else 0.0
    made = datetime.fromtimestamp(damage_file.made_at, UTC)
    print(f"  found {report.found:%H:%M:%S.%f}Z, first dirty {report.first_dirty:%H:%M:%S.%f}Z; the damage's replica "
          f"file was made at {made:%H:%M:%S.%f}Z ({(made - damage_committed).total_seconds():.3f} s after its commit), "
          f"{(made - report.found).total_seconds():.4f} s after the moment found; bound {report.bisection.bound} "
          f"for {report.bisection.steps} steps")
    if not damage_file_kept:
        print("  (the damage's level-0 file was gone by the end of the search: Litestream's l0-retention, 5 min, had removed "
              "it after compaction, so restores landed on level-1 files, 30 s spans stamped with their newest source's time)")
    restored = [p for p in report.bisection.probes if p.role != "confirm"]
    every_rule = [p.audit_seconds for p in report.bisection.probes if p.audited_rules is None]
    signature = [p.audit_seconds for p in report.bisection.probes if p.audited_rules is not None]
    print(f"  last-clean total {total:.1f} s: {report.restores} restores and {len(report.bisection.probes)} audits of the archive "
          f"{probe_seconds:.1f} s (restore {statistics.mean(p.restore_seconds for p in restored):.2f} s mean; "
          f"{len(every_rule)} audits of every rule {sum(every_rule):.1f} s, {len(signature)} of the damage's rules "
          f"{sum(signature):.1f} s), salvage dry run {after:.1f} s, the rest {total - probe_seconds - after:.1f} s")
    if report.live_audit is not None:
        print(f"  live audited first with every rule in {report.live_audit.seconds:.1f} s: the probes' rules "
              f"{', '.join(report.live_audit.signature) or '(none: every rule until a probe is dirty)'}")
    print(f"  anchor: one litestream restore {statistics.median(restores):.2f} s + one SQL audit "
          f"{statistics.median(audits):.2f} s = {anchor:.2f} s (median of {args.repeats}); a window check alone "
          f"(litestream ltx + status) {statistics.median(checks):.2f} s")
    print(f"  restores {report.restores}; target <= {RESTORES_TARGET}: {verdict(report.restores <= RESTORES_TARGET)}")
    print(f"  total {total / anchor:.1f}x the anchor; target < {ANCHOR_MULTIPLE_TARGET:.0f}x: "
          f"{verdict(total / anchor < ANCHOR_MULTIPLE_TARGET)}")


# ---------------------------------------------------------------- main

SECTIONS = ("lag", "overhead", "pg-lag", "last-clean")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument("--smoke", action="store_true", help="small sizes everywhere: a quick look, not the figures")
    parser.add_argument("--players", type=int, default=20_000, help="last-clean database")
    parser.add_argument("--tests-per-player", type=int, default=10, help="last-clean database")
    parser.add_argument("--load-players", type=int, default=5_000, help="overhead: simulate's size (lag: a quarter)")
    parser.add_argument("--load-tests-per-player", type=int, default=65)
    parser.add_argument("--samples", type=int, default=120, help="lag markers per load")
    parser.add_argument("--marker-interval", type=float, default=0.2)
    parser.add_argument("--game-rate", type=float, default=20.0, help="results/s the game writes")
    parser.add_argument("--archive-timeout", type=int, default=5)
    parser.add_argument("--clean-seconds", type=float, default=20.0)
    parser.add_argument("--after-seconds", type=float, default=8.0)
    parser.add_argument("--window-steps", type=int, default=3600)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    sections = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    if args.smoke:
        args.players, args.tests_per_player = 2_000, 5
        args.load_players, args.load_tests_per_player = 1_000, 20
        args.samples, args.repeats = 20, 1
        args.clean_seconds, args.after_seconds = 4.0, 3.0
    print(machine_line())
    from integrity.pitr.litestream import locate_litestream

    done = subprocess.run([str(locate_litestream()), "version"], capture_output=True, text=True)
    print(f"litestream {done.stdout.strip()}; load on the machine: {os.getloadavg()[0]:.1f} (1 min average)")

    work = WORK_DIR / f"pitr-{os.getpid()}"
    work.mkdir(parents=True)
    try:
        template = make_template(work / "template.db")
        if "lag" in sections:
            bench_lag(work, template, args)
        if "overhead" in sections:
            bench_overhead(work, template, args)
        if "pg-lag" in sections:
            bench_pg_lag(work, args)
        if "last-clean" in sections:
            bench_last_clean(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if WORK_DIR.exists() and not any(WORK_DIR.iterdir()):
            WORK_DIR.rmdir()
    print(f"\nload on the machine at the end: {os.getloadavg()[0]:.1f} (1 min average)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
