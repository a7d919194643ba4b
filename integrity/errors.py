"""The integrity tool's own failures. They extend game_core's family (one `Failure` base,
one `ExitCode` enum for both programs); `integrity.cli` turns them into one `Error:`
line and the exit code in one place.

The base class is `Failure`, not `IntegrityError`: SQLAlchemy and sqlite3 both have one.
"""

from __future__ import annotations

from game_core.errors import ExitCode, Failure, PreconditionFailed


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
