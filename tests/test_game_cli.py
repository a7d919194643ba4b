"""`typing-game` end to end: CliRunner, real subprocesses, and the raw terminal mode
driven through a pseudo-terminal, all on real SQLite files in tmp_path (and PostgreSQL).
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from cli_runner import CliRunner
from game_core import metrics, terminal
from game_core.cli import app, default_player_name, xp_for_level
from game_core.db import create_engine
from game_core.store import Store
from game_core.typing_test import KeyEvent, prompt_words, time_mode_word_count

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def invoke(*args: str, input: str | None = None, env: dict | None = None):
    return runner.invoke(app, list(args), input=input, env=env)


def result_rows(db: Path) -> list[sqlite3.Row]:
    connection = sqlite3.connect(db)
    connection.row_factory = sqlite3.Row
    try:
        return connection.execute(
            "SELECT r.*, p.username FROM results r JOIN players p ON p.id = r.player_id ORDER BY r.id"
        ).fetchall()
    finally:
        connection.close()


def play_args(db: Path, *extra: str) -> list[str]:
    return ["--database-url", str(db), "play", *extra]


# ---------------------------------------------------------------- line mode, in process


def test_play_in_line_mode_saves_exact_counts_and_stats_shows_them(tmp_path):
    db = tmp_path / "game.db"
    words = prompt_words(4, seed=11)
    typed = list(words)
    typed[1] += "x"  # one extra letter spoils word 2 and the space after it
    result = invoke(
        *play_args(db, "--player", "alice", "--words", "4", "--seed", "11", "--duration-ms", "3000"),
        input=" ".join(typed[:2]) + "\n" + " ".join(typed[2:]) + "\n",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == " ".join(words)  # the prompt comes first
    assert result.stderr.splitlines()[0] == f"database: {db}"

    letters = sum(len(w) for w in words)
    (row,) = result_rows(db)
    assert (row["username"], row["mode"], row["mode_param"], row["duration_ms"]) == ("alice", "words", 4, 3000)
    assert (row["correct_word_chars"], row["correct_spaces"], row["correct_chars"]) == (letters - len(words[1]), 2, letters)
    assert (row["incorrect_chars"], row["extra_chars"], row["missed_chars"]) == (0, 1, 0)
    assert (row["correct_keystrokes"], row["incorrect_keystrokes"]) == (letters + 2, 2)
    wpm = metrics.wpm(letters - len(words[1]), 2, 3000)
    assert row["wpm"] == pytest.approx(wpm)
    assert f"wpm          {wpm:.2f}" in result.stdout
    assert "New personal best! (first result for this mode)" in result.stdout

    stats = invoke("--database-url", str(db), "stats", "--player", "alice")
    assert stats.exit_code == 0, stats.output
    assert stats.stderr == f"database: {db}\n"
    assert f"best wpm      {wpm:.2f}" in stats.stdout
    assert "words 4" in stats.stdout
    assert "tests         1" in stats.stdout


def test_a_second_faster_test_is_a_new_personal_best_and_a_slower_one_is_not(tmp_path):
    db = tmp_path / "game.db"
    line = " ".join(prompt_words(3, seed=2)) + "\n"
    args = play_args(db, "--player", "bo", "--words", "3", "--seed", "2", "--duration-ms")
    assert "New personal best!" in invoke(*args, "4000", input=line).stdout
    faster = invoke(*args, "2000", input=line)
    assert "New personal best! (previous" in faster.stdout
    slower = invoke(*args, "5000", input=line)
    assert slower.exit_code == 0 and "personal best" not in slower.stdout
    assert [r["duration_ms"] for r in result_rows(db)] == [4000, 2000, 5000]


def test_empty_input_is_an_error_and_saves_nothing(tmp_path):
    db = tmp_path / "game.db"
    result = invoke(*play_args(db, "--player", "alice", "--duration-ms", "3000"), input="  \n\n")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == "Error: nothing was typed; type the prompt's words on stdin; nothing saved"
    assert result_rows(db) == []


def test_an_unfinished_words_test_is_an_error_and_saves_nothing(tmp_path):
    db = tmp_path / "game.db"
    words = prompt_words(5, seed=3)
    result = invoke(*play_args(db, "--words", "5", "--seed", "3", "--duration-ms", "3000"), input=" ".join(words[:2]))
    assert result.exit_code == 2
    assert "Error: the test was not finished: reached word 3 of 5" in result.stderr
    assert result_rows(db) == []


def test_line_mode_measures_the_clock_so_instant_piped_input_is_refused_clearly(tmp_path):
    db = tmp_path / "game.db"
    line = " ".join(prompt_words(8, seed=4)) + "\n"
    result = invoke(*play_args(db, "--words", "8", "--seed", "4"), input=line)
    assert result.exit_code == 2
    assert re.fullmatch(
        r"Error: the test ended \d+\.\d{3} ms after its first key, and a test lasts at least 1 s to be saved "
        r"\(pasted or piped input arrives at once\): type the words \(scripts: give --duration-ms\); nothing saved",
        result.stderr.splitlines()[-1],
    )
    assert "Traceback" not in result.output
    assert result_rows(db) == []


@pytest.mark.parametrize("words", ["1", "3", "4"])
def test_a_words_test_that_could_end_within_a_second_is_refused_before_it_starts(tmp_path, words):
    # Was: the test ran, then "Error: invalid result: duration_ms is 0" and the result was lost.
    db = tmp_path / "game.db"
    keys = len(" ".join(prompt_words(int(words), seed=4)))
    result = invoke(*play_args(db, "--words", words, "--seed", "4"), input="anything\n")
    assert result.exit_code == 2
    plural = "s" if words != "1" else ""
    assert result.stderr.splitlines()[-1] == (
        f"Error: this prompt of {words} word{plural} is {keys} keys long, which a fast typist finishes in under 1 s, "
        "and a test shorter than that is not saved: play a prompt of at least 31 keys (more --words), or a time "
        "test (--mode time); nothing was started"
    )
    assert result.stdout == ""  # no prompt was shown
    assert not db.exists()


def test_a_duration_under_a_second_is_refused_before_the_test(tmp_path):
    db = tmp_path / "game.db"
    result = invoke(*play_args(db, "--words", "2", "--duration-ms", "999"), input="x\n")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        "Error: --duration-ms must be at least 1000 (a test lasts at least 1 s to be saved), not 999"
    )
    assert result.stdout == "" and not db.exists()


def test_time_mode_in_line_mode_lasts_the_time_limit(tmp_path):
    db = tmp_path / "game.db"
    words = prompt_words(60, seed=5)
    result = invoke(*play_args(db, "--mode", "time", "--seconds", "1", "--seed", "5"), input=" ".join(words[:3]) + "\n")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()[0].split()) >= 50  # enough words for the time
    (row,) = result_rows(db)
    letters = sum(len(w) for w in words[:3])
    assert (row["mode"], row["mode_param"], row["duration_ms"]) == ("time", 1, 1000)
    assert (row["correct_word_chars"], row["correct_spaces"], row["correct_keystrokes"]) == (letters, 3, letters + 3)


def test_time_mode_cuts_what_was_typed_after_the_limit(tmp_path):
    db = tmp_path / "game.db"
    words = prompt_words(60, seed=6)
    text = " ".join(words[:10])
    # Spread over 2 s, the second half falls after the 1 s limit.
    result = invoke(*play_args(db, "--mode", "time", "--seconds", "1", "--seed", "6", "--duration-ms", "2000"), input=text)
    assert result.exit_code == 0, result.output
    (row,) = result_rows(db)
    assert row["duration_ms"] == 1000
    assert 0 < row["correct_keystrokes"] < len(text) / 2 + 2


def test_the_player_defaults_to_the_sanitised_user_name(tmp_path):
    db = tmp_path / "game.db"
    line = " ".join(prompt_words(2, seed=1)) + "\n"
    result = invoke(*play_args(db, "--words", "2", "--seed", "1", "--duration-ms", "1500"), input=line, env={"USER": "Ann Lee/ü"})
    assert result.exit_code == 0, result.output
    assert [r["username"] for r in result_rows(db)] == ["Ann_Lee__"]
    stats = invoke("--database-url", str(db), "stats", env={"USER": "Ann Lee/ü"})
    assert stats.stdout.startswith("Ann_Lee__\n")


def test_default_player_name():
    assert default_player_name("alice") == "alice"
    assert default_player_name("a b.c-d_e") == "a_b.c-d_e"
    assert default_player_name("x" * 40) == "x" * 32
    assert default_player_name("") == "player"
    assert default_player_name(None) == "player"


def test_an_invalid_player_name_is_a_usage_error(tmp_path):
    result = invoke(*play_args(tmp_path / "game.db", "--player", "no spaces please", "--duration-ms", "2000"), input="x\n")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1].startswith("Error: invalid username 'no spaces please'")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--mode", "sideways"], "Invalid value for '--mode'"),
        (["--words", "0"], "Error: Invalid value for '--words': Input should be greater than or equal to 1"),
        (["--mode", "time", "--seconds", "0"], "Error: Invalid value for '--seconds': Input should be greater than or equal to 1"),
        (["--no-such-option"], "No such option: --no-such-option"),
    ],
)
def test_bad_play_options_exit_2_and_create_nothing(tmp_path, args, message):
    db = tmp_path / "game.db"
    result = invoke(*play_args(db, *args), input="x\n")
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert not db.exists()


def test_ctrl_c_is_exit_130_and_saves_nothing(tmp_path, monkeypatch):
    from game_core import terminal

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(terminal, "play_lines", interrupted)
    db = tmp_path / "game.db"
    result = invoke(*play_args(db, "--player", "alice"), input="x\n")
    assert result.exit_code == 130
    assert result.stderr.splitlines()[-1] == "Error: interrupted; nothing saved"
    assert result_rows(db) == []


# ---------------------------------------------------------------- the schema and the database


def set_revision(db: Path, revision: str) -> None:
    connection = sqlite3.connect(db)
    with connection:
        connection.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    connection.close()


def test_play_refuses_an_unknown_schema_revision(sqlite_path):
    set_revision(sqlite_path, "ffffffffffff")
    result = invoke(*play_args(sqlite_path, "--player", "alice", "--duration-ms", "2000"), input="x\n")
    assert result.exit_code == 4
    assert result.stderr.splitlines()[-1].startswith(f"Error: database {sqlite_path} at unknown revision ffffffffffff")
    assert result_rows(sqlite_path) == []
    stats = invoke("--database-url", str(sqlite_path), "stats", "--player", "alice")
    assert stats.exit_code == 4 and "unknown revision ffffffffffff" in stats.stderr


def test_play_refuses_an_older_revision_and_names_the_migration_commands(sqlite_path, monkeypatch):
    # Only one revision exists yet, so the older one is faked where the state is read.
    from game_core import schema_state
    from game_core.schema_state import SchemaState, SchemaStatus

    real = schema_state.schema_status
    monkeypatch.setattr(
        schema_state, "schema_status", lambda c: SchemaStatus(SchemaState.BEHIND, "0000_older", real(c).head)
    )
    result = invoke(*play_args(sqlite_path, "--duration-ms", "2000"), input="x\n")
    assert result.exit_code == 4
    assert "behind head" in result.stderr
    assert "`integrity migrate dry-run` and then `integrity migrate apply`" in result.stderr
    assert result_rows(sqlite_path) == []


def test_play_creates_the_schema_on_an_empty_database(tmp_path):
    db = tmp_path / "new" / "game.db"
    line = " ".join(prompt_words(2, seed=9)) + "\n"
    result = invoke(*play_args(db, "--words", "2", "--seed", "9", "--duration-ms", "1200"), input=line)
    assert result.exit_code == 0, result.output
    assert len(result_rows(db)) == 1


def test_stats_on_a_missing_database_is_exit_4_and_creates_nothing(tmp_path):
    default = tmp_path / "xdg-data" / "typing-game" / "game.db"
    result = invoke("stats")
    assert result.exit_code == 4
    assert result.stderr.splitlines() == [
        f"database: {default}",
        f"Error: database {default} does not exist; run `integrity init` (or `typing-game play`) to create it, "
        "or point --database-url at the right file",
    ]
    assert not default.parent.exists()


def test_stats_on_an_empty_database_file_is_exit_4_and_leaves_it_alone(tmp_path):
    db = tmp_path / "empty.db"
    sqlite3.connect(db).close()
    result = invoke("--database-url", str(db), "leaderboard")
    assert result.exit_code == 4
    assert f"Error: database {db} has no game schema yet" in result.stderr
    assert db.stat().st_size == 0


def test_a_file_that_is_not_a_database_is_exit_4_without_a_traceback(tmp_path):
    db = tmp_path / "game.db"
    db.write_bytes(b"this is not a database file" * 100)
    result = invoke("--database-url", str(db), "stats")
    assert result.exit_code == 4
    assert result.stderr.splitlines()[-1] == (
        f"Error: cannot connect to {db}: file is not a database; check that --database-url points at "
        "the game's database and that it is reachable"
    )


def test_stats_of_an_unknown_player_is_exit_2(sqlite_path):
    result = invoke("--database-url", str(sqlite_path), "stats", "--player", "ghost")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == "Error: no player named 'ghost'; create one first (or check the spelling)"


def test_stats_of_a_player_without_results(sqlite_path):
    engine = create_engine(str(sqlite_path))
    Store(engine).create_player("newbie")
    engine.dispose()
    result = invoke("--database-url", str(sqlite_path), "stats", "--player", "newbie")
    assert result.exit_code == 0
    assert "no finished tests yet" in result.stdout


def test_the_database_url_comes_from_the_environment(tmp_path):
    db = tmp_path / "from-env.db"
    result = invoke("stats", env={"GAME_DATABASE_URL": f"sqlite:///{db}"})
    assert result.exit_code == 4
    assert result.stderr.startswith(f"database: {db}\n")


def test_help_needs_no_database_and_prints_none(tmp_path):
    result = invoke("--database-url", "postgresql://u:secret@nowhere.invalid/db", "play", "--help")
    assert result.exit_code == 0
    assert "--mode" in result.stdout and "--duration-ms" not in result.stdout
    assert result.stderr == ""


# ---------------------------------------------------------------- simulate and leaderboard


def test_simulate_then_leaderboard(tmp_path):
    db = tmp_path / "game.db"
    result = invoke("--database-url", str(db), "simulate", "--players", "3", "--tests-per-player", "8", "--seed", "5")
    assert result.exit_code == 0, result.output
    assert "  players     3\n  results     24\n" in result.stdout
    assert "usernames   sim5_1 .. sim5_3" in result.stdout
    assert result.stderr == f"database: {db}\n"  # no progress bar off a terminal
    assert len(result_rows(db)) == 24

    mode, param, best, user = sqlite3.connect(db).execute(
        "SELECT pb.mode, pb.mode_param, pb.wpm, p.username FROM personal_bests pb JOIN players p ON p.id = pb.player_id "
        "ORDER BY pb.wpm DESC LIMIT 1"
    ).fetchone()
    board = invoke("--database-url", str(db), "leaderboard", "--mode", mode, "--param", str(param))
    assert board.exit_code == 0, board.output
    assert f"Leaderboard · {mode} {param}" in board.stdout
    first = next(line for line in board.stdout.splitlines() if line.startswith("│ 1 "))
    assert user in first and f"{best:.2f}" in first


@pytest.mark.parametrize(
    "args,message",
    [
        (["--players", "0", "--tests-per-player", "1", "--seed", "1"], "Error: Invalid value for '--players': Input should be greater than or equal to 1"),
        (["--players", "1", "--tests-per-player", "-1", "--seed", "1"], "Error: Invalid value for '--tests-per-player': Input should be greater than or equal to 0"),
        (["--players", "1", "--tests-per-player", "1"], "Missing option '--seed'"),
    ],
)
def test_simulate_validates_its_options_before_touching_the_database(tmp_path, args, message):
    db = tmp_path / "game.db"
    result = invoke("--database-url", str(db), "simulate", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert not db.exists()


def test_leaderboard_of_an_empty_mode_and_a_bad_limit(sqlite_path):
    board = invoke("--database-url", str(sqlite_path), "leaderboard", "--mode", "time")
    assert board.exit_code == 0
    assert board.stdout.strip() == "Leaderboard · time 30: no results yet"
    bad = invoke("--database-url", str(sqlite_path), "leaderboard", "--limit", "0")
    assert bad.exit_code == 2 and "Error: Invalid value for '--limit': Input should be greater than or equal to 1" in bad.stderr


def test_xp_for_level_is_the_inverse_of_the_level_curve():
    assert xp_for_level(1) == 0
    for level in range(2, 200):
        xp = xp_for_level(level)
        assert metrics.level_for_xp(xp) == level
        assert metrics.level_for_xp(xp - 1) == level - 1


# ---------------------------------------------------------------- real subprocesses


def run_game(*args: str, input: str | None = None, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GAME_DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "game_core.cli", *args],
        input=input,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
    )


def test_subprocess_play_then_stats(tmp_path):
    db = tmp_path / "game.db"
    words = prompt_words(3, seed=21)
    played = run_game(*play_args(db, "--player", "carol", "--words", "3", "--seed", "21", "--duration-ms", "2500"),
                      input=" ".join(words) + "\n", cwd=tmp_path)
    assert played.returncode == 0, played.stderr
    assert played.stdout.splitlines()[0] == " ".join(words)
    assert "Result · carol · words 3" in played.stdout
    stats = run_game("--database-url", str(db), "stats", "--player", "carol", cwd=tmp_path)
    assert stats.returncode == 0, stats.stderr
    wpm = metrics.wpm(sum(len(w) for w in words), 2, 2500)
    assert f"best wpm      {wpm:.2f}" in stats.stdout


def test_subprocess_stats_on_a_missing_database(tmp_path):
    db = tmp_path / "missing" / "game.db"
    result = run_game("--database-url", str(db), "stats", cwd=tmp_path)
    assert result.returncode == 4
    assert f"Error: database {db} does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert not db.parent.exists()


def test_subprocess_bad_mode_and_no_traceback(tmp_path):
    result = run_game("--database-url", str(tmp_path / "g.db"), "play", "--mode", "fast", cwd=tmp_path)
    assert result.returncode == 2
    assert "Invalid value for '--mode'" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
def test_play_and_stats_on_postgresql(pg_url):
    words = prompt_words(3, seed=8)
    result = invoke("--database-url", pg_url, "play", "--player", "pgplayer", "--words", "3", "--seed", "8",
                    "--duration-ms", "2000", input=" ".join(words) + "\n")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == f"database: {sa.make_url(pg_url).set(drivername='postgresql+psycopg').render_as_string(hide_password=True)}"
    engine = create_engine(pg_url)
    (entry,) = Store(engine).history("pgplayer")
    engine.dispose()
    assert (entry.mode, entry.mode_param, entry.duration_ms) == ("words", 3, 2000)
    assert entry.wpm == metrics.wpm(sum(len(w) for w in words), 2, 2000)
    stats = invoke("--database-url", pg_url, "stats", "--player", "pgplayer")
    assert stats.exit_code == 0 and f"{entry.wpm:.2f}" in stats.stdout


@pytest.mark.postgres
def test_play_creates_the_schema_on_an_empty_postgresql_database(pg_empty_url):
    words = prompt_words(2, seed=8)
    result = invoke("--database-url", pg_empty_url, "play", "--words", "2", "--seed", "8", "--duration-ms", "1500",
                    input=" ".join(words) + "\n")
    assert result.exit_code == 0, result.output
    engine = create_engine(pg_empty_url)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM results")).scalar() == 1
    engine.dispose()


# ---------------------------------------------------------------- the raw terminal, through a pty

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class PtyGame:
    """`typing-game play` on the slave side of a pseudo-terminal; we hold the master."""

    def __init__(self, tmp_path: Path, *args: str):
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.termios_before = termios.tcgetattr(self.slave)
        env = {k: v for k, v in os.environ.items() if k != "GAME_DATABASE_URL"}
        env["TERM"] = "xterm-256color"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "game_core.cli", *args],
            stdin=self.slave, stdout=self.slave, stderr=self.slave, cwd=tmp_path, env=env, start_new_session=True,
        )
        self.output = b""

    def read_until(self, predicate, timeout: float = 20.0) -> str:
        """Read the screen until predicate(screen text without escape codes) holds."""
        deadline = time.monotonic() + timeout
        while not predicate(self.screen):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; screen so far:\n{self.screen[-2000:]!r}")
            if select.select([self.master], [], [], 0.05)[0]:
                self.output += os.read(self.master, 65536)
        return self.text

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    @property
    def screen(self) -> str:
        return ANSI.sub("", self.text)

    def type(self, data: str) -> None:
        os.write(self.master, data.encode())

    def prompt(self) -> list[str]:
        """The words on the first frame of the game screen."""
        self.read_until(lambda t: "start typing" in t)
        frame = self.text.split("\x1b[?1049h", 1)[1].split("\x1b[H")[1]
        rows = ANSI.sub("", frame).split("\r\n")
        return rows[3].split()

    def finish(self) -> int:
        self.read_until(lambda _t: self.proc.poll() is not None)
        while select.select([self.master], [], [], 0.05)[0]:
            self.output += os.read(self.master, 65536)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def pty_game(tmp_path):
    games = []

    def start(*args: str) -> PtyGame:
        games.append(PtyGame(tmp_path, *args))
        return games[-1]

    yield start
    for game in games:
        game.close()


def test_raw_mode_words_test_saves_and_shows_the_results(tmp_path, pty_game):
    db = tmp_path / "game.db"
    game = pty_game(*play_args(db, "--player", "tty", "--words", "7", "--seed", "31"))
    words = game.prompt()
    assert words == prompt_words(7, seed=31)  # what the screen shows is the seeded prompt
    game.type("x\x7f" + " ".join(words[:6]) + " " + words[6][:-1])  # a typo, fixed
    game.read_until(lambda t: "6/7" in t)  # live feedback: the counter moved on
    # A pasted word is ignored, with a notice: it neither counts nor ends the test.
    game.type(terminal.PASTE_START + words[6][-1] + terminal.PASTE_END)
    game.read_until(lambda t: terminal.PASTE_NOTICE in t)
    # The game has read the first key by now. A test lasts at least a second: keep
    # reading the screen until more than that has passed since.
    seen = time.monotonic()
    game.read_until(lambda _t: time.monotonic() - seen > 1.05)
    game.type(words[6][-1])  # the last letter of the last word ends the test
    assert game.finish() == 0, game.text
    assert "Result · tty · words 7" in game.screen and "New personal best!" in game.screen
    assert "\x1b[?2004h" in game.text and "\x1b[?2004l" in game.text  # bracketed paste on, then off
    assert "\x1b[?1049l" in game.text  # left the alternate screen
    assert termios.tcgetattr(game.slave) == game.termios_before  # terminal restored
    (row,) = result_rows(db)
    letters = sum(len(w) for w in words)
    assert (row["username"], row["mode"], row["mode_param"]) == ("tty", "words", 7)
    assert (row["correct_word_chars"], row["correct_spaces"]) == (letters, 6)
    assert (row["correct_keystrokes"], row["incorrect_keystrokes"]) == (letters + 6, 1)
    assert 1000 <= row["duration_ms"] < 20_000


def test_raw_mode_time_test_ends_at_the_limit(tmp_path, pty_game):
    db = tmp_path / "game.db"
    game = pty_game(*play_args(db, "--player", "tty", "--mode", "time", "--seconds", "1", "--seed", "32"))
    words = game.prompt()
    assert words[:5] == prompt_words(time_mode_word_count(1), seed=32)[:5]
    game.type(" ".join(words[:3]) + " " + words[3][:2])  # cut mid-word by the timer
    assert game.finish() == 0, game.text
    assert "Result · tty · time 1" in game.screen
    (row,) = result_rows(db)
    letters = sum(len(w) for w in words[:3]) + 2
    assert (row["duration_ms"], row["correct_word_chars"], row["correct_spaces"]) == (1000, letters, 3)


def test_raw_mode_ctrl_c_is_130_restores_the_terminal_and_saves_nothing(tmp_path, pty_game):
    db = tmp_path / "game.db"
    game = pty_game(*play_args(db, "--player", "tty", "--words", "8", "--seed", "33"))
    words = game.prompt()
    game.type(words[0][:2])
    game.read_until(lambda t: "ctrl-c: interrupt" in t)
    game.type("\x03")
    assert game.finish() == 130
    assert "Error: interrupted; nothing saved" in game.text
    assert "Traceback" not in game.text
    assert termios.tcgetattr(game.slave) == game.termios_before
    assert result_rows(db) == []


def test_raw_mode_escape_abandons_the_test(tmp_path, pty_game):
    db = tmp_path / "game.db"
    game = pty_game(*play_args(db, "--player", "tty", "--words", "8", "--seed", "34"))
    game.prompt()
    game.type("\x1b[A")  # an arrow key is an escape sequence, not Esc
    game.type("ab")
    game.read_until(lambda t: "ctrl-c: interrupt" in t)
    game.type("\x1b")
    assert game.finish() == 0
    assert "test abandoned; nothing saved" in game.text
    assert termios.tcgetattr(game.slave) == game.termios_before
    assert result_rows(db) == []


# ---------------------------------------------------------------- drawing and key decoding (pure)


def test_word_cells_colour_each_letter_as_judged():
    from game_core import terminal
    from game_core.typing_test import TypingTest

    test = TypingTest(["the", "cat", "sat", "on"], mode="words", mode_param=4)
    for i, key in enumerate("thx cateez"):
        test.press(key, i * 100.0)
    assert test.inputs == ["thx", "cateez"]
    assert terminal.word_cells(test, 0) == [("t", terminal.GREEN), ("h", terminal.GREEN), ("e", terminal.RED)]
    assert terminal.word_cells(test, 1) == [
        ("c", terminal.GREEN), ("a", terminal.GREEN), ("t", terminal.GREEN),
        ("e", terminal.EXTRA), ("e", terminal.EXTRA), ("z", terminal.EXTRA),
    ]
    assert terminal.word_cells(test, 2) == [(c, terminal.DIM) for c in "sat"]
    test.press(" ", 1000.0)
    test.press("s", 1100.0)
    test.press(" ", 1200.0)  # "s" left early: the rest of "sat" is missed
    assert test.index == 3
    assert terminal.word_cells(test, 2) == [("s", terminal.GREEN), ("a", terminal.MISSED), ("t", terminal.MISSED)]
    assert terminal.word_cells(test, 3) == [("o", terminal.DIM), ("n", terminal.DIM)]  # current: untyped is dim


def test_render_places_the_cursor_after_the_typed_letters_and_clips_to_the_window():
    from game_core import terminal
    from game_core.typing_test import TypingTest

    test = TypingTest(["alpha", "beta", "gamma"], mode="words", mode_param=3)
    for i, key in enumerate("alpha be"):
        test.press(key, i * 100.0)
    frame = terminal.render(test, 900.0, title="T", size=os.terminal_size((80, 24)))
    rows = ANSI.sub("", frame.split("\x1b[J")[0]).split("\r\n")
    assert rows[:4] == ["  T", "  1/3", "  ", "  alpha beta gamma"]
    assert frame.endswith("\x1b[4;11H")  # row 4, after "  alpha be"

    test.feed([KeyEvent("x", 1000.0 + i) for i in range(20)])  # a word of 22 letters
    narrow = terminal.render(test, 2000.0, title="a long title line", size=os.terminal_size((16, 6)))
    rows = ANSI.sub("", narrow.split("\x1b[J")[0]).split("\r\n")
    assert len(rows) == 6
    assert max(len(row) for row in rows) <= 15  # one column spare: nothing wraps
    assert narrow.endswith("H") and int(narrow.rsplit(";", 1)[1][:-1]) <= 16


def test_render_shows_the_seconds_left_in_time_mode():
    from game_core import terminal
    from game_core.typing_test import TypingTest

    test = TypingTest(["a", "b"], mode="time", mode_param=30)
    size = os.terminal_size((80, 24))
    assert "  30\r\n" in ANSI.sub("", terminal.render(test, 0.0, title="T", size=size))
    test.press("a", 1000.0)
    assert "  28\r\n" in ANSI.sub("", terminal.render(test, 3500.0, title="T", size=size))  # 27.5 s rounds up


def test_decode_keys():
    from game_core import terminal
    from game_core.typing_test import BACKSPACE

    assert terminal.decode_keys("ab\x7fc\x08 \r\t\x1b[A\x1b[1;5Cd\x1bOPe\x1bxf\x03\x17") == [
        "a", "b", BACKSPACE, "c", BACKSPACE, " ", "d", "e", "f", terminal.CTRL_C, terminal.CTRL_W,
    ]
    assert terminal.decode_keys("é\x1b") == ["é", terminal.ESC]
    # Bracketed paste: the markers reach the game, which ignores what lies between them.
    assert terminal.decode_keys("a\x1b[200~bc\x1b[201~d") == [
        "a", terminal.PASTE_START, "b", "c", terminal.PASTE_END, "d",
    ]


def test_ctrl_c_outside_a_test_is_exit_130_too(sqlite_path, monkeypatch):
    from game_core.store import Store as RealStore

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(RealStore, "leaderboard", interrupted)
    result = invoke("--database-url", str(sqlite_path), "leaderboard")
    assert result.exit_code == 130
    assert result.stderr.splitlines()[-1] == "Error: interrupted"
