"""`integrity snapshot export [--sanitize]` (issue 18): one file holding a consistent copy of
live or of a backup, with the columns the model marks personal replaced by pseudonyms.

Proven on both engines against a simulated database (40 players named sim1_1..sim1_40):

- no original name survives anywhere in the file's bytes (SQLite: VACUUMed, so no free page
  keeps one; PostgreSQL: the uncompressed pg_dump archive, and pg_restore's SQL of it), while
  the controls show the same byte search finds them in an unsanitised export and in a copy
  sanitised without VACUUM;
- everything else is untouched: every row of every table equal by primary key (SQLite:
  with its storage class), the pseudonyms of the same length and shape, distinct, none an
  original; live itself unchanged;
- the file appears complete or not at all, and the refusals are one `Error:` line with
  their exit code.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import sqlite3
import subprocess
import uuid
from contextlib import closing
from pathlib import Path

import pytest
import sqlalchemy as sa

from backup_helpers import BackupEnv, flip_byte, one_error
from conftest import pg_template_seeded_by, pg_url_for, sqlite_template_seeded_by, unclaimed_scratch_databases
from game_core.db import create_engine

SEED = {"players": 40, "tests_per_player": 5, "seed": 1}
ORIGINALS = [f"sim1_{n}" for n in range(1, 41)]
KEYS = {"store_identity": "id", "players": "id", "results": "id", "progress": "player_id",
        "personal_bests": "player_id, mode, mode_param", "alembic_version": "version_num"}
SNAP_SCRATCH = "integrity_scratch_snap_"


def _seed(url: str) -> None:
    from game_core.simulate import simulate

    engine = create_engine(url)
    try:
        simulate(engine, **SEED)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def seeded_sqlite(tmp_path_factory, sqlite_template) -> Path:
    return sqlite_template_seeded_by(_seed, tmp_path_factory.mktemp("snapshot-seed"), sqlite_template)


@pytest.fixture(scope="module")
def seeded_pg(pg_admin, pg_supply, pg_template):
    with pg_template_seeded_by(_seed, "tg_snapd_seed", pg_admin, pg_supply, pg_template) as name:
        yield name


@pytest.fixture
def sqlite_live(tmp_path, seeded_sqlite) -> Path:
    path = tmp_path / "game.db"
    shutil.copyfile(seeded_sqlite, path)
    return path


@pytest.fixture
def pg_live(pg_admin, seeded_pg):
    """A copy of the seeded database named with this file's prefix, dropped afterwards."""
    name = f"tg_snapd_{uuid.uuid4().hex[:10]}"
    with pg_admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{seeded_pg}"'))
    yield pg_url_for(name)
    with pg_admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def survivors(data: bytes) -> list[str]:
    """The original names found anywhere in `data`."""
    return [name for name in ORIGINALS if name.encode() in data]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows(url: str, *, storage: bool = False) -> dict[str, list[tuple]]:
    """Every row of every table by primary key; on SQLite with `storage` each value's
    storage class too (typeof), so a value that changed type shows."""
    engine = create_engine(url, read_only=True)
    try:
        with engine.connect() as connection:
            found = {}
            for table, key in KEYS.items():
                columns = [c["name"] for c in sa.inspect(connection).get_columns(table)]
                selected = ", ".join(f'"{c}"' for c in columns)
                if storage:
                    selected += ", " + ", ".join(f'typeof("{c}")' for c in columns)
                found[table] = [tuple(r) for r in connection.execute(sa.text(f'SELECT {selected} FROM "{table}" ORDER BY {key}'))]
            return found
    finally:
        engine.dispose()


