"""What every `integrity` run costs besides its work, held by structure, never by timing
(issue 20; bench/fixed_cost.py measures the wall time):

- one run opens the ledger once: the run's own ledger is shared with status's sections
  and the metrics file written after it;
- the metrics written after every command read a handful of the ledger's newest rows,
  not pages of hundreds, however long the ledger;
- rendering one result imports only its topic's renderer, so a `status` run never loads
  the restore, salvage or dry-run machinery (nor pandas).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from functools import singledispatch
from importlib import import_module
from pathlib import Path

import pytest
from cli_runner import CliRunner

from integrity.cli import app
from integrity.ledger import Ledger, runs

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


@pytest.fixture
def initialized():
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output


@pytest.fixture
def ledger_opens(monkeypatch):
    """How many times Ledger.open ran."""
    opened = []
    real_open = Ledger.open.__func__

    def counting(cls, *args, **kwargs):
        opened.append(args)
        return real_open(cls, *args, **kwargs)

    monkeypatch.setattr(Ledger, "open", classmethod(counting))
    return opened


@pytest.mark.parametrize("command", [["status"], ["metrics"], ["history"]])
def test_a_run_opens_the_ledger_once(initialized, ledger_opens, command):
    result = runner.invoke(app, command)
    assert result.exit_code in (0, 3), result.output
    assert len(ledger_opens) == 1


def test_status_called_without_a_run_opens_the_ledger_once(initialized, ledger_opens):
    from integrity import api
    from integrity.invocation import Invocation
    from integrity.settings import resolve_settings

    settings = resolve_settings(environ=os.environ, cwd=Path.cwd())
    report = api.status(Invocation(settings, command="status"))
    assert "scheduled jobs" not in {check.name for check in report.checks}  # the ledger was read
    assert len(ledger_opens) == 1


# ---------------------------------------------------------------- the metrics' reads


def _summary(command: str, i: int) -> dict:
    """A summary that makes run `i` of `command` a run of one of its jobs (integrity.jobs)."""
    if command == "backup verify":
        return {"b1": {"quick": "ok", "deep": "ok" if i % 2 else None}}
    if command == "audit":
        return {"scope": "full" if i % 2 else "incremental"}
    if command == "backup prune":
        return {"dry_run": False}
    if command == "probe":
        return {"success_ratio": 1.0}
    if command == "drill":  # every fourth one a drill of the point-in-time archive (`drill --at`)
        return {"backup_id": "b1", "predicted_seconds": 12.0, "recovery_seconds": 3.0, "point_in_time": i % 4 == 1}
    return {}


def _fill_ledger(ledger: Ledger, per_command: int) -> None:
    """`per_command` finished runs of every job's command (every third one failed), in
    one transaction."""
    from integrity.jobs import JOBS

    start = datetime.now(timezone.utc) - timedelta(days=30)
    rows = []
    for number, command in enumerate(sorted({job.command for job in JOBS.values()})):
        for i in range(per_command):
            started = start + timedelta(minutes=i, seconds=number)
            rows.append({
                "id": uuid.uuid4().hex, "command": command, "started_at": started,
                "finished_at": started + timedelta(seconds=2), "outcome": "ok" if i % 3 else "failed",
                "exit_code": 0 if i % 3 else 5, "summary": json.dumps(_summary(command, i)),
                "host": "h", "pid": 1, "tool_version": "0",
            })
    with ledger.engine.begin() as connection:
        connection.execute(runs.insert(), rows)


@pytest.fixture
def rows_read(monkeypatch):
    """Rows of the ledger's queries handed to Python, per query (its readers take them
    with `.all()` or iterate over them)."""
    from sqlalchemy.engine.result import MappingResult, Result

    counted = []
    for kind in (MappingResult, Result):
        real_all, real_iter = kind.all, kind.__iter__

        def counting_all(self, _real=real_all):
            got = _real(self)
            counted.append(len(got))
            return got

        def counting_iter(self, _real=real_iter):
            counted.append(0)
            for row in _real(self):
                counted[-1] += 1
                yield row

        monkeypatch.setattr(kind, "all", counting_all)
        monkeypatch.setattr(kind, "__iter__", counting_iter)
    return counted


def test_the_metrics_read_few_rows_of_a_long_ledger(initialized, rows_read):
    from integrity.prometheus import collect
    from integrity.settings import resolve_settings

    settings = resolve_settings(environ=os.environ, cwd=Path.cwd())
    ledger = Ledger.open(settings.state.dir, settings.state.ledger_url)
    try:
        _fill_ledger(ledger, per_command=600)
        rows_read.clear()
        samples = collect(settings, ledger)
    finally:
        ledger.close()
    success = {dict(s.labels)["job_name"]: s.value for s in samples
               if s.name == "integrity_job_last_success_timestamp_seconds"}
    assert all(value > 0 for value in success.values()), success  # each found its newest success
    # Six commands of 600 runs each: pages of 500 read 8,794 rows here (issue 20).
    assert sum(rows_read) <= 300, rows_read


# ---------------------------------------------------------------- renderers


def test_every_renderer_is_found_through_its_types_module():
    from integrity.render import text

    for topic in text.TOPICS:
        if topic == "text":
            continue
        registry = singledispatch(lambda result, console: None)
        import_module(f"integrity.render.{topic}").register(registry)
        for kind in registry.registry:
            if kind is object:
                continue
            assert text._TOPIC_OF.get(kind.__module__) == topic, (kind, topic)


def test_a_status_run_loads_no_other_operation(initialized):
    program = (
        "import sys\n"
        "from integrity.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('integrity.', 'pandas', 'pandera'))), file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", program, "status"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = set(eval(done.stderr.strip().splitlines()[-1]))
    assert "integrity.status" in loaded
    for unneeded in ("integrity.recovery.salvage", "integrity.recovery.restore", "integrity.migrate.dry_run",
                     "integrity.probe", "integrity.backups.create", "pandas", "pandera"):
        assert unneeded not in loaded, unneeded


def _one_job_at_a_time(ledger, job, scan):
    """job_runs as it was, two queries per job: the reference the one-pass reading keeps."""
    from integrity.jobs import iter_finished_runs, job_verdict

    finished = iter_finished_runs(ledger, job.command, limit=scan)
    completed = next((r for r in finished if job_verdict(job, r) is not False), None)
    successes = iter_finished_runs(ledger, job.command, exit_code=0, limit=scan)
    return completed, next((r for r in successes if job_verdict(job, r)), None)


@pytest.mark.parametrize("scan", [3, 40, 2000])
def test_reading_each_command_once_answers_as_one_job_at_a_time(initialized, scan):
    """Jobs sharing a command, long failure streaks (further back than `scan`), summaries
    that name no job: every job's newest completed and successful run are the same."""
    import random

    from integrity.jobs import JOBS, jobs_runs
    from integrity.settings import resolve_settings

    settings = resolve_settings(environ=os.environ, cwd=Path.cwd())
    ledger = Ledger.open(settings.state.dir, settings.state.ledger_url)
    try:
        chance = random.Random(20)
        start = datetime.now(timezone.utc) - timedelta(days=10)
        rows = []
        for i in range(400):
            command = chance.choice(sorted({job.command for job in JOBS.values()}))
            streak = i < 300 and command in ("backup verify", "audit")  # old successes, then failures only
            code = 0 if streak and chance.random() < 0.5 else chance.choice([0, 3, 4, 5]) if i < 300 else 5
            summary = {} if chance.random() < 0.1 else _summary(command, chance.randrange(4))
            started = start + timedelta(minutes=i)
            rows.append({"id": uuid.uuid4().hex, "command": command, "started_at": started,
                         "finished_at": started + timedelta(seconds=1), "outcome": "x", "exit_code": code,
                         "summary": json.dumps(summary), "host": "h", "pid": 1, "tool_version": "0"})
        with ledger.engine.begin() as connection:
            connection.execute(runs.insert(), rows)
        together = jobs_runs(ledger, JOBS.values(), scan=scan)
        for name, job in JOBS.items():
            completed, success = _one_job_at_a_time(ledger, job, scan)
            assert (together[name].last_completed, together[name].last_success) == (completed, success), name
    finally:
        ledger.close()


