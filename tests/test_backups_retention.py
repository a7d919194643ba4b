"""Retention (DESIGN.md invariants 9 and 11) on a synthetic calendar: exactly what the policy
keeps survives; the newest restorable, the newest deep-verified and pinned backups never go;
bad backups never count toward keep_*;
a pin that expired no longer protects; `--dry-run` deletes nothing; and prune skips a
backup that a reader holds.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from datetime import datetime, timedelta, timezone

import pytest

from backup_helpers import BackupEnv, clone_backup, fill_database
from integrity.backups.catalog import BackupInfo, BackupState, Catalog, fold_journal
from integrity.backups.prune import plan_retention
from integrity.backups.repository import JournalEntry, new_backup_id
from integrity.settings import RetentionSettings

UTC = timezone.utc
NOW = datetime(2026, 3, 18, 12, 0, tzinfo=UTC)  # a Wednesday, ISO week 12
VERIFIED_AT = "2026-03-18T11:59:00+00:00"

# Oldest first. ISO weeks: W10 = Mar 2-8, W11 = Mar 9-15, W12 = Mar 16-22 (2026).
CALENDAR = {
    "a": datetime(2025, 10, 15, 3, 0, tzinfo=UTC),
    "b": datetime(2025, 11, 20, 3, 0, tzinfo=UTC),
    "c": datetime(2025, 11, 28, 3, 0, tzinfo=UTC),
    "d": datetime(2025, 12, 31, 3, 0, tzinfo=UTC),
    "e": datetime(2026, 1, 31, 3, 0, tzinfo=UTC),
    "f": datetime(2026, 2, 20, 3, 0, tzinfo=UTC),
    "g": datetime(2026, 3, 2, 3, 0, tzinfo=UTC),
    "h": datetime(2026, 3, 8, 3, 0, tzinfo=UTC),
    "i": datetime(2026, 3, 14, 3, 0, tzinfo=UTC),
    "j": datetime(2026, 3, 16, 3, 0, tzinfo=UTC),
    "k": datetime(2026, 3, 17, 9, 0, tzinfo=UTC),
    "l": datetime(2026, 3, 17, 23, 0, tzinfo=UTC),
    "m": datetime(2026, 3, 18, 10, 10, tzinfo=UTC),
    "n": datetime(2026, 3, 18, 10, 40, tzinfo=UTC),
    "o": datetime(2026, 3, 18, 11, 30, tzinfo=UTC),
}
POLICY = RetentionSettings(keep_last=2, keep_hourly=3, keep_daily=4, keep_weekly=3, keep_monthly=4)
# keep_last: o n | hourly: o (11h) n (10h; m shares it) l | daily: o l j i | weekly: o (W12) i (W11) h (W10)
# monthly: o (03) f (02) e (01) d (12) | c newest deep-verified | a pinned for ever | b's pin expired
EXPECTED_KEPT = set("onljihfedca")
EXPECTED_DELETED = set("mkgb")
POLICY_ENV = {
    "INTEGRITY_BACKUPS__RETENTION__KEEP_LAST": "2",
    "INTEGRITY_BACKUPS__RETENTION__KEEP_HOURLY": "3",
    "INTEGRITY_BACKUPS__RETENTION__KEEP_DAILY": "4",
    "INTEGRITY_BACKUPS__RETENTION__KEEP_WEEKLY": "3",
    "INTEGRITY_BACKUPS__RETENTION__KEEP_MONTHLY": "4",
}


def _catalog(states: dict[str, BackupState], calendar=CALENDAR) -> tuple[Catalog, dict[str, str]]:
    ids = {name: new_backup_id(when) for name, when in calendar.items()}
    backups = tuple(
        BackupInfo(ids[name], when, "sqlite", 1000, "0001_initial_schema", None, {}, states.get(name, BackupState(intact_at=VERIFIED_AT)),
                   identity="a-store")
        for name, when in sorted(calendar.items(), key=lambda item: item[1])
    )
    return Catalog("/synthetic", backups), ids


def _plan(states: dict[str, BackupState], policy: RetentionSettings = POLICY, calendar=CALENDAR):
    catalog, ids = _catalog(states, calendar)
    names = {backup_id: name for name, backup_id in ids.items()}
    plan = plan_retention(catalog, policy, NOW)
    kept = {names[d.backup_id] for d in plan.decisions if d.keep}
    reasons = {names[d.backup_id]: d.reasons for d in plan.decisions}
    return kept, set(names.values()) - kept, reasons


def test_the_calendar_keeps_exactly_what_the_policy_says():
    states = {
        "c": BackupState(intact_at=VERIFIED_AT, deep_verified_at=VERIFIED_AT),
        "a": BackupState(intact_at=VERIFIED_AT, pinned_until="forever"),
        "b": BackupState(intact_at=VERIFIED_AT, pinned_until="2026-01-01T00:00:00+00:00"),
    }
    kept, deleted, reasons = _plan(states)
    assert kept == EXPECTED_KEPT
    assert deleted == EXPECTED_DELETED
    assert "keep_last" in reasons["o"] and "keep_last" in reasons["n"] and "newest restorable backup" in reasons["o"]
    assert reasons["n"] == ("keep_last", "keep_hourly (2026-03-18 10)")
    assert reasons["l"] == ("keep_hourly (2026-03-17 23)", "keep_daily (2026-03-17)")
    assert reasons["h"] == ("keep_weekly (2026-W10)",)
    assert reasons["d"] == ("keep_monthly (2025-12)",)
    assert reasons["c"] == ("newest deep-verified clean backup",)
    assert reasons["a"] == ("pinned until forever",)
    assert reasons["b"] == ("matches no keep rule",)  # pinned until a time that has passed
    assert reasons["m"] == ("matches no keep rule",)


def test_newest_good_survives_when_newer_ones_are_bad():
    """A new backup must succeed before an old one expires: when the newest are corrupt
    or failed deep verification, the newest good one stays whatever the policy."""
    states = {
        "o": BackupState(intact_at="2026-03-18T11:31:00+00:00", corrupt_at="2026-03-18T11:50:00+00:00"),
        "n": BackupState(intact_at=VERIFIED_AT, deep_failed_at=VERIFIED_AT),
        "c": BackupState(intact_at=VERIFIED_AT, deep_verified_at=VERIFIED_AT),
    }
    minimal = RetentionSettings(keep_last=1, keep_hourly=0, keep_daily=0, keep_weekly=0, keep_monthly=0)
    kept, deleted, reasons = _plan(states, minimal)
    assert kept == {"o", "m", "c"}
    assert reasons["m"] == ("keep_last", "newest restorable backup")
    assert reasons["o"] == ("recent, not counted toward keep_last (corrupt)",)
    assert "n" in deleted


@pytest.mark.parametrize("bad", [
    BackupState(intact_at=VERIFIED_AT, deep_failed_at=VERIFIED_AT),
    BackupState(intact_at=VERIFIED_AT, failed_at=VERIFIED_AT),
    BackupState(intact_at=VERIFIED_AT, suspect_reasons=("results: 6,509 -> 0 rows",)),
    BackupState(intact_at=VERIFIED_AT, dirty_at=VERIFIED_AT),
], ids=["deep-failed", "failed", "suspect", "dirty"])
def test_bad_backups_never_count_toward_keep_last(bad):
    """Issue 13.4: two deep-failed empty backups were kept under keep_last and the
    deep-verified clean one before them marked "would delete"."""
    states = {"o": bad, "n": bad, "m": BackupState(intact_at=VERIFIED_AT, deep_verified_at=VERIFIED_AT, clean_at=VERIFIED_AT)}
    policy = RetentionSettings(keep_last=2, keep_hourly=0, keep_daily=0, keep_weekly=0, keep_monthly=0)
    kept, deleted, reasons = _plan(states, policy)
    assert {"m", "l"} <= kept  # the two newest restorable ones fill keep_last
    assert reasons["m"] == ("keep_last", "newest restorable backup", "newest deep-verified clean backup")
    assert reasons["l"] == ("keep_last",)
    assert reasons["o"][0].startswith("recent, not counted toward keep_last")
    assert "k" in deleted


def test_known_bad_backups_do_not_fill_buckets():
    states = {"o": BackupState(intact_at="2026-03-18T11:31:00+00:00", corrupt_at="2026-03-18T11:50:00+00:00")}
    daily = RetentionSettings(keep_last=1, keep_hourly=0, keep_daily=2, keep_weekly=0, keep_monthly=0)
    kept, _, reasons = _plan(states, daily)
    # o is kept only as the newest; the 03-18 bucket goes to n, the next day to l.
    assert kept == {"o", "n", "l"}
    assert reasons["o"] == ("recent, not counted toward keep_last (corrupt)",)
    assert reasons["n"] == ("keep_last", "keep_daily (2026-03-18)", "newest restorable backup")


def test_pins_from_the_journal_future_past_and_unpinned():
    ids = {name: new_backup_id(when) for name, when in CALENDAR.items()}

    def entry(name, event, **detail):
        return JournalEntry("2026-03-01T00:00:00+00:00", ids[name], event, detail)

    journal = [entry(name, "intact") for name in CALENDAR]
    journal += [
        entry("a", "pinned", until="2026-04-01T00:00:00+00:00"),  # still pinned at NOW
        entry("b", "pinned", until="2026-03-18T11:00:00+00:00"),  # expired an hour before NOW
        entry("g", "pinned", until=None),
        entry("g", "unpinned"),
        entry("k", "pinned", until=None),  # for ever
    ]
    states = {name: state for backup_id, state in fold_journal(journal).items() for name in ids if ids[name] == backup_id}
    catalog = Catalog("/synthetic", tuple(
        BackupInfo(ids[n], CALENDAR[n], "sqlite", 1, None, None, {}, states[n], identity="a-store")
        for n in sorted(CALENDAR, key=CALENDAR.get)
    ))
    none = RetentionSettings(keep_last=1, keep_hourly=0, keep_daily=0, keep_weekly=0, keep_monthly=0)
    plan = plan_retention(catalog, none, NOW)
    kept = {n for n in ids for d in plan.decisions if d.backup_id == ids[n] and d.keep}
    assert kept == {"o", "a", "k"}


@pytest.mark.parametrize("seed", range(40))
def test_invariants_hold_on_random_calendars(seed):
    rng = random.Random(seed)
    start = NOW - timedelta(days=400)
    calendar = {f"x{i}": start + timedelta(seconds=rng.randrange(400 * 86400)) for i in range(rng.randint(1, 40))}
    states = {}
    for name in calendar:
        roll = rng.random()
        states[name] = BackupState(
            intact_at=VERIFIED_AT,
            corrupt_at="2026-03-18T11:59:30+00:00" if roll < 0.15 else None,
            deep_verified_at=VERIFIED_AT if 0.15 <= roll < 0.35 else None,
            deep_failed_at="2026-03-18T11:59:30+00:00" if 0.35 <= roll < 0.45 else None,
            pinned_until=rng.choice([None] * 8 + ["forever", "2026-03-19T00:00:00+00:00", "2026-03-01T00:00:00+00:00"]),
        )
    policy = RetentionSettings(
        keep_last=rng.randint(1, 5), keep_hourly=rng.randint(0, 5), keep_daily=rng.randint(0, 5),
        keep_weekly=rng.randint(0, 5), keep_monthly=rng.randint(0, 5),
    )
    catalog, ids = _catalog(states, calendar)
    plan = plan_retention(catalog, policy, NOW)
    kept = {d.backup_id for d in plan.decisions if d.keep}
    assert [d.backup_id for d in plan.decisions] == [b.id for b in reversed(catalog.backups)]
    for backup in catalog.backups[-policy.keep_last:]:
        assert backup.id in kept
    for special in (catalog.newest_restorable(), catalog.newest_deep_verified()):
        if special is not None:
            assert special.id in kept
    for backup in catalog.backups:
        if backup.state.pinned(NOW):
            assert backup.id in kept
    assert len(kept) >= min(policy.keep_last, len(catalog.backups))


# ---------------------------------------------------------------- end to end on real backups


@pytest.fixture
def calendar_repository(tmp_path, sqlite_url):
    """Real backups (one real one, cloned) dated by the calendar, in a real repository."""
    fill_database(sqlite_url, players=2, results_per_player=5)
    env = BackupEnv(tmp_path, sqlite_url, extra_env=POLICY_ENV)
    original = env.create()
    repository = env.repository()
    ids = {name: clone_backup(repository, original, when) for name, when in CALENDAR.items()}
    shutil.rmtree(repository.path_of(original))
    repository.append(ids["c"], "deep_verified", {"by": "test"})
    repository.append(ids["b"], "pinned", {"until": "2026-01-01T00:00:00+00:00"})  # expired
    return env, ids


def test_prune_end_to_end_dry_run_then_apply(calendar_repository):
    env, ids = calendar_repository
    names = {backup_id: name for name, backup_id in ids.items()}
    pinned = env.invoke("backup", "pin", ids["a"])
    assert pinned.returncode == 0, pinned.output
    before = sorted(p.name for p in env.repo.iterdir())

    dry = env.run("backup", "prune", "--dry-run")  # the real CLI, as an operator runs it
    assert dry.returncode == 0, dry.stderr
    assert sorted(p.name for p in env.repo.iterdir()) == before
    assert "pruned" not in {e.event for e in env.repository().journal()}
    would_delete = {names[line.split()[1]] for line in dry.stdout.splitlines() if "would delete" in line}
    assert would_delete == EXPECTED_DELETED

    code, document = env.invoke_json("backup", "prune")
    assert code == 0, document
    assert {names[i] for i in document["result"]["deleted"]} == EXPECTED_DELETED
    assert document["result"]["skipped"] == []
    assert {names[i] for i in env.listed_ids()} == EXPECTED_KEPT
    pruned = {names[e.backup_id] for e in env.repository().journal() if e.event == "pruned"}
    assert pruned == EXPECTED_DELETED
    assert not [p for p in env.repo.iterdir() if p.name.startswith(".tmp-")]
    assert env.invoke("backup", "verify", "--all").returncode == 0

    # Applying the same policy again deletes nothing more.
    code, document = env.invoke_json("backup", "prune")
    assert code == 0 and document["result"]["deleted"] == []


def test_prune_skips_a_backup_a_reader_holds(tmp_path, sqlite_url):
    fill_database(sqlite_url, players=2, results_per_player=5)
    env = BackupEnv(tmp_path, sqlite_url, extra_env={
        "INTEGRITY_BACKUPS__RETENTION__KEEP_LAST": "1",
        **{f"INTEGRITY_BACKUPS__RETENTION__KEEP_{unit}": "0" for unit in ("HOURLY", "DAILY", "WEEKLY", "MONTHLY")},
    })
    newest = env.create()
    repository = env.repository()
    now = datetime.now(UTC)
    old = clone_backup(repository, newest, now - timedelta(days=3))
    older = clone_backup(repository, newest, now - timedelta(days=4))

    with repository.reading(old, command="backup verify"):
        pruned = env.run("--json", "backup", "prune")  # another process
        assert pruned.returncode == 0, pruned.stderr
        document = json.loads(pruned.stdout)["result"]
        assert document["deleted"] == [older]
        (skipped,) = document["skipped"]
        assert skipped["backup_id"] == old
        assert f"locked by 'backup verify' (pid {os.getpid()} on" in skipped["reason"]
        assert repository.path_of(old).is_dir()
        text = env.run("backup", "prune")
        assert text.returncode == 0
        assert any(old in line and "skipped (in use)" in line for line in text.stdout.splitlines()), text.stdout
    assert repository.path_of(old).is_dir()
    assert "pruned" not in env.journal_events(old)
    assert env.invoke("backup", "verify", old).returncode == 0

    code, document = env.invoke_json("backup", "prune")
    assert code == 0 and document["result"]["deleted"] == [old]
    assert env.listed_ids() == [newest]
