"""integrity.locks: a refused waiter names the holder, even one that took the lock a
moment before writing its note (test_backups_create's unsynchronised creates once said
"locked by another process" under load), and never reads a half-written note."""

from __future__ import annotations

import fcntl
import json
import os

import pytest

from game_core.errors import ExitCode
from integrity import locks


@pytest.fixture
def held(tmp_path):
    """The lock file, held exclusively on a descriptor of its own (as another process
    would: flock conflicts between open file descriptions, even in one process)."""
    lock_path = tmp_path / "locks" / "writer.lock"
    lock_path.parent.mkdir()
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    yield lock_path
    os.close(descriptor)


def refused(lock_path) -> locks.LockHeld:
    with pytest.raises(locks.LockHeld) as caught:
        with locks.file_lock(lock_path, exclusive=True, wait_seconds=0, command="backup prune", what="the repository"):
            pass
    assert caught.value.exit_code == ExitCode.PRECONDITION
    return caught.value


def test_a_waiter_names_a_holder_whose_note_appears_after_the_refusal(held, monkeypatch):
    real = locks.current_holders
    looks = []

    def note_written_after_the_first_look(lock_path):
        looks.append(lock_path)
        if len(looks) == 1:  # the holder has the lock but has not written its note yet
            return []
        if len(looks) == 2:
            locks._write_note(lock_path, "backup create", "exclusive")
        return real(lock_path)

    monkeypatch.setattr(locks, "current_holders", note_written_after_the_first_look)
    message = str(refused(held))
    assert "locked by 'backup create'" in message and "another process" not in message
    assert len(looks) >= 2


def test_without_a_note_the_waiter_says_another_process_after_its_grace(held, monkeypatch):
    monkeypatch.setattr(locks, "NOTE_GRACE_SECONDS", 0.05)
    assert "the repository locked by another process" in str(refused(held))


def test_a_note_is_whole_or_absent_to_a_reader(tmp_path):
    lock_path = tmp_path / "writer.lock"
    lock_path.touch()
    note = locks._write_note(lock_path, "backup create", "exclusive")
    assert [p.name for p in note.parent.iterdir()] == [note.name]  # no partial left beside it
    assert json.loads(note.read_text())["command"] == "backup create"
    # A partial note (a writer killed before its rename) is never read as a holder.
    (note.parent / "other.partial").write_text('{"command": "backup cr')
    assert [holder.command for holder in locks.current_holders(lock_path)] == ["backup create"]
