"""`integrity backup verify`: quick verification catches every kind of damage (exit 5,
journalled `corrupt`, never accepted), and deep verification restores into scratch and
catches what hashes cannot: dirty data (exit 3), a shrunken table (exit 5), and a backup
whose content was changed with every hash recomputed to match.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import replace

import pytest
import sqlalchemy as sa
import zstandard

from backup_helpers import (
    BackupEnv,
    execute,
    fill_database,
    flip_byte,
    restore_sqlite_copy,
    scalar,
    sha256_file,
    write_manifest,
)
from integrity.backups.archive import compress_stream
from store_templates import DataDirTemplate
from integrity.backups.repository import MANIFEST, MANIFEST_HASH
from integrity.db.claims import SCRATCH_PREFIX

CORRUPTIONS = (
    "flip-data-byte",
    "flip-manifest-byte",
    "flip-manifest-hash-byte",
    "truncate-data",
    "swap-data-with-other-backup",
    "delete-manifest",
)


def _statuses(env: BackupEnv) -> tuple[int, dict[str, tuple[str, str]]]:
    """`status`: its exit code and {check: (state, detail)}."""
    code, document = env.invoke_json("status")
    return code, {check["name"]: (check["state"], check["detail"]) for check in document["result"]["checks"]}


@pytest.fixture(scope="module")
def two_backups_template(tmp_path_factory, sqlite_template) -> tuple[DataDirTemplate, str, str]:
    """Built once per module: an older and a newer backup of a database that grew in
    between (two fills, two creates: the second waits for the next second's id)."""
    root = tmp_path_factory.mktemp("two-backups")
    shutil.copyfile(sqlite_template, root / "game.db")
    url = f"sqlite:///{root / 'game.db'}"
    fill_database(url, players=4, results_per_player=30, seed=1)
    env = BackupEnv(root, url)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # as a test runs: in its own directory
        older = env.create()
        fill_database(url, players=2, results_per_player=30, seed=2)
        newer = env.create()
    return DataDirTemplate(root, []), older, newer


@pytest.fixture
def two_backups(tmp_path, two_backups_template):
    """The template's database, repository and state, copied into this test's directory:
    each test damages its own copy."""
    template, older, newer = two_backups_template
    template.copy_into(tmp_path)
    return BackupEnv(tmp_path, f"sqlite:///{tmp_path / 'game.db'}"), older, newer


def _damage(kind: str, env: BackupEnv, older: str, newer: str, rng: random.Random) -> None:
    directory = env.repo / newer
    manifest = env.repository().read_manifest(newer)
    data = directory / manifest.files[0].name
    if kind == "flip-data-byte":
        flip_byte(data, rng)
    elif kind == "flip-manifest-byte":
        flip_byte(directory / MANIFEST, rng)
    elif kind == "flip-manifest-hash-byte":
        flip_byte(directory / MANIFEST_HASH, rng, offset=rng.randrange(64))  # within the hex digest
    elif kind == "truncate-data":
        with data.open("r+b") as handle:
            handle.truncate(data.stat().st_size // 2)
    elif kind == "swap-data-with-other-backup":
        other = env.repository().read_manifest(older).files[0].name
        assert sha256_file(env.repo / older / other) != sha256_file(data)
        shutil.copyfile(env.repo / older / other, data)
    elif kind == "delete-manifest":
        (directory / MANIFEST).unlink()
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_quick_verify_catches_damage_and_never_accepts_it(two_backups, kind):
    env, older, newer = two_backups
    rng = random.Random(kind)
    assert env.invoke("backup", "verify", "--all").returncode == 0
    _damage(kind, env, older, newer, rng)

    code, document = env.invoke_json("backup", "verify", newer)
    assert code == 5, document
    (result,) = document["result"]["results"]
    assert result["quick"] == "failed" and result["problems"]
    assert newer in result["problems"][0]
    assert env.journal_events(newer)[-1] == "corrupt"

    # Never accepted: a deep verify refuses it too, the catalogue marks it, the newest good
    # backup is the older one, and status fails with exit 5 for the newest backup.
    assert env.invoke("backup", "verify", "--deep", newer).returncode == 5
    assert "deep_verified" not in env.journal_events(newer)
    code, listing = env.invoke_json("backup", "list")
    states = {b["id"]: b["states"] for b in listing["result"]["backups"]}
    assert "CORRUPT" in states[newer] and "intact" in states[older]
    code, checks = _statuses(env)
    assert code == 5, checks
    assert checks["newest backup"][0] == "failed" and newer in checks["newest backup"][1]
    assert checks["newest good backup"][1].startswith(older)
    # The undamaged neighbour still verifies.
    assert env.invoke("backup", "verify", older).returncode == 0


def test_verify_all_reports_the_damaged_one_and_passes_the_rest(two_backups):
    env, older, newer = two_backups
    flip_byte(env.repo / older / env.repository().read_manifest(older).files[0].name, random.Random(7))
    code, document = env.invoke_json("backup", "verify", "--all")
    assert code == 5
    assert {r["backup_id"]: r["quick"] for r in document["result"]["results"]} == {older: "failed", newer: "ok"}


@pytest.mark.parametrize("event, code, shown", [
    ("deep_failed", 5, "DEEP-FAILED"), ("failed", 5, "FAILED by a restore or drill"), ("dirty", 3, "dirty"),
])
def test_verify_all_never_prints_a_bare_ok_beside_a_backup_known_to_be_bad(two_backups, event, code, shown):
    """Issue 13.8: `backup verify --all` printed "ok" for deep-failed backups. Their bytes
    are fine; the backup is not: the detail says why and the exit code counts it."""
    env, older, newer = two_backups
    env.repository().append(older, event, {"problem": "planted by the test", "by": "test"})
    completed = env.invoke("backup", "verify", "--all")
    assert completed.returncode == code, completed.output
    (line,) = [line for line in completed.output.splitlines() if older in line]
    assert shown in line and "planted by the test" in line or event == "dirty"
    (clean_line,) = [line for line in completed.output.splitlines() if newer in line]
    assert shown not in clean_line
    document = env.invoke_json("backup", "verify", "--all")[1]
    known = {r["backup_id"]: r["known_problems"] for r in document["result"]["results"]}
    assert known[older][0].startswith(shown) and known[newer] == []


@pytest.mark.postgres
def test_quick_verify_catches_a_flipped_byte_in_a_postgresql_dump(tmp_path, pg_url):
    fill_database(pg_url, players=3, results_per_player=20)
    env = BackupEnv(tmp_path, pg_url)
    backup_id = env.create()
    flip_byte(env.repo / backup_id / env.repository().read_manifest(backup_id).files[0].name, random.Random(3))
    assert env.invoke("backup", "verify", backup_id).returncode == 5
    assert env.journal_events(backup_id)[-1] == "corrupt"


# ---------------------------------------------------------------- deep verification


def _scratch_databases(pg_admin, backup_id: str) -> list[str]:
    prefix = f"{SCRATCH_PREFIX}{backup_id[:15].lower()}"
    with pg_admin.connect() as connection:
        return connection.execute(
            sa.text("SELECT datname FROM pg_database WHERE starts_with(datname, :p)"), {"p": prefix}
        ).scalars().all()


def test_deep_verify_passes_and_journals_deep_verified_and_clean(database_url, tmp_path, request):
    fill_database(database_url, players=5, results_per_player=30)
    env = BackupEnv(tmp_path, database_url)
    backup_id = env.create()
    code, document = env.invoke_json("backup", "verify", "--deep", backup_id)
    assert code == 0, document
    (result,) = document["result"]["results"]
    assert (result["quick"], result["deep"], result["audit"]) == ("ok", "ok", "clean")
    assert result["fingerprints"]["results"]["rows"] == 150
    assert env.journal_events(backup_id)[-2:] == ["deep_verified", "clean"]
    code, listing = env.invoke_json("backup", "list")
    assert listing["result"]["backups"][0]["states"] == ["intact", "deep-verified", "clean"]
    if database_url.startswith("postgresql"):
        assert _scratch_databases(request.getfixturevalue("pg_admin"), backup_id) == []
    else:
        assert list((env.settings().state.dir / "scratch").glob("*")) == []


def test_deep_verify_of_dirty_data_exits_3(database_url, tmp_path):
    fill_database(database_url, players=4, results_per_player=20)
    # A progress row whose level is not the level of its xp.
    execute(database_url, "UPDATE progress SET level = level + 3 WHERE player_id = (SELECT MIN(player_id) FROM progress)")
    env = BackupEnv(tmp_path, database_url)
    backup_id = env.create()
    code, document = env.invoke_json("backup", "verify", "--deep", backup_id)
    assert code == 3, document
    (result,) = document["result"]["results"]
    assert (result["deep"], result["audit"]) == ("ok", "dirty")
    assert {"rule": "progress.level_matches_xp", "severity": "error", "failing_rows": 1} in result["violations"]
    assert env.journal_events(backup_id)[-2:] == ["deep_verified", "dirty"]
    code, listing = env.invoke_json("backup", "list")
    assert "dirty" in listing["result"]["backups"][0]["states"]


def test_deep_verify_fails_when_a_table_shrank_past_the_tolerance(database_url, tmp_path, request):
    fill_database(database_url, players=5, results_per_player=40)
    env = BackupEnv(tmp_path, database_url)
    before = env.create()
    # 10% or less is within the default tolerance; more than 10% is not.
    # 5%, never the newest result (results are append-only: a newest row older than the
    # previous backup's makes a backup suspect as a stale copy)
    execute(database_url, "DELETE FROM results WHERE id % 20 = 0 AND created_at < (SELECT MAX(created_at) FROM results)")
    from game_core.rebuild import rebuild_derived
    from game_core.db import create_engine

    def rebuild():
        engine = create_engine(database_url)
        with engine.begin() as connection:
            rebuild_derived(connection)
        engine.dispose()

    rebuild()
    within = env.create()
    assert env.invoke("backup", "verify", "--deep", within).returncode == 0
    execute(database_url, "DELETE FROM results WHERE id % 5 = 1 AND created_at < (SELECT MAX(created_at) FROM results)")  # about 20% more
    rebuild()
    shrunk = env.create(suspect=True)  # the same tolerance makes it suspect when taken
    assert "results" in " ".join(env.invoke_json("backup", "show", shrunk)[1]["result"]["manifest"]["suspect_reasons"])
    code, document = env.invoke_json("backup", "verify", "--deep", shrunk)
    assert code == 5, document
    (result,) = document["result"]["results"]
    assert result["deep"] == "failed" and result["audit"] is None
    problem = " ".join(result["problems"])
    assert "results shrank by" in problem and within in problem
    assert env.journal_events(shrunk)[-1] == "deep_failed"
    code, listing = env.invoke_json("backup", "list")
    assert "DEEP-FAILED" in {b["id"]: b["states"] for b in listing["result"]["backups"]}[shrunk]
    # The newest good backup is no longer the newest one.
    code, checks = _statuses(env)
    assert code == 5 and checks["newest good backup"][1].startswith(within)
    assert before in env.listed_ids()
    if database_url.startswith("postgresql"):
        assert _scratch_databases(request.getfixturevalue("pg_admin"), shrunk) == []


def test_deep_verify_fails_when_a_table_emptied(tmp_path, sqlite_url):
    fill_database(sqlite_url, players=2, results_per_player=5)
    env = BackupEnv(tmp_path, sqlite_url, extra_env={"INTEGRITY_BACKUPS__SHRINK_TOLERANCE": "1.0"})
    env.create()
    execute(sqlite_url, "DELETE FROM personal_bests", "DELETE FROM progress", "DELETE FROM results")
    emptied = env.create()
    code, document = env.invoke_json("backup", "verify", "--deep", emptied)
    assert code == 5
    assert "results emptied since backup" in " ".join(document["result"]["results"][0]["problems"])


def _forge(env: BackupEnv, backup_id: str, tmp_path, sql: str) -> None:
    """Change the content of a SQLite backup and recompute every hash consistently."""
    repository = env.repository()
    manifest = repository.read_manifest(backup_id)
    entry = manifest.files[0]
    copy = restore_sqlite_copy(repository, backup_id, tmp_path / "forged.db")
    execute(f"sqlite:///{copy}", sql)
    data = repository.path_of(backup_id) / entry.name
    data.unlink()
    with copy.open("rb") as raw:
        digest = compress_stream(raw, data, level=3)
    forged_entry = replace(entry, size=digest.size, sha256=digest.sha256, raw_size=digest.raw_size, raw_sha256=digest.raw_sha256)
    assert forged_entry != entry
    write_manifest(repository.path_of(backup_id), replace(manifest, files=(forged_entry,)))
    assert zstandard.ZstdDecompressor().decompressobj().decompress(data.read_bytes())  # a real zstd file


def test_forged_content_with_recomputed_hashes_fails_deep_verification(tmp_path, sqlite_url):
    fill_database(sqlite_url, players=3, results_per_player=20)
    env = BackupEnv(tmp_path, sqlite_url)
    backup_id = env.create()
    _forge(env, backup_id, tmp_path, "UPDATE results SET xp = xp + 1 WHERE id = (SELECT MIN(id) FROM results)")
    # Every hash matches: quick verification cannot see it...
    assert env.invoke("backup", "verify", backup_id).returncode == 0
    # ...the restored copy's aggregates can.
    code, document = env.invoke_json("backup", "verify", "--deep", backup_id)
    assert code == 5, document
    assert any("results.sum_xp" in p for p in document["result"]["results"][0]["problems"])
    assert env.journal_events(backup_id)[-1] == "deep_failed"


def test_forged_value_outside_the_aggregates_is_caught_by_the_audits(tmp_path, sqlite_url):
    fill_database(sqlite_url, players=3, results_per_player=20)
    env = BackupEnv(tmp_path, sqlite_url)
    backup_id = env.create()
    _forge(env, backup_id, tmp_path, "UPDATE results SET accuracy = 180 WHERE id = (SELECT MIN(id) FROM results)")
    assert env.invoke("backup", "verify", backup_id).returncode == 0
    code, document = env.invoke_json("backup", "verify", "--deep", backup_id)
    assert code == 3, document
    (result,) = document["result"]["results"]
    assert result["audit"] == "dirty"
    assert [v["rule"] for v in result["violations"]] == ["results.accuracy_range", "results.accuracy_recomputed"]


@pytest.mark.postgres
def test_postgresql_scratch_database_is_dropped_when_the_restore_fails(tmp_path, pg_url, pg_admin):
    """A dump whose content was changed but rehashed: pg_restore fails, the scratch
    database is dropped all the same."""
    fill_database(pg_url, players=2, results_per_player=10)
    env = BackupEnv(tmp_path, pg_url)
    backup_id = env.create()
    repository = env.repository()
    manifest = repository.read_manifest(backup_id)
    entry = manifest.files[0]
    raw = zstandard.ZstdDecompressor().decompressobj().decompress((repository.path_of(backup_id) / entry.name).read_bytes())
    forged = tmp_path / "forged.dump"
    forged.write_bytes(raw[: len(raw) // 2])  # a custom-format archive cut in half
    data = repository.path_of(backup_id) / entry.name
    data.unlink()
    with forged.open("rb") as handle:
        digest = compress_stream(handle, data, level=3)
    write_manifest(repository.path_of(backup_id), replace(manifest, files=(replace(
        entry, size=digest.size, sha256=digest.sha256, raw_size=digest.raw_size, raw_sha256=digest.raw_sha256),)))
    assert env.invoke("backup", "verify", backup_id).returncode == 0
    code, document = env.invoke_json("backup", "verify", "--deep", backup_id)
    assert code == 5, document
    assert "pg_restore" in " ".join(document["result"]["results"][0]["problems"]), document["result"]["results"][0]["problems"]
    assert _scratch_databases(pg_admin, backup_id) == []
    assert scalar(pg_url, "SELECT COUNT(*) FROM results") == 20  # the source was never touched
