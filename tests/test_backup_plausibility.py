"""Plausibility when a backup is taken (issue 13, findings 2 and 3): a backup can be intact,
every hash right, and still useless. Each misconfiguration the incident's replay found is
reproduced for real and must make `backup create` exit 3 with the reason in the manifest,
show as SUSPECT, and never be what `latest` (restore, drill) picks:

- a schema-only PostgreSQL dump (a `pg_dump` wrapper first on PATH that adds
  `--schema-only`, the way a job's wrapper script or alias misconfigures it);
- a stale copy of the database carrying the same store identity;
- rows dropping beyond `[backups] shrink_tolerance`, data beyond `size_drop_tolerance`.

And `backup create` refuses what is not the game's database at all (exit 4, the source
untouched, nothing in the repository), and a repository that does not exist (an
unmounted share) is exit 4 for every command that writes or restores, until `integrity
init` creates it; `backup check` names the file systems, so an unmounted share shows.
Every check is shown failing on a fixture that breaks it, beside a control that passes.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from backup_helpers import BackupEnv, execute, fill_database, one_error, scalar
from conftest import drop_pg_database, pg_url_for
from restore_helpers import content
from test_backups_cli import small_filesystem  # noqa: F401  (the fixture: a tmpfs of a chosen size)


@pytest.fixture
def env(database_url, tmp_path) -> BackupEnv:
    fill_database(database_url, players=10, results_per_player=20)
    return BackupEnv(tmp_path, database_url)


def _created(env: BackupEnv, **extra: str) -> tuple[int, dict]:
    """`backup create` through the CLI: its exit code and manifest."""
    code, document = env.invoke_json("backup", "create", **extra)
    assert code in (0, 3), document
    return code, document["result"]["manifest"]


def _listed_states(env: BackupEnv) -> dict[str, list[str]]:
    return {backup_id: backup["states"] for backup_id, backup in env.listed().items()}


def _play_one_test(url: str, username: str = "latecomer") -> None:
    """What the game does when someone finishes a test: a new player and result, saved
    through the game's own store (progress and personal best updated with it)."""
    from game_core.db import create_engine
    from game_core.store import Store, TestOutcome

    engine = create_engine(url)
    try:
        store = Store(engine)
        store.get_or_create_player(username)
        store.record_result(username, TestOutcome(
            mode="time", mode_param=30, started_at=datetime.now(timezone.utc), duration_ms=30_000,
            correct_word_chars=250, correct_spaces=50, correct_chars=252, incorrect_chars=2, extra_chars=0,
            missed_chars=1, correct_keystrokes=302, incorrect_keystrokes=2,
        ))
    finally:
        engine.dispose()


# ---------------------------------------------------------------- a schema-only dump


@pytest.fixture
def schema_only_path(tmp_path) -> str:
    """PATH with a `pg_dump` first that execs the real one with `--schema-only` appended
    (after the arguments, so that `pg_dump --version` still answers)."""
    from integrity.db.pg_tools import find_tool

    real = find_tool("pg_dump")
    assert real, "pg_dump is needed for the PostgreSQL tests"
    wrapper = tmp_path / "misconfigured-bin" / "pg_dump"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec "{real}" "$@" --schema-only\n')
    wrapper.chmod(0o755)
    return f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}"


@pytest.fixture
def schema_only_backup(tmp_path, pg_url, schema_only_path) -> tuple[BackupEnv, str, dict]:
    """A good backup, then one taken through the misconfigured pg_dump: (env, the good
    one's id, the schema-only one's manifest)."""
    fill_database(pg_url, players=10, results_per_player=20)
    env = BackupEnv(tmp_path, pg_url)
    good = env.create()  # the control: the real pg_dump's backup is plausible
    code, manifest = _created(env, PATH=schema_only_path)
    assert code == 3, manifest
    return env, good, manifest


