"""`integrity probe`: the retrieval success rate through the game's store.

A plain function, registered as a top-level command by `integrity.cli`."""

from __future__ import annotations

from typing import Annotated

import typer

from integrity.commands.params import MAX_PROBE_SAMPLE, MAX_PROBE_TIMEOUT_SECONDS


def probe(
    ctx: typer.Context,
    # None: the library's defaults (integrity.probe), kept out of this module so that
    # `integrity --help` does not import the probe; api.probe fills them in.
    sample: Annotated[
        int | None,
        typer.Option("--sample", min=0, max=MAX_PROBE_SAMPLE, metavar="N", help="How many random players to read, besides the canaries (default: 100)."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0.001, max=MAX_PROBE_TIMEOUT_SECONDS, metavar="SECONDS", help="A player's reads taking longer than this count as failed (default: 2)."),
    ] = None,
) -> None:
    """Do every read the game does (profile, progress, personal bests, recent history,
    leaderboard places) for a random sample of players and the probe's canary players
    through the game's store, and check them against their results; failures are counted
    by kind (exception, timeout, wrong-type, missing-row, mismatch). Exit 0 when the
    success ratio meets [objectives] probe_min_success_ratio, 3 below it, 4 when the
    database is missing or unreachable."""
    from integrity import api

    ctx.obj.emit(api.probe(ctx.obj.invocation(), sample=sample, timeout=timeout))
