"""SQLite backups: the online backup API in one step, then streamed compression.

One step (`pages=-1`) because a stepped copy restarts whenever another connection
writes and may never finish under the game's load (PITFALLS.md). The source is opened
read-only; counts, aggregates, identity and revision are read from the copy, so they
describe exactly what was copied.
"""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

from game_core.db import parse_database_url
from game_core.schema_state import current_revision
from integrity.backups.archive import compress_stream
from integrity.backups.capture import Capture
from integrity.backups.repository import FileEntry
from integrity.backups.statistics import store_identity, table_statistics
from integrity.crashpoints import crash_point
from integrity.db.connect import Database
from integrity.progress import NO_PROGRESS, Reporter

DATA_FILE = "data.db.zst"


def copy_database(source: Path, destination: Path, *, busy_timeout_ms: int) -> None:
    """A consistent copy of a live SQLite database through the backup API, never fsynced:
    it is scratch, read once by the compression and removed (a crash leaves it in the
    `.tmp-` directory that prune removes); what a backup keeps is the compressed file,
    fsynced. Syncing the copy cost a write of the whole database to disk (`sqlite3
    .backup` pays it) for bytes that are deleted seconds later, mostly still in the page
    cache."""
    reader = sqlite3.connect(f"file:{quote(str(source))}?mode=ro", uri=True, timeout=busy_timeout_ms / 1000)
    try:
        reader.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        writer = sqlite3.connect(str(destination))
        try:
            writer.execute("PRAGMA synchronous = OFF")
            reader.backup(writer, pages=-1)
            # The copy is a plain rollback-journal file: no -wal beside it to lose.
            writer.execute("PRAGMA journal_mode = DELETE")
        finally:
            writer.close()
    finally:
        reader.close()


def _read_facts(copy_path: Path):
    """Counts, aggregates, store identity and revision of the copy, and how long they took."""
    started = time.perf_counter()
    with Database(parse_database_url(str(copy_path))).reader() as engine, engine.connect() as connection:
        return (
            table_statistics(connection),
            store_identity(connection),
            current_revision(connection),
            time.perf_counter() - started,
        )


def capture(source: Path, workdir: Path, *, busy_timeout_ms: int, level: int, threads: int,
            progress: Reporter = NO_PROGRESS) -> Capture:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    copy_path = workdir / "copy.db"
    with progress.task("copying the database (one step)", unit="bytes"):
        copy_database(source, copy_path, busy_timeout_ms=busy_timeout_ms)
    timings["copy_seconds"] = time.perf_counter() - started
    crash_point("create:copied")

    # Counts and aggregates scan the copy while zstd compresses it: SQLite and zstd both
    # release the GIL, so on two cores the scan costs almost nothing extra.
    with ThreadPoolExecutor(max_workers=1) as pool:
        facts = pool.submit(_read_facts, copy_path)
        started = time.perf_counter()
        with copy_path.open("rb") as raw, progress.task(
            "compressing", total=copy_path.stat().st_size, unit="bytes"
        ) as task:
            digest = compress_stream(raw, workdir / DATA_FILE, level=level, threads=threads, advance=task.advance)
        timings["compress_seconds"] = time.perf_counter() - started
        statistics, identity, revision, timings["statistics_seconds"] = facts.result()
    copy_path.unlink()
    crash_point("create:compressed")
    entry = FileEntry(
        name=DATA_FILE, kind="sqlite-db", size=digest.size, sha256=digest.sha256,
        raw_size=digest.raw_size, raw_sha256=digest.raw_sha256,
    )
    return Capture(files=(entry,), tables=statistics, identity=identity, revision=revision, timings=timings, tool={},
                   source={"path": str(source.resolve())})


def game_identity(source: Path, *, busy_timeout_ms: int) -> str | None:
    """The store identity of a SQLite file, read-only and before anything is copied; None
    when the file is no SQLite database or not the game's (a 0-byte file, /dev/null,
    another application's database all open as SQLite, so ask for the game's own row)."""
    try:
        reader = sqlite3.connect(f"file:{quote(str(source))}?mode=ro", uri=True, timeout=busy_timeout_ms / 1000)
    except sqlite3.Error:
        return None
    try:
        row = reader.execute("SELECT identity_uuid FROM store_identity WHERE id = 1").fetchone()
        reader.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    finally:
        reader.close()
    return row[0] if row else None
