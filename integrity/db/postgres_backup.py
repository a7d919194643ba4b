"""PostgreSQL backups: pg_dump in custom format inside an exported snapshot.

The tool's connection opens a REPEATABLE READ transaction and exports its snapshot;
pg_dump dumps exactly that snapshot (`--snapshot`), and the counts and aggregates of
the manifest are read in it too (a second connection imports it, `SET TRANSACTION
SNAPSHOT`, and scans while pg_dump runs), so they describe exactly the dumped data even
while the game writes. pg_dump writes uncompressed (`-Z0`) into a pipe
that we compress with zstd: gzip, pg_dump's own default, is several times slower. Its
exit status is checked; a pipe would otherwise hide its failure.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa
import zstandard

from game_core.db import DatabaseTarget
from game_core.errors import PreconditionFailed
from game_core.schema_state import current_revision
from integrity.backups.archive import compress_stream
from integrity.backups.capture import Capture
from integrity.db.pg_tools import libpq_environment, require_tool, server_major, tool_error
from integrity.backups.repository import FileEntry
from integrity.backups.statistics import store_identity, table_statistics
from integrity.crashpoints import crash_point
from integrity.db.connect import Database
from integrity.errors import VerificationFailed
from integrity.progress import NO_PROGRESS, Reporter

DATA_FILE = "data.dump.zst"


class DumpFailed(VerificationFailed):
    """pg_dump exited non-zero; nothing was kept."""


class DumpRefused(PreconditionFailed):
    """pg_dump could not read the database: rights or connection (exit 4, not a damaged backup)."""


def capture(database: Database, workdir: Path, *, level: int, threads: int,
            progress: Reporter = NO_PROGRESS) -> Capture:
    timings: dict[str, float] = {}
    target = database.target
    with database.snapshot() as connection:  # the exported snapshot lives as long as it
        major = server_major(connection)
        tool = require_tool("pg_dump", major)
        snapshot = connection.execute(sa.text("SELECT pg_export_snapshot()")).scalar()
        source = _source(connection, target)

        # The counts and aggregates scan the tables in the same snapshot, from a second
        # connection, while pg_dump reads them and zstd compresses: the three overlap on
        # the server's and this host's cores instead of the scan waiting for the dump.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-facts") as pool:
            facts = pool.submit(_facts_in_snapshot, database, snapshot)
            started = time.perf_counter()
            try:
                with progress.task("pg_dump, compressing", unit="bytes") as task:  # the size is known at its end
                    digest = _dump(tool.path, snapshot, target, workdir / DATA_FILE, level=level, threads=threads,
                                   advance=task.advance)
            except BaseException:
                facts.cancel()
                raise
            timings["dump_seconds"] = time.perf_counter() - started
            statistics, identity, revision, timings["statistics_seconds"] = facts.result()
        crash_point("create:compressed")
    started = time.perf_counter()
    with_data = _tables_with_data(require_tool("pg_restore", major).path, workdir / DATA_FILE)
    without_data = () if with_data is None else tuple(sorted(set(statistics) - with_data))
    timings["contents_seconds"] = time.perf_counter() - started
    entry = FileEntry(
        name=DATA_FILE, kind="pg-custom", size=digest.size, sha256=digest.sha256,
        raw_size=digest.raw_size, raw_sha256=digest.raw_sha256,
    )
    return Capture(
        files=(entry,), tables=statistics, identity=identity, revision=revision,
        timings=timings, tool={"pg_dump": tool.version, "server_major": str(major)},
        source=source, tables_without_data=without_data,
    )


def _facts_in_snapshot(database: Database, snapshot: str):
    """Counts, aggregates, identity and revision read in the exported `snapshot` (a
    transaction of its own that imports it first, as pg_dump does), and how long they took."""
    if not re.fullmatch(r"[0-9A-Fa-f-]+", snapshot):  # SET takes no parameters: the id is written into it
        raise ValueError(f"unexpected snapshot id {snapshot!r} from pg_export_snapshot()")
    started = time.perf_counter()
    with database.snapshot() as connection:
        connection.execute(sa.text(f"SET TRANSACTION SNAPSHOT '{snapshot}'"))
        return (
            table_statistics(connection),
            store_identity(connection),
            current_revision(connection),
            time.perf_counter() - started,
        )


def _source(connection, target: DatabaseTarget) -> dict:
    """Which server and database this is. The system identifier tells two clusters apart
    even behind one host name; reading it needs a superuser or pg_read_all_settings on some
    servers, so a role without that records None rather than failing the backup."""
    try:
        with connection.begin_nested():
            system = connection.execute(sa.text("SELECT system_identifier::text FROM pg_control_system()")).scalar()
    except sa.exc.DBAPIError:
        system = None
    return {
        "host": target.url.host or "local socket",
        "port": target.url.port or 5432,
        "database": connection.execute(sa.text("SELECT current_database()")).scalar(),
        "system_identifier": system,
    }


def _tables_with_data(pg_restore: str, archive: Path) -> set[str] | None:
    """The tables whose rows the dump holds ("TABLE DATA" entries of its table of
    contents). pg_restore reads the TOC from the head of the stream and exits, so only the
    first frames are decompressed, whatever the dump's size."""
    process = subprocess.Popen([pg_restore, "--list"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
    feeder = threading.Thread(target=_feed, args=(archive, process.stdin), daemon=True)
    feeder.start()
    listing = process.stdout.read().decode("utf-8", "replace")
    returncode = process.wait()
    feeder.join()
    if returncode != 0:
        return None  # unknown, not empty: the hashes and the deep verification still judge the dump
    tables = set()
    for line in listing.splitlines():
        # e.g. "3345; 0 16390 TABLE DATA public results postgres"
        _, _, rest = line.partition(" TABLE DATA ")
        if rest and not line.startswith(";"):
            parts = rest.split()
            if len(parts) >= 2:
                tables.add(parts[1])
    return tables


def _feed(archive: Path, sink) -> None:
    try:
        with archive.open("rb") as handle, zstandard.ZstdDecompressor().stream_reader(handle) as reader:
            while chunk := reader.read(1 << 20):
                sink.write(chunk)
    except (BrokenPipeError, OSError):
        pass  # pg_restore has read its table of contents and gone
    finally:
        try:
            sink.close()
        except OSError:
            pass


def _dump(pg_dump: str, snapshot: str, target: DatabaseTarget, destination: Path, *, level: int, threads: int, advance=None):
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [pg_dump, "--format=custom", "--compress=0", f"--snapshot={snapshot}", "--no-password"],
            stdout=subprocess.PIPE,
            stderr=errors,
            env=libpq_environment(target.url),
        )
        try:
            digest = compress_stream(process.stdout, destination, level=level, threads=threads, advance=advance)
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
