"""The one phase timer of every orchestrator (restore, drill, the dry run and its copies).

    timer = PhaseTimer(on_end=lambda phase: notify(line(phase)))
    with timer.phase("staging") as phase:
        ...
        phase.detail = "file beside live"
    timer.add(Phase("audits", seconds, detail="alongside the deep checks"))

A phase that raises is recorded with ok False (its detail the exception, unless the
caller set one) and the exception goes on; a phase that fails without raising says so
with `phase.fail(detail)`. A phase may run inside another (restore's safety backup inside
SQLite's swap, which holds the write lock across it): the outer one's time excludes the
inner one's, so the phases still add up to the total. `add` records a phase measured
elsewhere (the drill's audits, on a thread beside the deep checks; the dry run's copies):
it overlaps whatever is open, so nothing is subtracted for it.

Reports publish their own phase shape (the JSON scripts read); `Phase.as_(Shape)` keeps
the facts that shape names.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Phase:
    """One finished phase."""

    name: str
    seconds: float
    ok: bool = True
    detail: str = ""
    rows: int | None = None  # rows the phase went through, where that means something

    def as_(self, shape: type):
        """This phase as a report's own phase dataclass, with the fields that shape has."""
        return shape(**{f.name: getattr(self, f.name) for f in fields(shape) if f.init})


class OpenPhase:
    """The phase being timed, handed to the caller to describe it before it ends."""

    def __init__(self, name: str):
        self.name = name
        self.detail = ""
        self.rows: int | None = None
        self.ok = True

    def fail(self, detail: str) -> None:
        self.ok = False
        self.detail = detail


class PhaseTimer:
    """Times phases, calls `on_end` with each one as it ends, keeps them in the order they ended."""

    def __init__(self, on_end: Callable[[Phase], None] = lambda phase: None):
        self.on_end = on_end
        self._done: list[Phase] = []
        self._inner: list[float] = []  # per open phase: seconds spent in phases inside it

    @property
    def done(self) -> tuple[Phase, ...]:
        return tuple(self._done)

    def seconds(self, *names: str) -> float:
        """The recorded seconds of the phases with these names, added up."""
        return sum(phase.seconds for phase in self._done if phase.name in names)

    @contextmanager
    def phase(self, name: str) -> Iterator[OpenPhase]:
        current = OpenPhase(name)
        started = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield current
        except BaseException as exc:
            if current.ok:
                current.fail(current.detail or str(exc))
            raise
        finally:
            inner = self._inner.pop()
            elapsed = time.perf_counter() - started
            if self._inner:
                self._inner[-1] += elapsed
            self._finish(Phase(name, elapsed - inner, current.ok, current.detail, current.rows))

    def add(self, phase: Phase) -> None:
        self._finish(phase)

    def _finish(self, phase: Phase) -> None:
        self._done.append(phase)
        self.on_end(phase)
