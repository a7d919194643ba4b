"""Recompute the caches (`progress`, `personal_bests`) from `results`, the source of truth.

Used by `typing-game simulate` after a bulk load (millions of results), by
`integrity repair` and by salvage. The work is done in SQL where the engines agree
(sums, counts, maxima, ROW_NUMBER) and streamed through Python only where they do not:
the level needs a square root that SQLite may not have, so it comes from
`metrics.level_for_xp`, one aggregate row at a time, inserted in batches.

The result is exactly what `game_core.store.Store.record_result` maintains
incrementally: progress sums every result, best_wpm is the highest stored wpm, and a
personal best is the first result in the order (wpm DESC, started_at ASC, id ASC).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from game_core import metrics
from game_core.schema import personal_bests, players, results
from game_core.schema import progress as progress_table
from game_core.store import PersonalBest, Progress

# Rows per executemany of progress, and rows fetched per round trip of the aggregate:
# large enough to amortise the round trips, small enough that memory stays flat.
PROGRESS_BATCH_SIZE = 5000
# Player ids per IN (...) list: far below SQLite's 32766 and PostgreSQL's 65535 bound
# parameters, whatever the size of the subset a caller passes.
PLAYER_ID_CHUNK = 5000


@dataclass(frozen=True)
class RebuildSummary:
    """What `rebuild_derived` did: players in scope and the cache rows it wrote."""

    players: int  # players whose caches were recomputed (existing ones in scope)
    progress_rows: int
    personal_best_rows: int


def _id_chunks(player_ids: Collection[int] | None) -> list[list[int] | None]:
    """The player ids as IN-list sized chunks; [None] means every player, unfiltered."""
    if player_ids is None:
        return [None]
    ids = sorted(set(player_ids))
    return [ids[i : i + PLAYER_ID_CHUNK] for i in range(0, len(ids), PLAYER_ID_CHUNK)]


def _in_scope(column, chunk: list[int] | None):
    return sa.true() if chunk is None else column.in_(chunk)


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"naive datetime {now.isoformat()}; rebuild takes timezone-aware UTC only")
    # SQLite stores the wall-clock digits without the offset: write UTC digits.
    return now.astimezone(timezone.utc)


def compute_expected_progress(
    connection: Connection,
    player_ids: Collection[int] | None = None,
    *,
    now: datetime | None = None,
) -> Iterator[Progress]:
    """Stream the progress rows a rebuild would write, in player id order.

    Players without results get none. `updated_at` is `now` (default: the current time),
    since it is the time the row is written; compare the other fields.
    """
    updated_at = _utc(now)
    for chunk in _id_chunks(player_ids):
        query = (
            sa.select(
                results.c.player_id,
                sa.func.sum(results.c.xp).label("xp"),
                sa.func.count().label("tests_completed"),
                sa.func.sum(results.c.duration_ms).label("time_typing_ms"),
                sa.func.max(results.c.wpm).label("best_wpm"),
            )
            .where(_in_scope(results.c.player_id, chunk))
            .group_by(results.c.player_id)
            .order_by(results.c.player_id)
        )
        # yield_per streams: a server-side cursor on PostgreSQL (psycopg otherwise buffers
        # the whole result client-side), fixed-size fetches on SQLite.
        result = connection.execute(query.execution_options(yield_per=PROGRESS_BATCH_SIZE))
        try:
            for row in result:
                xp = int(row.xp)
                yield Progress(
                    player_id=row.player_id,
                    xp=xp,
                    level=metrics.level_for_xp(xp),
                    tests_completed=row.tests_completed,
                    time_typing_ms=int(row.time_typing_ms),
                    best_wpm=row.best_wpm,
                    updated_at=updated_at,
                )
        finally:
            # A consumer that stops early must not leave a server-side cursor open.
            result.close()


def _best_results_query(chunk: list[int] | None) -> sa.Select:
    """Each player's best result per (mode, mode_param): the personal_bests rows."""
    rank = (
        sa.func.row_number()
        .over(
            partition_by=(results.c.player_id, results.c.mode, results.c.mode_param),
            order_by=(results.c.wpm.desc(), results.c.started_at.asc(), results.c.id.asc()),
        )
        .label("rank")
    )
    ranked = (
        sa.select(
            results.c.player_id,
            results.c.mode,
            results.c.mode_param,
            results.c.id.label("result_id"),
            results.c.wpm,
            results.c.accuracy,
            rank,
        )
        .where(_in_scope(results.c.player_id, chunk))
        .subquery("ranked")
    )
    return sa.select(
        ranked.c.player_id,
        ranked.c.mode,
        ranked.c.mode_param,
        ranked.c.result_id,
        ranked.c.wpm,
        ranked.c.accuracy,
    ).where(ranked.c.rank == 1)


