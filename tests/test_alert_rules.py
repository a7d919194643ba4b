"""Every alert rule in alerts/ fires on a damaged store and stays quiet on a healthy one
(DESIGN.md invariant 13), proven with `promtool test rules` on the metrics file that the
real commands wrote.

Each scenario runs real `integrity` commands against a real database, reads the text
file they wrote ([metrics] path), and turns every sample into a promtool input series,
constant from promtool's time 0 on. promtool's clock starts at the epoch, so the file's
moment (`integrity_metrics_generated_timestamp_seconds`) is placed at NOW, three days
in, and every other `*_timestamp_seconds` value is moved by the same amount: ages stay
what they were when the file was written, and "never" (0) stays three days old, past
every objective. The alerts are evaluated at NOW (and, for the alerts about time
passing, later: the file stays as the last run left it, as a stopped probe would).

promtool compares annotations too; they are templates of the values, so the rules are
tested from a copy without annotations (their templates are checked by `promtool check
rules` on the real file). Labels, expressions and `for:` are the real ones.

Without promtool these tests skip, unless INTEGRITY_REQUIRE_POSTGRES=1 (CI), where they
fail: `.ci/run` installs Debian's `prometheus` package, which ships promtool.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from backup_helpers import BackupEnv, execute, fill_database, flip_byte
from test_status_ranking import HARMLESS  # the harmless revision applied behind the tool's back

ROOT = Path(__file__).resolve().parent.parent
RULE_FILES = sorted((ROOT / "alerts").glob("*.yml"))
# promtool evaluates every rule at every step from 0 to the last eval time (three days):
# a step of one minute made each run take seconds. Every eval time below is a multiple of
# five minutes, so each evaluation sees a sample at its own instant (no lookback gap), and
# the series are constant, so every `for:` (at most 30m) is held as at one minute.
STEP_MINUTES = 5
NOW_MINUTES = 3 * 24 * 60  # where the file's moment is placed on promtool's clock
LATER_MINUTES = NOW_MINUTES + 70  # an hour and more without a new run


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    reason = "promtool not found: install Debian's prometheus package (`apt-get install -y prometheus`)"
    if os.environ.get("INTEGRITY_REQUIRE_POSTGRES") == "1":
        pytest.fail(reason + " (CI: INTEGRITY_REQUIRE_POSTGRES=1, .ci/run installs it)")
    pytest.skip(reason)


def rules() -> list[dict]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


ALERTS = {rule["alert"]: rule for rule in rules()}


# ---------------------------------------------------------------- the metrics file as input series


def samples(text: str) -> dict[tuple[str, tuple], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def input_series(text: str, until_minutes: int) -> list[dict]:
    values = samples(text)
    generated = values[("integrity_metrics_generated_timestamp_seconds", ())]
    shift = NOW_MINUTES * 60 - generated
    series = []
    for (name, labels), value in values.items():
        if name.endswith("_timestamp_seconds") and value != 0:
            value += shift  # ages kept; 0 ("never") stays 0
        selector = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}" if labels else "")
        series.append({"series": selector, "values": f"{value!r}+0x{until_minutes // STEP_MINUTES}"})
    return series


def expect(alertname: str, *label_sets: dict) -> list[dict]:
    severity = ALERTS[alertname]["labels"]["severity"]
    return [{"exp_labels": {**labels, "severity": severity}} for labels in label_sets]


def run_promtool(promtool: str, tmp_path: Path, text: str, cases: list[tuple[int, str, list[dict]]]) -> None:
    """promtool test rules: at each (minute, alert) exactly the expected alerts fire."""
    stripped = []
    for path in RULE_FILES:
        document = yaml.safe_load(path.read_text())
        for group in document["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations", None)
        copy = tmp_path / f"stripped-{path.name}"
        copy.write_text(yaml.safe_dump(document, sort_keys=False))
        stripped.append(str(copy))
    until = max(minute for minute, _, _ in cases)
    test = {
        "rule_files": stripped,
        "evaluation_interval": f"{STEP_MINUTES}m",
        "tests": [{
            "interval": f"{STEP_MINUTES}m",
            "input_series": input_series(text, until),
            "alert_rule_test": [
                {"eval_time": f"{minute}m", "alertname": name, "exp_alerts": expected}
                for minute, name, expected in cases
            ],
        }],
    }
    path = tmp_path / "promtool-test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    completed = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def jobs_where(values: dict, predicate) -> list[dict]:
    names = sorted({dict(labels)["job_name"] for name, labels in values if name.startswith("integrity_job_")})
    return [{"job_name": job} for job in names if predicate(job)]


def metrics_text(env: BackupEnv) -> str:
    completed = env.invoke("metrics")
    assert completed.returncode == 0, completed.output
    return env.settings().metrics.path.read_text(encoding="utf-8")


# ---------------------------------------------------------------- healthy: every rule quiet


def test_every_rule_stays_quiet_on_a_healthy_store(promtool, sqlite_url, tmp_path):
    fill_database(sqlite_url, players=4, results_per_player=5)
    env = BackupEnv(tmp_path, sqlite_url, extra_env={"INTEGRITY_SCHEDULE__PRUNE": "0 3 * * *"})  # one cron job
    env.create()
    for args in (("backup", "verify", "--latest"), ("backup", "verify", "--latest", "--deep"), ("backup", "prune"),
                 ("audit",), ("audit", "--since-last"), ("drill",), ("probe",)):
        completed = env.invoke(*args)
        assert completed.returncode == 0, (args, completed.output)
    text = metrics_text(env)
    values = samples(text)
    assert values[("integrity_schema_unchecked", ())] == values[("integrity_schema_drift", ())] == 0
    run_promtool(promtool, tmp_path, text, [(NOW_MINUTES, name, []) for name in ALERTS])


# ---------------------------------------------------------------- damaged: every rule fires


@pytest.fixture
def incident(sqlite_url, sqlite_template, tmp_path):
    """The incident, compressed, through the real commands: a good backup; a backup job
    pointed at an empty copy of the store (same identity: suspect, then deep-failed);
    the good backup damaged on disk and its drill failed; scores corrupted and bests
    lost in live (audit and probe fail); a revision applied with plain Alembic from a
    hand-written alembic.ini; nothing deep-verified, nothing verified, prune never run."""
    from alembic import command
    from alembic.config import Config

    from game_core.migrations import MIGRATIONS_DIR

    fill_database(sqlite_url, players=4, results_per_player=5)
    env = BackupEnv(tmp_path, sqlite_url, extra_env={"INTEGRITY_SCHEDULE__PRUNE": "0 3 * * *"})
    good = env.create()

    empty = tmp_path / "empty-copy.db"
    shutil.copyfile(sqlite_template, empty)  # the store's identity, none of its rows
    misconfigured = BackupEnv(tmp_path, f"sqlite:///{empty}", extra_env=env.extra_env)
    code, document = misconfigured.invoke_json("backup", "create")
    assert code == 3, document  # an empty copy is a suspect backup
    emptied = document["result"]["manifest"]["id"]
    assert env.invoke("backup", "verify", "--deep", emptied).returncode == 5

    flip_byte(env.repo / good / env.repository().read_manifest(good).files[0].name, random.Random(11))
    assert env.invoke("drill", "--backup", good).returncode == 5

    execute(sqlite_url, "UPDATE results SET raw_wpm = -raw_wpm WHERE id IN (1, 2)",
            "DELETE FROM personal_bests WHERE player_id = 1")
    assert env.invoke("audit").returncode == 3
    assert env.invoke("probe").returncode == 3

    folder = tmp_path / "branch"
    folder.mkdir()
    (folder / "0002_country.py").write_text(HARMLESS)
    (tmp_path / "alembic.ini").write_text(
        f"[alembic]\nscript_location = {MIGRATIONS_DIR}\npath_separator = os\n"
        f"version_locations = {MIGRATIONS_DIR / 'versions'}{os.pathsep}{folder}\nsqlalchemy.url = {sqlite_url}\n"
    )
    command.upgrade(Config(str(tmp_path / "alembic.ini")), "head")
    return env


def test_every_rule_fires_on_the_incident(promtool, incident, tmp_path):
    text = metrics_text(incident)
    values = samples(text)
    job = lambda name, job_name: values.get((name, (("job_name", job_name),)))  # noqa: E731
    never = jobs_where(values, lambda j: job("integrity_job_interval_seconds", j) is not None
                       and job("integrity_job_last_success_timestamp_seconds", j) == 0)
    cron_never = jobs_where(values, lambda j: job("integrity_job_interval_seconds", j) is None
                            and job("integrity_job_enabled", j) == 1
                            and job("integrity_job_last_success_timestamp_seconds", j) == 0)
    failed = jobs_where(values, lambda j: job("integrity_job_last_exit_code", j) not in (None, 0))
    # The scenario's own facts, before promtool judges the rules on them.
    assert {j["job_name"] for j in failed} >= {"deep_verify", "drill", "audit_full", "probe"}
    assert {j["job_name"] for j in cron_never} == {"prune"}
    assert values[("integrity_backups_suspect", ())] >= 1
    assert values[("integrity_backups_deep_failed", ())] >= 1
    assert values[("integrity_drill_failed", ())] == 1
    assert values[("integrity_schema_unchecked", ())] == 1

    run_promtool(promtool, tmp_path, text, [
        (NOW_MINUTES, "IntegrityBackupTooOld", expect("IntegrityBackupTooOld", {})),
        (NOW_MINUTES, "IntegrityDeepVerifyTooOld", expect("IntegrityDeepVerifyTooOld", {})),
        (NOW_MINUTES, "IntegrityJobStale", expect("IntegrityJobStale", *never)),
        (NOW_MINUTES, "IntegrityCronJobStale", expect("IntegrityCronJobStale", *cron_never)),
        (NOW_MINUTES, "IntegrityJobFailed", expect("IntegrityJobFailed", *failed)),
        (NOW_MINUTES, "IntegrityAuditErrorRulesFailing", expect("IntegrityAuditErrorRulesFailing", {})),
        (NOW_MINUTES, "IntegrityRetrievalDrop", expect("IntegrityRetrievalDrop", {})),
        (NOW_MINUTES, "IntegrityDrillFailed", expect("IntegrityDrillFailed", {})),
        (NOW_MINUTES, "IntegrityDeepVerifyFailed", expect("IntegrityDeepVerifyFailed", {})),
        (NOW_MINUTES, "IntegrityBackupSuspect", expect("IntegrityBackupSuspect", {})),
        (NOW_MINUTES, "IntegritySchemaUnchecked", expect("IntegritySchemaUnchecked", {})),
        (NOW_MINUTES, "IntegrityProbeStale", []),  # it just measured...
        (LATER_MINUTES, "IntegrityProbeStale", expect("IntegrityProbeStale", {})),  # ...and then stopped
    ])


def test_schema_drift_fires_on_a_column_changed_by_hand(promtool, sqlite_url, tmp_path):
    from test_status_ranking import _store_levels_as_text

    fill_database(sqlite_url, players=2, results_per_player=2)
    env = BackupEnv(tmp_path, sqlite_url)
    _store_levels_as_text(sqlite_url)
    run_promtool(promtool, tmp_path, metrics_text(env), [
        (NOW_MINUTES, "IntegritySchemaDrift", expect("IntegritySchemaDrift", {})),
        (NOW_MINUTES, "IntegritySchemaUnchecked", []),  # the first revision: checked
    ])


@pytest.mark.postgres
def test_the_rto_rule_fires_when_a_drill_predicts_a_restore_over_the_objective(promtool, pg_url, tmp_path):
    """On PostgreSQL a drill's prediction includes one second for ending live's
    connections: with rto_seconds = 1 it is always over."""
    fill_database(pg_url, players=2, results_per_player=3)
    env = BackupEnv(tmp_path, pg_url, extra_env={"INTEGRITY_OBJECTIVES__RTO_SECONDS": "1"})
    env.create()
    assert env.invoke("drill").returncode == 3
    run_promtool(promtool, tmp_path, metrics_text(env), [
        (NOW_MINUTES, "IntegrityDrillRtoMissed", expect("IntegrityDrillRtoMissed", {})),
        (NOW_MINUTES, "IntegrityDrillFailed", []),
    ])


# ---------------------------------------------------------------- point-in-time archive (issue 16)


def test_pitr_rules_stay_quiet_while_litestream_is_caught_up(promtool, sqlite_path, tmp_path):
    from test_pitr_watch import healthy_archive, metrics

    environ, replicating = healthy_archive(tmp_path, sqlite_path)
    try:
        metrics(environ)
    finally:
        replicating.stop()
    text = Path(environ["INTEGRITY_METRICS__PATH"]).read_text(encoding="utf-8")
    assert samples(text)[("integrity_pitr_lag_seconds", ())] == 0
    run_promtool(promtool, tmp_path, text, [
        (minute, name, []) for minute in (NOW_MINUTES, NOW_MINUTES + 5)
        for name in ("IntegrityPitrLagOverObjective", "IntegrityPitrArchiverStopped")
    ])


def test_pitr_rules_fire_when_litestream_stopped_while_the_game_writes(promtool, sqlite_path, tmp_path):
    from test_pitr_watch import metrics, stopped_archive

    environ = stopped_archive(tmp_path, sqlite_path, INTEGRITY_PITR__LAG_OBJECTIVE_SECONDS="1")
    metrics(environ)
    text = Path(environ["INTEGRITY_METRICS__PATH"]).read_text(encoding="utf-8")
    values = samples(text)
    assert values[("integrity_pitr_lag_seconds", ())] > 1 and values[("integrity_pitr_errors", ())] == 0
    run_promtool(promtool, tmp_path, text, [
        (NOW_MINUTES, "IntegrityPitrLagOverObjective", expect("IntegrityPitrLagOverObjective", {})),
        (NOW_MINUTES + 5, "IntegrityPitrLagOverObjective", expect("IntegrityPitrLagOverObjective", {})),
        (NOW_MINUTES + 5, "IntegrityPitrArchiverStopped", expect("IntegrityPitrArchiverStopped", {})),
    ])


def test_the_archiver_rule_fires_on_engine_errors(promtool, sqlite_path, tmp_path):
    """Nothing ever shipped (no Litestream ran): the engine's error alone fires it."""
    from test_pitr_watch import metrics, pitr_environ

    environ = pitr_environ(tmp_path, sqlite_path)
    values = metrics(environ)
    assert values["integrity_pitr_errors"] == 1 and "integrity_pitr_lag_seconds" not in values
    run_promtool(promtool, tmp_path, Path(environ["INTEGRITY_METRICS__PATH"]).read_text(encoding="utf-8"), [
        (NOW_MINUTES + 5, "IntegrityPitrArchiverStopped", expect("IntegrityPitrArchiverStopped", {})),
        (NOW_MINUTES + 5, "IntegrityPitrLagOverObjective", []),
    ])
