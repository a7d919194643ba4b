"""Salvage: after a restore, re-apply the rows that only the pre-restore data holds.

A restore goes back to the backup, so everything written since is gone: the incident
lost every score since its last good backup. Most of those rows were fine; the
incident corrupted rows that already existed. Salvage compares the pre-restore data
(the safety backup a restore takes, or the old PostgreSQL database it keeps) with the
restored live database and re-applies:

- new players: a username the restored data does not hold (a new id when theirs was
  taken meanwhile);
- new results of players that exist after the restore or were re-applied: a natural key
  (player, started_at) the restored data does not hold;

each only when it passes the audits' error-severity row rules (`checks` catalogue,
evaluated in SQL, restricted to the candidate ids) and `results.not_before_player`
against the player it is attached to. Rows that exist on both sides with other values
are the ones the incident changed: they are never re-applied, only reported. Then
progress and personal bests of the touched players are rebuilt with `game_core.rebuild`
(from live's results only: nothing of the source's progress, whatever its type, is
read), and everything happens in ONE transaction on live.

A result's counts and duration determine its wpm, raw_wpm, accuracy and xp
(`game_core.store.derive_metrics`, the game's own function), and the incident's
migration damaged exactly those derived values (wpm rounded to integers) on rows
written before it. So a result is re-applied with the values its counts give, and
"recomputed" when any stored one differed. The comparison is exact, never within the
audits' tolerance: a 67.01 rounded to 67 is 0.01 off, inside the tolerance, and would
otherwise come back wrong. The rules then judge the values as they will be written
(the candidates as a VALUES list in SQL, so the catalogue's own predicates decide).
Left out, each kind counted with sample ids: a NULL in a column that is not derived, a
count that is not a whole number, counts that contradict each other (more characters
in correct words than correct characters, which the game refuses at write time), a
recomputed raw wpm too large to store, and whatever the rules refuse (a duration
under a second, another metrics version, an impossible speed, a time in the future).

First a keyed diff of players and results (`integrity.tablediff.backup_live`, on a read-only
connection to live) finds the candidates: rows only the source holds, and rows whose id
live now gives to another row. Only those are read again and judged, inside the write
transaction; memory holds the candidate ids, never a table.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from checks.model import ERROR, AuditContext, RowRule
from game_core import metrics
from game_core.db import DatabaseTarget
from game_core.errors import PreconditionFailed
from game_core.rebuild import rebuild_derived
from game_core.schema import players, results
from game_core.store import COUNT_FIELDS, MAX_INT32, MAX_STORED_WPM, TestOutcome, derive_metrics
from integrity.backups.repository import Repository
from integrity.backups.statistics import store_identity
from integrity.backups.verify import quick_verify
from integrity.db.connect import Database, Write, guarded_target, one_snapshot
from integrity.db.engines import engine_for
from integrity.db.locks import database_lock
from integrity.recovery.consent import Consent, database_name
from integrity.settings import Settings

PAGE = 2000
SAMPLES = 5
# Candidate results per VALUES list the rules judge: 20 parameters a row stays far below
# SQLite's 32,766 and PostgreSQL's 65,535 bound parameters.
VALUES_PAGE = 500
# Columns that identify a row rather than describe it: id and player_id lead the table,
# so a row's values are its slice from the third column (`select(results)` order).
_PLAYER_VALUES = ("username", "created_at")
_RESULT_VALUES = tuple(results.c.keys()[2:])
assert results.c.keys()[:2] == ["id", "player_id"], "salvage compares results by their columns after these"
NOT_BEFORE_PLAYER = "results.not_before_player"
# What a result's counts and duration determine (game_core.metrics); every other column
# must be present for a result to come back.
DERIVED = ("wpm", "raw_wpm", "accuracy", "xp")
_RESULT_GIVEN = tuple(name for name in results.c.keys()[1:] if name not in DERIVED)
CONTRADICTION = "counts contradict (correct_word_chars > correct_chars)"
TOO_LARGE = f"recomputed values too large to store (raw_wpm over {MAX_STORED_WPM} or xp over {MAX_INT32})"


@dataclass(frozen=True)
class LeftOut:
    """Rows of one table not re-applied for one reason (a rule id, or why not)."""

    table: str
    reason: str
    rows: int
    sample_ids: tuple[int, ...]  # ids in the source (pre-restore) data


@dataclass(frozen=True)
class SalvageReport:
    source: str  # "backup <id>" or "database <name>"
    dry_run: bool
    reapplied: dict[str, int]  # written back, as they were or recomputed
    sample_ids: dict[str, tuple[int, ...]]
    renumbered: dict[str, int]  # re-applied under a new id: theirs was taken since the restore
    # Of `reapplied`, those written with the values their counts and duration give
    # because a stored one differed; per derived column, how many differed.
    recomputed: dict[str, int]
    recomputed_columns: dict[str, int]
    recomputed_sample_ids: tuple[int, ...]  # ids in the source (pre-restore) data
    left_out: tuple[LeftOut, ...]
    rebuilt_players: int
    seconds: float = 0.0
    # Players the game created again after the source was captured (they played between
    # the swap and the salvage): given back their first created_at, so that their older
    # results fit them (`results.not_before_player`).
    recreated_players: int = 0

    @property
    def exit_code(self) -> int:
        return 0

    def summary(self) -> dict:
        return {
            "source": self.source,
            "dry_run": self.dry_run,
            "reapplied": dict(self.reapplied),
            "renumbered": dict(self.renumbered),
            "recomputed": dict(self.recomputed),
            "recomputed_columns": dict(self.recomputed_columns),
            "left_out": {f"{item.table}:{item.reason}": item.rows for item in self.left_out},
            "rebuilt_players": self.rebuilt_players,
            "recreated_players": self.recreated_players,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class _Tally:
    """Counts and a few sample ids per (table, reason)."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    samples: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def add(self, table: str, reason: str, source_id: int) -> None:
        key = (table, reason)
        self.counts[key] = self.counts.get(key, 0) + 1
        bucket = self.samples.setdefault(key, [])
        if len(bucket) < SAMPLES:
            bucket.append(source_id)

    def left_out(self) -> tuple[LeftOut, ...]:
        return tuple(
            LeftOut(table, reason, count, tuple(self.samples[(table, reason)]))
            for (table, reason), count in sorted(self.counts.items())
        )


