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
