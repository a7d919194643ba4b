"""Shared helpers of the backup tests (test_backups_*.py): settings, the CLI as a real
subprocess, databases filled with consistent game data, a background writer process,
and small tools to damage or re-date backups on disk.

Run as a script (`python backup_helpers.py writer URL READY_FILE`) it is the background
writer: it records one result through the game's store about every 20 ms until SIGTERM,
then prints how many it committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
HELPERS = Path(__file__).resolve()
SECRET = "s3cr3t-Backup-pw"
CRASH_PHASES = (
    "create:started",
    "create:copied",
    "create:compressed",
    "create:manifest-written",
    "create:verified",
    "create:renamed",
)


def _console_script() -> list[str]:
    script = Path(sys.executable).parent / "integrity"
    return [str(script)] if script.exists() else [sys.executable, "-m", "integrity.cli"]


INTEGRITY = _console_script()


# ---------------------------------------------------------------- settings and the CLI


@dataclass
class BackupEnv:
    """One test's world: a database URL, a data directory and a repository under tmp_path."""

    tmp_path: Path
    url: str
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        # What `integrity init` does: only init creates a repository (a missing one is exit 4).
        self.repo.mkdir(parents=True, exist_ok=True)

    @property
    def repo(self) -> Path:
        return self.tmp_path / "repo"

    @property
    def data_home(self) -> Path:
        return self.tmp_path / "xdg-data"

    def environ(self, **extra: str) -> dict[str, str]:
        """The INTEGRITY_* layer of this test (what `settings()` and `run()` both see)."""
        return {
            "XDG_DATA_HOME": str(self.data_home),
            "INTEGRITY_BACKUPS__REPOSITORY": str(self.repo),
            **self.extra_env,
            **extra,
        }

    def settings(self, **extra: str):
        from integrity.settings import resolve_settings

        return resolve_settings(environ=self.environ(**extra), cwd=self.tmp_path, database_url_option=self.url)

    def process_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRITY_")}
        env.update(self.environ(**extra))
        env["INTEGRITY_DATABASE_URL"] = self.url
        # The project first on the path: an editable install made before a package got its
        # __init__.py maps it as a namespace package outside the project directory.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))
        env["COLUMNS"] = "250"
        return env

    def popen(self, *args: str, env: dict[str, str] | None = None, **extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*INTEGRITY, *args], cwd=self.tmp_path, env=env or self.process_env(**extra),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def run(self, *args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess:
        """`integrity ARGS` as a real subprocess; never a traceback, whatever the outcome."""
        completed = subprocess.run(
            [*INTEGRITY, *args], cwd=self.tmp_path, env=self.process_env(**extra),
            capture_output=True, text=True, timeout=timeout,
        )
        assert "Traceback" not in completed.stderr + completed.stdout, completed.stderr
        return completed

    def run_json(self, *args: str, **extra: str) -> tuple[int, dict]:
        completed = self.run("--json", *args, **extra)
        return completed.returncode, json.loads(completed.stdout)

    def invoke(self, *args: str, **extra: str):
        """`integrity ARGS` in this process (typer's CliRunner): the fast path for tests
        where the process boundary does not matter. `.returncode` like a subprocess."""
        from cli_runner import CliRunner
        from integrity.cli import app

        env = {k: None for k in os.environ if k.startswith("INTEGRITY_")}
        env.update(self.environ(**extra))
        env["INTEGRITY_DATABASE_URL"] = self.url
        env["COLUMNS"] = "250"
        result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
        result.returncode = result.exit_code
        assert "Traceback" not in result.output, result.output
        return result

    def invoke_json(self, *args: str, **extra: str) -> tuple[int, dict]:
        result = self.invoke("--json", *args, **extra)
        return result.exit_code, json.loads(result.stdout)

    # ---------------------------------------------------------- the repository

    def repository(self):
        from integrity.backups.repository import Repository

        return Repository(self.repo)

    def listed(self) -> dict[str, dict]:
        """`backup list --json`: each backup's document by id."""
        code, document = self.invoke_json("backup", "list")
        assert code == 0, document
        return {backup["id"]: backup for backup in document["result"]["backups"]}

    def listed_ids(self) -> list[str]:
        return list(self.listed())

    def latest(self) -> str:
        """The backup `restore latest` would restore."""
        code, document = self.invoke_json("restore", "latest", "--dry-run")
        assert code == 0, document
        return document["result"]["backup_id"]

    def create(self, *args: str, suspect: bool = False, **extra: str) -> str:
        """A backup through the CLI; returns its id. `suspect`: expect it written but
        implausible (exit 3 with its reasons)."""
        code, document = self.invoke_json("backup", "create", *args, **extra)
        assert code == (3 if suspect else 0), document
        assert bool(document["result"]["manifest"]["suspect_reasons"]) == suspect, document
        return document["result"]["manifest"]["id"]

    def journal_events(self, backup_id: str) -> list[str]:
        return [entry.event for entry in self.repository().journal() if entry.backup_id == backup_id]


def error_lines(completed) -> list[str]:
    return [line for line in completed.stderr.splitlines() if line.startswith("Error:")]


def one_error(completed) -> str:
    """The one `Error:` line (and no traceback) of a failed command, without its prefix."""
    lines = error_lines(completed)
    assert len(lines) == 1, completed.stderr
    assert "Traceback" not in completed.stderr
    return lines[0].removeprefix("Error: ")


def with_password(url: str, password: str = SECRET) -> str:
    """The URL with a password the trust-auth test server never asks for."""
    import sqlalchemy as sa

    return sa.make_url(url).set(password=password).render_as_string(hide_password=False)


# ---------------------------------------------------------------- game data


def _engine(url: str):
    from game_core.db import create_engine

    return create_engine(url)


def result_rows(rng: random.Random, player_id: int, count: int, start: datetime) -> list[dict]:
    """`count` results of one player consistent with game_core.metrics, a minute apart."""
    from game_core import metrics

    rows = []
    for index in range(count):
        mode = rng.choice(("words", "time"))
        mode_param = rng.choice((10, 25, 50) if mode == "words" else (15, 30, 60))
        duration_ms = rng.randint(15_000, 60_000)
        typed = max(5, int(rng.uniform(30, 120) * 5 * duration_ms / 60_000))
        correct_spaces = typed // 6
        correct_word_chars = typed - correct_spaces
        correct_chars = correct_word_chars + rng.randint(0, 10)
        incorrect_chars = rng.randint(0, 10)
        extra_chars = rng.randint(0, 3)
        missed_chars = rng.randint(0, 3)
        correct_keystrokes = correct_chars + correct_spaces
        incorrect_keystrokes = incorrect_chars + extra_chars
        started_at = start + timedelta(minutes=index, microseconds=rng.randint(0, 999_999))
        rows.append({
            "player_id": player_id,
            "mode": mode,
            "mode_param": mode_param,
            "started_at": started_at,
            "duration_ms": duration_ms,
            "correct_word_chars": correct_word_chars,
            "correct_spaces": correct_spaces,
            "correct_chars": correct_chars,
            "incorrect_chars": incorrect_chars,
            "extra_chars": extra_chars,
            "missed_chars": missed_chars,
            "correct_keystrokes": correct_keystrokes,
            "incorrect_keystrokes": incorrect_keystrokes,
            "wpm": metrics.wpm(correct_word_chars, correct_spaces, duration_ms),
            "raw_wpm": metrics.raw_wpm(correct_chars, incorrect_chars, extra_chars, correct_spaces, duration_ms),
            "accuracy": metrics.accuracy(correct_keystrokes, incorrect_keystrokes),
            "xp": metrics.result_xp(correct_word_chars, correct_spaces, correct_keystrokes, incorrect_keystrokes),
            "metrics_version": metrics.METRICS_VERSION,
            "created_at": started_at + timedelta(milliseconds=duration_ms),
        })
    return rows


def fill_database(url: str, *, players: int = 10, results_per_player: int = 20, seed: int = 0, prefix: str = "p") -> dict[str, int]:
    """Insert players and results, then rebuild progress and personal bests from them, so
    the audits pass. Returns the row counts afterwards."""
    import sqlalchemy as sa

    from game_core.rebuild import rebuild_derived
    from game_core.schema import GAME_TABLES
    from game_core.schema import players as players_table
    from game_core.schema import results as results_table

    rng = random.Random(seed)
    start = datetime.now(timezone.utc) - timedelta(days=30)
    engine = _engine(url)
    try:
        with engine.begin() as connection:
            ids = []
            for number in range(players):
                ids.append(connection.execute(
                    players_table.insert()
                    .values(username=f"{prefix}{seed}_{number}", created_at=start - timedelta(days=1))
                    .returning(players_table.c.id)
                ).scalar_one())
            batch: list[dict] = []
            for player_id in ids:
                batch += result_rows(rng, player_id, results_per_player, start)
                if len(batch) >= 20_000:
                    connection.execute(results_table.insert(), batch)
                    batch = []
            if batch:
                connection.execute(results_table.insert(), batch)
            rebuild_derived(connection)
        with engine.connect() as connection:
            return {t: connection.execute(sa.text(f'SELECT COUNT(*) FROM "{t}"')).scalar_one() for t in GAME_TABLES}
    finally:
        engine.dispose()


def fill_large_sqlite(url: str, *, copies: int = 12, seed: int = 0) -> dict[str, int]:
    """A database of some 50 MB in seconds: 20,000 consistent results, then copied in SQL
    to `copies` more sets of players (the copies keep every column, with new player ids),
    then the derived tables rebuilt."""
    import sqlalchemy as sa

    from game_core.rebuild import rebuild_derived
    from game_core.schema import GAME_TABLES

    fill_database(url, players=10, results_per_player=2000, seed=seed)
    columns = (
        "mode, mode_param, started_at, duration_ms, correct_word_chars, correct_spaces, correct_chars, "
        "incorrect_chars, extra_chars, missed_chars, correct_keystrokes, incorrect_keystrokes, wpm, raw_wpm, "
        "accuracy, xp, metrics_version, created_at"
    )
    engine = _engine(url)
    try:
        with engine.begin() as connection:
            base = connection.execute(sa.text("SELECT MAX(id) FROM players")).scalar_one()
            for copy in range(1, copies + 1):
                offset = copy * base
                connection.execute(sa.text(
                    f"INSERT INTO players (id, username, created_at) "
                    f"SELECT id + {offset}, username || '_c{copy}', created_at FROM players WHERE id <= {base}"
                ))
                connection.execute(sa.text(
                    f"INSERT INTO results (player_id, {columns}) "
                    f"SELECT player_id + {offset}, {columns} FROM results WHERE player_id <= {base}"
                ))
            rebuild_derived(connection)
        with engine.connect() as connection:
            return {t: connection.execute(sa.text(f'SELECT COUNT(*) FROM "{t}"')).scalar_one() for t in GAME_TABLES}
    finally:
        engine.dispose()


def execute(url: str, *statements: str, **params) -> None:
    """Run SQL on the live database (as the game would), committed."""
    import sqlalchemy as sa

    engine = _engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(sa.text(statement), params)
    finally:
        engine.dispose()


def scalar(url: str, query: str):
    import sqlalchemy as sa

    engine = _engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(query)).scalar()
    finally:
        engine.dispose()


