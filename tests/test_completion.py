"""Shell completion of both programs, Typer's own (`--install-completion`,
`--show-completion`): real completions from the programs run as a shell runs them
(`_INTEGRITY_COMPLETE=complete_bash` with COMP_WORDS), and the bash script that
`--show-completion` prints, sourced in a real bash. A completion writes nothing: no
ledger, no data directory (it runs on every TAB).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
PROGRAMS = {"integrity": "_INTEGRITY_COMPLETE", "typing-game": "_TYPING_GAME_COMPLETE"}


def program_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTEGRITY_", "GAME_", "_INTEGRITY", "_TYPING"))}
    env.update(XDG_DATA_HOME=str(tmp_path / "xdg"), HOME=str(tmp_path / "home"), PATH=f"{BIN}{os.pathsep}{env['PATH']}")
    env.update(extra)
    return env


def in_bash(tmp_path: Path, command: str) -> subprocess.CompletedProcess:
    """`command` run by a real bash, as a user types it: Typer finds the shell to write a
    script for by looking at the process's parents (shellingham). `; true` keeps bash
    from exec-ing the command in its own place, which would hide it."""
    return subprocess.run(["bash", "--norc", "--noprofile", "-c", f"{command}; true"], env=program_env(tmp_path),
                          capture_output=True, text=True, timeout=60)


def complete(tmp_path: Path, line: str) -> list[str]:
    """What the program offers for the last word of `line` (a trailing space: a new word)."""
    program = line.split()[0]
    words = line.split() + ([""] if line.endswith(" ") else [])
    env = program_env(tmp_path, **{PROGRAMS[program]: "complete_bash", "COMP_WORDS": " ".join(words),
                                   "COMP_CWORD": str(len(words) - 1)})
    done = subprocess.run([str(BIN / program)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout.split()


@pytest.mark.parametrize(("line", "expected"), [
    ("integrity not", ["notify"]),
    ("integrity backup ver", ["verify"]),
    ("integrity notify ", ["test", "status"]),
    ("integrity --js", ["--json"]),
    ("integrity backup verify --de", ["--deep"]),
    ("typing-game pl", ["play"]),
    ("typing-game play --mo", ["--mode"]),
    ("typing-game --datab", ["--database-url"]),
])
def test_commands_and_options_complete(tmp_path, line, expected):
    assert complete(tmp_path, line) == expected


def test_a_word_nothing_starts_with_completes_to_nothing_and_nothing_is_written(tmp_path):
    assert complete(tmp_path, "integrity no-such-") == []
    assert complete(tmp_path, "typing-game play --no-such-") == []
    complete(tmp_path, "integrity backup create --la")
    # A completion is not a run: no ledger, no data directory, no game database.
    assert not (tmp_path / "xdg").exists()


@pytest.mark.parametrize("program", PROGRAMS)
def test_the_bash_script_completes_in_a_real_bash(tmp_path, program):
    shown = in_bash(tmp_path, f"{program} --show-completion")
    assert shown.stderr == ""
    function = f"_{program.replace('-', '_')}_completion"
    assert f"complete -o default -F {function} {program}" in shown.stdout
    script = tmp_path / "completion.sh"
    script.write_text(shown.stdout)
    partial = {"integrity": "integrity schedule l", "typing-game": "typing-game lea"}[program]
    driver = (
        f"source {script}\n"
        f"COMP_WORDS=({partial})\n"
        "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
        f"{function} {program}\n"  # bash calls it with the command name as $1
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", driver], env=program_env(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == {"integrity": ["list"], "typing-game": ["leaderboard"]}[program]


def test_install_completion_writes_the_script_and_sources_it_from_bashrc(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    done = in_bash(tmp_path, "integrity --install-completion")
    assert done.stderr == ""
    assert done.stdout.splitlines()[0] == f"bash completion installed in {home / '.bash_completions' / 'integrity.sh'}"
    script = home / ".bash_completions" / "integrity.sh"
    assert "_integrity_completion" in script.read_text()
    assert f"source '{script}'" in (home / ".bashrc").read_text()


@pytest.mark.parametrize("program", PROGRAMS)
def test_help_shows_the_completion_options(tmp_path, program):
    done = subprocess.run([str(BIN / program), "--help"], env=program_env(tmp_path), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0
    assert "--install-completion" in done.stdout and "--show-completion" in done.stdout
