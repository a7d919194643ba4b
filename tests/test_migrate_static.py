"""The static pass and the project loader of `integrity migrate`.

Each case is a real Alembic project in tmp_path: an alembic.ini whose script_location is
the game's migrations folder and whose version_locations add the case's own revision
files on top of the game's head. Every static rule is shown to fire on a revision that
breaks it and to stay silent on a safe variant of the same change.
"""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from game_core.errors import ExitCode
from game_core.migrations import MIGRATIONS_DIR
from game_core.schema_state import head_revision
from integrity.migrate.findings import Severity
from integrity.migrate.project import (
    SENTINEL_MARK,
    DeclaredIntent,
    Expectation,
    Ignore,
    Irreversible,
    MigrationProject,
    MigrationProjectInvalid,
    parse_intent,
)
from integrity.migrate.rules import RULES
from integrity.migrate.static_pass import lint_revisions

HEAD = head_revision()
GAME_VERSIONS = MIGRATIONS_DIR / "versions"
# A downgrade that does something, so `empty-downgrade` stays out of cases about other rules.
SOME_DOWNGRADE = 'op.execute("SELECT 1")'


def revision_source(rev_id: str, down, upgrade: str, downgrade: str = SOME_DOWNGRADE, extra: str = "") -> str:
    return (
        f'"""Case {rev_id}: a revision written for this test.\n\nMore words.\n"""\n'
        "import sqlalchemy as sa\nfrom alembic import op\nfrom sqlalchemy.dialects import postgresql\n\n"
        f"revision = {rev_id!r}\ndown_revision = {down!r}\n{textwrap.dedent(extra)}\n\n"
        f"def upgrade():\n{textwrap.indent(textwrap.dedent(upgrade).strip(), '    ')}\n\n\n"
        f"def downgrade():\n{textwrap.indent(textwrap.dedent(downgrade).strip(), '    ')}\n"
    )


def make_project(folder: Path, revisions: dict[str, str]) -> Path:
    """An alembic.ini over the game's history plus `revisions` (file name -> source)."""
    versions = folder / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    for name, source in revisions.items():
        (versions / name).write_text(source)
    ini = folder / "alembic.ini"
    ini.write_text(
        "[alembic]\n"
        f"script_location = {MIGRATIONS_DIR}\n"
        "path_separator = os\n"
        f"version_locations = {GAME_VERSIONS}{os.pathsep}{versions}\n"
        f"sqlalchemy.url = sqlite:///{folder / 'REAL.db'}\n"
    )
    return ini


def lint_one(folder: Path, upgrade: str, downgrade: str = SOME_DOWNGRADE):
    ini = make_project(folder, {"0002_case.py": revision_source("0002_case", HEAD, upgrade, downgrade)})
    project = MigrationProject.load(ini)
    report = lint_revisions(project, project.pending(HEAD), start_revision=HEAD)
    assert report.start_schema_error is None
    (lint,) = report.revisions
    return lint


def rules_of(lint) -> set[str]:
    return {finding.rule for finding in lint.findings}


# ---------------------------------------------------------------- each rule, both ways

