"""One writer at a time per guarded database (DESIGN.md invariant 6).

SQLite: an operating-system lock on a file in the state directory, named after the
database's path. PostgreSQL: also a session advisory lock taken in the maintenance
database (`postgres`), so that hosts with different state directories still exclude
each other; like flock, it dies with the session that holds it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from game_core.db import POSTGRESQL, DatabaseTarget
from integrity.db.connect import maintenance
from integrity.locks import LockHeld, file_lock


def _key(target: DatabaseTarget) -> str:
    identity = str(target.sqlite_path) if target.sqlite_path else f"{target.url.host}:{target.url.port}/{target.url.database}"
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


@contextmanager
def database_lock(target: DatabaseTarget, *, state_dir: Path, command: str, wait_seconds: float) -> Iterator[None]:
    what = f"database {target.display}"
    with file_lock(state_dir / "locks" / f"database-{_key(target)}.lock", exclusive=True,
                   wait_seconds=wait_seconds, command=command, what=what):
        if target.kind != POSTGRESQL:
            yield
            return
        with _advisory_lock(target, command=command, wait_seconds=wait_seconds, what=what):
            yield


@contextmanager
def _advisory_lock(target: DatabaseTarget, *, command: str, wait_seconds: float, what: str) -> Iterator[None]:
    key = int(_key(target), 16) & 0x7FFF_FFFF_FFFF_FFFF  # a signed bigint
    with maintenance(target) as engine:
        with engine.connect() as connection:
            deadline = time.monotonic() + max(wait_seconds, 0)
            while not connection.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                if time.monotonic() >= deadline:
                    holder = connection.execute(sa.text(
                        "SELECT a.application_name, a.client_addr, a.pid, a.backend_start FROM pg_locks l "
                        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                        "AND l.granted AND (l.classid::bigint << 32 | l.objid::bigint) = :k LIMIT 1"
                    ), {"k": key}).first()
                    who = f"backend pid {holder.pid} from {holder.client_addr or 'local'}" if holder else "another host"
                    raise LockHeld(f"{what} locked by {who} (PostgreSQL advisory lock); wait for it, or run again with --lock-wait 600")
                time.sleep(0.1)
            try:
                yield
            finally:
                connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
