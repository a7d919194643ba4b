"""`--last-clean`'s bisection in time (integrity.pitr.search): the pure search against a
judge with a known flip moment (the bound on restores, the answer within one resolution,
all clean, all dirty, flips at the edges), then `integrity pitr last-clean` end to end with
the real Litestream replicating a game database that is damaged at a recorded moment.

Nothing sleeps a fixed time and assumes: every wait is on a condition, with a deadline.
"""

from __future__ import annotations

import json
import math
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import pitr_helpers
from game_core.db import create_engine
from game_core.store import Store, TestOutcome
from integrity.pitr.search import (
    BISECT,
    CONFIRM,
    UPPER,
    FailingRule,
    Probe,
    SearchBoundExceeded,
    bisect_time,
    damage_signature,
    find_last_clean,
    grid_lower,
    probe_bound,
)
from integrity.settings import resolve_settings
from pitr_helpers import Writer, invoke, players_in, restorable_moment_after, wait_for

LOWER = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)
ONE_HOUR = timedelta(hours=1)

# Fixtures (pitr_helpers says why they are bound, not imported by name).
pitr_env = pitr_helpers.pitr_env
replication = pitr_helpers.replication


# ---------------------------------------------------------------- the pure search


class FlipJudge:
    """Clean strictly before `flip`, dirty from it on (damage that stays); records calls."""

    def __init__(self, flip: datetime | None) -> None:
        self.flip = flip  # None: clean everywhere
        self.calls: list[tuple[datetime, str]] = []

    def clean_at(self, moment: datetime) -> bool:
        return self.flip is None or moment < self.flip

    def __call__(self, moment: datetime, role: str) -> Probe:
        self.calls.append((moment, role))
        clean = self.clean_at(moment)
        failing = () if clean else (FailingRule("results.wpm_recomputed", "error", 7),)
        return Probe(moment, role, clean, failing, restore_seconds=0.0, audit_seconds=0.0)


def search(judge, *, lower=LOWER, upper=LOWER + ONE_HOUR, resolution=1.0):
    return bisect_time(judge, lower=lower, upper=upper, resolution_seconds=resolution)


def assert_boundary(result, judge: FlipJudge, resolution: float) -> None:
    """The answer is clean, the next grid point dirty, at most one resolution apart, and
    the flip lies between them; the probes stayed within the bound."""
    assert len(result.probes) <= result.bound == probe_bound(result.steps)
    assert [call[0] for call in judge.calls] == [probe.moment for probe in result.probes]
    assert all((probe.role == UPPER) == (probe.moment == result.upper) for probe in result.probes)
    if result.found is not None:
        assert judge.clean_at(result.found)
    assert not judge.clean_at(result.first_dirty)
    if result.found is not None:
        assert timedelta(0) < result.first_dirty - result.found <= timedelta(seconds=resolution)
        assert result.found < judge.flip <= result.first_dirty


def test_a_one_hour_window_at_one_second_takes_at_most_twelve_restores_and_finds_the_flip_within_a_second():
    """Issue 16's bound: log2(window / resolution) restores, 12 for an hour at one second."""
    steps = 3600
    assert probe_bound(steps) == math.ceil(math.log2(steps)) == 12
    for offset in (0.5, 1, 1.25, 17, 1799.5, 1800, 2047, 2048, 3598.999, 3599, 3599.5):
        judge = FlipJudge(LOWER + timedelta(seconds=offset))
        result = search(judge)
        assert result.steps == steps
        assert_boundary(result, judge, 1.0)
        assert len(result.probes) <= 12
        # The answer is the latest grid point before the flip: nothing later is clean.
        assert result.found == LOWER + timedelta(seconds=math.ceil(offset) - 1)


def test_every_flip_of_a_small_window_is_found_exactly_within_the_bound():
    upper = LOWER + timedelta(seconds=37)
    for tenth in range(1, 370 + 1):  # every flip from just after the lower bound to the upper bound
        judge = FlipJudge(LOWER + timedelta(seconds=tenth / 10))
        result = search(judge, upper=upper)
        assert_boundary(result, judge, 1.0)


def test_a_clean_newest_point_is_the_answer_within_the_bound():
    judge = FlipJudge(None)
    result = search(judge)
    assert len(result.probes) <= result.bound == 12
    assert result.probes[-1].role == UPPER and result.probes[-1].clean
    assert result.found == result.upper and result.first_dirty is None


