"""`integrity drill`: a restore rehearsed on a scratch copy, never touching live.

A good backup passes (exit 0) with every phase timed, live unchanged and no scratch copy
left; a flipped byte, a restored copy that does not match its manifest and a table that
shrank fail (exit 5); dirty data, a missed RTO and a missed RPO are problems (exit 3);
the compare with live reports exactly the rows written since the backup; `status` shows
the last drill in each state.
"""

from __future__ import annotations

import os

import random
import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from conftest import unclaimed_scratch_databases
from backup_helpers import (
    BackupEnv,
    clone_backup,
    execute,
    fill_database,
    flip_byte,
    one_error,
    result_rows,
    sha256_file,
    write_manifest,
)
from game_core.db import create_engine
from test_backups_cli import small_filesystem  # noqa: F401  (the fixture: a tmpfs of a chosen size)
from game_core.rebuild import rebuild_derived
from integrity.db.claims import SCRATCH_PREFIX
from integrity.ledger import Ledger

UTC = timezone.utc
PHASES = ["hash check", "restore", "deep checks", "audits", "compare with live", "swap rehearsal"]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def drilled(request, tmp_path, filled_copy):
    """A database of 5 players with 20 results each (a copy of a template filled once per
    session) and one backup of it."""
    env = BackupEnv(tmp_path, filled_copy(request.param, players=5, results_per_player=20))
    return env, env.create()


def _statuses(env: BackupEnv, **extra: str) -> tuple[int, dict[str, tuple[str, str]]]:
    code, document = env.invoke_json("status", **extra)
    return code, {c["name"]: (c["state"], c["detail"]) for c in document["result"]["checks"]}


def _last_drill(env: BackupEnv, **extra: str) -> tuple[str, str]:
    return _statuses(env, **extra)[1]["last drill"]


def _scratch_left(env: BackupEnv, request) -> list[str]:
    """Scratch copies left behind: files in the state dir's scratch, or scratch databases
    no live run claims."""
    if env.url.startswith("postgresql"):
        return unclaimed_scratch_databases(request.getfixturevalue("pg_admin"), SCRATCH_PREFIX)
    scratch = env.settings().state.dir / "scratch"
    return sorted(p.name for p in scratch.iterdir()) if scratch.exists() else []


def _live_state(env: BackupEnv):
    """What must not change: the SQLite file's bytes (and its WAL), or every PostgreSQL row."""
    if env.url.startswith("sqlite"):
        path = env.tmp_path / "game.db"
        wal = path.with_name("game.db-wal")
        return sha256_file(path), path.stat().st_mtime_ns, wal.exists() and sha256_file(wal)
    from integrity.fingerprint import database_fingerprints

    engine = create_engine(env.url)
    try:
        with engine.connect() as connection:
            return {name: f.digest for name, f in database_fingerprints(connection).items()}
    finally:
        engine.dispose()


def _forge_manifest(env: BackupEnv, backup_id: str, **changes) -> None:
    """Rewrite a backup's manifest (and its hash) so that it stays internally consistent."""
    repository = env.repository()
    manifest = repository.read_manifest(backup_id)
    write_manifest(repository.path_of(backup_id), replace(manifest, **changes))


# ---------------------------------------------------------------- a good backup


