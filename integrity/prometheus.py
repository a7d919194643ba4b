"""The Prometheus text of the current state, and its atomic text file.

`integrity metrics` prints it and writes it to `[metrics] path` (node_exporter's textfile
collector reads `*.prom` files from a directory); so does the runtime after every run, so
that cron users get it as well as the scheduler: collected afresh after a run that may
have changed what it reads, carried forward from the file after one that did not
(`UNCHANGING_COMMANDS`: `status`, `history`, ...). Everything comes from
what the tool already records, never from the daemon's memory:

- per job (integrity.jobs.JOBS): last success, last completion, duration, exit code,
  from the ledger's runs; whether `[schedule]` runs it, and its interval;
- the newest good and newest deep-verified backup of this database (its store identity)
  from the repository's catalogue;
- failing rows per audit rule of the newest whole-catalogue audit, and the error-rule
  rows `integrity status` still reports (dirty until a full audit after it is clean);
- the last drill's predicted full restore, the last probe's success ratio and latency;
- the objectives, so that alert rules compare with what is configured here instead of
  copying numbers (alerts/integrity.rules.yml).

Exposition format 0.0.4: `# HELP` and `# TYPE` lines, every family a gauge, names with
the `integrity_` prefix and a unit suffix, labels only for jobs, audit rules and probe
failure kinds (never a player, never a URL: DESIGN.md invariant 7). The job label is
`job_name`, not `job`:
Prometheus attaches its own `job` label to every scraped series and, by default
(`honor_labels: false`), renames a scraped `job` to `exported_job`, which would break
every rule that matches on it. A series that has no value yet is left
out, except the success and backup timestamps, which are 0 ("never") so that the age
alerts fire on a routine that never ran.

The file is written as a temp file in the same directory (a name node_exporter ignores),
fsynced, made world-readable, renamed over the old one, and the directory fsynced: a
reader sees the old text or the new, never half of either.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from game_core.errors import ExitCode, PreconditionFailed
from integrity.settings import JOBS as SCHEDULED_JOBS
from integrity.settings import Settings

GAUGE = "gauge"
log = logging.getLogger("integrity")

# Every family the writer can emit, with its help text: the alert rules' test checks that
# each expression names only these.
METRICS: dict[str, str] = {
    "integrity_job_enabled": "1 when [schedule] runs the job, 0 when it is off.",
    "integrity_job_interval_seconds": "The job's [schedule] interval (jobs on a cron expression have none).",
    "integrity_job_last_success_timestamp_seconds": "When the job's newest run that exited 0 ended (0: never).",
    "integrity_job_last_completion_timestamp_seconds": "When the job's newest finished run ended, whatever its exit code.",
    "integrity_job_last_duration_seconds": "How long the job's newest finished run took.",
    "integrity_job_last_exit_code": "Exit code of the job's newest finished run (0 ok, 3 problems, 4 precondition, 5 verification failed).",
    "integrity_repository_newest_good_timestamp_seconds": "Creation time of the newest restorable backup of this database in each repository (primary and [[repositories]] copies; 0: none or unreachable), with its kind (directory or s3).",
    "integrity_offhost_newest_good_timestamp_seconds": "Creation time of the newest restorable backup of this database on object storage, off this host (0: none): the 3-2-1 rule's off-site copy.",
    "integrity_objective_copy_max_age_seconds": "[objectives] copy_max_age_seconds: how old the newest backup in each copy, and off this host, may be.",
    "integrity_backup_newest_good_timestamp_seconds": "Creation time of the newest restorable backup of this database (intact, not suspect, not failed or deep-failed, not a safety backup, not dirty; 0: none): the RPO's measure.",
    "integrity_backup_newest_good_size_bytes": "Size of the newest restorable backup.",
    "integrity_backup_newest_deep_verified_timestamp_seconds": "Creation time of the newest restorable backup that passed deep verification (0: none).",
    "integrity_backup_newest_deep_verified_size_bytes": "Size of the newest deep-verified backup.",
    "integrity_backups_suspect": "Backups of this database in the repository that are suspect (implausible when taken: shrunk, stale, another source).",
    "integrity_backups_deep_failed": "Backups of this database in the repository whose deep verification failed.",
    "integrity_backups_failed": "Backups of this database in the repository that a restore or drill found failing verification.",
    "integrity_audit_last_timestamp_seconds": "When the newest whole-catalogue audit ran (the one the rule counts come from).",
    "integrity_audit_rule_failing_rows": "Rows failing each rule in the newest whole-catalogue audit (an incremental one counts new rows only).",
    "integrity_audit_unresolved_error_rows": "Rows failing error-severity rules as integrity status reports them: found since the newest full audit, until a full audit is clean.",
    "integrity_drill_predicted_recovery_seconds": "The last drill's predicted full restore time (compare with integrity_objective_rto_seconds).",
    "integrity_drill_measured_recovery_seconds": "The last drill's measured phases: hash check, restore, deep checks, audits.",
    "integrity_drill_last_timestamp_seconds": "When the newest drill that reached a verdict ended (0: never).",
    "integrity_drill_last_exit_code": "Exit code of the newest drill that reached a verdict (0 passed, 3 problems, 5 verification failed).",
    "integrity_drill_failed": "1 while the newest drill's verdict is a failed verification and no successful restore came after it (status's last drill row), else 0.",
    "integrity_probe_success_ratio": "Share of the last probe's player retrievals that succeeded and were consistent.",
    "integrity_probe_latency_p50_seconds": "Median time of one player's reads in the last probe.",
    "integrity_probe_latency_p95_seconds": "95th percentile time of one player's reads in the last probe.",
    "integrity_probe_latency_max_seconds": "Slowest player's reads in the last probe.",
    "integrity_probe_failed_players": "Players whose reads failed in the last probe, by kind (exception, timeout, wrong-type, missing-row, mismatch); 0 for a kind not seen.",
    "integrity_objective_rpo_seconds": "[objectives] rpo_seconds: the newest good backup must be younger.",
    "integrity_objective_rto_seconds": "[objectives] rto_seconds: a predicted full restore must take less.",
    "integrity_objective_deep_verify_max_age_seconds": "[objectives] deep_verify_max_age_seconds.",
    "integrity_objective_probe_success_ratio": "[objectives] probe_min_success_ratio.",
    "integrity_probe_last_timestamp_seconds": "When the newest probe that measured anything ended (0: never): its figures are this old.",
    "integrity_pitr_enabled": "1 when [pitr] enabled: point-in-time recovery is configured and its families below are read.",
    "integrity_pitr_newest_timestamp_seconds": "The newest position the point-in-time archive holds (Litestream's newest LTX file, pgBackRest's newest archived WAL; 0: nothing shipped yet).",
    "integrity_pitr_oldest_timestamp_seconds": "The oldest moment the point-in-time archive can restore (0: none).",
    "integrity_pitr_lag_seconds": "The replication lag when the archive was read: 0 when nothing written waits to be shipped, else the age of the newest position (absent: nothing shipped yet).",
    "integrity_pitr_errors": "Errors the point-in-time engine reported when it was read (replication or archiving failing, program missing).",
    "integrity_pitr_checked_timestamp_seconds": "When the point-in-time archive was last read (integrity metrics, status, pitr status and schedule run read it; other runs carry the last reading forward).",
    "integrity_objective_pitr_lag_seconds": "[pitr] lag_objective_seconds: the point-in-time lag must stay below.",
    "integrity_database_up": "1 when the guarded database answered when these metrics were collected.",
    "integrity_schema_unchecked": "1 when a revision live went through never passed a dry run on this store (applied behind the tool's back), else 0.",
    "integrity_schema_drift": "1 when live's tables, columns or column types differ from the model of its revision, else 0 (absent: not comparable).",
    "integrity_metrics_generated_timestamp_seconds": "When these metrics were collected.",
}

# Drill exit codes that reached a verdict on their backup (4: it could not run), as status reads them.
_DRILL_VERDICTS = (0, 3, 5)
# Whole-catalogue audits looked through for the newest full one (status does the same).
_AUDIT_LOOKBACK = 500


class MetricsUnwritable(PreconditionFailed):
    """`[metrics] path` cannot be written."""


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(frozen=True)
class MetricsReport:
    """`integrity metrics`: the exposition text and where the runs write it."""

    path: str
    text: str
    samples: tuple[Sample, ...]

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK

    def summary(self) -> dict[str, Any]:
        return {"samples": len(self.samples), "path": self.path}


def _ts(moment: datetime | None) -> float:
    return 0.0 if moment is None else moment.timestamp()


class _Collector:
    def __init__(self) -> None:
        self.samples: list[Sample] = []

    def add(self, name: str, value: float | int | bool | None, **labels: str) -> None:
        assert name in METRICS, name  # a new family must be declared (and documented) in METRICS
        if value is None:
            return
        self.samples.append(Sample(name, tuple(labels.items()), float(value)))


def collect(settings: Settings, ledger, *, now: datetime | None = None, pitr_fresh: bool = True,
            previous_text: str | None = None) -> tuple[Sample, ...]:
    """Every sample of the current state, in METRICS order. The point-in-time families are
    read from the engine when `pitr_fresh`, else carried forward from `previous_text` (the
    file as the last run left it): see `_pitr`."""
    now = now or datetime.now(timezone.utc)
    out = _Collector()
    identity, up, verdict = _database(settings, ledger)
    _jobs(out, ledger)
    _backups(out, settings, identity, now)
    _audits(out, ledger)
    _drill(out, ledger)
    _probe(out, ledger)
    _pitr(out, settings, fresh=pitr_fresh, previous_text=previous_text)
    _configured(out, settings)
    _database_families(out, up, verdict)
    out.add("integrity_metrics_generated_timestamp_seconds", now.timestamp())
    return _in_order(out.samples)


_DATABASE = ("integrity_database_up", "integrity_schema_unchecked", "integrity_schema_drift")


def _database_families(out: _Collector, up: bool, verdict) -> None:
    out.add("integrity_database_up", up)
    if verdict is not None:
        out.add("integrity_schema_unchecked", None if verdict.unchecked is None else verdict.is_unchecked)
        out.add("integrity_schema_drift", None if verdict.differences is None else verdict.drift)


def _in_order(samples) -> tuple[Sample, ...]:
    order = {name: i for i, name in enumerate(METRICS)}
    return tuple(sorted(samples, key=lambda s: order[s.name]))  # stable: labels keep their order


# Families that say what is configured here, written afresh by every run.
_CONFIGURED = ("integrity_job_enabled", "integrity_job_interval_seconds", "integrity_objective_rpo_seconds",
               "integrity_objective_rto_seconds", "integrity_objective_deep_verify_max_age_seconds",
               "integrity_objective_probe_success_ratio", "integrity_objective_copy_max_age_seconds")


def _configured(out: _Collector, settings: Settings) -> None:
    from integrity.settings import schedule_seconds

    for name in SCHEDULED_JOBS:
        schedule = getattr(settings.schedule, name)
        out.add("integrity_job_enabled", schedule != "off", job_name=name)
        out.add("integrity_job_interval_seconds", schedule_seconds(schedule), job_name=name)
    objectives = settings.objectives
    out.add("integrity_objective_rpo_seconds", objectives.rpo_seconds)
    out.add("integrity_objective_rto_seconds", objectives.rto_seconds)
    out.add("integrity_objective_deep_verify_max_age_seconds", objectives.deep_verify_max_age_seconds)
    out.add("integrity_objective_probe_success_ratio", objectives.probe_min_success_ratio)
    if settings.repositories:
        out.add("integrity_objective_copy_max_age_seconds", objectives.copy_max_age_seconds)


def _database(settings: Settings, ledger):
    """(store identity, reachable, schema verdict). Backups count only when they are this
    database's; the verdict is integrity status's schema row (integrity.schema_check)."""
    from contextlib import ExitStack

    import sqlalchemy as sa

    from game_core.errors import Failure
    from integrity.db.connect import Database
    from integrity.schema_check import judge_schema, model_cache

    opened = ExitStack()
    try:
        engine = opened.enter_context(Database.of(settings).reader())
    except Failure:
        return None, False, None
    try:
        with opened, engine.connect() as connection:
            verdict = judge_schema(connection, ledger, model_cache=model_cache(settings.state.dir))
            return verdict.identity, True, verdict
    except sa.exc.DBAPIError:
        return None, False, None


def _jobs(out: _Collector, ledger) -> None:
    from integrity.jobs import JOBS, jobs_runs

    every = jobs_runs(ledger, [JOBS[name] for name in SCHEDULED_JOBS])
    for name in SCHEDULED_JOBS:
        runs = every[name]
        out.add("integrity_job_last_success_timestamp_seconds",
                _ts(runs.last_success.finished_at if runs.last_success else None), job_name=name)
        last = runs.last_completed
        if last is not None:
            out.add("integrity_job_last_completion_timestamp_seconds", _ts(last.finished_at), job_name=name)
            out.add("integrity_job_last_duration_seconds", last.duration_seconds, job_name=name)
            out.add("integrity_job_last_exit_code", last.exit_code, job_name=name)


def _backups(out: _Collector, settings: Settings, identity: str | None, now: datetime) -> None:
    from integrity.backups.repositories import PRIMARY_REPOSITORY, Freshness, read_repositories

    primary = read_repositories(settings, identity, now, [PRIMARY_REPOSITORY])[0]
    good = deep = None
    catalog = primary.catalog
    if catalog is not None:
        good, deep = catalog.newest_restorable(), catalog.newest_deep_verified()
    out.add("integrity_backup_newest_good_timestamp_seconds", _ts(good.created_at if good else None))
    out.add("integrity_backup_newest_good_size_bytes", good.size if good else None)
    out.add("integrity_backup_newest_deep_verified_timestamp_seconds", _ts(deep.created_at if deep else None))
    out.add("integrity_backup_newest_deep_verified_size_bytes", deep.size if deep else None)
    counts = catalog.counts() if catalog is not None else {}
    out.add("integrity_backups_suspect", counts.get("suspect", 0))
    out.add("integrity_backups_deep_failed", counts.get("deep_failed", 0))
    out.add("integrity_backups_failed", counts.get("failed", 0))
    if settings.repositories:  # the 3-2-1 rule: each repository's freshness, and the newest off-host one
        from integrity.backups.repositories import copy_names, newest_good_per_repository

        every = [Freshness.of(primary), *newest_good_per_repository(settings, identity, now, copy_names(settings))]
        for freshness in every:
            out.add("integrity_repository_newest_good_timestamp_seconds",
                    _ts(freshness.newest.created_at if freshness.newest else None),
                    repository=freshness.name, kind="s3" if freshness.remote else "directory")
        off_host = [f.newest.created_at for f in every if f.remote and f.newest is not None]
        out.add("integrity_offhost_newest_good_timestamp_seconds", _ts(max(off_host) if off_host else None))


def _audits(out: _Collector, ledger) -> None:
    from integrity.audit_history import FULL, AuditHistory

    runs = AuditHistory(ledger.engine).runs(limit=_AUDIT_LOOKBACK, whole_catalogue=True)
    if not runs:
        return
    last = runs[0]
    out.add("integrity_audit_last_timestamp_seconds", _ts(last.started_at))
    for rule in sorted(last.counts):
        count = last.counts[rule]
        out.add("integrity_audit_rule_failing_rows", count.failing_rows, rule=rule, severity=count.severity)
    # The same judgement as integrity.status.audit_checks: a dirty run stays unresolved
    # until a full audit after it is clean (an incremental run never re-reads old rows).
    full_index = next((i for i, run in enumerate(runs) if run.scope == FULL), None)
    window = runs if full_index is None else runs[: full_index + 1]
    dirty = next((run for run in window if not run.ok), None)
    rows = 0 if dirty is None else sum(
        c.failing_rows for c in dirty.counts.values() if c.severity == "error" and c.failing_rows
    )
    out.add("integrity_audit_unresolved_error_rows", rows)


def _drill(out: _Collector, ledger) -> None:
    """The last drill's verdict as integrity status judges it (a failure stays 1 until a
    later drill or a successful restore, so the alert cannot go quiet while status says 5),
    and the newest prediction, which a failed drill (it predicts nothing) does not erase."""
    from integrity.jobs import SCAN_LIMIT, iter_finished_runs
    from integrity.status import drill_evidence

    evidence = drill_evidence(ledger)
    last = evidence.last
    out.add("integrity_drill_last_timestamp_seconds", _ts(last.finished_at if last else None))
    out.add("integrity_drill_last_exit_code", last.exit_code if last else None)
    out.add("integrity_drill_failed", evidence.failed)
    predicted = next((run for run in iter_finished_runs(ledger, "drill", limit=SCAN_LIMIT)
                      if run.exit_code in _DRILL_VERDICTS and run.summary.get("predicted_seconds") is not None), None)
    if predicted is None:
        return
    out.add("integrity_drill_predicted_recovery_seconds", predicted.summary.get("predicted_seconds"))
    out.add("integrity_drill_measured_recovery_seconds", predicted.summary.get("recovery_seconds"))


def _probe(out: _Collector, ledger) -> None:
    """The newest probe that measured something: its figures, and when it ended (0: never).
    A probe that stops running (or cannot reach the database) leaves its last ratio in the
    file, so the ratio alone cannot go stale; one that could not reach the database shows
    as the probe job's exit code 4 and a stale last success instead."""
    from integrity.jobs import SCAN_LIMIT, iter_finished_runs

    last = next((run for run in iter_finished_runs(ledger, "probe", limit=SCAN_LIMIT)
                 if run.summary.get("success_ratio") is not None), None)
    out.add("integrity_probe_last_timestamp_seconds", _ts(last.finished_at if last else None))
    if last is None:
        return
    summary = last.summary
    out.add("integrity_probe_success_ratio", summary["success_ratio"])
    out.add("integrity_probe_latency_p50_seconds", summary.get("latency_p50_seconds"))
    out.add("integrity_probe_latency_p95_seconds", summary.get("latency_p95_seconds"))
    out.add("integrity_probe_latency_max_seconds", summary.get("latency_max_seconds"))
    for kind, players in summary.get("failed_players_by_kind", {}).items():
        out.add("integrity_probe_failed_players", players, kind=kind)