def test_all_dirty_probes_down_to_the_lower_bound_and_finds_nothing():
    judge = FlipJudge(LOWER - timedelta(seconds=1))
    result = search(judge)
    assert result.found is None
    assert result.first_dirty == LOWER  # the lower bound itself was restored and judged dirty
    assert judge.calls[-1] == (LOWER, BISECT)
    assert len(result.probes) <= result.bound


def test_a_flip_right_after_the_lower_bound_answers_the_lower_bound():
    judge = FlipJudge(LOWER + timedelta(microseconds=1))
    result = search(judge)
    assert_boundary(result, judge, 1.0)
    assert result.found == LOWER and result.first_dirty == LOWER + timedelta(seconds=1)


def test_a_flip_at_the_upper_bound_answers_the_point_before_it():
    upper = LOWER + ONE_HOUR + timedelta(milliseconds=300)  # the last step is shorter than the resolution
    judge = FlipJudge(upper)
    result = search(judge, upper=upper)
    assert_boundary(result, judge, 1.0)
    assert result.found == LOWER + ONE_HOUR and result.first_dirty == upper


def test_a_window_of_one_moment_is_one_restore():
    judge = FlipJudge(LOWER)
    result = search(judge, upper=LOWER)
    assert result.steps == 0 and result.bound == 1 and len(result.probes) == 1
    assert result.probes[0].role == UPPER
    assert result.found is None and result.first_dirty == LOWER


def test_a_coarser_resolution_takes_fewer_restores_and_answers_within_it():
    judge = FlipJudge(LOWER + timedelta(seconds=1234.5))
    result = search(judge, resolution=10.0)
    assert result.steps == 360 and result.bound == 9  # ceil(log2(362))
    assert_boundary(result, judge, 10.0)


def test_a_lower_bound_between_seconds_moves_up_to_the_next_whole_second():
    lower = LOWER + timedelta(seconds=5, microseconds=250_000)
    assert grid_lower(lower, LOWER + ONE_HOUR, 1.0) == LOWER + timedelta(seconds=6)
    assert grid_lower(lower, LOWER + timedelta(seconds=5, microseconds=500_000), 1.0) == LOWER + timedelta(seconds=5, microseconds=500_000)
    assert grid_lower(lower, LOWER + ONE_HOUR, 1.5) == lower  # a fractional resolution keeps it
    judge = FlipJudge(LOWER + timedelta(seconds=100))
    result = search(judge, lower=lower)
    assert all(probe.moment.microsecond == 0 for probe in result.probes)
    assert result.found == LOWER + timedelta(seconds=99)


def test_a_judge_that_is_clean_again_later_still_gets_a_clean_dirty_boundary():
    # Dirty from 100 s to 200 s, clean after, dirty again from 3000 s: a boundary is found.
    def clean_at(moment):
        seconds = (moment - LOWER).total_seconds()
        return not (100 <= seconds < 200 or seconds >= 3000)

    judge = FlipJudge(None)
    judge.clean_at = clean_at
    result = search(judge)
    assert clean_at(result.found) and not clean_at(result.first_dirty)
    assert result.first_dirty - result.found <= timedelta(seconds=1)


def test_the_bound_is_enforced(monkeypatch):
    # A search allowed fewer probes than bisection needs must stop with the bound's error.
    import integrity.pitr.search as search_module

    monkeypatch.setattr(search_module, "probe_bound", lambda steps: 3)
    with pytest.raises(SearchBoundExceeded, match="4 probes over a bound of 3"):
        search(FlipJudge(LOWER + timedelta(seconds=1800.5)))


# ---------------------------------------------------------------- audits with the damage's signature


class RulesJudge:
    """Each rule fails from its own moment on; audits with the whole catalogue until a
    probe is dirty, then with that probe's `damage_signature`, and `confirm` audits the
    moment found with every rule (RestoringJudge's protocol, without restores)."""

    def __init__(self, fails_from: dict[str, datetime]) -> None:
        self.fails_from = fails_from  # rule id -> the first moment it fails
        self.signature: tuple[str, ...] | None = None
        self.audits: list[tuple[datetime, tuple[str, ...] | None]] = []

    def failing_at(self, moment: datetime) -> tuple[FailingRule, ...]:
        return tuple(FailingRule(rule, "error", 1) for rule, start in self.fails_from.items() if moment >= start)

    def _audit(self, moment: datetime, role: str, rules) -> Probe:
        self.audits.append((moment, rules))
        failing = tuple(rule for rule in self.failing_at(moment) if rules is None or rule.rule in rules)
        if failing and rules is None:
            self.signature = damage_signature(failing)
        return Probe(moment, role, not failing, failing, 0.0, 0.0, audited_rules=rules)

    def __call__(self, moment: datetime, role: str) -> Probe:
        return self._audit(moment, role, self.signature)

    def confirm(self, moment: datetime) -> Probe:
        return self._audit(moment, CONFIRM, None)