def test_a_drill_of_a_good_backup_passes_and_touches_nothing(drilled, request):
    env, backup_id = drilled
    before = _live_state(env)
    completed = env.run("--json", "drill")  # the real CLI, as cron runs it
    assert completed.returncode == 0, completed.stdout + completed.stderr
    import json

    document = json.loads(completed.stdout)
    result = document["result"]
    assert document["exit_code"] == 0 and result["backup_id"] == backup_id
    assert [p["name"] for p in result["phases"]] == PHASES
    assert all(p["ok"] and p["seconds"] > 0 for p in result["phases"]), result["phases"]
    assert (result["audit"], result["rto_met"], result["rpo_met"], result["problems"], result["findings"]) == (
        "clean", True, True, [], [])
    prediction = result["prediction"]
    measured = sum(p["seconds"] for p in result["phases"] if p["name"] in PHASES[:4])
    assert prediction["recovery_seconds"] == pytest.approx(measured)
    assert prediction["safety_backup_seconds"] > 0 and prediction["swap_seconds"] > 0
    assert result["predicted_seconds"] == pytest.approx(
        measured + prediction["safety_backup_seconds"] + prediction["swap_seconds"])
    # The safety backup is estimated from this backup's own `backup create` in the ledger.
    assert prediction["safety_backup_basis"].startswith(f"backup create of {backup_id} took")
    compared = {t["table"]: (t["live_rows"], t["backup_rows"], t["differing_rows"]) for t in result["tables"]}
    assert compared.items() >= {"players": (5, 5, 0), "results": (100, 100, 0)}.items()
    assert all(t["differing_share"] == 0 for t in result["tables"])

    if env.url.startswith("postgresql") and len(os.sched_getaffinity(0)) >= 2:
        # The archive is written to a file in the scratch dir and restored by parallel jobs.
        restore = next(p for p in result["phases"] if p["name"] == "restore")
        assert f"pg_restore --jobs={min(len(os.sched_getaffinity(0)), 4)} from a decompressed file" in restore["detail"]
    assert _live_state(env) == before
    assert _scratch_left(env, request) == []
    scratch = env.settings().state.dir / "scratch"
    assert not scratch.exists() or sorted(p.name for p in scratch.iterdir()) == []  # the decompressed archive is gone
    assert env.journal_events(backup_id)[-4:] == ["intact", "deep_verified", "clean", "drilled"]

    # The ledger keeps the summary that status reads.
    ledger = Ledger.open(env.settings().state.dir)
    try:
        run = ledger.last("drill")
    finally:
        ledger.close()
    assert run.exit_code == 0
    summary = run.summary
    assert summary["backup_id"] == backup_id and summary["audit"] == "clean"
    assert sorted(summary["phases"]) == sorted(PHASES) and all(s > 0 for s in summary["phases"].values())
    assert summary["predicted_seconds"] > summary["recovery_seconds"] > 0
    assert (summary["rto_met"], summary["rpo_met"], summary["rto_seconds"], summary["rpo_seconds"]) == (True, True, 600, 3600)
    assert summary["differing_share"]["results"] == 0
    assert 0 <= summary["backup_age_seconds"] < 600

    state, detail = _last_drill(env)
    assert state == "ok", detail
    assert re.fullmatch(rf"drill of {backup_id} \(\d+s ago\) passed: predicted full restore \d+\.\ds \(rto 600s\)", detail)


def test_the_text_report_names_the_phases_the_prediction_and_the_verdicts(tmp_path, filled_copy):
    sqlite_url = filled_copy("sqlite", players=2, results_per_player=10)
    env = BackupEnv(tmp_path, sqlite_url)
    backup_id = env.create()
    result = env.invoke("drill")
    assert result.returncode == 0, result.output
    out = result.stdout
    assert out.startswith(f"drill of backup {backup_id} (sqlite): passed\n")
    for phase in PHASES:
        assert re.search(rf"│ {phase} +│ +\d+\.\d{{3}} │ ok ", out), phase
    assert re.search(r"│ results +│ +20 │ +20 │ +0 │ +0 │ +0 │ +0\.00% │", out)
    assert re.search(r"predicted full restore \d+\.\d\ds \(rto 600s: met\) = measured", out)
    assert "backup age" in out and "(rpo 3600s: met)" in out
    assert "audit of the restored copy: clean" in out
    assert out.endswith("exit code 0\n")


# ---------------------------------------------------------------- the backup fails: exit 5


