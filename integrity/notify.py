"""Notifications without Alertmanager (issue 19): `[notify] targets`, Apprise URLs
(Slack, email, webhooks, ...), told when a condition starts and when it clears.

The conditions, each a key in the ledger's `notify_conditions` table (layout 6):

- `job_failed:<job>`: a scheduled job's newest run (integrity.jobs, so cron runs and the
  daemon's alike) ended with a non-zero exit code. An exit code that another enabled
  condition explains is left to it: an audit's 3 (`audit_dirty`), a drill's 5
  (`drill_failed`), a verify's 5 or a backup create's 3 (`backup_suspect`), so one
  problem is one notification.
- `backup_suspect:<backup id>`: a backup in the repository is suspect, corrupt, failed
  a restore or drill, or failed deep verification (its journal state,
  integrity.backups.catalog). Cleared when it verifies again or leaves the repository.
- `drill_failed`: the last drill failed verification and no restore has proven the path
  since (what `integrity status` calls a failed drill).
- `audit_dirty`: the audits found rows failing error rules in live, until a full audit
  is clean (status's `last audit` row at live-data urgency).

One call site: `notify_after_run`, from integrity.recorder after every recorded run (a
command, a cron run, a scheduled job), evaluates the conditions that run's command can
change, from the ledger and the repository, never from the run's own return value. A
condition notifies once when it starts and once ("resolved") when it clears: the state
last notified is the ledger row, claimed with a conditional write before anything is
sent, so two runs finishing together notify once. When no target got a notification the
claim is given back (the next run tries again); what a target answered is kept in the row
(`integrity notify status`; a `notifications` problem row in `integrity status` until
`integrity notify test` reaches every target) and logged as a warning, and never changes
the run's outcome.

Target URLs are secrets (their paths, users and hosts are tokens): only
`settings.masked_target` forms are shown, logged or stored, and Apprise's own log (which
prints URLs) is captured, scrubbed and folded into the warning. Apprise is the optional
`notify` extra, imported only when something is sent.
"""

from __future__ import annotations

import logging
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from game_core.errors import ExitCode, PreconditionFailed
from integrity.notify_records import ConditionRow, read_rows
from integrity.settings import NOTIFY_CONDITIONS, masked_target

log = logging.getLogger(__name__)

JOB_FAILED, BACKUP_SUSPECT, DRILL_FAILED, AUDIT_DIRTY = NOTIFY_CONDITIONS
# Exit codes of a job that another condition notifies (see the module docstring).
_EXPLAINED_BY = {
    "backup": {int(ExitCode.PROBLEMS_FOUND): BACKUP_SUSPECT},
    "verify": {int(ExitCode.VERIFICATION_FAILED): BACKUP_SUSPECT},
    "deep_verify": {int(ExitCode.VERIFICATION_FAILED): BACKUP_SUSPECT},
    "audit": {int(ExitCode.PROBLEMS_FOUND): AUDIT_DIRTY},
    "audit_full": {int(ExitCode.PROBLEMS_FOUND): AUDIT_DIRTY},
    "drill": {int(ExitCode.VERIFICATION_FAILED): DRILL_FAILED},
}
INSTALL_HINT = "install the `notify` extra: pip install 'typing-game-integrity[notify]'"
PROBLEM, RESOLVED = "problem", "resolved"


class NotifyUnavailable(PreconditionFailed):
    """Notifications are configured but cannot be sent (Apprise missing, no targets)."""


@dataclass(frozen=True)
class Condition:
    key: str  # "job_failed:backup", "backup_suspect:<id>", "drill_failed", "audit_dirty"
    kind: str  # one of NOTIFY_CONDITIONS
    active: bool
    detail: str


@dataclass(frozen=True)
class Delivery:
    target: str  # masked_target(url), numbered: "2 json://127.0.0.1:8080/***"
    ok: bool
    error: str | None = None


@dataclass(frozen=True)
class Notice:
    """One notification: a condition that started or cleared, and where it got."""

    key: str
    state: str  # PROBLEM or RESOLVED
    title: str
    body: str
    deliveries: tuple[Delivery, ...]

    @property
    def delivered(self) -> bool:
        return any(d.ok for d in self.deliveries)


