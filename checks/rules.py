"""The catalogue: every rule the audits run, in report order.

Ranges come from `game_core.metrics` (DESIGN.md section 3), the same constants the store
validates with at write time. Row predicates only read their own table's columns, in
SQLAlchemy Core expressions that mean the same on SQLite and PostgreSQL; each must be
TRUE for a good row and is never TRUE when a column it reads is NULL.
"""

from __future__ import annotations

import sqlalchemy as sa

from checks.model import ERROR, WARN, AuditContext, QueryRule, Rule, RowRule
from game_core import metrics
from game_core.errors import InvalidInput
from game_core.schema import MODES, UTC_DATETIME, personal_bests, players, progress, results

COUNT_COLUMNS = (
    "correct_word_chars",
    "correct_spaces",
    "correct_chars",
    "incorrect_chars",
    "extra_chars",
    "missed_chars",
    "correct_keystrokes",
    "incorrect_keystrokes",
)


def _present(*columns) -> sa.ColumnElement[bool]:
    """All columns are non-NULL: for predicates an OR would otherwise make TRUE."""
    return sa.and_(*(column.is_not(None) for column in columns))


def _now(context: AuditContext) -> sa.BindParameter:
    # A bound parameter of the column's own type: on SQLite it is rendered as the same
    # naive UTC 'YYYY-MM-DD HH:MM:SS.ffffff' text the column holds, so text comparison
    # orders correctly; on PostgreSQL it is a timestamptz.
    return sa.bindparam("audit_now", context.now, type_=UTC_DATETIME)


# ---------------------------------------------------------------- results, row rules


def _accuracy_range(t, _context):
    return sa.and_(t.accuracy >= 0, t.accuracy <= 100)


def _wpm_non_negative(t, _context):
    return t.wpm >= 0


def _raw_wpm_non_negative(t, _context):
    return t.raw_wpm >= 0


def _raw_wpm_not_below_wpm(t, _context):
    # Both are rounded to 2 decimals; rounding keeps raw_wpm >= wpm, the tolerance only
    # absorbs float noise on engines that store them as REAL.
    return t.raw_wpm >= t.wpm - metrics.STORED_VALUE_TOLERANCE


def _duration_min(t, _context):
    return t.duration_ms >= metrics.MIN_DURATION_MS


def _mode_allowed(t, _context):
    return t.mode.in_(MODES)


def _mode_param_positive(t, _context):
    return t.mode_param > 0


def _wpm_impossible(t, _context):
    return sa.and_(
        _present(t.wpm, t.duration_ms),
        sa.or_(t.wpm <= metrics.IMPOSSIBLE_WPM, t.duration_ms < metrics.IMPOSSIBLE_WPM_MIN_DURATION_MS),
    )


def _wpm_suspicious(t, _context):
    return t.wpm <= metrics.SUSPICIOUS_WPM


def _counts_non_negative(t, _context):
    return sa.and_(*(t[name] >= 0 for name in COUNT_COLUMNS))


def _started_not_in_future(t, context):
    return t.started_at <= _now(context)


# ---------------------------------------------------------------- progress, row rules


def _xp_non_negative(t, _context):
    return t.xp >= 0


def _tests_completed_min(t, _context):
    return t.tests_completed >= 1


def _level_min(t, _context):
    return t.level >= 1


def _level_matches_xp(t, _context):
    # level_matches_xp_sql computes in NUMERIC: a corrupt level or xp would overflow
    # PostgreSQL's integers and abort the whole audit (test_huge_levels_and_xp_...).
    return metrics.level_matches_xp_sql(t.level, t.xp)


# ---------------------------------------------------------------- cross-table rules


def _missing(parent_key, child_key) -> sa.ColumnElement[bool]:
    """No parent row has this key (a NULL key has none either)."""
    return ~sa.exists().where(parent_key == child_key)


