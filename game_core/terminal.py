"""The two ways a person (or a script) plays: raw terminal mode and line mode.

Both feed the same `game_core.typing_test.TypingTest`; neither touches the database.

Raw mode (stdin and stdout are TTYs): the terminal is switched to non-canonical,
no-echo, no-signal mode on the alternate screen, and restored on every way out (the
test ends, Esc, Ctrl-C, an exception, SIGTERM or SIGHUP). Ctrl-C arrives as a byte and
is raised as KeyboardInterrupt after the terminal is restored; Esc abandons the test.
Key presses are timed with the monotonic clock when they are read. Pasted text (bracketed
paste) is ignored with a notice, so a paste never starts or ends a test.

Line mode (stdin is not a TTY): the prompt is printed as one line on stdout, typed lines
are read from stdin; whitespace separates words (a line's end acts as a space), BS/DEL
characters are backspaces. Line mode cannot see single key presses, so each line's
characters are spread evenly over the time since the previous line (see
`typing_test.line_events`), or, with a fixed duration, evenly over that duration.
"""

from __future__ import annotations

import codecs
import os
import select
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator, TextIO

from game_core.errors import InvalidInput
from game_core.typing_test import BACKSPACE, SPACE, TypingTest, line_events, scripted_events

CSI = "\x1b["
RESET = CSI + "0m"
GREEN = CSI + "32m"
RED = CSI + "31m"
EXTRA = CSI + "31;4m"  # extra letters: red, underlined
MISSED = CSI + "2;4m"  # letters left out of a passed word: dim, underlined
DIM = CSI + "2m"
BOLD_YELLOW = CSI + "1;33m"
ALT_SCREEN_ON = CSI + "?1049h"
ALT_SCREEN_OFF = CSI + "?1049l"
SHOW_CURSOR = CSI + "?25h"
STEADY_BAR_CURSOR = CSI + "6 q"  # a thin bar between letters, where the next one goes
DEFAULT_CURSOR = CSI + "0 q"
# Bracketed paste: the terminal wraps pasted text in PASTE_START ... PASTE_END, so a paste
# can be told from typing and ignored: a pasted prompt would end the test at once.
BRACKETED_PASTE_ON = CSI + "?2004h"
BRACKETED_PASTE_OFF = CSI + "?2004l"
PASTE_START = CSI + "200~"
PASTE_END = CSI + "201~"
PASTE_NOTICE = "pasting is not typing: the paste was ignored"

ESC = "\x1b"
CTRL_C = "\x03"
CTRL_W = "\x17"  # delete the current word's input (Monkeytype's ctrl+backspace)
MAX_TEXT_WIDTH = 72
MARGIN = 2
VISIBLE_LINES = 3


@dataclass(frozen=True)
class Played:
    """How a test went: `started_at` (aware UTC, first key press) is set once it started."""

    test: TypingTest
    started_at: datetime | None
    abandoned: bool = False


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def monotonic_ms() -> float:
    return time.monotonic() * 1000


# ---------------------------------------------------------------------- line mode


def play_lines(
    test: TypingTest,
    *,
    stdin: TextIO,
    stdout: TextIO,
    stderr: TextIO,
    duration_ms: int | None = None,
    clock: Callable[[], float] = monotonic_ms,
    wall_clock: Callable[[], datetime] = utc_now,
) -> Played:
    """Print the prompt, read typed lines until the test ends or input does.

    Raises InvalidInput (nothing saved) when nothing was typed or a words test was left
    unfinished. `duration_ms` fixes the time from the first to the last typed character
    (for scripts and tests) instead of measuring it.
    """
    stdout.write(" ".join(test.words) + "\n")
    stdout.flush()
    if test.mode == "words":
        what = f"type the {len(test.words)} words above"
    else:
        what = f"type the words above for {test.mode_param} s"
    stderr.write(f"{what}; Enter or space between words, end of input (Ctrl-D) to stop\n")
    stderr.flush()
    shown_wall, shown_ms = wall_clock(), clock()
    if duration_ms is not None:
        test.feed(scripted_events(stdin.read(), duration_ms))
    else:
        previous = 0.0
        for line in iter(stdin.readline, ""):
            arrived = clock() - shown_ms
            test.feed(line_events(line, previous, arrived))
            previous = arrived
            if test.tick(arrived):
                break
    test.end_of_input()
    if not test.started:
        raise InvalidInput("nothing was typed; type the prompt's words on stdin; nothing saved")
    if not test.finished:
        raise InvalidInput(
            f"the test was not finished: reached word {test.index + 1} of {len(test.words)}; "
            "type all the words (or play a shorter test with --words N); nothing saved"
        )
    return Played(test, started_at=shown_wall + timedelta(milliseconds=test.started_ms))