def test_the_signature_is_a_dirty_probes_row_rules_and_every_error_rule_without_them():
    failing = (FailingRule("results.wpm_recomputed", "error", 3), FailingRule("progress.best_wpm_matches_results", "error", 1),
               FailingRule("results.wpm_suspicious", "warn", 2), FailingRule("schema.results", "error", 1))
    assert damage_signature(failing) == ("results.wpm_recomputed", "schema.results")
    cross_only = (FailingRule("progress.best_wpm_matches_results", "error", 1), FailingRule("personal_bests.is_best", "error", 1))
    assert damage_signature(cross_only) == ("progress.best_wpm_matches_results", "personal_bests.is_best")


def test_probes_after_the_first_dirty_one_audit_its_signature_and_the_moment_found_every_rule():
    flip = LOWER + timedelta(seconds=2500.5)
    judge = RulesJudge({"results.wpm_recomputed": flip, "progress.best_wpm_matches_results": flip})
    result = find_last_clean(judge, lower=LOWER, upper=LOWER + ONE_HOUR, resolution_seconds=1.0)
    assert result.found == LOWER + timedelta(seconds=2500) and result.first_dirty == result.found + timedelta(seconds=1)
    assert result.searches == 1 and result.restores <= result.bound == 12
    first_dirty = next(index for index, probe in enumerate(result.probes) if not probe.clean)
    # Every rule until the first dirty probe (itself included), its row rule after it.
    assert all(probe.audited_rules is None for probe in result.probes[:first_dirty + 1])
    assert all(probe.audited_rules == ("results.wpm_recomputed",) for probe in result.probes[first_dirty + 1:-1])
    # The moment found was audited with every rule, on its kept copy, and passed.
    assert result.probes[-1].role == CONFIRM and result.probes[-1].clean and result.probes[-1].moment == result.found
    assert result.probes[-1].audited_rules is None


def test_a_moment_found_that_fails_another_rule_is_searched_below_until_every_rule_passes():
    # Damage in two steps: a cross-table rule fails from 1000.5 s, the row rule from 2500.5 s.
    # The signature (the row rule) finds 2500 s; every rule there fails the cross-table one,
    # so the search runs again below it with that rule, down to 1000 s.
    earlier, later = LOWER + timedelta(seconds=1000.5), LOWER + timedelta(seconds=2500.5)
    judge = RulesJudge({"progress.best_wpm_matches_results": earlier, "results.wpm_recomputed": later})
    judge.signature = ("results.wpm_recomputed",)  # as if the first dirty probe saw only the row rule
    result = find_last_clean(judge, lower=LOWER, upper=LOWER + ONE_HOUR, resolution_seconds=1.0)
    assert result.searches == 2
    assert result.found == LOWER + timedelta(seconds=1000) and result.first_dirty == result.found + timedelta(seconds=1)
    assert not judge.failing_at(result.found) and judge.failing_at(result.first_dirty)
    confirms = [probe for probe in result.probes if probe.role == CONFIRM]
    assert [probe.clean for probe in confirms] == [False, True]
    assert confirms[0].moment == LOWER + timedelta(seconds=2500)
    # The second search never restores the moment already known dirty, and keeps its bound.
    second = result.probes[result.probes.index(confirms[0]) + 1:-1]
    assert confirms[0].moment not in [probe.moment for probe in second]
    assert len(second) <= probe_bound(2500 - 1)


def test_a_search_whose_every_probe_passes_every_rule_needs_no_confirmation():
    judge = RulesJudge({})
    result = find_last_clean(judge, lower=LOWER, upper=LOWER + ONE_HOUR, resolution_seconds=1.0)
    assert result.found == result.upper and all(probe.audited_rules is None for probe in result.probes)
    assert CONFIRM not in {probe.role for probe in result.probes}


# ---------------------------------------------------------------- end to end with Litestream


