"""Locks across hosts on object storage: leases held as create-only objects.

A host's flock means nothing to another host sharing a bucket. A lease is an object
created with `If-None-Match: *` (the server lets exactly one creator win), naming its
holder and an expiry that a background thread pushes forward while the holder works.
A lease whose holder died is taken over: at once when the holder was a process of this
host that no longer exists (as the kernel frees a dead process's flock), otherwise once
its expiry has passed.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

from integrity.locks import Holder, LockHeld
from integrity.storage.s3 import ObjectExists, ObjectMissing, ObjectStore

LEASE_SECONDS = 300
RENEW_EVERY_SECONDS = 60
POLL_SECONDS = 0.2


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _holder_document(command: str, mode: str, token: str) -> dict:
    return {
        "command": command, "pid": os.getpid(), "host": socket.gethostname(), "mode": mode, "token": token,
        "since": _now().isoformat(timespec="seconds"),
        "expires": (_now() + timedelta(seconds=LEASE_SECONDS)).isoformat(timespec="seconds"),
    }


def _read_lease(store: ObjectStore, name: str) -> dict | None:
    """The lease's document with its ETag under "etag"; None when there is none."""
    try:
        data, etag = store.get_tagged(name)
    except ObjectMissing:
        return None
    try:
        document = json.loads(data)
    except ValueError:
        document = {}  # damaged: treated as expired (see is_stale)
    return {**document, "etag": etag} if isinstance(document, dict) else {"etag": etag}


def is_stale(document: dict, now: datetime | None = None) -> bool:
    """Its holder is gone: a dead process of this host, or an expiry in the past (or none
    readable: a damaged lease must not block the repository for ever)."""
    if document.get("host") == socket.gethostname() and isinstance(document.get("pid"), int):
        try:
            os.kill(document["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
    try:
        expires = datetime.fromisoformat(document["expires"])
    except (KeyError, TypeError, ValueError):
        return True
    return expires <= (now or _now())


def describe(document: dict) -> str:
    try:
        return Holder(command=document["command"], pid=document["pid"], host=document["host"],
                      since=document["since"], mode=document["mode"]).describe()
    except (KeyError, TypeError):
        return "another process"


@contextmanager
def lease(store: ObjectStore, name: str, *, command: str, mode: str, what: str, wait_seconds: float) -> Iterator[None]:
    """Hold the lease object `name`; wait up to `wait_seconds`, else LockHeld (exit 4)."""
    token = secrets.token_hex(8)
    deadline = time.monotonic() + max(wait_seconds, 0)
    while True:
        document = _holder_document(command, mode, token)
        try:
            store.put(name, json.dumps(document).encode(), create_only=True)
            break
        except ObjectExists:
            current = _read_lease(store, name)
            if current is None:  # released between our create and this read: it is free, try again
                continue
            if is_stale(current):
                _remove_stale(store, name, current["etag"])
                continue
            if time.monotonic() >= deadline:
                waited = f" after waiting {wait_seconds:g}s" if wait_seconds else ""
                raise LockHeld(f"{what} locked by {describe(current)}{waited}; wait for it, or run again with "
                               "--lock-wait 600") from None
            time.sleep(POLL_SECONDS)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(store, name, token, command, mode, stop), daemon=True,
                               name=f"lease-{name}")
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        current = _read_lease(store, name)
        if current is not None and current.get("token") == token:  # never release another holder's lease
            try:
                store.delete(name)
            except ObjectMissing:
                pass


def _remove_stale(store: ObjectStore, name: str, etag: str) -> None:
    """Only the stale version read: when two waiters find the same dead holder, the one
    that comes second must not delete the lease the first has just created."""
    try:
        store.delete(name, if_match=etag or None)
    except (ObjectMissing, ObjectExists):
        pass  # removed or replaced by another waiter: try to create again


def _renew(store: ObjectStore, name: str, token: str, command: str, mode: str, stop: threading.Event) -> None:
    """Push the expiry forward while the holder works; stop if the lease was lost."""
    while not stop.wait(RENEW_EVERY_SECONDS):
        try:
            current = _read_lease(store, name)
            if current is None or current.get("token") != token:
                return
            document = {**_holder_document(command, mode, token), "since": current.get("since")}
            store.put(name, json.dumps(document).encode())
        except Exception:  # noqa: BLE001 - a failed renewal is retried next round; the work goes on
            continue


def live_leases(store: ObjectStore, under: str) -> list[dict]:
    """The documents of the leases named `under...` whose holders are still there."""
    found = []
    for stored in store.list(under):
        document = _read_lease(store, stored.key)
        if document is not None and not is_stale(document):
            found.append(document)
    return found
