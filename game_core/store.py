"""The store API: the one way the game records finished tests and reads them back.

A result is written in one transaction together with the two caches it changes
(`progress` and `personal_bests`), so the caches always agree with `results` exactly as
`game_core.rebuild.rebuild_derived` would recompute them. Everything here is SQLAlchemy
Core on `game_core.schema` and behaves the same on SQLite and PostgreSQL.

Concurrency: the SQLite writer engine takes the write lock at BEGIN (BEGIN IMMEDIATE), so
writers are serialised. On PostgreSQL `record_result` first locks the player's row
(FOR NO KEY UPDATE: it serialises recordings for one player without blocking inserts that
merely reference the player), and the progress row is still created and incremented by
one atomic upsert, so a concurrent writer can never lose an update.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from game_core import metrics
from game_core.errors import InvalidInput, InvalidResult, PlayerExists, PlayerNotFound
from game_core.schema import MODES, personal_bests, players, results
from game_core.schema import progress as progress_table

USERNAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,32}")
# The columns are 32-bit INTEGER on PostgreSQL: a larger value must be refused as invalid
# input here rather than surface as a driver traceback ("integer out of range").
MAX_INT32 = 2**31 - 1
# wpm and raw_wpm are NUMERIC(7, 2): the largest value a result row can hold.
MAX_STORED_WPM = 99_999.99

COUNT_FIELDS = (
    "correct_word_chars",
    "correct_spaces",
    "correct_chars",
    "incorrect_chars",
    "extra_chars",
    "missed_chars",
    "correct_keystrokes",
    "incorrect_keystrokes",
)


def utc_now() -> datetime:
    """The store's default clock: the current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    """A datetime read from the database as timezone-aware UTC.

    SQLite hands back naive values; they were written in UTC (see `_to_stored`).
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _to_stored(value: datetime) -> datetime:
    """An aware datetime converted to UTC before it is written or compared in SQL.

    SQLite's DateTime drops the offset and stores the wall-clock digits, so 12:00+02:00
    would otherwise be stored as 12:00 and slip past the (player_id, started_at) key.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}; the store takes timezone-aware UTC only")
    return value.astimezone(timezone.utc)


# ---------------------------------------------------------------- results and metrics


@dataclass(frozen=True)
class TestOutcome:
    """What a finished test produced: the raw counts; the store derives the metrics."""

    # Not a pytest test class, whatever its name: stops a collection warning in every
    # test module that imports it.
    __test__ = False

    mode: str  # "words" | "time"
    mode_param: int  # word count (words) or seconds (time)
    started_at: datetime  # timezone-aware UTC, first key press
    duration_ms: int
    correct_word_chars: int
    correct_spaces: int
    correct_chars: int
    incorrect_chars: int
    extra_chars: int
    missed_chars: int
    correct_keystrokes: int
    incorrect_keystrokes: int


@dataclass(frozen=True)
class DerivedMetrics:
    """The numbers a result stores besides its counts (see `game_core.metrics`)."""

    wpm: float
    raw_wpm: float
    accuracy: float
    xp: int


def derive_metrics(outcome: TestOutcome) -> DerivedMetrics:
    """Compute wpm, raw wpm, accuracy and xp of a test with `game_core.metrics`."""
    return DerivedMetrics(
        wpm=metrics.wpm(outcome.correct_word_chars, outcome.correct_spaces, outcome.duration_ms),
        raw_wpm=metrics.raw_wpm(
            outcome.correct_chars,
            outcome.incorrect_chars,
            outcome.extra_chars,
            outcome.correct_spaces,
            outcome.duration_ms,
        ),
        accuracy=metrics.accuracy(outcome.correct_keystrokes, outcome.incorrect_keystrokes),
        xp=metrics.result_xp(
            outcome.correct_word_chars,
            outcome.correct_spaces,
            outcome.correct_keystrokes,
            outcome.incorrect_keystrokes,
        ),
    )


def _reject(field: str, value: object, allowed: str) -> InvalidResult:
    shown = value.isoformat() if isinstance(value, datetime) else repr(value)
    return InvalidResult(f"invalid result: {field} is {shown}; {allowed}")


def validate_outcome(outcome: TestOutcome, *, player_created_at: datetime, now: datetime) -> DerivedMetrics:
    """Check a test against the plausible ranges and return its metrics.

    Raises InvalidResult with one line naming the field, its value and what is allowed.
    """
    if outcome.mode not in MODES:
        raise _reject("mode", outcome.mode, f"allowed: {' or '.join(MODES)}")
    integer_fields = ("mode_param", "duration_ms", *COUNT_FIELDS)
    for name in integer_fields:
        value = getattr(outcome, name)
        # bool is an int subclass; True as a count is a caller's bug, not a count of 1.
        if not isinstance(value, int) or isinstance(value, bool):
            raise _reject(name, value, "it must be an integer")
        if value > MAX_INT32:
            raise _reject(name, value, f"it must be at most {MAX_INT32}")
    if outcome.mode_param <= 0:
        unit = "word count" if outcome.mode == "words" else "number of seconds"
        raise _reject("mode_param", outcome.mode_param, f"it must be a positive {unit}")
    for name in COUNT_FIELDS:
        value = getattr(outcome, name)
        if value < 0:
            raise _reject(name, value, "counts cannot be negative")
    if outcome.duration_ms < metrics.MIN_DURATION_MS:
        raise _reject("duration_ms", outcome.duration_ms, f"a test lasts at least {metrics.MIN_DURATION_MS} ms")
    if outcome.correct_word_chars > outcome.correct_chars:
        raise _reject(
            "correct_word_chars",
            outcome.correct_word_chars,
            f"it cannot exceed correct_chars ({outcome.correct_chars})",
        )
    started_at = outcome.started_at
    if not isinstance(started_at, datetime):
        raise _reject("started_at", started_at, "it must be a timezone-aware datetime")
    if started_at.tzinfo is None or started_at.utcoffset() is None:
        raise _reject("started_at", started_at, "it must be timezone-aware (UTC), not naive")
    if started_at > now:
        raise _reject("started_at", started_at, f"it cannot be in the future (now is {now.isoformat()})")
    if started_at < player_created_at:
        raise _reject(
            "started_at",
            started_at,
            f"it cannot be before the player was created ({player_created_at.isoformat()})",
        )
    derived = derive_metrics(outcome)
    if outcome.duration_ms >= metrics.IMPOSSIBLE_WPM_MIN_DURATION_MS and derived.wpm > metrics.IMPOSSIBLE_WPM:
        raise _reject(
            "wpm",
            derived.wpm,
            f"over {metrics.IMPOSSIBLE_WPM} on a test of {metrics.IMPOSSIBLE_WPM_MIN_DURATION_MS // 1000} s "
            "or more is impossible for a human",
        )
    # raw_wpm >= wpm, so this bounds both columns; only very short tests can get here.
    if derived.raw_wpm > MAX_STORED_WPM:
        raise _reject("raw_wpm", derived.raw_wpm, f"at most {MAX_STORED_WPM} can be stored")
    return derived


# ---------------------------------------------------------------- what the store returns


@dataclass(frozen=True)
class Player:
    """A registered player."""

    id: int
    username: str
    created_at: datetime


@dataclass(frozen=True)
class Progress:
    """A player's totals over all their results (a cache of `results`)."""

    player_id: int
    xp: int
    level: int
    tests_completed: int
    time_typing_ms: int
    best_wpm: float
    updated_at: datetime


