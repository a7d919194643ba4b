"""`integrity backup prune`: the retention policy (DESIGN.md invariant 9), planned then applied.

Kept, each with its reasons: the `keep_last` newest restorable backups; the newest
restorable backup of each of the last `keep_hourly` hours, `keep_daily` days,
`keep_weekly` ISO weeks and `keep_monthly` months that have one; the newest restorable
backup; the newest deep-verified clean one; every pinned one. Backups that are not
restorable (failed, suspect, corrupt, deep-failed, dirty, safety, of no proven store)
never count toward `keep_*` (invariant 11): a run of bad backups must not push the good
ones out. They are kept while they are among the `keep_last` newest of all, for whoever
investigates them, then expire. Everything else expires. A
backup that a reader (verify, drill, diff, dry run) holds is skipped, never deleted
under it. Leftovers of killed runs (`.tmp-*`) are removed: under the writer lock no
create is running, so nothing else can own them.

Retention refuses (exit 4) while the journal cannot be read completely: a line it cannot
read may have been a pin, and deleting a pinned backup because its pin was unreadable is
the one mistake retention must never make (issue 14, item 4). A damaged backup that
expires is removed as what it is: a symbolic link is unlinked, never followed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from integrity.backups.catalog import Catalog, read_catalog
from integrity.backups.repository import JournalIncomplete, Repository
from integrity.locks import LockHeld
from integrity.settings import RetentionSettings, Settings


@dataclass(frozen=True)
class PruneDecision:
    backup_id: str
    created_at: datetime
    keep: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class PrunePlan:
    repository: str
    decisions: tuple[PruneDecision, ...]  # newest first
    leftovers: tuple[str, ...]

    @property
    def expiring(self) -> list[PruneDecision]:
        return [d for d in self.decisions if not d.keep]


@dataclass(frozen=True)
class PruneResult:
    plan: PrunePlan
    dry_run: bool
    deleted: tuple[str, ...] = ()
    skipped: tuple[dict, ...] = ()  # {"backup_id", "reason"}
    removed_leftovers: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        return 0

    def summary(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "kept": sum(d.keep for d in self.plan.decisions),
            "deleted": list(self.deleted),
            "skipped": [s["backup_id"] for s in self.skipped],
            "leftovers": list(self.removed_leftovers),
        }


def plan_retention(catalog: Catalog, policy: RetentionSettings, now: datetime | None = None) -> PrunePlan:
    now = now or datetime.now(timezone.utc)
    newest_first = list(reversed(catalog.backups))
    reasons: dict[str, list[str]] = {b.id: [] for b in newest_first}

    restorable = [b for b in newest_first if b.restorable]
    for backup in restorable[: policy.keep_last]:
        reasons[backup.id].append("keep_last")
    for backup in newest_first[: policy.keep_last]:
        if not backup.restorable:
            reasons[backup.id].append(f"recent, not counted toward keep_last ({backup.why_not_restorable})")
    buckets = (
        ("keep_hourly", policy.keep_hourly, lambda t: t.strftime("%Y-%m-%d %H")),
        ("keep_daily", policy.keep_daily, lambda t: t.strftime("%Y-%m-%d")),
        ("keep_weekly", policy.keep_weekly, lambda t: "%d-W%02d" % t.isocalendar()[:2]),
        ("keep_monthly", policy.keep_monthly, lambda t: t.strftime("%Y-%m")),
    )
    for rule, count, bucket_of in buckets:
        seen: set[str] = set()
        for backup in newest_first:
            if len(seen) >= count:
                break
            if not backup.restorable:
                continue
            bucket = bucket_of(backup.created_at.astimezone(timezone.utc))
            if bucket not in seen:
                seen.add(bucket)
                reasons[backup.id].append(f"{rule} ({bucket})")
    newest_restorable = catalog.newest_restorable()
    if newest_restorable:
        reasons[newest_restorable.id].append("newest restorable backup")
    newest_deep = catalog.newest_deep_verified()
    if newest_deep:
        reasons[newest_deep.id].append("newest deep-verified clean backup")
    for backup in newest_first:
        if backup.state.pinned(now):
            reasons[backup.id].append(f"pinned until {backup.state.pinned_until}")

    decisions = tuple(
        PruneDecision(b.id, b.created_at, keep=bool(reasons[b.id]), reasons=tuple(reasons[b.id]) or ("matches no keep rule",))
        for b in newest_first
    )
    return PrunePlan(catalog.repository, decisions, catalog.leftovers)


def prune(settings: Settings, *, dry_run: bool, lock_wait: float = 0, command: str = "backup prune", now: datetime | None = None) -> PruneResult:
    repository = Repository.of(settings)
    repository.require_exists()
    with repository.writer_lock(command=command, wait_seconds=lock_wait):
        catalog = read_catalog(repository, now)
        if catalog.journal_problems:
            raise JournalIncomplete(_refusal(catalog.journal_problems))
        plan = plan_retention(catalog, settings.backups.retention, now)
        if dry_run:
            return PruneResult(plan, dry_run=True)
        deleted, skipped = [], []
        for decision in plan.expiring:
            locked = repository.locked_until(decision.backup_id)
            if locked is not None:  # S3 Object Lock: the server would refuse; keep it until then
                skipped.append({"backup_id": decision.backup_id,
                                "reason": f"under Object Lock retention until {locked.isoformat(timespec='seconds')}"})
                continue
            try:
                with repository.deleting(decision.backup_id, command=command):
                    repository.remove_backup(decision.backup_id)
            except LockHeld as exc:
                skipped.append({"backup_id": decision.backup_id, "reason": str(exc)})
                continue
            repository.record_pruned(decision.backup_id, list(decision.reasons), by=command)
            deleted.append(decision.backup_id)
        removed = repository.remove_leftovers()
        repository.compact_journal()
    return PruneResult(plan, dry_run=False, deleted=tuple(deleted), skipped=tuple(skipped), removed_leftovers=tuple(removed))


def _refusal(problems: tuple[str, ...]) -> str:
    more = f" (and {len(problems) - 1} more problem(s); `integrity backup list` shows them all)" if len(problems) > 1 else ""
    return (f"retention refused: the backup journal cannot be read completely: {problems[0]}{more}; an unreadable line "
            "may be a pin, so nothing was deleted. Keep a copy of the journal, remove or repair the damaged line(s), "
            "re-pin what must be kept, then run again")

