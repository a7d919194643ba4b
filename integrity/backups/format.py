"""The repository format, whatever holds it (a directory or object storage): backup ids,
manifests and their validation, journal events, and the errors reading them raises.

Every value of a manifest and of a journal line is validated when read: a repository is
data someone may have damaged or tampered with, and one bad backup or line must be
reported as such, never crash a reader or block the others.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any

from game_core.errors import PreconditionFailed
from integrity.errors import VerificationFailed

MANIFEST = "manifest.json"
MANIFEST_HASH = "manifest.sha256"
MANIFEST_SIGNATURE = "manifest.sig"  # optional: present when signing is configured (integrity/backups/signing.py)
MANIFEST_FORMAT = 1
JOURNAL = "journal.jsonl"
TEMP_PREFIX = ".tmp-"
ID_PATTERN = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
# A data file's name: a plain name inside its backup directory (no separators, no dot
# first, so never "..", a hidden file or the manifest), ending in the compression's suffix,
# and then `.age` when the backup is encrypted (integrity.backups.encryption).
FILE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*\.zst(\.age)?$")
AGE_RECIPIENT_PATTERN = re.compile(r"^age1[02-9ac-hj-np-z]{58}$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
ENGINES = ("sqlite", "postgresql")  # game_core.db.SQLITE, POSTGRESQL
FILE_KINDS = {"sqlite": "sqlite-db", "postgresql": "pg-custom"}  # the data file each engine writes
PURPOSES = ("backup", "safety", "check", "point-in-time")
POINT_IN_TIME = "point-in-time"
PITR_ENGINES = ("litestream", "pgbackrest")  # integrity.pitr engines' names


class BackupNotFound(PreconditionFailed):
    """No backup has that id (or the repository is empty)."""


class BackupCorrupt(VerificationFailed):
    """A manifest or data file does not match its hash, or does not decompress, or the
    backup's directory holds something other than exactly its listed regular files."""


class RepositoryUnusable(PreconditionFailed):
    """The repository is missing, unwritable or full, or its journal cannot be written."""


class JournalIncomplete(PreconditionFailed):
    """The journal has lines that cannot be read: a decision that depends on every event
    (retention and its pins) is refused rather than guessed."""


def new_backup_id(now: datetime | None = None) -> str:
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


_ID_TIME = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z")


def backup_time(backup_id: str) -> datetime:
    """The UTC time an id names (ValueError when it names none, as `20261399T...`).
    Every journal line and listed backup asks this of an id, so it builds the datetime
    from the fixed-width fields: strptime took several times as long."""
    fields = _ID_TIME.fullmatch(backup_id[:16])
    if fields is None:
        raise ValueError(f"{backup_id[:16]!r} is not a time like 20261127T030118Z")
    return datetime(*map(int, fields.groups()), tzinfo=timezone.utc)


def is_backup_id(text: object) -> bool:
    """A string shaped like an id whose time exists (`20261399T...` matches the pattern only)."""
    if not isinstance(text, str) or not ID_PATTERN.match(text):
        return False
    try:
        backup_time(text)
    except ValueError:
        return False
    return True


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_regular_file(path: Path) -> bytes:
    """The bytes of a regular file, never through a symbolic link (O_NOFOLLOW) and never
    blocking on a FIFO (O_NONBLOCK, then the type checked on the open descriptor)."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        with os.fdopen(os.dup(descriptor), "rb") as handle:
            return handle.read()
    finally:
        os.close(descriptor)


def describe_entry(path: Path) -> str | None:
    """Why `path` is not a regular file of the repository, in words (None: it is one)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "is missing"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISLNK(info.st_mode):
        try:
            return f"is a symbolic link to {os.readlink(path)}, not a file of the repository"
        except OSError:
            return "is a symbolic link, not a file of the repository"
    if stat.S_ISDIR(info.st_mode):
        return "is a directory, not a file"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file (a FIFO, socket or device)"
    return None


# ------------------------------------------------------------------ manifests


class ManifestInvalid(ValueError):
    """A manifest value that is missing, of the wrong type or out of its range."""


