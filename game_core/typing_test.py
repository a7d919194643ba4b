"""The pure typing engine: target words plus timed key presses in, Monkeytype's counts out.

No terminal, clock or database here: the raw terminal UI, the line mode and the tests
all feed the same `TypingTest` with `press(key, at_ms)` and read the same `TestCounts`.
Times are milliseconds on any monotonic clock; only differences matter.

Keys (Monkeytype's defaults: stop on error off, confidence mode off, strict space off):

- a character is appended to the current word's input and judged at once: a correct
  keystroke when it equals the target character at that position, an incorrect one
  otherwise (also when it is typed beyond the word's end). At most
  `EXTRA_CHAR_LIMIT` characters beyond a word's length are accepted; further ones are
  ignored and count as nothing;
- a space ends the current word and moves to the next one. It is judged as one
  keystroke: correct when the word's input equals the target word, incorrect otherwise.
  A space on a word with no input is ignored (it is not a keystroke and skips nothing);
- a backspace deletes the last character of the current word's input; on an empty
  input it returns into the previous word, but only when that word is wrong (a correct
  word is locked). It counts as neither a correct nor an incorrect keystroke;
- the test starts at the first accepted character.

The end (and so t, the duration, measured from the first accepted character):

- words mode: when the last word's input becomes equal to the target (at that
  character), or when a space is pressed on the last word (at that space);
- time mode: at first character + the time limit, exactly; key presses at or after that
  instant are ignored. (Should the prompt run out first, the test ends as in words mode.)

The counts, over the words from the first to the current one (the "history"; in time
mode the current word is included even when empty, as Monkeytype's timer does):

- a word whose input equals its target adds its length to correct_word_chars and to
  correct_chars;
- any other word is compared character by character up to the longer of the two:
  positions present in both add to correct_chars or incorrect_chars, input beyond the
  target adds to extra_chars, target beyond the input adds to missed_chars;
- except the last word of a time-mode test, cut by the timer: its untyped rest is not
  missed, and when every character typed so far is right those characters also add to
  correct_word_chars (a correct word the timer interrupted);
- correct_spaces counts the correct words that are not the last word of the history,
  that is, the correct words the player left with a space. The last word of a
  words-mode test has no space, so a perfect test of n words has n - 1 correct spaces;
- correct_keystrokes and incorrect_keystrokes are the key presses as judged when they
  were pressed (see above), so a typo fixed with backspace still counts as one
  incorrect keystroke while the fixed character counts as correct.

Where we differ from Monkeytype: its raw wpm counts every space, while DESIGN.md (and so
`game_core.metrics`) counts correct spaces only; no other space count is kept.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import TYPE_CHECKING, Iterable, Sequence

from game_core import metrics

if TYPE_CHECKING:  # the engine stays importable without the store (and SQLAlchemy)
    from game_core.store import TestOutcome

SPACE = " "
BACKSPACE = "\b"
EXTRA_CHAR_LIMIT = 20
MODES = ("words", "time")


@dataclass(frozen=True)
class KeyEvent:
    """One key press: a single character, SPACE or BACKSPACE, at a monotonic time."""

    key: str
    at_ms: float


@dataclass(frozen=True)
class TestCounts:
    """Monkeytype's counts of one finished test (see the module docstring)."""

    __test__ = False  # not a pytest test class, whatever its name

    correct_word_chars: int
    correct_spaces: int
    correct_chars: int
    incorrect_chars: int
    extra_chars: int
    missed_chars: int
    correct_keystrokes: int
    incorrect_keystrokes: int
    duration_ms: int


class TestNotFinished(Exception):
    """Counts were asked of a test that has not ended."""

    __test__ = False