class Game:
    """The game writing through its own store, each result with its own started_at."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        self.store = Store(self.engine)
        self.last = datetime.now(UTC)

    def play_clean_history(self, players: int) -> None:
        """Three results each for players before_1 .. before_N: what the damage comes after."""
        for number in range(1, players + 1):
            for _ in range(3):
                self.play(f"before_{number}")

    def play(self, username: str) -> None:
        self.store.get_or_create_player(username)
        self.last = started = max(datetime.now(UTC), self.last + timedelta(microseconds=1))
        self.store.record_result(username, TestOutcome(
            mode="time", mode_param=30, started_at=started, duration_ms=30_000, correct_word_chars=200,
            correct_spaces=40, correct_chars=205, incorrect_chars=3, extra_chars=0, missed_chars=1,
            correct_keystrokes=245, incorrect_keystrokes=3,
        ))

    def __enter__(self) -> Game:
        return self

    def __exit__(self, *exc) -> None:
        self.engine.dispose()


def wpm_by_id(path: Path) -> dict[int, float]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {row_id: float(wpm) for row_id, wpm in connection.execute("SELECT id, wpm FROM results")}
    finally:
        connection.close()


def damage(url: str) -> int:
    """Every stored wpm multiplied by 5 (results.wpm_recomputed fails); the rows changed."""
    writer = create_engine(url)
    try:
        with writer.begin() as connection:
            return connection.exec_driver_sql("UPDATE results SET wpm = wpm * 5").rowcount
    finally:
        writer.dispose()


def test_last_clean_finds_the_second_before_the_damage_and_the_good_rows_after_it(replication, sqlite_path, sqlite_url, tmp_path):
    engine = replication.start()
    with Game(sqlite_url) as game, Writer(sqlite_url):
        game.play_clean_history(3)
        clean_wpm = wpm_by_id(sqlite_path)
        every_clean_write = restorable_moment_after(engine, datetime.now(UTC))
        wait_for(lambda: datetime.now(UTC) > every_clean_write, what="the moment that holds every clean write")
        # A clean full audit in the ledger, after that moment: the search starts from it.
        audited = invoke("audit")
        assert audited.exit_code == 0, audited.output
        audit_done = datetime.now(UTC)
        # The damage lands after the search's lower bound (the audit's time moved up to a whole second).
        wait_for(lambda: datetime.now(UTC) > grid_lower(audit_done, audit_done + ONE_HOUR, 1.0),
                 what="the second after the audit")
        damaged_at = datetime.now(UTC)
        damaged = damage(sqlite_url)
        # Good results after the damage, of an old player and of new ones.
        good_results = 6
        for number in range(good_results):
            game.play("before_1" if number % 2 else f"after_{number}")
        # The newest restorable point holds the damage once a file made after it is listed.
        restorable_moment_after(engine, datetime.now(UTC))

    result = invoke("--json", "pitr", "last-clean")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["result"]
    found = datetime.fromisoformat(report["found"])
    first_dirty = datetime.fromisoformat(report["first_dirty"])
    search_result = report["bisection"]
    # Started from the ledger's audit, not the window's oldest point.
    assert report["lower_source"] == "the newest clean full audit in the ledger"
    assert datetime.fromisoformat(search_result["lower"]) == grid_lower(
        datetime.fromisoformat(report["lower_audit_at"]), datetime.fromisoformat(search_result["upper"]), 1.0)
    # The moment: clean, the next second dirty, and within one resolution step before the
    # damage (a restore at the first dirty moment holds the damage's commit, so that moment
    # is after it; the moment found is at most one second earlier).
    assert found < first_dirty and first_dirty - found <= timedelta(seconds=1)
    assert damaged_at - timedelta(seconds=1) < found
    # The restores: within the bound, every dirty one failing the rule the damage breaks.
    probes = search_result["probes"]
    restored = [probe for probe in probes if probe["role"] != "confirm"]
    assert report["restores"] == len(restored) <= search_result["bound"] == probe_bound(search_result["steps"])
    dirty = [probe for probe in probes if not probe["clean"]]
    assert dirty and all({"rule": "results.wpm_recomputed", "severity": "error", "failing_rows": damaged}
                         in probe["failing_rules"] for probe in dirty)
    # Live was audited first with every rule: the row rules it fails are every probe's; the
    # moment found passed every rule (the confirmation on its kept copy).
    signature = report["live_audit"]["signature"]
    assert "results.wpm_recomputed" in signature
    assert {"rule": "results.wpm_recomputed", "severity": "error", "failing_rows": damaged} in report["live_audit"]["failing_rules"]
    assert all(probe["audited_rules"] == signature for probe in restored)
    assert probes[-1]["role"] == "confirm" and probes[-1]["clean"] and probes[-1]["moment"] == report["found"]
    assert probes[-1]["audited_rules"] is None
    assert report["next_command"] == f"integrity restore --to-time {report['found'].replace('+00:00', 'Z')} --keep-newer"
    # Checked without the audits: the restore at that moment holds every result as written
    # before the damage, undamaged; and which players live holds beyond it.
    with engine.restored_at(found, tmp_path / "scratch") as copy:
        assert wpm_by_id(copy.target.sqlite_path) == clean_wpm
        players_after = players_in(sqlite_url) - players_in(copy.target)
    assert {f"after_{number}" for number in range(0, good_results, 2)} <= players_after
    # What comes back after it: exactly the good rows written after the damage; the rows the
    # damage changed are left out.
    after = report["after"]
    assert after["problem"] is None
    assert after["would_reapply"] == {"players": len(players_after), "results": good_results}
    assert after["left_out"] == {"results: changed": damaged}
    assert list((tmp_path / "state" / "scratch").glob("pitr-*")) == []  # every probe's copy removed

    text = invoke("pitr", "last-clean")
    assert text.exit_code == 0, text.output
    assert f"last clean moment: {found:%Y-%m-%d %H:%M:%S}Z (first dirty: {first_dirty:%Y-%m-%d %H:%M:%S}Z)" in text.stdout
    assert f"results.wpm_recomputed ({damaged} rows)" in text.stdout
    assert ("rows after it that salvage would bring back (live against the restore, dry run): "
            f"{len(players_after)} players, {good_results} results") in text.stdout
    assert f"  left out: results: changed: {damaged} rows" in text.stdout
    assert f"next: integrity restore --to-time {found:%Y-%m-%dT%H:%M:%S}Z --keep-newer" in text.stdout


def test_a_database_dirty_since_the_archive_began_is_exit_3_naming_the_lower_bound(replication, sqlite_url):
    with Game(sqlite_url) as game:
        game.play("player")
    damage(sqlite_url)  # before Litestream's first snapshot: no restorable moment is clean
    engine = replication.start()
    with Writer(sqlite_url):
        restorable_moment_after(engine, datetime.now(UTC))
    result = invoke("--json", "pitr", "last-clean")
    assert result.exit_code == 3, result.output
    document = json.loads(result.stdout)
    report = document["result"]
    assert report["found"] is None and report["after"] is None and report["next_command"] is None
    assert report["lower_source"] == "the oldest restorable point"  # no audit in the ledger
    lower = report["bisection"]["lower"]
    assert report["first_dirty"] == lower  # the lower bound itself was restored, and dirty
    assert report["bisection"]["probes"][-1]["moment"] == lower
    assert all(not probe["clean"] for probe in report["bisection"]["probes"])
    assert document["error"].startswith("no clean moment in the point-in-time window: even the lower bound ")


def test_last_clean_while_pitr_is_off_is_exit_4_naming_the_setting(tmp_path, sqlite_path, monkeypatch):
    monkeypatch.setenv("INTEGRITY_DATABASE_URL", f"sqlite:///{sqlite_path}")
    monkeypatch.setenv("INTEGRITY_STATE__DIR", str(tmp_path / "state"))
    result = invoke("pitr", "last-clean")
    assert result.exit_code == 4
    assert result.stderr.strip().splitlines()[-1].startswith("Error: point-in-time recovery is not enabled; set `enabled = true`")


# ---------------------------------------------------------------- restore --last-clean (through the api)


def last_clean_invocation(tmp_path: Path, pitr_env: dict, *, yes: bool):
    from integrity.invocation import Invocation
    from integrity.ledger import Ledger
    from integrity.recovery.consent import Consent

    environ = {**pitr_env, "INTEGRITY_BACKUPS__REPOSITORY": str(tmp_path / "repo")}
    (tmp_path / "repo").mkdir(exist_ok=True)  # what `integrity init` does
    settings = resolve_settings(environ=environ, cwd=tmp_path)
    ledger = Ledger.open(settings.state.dir, settings.state.ledger_url)
    return Invocation(settings, "restore", ledger=ledger, consent=Consent(yes=yes, no_input=not yes))


def test_restore_last_clean_restores_the_moment_found_and_keeps_the_good_rows_after_it(replication, pitr_env, sqlite_path,
                                                                                       sqlite_url, tmp_path):
    from integrity import api
    from integrity.pitr.operations import LastCleanRestore

    engine = replication.start()
    with Game(sqlite_url) as game, Writer(sqlite_url):
        game.play_clean_history(2)
        clean_wpm = wpm_by_id(sqlite_path)
        restorable_moment_after(engine, datetime.now(UTC))
        damaged_at = datetime.now(UTC)
        damaged = damage(sqlite_url)
        for _ in range(2):
            game.play("after_damage")
        restorable_moment_after(engine, datetime.now(UTC))
    assert damaged == len(clean_wpm)

    inv = last_clean_invocation(tmp_path, pitr_env, yes=True)
    try:
        result = api.restore_last_clean(inv, keep_newer=True)
    finally:
        inv.ledger.close()
    assert isinstance(result, LastCleanRestore)
    assert result.exit_code == 0, result.error
    search = result.search
    assert damaged_at - timedelta(seconds=1) < search.found < search.first_dirty
    assert search.after is None  # the restore salvages for itself: the search's own count is skipped
    point = result.restored.point_in_time
    assert point.moment == search.found and point.asked.startswith("--last-clean (first dirty ")
    # Live is the moment found (every result as written before the damage) plus the good
    # results written after it, brought back by --keep-newer.
    live_wpm = wpm_by_id(sqlite_path)
    assert {row_id: live_wpm[row_id] for row_id in clean_wpm} == clean_wpm
    assert len(live_wpm) == len(clean_wpm) + 2
    assert "after_damage" in players_in(sqlite_url)


def test_restore_last_clean_that_could_never_be_confirmed_is_refused_before_any_restore(pitr_env, tmp_path):
    from integrity import api
    from integrity.recovery.consent import ConsentRequired

    inv = last_clean_invocation(tmp_path, pitr_env, yes=False)
    try:
        with pytest.raises(ConsentRequired, match="needs consent and --no-input forbids asking; run again with --yes"):
            api.restore_last_clean(inv)
    finally:
        inv.ledger.close()
    assert not (tmp_path / "state" / "scratch").exists() or not list((tmp_path / "state" / "scratch").iterdir())


# ---------------------------------------------------------------- PostgreSQL: pgBackRest


def test_postgresql_last_clean_with_pgbackrest_finds_the_second_before_the_damage():
    """The same search on a throwaway cluster archiving through the real pgBackRest: each
    probe a restore into a scratch cluster; the lower bound the window's oldest point (no
    audit in the ledger), one second after the full backup."""
    from pitr_helpers import archive_everything, archived_game, postgres_running_in, server_now, wait_for_server_clock

    # Skips without pgbackrest (fails under INTEGRITY_REQUIRE_POSTGRES=1).
    with archived_game(players=3, results_per_player=3) as archived:
        cluster, engine, env = archived.cluster, archived.engine, archived.env
        wait_for_server_clock(cluster, archived.backup.stopped + timedelta(seconds=2), what="the backup's seconds to pass")
        with Game(env.url) as game:
            game.play("before_damage")
            played = server_now(cluster)
            # The damage a second or more into the window, so that the search has steps before it,
            # and more than a second after the clean play: the search's resolution is a second,
            # so a play in the damage's own second may fall after the moment it finds (seen once
            # on a loaded machine: three results to re-apply, not two).
            wait_for_server_clock(cluster, max(archived.backup.stopped + timedelta(seconds=3),
                                               played + timedelta(seconds=1.5)), what="a second in the window")
            damaged_at = server_now(cluster)
            damaged = damage(env.url)
            game.play("after_damage")
            game.play("after_damage")
        archive_everything(cluster, engine)

        code, document = env.invoke_json("pitr", "last-clean")
        assert code == 0, document
        report = document["result"]
        assert report["engine"] == "pgbackrest" and report["lower_source"] == "the oldest restorable point"
        found = datetime.fromisoformat(report["found"])
        first_dirty = datetime.fromisoformat(report["first_dirty"])
        assert damaged_at - timedelta(seconds=1) < found < first_dirty <= found + timedelta(seconds=1)
        probes = report["bisection"]["probes"]
        assert report["restores"] == len([p for p in probes if p["role"] != "confirm"]) <= report["bisection"]["bound"]
        dirty = [probe for probe in probes if not probe["clean"]]
        assert dirty and all(any(rule["rule"] == "results.wpm_recomputed" for rule in probe["failing_rules"]) for probe in dirty)
        assert report["after"]["would_reapply"] == {"players": 1, "results": 2}
        assert report["after"]["left_out"] == {"results: changed": damaged}
        assert not any(postgres_running_in(path) for path in (archived.home / "state" / "scratch").glob("*"))
