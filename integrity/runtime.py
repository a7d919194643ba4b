"""The environment a command runs in (httpie's pattern): output mode, consoles,
resolved settings, the ledger run (integrity.recorder) and the invocation the command
hands to integrity.api, handed to commands as `ctx.obj`.

Data goes to stdout; the resolved paths, warnings, progress bars and errors to stderr.
With `--json` stdout carries exactly one JSON document, also on failure. With `-q` a run
that succeeds prints nothing at all (cron mails only when something is wrong); a run that
fails still prints its report and its `Error:` line, and `--json` still its document.

A reader that goes away (`integrity backup create | head -1`) never changes a run's
outcome: `ReaderSafeStream` swallows the broken pipe, so the operation finishes, the ledger
records what really happened and the exit code is the operation's.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

log = logging.getLogger("integrity")
# Piped output is for scripts and log files: never cut an id to fit 80 columns.
PIPE_WIDTH = 200


class ReaderSafeStream(io.TextIOBase):
    """A standard stream whose reader may go away. On the first broken pipe (EPIPE) the
    file descriptor is pointed at /dev/null, so later writes, the children that inherited
    it and the interpreter's final flush all succeed quietly, and `reader_gone` says
    what happened; nothing is raised into the operation. Each write is flushed at once:
    a pipe that breaks shows here, not in a flush at exit after the outcome is recorded."""

    def __init__(self, stream):
        self.stream = stream
        self.reader_gone = False

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                self.stream.write(text)
                self.stream.flush()
            except BrokenPipeError:
                self._abandon()
        return len(text)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._abandon()

    def _abandon(self) -> None:
        self.reader_gone = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self.stream.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError, io.UnsupportedOperation):
            pass  # no descriptor of its own (a test's stream): nothing more to quiet

    def isatty(self) -> bool:
        return not self.reader_gone and self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:
        return self.stream.encoding

    @property
    def errors(self):
        return self.stream.errors

    @property
    def buffer(self):
        return self.stream.buffer


def guard_standard_streams() -> tuple[ReaderSafeStream, ReaderSafeStream]:
    """Put reader-safe wrappers over sys.stdout and sys.stderr (the program's edge)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, ReaderSafeStream):
            setattr(sys, name, ReaderSafeStream(stream))
    return sys.stdout, sys.stderr


def _reader_gone(stream) -> bool:
    return bool(getattr(stream, "reader_gone", False))


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
    recording: Any = None  # integrity.recorder.Recording, once the run is open in the ledger
    base_invocation: Any = None  # integrity.invocation.Invocation, built with the recording
    summary: dict[str, Any] = field(default_factory=dict)
    repository: str | None = None  # `integrity backup --repository NAME ...`: a copy instead of the primary

    def __post_init__(self) -> None:
        # -q: nothing on stderr but errors, whoever prints (commands print phase notes here).
        self.stderr.quiet = self.quiet

    def invocation(self, *, lock_wait: float | None = None, yes: bool | None = None):
        """What the command hands to integrity.api: this run's invocation with the command's
        own --lock-wait and --yes."""
        invocation = self.base_invocation.given(lock_wait=lock_wait, yes=yes)
        if self.repository:
            from dataclasses import replace

            from integrity.backups.repositories import settings_for

            invocation = replace(invocation, settings=settings_for(invocation.settings, self.repository))
        return invocation

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
        """Open this run in the ledger and build the invocation every command hands to the API:
        consent asked on this terminal (never under --no-input) with the plan shown the
        CLI's way, progress bars on a watched stderr, phase notes on stderr unless --json/-q."""
        from integrity.invocation import Invocation
        from integrity.progress import reporter_for
        from integrity.recorder import Recording
        from integrity.recovery.consent import Consent, Prompter
        from integrity.render.consent import consent_lines

        self.recording = Recording.start(self.settings, self.command)
        self.base_invocation = Invocation.recorded(
            self.recording,
            consent=Consent(no_input=self.no_input, prompter=Prompter(), describe=consent_lines),
            progress=reporter_for(sys.stderr, quiet=self.quiet),
            notify=self._phase_note,
        )

    def _phase_note(self, line: str) -> None:
        # Each phase of a long operation as it ends, on stderr (stdout stays the result).
        if not (self.json_output or self.quiet):
            self.stderr.print(line, markup=False, highlight=False)

    def finish_run(self, exit_code: int, error: str | None = None) -> None:
        if self.recording is None:
            return
        from integrity.recorder import Outcome

        summary = dict(self.summary)
        if _reader_gone(sys.stdout):
            summary["stdout_closed"] = True  # why whoever ran it saw less than the whole report
        self.recording.finish(Outcome(int(exit_code), summary, error))
        self.recording = None

    def emit(self, result: Any) -> None:
        """Render a library result; exit with its exit code when it has one."""
        from integrity.recorder import Outcome
        from integrity.render.document import json_document

        outcome = Outcome.of(result)
        exit_code, error = outcome.exit_code, outcome.error  # a result that failed a precondition says why
        self.summary = dict(outcome.summary)
        if error:
            self.summary["error"] = error
        if self.json_output:
            print(json_document(command=self.command, exit_code=exit_code, context=self.context(), result=result, error=error))
        elif exit_code or not self.quiet:  # -q: a success prints nothing; a failure its report
            from integrity.render.text import render_text

            render_text(result, self.stdout)
            if error:
                self.error_line(error)
        if exit_code:
            import typer

            raise typer.Exit(exit_code)

    def error(self, message: str, exit_code: int) -> None:
        if self.json_output:
            from integrity.render.document import json_document

            print(json_document(command=self.command, exit_code=exit_code, context=self.context(), error=message))
        else:
            self.error_line(message)

    def error_line(self, message: str) -> None:
        # Not through self.stderr, which -q silences: errors always reach stderr.
        Console(file=sys.stderr, soft_wrap=True).print(f"Error: {message}", markup=False, highlight=False)

    def bug(self, exc: BaseException) -> str:
        message = f"unexpected error (a bug): {type(exc).__name__}: {exc}; run again with -v for the traceback"
        if self.verbose:
            traceback.print_exception(exc, file=sys.stderr)
        return message