@dataclass(frozen=True)
class PersonalBest:
    """A player's best result for one mode and parameter (a cache of `results`)."""

    mode: str
    mode_param: int
    result_id: int
    wpm: float
    accuracy: float


@dataclass(frozen=True)
class HistoryEntry:
    """One recorded result as the player sees it."""

    id: int
    mode: str
    mode_param: int
    started_at: datetime
    duration_ms: int
    wpm: float
    raw_wpm: float
    accuracy: float
    xp: int


@dataclass(frozen=True)
class RecordedResult:
    """What `Store.record_result` wrote: the result, the new progress, and whether it set a best."""

    result: HistoryEntry
    progress: Progress
    new_personal_best: bool
    previous_best_wpm: float | None


@dataclass(frozen=True)
class LeaderboardEntry:
    """One row of a mode's leaderboard: a player's best result for it."""

    rank: int
    username: str
    wpm: float
    accuracy: float
    started_at: datetime


def progress_from_row(row) -> Progress:
    """A `progress` row (or any row with its column names) as a Progress."""
    return Progress(
        player_id=row.player_id,
        xp=row.xp,
        level=row.level,
        tests_completed=row.tests_completed,
        time_typing_ms=row.time_typing_ms,
        best_wpm=row.best_wpm,
        updated_at=as_utc(row.updated_at),
    )


