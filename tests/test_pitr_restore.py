"""`integrity restore --to-time TIME` and `--before-migration REVISION` (issue 16) with the
real engines: Litestream 0.5.17 replicating a SQLite game database, pgBackRest 2.45 archiving
a throwaway PostgreSQL cluster of the test's own.

Each real restore writes marker rows at known times, damages the database after the
moment, and restores to a moment between: live then holds the first marker and not the
damage, `--keep-newer` brings back the good rows written after the moment, the moment was
materialised as a point-in-time backup that `latest` never picks, and a dry run wrote
nothing (not even the repository). Bad TIME text is exit 2, a moment outside the window
and a revision the ledger never saw applied are exit 4, pitr off is exit 4.

Nothing sleeps a fixed time and assumes: every wait is on a condition, with a deadline.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from backup_helpers import BackupEnv, fill_database, one_error
from game_core.db import create_engine
from game_core.schema_state import head_revision
from game_core.store import Store
from pitr_helpers import (
    Replication,
    Writer,
    admin,
    archive_everything,
    archived_game,
    litestream_engine,
    pitr_backup_env,
    players_in,
    read_only_connection,
    restorable_moment_after,
    server_now,
    wait_for_server_clock,
)
from test_migrate_dry_run import ADD_COUNTRY, history, revision_of

DAMAGED_ACCURACY = 150  # out of the audits' range: the incident's kind of silent change


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def highest_accuracy(url: str) -> float:
    with read_only_connection(url) as connection:
        return float(connection.execute(sa.text("SELECT MAX(accuracy) FROM results")).scalar())


def damage(url: str) -> int:
    """Every result's accuracy changed out of range, as a bad migration would."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            return connection.execute(sa.text("UPDATE results SET accuracy = :bad"), {"bad": DAMAGED_ACCURACY}).rowcount
    finally:
        engine.dispose()


# ---------------------------------------------------------------- SQLite: Litestream


@pytest.fixture
def replicated(tmp_path, sqlite_url):
    """(env, engine): a filled game database with Litestream replicating it (supervised in a
    thread, as `integrity pitr replicate` does), state, replica and repository in tmp_path."""
    fill_database(sqlite_url, players=4, results_per_player=5)
    env = pitr_backup_env(tmp_path, sqlite_url, repository=str(tmp_path / "replica"))
    with Replication(litestream_engine(env.settings())) as replication:
        yield env, replication.start()
    assert replication.deaths == []


def test_sqlite_restore_to_a_time_between_the_marker_and_the_damage(replicated):
    env, engine = replicated
    regular = env.create()  # an ordinary backup: `latest` must still be this one afterwards
    with Writer(env.url) as writer:
        moment = restorable_moment_after(engine, writer.mark("before_moment"))
        writer.mark("good_after")  # after the moment: salvage brings it back
        damaged = damage(env.url)
        restorable_moment_after(engine, datetime.now(UTC))  # the damage is in the archive too
    assert damaged == 20 and highest_accuracy(env.url) == DAMAGED_ACCURACY

    # The dry run restores into scratch and compares; the repository is not written.
    before = env.listed_ids()
    code, document = env.invoke_json("restore", "--to-time", iso(moment), "--dry-run")
    assert code == 0, document
    preview = document["result"]
    assert preview["backup_id"] is None and preview["point_in_time"]["engine"] == "litestream"
    assert preview["point_in_time"]["moment"] == moment.isoformat()
    results = next(c for c in preview["outcome"]["changes"] if c["table"] == "results")
    assert results["changed"] == 20 and results["changed_columns"] == {"accuracy": 20}  # the damage undone
    players = next(c for c in preview["outcome"]["changes"] if c["table"] == "players")
    assert players["only_live"] >= 1 and players["only_backup"] == 0  # good_after and the writer's later players
    assert preview["outcome"]["audit"] == "clean"
    assert env.listed_ids() == before
    assert list((env.settings().state.dir / "scratch").glob("pitr-*")) == []  # the copy is removed

    result = env.invoke("restore", "--to-time", iso(moment), "--yes", "--keep-newer")
    assert result.returncode == 0, result.output
    [point_in_time] = [b for b in env.listed_ids() if b not in before and b != regular and "point-in-time" in env.listed()[b]["states"]]
    assert (f"the database as it was at {iso(moment)} (litestream), materialised as backup {point_in_time}"
            in result.stdout)
    live = players_in(env.url)
    assert "before_moment" in live and "good_after" in live  # the marker, and salvage's
    assert highest_accuracy(env.url) <= 100  # the damage is gone (changed rows are never re-applied)

    listed = env.listed()[point_in_time]
    assert listed["point_in_time"]["moment"] == moment.isoformat() and listed["point_in_time"]["asked"] == f"--to-time {iso(moment)}"
    assert listed["label"] == f"point in time {iso(moment)} (litestream)"
    assert env.latest() == regular  # never the point-in-time backup, though it is newer
    # Its manifest names live as its source (not the scratch copy): the next backup of live is not suspect.
    assert env.repository().read_manifest(point_in_time).source["path"] == str(Path(env.url.removeprefix("sqlite:///")).resolve())
    env.create()

    # Outside the window: exit 4 naming it, and nothing restored.
    outside = env.invoke("restore", "--to-time", "2 hours ago", "--yes")
    assert outside.returncode == 4
    assert "is outside the point-in-time window (20" in one_error(outside) and "integrity pitr status" in one_error(outside)


