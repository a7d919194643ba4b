"""`integrity status` ranks present danger (issue 13, finding 5) and judges the schema
against its revision's model and the dry runs recorded for this store (finding 6).

- the `Error:` line names live corruption before an old drill failure, although the
  drill's 5 still decides the exit code; the JSON `problems` list is in the same order;
- a successful restore supersedes a failed drill (status and `integrity_drill_failed`);
- a column changed by hand at a known revision is drift (exit 3, metric, named column);
- a revision applied with plain Alembic behind the tool's back is unchecked (exit 3 or 4,
  metric), until a dry run of exactly that file passes on this store; editing the file
  afterwards makes it unchecked again;
- a schema `integrity init` created on an empty database is checked, one the game
  created by itself beyond the first revision is not.
"""

from __future__ import annotations

import random
import re
import shutil

import pytest
from prometheus_client.parser import text_string_to_metric_families

from backup_helpers import BackupEnv, error_lines, execute, fill_database, flip_byte

HARMLESS = '''"""Add a country to players (nullable: no row changes)."""
from alembic import op
import sqlalchemy as sa
revision = "0002_country"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None
def upgrade():
    op.add_column("players", sa.Column("country", sa.String(2), nullable=True))
def downgrade():
    op.drop_column("players", "country")
'''


def checks(env: BackupEnv) -> tuple[int, dict, dict]:
    code, document = env.invoke_json("status")
    return code, {c["name"]: (c["state"], c["detail"]) for c in document["result"]["checks"]}, document


def without_ages(text: str) -> str:
    """`text` with every age ("0s ago", "3h ago") as "N ago": two runs may see different ones."""
    return re.sub(r"\b\d+[smhd] ago\b", "N ago", text)


def metric(env: BackupEnv, name: str) -> float | None:
    text = env.settings().metrics.path.read_text(encoding="utf-8")
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return sample.value
    return None


# ---------------------------------------------------------------- ranking


def test_live_corruption_comes_before_an_old_drill_failure(sqlite_url, tmp_path):
    fill_database(sqlite_url, players=4, results_per_player=4)
    env = BackupEnv(tmp_path, sqlite_url)
    backup_id = env.create()
    manifest = env.repository().read_manifest(backup_id)
    flip_byte(env.repo / backup_id / manifest.files[0].name, random.Random(5))
    assert env.invoke("drill", "--backup", backup_id).returncode == 5  # yesterday's failed drill
    execute(sqlite_url, "UPDATE results SET raw_wpm = -raw_wpm WHERE id IN (1, 2)")  # today's corruption
    assert env.invoke("audit").returncode == 3

    code, found, document = checks(env)
    assert code == 5  # DESIGN's order still decides the exit code
    assert found["last drill"][0] == "failed" and found["last audit"][0] == "problem"
    problems = document["result"]["problems"]
    assert problems[0] == "last audit"
    # No restorable backup (the only one is corrupt) is present danger too: before history.
    assert problems.index("newest good backup") < problems.index("last drill")

    text = env.invoke("status")
    (line,) = error_lines(text)
    # The JSON and the text come from two runs a second apart may separate: ages ("0s ago"
    # then "1s ago") are compared as ages, not as numbers.
    line, audit, backup = (without_ages(t) for t in (line, found["last audit"][1], found["newest backup"][1]))
    assert line.startswith(f"Error: {audit}")
    # ...then the check that decided the exit code (the corrupt backup, shown before the
    # drill that found it: both are history).
    assert f"; also newest backup (exit 5): {backup}" in line


def test_a_successful_restore_supersedes_a_failed_drill(sqlite_url, tmp_path):
    fill_database(sqlite_url, players=3, results_per_player=4)
    env = BackupEnv(tmp_path, sqlite_url)
    broken = env.create()
    flip_byte(env.repo / broken / env.repository().read_manifest(broken).files[0].name, random.Random(9))
    assert env.invoke("drill", "--backup", broken).returncode == 5
    assert checks(env)[1]["last drill"][0] == "failed"
    assert metric(env, "integrity_drill_failed") == 1
    assert metric(env, "integrity_drill_last_exit_code") == 5

    good = env.create()
    completed = env.invoke("--no-input", "restore", good, "--yes")
    assert completed.returncode == 0, completed.output
    state, detail = checks(env)[1]["last drill"]
    assert state == "ok", detail
    assert f"superseded by the restore of {good}" in detail and "run `integrity drill`" in detail
    assert metric(env, "integrity_drill_failed") == 0
    assert metric(env, "integrity_drill_last_exit_code") == 5  # the drill's own verdict is still the last one


