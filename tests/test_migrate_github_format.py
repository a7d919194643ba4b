"""`--format github` for `migrate lint` and `migrate dry-run`: one GitHub workflow command per
counting finding (`::error file=...,line=...,title=...::message`), pointing at the revision
file (relative to the working directory, as GitHub resolves it) and at the line of the
operation that caused it; declared or ignored findings are not annotated; the exit code
is the report's."""

from __future__ import annotations

import re
from pathlib import Path

from backup_helpers import BackupEnv, fill_database
from game_core.schema_state import head_revision

HEAD = head_revision()

# Each operation on its own line; the test reads the expected line numbers from the markers.
SEVERAL = '''"""Several hazards, one per line."""
from alembic import op
import sqlalchemy as sa

revision = "0002_several"
down_revision = "{head}"


def upgrade():
    op.add_column("players", sa.Column("country", sa.String(2)))  # fine
    op.drop_column("results", "accuracy")  # MARK drop-column
    op.execute("UPDATE progress SET level = 1")  # MARK unbounded-data-change
    with op.batch_alter_table("personal_bests") as batch:
        batch.alter_column("mode", type_=sa.String(3), existing_type=sa.String(8))  # MARK type-narrowing
    op.drop_index("ix_results_leaderboard", table_name="results")  # MARK squawk:require-concurrent-index-deletion


def downgrade():
    op.create_index("ix_results_leaderboard", "results", ["mode", "mode_param", "wpm"])
    with op.batch_alter_table("personal_bests") as batch:
        batch.alter_column("mode", type_=sa.String(8), existing_type=sa.String(3))
    op.add_column("results", sa.Column("accuracy", sa.Numeric(5, 2), nullable=True))
    op.drop_column("players", "country")
'''

ANNOTATION = re.compile(r"^::(error|warning|notice) (?P<props>[^:]*)::(?P<message>.*)$")


def project(folder: Path, source: str) -> tuple[Path, Path]:
    from game_core.migrations import MIGRATIONS_DIR

    versions = folder / "migrations" / "versions"
    versions.mkdir(parents=True)
    revision = versions / "0002_several.py"
    revision.write_text(source.replace("{head}", HEAD))
    ini = folder / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {MIGRATIONS_DIR}\npath_separator = space\n"
                   f"version_locations = {MIGRATIONS_DIR / 'versions'} {versions}\n")
    return ini, revision


def marked_lines(revision: Path) -> dict[str, int]:
    return {line.split("# MARK ")[1].strip(): number
            for number, line in enumerate(revision.read_text().splitlines(), start=1) if "# MARK " in line}


def unescape(value: str) -> str:
    """What GitHub reads from a property value."""
    return value.replace("%3A", ":").replace("%2C", ",").replace("%0A", "\n").replace("%0D", "\r").replace("%25", "%")


def annotations(stdout: str) -> list[dict]:
    found = []
    for line in stdout.splitlines():
        match = ANNOTATION.match(line)
        if match:
            props = {key: unescape(value) for key, value in (part.split("=", 1) for part in match["props"].split(","))}
            found.append({"level": match[1], **props, "message": match["message"]})
    return found


def test_lint_annotates_each_finding_at_its_operation(tmp_path):
    env = BackupEnv(tmp_path, f"sqlite:///{tmp_path / 'absent.db'}")
    ini, revision = project(tmp_path, SEVERAL)
    completed = env.run("migrate", "lint", "--alembic-config", str(ini), "--from", HEAD, "--format", "github")
    assert completed.returncode == 3, completed.stdout + completed.stderr
    found = annotations(completed.stdout)
    lines = marked_lines(revision)
    by_rule = {a["title"].split(" ")[0]: a for a in found}
    for rule, line in lines.items():
        assert rule in by_rule, (rule, completed.stdout)
        annotation = by_rule[rule]
        # Relative to the working directory (the subprocess runs in tmp_path), as GitHub expects.
        assert annotation["file"] == "migrations/versions/0002_several.py"
        assert int(annotation["line"]) == line, (rule, annotation)
        assert annotation["title"] == f"{rule} (0002_several)"
    assert by_rule["drop-column"]["level"] == "error"
    assert by_rule["squawk:require-concurrent-index-deletion"]["level"] == "warning"
    assert by_rule["drop-column"]["message"].startswith("results.accuracy: column dropped")
    assert "Fix: copy the values elsewhere first" in by_rule["drop-column"]["message"]
    # The verdict stays a plain log line, last.
    assert completed.stdout.strip().splitlines()[-1].startswith("lint FAILED: ")