def test_a_flipped_byte_fails_the_drill_at_the_hash_check(drilled, request):
    env, backup_id = drilled
    data = env.repo / backup_id / env.repository().read_manifest(backup_id).files[0].name
    flip_byte(data, random.Random(5))
    code, document = env.invoke_json("drill")
    assert code == 5, document
    result = document["result"]
    assert [(p["name"], p["ok"]) for p in result["phases"]] == [("hash check", False)]
    (problem,) = result["problems"]  # a hash or the zstd frame checksum, wherever the byte landed
    assert problem.startswith(f"backup {backup_id}: {data.name} ")
    assert result["prediction"] is None and result["audit"] is None
    assert env.journal_events(backup_id)[-2:] == ["corrupt", "drilled"]
    assert _scratch_left(env, request) == []

    code, checks = _statuses(env)
    assert code == 5
    state, detail = checks["last drill"]
    assert state == "failed" and f"drill of {backup_id}" in detail and problem in detail
    assert "runbooks/drill-failed.md" in detail
    # The corrupt backup is no longer good: a new drill has nothing to drill.
    result = env.invoke("drill")
    assert result.returncode == 4
    assert one_error(result).startswith("no restorable backup of this database in ")


def test_a_swap_that_cannot_be_rehearsed_fails_the_drill_but_not_the_backup(tmp_path, filled_copy, small_filesystem):
    """Room for the restored copy but not for the swap's copy (a full disk, as a restore
    would meet): exit 5, the backup stays good, nothing is left in scratch."""
    sqlite_url = filled_copy("sqlite", players=10, results_per_player=300)
    size = (tmp_path / "game.db").stat().st_size
    point = small_filesystem(int(size * 1.5))
    env = BackupEnv(tmp_path, sqlite_url)
    backup_id = env.create()
    code, document = env.invoke_json("drill", INTEGRITY_STATE__DIR=str(point / "state"))
    assert code == 5, document
    result = document["result"]
    assert [(p["name"], p["ok"]) for p in result["phases"]] == [(name, name != "swap rehearsal") for name in PHASES]
    (problem,) = result["problems"]
    assert problem.startswith("the swap rehearsal failed: ") and "full" in problem
    assert "deep_failed" not in env.journal_events(backup_id)
    assert list((point / "state" / "scratch").iterdir()) == []
    assert env.invoke("drill").returncode == 0  # the same backup, with room: still good


def test_a_copy_that_does_not_match_its_manifest_fails_the_drill(drilled, request):
    env, backup_id = drilled
    manifest = env.repository().read_manifest(backup_id)
    tables = {**manifest.tables, "results": {**manifest.tables["results"], "rows": manifest.tables["results"]["rows"] + 7}}
    _forge_manifest(env, backup_id, tables=tables)  # every hash still matches
    code, document = env.invoke_json("drill", "--backup", backup_id)
    assert code == 5, document
    result = document["result"]
    assert [(p["name"], p["ok"]) for p in result["phases"]] == [("hash check", True), ("restore", True), ("deep checks", False)]
    assert result["problems"] == ["results: 100 rows, the manifest says 107"]
    assert env.journal_events(backup_id)[-3:] == ["deep_failed", "failed", "drilled"]
    assert _scratch_left(env, request) == []
    assert _last_drill(env)[0] == "failed"


def test_a_table_that_shrank_past_the_tolerance_fails_the_drill(tmp_path, filled_copy):
    sqlite_url = filled_copy("sqlite", players=5, results_per_player=40)
    env = BackupEnv(tmp_path, sqlite_url)
    env.create()
    execute(sqlite_url, "DELETE FROM personal_bests", "DELETE FROM results WHERE id % 5 = 1")  # 20%
    engine = create_engine(sqlite_url)
    with engine.begin() as connection:
        rebuild_derived(connection)  # consistent again: only the shrink is wrong
    engine.dispose()
    shrunk = env.create(suspect=True)  # suspect when taken: `latest` skips it, so name it
    code, document = env.invoke_json("drill", "--backup", shrunk)
    assert code == 5, document
    (problem,) = document["result"]["problems"]
    assert problem.startswith("results shrank by 20.0% since backup") and "shrink_tolerance is 10%" in problem
    assert env.journal_events(shrunk)[-3:] == ["deep_failed", "failed", "drilled"]


