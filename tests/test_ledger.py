"""The ledger of runs: recording, reading, filtering, its versioned layout, PostgreSQL,
and a clear exit 4 when it cannot be written."""

from __future__ import annotations

import logging
import os
import socket
import stat
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from game_core.db import create_engine
from game_core.errors import ExitCode
from integrity import __version__
from integrity.errors import LedgerUnavailable
from integrity.ledger import LEDGER_SCHEMA_VERSION, Ledger, outcome_for


@pytest.fixture
def state_dir(tmp_path):
    return tmp_path / "state"


@pytest.fixture
def ledger(state_dir):
    opened = Ledger.open(state_dir)
    yield opened
    opened.close()


@pytest.fixture
def ledger_logs(caplog, monkeypatch):
    """Warnings of integrity.ledger, even after a CLI run rewired the 'integrity' logger."""
    root = logging.getLogger("integrity")
    monkeypatch.setattr(root, "propagate", True)
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", logging.NOTSET)
    caplog.set_level(logging.WARNING, logger="integrity.ledger")
    return caplog


def raw_rows(engine, sql: str):
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.text(sql))]


# ---------------------------------------------------------------- recording and reading


def test_start_records_a_running_run_with_who_and_where(ledger):
    before = datetime.now(timezone.utc)
    run_id = ledger.start("backup create")
    [run] = ledger.runs()
    assert run.id == run_id and len(run_id) == 32
    assert run.command == "backup create"
    assert run.outcome == "running"
    assert run.exit_code is None and run.finished_at is None and run.duration_seconds is None
    assert run.summary == {}
    assert run.host == socket.gethostname()
    assert run.pid == os.getpid()
    assert run.tool_version == __version__
    assert run.started_at.tzinfo is not None
    assert before - timedelta(seconds=1) <= run.started_at <= datetime.now(timezone.utc)


def test_finish_records_exit_code_outcome_and_summary(ledger):
    run_id = ledger.start("status")
    ledger.finish(run_id, 4, {"error": "database /x.db does not exist", "checks": {"database": "precondition"}})
    [run] = ledger.runs()
    assert run.exit_code == 4
    assert run.outcome == "precondition"
    assert run.summary == {"error": "database /x.db does not exist", "checks": {"database": "precondition"}}
    assert run.finished_at is not None and run.finished_at >= run.started_at
    assert run.duration_seconds >= 0


def test_finish_touches_only_its_own_run(ledger):
    first = ledger.start("status")
    second = ledger.start("status")
    ledger.finish(second, 0)
    by_id = {run.id: run for run in ledger.runs()}
    assert by_id[first].outcome == "running" and by_id[first].exit_code is None
    assert by_id[second].outcome == "ok" and by_id[second].exit_code == 0


@pytest.mark.parametrize(
    "code, outcome",
    [(0, "ok"), (1, "error"), (2, "error"), (3, "problems"), (4, "precondition"), (5, "failed"), (130, "interrupted")],
)
def test_outcome_of_each_exit_code(ledger, code, outcome):
    assert outcome_for(code) == outcome
    run_id = ledger.start("status")
    ledger.finish(run_id, ExitCode(code))
    assert ledger.last("status").outcome == outcome


def test_runs_are_newest_first_and_limited(ledger):
    ids = [ledger.start(f"cmd{i}") for i in range(5)]
    assert [run.id for run in ledger.runs()] == ids[::-1]
    assert [run.command for run in ledger.runs(limit=2)] == ["cmd4", "cmd3"]


def test_kind_filters_by_command_or_command_group(ledger):
    for command in ("backup create", "status", "backup verify", "backups", "backupx", "backup", "init"):
        ledger.finish(ledger.start(command), 0)
    assert [r.command for r in ledger.runs(kind="backup")] == ["backup", "backup verify", "backup create"]
    assert [r.command for r in ledger.runs(kind="backup create")] == ["backup create"]
    assert [r.command for r in ledger.runs(kind="status")] == ["status"]
    assert ledger.runs(kind="restore") == []
    assert len(ledger.runs(kind=None)) == 7


def test_last_run_of_a_command_optionally_with_an_outcome(ledger):
    assert ledger.last("status") is None
    good = ledger.start("status")
    ledger.finish(good, 0)
    bad = ledger.start("status")
    ledger.finish(bad, 4)
    ledger.finish(ledger.start("init"), 0)
    assert ledger.last("status").id == bad
    assert ledger.last("status", outcome="ok").id == good
    assert ledger.last("status", outcome="failed") is None
    assert ledger.last("stat") is None  # exact command, no prefix match