def _rows(connection: Connection, table: sa.Table, ids: list[int]) -> Iterator[list]:
    """The rows of `table` with these ids, a page at a time, in id order."""
    ordered = sorted(ids)
    for start in range(0, len(ordered), PAGE):
        chunk = ordered[start:start + PAGE]
        yield connection.execute(sa.select(table).where(table.c.id.in_(chunk)).order_by(table.c.id)).all()


def find_candidates(live: Connection, source: Connection, tally: "_Tally") -> dict[str, list[int]]:
    """Ids of the source rows that live lacks or holds with other values, from a keyed
    diff of each table (`integrity.tablediff.backup_live`: ranges that are equal are compared
    inside the databases and skipped, so only differences reach Python).

    A result that differs but keeps its natural key (same player and started_at) is one
    the incident changed: counted as left out here, never a candidate. One whose natural
    key differs shares only its id with a row live has now (written after the restore):
    a candidate, to be re-applied under a new id. Every differing player is a candidate:
    `_salvage_players` tells one the incident changed from one the game created again.
    """
    from integrity.tablediff import backup_live as diff

    natural = {"players": ("username",), "results": ("player_id", "started_at")}
    found: dict[str, list[int]] = {"players": [], "results": []}
    for table, key in natural.items():
        for difference in diff.iter_table_differences(live, source, table):
            if difference.kind == diff.ONLY_BACKUP:
                found[table].append(difference.key[0])
            elif difference.kind == diff.CHANGED:
                if table == "players":
                    # Judged with the rows themselves (`_salvage_players`): a player the game
                    # created again since has the same username and a later created_at.
                    found[table].append(difference.key[0])
                elif all(difference.live[name] == difference.backup[name] for name in key):
                    tally.add(table, "changed", difference.key[0])
                else:
                    found[table].append(difference.key[0])
    return found


