"""`integrity probe`: the retrieval success rate, measured the way players meet it.

The incident's only alarm was a drop in the data-retrieval success rate. This probe
measures that rate on purpose: for a random sample of players, and for a few canary
players with known content, it does every read the game does for a player through
`game_core.store.Store`, the game's own read path: the profile, then what `typing-game
stats` shows (progress, personal bests, recent history), then the player's place on the
leaderboard of each of their modes. A player's retrieval fails when any read has a
problem (`integrity.probe_checks` says how each is checked), counted by kind:
`exception`, `timeout`, `wrong-type` (a level stored as text: the incident's damage),
`missing-row` and `mismatch` (against the player's results, recomputed in a separate
read-only transaction, stored wpm against the counts it was computed from included, and
for a canary against what the probe wrote). Nothing the data holds makes the probe
crash: the report, and with it the success ratio and the per-kind counts in the ledger
and the metrics, is written on every run that reached the database.

A player the game writes to while the probe reads may look inconsistent for a moment
(each store call is its own transaction), so a player with only `missing-row` or
`mismatch` problems is read again once, results included, and counts as failed only if
it still disagrees.

The canaries: `CANARIES` players named with the reserved prefix `CANARY_PREFIX`, created
on the first run through the store's write path (`create_player`, `record_result`), so
they are ordinary, valid game data that audits, backups, restores and drills treat like
any other player (a restore to a backup older than them removes them; the next probe
creates them again). Their modest speeds keep them off the top of the leaderboards.
They catch a change of the stored format that keeps every value consistent with the
others (timestamps shifted by a time zone, counts rescaled with the metrics), which no
recomputation can. This is the probe's only write to the guarded database and an
exception to DESIGN.md invariant 1, which lists who writes: it happens only while a
canary is missing (or was left incomplete by an interrupted first run), under the
database writer lock (invariant 6), and a canary that cannot be written (read-only role
or file, lock held) is a note in the report, never a failure: the sample is still
measured. Every read, including all the checks, runs on read-only engines.

Exit codes: 0 when the success ratio is at least `[objectives] probe_min_success_ratio`,
3 below it (or when there was nothing to probe), 4 when the database is missing,
unreachable or has no current schema.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from game_core.errors import DatabaseUnreachable, ExitCode, Failure, PlayerNotFound, PreconditionFailed
from integrity.db.sql import error_reason
from integrity.probe_checks import (
    COUNT_COLUMNS,
    KINDS,
    LEADERBOARD_LIMIT,
    READS,
    TOLERANCE,
    TRANSIENT,
    Problem,
    check_bests,
    check_history,
    check_leaderboard,
    check_profile,
    check_progress,
    two,
    type_problem,
    when,
)
from integrity.settings import Settings

log = logging.getLogger(__name__)

CANARY_PREFIX = "integrity.probe."
DEFAULT_SAMPLE = 100
DEFAULT_TIMEOUT_SECONDS = 2.0
# `typing-game stats` shows this many recent results by default: the probe reads the same.
HISTORY_LIMIT = 10
# Player ids listed per failure kind in the report and the ledger.
SAMPLE_IDS = 10
# How long before the first run the canaries are dated: their results must lie after
# their creation and before now, whenever an interrupted setup is completed later.
_CANARY_AGE = timedelta(hours=1)


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


def as_utc(value: datetime) -> datetime:
    from game_core.store import as_utc as store_as_utc

    return store_as_utc(value)


def _history_tuple(entry) -> tuple:
    return (entry.mode, entry.mode_param, as_utc(entry.started_at), entry.duration_ms,
            entry.wpm, entry.raw_wpm, entry.accuracy, entry.xp)


def _same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))


def _same_value(x, y) -> bool:
    numbers = (int, float)
    if isinstance(x, float) or isinstance(y, float):
        # Within the stored precision; a value of another type (text) is never the same.
        return isinstance(x, numbers) and isinstance(y, numbers) and abs(x - y) <= TOLERANCE
    return type(x) is type(y) and x == y


def _missing_tests(store, name: str) -> tuple[datetime | None, list[CanaryTest]] | None:
    """What is left to write of a canary: (its created_at, or None when the player does
    not exist yet; the tests still to record), or None when it is complete or not ours to
    touch."""
    try:
        player = store.get_player(name)
    except PlayerNotFound:
        return None, list(CANARIES[name])
    tests = CANARIES[name]
    expected = sorted(canary_content(name, player.created_at).history, key=lambda r: r[2])
    try:
        present = sorted((_history_tuple(e) for e in store.history(name, limit=len(tests) + 1)), key=lambda r: r[2])
    except Exception:  # damaged rows (a read error, a wrong type): the probe's reads report them
        return None
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
    from integrity.db.connect import Database, Write
    from integrity.db.locks import database_lock

    written: list[str] = []
    try:
        database = Database.of(settings)
        with database_lock(database.target, state_dir=settings.state.dir, command=command, wait_seconds=0), \
                database.writer(Write.PROBE_CANARIES) as engine:
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
    except (Failure, sa.exc.DBAPIError) as exc:
        reason = error_reason(exc)
        unwritten = ", ".join(name for name in todo if name not in written)
        note = f"could not write the canaries {unwritten}: {reason}; they were not probed this time"
        log.warning("%s", note)
        return tuple(written), (note,)
    return tuple(written), ()


# ---------------------------------------------------------------- one player's reads


@dataclass(frozen=True)
class Expected:
    """What a player's reads must say, recomputed from their results."""

    progress: Any  # game_core.store.Progress | None
    bests: dict[tuple[str, int], Any]  # (mode, mode_param) -> game_core.store.PersonalBest


