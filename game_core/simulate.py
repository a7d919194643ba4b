"""Simulated players and results: realistic, deterministic for a seed, and fast.

`typing-game simulate` builds the databases the benchmarks, drills and crash tests need,
up to several GB (DESIGN.md sections 3 and 9), so speed is the point:

- Rows are generated with numpy, a block of players at a time, and converted to plain
  tuples only at insert time. A pure-Python generator (`random.Random` and the `metrics`
  functions, whose Decimal rounding alone costs about 2 us a call) measured about 20 us
  per row here, twice what SQLite needs to insert the row; vectorised, generating is
  under 0.5 us per row and turning arrays into tuples about 1 us.
- Results go in through the driver, not SQLAlchemy's per-row machinery: the sqlite3
  cursor's `executemany` on SQLite, `COPY ... FROM STDIN` on PostgreSQL. Batches are
  whole players and a transaction is a few batches (`TRANSACTION_ROWS`), so an
  interrupted run leaves complete players behind (their caches appear with the next
  `integrity repair` or rebuild).
- `progress` and `personal_bests` are rebuilt once at the end, by `game_core.rebuild`, for
  the new players only.

Determinism: players are generated in fixed blocks whose random stream is seeded from
(seed, first new player number, block number); blocks are always generated whole and cut
at the end, so the same seed on an empty database gives identical rows whatever the
batch size, and a smaller `players` gives a prefix of a larger run. Timestamps are
placed before an anchor, the current UTC midnight (or `now` when given), so two runs on
the same day agree too. numpy only promises the same stream within one numpy version.

Every stored metric agrees exactly with `game_core.metrics`: wpm, raw_wpm and accuracy are
rounded half up in exact integer arithmetic, which provably equals `metrics.round2` of the
float formula except at exact ties (x.xx5), and those few rows are computed by calling
`game_core.metrics` itself.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from game_core import metrics
from game_core.errors import InvalidInput
from game_core import schema
from game_core.schema import players as players_table

USERNAME_MAX_LENGTH = 32

SECOND_US = 1_000_000
HOUR_US = 3600 * SECOND_US
DAY_US = 24 * HOUR_US
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# (mode, mode_param, share of all tests, speed relative to the player's usual wpm):
# time 30 and words 25 are the defaults people keep, short tests run a little faster.
MODES = (
    ("words", 10, 0.06, 1.06),
    ("words", 25, 0.20, 1.03),
    ("words", 50, 0.08, 1.00),
    ("words", 100, 0.04, 0.97),
    ("time", 15, 0.11, 1.04),
    ("time", 30, 0.35, 1.00),
    ("time", 60, 0.12, 0.98),
    ("time", 120, 0.04, 0.95),
)
_MODE_NAME = np.array([m[0] for m in MODES], dtype=object)
_MODE_PARAM = np.array([m[1] for m in MODES], dtype=np.int64)
_MODE_IS_TIME = np.array([m[0] == "time" for m in MODES])
_MODE_WEIGHT = np.array([m[2] for m in MODES])
_MODE_WEIGHT = _MODE_WEIGHT / _MODE_WEIGHT.sum()
_MODE_SPEED = np.array([m[3] for m in MODES])

# The player model. Skill is lognormal: median 48.5 wpm, mean about 52 once practice and
# modes are applied; about 0.6% of players average above 120 and under 0.1% above 150.
SKILL_MEDIAN_WPM = 48.5
SKILL_SIGMA = 0.35
SKILL_RANGE = (12.0, 200.0)
TEST_WPM_RANGE = (8.0, 225.0)  # a test's target; the stored wpm stays below SUSPICIOUS_WPM
ERROR_RATE_MEDIAN = 0.035  # share of wrong key presses: accuracy mostly 90..100
ERROR_RATE_RANGE = (0.003, 0.30)
FAVOURITE_MODE_SHARE = 0.5  # half of a player's tests are in their favourite mode
SIGNUP_DAYS = (1.0, 365.0)  # players joined over the last ~12 months
PAUSE_MIN_US = 2 * SECOND_US  # at least this between the end of a test and the next start
SAVE_LATENCY_US = (30_000, 500_000)  # results.created_at: saved this long after the end
ANCHOR_MARGIN_US = 60 * SECOND_US

# Rows generated per block (whole players): large enough for numpy to amortise its
# per-call cost, small enough to stay in cache. Part of the determinism contract.
GENERATION_BLOCK_ROWS = 8192
# Rows per transaction, in whole batches. Each commit checkpoints the WAL, and the
# leaderboard index takes its inserts all over the tree, so every commit rewrites much of
# it: measured on 1.3 million rows, one commit per 20,000-row batch took 25 to 45% longer
# than one per 200,000 rows. Larger transactions gained little more (within the noise)
# and grow the WAL, and what an interruption throws away.
TRANSACTION_ROWS = 200_000
# SQLite page cache for the bulk load (KiB), instead of the default 2 MB: the random
# inserts into the leaderboard index otherwise spill and re-read pages all the time.
# Set on simulate's own connection only, and restored before it goes back to the pool.
BULK_CACHE_KIB = 65_536

# Every column of `results` but its id, in table order (the order rows are built in).
RESULT_COLUMNS = tuple(column.name for column in schema.results.columns if column.name != "id")
# The per-result arrays a block carries (mode_param follows from the mode; the rest is fixed).
_RESULT_FIELDS = tuple(name for name in RESULT_COLUMNS if name not in ("player_id", "mode_param", "metrics_version"))


@dataclass(frozen=True)
class SimulationSummary:
    players: int
    results: int
    seconds: float
    results_per_second: float
    first_username: str | None
    last_username: str | None


@dataclass
class Block:
    """Generated players (1-d arrays) and their results (2-d: one row per player).

    Times are integer microseconds since the Unix epoch, UTC. Results of a player are in
    `started_at` order.
    """

    numbers: np.ndarray
    player_created_at: np.ndarray
    results: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.numbers)

    def take(self, start: int, stop: int) -> Block:
        return Block(
            self.numbers[start:stop],
            self.player_created_at[start:stop],
            {name: array[start:stop] for name, array in self.results.items()},
        )

    @staticmethod
    def concatenate(parts: list[Block]) -> Block:
        if len(parts) == 1:
            return parts[0]
        return Block(
            np.concatenate([p.numbers for p in parts]),
            np.concatenate([p.player_created_at for p in parts]),
            {name: np.concatenate([p.results[name] for p in parts]) for name in parts[0].results},
        )


# ---------------------------------------------------------------- the public function


def simulate(
    engine: Engine,
    *,
    players: int,
    tests_per_player: int,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 20_000,
    now: datetime | None = None,
) -> SimulationSummary:
    """Add `players` simulated players with `tests_per_player` results each.

    Usernames are `sim<seed>_<n>`, n continuing after the highest one already present for
    this seed, so running the command again adds players. `progress(done, total)` is
    called after each batch of results is written. `now` is for tests: every timestamp
    lies before it (default: before the current UTC midnight) and the rebuilt caches
    carry it as their update time.
    """
    _validate(players=players, tests_per_player=tests_per_player, seed=seed, batch_size=batch_size)
    from game_core.rebuild import rebuild_derived

    began = time.perf_counter()
    anchor_us = _anchor_us(now)
    writer = _writer_for(engine)
    total_results = players * tests_per_player
    players_per_batch = max(1, batch_size // max(tests_per_player, 1))
    batches_per_transaction = max(1, TRANSACTION_ROWS // (players_per_batch * max(tests_per_player, 1)))
    new_ids: list[int] = []
    done = 0
    with engine.connect() as connection:
        with connection.begin():
            start_n = next_player_number(connection, seed)
        last_n = start_n + players - 1
        if len(username(seed, last_n)) > USERNAME_MAX_LENGTH:
            raise InvalidInput(
                f"usernames {username(seed, start_n)}..{username(seed, last_n)} would exceed "
                f"{USERNAME_MAX_LENGTH} characters; use a smaller --seed"
            )
        batches = _batches(seed, start_n, players, tests_per_player, anchor_us, players_per_batch)
        with _bulk_load_settings(connection):
            while True:
                # A transaction takes a few batches; generated as they are written.
                group = itertools.islice(batches, batches_per_transaction)
                first = next(group, None)
                if first is None:
                    break
                with connection.begin():
                    for batch in itertools.chain([first], group):
                        ids = _insert_players(connection, seed, batch)
                        if tests_per_player:
                            writer(connection, ids, batch, batch_size)
                        new_ids.extend(ids)
                        done += len(batch) * tests_per_player
                        if progress is not None:
                            progress(done, total_results)
            with connection.begin():
                rebuild_derived(connection, new_ids, now=now)
    seconds = time.perf_counter() - began
    return SimulationSummary(
        players=players,
        results=total_results,
        seconds=seconds,
        results_per_second=total_results / seconds if seconds > 0 else 0.0,
        first_username=username(seed, start_n),
        last_username=username(seed, last_n),
    )


def username(seed: int, n: int) -> str:
    return f"sim{seed}_{n}"


def next_player_number(connection: Connection, seed: int) -> int:
    """1 + the highest n of an existing `sim<seed>_<n>` player (1 when there is none)."""
    prefix = f"sim{seed}_"
    pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    names = connection.execute(
        sa.select(players_table.c.username).where(players_table.c.username.like(pattern, escape="\\"))
    ).scalars()
    highest = 0
    for name in names:
        # SQLite's LIKE ignores case: check the exact prefix here.
        suffix = name[len(prefix) :]
        if name.startswith(prefix) and suffix.isascii() and suffix.isdigit():
            highest = max(highest, int(suffix))
    return highest + 1


def _validate(*, players: int, tests_per_player: int, seed: int, batch_size: int) -> None:
    for name, value in (("players", players), ("tests per player", tests_per_player), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{name} must be a whole number, not {value!r}")
    if players < 1:
        raise InvalidInput(f"players must be at least 1 (got {players}); pass --players N with N >= 1")
    if tests_per_player < 0:
        raise InvalidInput(
            f"tests per player cannot be negative (got {tests_per_player}); pass --tests-per-player 0 or more"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInput(f"batch size must be a positive whole number (got {batch_size!r})")


@contextmanager
def _bulk_load_settings(connection: Connection) -> Iterator[None]:
    if connection.dialect.name != "sqlite":
        yield
        return
    # Straight on the driver: through SQLAlchemy the PRAGMA would autobegin a transaction.
    driver = connection.connection.driver_connection
    previous = driver.execute("PRAGMA cache_size").fetchone()[0]
    driver.execute(f"PRAGMA cache_size = {-BULK_CACHE_KIB}")
    try:
        yield
    finally:
        try:
            driver.execute(f"PRAGMA cache_size = {int(previous)}")
        except Exception:
            # Never hand a connection with other settings back to the pool.
            connection.invalidate()


def _anchor_us(now: datetime | None) -> int:
    """Every generated timestamp lies before this instant (microseconds since the epoch)."""
    if now is None:
        current = datetime.now(timezone.utc)
        anchor = current.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        if now.tzinfo is None:
            raise InvalidInput("now must be timezone-aware (UTC)")
        anchor = now.astimezone(timezone.utc)
    return (anchor - EPOCH) // timedelta(microseconds=1)


# ---------------------------------------------------------------- generation


def generate_blocks(
    seed: int, start_n: int, players: int, tests_per_player: int, anchor_us: int
) -> Iterator[Block]:
    """The simulated players numbered start_n.. in generation blocks (the last one cut)."""
    per_block = max(1, GENERATION_BLOCK_ROWS // max(tests_per_player, 1))
    sign = 0 if seed >= 0 else 1
    made = 0
    index = 0
    while made < players:
        rng = np.random.default_rng([sign, abs(seed), start_n, index])
        block = generate_block(rng, start_n + index * per_block, per_block, tests_per_player, anchor_us)
        if made + per_block > players:
            block = block.take(0, players - made)
        made += len(block)
        index += 1
        yield block


def _batches(
    seed: int, start_n: int, players: int, tests_per_player: int, anchor_us: int, players_per_batch: int
) -> Iterator[Block]:
    """Re-cut the generation blocks into write batches of `players_per_batch` players."""
    pending: list[Block] = []
    held = 0
    for block in generate_blocks(seed, start_n, players, tests_per_player, anchor_us):
        pending.append(block)
        held += len(block)
        while held >= players_per_batch:
            joined = Block.concatenate(pending)
            yield joined.take(0, players_per_batch)
            rest = joined.take(players_per_batch, len(joined))
            pending = [rest] if len(rest) else []
            held = len(rest)
    if held:
        yield Block.concatenate(pending)


def generate_block(rng: np.random.Generator, first_n: int, count: int, tests: int, anchor_us: int) -> Block:
    """`count` players numbered from `first_n` with `tests` results each."""
    shape = (count, tests)
    # Players: when they joined, how fast and how accurate they are, what they play.
    joined = anchor_us - (rng.uniform(*SIGNUP_DAYS, count) * DAY_US).astype(np.int64)
    skill = np.clip(rng.lognormal(np.log(SKILL_MEDIAN_WPM), SKILL_SIGMA, count), *SKILL_RANGE)
    growth = rng.uniform(0.0, 0.25, count)  # practice: speed rises over a player's tests
    error_rate = np.clip(rng.lognormal(np.log(ERROR_RATE_MEDIAN), 0.55, count), *ERROR_RATE_RANGE)
    favourite = rng.choice(len(MODES), count, p=_MODE_WEIGHT)
    first_delay = rng.exponential(3 * HOUR_US, count).astype(np.int64) + SECOND_US
    active_share = rng.uniform(0.05, 1.0, count)  # of the time since joining
    numbers = np.arange(first_n, first_n + count, dtype=np.int64)

    # Tests: mode, target speed, error rate and word lengths.
    mode = np.where(
        rng.random(shape) < FAVOURITE_MODE_SHARE, favourite[:, None], rng.choice(len(MODES), shape, p=_MODE_WEIGHT)
    )
    param = _MODE_PARAM[mode]
    is_time = _MODE_IS_TIME[mode]
    stage = np.arange(tests) / max(tests - 1, 1) - 0.5
    target = skill[:, None] * (1 + growth[:, None] * stage) * _MODE_SPEED[mode] * rng.lognormal(0.0, 0.09, shape)
    target = np.clip(target, *TEST_WPM_RANGE)
    p_wrong = np.clip(error_rate[:, None] * rng.lognormal(0.0, 0.3, shape), 0.0, 0.45)
    letters_per_word = np.clip(rng.normal(4.6, 0.25, shape), 3.5, 6.0)

    # Counts. A time test types as many words as the speed allows in the time; a words
    # test has its word count. Most mistakes are corrected; a word left with a mistake
    # is not fully correct and does not count towards wpm.
    time_words = np.maximum(1, np.rint(target * param / 12 / (letters_per_word + 1))).astype(np.int64)
    wrong_words = rng.binomial(np.where(is_time, time_words, param), p_wrong * 0.6)
    good_words = np.where(is_time, time_words, param - wrong_words)
    words = good_words + wrong_words
    good_letters = np.maximum(good_words, np.rint(good_words * letters_per_word).astype(np.int64))
    wrong_letters = np.maximum(wrong_words, np.rint(wrong_words * letters_per_word).astype(np.int64))
    correct_spaces = words - 1
    correct_word_chars = good_letters
    incorrect = np.minimum(wrong_words + rng.binomial(wrong_words, 0.35), wrong_letters)
    missed = np.minimum(rng.binomial(wrong_words, 0.15), wrong_letters - incorrect)
    extra = rng.binomial(wrong_words, 0.2)
    correct_chars = good_letters + wrong_letters - incorrect - missed
    net_chars = correct_word_chars + correct_spaces
    words_duration = np.maximum(metrics.MIN_DURATION_MS, np.rint(net_chars * 12_000 / target).astype(np.int64))
    duration_ms = np.where(is_time, param * 1000, words_duration)
    # Key presses: every correction is one wrong press and one right one; enough of them
    # that the accuracy lands on the test's error rate.
    typed_right = correct_chars + correct_spaces
    typed_wrong = incorrect + extra
    fixes = np.rint((p_wrong * (typed_right + typed_wrong) - typed_wrong) / (1 - 2 * p_wrong))
    fixes = np.maximum(0, fixes).astype(np.int64)
    correct_keystrokes = typed_right + fixes
    incorrect_keystrokes = typed_wrong + fixes

    # When: after joining and a first delay, within the player's active stretch, in order,
    # never overlapping (so started_at is unique per player) and before the anchor.
    spacing = duration_ms * 1000 + PAUSE_MIN_US
    needed = spacing.sum(axis=1)
    start = joined + first_delay
    available = np.maximum(((anchor_us - ANCHOR_MARGIN_US - start) * active_share).astype(np.int64), needed)
    overflow = np.maximum(0, start + available - (anchor_us - ANCHOR_MARGIN_US))
    joined -= overflow  # a heavy player must have joined earlier
    start -= overflow
    slack = rng.random(shape)
    slack.sort(axis=1)
    offsets = (slack * (available - needed)[:, None]).astype(np.int64)
    before = np.cumsum(spacing, axis=1) - spacing
    started_at = start[:, None] + offsets + before
    created_at = started_at + duration_ms * 1000 + rng.integers(*SAVE_LATENCY_US, shape)

    wpm, raw_wpm, accuracy, xp = _metrics(
        correct_word_chars, correct_spaces, correct_chars, incorrect, extra, duration_ms,
        correct_keystrokes, incorrect_keystrokes,
    )  # fmt: skip
    results = {
        "mode": mode,
        "started_at": started_at,
        "duration_ms": duration_ms,
        "correct_word_chars": correct_word_chars,
        "correct_spaces": correct_spaces,
        "correct_chars": correct_chars,
        "incorrect_chars": incorrect,
        "extra_chars": extra,
        "missed_chars": missed,
        "correct_keystrokes": correct_keystrokes,
        "incorrect_keystrokes": incorrect_keystrokes,
        "wpm": wpm,
        "raw_wpm": raw_wpm,
        "accuracy": accuracy,
        "xp": xp,
        "created_at": created_at,
    }
    return Block(numbers, joined, results)


def _round_half_up(numerator: np.ndarray, denominator: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """floor(n / d + 1/2) in integers, and where n / d lies exactly halfway (d > 0)."""
    twice = 2 * numerator + denominator
    return twice // (2 * denominator), twice % (2 * denominator) == 0


def _metrics(cwc, spaces, correct, incorrect, extra, duration_ms, right_keys, wrong_keys):
    """wpm, raw_wpm, accuracy (2 decimals) and xp, equal to game_core.metrics row by row.

    metrics.round2 rounds half up the float value of the formula. The float is within
    about 1e-15 relative of the exact rational value, whose distance from a rounding
    boundary is at least 1 / (2 * denominator) unless it lies exactly on it; so away from
    exact ties integer rounding gives the same result, and exact ties go through
    game_core.metrics itself.
    """
    wpm100, wpm_tie = _round_half_up(1_200_000 * (cwc + spaces), duration_ms)
    raw100, raw_tie = _round_half_up(1_200_000 * (correct + incorrect + extra + spaces), duration_ms)
    keys = right_keys + wrong_keys
    no_keys = keys == 0
    keys_or_one = np.where(no_keys, 1, keys)
    acc100, acc_tie = _round_half_up(10_000 * right_keys, keys_or_one)
    wpm = wpm100 / 100
    raw_wpm = raw100 / 100
    accuracy = acc100 / 100
    xp = np.where(no_keys, 0, (cwc + spaces) * right_keys // keys_or_one)
    for i in zip(*np.nonzero(wpm_tie)):
        wpm[i] = metrics.wpm(int(cwc[i]), int(spaces[i]), int(duration_ms[i]))
    for i in zip(*np.nonzero(raw_tie)):
        raw_wpm[i] = metrics.raw_wpm(
            int(correct[i]), int(incorrect[i]), int(extra[i]), int(spaces[i]), int(duration_ms[i])
        )
    for i in zip(*np.nonzero(acc_tie | no_keys)):
        accuracy[i] = metrics.accuracy(int(right_keys[i]), int(wrong_keys[i]))
    return wpm, raw_wpm, accuracy, xp


# ---------------------------------------------------------------- writing


def _insert_players(connection: Connection, seed: int, batch: Block) -> list[int]:
    """Insert the batch's players; their ids in batch order (the database assigns them)."""
    rows = [
        {"username": username(seed, n), "created_at": EPOCH + timedelta(microseconds=us)}
        for n, us in zip(batch.numbers.tolist(), batch.player_created_at.tolist())
    ]
    statement = players_table.insert().returning(players_table.c.id, sort_by_parameter_order=True)
    return connection.execute(statement, rows).scalars().all()