def _error_rules(table: str) -> list[RowRule]:
    import checks

    return [rule for rule in checks.select_rules(tables=[table]) if isinstance(rule, RowRule) and rule.severity == ERROR]


def _failing_rules(source: Connection, table: sa.Table, ids: list[int], context: AuditContext) -> dict[int, str]:
    """{source id: the error rules it fails, comma-separated} among `ids`, evaluated on
    the source rows (one query per rule and page of ids)."""
    failing: dict[int, list[str]] = {}
    rules = _error_rules(table.name)
    for start in range(0, len(ids), PAGE):
        chunk = ids[start:start + PAGE]
        for rule in rules:
            query = sa.select(table.c.id).where(table.c.id.in_(chunk), rule.predicate(table.c, context).is_not(True))
            for (row_id,) in source.execute(query):
                failing.setdefault(row_id, []).append(rule.id)
    return {row_id: ", ".join(names) for row_id, names in failing.items()}


def _failing_as_written(connection: Connection, written: list[dict], context: AuditContext) -> dict[int, str]:
    """{source id: the error rules it fails, comma-separated} among results as they will
    be written (`written`: every column of `results`, id the source id), judged by the
    catalogue's predicates over a VALUES list: one query per page of rows."""
    failing: dict[int, str] = {}
    rules = _error_rules(results.name)
    names = results.c.keys()
    for start in range(0, len(written), VALUES_PAGE):
        chunk = written[start:start + VALUES_PAGE]
        relation = (
            sa.values(*(sa.column(column.name, column.type) for column in results.c), name="salvaged")
            .data([tuple(row[name] for name in names) for row in chunk])
            .cte("salvaged")
        )
        # 1 where a rule fails: its predicate is not TRUE (NULL fails, as in the audits).
        flags = [sa.case((rule.predicate(relation.c, context).is_(True), 0), else_=1) for rule in rules]
        for row_id, *failed in connection.execute(sa.select(relation.c.id, *flags)):
            found = [rule.id for rule, flag in zip(rules, failed) if flag]
            if found:
                failing[row_id] = ", ".join(found)
    return failing


def _whole(value) -> int | None:
    """An integer count, or None when the value is not a whole number (a damaged type)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    return None


def _same(stored, exact: float | int) -> bool:
    """Exactly the value the counts give. The metrics are stored with 2 decimals and
    recomputed to 2 decimals, so equality is the test, not the audits' tolerance."""
    if isinstance(stored, bool) or not isinstance(stored, (int, float, Decimal)):
        return False  # NULL, or text in a damaged column
    return float(stored) == float(exact)


def _reconstruct(row) -> tuple[dict, tuple[str, ...], str | None]:
    """A source result as salvage would write it: (its values, the derived columns whose
    stored value differed from the recomputed one, why it cannot be reconstructed).

    Its values must all be present (checked by the caller). Rows whose derived values
    the counts do not determine (another metrics version, a duration under the game's
    one second, in seconds perhaps) keep their stored values, which the rules then
    refuse with their own reason (`metrics_version_known`, `duration_min`).
    """
    values = {name: getattr(row, name) for name in _RESULT_VALUES}
    counts = {name: _whole(values[name]) for name in ("mode_param", "duration_ms", *COUNT_FIELDS)}
    not_whole = [name for name, value in counts.items() if value is None]
    if not_whole:
        return values, (), "not a whole number: " + ", ".join(not_whole)
    if values["metrics_version"] != metrics.METRICS_VERSION or counts["duration_ms"] < metrics.MIN_DURATION_MS:
        odd = [name for name in DERIVED
               if isinstance(values[name], bool) or not isinstance(values[name], (int, float, Decimal))]
        return values, (), ("NULL or not a number: " + ", ".join(odd)) if odd else None
    if counts["correct_word_chars"] > counts["correct_chars"]:
        return values, (), CONTRADICTION
    derived = derive_metrics(TestOutcome(
        mode=values["mode"], started_at=values["started_at"],
        **{name: counts[name] for name in ("mode_param", "duration_ms", *COUNT_FIELDS)},
    ))
    exact = {name: getattr(derived, name) for name in DERIVED}
    if exact["raw_wpm"] > MAX_STORED_WPM or exact["xp"] > MAX_INT32:
        return values, (), TOO_LARGE
    differing = tuple(name for name in DERIVED if not _same(values[name], exact[name]))
    return {**values, **counts, **exact}, differing, None