@dataclass(frozen=True)
class Retrieval:
    player_id: int
    seconds: float
    problems: tuple[Problem, ...]

    @property
    def kinds(self) -> set[str]:
        return {p.kind for p in self.problems}


def expected_for(connection, player_ids: list[int]) -> dict[int, Expected]:
    from game_core.rebuild import compute_expected_personal_bests, compute_expected_progress

    progress = {p.player_id: p for p in compute_expected_progress(connection, player_ids)}
    bests: dict[int, dict] = {}
    for player_id, best in compute_expected_personal_bests(connection, player_ids):
        bests.setdefault(player_id, {})[(best.mode, best.mode_param)] = best
    return {pid: Expected(progress.get(pid), bests.get(pid, {})) for pid in player_ids}


def result_counts(connection, result_ids: list[int]) -> dict[int, Any]:
    """The `results` rows behind a history read: what their stored metrics come from."""
    from game_core.schema import results

    if not result_ids:
        return {}
    columns = [results.c.id, results.c.player_id, *(results.c[name] for name in COUNT_COLUMNS)]
    return {row.id: row for row in connection.execute(sa.select(*columns).where(results.c.id.in_(result_ids)))}


def check_canary(name: str, created_at: datetime, progress, history, bests) -> list[Problem]:
    """How a canary's reads differ from what the probe wrote (well-typed reads only)."""
    content = canary_content(name, created_at)
    problems = []
    read = [_history_tuple(e) for e in history]
    if len(read) != len(content.history):
        problems.append(f"{len(read)} results read back, {len(content.history)} written")
    else:
        for have, want in zip(read, content.history):
            differ = _differences(have, want, _HISTORY_FIELDS)
            if differ:
                problems.append(f"the result typed {when(want[2])}: {differ}")
                break
    if progress is None:
        problems.append("no progress row")
    else:
        have = (progress.xp, progress.level, progress.tests_completed, progress.time_typing_ms, progress.best_wpm)
        want = (content.xp, content.level, content.tests_completed, content.time_typing_ms, content.best_wpm)
        differ = _differences(have, want, _PROGRESS_FIELDS)
        if differ:
            problems.append(f"progress: {differ}")
    started = {e.id: as_utc(e.started_at) for e in history}
    have_bests = {(b.mode, b.mode_param): (started.get(b.result_id), b.wpm, b.accuracy) for b in bests}
    if have_bests.keys() != content.bests.keys():
        listed = ", ".join(f"{m} {p}" for m, p in sorted(have_bests)) or "none"
        problems.append(f"personal bests for {listed}; written: {', '.join(f'{m} {p}' for m, p in sorted(content.bests))}")
    else:
        for key in sorted(content.bests):
            differ = _differences(have_bests[key], content.bests[key], _BEST_FIELDS)
            if differ:
                problems.append(f"best of {key[0]} {key[1]}: {differ}")
                break
    return [Problem("mismatch", "canary", "; ".join(problems))] if problems else []


