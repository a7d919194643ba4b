"""The data contracts: Pandera models of the four game tables, the catalogue's source of truth.

Each model declares the column types the audits read (pinned pandas 3 dtypes:
`Int64`, `float64`, `string`, `datetime64[us, UTC]`), nullability as the database
declares it, ranges from `game_core.metrics` (DESIGN.md section 3, the same constants the
store validates with), allowed values, and the row invariants as registered checks
(`checks.pandera_checks`). `Config.metadata` turns checks into rules: each rule has a
stable id, a severity, a one-line meaning, the on-call action, and the checks it is made
of, named `(column, check)` (`column` None for a row-level check).

A row fails a rule when any check of the rule is not TRUE for it, or any column the rule
reads is NULL: both engines count exactly that.

The SQL engine never imports this module (it costs pandas and pandera); it reads
`checks/catalogue_spec.py`, which `python -m checks.export` generates from these models.
A test regenerates it and fails when the two differ.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from checks import pandera_checks
from checks.model import ERROR, WARN
from game_core import metrics
from game_core.schema import MODES
from game_core.store import COUNT_FIELDS, USERNAME_PATTERN

TOLERANCE = metrics.STORED_VALUE_TOLERANCE
USERNAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
assert USERNAME_PATTERN.pattern == r"[A-Za-z0-9_.-]{1,32}", "update USERNAME_CHARS with the store's pattern"
COUNT_COLUMNS = COUNT_FIELDS  # the eight counts of a result, as the store validates them
UTC_US = {"unit": "us", "tz": "UTC"}

RESULT_FIX = "find the writer (created_at, metrics_version) and correct or remove the rows; see `integrity diff`"
CACHE_FIX = "rebuild the caches from results: `integrity repair progress --dry-run`, then `integrity repair progress`"
CLOCK_FIX = "check the writer's clock and time zone (timestamps are stored in UTC)"
GE = "greater_than_or_equal_to"
LE = "less_than_or_equal_to"


def rule(rule_id: str, severity: str, meaning: str, action: str, checks: list[tuple[str | None, str]]) -> dict:
    """A rule of the catalogue: the checks (column, check name) it is made of."""
    return {"id": rule_id, "severity": severity, "meaning": meaning, "action": action, "checks": checks}


class Players(pa.DataFrameModel):
    id: Series[pd.Int64Dtype] = pa.Field(nullable=False)
    username: Series[pd.StringDtype] = pa.Field(
        nullable=False, str_length={"min_value": 1, "max_value": 32}, chars_within={"allowed": USERNAME_CHARS}
    )
    created_at: Series[pd.DatetimeTZDtype] = pa.Field(nullable=False, dtype_kwargs=UTC_US, not_after_audit_time=())

    class Config:
        name = "players"
        strict = False
        metadata = {
            "key": ["id"],
            "rules": [
                rule(
                    "players.username_valid", WARN,
                    "username is empty, longer than 32 or has characters other than letters, digits, '_', '.', '-'",
                    "find the writer that bypassed the store's validation; rename the player only with their consent",
                    [("username", "str_length"), ("username", "chars_within")],
                ),
                rule(
                    "players.created_not_in_future", ERROR,
                    "created_at is later than the audit time or missing (a clock or time-zone error)",
                    CLOCK_FIX + "; correct the rows from the newest clean backup",
                    [("created_at", "not_after_audit_time")],
                ),
            ],
        }


class Results(pa.DataFrameModel):
    id: Series[pd.Int64Dtype] = pa.Field(nullable=False)
    mode: Series[pd.StringDtype] = pa.Field(nullable=False, isin=list(MODES))
    mode_param: Series[pd.Int64Dtype] = pa.Field(nullable=False, gt=0)
    started_at: Series[pd.DatetimeTZDtype] = pa.Field(nullable=False, dtype_kwargs=UTC_US, not_after_audit_time=())
    duration_ms: Series[pd.Int64Dtype] = pa.Field(nullable=False, ge=metrics.MIN_DURATION_MS)
    correct_word_chars: Series[pd.Int64Dtype] = pa.Field(nullable=False, ge=0)
    correct_spaces: Series[pd.Int64Dtype] = pa.Field(nullable=False, ge=0)
    correct_chars: Series[pd.Int64Dtype] = pa.Field(nullable=False, ge=0)
    incorrect_chars: Series[pd.Int64Dtype] = pa.Field(nullable=False, ge=0)
    extra_chars: Series[pd.Int64Dtype] = pa.Field(nullable=False, ge=0)
    missed_chars: Series[pd.Int64Dtype] = pa.Field(nullable=False, ge=0)
    correct_keystrokes: Series[pd.Int64Dtype] = pa.Field(nullable=False, ge=0)
    incorrect_keystrokes: Series[pd.Int64Dtype] = pa.Field(nullable=False, ge=0)
    wpm: Series[float] = pa.Field(nullable=False, ge=0, le=metrics.SUSPICIOUS_WPM)
    raw_wpm: Series[float] = pa.Field(nullable=False, ge=0)
    accuracy: Series[float] = pa.Field(nullable=False, ge=0, le=100)
    xp: Series[pd.Int64Dtype] = pa.Field(nullable=False)
    metrics_version: Series[pd.Int64Dtype] = pa.Field(
        nullable=False, isin=list(range(1, metrics.METRICS_VERSION + 1))
    )
    created_at: Series[pd.DatetimeTZDtype] = pa.Field(nullable=False, dtype_kwargs=UTC_US, not_after_audit_time=())

    class Config:
        name = "results"
        strict = False
        # Row invariants, registered checks (checks.pandera_checks) with their statistics.
        wpm_matches_counts = {
            "stored": "wpm",
            "chars": ["correct_word_chars", "correct_spaces"],
            "duration": "duration_ms",
            "tolerance": TOLERANCE,
        }
        raw_wpm_matches_counts = {
            "stored": "raw_wpm",
            "chars": ["correct_chars", "incorrect_chars", "extra_chars", "correct_spaces"],
            "duration": "duration_ms",
            "tolerance": TOLERANCE,
        }
        column_not_below = {"column": "raw_wpm", "floor": "wpm"}
        at_most_unless_short = {
            "column": "wpm",
            "max_value": metrics.IMPOSSIBLE_WPM,
            "duration": "duration_ms",
            "min_duration": metrics.IMPOSSIBLE_WPM_MIN_DURATION_MS,
        }
        accuracy_matches_keystrokes = {
            "stored": "accuracy",
            "correct": "correct_keystrokes",
            "incorrect": "incorrect_keystrokes",
            "tolerance": TOLERANCE,
        }
        xp_matches_counts = {
            "stored": "xp",
            "chars": ["correct_word_chars", "correct_spaces"],
            "correct": "correct_keystrokes",
            "incorrect": "incorrect_keystrokes",
        }
        metadata = {
            "key": ["id"],
            "rules": [
                rule(
                    "results.accuracy_range", ERROR, "accuracy is outside 0..100 or missing", RESULT_FIX,
                    [("accuracy", GE), ("accuracy", LE)],
                ),
                rule("results.wpm_non_negative", ERROR, "wpm is negative or missing", RESULT_FIX, [("wpm", GE)]),
                rule(
                    "results.raw_wpm_non_negative", ERROR, "raw_wpm is negative or missing", RESULT_FIX,
                    [("raw_wpm", GE)],
                ),
                rule(
                    "results.duration_min", ERROR,
                    f"duration_ms is under {metrics.MIN_DURATION_MS} ms or missing (a unit error gives seconds)",
                    "look for a writer storing seconds instead of milliseconds; " + RESULT_FIX,
                    [("duration_ms", GE)],
                ),
                rule(
                    "results.mode_allowed", ERROR, f"mode is not one of {', '.join(MODES)}", RESULT_FIX,
                    [("mode", "isin")],
                ),
                rule(
                    "results.mode_param_positive", ERROR, "mode_param (word count or seconds) is not positive",
                    RESULT_FIX, [("mode_param", "greater_than")],
                ),
                rule(
                    "results.counts_non_negative", ERROR, "a character or keystroke count is negative or missing",
                    RESULT_FIX, [(column, GE) for column in COUNT_COLUMNS],
                ),
                rule(
                    "results.metrics_version_known", ERROR,
                    "metrics_version is missing or not a version this code knows (newest: "
                    f"{metrics.METRICS_VERSION})",
                    "find the writer running other code than this release; its derived values cannot be checked",
                    [("metrics_version", "isin")],
                ),
                rule(
                    "results.started_not_in_future", ERROR,
                    "started_at is later than the audit time or missing (a clock or time-zone error)",
                    CLOCK_FIX + "; " + RESULT_FIX,
                    [("started_at", "not_after_audit_time")],
                ),
                rule(
                    "results.created_not_in_future", ERROR,
                    "created_at is later than the audit time or missing (a clock or time-zone error)",
                    CLOCK_FIX + "; " + RESULT_FIX,
                    [("created_at", "not_after_audit_time")],
                ),
                rule(
                    "results.wpm_suspicious", WARN,
                    f"wpm over {metrics.SUSPICIOUS_WPM}: possible but rare; a sudden rise means a scoring bug or cheating",
                    "no action for a few rows; if the count jumps, treat it as results.wpm_impossible",
                    [("wpm", LE)],
                ),
                rule(
                    "results.wpm_impossible", ERROR,
                    f"wpm over {metrics.IMPOSSIBLE_WPM} on a test of "
                    f"{metrics.IMPOSSIBLE_WPM_MIN_DURATION_MS // 1000} s or more: impossible for a human "
                    "(a rescaled or forged result)",
                    "check for a unit or formula change in the writer; remove forged results, then rebuild progress",
                    [(None, "at_most_unless_short")],
                ),
                rule(
                    "results.raw_wpm_not_below_wpm", ERROR,
                    "raw_wpm is below wpm (raw counts every typed character, so it never is)",
                    "check whether wpm and raw_wpm were swapped or rescaled by one writer; " + RESULT_FIX,
                    [(None, "column_not_below")],
                ),
                rule(
                    "results.wpm_recomputed", ERROR,
                    f"wpm differs by more than {TOLERANCE} from (correct_word_chars + correct_spaces) / 5 / minutes "
                    "(wrong unit or formula, or a zero duration)",
                    "find the writer or migration that rescaled wpm (chars/min, seconds); recompute wpm from the "
                    "counts, then rebuild progress",
                    [(None, "wpm_matches_counts")],
                ),
                rule(
                    "results.raw_wpm_recomputed", ERROR,
                    f"raw_wpm differs by more than {TOLERANCE} from every typed character / 5 / minutes",
                    "find the writer or migration that rescaled raw_wpm; recompute it from the counts",
                    [(None, "raw_wpm_matches_counts")],
                ),
                rule(
                    "results.accuracy_recomputed", ERROR,
                    f"accuracy differs by more than {TOLERANCE} from correct / all keystrokes * 100",
                    "find the writer that changed the accuracy formula or scale (0..1 instead of 0..100); "
                    "recompute it from the keystrokes",
                    [(None, "accuracy_matches_keystrokes")],
                ),
                rule(
                    "results.xp_recomputed", ERROR,
                    "xp is not metrics.result_xp of the counts (or a count is negative)",
                    "find the writer with another xp formula; recompute xp from the counts, then rebuild progress",
                    [(None, "xp_matches_counts")],
                ),
            ],
        }


class Progress(pa.DataFrameModel):
    player_id: Series[pd.Int64Dtype] = pa.Field(nullable=False)
    xp: Series[pd.Int64Dtype] = pa.Field(nullable=False, ge=0)
    level: Series[pd.Int64Dtype] = pa.Field(nullable=False, ge=1)
    tests_completed: Series[pd.Int64Dtype] = pa.Field(nullable=False, ge=1)
    time_typing_ms: Series[pd.Int64Dtype] = pa.Field(nullable=False, ge=0)
    best_wpm: Series[float] = pa.Field(nullable=False, ge=0)
    updated_at: Series[pd.DatetimeTZDtype] = pa.Field(nullable=False, dtype_kwargs=UTC_US, not_after_audit_time=())

    class Config:
        name = "progress"
        strict = False
        level_matches_xp = {"level": "level", "xp": "xp"}
        metadata = {
            "key": ["player_id"],
            "rules": [
                rule("progress.xp_non_negative", ERROR, "progress xp is negative or missing", CACHE_FIX, [("xp", GE)]),
                rule("progress.level_min", ERROR, "level is below 1 or missing", CACHE_FIX, [("level", GE)]),
                rule(
                    "progress.tests_completed_min", ERROR,
                    "tests_completed is below 1: a progress row exists only for a player with results",
                    CACHE_FIX, [("tests_completed", GE)],
                ),
                rule(
                    "progress.time_typing_non_negative", ERROR, "time_typing_ms is negative or missing", CACHE_FIX,
                    [("time_typing_ms", GE)],
                ),
                rule(
                    "progress.best_wpm_non_negative", ERROR, "best_wpm is negative or missing", CACHE_FIX,
                    [("best_wpm", GE)],
                ),
                rule(
                    "progress.level_matches_xp", ERROR,
                    "level is not the level of the stored xp (integer check of Monkeytype's curve)",
                    CACHE_FIX, [(None, "level_matches_xp")],
                ),
                rule(
                    "progress.updated_not_in_future", WARN,
                    "updated_at is later than the audit time or missing (a writer's clock is ahead)",
                    CLOCK_FIX + "; the next repair rewrites updated_at",
                    [("updated_at", "not_after_audit_time")],
                ),
            ],
        }


class PersonalBests(pa.DataFrameModel):
    player_id: Series[pd.Int64Dtype] = pa.Field(nullable=False)
    mode: Series[pd.StringDtype] = pa.Field(nullable=False, isin=list(MODES))
    mode_param: Series[pd.Int64Dtype] = pa.Field(nullable=False, gt=0)
    result_id: Series[pd.Int64Dtype] = pa.Field(nullable=False)
    wpm: Series[float] = pa.Field(nullable=False, ge=0)
    accuracy: Series[float] = pa.Field(nullable=False, ge=0, le=100)

    class Config:
        name = "personal_bests"
        strict = False
        metadata = {
            "key": ["player_id", "mode", "mode_param"],
            "rules": [
                rule(
                    "personal_bests.mode_allowed", ERROR, f"mode is not one of {', '.join(MODES)}", CACHE_FIX,
                    [("mode", "isin")],
                ),
                rule(
                    "personal_bests.mode_param_positive", ERROR, "mode_param is not positive", CACHE_FIX,
                    [("mode_param", "greater_than")],
                ),
                rule(
                    "personal_bests.wpm_non_negative", ERROR, "the personal best's wpm is negative or missing",
                    CACHE_FIX, [("wpm", GE)],
                ),
                rule(
                    "personal_bests.accuracy_range", ERROR,
                    "the personal best's accuracy is outside 0..100 or missing", CACHE_FIX,
                    [("accuracy", GE), ("accuracy", LE)],
                ),
            ],
        }


# The custom checks the models name are registered by importing this module.
REGISTERED_CHECKS = pandera_checks.__name__

MODELS: tuple[type[pa.DataFrameModel], ...] = (Players, Results, Progress, PersonalBests)
MODELS_BY_TABLE = {model.Config.name: model for model in MODELS}