DANGEROUS = [
    ("drop-table", 'op.drop_table("personal_bests")'),
    ("drop-table", 'op.execute("DROP TABLE IF EXISTS progress")'),
    ("drop-column", 'op.drop_column("results", "xp")'),
    ("drop-column", 'op.execute("ALTER TABLE results DROP COLUMN xp")'),
    ("rename-table", 'op.rename_table("progress", "player_progress")'),
    ("rename-column", 'op.alter_column("players", "username", new_column_name="login", existing_type=sa.String(32))'),
    ("drop-add-rename", 'op.drop_column("results", "raw_wpm")\nop.add_column("results", sa.Column("raw_speed", sa.Numeric(7, 2)))'),
    ("type-narrowing", 'op.alter_column("results", "wpm", type_=sa.Integer)'),
    ("type-narrowing", 'op.alter_column("results", "accuracy", type_=sa.Numeric(7, 1))'),
    ("type-narrowing", 'op.alter_column("players", "username", type_=sa.String(16))'),
    ("type-narrowing", 'op.alter_column("progress", "xp", type_=sa.Integer)'),
    ("type-narrowing", 'op.alter_column("results", "wpm", existing_type=sa.Float(), type_=sa.Integer)'),
    ("type-meaning-change", 'op.alter_column("results", "xp", type_=sa.String(20))'),
    ("type-meaning-change", 'op.alter_column("results", "mode", type_=sa.Integer)'),
    ("type-meaning-change", 'op.alter_column("results", "mode", type_=sa.DateTime(timezone=True))'),
    ("type-meaning-change", 'op.alter_column("results", "started_at", type_=sa.DateTime())'),
    ("type-meaning-change", 'op.alter_column("players", "created_at", type_=sa.Date())'),
    ("not-null-no-default", 'op.add_column("players", sa.Column("country", sa.String(2), nullable=False))'),
    ("unbounded-data-change", 'op.execute("UPDATE results SET accuracy = 100")'),
    ("unbounded-data-change", 'op.execute("DELETE FROM players")'),
    ("unbounded-data-change", 'op.execute("TRUNCATE TABLE personal_bests")'),
    ("unbounded-data-change", 'op.execute("DELETE FROM players WHERE 1=1")'),
    ("unbounded-data-change", 'op.execute("UPDATE results SET xp = (SELECT max(r.xp) FROM results r WHERE r.id = 1)")'),
    ("unbounded-data-change", 'results = sa.table("results", sa.column("xp", sa.Integer))\nop.execute(results.update().values(xp=0))'),
    ("unbounded-data-change", 'op.execute(sa.delete(sa.table("players")))'),
    ("batch-rebuild-cascade", 'with op.batch_alter_table("players") as batch:\n    batch.alter_column("username", type_=sa.String(64))'),
    ("pg-index-not-concurrent", 'op.create_index("ix_results_xp", "results", ["xp"])'),
    ("pg-index-not-concurrent", 'op.execute("CREATE INDEX ix_results_xp ON results (xp)")'),
    ("pg-constraint-validated", 'op.create_check_constraint("ck_results_xp", "results", "xp >= 0")'),
    ("pg-constraint-validated", 'op.create_foreign_key("fk_pb_player", "personal_bests", "players", ["player_id"], ["id"])'),
    ("pg-table-rewrite", 'op.alter_column("results", "xp", type_=sa.BigInteger)'),
    ("pg-table-rewrite", 'op.add_column("players", sa.Column("token", sa.String(36), server_default=sa.text("gen_random_uuid()")))'),
    ("pg-table-rewrite", 'op.add_column("players", sa.Column("luck", sa.Float, server_default=sa.func.random()))'),
    # the same classes written as raw SQL
    ("drop-column", 'op.execute("ALTER TABLE public.results DROP COLUMN IF EXISTS xp, DROP raw_wpm")'),
    ("rename-table", 'op.execute("ALTER TABLE progress RENAME TO player_progress")'),
    ("rename-column", 'op.execute(\'ALTER TABLE players RENAME COLUMN "username" TO login\')'),
    ("not-null-no-default", 'op.execute("ALTER TABLE players ADD COLUMN country VARCHAR(2) NOT NULL")'),
    ("unbounded-data-change", 'op.execute("WITH doomed AS (SELECT id FROM players WHERE id > 0) DELETE FROM personal_bests")'),
    ("pg-table-rewrite", 'op.execute("ALTER TABLE results ALTER COLUMN xp TYPE BIGINT")'),
    ("pg-table-rewrite", 'op.execute("ALTER TABLE players ADD COLUMN token uuid DEFAULT gen_random_uuid()")'),
    ("pg-constraint-validated", 'op.execute("ALTER TABLE results ADD CONSTRAINT ck_xp CHECK (xp >= 0)")'),
]