def test_sqlite_restore_before_a_migration_the_ledger_recorded(replicated, tmp_path):
    env, engine = replicated
    ini = history(tmp_path, ADD_COUNTRY)
    code, document = env.invoke_json("migrate", "dry-run", "--alembic-config", str(ini), "--from-live")
    assert code == 0, document
    with Writer(env.url) as writer:
        restorable_moment_after(engine, writer.mark("before_migration"))
        code, document = env.invoke_json("--no-input", "migrate", "apply", "--alembic-config", str(ini), "--yes")
        assert code == 0 and document["result"]["applied"] == ["0002_country"], document
        restorable_moment_after(engine, writer.mark("after_migration"))
    assert revision_of(env.url) == "0002_country"
    code, history_document = env.invoke_json("history", "--kind", "migrate apply")
    applied_at = datetime.fromisoformat(history_document["result"]["runs"][0]["started_at"])

    code, document = env.invoke_json("restore", "--before-migration", "0002_country", "--yes")
    assert code == 0, document
    assert revision_of(env.url) == head_revision()  # the column added by the revision is gone again
    live = players_in(env.url)
    assert "before_migration" in live and "after_migration" not in live
    point = document["result"]["point_in_time"]
    assert datetime.fromisoformat(point["moment"]) == applied_at - timedelta(seconds=1)  # one resolution step before
    assert point["asked"] == "--before-migration 0002_country"
    assert document["result"]["migration"]["revision"] == "0002_country"

    # A revision neither the ledger nor the archive has: exit 4 naming --to-time.
    unknown = env.invoke("restore", "--before-migration", "0003_elsewhere", "--yes")
    assert unknown.returncode == 4
    assert ("revision '0003_elsewhere' was never applied by this tool (the ledger holds no `integrity migrate apply` run "
            "that applied it), and the litestream archive does not have it at its newest restorable point") in one_error(unknown)
    assert "--to-time TIME" in one_error(unknown)


