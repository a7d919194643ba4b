"""`integrity audit` and `integrity audit history` through the real CLI, on real SQLite
files and the real PostgreSQL server: exit codes 0/3/4/2 with one `Error:` line, the
`--json` shape, exact counts whose listing SQL returns exactly those rows, samples,
`--since-last`, the history, `status`'s last-audit check, that the guarded database is
never written, and that the runbook covers every rule of the catalogue.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

import checks
from cli_runner import CliRunner
from game_core import metrics
from game_core.db import create_engine
from game_core.rebuild import rebuild_derived
from game_core.schema import players, progress, results
from integrity.cli import app
import test_checks_support
from test_checks_support import run_listing_sql

readers_closed = test_checks_support.readers_closed  # autouse: each test's engines closed
ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = ROOT / "runbooks" / "audit-findings.md"
# Every fixture timestamp is in the past of the real clock, which the CLI audits at.
BASE = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")


# ---------------------------------------------------------------- data


def result_row(player_id: int, started_at: datetime, **stored) -> dict:
    """A valid result (derived values from game_core.metrics), then `stored` applied as given."""
    counts = {
        "correct_word_chars": 100, "correct_spaces": 24, "correct_chars": 110, "incorrect_chars": 3,
        "extra_chars": 1, "missed_chars": 2, "correct_keystrokes": 140, "incorrect_keystrokes": 5,
    }
    duration_ms = 30_000
    row = {
        "player_id": player_id, "mode": "words", "mode_param": 25, "started_at": started_at,
        "duration_ms": duration_ms, **counts,
        "wpm": metrics.wpm(counts["correct_word_chars"], counts["correct_spaces"], duration_ms),
        "raw_wpm": metrics.raw_wpm(counts["correct_chars"], counts["incorrect_chars"], counts["extra_chars"],
                                   counts["correct_spaces"], duration_ms),
        "accuracy": metrics.accuracy(counts["correct_keystrokes"], counts["incorrect_keystrokes"]),
        "xp": metrics.result_xp(counts["correct_word_chars"], counts["correct_spaces"],
                                counts["correct_keystrokes"], counts["incorrect_keystrokes"]),
        "metrics_version": metrics.METRICS_VERSION,
        "created_at": started_at + timedelta(milliseconds=duration_ms),
    }
    row.update(stored)
    return row


@contextmanager
def writing(url: str):
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            yield connection
    finally:
        engine.dispose()


def add_player(connection, player_id: int, created_at: datetime = BASE - timedelta(days=30)) -> None:
    connection.execute(sa.insert(players).values(id=player_id, username=f"player{player_id}", created_at=created_at))


def add_results(connection, player_id: int, count: int, *, start: datetime, step: timedelta = timedelta(minutes=7),
                rebuild: bool = True, **stored) -> list[int]:
    """`count` results of one player from `start`; the player's caches rebuilt unless told not to."""
    ids = [
        connection.execute(sa.insert(results).values(result_row(player_id, start + i * step, **stored))).inserted_primary_key[0]
        for i in range(count)
    ]
    if rebuild:
        rebuild_derived(connection, [player_id], now=BASE)
    return ids


def seed_clean(url: str, players_count: int = 3, per_player: int = 4) -> None:
    with writing(url) as connection:
        for player_id in range(1, players_count + 1):
            add_player(connection, player_id)
            add_results(connection, player_id, per_player, start=BASE + timedelta(hours=player_id))


def plant_short_durations(url: str, player_id: int, count: int, start: datetime) -> list[int]:
    """Results stored with seconds instead of milliseconds (a unit error): results.duration_min."""
    with writing(url) as connection:
        return add_results(connection, player_id, count, start=start, duration_ms=3)


def plant_xp_off(url: str, player_id: int) -> None:
    """progress.xp one more than the player's results imply: progress.xp_matches_results."""
    with writing(url) as connection:
        connection.execute(sa.update(progress).where(progress.c.player_id == player_id).values(xp=progress.c.xp + 1))


# ---------------------------------------------------------------- running the CLI


def invoke(*args: str, env: dict | None = None):
    result = runner.invoke(app, list(args), catch_exceptions=False, prog_name="integrity", env=env)
    assert "Traceback" not in result.output
    return result


def audit_json(url: str, *args: str, env: dict | None = None) -> tuple[int, dict]:
    result = invoke("--json", "--database-url", url, "audit", *args, env=env)
    return result.exit_code, json.loads(result.stdout)


def the_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    return lines[0].removeprefix("Error: ")


