"""`integrity restore ID|latest|--to-time TIME|--before-migration REVISION` and `integrity salvage`."""

from __future__ import annotations

from typing import Annotated

import typer

from integrity.commands.params import LockWait, Yes, backup_reference

restore_app = typer.Typer()


@restore_app.command("restore")
def restore(
    ctx: typer.Context,
    backup: Annotated[str | None, typer.Argument(metavar="ID|latest", callback=backup_reference, help="A backup id (`integrity backup list`), or latest: the newest good backup of this database.")] = None,
    to_time: Annotated[str | None, typer.Option("--to-time", metavar="TIME", help="Restore the database as it was at TIME, from the point-in-time archive ([pitr]): a UTC time (2026-12-07T12:00:00Z; without an offset it is UTC) or a time ago (90s ago, 10 minutes ago, 2 hours ago).")] = None,
    before_migration: Annotated[str | None, typer.Option("--before-migration", metavar="REVISION", help="Restore the database as it was one resolution step before `integrity migrate apply` applied REVISION (found in the ledger), from the point-in-time archive.")] = None,
    last_clean: Annotated[bool, typer.Option("--last-clean", help="Restore the last moment at which the audits pass, found by `integrity pitr last-clean`'s bisection of the point-in-time window (each probe a restore into scratch and the SQL audits); nothing is restored when the newest point is clean.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan (backup, states, changes per table, safety backup) and change nothing. With --to-time/--before-migration the moment is restored into scratch and compared with live; nothing is written, not even the backup repository.")] = False,
    yes: Yes = False,
    no_safety_backup: Annotated[bool, typer.Option("--no-safety-backup", help="Do not back up live first: its current data is lost for good.")] = False,
    terminate_connections: Annotated[bool, typer.Option("--terminate-connections", help="PostgreSQL: end the sessions connected to live at the swap.")] = False,
    force_other_source: Annotated[bool, typer.Option("--force-other-source", help="Restore a backup of another store (its identity differs from live's).")] = False,
    keep_newer: Annotated[bool, typer.Option("--keep-newer", help="After the swap, re-apply rows only the pre-restore data holds that pass the audits (salvage).")] = False,
    lock_wait: LockWait = 0,
) -> None:
    """Restore a backup, or the database as it was at a point in time, over the live database:
    staging restore and checks, safety backup of live taken last (SQLite: writers held out
    until the swap commits; PostgreSQL: later writes stay in the kept old database), atomic
    swap, post-restore check; each phase timed. Live is left as it was on any failure.
    A point in time (--to-time, --before-migration, --last-clean) is restored by the
    point-in-time engine (Litestream, pgBackRest) into scratch, materialised as a backup of
    purpose point-in-time (restored only when named by id, never as latest), then restored
    like any backup. Exit 2 for bad TIME text, for not exactly one of ID, --to-time,
    --before-migration and --last-clean, and for --keep-newer with --no-safety-backup; 3
    when --last-clean finds no clean moment; 4 when a precondition or consent is missing
    (pitr not enabled, a TIME outside the restorable window, a REVISION the ledger never saw
    applied); 5 when the backup or the staging copy fails verification."""
    from integrity import api

    ctx.obj.emit(api.restore(
        ctx.obj.invocation(lock_wait=lock_wait, yes=yes), backup=backup, to_time=to_time,
        before_migration=before_migration, last_clean=last_clean, dry_run=dry_run, safety_backup=not no_safety_backup,
        terminate_connections=terminate_connections, force_other_source=force_other_source, keep_newer=keep_newer,
    ))


@restore_app.command("salvage")
def salvage(
    ctx: typer.Context,
    from_backup: Annotated[str | None, typer.Option("--from-backup", metavar="ID", callback=backup_reference, help="The backup holding the pre-restore data (the restore's safety backup).")] = None,
    from_database: Annotated[str | None, typer.Option("--from-database", metavar="NAME", help="PostgreSQL: the database a restore kept as <live>_before_restore_<time>.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be re-applied and change nothing.")] = False,
    yes: Yes = False,
    lock_wait: LockWait = 0,
) -> None:
    """Re-apply rows that only the pre-restore data holds (new players, new results) and that
    pass the audits, then rebuild progress; changed rows are reported, never re-applied."""
    from integrity import api

    ctx.obj.emit(api.salvage(ctx.obj.invocation(lock_wait=lock_wait, yes=yes), from_backup=from_backup,
                             from_database=from_database, dry_run=dry_run))
