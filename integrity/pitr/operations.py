"""What `integrity pitr config`, `pitr status`, `pitr replicate` and `pitr last-clean` do, on whichever engine
`engine_for` picks; integrity.api calls these and nothing else here.

The lag is measured, never assumed: the engine's window says how new its newest shipped
position is and whether anything written since waits to be shipped (`caught_up`). An idle
database is caught up (lag 0, whatever the age of its newest file); otherwise the lag is
now minus the newest position, an upper bound of how much a restore now would lose.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from game_core.errors import ExitCode, InvalidInput
from integrity.pitr import engine_for, require_enabled


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class PitrConfigReport:
    engine: str
    enabled: bool
    files: dict[str, str]  # path -> text
    written: tuple[str, ...]  # the files written by this run (none while pitr is off)
    commands: tuple[tuple[str, str], ...]  # (step, shell command)
    server_settings: dict[str, str]  # what the database server itself must be set to
    notes: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        return {"engine": self.engine, "enabled": self.enabled, "written": list(self.written)}


@dataclass(frozen=True)
class PitrStatusReport:
    engine: str
    database: str
    repository: str
    checked_at: datetime
    oldest: datetime | None
    newest: datetime | None
    caught_up: bool
    lag_seconds: float | None  # None: nothing shipped yet
    lag_objective_seconds: int
    errors: tuple[str, ...] = ()

    @property
    def newest_age_seconds(self) -> float | None:
        return None if self.newest is None else max(0.0, (self.checked_at - self.newest).total_seconds())

    @property
    def findings(self) -> tuple[str, ...]:
        found = list(self.errors)
        if self.lag_seconds is None:
            found.append("nothing has been shipped yet: no point in time can be restored")
        elif self.lag_seconds > self.lag_objective_seconds:
            found.append(f"replication lag {self.lag_seconds:.1f}s is over the objective of {self.lag_objective_seconds}s "
                         "([pitr] lag_objective_seconds); see runbooks/pitr-lag.md")
        return tuple(found)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.PROBLEMS_FOUND if self.findings else ExitCode.OK

    def summary(self) -> dict[str, Any]:
        return {"engine": self.engine, "oldest": _iso(self.oldest), "newest": _iso(self.newest),
                "lag_seconds": self.lag_seconds, "lag_objective_seconds": self.lag_objective_seconds,
                "caught_up": self.caught_up, "errors": len(self.errors)}


@dataclass
class ReplicateReport:
    engine: str
    command: str
    log_path: str
    starts: int
    deaths: list[str] = field(default_factory=list)
    stopped_cleanly: bool = True

    def summary(self) -> dict[str, Any]:
        return {"engine": self.engine, "starts": self.starts, "deaths": len(self.deaths),
                "stopped_cleanly": self.stopped_cleanly}


def pitr_config(settings) -> PitrConfigReport:
    """The engine's generated configuration, its commands and the server settings it needs;
    the files are written (atomically) only while `[pitr] enabled` is true."""
    engine = engine_for(settings)
    files = {str(path): text for path, text in engine.config_files().items()}
    written: tuple[str, ...] = ()
    notes: list[str] = []
    if settings.pitr.enabled:
        written = tuple(str(path) for path in engine.write_config())
    else:
        notes.append("[pitr] enabled is false: shown, not written; set it to true to write the files and replicate")
    commands = tuple((command.step, command.shell()) for command in engine.commands())
    return PitrConfigReport(engine.name, settings.pitr.enabled, files, written, commands,
                            dict(engine.server_settings()), tuple(notes))


def pitr_status(settings, *, now: datetime | None = None) -> PitrStatusReport:
    """The restorable window as the engine reports it, the lag against the objective, and
    the engine's errors. Exit 3 when the lag is over the objective or there are errors."""
    from game_core.db import parse_database_url

    require_enabled(settings)
    engine = engine_for(settings)
    window = engine.window()
    checked_at = now or datetime.now(UTC)
    if window.newest is None:
        lag = None
    elif window.caught_up:
        lag = 0.0
    else:
        lag = max(0.0, (checked_at - window.newest).total_seconds())
    return PitrStatusReport(
        engine=engine.name,
        database=parse_database_url(settings.database_url).display,
        repository=str(engine.repository),
        checked_at=checked_at,
        oldest=window.oldest,
        newest=window.newest,
        caught_up=window.caught_up,
        lag_seconds=lag,
        lag_objective_seconds=settings.pitr.lag_objective_seconds,
        errors=window.errors,
    )


def pitr_replicate(settings, *, notify: Callable[[str], None], stop: threading.Event | None = None,
                   restart_delay: float = 1.0) -> ReplicateReport:
    """Run the engine's replicator in the foreground, restarted whenever it dies (each death
    reported through `notify`), until `stop` is set or SIGINT/SIGTERM arrives."""
    from integrity.pitr.supervise import Supervisor

    require_enabled(settings)
    engine = engine_for(settings)
    argv = engine.replicator()
    if argv is None:
        raise InvalidInput(f"{engine.name} needs no replicator from integrity: the database server ships its WAL "
                           "itself through archive_command; see `integrity pitr config` for the settings it needs, "
                           "and `integrity pitr status` for the archive's lag")
    engine.write_config()
    log_path = Path(settings.state.dir) / "pitr" / f"{engine.name}.log"
    stop = stop or threading.Event()
    supervisor = Supervisor(
        argv, log_path=log_path, restart_delay=restart_delay,
        on_start=lambda pid: notify(f"{engine.name} running (pid {pid}); its log: {log_path}"),
        on_death=lambda death: notify(f"{engine.name} died: {death.describe()}; restarting"),
    )
    with _stopped_by_signals(stop):
        report = supervisor.run(stop)
    return ReplicateReport(engine.name, " ".join(argv), str(log_path), report.starts,
                           [death.describe() for death in report.deaths], report.stopped_cleanly)


