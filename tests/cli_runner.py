"""One CliRunner for every in-process CLI test, building each app's click command once.

typer.testing.CliRunner.invoke calls typer.main.get_command(app) on every invocation, which
rebuilds the whole command tree from the Typer app: about 22 ms a call, 13% of the test
time measured over seven files. The command is a pure function of the app's definition, so
it is built once per process here and typer's own invoke runs on it: the same isolation
(stdin, stdout/stderr, environment overrides), exit codes and Result as typer's runner.
Tests import `CliRunner` from this module, never from typer.testing
(tests/test_cli_runner.py checks both).
"""

from __future__ import annotations

from unittest import mock

import typer.main
import typer.testing

_commands: dict[int, tuple[typer.Typer, object]] = {}


def command_of(app: typer.Typer):
    """The click command of `app`, built on the first call and reused afterwards."""
    cached = _commands.get(id(app))
    if cached is None or cached[0] is not app:  # the app is kept alive, so its id is never reused
        cached = _commands[id(app)] = (app, typer.main.get_command(app))
    return cached[1]


class CliRunner(typer.testing.CliRunner):
    """typer's CliRunner, handed the cached command instead of rebuilding it per call."""

    def invoke(self, app, *args, **kwargs):
        # typer's invoke looks the builder up in its own module at call time: swapping it for
        # the cache for this call keeps every other line of typer's invoke as it is.
        with mock.patch.object(typer.testing, "_get_command", command_of):
            return super().invoke(app, *args, **kwargs)