def compute_expected_personal_bests(
    connection: Connection,
    player_ids: Collection[int] | None = None,
) -> Iterator[tuple[int, PersonalBest]]:
    """Stream the personal_bests rows a rebuild would write, as (player_id, best), in
    player id order (modes within a player in no particular order). Writes nothing:
    `integrity repair progress --dry-run` compares them with the stored rows."""
    for chunk in _id_chunks(player_ids):
        query = _best_results_query(chunk)
        query = query.order_by(query.selected_columns.player_id)
        result = connection.execute(query.execution_options(yield_per=PROGRESS_BATCH_SIZE))
        try:
            for row in result:
                yield row.player_id, PersonalBest(
                    mode=row.mode, mode_param=row.mode_param, result_id=row.result_id, wpm=row.wpm, accuracy=row.accuracy
                )
        finally:
            result.close()


def rebuild_derived(
    connection: Connection,
    player_ids: Collection[int] | None = None,
    *,
    now: datetime | None = None,
) -> RebuildSummary:
    """Recompute progress and personal bests from results, for every player or the given ones.

    Runs inside the caller's transaction and never commits: the caller decides (a dry run
    rolls back, a repair commits together with its own bookkeeping). Rows of players
    outside `player_ids` are not touched.
    """
    updated_at = _utc(now)
    chunks = _id_chunks(player_ids)
    player_count = 0
    for chunk in chunks:
        if chunk is None:
            player_count += connection.execute(sa.select(sa.func.count()).select_from(players)).scalar_one()
        else:
            player_count += connection.execute(
                sa.select(sa.func.count()).select_from(players).where(players.c.id.in_(chunk))
            ).scalar_one()
        connection.execute(progress_table.delete().where(_in_scope(progress_table.c.player_id, chunk)))
        connection.execute(personal_bests.delete().where(_in_scope(personal_bests.c.player_id, chunk)))

    progress_rows = 0
    batch: list[dict] = []
    insert_progress = progress_table.insert()
    for row in compute_expected_progress(connection, player_ids, now=updated_at):
        batch.append(
            {
                "player_id": row.player_id,
                "xp": row.xp,
                "level": row.level,
                "tests_completed": row.tests_completed,
                "time_typing_ms": row.time_typing_ms,
                "best_wpm": row.best_wpm,
                "updated_at": updated_at,
            }
        )
        if len(batch) >= PROGRESS_BATCH_SIZE:
            connection.execute(insert_progress, batch)
            progress_rows += len(batch)
            batch = []
    if batch:
        connection.execute(insert_progress, batch)
        progress_rows += len(batch)

    best_rows = 0
    columns = ["player_id", "mode", "mode_param", "result_id", "wpm", "accuracy"]
    for chunk in chunks:
        statement = personal_bests.insert().from_select(columns, _best_results_query(chunk))
        # SQLAlchemy closes an INSERT's cursor early and reports rowcount -1 on psycopg
        # unless asked to keep it.
        inserted = connection.execute(statement.execution_options(preserve_rowcount=True))
        best_rows += inserted.rowcount

    return RebuildSummary(players=player_count, progress_rows=progress_rows, personal_best_rows=best_rows)