# ---------------------------------------------------------------- drift


def _store_levels_as_text(url: str) -> None:
    """The incident's change, by hand: progress rebuilt with level TEXT, revision untouched."""
    execute(
        url,
        "CREATE TABLE progress_new (player_id INTEGER NOT NULL PRIMARY KEY REFERENCES players (id) ON DELETE CASCADE, "
        "xp INTEGER NOT NULL, level TEXT NOT NULL, tests_completed INTEGER NOT NULL, time_typing_ms INTEGER NOT NULL, "
        "best_wpm NUMERIC(7, 2) NOT NULL, updated_at DATETIME NOT NULL)",
        "INSERT INTO progress_new SELECT player_id, xp, CAST(level AS TEXT), tests_completed, time_typing_ms, best_wpm, "
        "updated_at FROM progress",
        "DROP TABLE progress",
        "ALTER TABLE progress_new RENAME TO progress",
    )


def test_a_column_changed_by_hand_is_drift_from_the_revisions_model(sqlite_url, tmp_path):
    fill_database(sqlite_url, players=3, results_per_player=3)
    env = BackupEnv(tmp_path, sqlite_url)
    assert env.invoke("metrics").returncode == 0
    assert metric(env, "integrity_schema_drift") == 0
    _store_levels_as_text(sqlite_url)

    code, found, document = checks(env)
    state, detail = found["schema"]
    assert state == "problem" and code >= 3
    assert "live differs from the model of 0001_initial_schema: progress.level is text, the model says integer" in detail
    assert "runbooks/schema-unchecked.md" in detail
    assert "never passed a dry run" not in detail  # the first revision creates the store: checked
    assert document["result"]["problems"][0] == "schema"
    assert metric(env, "integrity_schema_drift") == 1
    assert metric(env, "integrity_schema_unchecked") == 0


@pytest.mark.postgres
def test_drift_on_postgresql_compares_type_families(pg_url, tmp_path):
    fill_database(pg_url, players=3, results_per_player=3)
    env = BackupEnv(tmp_path, pg_url)
    state, detail = checks(env)[1]["schema"]
    assert state == "ok" and "columns match the model" in detail  # timestamptz vs DATETIME, VARCHAR: same families
    execute(pg_url, "ALTER TABLE results ALTER COLUMN wpm TYPE integer USING round(wpm)")
    state, detail = checks(env)[1]["schema"]
    assert state == "problem" and "results.wpm is integer, the model says numeric(7,2)" in detail
    assert metric(env, "integrity_schema_drift") == 1


# ---------------------------------------------------------------- unchecked revisions


