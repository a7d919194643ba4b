"""The report's figures are the same from a SQLite ledger and a PostgreSQL one.

The probe's runs are summed up in the ledger's database (integrity.evidence._probe_figures:
epoch seconds, JSON extraction and integer buckets are written per dialect); every other
figure is read row by row. The same simulated day of routine is written into a SQLite
ledger and into a PostgreSQL one (`[state] ledger_url`, a throwaway database of this
test's own, dropped), and the two evidences must agree, point for point.
"""

from __future__ import annotations

import sys
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from backup_helpers import PROJECT, BackupEnv
from conftest import drop_pg_database, pg_url_for

sys.path.insert(0, str(PROJECT))
from bench.routine import Incidents, simulate_routine  # noqa: E402

pytestmark = pytest.mark.postgres


def figures(evidence) -> dict:
    charts = {c.id: [(s.name, p.x, p.y, p.label, p.flagged) for s in c.series for p in s.points] for c in evidence.charts}
    return {"charts": charts, "jobs": evidence.jobs, "drills": evidence.drills, "rules": evidence.audit_rules,
            "audits": evidence.audits_in_window, "runs": evidence.runs_in_window,
            "dry_runs": evidence.dry_runs, "attention": [b.id for b in evidence.attention]}


def test_a_postgresql_ledger_gives_the_same_report_as_a_sqlite_one(pg_admin, sqlite_url, tmp_path):
    from integrity.evidence import collect_evidence, parse_since
    from integrity.ledger import Ledger

    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    now = start + timedelta(days=1)  # the window is exactly the simulated day
    name = f"c_report_ledger_{uuid.uuid4().hex[:8]}"
    with pg_admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        found = {}
        for kind, ledger_url in (("sqlite", ""), ("postgresql", pg_url_for(name))):
            env = BackupEnv(tmp_path / kind, sqlite_url, extra_env={"INTEGRITY_STATE__LEDGER_URL": ledger_url})
            settings = env.settings()
            ledger = Ledger.open(settings.state.dir, settings.state.ledger_url)
            try:
                simulate_routine(ledger, start=start, days=1, results_rows=20,
                                 incidents=Incidents(suspect_backups_day=0, failed_drill_day=0, dirty_audit_day=0,
                                                     probe_dip_day=0, backup_cannot_run_day=0))
                found[kind] = figures(collect_evidence(settings, ledger, since=parse_since("24h"), now=now))
                if kind == "postgresql":  # the comparison sees one probe run fewer
                    with ledger.engine.begin() as connection:
                        connection.execute(sa.text(
                            "DELETE FROM runs WHERE id = (SELECT id FROM runs WHERE command = 'probe' AND exit_code <> 0 "
                            "ORDER BY started_at LIMIT 1)"))
                    found["one fewer"] = figures(collect_evidence(settings, ledger, since=parse_since("24h"), now=now))
            finally:
                ledger.close()
        assert found["sqlite"] == found["postgresql"]
        assert found["one fewer"] != found["postgresql"]
        assert found["one fewer"]["charts"]["probe-success"] != found["postgresql"]["charts"]["probe-success"]
        probe = next(j for j in found["sqlite"]["jobs"] if j.job == "probe")
        assert probe.runs == 24 * 60 and probe.failures > 0
        assert any(flagged for *_, flagged in found["sqlite"]["charts"]["probe-success"])
    finally:
        drop_pg_database(pg_admin, name)