def _missing(row, names: tuple[str, ...]) -> str | None:
    """"NULL a, b" when the row lacks values it cannot come back without, else None."""
    missing = [name for name in names if getattr(row, name) is None]
    return "NULL " + ", ".join(missing) if missing else None


def _values(row) -> tuple:
    """A result's values, without its id and player (a plain slice: this runs per row)."""
    return tuple(row)[2:]


def salvage_into(
    live: Connection,
    source: Connection,
    found: dict[str, list[int]],
    tally: "_Tally",
    *,
    source_name: str,
    dry_run: bool = False,
    now: datetime | None = None,
    started: float | None = None,
) -> SalvageReport:
    """Re-apply the `found` candidates (`find_candidates`) onto `live`, inside the
    caller's transaction (the caller commits). A dry run only reads.
    """
    started = time.perf_counter() if started is None else started
    context = AuditContext.at(now or datetime.now(timezone.utc))
    if not dry_run:
        if live.dialect.name == "postgresql":
            # The game goes on inserting after a restore: an id it drew before the sequences
            # move would collide with a kept one at insert. Its inserts wait for our commit.
            live.execute(sa.text("LOCK TABLE players, results IN SHARE ROW EXCLUSIVE MODE"))
        _advance_sequences(live, source)
    salvaged_players = _salvage_players(live, source, found["players"], tally, context, write=not dry_run)
    salvaged_results = _salvage_results(live, source, found["results"], tally, context, salvaged_players, write=not dry_run)
    reapplied = salvaged_players.reapplied
    touched = salvaged_results.touched | set(reapplied["ids"])
    if dry_run:
        rebuilt = len(touched)  # what a real run would rebuild
    else:
        rebuilt = rebuild_derived(live, sorted(touched)).players if touched else 0
        _advance_sequences(live, None)
    return SalvageReport(
        source=source_name,
        dry_run=dry_run,
        reapplied={"players": len(reapplied["ids"]), "results": salvaged_results.reapplied},
        sample_ids={"players": tuple(reapplied["samples"]), "results": tuple(salvaged_results.samples)},
        renumbered={"players": reapplied["renumbered"], "results": salvaged_results.renumbered},
        recomputed={"players": 0, "results": salvaged_results.recomputed},
        recomputed_columns=salvaged_results.recomputed_columns,
        recomputed_sample_ids=tuple(salvaged_results.recomputed_samples),
        left_out=tally.left_out(),
        rebuilt_players=rebuilt,
        seconds=time.perf_counter() - started,
        recreated_players=len(salvaged_players.recreated),
    )


@dataclass
class _Players:
    """What re-applying the players leaves for their results."""

    map: dict[int, int]  # source player id -> live player id
    created: dict[int, object]  # live player id -> created_at (for not_before_player)
    left_out: set[int]  # source ids of players not re-applied
    reapplied: dict  # _insert_players: ids, samples, renumbered
    recreated: list[int]  # live ids of players re-dated to their first created_at


