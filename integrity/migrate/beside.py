"""Fingerprints of a big SQLite copy, taken in a child process beside other work.

A SQLite fingerprint is a Python pass over every row (about 100,000 rows/s): on the
1 GB benchmark database, one took 70 s. The copy being fingerprinted is a file nobody
writes meanwhile, so a second process can read it while this one fingerprints the
source (the proof of the work copy) or runs the audits (the migrated copy): on two
cores that halves those phases. After the upgrade only the tables whose pages changed
are read (integrity.migrate.pages), so the child is started when those are big; small
reads (tests, most real databases, a revision that adds a column) stay in-process:
starting a Python child costs about a second.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

from game_core.db import SQLITE, ConnectionSettings, DatabaseTarget, parse_database_url
from integrity.fingerprint import TableFingerprint

if TYPE_CHECKING:
    from integrity.migrate.pages import KnownState, TablePages

# Below this size a child process costs more than it saves.
PARALLEL_BYTES = 64 * 1024 * 1024


def _state(url: str, settings: ConnectionSettings, known, pages) -> KnownState:
    from integrity.db.connect import Database
    from integrity.migrate.pages import fingerprints_reusing

    with Database(parse_database_url(url), settings).reader() as engine:
        return fingerprints_reusing(engine, known, pages=pages)


def fingerprints_beside(target: DatabaseTarget, settings: ConnectionSettings) -> Callable[[], dict[str, TableFingerprint]]:
    """Start fingerprinting every table of `target`; the returned function waits for and
    returns them (`state_beside` without a known state)."""
    state = state_beside(target, settings)
    return lambda: state().prints


def state_beside(target: DatabaseTarget, settings: ConnectionSettings, known: KnownState | None = None,
                 pages: dict[str, TablePages] | None = None) -> Callable[[], KnownState]:
    """Start taking `target`'s fingerprints and pages (`pages` when the caller just read
    them), reusing `known`'s fingerprints for the tables whose pages did not change
    (integrity.migrate.pages); the returned function waits for and returns them.

    A child process (spawned, not forked: the parent holds open database connections)
    for a big SQLite file; in-process, when called, otherwise."""
    url = target.url.render_as_string(hide_password=False)
    path = target.sqlite_path
    size = None if path is None else path.stat().st_size
    if known is not None and pages:
        size = known.bytes_to_read(pages)  # only the tables whose pages changed are read
    if target.kind != SQLITE or size is None or size < PARALLEL_BYTES:
        return lambda: _state(url, settings, known, pages)
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    future = pool.submit(_state, url, settings, known, pages)

    def result() -> KnownState:
        try:
            return future.result()
        finally:
            pool.shutdown()

    return result
