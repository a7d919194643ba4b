"""`integrity metrics`: the Prometheus text of the current state.

A plain function, registered as a top-level command by `integrity.cli`."""

from __future__ import annotations

import typer


def metrics(ctx: typer.Context) -> None:
    """Print the Prometheus text (exposition format 0.0.4) of the current state: jobs' last
    runs and exit codes, newest restorable and deep-verified backups and how many are
    suspect, deep-failed or failed, audit rule failures, the last drill's verdict and
    prediction, the probe's figures and age, the schema verdict (unchecked, drift), the
    objectives. Every run also writes it to [metrics] path. Exit 0."""
    from integrity import api

    ctx.obj.emit(api.metrics(ctx.obj.invocation()))
