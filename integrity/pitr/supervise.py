"""A supervised child process: the engine's long-running replicator (Litestream's
`replicate`), restarted whenever it dies, each death reported.

A replicator that died silently is the original incident again (the archive stops, nobody
knows), so a death is never only logged: `on_death` hears it with the exit status and the
child's last line of output, and the `SupervisionReport` keeps every one. Restarts back off
(doubling from `restart_delay` to `max_delay` while the child keeps dying young) so that a
broken configuration does not spin. The child's output goes to a log file (append), which
is where its last line is read from.

The child runs in its own session: a Ctrl-C on the terminal reaches `integrity` only, which
then stops the child with SIGTERM (Litestream ships what it has on SIGTERM) and waits for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 15.0


@dataclass(frozen=True)
class Death:
    """One unexpected end of the child."""

    at: datetime
    pid: int
    returncode: int  # negative: killed by that signal
    last_output: str
    lived_seconds: float

    def describe(self) -> str:
        how = (f"was killed by {signal.Signals(-self.returncode).name}" if self.returncode < 0
               else f"exited with status {self.returncode}")
        return f"pid {self.pid} {how} after {self.lived_seconds:.1f}s at {self.at:%Y-%m-%d %H:%M:%S}Z: {self.last_output}"


@dataclass
class SupervisionReport:
    argv: tuple[str, ...]
    log_path: Path
    starts: int = 0
    deaths: list[Death] = field(default_factory=list)
    stopped_cleanly: bool = True  # False: the child had to be killed at stop


class Supervisor:
    def __init__(self, argv: Sequence[str], *, log_path: Path, on_start: Callable[[int], None] = lambda pid: None,
                 on_death: Callable[[Death], None] = lambda death: None, restart_delay: float = 1.0,
                 max_delay: float = 30.0, stable_seconds: float = 60.0) -> None:
        self.argv = tuple(argv)
        self.log_path = log_path
        self.on_start = on_start
        self.on_death = on_death
        self.restart_delay = restart_delay
        self.max_delay = max_delay
        self.stable_seconds = stable_seconds
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def run(self, stop: threading.Event) -> SupervisionReport:
        """Keep the child running until `stop` is set; returns what happened."""
        report = SupervisionReport(self.argv, self.log_path)
        delay = self.restart_delay
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            while not stop.is_set():
                started = time.monotonic()
                offset = self.log_path.stat().st_size if self.log_path.exists() else 0
                with self.log_path.open("ab") as log:
                    self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                                    stderr=subprocess.STDOUT, start_new_session=True)
                report.starts += 1
                self.on_start(self.process.pid)
                while not stop.is_set() and self.process.poll() is None:
                    stop.wait(POLL_SECONDS)
                if stop.is_set():
                    break
                lived = time.monotonic() - started
                death = Death(at=datetime.now(UTC), pid=self.process.pid, returncode=self.process.returncode,
                              last_output=_last_line_since(self.log_path, offset), lived_seconds=lived)
                report.deaths.append(death)
                self.on_death(death)
                delay = self.restart_delay if lived >= self.stable_seconds else delay
                stop.wait(delay)
                delay = min(delay * 2, self.max_delay)
        finally:
            report.stopped_cleanly = self._stop_child()
        return report

    def _stop_child(self) -> bool:
        process = self.process
        if process is None or process.poll() is not None:
            return True
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_GRACE_SECONDS)
            return True
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return False


def _last_line_since(path: Path, offset: int) -> str:
    """The child's last non-empty line of output in this life (the log is appended to)."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(offset, os.path.getsize(path) - 64 * 1024))
            lines = [line.strip() for line in handle.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    return lines[-1] if lines else "no output"
