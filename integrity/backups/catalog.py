"""What the repository holds and what is known about each backup (from the journal).

States (DESIGN.md section 5): intact (hashes verified), deep-verified, clean or dirty
(audits on the restored copy), corrupt or deep-failed, suspect (implausible when taken),
failed (a restore or drill of it failed verification). `BackupInfo.restorable` is the one
definition of a backup an automatic choice may pick: `restore latest`, the drill, the dry
run's default source, `status`, metrics and retention all go through it (invariant 11).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from game_core.errors import Failure
from integrity.backups.repository import (
    POINT_IN_TIME,
    AuditVerdict,
    BackupNotFound,
    Event,
    JournalEntry,
    Manifest,
    Repository,
    backup_time,
)


@dataclass(frozen=True)
class BackupState:
    """The latest word of the journal on one backup."""

    intact_at: str | None = None
    corrupt_at: str | None = None
    deep_verified_at: str | None = None
    deep_failed_at: str | None = None
    clean_at: str | None = None
    dirty_at: str | None = None
    failed_at: str | None = None  # a restore or drill failed verification; never cleared
    pinned_until: str | None = None  # ISO time, "forever", or None
    problems: tuple[str, ...] = ()
    suspect_reasons: tuple[str, ...] = ()  # from the manifest and later "suspect" events

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
    def suspect(self) -> bool:
        return bool(self.suspect_reasons)

    @property
    def failed(self) -> bool:
        return self.failed_at is not None

    @property
    def audit(self) -> AuditVerdict | None:
        if self.clean_at is None and self.dirty_at is None:
            return None
        return AuditVerdict.of((self.clean_at or "") > (self.dirty_at or ""))

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
        if self.failed:
            labels.append("FAILED")
        if self.suspect:
            labels.append("SUSPECT")
        if self.audit:
            labels.append(self.audit)
        if self.pinned(now):
            labels.append("pinned")
        return labels


_VERDICTS = (Event.INTACT, Event.CORRUPT, Event.DEEP_VERIFIED, Event.DEEP_FAILED, Event.CLEAN, Event.DIRTY, Event.FAILED)
_FAILURES = (Event.CORRUPT, Event.DEEP_FAILED, Event.FAILED)


def fold_journal(entries: list[JournalEntry] | tuple[JournalEntry, ...]) -> dict[str, BackupState]:
    """Per backup, the latest word of the journal. The entries are validated when read
    (`parse_journal_line`), so every detail used here has its type."""
    states: dict[str, dict] = {}
    for entry in entries:
        state = states.setdefault(entry.backup_id, {})
        if entry.event in _VERDICTS:
            if entry.event != Event.FAILED or "failed_at" not in state:  # the first failure is the one to explain
                state[f"{entry.event.value}_at"] = entry.at
            if entry.event in _FAILURES:
                problem = entry.detail.get("problem") or "; ".join(entry.detail.get("problems", []))
                state["problems"] = (problem,) if problem else ()
        elif entry.event == Event.SUSPECT:
            state["suspect_reasons"] = state.get("suspect_reasons", ()) + tuple(entry.detail.get("reasons", ()))
        elif entry.event == Event.PINNED:
            state["pinned_until"] = entry.detail.get("until") or "forever"
        elif entry.event == Event.UNPINNED:
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
    safety: bool = False  # taken by a restore of live before its swap
    # A point-in-time backup's origin (engine, moment, window; see Manifest.point_in_time):
    # the database as it was at a moment, materialised for `restore --to-time` and its kin.
    point_in_time: dict | None = None

    @property
    def restorable(self) -> bool:
        """What an automatic choice may pick: intact, not suspect, not failed by a restore
        or drill, not deep-failed, not a safety backup (those hold live as it was before a
        restore, possibly the damage itself: restored only when named by id), not a
        point-in-time backup (a moment someone chose for one restore, possibly long before
        the newest backup: restored only when named by id), clean when it was audited, and
        of a proven store (no identity: no proof it is this game's)."""
        return self.why_not_restorable is None

    @property
    def why_not_restorable(self) -> str | None:
        """The first reason an automatic choice skips this backup, in words (None: restorable)."""
        state = self.state
        reasons = (
            (self.manifest_problem is not None, f"damaged manifest: {self.manifest_problem}"),
            (self.identity is None, "no store identity: not proven to be this game's database"),
            (state.corrupt, "corrupt"),
            (not state.intact, "not verified intact"),
            (state.suspect, "suspect: " + "; ".join(state.suspect_reasons)),
            (state.failed, "a restore or drill of it failed verification"),
            (state.deep_failed, "deep verification failed"),
            (self.safety, "a safety backup (restored only when named by id)"),
            (self.point_in_time is not None, "a point-in-time backup (restored only when named by id)"),
            (state.audit is AuditVerdict.DIRTY, "its audit found violations"),
        )
        return next((text for failing, text in reasons if failing), None)


@dataclass(frozen=True)
class Catalog:
    repository: str
    backups: tuple[BackupInfo, ...]  # oldest first
    leftovers: tuple[str, ...] = ()
    # Journal lines (or the whole journal) that could not be read: skipped here, and
    # retention refuses while there are any (a lost line may have been a pin).
    journal_problems: tuple[str, ...] = ()

    def of_store(self, identity: str | None) -> "Catalog":
        """Only the backups proven to be of one database (a repository may hold another's by
        mistake, and a backup whose readable manifest has no identity is nobody's). `identity`
        None (live is gone or has no identity): every backup that has one. Backups whose
        manifest cannot be read stay: whose they are is unknown, and status must still say
        that the newest backup is damaged (they are never restorable)."""
        return replace(self, backups=tuple(
            b for b in self.backups
            if b.manifest_problem is not None or (b.identity is not None and (identity is None or b.identity == identity))
        ))

    def newest_restorable(self) -> BackupInfo | None:
        return next((b for b in reversed(self.backups) if b.restorable), None)

    def newest_deep_verified(self) -> BackupInfo | None:
        """The newest restorable backup that also passed deep verification."""
        return next((b for b in reversed(self.backups) if b.restorable and b.state.deep_verified), None)

    def counts(self) -> dict[str, int]:
        """How many backups are in each bad state (for status and metrics)."""
        return {
            "suspect": sum(b.state.suspect for b in self.backups),
            "deep_failed": sum(b.state.deep_failed for b in self.backups),
            "failed": sum(b.state.failed for b in self.backups),
            "corrupt": sum(b.state.corrupt or b.manifest_problem is not None for b in self.backups),
        }

    @property
    def exit_code(self) -> int:
        return 0

    def summary(self) -> dict:
        return {"backups": len(self.backups), "journal_problems": len(self.journal_problems)}


def read_catalog(repository: Repository, now: datetime | None = None) -> Catalog:
    """Every finished backup with its manifest facts and journal state (oldest first).

    Reading the catalogue checks each manifest's hash (invariant 4) but not the data
    files: that is what `backup verify` is for.
    """
    now = now or datetime.now(timezone.utc)
    journal = repository.read_journal()
    states = fold_journal(journal.entries)
    backups = []
    for backup_id, manifest in repository.read_manifests().items():
        state = states.get(backup_id, BackupState())
        if isinstance(manifest, Failure):
            backups.append(BackupInfo(backup_id, backup_time(backup_id), None, None, None, None, {}, state,
                                      ["CORRUPT"], manifest_problem=str(manifest)))
            continue
        state = with_manifest_facts(state, manifest)
        safety = is_safety(manifest)
        point = manifest.point_in_time if is_point_in_time(manifest) else None
        backups.append(BackupInfo(
            id=backup_id,
            created_at=manifest.created,
            engine=manifest.engine,
            size=manifest.size,
            revision=manifest.revision,
            label=manifest.label,
            rows=manifest.row_counts(),
            state=state,
            states=state.labels(now) + kind_labels(manifest),
            identity=manifest.source_identity,
            safety=safety,
            point_in_time=point,
        ))
    return Catalog(repository.location, tuple(backups), tuple(repository.leftover_names()),
                   journal_problems=journal.problems)


SAFETY_LABEL_PREFIX = "safety before restore of "


def is_safety(manifest: Manifest) -> bool:
    """Manifests written before `purpose` existed carry the safety backup's label only."""
    return manifest.purpose == "safety" or (manifest.label or "").startswith(SAFETY_LABEL_PREFIX)


def is_point_in_time(manifest: Manifest) -> bool:
    return manifest.purpose == POINT_IN_TIME


def kind_labels(manifest: Manifest) -> list[str]:
    """The states that say what kind of backup this is, beside what is known of it."""
    return (["safety"] if is_safety(manifest) else []) + (["point-in-time"] if is_point_in_time(manifest) else [])


def with_manifest_facts(state: BackupState, manifest: Manifest) -> BackupState:
    """The journal's state plus what the manifest recorded when the backup was taken."""
    reasons = tuple(manifest.suspect_reasons or ()) + state.suspect_reasons
    return replace(state, suspect_reasons=reasons) if reasons != state.suspect_reasons else state


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
    repository.record_pin(backup_id, until_text)
    return PinChange(backup_id, True, until_text or "forever")


def unpin(repository: Repository, backup_id: str) -> PinChange:
    repository.read_manifest(backup_id)
    repository.record_unpin(backup_id)
    return PinChange(backup_id, False, None)


@dataclass(frozen=True)
class BackupDetail:
    manifest: Manifest
    states: list[str]
    state: BackupState
    path: str
    journal_problems: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        return 0

    def summary(self) -> dict:
        return {"backup_id": self.manifest.id, "states": self.states}


def show_backup(repository: Repository, backup_id: str, now: datetime | None = None) -> BackupDetail:
    manifest = repository.read_manifest(backup_id)
    journal = repository.read_journal()
    state = with_manifest_facts(fold_journal(journal.entries).get(backup_id, BackupState()), manifest)
    labels = state.labels(now or datetime.now(timezone.utc)) + kind_labels(manifest)
    return BackupDetail(manifest, labels, state, repository.where(backup_id), journal.problems)


LATEST = "latest"


def resolve_backup(repository: Repository, requested: str | None, identity: str | None,
                   now: datetime | None = None) -> str:
    """The backup a recovery command (restore, drill, diff, dry run) means: an existing id as
    given, or for `latest` (or none) the newest restorable backup of this store, the one
    `status` measures the RPO on (a repository may also hold another database's backups)."""
    if requested is not None and requested != LATEST:
        if not repository.has_backup(requested):  # path_of refuses what is not an id; a damaged one is found, then refused
            raise BackupNotFound(f"no backup {requested} in {repository.location}; list them with `integrity backup list`")
        return requested
    catalog = read_catalog(repository, now).of_store(identity)
    if identity is None and len({b.identity for b in catalog.backups if b.restorable}) > 1:
        raise BackupNotFound(
            f"{repository.location} holds backups of several databases and live's identity is unknown, so `latest` "
            "is ambiguous; name the backup id (see `integrity backup list`)"
        )
    chosen = catalog.newest_restorable()
    if chosen is None:
        skipped = [b for b in reversed(catalog.backups)][:3]
        why = "; ".join(f"{b.id}: {b.why_not_restorable}" for b in skipped)
        raise BackupNotFound(
            f"no restorable backup of this database in {repository.location}"
            + (f" (newest skipped: {why})" if why else "")
            + "; take one with `integrity backup create`, or name a backup id after checking it with `integrity backup show`"
        )
    return chosen.id

