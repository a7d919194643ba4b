"""Days of the scheduled routine, written into a ledger as the jobs would have recorded it.

`integrity report` reads what the tool recorded; a month of that record takes a month to
make with the real scheduler. This writes the same rows the real commands write (the
`runs` table with each command's summary shape, the audit history) at the times the
default `[schedule]` would have fired them: backup and verify hourly, an incremental audit
every 15 minutes, a probe every minute, deep verify, prune, full audit and drill daily.
With `incidents` some days go wrong the way the incident did: a backup job pointed at the
wrong copy (suspect backups), a drill that fails verification, an audit that finds
corrupt scores, a probe that dips under its objective, a backup job that cannot run.

The summaries' shapes are copied from the real commands' (backups/create.py, probe.py,
audits.py, recovery/drill.py summary()); tests/test_report_html.py puts real runs of the
real commands on top of these, and bench/report.py times the report on a month of them.
The ledger does not depend on the guarded database's size: only its rows' counts are
made up (they scale the backup sizes).
"""

from __future__ import annotations

import json
import random
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

# The catalogue's rule ids that the simulated audits report (a subset of the real ones).
RULES = (("results.accuracy_range", "error"), ("results.raw_wpm_not_below_wpm", "error"),
         ("progress.matches_results", "error"), ("results.wpm_suspicious", "warn"))
DRILL_PHASES = ("hash check", "restore", "deep checks", "audits", "swap rehearsal", "compare with live")


@dataclass(frozen=True)
class Incidents:
    """Which simulated day (0-based) each incident happens on; None: never."""

    suspect_backups_day: int | None = 1  # three hourly backups of an empty copy
    failed_drill_day: int | None = 2
    dirty_audit_day: int | None = 2  # corrupt scores found by the 15-minute audits for two hours
    probe_dip_day: int | None = 1  # an hour under the objective
    backup_cannot_run_day: int | None = 3  # the backup job exits 4 twice


def _backup_id(moment: datetime, rng: random.Random) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ") + f"-{rng.getrandbits(24):06x}"


