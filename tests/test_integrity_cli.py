"""The `integrity` CLI skeleton: init, status, history, the global options, `--json`,
the ledger record of every run, and one clear `Error:` line with the documented exit
code for every bad input. Most tests run the app in process (typer's CliRunner); a few
run the real console script and `python -m integrity.cli` as subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from cli_runner import CliRunner
from game_core.db import create_engine
from game_core.schema_state import SchemaState, schema_status
from integrity.cli import app
from integrity.settings import starter_toml

HEAD = "0001_initial_schema"
MISSING_HINT = "run `integrity init` (or `typing-game play`) to create it, or point --database-url at the right file"
MALFORMED_HINT = "expected sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
SECRET = "s3cr3tpw"
UNREACHABLE_WITH_SECRET = f"postgresql://u:{SECRET}@127.0.0.1:1/x"

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    # rich wraps tables at 80 columns when not on a TTY; tmp paths are longer than that
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "xdg-data" / "typing-game"


@pytest.fixture
def game_db(data_dir) -> Path:
    return data_dir / "game.db"


def invoke(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False, prog_name="integrity")
    assert "Traceback" not in result.output
    return result


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


def the_error(result) -> str:
    """The one `Error:` line, without its prefix; fails unless there is exactly one."""
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    return lines[0].removeprefix("Error: ")


def document(result) -> dict:
    """stdout must be exactly one JSON document."""
    return json.loads(result.stdout)


WORST_FIRST = (("failed", 5), ("precondition", 4), ("problem", 3), ("ok", 0))


def checks_of(doc: dict) -> dict[str, dict]:
    return {check["name"]: check for check in doc["result"]["checks"]}


def assert_database_current(doc: dict) -> None:
    """database and schema ok, and the exit code is the worst of all checks. Status grows
    checks with each issue (backups, audits, ...); these tests make no backups, so those
    may report problems (3) but must not fail the run (4, 5) on a healthy database."""
    checks = checks_of(doc)
    assert checks["database"]["state"] == "ok"
    assert checks["schema"] == {"name": "schema", "state": "ok",
                                "detail": f"at head {HEAD}; columns match the model of {HEAD}, every revision checked on this store"}
    states = {check["state"] for check in checks.values()}
    assert states <= {"ok", "problem"}, checks
    assert doc["exit_code"] == next(code for state, code in WORST_FIRST if state in states)
    assert "error" not in doc


def history(*args: str) -> list[dict]:
    result = invoke("--json", "history", "--limit", "100", *args)
    assert result.exit_code == 0, result.output
    return document(result)["result"]["runs"]


def finished_runs(*args: str) -> list[dict]:
    return [run for run in history(*args) if run["command"] != "history"]


def all_file_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


@pytest.fixture
def initialized(data_dir, game_db):
    result = invoke("init")
    assert result.exit_code == 0, result.output
    return game_db


# ---------------------------------------------------------------- init


def test_init_on_a_fresh_data_dir_writes_config_state_repository_and_schema(data_dir, game_db):
    assert not data_dir.exists()
    result = invoke("init")
    assert result.exit_code == 0, result.output
    config = data_dir / "integrity.toml"
    assert config.read_text() == starter_toml()
    assert (data_dir / "state").is_dir()
    assert (data_dir / "state" / "ledger.db").is_file()
    assert (data_dir / "backups").is_dir()
    engine = create_engine(str(game_db), read_only=True)
    with engine.connect() as connection:
        status = schema_status(connection)
    engine.dispose()
    assert (status.state, status.revision) == (SchemaState.CURRENT, HEAD)
    assert result.stdout.splitlines() == [
        f"config      {config} (written)",
        f"state dir   {data_dir / 'state'}",
        f"repository  {data_dir / 'backups'}",
        f"database    {game_db}",
        "schema      created",
    ]
    assert result.stderr == f"database: {game_db}  config: none (defaults)\n"


def test_init_twice_is_idempotent_and_keeps_the_config(data_dir, initialized):
    config = data_dir / "integrity.toml"
    edited = config.read_text().replace("keep_last = 7", "keep_last = 3") + "# the operator's note\n"
    config.write_text(edited)
    result = invoke("--json", "init")
    assert result.exit_code == 0, result.output
    assert config.read_text() == edited
    out = document(result)["result"]
    assert out["config_written"] is False
    assert out["schema_created"] is False
    assert out["schema"] == f"at head {HEAD}"
    assert out["schema_state"] == "current"
    text = invoke("init")
    assert text.exit_code == 0
    assert f"config      {config} (kept (already there))" in text.stdout
    assert f"schema      at head {HEAD}" in text.stdout


def test_init_with_config_option_writes_that_file_and_later_runs_read_it(tmp_path, data_dir):
    result = invoke("--config", "custom.toml", "init")  # cwd is tmp_path
    assert result.exit_code == 0, result.output
    assert (tmp_path / "custom.toml").read_text() == starter_toml()
    assert not (data_dir / "integrity.toml").exists()
    status = invoke("--json", "--config", "custom.toml", "status")
    doc = document(status)
    assert_database_current(doc)
    assert status.exit_code == doc["exit_code"]
    assert doc["config"] == str(tmp_path / "custom.toml")


def test_init_records_the_database_url_given_without_a_password(tmp_path, data_dir):
    other = tmp_path / "elsewhere" / "other.db"
    result = invoke("--database-url", f"sqlite:///{other}", "init")
    assert result.exit_code == 0, result.output
    assert other.is_file()
    assert f'url = "sqlite:///{other}"' in (data_dir / "integrity.toml").read_text()
    later = document(invoke("--json", "status"))  # no flag: the config now names the database
    assert later["result"]["database"] == str(other)
    assert_database_current(later)


def test_init_on_an_unreachable_server_is_exit_4_and_writes_no_password(data_dir):
    result = invoke("--database-url", UNREACHABLE_WITH_SECRET, "init")
    assert result.exit_code == 4
    assert the_error(result).startswith("cannot connect to postgresql+psycopg://u:***@127.0.0.1:1/x: ")
    assert SECRET not in result.output
    assert SECRET.encode() not in all_file_bytes(data_dir)


@pytest.mark.postgres
def test_init_with_a_password_in_the_url_keeps_it_out_of_config_output_and_ledger(pg_empty_url, data_dir):
    # the server trusts local connections, so the password is accepted and ignored
    with_password = sa.make_url(pg_empty_url).set(password=SECRET).render_as_string(hide_password=False)
    result = invoke("--database-url", with_password, "init")
    assert result.exit_code == 0, result.output
    config = (data_dir / "integrity.toml").read_text()
    assert 'url = ""' in config  # secrets belong in the environment, not in the file
    assert SECRET not in result.output
    doc = document(invoke("--json", "--database-url", with_password, "status"))
    assert_database_current(doc)
    assert doc["database"].startswith(f"postgresql+psycopg://postgres:***@127.0.0.1:{sa.make_url(pg_empty_url).port}/")
    assert SECRET not in json.dumps(doc) and SECRET not in json.dumps(history())
    assert SECRET.encode() not in all_file_bytes(data_dir)


@pytest.mark.postgres
def test_init_on_an_empty_postgresql_database_creates_the_schema(pg_empty_url):
    result = invoke("--database-url", pg_empty_url, "init")
    assert result.exit_code == 0, result.output
    assert "schema      created" in result.stdout
    engine = create_engine(pg_empty_url, read_only=True)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == HEAD
        assert connection.execute(sa.text("SELECT COUNT(*) FROM store_identity")).scalar() == 1
    engine.dispose()
    status = document(invoke("--json", "--database-url", pg_empty_url, "status"))
    assert_database_current(status)
    assert status["result"]["engine"] == "postgresql"
    again = invoke("--json", "--database-url", pg_empty_url, "init")
    assert again.exit_code == 0 and document(again)["result"]["schema_created"] is False


def test_init_leaves_a_database_behind_head_alone_and_says_so(sqlite_url, sqlite_path, newer_history):
    result = invoke("--json", "--database-url", sqlite_url, "init")
    assert result.exit_code == 3
    assert document(result)["result"]["schema"] == f"at {HEAD}, behind head 0002_next"
    engine = create_engine(sqlite_url, read_only=True)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == HEAD
    engine.dispose()


def test_init_refuses_a_database_of_something_else(tmp_path):
    foreign = tmp_path / "foreign.db"
    engine = create_engine(str(foreign), create_missing=True)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE invoices (id INTEGER)"))
    engine.dispose()
    result = invoke("--database-url", str(foreign), "init")
    assert result.exit_code == 4
    assert the_error(result) == (
        f"database {foreign} holds tables but no Alembic revision (this code's head is {HEAD}): it is not "
        "the game's database; point --database-url at the game's database"
    )  # integrity.guarded's refusal, shared by every command that reads it (tests/test_revision_guard.py)


# ---------------------------------------------------------------- status


def test_status_on_a_missing_database_is_exit_4_naming_the_path_and_creates_nothing(data_dir, game_db):
    result = invoke("status")
    assert result.exit_code == 4
    assert the_error(result) == f"database {game_db} does not exist; {MISSING_HINT}"
    assert "exit code 4" in result.stdout
    assert not game_db.exists()
    assert sorted(p.name for p in data_dir.iterdir()) == ["state"]  # only the tool's own ledger


def test_status_on_a_missing_database_given_by_flag_creates_no_directory(tmp_path):
    missing = tmp_path / "no-such-dir" / "game.db"
    result = invoke("--database-url", f"sqlite:///{missing}", "status")
    assert result.exit_code == 4
    assert the_error(result) == f"database {missing} does not exist; {MISSING_HINT}"
    assert not missing.parent.exists()


def test_status_after_init_reports_a_current_database_with_row_counts(initialized):
    engine = create_engine(str(initialized))
    with engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO players (username, created_at) VALUES ('ada', '2024-01-01 00:00:00'), ('bob', '2024-01-02 00:00:00')")
        )
    engine.dispose()
    doc = document(invoke("--json", "status"))
    assert_database_current(doc)
    out = doc["result"]
    assert out["row_counts"] == {"store_identity": 1, "players": 2, "results": 0, "progress": 0, "personal_bests": 0}
    assert out["revision"] == out["head"] == HEAD
    assert [c["name"] for c in out["checks"]][:2] == ["database", "schema"]

    result = invoke("status")
    assert result.exit_code == doc["exit_code"]
    assert error_lines(result) == []
    assert result.stderr == f"database: {initialized}  config: {initialized.parent / 'integrity.toml'}\n"
    assert f"exit code {doc['exit_code']}" in result.stdout
    assert f"at head {HEAD}" in result.stdout
    assert "│ players        │    2 │" in result.stdout


def test_status_never_writes_the_database(initialized):
    before = initialized.read_bytes()
    mtime = initialized.stat().st_mtime_ns
    assert invoke("status").exit_code == 3  # no backup exists yet
    assert initialized.read_bytes() == before and initialized.stat().st_mtime_ns == mtime


def test_status_on_a_database_behind_head_is_exit_3(sqlite_url, newer_history):
    result = invoke("--json", "--database-url", sqlite_url, "status")
    assert result.exit_code == 3
    doc = document(result)
    assert doc["exit_code"] == 3
    assert "error" not in doc  # the check ran and found a problem; nothing failed
    schema = checks_of(doc)["schema"]
    assert schema == {
        "name": "schema",
        "state": "problem",
        "detail": f"at {HEAD}, behind head 0002_next: run `integrity migrate dry-run`, then `integrity migrate apply`",
    }
    assert (doc["result"]["revision"], doc["result"]["head"]) == (HEAD, "0002_next")
    text = invoke("--database-url", sqlite_url, "status")
    assert text.exit_code == 3
    assert error_lines(text) == []
    assert "exit code 3" in text.stdout


def test_status_on_an_unknown_revision_is_exit_4(sqlite_url):
    engine = create_engine(sqlite_url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '0000_missing'"))
    engine.dispose()
    result = invoke("--database-url", sqlite_url, "status")
    assert result.exit_code == 4
    assert the_error(result) == (
        f"at unknown revision 0000_missing (this code's head is {HEAD}): check --database-url; 0000_missing never "
        "passed a dry run on this store (applied behind the tool's back?): see runbooks/schema-unchecked.md"
    )


def test_status_on_an_empty_database_is_exit_4_naming_init(tmp_path):
    empty = tmp_path / "empty.db"
    create_engine(str(empty), create_missing=True).dispose()
    result = invoke("--database-url", str(empty), "status")
    assert result.exit_code == 4
    assert the_error(result) == f"empty (head is {HEAD}): run `integrity init`"


@pytest.mark.postgres
def test_status_on_postgresql(pg_url):
    result = invoke("--json", "--database-url", pg_url, "status")
    doc = document(result)
    assert_database_current(doc)
    assert result.exit_code == doc["exit_code"]
    out = doc["result"]
    assert out["engine"] == "postgresql"
    assert out["row_counts"]["store_identity"] == 1


def test_database_url_flag_beats_environment_which_beats_the_game_variable(sqlite_url, sqlite_path, tmp_path, monkeypatch):
    monkeypatch.setenv("GAME_DATABASE_URL", sqlite_url)
    assert document(invoke("--json", "status"))["result"]["database"] == str(sqlite_path)
    monkeypatch.setenv("INTEGRITY_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    env_doc = document(invoke("--json", "status"))
    assert env_doc["result"]["database"] == str(tmp_path / "env.db") and env_doc["exit_code"] == 4
    flag_doc = document(invoke("--json", "--database-url", sqlite_url, "status"))
    assert flag_doc["result"]["database"] == str(sqlite_path)
    assert_database_current(flag_doc)


def test_config_flag_beats_the_environment(tmp_path, monkeypatch):
    (tmp_path / "env.toml").write_text("[backups]\ncompression_level = 12\n")
    (tmp_path / "flag.toml").write_text("[backups]\ncompression_level = 99\n")
    monkeypatch.setenv("INTEGRITY_CONFIG", str(tmp_path / "env.toml"))
    assert document(invoke("--json", "status"))["config"] == str(tmp_path / "env.toml")
    result = invoke("--config", str(tmp_path / "flag.toml"), "status")
    assert result.exit_code == 4
    assert the_error(result) == (
        f"invalid value 99 for [backups] compression_level; allowed: a number from 1 to 22 (in {tmp_path / 'flag.toml'})"
    )


# ---------------------------------------------------------------- --json


def test_json_status_is_exactly_one_document_with_the_context(initialized):
    result = invoke("--json", "status")
    assert result.stderr == ""  # the resolved paths are in the document instead
    doc = document(result)
    assert list(doc) == ["schema_version", "command", "exit_code", "database", "config", "result"]
    assert doc["schema_version"] == 1
    assert doc["command"] == "status"
    assert doc["exit_code"] == result.exit_code
    assert_database_current(doc)
    assert doc["database"] == f"sqlite:///{initialized}"
    assert doc["config"] == str(initialized.parent / "integrity.toml")
    assert doc["result"]["database"] == str(initialized)


def test_json_on_a_missing_database_carries_error_and_exit_code(game_db):
    result = invoke("--json", "status")
    assert result.exit_code == 4
    assert result.stderr == ""
    doc = document(result)
    assert doc["exit_code"] == 4
    assert doc["command"] == "status"
    assert doc["error"] == f"database {game_db} does not exist; {MISSING_HINT}"
    assert checks_of(doc)["database"] == {
        "name": "database", "state": "precondition", "detail": f"database {game_db} does not exist; {MISSING_HINT}"
    }
    assert "schema" not in checks_of(doc)


def test_json_on_an_invalid_config_value_from_the_environment(monkeypatch):
    monkeypatch.setenv("INTEGRITY_BACKUPS__COMPRESSION_LEVEL", "99")
    result = invoke("--json", "status")
    assert result.exit_code == 4
    assert result.stderr == ""
    assert document(result) == {
        "schema_version": 1,
        "command": "status",
        "exit_code": 4,
        "error": "invalid value '99' for INTEGRITY_BACKUPS__COMPRESSION_LEVEL ([backups] compression_level); "
        "allowed: a number from 1 to 22",
    }


def test_json_history_document(initialized):
    result = invoke("--json", "history")
    assert result.exit_code == 0
    doc = document(result)
    assert list(doc) == ["schema_version", "command", "exit_code", "database", "config", "result"]
    assert doc["command"] == "history"
    assert doc["result"]["ledger"] == str(initialized.parent / "state" / "ledger.db")


# ---------------------------------------------------------------- history and the ledger


def test_history_lists_every_run_with_its_exit_code(initialized, game_db):
    game_db.unlink()
    assert invoke("status").exit_code == 4
    assert invoke("init").exit_code == 0
    healthy = invoke("status").exit_code
    assert healthy == 3  # no backup exists yet
    runs = history()
    outcome = {0: "ok", 3: "problems"}[healthy]
    assert [(r["command"], r["exit_code"], r["outcome"]) for r in runs] == [
        ("history", None, "running"),  # this very run, not finished while it reads
        ("status", healthy, outcome),
        ("init", 0, "ok"),
        ("status", 4, "precondition"),
        ("init", 0, "ok"),
    ]
    failed = runs[3]
    assert failed["summary"]["error"] == f"database {game_db} does not exist; {MISSING_HINT}"
    assert failed["summary"]["checks"]["database"] == "precondition"
    assert failed["summary"]["exit_code"] == 4
    assert all(r["finished_at"] >= r["started_at"] for r in runs[1:])


def test_history_text_lists_command_names(initialized):
    invoke("status")
    result = invoke("history")
    assert result.exit_code == 0
    rows = [line for line in result.stdout.splitlines() if "│" in line]
    commands = [row.split("│")[2].strip() for row in rows]
    exits = [row.split("│")[4].strip() for row in rows]
    assert commands == ["history", "status", "init"]
    assert exits[0] == "-" and exits[2] == "0" and exits[1] in ("0", "3")


def test_history_kind_filters(initialized):
    invoke("status")
    invoke("status")
    assert [r["command"] for r in history("--kind", "status")] == ["status", "status"]
    assert [r["command"] for r in history("--kind", "init")] == ["init"]
    assert history("--kind", "backup") == []
    assert [r["command"] for r in history("--limit", "2")] == ["history", "history"]  # the earlier reads


def test_history_limit_must_be_positive():
    result = invoke("history", "--limit", "0")
    assert result.exit_code == 2
    assert "Invalid value for '--limit'" in result.stderr


def test_history_on_an_empty_ledger_shows_only_itself():
    assert [(r["command"], r["outcome"]) for r in history()] == [("history", "running")]


def test_usage_errors_after_the_callback_are_recorded_with_exit_2(initialized):
    assert invoke("status", "--bogus").exit_code == 2
    [run] = finished_runs("--kind", "status")
    assert (run["exit_code"], run["outcome"]) == (2, "error")
    assert run["summary"] == {"error": "No such option: --bogus"}


def test_a_bug_is_exit_1_with_one_line_and_recorded(initialized, monkeypatch):
    import integrity.status

    def broken(settings, **_):
        raise RuntimeError("boom")

    monkeypatch.setattr(integrity.status, "collect_status", broken)
    result = invoke("status")
    assert result.exit_code == 1
    assert the_error(result) == "unexpected error (a bug): RuntimeError: boom; run again with -v for the traceback"
    [run] = finished_runs("--kind", "status")
    assert (run["exit_code"], run["outcome"]) == (1, "error")
    verbose = runner.invoke(app, ["-v", "status"], catch_exceptions=False)
    assert verbose.exit_code == 1
    assert "Traceback" in verbose.stderr and "RuntimeError: boom" in verbose.stderr


def test_an_interrupt_is_exit_130_and_recorded(initialized, monkeypatch):
    import integrity.status

    def interrupted(settings, **_):
        raise KeyboardInterrupt

    monkeypatch.setattr(integrity.status, "collect_status", interrupted)
    result = invoke("status")
    assert result.exit_code == 130
    assert the_error(result) == "interrupted"
    [run] = finished_runs("--kind", "status")
    assert (run["exit_code"], run["outcome"]) == (130, "interrupted")


# ---------------------------------------------------------------- secrets


def test_a_password_never_appears_in_output_json_or_ledger(data_dir):
    text = invoke("--database-url", UNREACHABLE_WITH_SECRET, "status")
    as_json = invoke("--json", "--database-url", UNREACHABLE_WITH_SECRET, "status")
    for result in (text, as_json):
        assert result.exit_code == 4
        assert SECRET not in result.stdout and SECRET not in result.stderr
    assert the_error(text).startswith("cannot connect to postgresql+psycopg://u:***@127.0.0.1:1/x: ")
    assert text.stderr.startswith("database: postgresql+psycopg://u:***@127.0.0.1:1/x  config: none (defaults)\n")
    doc = document(as_json)
    assert doc["database"] == "postgresql://u:***@127.0.0.1:1/x"
    assert doc["error"].startswith("cannot connect to postgresql+psycopg://u:***@127.0.0.1:1/x")
    runs = history()
    assert [r["exit_code"] for r in runs if r["command"] == "status"] == [4, 4]
    assert SECRET not in json.dumps(runs)
    assert SECRET.encode() not in all_file_bytes(data_dir)


@pytest.mark.parametrize(
    "url, shown",
    [
        (f"postgresql://u:{SECRET}@127.0.0.1:notaport/x", "postgresql://u:***@127.0.0.1:notaport/x"),
        (f"postgresql//u:{SECRET}@127.0.0.1/x", "postgresql//u:***@127.0.0.1/x"),  # a typo, not a file path
        (f"postgresql:/u:{SECRET}@127.0.0.1/x", "postgresql:***@127.0.0.1/x"),
    ],
)
def test_a_malformed_url_is_one_line_exit_4_without_the_password(data_dir, url, shown):
    result = invoke("--database-url", url, "status")
    assert result.exit_code == 4
    assert the_error(result) == f"malformed database URL {shown!r}; {MALFORMED_HINT}"
    as_json = invoke("--json", "--database-url", url, "status")
    assert as_json.exit_code == 4
    assert document(as_json)["error"] == f"malformed database URL {shown!r}; {MALFORMED_HINT}"
    for output in (result.output, as_json.output):
        assert SECRET not in output
    assert SECRET.encode() not in all_file_bytes(data_dir)
    assert not any(SECRET in str(p) for p in Path.cwd().rglob("*"))  # no file named after it either


def test_an_unsupported_database_is_exit_4():
    result = invoke("--database-url", f"mysql://u:{SECRET}@db/game", "status")
    assert result.exit_code == 4
    assert the_error(result) == "unsupported database 'mysql' in 'mysql://u:***@db/game'; use sqlite:///PATH or postgresql://..."
    assert SECRET not in result.output


# ---------------------------------------------------------------- configuration errors


def test_invalid_config_key_from_the_environment_is_exit_4_naming_it(monkeypatch):
    monkeypatch.setenv("INTEGRITY_BACKUPS__REPO", "/srv/backups")
    result = invoke("status")
    assert result.exit_code == 4
    assert result.stdout == ""
    assert the_error(result) == (
        "unknown key INTEGRITY_BACKUPS__REPO ([backups] repo); allowed in [backups]: "
        "compression_level, encrypt_to, identity_file, repository, retention, s3, shrink_tolerance, signing_key_file, signing_public_key, size_drop_tolerance"
    )


def test_invalid_config_key_in_the_file_is_exit_4_naming_it(tmp_path):
    (tmp_path / "integrity.toml").write_text("[objectives]\nrpo = 60\n")
    result = invoke("status")
    assert result.exit_code == 4
    assert the_error(result) == (
        "unknown key [objectives] rpo; allowed in [objectives]: "
        f"copy_max_age_seconds, deep_verify_max_age_seconds, probe_min_success_ratio, rpo_seconds, rto_seconds (in {tmp_path / 'integrity.toml'})"
    )


def test_invalid_toml_is_exit_4_on_one_line(tmp_path):
    (tmp_path / "integrity.toml").write_text("[backups\n")
    result = invoke("status")
    assert result.exit_code == 4
    assert the_error(result).startswith(f"config file {tmp_path / 'integrity.toml'} is not valid TOML: ")


def test_missing_config_file_given_is_exit_4_naming_init(tmp_path, monkeypatch):
    monkeypatch.setenv("INTEGRITY_CONFIG", str(tmp_path / "nope.toml"))
    result = invoke("status")
    assert result.exit_code == 4
    missing = tmp_path / "nope.toml"
    assert the_error(result) == f"config file {missing} does not exist; create it with `integrity --config {missing} init`"


def test_unwritable_state_dir_is_exit_4_naming_the_path(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("INTEGRITY_STATE__DIR", str(tmp_path / "a-file" / "state"))
    result = invoke("status")
    assert result.exit_code == 4
    assert the_error(result) == (
        f"cannot create the state directory {tmp_path / 'a-file' / 'state'}: Not a directory; "
        "set [state] dir (or INTEGRITY_STATE__DIR) to a writable directory"
    )


def test_the_error_line_is_one_line_even_when_long(tmp_path):
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 8) / "game.db"
    result = invoke("--database-url", str(deep), "status")
    assert result.exit_code == 4
    assert the_error(result) == f"database {deep} does not exist; {MISSING_HINT}"


# ---------------------------------------------------------------- usage and help


def test_unknown_option_is_usage_error_exit_2():
    result = invoke("status", "--bogus")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == "Error: No such option: --bogus"
    assert "Usage: integrity status [OPTIONS]" in result.stderr


def test_unknown_command_is_usage_error_exit_2():
    result = invoke("nosuch")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == "Error: No such command 'nosuch'."


@pytest.mark.parametrize(
    "args, command, error",
    [
        (["--json", "status", "--bogus"], "status", "No such option: --bogus"),
        (["--json", "nosuch"], "integrity", "No such command 'nosuch'."),
        (["--json", "--bogus", "status"], "integrity", "No such option: --bogus (Possible options: --verbose)"),
        (["--json", "history", "--limit", "x"], "history", "Invalid value for '--limit': Input should be a valid integer, unable to parse string as an integer"),
    ],
)
def test_usage_error_with_json_is_one_document(args, command, error):
    result = invoke(*args)
    assert result.exit_code == 2
    doc = document(result)
    assert (doc["schema_version"], doc["command"], doc["exit_code"], doc["error"]) == (1, command, 2, error)


def test_help_works_with_an_invalid_config_value_in_the_environment(monkeypatch):
    monkeypatch.setenv("INTEGRITY_BACKUPS__COMPRESSION_LEVEL", "99")
    monkeypatch.setenv("INTEGRITY_NOPE__X", "1")
    for args in (["status", "--help"], ["history", "--help"], ["init", "--help"], ["--help"]):
        result = invoke(*args)
        assert result.exit_code == 0, (args, result.output)
        assert result.stdout.startswith("Usage: integrity")
        assert error_lines(result) == []
    assert invoke("status").exit_code == 4  # the same environment really is invalid


def test_root_help_shows_the_exit_code_table():
    result = invoke("--help")
    assert result.exit_code == 0
    for line in ("0: ok", "1: unexpected error (a bug)", "2: usage error", "130: interrupted"):
        assert line in result.stdout
    for command in ("init", "status", "history"):
        assert command in result.stdout


def test_no_arguments_shows_help_as_a_usage_error():
    result = invoke()
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("Usage: integrity [OPTIONS] COMMAND [ARGS]...")
    assert "status" in result.stderr


def test_quiet_hides_the_context_line(initialized):
    result = invoke("-q", "status")
    assert result.exit_code == 3  # no backup exists yet
    assert result.stderr == ""
    assert "schema" in result.stdout


# ---------------------------------------------------------------- real processes


def integrity_script() -> Path:
    script = Path(sys.executable).with_name("integrity")
    assert script.is_file(), f"console script not installed next to {sys.executable}"
    return script


def run_process(args: list[str], **extra_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **extra_env}
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env, cwd=Path.cwd())


def test_console_script_init_status_history(data_dir, game_db):
    script = str(integrity_script())
    missing = run_process([script, "status"])
    assert missing.returncode == 4
    assert missing.stderr.splitlines()[-1] == f"Error: database {game_db} does not exist; {MISSING_HINT}"
    assert not game_db.exists()

    init = run_process([script, "init"])
    assert init.returncode == 0, init.stderr
    status = run_process([script, "status"])
    assert status.stderr == f"database: {game_db}  config: {data_dir / 'integrity.toml'}\n"
    as_json = run_process([script, "--json", "status"])
    doc = json.loads(as_json.stdout)
    assert_database_current(doc)
    assert status.returncode == as_json.returncode == doc["exit_code"]

    runs = json.loads(run_process([script, "--json", "history"]).stdout)["result"]["runs"]
    assert [(r["command"], r["exit_code"]) for r in runs] == [
        ("history", None), ("status", doc["exit_code"]), ("status", doc["exit_code"]), ("init", 0), ("status", 4)
    ]
    assert {r["pid"] for r in runs[1:]}.isdisjoint({os.getpid()})


def test_module_entry_point_json_and_a_secret(data_dir):
    result = run_process([sys.executable, "-m", "integrity.cli", "--json", "--database-url", UNREACHABLE_WITH_SECRET, "status"])
    assert result.returncode == 4
    assert result.stderr == ""
    doc = json.loads(result.stdout)
    assert doc["exit_code"] == 4 and doc["database"] == "postgresql://u:***@127.0.0.1:1/x"
    assert SECRET not in result.stdout
    assert SECRET.encode() not in all_file_bytes(data_dir)


def test_console_script_malformed_url_and_env_config(monkeypatch):
    script = str(integrity_script())
    bad_url = run_process([script, "--database-url", f"postgresql://u:{SECRET}@h:port/x", "status"])
    assert bad_url.returncode == 4
    assert "Traceback" not in bad_url.stderr and SECRET not in bad_url.stderr + bad_url.stdout
    assert bad_url.stderr.splitlines()[-1] == f"Error: malformed database URL 'postgresql://u:***@h:port/x'; {MALFORMED_HINT}"

    bad_env = run_process([script, "status"], INTEGRITY_DATABASE_URL=f"sqlite:///{Path.cwd() / 'g.db'}", INTEGRITY_SCHEDULE__PROBE="often")
    assert bad_env.returncode == 4
    assert bad_env.stderr == (
        "Error: invalid value 'often' for INTEGRITY_SCHEDULE__PROBE ([schedule] probe); allowed: a 5-field cron "
        "expression that fires ('0 * * * *'), an interval from 1s to 366d ('30s', '15m', '1h', '1d') or 'off'\n"
    )

    usage = run_process([script, "--json", "status", "--bogus"])
    assert usage.returncode == 2
    assert json.loads(usage.stdout)["exit_code"] == 2

    helped = run_process([script, "status", "--help"], INTEGRITY_SCHEDULE__PROBE="often")
    assert helped.returncode == 0 and helped.stdout.startswith("Usage: integrity status")