# ---------------------------------------------------------------- it worked, with problems: exit 3


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_dirty_backup_is_exit_3(engine, filled_copy, tmp_path):
    database_url = filled_copy(engine, players=4, results_per_player=20)
    execute(database_url, "UPDATE progress SET level = level + 3 WHERE player_id = (SELECT MIN(player_id) FROM progress)")
    env = BackupEnv(tmp_path, database_url)
    backup_id = env.create()
    code, document = env.invoke_json("drill")
    assert code == 3, document
    result = document["result"]
    assert result["audit"] == "dirty" and result["problems"] == []
    assert {"rule": "progress.level_matches_xp", "severity": "error", "failing_rows": 1} in result["violations"]
    assert result["findings"] == [
        "the backup holds dirty data: progress.level_matches_xp (1 rows), progress.level_matches_results (1 rows)"]
    assert result["rto_met"] is True and result["rpo_met"] is True
    assert env.journal_events(backup_id)[-3:] == ["deep_verified", "dirty", "drilled"]
    state, detail = _last_drill(env)
    assert state == "problem" and "holds dirty data" in detail


def test_a_predicted_restore_over_the_rto_is_exit_3(drilled):
    env, backup_id = drilled
    # A backup that took 5 s to create predicts a safety backup of about 5 s.
    slow = clone_backup(env.repository(), backup_id, datetime.now(UTC) - timedelta(minutes=1))
    _forge_manifest(env, slow, timings={"copy_seconds": 3.0, "compress_seconds": 2.0})
    code, document = env.invoke_json("drill", "--backup", slow, INTEGRITY_OBJECTIVES__RTO_SECONDS="4")
    assert code == 3, document
    result = document["result"]
    assert result["rto_met"] is False and result["rpo_met"] is True and result["audit"] == "clean"
    assert result["prediction"]["safety_backup_basis"].startswith("manifest timings + hash check 5.")
    assert result["prediction"]["safety_backup_seconds"] > 4
    (finding,) = result["findings"]
    assert re.fullmatch(r"predicted full restore \d+\.\ds exceeds rto 4s", finding)
    # status judges the recorded prediction against the objective configured now.
    state, detail = _last_drill(env, INTEGRITY_OBJECTIVES__RTO_SECONDS="4")
    assert state == "problem" and "exceeds rto 4s" in detail and "runbooks/drill-failed.md" in detail
    assert _last_drill(env)[0] == "ok"  # the default rto is 600 s


def test_a_backup_older_than_the_rpo_is_exit_3(drilled):
    env, backup_id = drilled
    old = clone_backup(env.repository(), backup_id, datetime.now(UTC) - timedelta(hours=2))
    code, document = env.invoke_json("drill", "--backup", old)
    assert code == 3, document
    result = document["result"]
    assert result["rpo_met"] is False and result["rto_met"] is True
    assert 7200 <= result["backup_age_seconds"] < 7300
    assert result["findings"] == [f"backup {old} is {result['backup_age_seconds']:.0f}s old, over rpo 3600s"]
    assert _last_drill(env)[0] == "problem"
    assert _last_drill(env, INTEGRITY_OBJECTIVES__RPO_SECONDS="10800")[0] == "ok"


# ---------------------------------------------------------------- the compare with live


