"""Named crash points for crash-safety tests.

When the environment variable INTEGRITY_CRASH_AT names a phase, the process kills
itself with SIGKILL on reaching it: no cleanup, no finally blocks, exactly like a power
cut or the OOM killer. Tests assert the death by SIGKILL at that phase and that nothing
visible or restorable was left. This is the one place library code reads the
environment, because the hook must reach every depth without being passed down.
"""

from __future__ import annotations

import os
import signal
import sys

VARIABLE = "INTEGRITY_CRASH_AT"


def crash_point(phase: str) -> None:
    if os.environ.get(VARIABLE) == phase:
        sys.stderr.write(f"crash point {phase}: SIGKILL\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


PAUSE_VARIABLE = "INTEGRITY_PAUSE_AT"


def pause_point(phase: str) -> None:
    """INTEGRITY_PAUSE_AT=PHASE=SECONDS sleeps there: a test's way to catch a run in the
    middle (a scheduler fire while a backup still runs, a signal during one)."""
    named, _, seconds = os.environ.get(PAUSE_VARIABLE, "").partition("=")
    if named == phase:
        import time

        time.sleep(float(seconds or 1))