def test_the_history_is_read_again_when_a_revision_file_changes():
    """The history is kept per process (the metrics after every command judge the
    schema); a revision file written since must not be judged stale."""
    from game_core import schema_state

    first = schema_state.history()
    assert schema_state.history() is first
    revision = sorted(schema_state._versions_dir().glob("*.py"))[0]
    stat = revision.stat()
    try:
        os.utime(revision, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        assert schema_state.history() is not first
    finally:
        os.utime(revision, ns=(stat.st_atime_ns, stat.st_mtime_ns))


# ---------------------------------------------------------------- the history without Alembic


def _alembic_reading(versions: Path) -> tuple[str, dict[str, tuple[str, ...]]]:
    """(head, {revision: its down revisions}) as Alembic reads the history in `versions`."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(versions.parent))
    script = ScriptDirectory.from_config(config)
    downs = {}
    for rev in script.walk_revisions():
        down = rev.down_revision
        downs[rev.revision] = () if down is None else (down,) if isinstance(down, str) else tuple(down)
    return script.get_current_head(), downs


def _reader(history) -> tuple[str, dict[str, tuple[str, ...]]]:
    return history.head, {rev.id: rev.down_revisions for rev in history.revisions.values()}


def test_the_reader_agrees_with_alembic_on_this_codes_history():
    from game_core.schema_state import _versions_dir, history, read_history

    versions = _versions_dir()
    assert read_history(versions) is not None  # the fast path, not Alembic's
    assert _reader(history()) == _alembic_reading(versions)


REVISION = """\"\"\"{doc}\"\"\"
from alembic import op
import sqlalchemy as sa

{assignments}


def upgrade():
    op.create_table("{table}", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("{table}")
"""


@pytest.fixture
def branched_history(tmp_path):
    """This code's history plus two branches from its head merged again: annotated and
    plain assignments, a tuple down_revision."""
    import shutil

    from game_core.migrations import MIGRATIONS_DIR
    from game_core.schema_state import head_revision

    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    versions = copy / "versions"
    head = head_revision()
    for name, assignments in {
        "0002_left": f'revision = "0002_left"\ndown_revision = "{head}"',
        "0002_right": f'revision: str = "0002_right"\ndown_revision: str | None = "{head}"\nbranch_labels = None',
        "0003_merge": 'revision = "0003_merge"\ndown_revision = ("0002_left", "0002_right")',
    }.items():
        (versions / f"{name}.py").write_text(REVISION.format(doc=name, assignments=assignments, table=name))
    return versions


def test_the_reader_agrees_with_alembic_on_a_branched_and_merged_history(branched_history):
    from game_core.schema_state import read_history

    read = read_history(branched_history)
    assert read is not None
    assert _reader(read) == _alembic_reading(branched_history)
    assert read.head == "0003_merge"
    assert [rev.id for rev in read.lineage("0003_merge")][1:] == ["0002_left", "0002_right", "0003_merge"]


@pytest.mark.parametrize("assignments", [
    'import os\nrevision = os.environ.get("R", "0002_computed")\ndown_revision = "{head}"',  # not a literal
    'revision = "0002_depends"\ndown_revision = "{head}"\ndepends_on = "{head}"',
    'revision = "0002_labelled"\ndown_revision = "{head}"\nbranch_labels = ("feature",)',
])
def test_a_history_the_reader_does_not_understand_is_alembics(branched_history, assignments, monkeypatch):
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from game_core import schema_state

    head = schema_state.head_revision()
    for name in ("0003_merge", "0002_right", "0002_left"):
        (branched_history / f"{name}.py").unlink()
    (branched_history / "0002_odd.py").write_text(REVISION.format(doc="odd", assignments=assignments.format(head=head), table="odd"))
    assert schema_state.read_history(branched_history) is None
    config = Config()
    config.set_main_option("script_location", str(branched_history.parent))
    monkeypatch.setattr(schema_state, "_versions_dir", lambda: branched_history)
    monkeypatch.setattr(schema_state, "_script_directory", lambda: ScriptDirectory.from_config(config))
    assert _reader(schema_state.history()) == _alembic_reading(branched_history)
    assert schema_state.head_revision() != head


def test_a_second_status_reads_the_kept_model_and_never_imports_alembic(initialized):
    """The first judgement of a revision builds its model with Alembic and keeps it in
    the state directory; a later run reads it, and says the same."""
    from integrity.settings import resolve_settings

    settings = resolve_settings(environ=os.environ, cwd=Path.cwd())
    program = (
        "import sys\n"
        "from integrity.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('alembic' in sys.modules, file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    import shutil

    shutil.rmtree(settings.state.dir / "schema-models")  # init kept one already
    outputs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", program, "--json", "status"], env=env, capture_output=True,
                              text=True, timeout=120)
        document = json.loads(done.stdout)
        assert document["exit_code"] == 3, done.stderr
        outputs.append((done.stderr.strip().splitlines()[-1], document["result"]["checks"]))
    assert len(list((settings.state.dir / "schema-models").glob("model-*.json"))) == 1
    (first_alembic, first_checks), (second_alembic, second_checks) = outputs
    schema = [c for c in second_checks if c["name"] == "schema"]
    assert schema == [c for c in first_checks if c["name"] == "schema"]
    assert "columns match the model of" in schema[0]["detail"]
    assert (first_alembic, second_alembic) == ("True", "False")


# ---------------------------------------------------------------- the metrics file after a run


@pytest.fixture
def collections(monkeypatch):
    """How many times the metrics were collected from their sources."""
    from integrity import prometheus

    counted = []
    real = prometheus.collect

    def counting(*args, **kwargs):
        counted.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(prometheus, "collect", counting)
    return counted


def _file_samples(settings) -> dict:
    from integrity.prometheus import _parse

    return {(s.name, s.labels): s.value for s in _parse(settings.metrics.path.read_text(encoding="utf-8"))}


def test_metrics_collects_once_and_writes_what_it_prints(initialized, collections):
    from integrity.settings import resolve_settings

    result = runner.invoke(app, ["metrics"])
    assert result.exit_code == 0, result.output
    assert len(collections) == 1
    settings = resolve_settings(environ=os.environ, cwd=Path.cwd())
    assert settings.metrics.path.read_text(encoding="utf-8") == result.stdout


def test_a_run_that_changes_nothing_carries_the_file_forward(initialized, collections, monkeypatch):
    """`status` collects nothing again: every sample of the last collection is carried,
    the configured ones are written afresh, and the file says when it was written."""
    from integrity.settings import resolve_settings

    settings = resolve_settings(environ=os.environ, cwd=Path.cwd())
    assert runner.invoke(app, ["metrics"]).exit_code == 0
    before = _file_samples(settings)
    collections.clear()
    monkeypatch.setenv("INTEGRITY_OBJECTIVES__RPO_SECONDS", "1234")
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 3, result.output
    assert collections == []
    after = _file_samples(settings)
    generated = ("integrity_metrics_generated_timestamp_seconds", ())
    assert after[generated] > before[generated]
    assert after[("integrity_objective_rpo_seconds", ())] == 1234
    unchanged = {key for key in before if key not in (generated, ("integrity_objective_rpo_seconds", ()))}
    assert {key: after[key] for key in unchanged} == {key: before[key] for key in unchanged}
    assert after.keys() == before.keys()

    # A run that may change what the metrics read collects them afresh.
    assert runner.invoke(app, ["backup", "create"]).exit_code == 0
    assert collections == [1]


def test_without_a_whole_file_to_carry_a_run_collects(initialized, collections):
    from integrity.settings import resolve_settings

    settings = resolve_settings(environ=os.environ, cwd=Path.cwd())
    for text in (None, "", "# HELP integrity_database_up x\nintegrity_database_up 1\n"):  # missing, empty, cut
        if text is None:
            settings.metrics.path.unlink()
        else:
            settings.metrics.path.write_text(text, encoding="utf-8")
        collections.clear()
        assert runner.invoke(app, ["status"]).exit_code == 3
        assert collections == [1], text
        assert ("integrity_job_enabled", (("job_name", "backup"),)) in _file_samples(settings)


def test_the_file_reads_back_as_it_was_written():
    from integrity.prometheus import Sample, _parse, render

    samples = (
        Sample("integrity_audit_rule_failing_rows", (("rule", 'odd "rule"\\with\nnewline'), ("severity", "error")), 3.0),
        Sample("integrity_database_up", (), 1.0),
        Sample("integrity_drill_predicted_recovery_seconds", (), 12.345678901234),
        Sample("integrity_metrics_generated_timestamp_seconds", (), 1796000000.123456),
    )
    text = render(samples)
    assert tuple(_parse(text)) == samples
    assert render(tuple(_parse(text))) == text


# ---------------------------------------------------------------- each repository read once


@pytest.fixture
def with_a_copy(initialized, tmp_path):
    """A [[repositories]] copy beside the primary, in the configuration init wrote."""
    from integrity.settings import resolve_settings

    settings = resolve_settings(environ=os.environ, cwd=Path.cwd())
    config = Path(settings.config_path)
    config.write_text(config.read_text(encoding="utf-8") + f'\n[[repositories]]\nname = "usb"\nlocation = "{tmp_path / "usb"}"\n',
                      encoding="utf-8")
    (tmp_path / "usb").mkdir()
    assert runner.invoke(app, ["backup", "create"]).exit_code == 0
    assert runner.invoke(app, ["backup", "copy", "--all-missing", "--to", "usb"]).exit_code == 0
    return settings


@pytest.fixture
def catalogues_read(monkeypatch):
    """The locations of the repositories whose catalogue was read, in order."""
    from integrity.backups import catalog

    read = []
    real = catalog.read_catalog

    def counting(repository, *args, **kwargs):
        read.append(str(repository.location))
        return real(repository, *args, **kwargs)

    monkeypatch.setattr(catalog, "read_catalog", counting)
    return read


@pytest.mark.parametrize("command", [["status"], ["metrics"]])
def test_each_repository_is_read_once_per_run(with_a_copy, catalogues_read, command):
    result = runner.invoke(app, command)
    assert result.exit_code in (0, 3), result.output
    assert len(catalogues_read) == 2 and len(set(catalogues_read)) == 2, catalogues_read
    if command == ["status"]:
        assert "copy usb" in result.output
    else:
        assert 'integrity_repository_newest_good_timestamp_seconds{repository="usb",kind="directory"}' in result.output
        assert 'repository="primary"' in result.output
