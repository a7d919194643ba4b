"""`integrity history`: the ledger of runs, newest first."""

from __future__ import annotations

from dataclasses import dataclass

from integrity.ledger import Ledger, RunRecord


@dataclass(frozen=True)
class HistoryReport:
    ledger: str
    runs: tuple[RunRecord, ...]

    def summary(self) -> dict:
        return {"runs": len(self.runs)}


def read_history(ledger: Ledger, *, kind: str | None, limit: int) -> HistoryReport:
    return HistoryReport(ledger=ledger.location, runs=tuple(ledger.runs(kind=kind, limit=limit)))