class TypingTest:
    """One test in progress: feed it key presses, then read its counts."""

    __test__ = False

    def __init__(self, words: Sequence[str], *, mode: str, mode_param: int):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if not words or any(not w or SPACE in w or BACKSPACE in w for w in words):
            raise ValueError("the prompt needs at least one word, each non-empty and without spaces")
        if mode_param < 1:
            raise ValueError("mode_param must be at least 1")
        self.words: tuple[str, ...] = tuple(words)
        self.mode = mode
        self.mode_param = mode_param
        self.time_limit_ms: int | None = mode_param * 1000 if mode == "time" else None
        self.inputs: list[str] = [""]  # inputs[i] is what the player typed for words[i]
        self.correct_keystrokes = 0
        self.incorrect_keystrokes = 0
        self.started_ms: float | None = None
        self.ended_ms: float | None = None
        self.timed_out = False  # ended by the time limit (not by running out of words)

    # ------------------------------------------------------------------ state

    @property
    def index(self) -> int:
        """The current word."""
        return len(self.inputs) - 1

    @property
    def current_input(self) -> str:
        return self.inputs[-1]

    @property
    def started(self) -> bool:
        return self.started_ms is not None

    @property
    def finished(self) -> bool:
        return self.ended_ms is not None

    @property
    def keystrokes(self) -> int:
        return self.correct_keystrokes + self.incorrect_keystrokes

    @property
    def prompt_keys(self) -> int:
        """Keys that type the whole prompt: its letters and the spaces between words."""
        return sum(len(word) for word in self.words) + len(self.words) - 1

    @property
    def elapsed_ms(self) -> float:
        """From the first key to the end, unrounded (the duration before it is stored)."""
        if self.started_ms is None or self.ended_ms is None:
            raise TestNotFinished("the test has not ended")
        return self.ended_ms - self.started_ms

    def remaining_ms(self, now_ms: float) -> float | None:
        """Time mode: what is left of the limit (the whole limit before the start)."""
        if self.time_limit_ms is None:
            return None
        if self.started_ms is None:
            return float(self.time_limit_ms)
        if self.ended_ms is not None:
            return 0.0
        return max(0.0, self.started_ms + self.time_limit_ms - now_ms)

    # ------------------------------------------------------------------ input

    def tick(self, now_ms: float) -> bool:
        """Let the clock run: ends a time-mode test at its limit. True when finished."""
        if self.finished:
            return True
        if self.time_limit_ms is not None and self.started_ms is not None:
            if now_ms >= self.started_ms + self.time_limit_ms:
                self._time_out()
        return self.finished

    def press(self, key: str, at_ms: float) -> bool:
        """Apply one key press; False when it was ignored (test over, or nothing to do)."""
        if self.tick(at_ms):
            return False
        if key == BACKSPACE:
            return self._backspace()
        if key == SPACE:
            return self._space(at_ms)
        if len(key) != 1 or not key.isprintable() or key.isspace():
            raise ValueError(f"not a key the engine knows: {key!r}")
        return self._character(key, at_ms)

    def feed(self, events: Iterable[KeyEvent]) -> TypingTest:
        for event in events:
            self.press(event.key, event.at_ms)
        return self

    def end_of_input(self) -> None:
        """The player stopped (line mode at end of input): a time test runs out its clock.

        A words test is not ended by this: it ends only on its last word.
        """
        if self.time_limit_ms is not None and self.started_ms is not None and not self.finished:
            self._time_out()

    def _time_out(self) -> None:
        self.ended_ms = self.started_ms + self.time_limit_ms
        self.timed_out = True

    def _character(self, char: str, at_ms: float) -> bool:
        target = self.words[self.index]
        typed = self.current_input
        if len(typed) >= len(target) + EXTRA_CHAR_LIMIT:
            return False
        if self.started_ms is None:
            self.started_ms = at_ms
        position = len(typed)
        if position < len(target) and target[position] == char:
            self.correct_keystrokes += 1
        else:
            self.incorrect_keystrokes += 1
        self.inputs[-1] = typed + char
        if self.index == len(self.words) - 1 and self.inputs[-1] == target:
            self.ended_ms = at_ms
        return True

    def _space(self, at_ms: float) -> bool:
        if not self.current_input:
            return False
        if self.current_input == self.words[self.index]:
            self.correct_keystrokes += 1
        else:
            self.incorrect_keystrokes += 1
        if self.index == len(self.words) - 1:
            self.ended_ms = at_ms
        else:
            self.inputs.append("")
        return True

    def _backspace(self) -> bool:
        if self.current_input:
            self.inputs[-1] = self.current_input[:-1]
            return True
        if self.index > 0 and self.inputs[-2] != self.words[self.index - 1]:
            self.inputs.pop()
            return True
        return False

    # ------------------------------------------------------------------ result

    def counts(self) -> TestCounts:
        """The counts of the finished test; raises TestNotFinished before the end."""
        if self.started_ms is None or self.ended_ms is None:
            raise TestNotFinished("the test has not ended")
        history = self.inputs
        c = dict(correct_word_chars=0, correct_spaces=0, correct_chars=0, incorrect_chars=0, extra_chars=0, missed_chars=0)
        last = len(history) - 1
        for i, typed in enumerate(history):
            target = self.words[i]
            if typed == target:
                c["correct_word_chars"] += len(target)
                c["correct_chars"] += len(target)
                if i < last:
                    c["correct_spaces"] += 1
                continue
            correct = sum(1 for a, b in zip(typed, target) if a == b)
            incorrect = min(len(typed), len(target)) - correct
            c["correct_chars"] += correct
            c["incorrect_chars"] += incorrect
            c["extra_chars"] += max(0, len(typed) - len(target))
            if len(typed) < len(target) and i == last and self.timed_out:
                if incorrect == 0:
                    c["correct_word_chars"] += correct
            else:
                c["missed_chars"] += max(0, len(target) - len(typed))
        return TestCounts(
            **c,
            correct_keystrokes=self.correct_keystrokes,
            incorrect_keystrokes=self.incorrect_keystrokes,
            duration_ms=round(self.ended_ms - self.started_ms),
        )

    def outcome(self, started_at: datetime) -> TestOutcome:
        """The finished test as the store's `TestOutcome` (started_at: aware UTC)."""
        from game_core.store import TestOutcome

        counts = self.counts()
        return TestOutcome(
            mode=self.mode,
            mode_param=self.mode_param,
            started_at=started_at,
            duration_ms=counts.duration_ms,
            correct_word_chars=counts.correct_word_chars,
            correct_spaces=counts.correct_spaces,
            correct_chars=counts.correct_chars,
            incorrect_chars=counts.incorrect_chars,
            extra_chars=counts.extra_chars,
            missed_chars=counts.missed_chars,
            correct_keystrokes=counts.correct_keystrokes,
            incorrect_keystrokes=counts.incorrect_keystrokes,
        )


