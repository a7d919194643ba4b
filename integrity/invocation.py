"""The invocation: everything a call of `integrity.api` needs besides its own options.

Who runs what (`command`), with which settings, where the run is recorded (`ledger`,
`run_id`), how long it waits for a lock held by another run, what consent it has to write
the guarded database, and where its progress goes. It is built once, at the edge: by the
CLI's callback (integrity.runtime), by the scheduler for each job
(integrity.scheduler.runner), or by a program or benchmark:

    inv = Invocation(settings, command="backup create", lock_wait=60)
    api.backup_create(inv, label="before the upgrade")

Frozen: a command's own options (`--lock-wait`, `--yes`) make a new one (`given`), so no
callee can change what its caller handed it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from integrity.progress import NO_PROGRESS, Reporter
from integrity.recovery.consent import Consent


def _silent(line: str) -> None:
    """Phase notes nobody watches (scheduled jobs, --json, -q, programs)."""


@dataclass(frozen=True)
class Invocation:
    settings: Any  # integrity.settings.Settings
    command: str
    ledger: Any = None  # integrity.ledger.Ledger: where results that later runs rely on are kept
    run_id: str | None = None
    lock_wait: float = 0.0  # seconds to wait for a lock another run holds; 0 fails at once (exit 4)
    # Programs and scheduled jobs never prompt: without yes=True a write is refused (exit 4).
    consent: Consent = field(default_factory=lambda: Consent(no_input=True))
    progress: Reporter = NO_PROGRESS
    notify: Callable[[str], None] = _silent  # one line as each phase of a long operation ends

    def given(self, *, lock_wait: float | None = None, yes: bool | None = None) -> Invocation:
        """This invocation with a command's own --lock-wait and --yes."""
        changed = self
        if lock_wait is not None:
            changed = replace(changed, lock_wait=lock_wait)
        if yes is not None:
            changed = replace(changed, consent=replace(changed.consent, yes=yes))
        return changed

    @classmethod
    def recorded(cls, recording, **fields: Any) -> Invocation:
        """The invocation of a run open in the ledger (integrity.recorder.Recording)."""
        return cls(recording.settings, recording.command, ledger=recording.ledger, run_id=recording.run_id, **fields)
