"""PostgreSQL backups: pg_dump in custom format inside an exported snapshot.

The tool's connection opens a REPEATABLE READ transaction and exports its snapshot;
pg_dump dumps exactly that snapshot (`--snapshot`), and the counts and aggregates of
the manifest are read in the same transaction afterwards, so they describe exactly the
dumped data even while the game writes. pg_dump writes uncompressed (`-Z0`) into a pipe
that we compress with zstd: gzip, pg_dump's own default, is several times slower. Its
exit status is checked; a pipe would otherwise hide its failure.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from game_core.db import ConnectionSettings, DatabaseTarget, create_engine
from game_core.errors import PreconditionFailed
from game_core.schema_state import current_revision
from integrity.backups.archive import compress_stream
from integrity.backups.capture import Capture
from integrity.backups.pg_tools import libpq_environment, require_tool, server_major, tool_error
from integrity.backups.repository import FileEntry
from integrity.backups.statistics import store_identity, table_statistics
from integrity.crashpoints import crash_point
from integrity.errors import VerificationFailed

DATA_FILE = "data.dump.zst"


class DumpFailed(VerificationFailed):
    """pg_dump exited non-zero; nothing was kept."""


class DumpRefused(PreconditionFailed):
    """pg_dump could not read the database: rights or connection (exit 4, not a damaged backup)."""


def capture(target: DatabaseTarget, workdir: Path, *, settings: ConnectionSettings, level: int, threads: int) -> Capture:
    timings: dict[str, float] = {}
    engine = create_engine(target, read_only=True, settings=settings)
    try:
        with engine.connect() as connection:
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
            major = server_major(connection)
            tool = require_tool("pg_dump", major)
            snapshot = connection.execute(sa.text("SELECT pg_export_snapshot()")).scalar()

            started = time.perf_counter()
            digest = _dump(tool.path, snapshot, target, workdir / DATA_FILE, level=level, threads=threads)
            timings["dump_seconds"] = time.perf_counter() - started
            crash_point("create:compressed")

            started = time.perf_counter()
            statistics = table_statistics(connection)
            identity = store_identity(connection)
            revision = current_revision(connection)
            timings["statistics_seconds"] = time.perf_counter() - started
            connection.rollback()
    finally:
        engine.dispose()
    entry = FileEntry(
        name=DATA_FILE, kind="pg-custom", size=digest.size, sha256=digest.sha256,
        raw_size=digest.raw_size, raw_sha256=digest.raw_sha256,
    )
    return Capture(
        files=(entry,), tables=statistics, identity=identity, revision=revision,
        timings=timings, tool={"pg_dump": tool.version, "server_major": str(major)},
    )


def _dump(pg_dump: str, snapshot: str, target: DatabaseTarget, destination: Path, *, level: int, threads: int):
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [pg_dump, "--format=custom", "--compress=0", f"--snapshot={snapshot}", "--no-password"],
            stdout=subprocess.PIPE,
            stderr=errors,
            env=libpq_environment(target.url),
        )
        try:
            digest = compress_stream(process.stdout, destination, level=level, threads=threads)
        finally:
            process.stdout.close()
            returncode = process.wait()
        if returncode != 0:
            errors.seek(0)
            cause = tool_error(errors.read())
            if "permission denied" in cause or "could not connect" in cause or "authentication failed" in cause:
                raise DumpRefused(f"pg_dump exited with status {returncode}: {cause}; check the rights of the user in [database] url (`integrity backup check` lists them)")
            raise DumpFailed(f"pg_dump exited with status {returncode}: {cause}")
    return digest