def without_usernames(content: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    # players: id, username, created_at (+ their storage classes): everything but the name
    return {table: [r[:1] + r[2:] for r in found] if table == "players" else found for table, found in content.items()}


def usernames(url: str) -> dict[int, str]:
    engine = create_engine(url, read_only=True)
    try:
        with engine.connect() as connection:
            return dict(connection.execute(sa.text("SELECT id, username FROM players")).all())
    finally:
        engine.dispose()


def shape(name: str) -> str:
    return "".join("a" if c.islower() else "A" if c.isupper() else "9" if c.isdigit() else "_" for c in name)


def assert_pseudonymised(before: dict[int, str], after: dict[int, str]) -> None:
    assert sorted(after) == sorted(before), "the same players, by id"
    assert len(set(after.values())) == len(after), "pseudonyms are distinct (the unique constraint holds)"
    assert not set(after.values()) & set(before.values()), "no pseudonym is an original"
    for player_id, name in before.items():
        assert len(after[player_id]) == len(name) and shape(after[player_id]) == shape(name), (name, after[player_id])


def export(env: BackupEnv, *args: str):
    return env.invoke("snapshot", "export", *args)


# ---------------------------------------------------------------- SQLite


def test_sqlite_sanitised_export_keeps_all_but_the_names(tmp_path, sqlite_live):
    live_url = f"sqlite:///{sqlite_live}"
    env = BackupEnv(tmp_path, live_url)
    before, live_rows = usernames(live_url), rows(live_url, storage=True)
    out = tmp_path / "ci" / "shaped.db"
    out.parent.mkdir()

    result = export(env, "--sanitize", "--to", str(out))

    assert result.exit_code == 0, result.output
    assert f"wrote {out} (" in result.stdout
    assert "players.username: 40 values replaced (40 distinct)" in result.stdout
    assert "pseudonym key random, used for this export only" in result.stdout
    assert survivors(out.read_bytes()) == []
    assert sorted(p.name for p in out.parent.iterdir()) == ["shaped.db"]  # no journal, WAL or temp file beside it
    out_url = f"sqlite:///{out}"
    assert_pseudonymised(before, usernames(out_url))
    assert without_usernames(rows(out_url, storage=True)) == without_usernames(live_rows)
    assert rows(live_url, storage=True) == live_rows and usernames(live_url) == before  # live only read


def test_the_byte_search_finds_names_left_in_free_pages_without_vacuum(tmp_path, sqlite_live):
    """Control: the proof above can fail. Replacing the names in place (as the export does
    before its VACUUM) leaves the originals in the file's free space where SQLite is built
    without SECURE_DELETE (upstream's default; Debian's build has it on, so it is turned off)."""
    copy = tmp_path / "replaced-in-place.db"
    shutil.copyfile(sqlite_live, copy)
    with closing(sqlite3.connect(copy, isolation_level=None)) as connection:
        connection.execute("PRAGMA journal_mode = DELETE")  # the pages in the file itself, no WAL
        connection.execute("PRAGMA secure_delete = OFF")
        connection.execute("UPDATE players SET username = 'x' || id")  # shorter: the old cells are freed
        assert connection.execute("SELECT count(*) FROM players WHERE username LIKE 'sim%'").fetchone() == (0,)
    assert survivors(copy.read_bytes()) != []
    with closing(sqlite3.connect(copy, isolation_level=None)) as connection:
        connection.execute("VACUUM")
    assert survivors(copy.read_bytes()) == []


def test_an_unsanitised_export_holds_the_names(tmp_path, sqlite_live):
    env = BackupEnv(tmp_path, f"sqlite:///{sqlite_live}")
    out = tmp_path / "plain.db"
    result = export(env, "--to", str(out))
    assert result.exit_code == 0, result.output
    assert "sanitised no" in result.stdout
    assert sorted(survivors(out.read_bytes())) == sorted(ORIGINALS)
    assert rows(f"sqlite:///{out}", storage=True) == rows(f"sqlite:///{sqlite_live}", storage=True)


def test_a_key_file_gives_the_same_pseudonyms_a_random_key_does_not(tmp_path, sqlite_live):
    env = BackupEnv(tmp_path, f"sqlite:///{sqlite_live}")
    key = tmp_path / "pseudonym.key"
    key.write_bytes(b"0123456789abcdef0123456789abcdef\n")
    named = {}
    for name, extra in (("k1", ["--key-file", str(key)]), ("k2", ["--key-file", str(key)]), ("r1", []), ("r2", [])):
        result = export(env, "--sanitize", *extra, "--to", str(tmp_path / f"{name}.db"))
        assert result.exit_code == 0, result.output
        named[name] = usernames(f"sqlite:///{tmp_path / f'{name}.db'}")
    assert "0123456789abcdef" not in result.output
    assert named["k1"] == named["k2"]
    assert named["r1"] != named["r2"] and named["r1"] != named["k1"]


@pytest.mark.parametrize(("args", "message"), [
    (["--to", "s3://bucket"], "--to s3://bucket: give s3://BUCKET/PATH/FILE (a bucket and an object name)"),
    (["--to", "ftp://host/shaped.db"], "--to ftp://... is not a destination this tool writes; give a file (--to PATH) "
                                       "or s3://BUCKET/PATH/FILE"),
    (["--to", "{tmp}/missing/shaped.db"], "--to {tmp}/missing/shaped.db: the directory {tmp}/missing does not exist; "
                                          "create it first"),
    (["--to", "{tmp}"], "--to {tmp} is a directory; give a file name in it"),
    (["--to", "{tmp}/taken.db"], "--to {tmp}/taken.db exists; choose another file, or add --overwrite to replace it"),
    (["--to", "{tmp}/game.db", "--overwrite"], "--to {tmp}/game.db is the live database; a snapshot never writes "
                                               "live: choose another file"),
    (["--to", "{tmp}/game.db-wal", "--overwrite"], "--to {tmp}/game.db-wal is the live database; a snapshot never "
                                                   "writes live: choose another file"),
    (["--to", "{tmp}/x.db", "--key-file", "{tmp}/taken.db"], "--key-file keys the pseudonyms of --sanitize; add "
                                                             "--sanitize or leave --key-file out"),
    (["--sanitize", "--to", "{tmp}/x.db", "--key-file", "{tmp}/taken.db"], "--key-file {tmp}/taken.db holds 5 bytes; "
     "a key needs at least 16 (e.g. `head -c 32 /dev/urandom | base64 > FILE`)"),
])
def test_refusals_are_one_line_exit_2_and_touch_nothing(tmp_path, sqlite_live, args, message):
    env = BackupEnv(tmp_path, f"sqlite:///{sqlite_live}")
    (tmp_path / "taken.db").write_text("taken")
    live_hash = sha256(sqlite_live)
    completed = export(env, *[a.format(tmp=tmp_path) for a in args])
    assert completed.exit_code == 2, completed.output
    assert one_error(completed) == message.format(tmp=tmp_path)
    assert sha256(sqlite_live) == live_hash
    assert (tmp_path / "taken.db").read_text() == "taken"
    assert not (tmp_path / "x.db").exists()


def test_overwrite_replaces_the_file_whole(tmp_path, sqlite_live):
    env = BackupEnv(tmp_path, f"sqlite:///{sqlite_live}")
    out = tmp_path / "shaped.db"
    out.write_text("yesterday's snapshot")
    result = export(env, "--sanitize", "--overwrite", "--to", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:16] == b"SQLite format 3\x00"


def test_an_export_killed_before_its_rename_leaves_the_old_file(tmp_path, sqlite_live):
    """SIGKILL once the new file is complete under its temporary name: PATH is still the
    previous snapshot, whole; only the hidden temporary file is left beside it."""
    import signal

    env = BackupEnv(tmp_path, f"sqlite:///{sqlite_live}")
    out = tmp_path / "ci" / "shaped.db"
    out.parent.mkdir()
    out.write_text("yesterday's snapshot")
    completed = env.run("snapshot", "export", "--sanitize", "--overwrite", "--to", str(out),
                        INTEGRITY_CRASH_AT="snapshot-export:written")
    assert completed.returncode == -signal.SIGKILL, completed.stderr
    assert "crash point snapshot-export:written: SIGKILL" in completed.stderr
    assert out.read_text() == "yesterday's snapshot"
    leftovers = [p for p in out.parent.iterdir() if p != out]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".shaped.db.") and leftovers[0].name.endswith(".tmp")
    assert survivors(leftovers[0].read_bytes()) == []  # already sanitised when it died


