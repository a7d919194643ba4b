"""Text renderer of `integrity probe` (`integrity metrics` prints its text as it is: integrity.render.text)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def register(render_text) -> None:
    from integrity.probe import ProbeReport

    render_text.register(ProbeReport, render_probe)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def render_probe(report, console: Console) -> None:
    plain = {"highlight": False, "markup": False}
    canaries = f" and {len(report.canaries)} canaries" if report.canaries else ""
    console.print(f"probed {report.probed} players ({report.sampled} sampled{canaries}) of {report.database} "
                  f"through the game's store in {report.seconds:.2f}s", **plain)
    if report.canaries_written:
        console.print(f"canaries written by this run: {', '.join(report.canaries_written)}", **plain)
    verdict = "met" if int(report.exit_code) == 0 else "MISSED"
    console.print(f"success ratio {_ratio(report.success_ratio)} ({report.probed - report.failed} of {report.probed}; "
                  f"objective {_ratio(report.objective)}: {verdict})", **plain)
    if report.latency is not None:
        latency = report.latency
        console.print(f"latency of one player's reads: p50 {latency.p50_seconds * 1000:.1f} ms, "
                      f"p95 {latency.p95_seconds * 1000:.1f} ms, max {latency.max_seconds * 1000:.1f} ms "
                      f"(timeout {report.timeout_seconds:g}s)", **plain)
    if report.failures:
        table = Table(show_header=True, header_style="bold", title="failed retrievals by kind")
        for column in ("kind", "players", "reads", "player ids", "first seen"):
            table.add_column(column, justify="right" if column == "players" else "left", overflow="fold")
        for failure in report.failures:
            ids = ", ".join(str(i) for i in failure.player_ids) + (" ..." if failure.players > len(failure.player_ids) else "")
            table.add_row(failure.kind, f"{failure.players:,}", ", ".join(failure.reads), ids, escape(failure.example))
        console.print(table)
        console.print("see runbooks/retrieval-drop.md", **plain)
    for note in report.notes:
        console.print(f"note: {note}", **plain)
    console.print(f"exit code {int(report.exit_code)}", **plain)
