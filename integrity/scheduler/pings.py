"""Heartbeat pings in the healthchecks.io convention, so a silent scheduler pages someone.

`URL/start` before a run, `URL` on success, `URL/<exit code>` after a failure, each with
`?rid=<run id>` so the service pairs start and end, and the one-line summary as the body.
A ping that does not get through is logged and never changes the job's outcome: the
ping service being down must not make backups fail. The URL is a secret (anyone who has
it can report success), so only its scheme and host are ever logged.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request

from integrity.settings import _masked_ping

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 5.0
RETRIES = 2
_BACKOFF_SECONDS = 0.5


def ping_url(base: str, suffix: str, run_id: str) -> str:
    import uuid

    base = base.rstrip("/")
    # healthchecks.io wants a dashed UUID; the ledger's run ids are the same UUIDs in hex.
    return f"{base}{'/' + suffix if suffix else ''}?rid={uuid.UUID(hex=run_id)}"


def ping(base: str, suffix: str, run_id: str, body: str = "", *, timeout: float = TIMEOUT_SECONDS, retries: int = RETRIES) -> bool:
    """POST one ping; True when it got through. Never raises."""
    url = ping_url(base, suffix, run_id)
    data = body.encode("utf-8")[:10_000]
    error = ""
    for attempt in range(retries + 1):
        try:
            request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "text/plain; charset=utf-8"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
            return True
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            error = str(getattr(exc, "reason", exc))
        if attempt < retries:
            time.sleep(_BACKOFF_SECONDS * (attempt + 1))
    log.warning("ping %s%s failed after %d attempts: %s (the job's outcome is unchanged)",
                _masked_ping(base), f" /{suffix}" if suffix else "", retries + 1, error)
    return False


def start(base: str | None, run_id: str) -> None:
    if base:
        ping(base, "start", run_id)


def finish(base: str | None, run_id: str, exit_code: int, summary_line: str) -> None:
    if base:
        ping(base, "" if exit_code == 0 else str(int(exit_code)), run_id, summary_line)
