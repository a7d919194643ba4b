"""Text renderers of `integrity pitr config`, `pitr status`, `pitr replicate` and `pitr last-clean`."""

from __future__ import annotations

from datetime import UTC

from rich.console import Console

PLAIN = {"highlight": False, "markup": False, "soft_wrap": True}


def register(render_text) -> None:
    from integrity.pitr.operations import (LastCleanReport, LastCleanRestore, PitrConfigReport, PitrStatusReport,
                                           ReplicateReport)

    render_text.register(PitrConfigReport, render_config)
    render_text.register(PitrStatusReport, render_status)
    render_text.register(ReplicateReport, render_replicate)
    render_text.register(LastCleanReport, render_last_clean)
    render_text.register(LastCleanRestore, render_last_clean_restore)


def _moment(value) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") + "Z"


def render_config(report, console: Console) -> None:
    state = "enabled" if report.enabled else "NOT enabled"
    console.print(f"point-in-time engine: {report.engine} ({state})", **PLAIN)
    for path, text in report.files.items():
        mark = "written" if path in report.written else "not written"
        console.print(f"\n# {path} ({mark})", **PLAIN)
        console.print(text.rstrip("\n"), **PLAIN)
    console.print("\ncommands:", **PLAIN)
    for step, shell in report.commands:
        console.print(f"  {step}: {shell}", **PLAIN)
    if report.server_settings:
        console.print("\nthe database server must be set to (postgresql.conf):", **PLAIN)
        for key, value in report.server_settings.items():
            console.print(f"  {key} = {value}", **PLAIN)
    for note in report.notes:
        console.print(f"note: {note}", **PLAIN)


def render_status(report, console: Console) -> None:
    console.print(f"engine: {report.engine}  database: {report.database}  archive: {report.repository}", **PLAIN)
    console.print(f"oldest restorable point: {_moment(report.oldest)}", **PLAIN)
    age = "" if report.newest_age_seconds is None else f" ({report.newest_age_seconds:.0f}s ago)"
    console.print(f"newest shipped point:    {_moment(report.newest)}{age}", **PLAIN)
    if report.lag_seconds is None:
        lag = "unknown: nothing shipped yet"
    elif report.caught_up:
        lag = "0s (caught up: nothing written waits to be shipped)"
    else:
        lag = f"{report.lag_seconds:.1f}s (writes wait to be shipped)"
    verdict = "met" if report.lag_seconds is not None and report.lag_seconds <= report.lag_objective_seconds else "MISSED"
    console.print(f"lag: {lag}; objective {report.lag_objective_seconds}s: {verdict}", **PLAIN)
    for error in report.errors:
        console.print(f"error: {error}", **PLAIN)
    console.print(f"exit code {int(report.exit_code)}", **PLAIN)


def render_replicate(report, console: Console) -> None:
    console.print(f"{report.engine} stopped after {report.starts} start(s), {len(report.deaths)} death(s); "
                  f"log: {report.log_path}", **PLAIN)
    for death in report.deaths:
        console.print(f"died: {death}", **PLAIN)
    if not report.stopped_cleanly:
        console.print("note: the replicator did not stop on SIGTERM in time and was killed", **PLAIN)


def _seconds(value: float) -> str:
    return f"{value:g}s" if value == int(value) else f"{value:.3f}s"


def render_last_clean(report, console: Console, *, next_command: bool = True) -> None:
    search = report.bisection
    console.print(f"engine: {report.engine}  window: {_moment(report.window_oldest)} to {_moment(report.window_newest)}", **PLAIN)
    console.print(f"search: {_moment(search.lower)} ({report.lower_source}) to {_moment(search.upper)} "
                  f"(the newest restorable point), resolution {_seconds(search.resolution_seconds)}", **PLAIN)
    console.print("probe    moment                verdict  audited  seconds  failing rules", **PLAIN)
    for number, probe in enumerate(search.probes, start=1):
        rules = ", ".join(f"{rule.rule} ({rule.failing_rows} rows{'' if rule.severity == 'error' else ', ' + rule.severity})"
                          for rule in probe.failing_rules) or "-"
        label = "confirm" if probe.role == "confirm" else str(number)
        audited = "all" if probe.audited_rules is None else f"{len(probe.audited_rules)} rules"
        console.print(f"{label:>7}  {_moment(probe.moment):<20}  {probe.verdict:<7}  {audited:<7}  {probe.seconds:>7.2f}  {rules}",
                      **PLAIN)
    console.print(f"restores: {report.restores} (at most {search.bound} for {search.steps} steps)"
                  + (f"; {search.searches} searches: a moment found failed the whole catalogue" if search.searches > 1 else ""),
                  **PLAIN)
    if any(probe.audited_rules is not None for probe in search.probes):
        proven = "; the moment found passed every rule" if report.found is not None else ""
        live = report.live_audit
        source = (f"the error rules live fails (live audited first with every rule, {live.seconds:.2f}s)"
                  if live is not None and live.signature else "every rule until a probe was dirty, then the error rules it failed")
        console.print(f"audited: {source}; the row and schema rules among them when any{proven}", **PLAIN)
    if report.found is None:
        console.print("last clean moment: none in the window", **PLAIN)
        return
    if report.first_dirty is None:
        console.print(f"last clean moment: {_moment(report.found)}: the newest restorable point is clean; "
                      "nothing to go back for", **PLAIN)
    else:
        console.print(f"last clean moment: {_moment(report.found)} (first dirty: {_moment(report.first_dirty)})", **PLAIN)
    after = report.after
    if after is not None and after.problem:
        console.print(f"rows after it: unknown: {after.problem}", **PLAIN)
    elif after is not None:
        back = ", ".join(f"{rows} {table}" for table, rows in after.would_reapply.items())
        recomputed = f" ({after.recomputed} results with recomputed metrics)" if after.recomputed else ""
        console.print(f"rows after it that salvage would bring back (live against the restore, dry run): {back}{recomputed}", **PLAIN)
        for reason, rows in after.left_out.items():
            console.print(f"  left out: {reason}: {rows} rows", **PLAIN)
    if report.next_command and next_command:
        console.print(f"next: {report.next_command}", **PLAIN)


def render_last_clean_restore(result, console: Console) -> None:
    """`restore --last-clean`: the search (without the next command: it ran), then the
    restore of the moment found as `restore --to-time` shows it."""
    from integrity.render.restore import render_point_in_time

    render_last_clean(result.search, console, next_command=False)
    render_point_in_time(result.restored, console)
