"""The one row differ: two copies of a table compared by key, without loading either.

Front ends (what callers import):
- `backup_live`: two copies of the game database at one revision, by primary key, row
  differences with both rows (`integrity diff`, restore plans, salvage, drills).
- `migration`: a table before and after a migration, whose columns and types may have
  changed: lost, added and changed rows, each changed value classified (`migrate dry-run`).

Underneath, shared by both:
- `walk`: the keyed walk over two connections (PostgreSQL; SQLite files that cannot be
  attached): keyset pages, record hashes summed per bucket of an integer key or per
  page, narrowing, fetching directly while most rows differ, both sides concurrently.
- `sqlite_attach`: the other SQLite file attached read-only, for set-based SQL.
- `keyset`, `values` (canonical values and per-type normalisation), `changes` (the
  kinds of a changed value, in SQL and in Python).

The fastest path of each engine is kept (bench/recovery.py measures `integrity diff` on
both engines, bench/dry_run.py the dry run on SQLite). SQLite: the other file attached
and compared in set-based SQL, as both did (a join on the key compares over a million
rows per second; fetching both sides into Python tops out near 200,000 per side); each
front end asks the join its own question. PostgreSQL, taking the faster half of each:
bucket sums for one integer key, as the backup-vs-live diff had (every row hashed about
once, however thinly changes are spread; the dry run re-hashed a page at every
narrowing step), a page after an identical one summed whole first, as the dry run's
pages were (one sum is cheaper than grouping into buckets), its switch to fetching pages
directly while most fetched rows differ (a column rewritten everywhere), and its planner
settings that keep pages on the key's index when a restored copy has no statistics yet.
Measured on a 600,000-result simulated database, neither caller got slower.

Where the two differs diverged, one behaviour now:
- PostgreSQL older than 14 (no `hash_record_extended`): both compare by fetching every
  range's rows, exact and slower; the dry run used to refuse. DESIGN and PITFALLS name
  no minimum server version (the README measures on 15), and a recovery tool that
  refuses to compare in an emergency is worse than a slow one. The fallback is no extra
  path: it is the walk's fetch-directly mode, which every server runs whenever most
  rows differ.
- Text keys of two databases that sort text differently are walked in "C" order on both
  sides (the dry run assumed one collation).
"""
