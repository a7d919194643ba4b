"""Exit 4 or 5, never 1 ("a bug"), where the contract says so (issue 14, item 10).

Classes, each with several variants: a PostgreSQL server that cannot be reached (refused,
unknown host, unknown role or database, a bad sslmode) for every command that connects; a
"database" that is not one (text, random bytes, a truncated file, a directory, memory);
state the tool cannot write (journal, ledger and its -wal/-shm files, state directory),
made immutable with chattr because root ignores file modes; a full disk under `backup pin`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cli_runner import CliRunner
from integrity.cli import app
from store_templates import DataDirTemplate

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["--no-input", *args], input="")


def assert_refused(result, code: int, *needles: str) -> None:
    """Exit `code`, at most one Error: line, and the reason in it (or, for commands whose
    report is the answer, `status` and `backup check`, in the report)."""
    assert result.exit_code == code, result.output
    assert "a bug" not in result.output and "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) <= 1, result.output
    where = lines[0] if lines else result.output
    squeeze = lambda text: re.sub(r"[\s│┃]+", "", text)  # a report's table wraps its cells
    for needle in needles:
        assert squeeze(needle) in squeeze(where), result.output


@pytest.fixture(scope="module")
def initialised(tmp_path_factory, sqlite_template) -> DataDirTemplate:
    """`integrity init` and `backup create` run once, for every test to copy."""
    root = tmp_path_factory.mktemp("exit-codes")
    shutil.copyfile(sqlite_template, root / "game.db")
    environ = {"XDG_DATA_HOME": str(root / "xdg-data"), "INTEGRITY_DATABASE_URL": f"sqlite:///{root / 'game.db'}"}
    return DataDirTemplate.build(root, environ, ["init"], ["--json", "backup", "create"])


@pytest.fixture
def repository(tmp_path, sqlite_url, monkeypatch, initialised):
    """An initialised data directory (repository, state, one backup) of a SQLite game
    database: this test's copy of what `init` and `backup create` left (the database too)."""
    import json

    initialised.copy_into(tmp_path)
    monkeypatch.setenv("INTEGRITY_DATABASE_URL", sqlite_url)
    return json.loads(initialised.outputs[-1].stdout)["result"]["manifest"]["id"]


# ------------------------------------------------------------------ PostgreSQL out of reach

UNREACHABLE = {
    "refused": ("postgresql://postgres@127.0.0.1:1/game", "Connection refused"),
    "unknown host": ("postgresql://postgres@no-such-host.invalid:5432/game", "no-such-host.invalid"),
    "unknown role": ("postgresql://no_such_role_14@127.0.0.1:5432/postgres", 'role "no_such_role_14" does not exist'),
    "unknown database": ("postgresql://postgres@127.0.0.1:5432/no_such_db_14", 'database "no_such_db_14" does not exist'),
    "bad sslmode": ("postgresql://postgres@127.0.0.1:5432/postgres?sslmode=bogus", "sslmode"),
}
CONNECTING = [
    ["backup", "create"], ["backup", "check"], ["status"], ["drill"], ["restore", "latest", "--dry-run"],
    ["diff", "latest"], ["probe"], ["audit"], ["repair", "progress", "--dry-run"], ["migrate", "dry-run", "--from-live"],
]


@pytest.mark.postgres
@pytest.mark.parametrize("variant", UNREACHABLE)
@pytest.mark.parametrize("command", CONNECTING, ids=" ".join)
def test_an_unreachable_postgresql_is_exit_4_in_one_line(pg_admin, repository, variant, command, monkeypatch):
    url, reason = UNREACHABLE[variant]
    monkeypatch.setenv("INTEGRITY_DATABASE_URL", url)
    result = invoke(*command)
    # Commands that read a backup first may refuse it before connecting (a SQLite backup
    # for a PostgreSQL database): still exit 4 in one line, for another reason.
    reads_a_backup_first = command[0] in ("restore", "diff", "drill") and variant == "unknown database"
    assert_refused(result, 4, *(() if reads_a_backup_first else (reason,)))
    assert "sqlalche.me" not in result.output  # the driver's reason, not SQLAlchemy's wrapper


# ------------------------------------------------------------------ files that are not databases


def _not_databases(tmp_path: Path, sqlite_path: Path) -> dict[str, str]:
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a database\n")
    noise = tmp_path / "noise.bin"
    noise.write_bytes(os.urandom(8192))
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(sqlite_path.read_bytes()[:6000])
    directory = tmp_path / "a-directory"
    directory.mkdir()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    return {
        "text file": str(text), "random bytes": str(noise), "truncated database": str(truncated),
        "directory": str(directory), "empty file": str(empty), "memory": "sqlite:///:memory:", "memory, short": "sqlite://",
    }