def _salvage_players(live: Connection, source: Connection, ids: list[int], tally: "_Tally", context: AuditContext, *,
                     write: bool) -> _Players:
    """Players by username, their natural key: a new one is re-applied (under a new id
    when theirs was taken since), one live holds is mapped to it."""
    player_map: dict[int, int] = {}  # source player id -> live player id
    created: dict[int, object] = {}  # live player id -> created_at (for not_before_player)
    candidates: dict[int, tuple[object, bool]] = {}  # source id -> (row, its id is taken in live)
    left_players: set[int] = set()
    recreated: list[int] = []
    source_newest = source.execute(sa.select(sa.func.max(players.c.created_at))).scalar()
    for page in _rows(source, players, ids):
        complete = []
        for row in page:
            missing = _missing(row, _PLAYER_VALUES)
            if missing:
                tally.add("players", missing, row.id)
                left_players.add(row.id)
            else:
                complete.append(row)
        by_name = {row.username: row for row in live.execute(
            sa.select(players).where(players.c.username.in_([row.username for row in complete])))}
        by_id = {row.id: row for row in live.execute(
            sa.select(players).where(players.c.id.in_([row.id for row in complete])))}
        for row in complete:
            match = by_name.get(row.username)
            if match is not None:
                player_map[row.id] = match.id
                if _recreated_after_the_source(match, row, source_newest):
                    if write:
                        live.execute(players.update().where(players.c.id == match.id).values(created_at=row.created_at))
                    created[match.id] = row.created_at
                    recreated.append(match.id)
                    continue
                created[match.id] = match.created_at
                if match.id != row.id or match.created_at != row.created_at:
                    tally.add("players", "changed", row.id)
                continue
            taken = by_id.get(row.id)
            if taken is not None and taken.created_at == row.created_at:
                # The same player under another name in the restored data: a changed row.
                # Their new results still belong to the player who exists after the restore.
                player_map[row.id] = taken.id
                created[taken.id] = taken.created_at
                tally.add("players", "changed", row.id)
                continue
            candidates[row.id] = (row, taken is not None)
    failing = _failing_rules(source, players, sorted(candidates), context)
    keep_id: list[dict] = []
    new_id: list[dict] = []
    for source_id, (row, id_taken) in candidates.items():
        if source_id in failing:
            tally.add("players", failing[source_id], source_id)
            left_players.add(source_id)
            continue
        values = {name: getattr(row, name) for name in _PLAYER_VALUES}
        (new_id if id_taken else keep_id).append({"source_id": source_id, **values})
    return _Players(player_map, created, left_players,
                    _insert_players(live, keep_id, new_id, player_map, created, write=write), recreated)


def _recreated_after_the_source(live_row, source_row, source_newest) -> bool:
    """Live's player of this username was created after every player of the source: the
    game made it again (a player new since the backup played between the swap and the
    salvage), so the source's earlier created_at is the player's real one. A live player
    restored from the backup is never newer than the source's newest, so a created_at the
    incident changed is still only reported ("changed"), never taken from the source."""
    return (source_newest is not None and source_row.created_at is not None
            and live_row.created_at > source_newest and source_row.created_at < live_row.created_at)


@dataclass
class _Results:
    """What re-applying the results did (counts and a few sample ids)."""

    reapplied: int = 0
    samples: list[int] = field(default_factory=list)
    renumbered: int = 0
    recomputed: int = 0
    recomputed_columns: dict[str, int] = field(default_factory=lambda: {name: 0 for name in DERIVED})
    recomputed_samples: list[int] = field(default_factory=list)
    touched: set[int] = field(default_factory=set)  # live ids of players whose results changed

    def count(self, source_id: int, player: int, differing: tuple[str, ...]) -> None:
        self.touched.add(player)
        self.reapplied += 1
        if len(self.samples) < SAMPLES:
            self.samples.append(source_id)
        if differing:
            self.recomputed += 1
            for name in differing:
                self.recomputed_columns[name] += 1
            if len(self.recomputed_samples) < SAMPLES:
                self.recomputed_samples.append(source_id)


