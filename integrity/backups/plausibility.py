"""Is a new backup plausible? Checked when it is taken, recorded in its manifest.

A backup can be intact (every hash right) and still useless: a schema-only dump from a
misconfigured `pg_dump`, a copy of an emptied or stale database file, a database other
than the one that was backed up before. The original incident's backups were exactly
that, and nothing said so until they were needed. A backup that fails one of these checks
is *suspect*: kept, listed with its reasons, but never `latest`, never good for the RPO.

Compared with the previous backup of the same store:
- the source (SQLite path; PostgreSQL host, port, database and server system identifier)
  against the previous backup's, whatever that one's state: after a deliberate move only
  the first backup from the new place is suspect;
- row counts per table and the data size against the previous *restorable* backup
  (`[backups] shrink_tolerance`, `size_drop_tolerance`);
- each table's newest row against the previous restorable backup's newest: older data
  than a backup already taken is a stale copy.
And on its own: every table that holds rows must have data in the backup (a dump
without a table's data says nothing of that table).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from integrity.backups.repository import Manifest, Repository


@dataclass(frozen=True)
class Tolerances:
    shrink: float  # a table losing more than this share of its rows
    size_drop: float  # the uncompressed data shrinking by more than this share


def raw_size(manifest_files: Iterable) -> int:
    return sum(entry.raw_size for entry in manifest_files)


def assess_against_repository(backups_settings, repository: Repository, *, identity: str | None, tables: dict,
                              files: Iterable, source: dict, tables_without_data: Iterable[str] = ()) -> list[str]:
    """`assess` with the previous backups of the same store in `repository` (`backup create`
    before its manifest is written; `backup check` for its trial backup)."""
    from integrity.backups.catalog import read_catalog

    store = [b for b in read_catalog(repository).of_store(identity).backups if b.manifest_problem is None] if identity else []
    previous_any = next((b for b in reversed(store) if not b.safety and b.state.intact), None)
    previous_restorable = next((b for b in reversed(store) if b.restorable), None)
    return assess(
        tables=tables,
        data_size=raw_size(files),
        source=source,
        previous_restorable=repository.read_manifest(previous_restorable.id) if previous_restorable else None,
        previous_any=repository.read_manifest(previous_any.id) if previous_any else None,
        tolerances=Tolerances(shrink=backups_settings.shrink_tolerance, size_drop=backups_settings.size_drop_tolerance),
        tables_without_data=tables_without_data,
    )


def assess(
    *,
    tables: dict[str, dict],
    data_size: int,
    source: dict,
    previous_restorable: Manifest | None,
    previous_any: Manifest | None,
    tolerances: Tolerances,
    tables_without_data: Iterable[str] = (),
) -> list[str]:
    """The reasons a backup with these facts is implausible (empty: plausible)."""
    reasons = [
        f"{table}: the backup holds no data for its {_rows(tables[table]['rows'])} (a schema-only or filtered dump?)"
        for table in sorted(tables_without_data)
        if tables.get(table, {}).get("rows")
    ]
    if previous_any is not None and previous_any.source and source and _differs(previous_any.source, source):
        reasons.append(
            f"taken from {_describe(source)}, the previous backup {previous_any.id} from {_describe(previous_any.source)}"
        )
    if previous_restorable is None:
        return reasons
    before = previous_restorable.tables
    for table, info in sorted(before.items()):
        now = tables.get(table)
        if now is None:
            if info.get("rows"):
                reasons.append(f"{table}: missing (it held {info['rows']:,} rows in backup {previous_restorable.id})")
            continue
        if info.get("rows") and now["rows"] < info["rows"] * (1 - tolerances.shrink):
            reasons.append(
                f"{table}: {info['rows']:,} -> {now['rows']:,} rows since backup {previous_restorable.id} "
                f"(more than shrink_tolerance {tolerances.shrink:.0%})"
            )
        newest_before, newest_now = info.get("newest"), now.get("newest")
        if newest_before and newest_now and newest_now < newest_before:  # an emptied table: the drop above says it
            reasons.append(
                f"{table}: newest row {newest_now or 'none'} is older than backup {previous_restorable.id}'s "
                f"{newest_before} (a stale copy?)"
            )
    before_size = raw_size(previous_restorable.files)
    if before_size and data_size < before_size * (1 - tolerances.size_drop):
        reasons.append(
            f"data {_size(before_size)} -> {_size(data_size)} since backup {previous_restorable.id} "
            f"(more than size_drop_tolerance {tolerances.size_drop:.0%})"
        )
    return reasons


def _rows(count: int) -> str:
    return f"{count:,} row" + ("" if count == 1 else "s")


def _size(count: int) -> str:
    return f"{count / 1e6:,.1f} MB" if count >= 1e6 else f"{count / 1e3:,.1f} kB"


def _differs(before: dict, now: dict) -> bool:
    """Only facts both sides recorded count (a server that hides its system identifier
    from this role must not make every backup suspect)."""
    return any(before.get(key) is not None and now.get(key) is not None and before[key] != now[key]
               for key in set(before) | set(now))


def _describe(source: dict) -> str:
    if "path" in source:
        return str(source["path"])
    text = f"{source.get('host') or 'local socket'}:{source.get('port') or 5432}/{source.get('database')}"
    if source.get("system_identifier"):
        text += f" (system {source['system_identifier']})"
    return text