# ---------------------------------------------------------------- the conditions


def families_for(command: str, enabled: tuple[str, ...]) -> set[str]:
    """The conditions a run of `command` can start or clear."""
    from integrity.jobs import JOBS

    found = set()
    if any(job.command == command for job in JOBS.values()):
        found.add(JOB_FAILED)
    if command.split(" ", 1)[0] == "backup" or command in ("drill", "restore", "salvage"):
        found.add(BACKUP_SUSPECT)
    if command in ("drill", "restore"):
        found.add(DRILL_FAILED)
    if command == "audit":
        found.add(AUDIT_DIRTY)
    return found & set(enabled)


def job_conditions(settings, ledger, command: str) -> list[Condition]:
    """`job_failed:<job>` of each job that is on and runs `command`."""
    from integrity.jobs import JOBS, jobs_runs

    jobs = [job for job in JOBS.values() if job.command == command and getattr(settings.schedule, job.name) != "off"]
    if not jobs:
        return []
    enabled = set(settings.notify.conditions)
    conditions = []
    for name, runs in jobs_runs(ledger, jobs).items():
        last = runs.last_completed
        explained = _EXPLAINED_BY.get(name, {}).get(last.exit_code) if last is not None else None
        active = last is not None and last.exit_code != 0 and explained not in enabled
        if last is None:
            detail = f"job {name} has not run"
        elif active:
            error = last.summary.get("error")
            detail = (f"job {name} failed: its last run ({last.command}, {_when(last.started_at)} on {last.host}) "
                      f"ended with exit {last.exit_code} ({last.outcome})" + (f": {error}" if error else ""))
        else:
            detail = f"job {name} runs again: its last run ({_when(last.started_at)}) ended with exit {last.exit_code}"
        conditions.append(Condition(f"{JOB_FAILED}:{name}", JOB_FAILED, active, detail))
    return conditions


def backup_prefix(repository: str) -> str:
    """The keys of one repository's bad backups: `backup_suspect:<id>` in the primary,
    `backup_suspect@<name>:<id>` in a [[repositories]] copy (each repository's keys are
    cleared only by a complete reading of that repository)."""
    from integrity.settings import PRIMARY_REPOSITORY

    return f"{BACKUP_SUSPECT}:" if repository == PRIMARY_REPOSITORY else f"{BACKUP_SUSPECT}@{repository}:"


def backup_conditions(settings, repository: str = "primary") -> list[Condition] | None:
    """A condition for each bad backup in the repository `repository` (None: it cannot be read)."""
    from game_core.errors import Failure
    from integrity.backups.catalog import read_catalog
    from integrity.backups.repositories import open_repository

    try:
        opened = open_repository(settings, repository)
        if not opened.exists():  # an unmounted disk is no proof its bad backups are gone
            return None
        catalog = read_catalog(opened)
    except (Failure, OSError) as exc:
        log.debug("notifications: the backup catalogue cannot be read: %s", exc)
        return None
    conditions = []
    for backup in catalog.backups:
        state = backup.state
        reasons = []
        if backup.manifest_problem:
            reasons.append(f"its manifest cannot be read: {backup.manifest_problem}")
        if state.corrupt:
            reasons.append("corrupt: " + ("; ".join(state.problems) or "failed verification"))
        if state.deep_failed:
            reasons.append("deep verification failed" + (f": {'; '.join(state.problems)}" if state.problems and not state.corrupt else ""))
        if state.failed:
            reasons.append("a restore or drill of it failed verification")
        if state.suspect:
            reasons.append("suspect: " + "; ".join(state.suspect_reasons))
        if reasons:
            where = "" if repository == "primary" else f" in repository {repository} ({opened.location})"
            conditions.append(Condition(f"{backup_prefix(repository)}{backup.id}", BACKUP_SUSPECT, True,
                                        f"backup {backup.id}{where} is not restorable: {'; '.join(reasons)}; "
                                        "see runbooks/backup-failed.md"))
    return conditions


def drill_condition(settings, ledger) -> Condition:
    from integrity.status import CheckState, drill_checks

    [check] = drill_checks(settings, ledger=ledger)
    return Condition(DRILL_FAILED, DRILL_FAILED, check.state is CheckState.FAILED, check.detail)


