"""The cross-table rules: what one row cannot tell. SQL in both engines.

Chunked validation cannot see uniqueness, orphans or per-player aggregates (PITFALLS),
so these are SQL for the SQL engine and the Pandera engine alike. Rules of one `group`
share one source (a join or an aggregate over `results`); the engine counts every group
in one statement, so the aggregate of results per (player, mode, mode_param), a
materialised CTE that the progress and personal-best groups share, is computed once.

An incremental run (`AuditContext.results_after` / `players_after`) judges the rules
that read whole players' results only for the players its new rows touch (new players,
players with new results): a full scan of results cannot fit a 15-minute schedule on
tens of millions of rows. The full sweep (`audit_full`) judges everyone.
"""

from __future__ import annotations

from functools import lru_cache

import sqlalchemy as sa

from checks.model import ERROR, CrossRule
from game_core import metrics
from game_core.schema import personal_bests, players, progress, results

CACHE_FIX = "rebuild the caches from results: `integrity repair progress --dry-run`, then `integrity repair progress`"
FK_FIX = "find how foreign keys were bypassed (a restore, a script, SQLite without foreign_keys=ON)"

RESULT_COUNTS = ("correct_word_chars", "correct_spaces", "correct_keystrokes", "incorrect_keystrokes")


def _reads(*pairs) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((table, tuple(columns)) for table, columns in pairs)


# ---------------------------------------------------------------- results x players


# ---------------------------------------------------------------- what an incremental run judges


def touched_players(context) -> sa.Select | None:
    """The ids of the players an incremental run's new rows touch; None for a full run."""
    parts = []
    if context.results_after is not None:
        parts.append(sa.select(results.c.player_id).where(results.c.id > context.results_after))
    if context.players_after is not None:
        parts.append(sa.select(players.c.id).where(players.c.id > context.players_after))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else sa.union(*parts)


def _of_touched(statement: sa.Select, player_id: sa.ColumnElement, context) -> sa.Select:
    touched = touched_players(context)
    return statement if touched is None else statement.where(player_id.in_(touched))


@lru_cache(maxsize=16)
def result_aggregates(context) -> tuple[sa.CTE, sa.CTE]:
    """(per_mode, per_player): results aggregated per (player, mode, mode_param), then per
    player from that. One pair of CTE objects per context, so that every group of one
    statement refers to the same CTE and the database computes it once (MATERIALIZED)."""
    per_mode = _of_touched(
        sa.select(
            results.c.player_id,
            results.c.mode,
            results.c.mode_param,
            sa.func.count().label("tests"),
            sa.func.sum(results.c.xp).label("xp"),
            sa.func.sum(results.c.duration_ms).label("time_typing_ms"),
            sa.func.max(results.c.wpm).label("best_wpm"),
        ).group_by(results.c.player_id, results.c.mode, results.c.mode_param),
        results.c.player_id,
        context,
    ).cte("per_mode").prefix_with("MATERIALIZED")
    per_player = (
        sa.select(
            per_mode.c.player_id,
            sa.func.sum(per_mode.c.xp).label("xp"),
            sa.func.sum(per_mode.c.tests).label("tests"),
            sa.func.sum(per_mode.c.time_typing_ms).label("time_typing_ms"),
            sa.func.max(per_mode.c.best_wpm).label("best_wpm"),
        )
        .group_by(per_mode.c.player_id)
        .cte("per_player")
    )
    return per_mode, per_player


def _results_players(context) -> sa.Select:
    statement = sa.select(
        results.c.id,
        results.c.player_id,
        results.c.started_at,
        players.c.id.label("found_player_id"),
        players.c.created_at.label("player_created_at"),
    ).select_from(results.outerjoin(players, players.c.id == results.c.player_id))
    if context.results_after is not None:
        statement = statement.where(results.c.id > context.results_after)
    return statement


def _result_keys(context) -> sa.Select:
    same_key = sa.func.count().over(partition_by=(results.c.player_id, results.c.started_at))
    keyed = _of_touched(
        sa.select(results.c.id, results.c.player_id, results.c.started_at, same_key.label("rows_with_key")),
        results.c.player_id,
        context,
    )
    return keyed