def live_statistics(url: str) -> dict[str, dict]:
    from integrity.backups.statistics import table_statistics

    engine = _engine(url)
    try:
        with engine.connect() as connection:
            return table_statistics(connection)
    finally:
        engine.dispose()


# ---------------------------------------------------------------- the background writer


@dataclass
class WriterHandle:
    process: subprocess.Popen
    committed: int | None = None  # known once stopped


@contextmanager
def writer_process(url: str, tmp_path: Path, *, min_commits: int, mode: str = "writer") -> Iterator[subprocess.Popen]:
    """Run `python backup_helpers.py MODE URL READY_FILE MIN_COMMITS`; yield once it has committed
    `min_commits` (it creates READY_FILE then); on exit stop it with SIGTERM, require
    exit status 0 and leave its standard output in `process.output`."""
    ready = tmp_path / f"writer-ready-{os.getpid()}-{time.monotonic_ns()}"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), str(PROJECT / "tests"), os.environ.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, str(HELPERS), mode, url, str(ready), str(min_commits)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if process.poll() is not None:
                raise AssertionError(f"the writer died: {process.stderr.read()}")
            if time.monotonic() > deadline:
                raise AssertionError("the writer did not start committing within 60 s")
            time.sleep(0.02)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    process.output = out


@contextmanager
def background_writer(url: str, tmp_path: Path, *, min_commits: int = 3) -> Iterator[WriterHandle]:
    """A separate process that commits one result (and its progress) every ~20 ms.

    Yields once it has committed `min_commits`; on exit stops it with SIGTERM and records
    how many it committed in `handle.committed`.
    """
    with writer_process(url, tmp_path, min_commits=min_commits) as process:
        handle = WriterHandle(process)
        yield handle
    handle.committed = int(process.output.strip().splitlines()[-1])