def _history_from_row(row) -> HistoryEntry:
    return HistoryEntry(
        id=row.id,
        mode=row.mode,
        mode_param=row.mode_param,
        started_at=as_utc(row.started_at),
        duration_ms=row.duration_ms,
        wpm=row.wpm,
        raw_wpm=row.raw_wpm,
        accuracy=row.accuracy,
        xp=row.xp,
    )


def _player_from_row(row) -> Player:
    return Player(id=row.id, username=row.username, created_at=as_utc(row.created_at))


def upsert(connection: Connection, table: sa.Table):
    """An INSERT that can take ON CONFLICT clauses on this connection's engine."""
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def _require_limit(limit: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise InvalidInput(f"limit is {limit!r}; it must be a positive integer")


# ---------------------------------------------------------------- the store


class Store:
    """Players, results, progress, personal bests and leaderboards over one engine."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utc_now):
        self._engine = engine
        self._clock = clock

    def _now(self) -> datetime:
        return _to_stored(self._clock())

    # ------------------------------------------------------------ players

    def create_player(self, username: str) -> Player:
        """Register a new player; PlayerExists when the name is taken."""
        if not isinstance(username, str) or not USERNAME_PATTERN.fullmatch(username):
            raise InvalidInput(
                f"invalid username {username!r}; use 1 to 32 letters, digits, '_', '.' or '-'"
            )
        with self._engine.begin() as connection:
            if self._find_player(connection, username) is not None:
                raise PlayerExists(f"player {username!r} already exists; choose another username")
            created_at = self._now()
            try:
                player_id = connection.execute(
                    players.insert().values(username=username, created_at=created_at).returning(players.c.id)
                ).scalar_one()
            except sa.exc.IntegrityError:
                # Another PostgreSQL session registered the name between our check and insert.
                raise PlayerExists(f"player {username!r} already exists; choose another username") from None
        return Player(id=player_id, username=username, created_at=created_at)

    def get_player(self, username: str) -> Player:
        """The player with this username; PlayerNotFound if there is none."""
        with self._engine.connect() as connection:
            return self._require_player(connection, username)

    def get_or_create_player(self, username: str) -> Player:
        """The player with this username, registering them first if needed."""
        try:
            return self.get_player(username)
        except PlayerNotFound:
            pass
        try:
            return self.create_player(username)
        except PlayerExists:
            # Lost a race with another process registering the same name: theirs is ours.
            return self.get_player(username)

    @staticmethod
    def _find_player(connection: Connection, username: str, *, lock: bool = False) -> Player | None:
        query = sa.select(players.c.id, players.c.username, players.c.created_at).where(players.c.username == username)
        if lock:
            # NO KEY UPDATE: conflicts with itself (serialising recordings for this player)
            # but not with the KEY SHARE lock other inserts' foreign keys take. SQLite
            # renders no clause; its BEGIN IMMEDIATE already holds the write lock.
            query = query.with_for_update(key_share=True)
        row = connection.execute(query).first()
        return None if row is None else _player_from_row(row)

    def _require_player(self, connection: Connection, username: str, *, lock: bool = False) -> Player:
        player = self._find_player(connection, username, lock=lock)
        if player is None:
            raise PlayerNotFound(f"no player named {username!r}; create one first (or check the spelling)")
        return player

    # ------------------------------------------------------------ recording

    def record_result(self, username: str, outcome: TestOutcome) -> RecordedResult:
        """Validate and save a finished test and update the player's progress and bests, atomically."""
        with self._engine.begin() as connection:
            player = self._require_player(connection, username, lock=True)
            # Read the clock only once the lock is held, so created_at follows commit order.
            now = self._now()
            derived = validate_outcome(outcome, player_created_at=player.created_at, now=now)
            started_at = _to_stored(outcome.started_at)
            result_id = self._insert_result(connection, player, outcome, started_at, derived, now)
            new_progress = self._add_to_progress(connection, player.id, outcome.duration_ms, derived, now)
            new_best, previous_best = self._update_personal_best(
                connection, player.id, outcome, started_at, result_id, derived
            )
        entry = HistoryEntry(
            id=result_id,
            mode=outcome.mode,
            mode_param=outcome.mode_param,
            started_at=started_at,
            duration_ms=outcome.duration_ms,
            wpm=derived.wpm,
            raw_wpm=derived.raw_wpm,
            accuracy=derived.accuracy,
            xp=derived.xp,
        )
        return RecordedResult(
            result=entry, progress=new_progress, new_personal_best=new_best, previous_best_wpm=previous_best
        )

    @staticmethod
    def _insert_result(connection, player: Player, outcome: TestOutcome, started_at, derived, now) -> int:
        duplicate = InvalidResult(
            f"a result for this player at {started_at.isoformat()} is already recorded; "
            "each test is saved once"
        )
        # Checked first so that PostgreSQL does not abort the transaction on the key
        # violation; the player lock makes the check race-free there, BEGIN IMMEDIATE on SQLite.
        exists = connection.execute(
            sa.select(results.c.id).where(results.c.player_id == player.id, results.c.started_at == started_at)
        ).first()
        if exists is not None:
            raise duplicate
        counts = {f.name: getattr(outcome, f.name) for f in fields(outcome)}
        counts["started_at"] = started_at
        try:
            return connection.execute(
                results.insert()
                .values(
                    player_id=player.id,
                    **counts,
                    wpm=derived.wpm,
                    raw_wpm=derived.raw_wpm,
                    accuracy=derived.accuracy,
                    xp=derived.xp,
                    metrics_version=metrics.METRICS_VERSION,
                    created_at=now,
                )
                .returning(results.c.id)
            ).scalar_one()
        except sa.exc.IntegrityError:
            # Only the (player_id, started_at) key can fail here: the player row is held.
            raise duplicate from None

    @staticmethod
    def _add_to_progress(connection, player_id: int, duration_ms: int, derived: DerivedMetrics, now) -> Progress:
        # One atomic upsert: it creates the row for a first result and otherwise adds to
        # it in SQL, so even without the player lock no concurrent increment is lost.
        statement = upsert(connection, progress_table).values(
            player_id=player_id,
            xp=derived.xp,
            level=metrics.level_for_xp(derived.xp),
            tests_completed=1,
            time_typing_ms=duration_ms,
            best_wpm=derived.wpm,
            updated_at=now,
        )
        excluded = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=[progress_table.c.player_id],
            set_={
                "xp": progress_table.c.xp + excluded.xp,
                "tests_completed": progress_table.c.tests_completed + 1,
                "time_typing_ms": progress_table.c.time_typing_ms + excluded.time_typing_ms,
                # CASE, not GREATEST/max(): the same SQL on both engines.
                "best_wpm": sa.case(
                    (excluded.best_wpm > progress_table.c.best_wpm, excluded.best_wpm), else_=progress_table.c.best_wpm
                ),
                "updated_at": excluded.updated_at,
            },
        ).returning(*progress_table.c)
        row = connection.execute(statement).one()
        # The level needs the new total, known only now; SQLite may lack sqrt, so it is
        # computed here. The upsert holds the row lock until commit.
        level = metrics.level_for_xp(row.xp)
        if level != row.level:
            connection.execute(progress_table.update().where(progress_table.c.player_id == player_id).values(level=level))
        return Progress(
            player_id=row.player_id,
            xp=row.xp,
            level=level,
            tests_completed=row.tests_completed,
            time_typing_ms=row.time_typing_ms,
            best_wpm=row.best_wpm,
            updated_at=as_utc(row.updated_at),
        )

    @staticmethod
    def _update_personal_best(connection, player_id, outcome, started_at, result_id, derived) -> tuple[bool, float | None]:
        key = (
            personal_bests.c.player_id == player_id,
            personal_bests.c.mode == outcome.mode,
            personal_bests.c.mode_param == outcome.mode_param,
        )
        current = connection.execute(
            sa.select(personal_bests.c.wpm, results.c.started_at)
            .join(results, results.c.id == personal_bests.c.result_id)
            .where(*key)
        ).first()
        values = dict(result_id=result_id, wpm=derived.wpm, accuracy=derived.accuracy)
        if current is None:
            connection.execute(
                personal_bests.insert().values(
                    player_id=player_id, mode=outcome.mode, mode_param=outcome.mode_param, **values
                )
            )
            return True, None
        # The same order as rebuild (wpm DESC, started_at ASC): strictly faster wins, and
        # an equal wpm wins only when it was typed earlier (a result saved late, out of
        # order), so the earlier result stays the best and the cache matches a rebuild.
        faster = derived.wpm > current.wpm
        earlier_tie = derived.wpm == current.wpm and started_at < as_utc(current.started_at)
        if faster or earlier_tie:
            connection.execute(personal_bests.update().where(*key).values(**values))
        return faster, current.wpm

    # ------------------------------------------------------------ reading

    def progress(self, username: str) -> Progress | None:
        """The player's totals; None until they finish a first test."""
        with self._engine.connect() as connection:
            player = self._require_player(connection, username)
            row = connection.execute(sa.select(progress_table).where(progress_table.c.player_id == player.id)).first()
        return None if row is None else progress_from_row(row)

    def history(self, username: str, limit: int = 20) -> list[HistoryEntry]:
        """The player's most recent results, newest first."""
        _require_limit(limit)
        with self._engine.connect() as connection:
            player = self._require_player(connection, username)
            rows = connection.execute(
                sa.select(
                    results.c.id,
                    results.c.mode,
                    results.c.mode_param,
                    results.c.started_at,
                    results.c.duration_ms,
                    results.c.wpm,
                    results.c.raw_wpm,
                    results.c.accuracy,
                    results.c.xp,
                )
                .where(results.c.player_id == player.id)
                .order_by(results.c.started_at.desc(), results.c.id.desc())
                .limit(limit)
            ).all()
        return [_history_from_row(row) for row in rows]

    def bests(self, username: str) -> list[PersonalBest]:
        """The player's personal bests, ordered by mode and mode parameter."""
        with self._engine.connect() as connection:
            player = self._require_player(connection, username)
            rows = connection.execute(
                sa.select(personal_bests)
                .where(personal_bests.c.player_id == player.id)
                .order_by(personal_bests.c.mode, personal_bests.c.mode_param)
            ).all()
        return [
            PersonalBest(mode=r.mode, mode_param=r.mode_param, result_id=r.result_id, wpm=r.wpm, accuracy=r.accuracy)
            for r in rows
        ]

    def leaderboard(self, mode: str, mode_param: int, limit: int = 10) -> list[LeaderboardEntry]:
        """The fastest players for one mode: each player's best result, ties to the earlier test."""
        if mode not in MODES:
            raise InvalidInput(f"unknown mode {mode!r}; use {' or '.join(MODES)}")
        _require_limit(limit)
        # Read from personal_bests, the cache that exists for exactly this: a scan of one
        # row per player instead of a window over every result of the mode. It holds each
        # player's best under the same order (wpm DESC, started_at ASC) the ranking uses.
        with self._engine.connect() as connection:
            rows = connection.execute(
                sa.select(players.c.username, personal_bests.c.wpm, personal_bests.c.accuracy, results.c.started_at)
                .select_from(personal_bests)
                .join(results, results.c.id == personal_bests.c.result_id)
                .join(players, players.c.id == personal_bests.c.player_id)
                .where(personal_bests.c.mode == mode, personal_bests.c.mode_param == mode_param)
                .order_by(personal_bests.c.wpm.desc(), results.c.started_at, results.c.id)
                .limit(limit)
            ).all()
        return [
            LeaderboardEntry(
                rank=rank, username=r.username, wpm=r.wpm, accuracy=r.accuracy, started_at=as_utc(r.started_at)
            )
            for rank, r in enumerate(rows, start=1)
        ]