def test_runs_survive_reopening(state_dir):
    first = Ledger.open(state_dir)
    run_id = first.start("init")
    first.finish(run_id, 0, {"schema_created": True})
    first.close()
    again = Ledger.open(state_dir)
    [run] = again.runs()
    again.close()
    assert (run.id, run.command, run.exit_code, run.summary) == (run_id, "init", 0, {"schema_created": True})


def test_the_ledger_is_a_file_in_the_state_directory(ledger, state_dir):
    assert ledger.location == str(state_dir / "ledger.db")
    assert (state_dir / "ledger.db").is_file()


# ---------------------------------------------------------------- versioned layout


def test_fresh_ledger_gets_the_current_layout(ledger):
    assert LEDGER_SCHEMA_VERSION == 6
    assert ledger.schema_version() == 6
    assert raw_rows(ledger.engine, "SELECT key, value FROM ledger_meta") == [("schema_version", "6")]
    assert set(sa.inspect(ledger.engine).get_table_names()) == {
        "ledger_meta", "runs", "audit_runs", "audit_rule_counts", "claims", "schedule_events", "heartbeats",
        "migration_dry_runs", "notify_conditions",
    }


def test_a_layout_1_ledger_is_upgraded_in_place_keeping_its_runs(state_dir):
    """What the first release wrote: runs only. A newer tool reads it and adds its tables."""
    state_dir.mkdir()
    import sqlite3

    old = sqlite3.connect(state_dir / "ledger.db")
    old.executescript(
        "CREATE TABLE ledger_meta (key VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO ledger_meta VALUES ('schema_version', '1');"
        "CREATE TABLE runs (id VARCHAR(32) PRIMARY KEY, command VARCHAR(128) NOT NULL, started_at DATETIME NOT NULL,"
        " finished_at DATETIME, outcome VARCHAR(16) NOT NULL, exit_code INTEGER, summary TEXT NOT NULL,"
        " host VARCHAR(255) NOT NULL, pid INTEGER NOT NULL, tool_version VARCHAR(32) NOT NULL);"
        "INSERT INTO runs VALUES ('a1', 'backup create', '2026-11-01 10:00:00.000000', '2026-11-01 10:00:05.000000',"
        " 'ok', 0, '{}', 'db1', 42, '0.1.0');"
    )
    old.commit()
    old.close()
    ledger = Ledger.open(state_dir)
    try:
        assert ledger.schema_version() == LEDGER_SCHEMA_VERSION
        assert {"audit_runs", "audit_rule_counts", "claims"} <= set(sa.inspect(ledger.engine).get_table_names())
        assert [(r.id, r.command, r.exit_code) for r in ledger.runs()] == [("a1", "backup create", 0)]
    finally:
        ledger.close()


def test_a_layout_2_ledger_gets_the_scheduler_tables_keeping_runs_and_audits(state_dir):
    """What the audit release wrote (layout 2): the scheduler's tables are added beside it."""
    first = Ledger.open(state_dir)
    run_id = first.start("audit")
    first.close()
    engine = create_engine(str(state_dir / "ledger.db"))
    with engine.begin() as connection:  # back to exactly layout 2
        for table in ("claims", "schedule_events", "heartbeats", "migration_dry_runs"):
            connection.execute(sa.text(f"DROP TABLE {table}"))
        connection.execute(sa.text("UPDATE ledger_meta SET value = '2' WHERE key = 'schema_version'"))
        connection.execute(sa.text(
            "INSERT INTO audit_runs (run_id, started_at, seconds, engine, scope, watermarks, ok, error_rules,"
            " warn_rules, drift) VALUES (:run, '2026-11-01 10:00:00', 1.0, 'sql', 'full', '{}', 1, 0, 0, '[]')"
        ), {"run": run_id})
    engine.dispose()
    ledger = Ledger.open(state_dir)
    try:
        assert ledger.schema_version() == LEDGER_SCHEMA_VERSION
        assert {"claims", "schedule_events", "heartbeats", "migration_dry_runs"} <= set(sa.inspect(ledger.engine).get_table_names())
        assert [run.id for run in ledger.runs()] == [run_id]
        assert raw_rows(ledger.engine, "SELECT run_id FROM audit_runs") == [(run_id,)]
    finally:
        ledger.close()


def test_reopening_is_idempotent(state_dir):
    first = Ledger.open(state_dir)
    run_id = first.start("status")
    first.close()
    for _ in range(3):
        again = Ledger.open(state_dir)
        assert again.schema_version() == LEDGER_SCHEMA_VERSION
        assert raw_rows(again.engine, "SELECT key, value FROM ledger_meta") == [("schema_version", str(LEDGER_SCHEMA_VERSION))]
        assert [run.id for run in again.runs()] == [run_id]
        again.close()


