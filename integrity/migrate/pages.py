"""The tables of a SQLite copy that a migration step left alone, found from their pages.

A dry run needs the work copy's content fingerprints after the upgrade, after the
downgrade and after the upgrade again. Each is a Python pass over every row
(`integrity.fingerprint`, about 60 s on the 1 GB benchmark database), although a
revision usually touches one or two tables. A table whose b-tree (the pages it owns, as
the `dbstat` virtual table lists them) holds the same bytes at the same page numbers,
under the same CREATE statement, as at a moment whose fingerprint is known holds the
same rows: that fingerprint is still its own. Hashing the pages is one sequential read
of the file at C speed; only the tables whose pages differ are read row by row. On the
1 GB database the round trip of a safe revision took 78 s with full passes, 3 s so.

A difference in pages never hides a change in rows: at worst (a rebuild that wrote the
same rows anew, a VACUUM) a table whose rows did not change is read again. The file
must be the whole database: the caller checkpoints the WAL (`checkpoint`), and a
non-empty `-wal` beside the file gives no page digests, so every table is read. So do
SQLite builds without dbstat, and PostgreSQL, whose fingerprints the server hashes.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from integrity.fingerprint import TableFingerprint, database_fingerprints
from integrity.progress import NO_PROGRESS, Reporter

READ_BYTES = 1 << 20  # the file is read in slices this big


@dataclass(frozen=True)
class TablePages:
    """One table's b-tree as stored: its CREATE statement, root page, the pages it owns
    (b-tree and overflow pages, ascending), and the digest of their numbers and bytes."""

    sql: str
    root: int
    pages: array
    digest: str
    page_size: int

    @property
    def bytes(self) -> int:
        return len(self.pages) * self.page_size

    def same_bytes(self, other: "TablePages | None") -> bool:
        """The same rows stored byte for byte (the CREATE statement may differ: ADD COLUMN
        rewrites no row)."""
        return other is not None and (self.root, self.digest) == (other.root, other.digest)


@dataclass(frozen=True)
class KnownState:
    """A database's content fingerprints and its tables' pages at one moment (no pages:
    nothing can be reused from it)."""

    prints: dict[str, TableFingerprint]
    pages: dict[str, TablePages] = field(default_factory=dict)

    def unchanged(self, pages: dict[str, TablePages]) -> set[str]:
        """The tables stored now (`pages`) exactly as at this moment, statement included."""
        return {name for name, now in pages.items() if name in self.prints and self.pages.get(name) == now}

    def bytes_to_read(self, pages: dict[str, TablePages]) -> int | None:
        """The size of the tables whose rows must be read again; None when unknown (no pages)."""
        if not pages:
            return None
        unchanged = self.unchanged(pages)
        return sum(table.bytes for name, table in pages.items() if name not in unchanged)


def checkpoint(engine: Engine) -> None:
    """Move a SQLite copy's WAL into its file, so that the file is the whole database
    (outside any transaction: a checkpoint inside one cannot finish)."""
    if engine.dialect.name != "sqlite":
        return
    raw = engine.raw_connection()
    try:
        raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        raw.close()


def page_digests(engine: Engine, reference: dict[str, TablePages] | None = None) -> dict[str, TablePages]:
    """{table: its pages}; {} when the file cannot be read as the database (not SQLite, no
    dbstat, WAL frames not checkpointed). Nobody may write the database meanwhile: it is
    a dry run's copy.

    Which pages a table owns is dbstat's walk of its b-tree (3 s on the 1 GB database),
    except for a table whose root page is the one in `reference` and whose pages there
    hold the same bytes now: every page its root reaches is then one of those (the root's
    child pointers are the same, and so on down), so it owns exactly them, unwalked."""
    if engine.dialect.name != "sqlite":
        return {}
    raw = engine.raw_connection()
    try:
        connection = raw.driver_connection
        path = next((row[2] for row in connection.execute("PRAGMA database_list") if row[1] == "main"), "")
        if not path or _wal_has_frames(Path(path)):
            return {}
        file = Path(path)
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        tables = connection.execute(
            "SELECT name, rootpage, coalesce(sql, '') FROM sqlite_schema WHERE type = 'table' ORDER BY name"
        ).fetchall()
        reference = reference or {}
        owned = {name: reference[name].pages for name, root, _sql in tables
                 if name in reference and reference[name].root == root}
        digests = _hash_pages(file, page_size, owned)
        confirmed = {name for name in owned if digests[name] == reference[name].digest}
        walk = [name for name, _root, _sql in tables if name not in confirmed]
        try:
            walked = {name: array("I", sorted(page for (page,) in connection.execute(
                "SELECT pageno FROM dbstat WHERE name = ?", (name,)))) for name in walk}
        except sqlite3.OperationalError:  # no such table: dbstat (a build without it)
            return {}
    finally:
        raw.close()
    digests.update(_hash_pages(file, page_size, walked))
    owned.update(walked)
    return {name: TablePages(sql, root, owned[name], digests[name], page_size) for name, root, sql in tables}


def _wal_has_frames(path: Path) -> bool:
    wal = path.with_name(path.name + "-wal")
    return wal.exists() and wal.stat().st_size > 0


def _hash_pages(path: Path, page_size: int, owned: dict[str, array]) -> dict[str, str]:
    """{table: SHA-256 of its page numbers and page bytes} (SHA-256: the CPU's own
    instructions make it 2.4 times blake2b's speed here). One sequential read of the
    file when the pages are many, a read per page when they are few."""
    if not owned:
        return {}
    digests = {name: hashlib.sha256() for name in owned}
    total = sum(len(pages) for pages in owned.values())
    with path.open("rb") as file:
        file_pages = max(1, file.seek(0, 2) // page_size)
        if total * 8 < file_pages:
            for name, pages in owned.items():
                digest = digests[name]
                for number in pages:
                    digest.update(number.to_bytes(4, "little"))
                    digest.update(os.pread(file.fileno(), page_size, (number - 1) * page_size))
            return {name: digest.hexdigest() for name, digest in digests.items()}
        owner: list = [None] * (file_pages + 2)
        for name, pages in owned.items():
            for number in pages:
                if number < len(owner):
                    owner[number] = digests[name]
        file.seek(0)
        per_read = max(1, READ_BYTES // page_size)
        number = 1  # SQLite numbers pages from 1
        while chunk := file.read(per_read * page_size):
            view = memoryview(chunk)
            for offset in range(0, len(chunk) - page_size + 1, page_size):
                digest = owner[number] if number < len(owner) else None
                if digest is not None:
                    digest.update(number.to_bytes(4, "little"))
                    digest.update(view[offset:offset + page_size])
                number += 1
    return {name: digest.hexdigest() for name, digest in digests.items()}


def fingerprints_reusing(engine: Engine, known: KnownState | None = None, *, pages: dict[str, TablePages] | None = None,
                         progress: Reporter = NO_PROGRESS, what: str = "fingerprinting") -> KnownState:
    """The database's fingerprints now, each table's taken over from `known` when its
    pages are the same as then, read row by row otherwise; with its pages (`pages` when
    the caller just read them), so that a later state can reuse these in turn."""
    if pages is None:
        pages = page_digests(engine, known.pages if known else None)
    reused = known.unchanged(pages) if known else set()
    with engine.connect() as connection:
        present = sorted(sa.inspect(connection).get_table_names())
        unread = [name for name in present if name not in reused]
        fresh = database_fingerprints(connection, unread, progress=progress, what=what) if unread else {}
    prints = {name: known.prints[name] if name in reused else fresh[name] for name in present}
    return KnownState(prints, pages)