def _writer_main(url: str, ready: str, min_commits: int, *, reconnect: bool = False) -> None:
    """Record results until SIGTERM; print how many were committed. With `reconnect` a
    failed write (the session ended, the database renamed by a restore) is counted and
    the writer reconnects; it prints "committed failed"."""
    import sqlalchemy as sa

    from game_core.db import create_engine
    from game_core.errors import Failure
    from game_core.store import Store, TestOutcome

    stop = False

    def on_term(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    engine = create_engine(url)
    store = Store(engine)
    username = f"writer{os.getpid()}"
    store.get_or_create_player(username)
    rng = random.Random(os.getpid())
    committed = failed = 0
    while not stop:
        typed = rng.randint(50, 300)
        spaces = typed // 6
        outcome = TestOutcome(
            mode="time", mode_param=30, started_at=datetime.now(timezone.utc), duration_ms=30_000,
            correct_word_chars=typed - spaces, correct_spaces=spaces, correct_chars=typed - spaces + 2,
            incorrect_chars=2, extra_chars=0, missed_chars=1, correct_keystrokes=typed + 2, incorrect_keystrokes=2,
        )
        try:
            store.record_result(username, outcome)
        except (sa.exc.DBAPIError, Failure):
            if not reconnect:
                raise
            failed += 1
            engine.dispose()
            time.sleep(0.05)
            continue
        committed += 1
        if committed == min_commits:
            Path(ready).write_text("ready")
        time.sleep(0.02)
    engine.dispose()
    print(*((committed, failed) if reconnect else (committed,)), flush=True)


# ---------------------------------------------------------------- backups on disk


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def flip_byte(path: Path, rng: random.Random, offset: int | None = None) -> int:
    """XOR one byte (at `offset`, else a random one) with a random non-zero mask."""
    data = bytearray(path.read_bytes())
    where = rng.randrange(len(data)) if offset is None else offset
    data[where] ^= rng.randint(1, 255)
    path.write_bytes(bytes(data))
    return where


def write_manifest(directory: Path, manifest) -> None:
    """Replace a backup's manifest and its hash (for tests that forge consistent backups)."""
    from integrity.backups.repository import MANIFEST, MANIFEST_HASH, sha256_bytes

    data = manifest.to_json()
    (directory / MANIFEST).write_bytes(data)
    (directory / MANIFEST_HASH).write_text(f"{sha256_bytes(data)}  {MANIFEST}\n")


def clone_backup(repository, source_id: str, when: datetime, *, journal: bool = True) -> str:
    """A copy of a real backup re-dated to `when`: a valid backup with a chosen timestamp."""
    from dataclasses import replace

    from integrity.backups.repository import new_backup_id

    manifest = repository.read_manifest(source_id)
    new_id = new_backup_id(when)
    target = repository.path_of(new_id)
    shutil.copytree(repository.path_of(source_id), target)
    write_manifest(target, replace(manifest, id=new_id, created_at=when.astimezone(timezone.utc).isoformat(timespec="seconds")))
    if journal:
        repository.append(new_id, "intact", {"by": "test"})
    return new_id


def restore_sqlite_copy(repository, backup_id: str, destination: Path) -> Path:
    """Decompress a SQLite backup's data file (hashes checked) into `destination`."""
    from integrity.backups.archive import decompress_to

    manifest = repository.read_manifest(backup_id)
    entry = manifest.files[0]
    with destination.open("xb") as handle:
        decompress_to(repository.path_of(backup_id) / entry.name, entry, handle.write, backup_id=backup_id)
    return destination


def wait_for(predicate, *, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] in ("writer", "resilient-writer"):
        _writer_main(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 3,
                     reconnect=sys.argv[1] == "resilient-writer")
    else:
        sys.exit("usage: backup_helpers.py writer|resilient-writer URL READY_FILE [MIN_COMMITS]")