# The families a run that does not read the archive carries forward from the file.
_PITR_CARRIED = ("integrity_pitr_newest_timestamp_seconds", "integrity_pitr_oldest_timestamp_seconds",
                 "integrity_pitr_lag_seconds", "integrity_pitr_errors", "integrity_pitr_checked_timestamp_seconds")


def _pitr(out: _Collector, settings: Settings, *, fresh: bool, previous_text: str | None) -> None:
    """The point-in-time archive's window, lag and errors (integrity.status.read_pitr_status:
    one reading shared with status's rows).

    Reading it costs two Litestream subprocesses (measured: 50-90 ms wall, about 57 ms of
    child CPU per reading) or a pgBackRest `info` and a query (measured: 90-330 ms wall,
    about 16 ms of child CPU), too much for the file that every command rewrites (issue
    20's fixed cost). So only `integrity metrics`, `status`,
    `pitr status` and `schedule run` (every heartbeat) read it; every other run carries the
    last reading forward unchanged, and integrity_pitr_checked_timestamp_seconds says how
    old it is. The alert rules compare newest's age with time(), which grows between
    readings, so a carried reading cannot hide a stopped archiver."""
    enabled = settings.pitr.enabled
    out.add("integrity_pitr_enabled", enabled)
    if not enabled:
        return
    out.add("integrity_objective_pitr_lag_seconds", settings.pitr.lag_objective_seconds)
    if not fresh:
        for name, value in _carried(previous_text or "", _PITR_CARRIED).items():
            out.add(name, value)
        return
    from integrity.status import read_pitr_status

    report = read_pitr_status(settings)
    if isinstance(report, Exception):  # the program is missing, the configuration is broken: an error
        out.add("integrity_pitr_errors", 1)
        out.add("integrity_pitr_checked_timestamp_seconds", datetime.now(timezone.utc).timestamp())
        return
    out.add("integrity_pitr_newest_timestamp_seconds", _ts(report.newest))
    out.add("integrity_pitr_oldest_timestamp_seconds", _ts(report.oldest))
    out.add("integrity_pitr_lag_seconds", report.lag_seconds)
    out.add("integrity_pitr_errors", len(report.errors))
    out.add("integrity_pitr_checked_timestamp_seconds", report.checked_at.timestamp())


