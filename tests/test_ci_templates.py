"""The CI templates' shell, run locally: ci/migration-check.sh (what the GitHub Action and the
GitLab job both run) on a real store's snapshot (a populated SQLite file) in a scratch git
repository set up like a user's project, with a failing and a passing revision on a branch;
then the action's own shell steps and the GitLab job's script lines as the runners would
run them (a check step that records the exit code, a last step that fails the job on it)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from backup_helpers import fill_database
from test_precommit_hook import ADD_COUNTRY, DROP_ACCURACY

REPOSITORY = Path(__file__).resolve().parents[1]
SCRIPT = REPOSITORY / "ci" / "migration-check.sh"
ACTION = REPOSITORY / "ci" / "github" / "action.yml"
GITLAB = REPOSITORY / "ci" / "gitlab" / "integrity-migrations.yml"
BIN = Path(sys.executable).parent
DROP_LINE = DROP_ACCURACY.splitlines().index('    op.drop_column("results", "accuracy")') + 1


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory, sqlite_template) -> Path:
    """A snapshot of a real store: the game's schema and 5 players' results (60 rows)."""
    path = tmp_path_factory.mktemp("snapshot") / "snapshot.db"
    shutil.copyfile(sqlite_template, path)
    fill_database(f"sqlite:///{path}", players=5, results_per_player=12)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def environment(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("INTEGRITY_", "MIGRATION_", "GITHUB_", "GIT_", "CI_"))}
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        "XDG_DATA_HOME": str(root.parent / "xdg-data"),
        # A CI job has no database of its own: nothing at this path is ever created.
        "INTEGRITY_DATABASE_URL": f"sqlite:///{root.parent / 'no-database.db'}",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "COLUMNS": "200",
    })
    env.update(extra)
    return env


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, env=environment(root))


def user_project(tmp_path: Path, revision: tuple[str, str] | None) -> Path:
    """main: alembic.ini and the game's history; a branch commit adds `revision` (file, text)."""
    from game_core.migrations import MIGRATIONS_DIR

    root = tmp_path / "project"
    shutil.copytree(MIGRATIONS_DIR, root / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "alembic.ini").write_text("[alembic]\nscript_location = migrations\n")
    (root / "README.md").write_text("# a project\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "main")
    git(root, "checkout", "-q", "-b", "change")
    if revision is not None:
        name, text = revision
        (root / "migrations" / "versions" / name).write_text(text)
    else:
        (root / "README.md").write_text("# a project, edited\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "change")
    return root


def check(root: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT)], cwd=root, env=environment(root, **extra),
                          capture_output=True, text=True, timeout=120)


def outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_a_failing_revision_fails_with_annotations_and_a_markdown_report(tmp_path, snapshot):
    before = digest(snapshot)
    root = user_project(tmp_path, ("0002_drop_accuracy.py", DROP_ACCURACY))
    github_output, summary = tmp_path / "github-output", tmp_path / "summary.md"
    completed = check(root, GITHUB_ACTIONS="true", MIGRATION_BASE_REF="main", MIGRATION_SOURCE=f"--snapshot {snapshot}",
                      MIGRATION_REPORT="out/migration-report.md", GITHUB_OUTPUT=str(github_output),
                      GITHUB_STEP_SUMMARY=str(summary))
    assert completed.returncode == 3, completed.stdout + completed.stderr
    assert (f"::error file=migrations/versions/0002_drop_accuracy.py,line={DROP_LINE},"
            "title=drop-column (0002_drop_accuracy)::results.accuracy: column dropped") in completed.stdout
    report = (root / "out" / "migration-report.md").read_text()
    assert report.startswith("### ❌ Migration dry run: 0001_initial_schema → 0002_drop_accuracy")
    assert re.search(r"\| error \| `column-values-lost` \| `0002_drop_accuracy` \| .* \| 60 \|", report)
    assert f"Source: snapshot {snapshot}" in report
    assert summary.read_text() == report
    assert outputs(github_output) == {"exit-code": "3", "report": "out/migration-report.md"}
    assert "lint exit 3, dry run exit 3: exit 3" in completed.stdout
    assert digest(snapshot) == before  # the snapshot is only read
    assert not (tmp_path / "no-database.db").exists()


