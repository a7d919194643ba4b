"""Point-in-time recovery watched like everything else (issue 16): `integrity status` rows
and the metrics file, with the real Litestream replicating the test's own game database.

A healthy setup (Litestream running, caught up) gives an ok recovery-point row; Litestream
stopped while the game writes gives a problem row naming the lag and runbooks/pitr-lag.md.
Replicator deaths recorded by `schedule run` are a problem row until it has run cleanly
for a while. Runs that do not report the archive carry its last reading forward in the
metrics file instead of reading it again (two Litestream subprocesses per reading).
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path


from cli_runner import CliRunner
from integrity.cli import app
from integrity.pitr import engine_for
from integrity.pitr.supervise import Supervisor

from pitr_helpers import DEADLINE_SECONDS, wait_for, write_player
from pitr_helpers import pitr_environ as _pitr_environ

runner = CliRunner()


def pitr_environ(tmp_path: Path, database: Path, **extra: str) -> dict[str, str]:
    """The shared [pitr] environment, with this file's repository and metrics path."""
    return _pitr_environ(tmp_path, database, INTEGRITY_BACKUPS__REPOSITORY=str(tmp_path / "repo"),
                         INTEGRITY_METRICS__PATH=str(tmp_path / "metrics" / "integrity.prom"), **extra)


class Replicating:
    """Litestream replicating `database` under a Supervisor thread, stoppable mid-test."""

    def __init__(self, environ: dict[str, str], tmp_path: Path) -> None:
        from integrity.settings import resolve_settings

        self.settings = resolve_settings(environ=environ, cwd=tmp_path)
        self.engine = engine_for(self.settings)
        self.engine.write_config()
        self.supervisor = Supervisor(self.engine.replicator(), log_path=tmp_path / "state" / "pitr" / "litestream.log",
                                     restart_delay=0.2)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.supervisor.run, args=(self.stop_event,), daemon=True)
        self.thread.start()
        wait_for(lambda: self.supervisor.pid, what="litestream to start")

    def caught_up(self):
        """The window once everything written is shipped."""
        return wait_for(lambda: (w := self.engine.window()).caught_up and w.newest is not None and w,
                        what="litestream to ship every write")

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=DEADLINE_SECONDS)
        assert not self.thread.is_alive(), "the supervisor did not stop its child"


def healthy_archive(tmp_path: Path, database: Path, **extra: str) -> tuple[dict[str, str], Replicating]:
    """Litestream running and caught up with a write of the game."""
    environ = pitr_environ(tmp_path, database, **extra)
    replicating = Replicating(environ, tmp_path)
    write_player(database, "healthy")
    replicating.caught_up()
    return environ, replicating


def stopped_archive(tmp_path: Path, database: Path, **extra: str) -> dict[str, str]:
    """Litestream shipped the game's writes, then stopped; the game wrote again more than
    the engine's grace after the newest shipped file (the lag it must see)."""
    from integrity.pitr.litestream import LISTING_STEP, UNSHIPPED_GRACE

    environ, replicating = healthy_archive(tmp_path, database, **extra)
    replicating.stop()
    newest = replicating.engine.window().newest
    wait_for(lambda: datetime.now(UTC) > newest + LISTING_STEP + UNSHIPPED_GRACE + timedelta(seconds=0.5),
             what="the grace after the newest shipped file to pass")
    write_player(database, "unshipped")
    return environ


def invoke(environ: dict[str, str], *args: str):
    return runner.invoke(app, list(args), env=environ, catch_exceptions=False, prog_name="integrity")


def status_checks(environ: dict[str, str]) -> dict[str, dict]:
    result = invoke(environ, "--json", "status")
    document = json.loads(result.stdout)
    return {check["name"]: check for check in document["result"]["checks"]}


def metrics(environ: dict[str, str]) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    assert invoke(environ, "metrics").exit_code == 0
    text = Path(environ["INTEGRITY_METRICS__PATH"]).read_text(encoding="utf-8")
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if not sample.labels}


# ---------------------------------------------------------------- status rows


