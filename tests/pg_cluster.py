"""A throwaway PostgreSQL cluster: its own data directory and port, always removed.

The machine's server at 127.0.0.1:5432 is shared and never reconfigured or restarted by
a test (DEVELOPERS.md). A test run that needs a server of its own (each xdist worker,
so that its tests never see another worker's databases, scratch copies, sessions and
roles; clusters with WAL archiving) starts one with
`ThrowawayCluster.start()`: `initdb` and `pg_ctl` from `pg_config --bindir`, into a
temporary directory (in memory, /dev/shm, where the machine has it), on a free port,
listening on 127.0.0.1 only, trust auth, run as the
`postgres` OS user when we are root (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SERVER_OS_USER = "postgres"


def _bindir() -> Path:
    return Path(subprocess.run(["pg_config", "--bindir"], check=True, capture_output=True, text=True).stdout.strip())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_OS_USER, "--", *command] if os.geteuid() == 0 else command


def _memory_directory() -> str | None:
    """Where a throwaway cluster's files go: /dev/shm (memory) when this machine has it.
    Every test database and scratch copy is a CREATE DATABASE and a DROP, hundreds of files
    each; on ext4, under that churn, the kernel's search for a free inode that was not
    recently deleted cost the servers three times their own work (perf: 19% of the
    machine's CPU in the servers' kernel time against 6% in PostgreSQL itself, during the
    suite). On tmpfs 20 creates and drops of a migrated template took 0.33 s of the
    server's CPU instead of 0.6-1.1 s. Nothing of a throwaway cluster needs to survive."""
    memory = Path("/dev/shm")
    return str(memory) if memory.is_dir() and os.access(memory, os.W_OK) else None


@dataclass
class ThrowawayCluster:
    directory: Path
    port: int
    bindir: Path

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    @classmethod
    def start(cls, *, settings: dict[str, str] | None = None) -> ThrowawayCluster:
        """initdb and start; the server's own settings are PostgreSQL's defaults unless
        `settings` says otherwise (passed as -c options, not written to a config file)."""
        directory = Path(tempfile.mkdtemp(prefix="integrity-test-cluster-", dir=_memory_directory()))
        if os.geteuid() == 0:
            shutil.chown(directory, SERVER_OS_USER)
        cluster = cls(directory, _free_port(), _bindir())
        try:
            subprocess.run(
                _as_server_user([str(cluster.bindir / "initdb"), "-D", str(cluster.data), "-U", "postgres",
                                 "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]),
                check=True, capture_output=True, text=True,
            )
            options = {"port": str(cluster.port), "listen_addresses": "127.0.0.1",
                       "unix_socket_directories": str(directory), **(settings or {})}
            subprocess.run(
                _as_server_user([str(cluster.bindir / "pg_ctl"), "-D", str(cluster.data), "-w", "-t", "60",
                                 "-l", str(directory / "server.log"),
                                 "-o", " ".join(f"-c {key}={value}" for key, value in options.items()), "start"]),
                check=True, capture_output=True, text=True,
            )
        except subprocess.CalledProcessError as exc:
            log = directory / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            shutil.rmtree(directory, ignore_errors=True)
            raise RuntimeError(f"could not start a throwaway PostgreSQL cluster: {exc.stderr.strip()} {tail}") from None
        cluster._stop_when_gone(os.getpid())
        return cluster

    def _stop_when_gone(self, owner: int) -> None:
        """A watcher in a session of its own stops and removes the cluster once `owner` is
        gone, however it ended: a killed test run (SIGKILL skips atexit) must not leave a
        server running and its directory behind."""
        stop = " ".join(_as_server_user([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]))
        script = (f"while kill -0 {owner} 2>/dev/null; do sleep 1; done; "
                  f"{stop} >/dev/null 2>&1; rm -rf '{self.directory}'")
        subprocess.Popen(["sh", "-c", script], start_new_session=True, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        """Stop at once (nothing in it is worth a shutdown checkpoint) and remove it all."""
        subprocess.run(
            _as_server_user([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(self.directory, ignore_errors=True)
