"""`integrity repair progress`: rebuild `progress` and `personal_bests` from `results`.

The two tables are caches of `results` (DESIGN.md section 3), and game_core owns their
rebuild (`game_core.rebuild`); this module only decides *which* players need it and
reports what changes for them. Plan, then execute:

1. plan, read-only (SQLite `mode=ro`, PostgreSQL read-only transactions): stream what a
   rebuild would write next to what is stored, both in player id order, and keep only
   the players whose rows differ. Memory grows with the number of wrong players, never
   with the number of results. `--dry-run` stops here (exit 3 when anything is wrong).
2. consent (`--yes`, or the database name typed on a terminal; DESIGN.md invariant 1),
   asked only when there is something to change and before any lock is taken, so a
   person reading the prompt never holds up the game's writers.
3. apply, holding the database's writer lock (invariant 6), in one transaction (SQLite
   BEGIN IMMEDIATE through game_core.db): re-plan the planned players inside it (the game
   may have written meanwhile; what is reported is what is written), rebuild exactly
   those, check that none still differs, commit. Any failure rolls everything back.

The full scan of step 1 runs outside the write transaction: on a large database it takes
seconds, and the game's own writes wait at most `busy_timeout` for the write lock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from game_core.errors import ExitCode, PreconditionFailed
from game_core.schema import personal_bests, players, progress
from integrity.errors import VerificationFailed

# The progress columns a rebuild recomputes (updated_at is only when it was written).
PROGRESS_FIELDS = ("xp", "level", "tests_completed", "time_typing_ms", "best_wpm")
# Player ids per IN (...) list, far below either engine's bound-parameter limit.
_ID_CHUNK = 5000
_FETCH = 5000


class RepairCouldNotRun(PreconditionFailed):
    """The database refused or timed out a query of the repair (nothing was changed)."""


@dataclass(frozen=True)
class PlayerRepair:
    """One player whose cached rows differ from what their results say."""

    player_id: int
    username: str | None  # masked as the audits mask it; None when the player row is gone
    old: dict[str, Any] | None  # stored progress (PROGRESS_FIELDS); None: no progress row
    new: dict[str, Any] | None  # rebuilt progress; None: the row goes (no results)
    bests_added: int = 0
    bests_removed: int = 0
    bests_changed: int = 0

    @property
    def progress_changed(self) -> bool:
        return self.old != self.new


@dataclass(frozen=True)
class RepairReport:
    """What a repair would change (dry run, or before consent) or changed (applied)."""

    database: str
    dry_run: bool
    applied: bool
    consent: str | None  # how consent was given: "--yes" or "typed"; None when not needed
    players_checked: int
    players: tuple[PlayerRepair, ...]
    totals: dict[str, int]
    seconds: float

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.PROBLEMS_FOUND if self.dry_run and self.players else ExitCode.OK

    def summary(self) -> dict:
        return {"dry_run": self.dry_run, "applied": self.applied, "players_checked": self.players_checked, **self.totals}


# ---------------------------------------------------------------- planning


def _chunks(player_ids: Sequence[int] | None) -> list[list[int] | None]:
    if player_ids is None:
        return [None]
    ids = sorted(set(player_ids))
    return [ids[i : i + _ID_CHUNK] for i in range(0, len(ids), _ID_CHUNK)]


def _stream(connection: Connection, query) -> Iterator:
    result = connection.execute(query.execution_options(yield_per=_FETCH))
    try:
        yield from result
    finally:
        result.close()  # a server-side cursor must not outlive an early stop


def _stored_progress(connection: Connection, player_ids: Sequence[int] | None) -> Iterator[tuple[int, dict]]:
    for chunk in _chunks(player_ids):
        query = sa.select(progress.c.player_id, *(progress.c[name] for name in PROGRESS_FIELDS)).order_by(progress.c.player_id)
        if chunk is not None:
            query = query.where(progress.c.player_id.in_(chunk))
        for row in _stream(connection, query):
            yield row.player_id, {name: row._mapping[name] for name in PROGRESS_FIELDS}


def _stored_bests(connection: Connection, player_ids: Sequence[int] | None) -> Iterator[tuple[int, tuple]]:
    columns = (personal_bests.c.mode, personal_bests.c.mode_param, personal_bests.c.result_id,
               personal_bests.c.wpm, personal_bests.c.accuracy)
    for chunk in _chunks(player_ids):
        query = sa.select(personal_bests.c.player_id, *columns).order_by(personal_bests.c.player_id)
        if chunk is not None:
            query = query.where(personal_bests.c.player_id.in_(chunk))
        for row in _stream(connection, query):
            yield row.player_id, tuple(row[1:])


def _merge_by_player(left: Iterator[tuple[int, Any]], right: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, Any, Any]]:
    """Two streams ordered by player id (an integer: SQL and Python agree on its order),
    joined: (player_id, left value or None, right value or None)."""
    missing = object()
    a, b = next(left, missing), next(right, missing)
    while a is not missing or b is not missing:
        if b is missing or (a is not missing and a[0] < b[0]):
            yield a[0], a[1], None
            a = next(left, missing)
        elif a is missing or b[0] < a[0]:
            yield b[0], None, b[1]
            b = next(right, missing)
        else:
            yield a[0], a[1], b[1]
            a, b = next(left, missing), next(right, missing)


def _grouped(rows: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, list]]:
    for player_id, group in groupby(rows, key=lambda item: item[0]):
        yield player_id, [value for _, value in group]


def _best_counts(stored: list[tuple] | None, expected: list[tuple] | None) -> tuple[int, int, int]:
    """(added, removed, changed) personal bests, keyed by (mode, mode_param)."""
    have = {(row[0], row[1]): row[2:] for row in stored or ()}
    want = {(row[0], row[1]): row[2:] for row in expected or ()}
    added = sum(1 for key in want if key not in have)
    removed = sum(1 for key in have if key not in want)
    changed = sum(1 for key, value in want.items() if key in have and have[key] != value)
    return added, removed, changed


def plan_players(connection: Connection, player_ids: Sequence[int] | None = None) -> list[PlayerRepair]:
    """The players (all, or `player_ids`) whose progress or personal bests differ from
    what `game_core.rebuild` computes from their results, in player id order. Reads only."""
    from checks import mask_username
    from game_core.rebuild import compute_expected_personal_bests, compute_expected_progress

    expected_progress = (
        (row.player_id, {name: getattr(row, name) for name in PROGRESS_FIELDS})
        for row in compute_expected_progress(connection, player_ids)
    )
    changes: dict[int, dict[str, Any]] = {}
    for player_id, stored, expected in _merge_by_player(_stored_progress(connection, player_ids), expected_progress):
        if stored != expected:
            changes[player_id] = {"old": stored, "new": expected}

    expected_bests = (
        (player_id, (best.mode, best.mode_param, best.result_id, best.wpm, best.accuracy))
        for player_id, best in compute_expected_personal_bests(connection, player_ids)
    )
    for player_id, stored, expected in _merge_by_player(_grouped(_stored_bests(connection, player_ids)), _grouped(expected_bests)):
        added, removed, changed = _best_counts(stored, expected)
        if added or removed or changed:
            entry = changes.setdefault(player_id, {})
            entry.update(bests_added=added, bests_removed=removed, bests_changed=changed)

    if not changes:
        return []
    ids = sorted(changes)
    # Players whose progress is right keep it in the report, shown unchanged.
    need_progress = [pid for pid in ids if "old" not in changes[pid]]
    current = dict(_stored_progress(connection, need_progress)) if need_progress else {}
    names: dict[int, str] = {}
    for chunk in _chunks(ids):
        for row in connection.execute(sa.select(players.c.id, players.c.username).where(players.c.id.in_(chunk))):
            names[row.id] = row.username
    plan = []
    for player_id in ids:
        entry = changes[player_id]
        old = entry["old"] if "old" in entry else current.get(player_id)
        new = entry["new"] if "old" in entry else old
        plan.append(PlayerRepair(
            player_id=player_id,
            username=mask_username(names[player_id]) if player_id in names else None,
            old=old,
            new=new,
            bests_added=entry.get("bests_added", 0),
            bests_removed=entry.get("bests_removed", 0),
            bests_changed=entry.get("bests_changed", 0),
        ))
    return plan


def totals_of(plan: Sequence[PlayerRepair]) -> dict[str, int]:
    return {
        "players": len(plan),
        "progress_added": sum(1 for p in plan if p.old is None and p.new is not None),
        "progress_removed": sum(1 for p in plan if p.old is not None and p.new is None),
        "progress_changed": sum(1 for p in plan if p.old is not None and p.new is not None and p.old != p.new),
        "bests_added": sum(p.bests_added for p in plan),
        "bests_removed": sum(p.bests_removed for p in plan),
        "bests_changed": sum(p.bests_changed for p in plan),
    }


# ---------------------------------------------------------------- the command


def _require_schema(connection: Connection, display: str) -> None:
    from integrity.guarded import require_game_revision

    # The rebuild writes this code's columns: a database at another revision is refused,
    # one behind head too (exit 4 naming the revision, the head and the fix).
    require_game_revision(connection, display, current=True)


def _could_not_run(exc: sa.exc.DBAPIError, display: str, *, wrote: bool) -> RepairCouldNotRun:
    from integrity.db.sql import error_reason

    reason = error_reason(exc)
    outcome = "nothing was changed (rolled back)" if wrote else "nothing was changed"
    return RepairCouldNotRun(
        f"the repair could not finish on {display}: {reason}; {outcome}; run it again "
        "(with --lock-wait, or when the game is quieter)"
    )


def _preview(settings) -> tuple[str, str, int, list[PlayerRepair]]:
    """(display, database name, players checked, plan), read-only."""
    from integrity.db.connect import Database
    from integrity.recovery.consent import database_name

    database = Database.of(settings)
    target = database.target
    try:
        with database.snapshot() as connection:
            _require_schema(connection, target.display)
            checked = connection.execute(sa.select(sa.func.count()).select_from(players)).scalar_one()
            plan = plan_players(connection)
    except sa.exc.DBAPIError as exc:
        raise _could_not_run(exc, target.display, wrote=False) from None
    return target.display, database_name(target), checked, plan


def repair_progress(
    settings,
    *,
    dry_run: bool,
    consent=None,
    lock_wait: float = 0,
    command: str = "repair progress",
) -> RepairReport:
    """Plan (read-only); with `dry_run` report the plan. Otherwise, when anything differs,
    ask `consent` (an `integrity.recovery.consent.Consent`), then rebuild the planned
    players under the writer lock in one transaction and report what changed."""
    started = time.perf_counter()
    display, name, checked, plan = _preview(settings)

    def report(players: Sequence[PlayerRepair], *, applied: bool, how: str | None) -> RepairReport:
        return RepairReport(
            database=display, dry_run=dry_run, applied=applied, consent=how, players_checked=checked,
            players=tuple(players), totals=totals_of(players), seconds=round(time.perf_counter() - started, 3),
        )

    if dry_run or not plan:
        return report(plan, applied=False, how=None)
    if consent is None:
        raise PreconditionFailed("repair without --dry-run needs consent; pass --yes")
    preview = report(plan, applied=False, how=None)
    how = consent.confirm(
        f"rebuild progress and personal bests of {len(plan)} player(s) in {display}",
        expected=name, subject=preview,
    )
    applied = _apply(settings, [p.player_id for p in plan], lock_wait=lock_wait, command=command)
    return report(applied, applied=bool(applied), how=how)


def _apply(settings, player_ids: list[int], *, lock_wait: float, command: str) -> list[PlayerRepair]:
    from game_core.rebuild import rebuild_derived
    from integrity.db.connect import Database, Write
    from integrity.db.locks import database_lock

    database = Database.of(settings)
    target = database.target
    with database_lock(target, state_dir=settings.state.dir, command=command, wait_seconds=lock_wait), \
            database.writer(Write.REPAIR) as engine:
        try:
            with engine.begin() as connection:  # BEGIN IMMEDIATE on SQLite: one writer, one transaction
                _require_schema(connection, target.display)
                # What is true now for the planned players: the game may have written since.
                plan = plan_players(connection, player_ids)
                if plan:
                    rebuild_derived(connection, [p.player_id for p in plan])
                    left = plan_players(connection, [p.player_id for p in plan])
                    if left:
                        raise VerificationFailed(
                            f"after the rebuild {len(left)} player(s) still differ from their results "
                            f"(first: player {left[0].player_id}); rolled back, nothing was changed"
                        )
        except sa.exc.DBAPIError as exc:
            raise _could_not_run(exc, target.display, wrote=True) from None
    return plan
