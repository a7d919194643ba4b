"""`integrity repair progress`: rebuild the derived tables from `results`."""

from __future__ import annotations

from typing import Annotated

import typer

from integrity.commands.params import MAX_LOCK_WAIT_SECONDS

repair_app = typer.Typer(help="Repair derived data from the source of truth.", no_args_is_help=True)


@repair_app.command("progress")
def progress(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Open the database read-only and print what would change per player; write nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Consent without the typed confirmation (required with --no-input).")] = False,
    lock_wait: Annotated[float, typer.Option("--lock-wait", min=0, max=MAX_LOCK_WAIT_SECONDS, metavar="SECONDS", help="Wait this long for the database's writer lock (default: fail at once, exit 4).")] = 0,
) -> None:
    """Rebuild progress and personal_bests from results, for the players whose caches are wrong.

    Exit 0 when nothing needed a change or the repair was applied, 3 when a --dry-run found
    changes, 4 without consent (--no-input needs --yes) or when the writer lock is held."""
    from integrity.recovery.consent import consent_for
    from integrity.recovery.repair import repair_progress

    runtime = ctx.obj
    consent = None if dry_run else consent_for(runtime, yes=yes, describe=_describe)
    runtime.emit(repair_progress(runtime.settings, dry_run=dry_run, consent=consent,
                                 lock_wait=lock_wait, command=runtime.command))


def _describe(plan) -> list[str]:
    from integrity.report_recovery_diff import repair_plan_lines

    return repair_plan_lines(plan)