def test_status_has_an_ok_recovery_point_row_while_litestream_is_caught_up(tmp_path, sqlite_path):
    environ, replicating = healthy_archive(tmp_path, sqlite_path)
    try:
        checks = status_checks(environ)
    finally:
        replicating.stop()
    row = checks["pitr recovery point"]
    assert row["state"] == "ok", row
    assert row["detail"].startswith("litestream: newest ") and "caught up, lag 0s" in row["detail"]
    assert "objective 10s; oldest restorable 20" in row["detail"]
    assert "pitr errors" not in checks and "pitr replicator" not in checks


def test_status_reports_the_lag_when_litestream_stopped_while_the_game_writes(tmp_path, sqlite_path):
    environ = stopped_archive(tmp_path, sqlite_path, INTEGRITY_PITR__LAG_OBJECTIVE_SECONDS="1")
    result = invoke(environ, "--json", "status")
    document = json.loads(result.stdout)
    checks = {check["name"]: check for check in document["result"]["checks"]}
    row = checks["pitr recovery point"]
    assert row["state"] == "problem", row
    assert "replication lag" in row["detail"] and "over the objective of 1s" in row["detail"]
    assert row["detail"].endswith("see runbooks/pitr-lag.md")
    assert "pitr recovery point" in document["result"]["problems"]


def test_status_has_no_pitr_rows_while_pitr_is_disabled(tmp_path, sqlite_path):
    environ = pitr_environ(tmp_path, sqlite_path, INTEGRITY_PITR__ENABLED="false")
    assert not [name for name in status_checks(environ) if name.startswith("pitr")]


def test_a_missing_litestream_is_a_precondition_row(tmp_path, sqlite_path):
    environ = pitr_environ(tmp_path, sqlite_path, INTEGRITY_PITR__LITESTREAM_BIN=str(tmp_path / "no-litestream"))
    row = status_checks(environ)["pitr recovery point"]
    assert row["state"] == "precondition", row
    assert "litestream" in row["detail"] and row["detail"].endswith("see runbooks/pitr-lag.md")


def test_replicator_deaths_are_a_problem_until_it_ran_cleanly_for_a_while(tmp_path, sqlite_path):
    from integrity.ledger import Ledger
    from integrity.scheduler.records import record_replicator_death
    from integrity.settings import resolve_settings
    from integrity.status import REPLICATOR_CLEAN_SECONDS, replicator_checks

    settings = resolve_settings(environ=pitr_environ(tmp_path, sqlite_path), cwd=tmp_path)
    now = datetime.now(UTC)
    ledger = Ledger.open(settings.state.dir, settings.state.ledger_url)
    try:
        assert replicator_checks(settings, now=now, ledger=ledger) == []  # never died: nothing to say
        record_replicator_death(ledger, now - timedelta(seconds=120), "pid 7 was killed by SIGKILL after 3.0s: boom")
        record_replicator_death(ledger, now - timedelta(seconds=60), "pid 8 exited with status 1 after 0.1s: cannot open")
        [row] = replicator_checks(settings, now=now, ledger=ledger)
        assert row.state.value == "problem"
        assert row.detail.startswith("the replicator died 2 time(s) in the last day, the last 1m ago: ")
        assert "1m ago: pid 8 exited with status 1 after 0.1s: cannot open" in row.detail
        later = now + timedelta(seconds=REPLICATOR_CLEAN_SECONDS)
        [row] = replicator_checks(settings, now=later, ledger=ledger)
        assert row.state.value == "ok", row
    finally:
        ledger.close()


# ---------------------------------------------------------------- metrics


def test_metrics_carry_the_archive_reading_forward_through_runs_that_do_not_read_it(tmp_path, sqlite_path):
    environ, replicating = healthy_archive(tmp_path, sqlite_path)
    try:
        first = metrics(environ)
    finally:
        replicating.stop()
    assert first["integrity_pitr_enabled"] == 1 and first["integrity_pitr_lag_seconds"] == 0
    assert first["integrity_pitr_errors"] == 0 and first["integrity_objective_pitr_lag_seconds"] == 10
    assert 0 < first["integrity_pitr_oldest_timestamp_seconds"] <= first["integrity_pitr_newest_timestamp_seconds"]
    # `history` does not read the archive: the file keeps the reading `metrics` made, even
    # though Litestream is gone now (a reading would say so: it would differ).
    assert invoke(environ, "history").exit_code == 0
    text = Path(environ["INTEGRITY_METRICS__PATH"]).read_text(encoding="utf-8")
    carried = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
               if line.startswith("integrity_pitr_")}
    assert carried == {name: value for name, value in first.items() if name.startswith("integrity_pitr_")}
    assert f"integrity_metrics_generated_timestamp_seconds {first['integrity_metrics_generated_timestamp_seconds']}" not in text


