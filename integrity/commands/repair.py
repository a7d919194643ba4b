"""`integrity repair progress`: rebuild the derived tables from `results`."""

from __future__ import annotations

from typing import Annotated

import typer

from integrity.commands.params import LockWait, Yes

repair_app = typer.Typer(help="Repair derived data from the source of truth.", no_args_is_help=True)


@repair_app.command("progress")
def progress(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Open the database read-only and print what would change per player; write nothing.")] = False,
    yes: Yes = False,
    lock_wait: LockWait = 0,
) -> None:
    """Rebuild progress and personal_bests from results, for the players whose caches are wrong.

    Exit 0 when nothing needed a change or the repair was applied, 3 when a --dry-run found
    changes, 4 without consent (--no-input needs --yes) or when the writer lock is held."""
    from integrity import api

    ctx.obj.emit(api.repair_progress(ctx.obj.invocation(lock_wait=lock_wait, yes=yes), dry_run=dry_run))
