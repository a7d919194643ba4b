"""`integrity probe`: the retrieval success rate, measured the way players meet it.

The incident's only alarm was a drop in the data-retrieval success rate. This probe
measures that rate on purpose: for a random sample of players, and for a few canary
players with known content, it reads what `typing-game stats` shows (progress, bests and
recent history) through `game_core.store.Store`, the game's own read path, and counts a
retrieval as failed when

- a read raises (`error`), or the three reads of one player take longer than the timeout
  or the server cancels them at it (`timeout`);
- the data does not agree with the player's results, the source of truth, as
  `game_core.rebuild` recomputes them in one read transaction: no progress for a player
  with results (`missing_progress`), totals that differ (`progress_mismatch`), a level
  that is not the level of the xp per `game_core.metrics` (`level_mismatch`), history rows
  missing or out of order (`history_mismatch`), a personal best missing, extra, or not the
  best result of its mode (`best_mismatch`);
- a canary reads back other than what the probe wrote (`canary_content`): that catches a
  change of the stored format even where the caches still agree with `results`, which is
  exactly what the incident's migration did.

A player the game writes to while the probe reads may look inconsistent for a moment
(each store call is its own transaction), so a player whose data disagrees is read again
once, results included, and counts as failed only if it still disagrees.

The canaries: `CANARIES` players named with the reserved prefix `CANARY_PREFIX`, created
on the first run through the store's write path (`create_player`, `record_result`), so
they are ordinary, valid game data that audits, backups, restores and drills treat like
any other player (a restore to a backup older than them removes them; the next probe
creates them again). Their modest speeds keep them off the top of the leaderboards.
This is the probe's only write to the guarded database and an exception to DESIGN.md
invariant 1, which lists who writes: it happens only while a canary is missing (or
was left incomplete by an interrupted first run), under the database writer lock
(invariant 6), and a canary that cannot be written (read-only role or file, lock held)
is a note in the report, never a failure: the sample is still measured. Everything else
runs on a read-only engine.

Exit codes: 0 when the success ratio is at least `[objectives] probe_min_success_ratio`,
3 below it (or when there was nothing to probe), 4 when the database is missing,
unreachable or has no current schema.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from game_core.errors import DatabaseUnreachable, ExitCode, Failure, PlayerNotFound, PreconditionFailed
from integrity.settings import Settings

log = logging.getLogger(__name__)

CANARY_PREFIX = "integrity.probe."
DEFAULT_SAMPLE = 100
DEFAULT_TIMEOUT_SECONDS = 2.0
# `typing-game stats` shows this many recent results by default: the probe reads the same.
HISTORY_LIMIT = 10
# Player ids listed per failure kind in the report and the ledger.
SAMPLE_IDS = 10
# Stored wpm and accuracy have 2 decimals; a recomputed value agrees within this.
TOLERANCE = 0.005
# How long before the first run the canaries are dated: their results must lie after
# their creation and before now, whenever an interrupted setup is completed later.
_CANARY_AGE = timedelta(hours=1)

KINDS: dict[str, str] = {
    "error": "a read raised an error",
    "timeout": "the player's reads took longer than the timeout, or the server cancelled them",
    "missing_progress": "no progress for a player with results",
    "progress_mismatch": "progress totals (xp, tests, typing time, best wpm) differ from the results",
    "level_mismatch": "the level is not the level of the xp (game_core.metrics)",
    "history_mismatch": "history rows missing, extra or out of order",
    "best_mismatch": "a personal best missing, extra, or not the best result of its mode",
    "canary_content": "a canary reads back other than what the probe wrote",
}
_RETRIED = frozenset(KINDS) - {"error", "timeout"}


# ---------------------------------------------------------------- canaries


@dataclass(frozen=True)
class CanaryTest:
    """One result a canary holds: when (after its creation), mode, and how it was typed."""

    after: timedelta
    mode: str
    mode_param: int
    duration_ms: int
    word_chars: int
    spaces: int

    def outcome(self, created_at: datetime):
        from game_core.store import TestOutcome

        # Two wrong characters typed and corrected, one missed: plausible and not perfect,
        # so accuracy and raw wpm differ from their ideal and a rounding change shows.
        return TestOutcome(
            mode=self.mode, mode_param=self.mode_param, started_at=created_at + self.after,
            duration_ms=self.duration_ms, correct_word_chars=self.word_chars, correct_spaces=self.spaces,
            correct_chars=self.word_chars + 2, incorrect_chars=2, extra_chars=0, missed_chars=1,
            correct_keystrokes=self.word_chars + 2 + self.spaces, incorrect_keystrokes=2,
        )


def _minutes(n: int) -> timedelta:
    return timedelta(minutes=n)


# Three shapes: one result; one mode beaten later plus a second mode; enough xp for level 6.
CANARIES: dict[str, tuple[CanaryTest, ...]] = {
    f"{CANARY_PREFIX}1": (CanaryTest(_minutes(1), "words", 25, 30_000, 100, 20),),
    f"{CANARY_PREFIX}2": (
        CanaryTest(_minutes(1), "words", 10, 15_000, 40, 9),
        CanaryTest(_minutes(2), "words", 10, 12_000, 45, 9),
        CanaryTest(_minutes(3), "time", 15, 15_000, 50, 10),
    ),
    f"{CANARY_PREFIX}3": tuple(
        CanaryTest(_minutes(i + 1), "time", 60, 60_000, 165 + 5 * i, 34 + i) for i in range(5)
    ),
}


def is_canary(username: str) -> bool:
    return username.startswith(CANARY_PREFIX)


@dataclass(frozen=True)
class CanaryContent:
    """What a canary must read back: history (newest first), progress and bests."""

    history: tuple[tuple, ...]  # (mode, mode_param, started_at, duration_ms, wpm, raw_wpm, accuracy, xp)
    xp: int
    level: int
    tests_completed: int
    time_typing_ms: int
    best_wpm: float
    bests: dict[tuple[str, int], tuple[datetime, float, float]]  # key -> (started_at, wpm, accuracy)


def canary_content(name: str, created_at: datetime) -> CanaryContent:
    from game_core import metrics
    from game_core.store import derive_metrics

    rows = []
    for test in CANARIES[name]:
        outcome = test.outcome(created_at)
        derived = derive_metrics(outcome)
        rows.append((outcome.mode, outcome.mode_param, outcome.started_at, outcome.duration_ms,
                     derived.wpm, derived.raw_wpm, derived.accuracy, derived.xp))
    bests: dict[tuple[str, int], tuple[datetime, float, float]] = {}
    for mode, param, started, _, wpm, _, accuracy, _ in sorted(rows, key=lambda r: r[2]):
        if (mode, param) not in bests or wpm > bests[(mode, param)][1]:  # ties stay with the earlier
            bests[(mode, param)] = (started, wpm, accuracy)
    xp = sum(r[7] for r in rows)
    return CanaryContent(
        history=tuple(sorted(rows, key=lambda r: r[2], reverse=True)),
        xp=xp, level=metrics.level_for_xp(xp), tests_completed=len(rows),
        time_typing_ms=sum(r[3] for r in rows), best_wpm=max(r[4] for r in rows), bests=bests,
    )


def _history_tuple(entry) -> tuple:
    from game_core.store import as_utc

    return (entry.mode, entry.mode_param, as_utc(entry.started_at), entry.duration_ms,
            entry.wpm, entry.raw_wpm, entry.accuracy, entry.xp)


def _same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(
        abs(x - y) <= TOLERANCE if isinstance(x, float) or isinstance(y, float) else x == y for x, y in zip(a, b)
    )


def _missing_tests(store, name: str) -> tuple[datetime | None, list[CanaryTest]] | None:
    """What is left to write of a canary: (its created_at, or None when the player does
    not exist yet; the tests still to record), or None when it is complete or not ours to
    touch."""
    try:
        player = store.get_player(name)
    except PlayerNotFound:
        return None, list(CANARIES[name])
    tests = CANARIES[name]
    present = sorted((_history_tuple(e) for e in store.history(name, limit=len(tests) + 1)), key=lambda r: r[2])
    expected = sorted(canary_content(name, player.created_at).history, key=lambda r: r[2])
    if len(present) >= len(expected):
        return None
    # Only a prefix of what the probe writes, in order, is an interrupted setup. Anything
    # else is reported by the content check, never "fixed" by writing over it.
    if not all(_same(p, e) for p, e in zip(present, expected)):
        return None
    return player.created_at, list(tests[len(present):])


def ensure_canaries(settings: Settings, read_store, *, command: str, now: datetime) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Create the canaries that are missing, complete one an interrupted run left; return
    (names written, notes). The only write of the probe (see the module docstring)."""
    todo = [name for name in CANARIES if _missing_tests(read_store, name) is not None]
    if not todo:
        return (), ()
    from game_core.store import Store
    from integrity.database import open_for_writing, target_of
    from integrity.database_locks import database_lock

    written: list[str] = []
    try:
        with database_lock(target_of(settings), state_dir=settings.state.dir, command=command, wait_seconds=0):
            _, engine = open_for_writing(settings)
            try:
                writer = Store(engine)
                for name in todo:
                    missing = _missing_tests(writer, name)  # again, under the lock
                    if missing is None:
                        continue
                    created_at, tests = missing
                    if created_at is None:
                        created_at = (now - _CANARY_AGE).replace(microsecond=0)
                        Store(engine, clock=lambda: created_at).create_player(name)
                    for test in tests:
                        writer.record_result(name, test.outcome(created_at))
                    written.append(name)
            finally:
                engine.dispose()
    except (Failure, sa.exc.DBAPIError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        unwritten = ", ".join(name for name in todo if name not in written)
        note = f"could not write the canaries {unwritten}: {reason}; they were not probed this time"
        log.warning("%s", note)
        return tuple(written), (note,)
    return tuple(written), ()


# ---------------------------------------------------------------- one retrieval


@dataclass(frozen=True)
class Expected:
    """What a player's caches must say, recomputed from their results."""

    progress: Any  # game_core.store.Progress | None
    bests: dict[tuple[str, int], Any]  # (mode, mode_param) -> game_core.store.PersonalBest


@dataclass(frozen=True)
class Retrieval:
    player_id: int
    seconds: float
    failures: dict[str, str]  # kind -> detail


def expected_for(connection, player_ids: list[int]) -> dict[int, Expected]:
    from game_core.rebuild import compute_expected_personal_bests, compute_expected_progress

    progress = {p.player_id: p for p in compute_expected_progress(connection, player_ids)}
    bests: dict[int, dict] = {}
    for player_id, best in compute_expected_personal_bests(connection, player_ids):
        bests.setdefault(player_id, {})[(best.mode, best.mode_param)] = best
    return {pid: Expected(progress.get(pid), bests.get(pid, {})) for pid in player_ids}


def check_retrieval(progress, history, bests, expected: Expected, *, limit: int = HISTORY_LIMIT) -> dict[str, str]:
    """The failure kinds of one player's reads against their results (empty: consistent)."""
    from game_core import metrics

    found: dict[str, str] = {}
    want = expected.progress
    if want is not None and progress is None:
        found["missing_progress"] = f"no progress, {want.tests_completed} results"
    elif want is None and progress is not None:
        found["progress_mismatch"] = "a progress row without results"
    elif progress is not None:
        if not metrics.level_matches_xp(progress.level, progress.xp) or progress.level != want.level:
            found["level_mismatch"] = f"level {progress.level} for xp {progress.xp} (results: level {want.level}, xp {want.xp})"
        differ = [f"{name} {getattr(progress, name)} != {getattr(want, name)}"
                  for name in ("xp", "tests_completed", "time_typing_ms") if getattr(progress, name) != getattr(want, name)]
        if abs(progress.best_wpm - want.best_wpm) > TOLERANCE:
            differ.append(f"best_wpm {progress.best_wpm} != {want.best_wpm}")
        if differ:
            found["progress_mismatch"] = ", ".join(differ)

    rows = min(want.tests_completed if want is not None else 0, limit)
    order = [(e.started_at, e.id) for e in history]
    if len(history) != rows:
        found["history_mismatch"] = f"{len(history)} recent results, the results hold {rows}"
    elif order != sorted(order, reverse=True) or len(set(order)) != len(order):
        found["history_mismatch"] = "recent results not newest first"

    got = {(b.mode, b.mode_param): b for b in bests}
    problems = [f"{m} {p} missing" for m, p in sorted(expected.bests.keys() - got.keys())]
    problems += [f"{m} {p} without a result of that mode" for m, p in sorted(got.keys() - expected.bests.keys())]
    for key in sorted(got.keys() & expected.bests.keys()):
        have, best = got[key], expected.bests[key]
        if have.result_id != best.result_id or abs(have.wpm - best.wpm) > TOLERANCE:
            problems.append(f"{key[0]} {key[1]} is result {have.result_id} at {have.wpm} wpm, the best is "
                            f"result {best.result_id} at {best.wpm}")
    if problems:
        found["best_mismatch"] = "; ".join(problems)
    return found


def check_canary(name: str, created_at: datetime, progress, history, bests) -> str | None:
    """How a canary's reads differ from what the probe wrote, or None."""
    content = canary_content(name, created_at)
    problems = []
    read = tuple(_history_tuple(e) for e in history)
    if len(read) != len(content.history) or not all(_same(a, b) for a, b in zip(read, content.history)):
        problems.append(f"history {read!r} is not what was written")
    if progress is None:
        problems.append("no progress")
    else:
        wanted = (content.xp, content.level, content.tests_completed, content.time_typing_ms, content.best_wpm)
        have = (progress.xp, progress.level, progress.tests_completed, progress.time_typing_ms, progress.best_wpm)
        if not _same(have, wanted):
            problems.append(f"progress (xp, level, tests, ms, best wpm) {have} != {wanted}")
    by_id = {e.id: _history_tuple(e)[2] for e in history}
    have_bests = {(b.mode, b.mode_param): (by_id.get(b.result_id), b.wpm, b.accuracy) for b in bests}
    if have_bests.keys() != content.bests.keys() or not all(
        _same(have_bests[k], content.bests[k]) for k in content.bests
    ):
        problems.append(f"bests {sorted(have_bests.items())} != {sorted(content.bests.items())}")
    return "; ".join(problems) or None


def _reads(store, username: str) -> tuple[Any, list, list]:
    """What `typing-game stats` reads for one player, in its order."""
    progress = store.progress(username)
    history = store.history(username, limit=HISTORY_LIMIT)
    bests = store.bests(username)
    return progress, history, bests


def _error_kind(exc: Exception) -> tuple[str, str]:
    orig = getattr(exc, "orig", None)
    # 57014 query_canceled: PostgreSQL stopped the read at the probe's statement_timeout.
    if getattr(orig, "sqlstate", None) == "57014":
        return "timeout", "cancelled by the server at the timeout"
    if isinstance(exc, Failure):
        # The store's own errors name the username; the report names player ids only.
        return "error", type(exc).__name__
    text = str(orig or exc).strip().splitlines()
    return "error", f"{type(orig or exc).__name__}: {text[0] if text else ''}"[:200]


# ---------------------------------------------------------------- the report


@dataclass(frozen=True)
class FailureKind:
    kind: str
    meaning: str
    players: int
    player_ids: tuple[int, ...]  # up to SAMPLE_IDS of them
    example: str


@dataclass(frozen=True)
class Latency:
    p50_seconds: float
    p95_seconds: float
    max_seconds: float


@dataclass(frozen=True)
class ProbeReport:
    database: str
    engine: str
    sampled: int  # random players probed
    canaries: tuple[str, ...]  # canaries probed
    canaries_written: tuple[str, ...]  # created or completed by this run
    probed: int
    failed: int
    success_ratio: float | None  # None: nothing to probe
    objective: float
    timeout_seconds: float
    latency: Latency | None
    failures: tuple[FailureKind, ...] = ()
    notes: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def exit_code(self) -> ExitCode:
        if self.success_ratio is None or self.success_ratio < self.objective:
            return ExitCode.PROBLEMS_FOUND
        return ExitCode.OK

    def summary(self) -> dict[str, Any]:
        """What the ledger keeps; integrity.prometheus reads success_ratio and the latencies."""
        latency = self.latency
        return {
            "success_ratio": self.success_ratio,
            "objective": self.objective,
            "probed": self.probed,
            "failed": self.failed,
            "sampled": self.sampled,
            "canaries": len(self.canaries),
            "canaries_written": list(self.canaries_written),
            "latency_p50_seconds": None if latency is None else latency.p50_seconds,
            "latency_p95_seconds": None if latency is None else latency.p95_seconds,
            "latency_max_seconds": None if latency is None else latency.max_seconds,
            "failures": {f.kind: {"players": f.players, "player_ids": list(f.player_ids)} for f in self.failures},
        }


def percentile(sorted_values: list[float], share: float) -> float:
    """Nearest-rank percentile of an ascending list (no interpolation: a real sample)."""
    rank = max(1, -(-len(sorted_values) * share // 1))  # ceil without floats drifting
    return sorted_values[int(rank) - 1]


def _latency(seconds: list[float]) -> Latency | None:
    if not seconds:
        return None
    ordered = sorted(seconds)
    return Latency(round(percentile(ordered, 0.50), 6), round(percentile(ordered, 0.95), 6), round(ordered[-1], 6))


# ---------------------------------------------------------------- the probe


def _probe_engine(settings: Settings, timeout: float):
    """A read-only engine whose PostgreSQL statements stop at the probe's timeout."""
    from game_core.db import create_engine
    from integrity.database import connection_settings, target_of

    target = target_of(settings)
    limit_ms = max(1, int(timeout * 1000))
    base = connection_settings(settings)
    configured = base.statement_timeout_ms
    probe = replace(base, statement_timeout_ms=limit_ms if not configured else min(configured, limit_ms))
    return target, create_engine(target, read_only=True, settings=probe)


def _require_schema(engine, display: str) -> None:
    from game_core.schema_state import SchemaState, require_current, schema_status

    with engine.connect() as connection:
        status = schema_status(connection)
    if status.state is SchemaState.EMPTY:
        raise PreconditionFailed(f"database {display} has no schema; run `integrity init` (or point --database-url at the game's database)")
    require_current(status, display_name=display)


def _sample(connection, size: int) -> list[tuple[int, str]]:
    from game_core.schema import players

    if size <= 0:
        return []
    query = (
        sa.select(players.c.id, players.c.username)
        .where(~players.c.username.startswith(CANARY_PREFIX, autoescape=True))
        .order_by(sa.func.random())
        .limit(size)
    )
    return [(row.id, row.username) for row in connection.execute(query)]


@dataclass
class _Tally:
    retrievals: list[Retrieval] = field(default_factory=list)
    examples: dict[str, str] = field(default_factory=dict)


def run_probe(
    settings: Settings,
    *,
    sample: int = DEFAULT_SAMPLE,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    command: str = "probe",
    now: datetime | None = None,
) -> ProbeReport:
    """Probe `sample` random players and the canaries through the store's read path."""
    from game_core.store import Store

    if sample < 0:
        from game_core.errors import InvalidInput

        raise InvalidInput(f"--sample is {sample}; it must be 0 or more")
    if timeout <= 0:
        from game_core.errors import InvalidInput

        raise InvalidInput(f"--timeout is {timeout}; it must be more than 0 seconds")
    now = now or datetime.now(timezone.utc)
    started = time.perf_counter()
    from integrity.database import open_read_only

    # Two read-only engines: the players' reads stop at the probe's timeout; the ground
    # truth (sampling, recomputing caches from results) runs with the configured settings,
    # since a slow aggregate over a large sample is not a failed retrieval.
    target, truth = open_read_only(settings)
    engine = None
    try:
        _, engine = _probe_engine(settings, timeout)
        try:
            _require_schema(truth, target.display)
            store = Store(engine)
            written, notes = ensure_canaries(settings, Store(truth), command=command, now=now)
            canaries: list[tuple[int, str, datetime]] = []
            for name in CANARIES:
                if _missing_tests(Store(truth), name) is not None:
                    continue  # could not be written: the note says why
                player = Store(truth).get_player(name)
                canaries.append((player.id, name, player.created_at))
            with truth.connect() as connection:
                chosen = _sample(connection, sample)
                ids = [pid for pid, _ in chosen] + [pid for pid, _, _ in canaries]
                expected = expected_for(connection, ids) if ids else {}
        except sa.exc.DBAPIError as exc:
            raise _unreachable(exc, target.display) from None

        tally = _Tally()
        created = {name: created_at for _, name, created_at in canaries}
        for player_id, username in chosen + [(pid, name) for pid, name, _ in canaries]:
            tally.retrievals.append(_retrieve(truth, store, player_id, username, expected[player_id],
                                              created.get(username), timeout, tally.examples))
        if tally.retrievals and all("error" in r.failures for r in tally.retrievals):
            _recheck_reachable(truth, target)  # the database went away while probing: exit 4
    finally:
        truth.dispose()
        if engine is not None:
            engine.dispose()
    return _report(settings, target, chosen, canaries, written, notes, tally, timeout, time.perf_counter() - started)


def _retrieve(truth, store, player_id: int, username: str, expected: Expected, canary_created: datetime | None,
              timeout: float, examples: dict[str, str]) -> Retrieval:
    """One player's reads through `store`, checked against their results read on `truth`;
    a disagreement is read again once, results included (see the module docstring)."""
    first_seconds = None
    for attempt in (1, 2):
        started = time.perf_counter()
        try:
            progress, history, bests = _reads(store, username)
        except (sa.exc.DBAPIError, Failure) as exc:
            seconds = time.perf_counter() - started
            kind, detail = _error_kind(exc)
            examples.setdefault(kind, f"player {player_id}: {detail}")
            return Retrieval(player_id, first_seconds if first_seconds is not None else seconds, {kind: detail})
        seconds = time.perf_counter() - started
        first_seconds = seconds if first_seconds is None else first_seconds
        failures = check_retrieval(progress, history, bests, expected)
        if canary_created is not None:
            differs = check_canary(username, canary_created, progress, history, bests)
            if differs:
                failures["canary_content"] = differs
        if seconds > timeout:
            failures["timeout"] = f"{seconds:.3f}s for the three reads (timeout {timeout}s)"
        if attempt == 1 and failures and set(failures) <= _RETRIED:
            try:
                with truth.connect() as connection:
                    expected = expected_for(connection, [player_id])[player_id]
            except sa.exc.DBAPIError as exc:
                kind, detail = _error_kind(exc)
                failures = {kind: detail}
                break
            continue
        break
    for kind, detail in failures.items():
        examples.setdefault(kind, f"player {player_id}: {detail}")
    return Retrieval(player_id, first_seconds, failures)


def _unreachable(exc: sa.exc.DBAPIError, display: str) -> Failure:
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
    return DatabaseUnreachable(f"cannot read {display}: {reason}; check that the database is up and --database-url")


def _recheck_reachable(engine, target) -> None:
    from game_core.db import check_reachable

    check_reachable(engine, target)


def _report(settings, target, chosen, canaries, written, notes, tally: _Tally, timeout: float, seconds: float) -> ProbeReport:
    retrievals = tally.retrievals
    failed = [r for r in retrievals if r.failures]
    kinds = []
    for kind, meaning in KINDS.items():
        players = [r.player_id for r in retrievals if kind in r.failures]
        if players:
            kinds.append(FailureKind(kind, meaning, len(players), tuple(sorted(players)[:SAMPLE_IDS]), tally.examples.get(kind, "")))
    probed = len(retrievals)
    notes = list(notes)
    if not probed:
        notes.append("nothing to probe: the database holds no players and the canaries could not be written")
    return ProbeReport(
        database=target.display,
        engine=target.kind,
        sampled=len(chosen),
        canaries=tuple(name for _, name, _ in canaries),
        canaries_written=tuple(written),
        probed=probed,
        failed=len(failed),
        success_ratio=None if not probed else round((probed - len(failed)) / probed, 6),
        objective=settings.objectives.probe_min_success_ratio,
        timeout_seconds=timeout,
        latency=_latency([r.seconds for r in retrievals]),
        failures=tuple(kinds),
        notes=tuple(notes),
        seconds=round(seconds, 3),
    )
