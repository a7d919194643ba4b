"""Audits in the situations they exist for: schema drift, an incident, incremental runs.

- A missing table or column, or one of another type, is a `schema.<table>` finding that
  spells out the difference; the rules that need it are reported skipped, the others
  still run.
- The incident this project exists for, replayed: wpm rewritten in the wrong unit for
  30% of the results, levels reset to 1 for 80% of the players, orphaned progress; every
  rule reports the exact count, computed here independently from the planted data.
- `since`: row rules look only at rows above the watermarks of the previous run;
  cross-table rules always look at everything.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import timedelta

import pytest
import sqlalchemy as sa

from checks import RULES
from game_core.db import create_engine
from game_core.schema import personal_bests, players, progress, results
import test_checks_support
from test_checks_support import (
    NOW,
    SEED_START,
    add_results,
    audit,
    counts,
    fetch,
    planting,
    rebuild,
    result_row,
    run_listing_sql,
    seed,
    violated,
)

readers_closed = test_checks_support.readers_closed  # autouse: each test's engines closed
ENGINES = ("sql", "pandera")


def _execute(url: str, *statements: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)
    engine.dispose()


# ---------------------------------------------------------------- schema drift


WPM_OR_DURATION = {
    "results.wpm_non_negative", "results.duration_min", "results.wpm_suspicious", "results.wpm_impossible",
    "results.raw_wpm_not_below_wpm", "results.wpm_recomputed", "results.raw_wpm_recomputed",
    # the cross-table rules that aggregate results' wpm or duration
    "progress.player_exists", "progress.xp_matches_results", "progress.level_matches_results",
    "progress.tests_completed_matches_results", "progress.time_typing_matches_results",
    "progress.best_wpm_matches_results", "personal_bests.player_exists", "personal_bests.result_exists",
    "personal_bests.result_matches", "personal_bests.is_best", "personal_bests.complete",
}


@pytest.mark.parametrize("engine", ENGINES)
def test_missing_columns_are_a_schema_finding_and_the_other_rules_still_run(seeded_url, engine):
    with planting(seeded_url) as connection:
        (bad,) = add_results(connection, 1, [{"accuracy": 150}])
    _execute(
        seeded_url,
        "ALTER TABLE results RENAME COLUMN wpm TO wpm_x100",
        "ALTER TABLE results RENAME COLUMN duration_ms TO duration_s",
    )
    report = audit(seeded_url, engine=engine)
    schema = report.finding("schema.results")
    assert (schema.failing_rows, schema.checked_rows, schema.status) == (2, 19, "fail")
    assert schema.detail == (
        "results.duration_ms is missing (expected integer NOT NULL); results.wpm is missing (expected number NOT NULL)"
    )
    assert schema.sample_keys == ("duration_ms", "wpm")
    assert {f.rule.id for f in report.skipped} == WPM_OR_DURATION
    assert all("cannot read results.wpm" in f.skipped or "results.duration_ms" in f.skipped for f in report.skipped)
    assert all(not f.passed and f.failing_rows == 0 and f.status == "skipped" for f in report.skipped)
    # Everything else ran, and still finds what it should.
    assert violated(report) == {"schema.results": 2, "results.accuracy_range": 1, "results.accuracy_recomputed": 1}
    assert report.finding("results.accuracy_range").sample_keys == (bad,)
    assert report.finding("results.xp_recomputed").checked_rows == 6
    # The listing SQL of a rule that ran still runs as printed: it lists the columns that remain.
    assert [row[0] for row in run_listing_sql(seeded_url, report.finding("results.accuracy_range").sql)] == [bad]
    assert not report.ok and report.to_dict()["skipped"] == len(WPM_OR_DURATION)
    # The finding's SQL shows the table's columns as the database has them.
    listed = {row[0] for row in run_listing_sql(seeded_url, schema.sql)}
    assert {"wpm_x100", "duration_s", "accuracy"} <= listed and "wpm" not in listed
    # A rule asked for by itself brings the schema finding that explains its skip.
    alone = audit(seeded_url, engine=engine, rules=["results.wpm_recomputed"])
    assert [(f.rule.id, f.status) for f in alone.findings] == [("schema.results", "fail"), ("results.wpm_recomputed", "skipped")]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_missing_table_is_a_schema_finding(seeded_url, engine):
    _execute(seeded_url, "DROP TABLE personal_bests")
    report = audit(seeded_url, engine=engine)
    finding = report.finding("schema.personal_bests")
    assert (finding.failing_rows, finding.checked_rows, finding.detail) == (6, 6, "table personal_bests is missing")
    assert {f.rule.id for f in report.skipped} == {
        r.id for r in RULES if r.table == "personal_bests" and r.kind != "schema"
    }
    assert violated(report) == {"schema.personal_bests": 6}
    assert report.finding("progress.xp_matches_results").status == "ok"
    assert report.watermarks == {"players": 2, "results": 5}


@pytest.mark.postgres
@pytest.mark.parametrize("engine", ENGINES)
def test_a_changed_column_type_is_a_schema_finding(pg_url, engine):
    """The incident's migration: numeric(7,2) to integer keeps every row and changes every
    value. The rules still run on the integers and catch the rounding; a text column
    cannot be compared with numbers on PostgreSQL, so its rules are skipped instead."""
    engine_ = create_engine(pg_url)
    with engine_.begin() as connection:
        seed(connection)
    engine_.dispose()
    _execute(
        pg_url,
        "ALTER TABLE results ALTER COLUMN wpm TYPE integer",
        "ALTER TABLE results ALTER COLUMN duration_ms TYPE text USING duration_ms::text",
        "ALTER TABLE players ALTER COLUMN created_at TYPE timestamp without time zone",
        "ALTER TABLE progress ALTER COLUMN best_wpm DROP NOT NULL",
    )
    report = audit(pg_url, engine=engine)
    assert report.finding("schema.results").detail == (
        "results.duration_ms is text (text), expected integer NOT NULL; "
        "results.wpm is integer (integer), expected number NOT NULL"
    )
    assert report.finding("schema.players").detail == (
        "players.created_at is timestamp without time zone (the catalogue stores UTC instants: with time zone), "
        "expected timestamp NOT NULL"
    )
    assert report.finding("schema.progress").detail == "progress.best_wpm is nullable, expected number NOT NULL"
    assert report.finding("results.wpm_non_negative").status == "ok"  # integers still compare
    assert "results.duration_min" in {f.rule.id for f in report.skipped}
    assert "cannot read results.duration_ms" in report.finding("results.duration_min").skipped


# ---------------------------------------------------------------- the incident


def _build_game(url: str, rng: random.Random) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            sa.insert(players),
            [{"id": p, "username": f"player{p}", "created_at": SEED_START} for p in range(1, 41)],
        )
        rows = []
        for player_id in range(1, 41):
            for test in range(5):
                word_chars = rng.randint(50, 180)
                duration = rng.choice([30_000, 30_000, 60_000, 10_000])
                mode, param = rng.choice([("words", 25), ("words", 50), ("time", 30)])
                row = result_row(
                    player_id,
                    SEED_START + timedelta(days=test, minutes=player_id),
                    derive={"correct_word_chars": word_chars, "correct_chars": word_chars + 10, "duration_ms": duration},
                )
                rows.append({**row, "mode": mode, "mode_param": param})
        connection.execute(sa.insert(results), rows)
        rebuild(connection)
    engine.dispose()


def test_the_incident_is_reported_with_exact_counts(database_url):
    rng = random.Random(7)
    _build_game(database_url, rng)
    before = {row.id: row._asdict() for row in fetch(database_url, sa.select(results))}
    levels = {row.player_id: row.level for row in fetch(database_url, sa.select(progress))}
    bests = [row._asdict() for row in fetch(database_url, sa.select(personal_bests))]
    assert min(levels.values()) > 1 and len(before) == 200

    rewritten = set(rng.sample(sorted(before), 60))  # 30% of the results, in chars per minute
    reset = set(range(1, 33))  # levels reset to 1 for 80% of the players
    deleted = {38, 39, 40}  # players removed behind the foreign keys' back: orphans remain
    with planting(database_url) as connection:
        for result_id in rewritten:
            connection.execute(sa.update(results).where(results.c.id == result_id).values(wpm=before[result_id]["wpm"] * 5))
        connection.execute(sa.update(progress).where(progress.c.player_id.in_(reset)).values(level=1))
        connection.execute(sa.delete(players).where(players.c.id.in_(deleted)))

    # What each rule must report, worked out from the planted data.
    after = {i: {**row, "wpm": row["wpm"] * 5 if i in rewritten else row["wpm"]} for i, row in before.items()}
    best_wpm = defaultdict(float)
    mode_best = defaultdict(float)
    for row in after.values():
        best_wpm[row["player_id"]] = max(best_wpm[row["player_id"]], row["wpm"])
        key = (row["player_id"], row["mode"], row["mode_param"])
        mode_best[key] = max(mode_best[key], row["wpm"])
    stored_best = {row.player_id: row.best_wpm for row in fetch(database_url, sa.select(progress))}
    expected = {
        "results.wpm_recomputed": 60,
        "results.raw_wpm_not_below_wpm": sum(after[i]["wpm"] > after[i]["raw_wpm"] for i in rewritten),
        "results.wpm_suspicious": sum(after[i]["wpm"] > 250 for i in rewritten),
        "results.wpm_impossible": sum(after[i]["wpm"] > 350 and after[i]["duration_ms"] >= 15_000 for i in rewritten),
        "results.player_exists": sum(row["player_id"] in deleted for row in before.values()),
        "progress.level_matches_xp": len(reset),
        "progress.level_matches_results": len(reset),
        "progress.player_exists": len(deleted),
        "progress.best_wpm_matches_results": sum(stored_best[p] != best_wpm[p] for p in stored_best),
        "personal_bests.player_exists": sum(b["player_id"] in deleted for b in bests),
        "personal_bests.result_matches": sum(b["result_id"] in rewritten for b in bests),
        "personal_bests.is_best": sum(b["wpm"] != mode_best[(b["player_id"], b["mode"], b["mode_param"])] for b in bests),
    }
    expected = {rule: count for rule, count in expected.items() if count}
    assert {"results.wpm_suspicious", "results.wpm_impossible", "results.raw_wpm_not_below_wpm"} <= set(expected)
    assert expected["results.wpm_suspicious"] < 60 and expected["progress.best_wpm_matches_results"] < 40

    reports = {engine: audit(database_url, engine=engine) for engine in ENGINES}
    for engine, report in reports.items():
        assert violated(report) == expected, engine
        assert not report.ok
        share = report.finding("results.wpm_recomputed").share
        assert share == pytest.approx(0.3)
        assert report.finding("progress.level_matches_xp").share == pytest.approx(32 / 40)
    assert counts(reports["sql"]) == counts(reports["pandera"])


# ---------------------------------------------------------------- since: incremental runs


@pytest.mark.parametrize("engine", ENGINES)
def test_since_limits_row_rules_to_new_rows_and_cross_rules_to_touched_players(seeded_url, engine):
    first = audit(seeded_url, engine=engine)
    assert first.ok and first.watermarks == {"players": 2, "results": 5}
    with planting(seeded_url) as connection:
        # An old row goes bad behind the watermark: only a full sweep sees it...
        connection.execute(sa.update(results).where(results.c.id == 1).values(accuracy=150))
        new = add_results(connection, 1, [{"accuracy": 101}, {}, {"accuracy": -1}])
        # ... a cache of a player with new results that disagrees is seen at once, one
        # of a player without new rows only by the sweep.
        for player_id in (1, 2):
            connection.execute(sa.update(progress).where(progress.c.player_id == player_id).values(xp=progress.c.xp + 1))
        connection.execute(sa.insert(players).values(id=3, username="carol", created_at=NOW + timedelta(days=1)))
    report = audit(seeded_url, engine=engine, since=first.watermarks)
    assert report.since == {"players": 2, "results": 5}
    assert report.watermarks == {"players": 3, "results": 8}
    accuracy = report.finding("results.accuracy_range")
    assert (accuracy.failing_rows, accuracy.checked_rows, accuracy.sample_keys) == (2, 3, (new[0], new[2]))
    assert [row[0] for row in run_listing_sql(seeded_url, accuracy.sql)] == [new[0], new[2]]
    assert report.finding("players.created_not_in_future").checked_rows == 1
    assert violated(report) == {
        "results.accuracy_range": 2,
        "results.accuracy_recomputed": 2,
        "players.created_not_in_future": 1,
        "progress.xp_matches_results": 1,
    }
    xp = report.finding("progress.xp_matches_results")
    assert (xp.checked_rows, xp.sample_keys) == (1, (1,))  # player 1's row; player 3 has none yet
    assert [row[0] for row in run_listing_sql(seeded_url, xp.sql)] == [1]
    assert report.finding("results.player_exists").checked_rows == 3  # the new results
    # The full sweep sees the old row and player 2 too; a watermark at the top sees nothing.
    full = audit(seeded_url, engine=engine)
    assert full.finding("results.accuracy_range").failing_rows == 3
    assert full.finding("progress.xp_matches_results").failing_rows == 2
    top = audit(seeded_url, engine=engine, since=report.watermarks)
    assert top.finding("results.accuracy_range").checked_rows == 0
    assert top.finding("progress.xp_matches_results").checked_rows == 0
    assert violated(top) == {}
    # A watermark for one table leaves the other table's rows whole.
    results_only = audit(seeded_url, engine=engine, since={"results": 5})
    assert results_only.finding("players.created_not_in_future").checked_rows == 3