def test_sqlite_restore_before_a_migration_applied_behind_the_tools_back_finds_it_in_the_archive(replicated, tmp_path):
    """`alembic upgrade head` by hand: no `migrate apply` run in the ledger, so the moment is
    bisected from the archive (the newest restorable moment whose alembic_version lacks it)."""
    from alembic import command
    from alembic.config import Config

    env, engine = replicated
    ini = history(tmp_path, ADD_COUNTRY)
    config = Config(str(ini))
    config.set_main_option("sqlalchemy.url", env.url)
    with Writer(env.url) as writer:
        restorable_moment_after(engine, writer.mark("before_migration"))
        applying = datetime.now(UTC)
        command.upgrade(config, "head")  # behind the tool's back
        applied = datetime.now(UTC)
        restorable_moment_after(engine, writer.mark("after_migration"))
    assert revision_of(env.url) == "0002_country"

    code, document = env.invoke_json("restore", "--before-migration", "0002_country", "--dry-run")
    assert code == 0, document
    migration = document["result"]["migration"]
    assert migration["revision"] == "0002_country"
    assert "the litestream archive (" in migration["found"] and "applied behind the tool's back" in migration["found"]
    moment = datetime.fromisoformat(document["result"]["point_in_time"]["moment"])
    # The newest second whose restore lacks the revision, the next one has it: the boundary
    # is where Litestream shipped the upgrade (a restore to T holds what was shipped before T),
    # within a second or two of the upgrade itself.
    assert timedelta(0) < datetime.fromisoformat(migration["applied_at"]) - moment <= timedelta(seconds=1)
    assert applying - timedelta(seconds=3) < moment < applied + timedelta(seconds=3)
    assert document["result"]["outcome"]["revision"] == head_revision()  # the restored moment lacks the column


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-12-07T12:00:00Z", "2026-12-07T12:00:00+00:00"),
    ("2026-12-07T12:00:00", "2026-12-07T12:00:00+00:00"),  # no offset: UTC, never the machine's zone
    ("2026-12-07 13:30:00+01:00", "2026-12-07T12:30:00+00:00"),
    ("2026-12-07T11:59:59.250Z", "2026-12-07T11:59:59.250000+00:00"),
    ("90s ago", "2026-12-07T12:28:30+00:00"),
    ("10 minutes ago", "2026-12-07T12:20:00+00:00"),
    ("2 hours ago", "2026-12-07T10:30:00+00:00"),
    ("1 Hour  AGO", "2026-12-07T11:30:00+00:00"),
    ("3 days ago", "2026-12-04T12:30:00+00:00"),
])
def test_times_are_read_as_utc_or_as_a_time_ago(text, expected):
    from integrity.timeparse import parse_moment

    now = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)
    assert parse_moment(text, now).isoformat() == expected


def test_usage_errors_are_exit_2_and_pitr_off_is_exit_4(tmp_path, sqlite_url):
    env = pitr_backup_env(tmp_path, sqlite_url, repository=str(tmp_path / "replica"))
    for args, said in (
        (("--to-time", "yesterday-ish"), "--to-time 'yesterday-ish' is not a UTC time"),
        (("--to-time", "10 parsecs ago"), "'parsecs' is not a unit"),
        (("--to-time", "99999999999999 days ago"), "is more than 100 years ago"),
        (("latest", "--to-time", "10 minutes ago"), "give exactly one of ID|latest, --to-time TIME, --before-migration REVISION or --last-clean (ID|latest and --to-time were given)"),
        (("--to-time", "10 minutes ago", "--before-migration", "0002_x"), "(--to-time and --before-migration were given)"),
        (("latest", "--last-clean"), "(ID|latest and --last-clean were given)"),
        ((), "give exactly one of ID|latest, --to-time TIME, --before-migration REVISION or --last-clean"),
        (("--to-time", "10 minutes ago", "--keep-newer", "--no-safety-backup"), "--keep-newer re-applies rows"),
    ):
        result = env.invoke("restore", *args, "--yes")
        assert result.returncode == 2, (args, result.output)
        assert said in one_error(result), args
    off = BackupEnv(tmp_path, sqlite_url, extra_env={"INTEGRITY_STATE__DIR": str(tmp_path / "state")})
    for args in (("--to-time", "10 minutes ago"), ("--before-migration", "0002_x"), ("--last-clean",)):
        result = off.invoke("restore", *args, "--yes")
        assert result.returncode == 4, result.output
        assert "point-in-time recovery is not enabled" in one_error(result)
    # Consent that can never be given is refused before the engine restores anything.
    no_consent = env.invoke("--no-input", "restore", "--to-time", "10 minutes ago")
    assert no_consent.returncode == 4 and "run again with --yes" in one_error(no_consent)
    assert not (tmp_path / "state" / "scratch").exists()