@pytest.mark.postgres
def test_a_schema_only_dump_is_suspect_and_shown(schema_only_backup):
    env, good, manifest = schema_only_backup
    empty = manifest["id"]
    # The manifest still claims the rows (counted in the dump's snapshot): only the
    # dump's table of contents shows they are not in it.
    assert manifest["tables"]["results"]["rows"] == 200
    reasons = manifest["suspect_reasons"]
    for table, rows in (("players", 10), ("results", 200), ("progress", 10)):
        assert f"{table}: the backup holds no data for its {rows} rows (a schema-only or filtered dump?)" in reasons, reasons

    # Shown wherever an engineer looks.
    states = _listed_states(env)
    assert "SUSPECT" in states[empty] and "SUSPECT" not in states[good]
    listed = env.invoke("backup", "list")
    assert any(empty in line and "SUSPECT" in line for line in listed.stdout.splitlines()), listed.stdout
    shown = env.invoke("backup", "show", empty)
    assert shown.returncode == 0 and "(intact, SUSPECT)" in shown.stdout, shown.stdout
    assert "suspect   results: the backup holds no data for its 200 rows" in shown.stdout, shown.stdout
    code, document = env.invoke_json("backup", "show", empty)
    assert document["result"]["manifest"]["suspect_reasons"] == reasons
    assert "SUSPECT" in document["result"]["states"]
    assert env.latest() == good


@pytest.mark.postgres
def test_a_schema_only_dump_is_never_drilled_nor_restored(schema_only_backup):
    env, good, manifest = schema_only_backup
    code, document = env.invoke_json("drill")
    assert document["result"]["backup_id"] == good, document
    # Named by id, the dry run's restored copy shows it empty (the replay's plan showed
    # "after restore 6,909 rows" beside "brought back 0"): exit 5, not a plan.
    result = env.invoke("restore", manifest["id"], "--dry-run")
    assert result.returncode == 5, result.output
    message = one_error(result)
    assert "does not hold what its manifest says" in message and "players: 0 rows, the manifest says 10" in message


def _findings(env: BackupEnv, **extra: str) -> tuple[int, dict[str, dict]]:
    code, document = env.invoke_json("backup", "check", **extra)
    return code, {finding["name"]: finding for finding in document["result"]["findings"]}


@pytest.mark.postgres
def test_backup_check_fails_plausibility_with_the_schema_only_pg_dump(tmp_path, pg_url, schema_only_path):
    fill_database(pg_url, players=5, results_per_player=10)
    env = BackupEnv(tmp_path, pg_url)
    env.create()
    code, findings = _findings(env)
    assert code == 0, findings
    assert findings["plausibility"]["state"] == "ok"

    code, findings = _findings(env, PATH=schema_only_path)
    assert code == 4, findings
    assert findings["trial backup"]["state"] == "ok"  # it wrote, read back and removed a backup: intact...
    detail = findings["plausibility"]["detail"]  # ...and useless
    assert findings["plausibility"]["state"] == "fail"
    assert detail.startswith("a backup taken now would be SUSPECT: ")
    assert "results: the backup holds no data for its 50 rows" in detail and "pg_dump on PATH" in detail
    assert len(env.listed_ids()) == 1  # the trial backup was removed


# ---------------------------------------------------------------- a stale copy


def _sqlite_copy(source: Path, destination: Path) -> None:
    """A consistent copy of a SQLite file (WAL included) through the backup API."""
    reader, writer = sqlite3.connect(source), sqlite3.connect(destination)
    try:
        reader.backup(writer)
    finally:
        reader.close()
        writer.close()


def _stale_copy(env: BackupEnv, request) -> str:
    """A copy of the database as it is now, with the same store identity: a SQLite file
    copied with the backup API, a PostgreSQL database created from it as a template."""
    if env.url.startswith("sqlite"):
        source = Path(sa.make_url(env.url).database)
        copy = env.tmp_path / "old-copy.db"
        _sqlite_copy(source, copy)
        return f"sqlite:///{copy}"
    admin = request.getfixturevalue("pg_admin")
    name = f"tg_stale_{uuid.uuid4().hex[:12]}"
    live = sa.make_url(env.url).database
    # A template must have no sessions; a closed client's backend ends asynchronously.
    deadline = time.monotonic() + 10
    while True:
        try:
            with admin.connect() as connection:
                connection.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{live}"'))
            break
        except sa.exc.OperationalError as exc:
            if "being accessed by other users" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    request.addfinalizer(lambda: drop_pg_database(admin, name))
    return pg_url_for(name)


