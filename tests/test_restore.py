"""`integrity restore`: the incident's restore on both engines, the dry run, every
refusal (exit code, one `Error:` line, live untouched), consent, a restore while the
game writes, and PostgreSQL's swap (settings, grants, the kept old database).

The real CLI runs as a subprocess where the process boundary matters (the swap, the
ledger, consent without a terminal); in-process (CliRunner) for refusals.
"""

from __future__ import annotations

import json
import os
import pty
import random
import subprocess
import time
from dataclasses import replace

import pytest
import sqlalchemy as sa

from backup_helpers import (
    INTEGRITY,
    BackupEnv,
    background_writer,
    execute,
    fill_database,
    flip_byte,
    one_error,
    scalar,
    write_manifest,
)
from test_backups_cli import small_filesystem  # noqa: F401  (the fixture: a tmpfs of a chosen size)
from restore_helpers import (
    filled_restore_env,
    content,
    damage_like_the_incident,
    drop_restore_leftovers,
    pg_leftover_databases,
    resilient_writer,
    sqlite_opens_cleanly,
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def env(request, tmp_path, filled_copy) -> BackupEnv:
    """A database with consistent game data (a copy of a template filled once per session)
    and an empty repository; on PostgreSQL the databases a restore keeps are dropped
    afterwards."""
    return filled_restore_env(request, tmp_path, filled_copy, players=10, results_per_player=20)


@pytest.fixture
def sqlite_env(tmp_path, filled_copy) -> BackupEnv:
    return BackupEnv(tmp_path, filled_copy("sqlite", players=10, results_per_player=20))


# ---------------------------------------------------------------- the incident


def test_restore_after_the_incident_brings_back_exactly_the_backup(env):
    backup_id = env.create()
    before_incident = content(env.url)
    damage_like_the_incident(env.url)
    damaged = content(env.url)
    assert damaged != before_incident and "personal_bests" not in damaged

    result = env.invoke("restore", backup_id, "--yes")
    assert result.returncode == 0, result.output
    assert content(env.url) == before_incident

    # Every phase was timed and printed, and the total recovery time.
    for phase in ("lock", "verify", "safety-backup", "staging", "verify-staging", "swap", "post-check", "cleanup"):
        assert phase in result.stdout and phase in result.stderr
    assert "total recovery time" in result.stdout
    # The safety backup holds the damaged data, labelled and pinned.
    backups = env.listed()
    (safety,) = [b for b in backups.values() if b["id"] != backup_id]
    assert safety["label"] == f"safety before restore of {backup_id}"
    assert "pinned" in safety["states"]
    # The ledger has the run with its phases.
    code, history = env.invoke_json("history", "--kind", "restore")
    (run,) = history["result"]["runs"]
    assert run["exit_code"] == 0
    summary = run["summary"]
    assert summary["backup_id"] == backup_id and summary["safety_backup_id"] == safety["id"]
    assert set(summary["phases"]) >= {"lock", "safety-backup", "staging", "swap", "post-check"}
    assert summary["total_seconds"] > 0
    # Nothing of the staging copy remains.
    if env.url.startswith("sqlite"):
        assert list((env.settings().state.dir / "restore").iterdir()) == []
        sqlite_opens_cleanly(env.tmp_path / "game.db")


def test_dry_run_prints_the_plan_and_changes_nothing(env):
    backup_id = env.create()
    damage_like_the_incident(env.url)
    damaged = content(env.url)
    ids = env.listed_ids()
    code, document = env.invoke_json("restore", backup_id, "--dry-run")
    assert code == 0, document
    plan = document["result"]
    assert plan["backup_id"] == backup_id and plan["states"] == ["intact"]
    assert plan["safety_backup"] == f"safety before restore of {backup_id}"
    changes = {c["table"]: c for c in plan["changes"]}
    assert changes["personal_bests"]["live_rows"] is None  # dropped
    assert changes["results"]["changed"] == 200 and changes["results"]["changed_columns"] == {"wpm": 200}
    assert changes["progress"]["changed"] == 8  # levels reset for 8 of 10 players
    assert changes["players"]["changed"] == 0
    assert any("never deep-verified" in w for w in plan["warnings"])
    assert content(env.url) == damaged
    assert env.listed_ids() == ids


# ---------------------------------------------------------------- refusals


def test_unknown_or_malformed_id_is_exit_4(sqlite_env):
    sqlite_env.create()
    before = content(sqlite_env.url)
    for bad in ("20200101T000000Z-abcdef", "../etc"):
        result = sqlite_env.invoke("restore", bad, "--yes")
        assert result.returncode == 4
        assert "integrity backup list" in one_error(result)
    assert content(sqlite_env.url) == before


def test_a_backup_that_is_not_intact_is_refused_with_exit_5(sqlite_env):
    backup_id = sqlite_env.create()
    execute(sqlite_env.url, "DELETE FROM results WHERE id % 2 = 0")
    before = content(sqlite_env.url)
    flip_byte(sqlite_env.repo / backup_id / "data.db.zst", random.Random(5))
    result = sqlite_env.invoke("restore", backup_id, "--yes")
    assert result.returncode == 5, result.output
    message = one_error(result)
    assert backup_id in message and "never restored" in message
    assert content(sqlite_env.url) == before
    assert sqlite_env.journal_events(backup_id)[-1] == "corrupt"
    assert sqlite_env.listed_ids() == [backup_id]  # no safety backup was taken


def test_a_backup_of_another_store_needs_force_other_source(sqlite_env, tmp_path, sqlite_template):
    backup_id = sqlite_env.create()
    # Another store: the same schema, another identity.
    other = tmp_path / "other.db"
    other.write_bytes(sqlite_template.read_bytes())
    execute(f"sqlite:///{other}", "UPDATE store_identity SET identity_uuid = '00000000-0000-4000-8000-000000000000'")
    fill_database(f"sqlite:///{other}", players=3, results_per_player=5, seed=9)
    other_env = BackupEnv(tmp_path, f"sqlite:///{other}")
    before = content(other_env.url)
    result = other_env.invoke("restore", backup_id, "--yes")
    assert result.returncode == 4
    message = one_error(result)
    assert "another store" in message and "--force-other-source" in message
    assert content(other_env.url) == before
    forced = other_env.invoke("restore", backup_id, "--yes", "--force-other-source")
    assert forced.returncode == 0, forced.output
    assert content(other_env.url) == content(sqlite_env.url)


def test_a_backup_at_a_revision_newer_than_the_code_is_refused(sqlite_env):
    backup_id = sqlite_env.create()
    repository = sqlite_env.repository()
    manifest = repository.read_manifest(backup_id)
    write_manifest(sqlite_env.repo / backup_id, replace(manifest, revision="9999_from_the_future"))
    before = content(sqlite_env.url)
    result = sqlite_env.invoke("restore", backup_id, "--yes")
    assert result.returncode == 4
    message = one_error(result)
    assert "9999_from_the_future" in message and "does not know" in message
    assert content(sqlite_env.url) == before


def test_a_backup_at_an_older_revision_is_restored_and_names_the_migrate_commands(sqlite_env, newer_history):
    backup_id = sqlite_env.create()
    damage_like_the_incident(sqlite_env.url)
    result = sqlite_env.invoke("restore", backup_id, "--yes")
    assert result.returncode == 0, result.output
    assert "integrity migrate dry-run" in result.stdout and "integrity migrate apply" in result.stdout
    assert scalar(sqlite_env.url, "SELECT COUNT(*) FROM personal_bests") > 0


@pytest.mark.postgres
def test_a_backup_of_another_engine_is_refused(sqlite_env, pg_url):
    backup_id = sqlite_env.create()
    pg_env = BackupEnv(sqlite_env.tmp_path, pg_url)
    result = pg_env.invoke("restore", backup_id, "--yes")
    assert result.returncode == 4
    assert "a sqlite backup but the database" in one_error(result)


def test_no_consent_without_yes_is_exit_4_and_changes_nothing(sqlite_env):
    backup_id = sqlite_env.create()
    damage_like_the_incident(sqlite_env.url)
    damaged = content(sqlite_env.url)
    refused = sqlite_env.invoke("--no-input", "restore", backup_id)
    assert refused.returncode == 4
    assert "--no-input" in one_error(refused) and "--yes" in one_error(refused)
    not_a_terminal = sqlite_env.invoke("restore", backup_id)  # stdin is not a terminal: nobody to ask
    assert not_a_terminal.returncode == 4
    assert "from a terminal" in one_error(not_a_terminal)
    assert content(sqlite_env.url) == damaged
    assert len(sqlite_env.listed_ids()) == 1


def _run_on_a_terminal(env: BackupEnv, *args: str, answer: str) -> tuple[int, str]:
    """`integrity ARGS` with a pseudo-terminal as stdin, typing `answer` at the prompt."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [*INTEGRITY, *args], cwd=env.tmp_path, env=env.process_env(), stdin=slave,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    os.close(slave)
    os.write(master, (answer + "\n").encode())
    try:
        out, err = process.communicate(timeout=120)
    finally:
        os.close(master)
    return process.returncode, out + err


def test_typed_confirmation_on_a_terminal(sqlite_env):
    backup_id = sqlite_env.create()
    expected = content(sqlite_env.url)
    damage_like_the_incident(sqlite_env.url)
    damaged = content(sqlite_env.url)
    code, output = _run_on_a_terminal(sqlite_env, "restore", backup_id, answer="yes")
    assert code == 4, output
    assert "Type the database name 'game.db'" in output and "'yes' typed, not the database name" in output
    assert content(sqlite_env.url) == damaged
    code, output = _run_on_a_terminal(sqlite_env, "restore", backup_id, answer="game.db")
    assert code == 0, output
    assert "changes    " in output  # the plan was shown before the question
    assert content(sqlite_env.url) == expected


def test_full_disk_during_staging_is_a_clear_error_and_live_is_untouched(tmp_path, filled_copy, small_filesystem):
    sqlite_url = filled_copy("sqlite", players=10, results_per_player=300)
    size = (tmp_path / "game.db").stat().st_size
    point = small_filesystem(size // 2)
    env = BackupEnv(tmp_path, sqlite_url)
    backup_id = env.create()
    damage_like_the_incident(sqlite_url)
    damaged = content(sqlite_url)
    result = env.invoke("restore", backup_id, "--yes", INTEGRITY_STATE__DIR=str(point / "state"))
    assert result.returncode == 4, result.output
    message = one_error(result)
    assert "staging copy needs" in message and "free" in message and "[state] dir" in message
    assert content(sqlite_url) == damaged
    staging = point / "state" / "restore"
    assert not staging.exists() or list(staging.iterdir()) == []
    assert env.listed_ids() == [backup_id]  # refused before the safety backup


def test_keep_newer_needs_the_safety_backup(sqlite_env):
    backup_id = sqlite_env.create()
    result = sqlite_env.invoke("restore", backup_id, "--yes", "--keep-newer", "--no-safety-backup")
    assert result.returncode == 2  # the two options contradict each other: a usage error
    assert "--no-safety-backup" in one_error(result)


def test_latest_is_the_newest_good_backup_and_no_safety_backup_takes_none(sqlite_env):
    sqlite_env.create()
    fill_database(sqlite_env.url, players=2, results_per_player=10, seed=9)  # the game wrote on
    newest = sqlite_env.create()
    expected = content(sqlite_env.url)
    damage_like_the_incident(sqlite_env.url)
    result = sqlite_env.invoke("restore", "latest", "--yes", "--no-safety-backup")
    assert result.returncode == 0, result.output
    assert f"restored backup {newest}" in result.stdout
    assert content(sqlite_env.url) == expected
    assert len(sqlite_env.listed_ids()) == 2


def test_a_missing_live_file_is_created_from_the_backup(sqlite_env):
    backup_id = sqlite_env.create()
    expected = content(sqlite_env.url)
    live = sqlite_env.tmp_path / "game.db"
    for path in (live, live.with_name("game.db-wal"), live.with_name("game.db-shm")):
        path.unlink(missing_ok=True)
    result = sqlite_env.invoke("restore", backup_id, "--yes")
    assert result.returncode == 0, result.output
    assert content(sqlite_env.url) == expected
    sqlite_opens_cleanly(live)


def test_a_dirty_backup_shows_its_violations_next_to_live_and_warns(sqlite_env):
    execute(sqlite_env.url, "UPDATE progress SET level = level + 3 WHERE player_id = 1")
    backup_id = sqlite_env.create()
    assert sqlite_env.invoke("backup", "verify", "--deep", backup_id).returncode == 3
    execute(sqlite_env.url, "UPDATE progress SET level = level + 3 WHERE player_id IN (2, 3)")
    code, document = sqlite_env.invoke_json("restore", backup_id, "--dry-run")
    assert code == 0
    plan = document["result"]
    assert plan["audit"] == "dirty"
    assert {"rule": "progress.level_matches_xp", "severity": "error", "failing_rows": 1} in plan["backup_violations"]
    live = {v["rule"]: v["failing_rows"] for v in plan["live_violations"]}
    assert live["progress.level_matches_xp"] == 3
    assert any("DIRTY" in w for w in plan["warnings"])
    result = sqlite_env.invoke("restore", backup_id, "--yes")
    # Restored with consent, but live now fails its audits: exit 3, never 0 (issue 13.2).
    assert result.returncode == 3, result.output
    assert "DIRTY" in result.stdout and "audit          dirty: progress.level_matches_xp" in result.stdout


# ---------------------------------------------------------------- while the game writes


def test_restore_while_the_game_writes_on_sqlite(tmp_path, filled_copy):
    sqlite_url = filled_copy("sqlite", players=20, results_per_player=50)
    env = BackupEnv(tmp_path, sqlite_url)
    with background_writer(sqlite_url, tmp_path) as writer:
        backup_id = env.create()
        manifest = env.repository().read_manifest(backup_id)
        time.sleep(0.3)
        result = env.invoke("restore", backup_id, "--yes")
        assert result.returncode == 0, result.output
        time.sleep(0.3)  # the game goes on writing into the restored database
    assert writer.committed > 10
    _assert_backup_then_only_new_rows(env, manifest)
    sqlite_opens_cleanly(tmp_path / "game.db")


@pytest.mark.postgres
def test_restore_while_the_game_writes_on_postgresql(tmp_path, filled_copy, pg_admin, request):
    pg_url = filled_copy("postgresql", players=20, results_per_player=50)
    request.addfinalizer(lambda: drop_restore_leftovers(pg_admin, sa.make_url(pg_url).database))
    env = BackupEnv(tmp_path, pg_url)
    with resilient_writer(pg_url, tmp_path) as writer:
        backup_id = env.create()
        manifest = env.repository().read_manifest(backup_id)
        time.sleep(0.3)
        refused = env.invoke("restore", backup_id, "--yes")
        assert refused.returncode == 4
        message = one_error(refused)
        assert "session(s) are connected" in message and "--terminate-connections" in message
        assert "pid " in message and "user postgres" in message and "from " in message
        result = env.invoke("restore", backup_id, "--yes", "--terminate-connections")
        assert result.returncode == 0, result.output
        assert "ended session" in result.stdout
        time.sleep(0.5)
    assert writer.committed > 10
    _assert_backup_then_only_new_rows(env, manifest)


def _assert_backup_then_only_new_rows(env: BackupEnv, manifest) -> None:
    """Live holds the backup's rows exactly, plus only rows the game wrote after the swap."""
    from integrity.backups.statistics import AGGREGATES

    for table in ("players", "results"):
        info = manifest.tables[table]
        highest = info["aggregates"]["max_id"]
        aggregates = {k: v for k, v in AGGREGATES[table].items() if k != "max_id"}
        row = None
        from game_core.db import create_engine

        engine = create_engine(env.url, read_only=True)
        try:
            with engine.connect() as connection:
                row = connection.execute(sa.text(
                    f"SELECT COUNT(*), {', '.join(aggregates.values())} FROM {table} WHERE id <= {highest}"
                )).one()
        finally:
            engine.dispose()
        assert row[0] == info["rows"]
        assert dict(zip(aggregates, map(int, row[1:]))) == {k: info["aggregates"][k] for k in aggregates}
    code, audit = env.invoke_json("audit")
    assert code == 0, audit


# ---------------------------------------------------------------- PostgreSQL's swap


@pytest.mark.postgres
def test_postgresql_swap_keeps_settings_grants_and_owner_and_the_old_database(tmp_path, filled_copy, pg_admin, request):
    pg_url = filled_copy("postgresql", players=5, results_per_player=10)
    live = sa.make_url(pg_url).database
    request.addfinalizer(lambda: drop_restore_leftovers(pg_admin, live))
    role = "integrity_restore_test_role"
    with pg_admin.connect() as connection:
        if not connection.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first():
            connection.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
        connection.execute(sa.text(f'ALTER DATABASE "{live}" SET statement_timeout = \'7min\''))
        connection.execute(sa.text(f'ALTER DATABASE "{live}" SET search_path = "$user", public'))
        connection.execute(sa.text(f'ALTER ROLE {role} IN DATABASE "{live}" SET work_mem = \'8MB\''))
        connection.execute(sa.text(f'REVOKE CONNECT, TEMPORARY ON DATABASE "{live}" FROM PUBLIC'))
        connection.execute(sa.text(f'GRANT CONNECT ON DATABASE "{live}" TO {role}'))
        connection.execute(sa.text(f'ALTER DATABASE "{live}" CONNECTION LIMIT 50'))

    def properties(name):
        with pg_admin.connect() as connection:
            oid, acl, limit = connection.execute(sa.text(
                "SELECT oid, datacl::text[], datconnlimit FROM pg_database WHERE datname = :n"), {"n": name}).one()
            settings = connection.execute(sa.text(
                "SELECT setrole, setconfig FROM pg_db_role_setting WHERE setdatabase = :o ORDER BY setrole"), {"o": oid}).all()
            return sorted(acl), limit, [(r, sorted(c)) for r, c in settings]

    before = properties(live)
    env = BackupEnv(tmp_path, pg_url)
    backup_id = env.create()
    expected = content(pg_url)
    damage_like_the_incident(pg_url)
    damaged = content(pg_url)
    result = env.invoke("restore", backup_id, "--yes")
    assert result.returncode == 0, result.output
    assert content(pg_url) == expected
    assert properties(live) == before
    (old,) = [name for name in pg_leftover_databases(pg_admin, live) if "_before_restore_" in name]
    assert f"kept as {old}" in result.stdout and f'DROP DATABASE "{old}"' in result.stdout
    assert properties(old) == before
    old_url = sa.make_url(pg_url).set(database=old).render_as_string(hide_password=False)
    assert content(old_url) == damaged
    assert [n for n in pg_leftover_databases(pg_admin, live) if "_restore_" in n] == [old]  # no staging left
    code, salvage = env.invoke_json("salvage", "--from-database", old, "--dry-run")
    assert code == 0, salvage
    assert salvage["result"]["reapplied"] == {"players": 0, "results": 0}
    assert {(i["table"], i["reason"]): i["rows"] for i in salvage["result"]["left_out"]} == {("results", "changed"): 50}


# ---------------------------------------------------------------- a dump that holds no data


def _schema_only_pg_dump(tmp_path) -> dict[str, str]:
    """A misconfigured job's PATH: a `pg_dump` first on it that adds --schema-only."""
    from integrity.db.pg_tools import find_tool

    real = find_tool("pg_dump")
    wrapper_dir = tmp_path / "misconfigured-bin"
    wrapper_dir.mkdir()
    wrapper = wrapper_dir / "pg_dump"
    wrapper.write_text(f'#!/bin/sh\nexec "{real}" "$@" --schema-only\n')
    wrapper.chmod(0o755)
    return {"PATH": f"{wrapper_dir}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.postgres
def test_a_schema_only_dump_is_suspect_never_latest_and_its_dry_run_fails_it(tmp_path, filled_copy, pg_admin, request):
    """Issue 13.2: `restore latest` chose a schema-only dump (manifest claiming its rows,
    0.0 MB of data), and its dry run said "after restore 6,909 rows" beside "brought back 0"."""
    pg_url = filled_copy("postgresql", players=10, results_per_player=20)
    request.addfinalizer(lambda: drop_restore_leftovers(pg_admin, sa.make_url(pg_url).database))
    env = BackupEnv(tmp_path, pg_url)
    good = env.create()
    misconfigured = _schema_only_pg_dump(tmp_path)
    completed = subprocess.run([*INTEGRITY, "--json", "backup", "create"], capture_output=True, text=True,
                               env={**env.process_env(), **misconfigured})
    assert completed.returncode == 3, completed.stderr
    empty = json.loads(completed.stdout)["result"]["manifest"]
    assert any("results: the backup holds no data" in reason for reason in empty["suspect_reasons"])

    code, plan = env.invoke_json("restore", "latest", "--dry-run")
    assert code == 0 and plan["result"]["backup_id"] == good

    code, plan = env.invoke_json("restore", empty["id"], "--dry-run")
    assert code == 5, plan
    assert "does not hold what its manifest says" in plan["error"]
    assert "failed" in env.journal_events(empty["id"])
