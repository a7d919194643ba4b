"""`integrity notify ...`: the [notify] targets (Apprise URLs) and what they were told."""

from __future__ import annotations

import typer

notify_app = typer.Typer(
    help="Notifications without Alertmanager: [notify] targets (Apprise URLs) told when a job fails, a backup "
    "turns suspect or corrupt, a drill fails or an audit finds bad rows, and again when it clears.",
    no_args_is_help=True,
)


@notify_app.command("test")
def test(ctx: typer.Context) -> None:
    """Send a test notification to every [notify] target. Exit 0 when each accepted it,
    4 when one failed (named, masked), no target is set, or the `notify` extra (Apprise)
    is not installed."""
    from integrity import api

    ctx.obj.emit(api.notify_test(ctx.obj.invocation()))


@notify_app.command("status")
def status(ctx: typer.Context) -> None:
    """The targets (masked), the conditions that notify, and each condition's state as
    last notified, with the last delivery that did not reach every target. Exit 0."""
    from integrity import api

    ctx.obj.emit(api.notify_status(ctx.obj.invocation()))