NEWER = LEDGER_SCHEMA_VERSION + 1


def stamp_newer(engine) -> None:
    """What a newer tool would leave: a higher layout, an extra column, a row using it."""
    with engine.begin() as connection:
        connection.execute(sa.text(f"UPDATE ledger_meta SET value = '{NEWER}' WHERE key = 'schema_version'"))
        connection.execute(sa.text("ALTER TABLE runs ADD COLUMN tags TEXT"))
        connection.execute(
            sa.text(
                "INSERT INTO runs (id, command, started_at, finished_at, outcome, exit_code, summary, host, pid, "
                "tool_version, tags) VALUES ('newer0000', 'backup create', :t, :t, 'ok', 0, '{\"bytes\": 1}', "
                "'db9', 1, '9.0.0', 'nightly')"
            ),
            {"t": datetime(2020, 1, 1, tzinfo=timezone.utc)},
        )


def test_a_ledger_from_a_newer_tool_is_readable_and_writable_with_a_warning(state_dir, ledger_logs):
    first = Ledger.open(state_dir)
    stamp_newer(first.engine)
    first.close()

    ledger_logs.clear()
    newer = Ledger.open(state_dir)
    warnings = [r.getMessage() for r in ledger_logs.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"ledger {state_dir / 'ledger.db'} was written by a newer tool (layout {NEWER}, this tool knows {LEDGER_SCHEMA_VERSION})"
    ]
    [old_row] = newer.runs()
    assert (old_row.id, old_row.command, old_row.summary, old_row.tool_version) == (
        "newer0000", "backup create", {"bytes": 1}, "9.0.0"
    )
    run_id = newer.start("status")
    newer.finish(run_id, 3, {"checks": {"schema": "problem"}})
    assert newer.last("status").exit_code == 3
    assert newer.schema_version() == NEWER  # never stamped down
    assert raw_rows(newer.engine, "SELECT tags FROM runs WHERE id = 'newer0000'") == [("nightly",)]
    newer.close()


def test_a_current_ledger_opens_without_a_warning(state_dir, ledger_logs):
    Ledger.open(state_dir).close()
    ledger_logs.clear()
    Ledger.open(state_dir).close()
    assert [r for r in ledger_logs.records if r.levelno >= logging.WARNING] == []


# ---------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
def test_ledger_on_postgresql_with_ledger_url(pg_empty_url, tmp_path):
    state_dir = tmp_path / "unused-state"
    ledger = Ledger.open(state_dir, pg_empty_url)
    try:
        assert not state_dir.exists()  # the state lives in the ledger database instead
        assert ledger.location.startswith("postgresql+psycopg://")
        assert ledger.schema_version() == LEDGER_SCHEMA_VERSION
        first = ledger.start("backup create")
        ledger.finish(first, 0, {"bytes": 10})
        second = ledger.start("status")
        ledger.finish(second, 4, {"error": "database missing"})
        assert [r.id for r in ledger.runs()] == [second, first]
        assert [r.command for r in ledger.runs(kind="backup")] == ["backup create"]
        run = ledger.last("status")
        assert (run.exit_code, run.outcome, run.summary) == (4, "precondition", {"error": "database missing"})
        assert run.started_at.tzinfo is not None and run.finished_at >= run.started_at
    finally:
        ledger.close()

    again = Ledger.open(state_dir, pg_empty_url)  # idempotent on PostgreSQL too
    try:
        assert again.schema_version() == LEDGER_SCHEMA_VERSION
        assert len(again.runs()) == 2
        assert raw_rows(again.engine, "SELECT key, value FROM ledger_meta") == [("schema_version", str(LEDGER_SCHEMA_VERSION))]
    finally:
        again.close()


@pytest.mark.postgres
def test_newer_ledger_on_postgresql_is_still_usable(pg_empty_url, tmp_path, ledger_logs):
    ledger = Ledger.open(tmp_path, pg_empty_url)
    stamp_newer(ledger.engine)
    ledger.close()
    ledger_logs.clear()
    newer = Ledger.open(tmp_path, pg_empty_url)
    try:
        assert any(f"written by a newer tool (layout {NEWER}, this tool knows {LEDGER_SCHEMA_VERSION})" in r.getMessage() for r in ledger_logs.records)
        newer.finish(newer.start("status"), 0)
        assert [r.command for r in newer.runs()] == ["status", "backup create"]
        assert newer.schema_version() == NEWER
    finally:
        newer.close()


