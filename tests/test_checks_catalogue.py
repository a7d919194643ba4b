"""The catalogue has one source of truth: the Pandera contracts.

The SQL engine reads `checks/catalogue_spec.py`, generated from the contracts by
`python -m checks.export`; these tests regenerate it and fail on any difference, show
that the export refuses an inconsistent model, and that the SQL engine never loads
pandas or pandera.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
import pytest
from pandera.typing import Series

import checks
from checks import catalogue_spec, contracts, export
from checks.compile_sql import COMPILERS

ROOT = Path(__file__).resolve().parent.parent
# The project root first on the path: an editable install made before checks/ had an
# __init__.py maps `checks` to an empty namespace package.
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def test_the_exported_catalogue_is_exactly_what_the_contracts_say():
    assert export.SPEC_PATH.read_text(encoding="utf-8") == export.render(), "run `python -m checks.export`"


def test_the_export_command_checks_and_writes(tmp_path, monkeypatch):
    completed = subprocess.run(
        [sys.executable, "-m", "checks.export", "--check"], capture_output=True, text=True, timeout=120, env=ENV, cwd=ROOT
    )
    assert completed.returncode == 0, completed.stderr
    stale = tmp_path / "catalogue_spec.py"
    stale.write_text("ROW_RULES = ()\n")
    monkeypatch.setattr(export, "SPEC_PATH", stale)
    assert export.main(["--check"]) == 1
    assert export.main([]) == 0 and stale.read_text() == export.render()


def test_the_row_rules_are_the_contracts_rules_compiled():
    from_contracts = [entry["id"] for model in contracts.MODELS for entry in model.Config.metadata["rules"]]
    assert [rule.id for rule in checks.RULES if rule.kind == "row"] == from_contracts
    assert [entry["id"] for entry in catalogue_spec.ROW_RULES] == from_contracts
    # Every check a contract uses has a SQL twin of the same name.
    used = {name for entry in catalogue_spec.ROW_RULES for _column, name, _stats in entry["checks"]}
    assert used <= set(COMPILERS)
    assert {"wpm_matches_counts", "xp_matches_counts", "level_matches_xp", "not_after_audit_time"} <= used
    # The custom checks are registered Pandera checks, not in-class ones.
    for name in ("wpm_matches_counts", "chars_within", "not_after_audit_time"):
        assert name in pa.Check.REGISTERED_CUSTOM_CHECKS
    builtin = {"greater_than_or_equal_to", "less_than_or_equal_to", "greater_than", "isin", "str_length"}
    for model in contracts.MODELS:
        schema = model.to_schema()
        names = [c.name for c in schema.checks] + [c.name for col in schema.columns.values() for c in col.checks]
        assert all(name in pa.Check.REGISTERED_CUSTOM_CHECKS or name in builtin for name in names), names


def test_the_contracts_pin_dtypes_and_ranges_from_game_core_metrics():
    from game_core import metrics

    tables = catalogue_spec.TABLES
    assert tables["results"]["columns"]["started_at"]["dtype"] == "datetime64[us, UTC]"
    assert tables["results"]["columns"]["mode"]["dtype"].startswith("string")
    assert tables["results"]["columns"]["duration_ms"] == {"dtype": "Int64", "nullable": False}
    by_id = {entry["id"]: entry for entry in catalogue_spec.ROW_RULES}
    assert by_id["results.duration_min"]["checks"] == (
        ("duration_ms", "greater_than_or_equal_to", {"min_value": metrics.MIN_DURATION_MS}),
    )
    assert by_id["results.wpm_suspicious"]["checks"][0][2] == {"max_value": metrics.SUSPICIOUS_WPM}
    (_column, _name, statistics), = by_id["results.wpm_recomputed"]["checks"]
    assert statistics["tolerance"] == metrics.STORED_VALUE_TOLERANCE
    assert by_id["results.wpm_recomputed"]["columns"] == ("wpm", "correct_word_chars", "correct_spaces", "duration_ms")


def test_the_contracts_are_ordinary_pandera_models():
    """Anyone can validate a frame with them directly (the engine only avoids building
    failure cases it does not need)."""
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from test_checks_support import NOW, result_row

    rows = [{"id": 1, **result_row(1, NOW)}, {"id": 2, **result_row(1, NOW, wpm=900.0, accuracy=120.0)}]
    dtypes = {name: str(column.dtype) for name, column in contracts.Results.to_schema().columns.items()}
    frame = pd.DataFrame(rows)[list(dtypes)].astype(dtypes)
    contracts.Results.validate(frame.iloc[:1])
    with pytest.raises(pa.errors.SchemaErrors) as raised:
        contracts.Results.validate(frame, lazy=True)
    failed = raised.value.failure_cases
    assert {check.split("(")[0] for check in failed["check"]} == {
        "less_than_or_equal_to", "wpm_matches_counts", "column_not_below", "at_most_unless_short",
        "accuracy_matches_keystrokes",
    }
    assert set(failed["index"].dropna()) == {1}


def test_the_export_refuses_a_check_no_rule_claims_or_a_rule_naming_no_check(monkeypatch):
    class Unclaimed(pa.DataFrameModel):
        id: Series[pd.Int64Dtype] = pa.Field(ge=1)

        class Config:
            name = "players"
            metadata = {"key": ["id"], "rules": []}

    monkeypatch.setattr(contracts, "MODELS", (Unclaimed,))
    with pytest.raises(export.CatalogueError, match="no rule claims"):
        export.build_spec()

    class Dangling(Unclaimed):
        class Config:
            name = "players"
            metadata = {
                "key": ["id"],
                "rules": [
                    contracts.rule("players.id_positive", "error", "id below 1", "no action", [("id", "greater_than_or_equal_to")]),
                    contracts.rule("players.ghost", "error", "never", "no action", [("id", "less_than")]),
                ],
            }

    monkeypatch.setattr(contracts, "MODELS", (Dangling,))
    with pytest.raises(export.CatalogueError, match="players.ghost.*does not declare"):
        export.build_spec()


def test_the_sql_engine_imports_neither_pandas_nor_pandera(tmp_path):
    from game_core.db import create_engine
    from game_core.schema_state import upgrade_to_head

    url = f"sqlite:///{tmp_path / 'game.db'}"
    engine = create_engine(url, create_missing=True)
    with engine.begin() as connection:
        upgrade_to_head(connection)
    engine.dispose()
    probe = (
        "import sys\n"
        "import checks\n"
        "from game_core.db import create_engine\n"
        f"engine = create_engine({url!r}, read_only=True)\n"
        "with engine.connect() as connection:\n"
        "    report = checks.run_audits(connection)\n"
        "    assert report.findings and report.ok and report.engine == 'sql'\n"
        "    checks.catalogue(); checks.DEFAULT_CHUNK_SIZE\n"
        "print(sorted(m for m in ('pandas', 'pandera', 'numpy', 'sqlalchemy.orm') if m in sys.modules))\n"
    )
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=ENV)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"
    # ... and the probe can see a module that is loaded: the Pandera engine loads both.
    pandera = probe.replace("run_audits(connection)", "run_audits(connection, engine='pandera')").replace(
        "report.engine == 'sql'", "report.engine == 'pandera'"
    )
    completed = subprocess.run([sys.executable, "-c", pandera], capture_output=True, text=True, timeout=60, env=ENV)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "['numpy', 'pandas', 'pandera']"