def _result_keys_counter(context) -> sa.Select:
    # GROUP BY is cheaper than the window of the listing: rows, and rows sharing a key.
    groups = _of_touched(
        sa.select(sa.func.count().label("rows"))
        .select_from(results)
        .group_by(results.c.player_id, results.c.started_at),
        results.c.player_id,
        context,
    ).subquery("key_groups")
    return sa.select(
        sa.func.coalesce(sa.func.sum(groups.c.rows), 0),
        sa.func.coalesce(sa.func.sum(groups.c.rows).filter(groups.c.rows > 1), 0),
    )


# ---------------------------------------------------------------- progress x results


def _progress_vs_results(context) -> sa.Select:
    _per_mode, totals = result_aggregates(context)
    return _of_touched(
        sa.select(
            progress.c.player_id,
            progress.c.xp,
            progress.c.level,
            progress.c.tests_completed,
            progress.c.time_typing_ms,
            progress.c.best_wpm,
            sa.func.coalesce(totals.c.xp, 0).label("results_xp"),
            sa.func.coalesce(totals.c.tests, 0).label("results_tests"),
            sa.func.coalesce(totals.c.time_typing_ms, 0).label("results_time_typing_ms"),
            totals.c.best_wpm.label("results_best_wpm"),
            players.c.id.label("found_player_id"),
        ).select_from(
            progress.outerjoin(totals, totals.c.player_id == progress.c.player_id).outerjoin(
                players, players.c.id == progress.c.player_id
            )
        ),
        progress.c.player_id,
        context,
    )


def _players_progress(context) -> sa.Select:
    has_results = sa.exists().where(results.c.player_id == players.c.id)
    has_progress = sa.exists().where(progress.c.player_id == players.c.id)
    return _of_touched(
        sa.select(players.c.id, has_results.label("has_results"), has_progress.label("has_progress")),
        players.c.id,
        context,
    )


# ---------------------------------------------------------------- personal bests x results


def _bests_vs_results(context) -> sa.Select:
    best, _per_player = result_aggregates(context)
    pointed = results.alias("pointed")
    return _of_touched(
        sa.select(
            personal_bests.c.player_id,
            personal_bests.c.mode,
            personal_bests.c.mode_param,
            personal_bests.c.result_id,
            personal_bests.c.wpm,
            personal_bests.c.accuracy,
            pointed.c.id.label("found_result_id"),
            pointed.c.player_id.label("result_player_id"),
            pointed.c.mode.label("result_mode"),
            pointed.c.mode_param.label("result_mode_param"),
            pointed.c.wpm.label("result_wpm"),
            pointed.c.accuracy.label("result_accuracy"),
            best.c.best_wpm.label("best_wpm"),
            players.c.id.label("found_player_id"),
        ).select_from(
            personal_bests.outerjoin(pointed, pointed.c.id == personal_bests.c.result_id)
            .outerjoin(
                best,
                sa.and_(
                    best.c.player_id == personal_bests.c.player_id,
                    best.c.mode == personal_bests.c.mode,
                    best.c.mode_param == personal_bests.c.mode_param,
                ),
            )
            .outerjoin(players, players.c.id == personal_bests.c.player_id)
        ),
        personal_bests.c.player_id,
        context,
    )


def _modes_played(context) -> sa.Select:
    modes, _per_player = result_aggregates(context)
    has_best = (
        sa.exists()
        .where(
            personal_bests.c.player_id == modes.c.player_id,
            personal_bests.c.mode == modes.c.mode,
            personal_bests.c.mode_param == modes.c.mode_param,
        )
    )
    return sa.select(
        modes.c.player_id, modes.c.mode, modes.c.mode_param, modes.c.tests.label("results"), has_best.label("has_best")
    )


# ---------------------------------------------------------------- the rules


def _level_of_results(c):
    return metrics.level_matches_xp_sql(c.level, c.results_xp)


