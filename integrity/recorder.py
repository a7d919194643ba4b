"""The run recorder: one run of the tool opened in the ledger, and its outcome recorded.

It sits below both the CLI's environment (integrity.runtime) and the scheduler
(integrity.scheduler.runner), so a command run by hand, by cron or by the daemon is
recorded the same way, and `status`, `history`, job health and the metrics read them alike.

After every run the Prometheus text file is rewritten, so cron users get it too: collected
afresh after a run that may have changed what it reads, carried forward (with the
configured values written afresh) after one that did not, such as `status`
(integrity.prometheus.UNCHANGING_COMMANDS). The run
already happened when it is recorded: losing its record or its metrics must never change
its outcome, so both failures are warnings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from game_core.errors import ExitCode, Failure

log = logging.getLogger("integrity")


@dataclass(frozen=True)
class Outcome:
    """What is recorded of a run: its exit code, its summary and the error that ended it."""

    exit_code: int
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def of(cls, result: Any) -> Outcome:
        """The outcome of a library result: its `exit_code` (0 when it has none), its
        `summary()` and the `error` of a result that failed a precondition."""
        made = getattr(result, "summary", None)
        return cls(
            exit_code=int(getattr(result, "exit_code", ExitCode.OK)),
            summary=made() if callable(made) else {},
            error=getattr(result, "error", None),
        )

    @classmethod
    def of_failure(cls, exc: Failure) -> Outcome:
        return cls(exit_code=int(exc.exit_code), error=str(exc))


@dataclass
class Recording:
    """A run open in the ledger; `finish` records its outcome and closes the ledger."""

    settings: Any  # integrity.settings.Settings
    ledger: Any  # integrity.ledger.Ledger, None once finished
    run_id: str
    command: str

    @classmethod
    def start(cls, settings, command: str) -> Recording:
        """Open the ledger and record `command` as running (LedgerUnavailable, exit 4, when
        the ledger cannot be written: a run that cannot be recorded does not start)."""
        from integrity.ledger import Ledger

        ledger = Ledger.open(settings.state.dir, settings.state.ledger_url)
        try:
            run_id = ledger.start(command)
        except BaseException:
            ledger.close()
            raise
        return cls(settings, ledger, run_id, command)

    @property
    def finished(self) -> bool:
        return self.ledger is None

    def finish(self, outcome: Outcome) -> None:
        """Record the outcome (the error joins the summary), rewrite the metrics file, close
        the ledger. Never raises for the record or the metrics; a second call does nothing."""
        if self.ledger is None:
            return
        summary = dict(outcome.summary)
        if outcome.error:
            summary["error"] = outcome.error
        try:
            self.ledger.finish(self.run_id, int(outcome.exit_code), summary)
        except Exception as exc:
            log.warning("could not record the run in the ledger %s: %s", self.ledger.location, exc)
        try:
            self._write_metrics()
            self._notify()
        finally:
            self.ledger.close()
            self.ledger = None

    def _notify(self) -> None:
        """[notify] targets told of the conditions this run started or cleared
        (integrity.notify); nothing at all is imported or read when none is set."""
        targets = getattr(getattr(self.settings, "notify", None), "targets", ())
        if not targets:
            return
        try:
            from integrity.notify import notify_after_run

            notify_after_run(self.settings, self.ledger, self.command, self.run_id)
        except Exception as exc:  # the run happened: its notifications must not change its outcome
            log.warning("could not evaluate the notifications of this run: %s: %s", type(exc).__name__, exc)

    def _write_metrics(self) -> None:
        path = getattr(getattr(self.settings, "metrics", None), "path", None)
        if path is None or self.command == "metrics":  # `integrity metrics` wrote what it printed
            return
        try:
            from integrity.prometheus import (DATABASE_READING_COMMANDS, PITR_READING_COMMANDS, UNCHANGING_COMMANDS,
                                              write_metrics_file)

            # Reading the point-in-time archive costs engine subprocesses: only the runs
            # that report it read it afresh; the others carry its last reading forward.
            # A run that changed nothing the metrics read carries the rest forward too.
            write_metrics_file(self.settings, self.ledger, pitr_fresh=self.command in PITR_READING_COMMANDS,
                               changed=self.command not in UNCHANGING_COMMANDS,
                               database_fresh=self.command in DATABASE_READING_COMMANDS)
        except Exception as exc:
            detail = str(exc)
            if str(path) not in detail:  # MetricsUnwritable names the path; anything else gets it here
                detail = f"could not write the metrics file {path}: {type(exc).__name__}: {detail}"
            log.warning("%s", detail)
