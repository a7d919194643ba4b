"""`integrity report [--html PATH] [--since DURATION]`: the recorded evidence, for people
who would rather look than read.

A plain function, registered as a top-level command by `integrity.cli`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report(
    ctx: typer.Context,
    html: Annotated[Path | None, typer.Option("--html", metavar="PATH", help="Write one self-contained HTML page here (no network needed to view it); without it, a text summary.")] = None,
    since: Annotated[str, typer.Option("--since", metavar="DURATION", help="The window the charts and tables cover: hours, days or weeks (24h, 7d, 4w).")] = "7d",
) -> None:
    """The evidence the tool has recorded, as a report: status, the newest restorable
    backup per repository and point-in-time archive, RPO and RTO against their objectives,
    charts over the window (backup age and size, drill predicted and measured recovery
    time, audit failures per rule, probe success ratio, job runs and failures), the last
    migration dry runs, each drill's phases. Read only; the page is replaced atomically.

    Example: integrity report --html /var/www/integrity/report.html --since 30d

    Exit 0 when the report was written (its content shows the states; `integrity status`
    exits on them); 2 for a bad --since; 4 when PATH cannot be written or the ledger read."""
    import time

    from integrity import api

    started = time.perf_counter()
    evidence = api.report(ctx.obj.invocation(), since=since)
    if html is None:
        ctx.obj.emit(evidence)
        return
    from integrity.render.report_html import render_report

    page = render_report(evidence)  # rendering is the CLI's; writing the file is the library's
    ctx.obj.emit(api.report_write(ctx.obj.invocation(), path=html, page=page, evidence=evidence,
                                  seconds=time.perf_counter() - started))
