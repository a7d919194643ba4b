"""Scratch copies of a killed run are removed by the next run, and only those.

A drill SIGKILLed with its restored copy in place (a real subprocess, on both engines)
leaves that copy; the next drill removes it and leaves nothing. A copy whose run is
alive, a copy kept on purpose (`--keep-copy`), and on PostgreSQL an orphan someone is
connected to, are left alone.
"""

from __future__ import annotations

import signal
from pathlib import Path

import sqlalchemy as sa

from backup_helpers import BackupEnv, fill_database, wait_for
from conftest import drop_pg_database, pg_url_for, wait_until_nobody_connected
from test_drill import _scratch_left  # files in the state dir's scratch, or scratch databases
from integrity.db.claims import (
    CLAIM_SUFFIX,
    KEPT_COMMENT,
    SCRATCH_PREFIX,
    claimed_path,
    reclaim_databases,
    reclaim_files,
    scratch_databases,
)


def _scratch_databases(admin) -> list[str]:
    with admin.connect() as connection:
        return connection.execute(
            sa.text("SELECT datname FROM pg_database WHERE starts_with(datname, :p) ORDER BY 1"), {"p": SCRATCH_PREFIX}
        ).scalars().all()


# ---------------------------------------------------------------- a killed drill, both engines


def test_a_killed_drills_copy_is_removed_by_the_next_drill(database_url, tmp_path, request):
    fill_database(database_url, players=5, results_per_player=20)
    env = BackupEnv(tmp_path, database_url)
    env.create()
    before = _scratch_left(env, request)

    crashed = env.run("drill", INTEGRITY_CRASH_AT="drill:restored")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    # On PostgreSQL the killed run's claim goes with its backend, which the server ends
    # asynchronously (PITFALLS): wait, bounded, for the orphan to be unclaimed.
    wait_for(lambda: [name for name in _scratch_left(env, request) if name not in before], timeout=10,
             what="the killed drill's restored copy, unclaimed")
    left = [name for name in _scratch_left(env, request) if name not in before]
    assert left, "the killed drill's restored copy should still be there"

    completed = env.run("drill")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert [name for name in _scratch_left(env, request) if name in left] == []
    if not env.url.startswith("postgresql"):
        assert _scratch_left(env, request) == []  # the copy, its companions and its claim


# ---------------------------------------------------------------- files in the state directory


def _orphan(scratch: Path, name: str) -> Path:
    """A copy and its claim file as a killed run leaves them: the claim not locked."""
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / name
    path.write_bytes(b"copy")
    Path(f"{path}-wal").write_bytes(b"wal")
    (scratch / f"{name}{CLAIM_SUFFIX}").write_bytes(b"")
    return path


def test_an_orphaned_file_and_folder_are_reclaimed_with_their_companions(tmp_path):
    scratch = tmp_path / "scratch"
    _orphan(scratch, "a.db")
    folder = scratch / "dry-run-1"
    folder.mkdir(parents=True)
    (folder / "before.db").write_bytes(b"x")
    (scratch / f"dry-run-1{CLAIM_SUFFIX}").write_bytes(b"")

    assert reclaim_files(scratch) == ["a.db", "dry-run-1"]
    assert list(scratch.iterdir()) == []


def test_a_copy_in_use_is_left_alone(tmp_path):
    scratch = tmp_path / "scratch"
    with claimed_path(scratch, "live.db") as path:
        path.write_bytes(b"in use")
        assert reclaim_files(scratch) == []  # another open file description: flock conflicts
        assert path.read_bytes() == b"in use"
    assert list(scratch.iterdir()) == []  # removed on the way out, claim too


def test_a_kept_copy_and_an_unclaimed_one_are_left_alone(tmp_path):
    scratch = tmp_path / "scratch"
    with claimed_path(scratch, "kept", keep=True) as folder:
        folder.mkdir()
        (folder / "work.db").write_bytes(b"kept")
    (scratch / "older.db").write_bytes(b"made before claims")

    assert reclaim_files(scratch) == []
    assert sorted(p.name for p in scratch.iterdir()) == ["kept", "older.db"]
    # A new claim sweeps the directory on its way in: still nothing of these goes.
    _orphan(scratch, "dead.db")
    with claimed_path(scratch, "new.db"):
        assert sorted(p.name for p in scratch.iterdir()) == ["kept", "new.db.claim", "older.db"]


# ---------------------------------------------------------------- PostgreSQL scratch databases


def _create(admin, name: str) -> str:
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return name


def test_an_orphaned_scratch_database_is_dropped(pg_admin, request):
    admin = pg_admin
    name = _create(admin, f"{SCRATCH_PREFIX}test_orphan")  # nobody holds its claim
    request.addfinalizer(lambda: drop_pg_database(admin, name))
    with admin.connect() as connection:
        assert name in reclaim_databases(connection)
    assert name not in _scratch_databases(admin)


def test_a_scratch_database_in_use_kept_or_visited_is_left_alone(pg_admin, request):
    admin = pg_admin  # an AUTOCOMMIT engine on the maintenance database, as `integrity.db.connect.maintenance` makes
    visited = f"{SCRATCH_PREFIX}test_visited"
    kept = f"{SCRATCH_PREFIX}test_kept"
    live = f"{SCRATCH_PREFIX}test_live"
    for name in (visited, kept, live):
        request.addfinalizer(lambda name=name: drop_pg_database(admin, name))

    with scratch_databases(admin) as databases:
        databases.create(kept, keep=True)
    with admin.connect() as connection:
        comment = connection.execute(
            sa.text("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :n"), {"n": kept}
        ).scalar()
    assert comment.startswith(KEPT_COMMENT)

    _create(admin, visited)  # an orphan: nobody holds its claim
    engine = sa.create_engine(pg_url_for(visited))
    try:
        with engine.connect(), scratch_databases(admin) as databases:  # an engineer looking into an orphan
            databases.create(live)
            with admin.connect() as sweeper:  # another session, as another run's sweep
                assert not {visited, kept, live} & set(reclaim_databases(sweeper))
            assert {visited, kept, live} <= set(_scratch_databases(admin))
    finally:
        engine.dispose()
    wait_until_nobody_connected(admin, visited)  # the engineer's backend ends asynchronously
    assert live not in _scratch_databases(admin)  # dropped by its owner on the way out
    with admin.connect() as sweeper:  # nobody in it any more: an orphan like the others
        reclaimed = reclaim_databases(sweeper)
    assert visited in reclaimed and kept not in reclaimed
    assert kept in _scratch_databases(admin)