def test_the_compare_reports_exactly_what_changed_since_the_backup(drilled):
    env, backup_id = drilled
    # After the backup: one new player with 25 results, and one result changed.
    engine = create_engine(env.url)
    with engine.begin() as connection:
        player_id = connection.execute(sa.text(
            "INSERT INTO players (username, created_at) VALUES ('late', :at) RETURNING id"), {"at": datetime.now(UTC) - timedelta(days=40)}
        ).scalar_one()
        from game_core.schema import results

        connection.execute(results.insert(), result_rows(random.Random(1), player_id, 25, datetime.now(UTC) - timedelta(days=1)))
        connection.execute(sa.text("UPDATE results SET xp = xp + 1 WHERE id = (SELECT MIN(id) FROM results)"))
    engine.dispose()
    code, document = env.invoke_json("drill")
    assert code == 0, document
    tables = {t["table"]: t for t in document["result"]["tables"]}
    players, results_diff = tables["players"], tables["results"]
    assert (players["live_rows"], players["backup_rows"], players["only_live"], players["only_backup"], players["changed"]) == (6, 5, 1, 0, 0)
    assert (results_diff["live_rows"], results_diff["backup_rows"], results_diff["only_live"], results_diff["changed"]) == (125, 100, 25, 1)
    assert results_diff["changed_columns"] == {"xp": 1}
    assert results_diff["differing_rows"] == 26
    assert results_diff["differing_share"] == pytest.approx(26 / 125)
    assert players["differing_share"] == pytest.approx(1 / 6)
    assert tables["progress"]["differing_rows"] == 0  # not rebuilt since
    # The ledger keeps the shares; status stays ok (a restore would lose them: no failure).
    ledger = Ledger.open(env.settings().state.dir)
    try:
        shares = ledger.last("drill").summary["differing_share"]
    finally:
        ledger.close()
    assert shares["results"] == pytest.approx(26 / 125) and shares["players"] == pytest.approx(1 / 6)
    assert _last_drill(env)[0] == "ok"


# ---------------------------------------------------------------- bad input: exit 4, nothing drilled


def test_unknown_or_missing_backups_are_exit_4(tmp_path, sqlite_url):
    env = BackupEnv(tmp_path, sqlite_url)
    env.repo.rmdir()  # as before `integrity init`
    result = env.invoke("drill")
    assert result.returncode == 4
    assert one_error(result).startswith(f"backup repository {env.repo} does not exist") and "integrity init" in one_error(result)
    env.repo.mkdir()
    result = env.invoke("drill")
    assert result.returncode == 4
    assert one_error(result) == (
        f"no restorable backup of this database in {env.repo}; take one with `integrity backup create`, "
        "or name a backup id after checking it with `integrity backup show`"
    )
    assert _last_drill(env)[1].startswith("none recorded: run `integrity drill`; the last attempt")
    env.create()
    result = env.invoke("drill", "--backup", "20200101T000000Z-abcdef")
    assert result.returncode == 4
    assert one_error(result) == f"no backup 20200101T000000Z-abcdef in {env.repo}; list them with `integrity backup list`"
    result = env.invoke("drill", "--backup", "../etc")
    assert result.returncode == 4
    assert "is not a backup id" in one_error(result)
    code, document = env.invoke_json("drill", "--backup", "20200101T000000Z-abcdef")
    assert code == 4 and document["error"].startswith("no backup 20200101T000000Z-abcdef")


def test_only_backups_of_this_database_are_drilled(tmp_path, sqlite_url):
    from game_core.schema_state import upgrade_to_head

    fill_database(sqlite_url, players=2, results_per_player=5)
    env = BackupEnv(tmp_path, sqlite_url)
    ours = env.create()
    other_path = tmp_path / "other.db"  # another store: its own identity
    engine = create_engine(str(other_path), create_missing=True)
    with engine.begin() as connection:
        upgrade_to_head(connection)
    engine.dispose()
    other = BackupEnv(tmp_path, f"sqlite:///{other_path}").create()  # newer, same repository
    code, document = env.invoke_json("drill")
    assert code == 0 and document["result"]["backup_id"] == ours
    result = env.invoke("drill", "--backup", other)
    assert result.returncode == 4
    assert one_error(result).startswith(f"backup {other} was taken from another database")
    assert "drilled" not in env.journal_events(other)


def test_a_backup_held_by_prune_is_exit_4_naming_the_holder(drilled):
    env, backup_id = drilled
    with env.repository().deleting(backup_id, command="backup prune"):
        result = env.invoke("drill")
    assert result.returncode == 4
    message = one_error(result)
    assert f"backup {backup_id}" in message and "'backup prune'" in message and "--lock-wait" in message