NEW_TABLE = 'op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True), sa.Column("body", sa.Text, nullable=False))'
SAFE = [
    ("drop-table", f'{NEW_TABLE}\nop.drop_table("notes")'),
    ("drop-column", 'op.add_column("results", sa.Column("note", sa.Text))'),
    ("drop-column", 'op.add_column("results", sa.Column("note", sa.Text))\nop.drop_column("results", "note")'),
    ("rename-table", f'{NEW_TABLE}\nop.rename_table("notes", "player_notes")'),
    ("rename-column", 'op.alter_column("players", "username", existing_type=sa.String(32), comment="login name")'),
    ("drop-add-rename", 'op.alter_column("results", "raw_wpm", new_column_name="raw_speed", existing_type=sa.Numeric(7, 2))'),
    ("type-narrowing", 'op.alter_column("results", "xp", type_=sa.BigInteger)'),
    ("type-narrowing", 'op.alter_column("players", "username", type_=sa.String(64))'),
    ("type-narrowing", 'op.alter_column("results", "wpm", type_=sa.Numeric(9, 2))'),
    ("type-narrowing", 'op.alter_column("players", "username", type_=sa.Text)'),
    ("type-meaning-change", 'op.alter_column("results", "metrics_version", type_=sa.Integer)'),
    ("type-meaning-change", 'op.alter_column("results", "started_at", type_=sa.DateTime(timezone=True))'),
    ("not-null-no-default", 'op.add_column("players", sa.Column("country", sa.String(2)))'),
    ("not-null-no-default", 'op.add_column("players", sa.Column("country", sa.String(2), nullable=False, server_default="ZZ"))'),
    ("not-null-no-default", f'{NEW_TABLE}\nop.add_column("notes", sa.Column("title", sa.Text, nullable=False))'),
    ("unbounded-data-change", 'op.execute("UPDATE results SET accuracy = 100 WHERE accuracy > 100")'),
    ("unbounded-data-change", 'op.execute("DELETE FROM players WHERE username = \'ghost; DELETE FROM results\'")'),
    ("unbounded-data-change", 'op.execute("UPDATE results SET xp = 0 WHERE id IN (SELECT id FROM results WHERE xp < 0)")'),
    ("unbounded-data-change", 'results = sa.table("results", sa.column("xp", sa.Integer))\nop.execute(results.update().where(results.c.xp < 0).values(xp=0))'),
    ("unbounded-data-change", 'op.execute("INSERT INTO players (id, username, created_at) VALUES (99, \'bot\', \'2026-01-01\')")'),
    ("batch-rebuild-cascade", 'with op.batch_alter_table("progress") as batch:\n    batch.alter_column("level", type_=sa.BigInteger)'),
    ("batch-rebuild-cascade", 'with op.batch_alter_table("players") as batch:\n    batch.add_column(sa.Column("country", sa.String(2)))'),
    ("pg-index-not-concurrent", 'with op.get_context().autocommit_block():\n    op.create_index("ix_results_xp", "results", ["xp"], postgresql_concurrently=True)'),
    ("pg-index-not-concurrent", f'{NEW_TABLE}\nop.create_index("ix_notes_body", "notes", ["body"])'),
    ("pg-constraint-validated", 'op.create_check_constraint("ck_results_xp", "results", "xp >= 0", postgresql_not_valid=True)'),
    ("pg-constraint-validated", 'op.create_foreign_key("fk_pb_player", "personal_bests", "players", ["player_id"], ["id"], postgresql_not_valid=True)'),
    ("pg-table-rewrite", 'op.alter_column("players", "username", type_=sa.String(64))'),
    ("pg-table-rewrite", 'op.alter_column("results", "wpm", type_=sa.Numeric(9, 2))'),
    ("pg-table-rewrite", 'op.add_column("players", sa.Column("seen_at", sa.DateTime(timezone=True), server_default=sa.func.now()))'),
    ("pg-table-rewrite", 'op.add_column("players", sa.Column("lives", sa.Integer, nullable=False, server_default="3"))'),
    # the same classes written as raw SQL
    ("not-null-no-default", 'op.execute("ALTER TABLE players ADD COLUMN country VARCHAR(2) NOT NULL DEFAULT \'ZZ\'")'),
    ("unbounded-data-change", 'op.execute("WITH stale AS (SELECT id FROM results WHERE xp < 0) DELETE FROM results WHERE id IN (SELECT id FROM stale)")'),
    ("pg-table-rewrite", 'op.execute("ALTER TABLE players ADD COLUMN seen_at timestamptz DEFAULT now()")'),
    ("pg-index-not-concurrent", 'op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_results_xp ON results (xp)")'),
    ("pg-constraint-validated", 'op.execute("ALTER TABLE results ADD CONSTRAINT ck_xp CHECK (xp >= 0) NOT VALID")'),
]


def test_every_static_rule_has_a_dangerous_and_a_safe_case():
    static = {rule_id for rule_id, rule in RULES.items() if rule.phase == "static"}
    # squawk-unavailable: missing and broken squawk binaries in tests/test_migrate_squawk.py.
    covered = {rule for rule, _ in DANGEROUS} | {"empty-downgrade", "enum-not-dropped", "needs-data-pass", "squawk-unavailable"}
    assert static <= covered
    assert {rule for rule, _ in SAFE} >= {rule for rule, _ in DANGEROUS}


@pytest.mark.parametrize("rule,upgrade", DANGEROUS, ids=[f"{r}-{i}" for i, (r, _) in enumerate(DANGEROUS)])
def test_a_dangerous_revision_raises_its_rule(tmp_path, rule, upgrade):
    lint = lint_one(tmp_path, upgrade)
    found = [f for f in lint.findings if f.rule == rule]
    assert found, f"{rule} did not fire; got {sorted(rules_of(lint))}"
    for finding in found:
        assert finding.severity is RULES[rule].severity
        assert finding.revision == "0002_case" and finding.phase == "static"
        assert finding.table and finding.table in finding.message
        assert "\n" not in finding.message


