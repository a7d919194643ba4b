"""`integrity backup check` on object storage: reach, rights, clock, storage class and
Object Lock, proven with real requests rather than read from configuration.

The trial backup itself is check.py's (written under a throwaway prefix, read back,
removed); this module proves what a directory never needed proving.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

from game_core.errors import Failure
from integrity.backups.object_repository import LOCKS_DIR, ObjectRepository
from integrity.storage.s3 import ObjectExists, ObjectLocked, ObjectMissing, Retention

# S3 refuses requests signed more than 15 minutes off its clock; well before that, backup
# ids and lease expiries (written with this host's clock) stop meaning what they say.
SKEW_WARN_SECONDS = 60
SKEW_FAIL_SECONDS = 600
LOCK_PROBE_SECONDS = 2  # how long the Object Lock probe stays locked (then it is removed)


def object_storage_findings(settings, repository: ObjectRepository, CheckFinding) -> list:
    """`CheckFinding` is check.py's finding type (passed in: check.py imports this module)."""
    try:
        repository.require_exists()
        findings = [_round_trip(repository, CheckFinding)]
        facts = repository.store.bucket_facts()
    except Failure as exc:
        return [CheckFinding("repository", "fail", f"{exc}")]
    findings.append(_clock(facts.get("server_date"), CheckFinding))
    findings.append(_storage_class(repository, CheckFinding))
    findings.append(CheckFinding("placement", "ok", f"off this host, on object storage ({repository.location})"))
    findings.append(_object_lock(settings, repository, facts, CheckFinding))
    return findings


def _round_trip(repository: ObjectRepository, CheckFinding):
    """Write, read back, refuse an overwrite of, and delete a probe object."""
    store = repository.store
    name = f"{LOCKS_DIR}check-probe-{secrets.token_hex(4)}"
    payload = secrets.token_bytes(64)
    started = time.perf_counter()
    store.put(name, payload, create_only=True)
    try:
        if store.get(name) != payload:
            return CheckFinding("repository", "fail", f"a probe object read back from {repository.location} differs "
                                "from what was written; the storage or a proxy changes data")
        try:
            store.put(name, b"overwrite", create_only=True)
            return CheckFinding("repository", "fail", f"{repository.location} accepted an overwrite of an existing "
                                "object despite If-None-Match: a manifest could be replaced; use a server that "
                                "supports conditional writes")
        except ObjectExists:
            pass
    finally:
        try:
            store.delete(name)
        except ObjectMissing:
            pass
    milliseconds = (time.perf_counter() - started) * 1000
    return CheckFinding("repository", "ok", f"{repository.location} reachable: write, read, create-only refusal and "
                        f"delete of a probe in {milliseconds:.0f} ms")


def _clock(server_date: str | None, CheckFinding):
    if not server_date:
        return CheckFinding("clock", "warn", "the server sent no Date header; clock skew unknown")
    skew = (datetime.now(timezone.utc) - parsedate_to_datetime(server_date)).total_seconds()
    text = f"this host's clock is {abs(skew):.0f}s {'ahead of' if skew > 0 else 'behind'} the storage's"
    if abs(skew) > SKEW_FAIL_SECONDS:
        return CheckFinding("clock", "fail", f"{text}; requests will be refused and lease expiries misread: fix NTP")
    if abs(skew) > SKEW_WARN_SECONDS:
        return CheckFinding("clock", "warn", f"{text}; fix NTP before it reaches {SKEW_FAIL_SECONDS}s")
    return CheckFinding("clock", "ok", text)


def _storage_class(repository: ObjectRepository, CheckFinding):
    """The class of the newest backup's data: an archive class cannot be restored at once."""
    for backup_id in reversed(repository.backup_ids()):
        objects = [s for s in repository.store.list(f"{backup_id}/") if not s.key.endswith(".json")
                   and not s.key.endswith(".sha256") and not s.key.endswith(".sig")]
        if not objects:
            continue
        storage_class = repository.store.head(objects[0].key).get("StorageClass") or "STANDARD"
        if storage_class in ("GLACIER", "DEEP_ARCHIVE"):
            return CheckFinding("storage class", "fail", f"backup {backup_id} is in {storage_class}: it must be "
                                "thawed before a restore, which breaks the recovery time objective; keep recent "
                                "backups in STANDARD (a lifecycle rule may move old ones)")
        return CheckFinding("storage class", "ok", f"{storage_class} (newest backup {backup_id})")
    return CheckFinding("storage class", "ok", "STANDARD (no backup yet; the server's default class)")


def _object_lock(settings, repository: ObjectRepository, facts: dict, CheckFinding):
    """When Object Lock is configured, prove the credentials cannot delete a locked object:
    a probe locked for LOCK_PROBE_SECONDS, a delete that must be refused, then removed."""
    mode = settings.backups.s3.object_lock_mode
    if not mode:
        return CheckFinding("immutability", "warn", "no Object Lock ([backups.s3] object_lock_mode): credentials "
                            "that can write backups can also delete them")
    if not facts.get("object_lock"):
        return CheckFinding("immutability", "fail", f"[backups.s3] object_lock_mode is {mode} but the bucket "
                            f"{repository.store.bucket} has no Object Lock; create the bucket with Object Lock enabled")
    store = repository.store
    name = f"{LOCKS_DIR}check-lock-{secrets.token_hex(4)}"
    until = datetime.now(timezone.utc) + timedelta(seconds=LOCK_PROBE_SECONDS)
    store.put(name, b"lock probe", retention=Retention(mode.upper(), until))
    try:
        store.delete(name)
        return CheckFinding("immutability", "fail", f"a {mode} Object Lock did not stop these credentials from deleting "
                            "a locked object; check the bucket's lock configuration and the credentials' "
                            "s3:BypassGovernanceRetention right")
    except ObjectLocked:
        pass
    time.sleep(max(0.0, (until - datetime.now(timezone.utc)).total_seconds()) + 0.5)
    try:
        store.delete(name)
    except (ObjectLocked, ObjectMissing):
        pass  # left for a later check: a few bytes
    return CheckFinding("immutability", "ok", f"{mode} Object Lock refused the delete of a locked probe; backups are "
                        f"kept {settings.backups.s3.object_lock_days} day(s)")


def remove_prefix(repository: ObjectRepository) -> None:
    """Delete every object of a throwaway repository (the trial backup's)."""
    for name, upload_id in repository.store.incomplete_uploads():
        repository.store.abort_upload(name, upload_id)
    for stored in repository.store.list():
        try:
            repository.store.delete(stored.key)
        except (ObjectLocked, ObjectMissing):
            continue
