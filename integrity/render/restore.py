"""Text renderers of the restore and salvage results (`integrity restore`, `integrity salvage`)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def register(render_text) -> None:
    from integrity.recovery.point_in_time import PointInTimeRestore
    from integrity.recovery.restore import RestorePlan, RestoreResult
    from integrity.recovery.salvage import SalvageReport

    render_text.register(RestorePlan, render_plan)
    render_text.register(RestoreResult, render_result)
    render_text.register(SalvageReport, render_salvage)
    render_text.register(PointInTimeRestore, render_point_in_time)


def _print(console: Console, text: str) -> None:
    console.print(text, highlight=False, markup=False)


def _age(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"


def _change_text(change) -> str:
    text = f"{change.table} {'missing' if change.live_rows is None else f'{change.live_rows:,}'} -> {change.backup_rows:,} rows"
    if change.changed:
        text += f", {change.changed:,} rewritten"
    elif change.differing:
        text += f" ({', '.join(change.differing)} differ)"
    return text


def plan_lines(plan) -> list[str]:
    """The plan as plain lines: the text output's head and what a typed confirmation shows."""
    relation = "at this code's head" if plan.revision == "current" else f"behind this code's head {plan.head_revision}"
    lines = [
        f"backup     {plan.backup_id} ({', '.join(plan.states)}), taken {plan.created_at} ({_age(plan.age_seconds)})"
        + (f", label {plan.label!r}" if plan.label else ""),
        f"database   {plan.database}" + ("" if plan.live_exists else " (missing: it will be created)"),
        f"revision   {plan.backup_revision} ({relation})",
        "safety     " + (
            f"a backup of live just before the swap, labelled {plan.safety_backup!r}, pinned for {plan.safety_pinned_hours}h"
            if plan.safety_backup else "none"
        ),
        f"staging    {plan.staging}",
    ]
    changing = [c for c in plan.changes if c.changes]
    if changing:
        lines.append("changes    " + "; ".join(_change_text(c) for c in changing))
    else:
        lines.append("changes    counts and aggregates of live already equal the backup's")
    if plan.disappearing:
        tables = ", ".join(plan.disappearing)
        lines.append(
            f"disappear  {tables}: live holds it and the backup does not; the restore replaces the whole database"
            if plan.disappearing_exact else
            f"disappear  {tables}: live holds it and the backup's manifest does not name it; the restore replaces "
            "the whole database, so it is gone unless the backup holds it too (--dry-run looks)"
        )
    if plan.keep_newer:
        lines.append("then       re-apply the rows only live holds that pass the audits (--keep-newer)")
    for session in plan.sessions:
        lines.append(f"session    {session.describe()} (ended at the swap)")
    if plan.backup_violations or plan.live_violations:
        live = {v["rule"]: v["failing_rows"] for v in plan.live_violations or ()}
        for violation in plan.backup_violations:
            now = live.get(violation["rule"], 0 if plan.live_violations is not None else "?")
            lines.append(f"violation  {violation['rule']}: {violation['failing_rows']:,} rows in the backup, {now} in live")
    for warning in plan.warnings:
        lines.append(f"warning    {warning}")
    return lines


def _utc(moment) -> str:
    from integrity.timeparse import utc_text

    return "unknown" if moment is None else utc_text(moment)


def render_point_in_time(restored, console: Console) -> None:
    """`restore --to-time` / `--before-migration`: where the data comes from, then the
    restore's result (or, in a dry run, the preview against live)."""
    point = restored.point_in_time
    source = point.describe()
    if restored.migration is not None:
        _print(console, f"before migration {restored.migration.revision}: {restored.migration.found}")
    if restored.dry_run:
        _render_preview(source, point, restored.outcome, console)
        return
    _print(console, f"{source}, materialised as backup {restored.backup_id} "
                    f"(window {_utc(point.window_oldest)} to {_utc(point.window_newest)})")
    render_result(restored.outcome, console)


def _render_preview(source: str, point, preview, console: Console) -> None:
    _print(console, f"restore plan for {source} (dry run: nothing was changed or written)")
    relation = "at this code's head" if preview.revision == preview.head_revision else f"this code's head is {preview.head_revision}"
    lines = [
        f"window     {_utc(point.window_oldest)} to {_utc(point.window_newest)}",
        f"read from  {preview.copy} (removed)",
        f"database   {preview.database}",
        f"revision   {preview.revision} ({relation})",
        f"audit      {preview.audit} at that moment"
        + (": " + "; ".join(f"{v['rule']} {v['failing_rows']:,} rows" for v in preview.violations) if preview.violations else ""),
        "then       materialise it as a backup (purpose point-in-time, restored only by id), restore it like any "
        "backup: staging, checks, "
        + ("a safety backup of live, " if preview.safety_backup else "NO safety backup, ")
        + "the swap" + (", then re-apply the rows only live holds that pass the audits (--keep-newer)" if preview.keep_newer else ""),
    ]
    changing = [c for c in preview.changes if c.changes]
    lines.append("changes    " + ("; ".join(_change_text(c) for c in changing) if changing
                                  else "live already holds what it held at that moment"))
    for warning in preview.warnings:
        lines.append(f"warning    {warning}")
    for line in lines:
        _print(console, f"  {line}")
    _changes_table(preview.changes, console)