@pytest.mark.parametrize("rule,upgrade", SAFE, ids=[f"{r}-{i}" for i, (r, _) in enumerate(SAFE)])
def test_a_safe_variant_stays_silent(tmp_path, rule, upgrade):
    lint = lint_one(tmp_path, upgrade)
    assert rule not in rules_of(lint)
    # A widening is safe for the data, yet still rewrites a PostgreSQL table under its lock.
    lock_rules = {"pg-table-rewrite", "pg-index-not-concurrent", "pg-constraint-validated"}
    assert [f.message for f in lint.findings if f.severity is Severity.ERROR and f.rule not in lock_rules] == []


def test_messages_name_the_column_and_the_change(tmp_path):
    lint = lint_one(tmp_path, 'op.alter_column("results", "wpm", type_=sa.Integer)\n'
                              'op.alter_column("results", "started_at", type_=sa.DateTime())')
    messages = {(f.rule, f.table, f.column): f.message for f in lint.findings}
    assert messages[("type-narrowing", "results", "wpm")] == "results.wpm: NUMERIC(7, 2) → INTEGER drops the decimals"
    # SQLite keeps no time zone flag: the start schema's type comes from the history's operations.
    assert messages[("type-meaning-change", "results", "started_at")].startswith(
        "results.started_at: DATETIME WITH TIME ZONE → DATETIME drops the time zone")
    assert list(lint.findings) == sorted(lint.findings, key=lambda f: f.key())


def test_a_null_column_set_not_null_warns_unless_the_revision_backfills_it(tmp_path):
    # The game's columns are all NOT NULL: start from a revision that added a nullable one.
    add = revision_source("0002_add", HEAD, 'op.add_column("players", sa.Column("country", sa.String(2)))')
    set_not_null = 'op.alter_column("players", "country", nullable=False, existing_type=sa.String(2))'
    for name, upgrade, expected in (
        ("bare", set_not_null, True),
        ("backfilled", f"op.execute(\"UPDATE players SET country = 'ZZ' WHERE country IS NULL\")\n{set_not_null}", False),
    ):
        ini = make_project(tmp_path / name, {"0002_add.py": add, "0003_set.py": revision_source("0003_set", "0002_add", upgrade)})
        project = MigrationProject.load(ini)
        lint = lint_revisions(project, project.pending("0002_add"), start_revision="0002_add").revisions[0]
        assert ("not-null-no-default" in rules_of(lint)) is expected
        assert "pg-table-rewrite" in rules_of(lint)  # SET NOT NULL scans the table either way


# ---------------------------------------------------------------- downgrades


@pytest.mark.parametrize("downgrade,message", [
    ("pass", "the downgrade does nothing"),
    ('raise NotImplementedError("this revision is one way")',
     "the downgrade cannot roll back: NotImplementedError: this revision is one way"),
])
def test_an_empty_or_raising_downgrade_is_reported(tmp_path, downgrade, message):
    lint = lint_one(tmp_path, 'op.add_column("players", sa.Column("country", sa.String(2)))', downgrade)
    assert [f.message for f in lint.findings if f.rule == "empty-downgrade"] == [message]


def test_a_full_downgrade_or_one_that_reads_the_database_is_not_empty(tmp_path):
    full = lint_one(tmp_path / "full", 'op.add_column("players", sa.Column("country", sa.String(2)))',
                    'op.drop_column("players", "country")')
    assert rules_of(full) == set()
    assert [op.kind for op in full.downgrade_operations] == ["DropColumnOp"]
    reads = lint_one(tmp_path / "reads", 'op.add_column("players", sa.Column("country", sa.String(2)))',
                     'rows = op.get_bind().execute(sa.text("SELECT count(*) FROM players")).scalar()')
    assert rules_of(reads) == {"needs-data-pass"}
    assert set(reads.needs_data_pass) == {"sqlite", "postgresql"}


ENUM_TABLE = ('op.create_table("moods", sa.Column("id", sa.Integer, primary_key=True), '
              'sa.Column("mood", sa.Enum("calm", "tense", name="mood")))')


