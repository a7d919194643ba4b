"""Progress of long phases: the one seam between the library and a terminal.

The library takes a `Reporter` (default `NO_PROGRESS`, which reports nothing, so library
calls and tests need nothing) and opens one task per long phase:

    with progress.task("compressing", total=size, unit="bytes") as task:
        ...
        task.advance(len(chunk))

The CLI builds the reporter once, at the edge, from the runtime (`reporter_for`): rich
progress bars on stderr when stderr is a terminal (amount, rate, ETA), nothing when it is
not (cron, pipes, log files), nothing under `-q`, nothing for scheduled jobs. Data stays
on stdout; bars are transient, so a finished run leaves only its report.

Units: "bytes" (shown as MB and MB/s) or any count noun ("rows", "rules", "tables",
"revisions"). A task without a total (a pg_dump stream, a one-step copy) shows a pulsing
bar with the amount and rate so far.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Task:
    """One phase's progress. This one reports nothing (see `Reporter`)."""

    def advance(self, amount: int = 1) -> None:
        """`amount` more units done (bytes, rows, ...); safe from worker threads."""

    def describe(self, description: str) -> None:
        """Rename the phase as it moves on (the table being read, ...)."""

    def set(self, completed: int, total: int | None = None) -> None:
        """`completed` units done in all, of `total` when it is known only now."""


_SILENT_TASK = Task()


class Reporter:
    """Reports nothing: the library's default."""

    enabled = False

    @contextmanager
    def task(self, description: str, *, total: int | None = None, unit: str = "rows") -> Iterator[Task]:
        yield _SILENT_TASK


NO_PROGRESS = Reporter()


def reporter_for(stream, *, quiet: bool) -> Reporter:
    """Bars only where a person watches: `stream` (stderr) is a terminal and not -q."""
    isatty = getattr(stream, "isatty", None)
    if quiet or isatty is None or not isatty():
        return NO_PROGRESS
    from rich.console import Console

    return TerminalReporter(Console(file=stream, stderr=True))


class _RichTask(Task):
    def __init__(self, progress, task_id):
        self._progress = progress
        self._task_id = task_id

    def advance(self, amount: int = 1) -> None:
        self._progress.advance(self._task_id, amount)

    def describe(self, description: str) -> None:
        self._progress.update(self._task_id, description=description)

    def set(self, completed: int, total: int | None = None) -> None:
        if total is None:
            self._progress.update(self._task_id, completed=completed)
        else:
            self._progress.update(self._task_id, completed=completed, total=total)


class TerminalReporter(Reporter):
    """rich progress bars on a terminal. Phases may nest (a drill's restore inside the
    drill): they share one live display, one line each, and the display ends (erased)
    when the last phase ends."""

    enabled = True

    def __init__(self, console):
        self.console = console
        self._lock = threading.Lock()
        self._progress = None
        self._open = 0

    @contextmanager
    def task(self, description: str, *, total: int | None = None, unit: str = "rows") -> Iterator[Task]:
        with self._lock:
            if self._progress is None:
                self._progress = self._new_progress()
                self._progress.start()
            progress = self._progress
            task_id = progress.add_task(description, total=total, unit=unit)
            self._open += 1
        progress.refresh()  # shown at once, however short the phase turns out to be
        try:
            yield _RichTask(progress, task_id)
        finally:
            with self._lock:
                progress.remove_task(task_id)
                self._open -= 1
                if self._open == 0:
                    progress.stop()
                    self._progress = None

    def _new_progress(self):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        amount, rate = _column_types()
        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            amount(),
            rate(),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            # Never capture stdout: the report printed there is data, not a log line.
            redirect_stdout=False,
            redirect_stderr=False,
        )


def _amount_text(value: float, unit: str) -> str:
    if unit == "bytes":
        from rich.filesize import decimal

        return decimal(int(value))
    return f"{int(value):,}"


@functools.cache
def _column_types():
    """The amount and rate columns, defined on first use (rich.progress loads only then)."""
    from rich.progress import ProgressColumn

    class Amount(ProgressColumn):
        """'12.3 MB/130.0 MB' or '40,000/6,500,000 rows'."""

        def render(self, task):
            from rich.text import Text

            unit = task.fields.get("unit", "rows")
            done = _amount_text(task.completed, unit)
            total = f"/{_amount_text(task.total, unit)}" if task.total is not None else ""
            suffix = "" if unit == "bytes" else f" {unit}"
            return Text(f"{done}{total}{suffix}", style="progress.download")

    class Rate(ProgressColumn):
        """'48.2 MB/s' or '120,000 rows/s' (rich's estimate over the last samples)."""

        def render(self, task):
            from rich.text import Text

            unit = task.fields.get("unit", "rows")
            speed = task.finished_speed or task.speed
            if speed is None:
                return Text("?/s", style="progress.data.speed")
            if unit == "bytes":
                return Text(f"{_amount_text(speed, unit)}/s", style="progress.data.speed")
            return Text(f"{speed:,.0f} {unit}/s", style="progress.data.speed")

    return Amount, Rate

