"""`integrity diff ID|latest`: what differs between a backup and the live database."""

from __future__ import annotations

from typing import Annotated

import typer

from integrity.commands.params import MAX_ROWS_SHOWN, LockWait, backup_reference

diff_app = typer.Typer()  # added without a name: `diff` is a top-level command


@diff_app.command("diff")
def diff(
    ctx: typer.Context,
    backup: Annotated[str, typer.Argument(metavar="ID|latest", callback=backup_reference, help="A backup id (`integrity backup list`), or latest: the newest good backup of this database.")],
    table: Annotated[list[str] | None, typer.Option("--table", metavar="TABLE", help="Only this table (repeatable); default: every game table.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=0, max=MAX_ROWS_SHOWN, metavar="N", help="Sample keys shown per table and kind of difference.")] = 10,
    lock_wait: LockWait = 0,
) -> None:
    """Compare a backup with the live database, per table and keyed by primary key: rows only
    in live (what a restore would lose), only in the backup, and changed (with the columns).
    Live is only read; the backup is verified, restored into scratch and removed afterwards.

    Exit 0 when they are identical; 3 when differences were found (the check ran and found
    problems); 4 for an unknown backup or table, a backup of another store or engine, a held
    lock, or a live database with no game schema or at a revision this code does not know (or
    none); 5 when the backup is corrupt."""
    from integrity import api

    ctx.obj.emit(api.diff(ctx.obj.invocation(lock_wait=lock_wait), backup=backup, tables=table, sample_limit=limit))
