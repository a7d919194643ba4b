"""The main path on the machine's own PostgreSQL server at 127.0.0.1:5432.

Every other PostgreSQL test runs on a throwaway cluster of its worker's own, started
without fsync (tests/conftest.py): the same PostgreSQL, but not the server as the
machine configured it. This module runs what an operator runs first (backup, deep
verify, a restore that swaps, a drill, an audit, status) against that server itself, with fsync
and its own settings, in a database of its own that it drops afterwards; the server is
never reconfigured.
"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from backup_helpers import BackupEnv, execute, fill_database, scalar
from conftest import SHARED_SERVER_URL, drop_pg_database, reachable_admin
from game_core.db import create_engine
from game_core.schema_state import upgrade_to_head
from restore_helpers import drop_restore_leftovers

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def shared_admin():
    engine = reachable_admin(SHARED_SERVER_URL)
    yield engine
    engine.dispose()


@pytest.fixture
def shared_url(shared_admin):
    name = f"tg_shared_{uuid.uuid4().hex[:10]}"
    with shared_admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(SHARED_SERVER_URL).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    with engine.begin() as connection:
        upgrade_to_head(connection)
    engine.dispose()
    yield url
    drop_restore_leftovers(shared_admin, name)
    drop_pg_database(shared_admin, name)


def test_backup_verify_restore_drill_and_status_on_the_machines_server(shared_url, shared_admin, tmp_path):
    assert sa.make_url(shared_url).port == 5432
    fill_database(shared_url, players=5, results_per_player=4)
    env = BackupEnv(tmp_path, shared_url)
    backup_id = env.create()
    verified = env.invoke("backup", "verify", backup_id, "--deep")
    assert verified.returncode == 0, verified.output

    before = scalar(shared_url, "SELECT SUM(level) FROM progress")
    execute(shared_url, "UPDATE progress SET level = level + 1")
    restored = env.invoke("--no-input", "restore", backup_id, "--yes")
    assert restored.returncode == 0, restored.output
    assert scalar(shared_url, "SELECT SUM(level) FROM progress") == before

    drilled = env.invoke("drill", "--backup", backup_id)
    assert drilled.returncode == 0, drilled.output
    audited = env.invoke("audit")
    assert audited.returncode == 0, audited.output
    status = env.invoke("status")
    assert status.returncode == 0, status.output
