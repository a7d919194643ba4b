"""The backup commands' bad input and their exit codes: an unusable or full repository,
ids that are not ids, pg_dump missing or too old, `backup check` (with a restricted
role), pins in `list`/`show`, and `status` against the RPO and the deep-verify limit.
Each failure is one `Error:` line with the documented exit code, never a traceback.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from backup_helpers import (
    SECRET,
    BackupEnv,
    clone_backup,
    fill_database,
    one_error,
    with_password,
)
from game_core.db import create_engine
from integrity.backups.repository import TEMP_PREFIX

UTC = timezone.utc


@pytest.fixture
def env(tmp_path, filled_copy) -> BackupEnv:
    """A SQLite game database holding fill_database(players=3, results_per_player=10), a copy
    of a template filled once."""
    return BackupEnv(tmp_path, filled_copy("sqlite", players=3, results_per_player=10))


def _checks(env: BackupEnv, **extra: str) -> tuple[int, dict[str, tuple[str, str]]]:
    code, document = env.invoke_json("status", **extra)
    return code, {c["name"]: (c["state"], c["detail"]) for c in document["result"]["checks"]}


# ---------------------------------------------------------------- the repository


def test_repository_missing_is_exit_4_for_readers(env):
    env.repo.rmdir()
    for command in (("backup", "list"), ("backup", "verify"), ("backup", "prune")):
        result = env.invoke(*command)
        assert result.returncode == 4, (command, result.output)
        assert f"backup repository {env.repo} does not exist" in one_error(result)


def test_a_missing_repository_is_never_created_by_a_backup(env, tmp_path):
    """Issue 13.3: a repository on an unmounted share (`/mnt/nfs-backups/x`) was silently
    created on the root file system. Only `integrity init` creates one."""
    unmounted = tmp_path / "mnt" / "nfs-backups" / "x"
    created = env.invoke("backup", "create", INTEGRITY_BACKUPS__REPOSITORY=str(unmounted))
    assert created.returncode == 4, (created.stdout, created.stderr)
    message = one_error(created)
    assert f"backup repository {unmounted} does not exist" in message and "integrity init" in message
    checked = env.invoke("backup", "check", INTEGRITY_BACKUPS__REPOSITORY=str(unmounted))
    assert checked.returncode == 4
    assert f"backup repository {unmounted} does not exist" in " ".join(checked.stdout.split())
    assert not (tmp_path / "mnt").exists()


def test_repository_that_cannot_be_created_is_exit_4(env, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = env.invoke("init", INTEGRITY_BACKUPS__REPOSITORY=str(blocker / "repo"))
    assert result.returncode == 4
    message = one_error(result)
    assert f"cannot create the backup repository {blocker / 'repo'}" in message
    assert "[backups] repository" in message


def test_repository_unwritable_is_exit_4_and_leaves_nothing(env):
    env.create()
    mode = env.repo.stat().st_mode
    env.repo.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(env.repo, os.W_OK):
            pytest.skip("this user (root?) can write to a read-only directory")
        result = env.run("backup", "create")
        assert result.returncode == 4
        assert "not writable" in one_error(result)
    finally:
        env.repo.chmod(mode)
    assert len(env.listed_ids()) == 1


@pytest.fixture
def small_filesystem(tmp_path):
    """A tmpfs whose size the test chooses (root with CAP_SYS_ADMIN only)."""
    mounts = []

    def mount(size_bytes: int):
        point = tmp_path / f"small-fs-{len(mounts)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes // 1024}k", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs to fill up: {done.stderr.strip()}")
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", str(point)], check=False)


@pytest.mark.parametrize("room", ["copy-does-not-fit", "compressed-does-not-fit"])
def test_repository_full_removes_the_partial_backup_and_says_how_much_was_needed(tmp_path, filled_copy, small_filesystem, room):
    sqlite_url = filled_copy("sqlite", players=10, results_per_player=1000)
    size = (tmp_path / "game.db").stat().st_size
    # The staged copy is the database's size; the compressed file comes beside it.
    point = small_filesystem(size // 2 if room == "copy-does-not-fit" else size + size // 8)
    env = BackupEnv(tmp_path, sqlite_url, extra_env={"INTEGRITY_BACKUPS__REPOSITORY": str(point / "repo")})
    (point / "repo").mkdir()
    result = env.invoke("backup", "create")
    assert result.returncode == 4, result.stderr
    message = one_error(result)
    assert "ran out of space" in message and "needs about" in message and "partial backup was removed" in message
    assert not [p for p in (point / "repo").iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert env.invoke("backup", "list", INTEGRITY_BACKUPS__REPOSITORY=str(point / "repo")).returncode == 0
    code, document = env.invoke_json("backup", "list", INTEGRITY_BACKUPS__REPOSITORY=str(point / "repo"))
    assert document["result"]["backups"] == []


# ---------------------------------------------------------------- ids


BAD_IDS = ("../etc", "..", "/etc/passwd", "20261127T030118Z-a1b2c3/../../x", ".tmp-20261127T030118Z-a1b2c3", "latest!")


@pytest.mark.parametrize("command", ["verify", "show", "pin", "unpin"])
def test_ids_that_escape_or_do_not_exist_are_exit_4(env, command):
    env.create()
    for bad in (*BAD_IDS, "20200101T000000Z-abcdef"):
        result = env.invoke("backup", command, bad)
        assert result.returncode == 4, (bad, result.output)
        message = one_error(result)
        assert "integrity backup list" in message, message
    assert {e.backup_id for e in env.repository().journal()} == set(env.listed_ids())


def test_escaping_id_through_the_real_cli(env):
    env.create()
    result = env.run("backup", "verify", "../etc")
    assert result.returncode == 4
    assert one_error(result) == "'../etc' is not a backup id (like 20261127T030118Z-a1b2c3); list them with `integrity backup list`"
    assert result.stdout == ""


# ---------------------------------------------------------------- pg_dump


@pytest.mark.postgres
def test_pg_dump_missing_is_exit_4_naming_it(tmp_path, pg_url, monkeypatch):
    import integrity.db.pg_tools as pg_tools

    monkeypatch.setattr(pg_tools, "find_tool", lambda name: None)
    env = BackupEnv(tmp_path, pg_url)
    result = env.invoke("backup", "create")
    assert result.returncode == 4, result.output
    message = one_error(result)
    assert message.startswith("pg_dump not found on PATH") and "postgresql-client-" in message
    assert env.listed_ids() == []
    assert not [p for p in env.repo.iterdir() if p.name.startswith(TEMP_PREFIX)]

    code, document = env.invoke_json("backup", "check")
    assert code == 4
    findings = {f["name"]: f for f in document["result"]["findings"]}
    assert findings["pg_dump"]["state"] == "fail" and "pg_dump not found" in findings["pg_dump"]["detail"]


@pytest.mark.postgres
def test_pg_dump_older_than_the_server_is_exit_4(tmp_path, pg_url, monkeypatch):
    import integrity.db.pg_tools as pg_tools

    fake = tmp_path / "bin" / "pg_dump"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    fake.chmod(0o755)
    monkeypatch.setattr(pg_tools, "find_tool", lambda name: str(fake))
    env = BackupEnv(tmp_path, pg_url)
    result = env.invoke("backup", "create")
    assert result.returncode == 4
    assert "is version 9, older than the server" in one_error(result)
    assert env.listed_ids() == []


# ---------------------------------------------------------------- backup check


def test_backup_check_on_sqlite_passes_and_leaves_nothing(env):
    code, document = env.invoke_json("backup", "check")
    assert code == 0, document
    findings = {f["name"]: f["state"] for f in document["result"]["findings"]}
    assert findings["trial backup"] == "ok" and findings["database"] == "ok"
    assert findings["placement"] == "warn"  # repository and database share tmp_path's disk
    assert env.listed_ids() == [] and list(env.repo.iterdir()) == [env.repo / "locks"]


@pytest.mark.postgres
def test_backup_check_on_postgresql_passes(tmp_path, pg_url):
    fill_database(pg_url, players=2, results_per_player=5)
    env = BackupEnv(tmp_path, with_password(pg_url))
    result = env.run("backup", "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "trial backup" in result.stdout and SECRET not in result.stdout + result.stderr
    assert env.listed_ids() == []


@pytest.mark.postgres
def test_backup_check_with_the_restricted_role(tmp_path, pg_url, pg_restricted_url):
    def as_owner(statement: str) -> None:
        owner = create_engine(pg_url)
        with owner.begin() as connection:
            connection.execute(sa.text(statement))
        owner.dispose()

    def findings() -> tuple[int, dict]:
        code, document = env.invoke_json("backup", "check")
        return code, {f["name"]: f for f in document["result"]["findings"]}

    env = BackupEnv(tmp_path, pg_restricted_url)
    # SELECT on the tables only: pg_dump also reads the sequences, and the check says so.
    code, found = findings()
    assert code == 4 and found["database rights"]["state"] == "fail"
    assert "cannot SELECT players_id_seq, results_id_seq" in found["database rights"]["detail"]
    created = env.invoke("backup", "create")
    assert created.returncode == 4 and "permission denied for sequence" in one_error(created)
    assert env.listed_ids() == []

    as_owner("GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO integrity_test_restricted")
    code, found = findings()
    assert code == 0, [f["detail"] for f in found.values()]
    assert found["trial backup"]["state"] == "ok"

    as_owner("REVOKE SELECT ON personal_bests FROM integrity_test_restricted")
    code, found = findings()
    assert code == 4
    rights = found["database rights"]
    assert rights["state"] == "fail"
    assert "cannot SELECT personal_bests;" in rights["detail"] and "GRANT SELECT" in rights["detail"]
    assert "trial backup" not in found
    assert env.listed_ids() == []


# ---------------------------------------------------------------- pins


def test_pin_and_unpin_show_in_list_and_show(env):
    backup_id = env.create()

    def state():
        code, listing = env.invoke_json("backup", "list")
        (backup,) = listing["result"]["backups"]
        code, detail = env.invoke_json("backup", "show", backup_id)
        assert detail["result"]["states"] == backup["states"]
        return backup["states"], detail["result"]["state"]["pinned_until"]

    assert state() == (["intact"], None)
    pinned = env.invoke("backup", "pin", backup_id)
    assert pinned.returncode == 0 and f"pinned {backup_id} until forever" in pinned.stdout
    assert state() == (["intact", "pinned"], "forever")
    listing = env.invoke("backup", "list")
    assert "intact, pinned" in listing.stdout

    env.invoke("backup", "pin", backup_id, "--until", "30d")
    states, until = state()
    assert states == ["intact", "pinned"]
    assert timedelta(days=29) < datetime.fromisoformat(until) - datetime.now(UTC) <= timedelta(days=30)

    unpinned = env.invoke("backup", "unpin", backup_id)
    assert unpinned.returncode == 0
    assert state() == (["intact"], None)

    past = env.invoke("backup", "pin", backup_id, "--until", "2020-01-01")
    assert past.returncode == 2 and "in the past" in one_error(past)
    assert state() == (["intact"], None)


# ---------------------------------------------------------------- status


def test_status_with_no_backups_is_exit_3(env):
    env.repo.rmdir()  # as before `integrity init`
    code, checks = _checks(env)
    assert code == 3
    assert checks["backups"][0] == "problem" and "no repository" in checks["backups"][1]
    env.repo.mkdir()
    code, checks = _checks(env)
    assert code == 3
    assert checks["newest good backup"][0] == "problem" and checks["newest deep-verified backup"][0] == "problem"


def test_status_after_create_and_deep_verify_is_exit_0(env):
    env.create()
    code, checks = _checks(env)
    assert code == 3 and checks["newest good backup"][0] == "ok" and checks["newest deep-verified backup"][0] == "problem"
    assert env.invoke("backup", "verify", "--deep").returncode == 0
    assert env.invoke("audit").returncode == 0  # status also wants a recorded audit
    assert env.invoke("drill").returncode == 0  # ...and a recorded drill
    result = env.run("status")  # the real CLI
    assert result.returncode == 0, result.stdout


def test_status_exit_3_when_the_newest_good_backup_is_older_than_the_rpo(env):
    original = env.create()
    repository = env.repository()
    old = clone_backup(repository, original, datetime.now(UTC) - timedelta(hours=2))
    repository.append(old, "deep_verified", {"by": "test"})
    shutil.rmtree(repository.path_of(original))
    assert env.invoke("audit").returncode == 0  # status also wants a recorded audit
    assert env.invoke("drill").returncode == 3  # ...and a recorded drill (this backup misses the rpo)

    code, checks = _checks(env)  # rpo 3600 s by default
    assert code == 3
    assert checks["newest good backup"][0] == "problem" and checks["newest good backup"][1].startswith(old)
    assert checks["newest deep-verified backup"][0] == "ok"
    code, checks = _checks(env, INTEGRITY_OBJECTIVES__RPO_SECONDS="10800")
    assert code == 0, checks
    code, checks = _checks(env, INTEGRITY_OBJECTIVES__DEEP_VERIFY_MAX_AGE_SECONDS="3600", INTEGRITY_OBJECTIVES__RPO_SECONDS="10800")
    assert code == 3 and checks["newest deep-verified backup"][0] == "problem"


def test_status_rpo_measured_on_the_real_clock(env):
    env.create()
    assert env.invoke("backup", "verify", "--deep").returncode == 0
    assert env.invoke("audit").returncode == 0  # status also wants a recorded audit
    assert env.invoke("drill").returncode == 0  # ...and a recorded drill
    assert _checks(env, INTEGRITY_OBJECTIVES__RPO_SECONDS="3600")[0] == 0
    import time

    time.sleep(2.2)  # ids and manifests have one-second resolution
    code, checks = _checks(env, INTEGRITY_OBJECTIVES__RPO_SECONDS="1")
    assert code == 3 and checks["newest good backup"][0] == "problem"


def test_prune_during_backup_check_leaves_its_trial_backup_alone(env):
    """`backup check` writes its trial backup inside the repository; a prune running
    meanwhile must not remove it as a leftover of a killed run."""
    check = env.popen("backup", "check")
    try:
        def trial_holds_its_lock():
            for trial in env.repo.glob(f"{TEMP_PREFIX}check-*"):
                notes = trial / "locks" / "writer.lock.holders"
                if notes.is_dir() and any(f"-{check.pid}-" in p.name for p in notes.iterdir()):
                    return True
            return False

        from backup_helpers import wait_for

        wait_for(trial_holds_its_lock, what="the trial backup to start")
        os.kill(check.pid, signal.SIGSTOP)
        pruned = env.invoke("backup", "prune")
        assert [p for p in env.repo.glob(f"{TEMP_PREFIX}check-*")], pruned.output
        if pruned.returncode != 0:
            assert pruned.returncode == 4 and "locked by 'backup check'" in one_error(pruned)
    finally:
        os.kill(check.pid, signal.SIGCONT)
    out, err = check.communicate(timeout=60)
    assert check.returncode == 0, out + err
    assert not list(env.repo.glob(f"{TEMP_PREFIX}*"))
