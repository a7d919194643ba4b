"""The pure typing engine on hand-made key sequences, with exact expected counts.

Key strings: every character is a key press, "<" is backspace; presses are STEP ms apart
starting at 0, so durations are exact too.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

from game_core import metrics
from game_core.typing_test import (
    BACKSPACE,
    EXTRA_CHAR_LIMIT,
    SPACE,
    KeyEvent,
    TestCounts,
    TestNotFinished,
    TypingTest,
    keys_of_text,
    line_events,
    load_words,
    prompt_words,
    run,
    scripted_events,
    time_mode_word_count,
)

STEP = 100


def events(keys: str, step: float = STEP, start: float = 0.0) -> list[KeyEvent]:
    return [KeyEvent(BACKSPACE if k == "<" else k, start + i * step) for i, k in enumerate(keys)]


def counts(words: str, keys: str, *, mode: str = "words", param: int | None = None, step: float = STEP) -> TestCounts:
    targets = words.split()
    return run(targets, events(keys, step), mode=mode, mode_param=param or len(targets))


def expected(**values) -> TestCounts:
    base = dict(
        correct_word_chars=0,
        correct_spaces=0,
        correct_chars=0,
        incorrect_chars=0,
        extra_chars=0,
        missed_chars=0,
        correct_keystrokes=0,
        incorrect_keystrokes=0,
        duration_ms=0,
    )
    base.update(values)
    return TestCounts(**base)


# ---------------------------------------------------------------- words mode


def test_correct_words_end_on_the_last_character():
    assert counts("the cat", "the cat") == expected(
        correct_word_chars=6, correct_spaces=1, correct_chars=6, correct_keystrokes=7, duration_ms=600
    )


def test_a_typo_fixed_with_backspace_still_costs_one_keystroke():
    # t h w(wrong) <(neither) e space c a t
    assert counts("the cat", "thw<e cat") == expected(
        correct_word_chars=6,
        correct_spaces=1,
        correct_chars=6,
        correct_keystrokes=7,
        incorrect_keystrokes=1,
        duration_ms=800,
    )


def test_an_extra_character_spoils_the_word_and_its_space():
    # "thee": 3 correct + 1 extra; the space after a wrong word is an incorrect keystroke.
    assert counts("the cat", "thee cat") == expected(
        correct_word_chars=3,
        correct_spaces=0,
        correct_chars=6,
        extra_chars=1,
        correct_keystrokes=6,
        incorrect_keystrokes=2,
        duration_ms=700,
    )


def test_a_word_left_early_with_space_has_missed_characters():
    assert counts("the quick cat", "the qu cat") == expected(
        correct_word_chars=6,
        correct_spaces=1,
        correct_chars=8,
        missed_chars=3,
        correct_keystrokes=9,
        incorrect_keystrokes=1,
        duration_ms=900,
    )


def test_wrong_characters_in_place_are_incorrect_chars():
    assert counts("the cat", "tha cat") == expected(
        correct_word_chars=3,
        correct_chars=5,
        incorrect_chars=1,
        correct_keystrokes=5,
        incorrect_keystrokes=2,
        duration_ms=600,
    )


def test_a_wrong_last_word_ends_on_space_and_that_space_is_incorrect():
    assert counts("the cat", "the cot ") == expected(
        correct_word_chars=3,
        correct_spaces=1,
        correct_chars=5,
        incorrect_chars=1,
        correct_keystrokes=6,
        incorrect_keystrokes=2,
        duration_ms=700,
    )


def test_a_short_last_word_ended_with_space_counts_its_missed_characters():
    assert counts("the cat", "the ca ") == expected(
        correct_word_chars=3,
        correct_spaces=1,
        correct_chars=5,
        missed_chars=1,
        correct_keystrokes=6,
        incorrect_keystrokes=1,
        duration_ms=600,
    )


def test_backspace_returns_into_a_wrong_previous_word():
    # "tha" + space (both wrong), back into "tha", delete "a", type "e", space, "cat".
    assert counts("the cat", "tha <<e cat") == expected(
        correct_word_chars=6,
        correct_spaces=1,
        correct_chars=6,
        correct_keystrokes=7,
        incorrect_keystrokes=2,
        duration_ms=1000,
    )


def test_backspace_cannot_return_into_a_correct_word():
    test = TypingTest(["the", "cat"], mode="words", mode_param=2)
    test.feed(events("the <"))
    assert test.index == 1 and test.inputs == ["the", ""]
    test.feed(events("cat", start=1000))
    assert test.counts().correct_word_chars == 6


def test_spaces_on_an_empty_word_are_ignored_and_skip_nothing():
    # Leading and doubled spaces: no keystroke, no word skipped; the test starts at "t".
    assert counts("the cat", "  the  cat") == expected(
        correct_word_chars=6, correct_spaces=1, correct_chars=6, correct_keystrokes=7, duration_ms=700
    )


def test_backspace_and_spaces_before_the_start_do_not_start_the_clock():
    test = TypingTest(["go"], mode="words", mode_param=1)
    assert test.press(BACKSPACE, 0) is False
    assert test.press(SPACE, 50) is False
    assert not test.started
    test.feed([KeyEvent("g", 500), KeyEvent("o", 1700)])
    assert test.counts().duration_ms == 1200


def test_extra_characters_stop_at_the_limit():
    keys = "ab" + "x" * (EXTRA_CHAR_LIMIT + 5) + " c"
    result = counts("ab c", keys)
    assert result.extra_chars == EXTRA_CHAR_LIMIT
    assert result.incorrect_keystrokes == EXTRA_CHAR_LIMIT + 1  # the accepted extras and the space


def test_keys_after_the_end_are_ignored():
    test = TypingTest(["hi"], mode="words", mode_param=1)
    test.feed(events("hi there"))
    assert test.finished and test.inputs == ["hi"]
    assert test.counts() == expected(correct_word_chars=2, correct_chars=2, correct_keystrokes=2, duration_ms=100)


def test_an_unfinished_words_test_has_no_counts():
    test = TypingTest(["the", "cat"], mode="words", mode_param=2)
    test.feed(events("the ca"))
    test.end_of_input()  # running out of input does not end a words test
    with pytest.raises(TestNotFinished):
        test.counts()


# ---------------------------------------------------------------- time mode


def test_time_mode_cuts_the_last_word_mid_word_without_missing_it():
    # 80 ms apart: "the quick bro" fits before 1000 ms, "w" at 1040 ms is too late.
    assert counts("the quick brown fox", "the quick brown", mode="time", param=1, step=80) == expected(
        correct_word_chars=11,  # the + quick + "bro" (all correct so far)
        correct_spaces=2,
        correct_chars=11,
        correct_keystrokes=13,
        duration_ms=1000,
    )


def test_time_mode_cut_word_with_a_typo_adds_nothing_to_correct_word_chars():
    assert counts("the quick brown fox", "the quick brxwn", mode="time", param=1, step=80) == expected(
        correct_word_chars=8,
        correct_spaces=2,
        correct_chars=10,
        incorrect_chars=1,
        correct_keystrokes=12,
        incorrect_keystrokes=1,
        duration_ms=1000,
    )


def test_time_mode_space_just_before_the_limit_counts_as_a_correct_space():
    # "the quick " ends at 720 ms; the empty current word is part of the history.
    assert counts("the quick brown", "the quick ", mode="time", param=1, step=80) == expected(
        correct_word_chars=8, correct_spaces=2, correct_chars=8, correct_keystrokes=10, duration_ms=1000
    )


def test_time_mode_lasts_the_whole_limit_when_the_player_stops():
    test = TypingTest(["the", "cat"], mode="time", mode_param=30)
    test.feed(events("the"))
    assert not test.finished
    assert test.remaining_ms(1200) == pytest.approx(28_800)
    test.end_of_input()
    assert test.counts().duration_ms == 30_000


def test_time_mode_tick_ends_the_test_at_the_limit():
    test = TypingTest(["the", "cat"], mode="time", mode_param=2)
    assert test.remaining_ms(5_000) == 2000  # the clock starts at the first key
    test.press("t", 10_000)
    assert test.tick(11_999) is False
    assert test.tick(12_000) is True
    assert test.press("h", 12_001) is False
    assert test.counts().duration_ms == 2000


# ---------------------------------------------------------------- the numbers downstream


def test_counts_give_monkeytype_wpm_raw_and_accuracy():
    result = counts("the cat", "thw<e cat")
    assert metrics.wpm(result.correct_word_chars, result.correct_spaces, result.duration_ms) == 105.0  # 7/5 per 0.8 s
    assert metrics.accuracy(result.correct_keystrokes, result.incorrect_keystrokes) == 87.5


def test_outcome_carries_every_count_to_the_store():
    test = TypingTest(["the", "cat"], mode="words", mode_param=2).feed(events("thee cat"))
    started = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    outcome = test.outcome(started)
    assert (outcome.mode, outcome.mode_param, outcome.started_at) == ("words", 2, started)
    for name, value in vars(test.counts()).items():
        assert getattr(outcome, name) == value, name


def test_the_engine_rejects_impossible_setups():
    with pytest.raises(ValueError):
        TypingTest([], mode="words", mode_param=1)
    with pytest.raises(ValueError):
        TypingTest(["a b"], mode="words", mode_param=1)
    with pytest.raises(ValueError):
        TypingTest(["a"], mode="sideways", mode_param=1)
    with pytest.raises(ValueError):
        TypingTest(["a"], mode="words", mode_param=1).press("\x1b", 0)


# ---------------------------------------------------------------- line-mode events


def test_keys_of_text_maps_whitespace_to_space_and_del_to_backspace():
    assert keys_of_text("ab\tc\nd\x7fe\bf\x01") == ["a", "b", SPACE, "c", SPACE, "d", BACKSPACE, "e", BACKSPACE, "f"]


def test_scripted_events_span_exactly_the_duration():
    evs = scripted_events("\n the cat \n\n", 1500)
    assert [e.key for e in evs] == list("the cat") + [SPACE]
    assert evs[0].at_ms == 0 and evs[-2].at_ms == 1500 and evs[-1].at_ms == 1500
    assert run(["the", "cat"], evs, mode="words", mode_param=2).duration_ms == 1500
    assert scripted_events(" \n ", 1000) == []


def test_line_events_spread_a_line_up_to_its_arrival():
    evs = line_events("ab\n", 1000, 1300)
    assert [(e.key, e.at_ms) for e in evs] == [("a", 1100), ("b", 1200), (SPACE, 1300)]


# ---------------------------------------------------------------- prompts


def test_the_shipped_word_list_is_about_a_thousand_lowercase_words():
    words = load_words()
    assert 900 <= len(words) <= 1100
    assert len(set(words)) == len(words)
    assert all(re.fullmatch(r"[a-z]+", w) for w in words)


def test_prompts_are_repeatable_for_a_seed_and_never_repeat_a_word_at_once():
    first = prompt_words(200, seed=7)
    assert first == prompt_words(200, seed=7)
    assert first != prompt_words(200, seed=8)
    assert all(a != b for a, b in zip(first, first[1:]))
    assert set(first) <= set(load_words())
    assert prompt_words(5, seed=1, vocabulary=["x"]) == ["x"] * 5


def test_time_mode_prompts_outlast_any_human():
    # 8 words a second of 5 letters plus a space is 480 wpm.
    assert time_mode_word_count(30) * 6 / 5 / 0.5 > metrics.IMPOSSIBLE_WPM
    assert time_mode_word_count(1) >= 50


def test_a_prompt_of_the_shortest_length_takes_a_second_even_at_an_impossible_speed():
    from game_core import metrics
    from game_core.typing_test import shortest_prompt_keys

    keys = shortest_prompt_keys()
    interval_ms = 60_000 / (metrics.IMPOSSIBLE_WPM * metrics.CHARS_PER_WORD)  # one key at 350 wpm
    # The clock starts at the first key: k keys span k - 1 intervals.
    assert (keys - 1) * interval_ms >= metrics.MIN_DURATION_MS
    assert (keys - 2) * interval_ms < metrics.MIN_DURATION_MS  # and it is the shortest such prompt


def test_prompt_keys_and_the_unrounded_elapsed_time():
    import pytest

    from game_core.typing_test import KeyEvent, TestNotFinished, TypingTest

    test = TypingTest(["ab", "c"], mode="words", mode_param=2)
    assert test.prompt_keys == 4  # a, b, space, c
    with pytest.raises(TestNotFinished):
        test.elapsed_ms
    test.feed([KeyEvent("a", 10.25), KeyEvent("b", 10.5), KeyEvent(" ", 10.75), KeyEvent("c", 10.75)])
    assert test.finished and test.elapsed_ms == 0.5