def test_a_point_in_time_manifest_is_validated_and_never_restorable_by_itself():
    from integrity.backups.catalog import BackupInfo, BackupState
    from integrity.backups.repository import ManifestInvalid, Manifest
    import json

    good = {
        "id": "20261207T120000Z-abcdef", "engine": "sqlite", "created_at": "2026-12-07T12:00:00+00:00", "label": None,
        "source_url": "sqlite:///game.db", "source_path": "/game.db", "source_identity": "u", "revision": "r",
        "tables": {}, "tool": {}, "purpose": "point-in-time",
        "files": [{"name": "data.db.zst", "kind": "sqlite-db", "size": 1, "sha256": "0" * 64, "raw_size": 1,
                   "raw_sha256": "0" * 64}],
        "point_in_time": {"engine": "litestream", "moment": "2026-12-07T11:59:00+00:00",
                          "window": {"oldest": "2026-12-07T11:00:00+00:00", "newest": None}, "asked": "--to-time x"},
    }
    manifest = Manifest.from_json(json.dumps(good).encode())
    assert manifest.point_in_time["engine"] == "litestream"
    assert Manifest.from_json(manifest.to_json()) == manifest
    for broken, said in (
        ({"point_in_time": {**good["point_in_time"], "engine": "rsync"}}, "point_in_time.engine"),
        ({"point_in_time": {**good["point_in_time"], "moment": "2026-12-07T11:59:00"}}, "point_in_time.moment has no UTC offset"),
        ({"point_in_time": {**good["point_in_time"], "window": {"oldest": None}}}, "point_in_time.window"),
        ({"point_in_time": {**good["point_in_time"], "extra": 1}}, "unknown fields ['extra']"),
        ({"purpose": "backup"}, "point_in_time is given without purpose point-in-time"),
        ({"point_in_time": None}, "point_in_time is given without purpose point-in-time"),
    ):
        with pytest.raises(ManifestInvalid, match=said.replace("(", r"\(").replace("[", r"\[")):
            Manifest.from_json(json.dumps({**good, **broken}).encode())
    # A manifest from before the field existed reads as before, and writes no such key.
    plain = {k: v for k, v in good.items() if k != "point_in_time"} | {"purpose": "backup"}
    assert b"point_in_time" not in Manifest.from_json(json.dumps(plain).encode()).to_json()

    state = BackupState(intact_at="2026-12-07T12:00:01+00:00")
    info = BackupInfo("20261207T120000Z-abcdef", datetime.now(UTC), "sqlite", 1, "r", None, {}, state, identity="u")
    assert info.restorable
    pitr = BackupInfo("20261207T120000Z-abcdef", datetime.now(UTC), "sqlite", 1, "r", None, {}, state, identity="u",
                      point_in_time=good["point_in_time"])
    assert pitr.why_not_restorable == "a point-in-time backup (restored only when named by id)"


# ---------------------------------------------------------------- PostgreSQL: pgBackRest


@pytest.fixture
def pg_archived(tmp_path):
    """(env, cluster, engine): a filled game database on a throwaway cluster archiving through
    pgBackRest, its stanza created and a full backup taken; state and repositories in a home
    the cluster's OS user can reach (pitr_helpers.make_home)."""
    with archived_game(players=4, results_per_player=5) as archived:
        wait_for_server_clock(archived.cluster, archived.backup.stopped + timedelta(seconds=1),
                              what="the backup's second to pass")
        yield archived.env, archived.cluster, archived.engine


def test_postgresql_restore_to_a_time_between_the_marker_and_the_damage(pg_archived):
    env, cluster, engine = pg_archived
    regular = env.create()
    game = create_engine(env.url)
    store = Store(game)
    store.create_player("before_moment")
    moment = server_now(cluster)  # the server's own clock, between the two commits
    store.create_player("good_after")
    game.dispose()
    assert damage(env.url) == 20
    archive_everything(cluster, engine)

    before = env.listed_ids()
    code, document = env.invoke_json("restore", "--to-time", iso(moment), "--dry-run")
    assert code == 0, document
    results = next(c for c in document["result"]["outcome"]["changes"] if c["table"] == "results")
    assert results["changed"] == 20 and document["result"]["backup_id"] is None
    assert env.listed_ids() == before

    code, document = env.invoke_json("restore", "--to-time", iso(moment), "--yes", "--keep-newer")
    assert code == 0, document
    point_in_time = document["result"]["backup_id"]
    assert document["result"]["point_in_time"]["engine"] == "pgbackrest"
    live = players_in(env.url)
    assert "before_moment" in live and "good_after" in live  # the marker, and salvage's from the kept database
    assert highest_accuracy(env.url) <= 100
    assert "point-in-time" in env.listed()[point_in_time]["states"]
    assert env.latest() == regular
    kept = document["result"]["outcome"]["old_database"]
    with admin(cluster) as connection:
        connection.execute(sa.text(f'DROP DATABASE "{kept}" WITH (FORCE)'))
