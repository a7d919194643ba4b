"""Operating-system locks that die with their process (DESIGN.md invariant 6).

`flock` on a lock file: released by the kernel when the holder exits, however it exits,
so a crash never leaves a stale lock (restic's most common complaint). Beside the lock,
each holder writes a small JSON note (command, pid, host, since) that only serves to
name the holder in the error; notes of dead processes are ignored.

Exclusive: writers of a repository (create, prune, restore). Shared: readers (verify,
drill, diff, dry run), so that prune never deletes a backup someone is reading.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from game_core.errors import ExitCode, PreconditionFailed


class LockHeld(PreconditionFailed):
    """Someone else holds the lock; the message names them and the way out."""

    exit_code = ExitCode.PRECONDITION


@dataclass(frozen=True)
class Holder:
    command: str
    pid: int
    host: str
    since: str
    mode: str

    def describe(self) -> str:
        since = self.since[11:16] if len(self.since) >= 16 else self.since
        return f"{self.command!r} (pid {self.pid} on {self.host}, since {since} UTC, {self.mode})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def current_holders(lock_path: Path) -> list[Holder]:
    notes = lock_path.parent / f"{lock_path.name}.holders"
    holders = []
    host = socket.gethostname()
    for note in sorted(notes.glob("*.json")) if notes.is_dir() else []:
        try:
            holder = Holder(**json.loads(note.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            continue
        if holder.host == host and not _alive(holder.pid):
            continue  # the kernel already released its lock; the note is just left over
        holders.append(holder)
    return holders


@contextmanager
def file_lock(lock_path: Path, *, exclusive: bool, wait_seconds: float, command: str, what: str) -> Iterator[None]:
    """Hold `lock_path` shared or exclusive; wait up to `wait_seconds`, else LockHeld (exit 4)."""
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise _unusable(lock_path, exc) from None
    try:
        operation = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + max(wait_seconds, 0)
        while True:
            try:
                fcntl.flock(descriptor, operation | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockHeld(_held_message(lock_path, what, wait_seconds)) from None
                time.sleep(0.05)
        try:
            note = _write_note(lock_path, command, "exclusive" if exclusive else "shared")
        except OSError as exc:  # a full disk or a read-only directory: exit 4, not a bug
            raise _unusable(lock_path, exc) from None
        try:
            yield
        finally:
            note.unlink(missing_ok=True)
    finally:
        os.close(descriptor)  # closing releases the flock


def _unusable(lock_path: Path, exc: OSError) -> PreconditionFailed:
    return PreconditionFailed(
        f"cannot take the lock {lock_path}: {exc.strerror or exc}; free space on that file system or make "
        f"{lock_path.parent} writable, then run again"
    )


def _write_note(lock_path: Path, command: str, mode: str) -> Path:
    notes = lock_path.parent / f"{lock_path.name}.holders"
    notes.mkdir(exist_ok=True)
    holder = Holder(
        command=command,
        pid=os.getpid(),
        host=socket.gethostname(),
        since=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        mode=mode,
    )
    note = notes / f"{holder.host}-{holder.pid}-{id(holder)}.json"
    # Written aside and renamed: a waiter listing the notes sees a whole note or none.
    partial = note.with_suffix(".partial")
    partial.write_text(json.dumps(holder.__dict__), encoding="utf-8")
    os.replace(partial, note)
    return note


# How long a refused waiter looks for the holder's note: a holder writes it right after
# taking the lock, so a waiter that lost the race by a moment would otherwise name
# "another process" for a lock its holder is about to describe.
NOTE_GRACE_SECONDS = 1.0


def _held_message(lock_path: Path, what: str, waited: float) -> str:
    holders = current_holders(lock_path)
    grace = time.monotonic() + NOTE_GRACE_SECONDS
    while not holders and time.monotonic() < grace:
        time.sleep(0.02)
        holders = current_holders(lock_path)
    who = ", ".join(h.describe() for h in holders) if holders else "another process"
    waited_text = f" after waiting {waited:g}s" if waited else ""
    return f"{what} locked by {who}{waited_text}; wait for it, or run again with --lock-wait 600"
