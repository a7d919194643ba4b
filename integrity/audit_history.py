"""Audit history in the ledger: storage, retention and drift.

The history lives in the ledger (tables `audit_runs` and `audit_rule_counts`, ledger
layout 2), never in the guarded database: a restore must not erase the record of what
the audits found before it.

Drift rules are deliberately simple, so that a warning can be explained in one line:

- share jump: a rule's failing share (failing rows / checked rows) rose by more than
  `[audits] max_share_jump` since the previous run of the same scope (a full audit is
  compared with a full audit, an incremental one with an incremental one);
- daily band: the mean wpm and the number of results of the last full UTC day leave
  the band mean +- 3 standard deviations of the same figures of the previous
  `[audits] drift_window_runs` days recorded in the history (one value per day, from
  the newest run that measured it), once at least `[audits] drift_min_history` days
  are recorded.

Drift findings are warnings: they are shown, returned in `--json` and stored with the
run, and never change the exit code on their own (an error-severity rule that fails
already exits 3; a drift band is statistics, not proof that a row is wrong).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from integrity.ledger import audit_rule_counts, audit_runs

FULL = "full"
INCREMENTAL = "incremental"
# How wide the daily band is, in standard deviations of the recorded days.
BAND_SIGMAS = 3
# Float noise of averages of identical stored values must not leave a zero-width band.
_SLACK = 1e-6


@dataclass(frozen=True)
class RuleCount:
    rule: str
    severity: str
    failing_rows: int
    checked_rows: int

    @property
    def share(self) -> float | None:
        return self.failing_rows / self.checked_rows if self.checked_rows else None


@dataclass(frozen=True)
class StoredAudit:
    """One recorded audit run."""

    id: int
    run_id: str | None
    started_at: datetime
    seconds: float
    engine: str
    scope: str
    rules: tuple[str, ...] | None  # None: the whole catalogue
    since: dict[str, int] | None
    watermarks: dict[str, int]
    ok: bool
    error_rules: int
    warn_rules: int
    day: str | None
    mean_wpm_day: float | None
    rows_per_day: int | None
    drift: tuple[str, ...]
    counts: dict[str, RuleCount] = field(default_factory=dict)

    @property
    def whole_catalogue(self) -> bool:
        return self.rules is None


@dataclass(frozen=True)
class NewAudit:
    """What `record` stores about a run that just finished."""

    run_id: str | None
    started_at: datetime
    seconds: float
    engine: str
    scope: str
    rules: tuple[str, ...] | None
    since: dict[str, int] | None
    watermarks: dict[str, int]
    ok: bool
    counts: tuple[RuleCount, ...]
    day: str | None = None
    mean_wpm_day: float | None = None
    rows_per_day: int | None = None
    drift: tuple[str, ...] = ()


@dataclass(frozen=True)
class DriftWarning:
    """One drift finding: what moved, from what to what, against which limit."""

    kind: str  # "share_jump", "mean_wpm" or "rows_per_day"
    subject: str  # a rule id, or "results"
    previous: float | None
    current: float
    low: float | None
    high: float | None
    message: str


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _json_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class AuditHistory:
    """Read and write the audit tables of a ledger (`Ledger.engine`)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    # ------------------------------------------------------------ writing

    def record(self, audit: NewAudit) -> int:
        with self.engine.begin() as connection:
            audit_id = connection.execute(
                audit_runs.insert().values(
                    run_id=audit.run_id,
                    started_at=audit.started_at,
                    seconds=audit.seconds,
                    engine=audit.engine,
                    scope=audit.scope,
                    rules=None if audit.rules is None else json.dumps(list(audit.rules)),
                    since=None if audit.since is None else json.dumps(audit.since, sort_keys=True),
                    watermarks=json.dumps(audit.watermarks, sort_keys=True),
                    ok=audit.ok,
                    error_rules=sum(1 for c in audit.counts if c.failing_rows and c.severity == "error"),
                    warn_rules=sum(1 for c in audit.counts if c.failing_rows and c.severity != "error"),
                    day=audit.day,
                    mean_wpm_day=audit.mean_wpm_day,
                    rows_per_day=audit.rows_per_day,
                    drift=json.dumps(list(audit.drift)),
                )
            ).inserted_primary_key[0]
            if audit.counts:
                connection.execute(
                    audit_rule_counts.insert(),
                    [
                        {"audit_id": audit_id, "rule": c.rule, "severity": c.severity,
                         "failing_rows": c.failing_rows, "checked_rows": c.checked_rows}
                        for c in audit.counts
                    ],
                )
        return int(audit_id)

    def prune(self, *, now: datetime, retention_days: int) -> int:
        """Delete runs (and their rule counts) older than the retention; return how many."""
        cutoff = now - timedelta(days=retention_days)
        old = sa.select(audit_runs.c.id).where(audit_runs.c.started_at < cutoff)
        with self.engine.begin() as connection:
            # Explicitly, not through ON DELETE CASCADE: a SQLite ledger opened by another
            # tool may not have foreign keys switched on.
            connection.execute(audit_rule_counts.delete().where(audit_rule_counts.c.audit_id.in_(old)))
            return connection.execute(audit_runs.delete().where(audit_runs.c.started_at < cutoff)).rowcount

    # ------------------------------------------------------------ reading

    def runs(self, *, limit: int = 20, scope: str | None = None, whole_catalogue: bool = False,
             rule: str | None = None, with_counts: bool = True) -> list[StoredAudit]:
        """Newest first."""
        query = sa.select(audit_runs).order_by(audit_runs.c.started_at.desc(), audit_runs.c.id.desc()).limit(limit)
        if scope:
            query = query.where(audit_runs.c.scope == scope)
        if whole_catalogue:
            query = query.where(audit_runs.c.rules.is_(None))
        if rule:
            query = query.where(
                sa.exists().where(audit_rule_counts.c.audit_id == audit_runs.c.id, audit_rule_counts.c.rule == rule)
            )
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
            counts: dict[int, dict[str, RuleCount]] = {}
            if with_counts and rows:
                ids = [row["id"] for row in rows]
                count_query = sa.select(audit_rule_counts).where(audit_rule_counts.c.audit_id.in_(ids))
                if rule:
                    count_query = count_query.where(audit_rule_counts.c.rule == rule)
                for c in connection.execute(count_query).mappings():
                    counts.setdefault(c["audit_id"], {})[c["rule"]] = RuleCount(
                        c["rule"], c["severity"], int(c["failing_rows"]), int(c["checked_rows"])
                    )
        return [self._stored(row, counts.get(row["id"], {})) for row in rows]

    def last(self, *, scope: str | None = None, whole_catalogue: bool = False) -> StoredAudit | None:
        found = self.runs(limit=1, scope=scope, whole_catalogue=whole_catalogue)
        return found[0] if found else None

    def has_day(self, day: str) -> bool:
        query = sa.select(audit_runs.c.id).where(audit_runs.c.day == day, audit_runs.c.rows_per_day.is_not(None)).limit(1)
        with self.engine.connect() as connection:
            return connection.execute(query).first() is not None

    def daily_values(self, *, before_day: str, days: int) -> list[tuple[str, float | None, int]]:
        """(day, mean wpm, results) of up to `days` recorded days before `before_day`,
        newest first, each from the newest run that measured that day."""
        query = (
            sa.select(audit_runs.c.day, audit_runs.c.mean_wpm_day, audit_runs.c.rows_per_day)
            .where(audit_runs.c.day < before_day, audit_runs.c.rows_per_day.is_not(None))
            .order_by(audit_runs.c.day.desc(), audit_runs.c.started_at.desc(), audit_runs.c.id.desc())
        )
        values: list[tuple[str, float | None, int]] = []
        seen: set[str] = set()
        with self.engine.connect() as connection:
            for day, mean_wpm, rows in connection.execute(query):
                if day in seen:
                    continue
                seen.add(day)
                values.append((day, mean_wpm, int(rows)))
                if len(values) >= days:
                    break
        return values

    @staticmethod
    def _stored(row, counts: dict[str, RuleCount]) -> StoredAudit:
        rules = _json_or_none(row["rules"])
        return StoredAudit(
            id=int(row["id"]),
            run_id=row["run_id"],
            started_at=_aware(row["started_at"]),
            seconds=float(row["seconds"]),
            engine=row["engine"],
            scope=row["scope"],
            rules=None if rules is None else tuple(rules),
            since=_json_or_none(row["since"]),
            watermarks=json.loads(row["watermarks"]),
            ok=bool(row["ok"]),
            error_rules=int(row["error_rules"]),
            warn_rules=int(row["warn_rules"]),
            day=row["day"],
            mean_wpm_day=row["mean_wpm_day"],
            rows_per_day=None if row["rows_per_day"] is None else int(row["rows_per_day"]),
            drift=tuple(json.loads(row["drift"] or "[]")),
            counts=counts,
        )


