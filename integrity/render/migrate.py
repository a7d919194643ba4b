"""Renderers of `integrity migrate` reports: text for a terminal, Markdown for a pull
request comment (JSON is the generic document of integrity.render.document)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

_PLAIN = {"highlight": False, "markup": False}


@dataclass(frozen=True)
class MarkdownReport:
    """A dry-run report to be printed as Markdown; exit code and ledger summary are the report's."""

    report: object

    @property
    def exit_code(self):
        return self.report.exit_code

    def summary(self) -> dict:
        return self.report.summary()


@dataclass(frozen=True)
class GithubAnnotations:
    """A lint or dry-run report as GitHub workflow commands (`::error file=...,line=...`),
    one per counting finding, at the line of its operation in the revision file."""

    report: object

    @property
    def exit_code(self):
        return self.report.exit_code

    def summary(self) -> dict:
        return self.report.summary()


def register(render_text) -> None:
    from integrity.migrate.dry_run import DryRunReport
    from integrity.migrate.rules import RulesListing
    from integrity.migrate.apply import ApplyReport

    render_text.register(DryRunReport, render_dry_run)
    # Never folded at the terminal's width: a folded table row is no longer Markdown.
    render_text.register(MarkdownReport, lambda wrapped, console: console.print(markdown(wrapped.report), soft_wrap=True, **_PLAIN))
    render_text.register(GithubAnnotations, lambda wrapped, console: console.print(github(wrapped.report), soft_wrap=True, **_PLAIN))
    render_text.register(RulesListing, render_rules)
    render_text.register(ApplyReport, render_apply)
    from integrity.migrate.gate import GateReport

    render_text.register(GateReport, render_gate)


def verdict(report) -> str:
    if report.note:
        return report.note
    state = "passed" if report.passed else "FAILED"
    kind = "dry run" if report.data_pass else "lint"
    return f"{kind} {state}: {report.errors} errors, {report.warnings} warnings (fail on {report.fail_on})"


def _finding_line(finding) -> str:
    flag = " (declared)" if finding.declared else f" (ignored: {finding.ignored_by})" if finding.ignored_by else ""
    rows = f" [{finding.rows:,} rows]" if finding.rows is not None else ""
    samples = f" e.g. {'; '.join(finding.samples[:3])}" if finding.samples else ""
    return f"{finding.severity.value:7} {finding.rule:24} {finding.revision or '-'}: {finding.message}{rows}{samples}{flag}"


def render_dry_run(report, console: Console) -> None:
    where = f" on {report.source}" if report.source else ""
    console.print(f"{report.project}: {report.start_revision or 'base'} -> {report.target_revision or 'base'}{where}", **_PLAIN)
    if report.revisions:
        revisions = Table(show_header=True, header_style="bold")
        columns = ("revision", "seconds", "statements", "sha256", "message") if report.data_pass else ("revision", "sha256", "message")
        for column in columns:
            revisions.add_column(column, justify="right" if column in ("seconds", "statements") else "left", overflow="fold")
        for r in report.revisions:
            seconds = "-" if r.seconds is None else f"{r.seconds:.3f}"
            measured = (seconds, str(len(r.statements))) if report.data_pass else ()
            revisions.add_row(r.id, *measured, r.sha256[:12], r.message)
        console.print(revisions)
    if report.phases:
        phases = Table(show_header=True, header_style="bold")
        for column in ("phase", "seconds", "rows", "rows/s"):
            phases.add_column(column, justify="left" if column == "phase" else "right")
        for p in report.phases:
            rate = p.rows_per_second
            phases.add_row(p.name, f"{p.seconds:.3f}", "-" if p.rows is None else f"{p.rows:,}", "-" if rate is None else f"{rate:,}")
        console.print(phases)
    if report.tables:
        tables = Table(show_header=True, header_style="bold", title="content before -> after")
        for column in ("table", "before", "after", "lost", "added", "changed"):
            tables.add_column(column, justify="left" if column == "table" else "right")
        for t in report.tables:
            tables.add_row(t.table, f"{t.rows_before:,}", f"{t.rows_after:,}", f"{t.lost:,}", f"{t.added:,}", f"{t.changed:,}")
        console.print(tables)
    for table in report.tables:
        for column, moved in table.statistics.items():
            console.print(f"statistics {table.table}.{column}: {_statistics_line(moved['before'], '(new column)')} -> {_statistics_line(moved['after'], '(gone)')}", **_PLAIN)
    for change in report.schema_changes:
        target = change.table or ""
        if change.column:
            target += f".{change.column}"
        values = f": {change.before} -> {change.after}" if change.before or change.after else ""
        console.print(f"schema: {change.kind} {target}{values}", **_PLAIN)
    if report.round_trip.reached:
        console.print(f"round trip: downgrade {report.round_trip.downgrade}, upgrade again {report.round_trip.upgrade_again}", **_PLAIN)
    for finding in report.findings:
        console.print(_finding_line(finding), **_PLAIN)
    for kept in report.kept_copies:
        console.print(f"kept copy: {kept}", **_PLAIN)
    console.print(verdict(report), **_PLAIN)


