"""Issue 18, "What the held-out cases showed": the four findings, each with a test that
failed before its fix.

1. Downgrades are linted with the upgrade's rules (messages start "downgrade:"), and the
   round trip's loss names the operation that caused it (the batch rebuild of results,
   the ON DELETE CASCADE to personal_bests).
2. The batch-rebuild-cascade remedy works: game_core.db's begin hook opens no
   transaction on an AUTOCOMMIT connection, so `PRAGMA foreign_keys=OFF` inside Alembic's
   autocommit_block() takes effect (tests/migration_cases/safe_batch_players_fk_off.py).
3. PostgreSQL lock rules: warnings with the fix in a lint, measured in a dry run (the hold
   scaled to production's rows against `[migrate] lock_budget`): info within the budget,
   error over it, the measurement in text, JSON and Markdown.
4. PostgreSQL dry runs list no SQLite-only needs-data-pass finding.

The dry runs run in process (typer's CliRunner) on copies of the corpus's seeded database
(tests/test_migrate_cases.py: 40 players, 5 results each).
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import copy_of_template, pg_template_seeded_by, pg_url_for, sqlite_template_seeded_by
from game_core.db import create_engine
from integrity.migrate.findings import LockHold, Severity
from test_migrate_cases import CASES_DIR, HEAD, _crash, _environment, _seed, write_alembic_ini

DOWNGRADE_CASE = "downgrade_batch_drop_cascade"
REMEDY_CASE = "safe_batch_players_fk_off"
LOCK_CASE = "lock_index_not_concurrent"


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def seeded_sqlite(tmp_path_factory, sqlite_template) -> Path:
    return sqlite_template_seeded_by(_seed, tmp_path_factory.mktemp("heldout"), sqlite_template)


@pytest.fixture(scope="module")
def seeded_pg(pg_admin, pg_supply, pg_template):
    with pg_template_seeded_by(_seed, "tg_heldout", pg_admin, pg_supply, pg_template) as name:
        yield name


@pytest.fixture
def seeded(request, tmp_path):
    def make(engine: str) -> str:
        template = request.getfixturevalue("seeded_sqlite" if engine == "sqlite" else "seeded_pg")
        return copy_of_template(request, tmp_path, engine, template)

    return make


def project_with(directory: Path, name: str, source: str | None = None) -> Path:
    """An alembic.ini over the game's history plus the corpus case `name`, or a revision
    file `name`.py holding `source`."""
    if source is None:
        return write_alembic_ini(directory, name)
    from game_core.migrations import MIGRATIONS_DIR

    versions = directory / "case_versions"
    versions.mkdir(parents=True)
    (versions / f"{name}.py").write_text(source)
    ini = directory / "alembic.ini"
    ini.write_text(
        "[alembic]\n"
        f"script_location = {MIGRATIONS_DIR}\n"
        "path_separator = space\n"
        f"version_locations = {MIGRATIONS_DIR / 'versions'} {versions}\n"
    )
    return ini


def run(tmp_path: Path, url: str, *args: str, env: dict | None = None):
    from cli_runner import CliRunner
    from integrity.cli import app

    environment = {**_environment(tmp_path, url), **(env or {})}
    result = CliRunner().invoke(app, ["--database-url", url, *args], env=environment)
    crash = _crash(result)
    assert not crash, f"crashed (exit {result.exit_code}):\n{crash}\n{result.output[-3000:]}"
    return result


def dry_run(tmp_path: Path, url: str, ini: Path, *extra: str, output: str = "json", env: dict | None = None):
    result = run(tmp_path, url, "migrate", "dry-run", "--alembic-config", str(ini), "--format", output, *extra, env=env)
    if output != "json":
        return result.exit_code, result.stdout
    return result.exit_code, json.loads(result.stdout)


def lint(tmp_path: Path, url: str, ini: Path, *extra: str):
    result = run(tmp_path, url, "migrate", "lint", "--alembic-config", str(ini), "--format", "json", *extra)
    return result.exit_code, json.loads(result.stdout)


def findings(document: dict, rule: str | None = None) -> list[dict]:
    found = document["result"]["findings"]
    return [f for f in found if rule is None or f["rule"] == rule]


def count(url: str, sql: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(sa.text(sql)).scalar_one())
    finally:
        engine.dispose()


# ---------------------------------------------------------------- 1. downgrades linted, losses named


def test_lint_checks_the_downgrade_and_finds_its_batch_rebuild_cascade(tmp_path):
    """Before: `migrate lint` passed this revision (exit 0): only upgrade() was judged."""
    ini = project_with(tmp_path / "project", DOWNGRADE_CASE)
    url = f"sqlite:///{tmp_path / 'none.db'}"  # no database: --from names the start
    exit_code, document = lint(tmp_path, url, ini, "--from", HEAD)
    assert exit_code == 3
    (finding,) = findings(document, "batch-rebuild-cascade")
    assert finding["severity"] == "error" and finding["table"] == "results"
    assert finding["message"].startswith("downgrade: results: the SQLite batch rebuild")
    assert "personal_bests" in finding["message"]
    # The column the downgrade drops is the upgrade's own: no drop-column.
    assert findings(document, "drop-column") == []


def _lint_one(tmp_path: Path, upgrade: str, downgrade: str):
    from integrity.migrate.project import MigrationProject
    from integrity.migrate.static_pass import lint_revisions

    source = (
        '"""A revision written for this test."""\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
        f"revision = 'heldout_case'\ndown_revision = {HEAD!r}\n\n\n"
        f"def upgrade():\n{textwrap.indent(textwrap.dedent(upgrade).strip(), '    ')}\n\n\n"
        f"def downgrade():\n{textwrap.indent(textwrap.dedent(downgrade).strip(), '    ')}\n"
    )
    ini = project_with(tmp_path / "project", "heldout_case", source)
    project = MigrationProject.load(ini)
    (revision,) = lint_revisions(project, project.pending(HEAD), start_revision=HEAD).revisions
    return revision


DANGEROUS_DOWNGRADES = [
    ("drop-column", 'op.drop_column("results", "xp")'),
    ("drop-table", 'op.drop_table("personal_bests")'),
    ("unbounded-data-change", 'op.execute("DELETE FROM progress")'),
    ("type-narrowing", 'op.alter_column("results", "wpm", type_=sa.Integer)'),
    ("pg-index-not-concurrent", 'op.create_index("ix_results_xp", "results", ["xp"])'),
    ("batch-rebuild-cascade", 'with op.batch_alter_table("players") as batch:\n    batch.alter_column("username", type_=sa.String(40))'),
]


@pytest.mark.parametrize("rule,downgrade", DANGEROUS_DOWNGRADES, ids=[rule for rule, _ in DANGEROUS_DOWNGRADES])
def test_every_rule_judges_the_downgrade_too(tmp_path, rule, downgrade):
    lint = _lint_one(tmp_path, 'op.execute("SELECT 1")', downgrade)
    found = [f for f in lint.findings if f.rule == rule]
    assert found, f"{rule} did not fire on the downgrade; got {sorted((f.rule, f.message) for f in lint.findings)}"
    assert all(f.message.startswith("downgrade: ") and f.table and f.revision == "heldout_case" for f in found)


def test_a_downgrade_that_undoes_its_upgrade_is_silent(tmp_path):
    """Dropping what the upgrade added, and giving a column back the type it had before
    the upgrade, lose nothing that existed before the upgrade."""
    lint = _lint_one(
        tmp_path,
        'op.add_column("results", sa.Column("keyboard", sa.String(32)))\n'
        'op.alter_column("personal_bests", "mode", type_=sa.String(16), existing_type=sa.String(8))',
        'op.alter_column("personal_bests", "mode", type_=sa.String(8), existing_type=sa.String(16))\n'
        'op.drop_column("results", "keyboard")',
    )
    assert {f.rule for f in lint.findings} <= {"pg-table-rewrite"}  # narrowing back still rewrites on PostgreSQL
    assert all(f.severity is not Severity.ERROR for f in lint.findings)


def test_the_round_trip_names_the_rebuild_and_the_cascade(tmp_path, seeded):
    """Before: only "content of personal_bests (109 -> 0 rows)"."""
    url = seeded("sqlite")
    bests = count(url, "SELECT COUNT(*) FROM personal_bests")
    exit_code, document = dry_run(tmp_path, url, project_with(tmp_path / "project", DOWNGRADE_CASE), "--from-live")
    assert exit_code == 3
    (lossy,) = [f for f in findings(document, "round-trip-lossy") if f["message"].startswith("after the downgrade")]
    assert f"content of personal_bests ({bests:,} -> 0 rows)" in lossy["message"]
    assert (
        f"personal_bests lost {bests:,} rows through ON DELETE CASCADE (results -> personal_bests) when the downgrade "
        f"of {DOWNGRADE_CASE} rebuilt results (SQLite batch_alter_table: copy, DROP TABLE results, rename)"
    ) in lossy["message"]
    assert lossy["table"] == "personal_bests" and lossy["rows"] == bests
    (static,) = findings(document, "batch-rebuild-cascade")
    assert static["message"].startswith("downgrade: ")
    # The ledger keeps the findings too: `integrity report` lists the last dry runs with them.
    history = json.loads(run(tmp_path, url, "--json", "history", "--kind", "migrate").stdout)
    recorded = history["result"]["runs"][0]["summary"]["findings"]
    assert {(f["severity"], f["rule"]) for f in recorded} >= {("error", "round-trip-lossy"), ("error", "batch-rebuild-cascade")}


def test_a_loss_by_a_downgrade_statement_names_the_statement(tmp_path, seeded):
    """A downgrade that deletes players loses their results through the cascade: the
    round trip names the DELETE and the path."""
    source = (
        '"""DANGEROUS: the downgrade deletes players."""\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
        f"revision = 'heldout_delete'\ndown_revision = {HEAD!r}\n\n\n"
        "def upgrade():\n    op.add_column('players', sa.Column('country', sa.String(2)))\n\n\n"
        "def downgrade():\n    op.execute('DELETE FROM players WHERE id <= 3')\n    op.drop_column('players', 'country')\n"
    )
    url = seeded("sqlite")
    lost = count(url, "SELECT COUNT(*) FROM results WHERE player_id <= 3")
    exit_code, document = dry_run(tmp_path, url, project_with(tmp_path / "project", "heldout_delete", source), "--from-live")
    assert exit_code == 3
    (lossy,) = [f for f in findings(document, "round-trip-lossy") if f["message"].startswith("after the downgrade")]
    assert (f"results lost {lost:,} rows through ON DELETE CASCADE (players -> results) by the downgrade of "
            "heldout_delete: execute: DELETE FROM players WHERE id <= 3") in lossy["message"]
    assert "players lost 3 rows by the downgrade of heldout_delete: execute: DELETE FROM players WHERE id <= 3" in lossy["message"]


# ---------------------------------------------------------------- 2. the remedy works


def test_an_autocommit_connection_opens_no_transaction(sqlite_url):
    """Before: the hook issued BEGIN IMMEDIATE here too, and the PRAGMA was ignored
    (in_transaction True, foreign_keys 1)."""
    engine = create_engine(sqlite_url)
    try:
        with engine.connect() as connection:
            autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
            with autocommit.begin():
                assert not autocommit.connection.dbapi_connection.in_transaction
                autocommit.exec_driver_sql("PRAGMA foreign_keys=OFF")
                assert autocommit.exec_driver_sql("PRAGMA foreign_keys").scalar() == 0
    finally:
        engine.dispose()


def test_a_writer_transaction_still_takes_the_write_lock_at_begin(sqlite_url, sqlite_path):
    """The other half of the hook, unchanged: a normal transaction is BEGIN IMMEDIATE, so a
    second writer is refused at its own BEGIN while the first holds the lock, before the
    first wrote anything."""
    engine = create_engine(sqlite_url)
    other = sqlite3.connect(sqlite_path, timeout=0, isolation_level=None)
    try:
        with engine.connect() as connection, connection.begin():
            assert connection.connection.dbapi_connection.in_transaction
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # released at the end of the first transaction
        other.execute("ROLLBACK")
    finally:
        other.close()
        engine.dispose()


def test_the_hint_followed_passes_lint_and_the_dry_run(tmp_path, seeded):
    """safe_batch_players_fk_off turns foreign keys off in autocommit_block() around the
    rebuild of players: lint clean, and on SQLite the dry run loses no child row, the round
    trip is identical. Before the hook fix: results, progress and personal_bests emptied."""
    ini = project_with(tmp_path / "project", REMEDY_CASE)
    url = seeded("sqlite")
    exit_code, document = lint(tmp_path, url, ini)
    assert exit_code == 0 and findings(document, "batch-rebuild-cascade") == []
    exit_code, document = dry_run(tmp_path, url, ini, "--from-live")
    assert exit_code == 0, findings(document)
    assert document["result"]["round_trip"] == {"downgrade": "identical", "upgrade_again": "identical"}
    assert [f for f in findings(document) if f["rule"] in ("cascade-rows-lost", "rows-lost", "round-trip-lossy")] == []
    # And foreign keys are on again afterwards, on a fresh connection as on every one.
    assert count(url, "PRAGMA foreign_keys") == 1


def test_the_pragma_inside_the_transaction_is_caught_by_the_data_pass(tmp_path, seeded):
    """The control: the same revision with the PRAGMA run inside Alembic's transaction (no
    autocommit_block) is ignored by SQLite: lint says so, and the dry run finds every
    child row lost."""
    source = (CASES_DIR / f"{REMEDY_CASE}.py").read_text()
    broken = source.replace(
        "    with op.get_context().autocommit_block():\n        op.execute(f\"PRAGMA foreign_keys={'ON' if on else 'OFF'}\")",
        "    op.execute(f\"PRAGMA foreign_keys={'ON' if on else 'OFF'}\")",
    ).replace('revision = "safe_batch_players_fk_off"', 'revision = "heldout_pragma_in_tx"')
    assert "with op.get_context().autocommit_block()" not in broken
    url = seeded("sqlite")
    results = count(url, "SELECT COUNT(*) FROM results")
    ini = project_with(tmp_path / "project", "heldout_pragma_in_tx", broken)
    exit_code, document = lint(tmp_path, url, ini)
    assert exit_code == 3
    messages = [f["message"] for f in findings(document, "batch-rebuild-cascade")]
    assert len(messages) == 2 and messages[0].startswith("downgrade: players:") and messages[1].startswith("players:")
    assert all(message.endswith("(its PRAGMA foreign_keys=OFF runs inside the transaction, where SQLite ignores it: "
                                "run it in op.get_context().autocommit_block())") for message in messages)
    exit_code, document = dry_run(tmp_path, url, ini, "--from-live")
    assert exit_code == 3
    assert {(f["table"], f["rows"]) for f in findings(document, "cascade-rows-lost")} >= {("results", results)}


# ---------------------------------------------------------------- 3. lock severity measured


def test_lint_keeps_lock_rules_as_warnings_with_the_fix(tmp_path):
    """Before: pg-index-not-concurrent was an error without any data (exit 3)."""
    ini = project_with(tmp_path / "project", LOCK_CASE)
    exit_code, document = lint(tmp_path, f"sqlite:///{tmp_path / 'none.db'}", ini, "--from", HEAD)
    assert exit_code == 0
    (finding,) = findings(document, "pg-index-not-concurrent")
    assert finding["severity"] == "warning" and finding["lock_hold"] is None
    assert finding["message"].endswith(
        "(not measured without data; fix: use postgresql_concurrently=True inside an autocommit_block())")


@pytest.mark.postgres
def test_a_dry_run_measures_the_lock_and_a_short_hold_is_not_an_error(tmp_path, seeded):
    """Before: exit 3, pg-index-not-concurrent an error whatever the hold."""
    url = seeded("postgresql")
    results = count(url, "SELECT COUNT(*) FROM results")
    ini = project_with(tmp_path / "project", LOCK_CASE)
    exit_code, document = dry_run(tmp_path, url, ini, "--from-live")
    assert exit_code == 0, findings(document)
    (finding,) = findings(document, "pg-index-not-concurrent")
    hold = finding["lock_hold"]
    assert hold["mode"] == "ShareLock" and hold["budget"] == 1.0
    assert hold["copy_rows"] == hold["production_rows"] == results
    assert 0 < hold["seconds"] == hold["scaled_seconds"]
    # The severity follows the measurement, whatever this machine's speed.
    assert finding["severity"] == ("error" if hold["scaled_seconds"] > 1.0 else "info")
    assert f"measured: ShareLock held {hold['seconds']:.2f} s, within the lock budget of 1 s" in finding["message"]


@pytest.mark.postgres
@pytest.mark.parametrize("output", ["text", "markdown"])
def test_text_and_markdown_show_the_measured_hold_next_to_the_rule(tmp_path, seeded, output):
    ini = project_with(tmp_path / "project", LOCK_CASE)
    _exit, shown = dry_run(tmp_path, seeded("postgresql"), ini, "--from-live", output=output)
    # Text folds long lines at the terminal's width (COLUMNS=250 here): one line either way.
    (line,) = [line for line in shown.splitlines() if "pg-index-not-concurrent" in line]
    assert "measured: ShareLock held" in line and "lock budget of 1 s" in line


@pytest.mark.postgres
def test_a_hold_over_the_lock_budget_is_an_error(tmp_path, seeded):
    """[migrate] lock_budget (here a microsecond, from the environment): any real build is over it."""
    ini = project_with(tmp_path / "project", LOCK_CASE)
    exit_code, document = dry_run(tmp_path, seeded("postgresql"), ini, "--from-live",
                                  env={"INTEGRITY_MIGRATE__LOCK_BUDGET": "0.000001"})
    assert exit_code == 3
    (finding,) = findings(document, "pg-index-not-concurrent")
    assert finding["severity"] == "error" and finding["lock_hold"]["budget"] == 0.000001
    assert "over the lock budget of 1e-06 s" in finding["message"]


@pytest.mark.postgres
def test_the_hold_is_scaled_to_production_rows_when_the_copy_is_smaller(tmp_path, seeded, pg_admin):
    """A snapshot holding half of production's results: the measured hold is scaled by
    production rows / copy rows (live's rows, read from the configured database)."""
    live = seeded("postgresql")
    snapshot_url = seeded("postgresql")
    engine = create_engine(snapshot_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("DELETE FROM results WHERE id % 2 = 0"))
    finally:
        engine.dispose()
    production, copy = count(live, "SELECT COUNT(*) FROM results"), count(snapshot_url, "SELECT COUNT(*) FROM results")
    assert copy < production
    snapshot = snapshot_url.rsplit("/", 1)[1]
    ini = project_with(tmp_path / "project", LOCK_CASE)
    _exit, document = dry_run(tmp_path, live, ini, "--snapshot", snapshot)
    (finding,) = findings(document, "pg-index-not-concurrent")
    hold = finding["lock_hold"]
    assert (hold["copy_rows"], hold["production_rows"]) == (copy, production)
    assert hold["scaled_seconds"] == pytest.approx(hold["seconds"] * production / copy, rel=1e-3, abs=1e-4)
    assert f"scaled to production's {production:,} rows (copy: {copy:,})" in finding["message"]
    assert pg_url_for(snapshot) == snapshot_url


def test_scaling_decides_the_severity():
    """The rule itself, on given numbers: a hold within the budget on the copy is an error
    when production is big enough to push it over; never scaled down."""
    from integrity.migrate.findings import Finding
    from integrity.migrate.locks import measured

    finding = Finding(rule="pg-index-not-concurrent", severity=Severity.WARNING, revision="r", table="results",
                      message="results: index built without CONCURRENTLY")
    locks = {"r": [{"relation": "results", "mode": "ShareLock", "seconds": 0.02},
                   {"relation": "results", "mode": "AccessShareLock", "seconds": 5.0}]}  # reads wait for nobody

    def judged(production: int, budget: float = 1.0):
        (result,) = measured([finding], upgrade_locks=locks, downgrade_locks={}, copy_rows={"results": 200},
                             production_rows={"results": production}, budget=budget)
        return result

    small = judged(production=2_000)
    assert small.severity is Severity.INFO
    assert small.lock_hold == LockHold("ShareLock", 0.02, 200, 2_000, 0.2, 1.0)
    big = judged(production=20_000)
    assert big.severity is Severity.ERROR and big.lock_hold.scaled_seconds == 2.0
    assert big.message.endswith("measured: ShareLock held 0.02 s, 2.00 s scaled to production's 20,000 rows "
                                "(copy: 200), over the lock budget of 1 s")
    assert judged(production=50).lock_hold.scaled_seconds == 0.02  # a smaller production is not scaled down
    (unmeasured,) = measured([finding], upgrade_locks={}, downgrade_locks={}, copy_rows={"results": 200},
                             production_rows={}, budget=1.0)
    assert unmeasured.severity is Severity.WARNING and "its lock was not measured" in unmeasured.message


# ---------------------------------------------------------------- 4. no SQLite-only info on PostgreSQL


@pytest.mark.postgres
def test_a_postgresql_dry_run_lists_no_sqlite_only_needs_data_pass(tmp_path, seeded):
    """Before: "sqlite: offline mode cannot render the downgrade: the batch rebuild of
    results ..." was listed on PostgreSQL, as a finding and in the revision's
    `needs_data_pass`. The SQLite dry run of the same revision keeps both (the control)."""
    ini = project_with(tmp_path / "project", DOWNGRADE_CASE)
    _exit, on_pg = dry_run(tmp_path, seeded("postgresql"), ini, "--from-live")
    assert findings(on_pg, "needs-data-pass") == []
    assert [revision["needs_data_pass"] for revision in on_pg["result"]["revisions"]] == [{}]
    _exit, on_sqlite = dry_run(tmp_path, seeded("sqlite"), ini, "--from-live")
    (info,) = findings(on_sqlite, "needs-data-pass")
    assert info["engine"] == "sqlite" and info["message"].startswith("sqlite: offline mode cannot render")
    (needs,) = [revision["needs_data_pass"] for revision in on_sqlite["result"]["revisions"]]
    assert list(needs) == ["sqlite"] and "batch rebuild of results" in needs["sqlite"]
