"""`integrity migrate check-applied`, the deploy gate, on SQLite and PostgreSQL: exit 0 only
when every revision live is at passed a dry run on this store with the same revision files
(the ledger's dry-run records, as `migrate apply` trusts them), exit 3 naming the revision
otherwise, exit 4 when live is at a revision the history does not know."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from backup_helpers import BackupEnv, one_error
from game_core.schema_state import head_revision
from test_migrate_dry_run import ADD_COUNTRY, DROP_ACCURACY, history, revision_of


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def played(request, filled_copy, tmp_path):
    """A game database of this test's own holding fill_database(players=4,
    results_per_player=5): a copy of a template filled once per session."""
    return BackupEnv(tmp_path, filled_copy(request.param, players=4, results_per_player=5))


def gate(env: BackupEnv, ini: Path | None = None) -> tuple[int, dict]:
    args = ("--alembic-config", str(ini)) if ini else ()
    return env.invoke_json("migrate", "check-applied", *args)


def execute(url: str, statement: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(statement))
    finally:
        engine.dispose()


def upgrade_behind_the_tools_back(url: str, ini: Path, target: str) -> None:
    """What a deploy script that runs `alembic upgrade head` itself does."""
    from alembic import command

    from integrity.migrate.project import MigrationProject

    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            command.upgrade(MigrationProject.load(ini).config(connection), target)
    finally:
        engine.dispose()


def test_a_new_store_at_the_first_revision_passes(played):
    code, document = gate(played)
    assert code == 0, document
    (checked,) = document["result"]["revisions"]
    assert checked["id"] == head_revision() and checked["passed"]
    assert "created by `integrity init`" in checked["evidence"]


def test_an_applied_revision_passes_until_its_file_changes(played, tmp_path):
    env = played
    ini = history(tmp_path, ADD_COUNTRY)
    assert env.invoke_json("migrate", "dry-run", "--alembic-config", str(ini), "--from-live")[0] == 0
    code, document = env.invoke_json("--no-input", "migrate", "apply", "--alembic-config", str(ini), "--yes")
    assert code == 0, document
    code, document = gate(env, ini)
    assert code == 0, document
    assert [(r["id"], r["passed"]) for r in document["result"]["revisions"]] == [("0002_country", True)]
    assert "dry run passed" in document["result"]["revisions"][0]["evidence"]
    text = env.invoke("migrate", "check-applied", "--alembic-config", str(ini))
    assert text.returncode == 0 and "deploy gate passed" in text.stdout

    # The deployed code's file is not the one that passed: the gate closes, naming it.
    revision_file = next((tmp_path / "branch" / "versions").glob("*.py"))
    revision_file.write_text(revision_file.read_text() + "\n# edited after the dry run\n")
    code, document = gate(env, ini)
    assert code == 3, document
    (checked,) = document["result"]["revisions"]
    assert checked["id"] == "0002_country" and not checked["passed"]
    assert "passed no dry run on this store with this case_0.py" in checked["evidence"]
    text = env.invoke("migrate", "check-applied", "--alembic-config", str(ini))
    assert text.returncode == 3
    assert "deploy gate FAILED" in text.stdout and "0002_country never passed a dry run" in text.stdout


def test_a_revision_applied_without_a_dry_run_fails_the_gate(played, tmp_path):
    env = played
    ini = history(tmp_path, ADD_COUNTRY)
    upgrade_behind_the_tools_back(env.url, ini, "0002_country")
    assert revision_of(env.url) == "0002_country"
    code, document = gate(env, ini)
    assert code == 3, document
    assert "never dry-run on this store" in document["result"]["revisions"][0]["evidence"]
    assert document["result"]["revisions"][0]["id"] == "0002_country"


def test_a_revision_whose_dry_run_failed_fails_the_gate(played, tmp_path):
    env = played
    ini = history(tmp_path, DROP_ACCURACY)
    assert env.invoke_json("migrate", "dry-run", "--alembic-config", str(ini), "--from-live")[0] == 3
    upgrade_behind_the_tools_back(env.url, ini, "0002_drop_accuracy")
    code, document = gate(env, ini)
    assert code == 3, document
    (checked,) = document["result"]["revisions"]
    assert checked["id"] == "0002_drop_accuracy" and "its dry runs on this store failed" in checked["evidence"]


def test_a_dry_run_of_another_store_does_not_count(played, tmp_path):
    """The same files passed on another database (another store identity): not evidence here."""
    env = played
    ini = history(tmp_path, ADD_COUNTRY)
    assert env.invoke_json("migrate", "dry-run", "--alembic-config", str(ini), "--from-live")[0] == 0
    execute(env.url, "UPDATE store_identity SET identity_uuid = '00000000-0000-4000-8000-000000000000'")
    upgrade_behind_the_tools_back(env.url, ini, "0002_country")
    code, document = gate(env, ini)
    assert code == 3 and "never dry-run on this store" in document["result"]["revisions"][0]["evidence"]


def test_live_at_a_revision_this_history_does_not_know_is_exit_4(played, tmp_path):
    env = played
    execute(env.url, "UPDATE alembic_version SET version_num = 'f00dfeed'")
    completed = env.invoke("migrate", "check-applied")
    assert completed.returncode == 4
    assert "f00dfeed is not in" in one_error(completed)