def _check(condition: bool, reason: str) -> None:
    if not condition:
        raise ManifestInvalid(reason)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _optional_text(document: dict, key: str) -> None:
    _check(document.get(key) is None or isinstance(document[key], str), f"{key} is not text or null")


def aware_time(value: object, what: str) -> datetime:
    """An ISO 8601 time with its UTC offset (a naive one cannot be compared with now)."""
    if not isinstance(value, str):
        raise ManifestInvalid(f"{what} is not a time ({value!r})")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ManifestInvalid(f"{what} is not an ISO time ({value[:40]!r})") from None
    if moment.tzinfo is None:
        raise ManifestInvalid(f"{what} has no UTC offset ({value[:40]!r})")
    return moment


@dataclass(frozen=True)
class FileEntry:
    name: str
    kind: str  # "sqlite-db" or "pg-custom"
    size: int  # bytes on disk (compressed)
    sha256: str  # of the bytes on disk
    raw_size: int  # bytes after decompression
    raw_sha256: str  # of the bytes after decompression
    compression: str = "zstd"

    @classmethod
    def from_document(cls, document: object, engine: str) -> "FileEntry":
        _check(isinstance(document, dict), "a files entry is not an object")
        names = {f.name for f in cls.__dataclass_fields__.values()}
        unknown = sorted(set(document) - names)
        _check(not unknown, f"a files entry has unknown fields {unknown}")
        missing = sorted(names - {"compression"} - set(document))
        _check(not missing, f"a files entry lacks {missing}")
        name = document["name"]
        _check(isinstance(name, str) and FILE_NAME_PATTERN.match(name) is not None,
               f"file name {str(name)[:80]!r} is not a plain file name inside the backup's directory")
        _check(document["kind"] == FILE_KINDS[engine], f"file kind {document['kind']!r} is not a {engine} backup's "
               f"({FILE_KINDS[engine]!r})")
        for key in ("size", "raw_size"):
            _check(_is_int(document[key]) and document[key] >= 0, f"file {key} {document[key]!r} is not a byte count")
        for key in ("sha256", "raw_sha256"):
            _check(isinstance(document[key], str) and SHA256_PATTERN.match(document[key]) is not None,
                   f"file {key} is not a SHA-256 in hex")
        _check(document.get("compression", "zstd") == "zstd", f"compression {document.get('compression')!r} is not zstd")
        return cls(**document)


def _check_point_in_time(point: object) -> None:
    """A point-in-time backup's origin: its engine, moment and window (see Manifest)."""
    _check(isinstance(point, dict), "point_in_time is not an object")
    unknown = sorted(set(point) - {"engine", "moment", "window", "asked"})
    _check(not unknown, f"point_in_time has unknown fields {unknown}")
    _check(point.get("engine") in PITR_ENGINES, f"point_in_time.engine {point.get('engine')!r} is not one of {list(PITR_ENGINES)}")
    aware_time(point.get("moment"), "point_in_time.moment")
    window = point.get("window")
    _check(isinstance(window, dict) and set(window) == {"oldest", "newest"},
           "point_in_time.window is not an object of oldest and newest")
    for edge in ("oldest", "newest"):
        if window[edge] is not None:
            aware_time(window[edge], f"point_in_time.window.{edge}")
    _optional_text(point, "asked")


def _check_encryption(encryption: object) -> None:
    """An encrypted backup's scheme and recipients (see Manifest): public keys only."""
    _check(isinstance(encryption, dict) and set(encryption) == {"scheme", "recipients"},
           "encryption is not an object of scheme and recipients")
    _check(encryption["scheme"] == "age", f"encryption.scheme {str(encryption['scheme'])[:20]!r} is not 'age'")
    recipients = encryption["recipients"]
    _check(isinstance(recipients, list) and len(recipients) > 0
           and all(isinstance(r, str) and AGE_RECIPIENT_PATTERN.match(r) for r in recipients),
           "encryption.recipients is not a list of age recipients (age1...)")


