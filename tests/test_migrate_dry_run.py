"""`integrity migrate dry-run|lint|rules|apply` end to end: the source is never written,
copies are proven and removed, bad input is one `Error:` line and exit 4, the ledger
records dry runs by file hash and `apply` trusts only those."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from backup_helpers import BackupEnv, fill_database, one_error, writer_process
from conftest import drop_pg_database, pg_url_for, unclaimed_scratch_databases
from game_core.migrations import MIGRATIONS_DIR
from game_core.schema_state import head_revision

ADD_COUNTRY = '''"""Add a nullable country column."""
from alembic import op
import sqlalchemy as sa
revision = "0002_country"
down_revision = "{head}"
branch_labels = None
depends_on = None
def upgrade():
    op.add_column("players", sa.Column("country", sa.String(2)))
def downgrade():
    # Not a batch rebuild: on SQLite that drops `players`, which with foreign_keys=ON
    # deletes every result through ON DELETE CASCADE (a test below proves the dry run sees it).
    op.drop_column("players", "country")
'''

DROP_ACCURACY = '''"""Drop results.accuracy (loses every value)."""
from alembic import op
import sqlalchemy as sa
revision = "0002_drop_accuracy"
down_revision = "{head}"
branch_labels = None
depends_on = None
def upgrade():
    op.drop_column("results", "accuracy")
def downgrade():
    op.add_column("results", sa.Column("accuracy", sa.Numeric(7, 2), nullable=False, server_default="0"))
'''


def history(tmp_path: Path, *revisions: str, env_py: str | None = None) -> Path:
    """An alembic.ini for our history plus `revisions` (texts with {head}) in a folder of their own."""
    folder = tmp_path / "branch"
    versions = folder / "versions"
    versions.mkdir(parents=True)
    for index, text in enumerate(revisions):
        (versions / f"case_{index}.py").write_text(text.replace("{head}", head_revision()))
    script = MIGRATIONS_DIR
    if env_py is not None:
        script = folder / "script"
        shutil.copytree(MIGRATIONS_DIR, script, ignore=shutil.ignore_patterns("__pycache__"))
        (script / "env.py").write_text(env_py)
    ini = folder / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {script}\npath_separator = space\nversion_locations = {MIGRATIONS_DIR / 'versions'} {versions}\n")
    return ini


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def revision_of(url: str) -> str | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def played(request, filled_copy, tmp_path):
    """A game database of this test's own holding fill_database(players=6,
    results_per_player=10): a copy of a template filled once per session."""
    return BackupEnv(tmp_path, filled_copy(request.param, players=6, results_per_player=10))


def dry_run(env: BackupEnv, ini: Path, *args: str):
    source = ("--from-live",)
    return env.invoke_json("migrate", "dry-run", "--alembic-config", str(ini), *source, *args)


def scratch_left(env: BackupEnv, request) -> list[str]:
    if env.url.startswith("postgresql"):
        return unclaimed_scratch_databases(request.getfixturevalue("pg_admin"), "integrity_scratch_dry_")
    scratch = env.settings().state.dir / "scratch"
    return [p.name for p in scratch.iterdir()] if scratch.exists() else []


# ---------------------------------------------------------------- the happy path


def test_a_safe_revision_passes_and_leaves_the_source_and_no_copy(played, tmp_path, request):
    env = played
    ini = history(tmp_path, ADD_COUNTRY)
    before_file = file_digest(Path(env.url.removeprefix("sqlite:///"))) if env.url.startswith("sqlite") else None
    code, document = dry_run(env, ini)
    assert code == 0, document
    result = document["result"]
    assert result["start_revision"] == head_revision() and result["target_revision"] == "0002_country"
    assert [f for f in result["findings"] if f["severity"] == "error"] == []
    assert {change["kind"] for change in result["schema_changes"]} == {"column_added"}
    assert result["round_trip"]["downgrade"] == "identical" and result["round_trip"]["upgrade_again"] == "identical"
    assert revision_of(env.url) == head_revision()  # the source did not move
    if before_file:
        assert file_digest(Path(env.url.removeprefix("sqlite:///"))) == before_file
    assert scratch_left(env, request) == []
    phases = [p["name"] for p in result["phases"]]
    assert "snapshot" in phases and "migration" in phases and "round trip" in phases


def test_dropping_a_column_with_values_is_exit_3_naming_the_rows(played, tmp_path):
    code, document = dry_run(played, history(tmp_path, DROP_ACCURACY))
    assert code == 3
    lost = [f for f in document["result"]["findings"] if f["rule"] == "column-values-lost"]
    assert lost and lost[0]["table"] == "results" and lost[0]["column"] == "accuracy" and lost[0]["rows"] == 60
    assert any(f["rule"] == "drop-column" for f in document["result"]["findings"])


def test_declaring_the_loss_irreversible_makes_it_pass(played, tmp_path):
    declared = DROP_ACCURACY + '\nintegrity = {"irreversible": {"loses": ["results.accuracy"], "reason": "recomputed from chars"}}\n'
    code, document = dry_run(played, history(tmp_path, declared))
    assert code == 0, [f for f in document["result"]["findings"] if f["severity"] == "error" and not f["declared"]]
    assert any(f["rule"] == "column-values-lost" and f["declared"] for f in document["result"]["findings"])


def test_json_is_deterministic_apart_from_timings(played, tmp_path):
    ini = history(tmp_path, DROP_ACCURACY)

    def stable(document):
        text = json.dumps(document["result"], sort_keys=True)
        result = json.loads(text)
        for key in ("phases", "seconds", "revisions", "source", "tables"):
            result.pop(key)
        return result

    first, second = dry_run(played, ini)[1], dry_run(played, ini)[1]
    assert stable(first) == stable(second)
    assert [r["sha256"] for r in first["result"]["revisions"]] == [r["sha256"] for r in second["result"]["revisions"]]


def test_markdown_and_text_reports(played, tmp_path):
    ini = history(tmp_path, DROP_ACCURACY)
    markdown = played.invoke("migrate", "dry-run", "--alembic-config", str(ini), "--from-live", "--format", "markdown")
    assert markdown.returncode == 3
    assert "### ❌ Migration dry run" in markdown.stdout and "| error | `column-values-lost`" in markdown.stdout
    text = played.invoke("migrate", "dry-run", "--alembic-config", str(ini), "--from-live")
    assert "column-values-lost" in text.stdout and "dry run FAILED" in text.stdout


def test_keep_copy_keeps_both_copies(played, tmp_path, request):
    code, document = dry_run(played, history(tmp_path, ADD_COUNTRY), "--keep-copy")
    kept = document["result"]["kept_copies"]
    try:
        assert code == 0
        assert len(kept) == 2
        if played.url.startswith("postgresql"):
            assert set(kept) <= set(scratch_left(played, request))
            assert revision_of(pg_url_for(kept[-1])) == "0002_country"
        else:
            assert revision_of(f"sqlite:///{kept[1]}") == "0002_country" and revision_of(f"sqlite:///{kept[0]}") == head_revision()
    finally:
        if played.url.startswith("postgresql"):
            for name in kept:
                drop_pg_database(request.getfixturevalue("pg_admin"), name)


def test_a_batch_rebuild_of_players_in_the_downgrade_loses_the_results_on_sqlite(tmp_path, filled_copy):
    env = BackupEnv(tmp_path, filled_copy("sqlite", players=6, results_per_player=10))
    batch = ADD_COUNTRY.replace('    op.drop_column("players", "country")',
                                '    with op.batch_alter_table("players") as batch:\n        batch.drop_column("country")')
    code, document = dry_run(env, history(tmp_path, batch))
    assert code == 3
    lossy = [f for f in document["result"]["findings"] if f["rule"] == "round-trip-lossy"]
    assert lossy and "results (60 -> 0 rows)" in lossy[0]["message"]


# ---------------------------------------------------------------- bad input: exit 4 (or 0), nothing left


def test_no_pending_revision_says_so_with_exit_0(played, tmp_path):
    code, document = dry_run(played, history(tmp_path))
    assert code == 0
    assert document["result"]["note"].startswith("no pending revisions")


def test_two_heads_are_refused(played, tmp_path, request):
    other = ADD_COUNTRY.replace("0002_country", "0002_other")
    result = played.invoke("migrate", "dry-run", "--alembic-config", str(history(tmp_path, ADD_COUNTRY, other)), "--from-live")
    assert result.returncode == 4
    assert "heads" in one_error(result)
    assert scratch_left(played, request) == []


def test_a_config_that_does_not_load_is_exit_4(played, tmp_path):
    broken = tmp_path / "nothing.ini"
    result = played.invoke("migrate", "dry-run", "--alembic-config", str(broken), "--from-live")
    assert result.returncode == 4 and "nothing.ini" in one_error(result)


def test_an_env_py_that_ignores_the_connection_is_exit_4(played, tmp_path, request):
    ignoring = (MIGRATIONS_DIR / "env.py").read_text().replace(
        'connection = config.attributes.get("connection")', "connection = None"
    )
    ini = history(tmp_path, ADD_COUNTRY, env_py=ignoring)
    result = played.invoke("migrate", "dry-run", "--alembic-config", str(ini), "--from-live")
    assert result.returncode == 4, result.output
    assert "config.attributes" in one_error(result)
    assert revision_of(played.url) == head_revision()
    assert scratch_left(played, request) == []


def test_a_revision_that_raises_is_exit_4(played, tmp_path, request):
    raising = ADD_COUNTRY.replace('    op.add_column("players", sa.Column("country", sa.String(2)))',
                                  '    raise RuntimeError("half written")')
    result = played.invoke("migrate", "dry-run", "--alembic-config", str(history(tmp_path, raising)), "--from-live")
    assert result.returncode == 4, result.output
    assert "half written" in one_error(result)
    assert scratch_left(played, request) == []


def test_a_snapshot_at_a_revision_not_in_the_history_is_exit_4(played, tmp_path):
    engine = sa.create_engine(played.url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff_unknown'"))
    engine.dispose()
    result = played.invoke("migrate", "dry-run", "--alembic-config", str(history(tmp_path, ADD_COUNTRY)), "--from-live")
    assert result.returncode == 4 and "ffff_unknown" in one_error(result)


@pytest.mark.postgres
def test_no_right_to_create_a_scratch_database_is_exit_4(pg_url, pg_restricted_url, tmp_path, request):
    fill_database(pg_url, players=2, results_per_player=3)
    env = BackupEnv(tmp_path, pg_restricted_url)
    result = env.invoke("migrate", "dry-run", "--alembic-config", str(history(tmp_path, ADD_COUNTRY)), "--from-live")
    assert result.returncode == 4, result.output
    assert "CREATEDB" in one_error(result) or "permission denied" in one_error(result)
    assert scratch_left(env, request) == []


# ---------------------------------------------------------------- lint and rules


def test_lint_runs_without_data_and_names_the_rule(played, tmp_path):
    code, document = played.invoke_json("migrate", "lint", "--alembic-config", str(history(tmp_path, DROP_ACCURACY)))
    assert code == 3
    assert {f["rule"] for f in document["result"]["findings"]} >= {"drop-column"}
    assert document["result"]["data_pass"] is False


def test_rules_lists_every_rule_id():
    from integrity.migrate.rules import RULES

    env = BackupEnv(Path("/tmp"), "sqlite:////nonexistent.db")
    code, document = env.invoke_json("migrate", "rules")
    assert code == 0
    assert [r["id"] for r in document["result"]["rules"]] == sorted(RULES, key=lambda i: (RULES[i].phase != "static", i))


# ---------------------------------------------------------------- apply


def test_apply_needs_a_passing_dry_run_of_the_same_files(played, tmp_path):
    env = played
    ini = history(tmp_path, ADD_COUNTRY)
    refused = env.invoke("--no-input", "migrate", "apply", "--alembic-config", str(ini), "--yes")
    assert refused.returncode == 4 and "no passing dry run" in one_error(refused)
    assert dry_run(env, ini)[0] == 0
    # Edited after its dry run: the hash no longer matches.
    revision_file = next((tmp_path / "branch" / "versions").glob("*.py"))
    original = revision_file.read_text()
    revision_file.write_text(original + "\n# edited\n")
    edited = env.invoke("--no-input", "migrate", "apply", "--alembic-config", str(ini), "--yes")
    assert edited.returncode == 4
    revision_file.write_text(original)
    no_consent = env.invoke("--no-input", "migrate", "apply", "--alembic-config", str(ini))
    assert no_consent.returncode == 4
    assert revision_of(env.url) == head_revision()
    code, document = env.invoke_json("--no-input", "migrate", "apply", "--alembic-config", str(ini), "--yes")
    assert code == 0, document
    assert document["result"]["applied"] == ["0002_country"] and document["result"]["backup_id"]
    assert revision_of(env.url) == "0002_country"
    listed = env.repository().read_manifest(document["result"]["backup_id"])
    assert listed.revision == head_revision()  # the pinned backup is of the state before


RENAME_EXTRA = '''"""Rename results.extra_chars to results.surplus_chars."""
from alembic import op
revision = "0002_rename"
down_revision = "{head}"
branch_labels = None
depends_on = None
def upgrade():
    op.alter_column("results", "extra_chars", new_column_name="surplus_chars")
def downgrade():
    op.alter_column("results", "surplus_chars", new_column_name="extra_chars")
'''


def test_a_renamed_column_keeps_its_values_and_only_warns(played, tmp_path):
    code, document = dry_run(played, history(tmp_path, RENAME_EXTRA))
    rules = {f["rule"]: f for f in document["result"]["findings"]}
    assert code == 0, rules
    assert "rename-column" in rules and rules["rename-column"]["severity"] == "warning"
    assert "column-values-lost" not in rules
    assert document["result"]["round_trip"] == {"downgrade": "identical", "upgrade_again": "identical"}


def test_a_copy_that_differs_from_its_source_stops_before_anything_runs(tmp_path, sqlite_url, monkeypatch):
    """Invariant 8: the work copy is proven identical first. A copy step that writes one
    wrong value (a stand-in for a bad disk) must stop the dry run (exit 5) with the table."""
    import sqlite3

    from integrity.db import sqlite_snapshot as snapshot

    fill_database(sqlite_url, players=3, results_per_player=4)
    real_backup = snapshot.backup_api_copy

    def damaging_backup(reader, destination):
        real_backup(reader, destination)
        if destination.name == "work.db":
            with sqlite3.connect(destination) as damaged:
                damaged.execute("UPDATE results SET wpm = wpm + 1 WHERE id = 2")
            damaged.close()

    monkeypatch.setattr(snapshot, "backup_api_copy", damaging_backup)
    env = BackupEnv(tmp_path, sqlite_url)
    result = env.invoke("migrate", "dry-run", "--alembic-config", str(history(tmp_path, ADD_COUNTRY)), "--from-live")
    assert result.returncode == 5
    assert "differs from its source" in one_error(result) and "results" in one_error(result)
    assert revision_of(sqlite_url) == head_revision()


def test_a_dry_run_while_the_game_writes_proves_its_copy_and_leaves_the_writes(played, tmp_path):
    """The copies come from one snapshot of the source, its fingerprints taken in the same
    read transaction (SQLite) or exported snapshot (PostgreSQL): writes meanwhile neither
    fail the proof nor get lost."""
    with writer_process(played.url, tmp_path, min_commits=20) as writer:
        code, document = dry_run(played, history(tmp_path, ADD_COUNTRY))
    assert code == 0, document
    assert int(writer.output.strip().splitlines()[-1]) > 20  # the game went on committing throughout
    assert revision_of(played.url) == head_revision()


def test_from_a_backup_uses_the_newest_deep_verified_one(played, tmp_path, request):
    env = played
    ini = history(tmp_path, DROP_ACCURACY)
    backup_id = env.create()
    missing = env.invoke("migrate", "dry-run", "--alembic-config", str(ini), "--from-backup", "latest")
    assert missing.returncode == 4 and "no deep-verified backup" in one_error(missing)
    assert env.invoke("backup", "verify", backup_id, "--deep").returncode == 0
    code, document = env.invoke_json("migrate", "dry-run", "--alembic-config", str(ini), "--from-backup", "latest")
    assert code == 3
    assert document["result"]["source"] == f"backup {backup_id}"
    assert any(f["rule"] == "column-values-lost" and f["rows"] == 60 for f in document["result"]["findings"])
    assert scratch_left(env, request) == []
    if env.url.startswith("postgresql"):  # the default source on PostgreSQL
        code, document = env.invoke_json("migrate", "dry-run", "--alembic-config", str(ini))
        assert code == 3 and document["result"]["source"] == f"backup {backup_id}"


def test_fingerprints_from_a_child_process_equal_the_in_process_ones(tmp_path, sqlite_url, monkeypatch):
    """The path big SQLite copies take (a spawned child reads the file beside other work)."""
    from game_core.db import ConnectionSettings, parse_database_url
    from integrity.migrate import beside

    fill_database(sqlite_url, players=3, results_per_player=5)
    target = parse_database_url(sqlite_url)
    in_process = beside.fingerprints_beside(target, ConnectionSettings())()
    monkeypatch.setattr(beside, "PARALLEL_BYTES", 0)
    from_child = beside.fingerprints_beside(target, ConnectionSettings())()
    assert {n: (f.rows, f.digest) for n, f in from_child.items()} == {n: (f.rows, f.digest) for n, f in in_process.items()}
    assert from_child["results"].rows == 15


def test_lint_without_a_database_lints_from_base(tmp_path):
    """From base, `results` is created by the linted history itself: dropping one of its
    columns loses nothing yet. `--from` names where production stands."""
    env = BackupEnv(tmp_path, f"sqlite:///{tmp_path / 'absent.db'}")
    ini = str(history(tmp_path, DROP_ACCURACY))
    code, document = env.invoke_json("migrate", "lint", "--alembic-config", ini)
    assert code == 0
    assert document["result"]["start_revision"] is None
    assert [r["id"] for r in document["result"]["revisions"]] == [head_revision(), "0002_drop_accuracy"]
    assert not (tmp_path / "absent.db").exists()
    code, document = env.invoke_json("migrate", "lint", "--alembic-config", ini, "--from", head_revision())
    assert code == 3 and "drop-column" in {f["rule"] for f in document["result"]["findings"]}