# ---------------------------------------------------------------- drift


def previous_counts(history: list[StoredAudit], rule: str) -> tuple[StoredAudit, RuleCount] | None:
    """The newest run in `history` (newest first) that ran `rule`, with its count."""
    for run in history:
        if rule in run.counts:
            return run, run.counts[rule]
    return None


def _percent(share: float) -> str:
    return f"{share * 100:.3f}%"


def share_jumps(counts: tuple[RuleCount, ...], previous_runs: list[StoredAudit], max_jump: float) -> list[DriftWarning]:
    """Rules whose failing share rose by more than `max_jump` since the previous comparable run."""
    warnings = []
    for count in counts:
        found = previous_counts(previous_runs, count.rule)
        if found is None or count.share is None:
            continue
        run, before = found
        before_share = before.share if before.share is not None else 0.0
        if count.share - before_share > max_jump:
            warnings.append(DriftWarning(
                kind="share_jump", subject=count.rule, previous=before_share, current=count.share,
                low=None, high=before_share + max_jump,
                message=(
                    f"{count.rule}: failing share rose from {_percent(before_share)} "
                    f"({before.failing_rows:,} of {before.checked_rows:,} rows, audit {run.id} at "
                    f"{run.started_at:%Y-%m-%d %H:%M} UTC) to {_percent(count.share)} "
                    f"({count.failing_rows:,} of {count.checked_rows:,} rows), more than the allowed "
                    f"{_percent(max_jump)} ([audits] max_share_jump)"
                ),
            ))
    return warnings