class _stopped_by_signals:
    """SIGINT and SIGTERM set `stop` (a foreground replicator is stopped that way, and must
    stop its child cleanly); only the main thread can install handlers, others skip."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.saved: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self.saved[number] = signal.signal(number, lambda *_: self.stop.set())
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self.saved.items():
            signal.signal(number, handler)


# ---------------------------------------------------------------- --last-clean (integrity.pitr.search)


@dataclass(frozen=True)
class LastCleanReport:
    """`integrity pitr last-clean`: the search, the moment found and what comes back after it."""

    engine: str
    window_oldest: datetime
    window_newest: datetime
    lower_source: str  # search.LOWER_FROM_AUDIT or search.LOWER_FROM_WINDOW
    lower_audit_at: datetime | None  # when that clean full audit ran (None: the window's oldest)
    bisection: Any  # search.Bisection: bounds, every probe, the boundary
    after: Any  # search.AfterTheMoment, None when nothing clean was found
    seconds: float
    live_audit: Any = None  # search.LiveAudit: live's audit before the search, the probes' signature
    restores: int = field(init=False)
    found: datetime | None = field(init=False)  # the latest clean moment
    first_dirty: datetime | None = field(init=False)  # the grid point after it (None: the newest point is clean)
    next_command: str | None = field(init=False)
    error: str | None = field(init=False)

    def __post_init__(self) -> None:
        from integrity.pitr.search import moment_text

        found, dirty = self.bisection.found, self.bisection.first_dirty
        object.__setattr__(self, "restores", self.bisection.restores)
        object.__setattr__(self, "found", found)
        object.__setattr__(self, "first_dirty", dirty)
        object.__setattr__(self, "next_command", None if found is None or dirty is None
                           else f"integrity restore --to-time {moment_text(found)} --keep-newer")
        error = None
        if found is None:
            error = (f"no clean moment in the point-in-time window: even the lower bound "
                     f"{moment_text(self.bisection.lower)} ({self.lower_source}) is dirty; restore a backup whose "
                     "audits passed (`integrity backup list`) or repair the data (`integrity repair progress --dry-run`)")
        object.__setattr__(self, "error", error)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.found is not None else ExitCode.PROBLEMS_FOUND

    def summary(self) -> dict[str, Any]:
        return {"engine": self.engine, "found": _iso(self.found), "first_dirty": _iso(self.first_dirty),
                "restores": self.restores, "bound": self.bisection.bound, "lower_source": self.lower_source,
                "would_reapply": None if self.after is None else dict(self.after.would_reapply),
                "seconds": round(self.seconds, 3)}


def pitr_last_clean(settings, ledger, *, notify: Callable[[str], None], count_after: bool = True) -> LastCleanReport:
    """Bisect the point-in-time window for the latest moment whose restore passes the
    audits (integrity.pitr.search), then (`count_after`) count what salvage would bring back
    from live after it. Exit 0 when a clean moment was found, 3 when even the lower bound is
    dirty."""
    from game_core.errors import PreconditionFailed
    from integrity.db.connect import Database
    from integrity.pitr.search import (LOWER_FROM_AUDIT, LOWER_FROM_WINDOW, RestoringJudge, audit_live,
                                       find_last_clean, newest_clean_full_audit, rows_after)

    require_enabled(settings)
    started = time.perf_counter()
    engine = engine_for(settings)
    window = engine.window()
    if window.oldest is None or window.newest is None:
        reason = f": {window.errors[0]}" if window.errors else ""
        raise PreconditionFailed(f"nothing can be restored from the {engine.name} archive yet{reason}; "
                                 "run `integrity pitr status`")
    audit_at = newest_clean_full_audit(ledger)
    if audit_at is not None and window.contains(audit_at):
        lower, source = audit_at, LOWER_FROM_AUDIT
    else:
        lower, source, audit_at = window.oldest, LOWER_FROM_WINDOW, None
    live = Database.of(settings)
    live_audit = audit_live(live)
    errors = ", ".join(f"{rule.rule} ({rule.failing_rows} rows)" for rule in live_audit.failing_rules if rule.severity == "error")
    notify(f"live: {'fails ' + errors if errors else 'passes every error rule'} ({live_audit.seconds:.1f}s); the probes "
           f"are audited with {', '.join(live_audit.signature) if live_audit.signature else 'every rule until one is dirty'}")
    judge = RestoringJudge(engine, live, settings.state.dir / "scratch", window=window, signature=live_audit.signature,
                           notify=notify)
    try:
        bisection = find_last_clean(judge, lower=lower, upper=window.newest, resolution_seconds=engine.resolution_seconds)
        after = None if judge.kept is None or not count_after else rows_after(live, judge.kept[1])
    finally:
        judge.close()
    return LastCleanReport(engine.name, window.oldest, window.newest, source, audit_at, bisection, after,
                           time.perf_counter() - started, live_audit)


@dataclass(frozen=True)
class LastCleanRestore:
    """`integrity restore --last-clean`: the search, then the restore of the moment it found
    (integrity.recovery.point_in_time's result, or its dry run's preview)."""

    search: LastCleanReport
    restored: Any  # integrity.recovery.point_in_time.PointInTimeRestore

    @property
    def exit_code(self) -> int:
        return int(self.restored.exit_code)

    @property
    def error(self) -> str | None:
        return self.restored.error

    def summary(self) -> dict[str, Any]:
        return {"search": self.search.summary(), **self.restored.summary()}