def test_an_enum_the_downgrade_does_not_drop_is_reported(tmp_path):
    lint = lint_one(tmp_path, ENUM_TABLE, 'op.drop_table("moods")')
    (finding,) = [f for f in lint.findings if f.rule == "enum-not-dropped"]
    assert (finding.table, finding.column) == ("moods", "mood")
    assert "CREATE TYPE mood AS ENUM ('calm', 'tense')" in " ".join(lint.sql["postgresql"])


def test_an_enum_dropped_by_the_downgrade_is_fine(tmp_path):
    lint = lint_one(tmp_path, ENUM_TABLE, 'op.drop_table("moods")\nsa.Enum(name="mood").drop(op.get_bind())')
    assert rules_of(lint) == set()


# ---------------------------------------------------------------- what is recorded


def test_operations_batches_included_sql_and_touched_tables_are_recorded(tmp_path):
    lint = lint_one(tmp_path, 'op.execute("UPDATE results SET xp = 0 WHERE xp < 0")\n'
                              'with op.batch_alter_table("progress") as batch:\n'
                              '    batch.add_column(sa.Column("streak", sa.Integer))\n'
                              '    batch.drop_column("time_typing_ms")')
    assert [(op.kind, op.table, op.column) for op in lint.operations] == [
        ("ExecuteSQLOp", "results", None), ("AddColumnOp", "progress", "streak"), ("DropColumnOp", "progress", "time_typing_ms"),
    ]
    assert lint.operations[0].detail == "execute: UPDATE results SET xp = 0 WHERE xp < 0"
    assert lint.sql["postgresql"] == (
        "UPDATE results SET xp = 0 WHERE xp < 0;",
        "ALTER TABLE progress ADD COLUMN streak INTEGER;",
        "ALTER TABLE progress DROP COLUMN time_typing_ms;",
    )
    # SQLite's offline mode cannot rebuild the table: the data pass will; the set of
    # touched tables is then unknown, because rendering stopped.
    assert "batch rebuild of progress" in lint.needs_data_pass["sqlite"]
    assert "postgresql" not in lint.needs_data_pass
    assert lint.touched_tables is None


def test_touched_tables_are_known_unless_raw_sql_is_not_understood(tmp_path):
    known = lint_one(tmp_path / "known", 'op.add_column("players", sa.Column("country", sa.String(2)))\n'
                                         'op.execute("DELETE FROM personal_bests WHERE wpm > 400")')
    assert known.touched_tables == frozenset({"players", "personal_bests"})
    unknown = lint_one(tmp_path / "unknown", 'op.execute("DO $$ BEGIN PERFORM 1; END $$")')
    assert unknown.touched_tables is None


def test_a_later_revision_sees_the_earlier_ones_changes(tmp_path):
    ini = make_project(tmp_path, {
        "0002_a.py": revision_source("0002_a", HEAD, 'op.alter_column("results", "wpm", type_=sa.Numeric(9, 2))\n'
                                                     f'{NEW_TABLE}\nop.add_column("results", sa.Column("note", sa.Text))'),
        "0003_b.py": revision_source("0003_b", "0002_a", 'op.alter_column("results", "wpm", type_=sa.Numeric(9, 1))\n'
                                                         'op.create_index("ix_notes_body", "notes", ["body"])\n'
                                                         'op.drop_column("results", "note")'),
    })
    project = MigrationProject.load(ini)
    report = lint_revisions(project, project.pending(HEAD), start_revision=HEAD)
    second = report.revisions[1]
    assert [f.message for f in second.findings if f.rule == "type-narrowing"] == [
        "results.wpm: NUMERIC(9, 2) → NUMERIC(9, 1) keeps fewer decimals"]
    # The table and the column are new in this upgrade: no rows to lock or lose.
    assert not {"pg-index-not-concurrent", "drop-column"} & rules_of(second)


def test_five_revisions_lint_quickly(tmp_path):
    upgrades = [
        'op.add_column("players", sa.Column("country", sa.String(2)))',
        'op.alter_column("results", "wpm", type_=sa.Integer)',
        'op.create_index("ix_results_xp", "results", ["xp"])',
        'op.execute("UPDATE results SET accuracy = 100 WHERE accuracy > 100")',
        'with op.batch_alter_table("players") as batch:\n    batch.alter_column("country", type_=sa.String(3))',
    ]
    revisions, down = {}, HEAD
    for number, upgrade in enumerate(upgrades, start=2):
        rev_id = f"000{number}_step"
        revisions[f"{rev_id}.py"] = revision_source(rev_id, down, upgrade)
        down = rev_id
    project = MigrationProject.load(make_project(tmp_path, revisions))
    started = time.perf_counter()
    report = lint_revisions(project, project.pending(HEAD), start_revision=HEAD)
    elapsed = time.perf_counter() - started
    assert [r.revision for r in report.revisions] == [f"000{n}_step" for n in range(2, 7)]
    assert elapsed < 5 and report.seconds <= elapsed
    assert {"type-narrowing", "pg-index-not-concurrent", "batch-rebuild-cascade"} <= {f.rule for f in report.findings}