def test_a_stale_copy_with_the_same_identity_is_suspect_and_never_latest(env, request):
    stale_url = _stale_copy(env, request)
    _play_one_test(env.url)  # the game writes on; the copy stays behind
    good = env.create()
    assert scalar(stale_url, "SELECT identity_uuid FROM store_identity") == scalar(env.url, "SELECT identity_uuid FROM store_identity")

    # The backup job pointed at the old copy (a wrong path or database name in its config).
    job = BackupEnv(env.tmp_path, stale_url)
    code, manifest = _created(job)
    assert code == 3, manifest
    reasons = manifest["suspect_reasons"]
    # No table lost more than the tolerance (one player of 11): only its age and source give it away.
    assert not any("shrink_tolerance" in r or "size_drop_tolerance" in r for r in reasons), reasons
    stale = [r for r in reasons if r.endswith("(a stale copy?)")]
    assert {r.split(":")[0] for r in stale} >= {"players", "results", "progress"}, reasons
    assert all(f"is older than backup {good}'s" in r for r in stale)
    (source,) = [r for r in reasons if r.startswith("taken from ")]
    assert f"the previous backup {good} from" in source

    assert env.latest() == good
    assert "SUSPECT" in _listed_states(env)[manifest["id"]]


def test_a_stale_file_back_at_the_configured_path_is_suspect_for_its_age_alone(tmp_path, sqlite_url):
    """The source check cannot see this one (same path, same identity): an old file copied
    back over the database. Only the newest rows give it away."""
    fill_database(sqlite_url, players=10, results_per_player=20)
    live = Path(sa.make_url(sqlite_url).database)
    env = BackupEnv(tmp_path, sqlite_url)
    old = tmp_path / "old.db"
    _sqlite_copy(live, old)
    _play_one_test(sqlite_url)
    good = env.create()  # the control: newer rows, plausible

    _sqlite_copy(old, live)  # the old data back under the configured path
    code, manifest = _created(env)
    assert code == 3, manifest
    reasons = manifest["suspect_reasons"]
    assert reasons and all(r.endswith("(a stale copy?)") for r in reasons), reasons
    assert {r.split(":")[0] for r in reasons} >= {"players", "results", "progress"}
    assert env.latest() == good
    # status and metrics measure the RPO on the good one and say the newest is suspect.
    _, document = env.invoke_json("status")
    checks = {check["name"]: check for check in document["result"]["checks"]}
    assert checks["newest good backup"]["detail"].startswith(f"{good}, ")
    assert checks["suspect backups"]["state"] == "problem"
    assert checks["suspect backups"]["detail"].startswith(
        f"1 backup(s) newer than the newest restorable one are suspect, the newest {manifest['id']}: players: newest row")
    metrics = env.invoke("metrics").stdout.splitlines()
    assert "integrity_backups_suspect 1" in metrics
    good_at = datetime.fromisoformat(env.listed()[good]["created_at"]).timestamp()
    assert f"integrity_backup_newest_good_timestamp_seconds {good_at:.0f}" in metrics


def test_a_backups_time_is_the_moment_its_id_names(tmp_path, sqlite_url):
    """A backup has one time. Its id was read before the copy and `created_at` after it, so
    a backup taken across a second boundary carried a `created_at` equal to the next
    backup's, and `status`, which finds the suspect backups newer than the newest good one
    by `created_at`, missed a suspect backup taken right after a good one (seen once in
    every few runs of the stale-file test above). A pause after the id is chosen makes the
    copy cross the boundary every time."""
    from integrity.backups.repository import backup_time

    fill_database(sqlite_url, players=3, results_per_player=5)
    env = BackupEnv(tmp_path, sqlite_url)
    code, manifest = _created(env, INTEGRITY_PAUSE_AT="create:started=1.2")
    assert code == 0, manifest
    assert datetime.fromisoformat(manifest["created_at"]) == backup_time(manifest["id"])
    assert env.listed()[manifest["id"]]["created_at"] == manifest["created_at"]


# ---------------------------------------------------------------- shrinking rows and data


def _rebuild(url: str) -> None:
    from game_core.db import create_engine
    from game_core.rebuild import rebuild_derived

    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            rebuild_derived(connection)
    finally:
        engine.dispose()


# Never the newest result: results are append-only, and a newest row older than the
# previous backup's is the stale-copy check's business, not the shrink check's.
DELETE_OLDER = "DELETE FROM results WHERE {keep} AND created_at < (SELECT MAX(created_at) FROM results)"


