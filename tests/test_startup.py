"""`integrity --help` must stay fast: it loads none of the heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("pandas", "pandera", "alembic", "apscheduler", "sqlalchemy.orm")

PROBE = """
import json, sys
sys.argv = ["integrity", *{args!r}]
from integrity.cli import main
try:
    main()
except SystemExit:
    pass
print("\\n" + json.dumps(sorted(sys.modules)))
"""


def modules_after(args: list[str]) -> set[str]:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True, timeout=60
    )
    return set(json.loads(completed.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("args", [["--help"], ["status", "--help"], ["history", "--help"], []])
def test_help_loads_no_heavy_library(args):
    loaded = modules_after(args)
    assert "typer" in loaded  # the probe really ran the app
    assert [name for name in HEAVY if name in loaded] == []


def test_the_probe_sees_heavy_imports_of_a_command_that_needs_them():
    # A dry run's listing of revisions loads the history through Alembic, so alembic must
    # show up here; if it did not, the probe could not see anything and the test above
    # would be empty. (`status` no longer does: it reads the revision files' ids itself
    # and keeps each revision's model between runs, tests/test_fixed_cost.py.)
    loaded = modules_after(["migrate", "lint"])
    assert "alembic" in loaded


@pytest.fixture
def initialized():
    from cli_runner import CliRunner

    from integrity.cli import app

    result = CliRunner().invoke(app, ["init"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("args", [["status"], ["metrics"], ["backup", "list"]])
def test_status_and_metrics_load_neither_alembic_nor_pydantic(initialized, args):
    """Issue 20: status reads the revision ids itself and the kept model of its revision
    (tests/test_fixed_cost.py); typer's Pydantic coercion is not built for text options
    and flags (integrity.cli._plain_options)."""
    loaded = modules_after(args)
    assert "integrity.ledger" in loaded and "sqlalchemy" in loaded  # the command ran
    assert [name for name in ("alembic", "pydantic", "pandas") if name in loaded] == []


def test_text_options_and_flags_keep_their_meaning_without_pydantic(initialized, tmp_path):
    from cli_runner import CliRunner

    from integrity.cli import app

    runner = CliRunner()
    missing = tmp_path / "nowhere.toml"
    result = runner.invoke(app, ["--json", "--quiet", "--config", str(missing), "status"])
    assert result.exit_code == 4
    assert json.loads(result.stdout)["error"].startswith(f"config file {missing} does not exist")
    result = runner.invoke(app, ["status"], env={"INTEGRITY_CONFIG": str(missing)})
    assert result.exit_code == 4 and f"config file {missing} does not exist" in result.output
    assert runner.invoke(app, ["history", "--limit", "3"]).exit_code == 0  # a number is still coerced
    assert runner.invoke(app, ["history", "--limit", "x"]).exit_code == 2


WATCH_THE_COLLECTOR = """
import gc, json, sys
from integrity import api
seen = {{"at_start": gc.isenabled()}}
real = api.status

def watching(inv):
    seen.update(enabled=gc.isenabled(), frozen=gc.get_freeze_count())
    return real(inv)

api.status = watching
sys.argv = ["integrity", "status"]
from integrity.cli import main
try:
    main()
except SystemExit:
    pass
print("\\n" + json.dumps(seen))
"""


def test_the_collector_pauses_while_the_program_starts_and_works_during_the_command(initialized):
    """integrity.cli._StartupCollection: paused while the imports build the program's own
    objects, then frozen and on again for the command's work (a long backup needs it)."""
    done = subprocess.run([sys.executable, "-c", WATCH_THE_COLLECTOR.format()], capture_output=True, text=True,
                          timeout=60)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["at_start"] is True
    assert seen["enabled"] is True
    assert seen["frozen"] > 50_000  # SQLAlchemy, typer and rich: never walked again


def test_the_collector_is_left_alone_when_the_app_is_called_in_process(initialized):
    import gc

    from cli_runner import CliRunner

    from integrity.cli import app

    frozen = gc.get_freeze_count()
    assert CliRunner().invoke(app, ["status"]).exit_code == 3
    assert gc.isenabled() and gc.get_freeze_count() == frozen
