"""`--last-clean`: the latest restorable moment at which the audits pass, found by a
bounded bisection in time over the point-in-time archive (issue 16).

The search (`bisect_time`) is pure: it knows moments and a judge, nothing of engines.
The judge used for real (`RestoringJudge`) restores the archive at a moment into a scratch
copy (`PitrEngine.restored_at`) and runs the SQL audits on it (`audit_copy`, the function
`drill` and `backup verify --deep` audit their copies with): error-severity rules decide
clean or dirty, warnings never do.

The grid. Moments are `lower + k * resolution` for k = 0 .. N - 1, and the upper bound
itself as point N, where N = ceil((upper - lower) / resolution): no two probes are closer
than the engine's resolution (`PitrEngine.resolution_seconds`: whole seconds on both
engines; Litestream lists its files to the second, pgBackRest compares backup stop times
to the second). When the resolution is whole seconds the lower bound is moved up to the
next whole second, so every probed moment, and the one printed for `restore --to-time`,
is a whole second (the restore at a later moment holds at least as much).

The bounds. Upper: the newest restorable point (the window's newest), probed like any other
point: when it is clean the answer is "the newest point is clean". Lower:
the newest clean FULL audit recorded in the ledger when it lies inside the window (the
live database passed every rule then, so the search need not look earlier), else the
window's oldest point. The lower bound is never taken as clean on trust: the ledger's
audit judged live, while a restore at that moment holds only what the engine had shipped
by then, so it is probed like any other point, and only when every later probe was dirty.

The audits of the probes. A probe judged dirty needs one failing error rule, and a probe
judged clean needs every rule only if the search ends on it. So the probes are audited
with the damage's signature only: the error rules live fails (`audit_live`, live audited
once with every rule before the first restore: the damage is there, or there is nothing to
search for; only its row and schema rules when it fails any, one pass over their tables,
not the cross-table aggregates): at 86 MB, 0.26 s against the catalogue's 4 s. When live
passes every error rule (repaired since, or the damage not visible live), the probes are
audited with the whole catalogue until one is dirty, and that one's failing rules are the
signature. The moment found, when its probe was audited that way, is then
audited with the whole catalogue on the copy kept open (`RestoringJudge.confirm`, no
restore): clean, it is the answer, proven as before. Dirty there (a rule outside the
signature failed earlier than the signature's: damage in two steps), its own failing rules
become the signature and the search runs again below it (`find_last_clean`), the moment
found being the new known-dirty upper bound: more restores than the bound in that case only,
each search within its own bound, and every answer still passed the whole catalogue.

The invariant: `clean` is the highest grid index known clean (-1 before any, standing for
"earlier than the lower bound"), `dirty` the lowest known dirty (N + 1 before any, standing
for "later than the upper bound"). Each probe halves the gap; the search ends when they are
adjacent. The answer is one of N + 2 (nothing clean, or the last clean point is one of the
N + 1), so the probes are at most ceil(log2(N + 2)): 12 for an hour at one second, the
issue's bound of log2(window / resolution). Probing the newest point first would answer an
all-clean archive in one restore but costs one more in the case the search exists for (the
damage is there), so it is not done. `bisect_time` asserts the bound. The moment found is clean and the next grid
point (at most one resolution later) dirty: a boundary between clean and dirty. It is the
LATEST clean moment when damage, once made, stays until now (the incident's shape); a
database dirty for a while, repaired, then damaged again has several boundaries, and the
search returns one of them.

What comes back after it. The restore of the moment found is kept (never restored twice)
and salvage's own logic runs as a dry run (integrity.recovery.salvage.run_salvage,
dry_run=True) with that restored copy in the place of the restored live database and
live as the pre-restore data: exactly what `integrity restore --to-time MOMENT --keep-newer`
would re-apply if it ran now (new players and results that pass the error rules), and what
it would leave out (rows the damage changed, rows the rules refuse). Counting rows newer
than the moment by their timestamps would be dishonest twice: the damage does not change
created_at, and the rows it changed would be counted as coming back.

The same bisection finds when a revision applied behind the tool's back reached the
archive (`first_moment_with_revision`, for `restore --before-migration` when the ledger has
no `migrate apply` run of it): its judge (`RevisionJudge`) restores a moment and reads the
copy's alembic revision instead of auditing it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# Probe roles, as the report shows them: the upper bound itself, a point inside, or the
# whole catalogue's audit of the moment found (its kept copy: no restore).
UPPER = "upper"
BISECT = "bisect"
CONFIRM = "confirm"
# How many recorded full audits are looked through for the newest clean one.
_AUDIT_LOOKBACK = 50
LOWER_FROM_AUDIT = "the newest clean full audit in the ledger"
LOWER_FROM_WINDOW = "the oldest restorable point"


class SearchBoundExceeded(AssertionError):
    """The bisection made more probes than its bound: a bug, never a user error."""


@dataclass(frozen=True)
class FailingRule:
    rule: str
    severity: str
    failing_rows: int


@dataclass(frozen=True)
class Probe:
    """One restore and audit of the archive at `moment`."""

    moment: datetime
    role: str  # UPPER or BISECT
    clean: bool
    failing_rules: tuple[FailingRule, ...]  # every failing rule; error-severity ones make it dirty
    restore_seconds: float
    audit_seconds: float
    audited_rules: tuple[str, ...] | None = None  # the rules audited (None: the whole catalogue)

    @property
    def verdict(self) -> str:
        return "clean" if self.clean else "dirty"

    @property
    def seconds(self) -> float:
        return self.restore_seconds + self.audit_seconds


@dataclass(frozen=True)
class Bisection:
    """The search itself: its bounds, every probe in order, and the boundary found."""

    lower: datetime
    upper: datetime
    resolution_seconds: float
    steps: int  # N: grid points lower + k * resolution (k < N), and the upper bound
    bound: int  # the most probes the search may make: ceil(log2(N + 2))
    probes: tuple[Probe, ...]
    found: datetime | None  # the latest clean moment (None: even the lower bound is dirty)
    first_dirty: datetime | None  # the grid point after it (None: the upper bound is clean)
    searches: int = 1  # more than one: the moment a search found failed the whole catalogue

    @property
    def restores(self) -> int:
        return sum(1 for probe in self.probes if probe.role != CONFIRM)


def probe_bound(steps: int) -> int:
    """The most probes a search over `steps` grid steps makes: a bisection of the steps + 2
    answers (no point clean, or the last clean one is point 0 .. steps)."""
    return math.ceil(math.log2(steps + 2))


def grid_lower(lower: datetime, upper: datetime, resolution_seconds: float) -> datetime:
    """`lower` moved up to the next whole second when the resolution is whole seconds (a
    restore at a later moment holds at least as much), never past `upper`."""
    if resolution_seconds != int(resolution_seconds) or lower.microsecond == 0:
        return min(lower, upper)
    return min(lower.replace(microsecond=0) + timedelta(seconds=1), upper)


def bisect_time(judge: Callable[[datetime, str], Probe], *, lower: datetime, upper: datetime,
                resolution_seconds: float, upper_dirty: bool = False) -> Bisection:
    """Find a clean moment whose next grid point is dirty, between `lower` and `upper`.

    `judge(moment, role)` restores and audits one grid point. `upper_dirty`: the upper
    bound is already known dirty (a search again below a moment that failed), so it is
    never probed and the bound is that of one answer fewer.
    """
    if resolution_seconds <= 0:
        raise ValueError(f"resolution must be positive, got {resolution_seconds}")
    if upper < lower:
        raise ValueError(f"upper bound {upper} is before lower bound {lower}")
    lower = grid_lower(lower, upper, resolution_seconds)
    step = timedelta(seconds=resolution_seconds)
    # Counted in the step as a timedelta (whole microseconds): an upper bound that is itself
    # a grid point (a search again below one) is exactly `steps` steps away.
    steps = math.ceil((upper - lower) / step)

    def point(index: int) -> datetime:
        return upper if index >= steps else lower + index * step

    bound = probe_bound(steps - 1 if upper_dirty else steps)
    probes: list[Probe] = []

    def probe(index: int, role: str) -> Probe:
        made = judge(point(index), role)
        probes.append(made)
        if len(probes) > bound:
            raise SearchBoundExceeded(f"{len(probes)} probes over a bound of {bound} ({steps} steps)")
        return made

    # -1: earlier than the lower bound; steps + 1: later than the upper bound.
    clean, dirty = -1, steps if upper_dirty else steps + 1
    while dirty - clean > 1:
        middle = (clean + dirty) // 2
        if probe(middle, UPPER if middle == steps else BISECT).clean:
            clean = middle
        else:
            dirty = middle
    found = None if clean < 0 else point(clean)
    first_dirty = None if dirty > steps else point(dirty)
    return Bisection(lower, upper, resolution_seconds, steps, bound, tuple(probes), found, first_dirty)


def find_last_clean(judge, *, lower: datetime, upper: datetime, resolution_seconds: float) -> Bisection:
    """`bisect_time`, then the whole catalogue's audit of the moment found when its probe
    was audited with the damage's signature only (`judge.confirm`); when that audit fails,
    the search again below the moment (see the module's docstring). The result carries every
    probe of every search, the first search's bounds, and the last search's answer."""
    first = bisection = bisect_time(judge, lower=lower, upper=upper, resolution_seconds=resolution_seconds)
    probes = list(bisection.probes)
    searches = 1
    while bisection.found is not None:
        found_probe = next(probe for probe in reversed(probes) if probe.moment == bisection.found)
        if found_probe.audited_rules is None:
            break  # already judged by the whole catalogue
        confirmed = judge.confirm(bisection.found)
        probes.append(confirmed)
        if confirmed.clean:
            break
        searches += 1
        bisection = bisect_time(judge, lower=first.lower, upper=bisection.found,
                                resolution_seconds=resolution_seconds, upper_dirty=True)
        probes.extend(bisection.probes)
    return Bisection(first.lower, first.upper, resolution_seconds, first.steps, first.bound, tuple(probes),
                     bisection.found, bisection.first_dirty, searches)


@dataclass(frozen=True)
class LiveAudit:
    """Live audited with every rule before the search, for the damage's signature."""

    failing_rules: tuple[FailingRule, ...]
    signature: tuple[str, ...]  # empty: live passes every error rule
    seconds: float


def audit_live(live) -> LiveAudit:
    """Every rule on live, in one snapshot (read only, like `integrity audit`, not recorded)."""
    from integrity.backups.verify import audit_copy
    from integrity.db.connect import one_snapshot

    started = time.perf_counter()
    with live.reader() as reader, reader.connect() as connection:
        _, violations = audit_copy(one_snapshot(connection))
    failing = tuple(FailingRule(v["rule"], v["severity"], int(v["failing_rows"])) for v in violations)
    return LiveAudit(failing, damage_signature(failing), time.perf_counter() - started)


def damage_signature(failing: tuple[FailingRule, ...]) -> tuple[str, ...]:
    """The error rules a dirty probe failed that later probes are audited with: its row and
    schema rules when there are any (one pass over their tables), else every one."""
    from checks.model import RowRule, SchemaRule
    from checks.rules import RULES_BY_ID

    errors = [rule.rule for rule in failing if rule.severity == "error"]
    cheap = [rule for rule in errors if isinstance(RULES_BY_ID.get(rule), (RowRule, SchemaRule))]
    return tuple(cheap or errors)


# ---------------------------------------------------------------- the real judge


class RestoringJudge:
    """Restore the archive at a moment into scratch and audit the copy; the newest clean
    copy is kept open (`kept`) until the next clean one or `close`, so the moment found is
    never restored twice (at most two copies exist at once). The probes are audited with
    `signature` (live's, given); without one, with the whole catalogue until a probe is
    dirty, that probe's `damage_signature` after it."""

    def __init__(self, engine, database, scratch_dir, *, window=None, signature: tuple[str, ...] | None = None,
                 notify: Callable[[str], None] = lambda line: None):
        self.engine = engine
        self.database = database  # integrity.db.connect.Database of live: copies open beside it
        self.scratch_dir = scratch_dir
        self.window = window  # the search's reading of the engine's window, read once for every restore
        self.notify = notify
        self.signature = signature or None  # the rules the probes are audited with (None: all)
        self.kept = None  # (moment, ScratchCopy) of the newest clean probe
        self._kept_stack: ExitStack | None = None

    def __call__(self, moment: datetime, role: str) -> Probe:
        stack = ExitStack()
        try:
            started = time.perf_counter()
            copy = stack.enter_context(self.engine.restored_at(moment, self.scratch_dir, window=self.window))
            restored = time.perf_counter()
            made = self._audit(copy, moment, role, rules=self.signature, restore_seconds=restored - started)
        except BaseException:
            stack.close()
            raise
        if made.clean:
            self._release()
            self.kept, self._kept_stack = (moment, copy), stack
        else:
            stack.close()
        return made

    def confirm(self, moment: datetime) -> Probe:
        """The whole catalogue's audit of the kept copy at `moment` (the moment found by a
        search whose probes were audited with the signature). Dirty: the copy is released
        and the rules it fails become the signature of the search again below it."""
        if self.kept is None or self.kept[0] != moment:
            raise AssertionError(f"no kept copy at {moment_text(moment)} to confirm")
        made = self._audit(self.kept[1], moment, CONFIRM, rules=None, restore_seconds=0.0)
        if not made.clean:
            self._release()
        return made

    def _audit(self, copy, moment: datetime, role: str, *, rules, restore_seconds: float) -> Probe:
        from integrity.backups.repository import AuditVerdict
        from integrity.backups.verify import audit_copy

        started = time.perf_counter()
        with self.database.beside(copy.target).reader() as reader, reader.connect() as connection:
            verdict, violations = audit_copy(connection, rules=rules)
        made = Probe(
            moment=moment, role=role, clean=verdict is AuditVerdict.CLEAN,
            failing_rules=tuple(FailingRule(v["rule"], v["severity"], int(v["failing_rows"])) for v in violations),
            restore_seconds=restore_seconds, audit_seconds=time.perf_counter() - started, audited_rules=rules,
        )
        if not made.clean and rules is None:
            self.signature = damage_signature(made.failing_rules) or None
        errors = ", ".join(f"{rule.rule} ({rule.failing_rows} rows)" for rule in made.failing_rules if rule.severity == "error")
        scope = "the whole catalogue" if rules is None else f"{len(rules)} rule(s) of the damage"
        what = "the moment found, no restore" if role == CONFIRM else f"{made.seconds:.1f}s"
        self.notify(f"{'confirm' if role == CONFIRM else 'probe'} {moment_text(moment)}: {made.verdict}"
                    f"{': ' + errors if errors else ''} ({scope}; {what})")
        return made

    def _release(self) -> None:
        if self._kept_stack is not None:
            self._kept_stack.close()
        self.kept, self._kept_stack = None, None

    def close(self) -> None:
        self._release()


# ---------------------------------------------------------------- a revision applied behind the tool's back


def revision_applied(found: str | None, revision: str) -> bool:
    """Whether a database at alembic revision `found` has `revision` applied: the same one,
    or (both in this code's history) one that descends from it."""
    from game_core.schema_state import history

    if found is None:
        return False
    if found == revision:
        return True
    known = history()
    return found in known and revision in known and revision in {r.id for r in known.lineage(found)}


class RevisionJudge:
    """Restore the archive at a moment and read its alembic revision: "clean" while
    `revision` is not applied there. No audit: the copy is removed at once."""

    def __init__(self, engine, database, scratch_dir, revision: str, *, window,
                 notify: Callable[[str], None] = lambda line: None):
        self.engine, self.database, self.scratch_dir = engine, database, scratch_dir
        self.revision, self.window, self.notify = revision, window, notify

    def __call__(self, moment: datetime, role: str) -> Probe:
        from game_core.schema_state import current_revision

        started = time.perf_counter()
        with self.engine.restored_at(moment, self.scratch_dir, window=self.window) as copy:
            restored = time.perf_counter()
            with self.database.beside(copy.target).reader() as reader, reader.connect() as connection:
                found = current_revision(connection)
        applied = revision_applied(found, self.revision)
        self.notify(f"probe {moment_text(moment)}: revision {found or 'none'}"
                    f"{' (has ' + self.revision + ')' if applied else ''} ({time.perf_counter() - started:.1f}s)")
        return Probe(moment, role, clean=not applied, failing_rules=(), restore_seconds=restored - started,
                     audit_seconds=time.perf_counter() - restored, audited_rules=())


def first_moment_with_revision(engine, database, scratch_dir, revision: str, *,
                               notify: Callable[[str], None] = lambda line: None) -> Bisection:
    """Bisect the whole window for the boundary between moments without `revision` applied
    and moments with it (`found`: the newest restorable moment without it, `first_dirty`:
    the first grid point with it, one resolution later): for a revision applied behind the
    tool's back, which the ledger never saw. Each probe is a restore; at most
    ceil(log2(window / resolution + 2)) of them."""
    from game_core.errors import PreconditionFailed

    window = engine.window()
    if window.oldest is None or window.newest is None:
        reason = f": {window.errors[0]}" if window.errors else ""
        raise PreconditionFailed(f"nothing can be restored from the {engine.name} archive yet{reason}; "
                                 "run `integrity pitr status`")
    judge = RevisionJudge(engine, database, scratch_dir, revision, window=window, notify=notify)
    return bisect_time(judge, lower=window.oldest, upper=window.newest, resolution_seconds=engine.resolution_seconds)


# ---------------------------------------------------------------- around the search


@dataclass(frozen=True)
class AfterTheMoment:
    """What salvage's dry run says of the rows live holds beyond the moment found."""

    would_reapply: dict[str, int]  # table -> rows `restore --keep-newer` would bring back
    left_out: dict[str, int]  # "table: reason" -> rows it would not (changed by the damage, refused by a rule)
    recomputed: int  # results that would come back with the values their counts give
    seconds: float
    problem: str | None = None  # salvage's dry run could not run: why (the counts are then empty)


def rows_after(live, copy) -> AfterTheMoment:
    """Salvage's dry run with the restored copy as the restored database and live as the
    pre-restore data: what `restore --keep-newer` to that moment would re-apply now."""
    import sqlalchemy as sa

    from game_core.errors import Failure
    from integrity.db.sql import error_reason
    from integrity.recovery.salvage import run_salvage

    started = time.perf_counter()
    try:
        with live.beside(copy.target).reader() as restored, live.reader() as current:
            report = run_salvage(restored, current, source_name="live", dry_run=True)
    except sa.exc.DBAPIError as exc:
        return AfterTheMoment({}, {}, 0, time.perf_counter() - started,
                              problem=f"salvage's dry run could not read live against the restore: {error_reason(exc)}")
    except Failure as exc:
        return AfterTheMoment({}, {}, 0, time.perf_counter() - started, problem=str(exc))
    left_out = {f"{item.table}: {item.reason}": item.rows for item in report.left_out}
    return AfterTheMoment(dict(report.reapplied), left_out, int(report.recomputed.get("results", 0)),
                          time.perf_counter() - started)


def newest_clean_full_audit(ledger) -> datetime | None:
    """When the newest full audit of the whole catalogue that passed started (None: none)."""
    if ledger is None:
        return None
    from integrity.audit_history import FULL, AuditHistory

    for run in AuditHistory(ledger.engine).runs(limit=_AUDIT_LOOKBACK, scope=FULL, whole_catalogue=True,
                                                with_counts=False):
        if run.ok:
            return run.started_at.astimezone(UTC)
    return None


def moment_text(moment: datetime | None) -> str | None:
    """UTC, ISO 8601 with Z; whole seconds print without a fraction."""
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="seconds" if moment.microsecond == 0 else "microseconds").replace("+00:00", "Z")
