"""Executable docs: every command has help and is in the README; the README's exit-code
table is the enum's; every command line in the runbooks parses against the real apps."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cli_runner import command_of
from game_core.cli import app as game_app
from game_core.errors import EXIT_CODE_MEANINGS
from integrity.cli import app as integrity_app

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
RUNBOOKS = sorted((ROOT / "runbooks").glob("*.md"))
APPS = {"integrity": integrity_app, "typing-game": game_app}


def command_paths(command, prefix: tuple[str, ...] = ()):
    """Every command that runs, as (path, command), e.g. (('backup', 'create'), cmd)."""
    for name, sub in getattr(command, "commands", {}).items():
        if getattr(sub, "commands", None):
            if getattr(sub, "invoke_without_command", False):
                yield prefix + (name,), sub  # a group that runs by itself (`integrity audit`)
            yield from command_paths(sub, prefix + (name,))
        else:
            yield prefix + (name,), sub


def all_commands():
    for program, app in APPS.items():
        for path, command in command_paths(command_of(app)):
            yield program, path, command


def parse_command_line(line: str) -> str:
    """Parse like the real program would, without running it; raise on a usage error."""
    program, *args = shlex.split(line)
    command = command_of(APPS[program])
    context = command.make_context(program, args)
    while getattr(command, "commands", None):
        tokens = [*context._protected_args, *context.args]
        if not tokens:
            break
        name, command, rest = command.resolve_command(context, tokens)
        context = command.make_context(name, rest, parent=context)
    return context.command_path


def runbook_command_lines(path: Path) -> list[str]:
    lines, fenced, shell = [], False, False
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.strip().startswith("```"):
            fenced = not fenced
            # A ```python block (a revision's declared intent) holds code, not commands.
            shell = fenced and raw.strip().removeprefix("```") in ("", "bash", "sh", "console")
            continue
        text = raw.strip().removeprefix("$ ")
        if fenced and shell and text.split(" ", 1)[0] in APPS:
            lines.append(text)
    return lines


@pytest.mark.parametrize("program,path,command", list(all_commands()), ids=lambda v: " ".join(v) if isinstance(v, tuple) else str(v))
def test_every_command_has_help_and_is_in_the_readme(program, path, command):
    assert (command.help or "").strip(), f"{program} {' '.join(path)} has no help"
    assert f"{program} {' '.join(path)}" in README


@pytest.mark.parametrize("path", [ROOT / "README.md", ROOT / "runbooks" / "status-not-ok.md"], ids=lambda p: p.name)
def test_exit_code_tables_match_the_enum(path):
    rows = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", path.read_text(encoding="utf-8"), flags=re.MULTILINE))
    assert {int(code) for code in rows} == {int(code) for code in EXIT_CODE_MEANINGS}
    for code, meaning in EXIT_CODE_MEANINGS.items():
        assert rows[str(int(code))] == meaning


def test_there_are_runbooks_and_each_has_a_command():
    assert RUNBOOKS
    for path in RUNBOOKS:
        assert runbook_command_lines(path), f"{path.name} has no integrity or typing-game command"


@pytest.mark.parametrize("path", RUNBOOKS, ids=lambda p: p.name)
def test_every_runbook_command_parses_against_the_real_app(path):
    for line in runbook_command_lines(path):
        assert parse_command_line(line).split(" ")[0] in APPS, line


@pytest.mark.parametrize("line", ["integrity status --no-such-option", "integrity no-such-command", "typing-game play --mode sideways"])
def test_the_parser_rejects_a_wrong_command_line(line):
    with pytest.raises(Exception) as raised:
        parse_command_line(line)
    assert getattr(raised.value, "exit_code", None) == 2
