"""Helpers of tests/test_scheduler.py: `integrity schedule run` as a real subprocess with
second-scale schedules, the ledger read back, and a local HTTP server that records pings."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from backup_helpers import BackupEnv
from integrity.settings import JOBS


def only(**schedules: str) -> dict[str, str]:
    """INTEGRITY_SCHEDULE__* turning every job off except the ones given."""
    env = {f"INTEGRITY_SCHEDULE__{job.upper()}": "off" for job in JOBS}
    env.update({f"INTEGRITY_SCHEDULE__{job.upper()}": value for job, value in schedules.items()})
    return env


@dataclass
class Daemon:
    process: subprocess.Popen
    stdout: str = ""
    stderr: str = ""

    def stop(self, *, signals: int = 1, between: float = 0.3, timeout: float = 30) -> int:
        for i in range(signals):
            if i:
                time.sleep(between)
            self.process.send_signal(signal.SIGTERM)
        self.stdout, self.stderr = self.process.communicate(timeout=timeout)
        assert "Traceback" not in self.stderr, self.stderr
        return self.process.returncode


def start_daemon(env: BackupEnv, *args: str, **extra: str) -> Daemon:
    return Daemon(env.popen(*args, "schedule", "run", env=env.process_env(**extra)))


def wait_for(predicate, *, timeout: float = 20, every: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def ledger_for(env: BackupEnv, **extra: str):
    from integrity.ledger import Ledger

    settings = env.settings(**extra)
    return Ledger.open(settings.state.dir, settings.state.ledger_url)


def job_runs(env: BackupEnv, command: str = "backup create", **extra: str):
    """Finished runs of `command` recorded by the scheduler, oldest first."""
    ledger = ledger_for(env, **extra)
    try:
        return [r for r in reversed(ledger.runs(kind=command, limit=500)) if r.command == command and r.exit_code is not None]
    finally:
        ledger.close()


def schedule_events(env: BackupEnv, **extra: str):
    from integrity.scheduler import records

    ledger = ledger_for(env, **extra)
    try:
        return list(reversed(records.events(ledger, limit=1000)))
    finally:
        ledger.close()


def temp_dirs(env: BackupEnv) -> list[Path]:
    from integrity.backups.repository import TEMP_PREFIX

    backups = env.repository().backups_dir
    return sorted(p for p in backups.iterdir() if p.name.startswith(TEMP_PREFIX)) if backups.is_dir() else []


class PingServer:
    """A local http.server recording (path, body) of every ping, in arrival order."""

    def __init__(self):
        received: list[tuple[str, str]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                received.append((self.path, self.rfile.read(length).decode()))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, *args):
                pass

        self.received = received
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


