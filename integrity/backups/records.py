"""What both kinds of repository record and read the same way (a directory's journal file,
object storage's event objects): the typed journal writers and the readable form of a
data file (decrypted when it is encrypted)."""

from __future__ import annotations

from typing import Any

from integrity.backups.format import AuditVerdict, Event, JournalEntry


class JournalRecords:
    """What both kinds of repository record and read the same way, over their own
    `append` and `read_journal` (a file appended under flock; immutable event objects)."""

    # Typed writers: each kind of event is written in one place, with the detail its
    # readers (the catalog's fold, `backup show`) expect. `by` is the command that found it.

    def record_quick_check(self, backup_id: str, *, problem: str | None, by: str) -> JournalEntry:
        """The hashes and decompression passed (intact) or not (corrupt, with why)."""
        if problem is None:
            return self.append(backup_id, Event.INTACT, {"by": by})
        return self.append(backup_id, Event.CORRUPT, {"problem": problem, "by": by})

    def record_deep_check(self, backup_id: str, *, problems: list[str], fingerprints: dict, by: str) -> JournalEntry:
        """A restore into scratch with its engine check, counts and drift: deep-verified
        when nothing was found, deep-failed with the problems otherwise."""
        event = Event.DEEP_FAILED if problems else Event.DEEP_VERIFIED
        return self.append(backup_id, event, {"by": by, "problems": list(problems), "fingerprints": fingerprints})

    def record_audit(self, backup_id: str, verdict: AuditVerdict, violations: list[dict], *, by: str) -> JournalEntry:
        return self.append(backup_id, Event(verdict.value), {"by": by, "violations": list(violations)})

    def record_failure(self, backup_id: str, problem: str, *, by: str) -> JournalEntry:
        """A restore or drill of this backup failed verification: never restorable again."""
        return self.append(backup_id, Event.FAILED, {"problem": problem, "by": by})

    def record_drill(self, backup_id: str, summary: dict[str, Any], *, by: str) -> JournalEntry:
        return self.append(backup_id, Event.DRILLED, {"by": by, **summary})

    def record_pruned(self, backup_id: str, reasons: list[str], *, by: str) -> JournalEntry:
        return self.append(backup_id, Event.PRUNED, {"reasons": list(reasons), "by": by})

    def record_pin(self, backup_id: str, until: str | None) -> JournalEntry:
        """Kept out of retention until `until` (ISO time), or for ever with None."""
        return self.append(backup_id, Event.PINNED, {"until": until})

    def record_unpin(self, backup_id: str) -> JournalEntry:
        return self.append(backup_id, Event.UNPINNED)

    def journal(self) -> list[JournalEntry]:
        """The readable events (see `read_journal` for what could not be read)."""
        return list(self.read_journal().entries)

    # integrity.backups.encryption.Keyring: the identities this host decrypts with (set by
    # Repository.of from [backups] identity_file; None: it cannot decrypt).
    keyring = None

    def readable(self, backup_id: str, name: str, file):
        """A data file as integrity.backups.archive reads it: an encrypted one (`.age`)
        wrapped with the way to its keys, found from the manifest only when it is opened
        for its plaintext (a quick check hashes the ciphertext and needs none)."""
        if not name.endswith(".age"):
            return file
        from integrity.backups.encryption import SealedFile

        def recipients() -> list[str]:
            encryption = self.read_manifest(backup_id).encryption or {}
            return list(encryption.get("recipients", ()))

        return SealedFile(file, self.keyring, backup_id, recipients)
