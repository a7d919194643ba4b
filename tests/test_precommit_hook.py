"""The pre-commit hook of .pre-commit-hooks.yaml, run the way a user first tries it:
`pre-commit try-repo <this repository> integrity-migrate-lint --files ...` inside a scratch
git repository set up like a user's project (alembic.ini at the root, migrations/ with the
game's env.py and history, a new revision in migrations/versions/). The hook is
`language: system`: pre-commit builds no environment (no network) and runs the installed
`integrity`, which finds the project's alembic.ini from the revision files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HOOK = "integrity-migrate-lint"

DROP_ACCURACY = '''"""Drop results.accuracy."""
from alembic import op
import sqlalchemy as sa

revision = "0002_drop_accuracy"
down_revision = "0001_initial_schema"


def upgrade():
    op.drop_column("results", "accuracy")


def downgrade():
    op.add_column("results", sa.Column("accuracy", sa.Numeric(5, 2), nullable=True))
'''

ADD_COUNTRY = '''"""Add a nullable country."""
from alembic import op
import sqlalchemy as sa

revision = "0002_country"
down_revision = "0001_initial_schema"


def upgrade():
    op.add_column("players", sa.Column("country", sa.String(2)))


def downgrade():
    op.drop_column("players", "country")
'''


def git(project: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=project, check=True, capture_output=True, env=environment(project))


def environment(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTEGRITY_", "PRE_COMMIT", "GIT_"))}
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        "PRE_COMMIT_HOME": str(project.parent / "pre-commit-home"),
        "XDG_DATA_HOME": str(project.parent / "xdg-data"),  # the ledger of the hook's lint runs
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "COLUMNS": "200",
    })
    return env


@pytest.fixture
def project(tmp_path) -> Path:
    """A user's project: alembic.ini at the root, migrations/ with the game's env.py and
    first revision, a README; one git commit."""
    from game_core.migrations import MIGRATIONS_DIR

    root = tmp_path / "project"
    shutil.copytree(MIGRATIONS_DIR, root / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "alembic.ini").write_text("[alembic]\nscript_location = migrations\n")
    (root / "README.md").write_text("# a project\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "start")
    return root


def try_repo(project: Path, *files: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["pre-commit", "try-repo", str(REPOSITORY), HOOK, "--files", *files],
        cwd=project, env=environment(project), capture_output=True, text=True, timeout=60,
    )


def test_a_revision_that_loses_data_fails_the_commit(project):
    (project / "migrations" / "versions" / "0002_drop_accuracy.py").write_text(DROP_ACCURACY)
    git(project, "add", ".")
    completed = try_repo(project, "migrations/versions/0002_drop_accuracy.py")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output
    assert "Failed" in output and "exit code: 3" in output
    assert "drop-column" in output and "results.accuracy: column dropped" in output
    assert f"{project / 'alembic.ini'}: 0001_initial_schema -> 0002_drop_accuracy" in output
    # language: system: no environment was built for the hook.
    assert "Installing environment" not in output
    assert not list((project.parent / "pre-commit-home").glob("repo*/py_env-*"))


def test_a_safe_revision_passes_and_other_files_are_skipped(project):
    (project / "migrations" / "versions" / "0002_country.py").write_text(ADD_COUNTRY)
    git(project, "add", ".")
    completed = try_repo(project, "migrations/versions/0002_country.py", "README.md")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "Passed" in output


def test_a_commit_without_revision_files_skips_the_hook(project):
    skipped = try_repo(project, "README.md")
    assert skipped.returncode == 0 and "Skipped" in skipped.stdout + skipped.stderr


# ---------------------------------------------------------------- lint REVISION_FILE... itself


def lint(project: Path, *args: str, json_output: bool = False):
    from backup_helpers import BackupEnv

    env = BackupEnv(project.parent, f"sqlite:///{project.parent / 'absent.db'}")
    return env.run(*(["--json"] if json_output else []), "migrate", "lint", *args)


def test_lint_of_files_judges_them_against_the_schema_before_them(project):
    """From base every table would be new (nothing to lose): the files' lint starts at the
    parent of the earliest, so dropping a column of an existing table is an error, and the
    project is found from the file without --alembic-config."""
    revision = project / "migrations" / "versions" / "0002_drop_accuracy.py"
    revision.write_text(DROP_ACCURACY)
    completed = lint(project, str(revision), str(project / "README.md"), json_output=True)
    assert completed.returncode == 3, completed.stdout
    result = json.loads(completed.stdout)["result"]
    assert result["start_revision"] == "0001_initial_schema"
    assert [r["id"] for r in result["revisions"]] == ["0002_drop_accuracy"]
    assert {f["rule"] for f in result["findings"]} >= {"drop-column"}


def test_lint_of_files_that_are_not_revisions_says_so(project):
    completed = lint(project, str(project / "README.md"))
    assert completed.returncode == 0
    assert "no revision of" in completed.stdout and "among the 1 file(s) given" in completed.stdout


def test_lint_of_files_with_from_is_a_usage_error(project):
    from backup_helpers import one_error

    revision = project / "migrations" / "versions" / "0002_country.py"
    revision.write_text(ADD_COUNTRY)
    completed = lint(project, "--from", "0001_initial_schema", str(revision))
    assert completed.returncode == 2
    assert one_error(completed) == ("give revision files or --from/--to, not both: files lint exactly those "
                                    "revisions and the schema before them")
