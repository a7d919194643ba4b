"""`integrity schedule ...`: the scheduler daemon and its jobs."""

from __future__ import annotations

import typer

schedule_app = typer.Typer(help="The scheduler: run the [schedule] jobs, list them.", no_args_is_help=True)


@schedule_app.command("run")
def run(ctx: typer.Context) -> None:
    """Run the [schedule] jobs in the foreground until SIGTERM or SIGINT (then let a running
    job finish and exit 0; a second signal exits at once with 130). Every run, skip and
    missed fire is recorded in the ledger. Exit 4 on a bad schedule."""
    import logging

    from integrity import api

    if not ctx.obj.quiet:
        logging.getLogger("integrity.scheduler").setLevel(logging.INFO)  # one line per run
    ctx.obj.emit(api.schedule_run(ctx.obj.invocation()))


@schedule_app.command("list")
def list_jobs(ctx: typer.Context) -> None:
    """The jobs: schedule, next fire, last run and outcome, last success (from the ledger).
    Exit 0, or 4 on a bad schedule."""
    from integrity import api

    ctx.obj.emit(api.schedule_list(ctx.obj.invocation()))