def _salvage_results(live: Connection, source: Connection, ids: list[int], tally: "_Tally", context: AuditContext,
                     players: _Players, *, write: bool) -> _Results:
    """Results by (player, started_at), their natural key, a page at a time."""
    done = _Results()
    keep: list[dict] = []
    new: list[dict] = []
    for page in _rows(source, results, ids):
        for row, player, id_taken, values, differing in _results_to_reapply(live, source, page, players, tally, context):
            entry = {"player_id": player, **values}
            if id_taken:
                new.append(entry)
            else:
                keep.append({"id": row.id, **entry})
            done.count(row.id, player, differing)
        # Rows keeping their id go in first: an id handed out for a renumbered row must
        # never be one a later kept row needs.
        if len(keep) >= PAGE and write:
            live.execute(results.insert(), keep)
            keep = []
    if write:
        if keep:
            live.execute(results.insert(), keep)
        if new:
            live.execute(results.insert(), new)
    done.renumbered = len(new)
    return done


def _unmatched_results(live: Connection, source: Connection, page, players: _Players, tally: "_Tally") -> list[tuple]:
    """(row, live player id, its id is taken in live) of a page's results that live does
    not hold under their id; the others are counted (changed, a player left out or missing)."""
    complete = []
    for row in page:
        missing = _missing(row, _RESULT_GIVEN)
        if missing:  # no key to match, or a value nothing can give back
            tally.add("results", missing, row.id)
        else:
            complete.append(row)
    _map_players(live, source, {row.player_id for row in complete} - set(players.map) - players.left_out,
                 players.map, players.created)
    by_id = {row.id: row for row in live.execute(
        sa.select(results).where(results.c.id.in_([row.id for row in complete])))}
    unmatched = []
    for row in complete:
        player = players.map.get(row.player_id)
        if player is None:
            reason = "player left out" if row.player_id in players.left_out else "player missing"
            tally.add("results", reason, row.id)
            continue
        same_id = by_id.get(row.id)
        if same_id is not None and (same_id.player_id, same_id.started_at) == (player, row.started_at):
            if _values(same_id) != _values(row):
                tally.add("results", "changed", row.id)
            continue
        unmatched.append((row, player, same_id is not None))
    return unmatched


def _results_to_reapply(live: Connection, source: Connection, page, players: _Players, tally: "_Tally",
                        context: AuditContext) -> list[tuple]:
    """(row, live player id, id taken, values to write, derived columns recomputed) of a
    page's results that come back: not in live by natural key either, reconstructed, and
    passing the rules as written; every other one is counted in `tally`."""
    unmatched = _unmatched_results(live, source, page, players, tally)
    if not unmatched:
        return []
    keys = [(player, row.started_at) for row, player, _ in unmatched]
    by_key = {(r.player_id, r.started_at): r for r in live.execute(
        sa.select(results).where(sa.tuple_(results.c.player_id, results.c.started_at).in_(keys)))}
    fresh = []
    for row, player, id_taken in unmatched:
        existing = by_key.get((player, row.started_at))
        if existing is not None:
            if _values(existing) != _values(row):
                tally.add("results", "changed", row.id)
            continue
        values, differing, problem = _reconstruct(row)
        if problem:
            tally.add("results", problem, row.id)
            continue
        fresh.append((row, player, id_taken, values, differing))
    failing = _failing_as_written(
        source, [{"id": row.id, "player_id": player, **values} for row, player, _, values, _ in fresh], context)
    accepted = []
    for row, player, id_taken, values, differing in fresh:
        if row.id in failing:
            tally.add("results", failing[row.id], row.id)
            continue
        created = players.created
        if player in created and created[player] is not None and row.started_at < created[player]:
            tally.add("results", NOT_BEFORE_PLAYER, row.id)
            continue
        accepted.append((row, player, id_taken, values, differing))
    return accepted


