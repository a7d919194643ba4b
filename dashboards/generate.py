"""Write dashboards/integrity.json: the Grafana dashboard of every metric `integrity` writes.

    .venv/bin/python dashboards/generate.py        # rewrite the JSON
    .venv/bin/python dashboards/generate.py --check  # exit 1 when the JSON is not what this writes

One panel per objective (RPO, deep-verification age, RTO, probe success ratio, the
point-in-time lag, the copies' age), each drawing the measure against its objective: the objective is the
`integrity_objective_*` series of the same file (a dashed red line that follows
integrity.toml, as the alert rules compare with it), and the panel's static threshold is
the default objective, which colours the stat and the area above it. Then every other
family of integrity.prometheus.METRICS, grouped by subject. tests/test_dashboard.py checks
that every metric named here and in alerts/ exists in a real metrics file written by the
tool, and that every metric the tool writes is on the dashboard.

Import it in Grafana (Dashboards, New, Import) and pick the Prometheus data source that
scrapes node_exporter's textfile collector (or `integrity metrics` behind any exporter).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "integrity.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

_next_id = 0


def _id() -> int:
    global _next_id
    _next_id += 1
    return _next_id


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict:
    found = {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend or "__auto", "refId": ref}
    if instant:
        found.update({"instant": True, "range": False, "format": "table"})
    return found


def thresholds(value: float | None, *, above_is_bad: bool = True) -> dict:
    if value is None:
        return {"mode": "absolute", "steps": [{"color": "green", "value": None}]}
    if above_is_bad:
        steps = [{"color": "green", "value": None}, {"color": "red", "value": value}]
    else:
        steps = [{"color": "red", "value": None}, {"color": "green", "value": value}]
    return {"mode": "absolute", "steps": steps}


def objective_override(name: str) -> dict:
    """The objective's series drawn as a dashed red line, not as data."""
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [
            {"id": "color", "value": {"fixedColor": "red", "mode": "fixed"}},
            {"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}},
            {"id": "custom.fillOpacity", "value": 0},
        ],
    }


def timeseries(title: str, targets: list[dict], *, unit: str, description: str, threshold: float | None = None,
               above_is_bad: bool = True, objective: str | None = None, pos: tuple[int, int, int, int]) -> dict:
    x, y, w, h = pos
    custom = {"drawStyle": "line", "lineWidth": 2, "fillOpacity": 10, "showPoints": "auto", "spanNulls": True}
    if threshold is not None:
        custom["thresholdsStyle"] = {"mode": "area" if objective is None else "off"}
    return {
        "id": _id(), "type": "timeseries", "title": title, "description": description, "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h}, "targets": targets,
        "fieldConfig": {
            "defaults": {"unit": unit, "custom": custom, "thresholds": thresholds(threshold, above_is_bad=above_is_bad),
                         "color": {"mode": "palette-classic"}},
            "overrides": [objective_override(objective)] if objective else [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
    }


def stat(title: str, targets: list[dict], *, unit: str, description: str, threshold: float | None = None,
         above_is_bad: bool = True, pos: tuple[int, int, int, int], mappings: list | None = None) -> dict:
    x, y, w, h = pos
    return {
        "id": _id(), "type": "stat", "title": title, "description": description, "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h}, "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, "thresholds": thresholds(threshold, above_is_bad=above_is_bad),
                                     "mappings": mappings or [], "color": {"mode": "thresholds"}}, "overrides": []},
        "options": {"colorMode": "background", "graphMode": "none", "reduceOptions": {"calcs": ["lastNotNull"]},
                    "textMode": "value_and_name"},
    }


def row(title: str, y: int) -> dict:
    return {"id": _id(), "type": "row", "title": title, "collapsed": False, "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
            "panels": []}


YES_NO = [{"type": "value", "options": {"0": {"text": "no"}, "1": {"text": "yes"}}}]