def band(values: list[float]) -> tuple[float, float, float, float]:
    """(low, high, mean, sd): mean +- BAND_SIGMAS sample standard deviations."""
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean - BAND_SIGMAS * sd, mean + BAND_SIGMAS * sd, mean, sd


def daily_drift(
    *, day: str, mean_wpm: float | None, rows: int, recorded: list[tuple[str, float | None, int]], min_history: int,
) -> list[DriftWarning]:
    """The last full day's mean wpm and result count against the band of the recorded days."""
    if len(recorded) < min_history:
        return []
    first, last = recorded[-1][0], recorded[0][0]
    warnings = []
    series = (
        ("rows_per_day", "results per day", float(rows), [float(r) for _, _, r in recorded], "{:,.0f}"),
        ("mean_wpm", "mean wpm", mean_wpm, [m for _, m, _ in recorded if m is not None], "{:,.2f}"),
    )
    for kind, label, value, history, fmt in series:
        if value is None or len(history) < min_history:
            continue  # no results that day, or too few days with results to form a band
        low, high, mean, sd = band(history)
        if low - _SLACK <= value <= high + _SLACK:  # identical days give a zero-width band
            continue
        warnings.append(DriftWarning(
            kind=kind, subject="results", previous=mean, current=value, low=low, high=high,
            message=(
                f"{label} on {day}: {fmt.format(value)}, outside the band {fmt.format(low)}..{fmt.format(high)} "
                f"(mean {fmt.format(mean)} +- {BAND_SIGMAS} sd of {fmt.format(sd)}) of the {len(history)} days "
                f"{first}..{last} in the audit history"
            ),
        ))
    return warnings
