"""Production-shaped snapshots for CI (issue 18): `export` writes a consistent copy of live
or of a backup as one file, `sanitize` replaces the personal columns (marked in
game_core.schema) by `pseudonyms`, and `export.opened_snapshot` turns such a file back into
a dry run's source."""