def dashboard() -> dict:
    global _next_id
    _next_id = 0
    panels = [row("Objectives: each measure against its objective (dashed red: the objective in integrity.toml)", 0)]
    panels += [
        timeseries("RPO: age of the newest good backup", [
            target("time() - integrity_backup_newest_good_timestamp_seconds", "newest good backup age"),
            target("integrity_objective_rpo_seconds", "RPO objective", "B"),
        ], unit="s", threshold=3600, objective="RPO objective", pos=(0, 1, 12, 8),
            description="The newest restorable backup's age (intact, not suspect, not failed, not dirty) against "
                        "[objectives] rpo_seconds. Alert: IntegrityBackupTooOld."),
        timeseries("Deep verification: age of the newest deep-verified backup", [
            target("time() - integrity_backup_newest_deep_verified_timestamp_seconds", "newest deep-verified age"),
            target("integrity_objective_deep_verify_max_age_seconds", "deep-verify objective", "B"),
        ], unit="s", threshold=172800, objective="deep-verify objective", pos=(12, 1, 12, 8),
            description="Against [objectives] deep_verify_max_age_seconds. Alert: IntegrityDeepVerifyTooOld."),
        timeseries("RTO: the last drill's predicted and measured recovery time", [
            target("integrity_drill_predicted_recovery_seconds", "predicted full restore"),
            target("integrity_drill_measured_recovery_seconds", "measured phases", "B"),
            target("integrity_objective_rto_seconds", "RTO objective", "C"),
        ], unit="s", threshold=600, objective="RTO objective", pos=(0, 9, 12, 8),
            description="Against [objectives] rto_seconds. Alert: IntegrityDrillRtoMissed."),
        timeseries("Probe success ratio", [
            target("integrity_probe_success_ratio", "success ratio"),
            target("integrity_objective_probe_success_ratio", "probe objective", "B"),
        ], unit="percentunit", threshold=0.99, above_is_bad=False, objective="probe objective", pos=(12, 9, 12, 8),
            description="Share of the last probe's player retrievals that succeeded, against [objectives] "
                        "probe_min_success_ratio. Alert: IntegrityRetrievalDrop."),
        timeseries("Point-in-time archive: replication lag", [
            target("integrity_pitr_lag_seconds", "lag"),
            target("integrity_objective_pitr_lag_seconds", "lag objective", "B"),
        ], unit="s", threshold=10, objective="lag objective", pos=(0, 17, 12, 8),
            description="Only with [pitr] enabled: against [pitr] lag_objective_seconds. Alerts: "
                        "IntegrityPitrLagOverObjective, IntegrityPitrArchiverStopped."),
        timeseries("Copies: age of the newest good backup in each repository", [
            target("time() - integrity_repository_newest_good_timestamp_seconds", "{{repository}} ({{kind}})"),
            target("time() - integrity_offhost_newest_good_timestamp_seconds", "newest off this host", "B"),
            target("integrity_objective_copy_max_age_seconds", "copy objective", "C"),
        ], unit="s", threshold=86400, objective="copy objective", pos=(12, 17, 12, 8),
            description="Only with [[repositories]] copies: each repository's newest good backup, and the newest on "
                        "object storage (the 3-2-1 rule's off-site copy), against [objectives] copy_max_age_seconds. "
                        "Alerts: IntegrityCopyTooOld, IntegrityNoOffHostCopy."),
        timeseries("Point-in-time archive: window", [
            target("time() - integrity_pitr_newest_timestamp_seconds", "newest restorable age"),
            target("time() - integrity_pitr_oldest_timestamp_seconds", "oldest restorable age", "B"),
            target("time() - integrity_pitr_checked_timestamp_seconds", "reading age", "C"),
        ], unit="s", pos=(0, 25, 12, 8),
            description="How far back and how recently a point in time can be restored, and how old the reading is."),
    ]
    panels.append(row("Now", 33))
    panels += [
        stat("Database up", [target("integrity_database_up", "up")], unit="none", threshold=1, above_is_bad=False,
             pos=(0, 34, 4, 4), mappings=YES_NO, description="The guarded database answered when the metrics were collected."),
        stat("Drill failed", [target("integrity_drill_failed", "failed")], unit="none", threshold=1, pos=(4, 34, 4, 4),
             mappings=YES_NO, description="The newest drill failed verification and no restore succeeded since. Alert: IntegrityDrillFailed."),
        stat("Unresolved audit error rows", [target("integrity_audit_unresolved_error_rows", "rows")], unit="none",
             threshold=1, pos=(8, 34, 4, 4), description="Rows failing error rules until a full audit is clean. Alert: IntegrityAuditErrorRulesFailing."),
        stat("Schema", [target("integrity_schema_unchecked", "unchecked"), target("integrity_schema_drift", "drift", "B")],
             unit="none", threshold=1, pos=(12, 34, 6, 4), mappings=YES_NO,
             description="A revision applied without a passing dry run; live differs from its revision's model. "
                         "Alerts: IntegritySchemaUnchecked, IntegritySchemaDrift."),
        stat("Backups in bad states", [
            target("integrity_backups_suspect", "suspect"), target("integrity_backups_deep_failed", "deep-failed", "B"),
            target("integrity_backups_failed", "failed", "C"),
        ], unit="none", threshold=1, pos=(18, 34, 6, 4),
            description="Alerts: IntegrityBackupSuspect, IntegrityDeepVerifyFailed."),
        stat("Point-in-time", [target("integrity_pitr_enabled", "enabled"), target("integrity_pitr_errors", "errors", "B")],
             unit="none", pos=(0, 38, 6, 4), description="[pitr] enabled, and the engine's errors when last read."),
        stat("Last drill exit code", [target("integrity_drill_last_exit_code", "exit code")], unit="none", threshold=3,
             pos=(6, 38, 6, 4), description="0 passed, 3 problems, 5 verification failed."),
        stat("Ages", [
            target("time() - integrity_drill_last_timestamp_seconds", "last drill"),
            target("time() - integrity_audit_last_timestamp_seconds", "last audit", "B"),
            target("time() - integrity_probe_last_timestamp_seconds", "last probe", "C"),
            target("time() - integrity_metrics_generated_timestamp_seconds", "metrics file", "D"),
        ], unit="s", pos=(12, 38, 12, 4), description="How old each figure is. Alert: IntegrityProbeStale."),
    ]
    panels.append(row("Jobs", 42))
    panels += [
        timeseries("Time since each job's last success, against twice its interval", [
            target("time() - integrity_job_last_success_timestamp_seconds", "{{job_name}}"),
            target("2 * integrity_job_interval_seconds", "{{job_name}} limit", "B"),
        ], unit="s", pos=(0, 43, 12, 8), description="Alerts: IntegrityJobStale, IntegrityCronJobStale."),
        timeseries("Each job's last exit code", [target("integrity_job_last_exit_code", "{{job_name}}")], unit="none",
                   threshold=1, pos=(12, 43, 12, 8), description="Alert: IntegrityJobFailed."),
        timeseries("Each job's last duration", [target("integrity_job_last_duration_seconds", "{{job_name}}")], unit="s",
                   pos=(0, 51, 12, 8), description="How long the newest finished run took."),
        stat("Jobs on, and when each last completed", [
            target("integrity_job_enabled", "{{job_name}} on"),
            target("time() - integrity_job_last_completion_timestamp_seconds", "{{job_name}} completed", "B"),
        ], unit="none", pos=(12, 51, 12, 8), mappings=YES_NO, description="[schedule] on or off; age of the newest finished run."),
    ]
    panels.append(row("Backups, audits, probe", 59))
    panels += [
        timeseries("Size of the newest good and deep-verified backups", [
            target("integrity_backup_newest_good_size_bytes", "newest good"),
            target("integrity_backup_newest_deep_verified_size_bytes", "newest deep-verified", "B"),
        ], unit="bytes", pos=(0, 60, 12, 8), description="A sudden drop is what a suspect backup looks like."),
        timeseries("Failing rows per audit rule", [target("integrity_audit_rule_failing_rows", "{{rule}} ({{severity}})")],
                   unit="none", pos=(12, 60, 12, 8), description="The newest whole-catalogue audit's counts."),
        timeseries("Probe latency", [
            target("integrity_probe_latency_p50_seconds", "p50"),
            target("integrity_probe_latency_p95_seconds", "p95", "B"),
            target("integrity_probe_latency_max_seconds", "max", "C"),
        ], unit="s", pos=(0, 68, 12, 8), description="One player's reads through the game's store."),
        timeseries("Probe failures by kind", [target("integrity_probe_failed_players", "{{kind}}")], unit="none",
                   threshold=1, pos=(12, 68, 12, 8), description="exception, timeout, wrong-type, missing-row, mismatch."),
    ]
    return {
        "title": "Typing game: data integrity",
        "uid": "typing-game-integrity",
        "description": "Every metric `integrity` writes ([metrics] path). Generated by dashboards/generate.py.",
        "tags": ["integrity", "backups", "typing-game"],
        "timezone": "utc",
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "1m",
        "time": {"from": "now-7d", "to": "now"},
        "templating": {"list": [{"name": "datasource", "label": "Prometheus", "type": "datasource",
                                 "query": "prometheus", "current": {}, "hide": 0}]},
        "annotations": {"list": []},
        "panels": panels,
    }


def text() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        sys.exit(0 if OUTPUT.read_text() == text() else 1)
    OUTPUT.write_text(text())
    print(f"wrote {OUTPUT}")
