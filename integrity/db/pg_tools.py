"""Finding and running PostgreSQL's client tools (pg_dump, pg_restore) safely.

Connection parameters travel in libpq environment variables, never on the command line,
so a password never shows up in `ps`, logs or error messages. A tool must be at least
the server's major version (newer is fine).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL

from game_core.errors import PreconditionFailed


_QUERY_VARIABLES = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "application_name": "PGAPPNAME",
}


class ToolMissing(PreconditionFailed):
    """pg_dump or pg_restore is missing or older than the server."""


@dataclass(frozen=True)
class PgTool:
    path: str
    major: int
    version: str


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    # Debian keeps the client tools of every installed major version here.
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: _major_of_dir(p), reverse=True)
    return str(candidates[0]) if candidates else None


def _major_of_dir(path: Path) -> int:
    try:
        return int(path.parent.parent.name)
    except ValueError:
        return 0


def require_tool(name: str, server_major: int) -> PgTool:
    path = find_tool(name)
    if path is None:
        raise ToolMissing(f"{name} not found on PATH; install the PostgreSQL {server_major} client tools (apt-get install postgresql-client-{server_major})")
    output = _version_output(path)
    match = re.search(r"(\d+)(?:\.(\d+))?", output)
    if not match:
        raise ToolMissing(f"cannot read the version of {path} ({output!r})")
    major = int(match.group(1))
    if major < server_major:
        raise ToolMissing(
            f"{path} is version {major}, older than the server ({server_major}); install postgresql-client-{server_major} "
            "or newer and put it first on PATH"
        )
    return PgTool(path=path, major=major, version=output)


# `--version` of each tool file, keyed by what would change with an upgrade: a restore or a
# dry run asks for pg_dump and pg_restore several times, and each ask was a process (0.03-0.1 s).
_versions: dict[tuple[str, int, int, int], str] = {}


def _version_output(path: str) -> str:
    status = os.stat(path)
    key = (os.path.realpath(path), status.st_ino, status.st_size, status.st_mtime_ns)
    if key not in _versions:
        _versions[key] = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    return _versions[key]


def libpq_environment(url: URL, database: str | None = None) -> dict[str, str]:
    environment = dict(os.environ)
    for variable, value in (
        ("PGHOST", url.host),
        ("PGPORT", str(url.port) if url.port else None),
        ("PGUSER", url.username),
        ("PGPASSWORD", url.password),
        ("PGDATABASE", database or url.database),
    ):
        if value:
            environment[variable] = value
    for key, variable in _QUERY_VARIABLES.items():
        value = url.query.get(key)
        if isinstance(value, str):
            environment[variable] = value
    environment.setdefault("PGCONNECT_TIMEOUT", "10")
    return environment


def server_major(connection) -> int:
    import sqlalchemy as sa

    return int(connection.execute(sa.text("SHOW server_version_num")).scalar()) // 10000


def tool_error(stderr: bytes) -> str:
    """The line of a pg_dump/pg_restore error output that says why: the `error:` line (the
    `detail:` lines after it only quote the query), else the last line."""
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return next((line for line in lines if "error:" in line), lines[-1] if lines else "no message")


RESTORE_OPTIONS = ("--no-owner", "--no-privileges", "--exit-on-error", "--no-password")  # the target's roles may not exist
MAX_RESTORE_JOBS = 4


def parallel_restore_jobs(scratch_dir: Path, archive_bytes: int) -> int:
    """How many `pg_restore --jobs` a restore may use when its archive is first written, whole
    and uncompressed, into `scratch_dir`: one per core of this host (at most
    MAX_RESTORE_JOBS), or 1 (stream it instead, as pg_restore --jobs cannot read a pipe)
    on one core or when the archive would leave less than a tenth of the disk free."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores < 2:
        return 1
    scratch_dir.mkdir(parents=True, exist_ok=True)
    usage = shutil.disk_usage(scratch_dir)
    if usage.free - archive_bytes < usage.total / 10:
        return 1
    return min(cores, MAX_RESTORE_JOBS)


def restore_file(pg_restore: str, archive: Path, url: URL, *, jobs: int) -> tuple[int, str]:
    """pg_restore of a custom-format archive file into the empty database of `url`, its
    tables' data and then indexes and constraints spread over `jobs` connections (an
    archive pg_dump wrote into a pipe has no data offsets: pg_restore finds each table's
    data by reading the block headers of a seekable file). Its exit status and the line of
    its errors that says why."""
    finished = subprocess.run(
        [pg_restore, *RESTORE_OPTIONS, f"--jobs={jobs}", f"--dbname={url.database}", str(archive)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=libpq_environment(url),
    )
    return finished.returncode, tool_error(finished.stderr) if finished.returncode else ""