def test_a_copy_without_the_marked_column_is_refused_and_leaves_nothing(tmp_path, sqlite_live):
    with closing(sqlite3.connect(sqlite_live)) as connection:
        connection.execute("ALTER TABLE players RENAME COLUMN username TO handle")
        connection.commit()
    env = BackupEnv(tmp_path, f"sqlite:///{sqlite_live}")
    out_dir = tmp_path / "ci"
    out_dir.mkdir()
    completed = export(env, "--sanitize", "--to", str(out_dir / "shaped.db"))
    assert completed.exit_code == 4, completed.output
    assert one_error(completed) == (
        "the copy has no column players.username, which game_core/schema.py marks personal (the copy is at revision "
        "0001_initial_schema); sanitise it with the integrity version of that revision, whose model marks its own "
        "personal columns"
    )
    assert list(out_dir.iterdir()) == []  # neither the file nor its temporary copy


def test_export_from_a_backup_then_a_corrupt_backup_is_exit_5(tmp_path, sqlite_live):
    env = BackupEnv(tmp_path, f"sqlite:///{sqlite_live}")
    backup_id = env.create()
    with closing(sqlite3.connect(sqlite_live)) as connection:  # live moves on after the backup
        connection.execute("DELETE FROM personal_bests WHERE player_id = 1")
        connection.commit()
    out = tmp_path / "from-backup.db"
    result = export(env, "--sanitize", "--from-backup", "latest", "--to", str(out))
    assert result.exit_code == 0, result.output
    assert f"source    backup {backup_id} at revision 0001_initial_schema" in result.stdout
    assert survivors(out.read_bytes()) == []
    backup_rows = rows(f"sqlite:///{out}")
    assert len(backup_rows["personal_bests"]) > len(rows(f"sqlite:///{sqlite_live}")["personal_bests"])  # the backup's data
    scratch = env.settings().state.dir / "scratch"
    assert not scratch.exists() or [p for p in scratch.iterdir() if not p.name.startswith(".")] == []

    data = env.repo / backup_id / env.repository().read_manifest(backup_id).files[0].name
    flip_byte(data, random.Random(18))
    code, document = env.invoke_json("snapshot", "export", "--from-backup", backup_id, "--to", str(tmp_path / "bad.db"))
    assert code == 5, document
    assert backup_id in document["error"] and "it cannot be exported" in document["error"]
    assert not (tmp_path / "bad.db").exists()


