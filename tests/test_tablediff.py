"""The one table differ's walk, where the two differs it replaced behaved differently.

Two PostgreSQL databases (the second a TEMPLATE copy of the first) are changed on
purpose and compared through both front ends, with every statement sent recorded:
- a server older than 14 (no hash_record_extended) is compared by fetching rows, with
  the same answers, by both (the migration diff used to refuse);
- one integer key is walked by per-bucket hash sums, so changes spread thinly over a
  table cost at most two hashed queries per page, also in the migration diff (which
  used to narrow and re-hash every page that held a change);
- when most of a page differs, later pages are fetched directly instead of hashed, also
  in the backup-vs-live diff (which used to hash every page).
"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from backup_helpers import execute, fill_database, scalar
from game_core.db import create_engine
from integrity.migrate.observe import capture_schema
from integrity.tablediff import migration, walk
from integrity.tablediff.backup_live import diff_table
from integrity.tablediff.migration import diff_table_content

pytestmark = pytest.mark.postgres

ROWS = 3000
NUMBERS = f"""
CREATE TABLE numbers (id INTEGER PRIMARY KEY, amount NUMERIC(9, 2) NOT NULL, label TEXT NOT NULL);
INSERT INTO numbers SELECT i, i / 4.0, 'n' || i FROM generate_series(1, {ROWS}) AS i;
"""


@pytest.fixture
def twins(pg_admin, pg_url):
    """(a URL, b URL): the game's tables with data and a table of numbers, twice."""
    fill_database(pg_url, players=4, results_per_player=24, seed=11)
    execute(pg_url, *(s for s in NUMBERS.split(";\n") if s.strip()))
    from conftest import drop_pg_database, pg_url_for

    name = f"tg_twin_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{sa.make_url(pg_url).database}"'))
    yield pg_url, pg_url_for(name)
    drop_pg_database(pg_admin, name)


class Recorded:
    """Both engines, read-only, with every statement each sends; `server` pretends the
    servers are of another major version (what the differ sees of them)."""

    def __init__(self, urls: tuple[str, str], server: tuple[int, ...] | None = None):
        self.engines = [create_engine(url, read_only=True) for url in urls]
        self.statements: list[list[str]] = [[], []]
        for engine, sent in zip(self.engines, self.statements):
            if server is not None:
                engine.dialect.server_version_info = server
            sa.event.listen(engine, "before_cursor_execute",
                            lambda conn, cursor, statement, *rest, sent=sent: sent.append(statement))

    def hashed(self, side: int) -> list[str]:
        return [s for s in self.statements[side] if "hash_record_extended" in s]

    def dispose(self) -> None:
        for engine in self.engines:
            engine.dispose()


def _content(urls, server=None, **options):
    recorded = Recorded(urls, server)
    try:
        before, after = recorded.engines
        shapes = []
        for engine in (before, after):
            with engine.connect() as connection:
                shapes.append(capture_schema(connection).tables["numbers"])
        for sent in recorded.statements:
            sent.clear()
        result = diff_table_content(before, after, "numbers", before_shape=shapes[0], after_shape=shapes[1], **options)
        return result, recorded
    finally:
        recorded.dispose()


def _rows(urls, table, server=None, **options):
    recorded = Recorded(urls, server)
    try:
        live, backup = recorded.engines
        with live.connect() as live_connection, backup.connect() as backup_connection:
            return diff_table(live_connection, backup_connection, table, **options), recorded
    finally:
        recorded.dispose()


def _comparable(result) -> tuple:
    return (result.lost, result.added, result.changed, result.lost_samples, result.added_samples,
            tuple((c.column, c.changed, c.kinds, c.samples) for c in result.columns), result.rows_before, result.rows_after)


def test_a_server_older_than_14_is_compared_by_its_rows_with_the_same_answer(twins):
    a, b = twins
    execute(b, "UPDATE numbers SET amount = round(amount) WHERE id % 500 = 3",
            "DELETE FROM numbers WHERE id = 2000", "UPDATE results SET xp = xp + 5 WHERE id % 10 = 1")
    hashed, recorded = _content((a, b))
    assert recorded.hashed(0) and recorded.hashed(1)  # 15 sums hashes
    old, recorded = _content((a, b), server=(13, 14))
    assert _comparable(old) == _comparable(hashed)
    assert (old.lost, old.changed, old.columns[0].kinds) == (1, 6, {"precision_lost": 6})
    assert recorded.hashed(0) == recorded.hashed(1) == []

    rows_hashed, recorded = _rows((a, b), "results")
    assert recorded.hashed(0)
    rows_old, recorded = _rows((a, b), "results", server=(13, 14))
    assert rows_old == rows_hashed and rows_old.changed == scalar(a, "SELECT COUNT(*) FROM results WHERE id % 10 = 1") > 0
    assert recorded.hashed(0) == recorded.hashed(1) == []


def test_an_integer_key_is_summed_by_bucket_however_spread_the_changes(twins, monkeypatch):
    a, b = twins
    monkeypatch.setattr(migration, "PAGE_SIZE", 1000)
    spread = [i for i in range(1, ROWS + 1) if i % 997 == 0]
    execute(b, "UPDATE numbers SET label = label || '!' WHERE id % 997 = 0")
    result, recorded = _content((a, b), sample_limit=5)
    (label,) = result.columns
    assert (result.changed, label.column, label.kinds, label.samples) == (
        len(spread), "label", {"rewritten": len(spread)}, tuple(f"id={i}" for i in spread))
    # Pages of 1,000 keys end inside a bucket of 256 (each page's sums stop at its last
    # whole bucket): 3,000 rows take four pages. A page after one without differences is
    # summed whole first, and by bucket only when it differs: at most twice, never more.
    for side in (0, 1):
        assert len(recorded.hashed(side)) <= 2 * 4, recorded.hashed(side)
        assert sum(">> 8" in statement for statement in recorded.hashed(side)) == 4


def test_pages_that_mostly_differ_are_fetched_without_hashing(twins, monkeypatch):
    a, b = twins
    monkeypatch.setattr(walk, "BUCKET_BITS", 2)
    results = 4 * 24
    execute(b, "UPDATE results SET xp = xp + 1")
    found, recorded = _rows((a, b), "results", batch_size=16)
    assert (found.changed, found.changed_columns, found.live_rows) == (results, {"xp": results}, results)
    # The first page (summed whole, then by bucket) differs in every bucket: from then on
    # pages are fetched directly.
    assert len(recorded.hashed(0)) == len(recorded.hashed(1)) == 2

    execute(b, "UPDATE numbers SET amount = amount + 1")
    monkeypatch.setattr(migration, "PAGE_SIZE", 500)
    changed, recorded = _content((a, b))
    assert (changed.changed, changed.columns[0].kinds) == (ROWS, {"rewritten": ROWS})
    assert len(recorded.hashed(0)) == len(recorded.hashed(1)) == 2