def simulate_routine(ledger, *, start: datetime, days: int, seed: int = 1, results_rows: int = 6_500_000,
                     incidents: Incidents | None = Incidents(), probe_minutes: int = 1) -> dict[str, int]:
    """Write `days` of the routine from `start` into `ledger` (an open integrity.ledger.Ledger);
    return how many rows of each command were written."""
    from integrity.ledger import audit_rule_counts, audit_runs, runs

    rng = random.Random(seed)
    host = socket.gethostname()
    incidents = incidents or Incidents(None, None, None, None, None)
    rows: list[dict] = []
    audits: list[tuple[dict, list[dict]]] = []
    counts: dict[str, int] = {}

    def run(command: str, at: datetime, seconds: float, exit_code: int, summary: dict) -> str:
        run_id = uuid.UUID(int=rng.getrandbits(128)).hex
        outcome = {0: "ok", 3: "problems", 4: "precondition", 5: "failed"}.get(exit_code, "error")
        rows.append({"id": run_id, "command": command, "started_at": at, "finished_at": at + timedelta(seconds=seconds),
                     "outcome": outcome, "exit_code": exit_code, "summary": json.dumps(summary, sort_keys=True),
                     "host": host, "pid": 1000 + len(rows) % 30000, "tool_version": "0.1.0", "process": None,
                     "run_lock": None})
        counts[command] = counts.get(command, 0) + 1
        return run_id

    size = results_rows * 62  # about what a compressed backup of the simulated store weighs
    last_good = None
    end = start + timedelta(days=days)
    minute = timedelta(minutes=1)
    at = start
    while at < end:
        day = (at - start).days
        hour, quarter = at.minute == 0, at.minute % 15 == 0
        midnight = hour and at.hour == 0
        # ---------------------------------------------------------- backups, hourly
        if hour:
            if day == incidents.backup_cannot_run_day and at.hour in (3, 4):
                run("backup create", at, 0.4, 4, {"error": "repository locked by 'backup prune' (pid 4242); wait for it, "
                                                          "or run again with --lock-wait 600"})
            else:
                suspect = day == incidents.suspect_backups_day and at.hour in (9, 10, 11)
                backup_id = _backup_id(at, rng)
                taken = int(size * (0.02 if suspect else 1 + (at - start).total_seconds() / 86400 * 0.004 + rng.uniform(-0.003, 0.003)))
                reasons = ["results shrank from 6,500,000 to 0 rows (over the 10% tolerance against the previous good backup)"] if suspect else []
                run("backup create", at, 11 + rng.uniform(0, 3), 3 if suspect else 0,
                    {"backup_id": backup_id, "size": taken, "rows": {"results": 0 if suspect else results_rows},
                     "seconds": 12.0, "suspect": reasons})
                if not suspect:
                    last_good = backup_id
                run("backup verify", at + 2 * minute, 3 + rng.uniform(0, 1), 0,
                    {backup_id: {"quick": "ok", "deep": None}})
        # ---------------------------------------------------------- daily jobs
        if midnight and last_good:
            run("backup verify", at + 5 * minute, 95 + rng.uniform(0, 10), 0, {last_good: {"quick": "ok", "deep": "ok"}})
            run("backup prune", at + 20 * minute, 1.5, 0, {"dry_run": False, "deleted": 1, "kept": 48})
        if hour and at.hour == 2 and last_good:
            failed = day == incidents.failed_drill_day
            phases = {"hash check": 2.1 + rng.uniform(0, .3), "restore": 38 + rng.uniform(0, 6)}
            if not failed:
                phases.update({"deep checks": 21 + rng.uniform(0, 3), "audits": 30 + rng.uniform(0, 4),
                               "swap rehearsal": 0.8, "compare with live": 12 + rng.uniform(0, 2)})
            recovery = sum(v for k, v in phases.items() if k != "compare with live")
            problems = ["restore: the restored copy's fingerprint of results differs from the manifest's"] if failed else []
            run("drill", at, sum(phases.values()) + 1, 5 if failed else 0, {
                "backup_id": last_good, "backup_age_seconds": 7200.0, "phases": {k: round(v, 4) for k, v in phases.items()},
                "recovery_seconds": None if failed else round(recovery, 4),
                "predicted_seconds": None if failed else round(recovery + 24 + rng.uniform(0, 3), 4),
                "rto_seconds": 600, "rto_met": None if failed else True, "rpo_seconds": 3600, "rpo_met": True,
                "audit": None if failed else "clean", "differing_share": {}, "problems": problems, "findings": [],
                "compare_problem": None,
            })
        # ---------------------------------------------------------- audits
        if quarter:
            full = hour and at.hour == 1
            dirty = day == incidents.dirty_audit_day and 14 <= at.hour < 16
            rule_rows = []
            for rule, severity in RULES:
                failing = 0
                if dirty and rule == "results.raw_wpm_not_below_wpm":
                    failing = 2 + rng.randrange(3)
                elif severity == "warn" and rng.random() < 0.05:
                    failing = 1
                rule_rows.append({"rule": rule, "severity": severity, "failing_rows": failing,
                                  "checked_rows": results_rows if full else 200 + rng.randrange(100)})
            errors = [r["rule"] for r in rule_rows if r["failing_rows"] and r["severity"] == "error"]
            warns = [r["rule"] for r in rule_rows if r["failing_rows"] and r["severity"] != "error"]
            scope = "full" if full else "incremental"
            seconds = 40.0 if full else 0.3
            run_id = run("audit", at, seconds, 3 if errors else 0,
                         {"audit_id": None, "engine": "sql", "scope": scope, "ok": not errors, "rules": len(RULES),
                          "error_rules": errors, "warn_rules": warns, "drift": 0})
            audits.append(({"run_id": run_id, "started_at": at, "seconds": seconds, "engine": "sql", "scope": scope,
                            "rules": None, "since": None, "watermarks": "{}", "ok": not errors,
                            "error_rules": len(errors), "warn_rules": len(warns), "day": None, "mean_wpm_day": None,
                            "rows_per_day": None, "drift": "[]"}, rule_rows))
        # ---------------------------------------------------------- probe
        if (at - start).total_seconds() % (probe_minutes * 60) == 0:
            dip = day == incidents.probe_dip_day and at.hour == 14
            ratio = round(0.9 + rng.uniform(-0.05, 0.05), 4) if dip else (1.0 if rng.random() < 0.995 else 0.99)
            failed_players = 0 if ratio == 1 else round((1 - ratio) * 100)
            run("probe", at + timedelta(seconds=5), 0.2 + rng.uniform(0, 0.05), 3 if ratio < 0.99 else 0, {
                "success_ratio": ratio, "objective": 0.99, "probed": 100, "failed": failed_players, "sampled": 97,
                "canaries": 3, "latency_p50_seconds": 0.0021, "latency_p95_seconds": 0.0049, "latency_max_seconds": 0.009,
                "failed_players_by_kind": {"exception": 0, "mismatch": failed_players, "missing-row": 0, "timeout": 0,
                                           "wrong-type": 0},
            })
        at += minute
    # A migration dry run that caught a bad revision, then the fixed one that passed.
    for offset, passed in ((days * 0.4, False), (days * 0.6, True)):
        moment = start + timedelta(days=offset)
        run("migrate dry-run", moment, 48.0, 0 if passed else 3, {
            "start_revision": "0001_initial_schema", "target_revision": "0002_score_storage" if not passed else "0002_score_storage_v2",
            "revisions": ["0002_score_storage"], "errors": 0 if passed else 2, "warnings": 1, "passed": passed, "data_pass": True,
            "findings": [] if passed else [
                {"severity": "error", "rule": "data.values-changed", "message": "results.wpm: 99,000 of 100,000 values changed"},
                {"severity": "error", "rule": "static.column-type-narrowing", "message": "results.wpm numeric(6,2) -> integer"},
            ],
        })

    with ledger.engine.begin() as connection:
        for chunk in range(0, len(rows), 5000):
            connection.execute(runs.insert(), rows[chunk:chunk + 5000])
        for audit, rule_rows in audits:
            audit_id = connection.execute(audit_runs.insert().values(**audit)).inserted_primary_key[0]
            connection.execute(audit_rule_counts.insert(), [{"audit_id": audit_id, **r} for r in rule_rows])
    return counts


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
