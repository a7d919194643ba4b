"""The Prometheus text (`integrity metrics`, `[metrics] path`) and the alert rules.

(`tests/test_metrics.py` is taken by the game's metric formulas.)

The file parses with prometheus_client's parser; its values are the ledger's and the
repository's facts after a scenario of every job; a reader never sees it half-written
while many commands write it (and the same reader does catch a naive writer); an
unwritable path is a warning that never changes a command's exit code; with no state at
all it still works. The alert rules name only metrics the writer emits.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from backup_helpers import BackupEnv, execute, fill_database
from integrity.jobs import JOBS, job_runs
from integrity.ledger import Ledger
from integrity.prometheus import METRICS, write_textfile
from integrity.settings import JOBS as SCHEDULED_JOBS

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "alerts" / "integrity.rules.yml"


def parse(text: str) -> dict[tuple[str, tuple], float]:
    """{(name, sorted labels): value}; raises on anything the real parser rejects."""
    values = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family.name
        assert family.documentation, family.name
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def job(name: str) -> tuple:
    return (("job_name", name),)


def alert_rules() -> list[dict]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


COPY_ALERTS = ("IntegrityCopyTooOld", "IntegrityNoOffHostCopy")  # need [[repositories]]


def metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\bintegrity_[a-z0-9_]+", expr))


# ---------------------------------------------------------------- the scenario


@pytest.fixture
def scenario(sqlite_url, tmp_path):
    """A backup, a quick and a deep verify, a full, an incremental and a narrowed audit,
    a drill and a probe, each through the CLI. (SQLite: the facts are engine-blind; the
    PostgreSQL test below covers what is not.)"""
    fill_database(sqlite_url, players=5, results_per_player=5)
    env = BackupEnv(tmp_path, sqlite_url)
    backup_id = env.create()
    for args in (
        ("backup", "verify"),
        ("backup", "verify", "--latest", "--deep"),
        ("audit",),
        ("audit", "--since-last"),
        ("audit", "--rule", "results.accuracy_range"),  # narrowed: no job's run
        ("drill",),
        ("probe",),
    ):
        completed = env.invoke(*args)
        assert completed.returncode == 0, (args, completed.output)
    return env, backup_id


def test_the_file_holds_the_ledger_and_repository_facts(scenario):
    env, backup_id = scenario
    settings = env.settings()
    values = parse(settings.metrics.path.read_text(encoding="utf-8"))

    ledger = Ledger.open(settings.state.dir)
    try:
        runs = ledger.runs(limit=50)  # newest first
        from integrity.audit_history import AuditHistory

        audit = AuditHistory(ledger.engine).runs(limit=1, whole_catalogue=True)[0]
    finally:
        ledger.close()
    by_command: dict[str, list] = {}
    for run in runs:
        by_command.setdefault(run.command, []).append(run)
    audits = by_command["audit"]  # narrowed, incremental, full
    verifies = by_command["backup verify"]  # deep, quick
    expected_runs = {
        "backup": by_command["backup create"][0],
        "verify": verifies[1],
        "deep_verify": verifies[0],
        "audit": audits[1],
        "audit_full": audits[2],
        "drill": by_command["drill"][0],
        "probe": by_command["probe"][0],
    }
    assert audits[0].summary["scope"] == "full" and audits[2].summary["scope"] == "full"
    for name, run in expected_runs.items():
        assert values[("integrity_job_last_success_timestamp_seconds", job(name))] == pytest.approx(run.finished_at.timestamp()), name
        assert values[("integrity_job_last_completion_timestamp_seconds", job(name))] == pytest.approx(run.finished_at.timestamp()), name
        assert values[("integrity_job_last_duration_seconds", job(name))] == pytest.approx(run.duration_seconds), name
        assert values[("integrity_job_last_exit_code", job(name))] == 0, name
    assert values[("integrity_job_last_success_timestamp_seconds", job("prune"))] == 0  # never: 0
    assert ("integrity_job_last_exit_code", job("prune")) not in values
    for name in SCHEDULED_JOBS:  # every job on by default but the archive's drill (it needs [pitr])
        assert values[("integrity_job_enabled", job(name))] == (0 if name == "drill_pitr" else 1), name
    assert values[("integrity_job_interval_seconds", job("probe"))] == 60

    catalog = env.invoke_json("backup", "list")[1]["result"]["backups"]
    backup = next(b for b in catalog if b["id"] == backup_id)
    from datetime import datetime

    created = datetime.fromisoformat(backup["created_at"]).timestamp()
    for which in ("good", "deep_verified"):
        assert values[(f"integrity_backup_newest_{which}_timestamp_seconds", ())] == pytest.approx(created)
        assert values[(f"integrity_backup_newest_{which}_size_bytes", ())] == backup["size"]

    failing = {dict(labels)["rule"]: value for (name, labels), value in values.items() if name == "integrity_audit_rule_failing_rows"}
    assert failing == {rule: count.failing_rows for rule, count in audit.counts.items()}
    assert len(failing) > 40 and set(failing.values()) == {0}
    assert values[("integrity_audit_unresolved_error_rows", ())] == 0
    assert values[("integrity_audit_last_timestamp_seconds", ())] == pytest.approx(audit.started_at.timestamp())

    drill = expected_runs["drill"].summary
    assert values[("integrity_drill_predicted_recovery_seconds", ())] == pytest.approx(drill["predicted_seconds"])
    assert values[("integrity_drill_measured_recovery_seconds", ())] == pytest.approx(drill["recovery_seconds"])
    assert values[("integrity_drill_last_timestamp_seconds", ())] == pytest.approx(expected_runs["drill"].finished_at.timestamp())
    assert values[("integrity_drill_last_exit_code", ())] == values[("integrity_drill_failed", ())] == 0
    assert values[("integrity_probe_last_timestamp_seconds", ())] == pytest.approx(expected_runs["probe"].finished_at.timestamp())
    for state in ("suspect", "deep_failed", "failed"):
        assert values[(f"integrity_backups_{state}", ())] == 0
    assert values[("integrity_schema_unchecked", ())] == values[("integrity_schema_drift", ())] == 0
    probe = expected_runs["probe"].summary
    assert values[("integrity_probe_success_ratio", ())] == probe["success_ratio"] == 1.0
    for quantile in ("p50", "p95", "max"):
        assert values[(f"integrity_probe_latency_{quantile}_seconds", ())] == pytest.approx(probe[f"latency_{quantile}_seconds"])

    objectives = settings.objectives
    assert values[("integrity_objective_rpo_seconds", ())] == objectives.rpo_seconds
    assert values[("integrity_objective_rto_seconds", ())] == objectives.rto_seconds
    assert values[("integrity_objective_probe_success_ratio", ())] == objectives.probe_min_success_ratio
    assert values[("integrity_database_up", ())] == 1

    # Every metric an alert rule reads is in the file of a routine that ran (the
    # point-in-time rules' families only with [pitr] enabled: tests/test_alert_rules.py;
    # the copies' only with [[repositories]]: tests/test_backup_copy.py).
    emitted = {name for name, _ in values}
    assert values[("integrity_pitr_enabled", ())] == 0
    for rule in alert_rules():
        if rule["alert"].startswith("IntegrityPitr") or rule["alert"] in COPY_ALERTS:
            continue
        assert metrics_in(rule["expr"]) <= emitted, rule["alert"]

    # `integrity metrics` prints the same facts (its own run is no job's).
    completed = env.invoke("metrics")
    assert completed.returncode == 0
    printed = parse(completed.stdout)
    generated = ("integrity_metrics_generated_timestamp_seconds", ())
    assert {k: v for k, v in printed.items() if k != generated} == {k: v for k, v in values.items() if k != generated}


def test_the_backups_of_this_database_and_the_probe_on_each_engine(database_url, tmp_path):
    """The store identity picks this database's backups (a repository may hold others')."""
    fill_database(database_url, players=3, results_per_player=2)
    env = BackupEnv(tmp_path, database_url)
    backup_id = env.create()
    assert env.invoke("probe").returncode == 0
    values = parse(env.settings().metrics.path.read_text(encoding="utf-8"))
    backup = env.invoke_json("backup", "show", backup_id)[1]["result"]["manifest"]
    from datetime import datetime

    assert values[("integrity_backup_newest_good_timestamp_seconds", ())] == pytest.approx(
        datetime.fromisoformat(backup["created_at"]).timestamp())
    assert values[("integrity_probe_success_ratio", ())] == 1.0
    assert values[("integrity_database_up", ())] == 1
    assert values[("integrity_job_last_exit_code", job("probe"))] == 0
    assert values[("integrity_backup_newest_deep_verified_timestamp_seconds", ())] == 0

    # Another database (its own identity) sharing the repository has no backup yet.
    from game_core.db import create_engine
    from game_core.schema_state import upgrade_to_head

    engine = create_engine(str(tmp_path / "other.db"), create_missing=True)
    with engine.begin() as connection:
        upgrade_to_head(connection)
    engine.dispose()
    other = BackupEnv(tmp_path, f"sqlite:///{tmp_path / 'other.db'}")
    code, document = other.invoke_json("metrics")
    assert code == 0
    values = parse(document["result"]["text"])
    assert values[("integrity_database_up", ())] == 1
    assert values[("integrity_backup_newest_good_timestamp_seconds", ())] == 0


def test_a_dirty_audit_stays_unresolved_until_a_full_audit_is_clean(sqlite_url, tmp_path):
    fill_database(sqlite_url, players=4, results_per_player=3)
    env = BackupEnv(tmp_path, sqlite_url)
    # Negated raw wpm of two results: row rules that an incremental audit never re-reads.
    execute(sqlite_url, "UPDATE results SET raw_wpm = -raw_wpm WHERE id IN (1, 2)")
    assert env.invoke("audit").returncode == 3
    path = env.settings().metrics.path

    def read() -> dict:
        return parse(path.read_text(encoding="utf-8"))

    values = read()
    assert values[("integrity_audit_rule_failing_rows", (("rule", "results.raw_wpm_non_negative"), ("severity", "error")))] == 2
    # The rows `integrity status` names: failing rows summed over the failing error rules.
    error_rows = sum(v for (name, labels), v in values.items()
                     if name == "integrity_audit_rule_failing_rows" and ("severity", "error") in labels)
    assert values[("integrity_audit_unresolved_error_rows", ())] == error_rows >= 2
    assert values[("integrity_job_last_exit_code", job("audit_full"))] == 3
    assert values[("integrity_job_last_success_timestamp_seconds", job("audit_full"))] == 0

    assert env.invoke("audit", "--since-last").returncode == 0  # no new rows: clean, old rows unread
    assert read()[("integrity_audit_unresolved_error_rows", ())] == error_rows

    execute(sqlite_url, "UPDATE results SET raw_wpm = -raw_wpm WHERE id IN (1, 2)")
    assert env.invoke("audit").returncode == 0
    assert read()[("integrity_audit_unresolved_error_rows", ())] == 0


# ---------------------------------------------------------------- no state, bad paths


def test_metrics_with_no_state_at_all(tmp_path):
    missing = tmp_path / "nowhere" / "game.db"
    env = BackupEnv(tmp_path, f"sqlite:///{missing}")
    completed = env.invoke("metrics")
    assert completed.returncode == 0, completed.output
    values = parse(completed.stdout)
    for name in SCHEDULED_JOBS:
        assert values[("integrity_job_last_success_timestamp_seconds", job(name))] == 0
        assert ("integrity_job_last_exit_code", job(name)) not in values
    assert values[("integrity_backup_newest_good_timestamp_seconds", ())] == 0
    assert ("integrity_backup_newest_good_size_bytes", ()) not in values
    # Nothing measured yet: no figures, but the "never" timestamps and the drill verdict are
    # there (0), so that the alerts on them can fire instead of finding no series.
    assert not [name for name, _ in values if name.startswith(("integrity_audit", "integrity_drill", "integrity_probe"))
                and name not in ("integrity_drill_last_timestamp_seconds", "integrity_drill_failed",
                                 "integrity_probe_last_timestamp_seconds")]
    assert values[("integrity_drill_failed", ())] == values[("integrity_drill_last_timestamp_seconds", ())] == 0
    assert values[("integrity_probe_last_timestamp_seconds", ())] == 0
    # The database is missing: its schema cannot be judged, so no schema series at all.
    assert not [name for name, _ in values if name.startswith("integrity_schema")]
    assert values[("integrity_database_up", ())] == 0
    assert not missing.exists()  # read-only: never creates the database
    assert str(missing) not in completed.stdout  # no paths or URLs in metrics

    code, document = env.invoke_json("metrics")
    assert code == 0
    assert parse(document["result"]["text"]) .keys() == values.keys()
    assert document["result"]["path"] == str(env.settings().metrics.path)


def test_an_unwritable_metrics_path_is_a_warning_and_keeps_the_exit_code(sqlite_url, tmp_path):
    fill_database(sqlite_url, players=3, results_per_player=2)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the metrics directory should be\n")
    target = blocker / "integrity.prom"
    env = BackupEnv(tmp_path, sqlite_url, extra_env={"INTEGRITY_METRICS__PATH": str(target)})
    warning = f"WARNING: cannot write the metrics file {target}"

    completed = env.invoke("probe")
    assert completed.returncode == 0
    assert warning in completed.stderr
    assert "Error:" not in completed.stderr

    execute(sqlite_url, "DELETE FROM personal_bests WHERE player_id = 1")
    completed = env.invoke("probe")
    assert completed.returncode == 3  # the probe's own verdict, not the metrics' failure
    assert warning in completed.stderr

    completed = env.invoke("metrics")
    assert completed.returncode == 0
    assert parse(completed.stdout)[("integrity_probe_success_ratio", ())] < 1
    assert warning in completed.stderr
    assert not target.exists() and not list(tmp_path.glob("**/.integrity.prom.*"))


# ---------------------------------------------------------------- atomic writes


class Reader(threading.Thread):
    """Reads the file in a loop; every read must parse and hold the last family."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path, self.stop, self.reads, self.bad = path, threading.Event(), 0, []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                text = self.path.read_text(encoding="utf-8")
                names = {family.name for family in text_string_to_metric_families(text)}
                if "integrity_metrics_generated_timestamp_seconds" not in names or not text.endswith("\n"):
                    raise ValueError(f"incomplete: {len(text)} characters")
            except Exception as exc:  # a missing file, a half line the parser rejects, a cut text
                self.bad.append(f"{type(exc).__name__}: {exc}"[:200])
            self.reads += 1


