"""The dry run's migration runner: real revisions, revision by revision, on a populated
copy, with timings, PostgreSQL locks and rewrites, and the rows that make one fail.

Each test writes its revisions into a copy of the game's Alembic history in tmp_path
(`History`), on top of this code's head, and runs them on a database filled by
`simulate` (20 players, 5 results each).
"""

from __future__ import annotations

import shutil
import textwrap

import pytest
import sqlalchemy as sa

from game_core.db import create_engine
from game_core.migrations import MIGRATIONS_DIR
from game_core.schema_state import current_revision, head_revision
from game_core.simulate import simulate
from integrity.migrate.runner import run_revisions

PLAYERS, TESTS = 20, 5

REVISION = '''
from alembic import op
import sqlalchemy as sa
revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
{upgrade}


def downgrade():
{downgrade}
'''


class History:
    """This code's Alembic history plus the test's revisions; a project for the runner."""

    def __init__(self, root):
        self.location = root / "migrations"
        shutil.copytree(MIGRATIONS_DIR, self.location, ignore=shutil.ignore_patterns("__pycache__"))
        self.base = self.head = head_revision()

    def add(self, revision: str, upgrade: str, downgrade: str = "pass") -> str:
        body = {name: textwrap.indent(textwrap.dedent(code).strip(), "    ") for name, code in
                (("upgrade", upgrade), ("downgrade", downgrade))}
        source = REVISION.format(revision=revision, down=self.head, **body)
        (self.location / "versions" / f"{revision}.py").write_text(source)
        self.head = revision
        return revision

    def config(self, connection):
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(self.location))
        config.attributes["connection"] = connection
        return config


@pytest.fixture
def history(tmp_path):
    return History(tmp_path)


@pytest.fixture
def engine(database_url):
    engine = create_engine(database_url)
    simulate(engine, players=PLAYERS, tests_per_player=TESTS, seed=1)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(pg_url):
    engine = create_engine(pg_url)
    simulate(engine, players=PLAYERS, tests_per_player=TESTS, seed=1)
    yield engine
    engine.dispose()


def upgrades(*revisions: str) -> list[tuple[str, str]]:
    return [(revision, revision) for revision in revisions]


def revision_of(engine) -> str | None:
    with engine.connect() as connection:
        return current_revision(connection)


def columns_of(engine, table: str) -> set[str]:
    with engine.connect() as connection:
        return {column["name"] for column in sa.inspect(connection).get_columns(table)}


def scalar(engine, sql: str):
    with engine.connect() as connection:
        return connection.execute(sa.text(sql)).scalar_one()


def keys(engine, sql: str, limit: int) -> tuple[str, ...]:
    with engine.connect() as connection:
        ids = connection.execute(sa.text(f"{sql} ORDER BY id LIMIT {limit}")).scalars()
        return tuple(f"results.id={id}" for id in ids)


# ---------------------------------------------------------------- runs that succeed


def test_an_upgrade_and_its_downgrade_are_timed_revision_by_revision_and_statement_by_statement(engine, history):
    history.add("0002_country", 'op.add_column("players", sa.Column("country", sa.String(2)))',
                'op.drop_column("players", "country")')
    history.add("0003_fill", "op.execute(\"UPDATE players SET country = 'nl'\")",
                'op.execute("UPDATE players SET country = NULL")')

    ups = run_revisions(history, engine, upgrades("0002_country", "0003_fill"), direction="upgrade")

    assert [(trace.revision, trace.direction, trace.failed) for trace in ups] == [
        ("0002_country", "upgrade", False), ("0003_fill", "upgrade", False)]
    assert all(trace.seconds > 0 for trace in ups)
    assert all(statement.seconds >= 0 and "\n" not in statement.sql for trace in ups for statement in trace.statements)
    assert any(s.sql.startswith("ALTER TABLE players ADD COLUMN country") for s in ups[0].statements)
    update = next(s for s in ups[1].statements if s.sql.startswith("UPDATE players SET country"))
    assert update.rows == PLAYERS
    assert revision_of(engine) == "0003_fill"
    assert scalar(engine, "SELECT count(*) FROM players WHERE country = 'nl'") == PLAYERS

    downs = run_revisions(history, engine, [("0003_fill", "0002_country"), ("0002_country", history.base)],
                          direction="downgrade")

    assert [(trace.revision, trace.direction, trace.failed) for trace in downs] == [
        ("0003_fill", "downgrade", False), ("0002_country", "downgrade", False)]
    assert next(s for s in downs[0].statements if s.sql.startswith("UPDATE players")).rows == PLAYERS
    assert revision_of(engine) == history.base
    assert "country" not in columns_of(engine, "players")


