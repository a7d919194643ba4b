"""The one way to each database (DESIGN.md section 2).

Nothing else in `integrity/` opens a database: the guarded one (a read-only snapshot, or
the one writer for the commands invariant 1 allows), scratch and staging copies, the
maintenance database and the ledger all open here, on `game_core.db`'s connect hook, as
context managers that dispose their engine on the way out.

- `connect`: `Database` (reader, snapshot, writer), `maintenance`, `ledger_engine`.
- `sql`: `quote`, `unquote`, `error_reason`, row counts.
- `locks`: the one-writer-per-database lock.
- `claims`: the claim lifecycle of scratch files and databases.
- `engines`: the engine protocol (backup, restore-into, stage, swap, snapshot copies) and
  `engine_for`; its SQLite and PostgreSQL mechanics in `sqlite_backup`, `sqlite_swap`,
  `sqlite_snapshot`, `postgres_backup`, `postgres_swap`, `postgres_snapshot`, `pg_tools`
  and `scratch`.
"""
