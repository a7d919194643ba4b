"""One definition of "restorable" (issue 13, findings 2 and 3; DESIGN.md section 5 and
invariant 11): `restore latest`, `status` and `integrity metrics` never take as the newest
restorable backup one that a restore or drill failed, one that failed deep verification,
one whose audit found violations, one whose manifest names no store, or a safety backup,
however new it is.

Each test first shows that the newer backup *is* `latest` while it is sound (the control),
then breaks it the way the incident's replay did, through the real CLI, on a real SQLite
file and the real PostgreSQL server, and shows that everything falls back to the older
good backup.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import replace
from datetime import datetime

import pytest

from backup_helpers import BackupEnv, execute, one_error, write_manifest
from restore_helpers import content, damage_like_the_incident, filled_restore_env


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def env(request, tmp_path, filled_copy) -> BackupEnv:
    return filled_restore_env(request, tmp_path, filled_copy)


def _status_check(env: BackupEnv, name: str) -> dict:
    _, document = env.invoke_json("status")
    return {check["name"]: check for check in document["result"]["checks"]}[name]


def _metrics(env: BackupEnv) -> dict[str, float]:
    """The unlabelled series of `integrity metrics`."""
    result = env.invoke("metrics")
    assert result.returncode == 0, result.output
    return {
        line.split()[0]: float(line.split()[1])
        for line in result.stdout.splitlines()
        if line.startswith("integrity_") and "{" not in line
    }


def _epoch(env: BackupEnv, backup_id: str) -> float:
    return datetime.fromisoformat(env.listed()[backup_id]["created_at"]).timestamp()


def _assert_newest_restorable(env: BackupEnv, backup_id: str) -> None:
    """`restore latest`, `status` and `metrics` all take `backup_id` as the newest restorable backup."""
    assert env.latest() == backup_id
    check = _status_check(env, "newest good backup")
    assert check["state"] == "ok" and check["detail"].startswith(f"{backup_id}, "), check
    assert _metrics(env)["integrity_backup_newest_good_timestamp_seconds"] == _epoch(env, backup_id)


def _forge_counts(env: BackupEnv, backup_id: str) -> None:
    """Make the backup's content and its manifest disagree (one result more in the
    manifest than in the data) with every hash recomputed: quick verification passes, a
    restored copy's counts do not."""
    repository = env.repository()
    manifest = repository.read_manifest(backup_id)
    tables = copy.deepcopy(manifest.tables)
    tables["results"]["rows"] += 1
    write_manifest(repository.path_of(backup_id), replace(manifest, tables=tables))
    assert env.invoke("backup", "verify", backup_id).returncode == 0


# ---------------------------------------------------------------- each way a backup goes bad


def _failed_by_a_restore(env: BackupEnv, backup_id: str) -> None:
    _forge_counts(env, backup_id)
    before = content(env.url)
    result = env.invoke("restore", backup_id, "--yes")
    assert result.returncode == 5, result.output
    assert "does not hold what its manifest says" in one_error(result)
    assert content(env.url) == before  # live as it was
    assert "failed" in env.journal_events(backup_id)
    listed = env.listed()
    assert "FAILED" in listed[backup_id]["states"]
    # The staging copy is checked before the safety backup is taken (issue 14.1): none was.
    assert not [b for b in listed.values() if b["safety"]]
    assert _metrics(env)["integrity_backups_failed"] == 1


def _failed_by_a_drill(env: BackupEnv, backup_id: str) -> None:
    _forge_counts(env, backup_id)
    code, document = env.invoke_json("drill", "--backup", backup_id)
    assert code == 5, document
    events = env.journal_events(backup_id)
    assert "failed" in events and "deep_failed" in events
    assert "FAILED" in env.listed()[backup_id]["states"]


def _deep_failed(env: BackupEnv, backup_id: str) -> None:
    _forge_counts(env, backup_id)
    code, document = env.invoke_json("backup", "verify", "--deep", backup_id)
    assert code == 5, document
    assert env.journal_events(backup_id)[-1] == "deep_failed"
    assert "DEEP-FAILED" in env.listed()[backup_id]["states"]
    assert _metrics(env)["integrity_backups_deep_failed"] == 1