def audit_condition(settings, ledger) -> Condition:
    from integrity.status import CheckState, Urgency, audit_checks

    [check] = audit_checks(settings, ledger=ledger)
    dirty = check.state is CheckState.PROBLEM and check.urgency == Urgency.LIVE_DATA
    return Condition(AUDIT_DIRTY, AUDIT_DIRTY, dirty, check.detail)


def evaluate(settings, ledger, command: str) -> tuple[list[Condition], set[str]]:
    """The conditions `command` can change, as the ledger and the repository say now, and
    the key prefixes evaluated in full (a known key under one of them that is no longer
    listed has cleared: a bad backup that left the repository)."""
    families = families_for(command, settings.notify.conditions)
    conditions: list[Condition] = []
    complete: set[str] = set()
    if JOB_FAILED in families:
        conditions += job_conditions(settings, ledger, command)
    if BACKUP_SUSPECT in families:
        from integrity.backups.repositories import repository_names

        for repository in repository_names(settings):  # the primary and every copy
            bad = backup_conditions(settings, repository)
            if bad is not None:
                conditions += bad
                complete.add(backup_prefix(repository))
    if DRILL_FAILED in families:
        conditions.append(drill_condition(settings, ledger))
    if AUDIT_DIRTY in families:
        conditions.append(audit_condition(settings, ledger))
    return conditions, complete


# ---------------------------------------------------------------- the state last notified


def _claim(ledger, key: str, before: ConditionRow | None, condition: Condition, run_id: str | None) -> bool:
    """Record that this process notifies `condition`'s new state; False when another run
    got there first. A conditional write: INSERT ... ON CONFLICT DO NOTHING for a new key,
    UPDATE ... WHERE active = <the state read> for a known one."""
    from integrity.ledger import notify_conditions as table, utc_now
    from integrity.scheduler.records import _insert

    values = {"active": condition.active, "detail": condition.detail, "changed_at": utc_now(), "run_id": run_id}
    with ledger.engine.begin() as connection:
        if before is None:
            statement = (_insert(ledger)(table).values(key=key, **values)
                         .on_conflict_do_nothing(index_elements=["key"]).returning(table.c.key))
        else:
            statement = (table.update().where(table.c.key == key, table.c.active == before.active)
                         .values(**values).returning(table.c.key))
        return connection.execute(statement).first() is not None


def _settle(ledger, key: str, before: ConditionRow | None, notice: Notice) -> None:
    """After sending: keep what the targets answered; when none got it, give the claim back
    (the state before, so the next run notifies again)."""
    from integrity.ledger import notify_conditions as table, utc_now

    failures = [f"target {d.target}: {d.error}" for d in notice.deliveries if not d.ok]
    values: dict[str, Any] = {"last_error": "; ".join(failures) or None, "error_at": utc_now() if failures else None}
    if not notice.delivered:
        if before is None:
            values.update(active=False, detail=f"not yet notified: {notice.body.splitlines()[0]}")
        else:
            values.update(active=before.active, detail=before.detail, changed_at=before.changed_at, run_id=before.run_id)
    with ledger.engine.begin() as connection:
        connection.execute(table.update().where(table.c.key == key).values(**values))


