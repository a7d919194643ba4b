"""squawk's PostgreSQL rules in the static pass (integrity.migrate.squawk): its violations on
the SQL Alembic's offline mode renders per revision become `squawk:<rule>` findings with the
revision and table, our own rules for the same hazard win, a revision's `ignore` silences
them, one squawk process serves every revision, and a missing or broken squawk is a warning
that says how to install it, never a crash. The real squawk binary (squawk-cli) runs."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from backup_helpers import BackupEnv, fill_database
from integrity.migrate.project import MigrationProject, MigrationProjectInvalid
from integrity.migrate.squawk import squawk_binary
from integrity.migrate.static_pass import lint_revisions
from test_migrate_static import HEAD, make_project, revision_source

# squawk sees both; neither is one of our rules.
DROP_INDEX = 'op.drop_index("ix_results_leaderboard", table_name="results")'
VALIDATE_IN_SAME_TRANSACTION = (
    'op.create_check_constraint("ck_results_xp", "results", "xp >= 0", postgresql_not_valid=True)\n'
    'op.execute("ALTER TABLE results VALIDATE CONSTRAINT ck_results_xp")'
)
# The safe forms of the same changes.
DROP_INDEX_CONCURRENTLY = (
    'with op.get_context().autocommit_block():\n'
    '    op.drop_index("ix_results_leaderboard", table_name="results", postgresql_concurrently=True)'
)
RECREATE_INDEX = 'op.create_index("ix_results_leaderboard", "results", ["mode", "mode_param", "wpm"])'
VALIDATE_LATER = 'op.create_check_constraint("ck_results_xp", "results", "xp >= 0", postgresql_not_valid=True)'


def lint(tmp_path: Path, upgrade: str, *, extra: str = ""):
    ini = make_project(tmp_path, {"0002_case.py": revision_source("0002_case", HEAD, upgrade, extra=extra)})
    project = MigrationProject.load(ini)
    report = lint_revisions(project, project.pending(HEAD), start_revision=HEAD)
    (revision,) = report.revisions
    return revision


def squawked(revision) -> dict[str, object]:
    return {f.rule: f for f in revision.findings if f.rule.startswith("squawk")}


def test_the_binary_is_found_beside_this_python():
    assert squawk_binary() == str(Path(sys.executable).parent / "squawk")


@pytest.mark.parametrize(("upgrade", "safe", "rule"), [
    (DROP_INDEX, DROP_INDEX_CONCURRENTLY, "squawk:require-concurrent-index-deletion"),
    (VALIDATE_IN_SAME_TRANSACTION, VALIDATE_LATER, "squawk:constraint-missing-not-valid"),
])
def test_squawk_finds_what_our_rules_do_not_and_the_safe_form_passes(tmp_path, upgrade, safe, rule):
    found = squawked(lint(tmp_path / "dangerous", upgrade))
    assert rule in found, found
    finding = found[rule]
    assert finding.revision == "0002_case" and finding.severity.value == "warning" and finding.phase == "static"
    assert "Fix:" in finding.message  # squawk's help travels with it
    if rule == "squawk:constraint-missing-not-valid":
        assert finding.table == "results" and "VALIDATE CONSTRAINT ck_results_xp" in finding.message
    assert squawked(lint(tmp_path / "safe", safe)) == {}


def test_the_downgrade_is_checked_with_the_same_rules(tmp_path):
    ini = make_project(tmp_path, {"0002_case.py": revision_source(
        "0002_case", HEAD, 'op.create_index("ix_results_xp", "results", ["xp"], postgresql_concurrently=True)',
        'op.drop_index("ix_results_xp", table_name="results")')})
    project = MigrationProject.load(ini)
    (revision,) = lint_revisions(project, project.pending(HEAD), start_revision=HEAD).revisions
    (finding,) = [f for f in revision.findings if f.rule == "squawk:require-concurrent-index-deletion"]
    assert finding.message.startswith("downgrade: ") and "DROP INDEX ix_results_xp" in finding.message


def test_our_rule_for_the_same_hazard_wins_and_offline_artefacts_are_not_reported(tmp_path):
    # Ours knows the table holds rows and (in a dry run) measures the lock: squawk's twin is dropped.
    revision = lint(tmp_path / "one", 'op.create_check_constraint("ck_xp", "results", "xp >= 0")\n'
                                      'op.create_index("ix_results_xp", "results", ["xp"])')
    rules = {f.rule for f in revision.findings}
    assert {"pg-constraint-validated", "pg-index-not-concurrent"} <= rules
    assert not {"squawk:constraint-missing-not-valid", "squawk:adding-foreign-key-constraint",
                "squawk:require-concurrent-index-creation"} & rules
    # A binary-coercible widening rewrites nothing: squawk's changing-column-type would say it does.
    widened = lint(tmp_path / "two", 'op.alter_column("players", "username", type_=sa.String(64), existing_type=sa.String(32))')
    assert squawked(widened) == {}
    # The connect hook sets lock_timeout and statement_timeout; autocommit_block's COMMIT/BEGIN is the pattern.
    assert squawked(lint(tmp_path / "three", DROP_INDEX_CONCURRENTLY)) == {}


def test_an_ignore_declaration_silences_a_squawk_rule(tmp_path):
    extra = 'integrity = {"ignore": [{"rule": "squawk:require-concurrent-index-deletion", "reason": "the table is tiny"}]}'
    ini = make_project(tmp_path, {"0002_case.py": revision_source("0002_case", HEAD, DROP_INDEX, extra=extra)})
    env = BackupEnv(tmp_path, f"sqlite:///{tmp_path / 'absent.db'}")
    code, document = env.invoke_json("migrate", "lint", "--alembic-config", str(ini), "--from", HEAD, "--fail-on", "warning")
    assert code == 0, document
    (finding,) = [f for f in document["result"]["findings"] if f["rule"] == "squawk:require-concurrent-index-deletion"]
    assert finding["ignored_by"] == "the table is tiny"
    # Without the declaration the same lint fails on the warning.
    plain = make_project(tmp_path / "plain", {"0002_case.py": revision_source("0002_case", HEAD, DROP_INDEX)})
    assert env.invoke_json("migrate", "lint", "--alembic-config", str(plain), "--from", HEAD, "--fail-on", "warning")[0] == 3


def test_an_ignore_of_a_malformed_squawk_id_is_refused(tmp_path):
    extra = 'integrity = {"ignore": [{"rule": "squawk:Not A Rule", "reason": "x"}]}'
    ini = make_project(tmp_path, {"0002_case.py": revision_source("0002_case", HEAD, DROP_INDEX, extra=extra)})
    with pytest.raises(MigrationProjectInvalid, match="does not exist"):
        MigrationProject.load(ini)


def test_squawk_findings_count_only_where_the_engine_is_postgresql(tmp_path, database_url):
    """lint and dry-run against the configured database: squawk's findings on PostgreSQL,
    none on SQLite (its SQL is PostgreSQL's); without a database both engines' count."""
    fill_database(database_url, players=3, results_per_player=4)
    env = BackupEnv(tmp_path, database_url)
    ini = str(make_project(tmp_path / "project", {"0002_case.py": revision_source("0002_case", HEAD, DROP_INDEX, RECREATE_INDEX)}))
    on_postgresql = database_url.startswith("postgresql")
    code, document = env.invoke_json("migrate", "lint", "--alembic-config", ini)
    assert code == 0, document
    rules = {f["rule"] for f in document["result"]["findings"]}
    assert ("squawk:require-concurrent-index-deletion" in rules) == on_postgresql
    code, document = env.invoke_json("migrate", "dry-run", "--alembic-config", ini, "--from-live")
    assert code == 0, document
    rules = {f["rule"] for f in document["result"]["findings"]}
    assert ("squawk:require-concurrent-index-deletion" in rules) == on_postgresql
    detached = BackupEnv(tmp_path / "ci", f"sqlite:///{tmp_path / 'absent.db'}")
    code, document = detached.invoke_json("migrate", "lint", "--alembic-config", ini, "--from", HEAD)
    assert "squawk:require-concurrent-index-deletion" in {f["rule"] for f in document["result"]["findings"]}


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def test_one_squawk_process_serves_every_revision(tmp_path, monkeypatch):
    """A wrapper on PATH logs each call and runs the real binary."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    real = squawk_binary()
    _executable(bin_dir / "squawk", f'#!/bin/sh\necho "$#" >> {log}\nexec {real} "$@"\n')
    monkeypatch.setattr(sys, "executable", str(tmp_path / "elsewhere" / "python"))  # nothing beside it
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    revisions, down = {}, HEAD
    for number in range(2, 5):
        rev_id = f"000{number}_step"
        revisions[f"{rev_id}.py"] = revision_source(rev_id, down, f'op.drop_index("ix_{number}", table_name="results")')
        down = rev_id
    project = MigrationProject.load(make_project(tmp_path / "project", revisions))
    report = lint_revisions(project, project.pending(HEAD), start_revision=HEAD)
    calls = log.read_text().split()
    assert len(calls) == 1, calls
    assert {r.revision for r in report.revisions if "squawk:require-concurrent-index-deletion" in squawked(r)} == {
        "0002_step", "0003_step", "0004_step"}


@pytest.mark.parametrize("broken", [None, "#!/bin/sh\necho 'thread main panicked' >&2\nexit 2\n"])
def test_a_missing_or_broken_squawk_is_a_warning_that_says_how_to_install_it(tmp_path, monkeypatch, broken):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if broken:
        _executable(bin_dir / "squawk", broken)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "elsewhere" / "python"))
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + "/usr/bin" + os.pathsep + "/bin")
    revision = lint(tmp_path, DROP_INDEX)
    found = squawked(revision)
    assert set(found) == {"squawk-unavailable"}
    finding = found["squawk-unavailable"]
    assert finding.severity.value == "warning" and "typing-game-integrity[squawk]" in finding.message
    assert ("not installed" in finding.message) == (broken is None)
    if broken:
        assert "without a JSON report" in finding.message and "panicked" in finding.message