# ---------------------------------------------------------------- the pseudonyms and the marking


def test_the_marking_is_read_from_the_model():
    from integrity.snapshots.pseudonyms import PersonalColumn, personal_columns

    assert personal_columns() == (PersonalColumn("players", "username", 32),)


@pytest.mark.parametrize("planted", ["key", "number"])
def test_a_marked_key_or_number_is_a_mistake_in_the_model(planted):
    from integrity.snapshots.pseudonyms import personal_columns

    metadata = sa.MetaData()
    sa.Table("players", metadata, sa.Column("id", sa.Integer, primary_key=True, info={"personal": planted == "key"}),
             sa.Column("age", sa.Integer, info={"personal": planted == "number"}))
    with pytest.raises(ValueError, match="marked personal but is"):
        personal_columns(metadata)


def test_one_value_gets_one_pseudonym_in_every_marked_column(tmp_path):
    """Two tables marked personal share names: one map for both (a join on the name still
    joins), NULLs stay NULL, the rows counted per column."""
    from integrity.snapshots.pseudonyms import personal_columns
    from integrity.snapshots.sanitize import sanitize

    metadata = sa.MetaData()
    sa.Table("players", metadata, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("username", sa.String(32), info={"personal": True}))
    sa.Table("messages", metadata, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("author", sa.String(40), info={"personal": True}), sa.Column("body", sa.Text))
    engine = create_engine(f"sqlite:///{tmp_path / 'two.db'}", create_missing=True)
    try:
        with engine.begin() as connection:
            metadata.create_all(connection)
            connection.execute(sa.text("INSERT INTO players VALUES (1, 'ann'), (2, 'bo_b'), (3, NULL)"))
            connection.execute(sa.text("INSERT INTO messages VALUES (1, 'bo_b', 'hi'), (2, 'ann', 'yo'), (3, 'cy', 'x')"))
            replaced = sanitize(connection, personal_columns(metadata), b"k" * 32)
            players = dict(connection.execute(sa.text("SELECT id, username FROM players")).all())
            authors = dict(connection.execute(sa.text("SELECT id, author FROM messages")).all())
    finally:
        engine.dispose()
    assert sorted((c.column, c.rows, c.values) for c in replaced) == [("messages.author", 3, 3), ("players.username", 2, 2)]
    assert players[3] is None
    assert authors[2] == players[1] != "ann" and authors[1] == players[2] != "bo_b" and authors[3] != "cy"