def test_a_safe_revision_gives_no_error_annotation_and_exit_0(tmp_path):
    env = BackupEnv(tmp_path, f"sqlite:///{tmp_path / 'absent.db'}")
    safe = SEVERAL.split("def upgrade():")[0] + (
        'def upgrade():\n    op.add_column("players", sa.Column("country", sa.String(2)))\n\n\n'
        'def downgrade():\n    op.drop_column("players", "country")\n'
    )
    ini, _ = project(tmp_path, safe)
    completed = env.run("migrate", "lint", "--alembic-config", str(ini), "--from", HEAD, "--format", "github")
    assert completed.returncode == 0, completed.stdout
    assert [a for a in annotations(completed.stdout) if a["level"] == "error"] == []


def test_declared_findings_are_not_annotated(tmp_path):
    env = BackupEnv(tmp_path, f"sqlite:///{tmp_path / 'absent.db'}")
    declared = SEVERAL + ('\nintegrity = {"irreversible": {"loses": ["results.accuracy"], "reason": "recomputed"},'
                          ' "ignore": [{"rule": "unbounded-data-change", "reason": "levels are rebuilt"}]}\n')
    ini, _ = project(tmp_path, declared)
    completed = env.run("migrate", "lint", "--alembic-config", str(ini), "--from", HEAD, "--format", "github")
    titles = {a["title"].split(" ")[0] for a in annotations(completed.stdout)}
    assert "drop-column" not in titles and "unbounded-data-change" not in titles
    assert "type-narrowing" in titles


def test_properties_and_messages_are_escaped(tmp_path):
    """A `,` in the path or a `:` in the title would split the properties; a `%` or a
    newline in the message the command."""
    env = BackupEnv(tmp_path, f"sqlite:///{tmp_path / 'absent.db'}")
    ini, _ = project(tmp_path / "a,b", SEVERAL)
    completed = env.run("migrate", "lint", "--alembic-config", str(ini), "--from", HEAD, "--format", "github")
    assert "file=a%2Cb/migrations/versions/0002_several.py," in completed.stdout
    assert "title=squawk%3Arequire-concurrent-index-deletion (0002_several)::" in completed.stdout
    assert {a["file"] for a in annotations(completed.stdout)} == {"a,b/migrations/versions/0002_several.py"}
    from integrity.render.migrate import _data

    assert _data("100% done\nnext") == "100%25 done%0Anext"


def test_dry_run_annotates_data_findings_at_the_operation(tmp_path, sqlite_url):
    fill_database(sqlite_url, players=3, results_per_player=4)
    env = BackupEnv(tmp_path, sqlite_url)
    only_drop = SEVERAL.split("def upgrade():")[0] + (
        'def upgrade():\n    op.drop_column("results", "accuracy")  # MARK column-values-lost\n\n\n'
        'def downgrade():\n    op.add_column("results", sa.Column("accuracy", sa.Numeric(5, 2), nullable=True))\n'
    )
    ini, revision = project(tmp_path, only_drop)
    completed = env.run("migrate", "dry-run", "--alembic-config", str(ini), "--from-live", "--format", "github")
    assert completed.returncode == 3, completed.stdout + completed.stderr
    found = {a["title"].split(" ")[0]: a for a in annotations(completed.stdout)}
    line = marked_lines(revision)["column-values-lost"]
    assert int(found["column-values-lost"]["line"]) == line
    assert "[12 rows]" in found["column-values-lost"]["message"]
    assert int(found["drop-column"]["line"]) == line
    assert completed.stdout.strip().splitlines()[-1].startswith("dry run FAILED: ")