def _results_without_player(_context):
    return sa.select(results).where(_missing(players.c.id, results.c.player_id))


def _progress_without_player(_context):
    return sa.select(progress).where(_missing(players.c.id, progress.c.player_id))


def _personal_bests_without_player(_context):
    return sa.select(personal_bests).where(_missing(players.c.id, personal_bests.c.player_id))


def _personal_bests_without_result(_context):
    return sa.select(personal_bests).where(_missing(results.c.id, personal_bests.c.result_id))


def _progress_xp_differs(_context):
    # One grouped pass over results joined to progress, rather than a correlated sum
    # per player; the expected value is listed next to the stored one.
    sums = (
        sa.select(results.c.player_id, sa.func.sum(results.c.xp).label("xp"))
        .group_by(results.c.player_id)
        .subquery("player_results")
    )
    expected = sa.func.coalesce(sums.c.xp, 0)
    return (
        sa.select(progress, expected.label("results_xp"))
        .select_from(progress.outerjoin(sums, sums.c.player_id == progress.c.player_id))
        .where((progress.c.xp == expected).is_not(True))
    )


# ---------------------------------------------------------------- the catalogue

RESULT_FIX = "find the writer (created_at, metrics_version) and correct or remove the rows; see `integrity diff`"
CACHE_FIX = "rebuild the caches from results: `integrity repair progress --dry-run`, then `integrity repair progress`"

