"""What the commands' parameters share: the upper bounds of numbers and the checks of
text, applied while the command line is parsed (a usage error, exit 2, naming the option).

Every number a command takes has both bounds, shown in `--help` (`[0<=x<=86400]`): a
huge value is a typo, and unchecked it overflows a C int or a datetime deep inside the
command (exit 1, "a bug") instead of being refused where it was typed.
"""

from __future__ import annotations

from typing import Annotated

import typer

MAX_LOCK_WAIT_SECONDS = 86_400  # a day: a lock held longer belongs to a run that needs a person
MAX_ROWS_SHOWN = 100_000  # --limit/--samples: more is a report nobody reads, and unbounded memory
MAX_RUNS_LISTED = 100_000
MAX_PROBE_SAMPLE = 1_000_000
MAX_PROBE_TIMEOUT_SECONDS = 3_600
MAX_CHUNK_ROWS = 1_000_000_000  # the memory check (checks.chunks) refuses far less, with its reason
MAX_LABEL_LENGTH = 200

# The options every command that locks or writes shares, defined once (sqlite-utils' habit):
# both end up in the command's Invocation (`ctx.obj.invocation(lock_wait=..., yes=...)`).
LockWait = Annotated[
    float,
    typer.Option("--lock-wait", min=0, max=MAX_LOCK_WAIT_SECONDS, metavar="SECONDS", help="Wait this long for a lock held by another run (default: fail at once, exit 4)."),
]
Yes = Annotated[bool, typer.Option("--yes", help="Consent without the typed confirmation (required with --no-input).")]


def backup_reference(value: str | None) -> str | None:
    """A backup id or `latest` given on the command line: never empty. An empty argument
    (an unset shell variable) must not quietly mean "the newest backup"."""
    if value is not None and not value.strip():
        raise typer.BadParameter("is empty; give a backup id as `integrity backup list` shows it")
    return value


def label_text(value: str | None) -> str | None:
    """A backup's label: one short line of text (it is shown in lists and stored in manifests)."""
    if value is None:
        return value
    if len(value) > MAX_LABEL_LENGTH:
        raise typer.BadParameter(f"is {len(value):,} characters long; at most {MAX_LABEL_LENGTH} are allowed")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise typer.BadParameter("holds a control character (a newline, a tab, NUL); give one line of text")
    return value