def _sqlite_timestamps(us: np.ndarray) -> list[str]:
    """SQLAlchemy's SQLite DATETIME text ('2025-01-31 23:59:59.123456', UTC, naive)."""
    text = np.datetime_as_string(us.astype("datetime64[us]"), unit="us")
    text.view(np.uint32).reshape(len(us), -1)[:, 10] = ord(" ")
    return text.tolist()


def _postgresql_timestamps(us: np.ndarray) -> list[str]:
    """ISO 8601 with an explicit UTC zone ('2025-01-31T23:59:59.123456Z')."""
    return np.datetime_as_string(us.astype("datetime64[us]"), unit="us", timezone="UTC").tolist()


def result_rows(player_ids: list[int], batch: Block, timestamps: Callable[[np.ndarray], list[str]]) -> Iterator[tuple]:
    """The batch's results as tuples in RESULT_COLUMNS order (built lazily, row by row)."""
    results = batch.results
    tests = results["mode"].shape[1]
    columns = []
    for name in _RESULT_FIELDS:
        array = results[name].ravel()
        if name == "mode":
            columns.append(_MODE_NAME[array].tolist())
            columns.append(_MODE_PARAM[array].tolist())
        elif name in ("started_at", "created_at"):
            columns.append(timestamps(array))
        else:
            columns.append(array.tolist())
    player_column = np.repeat(np.asarray(player_ids, dtype=np.int64), tests).tolist()
    # RESULT_COLUMNS: player_id, mode, mode_param, started_at .. xp, metrics_version, created_at
    return zip(player_column, *columns[:-1], itertools.repeat(metrics.METRICS_VERSION), columns[-1])