def by_rule(doc: dict) -> dict[str, dict]:
    return {rule["rule"]: rule for rule in doc["result"]["rules"]}


def table_row(text: str, first_cell: str) -> list[str]:
    """The cells of the rich table row whose first cell is `first_cell`."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{text}")


# ---------------------------------------------------------------- exit codes and output


def test_a_clean_database_exits_0_and_every_rule_passes(database_url):
    seed_clean(database_url)
    code, doc = audit_json(database_url)
    assert code == 0 and doc["exit_code"] == 0, doc
    rules = by_rule(doc)
    assert set(rules) == {rule.id for rule in checks.catalogue()}
    assert {r["status"] for r in rules.values()} == {"ok"}
    assert rules["results.duration_min"]["checked_rows"] == 12
    assert doc["result"]["scope"] == "full" and doc["result"]["engine"] == "sql"
    text = invoke("--database-url", database_url, "audit")
    assert text.exit_code == 0
    tables: dict[str, int] = {}
    for rule in checks.catalogue():
        tables[rule.table] = tables.get(rule.table, 0) + 1
    passing = ", ".join(f"{table} {count}/{count}" for table, count in tables.items())
    assert f"rules passing per table: {passing}\n" in text.stdout
    assert "┃ rule" not in text.stdout  # nothing failed or changed: no table of rules
    assert "clean; 0 warn rule(s) fail" in text.stdout


def test_a_failing_error_rule_exits_3_with_exact_count_samples_and_listing_sql(database_url):
    seed_clean(database_url)
    planted = plant_short_durations(database_url, 2, 7, BASE + timedelta(days=3))
    code, doc = audit_json(database_url, "--samples", "2")
    assert code == 3 and doc["exit_code"] == 3
    assert "error" not in doc  # the check ran: exit 3 is a finding, not an error
    finding = by_rule(doc)["results.duration_min"]
    assert (finding["status"], finding["severity"], finding["failing_rows"], finding["checked_rows"]) == ("fail", "error", 7, 19)
    assert finding["share"] == pytest.approx(7 / 19)
    assert finding["sample_keys"] == planted[:2]  # capped at --samples, in key order
    assert len(finding["samples"]) == 2
    assert {sample.get("duration_ms") for sample in finding["samples"]} == {3}  # the offending value
    listed = run_listing_sql(database_url, finding["sql"])
    assert len(listed) == 7 and sorted(row[0] for row in listed) == planted
    assert doc["result"]["ok"] is False and "results.duration_min" in doc["result"]["error_rules"]


def test_text_output_names_the_count_the_action_and_the_sql(sqlite_url):
    seed_clean(sqlite_url)
    plant_short_durations(sqlite_url, 1, 3, BASE + timedelta(days=3))
    result = invoke("--database-url", sqlite_url, "audit", "--samples", "1")
    assert result.exit_code == 3
    out = result.stdout
    assert table_row(out, "results.duration_min")[:5] == ["results.duration_min", "error", "FAIL", "3", "20.000%"]
    assert "results.duration_min (error): 3 of 15 rows fail: " in out
    assert "  what to do: " in out
    block = out.split("results.duration_min (error): ", 1)[1].split("\n\n", 1)[0]
    assert re.findall(r"^  sample: .*", block, flags=re.MULTILINE) == ["  sample: id=13 duration_ms=3"], block
    assert "  every failing row:\n    SELECT " in block
    assert result.stderr.count("Error:") == 0


def test_json_document_shape(sqlite_url):
    seed_clean(sqlite_url)
    code, doc = audit_json(sqlite_url)
    assert code == 0
    assert {"schema_version", "command", "exit_code", "database", "config", "result"} <= set(doc)
    assert doc["command"] == "audit"
    result = doc["result"]
    for key in ("audit_id", "engine", "scope", "since", "note", "audited_at", "seconds", "watermarks",
                "compared_with", "day", "mean_wpm_day", "rows_per_day", "rules", "drift", "history_removed"):
        assert key in result, key
    assert result["watermarks"]["results"] == 12
    rule = result["rules"][0]
    for key in ("rule", "table", "severity", "kind", "status", "failing_rows", "checked_rows", "share",
                "previous_failing_rows", "previous_share", "meaning", "action", "sample_keys", "samples", "sql"):
        assert key in rule, key


def test_change_since_the_last_run(sqlite_url):
    seed_clean(sqlite_url)
    _, first = audit_json(sqlite_url)
    assert by_rule(first)["results.duration_min"]["previous_failing_rows"] is None
    plant_short_durations(sqlite_url, 3, 2, BASE + timedelta(days=3))
    _, second = audit_json(sqlite_url)
    finding = by_rule(second)["results.duration_min"]
    assert (finding["previous_failing_rows"], finding["failing_rows"]) == (0, 2)
    assert second["result"]["compared_with"] == first["result"]["audit_id"]
    text = invoke("--database-url", sqlite_url, "audit")
    assert table_row(text.stdout, "results.duration_min")[2:6] == ["FAIL", "2", "14.286%", "="]


def test_rule_and_table_narrow_the_audit(sqlite_url):
    seed_clean(sqlite_url)
    _, doc = audit_json(sqlite_url, "--rule", "results.duration_min", "--rule", "progress.xp_matches_results")
    assert [r["rule"] for r in doc["result"]["rules"]] == ["results.duration_min", "progress.xp_matches_results"]
    _, doc = audit_json(sqlite_url, "--table", "progress")
    assert {r["table"] for r in doc["result"]["rules"]} == {"progress"}
    assert {r["rule"] for r in doc["result"]["rules"]} == {r.id for r in checks.catalogue() if r.table == "progress"}


@pytest.mark.parametrize("option,value,message", [
    ("--rule", "results.no_such_rule", "unknown audit rule 'results.no_such_rule'; known rules: "),
    ("--table", "no_such_table", "unknown audit table 'no_such_table'; audited tables: "),
])
def test_unknown_rule_or_table_is_exit_2_before_the_database_is_opened(tmp_path, option, value, message):
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    result = invoke("--database-url", missing, "audit", option, value)
    assert result.exit_code == 2
    assert the_error(result).startswith(message)
    code, doc = audit_json(missing, option, value)
    assert code == 2 and doc["error"].startswith(message)


def test_the_pandera_engine_reports_the_same_counts(sqlite_url):
    seed_clean(sqlite_url)
    plant_short_durations(sqlite_url, 2, 3, BASE + timedelta(days=3))
    plant_xp_off(sqlite_url, 1)
    _, sql = audit_json(sqlite_url)
    code, pandera = audit_json(sqlite_url, "--engine", "pandera", "--chunk-size", "4")
    assert code == 3 and pandera["result"]["engine"] == "pandera"
    counts = {r["rule"]: (r["failing_rows"], r["checked_rows"]) for r in pandera["result"]["rules"]}
    assert counts == {r["rule"]: (r["failing_rows"], r["checked_rows"]) for r in sql["result"]["rules"]}
    assert counts["results.duration_min"] == (3, 15) and counts["progress.xp_matches_results"][0] == 1


def test_a_chunk_size_too_large_for_memory_is_refused_with_exit_2(sqlite_url):
    result = invoke("--database-url", sqlite_url, "audit", "--engine", "pandera", "--chunk-size", "500000000")
    assert result.exit_code == 2
    assert "MB" in the_error(result)
    assert json.loads(invoke("--json", "audit", "history").stdout)["result"]["runs"] == []

def test_unknown_engine_is_a_usage_error(sqlite_url):
    result = invoke("--database-url", sqlite_url, "audit", "--engine", "spark")
    assert result.exit_code == 2


def test_a_missing_database_is_exit_4_and_records_nothing(tmp_path):
    missing = tmp_path / "missing.db"
    result = invoke("--database-url", f"sqlite:///{missing}", "audit")
    assert result.exit_code == 4
    assert the_error(result).startswith(f"database {missing} does not exist; run `integrity init`")
    assert not missing.exists()
    history = invoke("--json", "audit", "history")
    assert json.loads(history.stdout)["result"]["runs"] == []


def test_a_database_without_schema_is_exit_4(tmp_path):
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert empty.exists()
    result = invoke("--database-url", f"sqlite:///{empty}", "audit")
    assert result.exit_code == 4
    assert "has no game schema" in the_error(result) and "run `integrity init`" in the_error(result)


@pytest.mark.postgres
@pytest.mark.parametrize("timeouts,named", [
    ({"INTEGRITY_DATABASE__STATEMENT_TIMEOUT_MS": "300", "INTEGRITY_DATABASE__LOCK_TIMEOUT_MS": "0"},
     "[database] statement_timeout_ms = 300"),
    ({"INTEGRITY_DATABASE__LOCK_TIMEOUT_MS": "300"}, "[database] lock_timeout_ms = 300"),
])
def test_a_postgresql_timeout_is_exit_4_naming_the_setting(pg_url, timeouts, named):
    seed_clean(pg_url)
    # Another session holds results exclusively (a migration would): the audit's first
    # query on results waits until a timeout cancels it.
    blocker = sa.create_engine(pg_url)
    connection = blocker.connect()
    transaction = connection.begin()
    connection.exec_driver_sql("LOCK TABLE results IN ACCESS EXCLUSIVE MODE")
    try:
        result = invoke("--database-url", pg_url, "audit", env=timeouts)
    finally:
        transaction.rollback()
        connection.close()
        blocker.dispose()
    assert result.exit_code == 4
    assert named in the_error(result)


# ---------------------------------------------------------------- --since-last


def test_since_last_audits_new_rows_and_the_players_they_touch(database_url):
    seed_clean(database_url)
    plant_short_durations(database_url, 1, 1, BASE + timedelta(days=3))  # an old bad row
    plant_xp_off(database_url, 2)  # a cross-table problem of a player without new rows
    code, first = audit_json(database_url)
    assert code == 3
    assert by_rule(first)["results.duration_min"]["failing_rows"] == 1
    assert by_rule(first)["progress.xp_matches_results"]["failing_rows"] == 1

    with writing(database_url) as connection:
        add_player(connection, 9)
        new_ids = add_results(connection, 9, 3, start=BASE + timedelta(days=5))
        add_results(connection, 3, 1, start=BASE + timedelta(days=5))
    new_bad = plant_short_durations(database_url, 9, 2, BASE + timedelta(days=6))
    plant_xp_off(database_url, 3)  # a touched player's cache goes wrong

    code, second = audit_json(database_url, "--since-last")
    assert code == 3
    result = second["result"]
    assert result["scope"] == "incremental"
    assert result["since"]["results"] == first["result"]["watermarks"]["results"]
    row_rule = by_rule(second)["results.duration_min"]
    assert (row_rule["failing_rows"], row_rule["checked_rows"]) == (2, 6)  # not the old bad row
    assert row_rule["sample_keys"] == new_bad
    assert min(new_ids) > result["since"]["results"]
    # Cross-table rules judge the touched players (3 and 9), not player 2's older problem.
    cross = by_rule(second)["progress.xp_matches_results"]
    assert (cross["failing_rows"], cross["checked_rows"], cross["sample_keys"]) == (1, 2, [3])
    assert len(run_listing_sql(database_url, cross["sql"])) == 1
    assert result["watermarks"]["results"] == max(new_bad)

    code, third = audit_json(database_url, "--since-last")
    assert by_rule(third)["results.duration_min"]["checked_rows"] == 0
    assert by_rule(third)["progress.xp_matches_results"]["checked_rows"] == 0

    code, full = audit_json(database_url)
    assert by_rule(full)["progress.xp_matches_results"]["failing_rows"] == 2  # the sweep sees everyone


def test_since_last_without_history_is_a_full_audit_and_says_so(sqlite_url):
    seed_clean(sqlite_url)
    code, doc = audit_json(sqlite_url, "--since-last")
    assert code == 0
    assert doc["result"]["scope"] == "full" and doc["result"]["since"] is None
    assert doc["result"]["note"] == "--since-last: no earlier whole-catalogue audit in the history, so this is a full audit"
    text = invoke("--database-url", sqlite_url, "audit", "--rule", "results.duration_min")
    assert text.exit_code == 0
    # a narrowed run gives no watermarks: the next --since-last starts from the full one
    _, doc = audit_json(sqlite_url, "--since-last")
    assert doc["result"]["scope"] == "incremental"


# ---------------------------------------------------------------- history and status


def test_history_lists_runs_and_one_rules_counts(sqlite_url):
    seed_clean(sqlite_url)
    audit_json(sqlite_url)
    plant_short_durations(sqlite_url, 1, 2, BASE + timedelta(days=3))
    audit_json(sqlite_url)
    doc = json.loads(invoke("--json", "audit", "history").stdout)
    runs = doc["result"]["runs"]
    assert [run["ok"] for run in runs] == [False, True]
    assert runs[0]["counts"]["results.duration_min"]["failing_rows"] == 2
    text = invoke("audit", "history", "--rule", "results.duration_min")
    assert text.exit_code == 0
    rows = [line for line in text.stdout.splitlines() if " full " in line]
    assert [[cell.strip() for cell in line.strip().strip("│").split("│")][2:] for line in rows] == [
        ["full", "sql", "2", "14", "14.286%"], ["full", "sql", "0", "12", "0.000%"],
    ], text.stdout
    limited = json.loads(invoke("--json", "audit", "history", "--limit", "1").stdout)
    assert len(limited["result"]["runs"]) == 1
    unknown = invoke("audit", "history", "--rule", "results.nope")
    assert unknown.exit_code == 2 and the_error(unknown).startswith("unknown audit rule 'results.nope'")


def test_every_run_is_in_the_ledger_with_its_summary(sqlite_url):
    seed_clean(sqlite_url)
    plant_short_durations(sqlite_url, 1, 1, BASE + timedelta(days=3))
    audit_json(sqlite_url)
    runs = json.loads(invoke("--json", "history", "--kind", "audit").stdout)["result"]["runs"]
    [run] = [r for r in runs if r["command"] == "audit"]
    assert run["exit_code"] == 3
    assert "results.duration_min" in run["summary"]["error_rules"]


def status_check(url: str) -> dict:
    doc = json.loads(invoke("--json", "--database-url", url, "status").stdout)
    return {c["name"]: c for c in doc["result"]["checks"]}["last audit"]


def test_status_shows_the_last_audit(sqlite_url):
    seed_clean(sqlite_url)
    assert status_check(sqlite_url) == {"name": "last audit", "state": "problem", "detail": "none recorded: run `integrity audit`"}
    audit_json(sqlite_url)
    check = status_check(sqlite_url)
    assert check["state"] == "ok" and re.match(r"audit \d+ \(full, \d+s ago\) clean", check["detail"]), check
    plant_short_durations(sqlite_url, 1, 2, BASE + timedelta(days=3))
    audit_json(sqlite_url, "--since-last")
    check = status_check(sqlite_url)
    assert check["state"] == "problem"
    assert re.match(r"audit \d+ \(incremental, \d+s ago\) found [\d,]+ rows failing error rules .*results\.duration_min", check["detail"]), check
    # the next incremental run does not look at those rows again: still a problem
    audit_json(sqlite_url, "--since-last")
    check = status_check(sqlite_url)
    assert check["state"] == "problem" and "did not look at those rows again" in check["detail"]


def test_status_flags_a_full_audit_older_than_twice_the_schedule(sqlite_url):
    seed_clean(sqlite_url)
    audit_json(sqlite_url)
    check = status_check(sqlite_url)
    assert check["state"] == "ok"
    from integrity.settings import resolve_settings
    from integrity.status import audit_checks

    settings = resolve_settings(environ=dict(os.environ), cwd=Path.cwd(), database_url_option=sqlite_url)
    later = datetime.now(timezone.utc) + timedelta(days=2, hours=1)  # audit_full is 1d by default
    [check] = audit_checks(settings, now=later)
    assert check.state.value == "problem"
    assert "older than twice [schedule] audit_full (1d)" in check.detail
    [check] = audit_checks(settings, now=datetime.now(timezone.utc) + timedelta(days=1, hours=23))
    assert check.state.value == "ok"


# ---------------------------------------------------------------- the guarded database is never written


def file_state(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def test_the_audit_never_writes_the_sqlite_file(sqlite_path):
    url = f"sqlite:///{sqlite_path}"
    seed_clean(url)
    plant_short_durations(url, 1, 2, BASE + timedelta(days=3))
    before = file_state(sqlite_path)
    assert audit_json(url)[0] == 3
    assert audit_json(url, "--since-last")[0] == 0  # no new rows: the old bad ones are not re-counted
    assert file_state(sqlite_path) == before
    # A reader of a WAL database may create the -wal and -shm files; it never writes a page.
    wal = sqlite_path.with_name(sqlite_path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def pg_content(url: str) -> list:
    engine = create_engine(url, read_only=True)
    with engine.connect() as connection:
        content = [connection.execute(sa.select(t).order_by(*t.primary_key.columns)).all() for t in (players, results, progress)]
    engine.dispose()
    return content


@pytest.mark.postgres
def test_the_audit_needs_only_read_rights_on_postgresql(pg_url, pg_restricted_url):
    seed_clean(pg_url)
    plant_short_durations(pg_url, 1, 2, BASE + timedelta(days=3))
    before = pg_content(pg_url)
    code, doc = audit_json(pg_restricted_url)
    assert code == 3, doc
    assert by_rule(doc)["results.duration_min"]["failing_rows"] == 2
    assert pg_content(pg_url) == before


# ---------------------------------------------------------------- the runbook


def test_the_runbook_covers_every_rule_of_the_catalogue():
    text = RUNBOOK.read_text(encoding="utf-8")
    missing = [rule.id for rule in checks.catalogue() if f"`{rule.id}`" not in text]
    assert missing == []
