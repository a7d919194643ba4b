"""What the retrieval probe checks in one player's reads: pure functions, no database.

Each read the game does for a player (`game_core.store.Store`: the profile, progress,
personal bests, recent history and the leaderboards of the player's modes) is checked
in two steps. First its types, field by field, because a value of the wrong type is what
the incident's migration produced (a level stored as text) and what makes the game's
screens fail; then, for reads whose types are right, its rows and values against the
player's `results`, the source of truth. Each problem is a `Problem(kind, read, detail)`:

- `exception`: the read raised (a driver error, a value the store could not parse);
- `timeout`: the player's reads took longer than the timeout, or the server cancelled one;
- `wrong-type`: a value is not of the type the game shows (text for a number, NULL);
- `missing-row`: a row the results call for is not there (progress, a recent result, a
  personal best, the player's place on a leaderboard);
- `mismatch`: a value differs from the one recomputed from the results (a total, the
  level of the xp, a best, a stored wpm against the counts it was computed from), or a
  canary's differs from what the probe wrote.

Details name player ids, never usernames, and show values the way the game's screens do
(`typing-game stats`, `typing-game leaderboard`): times as `2026-12-07 03:56:48 UTC`,
wpm and accuracy with 2 decimals, integers as they are, text in quotes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any

# The failure kinds, in report order; the metric `integrity_probe_failed_players` has one
# series per kind, 0 included.
KINDS: dict[str, str] = {
    "exception": "a read raised an error",
    "timeout": "the player's reads took longer than the timeout, or the server cancelled one",
    "wrong-type": "a value of the wrong type (text for a number, a missing value): the game cannot show it",
    "missing-row": "a row the results call for is missing (progress, a recent result, a best, a leaderboard place)",
    "mismatch": "a value differs from the one recomputed from the results (or a canary's from what was written)",
}
# The reads a problem can be found in: what the game reads, the results the probe
# recomputes from, and the canaries' known content.
READS = ("profile", "progress", "bests", "history", "leaderboard", "results", "canary")
# Kinds that a concurrent game write can cause for a moment: read again once before counting.
TRANSIENT = frozenset({"missing-row", "mismatch"})
# Stored wpm and accuracy have 2 decimals; a value recomputed and rounded agrees within this.
# Half the audits' 0.01: a stored value moved by one hundredth (67.01 -> 67) is a mismatch.
TOLERANCE = 0.005
# The game's `typing-game leaderboard` default: the places the probe reads per board.
LEADERBOARD_LIMIT = 10


@dataclass(frozen=True)
class Problem:
    kind: str
    read: str
    detail: str


# ---------------------------------------------------------------- values as the game shows them


def when(value: datetime) -> str:
    """A time as the stats screen shows it (UTC)."""
    utc = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def two(value: float) -> str:
    """wpm, raw wpm, accuracy: 2 decimals, as on every game screen."""
    return f"{value:.2f}"


def what(value: Any) -> str:
    """Any value read, described for a wrong-type detail."""
    if value is None:
        return "empty (NULL)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f'text "{value[:40]}{"..." if len(value) > 40 else ""}"'
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {two(value)}" if math.isfinite(value) else f"the number {value}"
    if isinstance(value, datetime):
        return f"the time {when(value)}"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"{len(bytes(value))} bytes"
    return f"a {type(value).__name__}"


# ---------------------------------------------------------------- types


INTEGER, NUMBER, TEXT, TIME, MODE = "an integer", "a number", "text", "a timezone-aware time", "a mode"


def _is(value: Any, expected: str) -> bool:
    if expected == INTEGER:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if expected == TEXT:
        return isinstance(value, str)
    if expected == TIME:
        return isinstance(value, datetime) and value.tzinfo is not None
    from game_core.schema import MODES

    return isinstance(value, str) and value in MODES


# The fields of each store dataclass and the type the game needs of them.
SHAPES: dict[str, dict[str, str]] = {
    "Player": {"id": INTEGER, "username": TEXT, "created_at": TIME},
    "Progress": {"player_id": INTEGER, "xp": INTEGER, "level": INTEGER, "tests_completed": INTEGER,
                 "time_typing_ms": INTEGER, "best_wpm": NUMBER, "updated_at": TIME},
    "PersonalBest": {"mode": MODE, "mode_param": INTEGER, "result_id": INTEGER, "wpm": NUMBER, "accuracy": NUMBER},
    "HistoryEntry": {"id": INTEGER, "mode": MODE, "mode_param": INTEGER, "started_at": TIME, "duration_ms": INTEGER,
                     "wpm": NUMBER, "raw_wpm": NUMBER, "accuracy": NUMBER, "xp": INTEGER},
    "LeaderboardEntry": {"rank": INTEGER, "username": TEXT, "wpm": NUMBER, "accuracy": NUMBER, "started_at": TIME},
}


def type_problem(read: str, rows: list[tuple[str, Any]]) -> Problem | None:
    """One `wrong-type` problem for a read's rows ((label, store dataclass) pairs, the
    label saying which row: " of result 146"), naming the first wrong value and how many
    there are; None when every value is well typed."""
    wrong: list[str] = []
    for label, row in rows:
        shape = SHAPES[type(row).__name__]
        for field in fields(row):
            expected = shape[field.name]
            value = getattr(row, field.name)
            if not _is(value, expected):
                wrong.append(f"{read} {field.name}{label} is {what(value)}, not {expected}")
    if not wrong:
        return None
    more = f" (and {len(wrong) - 1} more wrong values)" if len(wrong) > 1 else ""
    return Problem("wrong-type", read, wrong[0] + more)


# ---------------------------------------------------------------- values against the results


def check_profile(player, player_id: int, username: str) -> list[Problem]:
    if player.id != player_id or player.username != username:
        return [Problem("mismatch", "profile", f"the profile read is player {player.id}, not player {player_id}")]
    return []


def check_progress(progress, want) -> list[Problem]:
    """`want`: the game_core.store.Progress recomputed from the results, or None without results."""
    from game_core import metrics

    if want is None:
        return [] if progress is None else [Problem("mismatch", "progress", "a progress row for a player without results")]
    if progress is None:
        return [Problem("missing-row", "progress", f"no progress row; the player has {want.tests_completed} results")]
    found = []
    if progress.level != want.level or not metrics.level_matches_xp(progress.level, progress.xp):
        found.append(Problem("mismatch", "progress",
                             f"level {progress.level} with xp {progress.xp}; the results give level {want.level}, xp {want.xp}"))
    differ = [f"{label} {shown(getattr(progress, name))}, the results give {shown(getattr(want, name))}"
              for name, label, shown in (("xp", "xp", str), ("tests_completed", "tests", str),
                                         ("time_typing_ms", "time typing", _seconds))
              if getattr(progress, name) != getattr(want, name)]
    if abs(progress.best_wpm - want.best_wpm) > TOLERANCE:
        differ.append(f"best wpm {two(progress.best_wpm)}, the results give {two(want.best_wpm)}")
    if differ:
        found.append(Problem("mismatch", "progress", "; ".join(differ)))
    return found


def _seconds(ms: int) -> str:
    return f"{ms / 1000:.1f} s"


def check_bests(bests, want: dict[tuple[str, int], Any]) -> list[Problem]:
    """`want`: (mode, mode_param) -> the PersonalBest recomputed from the results."""
    got = {(b.mode, b.mode_param): b for b in bests}
    found = []
    missing = sorted(want.keys() - got.keys())
    if missing:
        found.append(Problem("missing-row", "bests", "no personal best for " + ", ".join(f"{m} {p}" for m, p in missing)
                             + " (the player has results of it)"))
    problems = [f"{m} {p} without a result of that mode" for m, p in sorted(got.keys() - want.keys())]
    for key in sorted(got.keys() & want.keys()):
        have, best = got[key], want[key]
        if have.result_id != best.result_id or abs(have.wpm - best.wpm) > TOLERANCE:
            problems.append(f"{key[0]} {key[1]} is result {have.result_id} at {two(have.wpm)} wpm; the best is "
                            f"result {best.result_id} at {two(best.wpm)}")
        elif abs(have.accuracy - best.accuracy) > TOLERANCE:
            problems.append(f"{key[0]} {key[1]} accuracy {two(have.accuracy)}%; result {best.result_id} has "
                            f"{two(best.accuracy)}%")
    if problems:
        found.append(Problem("mismatch", "bests", "; ".join(problems)))
    return found


def check_history(history, tests_completed: int, counts: dict[int, Any], player_id: int, *, limit: int) -> list[Problem]:
    """The recent results against the results table: as many rows as it holds (up to
    `limit`), newest first, each the player's, and each stored wpm, raw wpm, accuracy and
    xp the value its counts give (`counts`: result id -> its results row)."""
    found = []
    rows = min(tests_completed, limit)
    order = [(e.started_at, e.id) for e in history]
    if len(history) < rows:
        found.append(Problem("missing-row", "history", f"{len(history)} recent results read; the player has {rows}"))
    elif len(history) > rows:
        found.append(Problem("mismatch", "history", f"{len(history)} recent results read; the player has {rows}"))
    elif order != sorted(order, reverse=True) or len(set(order)) != len(order):
        found.append(Problem("mismatch", "history", "the recent results are not newest first"))
    differ = []
    for entry in history:
        row = counts.get(entry.id)
        label = f"result {entry.id} ({entry.mode} {entry.mode_param}, {when(entry.started_at)})"
        if row is None or row.player_id != player_id:
            differ.append(f"{label} is not one of the player's results")
            continue
        bad = [name for name in COUNT_COLUMNS if not _is(getattr(row, name), INTEGER)]
        if bad:
            found.append(Problem("wrong-type", "results", f"{label}: {bad[0]} is {what(getattr(row, bad[0]))}, not an integer"))
            continue
        if row.duration_ms < 1:
            differ.append(f"{label}: a duration of {row.duration_ms} ms gives no wpm")
            continue
        differ += [f"{label}: {name} {shown(stored)}, its counts give {shown(recomputed)}"
                   for name, stored, recomputed, shown in _recomputed(entry, row)
                   if (abs(stored - recomputed) > TOLERANCE if shown is two else stored != recomputed)]
    if differ:
        more = f" (and {len(differ) - 1} more)" if len(differ) > 1 else ""
        found.append(Problem("mismatch", "history", differ[0] + more))
    return found


# The columns of `results` a stored wpm, raw wpm, accuracy and xp are computed from.
COUNT_COLUMNS = ("duration_ms", "correct_word_chars", "correct_spaces", "correct_chars", "incorrect_chars",
                 "extra_chars", "correct_keystrokes", "incorrect_keystrokes")


def _recomputed(entry, row) -> list[tuple[str, Any, Any, Any]]:
    """(name, stored, recomputed from the counts, formatter) of a history entry."""
    from game_core import metrics

    duration = row.duration_ms
    return [
        ("wpm", entry.wpm, metrics.wpm(row.correct_word_chars, row.correct_spaces, duration), two),
        ("raw wpm", entry.raw_wpm, metrics.raw_wpm(row.correct_chars, row.incorrect_chars, row.extra_chars,
                                                  row.correct_spaces, duration), two),
        ("accuracy", entry.accuracy, metrics.accuracy(row.correct_keystrokes, row.incorrect_keystrokes), two),
        ("xp", entry.xp, metrics.result_xp(row.correct_word_chars, row.correct_spaces, row.correct_keystrokes,
                                           row.incorrect_keystrokes), str),
    ]


def check_leaderboard(board: str, entries, username: str, best, *, limit: int) -> list[Problem]:
    """The player's place on one board (`best`: their best of the mode recomputed from the
    results, or None when they have no result of it): on it with that best, or off it only
    when the board is full of faster players; and the board itself in order."""
    found = []
    wpms = [e.wpm for e in entries]
    if wpms != sorted(wpms, reverse=True) or [e.rank for e in entries] != list(range(1, len(entries) + 1)):
        found.append(Problem("mismatch", "leaderboard", f"{board}: the places are not in order of wpm"))
    mine = [e for e in entries if e.username == username]
    if best is None:
        if mine:
            found.append(Problem("mismatch", "leaderboard", f"{board}: in place {mine[0].rank} without a result of that mode"))
        return found
    if mine:
        entry = mine[0]
        if len(mine) > 1 or abs(entry.wpm - best.wpm) > TOLERANCE or abs(entry.accuracy - best.accuracy) > TOLERANCE:
            found.append(Problem("mismatch", "leaderboard", f"{board}: place {entry.rank} at {two(entry.wpm)} wpm, "
                                 f"{two(entry.accuracy)}%; the best result is {two(best.wpm)} wpm, {two(best.accuracy)}%"))
        return found
    # Off the board: right only when it is full and its last place is at least as fast
    # (an equal wpm typed earlier ranks first).
    if len(entries) < limit or best.wpm > entries[-1].wpm + TOLERANCE:
        place = 1 + sum(1 for e in entries if e.wpm > best.wpm + TOLERANCE)
        found.append(Problem("missing-row", "leaderboard",
                             f"{board}: not on the board; the best result, {two(best.wpm)} wpm, places {place}"))
    return found