def test_metrics_read_the_archive_afresh_in_status(tmp_path, sqlite_path):
    environ = pitr_environ(tmp_path, sqlite_path)
    assert invoke(environ, "history").exit_code == 0  # nothing read yet: only the enabled flag and the objective
    text = Path(environ["INTEGRITY_METRICS__PATH"]).read_text(encoding="utf-8")
    assert "integrity_pitr_enabled 1" in text and "integrity_pitr_errors" not in text
    invoke(environ, "status")
    text = Path(environ["INTEGRITY_METRICS__PATH"]).read_text(encoding="utf-8")
    assert "integrity_pitr_errors 1" in text  # the replica holds no LTX file yet


# ---------------------------------------------------------------- backup check proves the point-in-time path


def pitr_findings(environ: dict[str, str], tmp_path: Path) -> dict[str, dict]:
    (tmp_path / "repo").mkdir(exist_ok=True)
    result = invoke(environ, "--json", "backup", "check")
    document = json.loads(result.stdout)
    return {finding["name"]: finding for finding in document["result"]["findings"] if finding["name"].startswith("pitr")}


def marker_players(database: Path) -> list[str]:
    import sqlite3

    from integrity.backups.check import PITR_MARKER_PREFIX

    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return [name for (name,) in connection.execute("SELECT username FROM players WHERE username LIKE ?",
                                                       (PITR_MARKER_PREFIX + "%",))]
    finally:
        connection.close()


def test_backup_check_writes_a_marker_sees_it_archived_and_restored_then_removes_it(tmp_path, sqlite_path):
    environ, replicating = healthy_archive(tmp_path, sqlite_path)
    try:
        findings = pitr_findings(environ, tmp_path)
    finally:
        replicating.stop()
    assert findings["pitr archive"]["state"] == "ok", findings
    assert "the litestream archive reached the deletion's second " in findings["pitr archive"]["detail"]
    assert findings["pitr restore"]["state"] == "ok", findings
    assert findings["pitr restore"]["detail"].endswith("and held the marker written before it")
    assert marker_players(sqlite_path) == []


def test_backup_check_fails_the_archive_when_litestream_stopped(tmp_path, sqlite_path):
    environ = stopped_archive(tmp_path, sqlite_path, INTEGRITY_PITR__LAG_OBJECTIVE_SECONDS="1")
    findings = pitr_findings(environ, tmp_path)
    finding = findings["pitr archive"]
    assert finding["state"] == "fail", findings
    assert "did not reach the litestream archive within 8s (lag objective 1s + grace)" in finding["detail"]
    assert finding["detail"].endswith("see runbooks/pitr-lag.md")
    assert "pitr restore" not in findings
    assert marker_players(sqlite_path) == []


def test_backup_check_fails_the_restore_when_the_archive_lacks_the_marker(tmp_path, sqlite_path, monkeypatch):
    """An archive that restores an older state than asked (injected: every restore lands
    four seconds early, before the marker) is caught by the restore, not the listing."""
    from integrity.pitr.litestream import LitestreamEngine

    original = LitestreamEngine.restored_at
    monkeypatch.setattr(LitestreamEngine, "restored_at",
                        lambda self, moment, scratch_dir, **options: original(self, moment - timedelta(seconds=4), scratch_dir,
                                                                              **options))
    environ, replicating = healthy_archive(tmp_path, sqlite_path)
    try:
        oldest = replicating.engine.window().oldest
        wait_for(lambda: datetime.now(UTC) > oldest + timedelta(seconds=5), what="a window older than the injected shift")
        findings = pitr_findings(environ, tmp_path)
    finally:
        replicating.stop()
    assert findings["pitr archive"]["state"] == "ok", findings
    finding = findings["pitr restore"]
    assert finding["state"] == "fail", findings
    assert "but the marker player integrity.pitr-check." in finding["detail"]
    assert marker_players(sqlite_path) == []


