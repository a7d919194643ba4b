"""The keyed walk: two sides of one table in key order, compared a key range at a time.

The sides are two connections (two PostgreSQL databases, or SQLite files that could not
be attached to one connection). Both are read in key order one range at a time (keyset
pagination: every range starts after the last key of the previous one, never OFFSET),
the two sides' queries concurrently (two backends, two cores). The walk yields events
in key order: `Identical` ranges, found equal inside the databases and only counted,
and `Fetched` ranges, whose rows the caller compares; the caller reports how many of
them differed (`report_differing`), which steers the walk.

How a range is found identical (PostgreSQL 14 or newer, `hashing`): both servers sum
`hash_record_extended` over its rows, so a few hundred bytes cross the wire instead of
the rows. A differing range goes unseen only if the sums of its hashes collide, about
one chance in 2**64 per range.
- One integer key (`buckets`): a page that differs comes back as per-bucket sums
  (2**BUCKET_BITS consecutive key values, at most 256 rows: the keys are unique) and
  only differing buckets are fetched: every row is hashed about once, however thinly
  changes are spread. A page after one without differences is summed whole first.
- Any other key: a page whose sums differ is narrowed step by step (down to FETCH_MIN
  rows) before its rows are fetched, and grows back after identical pages.
- Either way, when most fetched rows differ (a column rewritten everywhere), hashing
  first only adds work: pages are fetched directly, growing, until that stops.
Without hashes (an older server, SQLite) every range is fetched: exact, only slower.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from integrity.tablediff.keyset import keyset_range
from integrity.tablediff.values import same_key

# The smallest page a differing page is narrowed to before its rows are fetched.
FETCH_MIN = 64
# One integer key: a page's hashes are summed per bucket of 2**BUCKET_BITS consecutive
# key values, so a differing page names its differing buckets at once.
BUCKET_BITS = 8
# PostgreSQL 14 added hash_record_extended.
_HASH_MAJOR = 14
# Pages must come from the key's index in key order. A copy restored from a dump has no
# statistics yet, and the planner then sorts the whole table for every page; disabled
# plans cost 10**10, which would make every page query pay a JIT compilation (0.4 s
# here) too. Set for the walk's queries only (SET LOCAL, put back when it ends).
_PLANNER_SETTINGS = ("enable_seqscan", "enable_bitmapscan", "jit")


def hashing_available(*connections: Connection) -> bool:
    """Whether every side can sum record hashes (PostgreSQL 14 or newer)."""
    for connection in connections:
        version = connection.dialect.server_version_info
        if connection.dialect.name != "postgresql" or not version or version[0] < _HASH_MAJOR:
            return False
    return True


def key_collation(a: Connection, b: Connection) -> str | None:
    """Key ranges must hold the same keys on both sides: when two PostgreSQL databases
    sort text differently, text keys are compared byte-wise ("C") on both."""
    if a.dialect.name != "postgresql":
        return None
    query = sa.text("SELECT datcollate FROM pg_database WHERE datname = current_database()")
    return None if a.execute(query).scalar() == b.execute(query).scalar() else "C"


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class Identical:
    """Keys in (after, upto] hold the same rows on both sides (upto None: to the end)."""

    after: tuple | None
    upto: tuple | None
    rows: int  # on each side
    extras: tuple[int, ...]  # side a's counts of its `extras` conditions over the range


@dataclass(frozen=True)
class Fetched:
    """Both sides' rows with keys in (after, upto], in key order, as the driver returned
    them (Side.fetched columns)."""

    after: tuple | None
    upto: tuple | None
    rows_a: list[tuple]
    rows_b: list[tuple]


# ---------------------------------------------------------------- one side's SQL


@dataclass(frozen=True)
class _Summary:
    rows: int
    digest: Any  # the sum of the page's row hashes (None when not hashed)
    last: tuple | None  # the page's last key
    extras: tuple[int, ...] = ()


@dataclass(frozen=True)
class _Bucket:
    number: int
    rows: int
    digest: Any
    last: int
    extras: tuple[int, ...]


class Side:
    """SQL for one side of the walk: pages, ranges, counts and row fetches in key order.

    `keys` are the key's SQL expressions (quoted, collated); `columns` the columns a page
    exposes to `hashed` and `extras` as c0, c1, ...; `fetched` the expressions a fetched
    row holds, over the table's own columns. Rows with a NULL in a key column
    (`nullable_key`) match nothing: the walk never sees them (see `null_keys`)."""

    def __init__(self, connection: Connection, table: str, keys: Sequence[str], *, columns: Sequence[str],
                 fetched: Sequence[str], hashed: Sequence[str] | None = None, extras: Sequence[str] = (),
                 nullable_key: bool = False):
        self.connection = connection
        self.table = table
        self.keys = list(keys)
        self.columns = list(columns)
        self.hashed = list(hashed) if hashed is not None else [f"c{index}" for index in range(len(columns))]
        self.fetched = list(fetched)
        self.extras = list(extras)
        self.not_null = " AND ".join(f"{k} IS NOT NULL" for k in self.keys) if nullable_key else ""

    def where(self, after: tuple | None, upto: tuple | None, params: dict) -> str:
        parts = [self.not_null] if self.not_null else []
        return " AND ".join(parts + keyset_range(self.keys, after, upto, params)) or "1 = 1"

    def _page(self, after: tuple | None, params: dict, *, hashed: bool) -> str:
        """The next :limit rows after `after` as k0.. (keys) and c0.. (columns): the
        hashes are computed over this limited page, never over rows a sort would discard."""
        where = self.where(after, None, params)
        selected = [f"{k} AS k{index}" for index, k in enumerate(self.keys)]
        if hashed:
            selected += [f"{column} AS c{index}" for index, column in enumerate(self.columns)]
        return f"SELECT {', '.join(selected)} FROM {self.table} WHERE {where} ORDER BY {', '.join(self.keys)} LIMIT :limit"

    def _hash(self) -> str:
        return f"COALESCE(SUM(hash_record_extended(ROW({', '.join(self.hashed)}), 0)), 0)"

    def summary(self, after: tuple | None, limit: int, *, hashed: bool) -> _Summary:
        """The next `limit` rows after `after`: how many, their last key, and (hashed) the
        sum of their row hashes and the extra counts."""
        params: dict[str, Any] = {"limit": limit}
        page = self._page(after, params, hashed=hashed)
        aliases = [f"k{index}" for index in range(len(self.keys))]
        aggregates = ["COUNT(*)"]
        if hashed:
            aggregates.append(self._hash())
            aggregates += [f"COUNT(*) FILTER (WHERE {extra})" for extra in self.extras]
        if len(aliases) == 1:
            # One key column: its MAX is the page's last key, in the same scan.
            query = f"SELECT {', '.join(aggregates)}, MAX(k0) FROM ({page}) AS page"
        else:
            # DESC must apply to every key column, not only the last one.
            descending = ", ".join(f"{alias} DESC" for alias in aliases)
            query = (
                f"WITH page AS ({page}) SELECT {', '.join(f'totals.t{i}' for i in range(len(aggregates)))}, "
                f"{', '.join(f'last.{alias}' for alias in aliases)} "
                f"FROM (SELECT {', '.join(f'{a} AS t{i}' for i, a in enumerate(aggregates))} FROM page) AS totals "
                f"LEFT JOIN (SELECT {', '.join(aliases)} FROM page ORDER BY {descending} LIMIT 1) AS last ON 1 = 1"
            )
        row = self.connection.execute(sa.text(query), params).one()
        rows = int(row[0])
        last = tuple(row[len(aggregates):]) if rows else None
        if not hashed:
            return _Summary(rows, None, last)
        return _Summary(rows, row[1], last, tuple(int(value) for value in row[2:len(aggregates)]))

    def buckets(self, after: tuple | None, limit: int, bits: int) -> list[_Bucket]:
        """One integer key: the next page of `limit` rows as per-bucket sums, in order."""
        params: dict[str, Any] = {"limit": limit}
        page = self._page(after, params, hashed=True)
        # Each row's hash first, behind OFFSET 0 (the planner would otherwise flatten the
        # subquery and group whole rows, sorting them on disk): the grouping then sees
        # narrow rows, about a third faster.
        hashed = (
            f"SELECT k0 >> {bits} AS bucket, k0, hash_record_extended(ROW({', '.join(self.hashed)}), 0) AS h"
            + "".join(f", ({extra}) AS e{index}" for index, extra in enumerate(self.extras))
            + f" FROM ({page}) AS page OFFSET 0"
        )
        extras = "".join(f", COUNT(*) FILTER (WHERE e{index})" for index in range(len(self.extras)))
        result = self.connection.execute(sa.text(
            f"SELECT bucket, COUNT(*), SUM(h), MAX(k0){extras} FROM ({hashed}) AS hashed GROUP BY 1 ORDER BY 1"
        ), params)
        try:
            return [_Bucket(row[0], row[1], row[2], row[3], tuple(row[4:])) for row in result.cursor.fetchall()]
        finally:
            result.close()

    def count(self, after: tuple | None, upto: tuple | None, cap: int) -> int:
        """Rows in the range, counting at most `cap` of them."""
        params: dict[str, Any] = {"cap": cap}
        where = self.where(after, upto, params)
        return int(self.connection.execute(sa.text(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM {self.table} WHERE {where} LIMIT :cap) AS capped"
        ), params).scalar_one())

    def rows(self, after: tuple | None, upto: tuple | None) -> list[tuple]:
        params: dict[str, Any] = {}
        where = self.where(after, upto, params)
        result = self.connection.execute(sa.text(
            f"SELECT {', '.join(self.fetched)} FROM {self.table} WHERE {where} ORDER BY {', '.join(self.keys)}"
        ), params)
        # Plain tuples straight from the driver: SQLAlchemy's Row objects would cost a
        # third of the fetch, and a text() query has no result processing to skip.
        try:
            return result.cursor.fetchall()
        finally:
            result.close()

    def keys_where(self, after: tuple | None, upto: tuple | None, condition: str, limit: int) -> list[tuple]:
        params: dict[str, Any] = {"limit": limit}
        where = self.where(after, upto, params)
        return [tuple(row) for row in self.connection.execute(sa.text(
            f"SELECT {', '.join(self.keys)} FROM {self.table} WHERE {where} AND ({condition}) "
            f"ORDER BY {', '.join(self.keys)} LIMIT :limit"
        ), params)]

    def null_keys(self, limit: int) -> tuple[int, list[tuple]]:
        """Rows with a NULL key column: how many, and the first `limit` keys of them."""
        if not self.not_null:
            return 0, []
        condition = " OR ".join(f"{k} IS NULL" for k in self.keys)
        count = int(self.connection.execute(sa.text(
            f"SELECT COUNT(*) FROM {self.table} WHERE {condition}"
        )).scalar_one())
        samples = [tuple(row) for row in self.connection.execute(sa.text(
            f"SELECT {', '.join(self.keys)} FROM {self.table} WHERE {condition} ORDER BY {', '.join(self.keys)} LIMIT :limit"
        ), {"limit": limit})] if count else []
        return count, samples


# ---------------------------------------------------------------- the walk


class Walk:
    """Iterating yields `Identical` and `Fetched` events in key order. After each
    `Fetched`, tell the walk how many of its rows differ with `report_differing`."""

    def __init__(self, a: Side, b: Side, *, page_size: int, hashing: bool, buckets: bool,
                 same: Callable[[tuple | None, tuple | None], bool] = same_key):
        self.a, self.b = a, b
        self.page_size = page_size
        self.hashing = hashing
        self.use_buckets = hashing and buckets
        self.same = same
        self._differing = 0

    def report_differing(self, rows: int) -> None:
        self._differing = rows

    def __iter__(self) -> Iterator[Identical | Fetched]:
        postgres = self.a.connection.dialect.name == "postgresql"
        if postgres:
            self._planner(lambda name: "off")
        # One worker: side a's query runs in it while this thread runs side b's.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tablediff") as pool:
            self._pool = pool
            try:
                yield from (self._by_buckets() if self.use_buckets else self._by_pages())
            except GeneratorExit:
                # The caller stopped early: put the settings back if the transactions let us
                # (an aborted one refuses, and ends with the settings when rolled back).
                if postgres:
                    try:
                        self._planner(lambda name: "DEFAULT")
                    except sa.exc.DBAPIError:
                        pass
                raise
        if postgres:
            self._planner(lambda name: "DEFAULT")

    def _planner(self, value: Callable[[str], str]) -> None:
        for connection in (self.a.connection, self.b.connection):
            for name in _PLANNER_SETTINGS:
                connection.execute(sa.text(f"SET LOCAL {name} TO {value(name)}"))

    def _both(self, on_a: Callable[[], Any], on_b: Callable[[], Any]) -> tuple[Any, Any]:
        future = self._pool.submit(on_a)
        try:
            result_b = on_b()
        finally:
            result_a = future.result()  # never leave a query running on a connection
        return result_a, result_b

    def _pages(self, after: tuple | None, size: int, *, hashed: bool) -> tuple[_Summary, _Summary]:
        return self._both(lambda: self.a.summary(after, size, hashed=hashed),
                          lambda: self.b.summary(after, size, hashed=hashed))

    def _same(self, page_a: _Summary, page_b: _Summary) -> bool:
        return (page_a.rows, page_a.digest) == (page_b.rows, page_b.digest) and self.same(page_a.last, page_b.last)

    def _fetch(self, after: tuple | None, upto: tuple | None) -> Generator[Fetched, None, tuple[int, int]]:
        """Yield one range's rows; return (the rows the caller reported differing, the
        larger side's rows)."""
        rows_a, rows_b = self._both(lambda: self.a.rows(after, upto), lambda: self.b.rows(after, upto))
        self._differing = 0
        yield Fetched(after, upto, rows_a, rows_b)
        return self._differing, max(len(rows_a), len(rows_b))

    def _upto(self, after: tuple | None, page_a: _Summary, page_b: _Summary, size: int) -> tuple | None:
        """The end of the next range to fetch: at most `size` rows of either side in it."""
        full_a, full_b = page_a.rows >= size, page_b.rows >= size
        if not full_a and not full_b:
            return None
        if not full_a:
            return page_b.last
        if not full_b:
            return page_a.last
        if self.same(page_a.last, page_b.last):
            return page_a.last
        # Which key comes first is the database's question (its collation), not Python's.
        return page_b.last if self.a.count(after, page_b.last, size) < size else page_a.last

    @staticmethod
    def _dense(differing: int, rows: int) -> bool:
        """Most rows differ (a column rewritten everywhere): hashing first only adds work."""
        return differing * 2 > rows

    def _by_pages(self) -> Iterator[Identical | Fetched]:
        cursor: tuple | None = None
        size = self.page_size
        dense = not self.hashing
        while True:
            page_a, page_b = self._pages(cursor, size, hashed=not dense)
            if not dense:
                if self._same(page_a, page_b):
                    if page_a.rows:
                        yield Identical(cursor, page_a.last, page_a.rows, page_a.extras)
                    if page_a.rows < size:
                        return
                    cursor = page_a.last
                    size = min(self.page_size, size * 2)
                    continue
                if size > FETCH_MIN:
                    # Narrow in the databases before fetching: a single changed row then
                    # costs a few small fetches, not whole pages through Python.
                    size = max(FETCH_MIN, size // 8)
                    continue
            upto = self._upto(cursor, page_a, page_b, size)
            differing, rows = yield from self._fetch(cursor, upto)
            if self.hashing:
                dense = self._dense(differing, rows)
                if dense:
                    size = min(self.page_size, size * 2)
            if upto is None:
                return
            cursor = upto

    def _by_buckets(self) -> Iterator[Identical | Fetched]:
        """Every row is hashed about once, however thinly the changes are spread. Each
        page comes back as per-bucket sums from both servers at once; the buckets below
        the end of the shorter page are compared, runs of identical buckets are counted,
        and only differing buckets are fetched. After a page without differences the
        next is first summed whole (one sum is cheaper than grouping into buckets, and
        most pages of two copies are identical); only if it differs are its buckets summed."""
        bits = BUCKET_BITS
        width = 1 << bits
        size = self.page_size
        after: tuple | None = None
        dense = False
        whole_first = True
        while True:
            if dense:
                page_a, page_b = self._pages(after, size, hashed=False)
                upto = self._upto(after, page_a, page_b, size)
                differing, rows = yield from self._fetch(after, upto)
                dense = self._dense(differing, rows)
                if upto is None:
                    return
                after = upto
                continue
            if whole_first:
                page_a, page_b = self._pages(after, size, hashed=True)
                if self._same(page_a, page_b):
                    if page_a.rows:
                        yield Identical(after, page_a.last, page_a.rows, page_a.extras)
                    if page_a.rows < size:
                        return
                    after = page_a.last
                    continue
            page_a, page_b = self._both(lambda: self.a.buckets(after, size, bits), lambda: self.b.buckets(after, size, bits))
            # A side whose page is full may hold more rows past its last key; one that is
            # not has reached its end. Only keys up to the smaller full page's end are
            # known on both sides.
            ends = [page[-1].last for page in (page_a, page_b) if sum(b.rows for b in page) >= size]
            cut = (min(ends) >> bits) if ends else None
            if cut is not None and not any(b.number < cut for b in page_a + page_b):
                # The page covers less than one whole bucket: compare its rows directly
                # (at most a page per side up to that end).
                upto = (min(ends),)
                yield from self._fetch(after, upto)
                after = upto
                continue
            sums_a, sums_b = ({b.number: b for b in page if cut is None or b.number < cut} for page in (page_a, page_b))
            run_after, run_rows, run_extras = after, 0, [0] * len(self.a.extras)
            page_rows = max(sum(b.rows for b in sums_a.values()), sum(b.rows for b in sums_b.values()))
            differing = differing_buckets = 0
            for number in sorted(sums_a.keys() | sums_b.keys()):
                bucket_a, bucket_b = sums_a.get(number), sums_b.get(number)
                if bucket_a and bucket_b and (bucket_a.rows, bucket_a.digest) == (bucket_b.rows, bucket_b.digest):
                    run_rows += bucket_a.rows
                    run_extras = [total + count for total, count in zip(run_extras, bucket_a.extras)]
                    continue
                start = (number * width - 1,)  # keys > start: the bucket's first key
                lower = after if after is not None and after[0] > start[0] else start
                if run_rows:
                    yield Identical(run_after, lower, run_rows, tuple(run_extras))
                upper = (number * width + width - 1,)
                found, _rows = yield from self._fetch(lower, upper)
                differing += found
                differing_buckets += 1
                run_after, run_rows, run_extras = upper, 0, [0] * len(self.a.extras)
            end = None if cut is None else (cut * width - 1,)
            if run_rows:
                yield Identical(run_after, end, run_rows, tuple(run_extras))
            dense = self._dense(differing, page_rows)
            whole_first = not differing_buckets
            if end is None:
                return
            after = end