def test_lint_from_base_builds_on_an_empty_schema(tmp_path):
    project = MigrationProject.load(None)
    report = lint_revisions(project, project.pending(None), start_revision=None)
    (lint,) = report.revisions
    assert lint.revision == HEAD
    assert rules_of(lint) == set()  # every table is new: nothing to lose or lock
    assert "store_identity" in lint.touched_tables


# ---------------------------------------------------------------- the project


def test_our_history_loads_without_a_config_file():
    project = MigrationProject.load(None)
    assert project.description == "game_core"
    assert project.head() == HEAD
    info = project.revision(HEAD)
    assert info.path == GAME_VERSIONS / f"{HEAD}.py"
    assert info.message.startswith("Initial schema")
    assert len(info.sha256) == 64 and info.intent == DeclaredIntent()
    assert [r.id for r in project.pending(None)] == [HEAD]
    assert project.pending(HEAD) == []


def test_config_is_fresh_hands_over_the_connection_and_never_the_configured_url(tmp_path):
    project = MigrationProject.load(make_project(tmp_path, {}))
    first, second = project.config("conn-1"), project.config()
    assert first is not second
    assert first.attributes["connection"] == "conn-1" and second.attributes["connection"] is None
    url = first.get_main_option("sqlalchemy.url")
    assert SENTINEL_MARK in url and "REAL.db" not in url
    assert not Path(url.removeprefix("sqlite:///")).parent.exists()


def test_an_env_py_that_ignores_the_connection_cannot_reach_the_configured_database(tmp_path):
    from alembic import command

    scripts = tmp_path / "scripts"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "env.py").write_text(textwrap.dedent("""
        from alembic import context
        from sqlalchemy import engine_from_config

        engine = engine_from_config(context.config.get_section(context.config.config_ini_section), prefix="sqlalchemy.")
        with engine.connect() as connection:
            context.configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
    """))
    (scripts / "versions" / "a1.py").write_text(
        "from alembic import op\nimport sqlalchemy as sa\nrevision = 'a1'\ndown_revision = None\n"
        "def upgrade():\n    op.create_table('t', sa.Column('id', sa.Integer, primary_key=True))\n"
        "def downgrade():\n    op.drop_table('t')\n")
    real = tmp_path / "REAL.db"
    ini = tmp_path / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = scripts\nsqlalchemy.url = sqlite:///{real}\n")
    project = MigrationProject.load(ini)
    engine = sa.create_engine("sqlite://")
    with engine.connect() as connection, pytest.raises(sa.exc.OperationalError, match="unable to open database file"):
        command.upgrade(project.config(connection), "head")
    # The lint builds its start schema the same way: it says so and carries on.
    report = lint_revisions(project, [], start_revision="a1")
    assert report.start_schema_error.startswith("the schema at a1 could not be built on SQLite: OperationalError:")
    assert not real.exists()


def test_a_history_that_cannot_run_on_sqlite_still_gets_linted(tmp_path):
    ini = make_project(tmp_path, {
        "0002_pg.py": revision_source("0002_pg", HEAD, 'op.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")'),
        "0003_drop.py": revision_source("0003_drop", "0002_pg", 'op.drop_column("results", "xp")'),
    })
    project = MigrationProject.load(ini)
    report = lint_revisions(project, project.pending("0002_pg"), start_revision="0002_pg")
    assert "could not be built on SQLite" in report.start_schema_error
    # Without the schema every table is taken to hold rows: the rules err on the loud side.
    assert {f.rule for f in report.findings} == {"drop-column"}