@dataclass(frozen=True)
class Manifest:
    id: str
    engine: str
    created_at: str
    label: str | None
    source_url: str  # masked
    source_path: str | None
    source_identity: str | None
    revision: str | None
    tables: dict[str, dict[str, Any]]  # table -> {"rows": n, "aggregates": {...}}
    files: tuple[FileEntry, ...]
    tool: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT
    # Why the backup looked implausible when it was taken (empty: plausible; None: taken
    # before plausibility was checked). See integrity/backups/plausibility.py.
    suspect_reasons: list[str] | None = None
    # "backup" (made by `backup create` or a job), "safety" (taken by a restore of live
    # before its swap: restored only when named by id), "check" (`backup check`'s test),
    # "point-in-time" (the database as a point-in-time engine restored it to a moment:
    # restored only when named by id, by `restore --to-time` and its kin).
    purpose: str = "backup"
    source: dict[str, Any] = field(default_factory=dict)  # host, port, database, system identifier or path
    # A point-in-time backup's origin: {"engine": "litestream"|"pgbackrest", "moment": ISO,
    # "window": {"oldest": ISO|None, "newest": ISO|None}, "asked": what the operator gave}.
    # Absent from every other manifest, so that they read exactly as before it existed.
    point_in_time: dict[str, Any] | None = None
    # An encrypted backup's scheme and public recipients: {"scheme": "age", "recipients":
    # ["age1...", ...]}; its files are `.age` ciphertext (size and sha256 the ciphertext's,
    # raw_size and raw_sha256 the plaintext's). Absent from unencrypted manifests.
    encryption: dict[str, Any] | None = None

    def to_json(self) -> bytes:
        document = dict(self.__dict__)
        document["files"] = [entry.__dict__ for entry in self.files]
        for optional in ("point_in_time", "encryption"):
            if document[optional] is None:
                del document[optional]
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> "Manifest":
        """A manifest with every value checked (ManifestInvalid says which is wrong): the
        readers index, compare and print these values, and one of the wrong type must make
        this backup damaged, not crash `list` for every backup."""
        try:
            document = json.loads(data)
        except ValueError:
            raise ManifestInvalid("is not JSON") from None
        _check(isinstance(document, dict), "is not a JSON object")
        fmt = document.get("format", MANIFEST_FORMAT)
        _check(_is_int(fmt), f"format {fmt!r} is not a number")
        _check(fmt == MANIFEST_FORMAT, f"is format {fmt}; this tool reads format {MANIFEST_FORMAT}"
               + (" (written by a newer version of integrity?)" if fmt > MANIFEST_FORMAT else ""))
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(document) - names)
        _check(not unknown, f"has unknown fields {unknown}")
        required = {"id", "engine", "created_at", "label", "source_url", "source_path", "source_identity",
                    "revision", "tables", "files", "tool"}
        missing = sorted(required - set(document))
        _check(not missing, f"lacks {missing}")
        _check(is_backup_id(document["id"]), f"id {str(document['id'])[:40]!r} is not a backup id")
        _check(document["engine"] in ENGINES, f"engine {document['engine']!r} is not one of {list(ENGINES)}")
        aware_time(document["created_at"], "created_at")
        for key in ("label", "source_path", "source_identity", "revision"):
            _optional_text(document, key)
        _check(isinstance(document["source_url"], str), "source_url is not text")
        tables = document["tables"]
        _check(isinstance(tables, dict), "tables is not an object of table -> rows and aggregates")
        for table, info in tables.items():
            _check(isinstance(info, dict), f"tables.{table} is not an object")
            _check(_is_int(info.get("rows")) and info["rows"] >= 0, f"tables.{table}.rows {info.get('rows')!r} is not a row count")
            aggregates = info.get("aggregates")
            _check(isinstance(aggregates, dict) and all(_is_scalar(v) for v in aggregates.values()),
                   f"tables.{table}.aggregates is not an object of values")
        files = document["files"]
        _check(isinstance(files, list) and len(files) == 1,
               "files does not list exactly one data file (format 1 has one per backup)")
        document["files"] = tuple(FileEntry.from_document(entry, document["engine"]) for entry in files)
        for key in ("tool", "source"):
            value = document.get(key, {})
            _check(isinstance(value, dict) and all(_is_scalar(v) for v in value.values()), f"{key} is not an object of values")
        timings = document.get("timings", {})
        _check(isinstance(timings, dict) and all(_is_int(v) or isinstance(v, float) for v in timings.values()),
               "timings is not an object of seconds")
        reasons = document.get("suspect_reasons")
        _check(reasons is None or (isinstance(reasons, list) and all(isinstance(r, str) for r in reasons)),
               "suspect_reasons is not a list of text")
        _check(document.get("purpose", "backup") in PURPOSES, f"purpose {document.get('purpose')!r} is not one of {list(PURPOSES)}")
        _check((document.get("point_in_time") is not None) == (document.get("purpose") == POINT_IN_TIME),
               "point_in_time is given without purpose point-in-time, or the other way round")
        if document.get("point_in_time") is not None:
            _check_point_in_time(document["point_in_time"])
        if document.get("encryption") is not None:
            _check_encryption(document["encryption"])
        sealed = {entry.name.endswith(".age") for entry in document["files"]}
        _check(sealed == {document.get("encryption") is not None},
               "encryption does not match its files (.age files need an encryption field, and only they)")
        return cls(**document)

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.files)

    @property
    def created(self) -> datetime:
        return datetime.fromisoformat(self.created_at)

    def row_counts(self) -> dict[str, int]:
        return {table: info["rows"] for table, info in self.tables.items()}