def _padded(text: str, lines: int, tag: str) -> str:
    """The real text with many rule series added in front, so that a write takes a while."""
    padding = "".join(
        f'integrity_audit_rule_failing_rows{{rule="{tag}.{i}",severity="warn"}} {i}\n' for i in range(lines)
    )
    head = "# HELP integrity_audit_rule_failing_rows padding\n# TYPE integrity_audit_rule_failing_rows gauge\n"
    return head + padding + text


def test_the_file_is_never_seen_half_written(sqlite_url, tmp_path):
    env = BackupEnv(tmp_path, sqlite_url)
    assert env.invoke("metrics").returncode == 0
    path = env.settings().metrics.path
    real = path.read_text(encoding="utf-8")
    texts = [_padded(real, 2_000, "a"), _padded(real, 500, "b")]
    reader = Reader(path)
    reader.start()
    try:
        # Real commands in other processes, each writing the file when it ends ...
        processes = [env.popen("history") for _ in range(4)]
        # ... while this process replaces it with texts of other sizes as fast as it can.
        # Until the commands are done, the reader has seen enough versions and this
        # process has written enough (a loaded machine slows the reader, not the
        # guarantee; commands that end quickly leave time for few writes).
        writes, deadline = 0, time.monotonic() + 60
        while (any(p.poll() is None for p in processes) or reader.reads <= 50 or writes <= 20) \
                and time.monotonic() < deadline:
            write_textfile(path, texts[writes % 2])
            writes += 1
            time.sleep(0.005)  # leave the cores to the commands
        for process in processes:
            assert process.wait(timeout=60) == 0, process.stderr.read()
    finally:
        reader.stop.set()
        reader.join(timeout=10)
    assert reader.bad == []
    assert reader.reads > 50 and writes > 20, (reader.reads, writes)
    assert not list(path.parent.glob(f".{path.name}.*"))  # no temp file left behind