def _optional_when(value: datetime | None) -> str:
    return "a result not in the history" if value is None else when(value)


_HISTORY_FIELDS = (("mode", str), ("mode parameter", str), ("started", when), ("duration", lambda ms: f"{ms / 1000:.1f} s"),
                   ("wpm", two), ("raw wpm", two), ("accuracy", two), ("xp", str))
_PROGRESS_FIELDS = (("xp", str), ("level", str), ("tests", str), ("time typing", lambda ms: f"{ms / 1000:.1f} s"),
                    ("best wpm", two))
_BEST_FIELDS = (("result started", _optional_when), ("wpm", two), ("accuracy", two))


def _differences(have: tuple, want: tuple, labels) -> str:
    """The fields that differ, each as the game shows it: "wpm 48.00, written 47.73"."""
    return ", ".join(f"{label} {shown(h)}, written {shown(w)}"
                     for (label, shown), h, w in zip(labels, have, want) if not _same((h,), (w,)))


class _Boards:
    """The leaderboards read in this run, each once: every sampled player on a mode's
    board sees the same places, and reading a board per player would cost as much again
    as the players' own reads. The first player to need a board pays for its read."""

    def __init__(self, store, limit: int):
        self._store = store
        self._limit = limit
        self._read: dict[tuple[str, int], list | BaseException] = {}

    def get(self, mode: str, mode_param: int) -> tuple[list | BaseException, float]:
        key = (mode, mode_param)
        if key in self._read:
            return self._read[key], 0.0
        started = time.perf_counter()
        try:
            self._read[key] = self._store.leaderboard(mode, mode_param, limit=self._limit)
        except Exception as exc:  # any failure is a counted exception, never a crash
            self._read[key] = exc
        return self._read[key], time.perf_counter() - started


