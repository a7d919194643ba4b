"""`integrity snapshot export`: production-shaped data for CI, without production's names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from integrity.commands.params import LockWait, backup_reference

snapshot_app = typer.Typer(help="Production-shaped snapshots for CI: a consistent copy as one file, sanitised.",
                           no_args_is_help=True)


@snapshot_app.command("export")
def export(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", metavar="PATH", help="The file to write (a SQLite database, or on PostgreSQL a pg_dump custom-format archive), or s3://BUCKET/KEY (uploaded whole; [backups.s3] and the AWS variables reach the bucket).")],
    sanitize: Annotated[bool, typer.Option("--sanitize", help="Replace player names and every column marked personal in game_core/schema.py by stable pseudonyms (same length and shape, keys and numbers untouched).")] = False,
    from_backup: Annotated[str | None, typer.Option("--from-backup", metavar="ID|latest", callback=backup_reference, help="Copy this backup instead of live (latest: the newest restorable one).")] = None,
    key_file: Annotated[Path | None, typer.Option("--key-file", metavar="PATH", help="A file holding the pseudonyms' HMAC key (at least 16 bytes), so the same name gets the same pseudonym in every export (default: a random key used once).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace PATH when it exists (atomically: the old file or the new one, never half).")] = False,
    lock_wait: LockWait = 0,
) -> None:
    """Write a consistent copy of the live database (or of a backup) to one file, for a
    CI job to run `integrity migrate dry-run --from-snapshot PATH` on. Live is only read;
    the file appears complete or not at all (temporary name, fsync, rename).

    Example: integrity snapshot export --sanitize --to /tmp/prod-shaped.db

    Exit 0 when written; 2 for a bad --to (a URL, a directory, an existing file without
    --overwrite, the live database) or --key-file; 4 when the source cannot be read (database
    missing, no restorable backup, a marked column missing, tools missing); 5 when the backup
    is corrupt."""
    from integrity import api

    ctx.obj.emit(api.snapshot_export(ctx.obj.invocation(lock_wait=lock_wait), to=to, sanitize=sanitize,
                                     from_backup=from_backup, key_file=key_file, overwrite=overwrite))
