"""The point-in-time recovery protocol: what Litestream (SQLite) and pgBackRest
(PostgreSQL) each provide, so that restores, drills, `--last-clean` and status never
branch on the engine.

We do not ship WAL ourselves (issue 16): each implementation writes its engine's
configuration from `integrity.toml`, runs the engine's own commands, and reads back what
the engine knows (its newest replicated or archived position, its oldest restorable
point, its errors). Every command it runs is also shown to the operator
(`PitrEngine.commands`), so the runbooks can name the underlying `litestream` or
`pgbackrest` step.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from integrity.db.scratch import ScratchCopy


@dataclass(frozen=True)
class RecoveryWindow:
    """What can be restored right now, as the engine itself reports it."""

    oldest: datetime | None  # the oldest restorable moment (None: nothing restorable yet)
    newest: datetime | None  # the newest replicated or archived position: the recovery point
    errors: tuple[str, ...] = ()  # replication or archiving errors, one line each
    # Nothing written to the database since `newest` is waiting to be shipped, so the
    # recovery point is now (an idle database makes no new files; its lag is 0, not the
    # age of `newest`). False when the engine cannot tell: the lag is then now - newest.
    caught_up: bool = False

    def contains(self, moment: datetime) -> bool:
        return self.oldest is not None and self.newest is not None and self.oldest <= moment <= self.newest


@dataclass(frozen=True)
class EngineCommand:
    """One underlying command, as an operator who knows the engine would type it."""

    step: str  # "replicate", "restore", "archive-push", "backup", "info", ...
    argv: tuple[str, ...]

    def shell(self) -> str:
        import shlex

        return shlex.join(self.argv)


class PitrEngine(Protocol):
    """One engine's continuous archive of the guarded database."""

    name: str  # "litestream" | "pgbackrest"
    # The smallest step a search in time can take (`--last-clean`'s resolution).
    resolution_seconds: float

    def config_files(self) -> dict[Path, str]:
        """The engine's configuration, generated from integrity.toml (path -> text)."""

    def write_config(self) -> list[Path]:
        """Write `config_files()` atomically; returns the paths written."""

    def commands(self) -> list[EngineCommand]:
        """Every underlying command this engine runs, for `integrity pitr config` and runbooks."""

    def server_settings(self) -> dict[str, str]:
        """Settings the database server itself must have, which integrity cannot write
        (PostgreSQL's archive_mode, archive_command, archive_timeout; none for Litestream)."""

    def replicator(self) -> tuple[str, ...] | None:
        """The long-running command `integrity` supervises (Litestream's `replicate`), or
        None when the server archives by itself (PostgreSQL's archive_command)."""

    def window(self) -> RecoveryWindow:
        """The restorable window and errors, read from the engine (never guessed)."""

    def restored_at(self, moment: datetime, scratch_dir: Path, *,
                    window: RecoveryWindow | None = None) -> AbstractContextManager[ScratchCopy]:
        """The database as it was at `moment`, restored into a claimed scratch copy that is
        removed on exit (SQLite: a file; PostgreSQL: a scratch cluster on a free port).
        Raises a Failure naming the window when `moment` is outside it. A caller that has
        just read the window passes it (`window`), so it is read once per restore."""