def notify_after_run(settings, ledger, command: str, run_id: str | None = None) -> list[Notice]:
    """Evaluate the conditions `command` can change and notify each that started or
    cleared. Called after every recorded run when `[notify] targets` is set; a failure to
    deliver is a warning (never raised: the run already happened)."""
    if not settings.notify.targets:
        return []
    conditions, complete = evaluate(settings, ledger, command)
    if not conditions and not complete:
        return []
    rows = read_rows(ledger)
    current = {condition.key: condition for condition in conditions}
    for key, row in rows.items():
        if row.active and key not in current and any(key.startswith(prefix) for prefix in complete):
            kind = key.split(":", 1)[0].partition("@")[0]
            current[key] = Condition(key, kind, False, f"{_subject(key)} is no longer in the repository")
    changed = [(key, condition) for key, condition in current.items()
               if condition.active != (key in rows and rows[key].active)]
    if not changed:
        return []
    try:
        _apprise()
    except NotifyUnavailable as exc:
        # One line, and nothing claimed: once the extra is installed, the next run that
        # evaluates these conditions notifies them.
        log.warning("%s; %d notification(s) not sent: %s", exc, len(changed), ", ".join(key for key, _ in changed))
        return []
    notices = []
    for key, condition in changed:
        before = rows.get(key)
        if not _claim(ledger, key, before, condition, run_id):
            continue  # another run notified this change
        notice = send_notice(settings, condition)
        _settle(ledger, key, before, notice)
        notices.append(notice)
        for delivery in notice.deliveries:
            if not delivery.ok:
                retry = "" if notice.delivered else "; the next run that evaluates it tries again"
                log.warning("notification %r (%s) not delivered to target %s: %s (the run's outcome is unchanged%s; "
                            "see `integrity notify status`)", key, notice.state, delivery.target, delivery.error, retry)
    return notices


def _subject(key: str) -> str:
    family, _, name = key.partition(":")
    kind, _, repository = family.partition("@")
    backup = f"backup {name}" + (f" in repository {repository}" if repository else "")
    return {JOB_FAILED: f"job {name}", BACKUP_SUSPECT: backup, DRILL_FAILED: "the last drill",
            AUDIT_DIRTY: "the live data's audit"}.get(kind, key)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _message(settings, condition: Condition) -> tuple[str, str]:
    from game_core.db import mask_text_url

    subject = _subject(condition.key)
    if condition.active:
        title = {JOB_FAILED: f"{subject} is failing", BACKUP_SUSPECT: f"{subject} is not restorable",
                 DRILL_FAILED: "a restore drill failed", AUDIT_DIRTY: "the audits found bad rows in live"}[condition.kind]
    else:
        title = f"resolved: {subject}"
    where = f"database {mask_text_url(settings.database_url)} (host {socket.gethostname()})"
    body = f"{condition.detail}\n{where}\nrun `integrity status` for the whole picture"
    return f"[integrity] {title}", body


def send_notice(settings, condition: Condition) -> Notice:
    title, body = _message(settings, condition)
    state = PROBLEM if condition.active else RESOLVED
    deliveries = send(settings, title, body, failure=condition.active)
    return Notice(condition.key, state, title, body, tuple(deliveries))


# ---------------------------------------------------------------- sending


def _apprise():
    try:
        import apprise
    except ImportError:
        raise NotifyUnavailable(f"[notify] targets are set but Apprise is not installed; {INSTALL_HINT}") from None
    return apprise


def send(settings, title: str, body: str, *, failure: bool = True) -> list[Delivery]:
    """Send one notification to every target, each on its own (one refusing does not stop
    the others); what each answered, never raising. Without Apprise every target fails
    with the install hint (and one warning says it)."""
    targets = settings.notify.targets
    try:
        apprise = _apprise()
    except NotifyUnavailable as exc:
        log.warning("%s", exc)
        return [Delivery(_label(i, url), False, f"Apprise is not installed; {INSTALL_HINT}") for i, url in enumerate(targets, 1)]
    kind = apprise.NotifyType.FAILURE if failure else apprise.NotifyType.SUCCESS
    deliveries = []
    for index, url in enumerate(targets, 1):
        deliveries.append(_send_one(apprise, index, url, title, body, kind, settings.notify.timeout_seconds))
    return deliveries


def _label(index: int, url: str) -> str:
    return f"{index} ({masked_target(url)})"