@pytest.fixture
def history_with_0002(tmp_path, monkeypatch):
    """This code's history plus a harmless 0002 in the game's versions (a deploy of new
    code): the game, status and the dry run all see it."""
    import game_core.migrations as migrations

    copy = tmp_path / "migrations"
    shutil.copytree(migrations.MIGRATIONS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    revision = copy / "versions" / "0002_country.py"
    revision.write_text(HARMLESS)
    monkeypatch.setattr(migrations, "MIGRATIONS_DIR", copy)
    return revision


def _plain_alembic_upgrade(url: str) -> None:
    """`alembic upgrade head` behind the tool's back (the hand-written alembic.ini)."""
    from alembic import command

    from game_core.migrations import alembic_config

    command.upgrade(alembic_config(url=url), "head")


def test_a_revision_applied_with_plain_alembic_is_unchecked_until_its_dry_run_passes(sqlite_url, tmp_path, history_with_0002):
    fill_database(sqlite_url, players=3, results_per_player=3)
    env = BackupEnv(tmp_path, sqlite_url)
    before = env.create()  # at 0001
    _plain_alembic_upgrade(sqlite_url)

    code, found, document = checks(env)
    state, detail = found["schema"]
    assert state == "problem" and code >= 3
    assert detail.startswith("at 0002_country, but 0002_country never passed a dry run on this store")
    assert "differs" not in detail  # the file applied is the file here: no drift
    assert document["result"]["problems"][0] == "schema"
    assert metric(env, "integrity_schema_unchecked") == 1
    assert metric(env, "integrity_schema_drift") == 0

    # Checked after the fact, from the backup taken before it: the same file passes.
    completed = env.invoke("migrate", "dry-run", "--from-backup", before)
    assert completed.returncode == 0, completed.output
    state, detail = checks(env)[1]["schema"]
    assert state == "ok" and detail.endswith("every revision checked on this store"), detail
    assert metric(env, "integrity_schema_unchecked") == 0

    # Editing the revision after its dry run: that file never passed one.
    history_with_0002.write_text(HARMLESS + "# edited after its dry run\n")
    state, detail = checks(env)[1]["schema"]
    assert state == "problem" and "0002_country never passed a dry run" in detail


def test_a_revision_from_another_folder_is_unknown_and_unchecked(sqlite_url, tmp_path):
    """The incident's way: a hand-written alembic.ini naming the game's versions and a
    folder of its own; the game's code does not know the revision."""
    from alembic import command
    from alembic.config import Config

    from game_core.migrations import MIGRATIONS_DIR

    fill_database(sqlite_url, players=2, results_per_player=2)
    env = BackupEnv(tmp_path, sqlite_url)
    folder = tmp_path / "branch"
    folder.mkdir()
    (folder / "0002_country.py").write_text(HARMLESS)
    (tmp_path / "alembic.ini").write_text(
        f"[alembic]\nscript_location = {MIGRATIONS_DIR}\npath_separator = os\n"
        f"version_locations = {MIGRATIONS_DIR / 'versions'}:{folder}\nsqlalchemy.url = {sqlite_url}\n"
    )
    command.upgrade(Config(str(tmp_path / "alembic.ini")), "head")

    code, found, _ = checks(env)
    assert code == 4
    state, detail = found["schema"]
    assert state == "precondition"
    assert "at unknown revision 0002_country" in detail and "0002_country never passed a dry run" in detail
    assert metric(env, "integrity_schema_unchecked") == 1
    assert metric(env, "integrity_schema_drift") is None  # no model to compare with: not "no drift"


def test_init_on_an_empty_database_records_its_revisions_as_checked(tmp_path, history_with_0002):
    from game_core.db import create_engine
    from game_core.schema_state import upgrade_to_head

    created = tmp_path / "by-init.db"
    env = BackupEnv(tmp_path, f"sqlite:///{created}")
    assert env.invoke("init").returncode == 0
    state, detail = checks(env)[1]["schema"]
    assert state == "ok" and "at head 0002_country" in detail and "every revision checked" in detail

    # The game creating its own schema leaves no record: 0002 is not known to be checked.
    by_game = tmp_path / "by-game.db"
    engine = create_engine(str(by_game), create_missing=True)
    with engine.begin() as connection:
        upgrade_to_head(connection)
    engine.dispose()
    state, detail = checks(BackupEnv(tmp_path, f"sqlite:///{by_game}"))[1]["schema"]
    assert state == "problem" and "0002_country never passed a dry run" in detail


def test_a_journal_with_an_unreadable_line_is_a_status_finding(sqlite_url, tmp_path):
    """Retention refuses while the journal cannot be read completely (a skipped line may be
    a pin): status must say so, not stay green until the next prune fails."""
    fill_database(sqlite_url, players=3, results_per_player=3)
    env = BackupEnv(tmp_path, sqlite_url)
    env.create()
    code, found, _ = checks(env)
    assert "journal" not in found
    with (env.repo / "journal.jsonl").open("ab") as journal:
        journal.write(b'{"at": "garbage", "backup_id": 7}\n')
    code, found, document = checks(env)
    assert code == 4, found
    state, detail = found["journal"]
    assert state == "precondition" and "could not be read" in detail and "prune refuses" in detail
    assert env.invoke("backup", "prune").returncode == 4