def run(words: Sequence[str], events: Iterable[KeyEvent], *, mode: str, mode_param: int) -> TestCounts:
    """Feed every event to a fresh test and return its counts (the test must end)."""
    test = TypingTest(words, mode=mode, mode_param=mode_param)
    test.feed(events)
    test.end_of_input()
    return test.counts()


# ---------------------------------------------------------------------- prompts


def load_words() -> list[str]:
    """The shipped word list (game_core/words.txt), in file order."""
    text = resources.files("game_core").joinpath("words.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def prompt_words(count: int, *, seed: int | None, vocabulary: Sequence[str] | None = None) -> list[str]:
    """`count` random words (the same for the same seed), never one word twice in a row."""
    vocabulary = list(vocabulary if vocabulary is not None else load_words())
    rng = random.Random(seed)
    chosen: list[str] = []
    while len(chosen) < count:
        word = rng.choice(vocabulary)
        if chosen and word == chosen[-1] and len(set(vocabulary)) > 1:
            continue
        chosen.append(word)
    return chosen


def shortest_prompt_keys() -> int:
    """The fewest keys a words-mode prompt needs so that nobody types it in under a second.

    A test shorter than a second is refused before it starts rather than kept. DESIGN's
    plausible range is a duration of 1 s or more: the store refuses less, and the audit rule
    `results.duration_min` flags it, which is how a writer storing seconds instead of
    milliseconds is caught. And a sub-second wpm means little: t runs from the first key to
    the last, so k keys span k - 1 intervals, and a two-letter word typed at 150 wpm scores
    300. So the game refuses, before the test, a prompt that even `metrics.IMPOSSIBLE_WPM`
    (5 keys a word) would finish in under `metrics.MIN_DURATION_MS`; a time test always lasts
    its whole limit. What still ends sooner was not typed (a paste, piped input): the game
    says so and saves nothing.
    """
    keys_per_ms = metrics.IMPOSSIBLE_WPM * metrics.CHARS_PER_WORD / 60_000
    return 1 + math.ceil(metrics.MIN_DURATION_MS * keys_per_ms)


def time_mode_word_count(seconds: int) -> int:
    """Enough words that nobody runs out: 8 per second is above 400 wpm of 5-letter words."""
    return max(50, seconds * 8)


# ---------------------------------------------------------------------- line mode


def keys_of_text(text: str) -> list[str]:
    """Typed text as key presses: whitespace is a space (a line's end is Enter, which acts
    as space); BS and DEL are backspace; other control characters are dropped."""
    keys = []
    for char in text:
        if char in ("\b", "\x7f"):
            keys.append(BACKSPACE)
        elif char.isspace():
            keys.append(SPACE)
        elif char.isprintable():
            keys.append(char)
    return keys


def scripted_events(text: str, duration_ms: float) -> list[KeyEvent]:
    """All of `text` typed evenly over `duration_ms`: its first key at 0 and its last
    non-space key at `duration_ms`, then one closing space (the final Enter) at the same
    instant, so a words test ends exactly `duration_ms` after its first key."""
    keys = keys_of_text(text.strip())
    if not keys:
        return []
    if len(keys) == 1:
        times = [0.0]
    else:
        step = duration_ms / (len(keys) - 1)
        times = [i * step for i in range(len(keys))]
        times[-1] = float(duration_ms)
    return [KeyEvent(k, t) for k, t in zip(keys, times)] + [KeyEvent(SPACE, times[-1])]


def line_events(line: str, previous_ms: float, arrived_ms: float) -> list[KeyEvent]:
    """One line read at `arrived_ms` (the previous at `previous_ms`): its keys spread over
    the time between, the line's end (Enter, a space) at `arrived_ms`.

    Line mode cannot see individual key presses, so this is the best estimate."""
    keys = keys_of_text(line.rstrip("\r\n")) + [SPACE]
    span = max(0.0, arrived_ms - previous_ms)
    return [KeyEvent(k, previous_ms + span * (i + 1) / len(keys)) for i, k in enumerate(keys)]