class _Captured(logging.Handler):
    """Apprise's log while one target is sent to: its reasons, without its URLs."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(record.getMessage())
        except Exception:
            pass


def _send_one(apprise, index: int, url: str, title: str, body: str, kind, timeout: float) -> Delivery:
    label = _label(index, url)
    apprise_log = logging.getLogger("apprise")
    captured = _Captured()
    saved = apprise_log.handlers[:], apprise_log.propagate, apprise_log.level
    # Apprise logs the URLs it loads and posts to (paths included): none of it may reach
    # stderr, so its log goes only to `captured` while it works.
    apprise_log.handlers[:] = [captured]
    apprise_log.propagate = False
    apprise_log.setLevel(logging.WARNING)
    try:
        plugin = apprise.Apprise.instantiate(url)
        if not plugin:
            return Delivery(label, False, "Apprise does not understand this URL; check its scheme and form "
                                          "(https://github.com/caronc/apprise/wiki)")
        for attribute in ("socket_connect_timeout", "socket_read_timeout"):
            if hasattr(plugin, attribute):
                setattr(plugin, attribute, float(timeout))
        ok = bool(plugin.notify(body=body, title=title, notify_type=kind))
    except Exception as exc:  # a plugin's bug must not end the run
        return Delivery(label, False, _scrub(f"{type(exc).__name__}: {exc}", url))
    finally:
        apprise_log.handlers[:], apprise_log.propagate = saved[0], saved[1]
        apprise_log.setLevel(saved[2])
    if ok:
        return Delivery(label, True)
    reason = "; ".join(_scrub(line, url).rstrip(". ") for line in captured.lines) or "the target refused it"
    return Delivery(label, False, reason)


def _scrub(text: str, url: str) -> str:
    """`text` without any part of `url` that is not in its masked form: its path segments,
    user, password, query values (tokens live in all of them)."""
    shown = masked_target(url)
    parts = {url, *re.split(r"[/:@?&=#,]+", url.partition("://")[2])}
    for part in sorted(parts, key=len, reverse=True):
        if len(part) >= 3 and part not in shown:
            text = text.replace(part, "***")
    return text[:500]


# ---------------------------------------------------------------- status


def forget_delivery_errors(ledger) -> None:
    from integrity.ledger import notify_conditions as table

    with ledger.engine.begin() as connection:
        connection.execute(table.update().where(table.c.last_error.is_not(None)).values(last_error=None, error_at=None))


# ---------------------------------------------------------------- the commands


@dataclass(frozen=True)
class NotifyTestResult:
    """`integrity notify test`: one test notification, and what each target answered."""

    deliveries: tuple[Delivery, ...]
    title: str

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if all(d.ok for d in self.deliveries) else ExitCode.PRECONDITION

    @property
    def error(self) -> str | None:
        failed = [d for d in self.deliveries if not d.ok]
        if not failed:
            return None
        return (f"{len(failed)} of {len(self.deliveries)} notification target(s) failed, the first: target "
                f"{failed[0].target}: {failed[0].error}; fix it in [notify] targets and run `integrity notify test` again")

    def summary(self) -> dict:
        return {"targets": len(self.deliveries), "failed": sum(not d.ok for d in self.deliveries)}


def send_test(settings, ledger=None) -> NotifyTestResult:
    """A test notification to every target; when every one answered, the delivery
    failures recorded in the ledger are forgotten (the targets work now)."""
    if not settings.notify.targets:
        raise NotifyUnavailable("no [notify] targets are configured; add targets = [\"json://host/path\"] to [notify] "
                                "in integrity.toml (or set INTEGRITY_NOTIFY__TARGETS)")
    _apprise()  # missing: exit 4 with the install hint, before anything is sent
    title = "[integrity] test notification"
    body = (f"A test from `integrity notify test` on {socket.gethostname()}: this target will be told when "
            f"{', '.join(settings.notify.conditions) or 'no condition'} start and clear.")
    result = NotifyTestResult(tuple(send(settings, title, body, failure=False)), title)
    if ledger is not None and result.exit_code == ExitCode.OK:
        forget_delivery_errors(ledger)
    return result


@dataclass(frozen=True)
class NotifyStatus:
    """`integrity notify status`: the targets (masked), the conditions that notify, and
    the state last notified of every condition the ledger knows."""

    targets: tuple[str, ...]
    conditions: tuple[str, ...]
    rows: tuple[ConditionRow, ...] = field(default_factory=tuple)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK

    def summary(self) -> dict:
        return {"active": sum(r.active for r in self.rows), "undelivered": sum(r.last_error is not None for r in self.rows)}


def notify_status(settings, ledger) -> NotifyStatus:
    rows = read_rows(ledger)
    return NotifyStatus(tuple(_label(i, url) for i, url in enumerate(settings.notify.targets, 1)),
                        tuple(settings.notify.conditions), tuple(rows.values()))
