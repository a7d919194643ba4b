"""Text renderers of the audit results (`integrity audit`, `integrity audit history`).

One screen first (a table of every rule that ran), then the details of each failing
rule (exact count, samples with their offending values, the SQL that lists every failing
row), then drift warnings. Data is escaped: usernames and values are not rich markup.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def register(render_text) -> None:
    from integrity.audits import AuditHistoryReport, AuditOutcome

    render_text.register(AuditOutcome, render_audit)
    render_text.register(AuditHistoryReport, render_history)


def share_text(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.3f}%"


def change_text(change: int | None) -> str:
    if change is None:
        return "-"
    return "=" if change == 0 else f"{change:+,}"


def status_text(outcome) -> str:
    if outcome.status == "ok":
        return "[green]ok[/]"
    if outcome.status == "skipped":
        return "[yellow]skipped[/]"
    return "[bold red]FAIL[/]" if outcome.severity == "error" else "[yellow]warn[/]"


def _plain(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False)


def _sample_text(sample: dict) -> str:
    return " ".join(f"{key}={value}" for key, value in sample.items())


def render_audit(outcome, console: Console) -> None:
    compared = f"; changes since audit {outcome.compared_with}" if outcome.compared_with else "; no earlier run of this scope to compare with"
    since = ""
    if outcome.since:
        since = " above " + ", ".join(f"{table} id {mark:,}" for table, mark in sorted(outcome.since.items()))
    _plain(console, f"audit {outcome.audit_id}: {outcome.scope}{since}, {outcome.engine} engine, {len(outcome.rules)} rules "
                    f"in {outcome.seconds:.2f}s at {outcome.audited_at:%Y-%m-%d %H:%M:%S} UTC{compared}")
    if outcome.note:
        _plain(console, outcome.note)
    # One screen: the rules that fail or changed since the previous run; the passing,
    # unchanged rest is one line per table (`--json` has every rule).
    shown = [r for r in outcome.rules if r.status != "ok" or r.change]
    if shown:
        table = Table(show_header=True, header_style="bold")
        for column, justify in (("rule", "left"), ("severity", "left"), ("status", "left"), ("failing rows", "right"),
                                ("share", "right"), ("change", "right"), ("sample keys", "left")):
            table.add_column(column, justify=justify, overflow="fold")
        for rule in shown:
            keys = ", ".join(escape(str(key)) for key in rule.sample_keys)
            table.add_row(escape(rule.rule), rule.severity, status_text(rule), f"{rule.failing_rows:,}",
                          share_text(rule.share), change_text(rule.change), keys)
        console.print(table)
    passing: dict[str, list[int]] = {}
    for rule in outcome.rules:
        tally = passing.setdefault(rule.table, [0, 0])
        tally[1] += 1
        if rule.status == "ok":
            tally[0] += 1
    _plain(console, "rules passing per table: " + ", ".join(f"{t} {ok}/{total}" for t, (ok, total) in passing.items()))
    errors, warnings = len(outcome.failed_errors), len(outcome.failed_warnings)
    verdict = "clean" if not errors else f"{errors} error rule(s) fail"
    _plain(console, f"{verdict}; {warnings} warn rule(s) fail; {len(outcome.drift)} drift warning(s)")
    if outcome.day is not None:
        mean = "-" if outcome.mean_wpm_day is None else f"{outcome.mean_wpm_day:.2f}"
        _plain(console, f"last full day {outcome.day}: {outcome.rows_per_day:,} results, mean wpm {mean}")

    for rule in outcome.rules:
        if rule.status == "ok":
            continue
        _plain(console, "")
        if rule.status == "skipped":
            _plain(console, f"{rule.rule} ({rule.severity}): skipped, the schema differs: {rule.meaning}")
            continue
        _plain(console, f"{rule.rule} ({rule.severity}): {rule.failing_rows:,} of {rule.checked_rows:,} rows fail: {rule.meaning}")
        _plain(console, f"  what to do: {rule.action} (runbooks/audit-findings.md)")
        for sample in rule.samples:
            _plain(console, f"  sample: {_sample_text(sample)}")
        if not rule.samples and rule.sample_keys:
            _plain(console, f"  sample keys: {', '.join(str(k) for k in rule.sample_keys)}")
        _plain(console, "  every failing row:")
        for line in rule.sql.splitlines():
            _plain(console, f"    {line}")

    if outcome.drift:
        _plain(console, "")
        _plain(console, "drift warnings (they do not change the exit code):")
        for warning in outcome.drift:
            _plain(console, f"  {warning.message}")
    if outcome.history_removed:
        _plain(console, f"history: removed {outcome.history_removed} audit run(s) older than the retention")


def render_history(report, console: Console) -> None:
    if not report.runs:
        _plain(console, "no audits recorded yet; run `integrity audit`")
        return
    table = Table(show_header=True, header_style="bold")
    if report.rule:
        for column in ("audit", "started (UTC)", "scope", "engine", "failing rows", "checked rows", "share"):
            table.add_column(column, justify="right" if column in ("failing rows", "checked rows", "share") else "left")
        for run in report.runs:
            count = run.counts.get(report.rule)
            if count is None:
                continue
            table.add_row(str(run.id), f"{run.started_at:%Y-%m-%d %H:%M:%S}", run.scope, run.engine,
                          f"{count.failing_rows:,}", f"{count.checked_rows:,}", share_text(count.share))
        _plain(console, f"rule {report.rule}")
        console.print(table)
        return
    for column in ("audit", "started (UTC)", "scope", "engine", "errors", "warns", "day",
                   "results", "mean wpm", "drift", "s"):
        table.add_column(column, no_wrap=column in ("started (UTC)", "day", "scope"),
                         justify="right" if column in ("results", "mean wpm", "drift", "s") else "left")
    for run in report.runs:
        failing = [c.rule for c in run.counts.values() if c.failing_rows and c.severity == "error"]
        scope = run.scope if run.rules is None else f"{run.scope}, {len(run.rules)} rule(s)"
        table.add_row(
            str(run.id), f"{run.started_at:%Y-%m-%d %H:%M:%S}", scope, run.engine,
            escape(", ".join(failing)) if failing else "0",
            str(run.warn_rules),
            run.day or "-",
            "-" if run.rows_per_day is None else f"{run.rows_per_day:,}",
            "-" if run.mean_wpm_day is None else f"{run.mean_wpm_day:.2f}",
            str(len(run.drift)),
            f"{run.seconds:.2f}",
        )
    console.print(table)
    for run in report.runs:
        for message in run.drift:
            _plain(console, f"audit {run.id} drift: {message}")