def _changes_table(changes, console: Console) -> None:
    table = Table(show_header=True, header_style="bold")
    numbers = ("live rows", "after restore", "removed", "brought back", "rewritten")
    for column in ("table", *numbers, "what differs"):
        table.add_column(column, justify="right" if column in numbers else "left", overflow="fold")
    for change in changes:
        columns = ", ".join(f"{name} {count:,}" for name, count in change.changed_columns.items())
        table.add_row(
            change.table,
            "missing" if change.live_rows is None else f"{change.live_rows:,}",
            f"{change.backup_rows:,}",
            *(("-" if value is None else f"{value:,}") for value in (change.only_live, change.only_backup, change.changed)),
            escape(columns or ", ".join(change.differing)) or "-",
        )
    console.print(table)


def render_plan(plan, console: Console) -> None:
    _print(console, f"restore plan for backup {plan.backup_id} (dry run: nothing was changed)")
    for line in plan_lines(plan):
        _print(console, f"  {line}")
    _changes_table(plan.changes, console)
    if plan.backup_violations:
        violations = Table(show_header=True, header_style="bold", title="audit violations: backup vs live")
        for column in ("rule", "severity", "backup rows", "live rows"):
            violations.add_column(column)
        live = {v["rule"]: v["failing_rows"] for v in plan.live_violations or ()}
        for violation in plan.backup_violations:
            violations.add_row(violation["rule"], violation["severity"], f"{violation['failing_rows']:,}",
                               f"{live.get(violation['rule'], 0):,}" if plan.live_violations is not None else "-")
        console.print(violations)


def render_result(result, console: Console) -> None:
    plan = result.plan
    _print(console, f"restored backup {plan.backup_id} over {plan.database}: total recovery time {result.total_seconds:.2f}s")
    table = Table(show_header=True, header_style="bold")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    table.add_column("detail", overflow="fold")
    for phase in result.phases:
        table.add_row(phase.name, f"{phase.seconds:.2f}", escape(phase.detail))
    table.add_row("total", f"{result.total_seconds:.2f}", "")
    console.print(table)
    if result.safety_backup_id:
        _print(console, f"safety backup  {result.safety_backup_id} (pinned until {result.safety_pinned_until})")
    if result.staging_audit:
        audit = result.staging_audit
        if result.staging_violations:
            audit += ": " + "; ".join(f"{v['rule']} {v['failing_rows']:,} rows" for v in result.staging_violations)
        _print(console, f"audit          {audit}")
    if result.post_check:
        _print(console, f"post-check     {result.post_check}")
    for table in result.removed_tables:
        _print(console, f"removed table  {table} (live held it, the backup does not)")
    for path in result.removed_leftovers:
        _print(console, f"removed        {path} (left by an interrupted restore)")
    for session in result.terminated:
        _print(console, f"ended session  {session.describe()}")
    for warning in plan.warnings:
        _print(console, f"warning        {warning}")
    if result.salvage is not None:
        render_salvage(result.salvage, console)
    for step in result.next_steps:
        _print(console, f"next           {step}")


def render_salvage(report, console: Console) -> None:
    verb = "would re-apply" if report.dry_run else "re-applied"
    results, recomputed = report.reapplied["results"], report.recomputed.get("results", 0)
    # Recomputed rows are counted apart: their derived values are not the stored ones.
    split = f" ({results - recomputed:,} as is, recomputed {recomputed:,})" if results else ""
    _print(console, f"salvage from {report.source}: {verb} {report.reapplied['players']:,} players and "
                    f"{results:,} results{split}; progress rebuilt for {report.rebuilt_players:,} players"
                    + (" (dry run: nothing was changed)" if report.dry_run else ""))
    for table in ("players", "results"):
        if report.reapplied.get(table):
            samples = ", ".join(str(i) for i in report.sample_ids.get(table, ()))
            renumbered = report.renumbered.get(table, 0)
            extra = f"; {renumbered} under a new id (theirs was taken)" if renumbered else ""
            _print(console, f"  {table}: {report.reapplied[table]:,} {verb}, e.g. ids {samples}{extra}")
    if report.recreated_players:
        _print(console, f"  players: {report.recreated_players:,} the game created again since the restore got back "
                        "their first created_at (their older results fit them again)")
    if recomputed:
        columns = ", ".join(f"{name} {count:,}" for name, count in report.recomputed_columns.items() if count)
        samples = ", ".join(str(i) for i in report.recomputed_sample_ids)
        _print(console, f"  results: recomputed {recomputed:,} from their counts and duration ({columns} differed), "
                        f"e.g. ids {samples}")
    if report.left_out:
        left = Table(show_header=True, header_style="bold", title="left out")
        for column in ("table", "reason", "rows", "sample ids"):
            left.add_column(column)
        for item in report.left_out:
            left.add_row(item.table, escape(item.reason), f"{item.rows:,}", ", ".join(str(i) for i in item.sample_ids))
        console.print(left)