# ------------------------------------------------------------------ the journal


class Event(StrEnum):
    """What the journal records about a backup after it was written. A StrEnum: a line
    holds its value, and `entry.event == "pinned"` still reads naturally."""

    INTACT = "intact"  # quick verification passed (hashes, decompression)
    CORRUPT = "corrupt"  # quick verification failed
    DEEP_VERIFIED = "deep_verified"  # restored into scratch, engine check, counts, drift passed
    DEEP_FAILED = "deep_failed"  # deep verification failed
    CLEAN = "clean"  # the audits passed on the restored copy
    DIRTY = "dirty"  # the audits found error-severity violations
    PINNED = "pinned"  # kept out of retention (detail: until, or null for ever)
    UNPINNED = "unpinned"
    PRUNED = "pruned"  # deleted by retention
    DRILLED = "drilled"  # restored into scratch by `integrity drill` (detail: its summary)
    FAILED = "failed"  # a restore or drill of it failed verification (never cleared)
    SUSPECT = "suspect"  # found implausible after it was written (detail: reasons)


EVENTS = tuple(event.value for event in Event)


class AuditVerdict(StrEnum):
    """What the audits said of a restored copy (deep verify, drill, a restore's staging).
    Journalled as the event of the same name; a StrEnum, so reports and JSON show the word."""

    CLEAN = "clean"
    DIRTY = "dirty"

    @classmethod
    def of(cls, ok: bool) -> AuditVerdict:
        return cls.CLEAN if ok else cls.DIRTY


@dataclass(frozen=True)
class JournalEntry:
    at: str  # ISO time in UTC, microseconds: entries compare as text
    backup_id: str
    event: Event
    detail: dict[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "event", Event(self.event))  # a misspelt event fails here, not in a fold

    def to_line(self) -> bytes:
        document = {"at": self.at, "backup_id": self.backup_id, "event": self.event.value, "detail": self.detail}
        return (json.dumps(document, sort_keys=True, default=str) + "\n").encode("utf-8")


def _text_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


# The detail fields each event's readers use, and what they must be. Other fields are
# free (a drill's summary, fingerprints) and read by nobody who could crash on them.
_DETAIL_RULES: dict[Event, tuple[tuple[str, Any, str], ...]] = {
    Event.CORRUPT: (("problem", lambda v: isinstance(v, str), "text"), ("problems", _text_list, "a list of text")),
    Event.DEEP_FAILED: (("problem", lambda v: isinstance(v, str), "text"), ("problems", _text_list, "a list of text")),
    Event.FAILED: (("problem", lambda v: isinstance(v, str), "text"), ("problems", _text_list, "a list of text")),
    Event.SUSPECT: (("reasons", _text_list, "a list of text"),),
    Event.CLEAN: (("violations", lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v), "a list of objects"),),
    Event.DIRTY: (("violations", lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v), "a list of objects"),),
}


