"""Exit codes and the exception family shared by the game and the integrity tool.

Every exception a user can cause carries its exit code, so the two CLIs can turn it
into one `Error:` line and the documented code in a single place each.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The documented exit codes (README, runbooks and `--help` show the same table)."""

    OK = 0
    BUG = 1
    USAGE = 2
    PROBLEMS_FOUND = 3
    PRECONDITION = 4
    VERIFICATION_FAILED = 5
    INTERRUPTED = 130


EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "ok",
    ExitCode.BUG: "unexpected error (a bug)",
    ExitCode.USAGE: "usage error",
    ExitCode.PROBLEMS_FOUND: "the check ran and found problems (audit violations, dry-run findings, "
    "stale or missing backups, missed objectives, a revision live runs that never passed a dry run)",
    ExitCode.PRECONDITION: "precondition not met: configuration invalid, database missing or "
    "unreachable, lock held, tool missing",
    ExitCode.VERIFICATION_FAILED: "verification failed: checksum mismatch, corrupt or incomplete "
    "backup, failed restore or drill",
    ExitCode.INTERRUPTED: "interrupted",
}
# The table as both programs' `--help` shows it (paragraphs, so the help formatter keeps the lines).
EXIT_CODE_HELP = "Exit codes:\n\n" + "\n\n".join(f"{int(code)}: {meaning}" for code, meaning in EXIT_CODE_MEANINGS.items())


class Failure(Exception):
    """Base of every expected failure; the message is one line that names the fix."""

    exit_code: ExitCode = ExitCode.BUG


class InvalidInput(Failure):
    """The caller handed in something impossible (a result, a username, an option)."""

    exit_code = ExitCode.USAGE


class InvalidResult(InvalidInput):
    """A finished test whose numbers cannot be true; nothing was written."""


class PlayerExists(InvalidInput):
    """The username is taken."""


class PlayerNotFound(InvalidInput):
    """No player has that username."""


class PreconditionFailed(Failure):
    """The environment is not ready: database missing or unreachable, schema not current."""

    exit_code = ExitCode.PRECONDITION


class DatabaseMissing(PreconditionFailed):
    """A read-only command was pointed at a database that does not exist."""


class DatabaseUnreachable(PreconditionFailed):
    """The database URL is malformed or the server does not answer."""


class SchemaNotCurrent(PreconditionFailed):
    """The database is at an older Alembic revision than this code's head."""


class SchemaUnknown(PreconditionFailed):
    """The database is at a revision this code does not know, or holds foreign tables."""


class SchemaMismatch(PreconditionFailed):
    """The database says it is at this code's revision, but its tables differ from that
    revision's model: changed behind the migrations' back, or another application's."""


class DataDamaged(PreconditionFailed):
    """A value read from the database is not what the game's schema allows (a text level,
    a float count): the data was written or converted outside the game."""
