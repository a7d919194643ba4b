"""Audit history in the ledger: the layout-2 upgrade, what a run records, retention, and
the drift rules (share jump; the daily band with its minimum history), through
`integrity.audits.run_audit` on real databases with a controlled clock.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from integrity.audit_history import AuditHistory, band, daily_drift
from integrity.audits import run_audit
from integrity.ledger import LEDGER_SCHEMA_VERSION, Ledger
from integrity.settings import resolve_settings
from test_audit_cli import BASE, add_player, add_results, plant_short_durations, seed_clean, writing


def settings_for(url: str, **audits):
    settings = resolve_settings(environ=dict(os.environ), cwd=Path.cwd(), database_url_option=url)
    return replace(settings, audits=replace(settings.audits, **audits))


@pytest.fixture
def ledger(tmp_path):
    ledger = Ledger.open(tmp_path / "state")
    yield ledger
    ledger.close()


def table_rows(ledger, sql: str) -> list[tuple]:
    with ledger.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.text(sql))]


# ---------------------------------------------------------------- the ledger layout


def test_a_layout_1_ledger_is_upgraded_in_place_keeping_its_runs(tmp_path):
    state = tmp_path / "state"
    ledger = Ledger.open(state)
    run_id = ledger.start("status")
    ledger.finish(run_id, 0)
    with ledger.engine.begin() as connection:  # what a layout-1 tool left behind
        connection.execute(sa.text("DROP TABLE audit_rule_counts"))
        connection.execute(sa.text("DROP TABLE audit_runs"))
        connection.execute(sa.text("UPDATE ledger_meta SET value = '1' WHERE key = 'schema_version'"))
    ledger.close()

    again = Ledger.open(state)
    try:
        assert LEDGER_SCHEMA_VERSION >= 2  # later layouts upgrade from 1 as well
        assert again.schema_version() == LEDGER_SCHEMA_VERSION
        assert {"audit_runs", "audit_rule_counts", "runs"} <= set(sa.inspect(again.engine).get_table_names())
        assert [run.id for run in again.runs()] == [run_id]
    finally:
        again.close()


# ---------------------------------------------------------------- what a run records


def test_a_run_records_its_scope_watermarks_and_every_rules_counts(sqlite_url, ledger):
    seed_clean(sqlite_url)
    bad = plant_short_durations(sqlite_url, 1, 2, BASE + timedelta(days=3))
    now = BASE + timedelta(days=10)
    outcome = run_audit(settings_for(sqlite_url), ledger, run_id="r1", now=now)
    assert outcome.exit_code == 3
    [stored] = AuditHistory(ledger.engine).runs()
    assert (stored.id, stored.run_id, stored.started_at, stored.scope, stored.engine) == (outcome.audit_id, "r1", now, "full", "sql")
    assert stored.rules is None and stored.since is None
    assert stored.watermarks["results"] == max(bad)
    assert stored.ok is False and stored.error_rules == len(outcome.error_rules) >= 1
    assert set(stored.counts) == {rule.rule for rule in outcome.rules}
    count = stored.counts["results.duration_min"]
    assert (count.failing_rows, count.checked_rows, count.severity) == (2, 14, "error")
    assert stored.day == "2025-01-15" and stored.rows_per_day == 0 and stored.mean_wpm_day is None


def test_retention_deletes_runs_and_their_counts_older_than_the_limit(sqlite_url, ledger):
    seed_clean(sqlite_url)
    settings = settings_for(sqlite_url, history_retention_days=30)
    first = run_audit(settings, ledger, now=BASE + timedelta(days=5))
    second = run_audit(settings, ledger, now=BASE + timedelta(days=20))
    assert first.history_removed == 0 and second.history_removed == 0
    third = run_audit(settings, ledger, now=BASE + timedelta(days=36))  # first is 31 days old now
    assert third.history_removed == 1
    assert [run.id for run in AuditHistory(ledger.engine).runs()] == [third.audit_id, second.audit_id]
    ids = {row[0] for row in table_rows(ledger, "SELECT DISTINCT audit_id FROM audit_rule_counts")}
    assert ids == {second.audit_id, third.audit_id}


# ---------------------------------------------------------------- drift: share jump


def test_a_share_jump_warns_with_from_and_to_but_within_the_limit_does_not(sqlite_url, ledger):
    seed_clean(sqlite_url)
    settings = settings_for(sqlite_url)
    run_audit(settings, ledger, now=BASE + timedelta(days=5))
    plant_short_durations(sqlite_url, 2, 5, BASE + timedelta(days=3))
    outcome = run_audit(settings, ledger, now=BASE + timedelta(days=6))
    jumps = [w for w in outcome.drift if w.kind == "share_jump" and w.subject == "results.duration_min"]
    assert len(jumps) == 1
    assert jumps[0].previous == 0 and jumps[0].current == pytest.approx(5 / 17)
    assert jumps[0].message.startswith("results.duration_min: failing share rose from 0.000% (0 of 12 rows, audit ")
    assert "to 29.412% (5 of 17 rows), more than the allowed 0.100% ([audits] max_share_jump)" in jumps[0].message
    stored = AuditHistory(ledger.engine).runs(limit=1)[0]
    assert jumps[0].message in stored.drift

    # the same share again: no jump; a generous limit: no warning either
    again = run_audit(settings, ledger, now=BASE + timedelta(days=7))
    assert [w for w in again.drift if w.kind == "share_jump"] == []
    plant_short_durations(sqlite_url, 3, 5, BASE + timedelta(days=4))
    lenient = run_audit(settings_for(sqlite_url, max_share_jump=0.5), ledger, now=BASE + timedelta(days=8))
    assert [w for w in lenient.drift if w.subject == "results.duration_min"] == []


def test_share_jumps_compare_runs_of_the_same_scope(sqlite_url, ledger):
    seed_clean(sqlite_url)
    plant_short_durations(sqlite_url, 1, 3, BASE + timedelta(days=3))
    settings = settings_for(sqlite_url)
    run_audit(settings, ledger, now=BASE + timedelta(days=5))
    with writing(sqlite_url) as connection:
        add_player(connection, 7)
        add_results(connection, 7, 4, start=BASE + timedelta(days=4))
    # 0 of 4 new rows fail: compared with nothing incremental before, so no warning
    incremental = run_audit(settings, ledger, since_last=True, now=BASE + timedelta(days=6))
    assert incremental.scope == "incremental" and incremental.compared_with is None
    finding = next(r for r in incremental.rules if r.rule == "results.duration_min")
    assert (finding.failing_rows, finding.checked_rows, finding.previous_failing_rows) == (0, 4, None)
    assert [w for w in incremental.drift if w.kind == "share_jump"] == []


# ---------------------------------------------------------------- drift: the daily band


def test_the_daily_band_warns_only_once_enough_days_are_recorded_and_never_changes_the_exit_code(sqlite_url, ledger):
    settings = settings_for(sqlite_url, drift_min_history=3, drift_window_runs=3)
    with writing(sqlite_url) as connection:
        add_player(connection, 1)
    per_day = [10, 30, 11, 10, 11, 30]
    outcomes = []
    for index, count in enumerate(per_day):
        day = BASE + timedelta(days=index + 1)
        with writing(sqlite_url) as connection:
            add_results(connection, 1, count, start=day.replace(hour=8))
        outcomes.append(run_audit(settings, ledger, now=day + timedelta(days=1, hours=3)))
    assert [o.rows_per_day for o in outcomes] == per_day
    assert all(o.exit_code == 0 for o in outcomes), [o.error_rules for o in outcomes]
    daily = [[w for w in o.drift if w.kind in ("rows_per_day", "mean_wpm")] for o in outcomes]
    # day 2 (30 after 10) jumps, but only 1 day is recorded: fewer than drift_min_history
    assert daily[:5] == [[], [], [], [], []]
    [warning] = daily[5]
    assert warning.kind == "rows_per_day" and warning.current == 30
    assert warning.message.startswith("results per day on 2025-01-12: 30, outside the band 9..12 (mean 11 +- 3 sd of 1) "
                                      "of the 3 days 2025-01-09..2025-01-11 in the audit history")


def test_incremental_runs_measure_a_day_once(sqlite_url, ledger):
    seed_clean(sqlite_url)
    settings = settings_for(sqlite_url)
    now = BASE + timedelta(days=9)
    assert run_audit(settings, ledger, now=now).day == "2025-01-14"
    assert run_audit(settings, ledger, since_last=True, now=now + timedelta(minutes=15)).day is None
    assert run_audit(settings, ledger, since_last=True, now=now + timedelta(days=1)).day == "2025-01-15"
    assert run_audit(settings, ledger, now=now + timedelta(days=1, minutes=30)).day == "2025-01-15"  # full: always


def test_band_and_daily_drift_by_hand():
    low, high, mean, sd = band([10.0, 12.0, 14.0])
    assert (mean, sd) == (12.0, 2.0) and (low, high) == (6.0, 18.0)
    recorded = [("2025-01-03", 50.0, 100), ("2025-01-02", 52.0, 110), ("2025-01-01", 51.0, 90)]
    assert daily_drift(day="2025-01-04", mean_wpm=51.0, rows=100, recorded=recorded, min_history=3) == []
    [warning] = daily_drift(day="2025-01-04", mean_wpm=80.0, rows=100, recorded=recorded, min_history=3)
    assert warning.kind == "mean_wpm" and warning.previous == 51.0
    assert daily_drift(day="2025-01-04", mean_wpm=80.0, rows=100, recorded=recorded, min_history=4) == []
    # a day without results has no mean wpm, and its count of 0 is judged
    [warning] = daily_drift(day="2025-01-04", mean_wpm=None, rows=0, recorded=recorded, min_history=3)
    assert warning.kind == "rows_per_day" and warning.current == 0
