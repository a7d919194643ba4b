"""What the repository holds and what is known about each backup (from the journal).

States (DESIGN.md section 5): intact (hashes verified), deep-verified, clean or dirty
(audits on the restored copy), corrupt or deep-failed. The newest good backup is the
newest intact one that has not failed deep verification; RPO is measured on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from game_core.errors import Failure
from integrity.backups.repository import BackupNotFound, JournalEntry, Manifest, Repository, backup_time


@dataclass(frozen=True)
class BackupState:
    """The latest word of the journal on one backup."""

    intact_at: str | None = None
    corrupt_at: str | None = None
    deep_verified_at: str | None = None
    deep_failed_at: str | None = None
    clean_at: str | None = None
    dirty_at: str | None = None
    pinned_until: str | None = None  # ISO time, "forever", or None
    problems: tuple[str, ...] = ()

    @property
    def intact(self) -> bool:
        return self.intact_at is not None and (self.corrupt_at is None or self.corrupt_at < self.intact_at)

    @property
    def corrupt(self) -> bool:
        return self.corrupt_at is not None and not self.intact

    @property
    def deep_verified(self) -> bool:
        return self.deep_verified_at is not None and (self.deep_failed_at is None or self.deep_failed_at < self.deep_verified_at)

    @property
    def deep_failed(self) -> bool:
        return self.deep_failed_at is not None and not self.deep_verified

    @property
    def good(self) -> bool:
        return self.intact and not self.deep_failed

    @property
    def audit(self) -> str | None:
        if self.clean_at is None and self.dirty_at is None:
            return None
        return "clean" if (self.clean_at or "") > (self.dirty_at or "") else "dirty"

    def pinned(self, now: datetime) -> bool:
        if self.pinned_until is None:
            return False
        return self.pinned_until == "forever" or datetime.fromisoformat(self.pinned_until) > now

    def labels(self, now: datetime) -> list[str]:
        labels = []
        if self.corrupt:
            labels.append("CORRUPT")
        elif self.intact:
            labels.append("intact")
        else:
            labels.append("unverified")
        if self.deep_failed:
            labels.append("DEEP-FAILED")
        elif self.deep_verified:
            labels.append("deep-verified")
        if self.audit:
            labels.append(self.audit)
        if self.pinned(now):
            labels.append("pinned")
        return labels


def fold_journal(entries: list[JournalEntry]) -> dict[str, BackupState]:
    states: dict[str, dict] = {}
    for entry in entries:
        state = states.setdefault(entry.backup_id, {})
        if entry.event in ("intact", "corrupt", "deep_verified", "deep_failed", "clean", "dirty"):
            state[f"{entry.event}_at"] = entry.at
            if entry.event in ("corrupt", "deep_failed"):
                problem = entry.detail.get("problem") or "; ".join(entry.detail.get("problems", []))
                state["problems"] = (problem,) if problem else ()
        elif entry.event == "pinned":
            state["pinned_until"] = entry.detail.get("until") or "forever"
        elif entry.event == "unpinned":
            state["pinned_until"] = None
    return {backup_id: BackupState(**values) for backup_id, values in states.items()}


@dataclass(frozen=True)
class BackupInfo:
    id: str
    created_at: datetime
    engine: str | None
    size: int | None
    revision: str | None
    label: str | None
    rows: dict[str, int]
    state: BackupState
    states: list[str] = field(default_factory=list)
    manifest_problem: str | None = None
    identity: str | None = None  # the store_identity UUID of the database it came from


@dataclass(frozen=True)
class Catalog:
    repository: str
    backups: tuple[BackupInfo, ...]  # oldest first
    leftovers: tuple[str, ...] = ()

    def of_store(self, identity: str | None) -> "Catalog":
        """Only the backups of one database (a repository may hold another's by mistake)."""
        if identity is None:
            return self
        return replace(self, backups=tuple(b for b in self.backups if b.identity in (identity, None)))

    def newest_good(self) -> BackupInfo | None:
        return next((b for b in reversed(self.backups) if b.state.good), None)

    def newest_deep_verified(self) -> BackupInfo | None:
        return next((b for b in reversed(self.backups) if b.state.deep_verified), None)

    @property
    def exit_code(self) -> int:
        return 0

    def summary(self) -> dict:
        return {"backups": len(self.backups)}


def read_catalog(repository: Repository, now: datetime | None = None) -> Catalog:
    """Every finished backup with its manifest facts and journal state (oldest first).

    Reading the catalogue checks each manifest's hash (invariant 4) but not the data
    files: that is what `backup verify` is for.
    """
    now = now or datetime.now(timezone.utc)
    states = fold_journal(repository.journal())
    backups = []
    for backup_id in repository.backup_ids():
        state = states.get(backup_id, BackupState())
        try:
            manifest = repository.read_manifest(backup_id)
        except Failure as exc:
            backups.append(BackupInfo(backup_id, backup_time(backup_id), None, None, None, None, {}, state,
                                      ["CORRUPT"], manifest_problem=str(exc)))
            continue
        backups.append(BackupInfo(
            id=backup_id,
            created_at=manifest.created,
            engine=manifest.engine,
            size=manifest.size,
            revision=manifest.revision,
            label=manifest.label,
            rows=manifest.row_counts(),
            state=state,
            states=state.labels(now),
            identity=manifest.source_identity,
        ))
    return Catalog(str(repository.root), tuple(backups), tuple(p.name for p in repository.leftovers()))


@dataclass(frozen=True)
class PinChange:
    backup_id: str
    pinned: bool
    until: str | None

    @property
    def exit_code(self) -> int:
        return 0

    def summary(self) -> dict:
        return {"backup_id": self.backup_id, "pinned": self.pinned, "until": self.until}


def pin(repository: Repository, backup_id: str, *, until: datetime | None) -> PinChange:
    repository.read_manifest(backup_id)  # exists and is a backup
    until_text = until.astimezone(timezone.utc).isoformat() if until else None
    repository.append(backup_id, "pinned", {"until": until_text})
    return PinChange(backup_id, True, until_text or "forever")


def unpin(repository: Repository, backup_id: str) -> PinChange:
    repository.read_manifest(backup_id)
    repository.append(backup_id, "unpinned")
    return PinChange(backup_id, False, None)


@dataclass(frozen=True)
class BackupDetail:
    manifest: Manifest
    states: list[str]
    state: BackupState
    path: str

    @property
    def exit_code(self) -> int:
        return 0

    def summary(self) -> dict:
        return {"backup_id": self.manifest.id, "states": self.states}


def show_backup(repository: Repository, backup_id: str, now: datetime | None = None) -> BackupDetail:
    manifest = repository.read_manifest(backup_id)
    state = fold_journal(repository.journal()).get(backup_id, BackupState())
    return BackupDetail(manifest, state.labels(now or datetime.now(timezone.utc)), state, str(repository.path_of(backup_id)))


LATEST = "latest"


def resolve_backup(repository: Repository, requested: str | None, identity: str | None,
                   now: datetime | None = None) -> str:
    """The backup a recovery command (restore, drill, diff) means: an existing id as given,
    or for `latest` (or none) the newest good backup of this store, the one `status`
    measures the RPO on (a repository may also hold another database's backups)."""
    if requested and requested != LATEST:
        if not repository.path_of(requested).is_dir():  # path_of refuses what is not an id
            raise BackupNotFound(f"no backup {requested} in {repository.root}; list them with `integrity backup list`")
        return requested
    good = read_catalog(repository, now).of_store(identity).newest_good()
    if good is None:
        raise BackupNotFound(
            f"no good backup of this database in {repository.root}; take one with `integrity backup create`"
        )
    return good.id