# ---------------------------------------------------------------- status from recorded drills


def _record(ledger: Ledger, exit_code: int | None, summary: dict | None = None) -> None:
    """A drill run in the ledger; without an exit code, one still running."""
    run_id = ledger.start("drill")
    if exit_code is not None:
        ledger.finish(run_id, exit_code, summary)


def test_status_judges_the_last_drill_with_a_verdict(tmp_path, sqlite_url):
    from integrity.status import CheckState, drill_checks

    env = BackupEnv(tmp_path, sqlite_url)
    settings = env.settings()
    ok = {"backup_id": "20261127T030118Z-a1b2c3", "predicted_seconds": 12.5, "backup_age_seconds": 60.0,
          "audit": "clean", "problems": [], "compare_problem": None}

    def check(**extra):
        (found,) = drill_checks(env.settings(**extra))
        return found.state, found.detail

    assert check() == (CheckState.PROBLEM, "none recorded: run `integrity drill`")
    ledger = Ledger.open(settings.state.dir)
    try:
        _record(ledger, 4, {"error": "no good backup of this database in /x; take one with `integrity backup create`"})
        state, detail = check()
        assert state is CheckState.PROBLEM and "could not run: no good backup" in detail
        _record(ledger, 0, ok)
        state, detail = check()
        assert state is CheckState.OK and "predicted full restore 12.5s (rto 600s)" in detail
        assert check(INTEGRITY_OBJECTIVES__RTO_SECONDS="10")[0] is CheckState.PROBLEM
        assert check(INTEGRITY_OBJECTIVES__RPO_SECONDS="30")[0] is CheckState.PROBLEM
        _record(ledger, None)  # a drill still running has no verdict yet
        assert check()[0] is CheckState.OK
        _record(ledger, 5, {**ok, "predicted_seconds": None, "problems": ["results: 1 rows, the manifest says 2"]})
        state, detail = check()
        assert state is CheckState.FAILED and "failed: results: 1 rows, the manifest says 2" in detail
        _record(ledger, 3, {**ok, "audit": "dirty"})
        assert check()[0] is CheckState.PROBLEM
        _record(ledger, 0, ok)
    finally:
        ledger.close()
    # A drill older than twice [schedule] drill (1d by default) is stale.
    (stale,) = drill_checks(settings, now=datetime.now(UTC) + timedelta(days=2, hours=1))
    assert stale.state is CheckState.PROBLEM and "older than twice [schedule] drill (1d)" in stale.detail
    (fresh,) = drill_checks(settings, now=datetime.now(UTC) + timedelta(days=1, hours=23))
    assert fresh.state is CheckState.OK



def test_pg_restore_uses_parallel_jobs_only_with_cores_and_room_for_the_archive(tmp_path, monkeypatch):
    """pg_restore --jobs needs the archive as a file: written only where it leaves a tenth
    of the disk free, and only with more than one core; otherwise it is streamed (1 job)."""
    from integrity.db import pg_tools

    total = 100 * 2**30
    monkeypatch.setattr(pg_tools.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(pg_tools.shutil, "disk_usage", lambda path: shutil_usage(total, free=50 * 2**30))
    assert pg_tools.parallel_restore_jobs(tmp_path / "scratch", 2 * 2**30) == 2
    assert pg_tools.parallel_restore_jobs(tmp_path / "scratch", 45 * 2**30) == 1  # would leave under a tenth free
    monkeypatch.setattr(pg_tools.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert pg_tools.parallel_restore_jobs(tmp_path / "scratch", 2**30) == pg_tools.MAX_RESTORE_JOBS
    monkeypatch.setattr(pg_tools.os, "sched_getaffinity", lambda pid: {0})
    assert pg_tools.parallel_restore_jobs(tmp_path / "scratch", 2**30) == 1


def shutil_usage(total: int, *, free: int):
    from collections import namedtuple

    return namedtuple("usage", "total used free")(total, total - free, free)