NOT_DATABASES = ["text file", "random bytes", "truncated database", "directory", "empty file", "memory", "memory, short"]


@pytest.mark.parametrize("kind", NOT_DATABASES)
@pytest.mark.parametrize("command", [["backup", "create"], ["status"], ["audit"], ["probe"], ["drill"]], ids=" ".join)
def test_a_database_that_is_not_one_is_exit_4(kind, command, repository, tmp_path, sqlite_path, monkeypatch):
    url = _not_databases(tmp_path, sqlite_path)[kind]
    monkeypatch.setenv("INTEGRITY_DATABASE_URL", url)
    before = sorted(p.name for p in (tmp_path / "xdg-data" / "typing-game" / "backups").iterdir())
    result = invoke(*command)
    assert_refused(result, 4)
    assert sorted(p.name for p in (tmp_path / "xdg-data" / "typing-game" / "backups").iterdir()) == before


# ------------------------------------------------------------------ state the tool cannot write


def _chattr(flag: str, path: Path) -> bool:
    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


@pytest.fixture
def immutable():
    """Make paths immutable (what stops root, unlike chmod); always undone."""
    if not shutil.which("chattr"):
        pytest.skip("chattr is not installed")
    made: list[Path] = []

    def make(path: Path) -> None:
        if not _chattr("+i", path):
            pytest.skip(f"this file system does not take chattr +i ({path})")
        made.append(path)

    yield make
    for path in reversed(made):
        _chattr("-i", path)


STATE_FILES = ["ledger.db", "ledger.db-wal", "ledger.db-shm", "."]


@pytest.mark.parametrize("name", STATE_FILES)
@pytest.mark.parametrize("command", [["status"], ["history"], ["backup", "list"]], ids=" ".join)
def test_an_unwritable_ledger_file_or_state_dir_is_exit_4_naming_it(name, command, repository, tmp_path, immutable):
    state = tmp_path / "xdg-data" / "typing-game" / "state"
    target = (state / name).resolve()
    if not target.exists():
        target.write_bytes(b"")  # -wal/-shm left by an earlier run, as SQLite leaves them
    immutable(target)
    result = invoke(*command)
    assert_refused(result, 4, str(target), "not writable", "[state] dir")


def test_an_unwritable_ledger_leaves_nothing_that_breaks_the_next_run(repository, tmp_path, immutable):
    state = tmp_path / "xdg-data" / "typing-game" / "state"
    for leftover in ("ledger.db-wal", "ledger.db-shm"):
        (state / leftover).unlink(missing_ok=True)
    immutable(state / "ledger.db")
    assert invoke("status").exit_code == 4
    assert not (state / "ledger.db-shm").exists() and not (state / "ledger.db-wal").exists()
    _chattr("-i", state / "ledger.db")
    result = invoke("history")
    assert result.exit_code == 0, result.output


def test_an_unwritable_journal_is_exit_4_for_pin_and_create(repository, tmp_path, immutable):
    journal = tmp_path / "xdg-data" / "typing-game" / "backups" / "journal.jsonl"
    immutable(journal)
    for command in (["backup", "pin", repository], ["backup", "unpin", repository], ["backup", "create"]):
        assert_refused(invoke(*command), 4, str(journal))


@pytest.mark.parametrize("what", ["database file", "data directory"])
def test_a_read_only_database_or_data_directory_is_never_a_bug(what, repository, tmp_path, sqlite_path, immutable):
    engine_files = [sqlite_path.with_name(sqlite_path.name + suffix) for suffix in ("-wal", "-shm")]
    for path in engine_files:
        path.unlink(missing_ok=True)
    immutable(sqlite_path if what == "database file" else sqlite_path.parent)
    for command in (["status"], ["backup", "create"], ["audit"], ["probe"]):
        result = invoke(*command)
        assert result.exit_code in (0, 3, 4), f"{command}: {result.output}"
        assert "a bug" not in result.output


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 1 MiB (a full disk that a test can make), unmounted afterwards."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_under_backup_pin_is_exit_4(repository, tmp_path, small_disk, monkeypatch):
    source = tmp_path / "xdg-data" / "typing-game" / "backups"
    shutil.copytree(source, small_disk / "backups", symlinks=True)
    monkeypatch.setenv("INTEGRITY_BACKUPS__REPOSITORY", str(small_disk / "backups"))
    filler = small_disk / "filler"
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    # Whatever room is left in a page is taken too: a journal line must not fit.
    for index in range(1000):
        try:
            (small_disk / f"crumb-{index}").write_bytes(b"\0" * 512)
        except OSError:
            break
    result = invoke("backup", "pin", repository)
    assert_refused(result, 4, "No space left on device")
    assert "pinned" not in result.output