def test_a_passing_revision_passes_with_text_output_outside_github(tmp_path, snapshot):
    root = user_project(tmp_path, ("0002_country.py", ADD_COUNTRY))
    completed = check(root, MIGRATION_BASE_REF="main", MIGRATION_SOURCE=f"--snapshot {snapshot}")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "::error" not in completed.stdout and "lint passed: 0 errors" in completed.stdout
    report = (root / "migration-report.md").read_text()
    assert report.startswith("### ✅ Migration dry run: 0001_initial_schema → 0002_country")
    assert "dry run passed: 0 errors" in report


def test_a_change_without_revisions_passes_and_says_so(tmp_path, snapshot):
    root = user_project(tmp_path, None)
    completed = check(root, MIGRATION_BASE_REF="main")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "No revision file added or modified since `main`." in (root / "migration-report.md").read_text()


def test_without_a_source_the_report_is_the_lint(tmp_path):
    root = user_project(tmp_path, ("0002_drop_accuracy.py", DROP_ACCURACY))
    completed = check(root, MIGRATION_BASE_REF="main")
    assert completed.returncode == 3, completed.stdout + completed.stderr
    report = (root / "migration-report.md").read_text()
    assert "lint FAILED: 1 errors" in report and "`drop-column`" in report


def test_a_dry_run_that_cannot_run_is_exit_4_and_the_report_says_why(tmp_path):
    root = user_project(tmp_path, ("0002_country.py", ADD_COUNTRY))
    missing = tmp_path / "missing.db"
    completed = check(root, MIGRATION_BASE_REF="main", MIGRATION_SOURCE=f"--snapshot {missing}")
    assert completed.returncode == 4, completed.stdout + completed.stderr
    report = (root / "migration-report.md").read_text()
    assert report.startswith("### ⚠️ Migration dry run could not run (exit 4)")
    assert "Error: " in report and str(missing) in report


def test_a_base_ref_git_does_not_have_is_exit_4_naming_the_fix(tmp_path):
    root = user_project(tmp_path, ("0002_country.py", ADD_COUNTRY))
    completed = check(root, MIGRATION_BASE_REF="origin/main")
    assert completed.returncode == 4
    assert "Error: git cannot compare with MIGRATION_BASE_REF=origin/main" in completed.stderr
    assert "fetch-depth: 0" in completed.stderr


# ---------------------------------------------------------------- the templates' own steps


def action_steps() -> list[dict]:
    return yaml.safe_load(ACTION.read_text())["runs"]["steps"]


def test_the_action_keeps_expressions_out_of_its_scripts_and_names_only_its_inputs():
    action = yaml.safe_load(ACTION.read_text())
    assert action["runs"]["using"] == "composite"
    for step in action["runs"]["steps"]:
        assert "${{" not in step["run"], step["name"]  # inputs reach scripts through env only
        assert step["shell"] == "bash"
        for value in step.get("env", {}).values():
            for name in re.findall(r"inputs\.([\w-]+)", str(value)):
                assert name in action["inputs"], name


@pytest.mark.parametrize(("revision", "expected"), [
    (("0002_drop_accuracy.py", DROP_ACCURACY), 3),
    (("0002_country.py", ADD_COUNTRY), 0),
])
def test_the_action_steps_record_the_exit_code_and_fail_the_job_on_it(tmp_path, revision, expected):
    """The check step (continue-on-error) writes exit-code to GITHUB_OUTPUT; the last step
    exits with it. Run as the runner does: each `run` in bash with the step's env (the
    dry run itself is tested above: here the source is left empty, lint only)."""
    root = user_project(tmp_path, revision)
    check_step, _comment, fail_step = action_steps()
    github_output = tmp_path / "github-output"
    env = environment(root, GITHUB_ACTIONS="true", GITHUB_OUTPUT=str(github_output),
                      INTEGRITY="integrity", MIGRATION_ALEMBIC_CONFIG="", MIGRATION_SOURCE="",
                      MIGRATION_REPORT="migration-report.md", MIGRATION_FAIL_ON="error", MIGRATION_BASE_REF="main",
                      CHECK_SCRIPT=str(REPOSITORY / "ci" / "github" / ".." / "migration-check.sh"))
    assert set(check_step["env"]) <= set(env)
    checked = subprocess.run(["bash", "-e", "-c", check_step["run"]], cwd=root, env=env, capture_output=True, text=True)
    assert checked.returncode == expected, checked.stdout + checked.stderr
    code = outputs(github_output)["exit-code"]
    assert code == str(expected)
    failed = subprocess.run(["bash", "-e", "-c", fail_step["run"]], cwd=root,
                            env=environment(root, EXIT_CODE=code), capture_output=True, text=True)
    assert failed.returncode == expected
    assert ("::error title=integrity migration check::exit 3" in failed.stdout) == (expected == 3)
    # A check step that broke before writing its output fails the job too.
    broke = subprocess.run(["bash", "-e", "-c", fail_step["run"]], cwd=root, env=environment(root),
                           capture_output=True, text=True)
    assert broke.returncode == 4


