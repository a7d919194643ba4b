"""`integrity drill`: rehearse a restore on a scratch copy and predict a real one's time.

A plain function, registered as a top-level command by `integrity.cli`."""

from __future__ import annotations

from typing import Annotated

import typer

from integrity.commands.params import LockWait, backup_reference

def drill(
    ctx: typer.Context,
    backup_id: Annotated[
        str | None,
        typer.Option("--backup", metavar="ID", callback=backup_reference, help="The backup to drill (default: the newest good backup of this database)."),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option("--at", metavar="TIME", help="Drill the point-in-time archive ([pitr]) at TIME instead of a backup: a UTC time (2026-12-07T12:00:00Z; without an offset it is UTC) or a time ago (90s ago, 10 minutes ago), or `random`: a moment drawn from the archive's window."),
    ] = None,
    from_repository: Annotated[
        str | None,
        typer.Option("--from", metavar="NAME", help="Drill a backup of this repository: primary or a [[repositories]] copy's name."),
    ] = None,
    alternate: Annotated[bool, typer.Option("--alternate", help="The repository whose turn it is: primary and each copy in rotation, one per [schedule] drill interval (the scheduled drill).")] = False,
    lock_wait: LockWait = 0,
) -> None:
    """Restore a backup into scratch (never touching live), verify and audit it, compare it
    with live, and predict a full restore's time against [objectives] rto_seconds. Exit 0
    when all passed and the RTO and RPO hold, 5 when the restore or a check failed, 3 when
    an objective was missed or the data is dirty. With --at the point-in-time archive is
    restored at that moment instead (exit 4 when it is outside the archive's window)."""
    from integrity import api

    ctx.obj.emit(api.drill(ctx.obj.invocation(lock_wait=lock_wait), backup_id=backup_id, at=at,
                           from_repository=from_repository, alternate=alternate))