def _carried(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """The unlabelled samples of `names` in an exposition text this module wrote."""
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            try:
                found[name] = float(value)
            except ValueError:
                continue
    return found


# ---------------------------------------------------------------- exposition format 0.0.4


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def render(samples: tuple[Sample, ...]) -> str:
    """The text exposition format: each family's HELP and TYPE once, then its samples."""
    lines: list[str] = []
    current = None
    for sample in samples:
        if sample.name != current:
            current = sample.name
            lines.append(f"# HELP {sample.name} {_escape_help(METRICS[sample.name])}")
            lines.append(f"# TYPE {sample.name} {GAUGE}")
        labels = ",".join(f'{key}="{_escape_label(value)}"' for key, value in sample.labels)
        lines.append(f"{sample.name}{{{labels}}} {format_value(sample.value)}" if labels
                     else f"{sample.name} {format_value(sample.value)}")
    return "\n".join(lines) + "\n"


def metrics_report(settings: Settings, ledger) -> MetricsReport:
    """`integrity metrics`: every sample collected afresh, and written to `[metrics] path`
    (a file that cannot be written is a warning: the text is printed all the same)."""
    samples = collect(settings, ledger)
    text = render(samples)
    try:
        write_textfile(settings.metrics.path, text)
    except MetricsUnwritable as exc:
        log.warning("%s", exc)
    return MetricsReport(path=str(settings.metrics.path), text=text, samples=samples)


# ---------------------------------------------------------------- the text file


def write_textfile(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically (see the module docstring)."""
    from integrity.backups.durable import fsync_directory

    temp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A dot name with a .tmp suffix: node_exporter only reads *.prom.
        descriptor, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)  # mkstemp makes it 0600; the collector often runs as another user
        os.replace(temp, path)
        temp = None
        fsync_directory(path.parent)
    except OSError as exc:
        # mkdir under a file says "File exists", which names neither the file nor the fix.
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        reason = f"{blocker} is a file, not a directory" if blocker else (exc.strerror or str(exc))
        raise MetricsUnwritable(
            f"cannot write the metrics file {path}: {reason}; make its directory writable, "
            "or set [metrics] path (INTEGRITY_METRICS__PATH) to another file"
        ) from None
    finally:
        if temp is not None:
            try:
                os.unlink(temp)
            except OSError:
                pass


# The runs whose metrics file reads the point-in-time archive afresh (see `_pitr`).
PITR_READING_COMMANDS = frozenset({"metrics", "status", "pitr status"})
# Runs that look at the guarded database: its families (up, schema drift, unchecked
# revisions) are read afresh for the file after them even when the rest is carried, so
# that what `status` just said of the schema is what the alerts see.
DATABASE_READING_COMMANDS = frozenset({"status"})
# Runs that change nothing the metrics are read from (the ledger's job runs, audits, drills
# and probes, the repositories' catalogues, the guarded database): the file written after
# them carries every such sample forward instead of collecting it again (issue 20: that
# collection, a second reading of all `status` had just read, was most of every run's
# fixed cost). A command missing here only costs a full collection. `metrics` itself
# writes the file from what it collected (`metrics_report`).
UNCHANGING_COMMANDS = frozenset({
    "status", "history", "metrics", "report", "backup list", "backup show", "audit history", "pitr status",
    "schedule list", "notify status", "migrate rules",
})


def write_metrics_file(settings: Settings, ledger, *, pitr_fresh: bool = True, changed: bool = True,
                       database_fresh: bool = True) -> Path:
    """Write `[metrics] path`; what the runtime calls after every run. Without
    `pitr_fresh` the point-in-time families are carried forward from the file; without
    `changed` (the run changed nothing they are read from: UNCHANGING_COMMANDS) every
    sample but the configured ones, and the database's unless `database_fresh`, is, when
    the file holds a whole collection."""
    path = settings.metrics.path
    previous = None
    if not changed or (not pitr_fresh and settings.pitr.enabled):
        try:
            previous = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            previous = None
    samples = None
    if not changed:
        samples = _carried_forward(settings, ledger, previous, pitr_fresh=pitr_fresh, database_fresh=database_fresh)
    if samples is None:
        samples = collect(settings, ledger, pitr_fresh=pitr_fresh, previous_text=previous)
    write_textfile(path, render(samples))
    return path


def _carried_forward(settings: Settings, ledger, previous: str | None, *, pitr_fresh: bool,
                     database_fresh: bool) -> tuple[Sample, ...] | None:
    """The samples of the file `previous` with the configured families, the
    point-in-time ones (`_pitr`) and, when `database_fresh`, the database's written
    afresh; None when `previous` is not a whole collection this module wrote (missing,
    cut, another program's)."""
    carried = _parse(previous or "")
    names = {sample.name for sample in carried}
    if not {"integrity_database_up", "integrity_metrics_generated_timestamp_seconds"} <= names:
        return None
    out = _Collector()
    _configured(out, settings)
    _pitr(out, settings, fresh=pitr_fresh, previous_text=previous)
    afresh = {*_CONFIGURED, *(sample.name for sample in out.samples), "integrity_pitr_enabled",
              "integrity_objective_pitr_lag_seconds", *_PITR_CARRIED, "integrity_metrics_generated_timestamp_seconds"}
    if database_fresh:
        _identity, up, verdict = _database(settings, ledger)
        _database_families(out, up, verdict)
        afresh.update(_DATABASE)
    out.samples.extend(sample for sample in carried if sample.name not in afresh)
    out.add("integrity_metrics_generated_timestamp_seconds", datetime.now(timezone.utc).timestamp())
    return _in_order(out.samples)


_SAMPLE = re.compile(r'^([a-z_:][a-z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-z_][a-z0-9_]*)="((?:[^"\\]|\\.)*)"')
_UNESCAPE = {"\\\\": "\\", "\\n": "\n", '\\"': '"'}


def _parse(text: str) -> list[Sample]:
    """The samples of an exposition text `render` wrote, in file order; lines of families
    this module does not declare are left out."""
    found = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match.group(1) not in METRICS:
            continue
        name, labels, value = match.groups()
        pairs = tuple((key, re.sub(r"\\[\\n\"]", lambda m: _UNESCAPE[m.group(0)], raw))
                      for key, raw in _LABEL.findall(labels or ""))
        try:
            found.append(Sample(name, pairs, float(value)))
        except ValueError:
            continue
    return found
