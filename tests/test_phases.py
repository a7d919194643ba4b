"""The one phase timer (integrity.phases): nesting, failures, phases measured elsewhere."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from integrity.phases import Phase, PhaseTimer


def test_a_phase_records_its_detail_and_rows_and_tells_as_it_ends():
    ended = []
    timer = PhaseTimer(on_end=ended.append)
    with timer.phase("copy") as phase:
        time.sleep(0.01)
        phase.detail = "two copies"
        phase.rows = 42
        assert ended == []  # not before it ends
    (done,) = timer.done
    assert (done.name, done.ok, done.detail, done.rows) == ("copy", True, "two copies", 42)
    assert done.seconds >= 0.01
    assert ended == [done]


def test_an_inner_phase_is_recorded_first_and_not_counted_in_the_outer_one():
    timer = PhaseTimer()
    with timer.phase("swap"):
        time.sleep(0.02)
        with timer.phase("safety-backup"):
            time.sleep(0.1)
    inner, outer = timer.done
    assert (inner.name, outer.name) == ("safety-backup", "swap")
    assert inner.seconds >= 0.1
    assert 0.02 <= outer.seconds < 0.1  # the inner phase's time is the inner phase's alone
    assert timer.seconds("swap", "safety-backup") == pytest.approx(inner.seconds + outer.seconds)


def test_a_phase_that_raises_is_recorded_failed_and_the_error_goes_on():
    ended = []
    timer = PhaseTimer(on_end=ended.append)
    with pytest.raises(RuntimeError, match="disk full"):
        with timer.phase("outer"):
            with timer.phase("restore"):
                raise RuntimeError("disk full")
    assert [(p.name, p.ok, p.detail) for p in timer.done] == [("restore", False, "disk full"), ("outer", False, "disk full")]
    assert ended == list(timer.done)


def test_a_detail_set_before_the_error_is_kept_and_fail_marks_a_phase_without_raising():
    timer = PhaseTimer()
    with pytest.raises(ValueError):
        with timer.phase("verify") as phase:
            phase.detail = "3 files"
            raise ValueError("hash mismatch")
    with timer.phase("compare") as phase:
        phase.fail("live unreachable")
    assert [(p.name, p.ok, p.detail) for p in timer.done] == [("verify", False, "3 files"), ("compare", False, "live unreachable")]


def test_a_phase_measured_elsewhere_is_added_in_order_without_touching_an_open_one():
    ended = []
    timer = PhaseTimer(on_end=ended.append)
    with timer.phase("deep checks"):
        timer.add(Phase("audits", 5.0, detail="alongside"))
    audits, deep = timer.done
    assert audits == Phase("audits", 5.0, True, "alongside", None)
    assert deep.name == "deep checks" and deep.seconds < 1.0  # the added 5 s are not subtracted
    assert ended == [audits, deep]
    assert timer.seconds("audits") == 5.0 and timer.seconds("nothing") == 0


def test_a_report_keeps_the_fields_its_own_phase_shape_publishes():
    @dataclass(frozen=True)
    class Published:
        name: str
        seconds: float
        rows: int | None = None

    assert Phase("snapshot", 1.5, False, "why", 10).as_(Published) == Published("snapshot", 1.5, 10)