def test_pseudonyms_keep_length_shape_and_case_collisions():
    from integrity.snapshots.pseudonyms import fold, pseudonyms

    names = ["Bob", "bob", "BOB", "alice.w", "x-1", "Ünïcode", "", "sim1_40"]
    mapped = pseudonyms(names, b"k" * 32)
    assert mapped[""] == ""
    for name in filter(None, names):
        assert len(mapped[name]) == len(name) and mapped[name] not in names
    assert shape(mapped["alice.w"]) == "aaaaa_a" and mapped["alice.w"][5] in "_.-"
    assert shape(mapped["Bob"]) == "Aaa" and shape(mapped["BOB"]) == "AAA"
    # equal but for case on live: equal but for case in the snapshot (a lower() unique index behaves alike)
    assert fold(mapped["Bob"]) == fold(mapped["bob"]) == fold(mapped["BOB"])
    assert len(set(mapped.values())) == len(names)
    assert pseudonyms(names, b"k" * 32) == mapped and pseudonyms(names, b"j" * 32) != mapped


def test_a_shape_too_small_for_distinct_pseudonyms_is_refused():
    from integrity.snapshots.pseudonyms import PseudonymsExhausted, pseudonyms

    assert pseudonyms(["_"], b"k" * 32)["_"] in ".-"
    # Of "_.-" two are originals (never a pseudonym): one candidate left for two values.
    with pytest.raises(PseudonymsExhausted, match="too many for distinct pseudonyms"):
        pseudonyms(["_", "."], b"k" * 32)


# ---------------------------------------------------------------- PostgreSQL


def _pg_restore_sql(path: Path) -> str:
    return subprocess.run(["pg_restore", "--file=-", str(path)], capture_output=True, text=True, check=True).stdout


@pytest.mark.postgres
def test_postgres_sanitised_export_keeps_all_but_the_names(tmp_path, pg_admin, pg_live):
    env = BackupEnv(tmp_path, pg_live)
    before, live_rows = usernames(pg_live), rows(pg_live)
    out = tmp_path / "shaped.dump"

    result = export(env, "--sanitize", "--to", str(out))

    assert result.exit_code == 0, result.output
    assert "pg_dump custom format, uncompressed" in result.stdout
    assert "players.username: 40 values replaced (40 distinct)" in result.stdout
    data = out.read_bytes()
    assert data[:5] == b"PGDMP"
    assert survivors(data) == []
    sql = _pg_restore_sql(out)
    assert "COPY public.players (id, username, created_at) FROM stdin;" in sql and survivors(sql.encode()) == []
    assert unclaimed_scratch_databases(pg_admin, SNAP_SCRATCH) == []
    assert rows(pg_live) == live_rows and usernames(pg_live) == before  # live only read

    restored = f"tg_snapd_{uuid.uuid4().hex[:10]}"
    with pg_admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{restored}"'))
    try:
        # The server this worker's tests use (the second xdist worker runs a cluster of its
        # own on another port or socket: a fixed --host=127.0.0.1 reached the wrong one).
        server = sa.make_url(pg_url_for(restored))
        subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", f"--host={server.host}",
                        f"--port={server.port or 5432}", f"--username={server.username}", f"--dbname={restored}",
                        str(out)], check=True, capture_output=True)
        assert_pseudonymised(before, usernames(pg_url_for(restored)))
        assert without_usernames(rows(pg_url_for(restored))) == without_usernames(live_rows)
    finally:
        with pg_admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{restored}" WITH (FORCE)'))


@pytest.mark.postgres
def test_postgres_unsanitised_export_holds_the_names(tmp_path, pg_admin, pg_live):
    """Control: the byte search finds every name in the same archive format unsanitised."""
    env = BackupEnv(tmp_path, pg_live)
    out = tmp_path / "plain.dump"
    result = export(env, "--to", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(survivors(out.read_bytes())) == sorted(ORIGINALS)
    assert unclaimed_scratch_databases(pg_admin, SNAP_SCRATCH) == []


@pytest.mark.postgres
def test_postgres_export_from_a_backup(tmp_path, pg_admin, pg_live):
    env = BackupEnv(tmp_path, pg_live)
    backup_id = env.create()
    out = tmp_path / "from-backup.dump"
    result = export(env, "--sanitize", "--from-backup", backup_id, "--to", str(out))
    assert result.exit_code == 0, result.output
    assert f"source    backup {backup_id}" in result.stdout
    assert survivors(out.read_bytes()) == []
    assert unclaimed_scratch_databases(pg_admin, f"integrity_scratch_{backup_id[:15].lower()}") == []