@dataclass
class _Reads:
    """One player's reads, in the game's order: each a value or the exception it raised."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _read_player(store, username: str) -> _Reads:
    """What the game reads for a player: the profile (`play` looks the player up), then
    what `typing-game stats` shows, in its order (progress, bests, history)."""
    reads = _Reads()
    for read, call in (
        ("profile", lambda: store.get_player(username)),
        ("progress", lambda: store.progress(username)),
        ("bests", lambda: store.bests(username)),
        ("history", lambda: store.history(username, limit=HISTORY_LIMIT)),
    ):
        started = time.perf_counter()
        try:
            reads.values[read] = call()
        except Exception as exc:  # any failure is a counted exception, never a crash
            reads.errors[read] = exc
        reads.seconds[read] = time.perf_counter() - started
    return reads


def _exception_problem(read: str, exc: BaseException) -> Problem:
    orig = getattr(exc, "orig", None)
    # 57014 query_canceled: PostgreSQL stopped the read at the probe's statement_timeout.
    if getattr(orig, "sqlstate", None) == "57014":
        return Problem("timeout", read, f"{read}: cancelled by the server at the timeout")
    if isinstance(exc, PlayerNotFound):
        return Problem("missing-row", read, f"{read}: the player is not found")
    if isinstance(exc, Failure):
        # The store's own errors name the username; the report names player ids only.
        return Problem("exception", read, f"{read}: {type(exc).__name__}")
    return Problem("exception", read, f"{read}: {type(orig or exc).__name__}: {error_reason(exc)}"[:200])


def _check_reads(reads: _Reads, boards: _Boards, truth, player_id: int, username: str, expected: Expected | None,
                 truth_error: str | None, canary_created: datetime | None) -> list[Problem]:
    """Every problem of one player's reads; reads whose types are wrong are not compared."""
    problems = [_exception_problem(read, exc) for read, exc in reads.errors.items()]
    typed: dict[str, Any] = {}
    for read, value in reads.values.items():
        rows = _rows(read, value)
        problem = type_problem(read, rows)
        if problem is None:
            typed[read] = value
        else:
            problems.append(problem)
    if expected is None:
        problems.append(Problem("exception", "results", f"results: {truth_error}"))
    profile = typed.get("profile")
    if profile is not None:
        problems += check_profile(profile, player_id, username)
    if expected is not None:
        if "progress" in typed:
            problems += check_progress(typed["progress"], expected.progress)
        if "bests" in typed:
            problems += check_bests(typed["bests"], expected.bests)
    if "history" in typed and expected is not None:
        history = typed["history"]
        try:
            with truth.connect() as connection:
                counts = result_counts(connection, [e.id for e in history])
        except sa.exc.DBAPIError as exc:
            problems.append(_exception_problem("results", exc))
        else:
            tests = 0 if expected.progress is None else expected.progress.tests_completed
            problems += check_history(history, tests, counts, player_id, limit=HISTORY_LIMIT)
    problems += _check_boards(reads, boards, username, expected, typed.get("bests"))
    if canary_created is not None and {"progress", "bests", "history"} <= typed.keys():
        problems += check_canary(username, canary_created, typed["progress"], typed["history"], typed["bests"])
    return problems


def _rows(read: str, value) -> list[tuple[str, Any]]:
    """A read's store dataclasses with labels naming each row in a detail."""
    if read in ("profile", "progress"):
        return [] if value is None else [("", value)]
    if read == "bests":
        return [(f" of {b.mode} {b.mode_param}", b) for b in value]
    return [(f" of result {e.id}", e) for e in value]  # history


def _check_boards(reads: _Reads, boards: _Boards, username: str, expected: Expected | None, bests) -> list[Problem]:
    """The leaderboards of the player's modes: those of their results, and of the bests
    the store returned (a best without a result must not place them on a board)."""
    keys = set(expected.bests) if expected is not None else set()
    keys |= {(b.mode, b.mode_param) for b in bests or ()}
    problems: list[Problem] = []
    wrong = []
    seconds = 0.0
    for mode, mode_param in sorted(keys):
        entries, spent = boards.get(mode, mode_param)
        seconds += spent
        board = f"{mode} {mode_param}"
        if isinstance(entries, BaseException):
            problem = _exception_problem("leaderboard", entries)
            problems.append(replace(problem, detail=problem.detail.replace("leaderboard:", f"leaderboard {board}:", 1)))
            continue
        problem = type_problem("leaderboard", [(f" of {board} place {i}", e) for i, e in enumerate(entries, start=1)])
        if problem is not None:
            wrong.append(problem)
            continue
        if expected is not None:
            problems += check_leaderboard(board, entries, username, expected.bests.get((mode, mode_param)),
                                          limit=LEADERBOARD_LIMIT)
    reads.seconds["leaderboard"] = seconds
    return problems + wrong[:1]


# ---------------------------------------------------------------- the report


@dataclass(frozen=True)
class FailureKind:
    kind: str
    meaning: str
    players: int
    player_ids: tuple[int, ...]  # up to SAMPLE_IDS of them
    reads: tuple[str, ...]  # the reads it was found in, in READS order
    example: str  # the first one seen: "player 12: progress level is text "4", not an integer"


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
        """What the ledger keeps; integrity.prometheus reads success_ratio, the latencies
        and failed_players_by_kind (every kind, 0 included, so that a series exists)."""
        latency = self.latency
        by_kind = {f.kind: f.players for f in self.failures}
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
            "failures": {f.kind: {"players": f.players, "player_ids": list(f.player_ids), "reads": list(f.reads)}
                         for f in self.failures},
            "failed_players_by_kind": {kind: by_kind.get(kind, 0) for kind in KINDS},
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


