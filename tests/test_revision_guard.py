"""Every command that reads the guarded database asks its revision first (issue 14 item 8).

A database at a revision this code does not know (a newer version wrote it, or plain
Alembic applied one behind `integrity migrate`), one whose tables carry no revision, or one
with no game schema at all is refused by audit, drill, diff and repair with exit 4 and one
line naming the revision found, this code's head and the fix (`integrity.guarded`, one
helper for all of them), before anything else: no audit recorded as passing, no drill
journalled, no "differences" reported, nothing written. `status` reports the same states
as its schema row; the retrieval probe deliberately probes a game database at an unknown
revision (that is the incident's alarm), so it is the exception, held here too.

The class on both engines: a newer revision alone, a newer revision with its new column,
an empty alembic_version, a dropped alembic_version, and an empty database; every reading
command against each. The controls: at head and behind head the readers run.
"""

from __future__ import annotations

import pytest

from backup_helpers import BackupEnv, execute, one_error
from game_core.db import parse_database_url
from game_core.schema_state import head_revision
from restore_helpers import content

HEAD = head_revision()
NEWER = "0099_from_newer_code"

STATES = {
    "newer-revision": [f"UPDATE alembic_version SET version_num = '{NEWER}'"],
    "newer-revision-with-its-column": [f"UPDATE alembic_version SET version_num = '{NEWER}'",
                                       "ALTER TABLE players ADD COLUMN country VARCHAR(2)"],
    "empty-alembic-version": ["DELETE FROM alembic_version"],
    "alembic-version-dropped": ["DROP TABLE alembic_version"],
}

# Every command that reads the guarded database and is not status, metrics or the probe.
READERS = (
    ("audit",),
    ("audit", "--since-last"),
    ("audit", "--engine", "pandera"),
    ("drill",),
    ("drill", "--backup", "{backup}"),
    ("diff", "latest"),
    ("diff", "{backup}"),
    ("repair", "progress", "--dry-run"),
    ("--no-input", "repair", "progress", "--yes"),
)


def expected_refusal(state: str, display: str) -> str:
    if state.startswith("newer-revision"):
        return (
            f"database {display} is at revision {NEWER}, which this code does not know (its head is {HEAD}): if a "
            "newer version wrote it, run that version's `integrity`; if it was applied behind `integrity migrate` "
            "(plain alembic), follow runbooks/schema-unchecked.md; or check --database-url"
        )
    return (
        f"database {display} holds tables but no Alembic revision (this code's head is {HEAD}): it is not the "
        "game's database; point --database-url at the game's database"
    )


NO_SCHEMA = ("database {display} has no game schema (no tables, no revision; this code's head is "
             f"{HEAD}): run `integrity init` to create it, or point --database-url at the game's database")


def _refusals(env: BackupEnv, backup_id: str | None, expected: str) -> list[str]:
    """Each reader's outcome that is not the refusal (empty: all refused as expected)."""
    wrong = []
    for command in READERS:
        if backup_id is None and "{backup}" in command:
            continue
        args = [part.replace("{backup}", backup_id or "") for part in command]
        result = env.invoke(*args)
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        if result.returncode != 4 or errors != [f"Error: {expected}"]:
            wrong.append(f"{' '.join(args)}: exit {result.returncode}, {errors or result.stdout[-300:]}")
    return wrong


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, filled_copy):
    """This module's game database (conftest's `database_url`, filled): a copy of a template
    holding fill_database(players=4, results_per_player=5), filled once per session."""
    return filled_copy(request.param, players=4, results_per_player=5)


@pytest.fixture
def backed_up(database_url, tmp_path):
    """A game database with data and a good backup of it: (env, backup id)."""
    env = BackupEnv(tmp_path, database_url)
    return env, env.create()


@pytest.mark.parametrize("state", sorted(STATES))
def test_every_reader_refuses_a_revision_this_code_does_not_know_or_none(backed_up, database_url, state):
    env, backup_id = backed_up
    execute(database_url, *STATES[state])
    before = content(database_url)
    journal = env.journal_events(backup_id)

    wrong = _refusals(env, backup_id, expected_refusal(state, parse_database_url(database_url).display))
    assert wrong == []
    assert content(database_url) == before  # nothing written (repair --yes included)
    assert env.journal_events(backup_id) == journal  # no drill, verify or failure journalled
    code, history = env.invoke_json("audit", "history")
    assert code == 0 and history["result"]["runs"] == []  # no audit recorded as having run


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_every_reader_refuses_a_database_with_no_game_schema(request, tmp_path, engine):
    if engine == "sqlite":
        path = tmp_path / "empty.db"
        path.write_bytes(b"")
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("pg_empty_url")
    env = BackupEnv(tmp_path, url)
    wrong = _refusals(env, None, NO_SCHEMA.format(display=parse_database_url(url).display))
    assert wrong == []
    if engine == "sqlite":
        assert path.read_bytes() == b"" and sorted(p.name for p in path.parent.glob("empty.db*")) == ["empty.db"]


def test_the_refusal_comes_before_the_repository_is_looked_at(tmp_path, sqlite_url):
    """A wrong --database-url is the first thing to fix: named even when the repository
    is missing too (drill and diff used to report only the repository)."""
    execute(sqlite_url, *STATES["newer-revision"])
    env = BackupEnv(tmp_path, sqlite_url)
    env.repo.rmdir()
    for args in (("drill",), ("diff", "latest")):
        result = env.invoke(*args)
        assert result.returncode == 4, result.output
        assert one_error(result) == expected_refusal("newer-revision", str(parse_database_url(sqlite_url).display))


# ---------------------------------------------------------------- the controls and the exception


def test_the_readers_run_at_head(backed_up):
    env, backup_id = backed_up
    assert env.invoke("audit").returncode == 0
    assert env.invoke("diff", "latest").returncode == 0
    assert env.invoke("drill", "--backup", backup_id).returncode == 0
    assert env.invoke("repair", "progress", "--dry-run").returncode == 0


def test_behind_head_the_readers_run_and_only_repair_refuses(backed_up, newer_history):
    """After a deploy of newer code, the database is behind head: audits and diffs still
    read it (status says it is behind, exit 3); repair, which writes this code's columns,
    is refused with the way forward."""
    env, _ = backed_up
    assert env.invoke("audit").returncode == 0
    assert env.invoke("diff", "latest").returncode == 0
    result = env.invoke("repair", "progress", "--dry-run")
    assert result.returncode == 4
    display = parse_database_url(env.url).display
    assert one_error(result) == (
        f"database {display} is at revision {HEAD}, behind this code's head 0002_next: run `integrity migrate "
        "dry-run` and then `integrity migrate apply` first"
    )


def test_the_probe_still_probes_a_game_database_at_an_unknown_revision(backed_up, database_url):
    """The exception by design (integrity/probe.py): the incident's migration was applied
    behind the tool's back, and the probe is the alarm that must then fire."""
    env, _ = backed_up
    execute(database_url, *STATES["newer-revision"])
    result = env.invoke("probe")
    assert result.returncode == 0, result.output  # the reads pass: the note below is the alarm
    assert f"canaries not written: the database is at unknown revision {NEWER}" in result.output