@pytest.mark.postgres
def test_postgres_locks_are_held_until_commit_and_rewrites_are_found(pg_engine, history):
    history.add("0002_xp_bigint", """
        op.alter_column("results", "xp", type_=sa.BigInteger, existing_type=sa.Integer)
        op.execute("SELECT pg_sleep(0.3)")
    """)
    history.add("0003_concurrently", """
        with op.get_context().autocommit_block():
            op.create_index("ix_results_accuracy", "results", ["accuracy"], postgresql_concurrently=True)
    """)
    history.add("0004_plain_index", 'op.create_index("ix_results_raw_wpm", "results", ["raw_wpm"])')

    rewrite, concurrent, plain = run_revisions(
        history, pg_engine, upgrades("0002_xp_bigint", "0003_concurrently", "0004_plain_index"), direction="upgrade")

    alter = next(s for s in rewrite.statements if s.sql.startswith("ALTER TABLE results ALTER COLUMN xp TYPE BIGINT"))
    assert "results:AccessExclusiveLock" in alter.locks
    # The lock outlives its statement: it is held through the sleep until the commit.
    held = [lock for lock in rewrite.locks_held if (lock.relation, lock.mode) == ("results", "AccessExclusiveLock")]
    assert len(held) == 1 and held[0].seconds >= 0.3
    rewritten = {(r.relation, r.kind): r.rows for r in rewrite.rewritten}
    assert rewritten[("results", "table")] == PLAYERS * TESTS
    assert ("pk_results", "index") in rewritten  # its indexes are rebuilt too
    assert not any(r.relation == "players" for r in rewrite.rewritten)

    assert any("CREATE INDEX CONCURRENTLY ix_results_accuracy" in s.sql for s in concurrent.statements)
    modes = {lock.mode for lock in concurrent.locks_held}
    modes |= {lock.rpartition(":")[2] for s in concurrent.statements for lock in s.locks}
    assert "AccessExclusiveLock" not in modes
    assert concurrent.rewritten == ()

    # The probe sees a plain index build's SHARE lock, which blocks every write meanwhile.
    assert ("results", "ShareLock") in {(lock.relation, lock.mode) for lock in plain.locks_held}
    assert revision_of(pg_engine) == "0004_plain_index"


# ---------------------------------------------------------------- runs that fail


def test_a_not_null_column_without_default_fails_names_every_row_and_is_rolled_back(engine, history):
    history.add("0002_ok", 'op.add_column("players", sa.Column("country", sa.String(2)))')
    history.add("0003_device", """
        op.add_column("players", sa.Column("nickname", sa.String(16)))
        op.add_column("results", sa.Column("device", sa.String(16), nullable=False))
    """)
    history.add("0004_never", 'op.execute("SELECT 1")')

    traces = run_revisions(history, engine, upgrades("0002_ok", "0003_device", "0004_never"),
                           direction="upgrade", sample_limit=3)

    assert [trace.revision for trace in traces] == ["0002_ok", "0003_device"]  # stopped at the failure
    failed = traces[1]
    assert failed.failed and "\n" not in failed.error
    assert failed.failing_statement.startswith("ALTER TABLE results ADD COLUMN device")
    assert failed.offending_rows == PLAYERS * TESTS
    assert failed.offending_samples == keys(engine, "SELECT id FROM results", 3)
    # Rolled back: the copy is at the previous revision, the revision's first change undone.
    assert revision_of(engine) == "0002_ok"
    assert "nickname" not in columns_of(engine, "players") and "device" not in columns_of(engine, "results")


def test_a_unique_index_over_duplicates_fails_and_names_the_duplicate_rows(engine, history):
    history.add("0002_unique", 'op.create_index("ix_results_player_mode", "results", ["player_id", "mode"], unique=True)')

    (trace,) = run_revisions(history, engine, upgrades("0002_unique"), direction="upgrade", sample_limit=4)

    duplicates = ("SELECT id FROM results r WHERE (SELECT count(*) FROM results o "
                  "WHERE o.player_id = r.player_id AND o.mode = r.mode) > 1")
    assert trace.failed and trace.failing_statement.startswith("CREATE UNIQUE INDEX ix_results_player_mode")
    assert trace.offending_rows == scalar(engine, f"SELECT count(*) FROM ({duplicates}) d") > 0
    assert trace.offending_samples == keys(engine, duplicates, 4)
    assert revision_of(engine) == history.base