def _same_result(c):
    # Only judged when the result exists (personal_bests.result_exists counts the rest).
    return sa.or_(
        c.found_result_id.is_(None),
        sa.and_(
            c.result_player_id == c.player_id,
            c.result_mode == c.mode,
            c.result_mode_param == c.mode_param,
            c.result_wpm == c.wpm,
            c.result_accuracy == c.accuracy,
        ),
    )


PLAYER_EXISTS = ("players", ("id", "created_at"))
RESULT_KEY = ("results", ("id", "player_id", "started_at"))
PROGRESS_ALL = ("progress", ("player_id", "xp", "level", "tests_completed", "time_typing_ms", "best_wpm"))
# What `result_aggregates` reads: every rule over it needs all of these columns.
RESULT_TOTALS = ("results", ("player_id", "mode", "mode_param", "xp", "duration_ms", "wpm"))
BEST_ALL = ("personal_bests", ("player_id", "mode", "mode_param", "result_id", "wpm", "accuracy"))
RESULT_BEST = ("results", ("id", "player_id", "mode", "mode_param", "xp", "duration_ms", "wpm", "accuracy"))

CROSS_RULES: tuple[CrossRule, ...] = (
    CrossRule(
        "players.progress_exists", "players", ERROR,
        "the player has results but no progress row (levels and xp vanish from the game)",
        CACHE_FIX,
        group="players_progress", source=_players_progress, key=("id",), explain=("has_results", "has_progress"),
        predicate=lambda c: sa.or_(c.has_results.is_(False), c.has_progress.is_(True)),
        reads=_reads(("players", ("id",)), ("results", ("player_id",)), ("progress", ("player_id",))),
    ),
    CrossRule(
        "results.player_exists", "results", ERROR,
        "the result's player does not exist (orphan; foreign keys were off or bypassed)",
        FK_FIX + "; restore the player from the newest clean backup or remove the results",
        group="results_players", source=_results_players, key=("id",), explain=("player_id",),
        predicate=lambda c: c.found_player_id.is_not(None),
        reads=_reads(RESULT_KEY, PLAYER_EXISTS),
    ),
    CrossRule(
        "results.not_before_player", "results", ERROR,
        "the result started before its player was created (a clock error or a result moved to another player)",
        "check the writer's clock and any script that re-assigned results; correct from the newest clean backup",
        group="results_players", source=_results_players, key=("id",),
        explain=("player_id", "started_at", "player_created_at"),
        predicate=lambda c: sa.or_(c.found_player_id.is_(None), c.started_at >= c.player_created_at),
        reads=_reads(RESULT_KEY, PLAYER_EXISTS),
    ),
    CrossRule(
        "results.natural_key_unique", "results", ERROR,
        "another result has the same (player_id, started_at): a test saved twice (the unique key is gone)",
        "restore the unique constraint with a reviewed migration; keep the earliest id of each key and "
        "remove the copies, then rebuild progress",
        group="result_keys", source=_result_keys, key=("id",), explain=("player_id", "started_at", "rows_with_key"),
        predicate=lambda c: c.rows_with_key == 1, counter=_result_keys_counter,
        reads=_reads(RESULT_KEY),
    ),
    CrossRule(
        "progress.player_exists", "progress", ERROR,
        "the progress row's player does not exist (orphan)",
        FK_FIX + "; remove the orphaned rows or restore the player from a clean backup",
        group="progress_results", source=_progress_vs_results, key=("player_id",), explain=(),
        predicate=lambda c: c.found_player_id.is_not(None),
        reads=_reads(PROGRESS_ALL, RESULT_TOTALS, ("players", ("id",))),
    ),
    CrossRule(
        "progress.xp_matches_results", "progress", ERROR,
        "progress xp differs from the sum of the player's results' xp",
        CACHE_FIX,
        group="progress_results", source=_progress_vs_results, key=("player_id",), explain=("xp", "results_xp"),
        predicate=lambda c: c.xp == c.results_xp,
        reads=_reads(PROGRESS_ALL, RESULT_TOTALS, ("players", ("id",))),
    ),
    CrossRule(
        "progress.level_matches_results", "progress", ERROR,
        "level is not the level of the player's results' xp (levels reset or rescaled)",
        CACHE_FIX,
        group="progress_results", source=_progress_vs_results, key=("player_id",), explain=("level", "results_xp"),
        predicate=_level_of_results,
        reads=_reads(PROGRESS_ALL, RESULT_TOTALS, ("players", ("id",))),
    ),
    CrossRule(
        "progress.tests_completed_matches_results", "progress", ERROR,
        "tests_completed differs from the number of the player's results (or the player has none)",
        CACHE_FIX,
        group="progress_results", source=_progress_vs_results, key=("player_id",),
        explain=("tests_completed", "results_tests"),
        predicate=lambda c: c.tests_completed == c.results_tests,
        reads=_reads(PROGRESS_ALL, RESULT_TOTALS, ("players", ("id",))),
    ),
    CrossRule(
        "progress.time_typing_matches_results", "progress", ERROR,
        "time_typing_ms differs from the sum of the player's results' durations",
        CACHE_FIX,
        group="progress_results", source=_progress_vs_results, key=("player_id",),
        explain=("time_typing_ms", "results_time_typing_ms"),
        predicate=lambda c: c.time_typing_ms == c.results_time_typing_ms,
        reads=_reads(PROGRESS_ALL, RESULT_TOTALS, ("players", ("id",))),
    ),
    CrossRule(
        "progress.best_wpm_matches_results", "progress", ERROR,
        "best_wpm differs from the highest wpm of the player's results",
        CACHE_FIX,
        group="progress_results", source=_progress_vs_results, key=("player_id",),
        explain=("best_wpm", "results_best_wpm"),
        predicate=lambda c: c.best_wpm == c.results_best_wpm,
        reads=_reads(PROGRESS_ALL, RESULT_TOTALS, ("players", ("id",))),
    ),
    CrossRule(
        "personal_bests.player_exists", "personal_bests", ERROR,
        "the personal best's player does not exist (orphan)",
        FK_FIX + "; " + CACHE_FIX,
        group="bests_results", source=_bests_vs_results, key=("player_id", "mode", "mode_param"), explain=(),
        predicate=lambda c: c.found_player_id.is_not(None),
        reads=_reads(BEST_ALL, RESULT_BEST, ("players", ("id",))),
    ),
    CrossRule(
        "personal_bests.result_exists", "personal_bests", ERROR,
        "the personal best points at a result that does not exist",
        FK_FIX + "; " + CACHE_FIX,
        group="bests_results", source=_bests_vs_results, key=("player_id", "mode", "mode_param"),
        explain=("result_id",),
        predicate=lambda c: c.found_result_id.is_not(None),
        reads=_reads(BEST_ALL, RESULT_BEST, ("players", ("id",))),
    ),
    CrossRule(
        "personal_bests.result_matches", "personal_bests", ERROR,
        "the personal best's result belongs to another player or mode, or its wpm or accuracy differ",
        CACHE_FIX,
        group="bests_results", source=_bests_vs_results, key=("player_id", "mode", "mode_param"),
        explain=("result_id", "wpm", "result_wpm", "accuracy", "result_accuracy", "result_player_id", "result_mode",
                 "result_mode_param"),
        predicate=_same_result,
        reads=_reads(BEST_ALL, RESULT_BEST, ("players", ("id",))),
    ),
    CrossRule(
        "personal_bests.is_best", "personal_bests", ERROR,
        "the personal best's wpm is not the highest wpm of the player's results in that mode",
        CACHE_FIX,
        group="bests_results", source=_bests_vs_results, key=("player_id", "mode", "mode_param"),
        explain=("wpm", "best_wpm"),
        predicate=lambda c: c.wpm == c.best_wpm,
        reads=_reads(BEST_ALL, RESULT_BEST, ("players", ("id",))),
    ),
    CrossRule(
        "personal_bests.complete", "personal_bests", ERROR,
        "the player has results in this mode but no personal best for it (counted per missing best)",
        CACHE_FIX,
        group="modes_played", source=_modes_played, key=("player_id", "mode", "mode_param"), explain=("results",),
        predicate=lambda c: c.has_best.is_(True),
        reads=_reads(RESULT_TOTALS, ("personal_bests", ("player_id", "mode", "mode_param"))),
    ),
)
