"""Fingerprints of a big SQLite copy, taken in a child process beside other work.

A SQLite fingerprint is a Python pass over every row (about 100,000 rows/s): on the
1 GB benchmark database, one took 70 s and a dry run needs several. The copy being
fingerprinted is a file nobody writes meanwhile, so a second process can read it while
this one fingerprints the source or runs the audits: on two cores that halves those
phases. Small databases (tests, most real ones) stay in-process: starting a Python
child costs about a second.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from game_core.db import SQLITE, ConnectionSettings, DatabaseTarget, parse_database_url
from integrity.fingerprint import TableFingerprint

# Below this size a child process costs more than it saves.
PARALLEL_BYTES = 64 * 1024 * 1024


def _fingerprints(url: str, settings: ConnectionSettings) -> dict[str, TableFingerprint]:
    from integrity.db.connect import Database
    from integrity.fingerprint import database_fingerprints

    with Database(parse_database_url(url), settings).reader() as engine, engine.connect() as connection:
        return database_fingerprints(connection)


def fingerprints_beside(target: DatabaseTarget, settings: ConnectionSettings) -> Callable[[], dict[str, TableFingerprint]]:
    """Start fingerprinting `target`; the returned function waits for and returns them.

    A child process (spawned, not forked: the parent holds open database connections)
    for a big SQLite file; in-process, when called, otherwise."""
    url = target.url.render_as_string(hide_password=False)
    path = target.sqlite_path
    if target.kind != SQLITE or path is None or path.stat().st_size < PARALLEL_BYTES:
        return lambda: _fingerprints(url, settings)
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    future = pool.submit(_fingerprints, url, settings)

    def result() -> dict[str, TableFingerprint]:
        try:
            return future.result()
        finally:
            pool.shutdown()

    return result
