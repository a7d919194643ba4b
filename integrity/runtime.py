"""The environment a command runs in (httpie's pattern): output mode, consoles,
resolved settings and the ledger run, handed to commands as `ctx.obj`.

Data goes to stdout; the resolved paths, warnings and errors to stderr. With `--json`
stdout carries exactly one JSON document, also on failure.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from game_core.errors import ExitCode

log = logging.getLogger("integrity")
# Piped output is for scripts and log files: never cut an id to fit 80 columns.
PIPE_WIDTH = 200


def _console(stream) -> Console:
    if stream.isatty():
        return Console(file=stream)
    columns = os.environ.get("COLUMNS", "")
    return Console(file=stream, width=int(columns) if columns.isdigit() else PIPE_WIDTH)


@dataclass
class Runtime:
    json_output: bool = False
    quiet: bool = False
    verbose: bool = False
    no_input: bool = False
    command: str = ""
    stdout: Console = field(default_factory=lambda: _console(sys.stdout))
    stderr: Console = field(default_factory=lambda: Console(file=sys.stderr, soft_wrap=True))
    settings: Any = None  # integrity.settings.Settings, once resolved
    ledger: Any = None  # integrity.ledger.Ledger, once opened
    run_id: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    def configure_logging(self) -> None:
        level = logging.WARNING if not self.verbose else logging.DEBUG
        if self.quiet:
            level = logging.ERROR
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        root = logging.getLogger("integrity")
        root.handlers[:] = [handler]
        root.setLevel(level)
        root.propagate = False

    def context(self) -> dict[str, Any]:
        """What every JSON document and every run announces: where the data is."""
        if self.settings is None:
            return {}
        from game_core.db import mask_text_url

        return {"database": mask_text_url(self.settings.database_url), "config": self.settings.config_display}

    def announce(self) -> None:
        if self.json_output or self.quiet or self.settings is None:
            return
        from game_core.db import parse_database_url

        try:
            database = parse_database_url(self.settings.database_url).display
        except Exception:  # a malformed URL is reported by the command that opens it
            database = self.context()["database"]
        self.stderr.print(f"database: {database}  config: {self.settings.config_display}", highlight=False)

    def start_run(self) -> None:
        from integrity.ledger import Ledger

        self.ledger = Ledger.open(self.settings.state.dir, self.settings.state.ledger_url)
        self.run_id = self.ledger.start(self.command)

    def finish_run(self, exit_code: int, error: str | None = None) -> None:
        if self.ledger is None or self.run_id is None:
            return
        summary = dict(self.summary)
        if error:
            summary["error"] = error
        try:
            self.ledger.finish(self.run_id, exit_code, summary)
        except Exception as exc:  # the run already happened; losing its record must not hide its result
            log.warning("could not record the run in the ledger %s: %s", self.ledger.location, exc)
        try:
            self.write_metrics()
        finally:
            self.ledger.close()
            self.ledger = None

    def write_metrics(self) -> None:
        """The Prometheus text file after every run, so cron users get it too. Like the
        ledger record, it must never change the command's exit code: a failure is a warning."""
        path = getattr(getattr(self.settings, "metrics", None), "path", None)
        if path is None:
            return
        try:
            from integrity.prometheus import write_metrics_file

            write_metrics_file(self.settings, self.ledger)
        except Exception as exc:
            detail = str(exc)
            if str(path) not in detail:  # MetricsUnwritable names the path; anything else gets it here
                detail = f"could not write the metrics file {path}: {type(exc).__name__}: {detail}"
            log.warning("%s", detail)

    def emit(self, result: Any) -> None:
        """Render a library result; exit with its exit code when it has one."""
        from integrity.report import json_document, register_renderers, render_text

        exit_code = int(getattr(result, "exit_code", ExitCode.OK))
        error = getattr(result, "error", None)  # a result that failed a precondition says why
        summary = getattr(result, "summary", None)
        self.summary = summary() if callable(summary) else {}
        if error:
            self.summary["error"] = error
        if self.json_output:
            print(json_document(command=self.command, exit_code=exit_code, context=self.context(), result=result, error=error))
        else:
            register_renderers()
            render_text(result, self.stdout)
            if error:
                self.stderr.print(f"Error: {error}", markup=False, highlight=False)
        if exit_code:
            import typer

            raise typer.Exit(exit_code)

    def error(self, message: str, exit_code: int) -> None:
        if self.json_output:
            from integrity.report import json_document

            print(json_document(command=self.command, exit_code=exit_code, context=self.context(), error=message))
        else:
            self.stderr.print(f"Error: {message}", markup=False, highlight=False)

    def bug(self, exc: BaseException) -> str:
        message = f"unexpected error (a bug): {type(exc).__name__}: {exc}; run again with -v for the traceback"
        if self.verbose:
            traceback.print_exception(exc, file=sys.stderr)
        return message
