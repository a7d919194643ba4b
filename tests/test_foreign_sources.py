"""A backup without a proven store identity is never this store's (issue 14 item 2,
the identity half).

The issue's example: a backup of another game database whose `store_identity` row was
gone sat in this repository; `status` showed it as the newest good backup and
`restore latest --yes` replaced 300 players with 7. Such backups exist: older versions
of the tool wrote them, and a restore's safety backup of a database without the row is
one. `Catalog.of_store` keeps only backups whose manifest proves their store, and
`backup create` refuses a source that is not a game database; here the class is tested,
on both engines, through the real CLI:

- backups whose identity is missing: another game database's with its row deleted, with
  its table dropped, another game database's backup whose manifest lost the identity, and
  even this store's own backup whose manifest lost it (no proof is no proof);
- none of them is `latest` (restore, drill, diff), status's newest good backup, or what the
  RPO is measured on; `restore latest --yes` never replaces this store's players with them:
  exit 4 "no restorable backup" when this store has none of its own, else its own;
- `backup create` refuses the other game database without its identity (exit 4).
"""

from __future__ import annotations

import re
import shutil
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from backup_helpers import BackupEnv, clone_backup, execute, one_error, write_manifest
from restore_helpers import content, drop_restore_leftovers

OWN_PLAYERS, OTHER_PLAYERS = 30, 7

# How the other database loses its proof of identity before its backup is taken.
LOSE_ROW = {
    "row-deleted": ["DELETE FROM store_identity"],
    "table-dropped": ["DROP TABLE store_identity"],
}
VARIANTS = ("row-deleted", "table-dropped", "manifest-without-identity", "own-backup-manifest-without-identity")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def two_stores(request, tmp_path, filled_copy):
    """(this store's URL, another game database's URL), both migrated, the other with
    fewer players; one repository and state directory for both (BackupEnv on tmp_path).
    Each is a copy of a template filled once per session (conftest's filled_copy)."""
    (tmp_path / "other").mkdir()
    own = filled_copy(request.param, players=OWN_PLAYERS, results_per_player=3, prefix="own")
    other = filled_copy(request.param, file_name="other/game.db", players=OTHER_PLAYERS, results_per_player=3,
                        prefix="other")
    if request.param == "postgresql":
        admin = request.getfixturevalue("pg_admin")
        request.addfinalizer(lambda: drop_restore_leftovers(admin, sa.make_url(own).database))
    # A copied template shares the template's identity: each store gets its own, as init gives.
    for url in (own, other):
        execute(url, "UPDATE store_identity SET identity_uuid = :u", u=str(uuid.uuid4()))
    return own, other


def identity_less_backup(tmp_path, own: str, other: str, variant: str) -> str:
    """A backup in the shared repository with no store identity in its manifest, taken the
    way `variant` says; returns its id."""
    from integrity.backups.create import create_backup

    env = BackupEnv(tmp_path, own if variant.startswith("own-") else other)
    repository = env.repository()
    if variant in LOSE_ROW:
        execute(other, *LOSE_ROW[variant])
        # `backup create` refuses it now; a restore's safety backup (or an older version
        # of this tool) still takes it: its data and manifest both have no identity.
        backup_id = create_backup(env.settings(), purpose="safety").manifest.id
    else:
        backup_id = env.create()
    manifest = repository.read_manifest(backup_id)
    # What an older version wrote: a plain nightly backup, with no identity.
    write_manifest(repository.path_of(backup_id), replace(
        manifest, source_identity=None, purpose="backup", label="nightly", suspect_reasons=[],
    ))
    assert repository.read_manifest(backup_id).source_identity is None
    assert env.invoke("backup", "verify", backup_id).returncode == 0  # intact: only its identity is missing
    return backup_id


def usernames(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return set(connection.execute(sa.text("SELECT username FROM players")).scalars())
    finally:
        engine.dispose()


def newest_good(env: BackupEnv) -> dict:
    code, document = env.invoke_json("status")
    return next(c for c in document["result"]["checks"] if c["name"] == "newest good backup")


def dry_run_choice(env: BackupEnv) -> str | None:
    result = env.invoke("restore", "latest", "--dry-run")
    found = re.search(r"restore plan for backup (\S+)", result.stdout)
    return found and found.group(1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_without_a_backup_of_its_own_nothing_is_latest_and_restore_replaces_nothing(tmp_path, two_stores, variant):
    own, other = two_stores
    foreign = identity_less_backup(tmp_path, own, other, variant)
    env = BackupEnv(tmp_path, own)
    before, players = content(own), usernames(own)
    assert len(players) == OWN_PLAYERS

    check = newest_good(env)
    assert check["state"] == "problem" and check["detail"].startswith("none restorable"), check
    for args in (("--no-input", "restore", "latest", "--yes"), ("restore", "latest", "--dry-run"),
                 ("drill",), ("diff", "latest")):
        result = env.invoke(*args)
        assert result.returncode == 4, (args, result.output)
        message = one_error(result)
        assert message.startswith("no restorable backup of this database in "), (args, message)
    assert content(own) == before and usernames(own) == players
    assert foreign in env.listed_ids()  # listed, as what it is; never chosen


@pytest.mark.parametrize("variant", VARIANTS)
def test_this_stores_own_older_backup_stays_latest_newest_good_and_the_rpo(tmp_path, two_stores, variant):
    """The identity-less backup is newer than this store's own, which is two days old: the
    own one is latest and status's newest good backup, and the RPO is missed (the fresh
    identity-less backup does not count). `restore latest --yes` restores the own one."""
    own, other = two_stores
    env = BackupEnv(tmp_path, own)
    repository = env.repository()
    fresh_own = env.create()
    own_id = clone_backup(repository, fresh_own, datetime.now(timezone.utc) - timedelta(days=2))
    shutil.rmtree(repository.path_of(fresh_own))
    foreign = identity_less_backup(tmp_path, own, other, variant)
    if variant.startswith("own-"):
        assert foreign not in (own_id, fresh_own)

    check = newest_good(env)
    assert check["state"] == "problem" and check["detail"].startswith(f"{own_id}, "), check  # over the RPO
    assert foreign not in check["detail"]
    assert dry_run_choice(env) == own_id

    execute(own, "INSERT INTO players (username, created_at) VALUES ('late_player', CURRENT_TIMESTAMP)")
    players = usernames(own)
    result = env.invoke("--no-input", "restore", "latest", "--yes",
                        *(["--terminate-connections"] if own.startswith("postgresql") else []))
    assert result.returncode == 0, result.output
    assert f"restored backup {own_id}" in re.sub(r"\s+", " ", result.stdout), result.stdout
    assert usernames(own) == players - {"late_player"}  # this store's own players, never the other's 7
    assert not any(name.startswith("other") for name in usernames(own))


@pytest.mark.parametrize("lose", sorted(LOSE_ROW))
def test_backup_create_refuses_a_game_database_without_its_identity(tmp_path, two_stores, lose):
    own, other = two_stores
    execute(other, *LOSE_ROW[lose])
    env = BackupEnv(tmp_path, other)
    before = content(other)
    result = env.invoke("backup", "create")
    assert result.returncode == 4, result.output
    assert "is not the typing game's database (no store identity or schema revision)" in one_error(result)
    assert env.listed_ids() == [] and content(other) == before