def test_pyproject_tool_alembic_loads_with_paths_relative_to_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "branch"
    folder.mkdir()
    (folder / "versions").mkdir()
    (folder / "versions" / "0002_case.py").write_text(revision_source("0002_case", HEAD, 'op.drop_column("results", "xp")'))
    (folder / "pyproject.toml").write_text(
        "[project]\nname = 'x'\n\n[tool.alembic]\n"
        f"script_location = {os.path.relpath(MIGRATIONS_DIR, folder)!r}\n"
        f"version_locations = [{str(GAME_VERSIONS)!r}, 'versions']\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    project = MigrationProject.load(folder / "pyproject.toml")
    assert project.description == str(folder / "pyproject.toml")
    assert [r.id for r in project.pending(HEAD)] == ["0002_case"]
    assert project.config().get_main_option("sqlalchemy.url").startswith("sqlite:///")


def invalid(config_path) -> str:
    with pytest.raises(MigrationProjectInvalid) as caught:
        MigrationProject.load(config_path).check_graph()
    assert caught.value.exit_code is ExitCode.PRECONDITION
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_missing_config_file_is_named(tmp_path):
    message = invalid(tmp_path / "nope" / "alembic.ini")
    assert message.startswith(f"Alembic config {tmp_path / 'nope' / 'alembic.ini'} does not exist;")


def test_a_config_without_script_location_or_with_a_missing_folder_is_named(tmp_path):
    ini = tmp_path / "alembic.ini"
    ini.write_text("[alembic]\nsqlalchemy.url = sqlite://\n")
    assert "has no script_location" in invalid(ini)
    ini.write_text("[alembic]\nscript_location = missing_folder\n")
    assert "Path doesn't exist" in invalid(ini) and str(tmp_path / "missing_folder") in invalid(ini)
    assert "is a folder; point --alembic-config at the alembic.ini" in invalid(tmp_path)
    (tmp_path / "scripts").mkdir()
    ini.write_text("[alembic]\nscript_location = scripts\n")
    assert invalid(ini).startswith(f"{tmp_path / 'scripts'} (script_location of {ini}) has no env.py")
    ini.write_text("this is not an ini file\n")
    assert "cannot load Alembic config" in invalid(ini)
    toml = tmp_path / "pyproject.toml"
    toml.write_text("[tool.alembic\n")
    assert invalid(toml).startswith(f"cannot load Alembic config {toml}: TOMLDecodeError:")


@pytest.mark.parametrize("source,cause", [
    ("revision = 'x'\ndef upgrade(:\n", "SyntaxError"),
    ("import a_module_that_does_not_exist\n", "ModuleNotFoundError: No module named 'a_module_that_does_not_exist'"),
])
def test_a_revision_file_that_does_not_load_is_named(tmp_path, source, cause):
    ini = make_project(tmp_path, {"0002_broken.py": source})
    message = invalid(ini)
    assert message.startswith(f"revision file {tmp_path / 'versions' / '0002_broken.py'} does not load: {cause}")


def test_two_heads_must_be_merged(tmp_path):
    ini = make_project(tmp_path, {
        "0002_a.py": revision_source("0002_a", HEAD, "pass"),
        "0002_b.py": revision_source("0002_b", HEAD, "pass"),
    })
    assert invalid(ini) == ("the history has 2 heads (0002_a, 0002_b); merge them with `alembic merge heads` "
                            "so there is one revision to upgrade to")


def test_a_merge_revision_orders_both_branches_first(tmp_path):
    ini = make_project(tmp_path, {
        "0002_a.py": revision_source("0002_a", HEAD, "pass"),
        "0002_b.py": revision_source("0002_b", HEAD, "pass"),
        "0003_merge.py": revision_source("0003_merge", ("0002_a", "0002_b"), "pass"),
    })
    project = MigrationProject.load(ini)
    assert [r.id for r in project.pending(HEAD)] == ["0002_a", "0002_b", "0003_merge"]
    assert [r.id for r in project.pending("0002_a")] == ["0002_b", "0003_merge"]
    assert project.revision("0003_merge").down_revisions == ("0002_a", "0002_b")
    # A merge does nothing either way: that is no empty downgrade.
    assert lint_revisions(project, project.pending(HEAD), start_revision=HEAD).findings == ()


def test_a_duplicate_revision_names_both_files(tmp_path):
    ini = make_project(tmp_path, {
        "0002_a.py": revision_source("0002_same", HEAD, "pass"),
        "0002_b.py": revision_source("0002_same", HEAD, "pass"),
    })
    versions = tmp_path / "versions"
    assert invalid(ini).startswith(f"revision 0002_same is defined twice, in {versions / '0002_a.py'} and {versions / '0002_b.py'};")


def test_revisions_that_revise_each_other_are_a_cycle(tmp_path):
    ini = make_project(tmp_path, {
        "0002_a.py": revision_source("0002_a", ("0002_b", HEAD), "pass"),
        "0002_b.py": revision_source("0002_b", "0002_a", "pass"),
    })
    assert invalid(ini) == "revisions 0002_a, 0002_b revise each other in a cycle; fix their down_revision"


def test_a_missing_down_revision_is_named(tmp_path):
    ini = make_project(tmp_path, {"0002_a.py": revision_source("0002_a", "0001_gone", "pass")})
    assert invalid(ini).startswith("revision 0002_a (") and "revises 0001_gone, which is not in this history" in invalid(ini)


def test_pending_refuses_an_unknown_start_or_target(tmp_path):
    project = MigrationProject.load(make_project(tmp_path, {"0002_a.py": revision_source("0002_a", HEAD, "pass")}))
    with pytest.raises(MigrationProjectInvalid, match="^the snapshot is at revision 9999_elsewhere, which is not in this history"):
        project.pending("9999_elsewhere")
    with pytest.raises(MigrationProjectInvalid, match="^--to 9999 is not in this history"):
        project.pending(HEAD, "9999")
    with pytest.raises(MigrationProjectInvalid, match=f"^--to {HEAD} is behind the snapshot's revision 0002_a"):
        project.pending("0002_a", HEAD)
    with pytest.raises(MigrationProjectInvalid, match="^revision 9999 is not in"):
        project.revision("9999")
    assert [r.id for r in project.pending(HEAD, "head")] == ["0002_a"]


# ---------------------------------------------------------------- declared intent


def test_declared_intent_is_read_from_the_revision(tmp_path):
    extra = """
        integrity = {
            "expect": [{"table": "results", "column": "accuracy", "change": "update", "max_rows": 120, "reason": "cap"}],
            "irreversible": {"loses": ["results.legacy_score", "old_table"], "reason": "retired"},
            "ignore": [{"rule": "pg-table-rewrite", "reason": "results is small"}],
        }
    """
    ini = make_project(tmp_path, {"0002_a.py": revision_source("0002_a", HEAD, "pass", extra=extra)})
    assert MigrationProject.load(ini).revision("0002_a").intent == DeclaredIntent(
        expect=(Expectation("results", "accuracy", "update", 120, "cap"),),
        irreversible=Irreversible(("results.legacy_score", "old_table"), "retired"),
        ignore=(Ignore("pg-table-rewrite", "results is small"),),
    )


def test_an_invalid_declaration_names_the_file_and_the_key(tmp_path):
    extra = 'integrity = {"expect": [{"table": "results", "change": "update", "rows": 3, "reason": "x"}]}'
    ini = make_project(tmp_path, {"0002_a.py": revision_source("0002_a", HEAD, "pass", extra=extra)})
    assert invalid(ini) == (f"{tmp_path / 'versions' / '0002_a.py'}: integrity['expect'][0] has unknown key 'rows'; "
                            "allowed: table, column, change, max_rows, reason")


@pytest.mark.parametrize("raw,fragment", [
    ([], "integrity must be a dict with the keys expect, irreversible, ignore"),
    ({"expected": []}, "integrity has unknown key 'expected'"),
    ({"expect": {"table": "t"}}, "integrity['expect'] must be a list of dicts"),
    ({"expect": [{"table": "t", "change": "rename", "reason": "r"}]}, "has change 'rename'; use one of update, delete, insert"),
    ({"expect": [{"table": "t", "change": "delete", "max_rows": -1, "reason": "r"}]}, "has max_rows -1"),
    ({"expect": [{"table": "t", "change": "delete", "max_rows": True, "reason": "r"}]}, "has max_rows True"),
    ({"expect": [{"table": "t", "change": "delete"}]}, "integrity['expect'][0] needs a non-empty 'reason'"),
    ({"ignore": [{"rule": "drop-column"}]}, "integrity['ignore'][0] needs a non-empty 'reason'"),
    ({"ignore": [{"rule": "drop-column", "reason": "  "}]}, "needs a non-empty 'reason'"),
    ({"ignore": [{"rule": "no-such-rule", "reason": "r"}]}, "names rule 'no-such-rule', which does not exist"),
    ({"irreversible": {"loses": [], "reason": "r"}}, "['loses'] must list what the revision loses"),
    ({"irreversible": {"loses": ["a.b.c"], "reason": "r"}}, "['loses'] has 'a.b.c'"),
    ({"irreversible": {"loses": ["t"], "reason": "r", "why": "x"}}, "integrity['irreversible'] has unknown key 'why'"),
])
def test_intent_validation_errors(raw, fragment):
    with pytest.raises(MigrationProjectInvalid) as caught:
        parse_intent(raw, Path("/x/0002_a.py"))
    assert str(caught.value).startswith("/x/0002_a.py: integrity")
    assert fragment in str(caught.value)