RULES: tuple[Rule, ...] = (
    RowRule(
        "results.accuracy_range", "results", ERROR,
        "accuracy is outside 0..100 or missing",
        RESULT_FIX,
        predicate=_accuracy_range,
    ),
    RowRule(
        "results.wpm_non_negative", "results", ERROR,
        "wpm is negative or missing",
        RESULT_FIX,
        predicate=_wpm_non_negative,
    ),
    RowRule(
        "results.raw_wpm_non_negative", "results", ERROR,
        "raw_wpm is negative or missing",
        RESULT_FIX,
        predicate=_raw_wpm_non_negative,
    ),
    RowRule(
        "results.raw_wpm_not_below_wpm", "results", ERROR,
        f"raw_wpm is below wpm by more than {metrics.STORED_VALUE_TOLERANCE} (raw counts every typed character)",
        "check whether wpm and raw_wpm were swapped or rescaled by one writer; " + RESULT_FIX,
        predicate=_raw_wpm_not_below_wpm,
    ),
    RowRule(
        "results.duration_min", "results", ERROR,
        f"duration_ms is under {metrics.MIN_DURATION_MS} ms or missing (a unit error gives seconds)",
        "look for a writer storing seconds instead of milliseconds; " + RESULT_FIX,
        predicate=_duration_min,
    ),
    RowRule(
        "results.mode_allowed", "results", ERROR,
        f"mode is not one of {', '.join(MODES)}",
        RESULT_FIX,
        predicate=_mode_allowed,
    ),
    RowRule(
        "results.mode_param_positive", "results", ERROR,
        "mode_param (word count or seconds) is not positive",
        RESULT_FIX,
        predicate=_mode_param_positive,
    ),
    RowRule(
        "results.wpm_impossible", "results", ERROR,
        f"wpm over {metrics.IMPOSSIBLE_WPM} on a test of {metrics.IMPOSSIBLE_WPM_MIN_DURATION_MS // 1000} s "
        "or more: impossible for a human (a rescaled or forged result)",
        "check for a unit or formula change in the writer; remove forged results, then rebuild progress",
        predicate=_wpm_impossible,
    ),
    RowRule(
        "results.wpm_suspicious", "results", WARN,
        f"wpm over {metrics.SUSPICIOUS_WPM}: possible but rare; a sudden rise means a scoring bug or cheating",
        "no action for a few rows; if the count jumps, treat it as results.wpm_impossible",
        predicate=_wpm_suspicious,
    ),
    RowRule(
        "results.counts_non_negative", "results", ERROR,
        "a character or keystroke count is negative or missing",
        RESULT_FIX,
        predicate=_counts_non_negative,
    ),
    RowRule(
        "results.started_not_in_future", "results", ERROR,
        "started_at is later than the audit time or missing (a clock or time-zone error)",
        "check the writer's clock and time zone (timestamps are stored in UTC); " + RESULT_FIX,
        predicate=_started_not_in_future,
    ),
    QueryRule(
        "results.player_exists", "results", ERROR,
        "the result's player does not exist (orphan; foreign keys were off or bypassed)",
        "find how foreign keys were bypassed (a restore, a script, SQLite without foreign_keys=ON); "
        "restore the player from the newest clean backup or remove the results",
        failing_rows=_results_without_player,
    ),
    RowRule(
        "progress.xp_non_negative", "progress", ERROR,
        "progress xp is negative or missing",
        CACHE_FIX,
        predicate=_xp_non_negative,
    ),
    RowRule(
        "progress.tests_completed_min", "progress", ERROR,
        "tests_completed is below 1: a progress row exists only for a player with results",
        CACHE_FIX,
        predicate=_tests_completed_min,
    ),
    RowRule(
        "progress.level_min", "progress", ERROR,
        "level is below 1 or missing",
        CACHE_FIX,
        predicate=_level_min,
    ),
    RowRule(
        "progress.level_matches_xp", "progress", ERROR,
        "level is not the level of the stored xp (integer check of Monkeytype's curve)",
        CACHE_FIX,
        predicate=_level_matches_xp,
    ),
    QueryRule(
        "progress.player_exists", "progress", ERROR,
        "the progress row's player does not exist (orphan)",
        "find how foreign keys were bypassed; remove the orphaned rows or restore the player from a clean backup",
        failing_rows=_progress_without_player,
    ),
    QueryRule(
        "progress.xp_matches_results", "progress", ERROR,
        "progress xp differs from the sum of the player's results' xp",
        CACHE_FIX,
        failing_rows=_progress_xp_differs,
    ),
    QueryRule(
        "personal_bests.player_exists", "personal_bests", ERROR,
        "the personal best's player does not exist (orphan)",
        "find how foreign keys were bypassed; " + CACHE_FIX,
        failing_rows=_personal_bests_without_player,
    ),
    QueryRule(
        "personal_bests.result_exists", "personal_bests", ERROR,
        "the personal best points at a result that does not exist",
        "find how foreign keys were bypassed; " + CACHE_FIX,
        failing_rows=_personal_bests_without_result,
    ),
)


def _index(rules: tuple[Rule, ...]) -> dict[str, Rule]:
    by_id: dict[str, Rule] = {}
    for rule in rules:
        if rule.id in by_id:
            raise ValueError(f"duplicate rule id {rule.id!r} in the catalogue")
        by_id[rule.id] = rule
    return by_id


RULES_BY_ID: dict[str, Rule] = _index(RULES)


class UnknownRule(InvalidInput):
    """A rule id that is not in the catalogue."""


def select_rules(selection=None) -> tuple[Rule, ...]:
    """The rules to run: the whole catalogue, or the given rules and ids, in that order.

    Ids are looked up in the catalogue; rule objects are taken as they are (a caller may
    run rules of its own). Repeats run once.
    """
    if selection is None:
        return RULES
    if isinstance(selection, (str, Rule)):
        selection = (selection,)
    chosen: dict[str, Rule] = {}
    for item in selection:
        if isinstance(item, str):
            if item not in RULES_BY_ID:
                raise UnknownRule(f"unknown audit rule {item!r}; known rules: {', '.join(RULES_BY_ID)}")
            item = RULES_BY_ID[item]
        elif not isinstance(item, Rule):
            raise TypeError(f"expected a rule or a rule id, got {item!r}")
        chosen.setdefault(item.id, item)
    return tuple(chosen.values())