def _require_schema(engine, display: str) -> str | None:
    """Refuse what is not the game's database at all (exit 4). A game database at a revision
    this code does not know, or behind it, is probed anyway: that is how the original
    incident's migration reached production (applied behind the tool's back), and the
    probe is the alarm that must then fire, by counting what the game's reads get wrong.
    Returns why canaries must not be written (None: they may)."""
    from game_core.schema_state import SchemaState, require_current, schema_status

    with engine.connect() as connection:
        status = schema_status(connection)
    if status.state is SchemaState.EMPTY:
        raise PreconditionFailed(f"database {display} has no schema; run `integrity init` (or point --database-url at the game's database)")
    if status.state is SchemaState.CURRENT:
        return None
    if status.revision is None:
        require_current(status, display_name=display)  # tables without a revision: not the game's
    return f"canaries not written: the database is {status.describe()}"


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


def _canaries(truth, notes: list[str]) -> list[tuple[int, str, datetime]]:
    """The canaries to probe: those complete (one that could not be written has a note)."""
    from game_core.store import Store

    found = []
    for name in CANARIES:
        if _missing_tests(Store(truth), name) is not None:
            continue  # could not be written: the note says why
        try:
            player = Store(truth).get_player(name)
        except sa.exc.DBAPIError:
            raise
        except Exception as exc:  # damaged data: the sampled players' reads show it, counted
            notes.append(f"canary {name} was not probed: {type(exc).__name__} reading it")
            continue
        found.append((player.id, name, player.created_at))
    return found


def run_probe(
    settings: Settings,
    *,
    sample: int = DEFAULT_SAMPLE,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    command: str = "probe",
    now: datetime | None = None,
) -> ProbeReport:
    """Probe `sample` random players and the canaries through the store's reads."""
    from game_core.store import Store

    if sample < 0:
        from game_core.errors import InvalidInput

        raise InvalidInput(f"--sample is {sample}; it must be 0 or more")
    if timeout <= 0:
        from game_core.errors import InvalidInput

        raise InvalidInput(f"--timeout is {timeout}; it must be more than 0 seconds")
    now = now or datetime.now(timezone.utc)
    started = time.perf_counter()
    from integrity.db.connect import Database

    # Two read-only engines: the players' reads stop at the probe's timeout; the ground
    # truth (sampling, recomputing from results) runs with the configured settings,
    # since a slow aggregate over a large sample is not a failed retrieval.
    database = Database.of(settings)
    target = database.target
    opened = ExitStack()
    truth = opened.enter_context(database.reader())
    try:
        engine = opened.enter_context(database.with_statement_timeout(max(1, int(timeout * 1000))).reader())
        try:
            no_writes = _require_schema(truth, target.display)
            store = Store(engine)
            if no_writes:
                written, notes = (), [no_writes]
            else:
                written, notes = ensure_canaries(settings, Store(truth), command=command, now=now)
            notes = list(notes)
            canaries = _canaries(truth, notes)
            with truth.connect() as connection:
                chosen = _sample(connection, sample)
        except sa.exc.DBAPIError as exc:
            raise _unreachable(exc, target.display) from None
        ids = [pid for pid, _ in chosen] + [pid for pid, _, _ in canaries]
        expected, truth_error = _expected_or_error(truth, target, ids)

        tally = _Tally()
        boards = _Boards(store, LEADERBOARD_LIMIT)
        created = {name: created_at for _, name, created_at in canaries}
        for player_id, username in chosen + [(pid, name) for pid, name, _ in canaries]:
            tally.add(_retrieve(truth, store, boards, player_id, username, expected.get(player_id), truth_error,
                                created.get(username), timeout))
        if tally.retrievals and all(r.problems and r.kinds == {"exception"} for r in tally.retrievals):
            _recheck_reachable(truth, target)  # the database went away while probing: exit 4
    finally:
        opened.close()
    return _report(settings, target, chosen, canaries, written, notes, tally, timeout, time.perf_counter() - started)


