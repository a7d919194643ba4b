"""`integrity report --html` and `migrate dry-run --format html`, looked at in a real browser.

The ledger is several days of simulated routine (bench/routine.py: the default schedule's
runs with a suspect backup, a failed drill, a dirty audit, a probe dip and a backup job
that could not run) with real runs of the real commands on top: a good backup, a backup
of an empty copy of the store (suspect), the good backup damaged on disk and its drill
failed, corrupt scores found by the audit, a probe. The page is opened in headless
Chromium over the DevTools protocol (tests/cdp.py says why not --dump-dom): it loads with
no console message of error or warning level, no uncaught exception, no browser error and
no request but the page itself; every chart's data points are in the DOM as the model has
them; the failing items are on screen. Each of these checks is shown to fail on a page
broken for it. A screenshot of the whole page is written to the test's tmp directory.

Without Chromium these tests skip, unless INTEGRITY_REQUIRE_POSTGRES=1 (CI), where they
fail: `.ci/run` installs Debian's `chromium`.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from backup_helpers import PROJECT, BackupEnv, execute, fill_database, flip_byte
from cdp import Browser, chromium_path

sys.path.insert(0, str(PROJECT))
from bench.routine import simulate_routine  # noqa: E402

DAYS = 4
WINDOW = "5d"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if chromium_path() is None:
        reason = "chromium not found: install Debian's chromium package (`apt-get install -y chromium`)"
        if os.environ.get("INTEGRITY_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " (CI: INTEGRITY_REQUIRE_POSTGRES=1, .ci/run installs it)")
        pytest.skip(reason)
    opened = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield opened
    opened.close()


class World:
    """The store, its ledger and what the real commands did to it."""

    def __init__(self, tmp: Path, sqlite_template: Path):
        self.tmp = tmp
        database = tmp / "game.db"
        shutil.copyfile(sqlite_template, database)
        url = f"sqlite:///{database}"
        fill_database(url, players=4, results_per_player=5)
        self.env = env = BackupEnv(tmp, url)

        from integrity.ledger import Ledger

        now = datetime.now(timezone.utc)
        start = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=DAYS)
        ledger = Ledger.open(env.settings().state.dir)
        try:
            self.simulated = simulate_routine(ledger, start=start, days=DAYS, results_rows=20)
        finally:
            ledger.close()

        self.good = env.create()
        assert env.invoke("backup", "verify", "--deep", self.good).returncode == 0
        empty = tmp / "empty-copy.db"
        shutil.copyfile(sqlite_template, empty)  # the store's identity, none of its rows
        code, document = BackupEnv(tmp, f"sqlite:///{empty}").invoke_json("backup", "create")
        assert code == 3, document
        self.suspect = document["result"]["manifest"]["id"]
        flip_byte(env.repo / self.good / env.repository().read_manifest(self.good).files[0].name, random.Random(7))
        assert env.invoke("drill", "--backup", self.good).returncode == 5
        execute(url, "UPDATE results SET raw_wpm = -raw_wpm WHERE id IN (1, 2)")
        code, document = env.invoke_json("audit")
        assert code == 3, document
        self.dirty_rules = document["result"]["error_rules"] if "error_rules" in document["result"] else None
        env.invoke("probe")

        self.page = tmp / "report.html"
        completed = env.invoke("report", "--html", str(self.page), "--since", WINDOW)
        assert completed.returncode == 0, completed.output
        self.cli_output = completed.stdout

    def evidence(self, now: datetime | None = None):
        from integrity.evidence import collect_evidence, parse_since
        from integrity.ledger import Ledger

        ledger = Ledger.open(self.env.settings().state.dir)
        try:
            return collect_evidence(self.env.settings(), ledger, since=parse_since(WINDOW), now=now)
        finally:
            ledger.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory, sqlite_template):
    return World(tmp_path_factory.mktemp("report"), sqlite_template)


def _broken(page: Path, tmp: Path, name: str, *, replace: tuple[str, str] | None = None, before_body: str = "") -> Path:
    text = page.read_text(encoding="utf-8")
    if replace:
        assert replace[0] in text
        text = text.replace(replace[0], replace[1], 1)
    broken = tmp / name
    broken.write_text(text.replace("</body>", before_body + "</body>"), encoding="utf-8")
    return broken


# ---------------------------------------------------------------- loads clean, fetches nothing


def test_the_page_loads_with_no_console_errors_and_fetches_nothing(browser, world):
    assert re.match(r"wrote .*report\.html \([\d,]+ bytes, 6 charts", world.cli_output), world.cli_output
    assert not [p for p in world.tmp.iterdir() if p.name.startswith(".report.html")]  # no temp file left
    found, url = browser.load(world.page)
    assert found.problems(url) == []
    assert found.requests == [url]
    assert browser.evaluate("document.title").startswith("Integrity report")
    shot = world.tmp / "report.png"
    height = browser.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and height > 1000


def test_the_load_check_catches_a_broken_page(browser, world, tmp_path):
    """A console error, an uncaught exception and a fetched resource are each reported."""
    broken = _broken(world.page, tmp_path, "broken.html", before_body=(
        '<script>console.error("chart data missing")</script><script>drawCharts()</script>'
        '<img src="http://127.0.0.1:9/cdn/chart.png">'))
    found, url = browser.load(broken)
    problems = found.problems(url)
    assert any("chart data missing" in p for p in problems), problems
    assert any(p.startswith("exception: ReferenceError: drawCharts") for p in problems), problems
    assert any(p == "request: http://127.0.0.1:9/cdn/chart.png" for p in problems), problems


# ---------------------------------------------------------------- every chart's points in the DOM


_DOM_POINTS = """JSON.stringify([...document.querySelectorAll('svg[data-chart]')].map(svg => ({
  chart: svg.dataset.chart, declared: Number(svg.dataset.points),
  points: [...svg.querySelectorAll('.point')].map(p => [p.dataset.series, p.dataset.x, p.dataset.y, p.dataset.flagged])
})))"""


def dom_points(browser) -> dict[str, tuple[int, list]]:
    import json

    return {c["chart"]: (c["declared"], sorted(map(tuple, c["points"]))) for c in json.loads(browser.evaluate(_DOM_POINTS))}


def model_points(evidence) -> dict[str, tuple[int, list]]:
    from integrity.render.svg import _x_text

    return {chart.id: (chart.point_count, sorted(
        (s.name, _x_text(p.x), repr(p.y), str(p.flagged).lower()) for s in chart.series for p in s.points
    )) for chart in evidence.charts}


@pytest.fixture(scope="module")
def rendered(world):
    """The model at one moment and its page, rendered by the renderer the command uses."""
    from integrity.render.report_html import render_report

    evidence = world.evidence(now=datetime.now(timezone.utc))
    page = world.tmp / "model.html"
    page.write_text(render_report(evidence), encoding="utf-8")
    return evidence, page


def test_every_chart_has_its_data_points_in_the_dom(browser, rendered):
    evidence, page = rendered
    found, url = browser.load(page)
    assert found.problems(url) == []
    expected = model_points(evidence)
    assert set(expected) == {"backup-age", "backup-size", "drill-recovery", "audit-failures", "probe-success", "job-runs"}
    for chart, (count, points) in expected.items():
        assert count > 0, f"{chart} has no points: the routine should have given it some"
    assert dom_points(browser) == expected
    # Several days of routine: a probe a minute bucketed, a drill a day, a backup an hour.
    counts = {chart: count for chart, (count, _) in expected.items()}
    assert counts["drill-recovery"] >= 2 * DAYS and counts["backup-size"] >= 24 * DAYS
    assert counts["probe-success"] <= 400 < world_probe_runs(evidence)


def world_probe_runs(evidence) -> int:
    return next(j.runs for j in evidence.jobs if j.job == "probe")


def test_the_probe_chart_and_totals_sum_up_every_probe_run(world, rendered):
    """The probe's runs are summed up by the ledger's database (SQL buckets): the same
    figures, computed here from every run the ledger returns."""
    from integrity.evidence import _bucket_seconds, parse_since
    from integrity.ledger import Ledger

    evidence, _ = rendered
    ledger = Ledger.open(world.env.settings().state.dir)
    try:
        runs = [r for r in ledger.runs(kind="probe", limit=100_000)
                if r.started_at >= evidence.since and r.exit_code is not None]
    finally:
        ledger.close()
    size = _bucket_seconds(parse_since(WINDOW))
    buckets: dict[int, list[float]] = {}
    for run in runs:
        stamp = int(run.started_at.timestamp())
        buckets.setdefault(stamp - stamp % size, []).append(run.summary["success_ratio"])
    chart = next(c for c in evidence.charts if c.id == "probe-success")
    (series,) = chart.series
    assert [(int(p.x.timestamp()), p.y) for p in series.points] == [(b, min(v)) for b, v in sorted(buckets.items())]
    assert sum(p.flagged for p in series.points) == sum(min(v) < 0.99 for v in buckets.values()) > 0
    probe = next(j for j in evidence.jobs if j.job == "probe")
    failures = [r for r in runs if r.exit_code != 0]
    assert (probe.runs, probe.failures) == (len(runs), len(failures)) and probe.failures > 0
    assert probe.last_failure_at == max(r.started_at for r in failures)
    assert next(o for o in evidence.objectives if o.name == "Probe success ratio").measured == max(
        runs, key=lambda r: r.started_at).summary["success_ratio"]


def test_the_point_check_catches_a_missing_point(browser, rendered, tmp_path):
    evidence, page = rendered
    text = page.read_text(encoding="utf-8")
    first = re.search(r'<circle class="point[^>]*data-series="failed drill"[^>]*>.*?</circle>', text)
    assert first, "the failed drill's point is on the page"
    broken = tmp_path / "missing-point.html"
    broken.write_text(text.replace(first.group(0), "", 1), encoding="utf-8")
    browser.load(broken)
    seen = dom_points(browser)
    assert seen != model_points(evidence)
    declared, points = seen["drill-recovery"]
    assert len(points) == declared - 1


# ---------------------------------------------------------------- failing items on screen


def visible(browser, selector: str) -> list[str]:
    """The text of every element matching `selector` that a person can see."""
    import json

    script = f"""JSON.stringify([...document.querySelectorAll({json.dumps(selector)})].filter(el => {{
        const r = el.getBoundingClientRect(), s = getComputedStyle(el);
        return r.width > 0 && r.height > 0 && s.visibility === 'visible' && s.display !== 'none' && Number(s.opacity) > 0;
    }}).map(el => el.textContent.trim()))"""
    return json.loads(browser.evaluate(script))


def test_the_failing_items_are_visible(browser, world):
    browser.load(world.page)
    assert any(world.suspect in row for row in visible(browser, f'#attention tr[data-backup="{world.suspect}"]'))
    failed = visible(browser, '#drills tr[data-exit="5"]')
    assert any(world.good in row and "FAILED" in row for row in failed), failed
    assert len(failed) >= 2  # the simulated day's failed drill and the real one
    assert visible(browser, '#audits tr.failing')  # the dirty audits' error rules
    assert any("raw_wpm" in row for row in visible(browser, "#audits tr.failing")), visible(browser, "#audits tr")
    missed = visible(browser, '#objectives tr[data-met="false"]')
    assert any(row.startswith("RPO") and "MISSED" in row for row in missed), missed
    assert any(row.startswith("RTO") and "MISSED" in row for row in missed), missed
    assert visible(browser, '#status tr[data-state="failed"]')  # the last drill (exit 5)
    assert visible(browser, '#jobs tr[data-job="backup"].failing')  # the job that could not run
    flagged = visible(browser, 'svg[data-chart="backup-size"] .point.flagged')
    assert len(flagged) >= 4  # three simulated suspect backups and the real one
    colours = browser.evaluate(
        "[...document.querySelectorAll('svg[data-chart=\"backup-size\"] .point.flagged')].map(p => getComputedStyle(p).fill)")
    assert set(colours) == {"rgb(220, 38, 38)"}  # red, unlike the other points


def test_the_visibility_check_catches_hidden_failures(browser, world, tmp_path):
    broken = _broken(world.page, tmp_path, "hidden.html",
                     replace=("</style>", "tr.failing { display: none; } .point.flagged { visibility: hidden; }</style>"))
    browser.load(broken)
    assert visible(browser, f'#attention tr[data-backup="{world.suspect}"]') == []
    assert visible(browser, 'svg[data-chart="backup-size"] .point.flagged') == []
    assert visible(browser, "#drills tr") != []  # the header row is still there


# ---------------------------------------------------------------- the command line


def test_report_without_html_prints_the_summary_and_json_the_model(world):
    completed = world.env.invoke("report", "--since", WINDOW)
    assert completed.returncode == 0, completed.output
    assert f"untrusted backup {world.suspect}" in completed.stdout
    assert "MISSED" in completed.stdout
    code, document = world.env.invoke_json("report", "--since", "24h")
    assert code == 0
    charts = {c["id"]: c for c in document["result"]["charts"]}
    assert charts["job-runs"]["title"] == "Scheduled job runs and failures per hour"


@pytest.mark.parametrize("since", ["7", "0d", "5y", "401d", "1.5d"])
def test_a_bad_window_is_a_usage_error(world, since):
    completed = world.env.invoke("report", "--html", str(world.tmp / "x.html"), "--since", since)
    assert completed.returncode == 2
    assert f"Error: --since {since!r}" in completed.output
    assert not (world.tmp / "x.html").exists()


def test_an_unwritable_path_is_exit_4_and_keeps_the_old_page(world, tmp_path):
    completed = world.env.invoke("report", "--html", str(tmp_path / "missing" / "r.html"))
    assert completed.returncode == 4
    assert f"the directory {tmp_path / 'missing'} does not exist" in completed.output
    completed = world.env.invoke("report", "--html", str(tmp_path))
    assert completed.returncode == 4 and "is a directory" in completed.output
    # A failed write (here: the temporary name, the page's name plus a prefix and a suffix,
    # is longer than the file system allows; a read-only directory would do, but not for
    # root) is exit 4 and leaves the page that was there.
    page = tmp_path / ("r" * 245 + ".html")
    page.write_text("old page")
    completed = world.env.invoke("report", "--html", str(page))
    assert completed.returncode == 4, completed.output
    assert f"Error: cannot write {page}: File name too long;" in completed.output
    assert page.read_text() == "old page"
    assert sorted(p.name for p in tmp_path.iterdir()) == [page.name]


def test_each_repository_has_its_row_and_a_copy_its_objective(browser, sqlite_url, tmp_path):
    """[[repositories]]: the primary and each copy have a row; a copy is held to
    [objectives] copy_max_age_seconds. The copy that holds the backup meets it; the one
    that was never filled misses it, visibly."""
    fill_database(sqlite_url, players=2, results_per_player=3)
    for name in ("offsite", "forgotten"):
        (tmp_path / name).mkdir()
    config = tmp_path / "integrity.toml"
    config.write_text("".join(f'[[repositories]]\nname = "{name}"\nlocation = "{tmp_path / name}"\n\n'
                              for name in ("offsite", "forgotten")))
    env = BackupEnv(tmp_path, sqlite_url, extra_env={"INTEGRITY_CONFIG": str(config)})
    backup = env.create()
    assert env.invoke("backup", "copy", backup, "--to", "offsite").returncode == 0
    code, document = env.invoke_json("report", "--since", "1d")
    assert code == 0, document
    rows = {p["name"]: p for p in document["result"]["protection"]}
    assert list(rows) == ["primary", "offsite", "forgotten"]
    assert rows["primary"]["newest_restorable_id"] == rows["offsite"]["newest_restorable_id"] == backup
    assert rows["forgotten"]["newest_restorable_id"] is None
    verdicts = {o["name"].split(" (")[1].split(":")[0]: o["met"] for o in document["result"]["objectives"]
                if o["name"].startswith("Copy age")}
    assert verdicts == {"offsite": True, "forgotten": False}
    page = tmp_path / "copies.html"
    assert env.invoke("report", "--html", str(page), "--since", "1d").returncode == 0
    found, url = browser.load(page)
    assert found.problems(url) == []
    assert visible(browser, '#protection tr.failing[data-repository="forgotten"]')
    assert not visible(browser, '#protection tr.failing[data-repository="offsite"]')
    missed = visible(browser, '#objectives tr[data-met="false"]')
    assert any(row.startswith("Copy age (forgotten") and "MISSED" in row for row in missed), missed


def test_the_point_in_time_archive_has_its_row_and_objective(sqlite_path, tmp_path):
    """[pitr] enabled, Litestream caught up: the archive's window is a protection row and
    its lag an objective, met (the same reading `integrity status` makes)."""
    import json

    from test_pitr_watch import healthy_archive, invoke

    environ, replicating = healthy_archive(tmp_path, sqlite_path)
    try:
        result = invoke(environ, "--json", "report", "--since", "1h")
    finally:
        replicating.stop()
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)["result"]
    (archive,) = [p for p in document["protection"] if p["kind"] == "point-in-time"]
    assert archive["name"] == "pitr" and archive["location"].startswith("litestream: ")
    assert archive["newest_restorable_at"] and archive["oldest_restorable_at"] and archive["problem"] is None
    (lag,) = [o for o in document["objectives"] if o["name"] == "RPO (point-in-time archive)"]
    assert lag["met"] is True and lag["target"] == 10 and lag["measured"] == 0


def test_a_stopped_archive_misses_its_objective(sqlite_path, tmp_path):
    import json

    from test_pitr_watch import invoke, stopped_archive

    environ = stopped_archive(tmp_path, sqlite_path, INTEGRITY_PITR__LAG_OBJECTIVE_SECONDS="1")
    result = invoke(environ, "--json", "report", "--since", "1h")
    assert result.exit_code == 0, result.output
    (lag,) = [o for o in json.loads(result.stdout)["result"]["objectives"] if o["name"] == "RPO (point-in-time archive)"]
    assert lag["met"] is False and lag["measured"] > 1, lag


def test_without_jinja2_the_report_names_the_extra_to_install(world, tmp_path):
    """Jinja2 is the `report` extra: without it, --html is exit 4 naming it (a subprocess
    in which `import jinja2` fails); the text report needs no Jinja2."""
    import subprocess

    program = ("import sys; sys.modules['jinja2'] = None; "
               "from integrity.cli import main; sys.argv[0] = 'integrity'; main()")
    env = world.env.process_env()

    def run(*args: str) -> subprocess.CompletedProcess:
        completed = subprocess.run([sys.executable, "-c", program, *args], env=env, capture_output=True, text=True,
                                   timeout=60)
        assert "Traceback" not in completed.stderr, completed.stderr
        return completed

    html = run("report", "--html", str(tmp_path / "r.html"))
    assert html.returncode == 4, html.stderr
    assert "Error: the HTML report needs Jinja2: install the report extra" in html.stderr
    assert not (tmp_path / "r.html").exists()
    text = run("report", "--since", "1d")
    assert text.returncode == 0, text.stderr
    assert "integrity status would exit" in text.stdout


# ---------------------------------------------------------------- the dry run's HTML twin


def test_the_dry_run_html_twin_shows_the_markdown_reports_facts(browser, world, tmp_path):
    from test_migrate_static import HEAD, make_project, revision_source

    ini = make_project(tmp_path / "project", {"0002_case.py": revision_source(
        "0002_case", HEAD, 'op.add_column("players", sa.Column("country", sa.String(2), nullable=False))')})
    html = world.env.invoke("migrate", "dry-run", "--alembic-config", str(ini), "--format", "html")
    markdown = world.env.invoke("migrate", "dry-run", "--alembic-config", str(ini), "--format", "markdown")
    assert html.returncode == markdown.returncode == 3, html.output
    page = tmp_path / "dry-run.html"
    page.write_text(html.stdout, encoding="utf-8")
    found, url = browser.load(page)
    assert found.problems(url) == []
    rules_md = set(re.findall(r"^\| \w+ \| `([\w.-]+)` \|", markdown.stdout, re.MULTILINE))
    rules_html = set(browser.evaluate("[...document.querySelectorAll('#findings tr[data-rule]')].map(r => r.dataset.rule)"))
    assert rules_md and rules_html == rules_md
    assert "migration-failed" in rules_html  # the NOT NULL column fails on a populated table
    assert any("dry run FAILED" in text for text in visible(browser, ".verdict.bad"))
    browser.screenshot(tmp_path / "dry-run.png")
