"""The integrity tool's failures. Each carries its exit code (game_core.errors.ExitCode);
`integrity.cli` turns them into one `Error:` line in one place.

The base class is `Failure`, not `IntegrityError`: SQLAlchemy and sqlite3 both have one.
"""

from __future__ import annotations

from game_core.errors import (  # noqa: F401  (re-exported: one family for both packages)
    EXIT_CODE_MEANINGS,
    DatabaseMissing,
    DatabaseUnreachable,
    ExitCode,
    Failure,
    InvalidInput,
    PreconditionFailed,
    SchemaNotCurrent,
    SchemaUnknown,
)


class ConfigInvalid(PreconditionFailed):
    """A configuration key or value is wrong; the message names the key, value and what is allowed."""


class LedgerUnavailable(PreconditionFailed):
    """The run ledger cannot be opened or written."""


class ProblemsFound(Failure):
    """The check ran and found problems."""

    exit_code = ExitCode.PROBLEMS_FOUND


class VerificationFailed(Failure):
    """A checksum, a backup, a restore or a drill failed verification."""

    exit_code = ExitCode.VERIFICATION_FAILED