def _expected_or_error(truth, target, ids: list[int]) -> tuple[dict[int, Expected], str | None]:
    """What each player's reads must say, recomputed from the results; or, when the
    results cannot be aggregated (a column of the wrong type), none and why: every
    player then counts an `exception` on `results`, the source of truth itself."""
    if not ids:
        return {}, None
    try:
        with truth.connect() as connection:
            return expected_for(connection, ids), None
    except sa.exc.DBAPIError as exc:
        _recheck_reachable(truth, target)  # down, not damaged: exit 4
        return {}, _exception_problem("results", exc).detail.removeprefix("results: ")


@dataclass
class _Tally:
    retrievals: list[Retrieval] = field(default_factory=list)
    examples: dict[str, str] = field(default_factory=dict)  # kind -> the first detail seen

    def add(self, retrieval: Retrieval) -> None:
        self.retrievals.append(retrieval)
        for problem in retrieval.problems:
            self.examples.setdefault(problem.kind, f"player {retrieval.player_id}: {problem.detail}")


def _retrieve(truth, store, boards: _Boards, player_id: int, username: str, expected: Expected | None,
              truth_error: str | None, canary_created: datetime | None, timeout: float) -> Retrieval:
    """One player's reads through `store`, checked against their results read on `truth`.
    Each store call is its own transaction, so a player the game writes to while the
    probe reads may disagree for a moment: such a player is read again once, results
    included, and counts as failed only if it still disagrees."""
    first_seconds = None
    problems: list[Problem] = []
    for attempt in (1, 2):
        reads = _read_player(store, username)
        try:
            problems = _check_reads(reads, boards, truth, player_id, username, expected, truth_error, canary_created)
        except Exception as exc:  # a value no check foresaw: counted, never a crash
            problems = [Problem("exception", "results", f"checking the reads: {type(exc).__name__}: {exc}"[:200])]
        seconds = sum(reads.seconds.values())
        first_seconds = seconds if first_seconds is None else first_seconds
        if seconds > timeout:
            slowest = max(reads.seconds, key=reads.seconds.get)
            problems.append(Problem("timeout", slowest, f"{seconds:.3f}s for the player's reads, {slowest} the slowest "
                                                        f"(timeout {timeout:g}s)"))
        if attempt == 1 and problems and {p.kind for p in problems} <= TRANSIENT and expected is not None:
            try:
                with truth.connect() as connection:
                    expected = expected_for(connection, [player_id])[player_id]
            except sa.exc.DBAPIError as exc:
                problems.append(_exception_problem("results", exc))
                break
            continue
        break
    return Retrieval(player_id, first_seconds, tuple(problems))


def _unreachable(exc: sa.exc.DBAPIError, display: str) -> Failure:
    return DatabaseUnreachable(f"cannot read {display}: {error_reason(exc)}; check that the database is up and --database-url")


def _recheck_reachable(engine, target) -> None:
    from game_core.db import check_reachable

    check_reachable(engine, target)


def _report(settings, target, chosen, canaries, written, notes, tally: _Tally, timeout: float, seconds: float) -> ProbeReport:
    retrievals = tally.retrievals
    failed = [r for r in retrievals if r.problems]
    kinds = []
    for kind, meaning in KINDS.items():
        hit = [r for r in retrievals if kind in r.kinds]
        if hit:
            reads = {p.read for r in hit for p in r.problems if p.kind == kind}
            kinds.append(FailureKind(kind, meaning, len(hit), tuple(sorted(r.player_id for r in hit)[:SAMPLE_IDS]),
                                     tuple(read for read in READS if read in reads), tally.examples.get(kind, "")))
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
