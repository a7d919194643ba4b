"""`backup check` and `drill --at TIME` on PostgreSQL, through the real pgBackRest (issue 16):
one throwaway cluster for the module (pitr_helpers.archived_game: a filled game database, its
stanza created and a full backup taken), archive_timeout 1 s so that a write reaches the
archive within the check's deadline as a production setting would make it.

Without pgbackrest these tests skip, unless INTEGRITY_REQUIRE_POSTGRES=1 (CI), where they fail.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from game_core.db import create_engine
from game_core.store import Store
from pitr_helpers import (
    admin,
    archive_everything,
    archived_game,
    require_pgbackrest,
    server_now,
    show,
    wait_for,
    wait_for_server_clock,
)

require_pgbackrest()


@pytest.fixture(scope="module")
def archived():
    with archived_game(players=3, results_per_player=3, archive_timeout=1) as game:
        wait_for_server_clock(game.cluster, game.backup.stopped + timedelta(seconds=1), what="the backup's second to pass")
        yield game


def marker_players(url: str) -> list[str]:
    from integrity.backups.check import PITR_MARKER_PREFIX

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(sa.text("SELECT username FROM players WHERE username LIKE :prefix"),
                                           {"prefix": PITR_MARKER_PREFIX + "%"}).scalars())
    finally:
        engine.dispose()


def test_backup_check_proves_the_pgbackrest_archive_with_a_marker_restored_into_a_scratch_cluster(archived):
    code, document = archived.env.invoke_json("backup", "check")
    findings = {finding["name"]: finding for finding in document["result"]["findings"]}
    assert findings["pitr archive"]["state"] == "ok", findings
    assert "the pgbackrest archive reached the deletion's second " in findings["pitr archive"]["detail"]
    assert findings["pitr restore"]["state"] == "ok", findings
    assert "from the pgbackrest archive into scratch" in findings["pitr restore"]["detail"]
    assert findings["pitr restore"]["detail"].endswith("and held the marker written before it")
    assert marker_players(archived.env.url) == []


def test_backup_check_fails_when_the_server_stopped_archiving(archived):
    # archive_command set to fail: the marker's WAL never reaches the repository.
    archiving = show(archived.cluster, "archive_command")
    with admin(archived.cluster) as connection:
        connection.execute(sa.text("ALTER SYSTEM SET archive_command = 'false'"))
        connection.execute(sa.text("SELECT pg_reload_conf()"))
    try:
        wait_for(lambda: show(archived.cluster, "archive_command") == "false", what="the reload")
        code, document = archived.env.invoke_json("backup", "check", INTEGRITY_PITR__LAG_OBJECTIVE_SECONDS="1")
    finally:
        with admin(archived.cluster) as connection:
            quoted = archiving.replace("'", "''")
            connection.execute(sa.text(f"ALTER SYSTEM SET archive_command = '{quoted}'"))
            connection.execute(sa.text("SELECT pg_reload_conf()"))
        wait_for(lambda: "archive-push" in show(archived.cluster, "archive_command"), what="the archive_command back")
    findings = {finding["name"]: finding for finding in document["result"]["findings"]}
    assert findings["pitr archive"]["state"] == "fail", findings
    assert "did not reach the pgbackrest archive within" in findings["pitr archive"]["detail"]
    assert "pitr restore" not in findings
    assert marker_players(archived.env.url) == []
    archive_everything(archived.cluster, archived.engine)  # the backlog pushed: the archive is whole again


def test_drill_at_a_moment_restores_the_pgbackrest_archive_into_a_scratch_cluster(archived):
    from integrity.timeparse import utc_text

    store_engine = create_engine(archived.env.url)
    try:
        store = Store(store_engine)
        store.create_player("drill_before")
        moment = server_now(archived.cluster)
        store.create_player("drill_after")
    finally:
        store_engine.dispose()
    archive_everything(archived.cluster, archived.engine)

    code, document = archived.env.invoke_json("drill", "--at", utc_text(moment))
    assert code == 0, (document.get("error"), document.get("result", {}).get("problems"))
    report = document["result"]
    assert report["point_in_time"]["engine"] == "pgbackrest" and report["point_in_time"]["moment"] == utc_text(moment)
    assert report["audit"] == "clean"
    players = next(table for table in report["tables"] if table["table"] == "players")
    assert players["only_live"] == 1 and players["only_backup"] == 0  # drill_after is not in it
    assert [phase["name"] for phase in report["phases"]] == ["restore", "audits", "compare with live", "swap rehearsal"]
    assert "pgBackRest restore" in report["phases"][0]["detail"]

    outside = archived.env.invoke("drill", "--at", "2000-01-01T00:00:00Z")
    assert outside.exit_code == 4
    assert outside.stderr.strip().splitlines()[-1].startswith("Error: 2000-01-01T00:00:00Z is outside the point-in-time window (")
    assert datetime.fromisoformat(report["point_in_time"]["window_oldest"]) <= datetime.fromisoformat(report["point_in_time"]["moment"])


def test_restore_before_a_migration_applied_behind_the_tools_back_is_found_in_the_pgbackrest_archive(archived, tmp_path):
    """`alembic upgrade head` by hand on the cluster: the ledger has no `migrate apply` run of
    it, so the moment is bisected from the archive (each probe a scratch cluster). Last in the
    module: it changes the schema."""
    from alembic import command
    from alembic.config import Config

    from game_core.schema_state import head_revision
    from integrity.timeparse import utc_text
    from test_migrate_dry_run import ADD_COUNTRY, history

    wait_for_server_clock(archived.cluster, server_now(archived.cluster) + timedelta(seconds=1.5), what="a second in the window")
    config = Config(str(history(tmp_path, ADD_COUNTRY)))
    config.set_main_option("sqlalchemy.url", archived.env.url)
    before = server_now(archived.cluster)
    command.upgrade(config, "head")  # behind the tool's back
    after = server_now(archived.cluster)
    archive_everything(archived.cluster, archived.engine)

    # A resolution of 5 s: fewer restores over the module's minute-long window (the test's time).
    code, document = archived.env.invoke_json("restore", "--before-migration", "0002_country", "--dry-run",
                                              INTEGRITY_PITR__RESOLUTION_SECONDS="5")
    assert code == 0, document.get("error")
    result = document["result"]
    assert "found in the pgbackrest archive (" in result["migration"]["found"]
    moment = datetime.fromisoformat(result["point_in_time"]["moment"])
    # PostgreSQL replays to the moment exactly: the upgrade's commit lies after the moment
    # found and at most one resolution step after it.
    assert before - timedelta(seconds=5) < moment < after
    assert result["outcome"]["revision"] == head_revision()  # the restored moment lacks the revision
    assert utc_text(moment) in result["migration"]["found"]