def _map_players(live: Connection, source: Connection, source_ids: set[int], player_map: dict[int, int], created: dict) -> None:
    """Map source players that were no candidates (live holds them) to their live ids,
    by username; one not found stays unmapped ("player missing")."""
    if not source_ids:
        return
    names = dict(source.execute(sa.select(players.c.username, players.c.id).where(players.c.id.in_(sorted(source_ids)))).all())
    if not names:
        return
    for row in live.execute(sa.select(players).where(players.c.username.in_(list(names)))):
        player_map[names[row.username]] = row.id
        created[row.id] = row.created_at


def _insert_players(live: Connection, keep_id: list[dict], new_id: list[dict],
                    player_map: dict[int, int], created: dict, *, write: bool) -> dict:
    """Insert re-applied players (those keeping their id first); map source ids to live ids.

    A dry run writes nothing: a player who would get a new id is mapped to a stand-in
    (minus their source id) that no live row has, so their results count as new."""
    ids, source_ids = [], []
    for entry in keep_id:
        source_id = entry.pop("source_id")
        source_ids.append(source_id)
        if write:
            live.execute(players.insert().values(id=source_id, **entry))
        player_map[source_id] = source_id
        created[source_id] = entry["created_at"]
        ids.append(source_id)
    for entry in new_id:
        source_id = entry.pop("source_id")
        source_ids.append(source_id)
        live_id = live.execute(players.insert().values(**entry).returning(players.c.id)).scalar_one() if write else -source_id
        player_map[source_id] = live_id
        created[live_id] = entry["created_at"]
        ids.append(live_id)
    return {"ids": ids, "samples": source_ids[:SAMPLES], "renumbered": len(new_id)}


def _advance_sequences(live: Connection, source: Connection | None) -> None:
    """PostgreSQL: move the id sequences past every id that is or will be used.

    A restore also restores the sequences, so the game's next ids are the ones the
    pre-restore rows had: first (before inserting) past the source's highest ids, so
    the game stops handing them out, then past the live maximum. setval is not
    transactional; only ever moving a sequence forward keeps that harmless.
    """
    if live.dialect.name != "postgresql":
        return  # SQLite's INTEGER PRIMARY KEY continues after the highest id present
    for table in (players, results):
        highest = live.execute(sa.select(sa.func.max(table.c.id))).scalar() or 0
        if source is not None:
            highest = max(highest, source.execute(sa.select(sa.func.max(table.c.id))).scalar() or 0)
        sequence = live.execute(sa.text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table.name}).scalar()
        if sequence is None or highest == 0:
            continue
        live.execute(
            sa.text(f"SELECT setval(CAST(:s AS regclass), GREATEST(:h, (SELECT last_value FROM {sequence})))"),
            {"s": sequence, "h": highest},
        )


def run_salvage(live_engine, source_engine, *, reader=None, source_name: str, dry_run: bool,
                now: datetime | None = None) -> SalvageReport:
    """Find the candidates on a read-only connection to live (`reader`, default
    `live_engine`), then re-apply them in ONE transaction on live (committed unless a
    dry run); the source is read in one snapshot throughout."""
    started = time.perf_counter()
    tally = _Tally()
    with source_engine.connect() as source:
        source = one_snapshot(source)
        with (reader or live_engine).connect() as live_reader:
            live_reader = one_snapshot(live_reader)
            found = find_candidates(live_reader, source, tally)
        with live_engine.connect() as live:
            with live.begin() as transaction:
                report = salvage_into(live, source, found, tally, source_name=source_name, dry_run=dry_run,
                                      now=now, started=started)
                if dry_run:
                    transaction.rollback()
    return report


# ---------------------------------------------------------------- sources


class SalvageRefused(PreconditionFailed):
    """The source cannot be salvaged onto this database (engine, store)."""