def test_unreachable_ledger_url_is_exit_4_without_the_password(tmp_path):
    with pytest.raises(LedgerUnavailable) as raised:
        Ledger.open(tmp_path, "postgresql://ops:l3dgerpw@127.0.0.1:1/ledger")
    message = str(raised.value)
    assert raised.value.exit_code == 4
    assert "l3dgerpw" not in message
    assert message.startswith("cannot open the ledger: cannot connect to postgresql+psycopg://ops:***@127.0.0.1:1/ledger: ")
    assert message.endswith("; check [state] ledger_url")


def test_malformed_ledger_url_is_exit_4(tmp_path):
    with pytest.raises(LedgerUnavailable) as raised:
        Ledger.open(tmp_path, "postgresql://ops:l3dgerpw@db:port/ledger")
    assert raised.value.exit_code == 4
    assert str(raised.value) == (
        "cannot open the ledger: malformed database URL 'postgresql://ops:***@db:port/ledger'; "
        "expected sqlite:///PATH or postgresql://USER@HOST:PORT/DB; check [state] ledger_url"
    )


# ---------------------------------------------------------------- unwritable state


def test_unwritable_state_dir_is_ledger_unavailable_naming_the_path(tmp_path):
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        if os.access(parent, os.W_OK):
            pytest.skip("running as root: chmod does not stop writes (the root-proof tests below cover this)")
        state_dir = parent / "state"
        with pytest.raises(LedgerUnavailable) as raised:
            Ledger.open(state_dir)
        assert raised.value.exit_code == ExitCode.PRECONDITION
        assert str(raised.value) == (
            f"cannot create the state directory {state_dir}: Permission denied; set [state] dir "
            "(or INTEGRITY_STATE__DIR) to a writable directory"
        )
        assert not state_dir.exists()
    finally:
        parent.chmod(stat.S_IRWXU)


def test_state_dir_that_exists_but_is_read_only_is_ledger_unavailable(tmp_path):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    state_dir.chmod(0o500)
    try:
        if os.access(state_dir, os.W_OK):
            pytest.skip("running as root: chmod does not stop writes (the root-proof tests below cover this)")
        with pytest.raises(LedgerUnavailable) as raised:
            Ledger.open(state_dir)
        assert raised.value.exit_code == ExitCode.PRECONDITION
        assert str(state_dir / "ledger.db") in str(raised.value)
    finally:
        state_dir.chmod(stat.S_IRWXU)


def test_state_dir_below_a_file_is_ledger_unavailable_naming_the_path(tmp_path):
    """Root-proof: no permission bit lets anyone create a directory inside a file."""
    (tmp_path / "a-file").write_text("not a directory")
    state_dir = tmp_path / "a-file" / "state"
    with pytest.raises(LedgerUnavailable) as raised:
        Ledger.open(state_dir)
    assert raised.value.exit_code == ExitCode.PRECONDITION == 4
    assert str(raised.value) == (
        f"cannot create the state directory {state_dir}: Not a directory; set [state] dir "
        "(or INTEGRITY_STATE__DIR) to a writable directory"
    )


def test_ledger_path_taken_by_a_directory_is_ledger_unavailable(state_dir):
    (state_dir / "ledger.db").mkdir(parents=True)
    with pytest.raises(LedgerUnavailable) as raised:
        Ledger.open(state_dir)
    assert raised.value.exit_code == 4
    assert str(raised.value) == (
        f"cannot open the ledger: cannot connect to {state_dir / 'ledger.db'}: unable to open database file; "
        f"check that {state_dir} is writable, or set [state] dir (INTEGRITY_STATE__DIR) to another directory"
    )


def test_corrupt_ledger_file_is_ledger_unavailable_not_a_traceback(state_dir):
    state_dir.mkdir()
    (state_dir / "ledger.db").write_bytes(bytes(range(256)) * 64)
    with pytest.raises(LedgerUnavailable) as raised:
        Ledger.open(state_dir)
    assert raised.value.exit_code == 4
    assert str(state_dir / "ledger.db") in str(raised.value)
    assert "file is not a database" in str(raised.value)


def test_the_sqlite_ledger_runs_in_wal_mode(ledger):
    """Opened through the one connect hook: a reader never blocks a run being recorded."""
    engine = create_engine(ledger.location)
    try:
        assert raw_rows(engine, "PRAGMA journal_mode") == [("wal",)]
    finally:
        engine.dispose()
