"""No password in any output, ledger, metrics file, manifest or journal (DESIGN invariant 7;
issue 14, item 9).

Every command of both programs, listed from their Typer apps (a new command is run with no
arguments unless the table below gives it some), runs against a real PostgreSQL role whose
password holds every character reserved in URLs, given percent-encoded as a URL must give
it. The same commands run against a closed port, where every error path prints the URL.
Then every byte the runs printed and every file the tool wrote is searched for any piece of
the password. Forms the parser would misread (an unencoded '@', a libpq keyword string) are
refused without being echoed.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from cli_runner import CliRunner, command_of
from conftest import PG_ADMIN_URL, drop_pg_database
from game_core.cli import app as game_app
from game_core.db import mask_text_url, parse_database_url
from game_core.errors import DatabaseUnreachable
from integrity.cli import app as integrity_app
from store_templates import DataDirTemplate

runner = CliRunner()

# Distinct pieces between every reserved character: whatever a parser cuts at, each piece
# that could leak is long enough to be found and never occurs by chance.
PIECES = ("Pwhead91", "Pwtail92", "Pwmid93", "Pwq94", "Pwend95")
PASSWORD = f"{PIECES[0]}:/?#[]@{PIECES[1]}!$&'()*+,;=%{PIECES[2]} \"\\<>{{}}|^`~{PIECES[3]}%40%2F{PIECES[4]}"
ROLE = "integrity_secret_role"


def leaks(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [piece for piece in PIECES if piece.encode() in data]


def url_for(database: str, *, port: int | None = None) -> str:
    """The URL of `database` on this test process's server (or at `port`) as the role
    with a password."""
    port = port or sa.make_url(PG_ADMIN_URL).port
    return f"postgresql://{ROLE}:{quote(PASSWORD, safe='')}@127.0.0.1:{port}/{database}"


# ------------------------------------------------------------------ the commands


def commands_of(app) -> list[tuple[str, ...]]:
    """Every command path of a Typer app: subcommands, and groups that run on their own."""
    found = []

    def walk(command, path):
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            found.append(tuple(path))
            return
        if path and getattr(command, "invoke_without_command", False):
            found.append(tuple(path))
        for name, sub in subcommands.items():
            walk(sub, [*path, name])

    walk(command_of(app), [])
    return found


# Arguments per command, in the order they run (later ones use the backup made earlier).
# {backup} is the first backup's id, {tmp} a scratch directory. A command not listed runs
# with no arguments: it is still run, and its output still searched.
INTEGRITY_ARGS: dict[tuple[str, ...], list[list[str]]] = {
    ("init",): [["init"]],
    ("backup", "create"): [["backup", "create", "--label", "secrets"]],
    ("backup", "list"): [["backup", "list"]],
    ("backup", "show"): [["backup", "show", "{backup}"]],
    ("backup", "verify"): [["backup", "verify", "{backup}"], ["backup", "verify", "--latest", "--deep"]],
    ("backup", "pin"): [["backup", "pin", "{backup}", "--until", "1d"]],
    ("backup", "unpin"): [["backup", "unpin", "{backup}"]],
    ("backup", "prune"): [["backup", "prune", "--dry-run"]],
    ("backup", "check"): [["backup", "check"]],
    ("backup", "keygen"): [["backup", "keygen", "--out", "{tmp}/signing.key"]],
    ("status",): [["status"]],
    ("history",): [["history"]],
    ("audit",): [["audit"]],
    ("audit", "history"): [["audit", "history"]],
    ("probe",): [["probe", "--sample", "5"]],
    ("metrics",): [["metrics"]],
    ("schedule", "list"): [["schedule", "list"]],
    # The daemon runs until signalled; its jobs are these same commands, run above.
    ("schedule", "run"): [],
    ("drill",): [["drill"]],
    ("diff",): [["diff", "latest"]],
    ("repair", "progress"): [["repair", "progress", "--dry-run"]],
    ("migrate", "lint"): [["migrate", "lint"]],
    ("migrate", "rules"): [["migrate", "rules"]],
    ("migrate", "dry-run"): [["migrate", "dry-run", "--from-live"]],
    ("migrate", "apply"): [["migrate", "apply", "--yes"]],
    ("restore",): [["restore", "latest", "--dry-run"], ["restore", "{backup}", "--yes"]],
    ("salvage",): [["salvage", "--from-backup", "{backup}", "--dry-run"]],
}
GAME_ARGS: dict[tuple[str, ...], list[list[str]]] = {
    ("simulate",): [["simulate", "--players", "3", "--tests-per-player", "2", "--seed", "7"]],
    ("play",): [["play", "--player", "secret_player", "--words", "4", "--seed", "3", "--duration-ms", "6000"]],
    ("stats",): [["stats", "--player", "sim7_1"]],
    ("leaderboard",): [["leaderboard"]],
}


def invocations() -> list[tuple[str, tuple[str, ...], list[str]]]:
    """(program, command path, argv): the game first (it fills the database), then integrity."""
    runs = []
    for program, app, table in (("typing-game", game_app, GAME_ARGS), ("integrity", integrity_app, INTEGRITY_ARGS)):
        paths = commands_of(app)
        ordered = [p for p in table if p in paths] + [p for p in paths if p not in table]
        for path in ordered:
            for argv in table.get(path, [list(path)]):
                runs.append((program, path, argv))
    return runs


INVOCATIONS = invocations()


def test_every_command_of_both_apps_is_run():
    run = {(program, path) for program, path, _ in INVOCATIONS}
    for program, app in (("typing-game", game_app), ("integrity", integrity_app)):
        for path in commands_of(app):
            if (program, path) != ("integrity", ("schedule", "run")):
                assert (program, path) in run, f"{program} {' '.join(path)} is never run"


# ------------------------------------------------------------------ the world they run in


@pytest.fixture(scope="module")
def world(pg_admin, pg_template, tmp_path_factory):
    """A migrated PostgreSQL database reached as a role with the password, and the tool's
    directories, for the whole module (the commands build on each other)."""
    database = f"tg_secret_{uuid.uuid4().hex[:10]}"
    escaped = PASSWORD.replace("'", "''")
    with pg_admin.connect() as connection:
        connection.execute(sa.text(f"DROP ROLE IF EXISTS {ROLE}"))
        # SUPERUSER: restore renames databases and drill creates scratch ones; the server
        # trusts local connections, so the password is checked by nothing but this test.
        connection.execute(sa.text(f"CREATE ROLE {ROLE} LOGIN SUPERUSER PASSWORD '{escaped}'"))
        connection.execute(sa.text(f'CREATE DATABASE "{database}" TEMPLATE "{pg_template}" OWNER {ROLE}'))
    root = tmp_path_factory.mktemp("secrets")
    state = {"root": root, "database": database, "backup": None, "outputs": []}
    yield state
    drop_pg_database(pg_admin, database)
    with pg_admin.connect() as connection:
        leftovers = connection.execute(
            sa.text("SELECT datname FROM pg_database WHERE datname LIKE :p"), {"p": f"{database}%"}
        ).scalars().all()
        for name in leftovers:
            drop_pg_database(pg_admin, name)
        connection.execute(sa.text(f"DROP ROLE IF EXISTS {ROLE}"))


def _environment(monkeypatch, root: Path, url: str) -> None:
    monkeypatch.setenv("INTEGRITY_DATABASE_URL", url)
    monkeypatch.setenv("GAME_DATABASE_URL", url)
    monkeypatch.setenv("INTEGRITY_CONFIG", str(root / "integrity.toml"))
    monkeypatch.setenv("INTEGRITY_STATE__DIR", str(root / "state"))
    monkeypatch.setenv("INTEGRITY_BACKUPS__REPOSITORY", str(root / "backups"))
    monkeypatch.setenv("INTEGRITY_METRICS__PATH", str(root / "state" / "metrics.prom"))


def _run(program: str, argv: list[str], *, json_output: bool = False):
    if program == "integrity":
        args = ["--no-input", *(["--json"] if json_output else []), *argv]
        return runner.invoke(integrity_app, args, input="")
    return runner.invoke(game_app, argv, input="effort pour suggest lived\n")


def _check(result, capfd, what: str) -> str:
    captured = capfd.readouterr()  # what child processes (pg_dump) wrote to the descriptors
    text = result.output + captured.out + captured.err
    if result.exception and not isinstance(result.exception, SystemExit):
        text += repr(result.exception)
    assert not leaks(text), f"{what} printed a piece of the password:\n{text}"
    assert "Traceback" not in text and "a bug" not in text, f"{what}:\n{text}"
    return text


def _files_leaking(root: Path) -> list[str]:
    return [str(path) for path in sorted(root.rglob("*")) if path.is_file() and leaks(path.read_bytes())]


@pytest.mark.postgres
@pytest.mark.parametrize("program,path,argv", INVOCATIONS, ids=lambda v: " ".join(v) if isinstance(v, (list, tuple)) else v)
def test_no_command_prints_or_stores_the_password(world, program, path, argv, monkeypatch, capfd):
    root = world["root"]
    _environment(monkeypatch, root, url_for(world["database"]))
    argv = [a.format(backup=world["backup"] or "20261127T030118Z-a1b2c3", tmp=root) for a in argv]
    for json_output in ((False, True) if program == "integrity" else (False,)):
        result = _run(program, argv, json_output=json_output)
        text = _check(result, capfd, f"{program} {' '.join(argv)} (json={json_output})")
        if path == ("backup", "create") and json_output is False and world["backup"] is None:
            world["backup"] = re.search(r"\d{8}T\d{6}Z-[0-9a-f]{6}", text).group(0)
        if json_output and result.stdout.strip():
            document = json.loads(result.stdout)
            assert "***" in json.dumps(document.get("context", {})) or not document.get("context")
    assert not _files_leaking(root), "files written by the tool hold a piece of the password"


@pytest.mark.postgres
def test_the_runs_were_real(world):
    """The sweep above ran against the role: a backup was made, recorded and journalled."""
    root = world["root"]
    assert world["backup"], "backup create never succeeded"
    manifest = json.loads((root / "backups" / world["backup"] / "manifest.json").read_text())
    assert manifest["source_url"].startswith(f"postgresql+psycopg://{ROLE}:***@127.0.0.1:{sa.make_url(PG_ADMIN_URL).port}/")
    assert (root / "backups" / "journal.jsonl").read_text().strip()
    assert (root / "state" / "metrics.prom").read_text().strip()
    assert (root / "state" / "ledger.db").stat().st_size > 0
    assert not _files_leaking(root)


@pytest.fixture(scope="module")
def initialised(tmp_path_factory) -> DataDirTemplate:
    """What `integrity init` leaves in a directory laid out as `_environment` says, run
    once for the error-path tests to copy."""
    root = tmp_path_factory.mktemp("secrets-init")
    url = f"sqlite:///{root / 'game.db'}"
    environ = {"XDG_DATA_HOME": str(root / "xdg-data"), "INTEGRITY_DATABASE_URL": url, "GAME_DATABASE_URL": url,
               "INTEGRITY_CONFIG": str(root / "integrity.toml"), "INTEGRITY_STATE__DIR": str(root / "state"),
               "INTEGRITY_BACKUPS__REPOSITORY": str(root / "backups"),
               "INTEGRITY_METRICS__PATH": str(root / "state" / "metrics.prom")}
    return DataDirTemplate.build(root, environ, ["init"])


@pytest.mark.postgres
@pytest.mark.parametrize("program,path,argv", INVOCATIONS, ids=lambda v: " ".join(v) if isinstance(v, (list, tuple)) else v)
def test_no_error_path_prints_the_password(pg_admin, initialised, program, path, argv, tmp_path, monkeypatch, capfd):
    """The same commands against a closed port: every one fails to connect (or never needs
    to), and the URL is in every error message, masked."""
    # A repository and a state directory, so that each command gets as far as connecting:
    # this test's copy of what `integrity init` left.
    initialised.copy_into(tmp_path)
    _environment(monkeypatch, tmp_path, url_for("gone", port=1))
    argv = [a.format(backup="20261127T030118Z-a1b2c3", tmp=tmp_path) for a in argv]
    for json_output in ((False, True) if program == "integrity" else (False,)):
        result = _run(program, argv, json_output=json_output)
        _check(result, capfd, f"{program} {' '.join(argv)} against a closed port")
        assert result.exit_code != 1, result.output
    assert not _files_leaking(tmp_path)


# ------------------------------------------------------------------ forms that are refused


RAW_FORMS = {
    "an unencoded '@' in the password": f"postgresql://{ROLE}:{PIECES[0]}@{PIECES[1]}@127.0.0.1:1/x",
    "every reserved character unencoded": f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:1/x",
    "a libpq keyword string": f"host=127.0.0.1 port=1 user={ROLE} password={PIECES[0]} dbname=x",
    "a quoted libpq keyword": f"dbname=x password='{PIECES[0]} {PIECES[1]}' host=127.0.0.1",
    "a keyword string led by the password": f"password={PIECES[0]} host=127.0.0.1",
    "a mistyped scheme": f"postgresql//{ROLE}:{PIECES[0]}@{PIECES[1]}@127.0.0.1/x",
    "a password in the query": f"postgresql://{ROLE}@127.0.0.1:1/x?password={PIECES[0]}",
    "an sslpassword in the query": f"postgresql://{ROLE}@127.0.0.1:1/x?sslpassword={PIECES[0]}&sslmode=bogus",
}


@pytest.mark.parametrize("form", RAW_FORMS)
def test_forms_the_parser_would_misread_are_exit_4_without_echo(form, tmp_path, monkeypatch, capfd):
    url = RAW_FORMS[form]
    for program, argv in (("integrity", ["status"]), ("integrity", ["backup", "create"]), ("typing-game", ["stats"])):
        _environment(monkeypatch, tmp_path, url)
        for json_output in ((False, True) if program == "integrity" else (False,)):
            result = _run(program, argv, json_output=json_output)
            _check(result, capfd, f"{form}: {program} {' '.join(argv)}")
            assert result.exit_code == 4, result.output
    assert not _files_leaking(tmp_path)


@pytest.mark.parametrize("form", RAW_FORMS)
def test_mask_text_url_hides_every_piece(form):
    assert not leaks(mask_text_url(RAW_FORMS[form]))


def test_a_keyword_string_is_refused_not_taken_for_a_file(tmp_path):
    with pytest.raises(DatabaseUnreachable) as raised:
        parse_database_url(f"host=127.0.0.1 password={PIECES[0]} dbname=x")
    assert str(raised.value).startswith("the database URL is a libpq keyword string (host=... dbname=...)")
    assert not leaks(str(raised.value))


def test_a_percent_encoded_password_is_parsed_whole_and_masked():
    target = parse_database_url(url_for("game"))
    assert target.url.password == PASSWORD and target.url.host == "127.0.0.1" and target.url.database == "game"
    assert target.masked == f"postgresql+psycopg://{ROLE}:***@127.0.0.1:{sa.make_url(PG_ADMIN_URL).port}/game"
    assert not leaks(target.display)
