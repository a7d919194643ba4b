"""HTML renderers: `integrity report --html` (integrity.evidence) and the migrate dry run's
HTML twin of its Markdown report (`--format html`).

Each page is one self-contained file: Jinja2 templates shipped in the package
(integrity/render/templates/), the stylesheet inline, the charts inline SVG
(integrity.render.svg), no script and nothing fetched at view time. Jinja2 is the `report`
extra; it is imported here only, when a page is rendered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from game_core.errors import PreconditionFailed


class JinjaMissing(PreconditionFailed):
    """Jinja2 (the `report` extra) is not installed."""


def _environment():
    try:
        import jinja2
    except ImportError:
        raise JinjaMissing("the HTML report needs Jinja2: install the report extra "
                           "(pip install 'typing-game-integrity[report]')") from None
    from integrity.render.svg import value_text

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("integrity.render", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=True),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["utc"] = _utc
    env.filters["value"] = value_text
    env.filters["seconds"] = lambda v: "-" if v is None else value_text(float(v), "seconds")
    return env


def _utc(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") + "Z"


def render_report(evidence) -> str:
    """The whole page of `integrity report --html`."""
    env = _environment()  # first: without Jinja2 this says which extra to install
    from markupsafe import Markup

    from integrity.render.svg import chart_svg

    charts = [(chart, Markup(chart_svg(chart, evidence.since, evidence.generated_at))) for chart in evidence.charts]
    phase_names = []
    for drill in evidence.drills:
        for name in drill.phases:
            if name not in phase_names:
                phase_names.append(name)
    return env.get_template("report.html").render(e=evidence, charts=charts, phase_names=phase_names)


@dataclass(frozen=True)
class HtmlDryRunReport:
    """A dry-run (or lint) report to be printed as HTML; exit code and summary are the report's."""

    report: object

    @property
    def exit_code(self):
        return self.report.exit_code

    def summary(self) -> dict:
        return self.report.summary()


def dry_run_html(report) -> str:
    """The HTML twin of integrity.render.migrate.markdown: the same facts, as a page."""
    from integrity.render.migrate import verdict

    counted = [f for f in report.findings if f.counts]
    covered = [f for f in report.findings if not f.counts]
    return _environment().get_template("dry_run.html").render(
        r=report, verdict=verdict(report), counted=counted, covered=covered,
    )


def register(render_text) -> None:
    from integrity.evidence import Evidence, ReportWritten

    def _print(wrapped, console) -> None:
        console.file.write(dry_run_html(wrapped.report))
        console.file.flush()

    render_text.register(HtmlDryRunReport, _print)
    render_text.register(Evidence, render_evidence_text)
    render_text.register(ReportWritten, render_written)


_PLAIN = {"highlight": False, "markup": False}


def render_written(written, console) -> None:
    console.print(f"wrote {written.path} ({written.bytes:,} bytes, {written.charts} charts, {written.points:,} points, "
                  f"{written.runs:,} runs in {written.window}) in {written.seconds:.2f}s", **_PLAIN)
    if written.status_exit_code:
        console.print(f"status now: integrity status would exit {written.status_exit_code} (see the page's first table)",
                      **_PLAIN)


def render_evidence_text(e, console) -> None:
    """Without --html: the page's tables, as text (the charts' figures are in --json)."""
    from rich.table import Table

    from integrity.render.svg import value_text

    console.print(f"{e.database}: window {e.window} from {_utc(e.since)}, {e.runs_in_window:,} runs; "
                  f"integrity status would exit {e.status_exit_code}", **_PLAIN)
    table = Table(show_header=True, header_style="bold", title="objectives")
    for column in ("objective", "measured", "target", "verdict"):
        table.add_column(column)
    for o in e.objectives:
        verdict = "not measured" if o.met is None else "met" if o.met else "MISSED"
        table.add_row(o.name, value_text(o.measured, o.unit), value_text(o.target, o.unit), verdict)
    console.print(table)
    for p in e.protection:
        newest = p.newest_restorable_id or _utc(p.newest_restorable_at) if p.newest_restorable_at else "none"
        bad = ", ".join(f"{count} {name}" for name, count in p.bad.items() if count) or "none bad"
        console.print(f"{p.kind} {p.location}: newest restorable {newest}; {bad}"
                      + (f"; {p.problem}" if p.problem else ""), **_PLAIN)
    for b in e.attention:
        console.print(f"untrusted backup {b.id}: {', '.join(b.states)}: {b.why}", **_PLAIN)
    for d in e.drills:
        if d.failed:
            console.print(f"failed drill {_utc(d.started_at)} of {d.backup_id}: exit {d.exit_code}: "
                          f"{'; '.join(d.problems) or d.error or ''}", **_PLAIN)
    for r in e.audit_rules:
        console.print(f"audit rule {r.rule} ({r.severity}) failed in {r.audits_failing} audit(s)", **_PLAIN)
    failing = [j for j in e.jobs if j.failures]
    for j in failing:
        console.print(f"job {j.job}: {j.failures} of {j.runs} runs failed, the last {_utc(j.last_failure_at)} "
                      f"(exit {j.last_failure_exit})", **_PLAIN)