def parse_journal_line(raw: bytes) -> JournalEntry:
    """One journal line as an entry (ValueError says what is wrong with it)."""
    try:
        document = json.loads(raw)
    except ValueError:  # UnicodeDecodeError included
        raise ValueError("is not JSON") from None
    if not isinstance(document, dict):
        raise ValueError("is not a JSON object")
    if set(document) != {"at", "backup_id", "event", "detail"}:
        raise ValueError(f"has the fields {sorted(document)}, not at, backup_id, event and detail")
    try:
        at = aware_time(document["at"], "at").astimezone(timezone.utc).isoformat(timespec="microseconds")
    except ManifestInvalid as exc:
        raise ValueError(str(exc)) from None
    if not is_backup_id(document["backup_id"]):
        raise ValueError(f"backup_id {str(document['backup_id'])[:40]!r} is not a backup id")
    try:
        event = Event(document["event"])
    except ValueError:
        raise ValueError(f"event {str(document['event'])[:40]!r} is not one of {list(EVENTS)}") from None
    detail = document["detail"]
    if not isinstance(detail, dict):
        raise ValueError("detail is not an object")
    for key, valid, what in _DETAIL_RULES.get(event, ()):
        if key in detail and not valid(detail[key]):
            raise ValueError(f"detail.{key} of a {event.value} event is not {what}")
    if event is Event.PINNED and detail.get("until") is not None:
        try:
            aware_time(detail["until"], "detail.until of a pin")
        except ManifestInvalid as exc:
            raise ValueError(str(exc)) from None
    return JournalEntry(at, document["backup_id"], event, detail)


@dataclass(frozen=True)
class JournalContents:
    """The journal's readable events, and one line per thing that could not be read."""

    entries: tuple[JournalEntry, ...]
    problems: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.problems


def validated_manifest(backup_id: str, data: bytes, recorded: bytes, *, verifier, signature: bytes | None) -> Manifest:
    """A backup's manifest after the checks every repository makes, wherever its bytes
    came from: its hash file matches (invariant 4), its signature when signing is on,
    every value in it, and that it is this backup's own."""
    where = f"backup {backup_id}"
    try:
        recorded_hash = recorded.decode("utf-8").split()[0]
    except (IndexError, UnicodeDecodeError):
        raise BackupCorrupt(f"{where} has a missing or empty manifest; it cannot be trusted or restored") from None
    if sha256_bytes(data) != recorded_hash:
        raise BackupCorrupt(f"{where}: manifest.json does not match manifest.sha256; it was edited or damaged")
    if verifier is not None:  # hashes prove intact, only the signature proves who made it
        problem = verifier.problem(backup_id, data, signature)
        if problem:
            raise BackupCorrupt(problem)
    try:
        manifest = Manifest.from_json(data)
    except ManifestInvalid as exc:
        raise BackupCorrupt(f"{where}: manifest.json {exc}; it cannot be trusted or restored") from None
    if manifest.id != backup_id:
        # A manifest moved, copied or edited into another backup's directory (two
        # directories swapped): what it describes is not what this directory is.
        raise BackupCorrupt(f"{where}: its manifest is that of backup {manifest.id} (directories swapped or copied); "
                            "it cannot be trusted or restored")
    return manifest


def unlisted_names(manifest: Manifest, present: set[str]) -> list[str]:
    """What a backup holds beyond its manifest, hash, optional signature and listed files."""
    expected = {MANIFEST, MANIFEST_HASH, MANIFEST_SIGNATURE} | {entry.name for entry in manifest.files}
    return sorted(present - expected)


def stray_text(where: str, stray: list[str]) -> str:
    shown = ", ".join(repr(name) for name in stray[:3]) + (f" and {len(stray) - 3} more" if len(stray) > 3 else "")
    return (f"{where} holds {shown}, which its manifest does not list (a backup is exactly its listed files); "
            "it cannot be trusted or restored")


def new_journal_entry(backup_id: str, event: Event | str, detail: dict[str, Any] | None) -> JournalEntry:
    """An event stamped now, checked to read back as written (a bad detail is a bug here,
    not damage found later)."""
    entry = JournalEntry(
        at=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        backup_id=backup_id,
        event=Event(event),  # ValueError on a misspelt event: a bug, caught by the tests
        detail=detail or {},
    )
    parse_journal_line(entry.to_line())
    return entry