def test_rows_dropping_beyond_shrink_tolerance_make_a_backup_suspect(env):
    good = env.create()
    execute(env.url, DELETE_OLDER.format(keep="id % 5 = 1"))  # 40 of 200 results: 20%
    _rebuild(env.url)
    remaining = scalar(env.url, "SELECT COUNT(*) FROM results")
    assert remaining == 160

    code, manifest = _created(env)
    assert code == 3, manifest
    assert f"results: 200 -> 160 rows since backup {good} (more than shrink_tolerance 10%)" in manifest["suspect_reasons"]
    assert env.latest() == good

    # The same data under a tolerance of 30% is plausible: the setting is what decides.
    code, manifest = _created(env, INTEGRITY_BACKUPS__SHRINK_TOLERANCE="0.3")
    assert code == 0 and manifest["suspect_reasons"] == [], manifest
    assert env.latest() == manifest["id"]


def test_data_size_dropping_beyond_size_drop_tolerance_makes_a_backup_suspect(database_url, tmp_path):
    fill_database(database_url, players=20, results_per_player=100)
    env = BackupEnv(tmp_path, database_url)
    good = env.create()
    execute(database_url, DELETE_OLDER.format(keep="id % 10 <> 0"))  # 90% of the results
    _rebuild(database_url)
    if database_url.startswith("sqlite"):
        # Deleted rows leave free pages; the file (the SQLite backup's data) shrinks only by VACUUM.
        vacuum = sqlite3.connect(sa.make_url(database_url).database)
        vacuum.execute("VACUUM")
        vacuum.close()
    # A shrink tolerance of 100% switches the row check off: only the size speaks.
    lenient_rows = {"INTEGRITY_BACKUPS__SHRINK_TOLERANCE": "1.0"}

    code, manifest = _created(env, **lenient_rows)
    assert code == 3, manifest
    (reason,) = manifest["suspect_reasons"]
    assert reason.startswith("data ") and reason.endswith(f"since backup {good} (more than size_drop_tolerance 50%)"), reason
    assert env.latest() == good

    code, manifest = _created(env, **lenient_rows, INTEGRITY_BACKUPS__SIZE_DROP_TOLERANCE="0.95")
    assert code == 0 and manifest["suspect_reasons"] == [], manifest


# ---------------------------------------------------------------- not the game's database


def _other_application(path: Path) -> None:
    """Another program's SQLite database, in its own (rollback journal) mode."""
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    connection.execute("INSERT INTO notes (body) VALUES ('buy milk')")
    connection.commit()
    connection.close()


SOURCES = {
    "empty-file": lambda path: path.write_bytes(b""),
    "text-file": lambda path: path.write_text("players,results\n10,200\n"),
    "directory": lambda path: path.mkdir(),
    "another-applications-sqlite": _other_application,
}


def _snapshot(path: Path) -> dict[str, bytes | None]:
    """Every entry beside and under `path` (a -wal or -shm appearing shows up) and its bytes."""
    return {str(p): (p.read_bytes() if p.is_file() else None) for p in sorted(path.parent.rglob("*"))}


def _repository_untouched(env: BackupEnv) -> None:
    # The writer lock's directory may be there; no backup, leftover or journal entry is.
    assert [p.name for p in env.repo.iterdir() if p.name != "locks"] == []


@pytest.mark.parametrize("kind", SOURCES)
def test_backup_create_refuses_a_source_that_is_not_a_game_database(tmp_path, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)  # in this process (CliRunner), from the test's directory as a subprocess would be
    source_dir = tmp_path / "source"
    source_dir.mkdir()
    source = source_dir / "game.db"
    SOURCES[kind](source)
    before = _snapshot(source)
    env = BackupEnv(tmp_path, f"sqlite:///{source}")

    result = env.invoke("backup", "create")
    assert result.returncode == 4, result.output
    assert one_error(result) == (
        f"{source} is not the typing game's database (no store identity or schema revision); "
        "check --database-url / [database] url, or run `integrity init` on an empty database"
    )
    _repository_untouched(env)
    assert _snapshot(source) == before  # same bytes, no -wal or -shm beside it


def test_backup_create_refuses_dev_null(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = BackupEnv(tmp_path, "sqlite:////dev/null")
    result = env.invoke("backup", "create")
    assert result.returncode == 4, result.output
    assert one_error(result).startswith("/dev/null is not the typing game's database")
    _repository_untouched(env)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode) and not os.path.exists("/dev/null-wal")


