"""`integrity pitr config|status|replicate`: the point-in-time engine (Litestream for
SQLite, pgBackRest for PostgreSQL) as integrity configures, runs and reads it."""

from __future__ import annotations

import typer

pitr_app = typer.Typer(help="Point-in-time recovery: the continuous archive kept by Litestream (SQLite) or pgBackRest (PostgreSQL).",
                       no_args_is_help=True)


@pitr_app.command("config")
def config(ctx: typer.Context) -> None:
    """Show the engine's configuration generated from integrity.toml [pitr] (written under
    the state directory while pitr is enabled), every underlying command it runs, and the
    settings the database server must have (PostgreSQL's postgresql.conf lines).

    Example: integrity pitr config"""
    from integrity import api

    ctx.obj.emit(api.pitr_config(ctx.obj.invocation()))


@pitr_app.command("status")
def status(ctx: typer.Context) -> None:
    """The restorable window (oldest and newest point), the replication lag (0 when nothing
    written waits to be shipped, else now minus the newest point) and the engine's errors.

    Exit 0 when the lag is within [pitr] lag_objective_seconds, 3 when it is over or the
    engine reports errors, 4 when pitr is not enabled or the engine is not installed."""
    from integrity import api

    ctx.obj.emit(api.pitr_status(ctx.obj.invocation()))


@pitr_app.command("replicate")
def replicate(ctx: typer.Context) -> None:
    """Run Litestream's `replicate` in the foreground, restarted whenever it dies (each death
    printed on stderr), until Ctrl-C or SIGTERM. PostgreSQL needs none: the server ships its
    WAL through archive_command (exit 2).

    Exit 0 when stopped, 4 when pitr is not enabled or litestream is not installed."""
    from integrity import api

    ctx.obj.emit(api.pitr_replicate(ctx.obj.invocation()))


@pitr_app.command("last-clean")
def last_clean(ctx: typer.Context) -> None:
    """Find the latest restorable moment at which the audits pass: bisect the archive's
    window in time (from the newest clean full audit in the ledger, else the oldest
    restorable point, to the newest point), restoring into scratch and running the SQL
    audits at each probe, at most 1 + ceil(log2(steps + 1)) restores of [pitr]
    resolution_seconds steps. Prints each probe (time, verdict, failing rules), the moment
    found, the rows salvage would bring back after it, and the restore command to run.
    Live is only read.

    Exit 0 when a clean moment was found, 3 when even the lower bound is dirty, 4 when pitr
    is not enabled or nothing is restorable yet, 5 when a restore failed.

    Example: integrity pitr last-clean"""
    from integrity import api

    ctx.obj.emit(api.pitr_last_clean(ctx.obj.invocation()))