# ---------------------------------------------------------------------- raw mode


def is_interactive(stdin: TextIO, stdout: TextIO) -> bool:
    try:
        return stdin.isatty() and stdout.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


@contextmanager
def raw_terminal(fd_in: int, fd_out: int) -> Iterator[None]:
    """Non-canonical, no echo, no signal keys, alternate screen; always restored."""
    import termios

    saved = termios.tcgetattr(fd_in)
    previous_handlers = {}

    def interrupt(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous_handlers[signum] = signal.signal(signum, interrupt)
        attrs = termios.tcgetattr(fd_in)
        attrs[0] &= ~(termios.IXON | termios.ICRNL)  # Ctrl-S/Ctrl-Q and Enter as typed
        attrs[3] &= ~(termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
        attrs[6][termios.VMIN] = 1
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(fd_in, termios.TCSAFLUSH, attrs)
        _write(fd_out, ALT_SCREEN_ON + BRACKETED_PASTE_ON + SHOW_CURSOR + STEADY_BAR_CURSOR + CSI + "2J")
        yield
    finally:
        try:
            _write(fd_out, RESET + DEFAULT_CURSOR + SHOW_CURSOR + BRACKETED_PASTE_OFF + ALT_SCREEN_OFF)
        except OSError:  # the terminal went away (SIGHUP): nothing left to restore
            pass
        try:
            # TCSAFLUSH also drops keys typed after the end, so they do not reach the shell.
            termios.tcsetattr(fd_in, termios.TCSAFLUSH, saved)
        except (OSError, termios.error):
            pass
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)


def _write(fd: int, text: str) -> None:
    data = text.encode("utf-8")
    while data:
        written = os.write(fd, data)
        data = data[written:]


def play_raw(
    test: TypingTest,
    *,
    title: str,
    fd_in: int | None = None,
    fd_out: int | None = None,
    clock: Callable[[], float] = monotonic_ms,
    wall_clock: Callable[[], datetime] = utc_now,
) -> Played:
    """Run the test full-screen with live feedback until it ends or the player leaves.

    Esc returns an abandoned `Played`; Ctrl-C raises KeyboardInterrupt. Either way the
    terminal is restored before this returns or raises.
    """
    fd_in = sys.stdin.fileno() if fd_in is None else fd_in
    fd_out = sys.stdout.fileno() if fd_out is None else fd_out
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    started_at: datetime | None = None
    pasting = False  # inside a bracketed paste, which may span several reads
    notice: str | None = None
    with raw_terminal(fd_in, fd_out):
        while True:
            now = clock()
            if test.tick(now):
                break
            _write(fd_out, render(test, now, title=title, size=_terminal_size(fd_out), notice=notice))
            timeout = 0.1 if test.time_limit_ms is not None and test.started else 0.25
            if not select.select([fd_in], [], [], timeout)[0]:
                continue
            data = os.read(fd_in, 1024)
            if not data:  # the terminal closed
                raise KeyboardInterrupt("end of input")
            if data == b"\x1b" and select.select([fd_in], [], [], 0.03)[0]:
                data += os.read(fd_in, 1024)  # an escape sequence split across reads
            now = clock()
            was_started = test.started
            for key in decode_keys(decoder.decode(data)):
                if key in (PASTE_START, PASTE_END):
                    pasting = key == PASTE_START
                    notice = PASTE_NOTICE
                    continue
                if pasting:
                    continue
                if key == CTRL_C:
                    raise KeyboardInterrupt
                if key == ESC:
                    return Played(test, started_at=None, abandoned=True)
                if key == CTRL_W:
                    while test.current_input:
                        test.press(BACKSPACE, now)
                    continue
                test.press(key, now)
                if test.finished:
                    break
            if not was_started and test.started:
                started_at = wall_clock() - timedelta(milliseconds=now - test.started_ms)
            if test.finished:
                break
    return Played(test, started_at=started_at)


def decode_keys(text: str) -> list[str]:
    """Keys the game understands from decoded terminal input.

    Printable characters, SPACE and BACKSPACE (DEL or BS) for the engine; ESC (alone),
    CTRL_C, CTRL_W, PASTE_START and PASTE_END for the UI. Escape sequences (arrows, function keys, Alt+key),
    Enter, Tab and other control characters are dropped.
    """
    keys: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        i += 1
        if char == ESC:
            if i >= len(text):
                keys.append(ESC)
            elif text[i] == "[":  # CSI: parameters, then one final byte in @..~
                start = i - 1
                i += 1
                while i < len(text) and not ("@" <= text[i] <= "~"):
                    i += 1
                i += 1
                if text[start:i] in (PASTE_START, PASTE_END):
                    keys.append(text[start:i])
            elif text[i] == "O":  # SS3: one more character (F1-F4, some arrows)
                i += 2
            else:  # Alt+key
                i += 1
        elif char in ("\x7f", "\b"):
            keys.append(BACKSPACE)
        elif char in (CTRL_C, CTRL_W, SPACE):
            keys.append(char)
        elif char.isprintable() and not char.isspace():
            keys.append(char)
    return keys


def _terminal_size(fd: int) -> os.terminal_size:
    """The window size; 80x24 where unknown (a fresh pseudo-terminal reports 0x0)."""
    try:
        columns, lines = os.get_terminal_size(fd)
    except OSError:
        columns, lines = 0, 0
    return os.terminal_size((columns or 80, lines or 24))


# ---------------------------------------------------------------------- drawing


def word_cells(test: TypingTest, i: int) -> list[tuple[str, str]]:
    """The letters of word i as (character, style) pairs, as the player should see them."""
    target = test.words[i]
    if i > test.index:
        return [(c, DIM) for c in target]
    typed = test.inputs[i]
    cells = []
    for j in range(max(len(target), len(typed))):
        if j < len(typed) and j < len(target):
            cells.append((target[j], GREEN if typed[j] == target[j] else RED))
        elif j < len(typed):
            cells.append((typed[j], EXTRA))
        else:
            cells.append((target[j], DIM if i == test.index else MISSED))
    return cells


def layout(test: TypingTest, width: int) -> list[list[int]]:
    """Word indices per line, wrapped to `width` columns (a word wider than that alone)."""
    lines: list[list[int]] = [[]]
    used = 0
    for i, target in enumerate(test.words):
        length = max(len(target), len(test.inputs[i]) if i <= test.index else 0)
        needed = length if not lines[-1] else used + 1 + length
        if lines[-1] and needed > width:
            lines.append([])
            needed = length
        lines[-1].append(i)
        used = needed
    return lines


Cell = tuple[str, str]  # (character, SGR style; "" for none)


def _text(text: str, style: str = "") -> list[Cell]:
    return [(char, style) for char in text]


def _styled(cells: list[Cell]) -> str:
    """Cells as text, one escape sequence per run of the same style."""
    out, current = [], ""
    for char, style in cells:
        if style != current:
            out.append(RESET if current else "")
            out.append(style)
            current = style
        out.append(char)
    if current:
        out.append(RESET)
    return "".join(out)


def render(test: TypingTest, now_ms: float, *, title: str, size: os.terminal_size, notice: str | None = None) -> str:
    """One full frame: header, three lines of words, a hint, and the cursor placed after
    the last typed letter of the current word.

    Every row is clipped to the window (one column spare, so nothing auto-wraps), so a
    word longer than a narrow window cannot push the rows out of place."""
    width = max(10, min(MAX_TEXT_WIDTH, size.columns - 2 * MARGIN))
    lines = layout(test, width)
    current_line = next(n for n, line in enumerate(lines) if test.index in line)
    first = max(0, min(current_line - 1, len(lines) - VISIBLE_LINES))
    if test.time_limit_ms is not None:
        remaining = test.remaining_ms(now_ms) or 0.0
        status = str(int(-(-remaining // 1000)))  # whole seconds left, rounded up
    else:
        status = f"{test.index}/{len(test.words)}"
    hint = "start typing   esc: quit" if not test.started else "esc: quit without saving   ctrl-c: interrupt"
    if notice:
        hint = f"{notice}   {hint}"
    rows: list[list[Cell]] = [_text(title, DIM), _text(status, BOLD_YELLOW), []]
    cursor = (1, 1)
    for n in range(first, min(first + VISIBLE_LINES, len(lines))):
        row: list[Cell] = []
        for i in lines[n]:
            if row:
                row.append((" ", ""))
            if i == test.index:
                cursor = (len(rows) + 1, MARGIN + len(row) + len(test.current_input) + 1)
            row.extend(word_cells(test, i))
        rows.append(row)
    while len(rows) < 3 + VISIBLE_LINES:
        rows.append([])
    rows += [[], _text(hint, DIM)]
    rows = rows[: max(1, size.lines)]
    room = max(1, size.columns - 1 - MARGIN)
    out = [CSI + "H"]
    for k, row in enumerate(rows):
        out.append(" " * MARGIN + _styled(row[:room]))
        out.append(CSI + "K" + ("\r\n" if k < len(rows) - 1 else ""))
    out.append(CSI + "J")
    cursor_row = min(cursor[0], len(rows))
    cursor_column = min(cursor[1], size.columns)
    out.append(f"{CSI}{cursor_row};{cursor_column}H")
    return "".join(out)