def test_the_reader_does_catch_a_naive_writer(tmp_path):
    """The check above can fail: the same reader against write-in-place catches a torn file."""
    path = tmp_path / "naive.prom"
    real = "# HELP integrity_metrics_generated_timestamp_seconds t\n# TYPE integrity_metrics_generated_timestamp_seconds gauge\nintegrity_metrics_generated_timestamp_seconds 1\n"
    text = _padded(real, 2_000, "n")
    path.write_text(text)
    reader = Reader(path)
    reader.start()
    deadline = time.monotonic() + 20
    try:
        while not reader.bad and time.monotonic() < deadline:
            with path.open("w", encoding="utf-8") as handle:  # truncate, then write in two halves
                handle.write(text[: len(text) // 2])
                handle.flush()
                handle.write(text[len(text) // 2 :])
    finally:
        reader.stop.set()
        reader.join(timeout=10)
    assert reader.bad


# ---------------------------------------------------------------- jobs and alert rules


def _record(ledger: Ledger, command: str, exit_code: int, summary: dict):
    run_id = ledger.start(command)
    ledger.finish(run_id, exit_code, summary)
    time.sleep(0.002)  # distinct start times: the newest is unambiguous
    return ledger.runs(limit=1)[0]


def test_jobs_tell_apart_the_runs_that_share_a_command(tmp_path):
    ledger = Ledger.open(tmp_path / "state")
    try:
        quick = _record(ledger, "backup verify", 0, {"b1": {"quick": "ok", "deep": None, "audit": None}})
        deep = _record(ledger, "backup verify", 0, {"b1": {"quick": "ok", "deep": "ok", "audit": "clean"}})
        _record(ledger, "backup prune", 0, {"dry_run": True, "kept": 1, "deleted": []})  # a plan, not a prune
        scheduled = _record(ledger, "audit", 0, {"job": "audit_full", "scope": "incremental"})  # the scheduler's word wins
        failed = _record(ledger, "backup verify", 4, {"error": "backup repository ... does not exist"})
        runs = {name: job_runs(ledger, JOBS[name]) for name in JOBS}
    finally:
        ledger.close()
    assert runs["verify"].last_success.id == quick.id
    assert runs["deep_verify"].last_success.id == deep.id
    # A run that failed before saying which job it was: a failure of both, a success of neither.
    assert runs["verify"].last_completed.id == runs["deep_verify"].last_completed.id == failed.id
    assert runs["prune"].last_completed is None and runs["prune"].last_success is None
    assert runs["audit_full"].last_success.id == scheduled.id
    assert runs["audit"].last_success is None


def test_the_alert_rules_name_only_metrics_the_writer_emits():
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == {
        "IntegrityBackupTooOld", "IntegrityDeepVerifyTooOld", "IntegrityJobStale", "IntegrityCronJobStale",
        "IntegrityAuditErrorRulesFailing", "IntegrityDrillRtoMissed", "IntegrityRetrievalDrop",
        "IntegrityDrillFailed", "IntegrityDeepVerifyFailed", "IntegrityBackupSuspect", "IntegrityJobFailed",
        "IntegrityProbeStale", "IntegritySchemaUnchecked", "IntegritySchemaDrift",
        "IntegrityPitrLagOverObjective", "IntegrityPitrArchiverStopped", *COPY_ALERTS,
    }
    for rule in rules:
        used = metrics_in(rule["expr"])
        assert used and used <= set(METRICS), (rule["alert"], used - set(METRICS))
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        assert "job=" not in rule["expr"] and "(job)" not in rule["expr"]  # the label is job_name
        assert rule["labels"]["severity"] in ("page", "ticket")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert (ROOT / rule["annotations"]["runbook"]).is_file(), rule["annotations"]["runbook"]
        assert re.fullmatch(r"\d+[smh]", rule["for"])