# ---------------------------------------------------------------- drill --at TIME


def test_drill_at_a_moment_restores_the_archive_there_and_is_recorded_as_a_point_in_time_drill(tmp_path, sqlite_path):
    from integrity.ledger import Ledger
    from integrity.timeparse import utc_text

    environ, replicating = healthy_archive(tmp_path, sqlite_path)
    engine = replicating.engine
    shipped = lambda: max((f.max_txid for f in engine.ltx_files()), default=0)  # noqa: E731
    try:
        write_player(sqlite_path, "before_the_moment")
        written = datetime.now(UTC)
        moment = wait_for(lambda: (now := datetime.now(UTC)) > written + timedelta(seconds=2.5) and now,
                          what="the moment, well after the first write was shipped")
        wait_for(lambda: datetime.now(UTC) > moment + timedelta(seconds=1.5), what="a write well after the moment")
        before = shipped()
        write_player(sqlite_path, "after_the_moment")
        wait_for(lambda: shipped() > before, what="litestream to ship the write after the moment")
        result = invoke(environ, "--json", "drill", "--at", utc_text(moment))
        outside = invoke(environ, "drill", "--at", "2000-01-01T00:00:00Z")
        drawn = invoke(environ, "--json", "drill", "--at", "random")
    finally:
        replicating.stop()
    document = json.loads(result.stdout)
    assert result.exit_code == 0, result.output
    report = document["result"]
    assert report["point_in_time"]["moment"] == utc_text(moment)
    assert report["point_in_time"]["engine"] == "litestream" and report["audit"] == "clean"
    players = next(table for table in report["tables"] if table["table"] == "players")
    assert players["only_live"] == 1 and players["only_backup"] == 0  # after_the_moment is not in it
    assert [phase["name"] for phase in report["phases"]] == ["restore", "audits", "compare with live", "swap rehearsal"]

    settings_dir = Path(environ["INTEGRITY_STATE__DIR"])
    ledger = Ledger.open(settings_dir, None)
    try:
        runs = {run.summary.get("point_in_time", {}).get("asked"): run for run in ledger.runs(kind="drill", limit=5)}
        run = runs[f"--at {utc_text(moment)}"]
        # The archive's drill is not the scheduled drill of the backups: that job stays unsucceeded.
        from integrity.jobs import JOBS, job_runs

        assert job_runs(ledger, JOBS["drill"]).last_success is None
    finally:
        ledger.close()
    assert run.summary["point_in_time"]["moment"] == utc_text(moment)
    assert run.summary["backup_id"] == f"point in time {utc_text(moment)} (litestream)"

    assert outside.exit_code == 4
    assert outside.stderr.strip().splitlines()[-1].startswith(
        "Error: 2000-01-01T00:00:00Z is outside the point-in-time window (")

    assert drawn.exit_code == 0, drawn.output
    point = json.loads(drawn.stdout)["result"]["point_in_time"]
    assert point["asked"] == "--at random"
    # Compared as times: as texts, "…33Z" sorts after "…33.819633Z" of the same second.
    oldest, moment_drawn, newest = (datetime.fromisoformat(point[key]) for key in ("window_oldest", "moment", "window_newest"))
    assert oldest <= moment_drawn <= newest


def test_drill_at_refuses_a_backup_too_and_bad_time_text(tmp_path, sqlite_path):
    environ = pitr_environ(tmp_path, sqlite_path)
    both = invoke(environ, "drill", "--at", "10 minutes ago", "--backup", "latest")
    assert both.exit_code == 2
    assert both.stderr.strip().splitlines()[-1] == "Error: --backup and --at cannot be given together; give one of --backup, --at"
    bad = invoke(environ, "drill", "--at", "yesterday-ish")
    assert bad.exit_code == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("Error: --at 'yesterday-ish' is not a UTC time")
