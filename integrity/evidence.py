"""`integrity report`: the evidence the tool has recorded, as one plain data model.

Restore testing is evidence: auditors ask for proof that restores were tested and how long
they took, managers ask whether the data is protected now. Everything here is read from
what the tool already records (DESIGN.md section 2): the ledger's runs and audit history,
the repository's catalogue and journal, the point-in-time engine's window, and `status`.
Nothing is measured anew and nothing is written.

The model is renderer-neutral dataclasses (integrity/render/report_html.py turns it into
one self-contained HTML file, `--json` prints it). Charts are series of points with an
optional threshold; a series long enough to bloat the page (the probe runs every minute:
43,200 runs a month) is bucketed here, so the page's size is bounded by the number of
buckets, not by the length of the window (`MAX_POINTS`).

Protection is computed per repository by `repository_protection`, from the catalogues
integrity.backups.repositories reads for status and the metrics too (`read_repositories`):
the primary and each [[repositories]] copy, then the point-in-time archive.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from game_core.errors import ExitCode, Failure, InvalidInput
from integrity.settings import Settings

# Points per chart at most: a bucket is at least a minute and at most window / MAX_POINTS.
MAX_POINTS = 400
# Rows of the dry-run and drill tables (newest first); the charts cover the whole window.
MAX_DRY_RUNS = 10
MAX_DRILLS = 60
DEFAULT_SINCE = "7d"
_DURATION = re.compile(r"^([1-9][0-9]{0,5})([hdw])$")
_UNIT_SECONDS = {"h": 3600, "d": 86400, "w": 7 * 86400}
MAX_WINDOW_DAYS = 400
# Drill exit codes that reached a verdict (4: it could not run; shown, not charted).
_DRILL_VERDICTS = (0, 3, 5)


def parse_since(text: str) -> timedelta:
    """`--since 7d`: hours, days or weeks, at most MAX_WINDOW_DAYS."""
    match = _DURATION.match(text.strip())
    if not match:
        raise InvalidInput(f"--since {text!r} is not a duration; give hours, days or weeks, e.g. 24h, 7d, 4w")
    window = timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    if window > timedelta(days=MAX_WINDOW_DAYS):
        raise InvalidInput(f"--since {text!r} is longer than {MAX_WINDOW_DAYS} days; give a shorter window, e.g. 30d")
    return window


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class Point:
    x: datetime | str  # a moment, or a category (an audit rule)
    y: float
    label: str = ""  # what a reader sees on hover
    flagged: bool = False  # a failure, a suspect backup, a value past its threshold


@dataclass(frozen=True)
class Series:
    name: str
    points: tuple[Point, ...]
    kind: str = "line"  # "line", "points" or "bars"


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    unit: str  # "seconds", "bytes", "ratio", "count"
    series: tuple[Series, ...]
    threshold: float | None = None
    threshold_label: str = ""
    note: str = ""  # how the points were made (bucketing), what is missing
    categorical: bool = False  # x is a category, not a time

    @property
    def point_count(self) -> int:
        return sum(len(s.points) for s in self.series)


@dataclass(frozen=True)
class Objective:
    name: str
    measured: float | None
    target: float
    unit: str
    met: bool | None  # None: nothing measured yet
    detail: str
    lower_is_better: bool = True


@dataclass(frozen=True)
class RepositoryProtection:
    kind: str  # "backups" or "point-in-time"
    location: str
    newest_restorable_id: str | None
    newest_restorable_at: datetime | None
    newest_restorable_size: int | None
    newest_deep_verified_id: str | None
    newest_deep_verified_at: datetime | None
    backups: int
    bad: dict[str, int] = field(default_factory=dict)  # suspect, deep_failed, failed, corrupt
    problem: str | None = None  # why nothing could be read
    oldest_restorable_at: datetime | None = None  # point-in-time archives: the window's start
    name: str = "primary"  # the repository's name ([backups] repository is "primary", copies their own)
    lag_seconds: float | None = None  # point-in-time archives: the replication lag when read (None: nothing shipped)


@dataclass(frozen=True)
class StatusRow:
    name: str
    state: str
    detail: str


@dataclass(frozen=True)
class BackupRow:
    id: str
    created_at: datetime
    size: int | None
    states: tuple[str, ...]
    flagged: bool
    why: str = ""


@dataclass(frozen=True)
class DrillRow:
    run_id: str
    started_at: datetime
    exit_code: int | None
    backup_id: str | None
    predicted_seconds: float | None
    measured_seconds: float | None
    phases: dict[str, float]
    problems: tuple[str, ...]
    point_in_time: bool
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.exit_code not in (0, None)


@dataclass(frozen=True)
class DryRunRow:
    run_id: str
    command: str
    started_at: datetime
    exit_code: int | None
    start_revision: str | None
    target_revision: str | None
    passed: bool | None
    errors: int | None
    warnings: int | None
    findings: tuple[str, ...]  # the summary's findings when it records them, else empty
    error: str | None = None


@dataclass(frozen=True)
class RuleFailures:
    rule: str
    severity: str
    audits_failing: int
    max_failing_rows: int
    last_failing_at: datetime


@dataclass(frozen=True)
class JobTotals:
    job: str
    runs: int
    failures: int
    last_failure_at: datetime | None
    last_failure_exit: int | None


@dataclass(frozen=True)
class Evidence:
    """Everything `integrity report` shows, for one window."""

    generated_at: datetime
    since: datetime
    window: str
    database: str
    config: str
    status_exit_code: int
    status: tuple[StatusRow, ...]
    row_counts: dict[str, int]  # live's tables now, as `integrity status` counted them
    protection: tuple[RepositoryProtection, ...]
    objectives: tuple[Objective, ...]
    charts: tuple[Chart, ...]
    attention: tuple[BackupRow, ...]  # backups in the window that are suspect, failed, corrupt
    drills: tuple[DrillRow, ...]  # newest first
    dry_runs: tuple[DryRunRow, ...]  # newest first
    audit_rules: tuple[RuleFailures, ...]
    audits_in_window: int
    jobs: tuple[JobTotals, ...]
    runs_in_window: int

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK  # the report shows states; `integrity status` is the one that exits on them

    def summary(self) -> dict[str, Any]:
        return {"window": self.window, "runs": self.runs_in_window, "charts": len(self.charts),
                "points": sum(c.point_count for c in self.charts), "status_exit_code": self.status_exit_code}


@dataclass(frozen=True)
class ReportWritten:
    """`integrity report --html PATH`: where the file went and what it holds."""

    path: str
    bytes: int
    window: str
    runs: int
    charts: int
    points: int
    status_exit_code: int
    seconds: float

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK

    def summary(self) -> dict[str, Any]:
        return {"path": self.path, "bytes": self.bytes, "window": self.window, "runs": self.runs,
                "seconds": round(self.seconds, 3)}


# ---------------------------------------------------------------- reading


@dataclass
class _Run:
    id: str
    command: str
    started_at: datetime
    finished_at: datetime | None
    exit_code: int | None
    summary: dict[str, Any]


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


def _window_runs(ledger, since: datetime) -> list[_Run]:
    """Every run but the probe's that started in the window, oldest first, summaries parsed
    once. The probe runs every minute (43,200 runs a month, nine in ten of a month's runs):
    its runs are summed up by the database instead (`_probe_figures`)."""
    import sqlalchemy as sa

    from integrity.ledger import runs

    query = (sa.select(runs.c.id, runs.c.command, runs.c.started_at, runs.c.finished_at, runs.c.exit_code, runs.c.summary)
             .where(runs.c.started_at >= since, runs.c.command != "probe").order_by(runs.c.started_at, runs.c.id))
    found = []
    with ledger.engine.connect() as connection:
        for row in connection.execute(query):
            try:
                summary = json.loads(row.summary or "{}")
            except ValueError:
                summary = {}
            found.append(_Run(row.id, row.command, _aware(row.started_at), _aware(row.finished_at), row.exit_code,
                              summary if isinstance(summary, dict) else {}))
    return found


@dataclass(frozen=True)
class _ProbeFigures:
    ratios: tuple[tuple[int, int, float, float], ...]  # (bucket start, probes, lowest, mean) per chart bucket
    per_job_bucket: dict[int, tuple[int, int]]  # bucket start -> (runs, failures) per job-chart bucket
    runs: int
    failures: int
    last_failure_at: datetime | None
    last_failure_exit: int | None
    last_ratio: float | None


def _probe_figures(ledger, since: datetime, chart_bucket: int, job_bucket: int) -> _ProbeFigures:
    """The probe's finished runs in the window, summed up in the ledger's database: the
    lowest and mean success ratio per chart bucket, runs and failures per job-chart bucket,
    the last failure and the last ratio. Times become epoch seconds there (SQLite stores
    the ledger's UTC times as text; PostgreSQL as timestamptz)."""
    import sqlalchemy as sa

    from integrity.ledger import runs

    if ledger.engine.dialect.name == "postgresql":
        epoch = sa.literal_column("CAST(EXTRACT(EPOCH FROM runs.started_at) AS BIGINT)")
        ratio = sa.literal_column("CAST(CAST(runs.summary AS JSON) ->> 'success_ratio' AS FLOAT)")
    else:
        epoch = sa.cast(sa.func.strftime("%s", runs.c.started_at), sa.BigInteger)
        ratio = sa.func.json_extract(runs.c.summary, "$.success_ratio")
    probe = sa.and_(runs.c.command == "probe", runs.c.started_at >= since, runs.c.exit_code.is_not(None))
    failing = runs.c.exit_code != 0

    def bucket(size: int):
        return (epoch // size) * size  # integer division on both engines: the bucket's start

    by_ratio = (sa.select(bucket(chart_bucket).label("b"), sa.func.count(ratio), sa.func.min(ratio), sa.func.avg(ratio))
                .where(probe, ratio.is_not(None)).group_by(sa.literal_column("b")).order_by(sa.literal_column("b")))
    by_job = (sa.select(bucket(job_bucket).label("b"), sa.func.count(), sa.func.sum(sa.case((failing, 1), else_=0)))
              .where(probe).group_by(sa.literal_column("b")))
    last_failure = (sa.select(runs.c.started_at, runs.c.exit_code).where(probe, failing)
                    .order_by(runs.c.started_at.desc()).limit(1))
    last_ratio = sa.select(ratio).where(probe, ratio.is_not(None)).order_by(runs.c.started_at.desc()).limit(1)
    with ledger.engine.connect() as connection:
        ratios = tuple((int(b), int(n), float(low), float(mean)) for b, n, low, mean in connection.execute(by_ratio))
        per_job = {int(b): (int(n), int(f or 0)) for b, n, f in connection.execute(by_job)}
        failure = connection.execute(last_failure).first()
        newest = connection.execute(last_ratio).scalar()
    return _ProbeFigures(
        ratios, per_job, sum(n for n, _ in per_job.values()), sum(f for _, f in per_job.values()),
        _aware(failure.started_at) if failure else None, failure.exit_code if failure else None,
        None if newest is None else float(newest),
    )


def _store_identity(settings: Settings) -> str | None:
    from contextlib import ExitStack

    import sqlalchemy as sa

    from integrity.backups.statistics import store_identity
    from integrity.db.connect import Database

    opened = ExitStack()
    try:
        engine = opened.enter_context(Database.of(settings).reader())
    except Failure:
        return None
    try:
        with opened, engine.connect() as connection:
            return store_identity(connection)
    except sa.exc.DBAPIError:
        return None


def repository_protection(settings: Settings, identity: str | None, now: datetime):
    """Per repository (the primary, then each [[repositories]] copy): the newest restorable
    and deep-verified backup of this database and how many are in a bad state; then the
    point-in-time archive when `[pitr] enabled`. Returns (protections, catalogues by
    repository name) so the backup chart reads the primary's once. A repository that
    cannot be read is a row with its problem, never an error."""
    from integrity.backups.repositories import read_repositories

    protections: list[RepositoryProtection] = []
    catalogues = {}
    for reading in read_repositories(settings, identity, now):
        name, location, catalog = reading.name, reading.location, reading.catalog
        if catalog is None:
            protections.append(RepositoryProtection("backups", location, None, None, None, None, None, 0,
                                                    problem=reading.problem, name=name))
            continue
        catalogues[name] = catalog
        good, deep = catalog.newest_restorable(), catalog.newest_deep_verified()
        protections.append(RepositoryProtection(
            "backups", location,
            good.id if good else None, good.created_at if good else None, good.size if good else None,
            deep.id if deep else None, deep.created_at if deep else None,
            len(catalog.backups), catalog.counts(), name=name,
        ))
    if settings.pitr.enabled:
        from integrity.status import read_pitr_status

        reading = read_pitr_status(settings)
        if isinstance(reading, Exception):
            protections.append(RepositoryProtection("point-in-time", str(settings.pitr.repository),
                                                    None, None, None, None, None, 0, problem=str(reading), name="pitr"))
        else:
            protections.append(RepositoryProtection(
                "point-in-time", f"{reading.engine}: {reading.repository}", None, reading.newest, None, None, None, 0,
                bad={"errors": len(reading.errors)}, problem="; ".join(reading.findings) or None,
                oldest_restorable_at=reading.oldest, name="pitr", lag_seconds=reading.lag_seconds,
            ))
    return tuple(protections), catalogues


def collect_evidence(settings: Settings, ledger, *, since: timedelta, now: datetime | None = None) -> Evidence:
    """The evidence of the window `since` before `now`, from the ledger, the repository's
    catalogue and journal, the point-in-time engine and `status`."""
    from integrity.status import collect_status

    now = now or datetime.now(timezone.utc)
    start = now - since
    status = collect_status(settings, ledger=ledger)
    identity = _store_identity(settings)
    protection, catalogues = repository_protection(settings, identity, now)
    runs = _window_runs(ledger, start)
    by_command: dict[str, list[_Run]] = defaultdict(list)
    for run in runs:
        by_command[run.command].append(run)

    bucket = _bucket_seconds(since)
    backups_chart, attention = _backups(settings, by_command.get("backup create", []), catalogues, start, now)
    drills = _drills(by_command.get("drill", []))
    audit_rules, audits = _audit_failures(ledger, start)
    probes = _probe_figures(ledger, start, bucket, _job_bucket(since))
    probe_chart = _probe_chart(probes, bucket, settings.objectives.probe_min_success_ratio)
    jobs_chart, jobs = _jobs(runs, probes, since)
    charts = (
        backups_chart[0], backups_chart[1],
        _drill_chart(drills, settings.objectives.rto_seconds),
        _audit_chart(audit_rules),
        probe_chart,
        jobs_chart,
    )
    objectives = _objectives(settings, protection, ledger, probes.last_ratio, now)
    return Evidence(
        generated_at=now,
        since=start,
        window=_window_text(since),
        database=status.database,
        config=status.config,
        status_exit_code=int(status.exit_code),
        status=tuple(StatusRow(c.name, c.state.value, c.detail) for c in status.checks),
        row_counts=dict(status.row_counts),
        protection=protection,
        objectives=objectives,
        charts=charts,
        attention=attention,
        drills=tuple(reversed(drills))[:MAX_DRILLS],
        dry_runs=_dry_runs(by_command.get("migrate dry-run", []) + by_command.get("migrate lint", [])),
        audit_rules=audit_rules,
        audits_in_window=audits,
        jobs=jobs,
        runs_in_window=len(runs) + probes.runs,
    )


def _window_text(since: timedelta) -> str:
    seconds = int(since.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _bucket_seconds(since: timedelta) -> int:
    return max(60, math.ceil(since.total_seconds() / MAX_POINTS / 60) * 60)


def _bucket_of(moment: datetime, size: int) -> int:
    """The start of `moment`'s bucket, in seconds since the epoch (ints: tens of thousands
    of runs are bucketed per report; the datetimes are made once per bucket)."""
    stamp = int(moment.timestamp())
    return stamp - stamp % size


def _moment(stamp: int) -> datetime:
    return datetime.fromtimestamp(stamp, timezone.utc)


def _size_text(size: int | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


# ---------------------------------------------------------------- backups


def _backups(settings: Settings, creates: list[_Run], catalogues: dict, start: datetime, now: datetime):
    """Size per backup and the age the newest good backup reached before the next one
    replaced it (the RPO as it was lived), from the ledger's `backup create` runs and the
    catalogue and journal's states (pruned backups keep their ledger facts)."""
    from integrity.backups.catalog import fold_journal
    from integrity.backups.repositories import open_repository
    from integrity.backups.repository import backup_time, is_backup_id

    known: dict[str, BackupRow] = {}
    primary = catalogues.get("primary")  # copies hold the same backups (same ids)
    infos = {b.id: b for b in primary.backups} if primary is not None else {}
    try:
        journal_states = fold_journal(open_repository(settings).read_journal().entries)  # the primary
    except (Failure, OSError):
        journal_states = {}
    for run in creates:
        backup_id = run.summary.get("backup_id")
        if not is_backup_id(backup_id):
            continue
        info = infos.get(backup_id)
        state = info.state if info else journal_states.get(backup_id)
        states = list(info.states) if info else (state.labels(now) if state else []) + (["pruned"] if not info else [])
        suspect = tuple(run.summary.get("suspect") or ()) or (state.suspect_reasons if state else ())
        if suspect and "SUSPECT" not in states:
            states.append("SUSPECT")
        why = info.why_not_restorable if info else ("suspect: " + "; ".join(suspect) if suspect else "")
        bad = bool(suspect) or (state is not None and (state.failed or state.deep_failed or state.corrupt))
        known[backup_id] = BackupRow(backup_id, backup_time(backup_id), run.summary.get("size"), tuple(states), bad,
                                     why or "")
    for info in infos.values():  # backups the ledger of this window did not see made
        if info.created_at >= start and info.id not in known:
            bad = info.state.suspect or info.state.failed or info.state.deep_failed or info.state.corrupt \
                or info.manifest_problem is not None
            known[info.id] = BackupRow(info.id, info.created_at, info.size, tuple(info.states), bad,
                                       info.why_not_restorable or "")
    rows = sorted(known.values(), key=lambda r: r.created_at)
    sizes = tuple(Point(r.created_at, float(r.size), f"{r.id}: {_size_text(r.size)} ({', '.join(r.states)})", r.flagged)
                  for r in rows if r.size is not None)
    size_chart = Chart("backup-size", "Size per backup", "bytes", (Series("backup size", sizes, "points"),),
                       note="each backup taken in the window; flagged: suspect, failed or corrupt")
    rpo = settings.objectives.rpo_seconds
    ages = []
    previous = None
    for row in rows:
        if row.flagged:
            continue  # a suspect backup protects nothing: the age goes on growing
        if previous is not None:
            age = (row.created_at - previous.created_at).total_seconds()
            ages.append(Point(row.created_at, age, f"{previous.id} was {age:.0f}s old when {row.id} replaced it", age > rpo))
        previous = row
    if previous is not None:
        age = (now - previous.created_at).total_seconds()
        ages.append(Point(now, age, f"{previous.id} is {age:.0f}s old now", age > rpo))
    age_chart = Chart("backup-age", "Age of the newest good backup before the next one", "seconds",
                      (Series("backup age", tuple(ages), "points"),), threshold=float(rpo), threshold_label=f"RPO {rpo}s",
                      note="suspect, failed and corrupt backups do not reset the age")
    attention = tuple(r for r in reversed(rows) if r.flagged)
    return (age_chart, size_chart), attention


# ---------------------------------------------------------------- drills


def _drills(runs: list[_Run]) -> list[DrillRow]:
    drills = []
    for run in runs:
        if run.exit_code is None:
            continue
        s = run.summary
        phases = {str(k): float(v) for k, v in (s.get("phases") or {}).items() if isinstance(v, (int, float))}
        drills.append(DrillRow(
            run.id, run.started_at, run.exit_code, s.get("backup_id"), s.get("predicted_seconds"),
            s.get("recovery_seconds"), phases, tuple(s.get("problems") or ()), bool(s.get("point_in_time")),
            s.get("error"),
        ))
    return drills


def _drill_chart(drills: list[DrillRow], rto: int) -> Chart:
    predicted, measured, failed = [], [], []
    for d in drills:
        if d.exit_code not in _DRILL_VERDICTS and d.exit_code != 4:
            continue
        what = f"drill of {d.backup_id or 'a point in time'}"
        if d.predicted_seconds is not None:
            predicted.append(Point(d.started_at, d.predicted_seconds, f"{what}: predicted {d.predicted_seconds:.2f}s",
                                   d.predicted_seconds > rto))
        if d.measured_seconds is not None:
            measured.append(Point(d.started_at, d.measured_seconds, f"{what}: measured {d.measured_seconds:.2f}s"))
        if d.failed:
            spent = sum(d.phases.values())
            why = "; ".join(d.problems) or d.error or f"exit {d.exit_code}"
            failed.append(Point(d.started_at, spent, f"{what} FAILED (exit {d.exit_code}): {why}", True))
    return Chart("drill-recovery", "Drills: predicted and measured recovery time", "seconds",
                 (Series("predicted full restore", tuple(predicted)), Series("measured phases", tuple(measured)),
                  Series("failed drill", tuple(failed), "points")),
                 threshold=float(rto), threshold_label=f"RTO {rto}s",
                 note="a failed drill is drawn at the time its phases took before it failed")


# ---------------------------------------------------------------- audits


def _audit_failures(ledger, start: datetime) -> tuple[tuple[RuleFailures, ...], int]:
    import sqlalchemy as sa

    from integrity.ledger import audit_rule_counts as counts
    from integrity.ledger import audit_runs

    query = (sa.select(counts.c.rule, sa.func.max(counts.c.severity), sa.func.count(), sa.func.max(counts.c.failing_rows),
                       sa.func.max(audit_runs.c.started_at))
             .select_from(counts.join(audit_runs, audit_runs.c.id == counts.c.audit_id))
             .where(audit_runs.c.started_at >= start, counts.c.failing_rows > 0)
             .group_by(counts.c.rule).order_by(sa.func.count().desc(), counts.c.rule))
    total = sa.select(sa.func.count()).select_from(audit_runs).where(audit_runs.c.started_at >= start)
    with ledger.engine.connect() as connection:
        rules = tuple(RuleFailures(rule, severity, int(n), int(rows), _aware(last))
                      for rule, severity, n, rows, last in connection.execute(query))
        audits = int(connection.execute(total).scalar() or 0)
    return rules, audits


def _audit_chart(rules: tuple[RuleFailures, ...]) -> Chart:
    points = tuple(Point(r.rule, float(r.audits_failing),
                         f"{r.rule} ({r.severity}): failed in {r.audits_failing} audit(s), up to {r.max_failing_rows:,} rows",
                         r.severity == "error") for r in rules)
    return Chart("audit-failures", "Audit failures per rule", "count", (Series("audits failing", points, "bars"),),
                 categorical=True, note="audits in the window in which the rule found failing rows; flagged: error severity")


# ---------------------------------------------------------------- probe


def _probe_chart(figures: _ProbeFigures, bucket: int, objective: float) -> Chart:
    points = tuple(
        Point(_moment(start), low, f"{count} probe(s): lowest {low:.4f}, mean {mean:.4f}", low < objective)
        for start, count, low, mean in figures.ratios
    )
    return Chart("probe-success", "Probe success ratio", "ratio", (Series("lowest success ratio", points),),
                 threshold=objective, threshold_label=f"objective {objective}",
                 note=f"the lowest ratio per {_window_text(timedelta(seconds=bucket)) if bucket % 3600 == 0 else f'{bucket // 60}m'} bucket")


# ---------------------------------------------------------------- jobs


def _job_bucket(since: timedelta) -> int:
    return 3600 if since <= timedelta(days=2) else 86400


def _jobs(runs: list[_Run], probes: _ProbeFigures, since: timedelta) -> tuple[Chart, tuple[JobTotals, ...]]:
    from integrity.jobs import JOBS, job_verdict
    from integrity.ledger import RunRecord

    bucket = _job_bucket(since)
    ran: Counter = Counter()
    failed: Counter = Counter()
    totals: dict[str, list] = {name: [0, 0, None, None] for name in JOBS}
    for moment, (count, failures) in probes.per_job_bucket.items():
        ran[moment] += count
        failed[moment] += failures
    if "probe" in totals:
        totals["probe"] = [probes.runs, probes.failures, probes.last_failure_at, probes.last_failure_exit]
    sharing: dict[str, list] = defaultdict(list)
    for job in JOBS.values():
        sharing[job.command].append(job)
    for run in runs:
        jobs = sharing.get(run.command)
        if jobs is None or run.exit_code is None:
            continue
        moment = _bucket_of(run.started_at, bucket)
        ran[moment] += 1
        if run.exit_code != 0:
            failed[moment] += 1
        if len(jobs) == 1:
            name = jobs[0].name  # the command's only job
        else:
            record = RunRecord(run.id, run.command, run.started_at, run.finished_at, "", run.exit_code, run.summary, "", 0, "")
            # The first job it may be: a run is counted once.
            name = next((job.name for job in jobs if job_verdict(job, record) is not False), jobs[0].name)
        totals[name][0] += 1
        if run.exit_code != 0:
            totals[name][1] += 1
            totals[name][2], totals[name][3] = run.started_at, run.exit_code
    moments = sorted(ran)
    unit = "hour" if bucket == 3600 else "day"
    chart = Chart("job-runs", f"Scheduled job runs and failures per {unit}", "count", (
        Series("runs", tuple(Point(_moment(m), float(ran[m]), f"{ran[m]} runs") for m in moments), "bars"),
        Series("failures", tuple(Point(_moment(m), float(failed[m]), f"{failed[m]} failed", failed[m] > 0)
                                 for m in moments), "bars"),
    ), note="runs of the scheduled jobs' commands, from cron or the scheduler")
    jobs = tuple(JobTotals(name, *values) for name, values in totals.items())
    return chart, jobs


# ---------------------------------------------------------------- dry runs


def _dry_runs(runs: list[_Run]) -> tuple[DryRunRow, ...]:
    rows = []
    for run in sorted(runs, key=lambda r: r.started_at, reverse=True)[:MAX_DRY_RUNS]:
        s = run.summary
        findings = tuple(
            f if isinstance(f, str) else f"{f.get('severity', '')} {f.get('rule', '')}: {f.get('message', '')}".strip()
            for f in (s.get("findings") or ())
        )
        rows.append(DryRunRow(run.id, run.command, run.started_at, run.exit_code, s.get("start_revision"),
                              s.get("target_revision"), s.get("passed"), s.get("errors"), s.get("warnings"), findings,
                              s.get("error")))
    return tuple(rows)


# ---------------------------------------------------------------- objectives


def _objectives(settings: Settings, protection, ledger, ratio: float | None, now: datetime) -> tuple[Objective, ...]:
    from integrity.status import drill_evidence

    o = settings.objectives
    found = []
    for p in protection:
        if p.kind != "backups":
            continue
        age = None if p.newest_restorable_at is None else (now - p.newest_restorable_at).total_seconds()
        why = f"newest restorable backup {p.newest_restorable_id}" if p.newest_restorable_id else (p.problem or "no restorable backup")
        if p.name != "primary":  # a copy: the 3-2-1 rule's limit, not the RPO
            limit = o.copy_max_age_seconds
            found.append(Objective(f"Copy age ({p.name}: {p.location})", age, float(limit), "seconds",
                                   age is not None and age <= limit, why))
            continue
        found.append(Objective(f"RPO ({p.location})", age, float(o.rpo_seconds), "seconds",
                               age is not None and age <= o.rpo_seconds, why))
        deep = None if p.newest_deep_verified_at is None else (now - p.newest_deep_verified_at).total_seconds()
        found.append(Objective(
            f"Deep verification age ({p.location})", deep, float(o.deep_verify_max_age_seconds), "seconds",
            deep is not None and deep <= o.deep_verify_max_age_seconds,
            f"newest deep-verified backup {p.newest_deep_verified_id}" if p.newest_deep_verified_id else "none deep-verified"))
    if settings.pitr.enabled:
        point = next((p for p in protection if p.kind == "point-in-time"), None)
        lag = None if point is None else point.lag_seconds
        limit = float(settings.pitr.lag_objective_seconds)
        found.append(Objective("RPO (point-in-time archive)", lag, limit, "seconds", lag is not None and lag <= limit,
                               "the replication lag: 0 while nothing written waits to be shipped" if lag is not None
                               else (point.problem if point is not None and point.problem else "nothing shipped yet")))
    evidence = drill_evidence(ledger)
    last = evidence.last
    predicted = last.summary.get("predicted_seconds") if last is not None else None
    if last is not None and evidence.failed:
        found.append(Objective("RTO", predicted, float(o.rto_seconds), "seconds", False,
                               f"the last drill ({last.started_at:%Y-%m-%d %H:%M}Z) FAILED: "
                               + ("; ".join(last.summary.get("problems") or []) or str(last.summary.get("error", "")))))
    else:
        found.append(Objective("RTO", predicted, float(o.rto_seconds), "seconds",
                               None if predicted is None else predicted <= o.rto_seconds,
                               "predicted full restore of the last drill" if last is not None else "never drilled"))
    found.append(Objective("Probe success ratio", ratio, o.probe_min_success_ratio, "ratio",
                           None if ratio is None else ratio >= o.probe_min_success_ratio,
                           "the last probe in the window" if ratio is not None else "no probe in the window",
                           lower_is_better=False))
    return tuple(found)


# ---------------------------------------------------------------- the file


class ReportUnwritable(Failure):
    """`--html PATH` cannot be written (exit 4)."""

    exit_code = ExitCode.PRECONDITION


def write_report(path, text: str, evidence: Evidence, *, seconds: float) -> ReportWritten:
    """Replace `path` with `text` atomically: a temp file in the same directory, fsynced,
    renamed over it, the directory fsynced. A reader (a browser, a web server) sees the
    old page or the new one, never half of either; a failed write leaves the old one."""
    import os
    import tempfile
    from pathlib import Path

    from integrity.backups.durable import fsync_directory

    path = Path(path)
    if path.is_dir():
        raise ReportUnwritable(f"--html {path} is a directory; give a file name, e.g. {path / 'report.html'}")
    if not path.parent.is_dir():
        raise ReportUnwritable(f"cannot write {path}: the directory {path.parent} does not exist; create it or "
                               "give --html a path in an existing directory")
    data = text.encode("utf-8")
    temp = None
    try:
        descriptor, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)  # mkstemp makes it 0600; a web server often runs as another user
        os.replace(temp, path)
        temp = None
        fsync_directory(path.parent)
    except OSError as exc:
        raise ReportUnwritable(f"cannot write {path}: {exc.strerror or exc}; make {path.parent} writable or give "
                               "--html another path") from None
    finally:
        if temp is not None:
            try:
                os.unlink(temp)
            except OSError:
                pass
    return ReportWritten(str(path), len(data), evidence.window, evidence.runs_in_window, len(evidence.charts),
                         sum(c.point_count for c in evidence.charts), evidence.status_exit_code, seconds)
