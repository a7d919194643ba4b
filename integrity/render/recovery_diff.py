"""Text renderers of `integrity diff` and `integrity repair progress`.

The diff: one table row per game table (exact counts, the changed columns), then the
sample keys of each kind of difference, named by their key columns, then one verdict
line that says what a restore to this backup would lose. The repair: one line per
player with old -> new where a value changes, then the totals. Values are printed
with markup off: usernames are data, not rich markup.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from integrity.timeparse import age_text

# The text output lists this many players; --json has them all.
REPAIR_ROWS_SHOWN = 50
_KIND_TITLES = {
    "only_live": "only in live (a restore to this backup would lose them)",
    "only_backup": "only in the backup (a restore would bring them back)",
    "changed": "changed (a restore would overwrite them)",
}


def register(render_text) -> None:
    from integrity.recovery.diff import BackupDiffReport
    from integrity.recovery.repair import RepairReport

    render_text.register(BackupDiffReport, render_diff)
    render_text.register(RepairReport, render_repair)


def _plain(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False)


def _count(value: int) -> str:
    return f"{value:,}" if value else "-"


def key_text(table: str, key) -> str:
    """`id=5`, or `player_id=3 mode=time mode_param=30` for a composite key."""
    from game_core.schema import metadata

    names = [column.name for column in metadata.tables[table].primary_key.columns]
    values = list(key) if isinstance(key, (list, tuple)) else [key]
    return " ".join(f"{name}={value}" for name, value in zip(names, values))


def render_diff(report, console: Console) -> None:
    from datetime import datetime

    created = datetime.fromisoformat(report.backup_created_at)
    _plain(console, f"backup {report.backup_id} (taken {report.backup_created_at}, {age_text(created)}) of {report.backup_source}")
    _plain(console, f"live   {report.database}   {report.engine}, {report.rows_compared:,} rows compared in {report.seconds:.2f}s")
    table = Table(show_header=True, header_style="bold")
    for column, justify in (("table", "left"), ("live rows", "right"), ("backup rows", "right"), ("only in live", "right"),
                            ("only in backup", "right"), ("changed", "right"), ("changed columns", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for diff in report.tables:
        columns = ", ".join(f"{name} {count:,}" for name, count in diff.changed_columns.items())
        table.add_row(diff.table, f"{diff.live_rows:,}", f"{diff.backup_rows:,}", _count(diff.only_live),
                      _count(diff.only_backup), _count(diff.changed), columns or "-")
    console.print(table)
    for kind, title in _KIND_TITLES.items():
        lines = []
        for diff in report.tables:
            total = getattr(diff, kind)
            keys = diff.samples.get(kind) or []
            if not total:
                continue
            shown = "; ".join(key_text(diff.table, key) for key in keys)
            more = f" (and {total - len(keys):,} more)" if total > len(keys) else ""
            lines.append(f"  {diff.table}: {shown or 'no samples (--limit 0)'}{more}")
        if lines:
            _plain(console, title + ":")
            for line in lines:
                _plain(console, line)
    if not report.differing_rows:
        _plain(console, "identical: every row of every compared table matches")
        return
    lost = sum(d.only_live for d in report.tables)
    overwritten = sum(d.changed for d in report.tables)
    _plain(console, f"{report.differing_rows:,} row(s) differ; a restore to this backup would lose {lost:,} row(s) "
                    f"that only live holds and overwrite {overwritten:,} changed row(s)")


def _progress_cell(player, field: str) -> str:
    old = None if player.old is None else player.old.get(field)
    new = None if player.new is None else player.new.get(field)
    if player.old is None and player.new is None:
        return "-"
    if player.old is None:
        return f"none -> {new}"
    if player.new is None:
        return f"{old} -> none"
    return str(new) if old == new else f"{old} -> {new}"


def repair_plan_lines(report) -> list[str]:
    """The plan as plain lines: what a typed confirmation shows before it asks."""
    lines = [f"{report.totals['players']:,} of {report.players_checked:,} player(s) have progress or personal bests "
             "that differ from their results:"]
    for player in report.players[:REPAIR_ROWS_SHOWN]:
        changes = [f"{field} {_progress_cell(player, field)}" for field in ("xp", "level", "tests_completed", "best_wpm")
                   if "->" in _progress_cell(player, field)]
        if player.bests_added or player.bests_removed or player.bests_changed:
            changes.append(f"personal bests +{player.bests_added} -{player.bests_removed} ~{player.bests_changed}")
        lines.append(f"  player {player.player_id} ({player.username or 'no player row'}): {', '.join(changes) or 'time typing'}")
    if len(report.players) > REPAIR_ROWS_SHOWN:
        lines.append(f"  ... and {len(report.players) - REPAIR_ROWS_SHOWN:,} more")
    return lines


def render_repair(report, console: Console) -> None:
    if not report.players:
        _plain(console, f"progress and personal bests of all {report.players_checked:,} player(s) in {report.database} "
                        "agree with their results; nothing to repair")
        return
    table = Table(show_header=True, header_style="bold")
    for column, justify in (("player", "right"), ("username", "left"), ("xp", "left"), ("level", "left"),
                            ("tests", "left"), ("best wpm", "left"), ("typing ms", "left"),
                            ("bests +", "right"), ("bests -", "right"), ("bests ~", "right")):
        table.add_column(column, justify=justify, overflow="fold")
    for player in report.players[:REPAIR_ROWS_SHOWN]:
        table.add_row(
            str(player.player_id), player.username or "(no player row)",
            *(_progress_cell(player, field) for field in ("xp", "level", "tests_completed", "best_wpm", "time_typing_ms")),
            _count(player.bests_added), _count(player.bests_removed), _count(player.bests_changed),
        )
    console.print(table)
    if len(report.players) > REPAIR_ROWS_SHOWN:
        _plain(console, f"... and {len(report.players) - REPAIR_ROWS_SHOWN:,} more player(s); --json lists them all")
    totals = report.totals
    verb = "would change" if not report.applied else "changed"
    _plain(console, f"{verb}: {totals['players']:,} of {report.players_checked:,} player(s); progress rows "
                    f"{totals['progress_changed']:,} corrected, {totals['progress_added']:,} added, "
                    f"{totals['progress_removed']:,} removed; personal bests {totals['bests_added']:,} added, "
                    f"{totals['bests_removed']:,} removed, {totals['bests_changed']:,} corrected")
    if report.dry_run:
        _plain(console, "dry run: nothing was written; run `integrity repair progress --yes` to apply")
    elif report.applied:
        _plain(console, f"applied in one transaction (consent: {report.consent}) in {report.seconds:.2f}s")
