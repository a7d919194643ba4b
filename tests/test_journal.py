"""The repository journal at the byte level (issue 14 item 4): an append never glues to a
torn line, writes every byte or fails loudly, appenders never interleave, events are
typed, and a reader says exactly which lines it could not read while keeping the rest.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
from pathlib import Path

import pytest

from integrity.backups import repository as repository_module
from integrity.backups.catalog import fold_journal
from integrity.backups.repository import (
    Event,
    JournalEntry,
    Repository,
    RepositoryUnusable,
    new_backup_id,
    parse_journal_line,
)

BACKUP = "20260301T030000Z-abcdef"
OTHER = "20260302T030000Z-123456"


@pytest.fixture
def repo(tmp_path) -> Repository:
    root = tmp_path / "repo"
    root.mkdir()
    return Repository(root)


def _lines(repo: Repository) -> list[bytes]:
    return repo.journal_path.read_bytes().split(b"\n")


def test_an_append_after_a_torn_line_starts_on_a_fresh_line(repo):
    repo.append(BACKUP, Event.INTACT)
    with repo.journal_path.open("ab") as handle:
        handle.write(b'{"at": "2026-03-01T00:00:00+00:00", "backup_id": "2026')  # a crash mid-append
    repo.append(BACKUP, Event.PINNED, {"until": None})

    contents = repo.read_journal()
    assert [e.event for e in contents.entries] == [Event.INTACT, Event.PINNED]
    assert contents.problems == ("journal.jsonl line 2 is not JSON; it was skipped",)
    assert fold_journal(contents.entries)[BACKUP].pinned_until == "forever"
    assert repo.journal_path.read_bytes().endswith(b"\n")


def test_a_torn_last_line_is_reported_as_incomplete(repo):
    repo.append(BACKUP, Event.INTACT)
    with repo.journal_path.open("ab") as handle:
        handle.write(b'{"at": "2026')
    contents = repo.read_journal()
    assert len(contents.entries) == 1
    assert contents.problems == ("journal.jsonl line 2 is incomplete (torn by a crash mid-append); it was skipped",)
    assert not contents.complete


def test_a_short_write_is_continued_until_every_byte_is_written(repo, monkeypatch):
    real_write = os.write
    calls = []

    def dribble(descriptor, data):
        calls.append(len(data))
        return real_write(descriptor, bytes(data[:7]))  # the kernel may write less than asked

    monkeypatch.setattr(repository_module.os, "write", dribble)
    repo.append(BACKUP, Event.PINNED, {"until": "2099-01-01T00:00:00+00:00"})
    monkeypatch.undo()
    assert len(calls) > 5
    (entry,) = repo.read_journal().entries
    assert entry.detail == {"until": "2099-01-01T00:00:00+00:00"}


def test_a_write_of_nothing_fails_loudly(repo, monkeypatch):
    monkeypatch.setattr(repository_module.os, "write", lambda descriptor, data: 0)
    with pytest.raises(RepositoryUnusable, match="cannot record in the backup journal"):
        repo.append(BACKUP, Event.INTACT)


def test_a_full_disk_is_exit_4_naming_the_journal(repo, monkeypatch):
    def full(descriptor, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(repository_module.os, "write", full)
    with pytest.raises(RepositoryUnusable, match="No space left on device") as caught:
        repo.append(BACKUP, Event.INTACT)
    assert caught.value.exit_code == 4


def _append_many(root: str, backup_id: str, count: int) -> None:
    repository = Repository(Path(root))
    for number in range(count):
        repository.append(backup_id, Event.DRILLED, {"n": number, "padding": "x" * 5000})


def test_concurrent_appenders_never_interleave(repo):
    """Lines larger than a pipe buffer from four processes at once: each lands whole."""
    ids = [new_backup_id() for _ in range(4)]
    processes = [multiprocessing.get_context("fork").Process(target=_append_many, args=(str(repo.root), i, 40))
                 for i in ids]
    for process in processes:
        process.start()
    for process in processes:
        process.join(20)
        assert process.exitcode == 0
    contents = repo.read_journal()
    assert contents.complete, contents.problems[:3]
    for backup_id in ids:
        assert [e.detail["n"] for e in contents.entries if e.backup_id == backup_id] == list(range(40))


def test_events_are_typed(repo):
    with pytest.raises(ValueError):
        repo.append(BACKUP, "pinnned")
    with pytest.raises(ValueError):
        JournalEntry("2026-03-01T00:00:00.000000+00:00", BACKUP, "exploded", {})
    entry = repo.append(BACKUP, "intact")  # the value is accepted and becomes the enum
    assert entry.event is Event.INTACT and entry.event == "intact"
    assert not repo.journal_path.read_bytes().count(b"pinnned")


def test_an_append_that_would_not_read_back_is_refused_before_writing(repo):
    with pytest.raises(ValueError, match="until"):
        repo.append(BACKUP, Event.PINNED, {"until": "next tuesday"})
    with pytest.raises(ValueError, match="backup id"):
        repo.append("../x", Event.INTACT)
    assert not repo.journal_path.exists()


@pytest.mark.parametrize("line, reason", [
    (b"not json", "is not JSON"),
    (b"[1, 2]", "is not a JSON object"),
    (b'{"at": "2026-03-01T00:00:00+00:00", "backup_id": "%s", "event": "pinned"}' % BACKUP.encode(), "fields"),
    (b'{"at": "soon", "backup_id": "%s", "event": "intact", "detail": {}}' % BACKUP.encode(), "not an ISO time"),
    (b'{"at": "2026-03-01T00:00:00", "backup_id": "%s", "event": "intact", "detail": {}}' % BACKUP.encode(), "no UTC offset"),
    (b'{"at": "2026-03-01T00:00:00+00:00", "backup_id": "../x", "event": "intact", "detail": {}}', "not a backup id"),
    (b'{"at": "2026-03-01T00:00:00+00:00", "backup_id": "%s", "event": "boom", "detail": {}}' % BACKUP.encode(), "is not one of"),
    (b'{"at": "2026-03-01T00:00:00+00:00", "backup_id": "%s", "event": "pinned", "detail": null}' % BACKUP.encode(), "detail is not an object"),
    (b'{"at": "2026-03-01T00:00:00+00:00", "backup_id": "%s", "event": "pinned", "detail": {"until": 5}}' % BACKUP.encode(), "until"),
    (b'{"at": "2026-03-01T00:00:00+00:00", "backup_id": "%s", "event": "corrupt", "detail": {"problems": 5}}' % BACKUP.encode(), "problems"),
    (b'{"at": "2026-03-01T00:00:00+00:00", "backup_id": "%s", "event": "suspect", "detail": {"reasons": "x"}}' % BACKUP.encode(), "reasons"),
])
def test_a_bad_line_is_skipped_with_its_reason_and_later_lines_still_count(repo, line, reason):
    repo.append(BACKUP, Event.INTACT)
    with repo.journal_path.open("ab") as handle:
        handle.write(line + b"\n")
    repo.append(OTHER, Event.PINNED, {"until": None})
    contents = repo.read_journal()
    assert [(e.backup_id, e.event) for e in contents.entries] == [(BACKUP, Event.INTACT), (OTHER, Event.PINNED)]
    (problem,) = contents.problems
    assert problem.startswith("journal.jsonl line 2 ") and reason in problem, problem


def test_times_are_normalised_to_utc_so_they_compare_as_text():
    entry = parse_journal_line(json.dumps({"at": "2026-03-01T05:00:00+02:00", "backup_id": BACKUP,
                                           "event": "intact", "detail": {}}).encode())
    assert entry.at == "2026-03-01T03:00:00.000000+00:00"


def test_a_journal_that_is_not_a_regular_file_is_neither_read_nor_written(repo, tmp_path):
    repo.append(BACKUP, Event.PINNED, {"until": None})
    (tmp_path / "elsewhere.jsonl").write_bytes(repo.journal_path.read_bytes())
    repo.journal_path.unlink()
    repo.journal_path.symlink_to(tmp_path / "elsewhere.jsonl")
    contents = repo.read_journal()
    assert contents.entries == () and "symbolic link" in contents.problems[0]
    with pytest.raises(RepositoryUnusable, match="symbolic link"):
        repo.append(BACKUP, Event.INTACT)
    assert (tmp_path / "elsewhere.jsonl").read_bytes().count(b"\n") == 1  # nothing written through the link


def test_a_lost_journal_is_started_again_only_by_a_pin(repo):
    (repo.root / BACKUP).mkdir()
    (repo.root / OTHER).mkdir()
    assert repo.read_journal().problems  # missing while backups exist
    with pytest.raises(RepositoryUnusable, match="missing or empty"):
        repo.append(BACKUP, Event.INTACT)  # an automatic event would hide the loss
    repo.append(BACKUP, Event.PINNED, {"until": None})  # a person re-pinning starts it knowingly
    assert repo.read_journal().complete
