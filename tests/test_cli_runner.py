"""The tests' CliRunner (tests/cli_runner.py) builds each app's click command once and is
the only way tests run an app in process."""

from __future__ import annotations

import re
from pathlib import Path

import typer

import cli_runner
from cli_runner import CliRunner, command_of

TESTS = Path(__file__).resolve().parent


def _tiny_app() -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def greet(name: str, shout: bool = False) -> None:
        """Say hello; exit 3 for a nobody."""
        if name == "nobody":
            typer.echo("Error: nobody to greet", err=True)
            raise typer.Exit(3)
        typer.echo(f"hello {name.upper() if shout else name}")

    return app


def test_the_command_is_built_once_and_runs_as_typers_runner_would(monkeypatch):
    app = _tiny_app()
    builds = []
    build = typer.main.get_command
    monkeypatch.setattr(typer.main, "get_command", lambda a: builds.append(a) or build(a))

    first = CliRunner().invoke(app, ["ann"])
    loud = CliRunner().invoke(app, ["bob", "--shout"])
    refused = CliRunner().invoke(app, ["nobody"])

    assert builds == [app]  # three invocations, one build
    assert (first.exit_code, first.stdout) == (0, "hello ann\n")
    assert (loud.exit_code, loud.stdout) == (0, "hello BOB\n")
    assert (refused.exit_code, refused.stdout, refused.stderr) == (3, "", "Error: nobody to greet\n")
    assert command_of(app) is command_of(app)


def test_a_new_app_gets_its_own_command():
    one, other = _tiny_app(), _tiny_app()
    assert command_of(one) is not command_of(other)
    assert cli_runner._commands[id(one)][0] is one


def test_environment_overrides_are_set_for_the_call_and_undone(monkeypatch):
    import os

    app = typer.Typer()

    @app.command()
    def show() -> None:
        typer.echo(os.environ.get("CLI_RUNNER_PROBE", "unset"))

    monkeypatch.setenv("CLI_RUNNER_PROBE", "before")
    assert CliRunner().invoke(app, [], env={"CLI_RUNNER_PROBE": "during"}).stdout == "during\n"
    assert CliRunner().invoke(app, [], env={"CLI_RUNNER_PROBE": None}).stdout == "unset\n"
    assert os.environ["CLI_RUNNER_PROBE"] == "before"


def test_no_test_builds_commands_or_runs_an_app_past_the_helper():
    bypasses = []
    for path in sorted(TESTS.glob("*.py")):
        if path.name in ("cli_runner.py", Path(__file__).name):
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"typer\.testing|typer\.main\b|\bget_command\(", text):
            bypasses.append(path.name)
    assert bypasses == [], "use tests/cli_runner.py's CliRunner and command_of"