def sqlite_result_rows(
    seed: int, players: int, tests_per_player: int, *, now: datetime | None = None
) -> Iterator[tuple]:
    """The result tuples `simulate` writes into an empty SQLite database (players get ids
    1..players there), in RESULT_COLUMNS order: the rows of the benchmark's anchor."""
    anchor_us = _anchor_us(now)
    next_id = 1
    for block in generate_blocks(seed, 1, players, tests_per_player, anchor_us):
        ids = list(range(next_id, next_id + len(block)))
        next_id += len(block)
        yield from result_rows(ids, block, _sqlite_timestamps)


_INSERT_SQL = f"INSERT INTO results ({', '.join(RESULT_COLUMNS)}) VALUES ({', '.join('?' * len(RESULT_COLUMNS))})"
_COPY_SQL = f"COPY results ({', '.join(RESULT_COLUMNS)}) FROM STDIN"


def _write_sqlite(connection: Connection, player_ids: list[int], batch: Block, batch_size: int) -> None:
    driver = connection.connection.driver_connection
    cursor = driver.cursor()
    try:
        rows = result_rows(player_ids, batch, _sqlite_timestamps)
        # The rows are built lazily as executemany pulls them. A batch is whole players,
        # so only a player with more tests than batch_size makes it bigger: then it goes
        # in slices of batch_size.
        for _ in range(0, batch.results["mode"].size, batch_size):
            cursor.executemany(_INSERT_SQL, itertools.islice(rows, batch_size))
    finally:
        cursor.close()


def _write_postgresql(connection: Connection, player_ids: list[int], batch: Block, batch_size: int) -> None:
    driver = connection.connection.driver_connection
    with driver.cursor() as cursor, cursor.copy(_COPY_SQL) as copy:
        for row in result_rows(player_ids, batch, _postgresql_timestamps):
            copy.write_row(row)


def _writer_for(engine: Engine):
    if engine.dialect.name == "sqlite":
        return _write_sqlite
    if engine.dialect.name == "postgresql":
        return _write_postgresql
    raise InvalidInput(f"simulate supports SQLite and PostgreSQL, not {engine.dialect.name}")