@pytest.mark.parametrize(("revision", "expected"), [
    (("0002_drop_accuracy.py", DROP_ACCURACY), 3),
    (("0002_country.py", ADD_COUNTRY), 0),
])
def test_the_gitlab_job_script_exits_with_the_check(tmp_path, revision, expected):
    """GitLab runs a job's script lines in one shell; without a token nothing is posted
    (lint only, as above)."""
    job = yaml.safe_load(GITLAB.read_text())[".integrity-migrations"]
    root = user_project(tmp_path, revision)
    env = environment(root, MIGRATION_CHECK_SCRIPT=str(SCRIPT), MIGRATION_REPORT="migration-report.md",
                      MIGRATION_BASE_REF="main")
    assert set(job["variables"]) <= set(env) | {"GIT_DEPTH"}
    completed = subprocess.run(["bash", "-e", "-c", "\n".join(job["script"])], cwd=root, env=env,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == expected, completed.stdout + completed.stderr
    assert (root / "migration-report.md").exists()
    assert job["artifacts"]["when"] == "always" and "$MIGRATION_REPORT" in job["artifacts"]["paths"]


# ---------------------------------------------------------------- the comment steps, against a fake API


class FakeForge:
    """A stand-in for the GitHub REST API (issue comments) and GitLab's (merge-request
    notes) on 127.0.0.1: it keeps the comments and records every request."""

    def __init__(self, refuse_writes: int | None = None):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        forge = self
        self.requests: list[dict] = []
        self.comments: dict[int, dict] = {}
        self.refuse_writes = refuse_writes

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                forge.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                       "body": body})
                status, document = forge.answer(self.command, self.path, body)
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, method: str, path: str, body: str) -> tuple[int, object]:
        if method != "GET" and self.refuse_writes:
            return self.refuse_writes, {"message": "Resource not accessible by integration"}
        if method == "GET" and path.startswith("/repos/owner/project/issues/7/comments?"):
            return 200, list(self.comments.values())
        if method == "POST" and path == "/repos/owner/project/issues/7/comments":
            number = len(self.comments) + 1
            self.comments[number] = {"id": number, "url": f"{self.url}/repos/owner/project/issues/comments/{number}",
                                     "body": json.loads(body)["body"]}
            return 201, self.comments[number]
        if method == "PATCH" and path.startswith("/repos/owner/project/issues/comments/"):
            number = int(path.rsplit("/", 1)[1])
            self.comments[number]["body"] = json.loads(body)["body"]
            return 200, self.comments[number]
        if method == "POST" and path == "/api/v4/projects/42/merge_requests/5/notes":
            return 201, {"id": 1}
        return 404, {"message": "Not Found"}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def forge():
    server = FakeForge()
    yield server
    server.close()


def _failing_check_on_github(tmp_path) -> tuple[Path, str]:
    """The action's check step on a failing revision (lint only): the project and the exit code."""
    root = user_project(tmp_path, ("0002_drop_accuracy.py", DROP_ACCURACY))
    check_step = action_steps()[0]
    github_output = tmp_path / "github-output"
    env = environment(root, GITHUB_ACTIONS="true", GITHUB_OUTPUT=str(github_output), INTEGRITY="integrity",
                      MIGRATION_REPORT="migration-report.md", MIGRATION_BASE_REF="main", CHECK_SCRIPT=str(SCRIPT))
    checked = subprocess.run(["bash", "-e", "-c", check_step["run"]], cwd=root, env=env, capture_output=True, text=True)
    assert checked.returncode == 3, checked.stdout + checked.stderr
    return root, outputs(github_output)["exit-code"]