def _statistics_line(figures: dict | None, missing: str) -> str:
    if figures is None:
        return missing
    classes = ", ".join(f"{name} {count:,}" for name, count in sorted(figures["storage_classes"].items()))
    text = f"nulls {figures['nulls']:,}, min {figures['minimum']}, max {figures['maximum']}"
    if figures["total"] is not None:
        text += f", sum {figures['total']}"
    return text + (f", {classes}" if classes else "")


def markdown(report) -> str:
    icon = "✅" if report.passed else "❌"
    lines = [f"### {icon} Migration dry run: {report.start_revision or 'base'} → {report.target_revision or 'base'}", ""]
    lines.append(f"{verdict(report)}. Source: {report.source or 'none (static pass only)'}; engine: {report.engine or '-'}.")
    lines.append("")
    if report.revisions:
        lines += ["| revision | seconds | statements | sha256 |", "|---|---:|---:|---|"]
        for r in report.revisions:
            seconds = "-" if r.seconds is None else f"{r.seconds:.3f}"
            lines.append(f"| `{r.id}` | {seconds} | {len(r.statements)} | `{r.sha256[:12]}` |")
        lines.append("")
    counted = [f for f in report.findings if f.counts]
    covered = [f for f in report.findings if not f.counts]
    if counted:
        lines += ["| severity | rule | revision | finding | rows |", "|---|---|---|---|---:|"]
        for f in counted:
            rows = "" if f.rows is None else f"{f.rows:,}"
            lines.append(f"| {f.severity.value} | `{f.rule}` | `{f.revision or '-'}` | {f.message.replace('|', '/')} | {rows} |")
        lines.append("")
    if covered:
        lines.append("<details><summary>Declared or ignored</summary>\n")
        for f in covered:
            why = "declared" if f.declared else f"ignored: {f.ignored_by}"
            lines.append(f"- `{f.rule}` {f.message} ({why})")
        lines.append("\n</details>\n")
    if report.tables:
        lines += ["| table | before | after | lost | added | changed |", "|---|---:|---:|---:|---:|---:|"]
        for t in report.tables:
            lines.append(f"| {t.table} | {t.rows_before:,} | {t.rows_after:,} | {t.lost:,} | {t.added:,} | {t.changed:,} |")
        lines.append("")
    if report.phases:
        lines.append("Phases: " + ", ".join(f"{p.name} {p.seconds:.2f} s" for p in report.phases) + ".")
    return "\n".join(lines)


_GITHUB_LEVEL = {"error": "error", "warning": "warning", "info": "notice"}


def github(report, *, cwd=None) -> str:
    """Workflow commands: GitHub shows each on the revision file's line in the pull
    request; the verdict follows as a plain log line."""
    from pathlib import Path

    from integrity.migrate.locate import finding_line
    from integrity.migrate.rules import RULES

    here = Path(cwd or Path.cwd()).resolve()
    paths = {r.id: r.path for r in report.revisions}
    lines = []
    for f in report.findings:
        if not f.counts:
            continue
        properties = []
        path = paths.get(f.revision)
        if path:
            resolved = Path(path).resolve()
            shown = resolved.relative_to(here) if resolved.is_relative_to(here) else resolved
            properties += [f"file={_property(str(shown))}", f"line={finding_line(resolved, f)}"]
        properties.append(f"title={_property(f'{f.rule} ({f.revision})' if f.revision else f.rule)}")
        rule = RULES.get(f.rule)
        rows = f" [{f.rows:,} rows]" if f.rows is not None else ""
        fix = f" Fix: {rule.hint}" if rule else ""
        lines.append(f"::{_GITHUB_LEVEL[f.severity.value]} {','.join(properties)}::{_data(f.message + rows + fix)}")
    lines.append(verdict(report))
    return "\n".join(lines)


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def render_rules(listing, console: Console) -> None:
    table = Table(show_header=True, header_style="bold")
    for column in ("rule", "severity", "phase", "meaning", "fix"):
        table.add_column(column, overflow="fold")
    for rule in listing.rules:
        table.add_row(rule.id, rule.severity.value, rule.phase, rule.title, rule.hint)
    console.print(table)


def render_apply(report, console: Console) -> None:
    if report.note:
        console.print(report.note, **_PLAIN)
        return
    console.print(f"applied {', '.join(report.applied)}: {report.start_revision or 'base'} -> {report.target_revision}", **_PLAIN)
    console.print(f"pinned backup {report.backup_id} taken first; dry run {report.dry_run_at} matched the revision files", **_PLAIN)
    audit = "clean" if report.audit_ok else f"{report.audit_errors} error rules fail"
    console.print(f"audits on live after the upgrade: {audit}", **_PLAIN)


def render_gate(report, console: Console) -> None:
    for r in report.revisions:
        mark = "passed" if r.passed else "NOT PASSED"
        console.print(f"{r.id} ({r.sha256[:12]}): {mark}: {r.evidence}", **_PLAIN)
    state = "passed" if report.passed else "FAILED"
    missing = [r.id for r in report.revisions if not r.passed]
    tail = f": {', '.join(missing)} never passed a dry run on this store with these files" if missing else ""
    console.print(f"deploy gate {state}: {report.database} ({report.engine}) at {', '.join(r.id for r in report.revisions)}{tail}", **_PLAIN)