def test_the_refusal_fails_when_the_file_is_the_game_database(tmp_path, monkeypatch, sqlite_url):
    """The control of the refusals above: the same command on the game's file works."""
    monkeypatch.chdir(tmp_path)
    fill_database(sqlite_url, players=2, results_per_player=3)
    env = BackupEnv(tmp_path, sqlite_url)
    result = env.invoke("backup", "create")
    assert result.returncode == 0, result.output
    assert len(env.listed_ids()) == 1


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["empty", "another-application"])
def test_backup_create_refuses_a_postgresql_database_that_is_not_the_games(tmp_path, pg_empty_url, kind):
    if kind == "another-application":
        execute(pg_empty_url, "CREATE TABLE invoices (id serial PRIMARY KEY, total numeric)",
                "INSERT INTO invoices (total) VALUES (12.50)")
    before = content(pg_empty_url)
    env = BackupEnv(tmp_path, pg_empty_url)
    result = env.invoke("backup", "create")
    assert result.returncode == 4, result.output
    name = sa.make_url(pg_empty_url).database
    message = one_error(result)
    assert f"/{name} is not the typing game's database (no store identity or schema revision)" in message
    _repository_untouched(env)
    assert content(pg_empty_url) == before


# ---------------------------------------------------------------- a repository that does not exist


@pytest.mark.parametrize("command", [
    ("backup", "create"),
    ("backup", "prune"),
    ("restore", "latest", "--yes"),
    ("restore", "latest", "--dry-run"),
    ("drill",),
])
def test_a_missing_repository_is_exit_4_until_init_creates_it(tmp_path, sqlite_url, command):
    fill_database(sqlite_url, players=3, results_per_player=5)
    unmounted = tmp_path / "mnt" / "nfs-backups" / "x"
    env = BackupEnv(tmp_path, sqlite_url, extra_env={"INTEGRITY_BACKUPS__REPOSITORY": str(unmounted)})
    before = content(sqlite_url)

    result = env.invoke(*command)
    assert result.returncode == 4, result.output
    message = one_error(result)
    assert message.startswith(f"backup repository {unmounted} does not exist (an unmounted share?)")
    assert "`integrity init`" in message
    assert not (tmp_path / "mnt").exists()  # nothing created on the root file system
    assert content(sqlite_url) == before

    initialized = env.invoke("init")
    assert initialized.returncode == 0, initialized.output
    assert unmounted.is_dir()
    assert env.invoke("backup", "create").returncode == 0


def _mount_of(path: Path) -> str:
    """`findmnt`'s view of the file system holding `path`, as backup check words it."""
    source, fstype, target = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE,FSTYPE,TARGET", "--target", str(path)], capture_output=True, text=True, check=True,
    ).stdout.split()
    device = os.stat(path).st_dev
    return f"{source} ({fstype}, mounted at {target}, device {os.major(device)}:{os.minor(device)})"


def test_backup_check_names_the_file_systems_and_an_unmounted_share_is_exit_4(tmp_path, sqlite_url, small_filesystem):
    """The replay's repository on `/mnt/nfs-backups/x` was created on the root file system
    while the share was not mounted, and `backup check` passed."""
    fill_database(sqlite_url, players=3, results_per_player=5)
    share = small_filesystem(32 * 1024 * 1024)
    repository = share / "x"
    env = BackupEnv(tmp_path, sqlite_url, extra_env={"INTEGRITY_BACKUPS__REPOSITORY": str(repository)})
    assert env.invoke("init").returncode == 0

    code, findings = _findings(env)
    assert code == 0, findings
    assert findings["filesystems"]["detail"] == (
        f"repository on {_mount_of(repository)}; database on {_mount_of(Path(sa.make_url(sqlite_url).database))}"
    )
    assert f"mounted at {share}" in findings["filesystems"]["detail"]
    env.create()

    subprocess.run(["umount", str(share)], check=True)  # the share goes away; its mount point stays
    code, findings = _findings(env)
    assert code == 4, findings
    assert findings["repository"]["state"] == "fail"
    assert findings["repository"]["detail"].startswith(f"backup repository {repository} does not exist (an unmounted share?)")
    result = env.invoke("backup", "create")
    assert result.returncode == 4 and "integrity init" in one_error(result)
    assert not repository.exists()  # nothing written to the root file system under the mount point