def _comment_step(root: Path, api: str, **extra: str) -> subprocess.CompletedProcess:
    step = action_steps()[1]
    env = environment(root, **{"GH_TOKEN": "ghs_fake_token", "PR_NUMBER": "7", "REPORT": "migration-report.md",
                               "POST_SCRIPT": str(REPOSITORY / "ci" / "github" / "post-comment.py"),
                               "GITHUB_API_URL": api, "GITHUB_REPOSITORY": "owner/project", **extra})
    assert set(step["env"]) <= set(env)
    return subprocess.run(["bash", "-e", "-c", step["run"]], cwd=root, env=env, capture_output=True, text=True, timeout=60)


def test_the_action_posts_the_report_as_one_comment_edited_on_each_push_and_fails_on_exit_3(tmp_path, forge):
    root, code = _failing_check_on_github(tmp_path)
    report = (root / "migration-report.md").read_text()
    assert "lint FAILED" in report

    first = _comment_step(root, forge.url)
    assert first.returncode == 0, first.stdout + first.stderr
    posts = [r for r in forge.requests if r["method"] == "POST"]
    assert len(posts) == 1 and posts[0]["path"] == "/repos/owner/project/issues/7/comments"
    assert posts[0]["headers"]["Authorization"] == "Bearer ghs_fake_token"
    body = json.loads(posts[0]["body"])["body"]
    assert body.startswith(report.rstrip()) and body.rstrip().endswith("<!-- integrity migration check -->")

    second = _comment_step(root, forge.url)  # the next push: the same comment, edited
    assert second.returncode == 0, second.stdout + second.stderr
    assert [r["method"] for r in forge.requests if r["method"] != "GET"] == ["POST", "PATCH"]
    assert len(forge.comments) == 1 and forge.comments[1]["body"] == body

    failed = subprocess.run(["bash", "-e", "-c", action_steps()[2]["run"]], cwd=root,
                            env=environment(root, EXIT_CODE=code), capture_output=True, text=True)
    assert failed.returncode == 3


def test_a_comment_the_token_may_not_post_is_a_warning_not_a_failure(tmp_path):
    """A pull request from a fork gets a read-only token: the job's verdict stays the check's."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "migration-report.md").write_text("### ✅ Migration dry run\n")
    refusing = FakeForge(refuse_writes=403)
    try:
        completed = _comment_step(root, refusing.url)
    finally:
        refusing.close()
    assert completed.returncode == 0, completed.stderr
    assert "::warning title=integrity migration check::could not post the report on the pull request (HTTP 403" in completed.stdout
    missing = _comment_step(root, "http://127.0.0.1:9", GH_TOKEN="")
    assert missing.returncode == 2 and missing.stderr.startswith("Error: GH_TOKEN not set")


def test_the_gitlab_job_posts_the_report_as_a_merge_request_note_and_fails_on_exit_3(tmp_path, forge):
    from urllib.parse import parse_qs

    job = yaml.safe_load(GITLAB.read_text())[".integrity-migrations"]
    root = user_project(tmp_path, ("0002_drop_accuracy.py", DROP_ACCURACY))
    env = environment(root, MIGRATION_CHECK_SCRIPT=str(SCRIPT), MIGRATION_REPORT="migration-report.md",
                      MIGRATION_BASE_REF="main", INTEGRITY_GITLAB_TOKEN="glpat-fake", CI_MERGE_REQUEST_IID="5",
                      CI_PROJECT_ID="42", CI_API_V4_URL=f"{forge.url}/api/v4")
    completed = subprocess.run(["bash", "-e", "-c", "\n".join(job["script"])], cwd=root, env=env,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 3, completed.stdout + completed.stderr
    (note,) = forge.requests
    assert (note["method"], note["path"]) == ("POST", "/api/v4/projects/42/merge_requests/5/notes")
    assert note["headers"]["PRIVATE-TOKEN"] == "glpat-fake"
    assert parse_qs(note["body"])["body"] == [(root / "migration-report.md").read_text()]