# Batch mode, because SQLite can only add a constraint by rebuilding the table; on
# PostgreSQL the same batch is plain ALTER TABLE statements.
@pytest.mark.parametrize("setup, constraint, offending", [
    pytest.param([], 'batch.create_check_constraint("ck_results_wpm_slow", "wpm < 60")',
                 "wpm >= 60", id="check"),
    pytest.param(["ALTER TABLE results ADD COLUMN device VARCHAR(8)",
                  "UPDATE results SET device = 'keyboard' WHERE id % 3 = 0"],
                 'batch.alter_column("device", existing_type=sa.String(8), nullable=False)',
                 "device IS NULL", id="set-not-null"),
    pytest.param(["ALTER TABLE results ADD COLUMN coach_id INTEGER",
                  f"UPDATE results SET coach_id = id % {PLAYERS + 5}"],
                 'batch.create_foreign_key("fk_results_coach_id_players", "players", ["coach_id"], ["id"])',
                 "coach_id NOT IN (SELECT id FROM players)", id="foreign-key"),
])
def test_existing_rows_that_break_a_new_constraint_are_named(engine, history, setup, constraint, offending):
    with engine.begin() as connection:
        for statement in setup:
            connection.execute(sa.text(statement))
    cascaded = scalar(engine, "SELECT count(*) FROM personal_bests")
    history.add("0002_constraint", f"""
        with op.batch_alter_table("results") as batch:
            {constraint}
    """)

    (trace,) = run_revisions(history, engine, upgrades("0002_constraint"), direction="upgrade")

    assert trace.failed and trace.failing_statement in {s.sql for s in trace.statements}
    assert trace.offending_rows == scalar(engine, f"SELECT count(*) FROM results WHERE {offending}") > 0
    assert trace.offending_samples == keys(engine, f"SELECT id FROM results WHERE {offending}", 10)
    assert scalar(engine, "SELECT count(*) FROM personal_bests") == cascaded  # the failed rebuild deleted nothing
    assert revision_of(engine) == history.base


def test_a_revision_that_raises_is_reported_and_rolled_back(engine, history):
    history.add("0002_raises", """
        op.add_column("players", sa.Column("country", sa.String(2)))
        raise RuntimeError("cannot convert the legacy scores")
    """)

    (trace,) = run_revisions(history, engine, upgrades("0002_raises"), direction="upgrade")

    assert trace.error == "RuntimeError: cannot convert the legacy scores"
    assert (trace.failing_statement, trace.offending_rows, trace.offending_samples) == (None, None, ())
    assert revision_of(engine) == history.base and "country" not in columns_of(engine, "players")


@pytest.mark.postgres
@pytest.mark.parametrize("setup, change, error, offending", [
    pytest.param(
        ["ALTER TABLE players ADD COLUMN country varchar(8)",
         "UPDATE players SET country = CASE WHEN id % 3 = 0 THEN 'n/a' ELSE id::text END"],
        "op.alter_column('players', 'country', type_=sa.Integer, postgresql_using='country::integer')",
        'invalid input syntax for type integer: "n/a"', "SELECT id FROM players WHERE country = 'n/a'",
        id="invalid-input"),
    pytest.param(
        ["UPDATE results SET wpm = 100 + id WHERE id % 7 = 0"],
        "op.alter_column('results', 'wpm', type_=sa.Numeric(4, 2))",
        "numeric field overflow", "SELECT id FROM results WHERE wpm >= 100", id="numeric-overflow"),
    pytest.param(
        ["UPDATE players SET username = 'player_' || id WHERE id % 4 = 0"],
        "op.alter_column('players', 'username', type_=sa.String(8))",
        "value too long for type character varying(8)", "SELECT id FROM players WHERE length(username) > 8",
        id="too-long"),
])
def test_a_postgres_cast_failure_names_the_bad_value_and_its_rows(pg_engine, history, setup, change, error, offending):
    with pg_engine.begin() as connection:
        for statement in setup:
            connection.execute(sa.text(statement))
    history.add("0002_cast", change)

    (trace,) = run_revisions(history, pg_engine, upgrades("0002_cast"), direction="upgrade")

    table = offending.split()[3]
    assert trace.error.startswith(error)
    assert trace.failing_statement.startswith(f"ALTER TABLE {table} ALTER COLUMN")
    with pg_engine.connect() as connection:
        ids = connection.execute(sa.text(f"{offending} ORDER BY id")).scalars().all()
    assert ids and trace.offending_rows == len(ids)
    assert trace.offending_samples == tuple(f"{table}.id={id}" for id in ids[:10])
    assert revision_of(pg_engine) == history.base
