"""The Grafana dashboard (dashboards/integrity.json) against the metrics the tool really writes.

Two real metrics files are written by the real commands: one after a routine (a backup,
a quick and a deep verify, a prune, a full and an incremental audit, a drill, a probe,
with a [[repositories]] copy configured),
one with [pitr] enabled while Litestream replicates and is caught up (the point-in-time
families). Every metric named in the dashboard and in the alert rules must be in one of
them; every metric in them, and every family integrity.prometheus declares, must be on
the dashboard; every objective has a panel that draws it with a threshold. Each check is
shown to fail on a dashboard broken for it.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from backup_helpers import PROJECT, BackupEnv, fill_database

DASHBOARD = PROJECT / "dashboards" / "integrity.json"
RULE_FILES = sorted((PROJECT / "alerts").glob("*.yml"))
NAME = re.compile(r"\bintegrity_[a-z0-9_]+")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panel_metrics(panel: dict) -> set[str]:
    return {name for target in panel.get("targets", []) for name in NAME.findall(target["expr"])}


def dashboard_metrics(board: dict) -> set[str]:
    return {name for panel in board["panels"] for name in panel_metrics(panel)}


def rule_metrics() -> set[str]:
    return {name for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] for name in NAME.findall(rule["expr"])}


def families(text: str) -> set[str]:
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def problems(board: dict, written: set[str]) -> list[str]:
    """What is wrong with `board` against the metrics the tool wrote (`written`)."""
    from integrity.prometheus import METRICS

    on_board = dashboard_metrics(board)
    found = [f"{name} is on the dashboard but in no metrics file the tool wrote" for name in sorted(on_board - written)]
    found += [f"{name} is in an alert rule but in no metrics file the tool wrote" for name in sorted(rule_metrics() - written)]
    found += [f"{name} is written by the tool but not on the dashboard" for name in sorted(written - on_board)]
    found += [f"{name} is declared in integrity.prometheus.METRICS but not on the dashboard"
              for name in sorted(set(METRICS) - on_board)]
    for objective in sorted(n for n in METRICS if n.startswith("integrity_objective_")):
        panels = [p for p in board["panels"] if objective in panel_metrics(p)]
        drawn = [p for p in panels if p["type"] == "timeseries"
                 and any(step["value"] is not None for step in p["fieldConfig"]["defaults"]["thresholds"]["steps"])
                 and any(o["matcher"]["options"] in {t["legendFormat"] for t in p["targets"] if objective in t["expr"]}
                         for o in p["fieldConfig"]["overrides"])]
        if len(drawn) != 1:
            found.append(f"{objective} has {len(drawn)} panels drawing it as a threshold (one expected)")
    return found


@pytest.fixture(scope="module")
def written(tmp_path_factory, sqlite_template) -> set[str]:
    """The metric families in the real files the tool wrote (routine, then point-in-time)."""
    import shutil

    from test_pitr_watch import healthy_archive, metrics

    tmp = tmp_path_factory.mktemp("routine")
    database = tmp / "game.db"
    shutil.copyfile(sqlite_template, database)
    url = f"sqlite:///{database}"
    fill_database(url, players=4, results_per_player=5)
    # A copy repository ([[repositories]], only in the file) for the copies' families.
    (tmp / "copy").mkdir()
    config = tmp / "integrity.toml"
    config.write_text(f'[[repositories]]\nname = "offsite"\nlocation = "{tmp / "copy"}"\n')
    env = BackupEnv(tmp, url, extra_env={"INTEGRITY_CONFIG": str(config)})
    env.create()
    for args in (("backup", "verify", "--latest"), ("backup", "verify", "--latest", "--deep"), ("backup", "prune"),
                 ("audit",), ("audit", "--since-last"), ("drill",), ("probe",), ("metrics",)):
        completed = env.invoke(*args)
        assert completed.returncode == 0, (args, completed.output)
    routine = families(env.settings().metrics.path.read_text(encoding="utf-8"))

    tmp = tmp_path_factory.mktemp("pitr")
    database = tmp / "game.db"
    shutil.copyfile(sqlite_template, database)
    environ, replicating = healthy_archive(tmp, database)
    try:
        metrics(environ)
    finally:
        replicating.stop()
    archive = families(Path(environ["INTEGRITY_METRICS__PATH"]).read_text(encoding="utf-8"))
    assert "integrity_pitr_lag_seconds" in archive and "integrity_probe_success_ratio" in routine
    assert "integrity_repository_newest_good_timestamp_seconds" in routine
    return routine | archive


def test_the_dashboard_is_what_its_generator_writes():
    completed = subprocess.run([sys.executable, str(PROJECT / "dashboards" / "generate.py"), "--check"])
    assert completed.returncode == 0, "dashboards/integrity.json is stale: run .venv/bin/python dashboards/generate.py"
    board = dashboard()
    assert board["uid"] == "typing-game-integrity" and board["templating"]["list"][0]["type"] == "datasource"
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])


def test_every_metric_is_on_the_dashboard_and_every_name_is_real(written):
    assert problems(dashboard(), written) == []


def test_a_misspelt_metric_is_caught(written):
    board = dashboard()
    broken = json.loads(json.dumps(board).replace("integrity_backups_suspect", "integrity_backup_suspect"))
    assert problems(broken, written) == [
        "integrity_backup_suspect is on the dashboard but in no metrics file the tool wrote",
        "integrity_backups_suspect is written by the tool but not on the dashboard",
        "integrity_backups_suspect is declared in integrity.prometheus.METRICS but not on the dashboard",
    ]


def test_a_metric_left_off_the_dashboard_is_caught(written):
    board = dashboard()
    broken = copy.deepcopy(board)
    broken["panels"] = [p for p in board["panels"] if "integrity_probe_failed_players" not in panel_metrics(p)]
    assert problems(broken, written) == [
        "integrity_probe_failed_players is written by the tool but not on the dashboard",
        "integrity_probe_failed_players is declared in integrity.prometheus.METRICS but not on the dashboard",
    ]


def test_an_objective_without_its_threshold_is_caught(written):
    board = dashboard()
    broken = copy.deepcopy(board)
    for panel in broken["panels"]:
        if "integrity_objective_rto_seconds" in panel_metrics(panel):
            panel["fieldConfig"]["defaults"]["thresholds"]["steps"] = [{"color": "green", "value": None}]
    assert problems(broken, written) == [
        "integrity_objective_rto_seconds has 0 panels drawing it as a threshold (one expected)"]


def test_a_name_in_an_alert_rule_but_in_no_file_is_caught(written):
    assert problems(dashboard(), written - {"integrity_drill_failed"}) == [
        "integrity_drill_failed is on the dashboard but in no metrics file the tool wrote",
        "integrity_drill_failed is in an alert rule but in no metrics file the tool wrote",
    ]