def _dirty(env: BackupEnv, backup_id: str) -> None:
    # Live was damaged (an impossible accuracy) before this backup was taken: intact and
    # plausible, but its audit on the restored copy finds the violation.
    code, document = env.invoke_json("backup", "verify", "--deep", backup_id)
    assert code == 3, document
    assert document["result"]["results"][0]["audit"] == "dirty"
    assert "dirty" in env.listed()[backup_id]["states"]


def _no_identity(env: BackupEnv, backup_id: str) -> None:
    # A manifest without store identity (an older tool, a hand-made copy): nothing proves
    # it is this game's database. Its manifest hash is recomputed: it is intact.
    repository = env.repository()
    manifest = repository.read_manifest(backup_id)
    write_manifest(repository.path_of(backup_id), replace(manifest, source_identity=None))
    assert env.invoke("backup", "verify", backup_id).returncode == 0
    assert env.listed()[backup_id]["identity"] is None


BREAKERS = {
    "failed-by-a-restore": _failed_by_a_restore,
    "failed-by-a-drill": _failed_by_a_drill,
    "deep-failed": _deep_failed,
    "dirty": _dirty,
    "without-store-identity": _no_identity,
}


@pytest.mark.parametrize("kind", BREAKERS)
def test_latest_status_and_metrics_skip_a_backup_that_went_bad(env, kind):
    good = env.create()
    if kind == "dirty":
        execute(env.url, "UPDATE results SET accuracy = 180 WHERE id = (SELECT MIN(id) FROM results)")
    newer = env.create()
    _assert_newest_restorable(env, newer)  # the control: sound, it is the one

    BREAKERS[kind](env, newer)

    _assert_newest_restorable(env, good)
    # Retention agrees: the bad one does not count toward keep_last.
    code, document = env.invoke_json("backup", "prune", "--dry-run", INTEGRITY_BACKUPS__RETENTION__KEEP_LAST="1")
    assert code == 0, document
    reasons = {d["backup_id"]: d["reasons"] for d in document["result"]["plan"]["decisions"]}
    assert "keep_last" in reasons[good] and "newest restorable backup" in reasons[good], reasons
    assert "keep_last" not in reasons[newer], reasons


# ---------------------------------------------------------------- safety backups


def test_latest_never_picks_a_safety_backup_even_the_only_other_one(env):
    """The replay: a restore interrupted after its safety backup leaves that backup, holding
    live's damage, as the newest intact one; `restore latest --yes` restored it and exited
    0. A safety backup is restored only when named by its id."""
    good = env.create()
    before = content(env.url)
    damage_like_the_incident(env.url)

    killed = env.run("restore", good, "--yes", INTEGRITY_CRASH_AT="restore:safety-backup-taken")
    assert killed.returncode == -9, killed.stderr
    listed = env.listed()
    (safety,) = [b for b in listed if b != good]
    assert listed[safety]["safety"] and "safety" in listed[safety]["states"] and "intact" in listed[safety]["states"]
    assert safety > good  # the newest, intact: only its purpose keeps it out

    _assert_newest_restorable(env, good)
    result = env.invoke("restore", "latest", "--yes")
    assert result.returncode == 0, result.output
    assert content(env.url) == before  # the good data back, not the damage

    # Only safety backups left: `latest` has nothing to choose, and says why.
    shutil.rmtree(env.repo / good)
    result = env.invoke("restore", "latest", "--dry-run")
    assert result.returncode == 4, result.output
    message = one_error(result)
    assert message.startswith(f"no restorable backup of this database in {env.repo}")
    assert "a safety backup (restored only when named by id)" in message
    check = _status_check(env, "newest good backup")
    assert check["state"] == "problem" and check["detail"].startswith("none restorable"), check
    assert _metrics(env)["integrity_backup_newest_good_timestamp_seconds"] == 0
    # Named by its id, it is still there for whoever needs live as it was.
    code, document = env.invoke_json("restore", safety, "--dry-run")
    assert code == 0, document
    assert any(w.startswith("this is the safety backup a restore took") for w in document["result"]["warnings"])
