"""Consent before the guarded database is written (DESIGN.md invariant 1).

Restore, repair, salvage and `migrate apply` write the game's data; each asks first.
Consent is either a flag (`--yes`, or a narrower one such as `--terminate-connections`)
or, on a terminal, the operator typing the database's name: a typed name cannot be given
by reflex the way `y` can, and it proves they know which database they are about to
change. `--no-input` (cron, CI) never prompts: without the flag it refuses with exit 4,
as does a run whose stdin is not a terminal.

Usage (the repair command does the same):

    how = confirm(
        f"rebuild progress of {n} players in {name}",
        expected=database_name(target), yes=yes, no_input=runtime.no_input,
        details=["what will change", ...],
    )
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from game_core.db import DatabaseTarget
from game_core.errors import PreconditionFailed

TYPED = "typed"


class ConsentRequired(PreconditionFailed):
    """Consent was needed and could not be asked for (--no-input, or no terminal)."""


class ConsentRefused(PreconditionFailed):
    """The operator typed something other than the expected confirmation."""


@dataclass
class Prompter:
    """Where a typed confirmation is asked: a question on stderr, the answer from stdin
    (stdout stays data only). Tests hand in their own streams."""

    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)

    def interactive(self) -> bool:
        try:
            return bool(self.stdin) and self.stdin.isatty()
        except (AttributeError, ValueError):  # closed or replaced stdin
            return False

    def say(self, text: str) -> None:
        self.stderr.write(text + "\n")
        self.stderr.flush()

    def ask(self, question: str) -> str | None:
        self.stderr.write(question)
        self.stderr.flush()
        line = self.stdin.readline()
        return None if not line else line.strip()


def database_name(target: DatabaseTarget) -> str:
    """What the operator types: the PostgreSQL database name, or the SQLite file's name."""
    if target.sqlite_path is not None:
        return target.sqlite_path.name
    return target.url.database or target.display


def confirm(
    action: str,
    *,
    expected: str,
    yes: bool,
    no_input: bool,
    details: Sequence[str] = (),
    flag: str = "--yes",
    prompter: Prompter | None = None,
) -> str:
    """Return how consent was given (`flag`, or "typed"); raise ConsentRequired or
    ConsentRefused (both exit 4) otherwise.

    `action` is one line naming what will be written ("restore backup X over game.db");
    `details` are shown before the question (what is at stake: the plan, the sessions
    to be terminated); `flag` is the option that gives this consent without a prompt.
    """
    if yes:
        return flag
    if no_input:
        raise ConsentRequired(f"{action} needs consent and --no-input forbids asking; run again with {flag}")
    prompter = prompter or Prompter()
    if not prompter.interactive():
        raise ConsentRequired(
            f"{action} needs consent: run again with {flag}, or from a terminal to type the confirmation"
        )
    for line in details:
        prompter.say(line)
    answer = prompter.ask(f"{action}.\nType the database name {expected!r} to continue: ")
    if answer != expected:
        shown = "nothing" if not answer else repr(answer)
        raise ConsentRefused(
            f"{shown} typed, not the database name {expected!r}; stopped before changing anything "
            f"(or run again with {flag})"
        )
    return TYPED


@dataclass(frozen=True)
class Consent:
    """The consent a command was given, handed to the library that needs it.

    `describe` turns the subject of a question (a plan) into the lines shown before the
    prompt: the CLI knows how results look, the library only what it asks about.
    """

    yes: bool = False
    no_input: bool = False
    prompter: Prompter | None = None
    describe: Callable[[Any], Sequence[str]] | None = None

    def confirm(
        self,
        action: str,
        *,
        expected: str,
        subject: Any = None,
        details: Sequence[str] = (),
        flag: str = "--yes",
        given: bool | None = None,
    ) -> str:
        """Like `confirm`; `given` overrides `yes` for a narrower flag (--terminate-connections)."""
        lines = list(self.describe(subject)) if (subject is not None and self.describe) else []
        return confirm(
            action,
            expected=expected,
            yes=self.yes if given is None else given,
            no_input=self.no_input,
            details=[*lines, *details],
            flag=flag,
            prompter=self.prompter,
        )

    def require_possible(self, action: str) -> None:
        """Refuse now a run that could never be given consent for `action` (no --yes, and
        --no-input or no terminal): before work that comes ahead of the question (a
        point-in-time restore into scratch, a search of many restores) is spent on it."""
        if self.yes:
            return
        if self.no_input:
            raise ConsentRequired(f"{action} needs consent and --no-input forbids asking; run again with --yes")
        if not (self.prompter or Prompter()).interactive():
            raise ConsentRequired(f"{action} needs consent: run again with --yes, or from a terminal to type the confirmation")


def consent_for(runtime: Any, *, yes: bool, describe: Callable[[Any], Sequence[str]] | None = None) -> Consent:
    """The consent of a CLI run: its --yes, the global --no-input, the terminal."""
    return Consent(yes=yes, no_input=bool(getattr(runtime, "no_input", False)), prompter=Prompter(), describe=describe)
