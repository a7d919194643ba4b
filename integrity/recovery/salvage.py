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
evaluated in SQL on the source, restricted to the candidate ids) and
`results.not_before_player` against the player it is attached to. Rows that exist on
both sides with other values are the ones the incident changed: they are never
re-applied, only reported. Then progress and personal bests of the touched players are
rebuilt with `game_core.rebuild`, and everything happens in ONE transaction on live.

First a keyed diff of players and results (`integrity.recovery.diff`, on a read-only
connection to live) finds the candidates: rows only the source holds, and rows whose id
live now gives to another row. Only those are read again and judged, inside the write
transaction; memory holds the candidate ids, never a table.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from checks.model import ERROR, AuditContext, RowRule
from game_core.db import POSTGRESQL, DatabaseTarget, create_engine
from game_core.errors import PreconditionFailed
from game_core.rebuild import rebuild_derived
from game_core.schema import players, results
from integrity.backups.repository import Repository
from integrity.backups.statistics import store_identity
from integrity.backups.verify import quick_verify
from integrity.database import connection_settings, target_of
from integrity.database_locks import database_lock
from integrity.recovery.consent import Consent, database_name
from integrity.settings import Settings

PAGE = 2000
SAMPLES = 5
# Columns that identify a row rather than describe it: id and player_id lead the table,
# so a row's values are its slice from the third column (`select(results)` order).
_PLAYER_VALUES = ("username", "created_at")
_RESULT_VALUES = tuple(results.c.keys()[2:])
assert results.c.keys()[:2] == ["id", "player_id"], "salvage compares results by their columns after these"
NOT_BEFORE_PLAYER = "results.not_before_player"


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
    reapplied: dict[str, int]
    sample_ids: dict[str, tuple[int, ...]]
    renumbered: dict[str, int]  # re-applied under a new id: theirs was taken since the restore
    left_out: tuple[LeftOut, ...]
    rebuilt_players: int
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 0

    def summary(self) -> dict:
        return {
            "source": self.source,
            "dry_run": self.dry_run,
            "reapplied": dict(self.reapplied),
            "renumbered": dict(self.renumbered),
            "left_out": {f"{item.table}:{item.reason}": item.rows for item in self.left_out},
            "rebuilt_players": self.rebuilt_players,
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
    diff of each table (`integrity.recovery.diff`: ranges that are equal are compared
    inside the databases and skipped, so only differences reach Python).

    A row that differs but keeps its natural key (same username; same player and
    started_at) is one the incident changed: counted as left out here, never a
    candidate. One whose natural key differs shares only its id with a row live has now
    (written after the restore): a candidate, to be re-applied under a new id.
    """
    from integrity.recovery import diff

    natural = {"players": ("username",), "results": ("player_id", "started_at")}
    found: dict[str, list[int]] = {"players": [], "results": []}
    for table, key in natural.items():
        for difference in diff.iter_table_differences(live, source, table):
            if difference.kind == diff.ONLY_BACKUP:
                found[table].append(difference.key[0])
            elif difference.kind == diff.CHANGED:
                if all(difference.live[name] == difference.backup[name] for name in key):
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
        _advance_sequences(live, source)

    # ---- players: by username, their natural key
    player_map: dict[int, int] = {}  # source player id -> live player id
    created: dict[int, object] = {}  # live player id -> created_at (for not_before_player)
    candidates: dict[int, tuple[object, bool]] = {}  # source id -> (row, its id is taken in live)
    for page in _rows(source, players, found["players"]):
        by_name = {row.username: row for row in live.execute(
            sa.select(players).where(players.c.username.in_([row.username for row in page])))}
        by_id = {row.id: row for row in live.execute(
            sa.select(players).where(players.c.id.in_([row.id for row in page])))}
        for row in page:
            match = by_name.get(row.username)
            if match is not None:
                player_map[row.id] = match.id
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
    left_players: set[int] = set()
    keep_id: list[dict] = []
    new_id: list[dict] = []
    for source_id, (row, id_taken) in candidates.items():
        if source_id in failing:
            tally.add("players", failing[source_id], source_id)
            left_players.add(source_id)
            continue
        values = {name: getattr(row, name) for name in _PLAYER_VALUES}
        (new_id if id_taken else keep_id).append({"source_id": source_id, **values})
    reapplied_players = _insert_players(live, keep_id, new_id, player_map, created, write=not dry_run)

    # ---- results: by (player, started_at), their natural key
    touched: set[int] = set()
    result_keep: list[dict] = []
    result_new: list[dict] = []
    result_samples: list[int] = []
    reapplied_results = 0
    for page in _rows(source, results, found["results"]):
        _map_players(live, source, {row.player_id for row in page} - set(player_map) - left_players, player_map, created)
        by_id = {row.id: row for row in live.execute(
            sa.select(results).where(results.c.id.in_([row.id for row in page])))}
        unmatched = []
        for row in page:
            player = player_map.get(row.player_id)
            if player is None:
                reason = "player left out" if row.player_id in left_players else "player missing"
                tally.add("results", reason, row.id)
                continue
            same_id = by_id.get(row.id)
            if same_id is not None and (same_id.player_id, same_id.started_at) == (player, row.started_at):
                if _values(same_id) != _values(row):
                    tally.add("results", "changed", row.id)
                continue
            unmatched.append((row, player, same_id is not None))
        if not unmatched:
            continue
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
            fresh.append((row, player, id_taken))
        failing = _failing_rules(source, results, [row.id for row, _, _ in fresh], context)
        for row, player, id_taken in fresh:
            if row.id in failing:
                tally.add("results", failing[row.id], row.id)
                continue
            if player in created and created[player] is not None and row.started_at < created[player]:
                tally.add("results", NOT_BEFORE_PLAYER, row.id)
                continue
            values = {name: getattr(row, name) for name in _RESULT_VALUES}
            entry = {"player_id": player, **values}
            if id_taken:
                result_new.append(entry)
            else:
                result_keep.append({"id": row.id, **entry})
            touched.add(player)
            reapplied_results += 1
            if len(result_samples) < SAMPLES:
                result_samples.append(row.id)
        # Rows keeping their id go in first: an id handed out for a renumbered row must
        # never be one a later kept row needs.
        if len(result_keep) >= PAGE and not dry_run:
            live.execute(results.insert(), result_keep)
            result_keep = []
    if not dry_run:
        if result_keep:
            live.execute(results.insert(), result_keep)
        if result_new:
            live.execute(results.insert(), result_new)

    touched |= set(reapplied_players["ids"])
    if dry_run:
        rebuilt = len(touched)  # what a real run would rebuild
    else:
        rebuilt = rebuild_derived(live, sorted(touched)).players if touched else 0
        _advance_sequences(live, None)
    return SalvageReport(
        source=source_name,
        dry_run=dry_run,
        reapplied={"players": len(reapplied_players["ids"]), "results": reapplied_results},
        sample_ids={"players": tuple(reapplied_players["samples"]), "results": tuple(result_samples)},
        renumbered={"players": reapplied_players["renumbered"], "results": len(result_new)},
        left_out=tally.left_out(),
        rebuilt_players=rebuilt,
        seconds=time.perf_counter() - started,
    )


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
        if source.dialect.name == "postgresql":
            source = source.execution_options(isolation_level="REPEATABLE READ")
        with (reader or live_engine).connect() as live_reader:
            if live_reader.dialect.name == "postgresql":
                live_reader = live_reader.execution_options(isolation_level="REPEATABLE READ")
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
    target = target_of(settings)
    live_identity = _live_identity(settings, target)
    if database is not None:
        if target.kind != POSTGRESQL:
            raise SalvageRefused("--from-database names a PostgreSQL database; this database is SQLite: use --from-backup")
        source = DatabaseTarget(target.url.set(database=database))
        if database == target.url.database:
            raise SalvageRefused(f"--from-database {database} is the live database itself; name the database a restore kept")
        source_identity = _identity_of(settings, source)
        what = f"database {database}"
    else:
        repository = Repository(settings.backups.repository)
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
            return _salvage(settings, target, source, source_name=what, dry_run=dry_run)
    with repository.reading(backup_id, command=command, wait_seconds=lock_wait), writer:
        return _salvage_backup(settings, repository, manifest, dry_run=dry_run)


def salvage_from_backup_locked(settings: Settings, repository: Repository, backup_id: str) -> SalvageReport:
    """The same, for a restore that already holds the locks and the consent."""
    return _salvage_backup(settings, repository, quick_verify(repository, backup_id), dry_run=False)


def salvage_from_database(settings: Settings, database: str) -> SalvageReport:
    """PostgreSQL: salvage from the old live database a restore renamed and kept."""
    target = target_of(settings)
    source = DatabaseTarget(target.url.set(database=database))
    return _salvage(settings, target, source, source_name=f"database {database}", dry_run=False)


def _salvage_backup(settings: Settings, repository: Repository, manifest, *, dry_run: bool) -> SalvageReport:
    from integrity.backups.scratch import restored_copy

    target = target_of(settings)
    with restored_copy(
        repository, manifest, source=target if target.kind == POSTGRESQL else None,
        scratch_dir=settings.state.dir / "scratch", settings=connection_settings(settings),
    ) as copy:
        return _salvage(settings, target, copy.target, source_name=f"backup {manifest.id}", dry_run=dry_run)


def _salvage(settings: Settings, target: DatabaseTarget, source: DatabaseTarget, *, source_name: str, dry_run: bool) -> SalvageReport:
    conn_settings = connection_settings(settings)
    source_engine = create_engine(source, read_only=True, settings=conn_settings)
    reader = create_engine(target, read_only=True, settings=conn_settings)
    try:
        live_engine = reader if dry_run else create_engine(target, settings=conn_settings)
        try:
            return run_salvage(live_engine, source_engine, reader=reader, source_name=source_name, dry_run=dry_run)
        finally:
            live_engine.dispose()
    finally:
        reader.dispose()
        source_engine.dispose()


def _live_identity(settings: Settings, target: DatabaseTarget) -> str | None:
    return _identity_of(settings, target)


def _identity_of(settings: Settings, target: DatabaseTarget) -> str | None:
    engine = create_engine(target, read_only=True, settings=connection_settings(settings))
    try:
        with engine.connect() as connection:
            return store_identity(connection)
    finally:
        engine.dispose()