def salvage_from(
    settings: Settings,
    *,
    backup_id: str | None = None,
    database: str | None = None,
    dry_run: bool,
    consent: Consent,
    lock_wait: float = 0,
    command: str = "salvage",
) -> SalvageReport:
    """`integrity salvage`: re-apply what only the pre-restore data holds onto live: a
    backup (usually the safety backup a restore took) or, on PostgreSQL, the old
    database a restore kept. Consent first, unless a dry run."""
    from integrity.guarded import check_guarded

    check_guarded(settings)  # read-only, before the writer opens (it would switch a foreign file to WAL)
    target = guarded_target(settings)
    live_identity = _live_identity(settings, target)
    if database is not None:
        source = engine_for(Database.of(settings)).kept_database(database)
        if source is None:
            raise SalvageRefused("--from-database names a PostgreSQL database; this database is SQLite: use --from-backup")
        if database == target.url.database:
            raise SalvageRefused(f"--from-database {database} is the live database itself; name the database a restore kept")
        source_identity = _identity_of(settings, source)
        what = f"database {database}"
    else:
        repository = Repository.of(settings)
        repository.require_exists()
        manifest = quick_verify(repository, backup_id)  # BackupCorrupt: exit 5, nothing read from it
        if manifest.engine != target.kind:
            raise SalvageRefused(f"backup {backup_id} is a {manifest.engine} backup but {target.display} is {target.kind}")
        source_identity = manifest.source_identity
        what = f"backup {backup_id}"
    if source_identity and live_identity and source_identity != live_identity:
        raise SalvageRefused(
            f"{what} is of another store (identity {source_identity}) than {target.display} ({live_identity}); "
            "salvage only re-applies a database's own rows"
        )
    if not dry_run:
        consent.confirm(f"re-apply the rows only {what} holds onto {target.display}", expected=database_name(target))
    writer = nullcontext() if dry_run else database_lock(
        target, state_dir=settings.state.dir, command=command, wait_seconds=lock_wait
    )
    if database is not None:
        with writer:
            return _salvage(settings, source, source_name=what, dry_run=dry_run)
    with repository.reading(backup_id, command=command, wait_seconds=lock_wait), writer:
        return _salvage_backup(settings, repository, manifest, dry_run=dry_run)


def salvage_from_backup_locked(settings: Settings, repository: Repository, backup_id: str) -> SalvageReport:
    """The same, for a restore that already holds the locks and the consent."""
    return _salvage_backup(settings, repository, quick_verify(repository, backup_id), dry_run=False)


def salvage_from_database(settings: Settings, database: str) -> SalvageReport:
    """Salvage from the old live database a restore renamed and kept (PostgreSQL's)."""
    source = engine_for(Database.of(settings)).kept_database(database)
    return _salvage(settings, source, source_name=f"database {database}", dry_run=False)


def _salvage_backup(settings: Settings, repository: Repository, manifest, *, dry_run: bool) -> SalvageReport:
    with engine_for(Database.of(settings)).restored_copy(
        repository, manifest, scratch_dir=settings.state.dir / "scratch",
    ) as copy:
        return _salvage(settings, copy.target, source_name=f"backup {manifest.id}", dry_run=dry_run)


def _salvage(settings: Settings, source: DatabaseTarget, *, source_name: str, dry_run: bool) -> SalvageReport:
    live = Database.of(settings)
    with live.beside(source).reader() as source_engine, live.reader() as reader, ExitStack() as opened:
        live_engine = reader if dry_run else opened.enter_context(live.writer(Write.SALVAGE))
        return run_salvage(live_engine, source_engine, reader=reader, source_name=source_name, dry_run=dry_run)


def _live_identity(settings: Settings, target: DatabaseTarget) -> str | None:
    return _identity_of(settings, target)


def _identity_of(settings: Settings, target: DatabaseTarget) -> str | None:
    with Database(target, Database.of(settings).connection).reader() as engine, engine.connect() as connection:
        return store_identity(connection)
