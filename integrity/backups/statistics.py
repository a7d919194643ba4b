"""Row counts and cheap exact aggregates of the game tables, taken inside one snapshot.

They go into every manifest (SQLite: from the copy; PostgreSQL: inside the exported
snapshot pg_dump uses) and are compared again after every restore. Only integer
aggregates: they are exact on both engines, where sums of floats would not be.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Connection

# table -> {aggregate name: SQL expression over integer columns}
AGGREGATES: dict[str, dict[str, str]] = {
    "store_identity": {},
    "players": {"max_id": "MAX(id)", "sum_id": "SUM(id)"},
    "results": {
        "max_id": "MAX(id)",
        "sum_player_id": "SUM(player_id)",
        "sum_xp": "SUM(xp)",
        "sum_duration_ms": "SUM(duration_ms)",
        "sum_correct_chars": "SUM(correct_chars)",
    },
    "progress": {"sum_xp": "SUM(xp)", "sum_tests_completed": "SUM(tests_completed)"},
    "personal_bests": {"sum_result_id": "SUM(result_id)"},
}


# table -> the column that says when its newest row was written: a backup whose newest row
# is older than the previous backup's is a stale copy (integrity/backups/plausibility.py).
NEWEST_COLUMNS: dict[str, str] = {"players": "created_at", "results": "created_at", "progress": "updated_at"}


def table_statistics(connection: Connection) -> dict[str, dict]:
    """{table: {"rows": n, "aggregates": {...}, "newest": ISO time or None}} for every game
    table present ("newest" only for the tables of NEWEST_COLUMNS)."""
    inspector = sa.inspect(connection)
    present = set(inspector.get_table_names())
    statistics: dict[str, dict] = {}
    for table, aggregates in AGGREGATES.items():
        if table not in present:
            continue
        columns = {column["name"] for column in inspector.get_columns(table)}
        usable = {name: expr for name, expr in aggregates.items() if expr[expr.index("(") + 1:-1] in columns}
        newest_column = NEWEST_COLUMNS.get(table) if NEWEST_COLUMNS.get(table) in columns else None
        select_list = ", ".join(["COUNT(*)", *(f"{expr}" for expr in usable.values())]
                                + ([f'MAX("{newest_column}")'] if newest_column else []))
        row = connection.execute(sa.text(f'SELECT {select_list} FROM "{table}"')).one()
        values = row[1:1 + len(usable)]
        statistics[table] = {
            "rows": int(row[0]),
            "aggregates": {name: (None if value is None else int(value)) for name, value in zip(usable, values)},
        }
        if newest_column:
            statistics[table]["newest"] = _iso_time(row[-1])
    return statistics


def _iso_time(value) -> str | None:
    """One spelling of a timestamp for both engines (SQLite stores text, PostgreSQL returns
    datetimes), naive values taken as UTC as the game writes them; None when unreadable."""
    if value is None:
        return None
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()


def store_identity(connection: Connection) -> str | None:
    if not sa.inspect(connection).has_table("store_identity"):
        return None
    return connection.execute(sa.text("SELECT identity_uuid FROM store_identity WHERE id = 1")).scalar()


def compare_statistics(expected: dict[str, dict], actual: dict[str, dict]) -> list[str]:
    """Human-readable differences; empty when the restored copy holds what the manifest says."""
    problems = []
    for table, info in expected.items():
        if table not in actual:
            problems.append(f"table {table} is missing")
            continue
        if actual[table]["rows"] != info["rows"]:
            problems.append(f"{table}: {actual[table]['rows']} rows, the manifest says {info['rows']}")
        for name, value in info.get("aggregates", {}).items():
            got = actual[table]["aggregates"].get(name)
            if got != value:
                problems.append(f"{table}.{name} is {got}, the manifest says {value}")
    return problems
