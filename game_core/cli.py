"""The `typing-game` command line: play, stats, leaderboard, simulate.

Each command parses, calls the library (`game_core.store`, `game_core.simulate`, the
drivers in `game_core.terminal`) and renders with rich on stdout. The database in use is
announced on stderr on every run. Expected failures (`game_core.errors.Failure`) become
one `Error: ...` line and their exit code in one place, `GameGroup.invoke`; Ctrl-C is
exit 130. Heavy imports stay inside the commands so that `--help` is fast.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import traceback
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import typer
from typer.core import TyperGroup

from typer.exceptions import TyperException

from game_core.errors import (
    EXIT_CODE_HELP,
    EXIT_CODE_MEANINGS,
    DataDamaged,
    ExitCode,
    Failure,
    InvalidInput,
    PreconditionFailed,
)

if TYPE_CHECKING:
    from rich.console import Console
    from sqlalchemy.engine import Engine

    from game_core.db import DatabaseTarget
    from game_core.schema_state import SchemaStatus
    from game_core.store import RecordedResult
    from game_core.typing_test import TypingTest

USERNAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
FALLBACK_PLAYER = "player"
DEFAULT_PARAM = {"words": 25, "time": 30}
MAX_WORDS = 1000
MAX_SECONDS = 3600
# Every number an option takes has both bounds, checked while the command line is parsed
# (exit 2) and shown in --help: unchecked, a huge value overflows a C int in the driver or
# asks numpy for terabytes (a traceback, or a run that never ends).
MAX_SEED = 2**63 - 1  # what PostgreSQL's BIGINT and numpy's generators take
MAX_DURATION_MS = 86_400_000  # a day: even 1,000 words at 10 wpm fit
MAX_HISTORY = 10_000
MAX_PLACES = 10_000
MAX_SIMULATED_PLAYERS = 10_000_000  # 100 times the benchmarks' 100,000
MAX_TESTS_PER_PLAYER = 10_000
# What to do about data the game cannot read: see every damaged row, then recover.
# Where each field of a leaderboard row is read from (game_core.store.Store.leaderboard).
LEADERBOARD_TABLES = {"username": "players", "wpm": "personal_bests", "accuracy": "personal_bests", "started_at": "results"}
DATA_HINT = (
    "the stored data does not match the game's schema: run `integrity status` and `integrity audit` "
    "to see the damage, then restore the last good backup (runbooks/restore.md) or repair (runbooks/audit-findings.md)"
)


class Mode(str, Enum):
    words = "words"
    time = "time"


@dataclass(frozen=True)
class GameSettings:
    """Resolved once in the callback: where the data is and who plays by default."""

    target: DatabaseTarget
    default_player: str


def default_player_name(user: str | None) -> str:
    """$USER made into a valid username: other characters become '_', at most 32."""
    name = USERNAME_CHARS.sub("_", user or "")[:32]
    return name or FALLBACK_PLAYER


def _error(message: str) -> None:
    # Plain write, not rich: a long message must stay one line, whatever the width.
    sys.stderr.write(f"Error: {message}\n")
    sys.stderr.flush()


class TestInterrupted(Failure):
    """Ctrl-C (or SIGTERM) during a test, before anything was written."""

    __test__ = False
    exit_code = ExitCode.INTERRUPTED


class GameGroup(TyperGroup):
    """The root group: turns every failure into one `Error:` line and its exit code.

    No traceback reaches the player: expected failures carry their code; a database
    that refuses a statement is exit 4 with the driver's reason; anything else is a bug,
    exit 1 in one line, with the traceback only under --verbose.
    """

    def invoke(self, ctx: typer.Context):
        tokens = [*ctx._protected_args, *ctx.args]
        ctx.meta["game.help"] = any(t in ("--help", "-h") for t in tokens)
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):
            raise  # Typer's own exits and usage errors (exit 2) keep their handling
        except Failure as exc:
            _error(str(exc))
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            _error("interrupted")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except Exception as exc:
            failure = _database_failure(exc, ctx.obj)
            if failure is not None:
                _error(failure)
                raise typer.Exit(int(ExitCode.PRECONDITION)) from None
            if ctx.params.get("verbose"):
                traceback.print_exception(exc, file=sys.stderr)
            hint = "" if ctx.params.get("verbose") else "; run again with --verbose for the traceback"
            _error(f"{EXIT_CODE_MEANINGS[ExitCode.BUG]}: {type(exc).__name__}: {_first_line(exc)}{hint}")
            raise typer.Exit(int(ExitCode.BUG)) from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def _database_failure(exc: Exception, settings: object) -> str | None:
    """A database error that escaped the store, as one line; None for anything else.

    The schema was checked against the model before the command ran (`open_checked`), so
    a statement the database still refuses meets data or schema the check cannot see: a
    value of another storage class in a SQLite column, a constraint or trigger added
    outside the migrations, a column type changed while the command ran. The driver's
    reason is printed whole, so a bug in our SQL is still recognisable.
    """
    if not type(exc).__module__.startswith("sqlalchemy"):
        return None
    import sqlalchemy as sa

    if not isinstance(exc, sa.exc.DBAPIError):
        return None  # a StatementError of our own making (a bad parameter): a bug
    reason = _first_line(exc.orig) if exc.orig is not None else type(exc).__name__
    where = f" {settings.target.display}" if isinstance(settings, GameSettings) else ""
    # The bare DatabaseError is what SQLite raises for "file is not a database" and
    # "database disk image is malformed"; OperationalError is locks, timeouts, lost servers.
    if isinstance(exc, sa.exc.OperationalError) or type(exc) is sa.exc.DatabaseError:
        return (
            f"the database{where} failed: {reason}; check that --database-url points at the game's "
            "database and that it is reachable and not locked"
        )
    if getattr(exc.orig, "sqlstate", None) == "42501":  # insufficient_privilege
        return f"the database{where} refused access: {reason}; grant the game's role its rights on the game's tables"
    return f"the database{where} refused the game's statement: {reason}; {DATA_HINT}"


app = typer.Typer(
    cls=GameGroup,
    help="A terminal typing game: play tests, see your stats and the leaderboards.\n\n" + EXIT_CODE_HELP,
    no_args_is_help=True,
    # Typer's own --install-completion / --show-completion: `import typer` loads its completion
    # modules (and shellingham) whatever this says, so `--help` costs nothing more.
    add_completion=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


@app.callback()
def main_callback(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="GAME_DATABASE_URL",
            help="The game database: sqlite:///PATH, a file path, or postgresql://... "
            "(default: typing-game/game.db in $XDG_DATA_HOME, else ~/.local/share).",
            show_default=False,
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the traceback of an unexpected error (a bug).")
    ] = False,
) -> None:
    """A terminal typing game: play tests, see your stats and the leaderboards."""
    if ctx.resilient_parsing or ctx.meta.get("game.help"):
        return  # `typing-game play --help` must work even with a broken URL
    from game_core.db import parse_database_url
    from game_core.paths import default_database_url

    if database_url is not None and not database_url.strip():
        # An empty flag (an unset shell variable) is a mistake, never "use the default database".
        raise InvalidInput("--database-url is empty; give the database's URL or leave the option out")
    target = parse_database_url(database_url or default_database_url())
    sys.stderr.write(f"database: {target.display}\n")
    sys.stderr.flush()
    ctx.obj = GameSettings(target=target, default_player=default_player_name(os.environ.get("USER")))


# ---------------------------------------------------------------------- opening the database


def open_checked(connection, target: DatabaseTarget, *, allow_empty: bool) -> SchemaStatus:
    """The database is the game's, at this code's head, with the model's tables; else a
    Failure naming what is wrong and what to do. Empty passes only with `allow_empty`."""
    from game_core.schema_match import require_matching_schema
    from game_core.schema_state import SchemaState, require_current, schema_status

    status = schema_status(connection)
    if status.state is SchemaState.EMPTY:
        if allow_empty:
            return status
        raise PreconditionFailed(
            f"database {target.display} has no game schema yet; play a test "
            "(`typing-game play`) or run `integrity init` to create it"
        )
    require_current(status, display_name=target.display)
    require_matching_schema(connection, revision=status.revision, display_name=target.display)
    return status


@contextmanager
def writer(target: DatabaseTarget) -> Iterator[Engine]:
    """A writer engine; creates the schema on an empty database, refuses any other one
    that is not the game's schema at this code's head."""
    from game_core.db import create_engine
    from game_core.schema_state import ensure_schema

    # Checked read-only before the writer opens: its connect hook switches a SQLite file
    # to WAL, which must never happen to a file we are about to refuse (another
    # application's, or a damaged one an on-call engineer will want as it is).
    if target.sqlite_path is None or target.sqlite_path.exists():
        with reader(target, allow_empty=True):
            pass
    engine = create_engine(target, create_missing=True)
    try:
        ensure_schema(engine, display_name=target.display)
        yield engine
    finally:
        engine.dispose()


@contextmanager
def reader(target: DatabaseTarget, *, allow_empty: bool = False) -> Iterator[Engine]:
    """A read-only engine on a database at this code's schema; never creates anything."""
    from game_core.db import create_engine

    engine = create_engine(target, read_only=True)
    try:
        with engine.connect() as connection:
            open_checked(connection, target, allow_empty=allow_empty)
        yield engine
    finally:
        engine.dispose()


@contextmanager
def reading(target: DatabaseTarget) -> Iterator[None]:
    """Reads through the store whose stored values do not convert to the schema's types
    (text in a NUMERIC column on SQLite, a garbled timestamp) are damaged data, not bugs."""
    try:
        yield
    except (ValueError, TypeError, AttributeError, ArithmeticError) as exc:
        raise DataDamaged(
            f"database {target.display}: a stored value cannot be read as the game's schema says "
            f"({type(exc).__name__}: {_first_line(exc)}); {DATA_HINT}"
        ) from None


def _type_ok(value: object, hint: object) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if isinstance(value, bool):
        return hint is bool
    if hint is float:  # an int is a float here (PEP 484); a float is never an int below
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, hint)


def verified(target: DatabaseTarget, value, tables: str | dict[str, str], whose: str):
    """`value` (a store dataclass) with every field of its declared type, else DataDamaged
    naming the column and the row. A level read back as text ('5', 'Level 5') or a count as
    a float would otherwise crash the rendering with a TypeError far from its cause."""
    hints = typing.get_type_hints(type(value))
    for field in dataclasses.fields(value):
        found = getattr(value, field.name)
        if not _type_ok(found, hints[field.name]):
            table = tables if isinstance(tables, str) else tables.get(field.name, "results")
            expected = getattr(hints[field.name], "__name__", str(hints[field.name]))
            raise DataDamaged(
                f"database {target.display}: {table}.{field.name} of {whose} is {found!r} "
                f"({type(found).__name__}), expected {expected}; {DATA_HINT}"
            )
    return value


def _console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    # Colour only on a terminal (rich checks isatty; NO_COLOR is honoured too).
    return Console(stderr=stderr, highlight=False)


# ---------------------------------------------------------------------- play


@app.command()
def play(
    ctx: typer.Context,
    player: Annotated[
        str | None, typer.Option("--player", help="Who plays (default: $USER made into a valid name); created if new.")
    ] = None,
    mode: Annotated[Mode, typer.Option("--mode", help="words: type N words; time: type for N seconds.")] = Mode.words,
    words: Annotated[int, typer.Option("--words", min=1, max=MAX_WORDS, help="Words in a words test.")] = 25,
    seconds: Annotated[int, typer.Option("--seconds", min=1, max=MAX_SECONDS, help="Seconds in a time test.")] = 30,
    seed: Annotated[
        int | None, typer.Option("--seed", min=0, max=MAX_SEED, help="Seed of the random prompt (the same seed, the same words).")
    ] = None,
    duration_ms: Annotated[
        int | None,
        typer.Option(
            "--duration-ms", min=1, max=MAX_DURATION_MS, hidden=True,
            help="Line mode only: the test's duration instead of the clock (for scripts).",
        ),
    ] = None,
) -> None:
    """Play one typing test and save the result.

    On a terminal the test runs full-screen with live feedback (Esc quits without
    saving). With stdin not a terminal it runs in line mode: the prompt is printed on
    stdout and the typed words are read from stdin.
    """
    from game_core import metrics, terminal
    from game_core.store import Store
    from game_core.typing_test import TypingTest, prompt_words, shortest_prompt_keys, time_mode_word_count

    settings: GameSettings = ctx.obj
    mode_param = words if mode is Mode.words else seconds  # both in range: checked by the parser
    # A test shorter than a second is refused before it starts, not kept: see
    # `typing_test.shortest_prompt_keys` for why, and below for input that arrives faster
    # than anyone types.
    if duration_ms is not None and duration_ms < metrics.MIN_DURATION_MS:
        raise InvalidInput(
            f"--duration-ms must be at least {metrics.MIN_DURATION_MS} (a test lasts at least "
            f"{metrics.MIN_DURATION_MS // 1000} s to be saved), not {duration_ms}"
        )
    username = player if player is not None else settings.default_player
    count = mode_param if mode is Mode.words else time_mode_word_count(mode_param)
    test = TypingTest(prompt_words(count, seed=seed), mode=mode.value, mode_param=mode_param)
    if mode is Mode.words and duration_ms is None and test.prompt_keys < shortest_prompt_keys():
        raise InvalidInput(
            f"this prompt of {mode_param} word{'s' if mode_param != 1 else ''} is {test.prompt_keys} keys long, which "
            f"a fast typist finishes in under {metrics.MIN_DURATION_MS // 1000} s, and a test shorter than that "
            f"is not saved: play a prompt of at least {shortest_prompt_keys()} keys (more --words), or a time "
            "test (--mode time); nothing was started"
        )
    with writer(settings.target) as engine:
        store = Store(engine)
        with reading(settings.target):
            store.get_or_create_player(username)  # before the test: a result never predates its player
        try:
            if terminal.is_interactive(sys.stdin, sys.stdout):
                title = f"typing-game · {mode.value} {mode_param} · {username}"
                played = terminal.play_raw(test, title=title)
            else:
                played = terminal.play_lines(
                    test, stdin=sys.stdin, stdout=sys.stdout, stderr=sys.stderr, duration_ms=duration_ms
                )
        except KeyboardInterrupt:
            raise TestInterrupted("interrupted; nothing saved") from None
        if played.abandoned:
            sys.stderr.write("test abandoned; nothing saved\n")
            return
        if test.elapsed_ms < metrics.MIN_DURATION_MS:
            # The prompt was long enough for a second, so the keys came faster than typing:
            # pasted, piped in without --duration-ms, or the words skipped with spaces.
            raise InvalidInput(
                f"the test ended {test.elapsed_ms:.3f} ms after its first key, and a test lasts at least "
                f"{metrics.MIN_DURATION_MS // 1000} s to be saved (pasted or piped input arrives at once): type the "
                "words (scripts: give --duration-ms); nothing saved"
            )
        with reading(settings.target):
            recorded = store.record_result(username, test.outcome(played.started_at))
        verified(settings.target, recorded.progress, "progress", f"player {username!r}")
    render_result(_console(), username, test, recorded)


def xp_for_level(level: int) -> int:
    """The least total xp at which a player has `level` (the inverse of metrics.level_for_xp)."""
    n = level - 1
    return -(-n * (49 * n + 151) // 2)


def render_result(console: Console, username: str, test: TypingTest, recorded: RecordedResult) -> None:
    counts = test.counts()
    result, progress = recorded.result, recorded.progress
    to_next = xp_for_level(progress.level + 1) - progress.xp
    console.print()
    console.print(f"[bold]Result[/bold] · {username} · {result.mode} {result.mode_param}")
    _print_fields(
        console,
        ("wpm", f"{result.wpm:.2f}"),
        ("raw", f"{result.raw_wpm:.2f}"),
        ("accuracy", f"{result.accuracy:.2f}%"),
        (
            "characters",
            f"{counts.correct_chars}/{counts.incorrect_chars}/{counts.extra_chars}/{counts.missed_chars}"
            "  (correct/incorrect/extra/missed)",
        ),
        ("keystrokes", f"{counts.correct_keystrokes} correct, {counts.incorrect_keystrokes} incorrect"),
        ("time", f"{result.duration_ms / 1000:.2f} s"),
        ("xp", f"+{result.xp}  (total {progress.xp})"),
        ("level", f"{progress.level}  ({to_next} xp to level {progress.level + 1})"),
    )
    if recorded.new_personal_best:
        if recorded.previous_best_wpm is None:
            before = "first result for this mode"
        else:
            before = f"previous {recorded.previous_best_wpm:.2f} wpm"
        console.print(f"[bold green]New personal best![/bold green] ({before})")


def _print_fields(console: Console, *rows: tuple[str, str]) -> None:
    """Label-value lines, aligned, without a table's trailing padding."""
    from rich.markup import escape

    width = max(len(label) for label, _ in rows) + 3
    for label, value in rows:
        console.print(f"  [bold]{label}[/bold]{' ' * (width - len(label))}{escape(value)}")


# ---------------------------------------------------------------------- stats


def _duration(ms: int) -> str:
    seconds = ms // 1000
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"


@app.command()
def stats(
    ctx: typer.Context,
    player: Annotated[str | None, typer.Option("--player", help="Whose stats (default: $USER made into a valid name).")] = None,
    history: Annotated[int, typer.Option("--history", min=1, max=MAX_HISTORY, help="How many recent results to list.")] = 10,
) -> None:
    """A player's level, xp, totals, personal bests and recent results (read-only)."""
    from rich.table import Table

    from game_core.store import Store

    settings: GameSettings = ctx.obj
    username = player if player is not None else settings.default_player
    with reader(settings.target) as engine:
        store = Store(engine)
        whose = f"player {username!r}"
        with reading(settings.target):
            progress = store.progress(username)  # PlayerNotFound (exit 2) for an unknown name
            bests = store.bests(username)
            recent = store.history(username, limit=history)
        if progress is not None:
            verified(settings.target, progress, "progress", whose)
        for best in bests:
            verified(settings.target, best, "personal_bests", whose)
        for entry in recent:
            verified(settings.target, entry, "results", f"result {entry.id!r} of {whose}")
    console = _console()
    console.print(f"[bold]{username}[/bold]")
    if progress is None:
        console.print("no finished tests yet; play one with `typing-game play`")
        return
    to_next = xp_for_level(progress.level + 1) - progress.xp
    _print_fields(
        console,
        ("level", str(progress.level)),
        ("xp", f"{progress.xp}  ({to_next} to level {progress.level + 1})"),
        ("tests", str(progress.tests_completed)),
        ("time typing", _duration(progress.time_typing_ms)),
        ("best wpm", f"{progress.best_wpm:.2f}"),
    )

    table = Table(title="Personal bests", title_justify="left")
    for name in ("mode", "wpm", "accuracy"):
        table.add_column(name, justify="left" if name == "mode" else "right")
    for best in bests:
        table.add_row(f"{best.mode} {best.mode_param}", f"{best.wpm:.2f}", f"{best.accuracy:.2f}%")
    console.print(table)

    table = Table(title=f"Last {len(recent)} results", title_justify="left")
    for name in ("started (UTC)", "mode", "wpm", "raw", "accuracy", "time", "xp"):
        table.add_column(name, justify="left" if name in ("started (UTC)", "mode") else "right")
    for entry in recent:
        table.add_row(
            entry.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{entry.mode} {entry.mode_param}",
            f"{entry.wpm:.2f}",
            f"{entry.raw_wpm:.2f}",
            f"{entry.accuracy:.2f}%",
            f"{entry.duration_ms / 1000:.1f} s",
            str(entry.xp),
        )
    console.print(table)


# ---------------------------------------------------------------------- leaderboard


@app.command()
def leaderboard(
    ctx: typer.Context,
    mode: Annotated[Mode, typer.Option("--mode", help="Which mode's board.")] = Mode.words,
    param: Annotated[
        int | None,
        typer.Option(
            "--param", min=1, max=max(MAX_WORDS, MAX_SECONDS), help="Word count or seconds (default: 25 words, 30 seconds).",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=MAX_PLACES, help="How many places.")] = 10,
) -> None:
    """The fastest players of one mode, each with their best result (read-only)."""
    from rich.table import Table

    from game_core.store import Store

    settings: GameSettings = ctx.obj
    mode_param = DEFAULT_PARAM[mode.value] if param is None else param
    with reader(settings.target) as engine:
        with reading(settings.target):
            entries = Store(engine).leaderboard(mode.value, mode_param, limit=limit)
    for entry in entries:
        verified(settings.target, entry, LEADERBOARD_TABLES, f"player {entry.username!r}")
    console = _console()
    title = f"Leaderboard · {mode.value} {mode_param}"
    if not entries:
        console.print(f"{title}: no results yet")
        return
    table = Table(title=title, title_justify="left")
    for name in ("#", "player", "wpm", "accuracy", "date (UTC)"):
        table.add_column(name, justify="right" if name in ("#", "wpm", "accuracy") else "left")
    for entry in entries:
        table.add_row(
            str(entry.rank), entry.username, f"{entry.wpm:.2f}", f"{entry.accuracy:.2f}%", entry.started_at.strftime("%Y-%m-%d")
        )
    console.print(table)


# ---------------------------------------------------------------------- simulate


@app.command()
def simulate(
    ctx: typer.Context,
    players: Annotated[
        int, typer.Option("--players", min=1, max=MAX_SIMULATED_PLAYERS, help="How many new simulated players.", show_default=False)
    ],
    tests_per_player: Annotated[
        int, typer.Option("--tests-per-player", min=0, max=MAX_TESTS_PER_PLAYER, help="Results per player.", show_default=False)
    ],
    seed: Annotated[int, typer.Option("--seed", min=0, max=MAX_SEED, help="The same seed gives the same data.", show_default=False)],
) -> None:
    """Fill the database with realistic simulated players and results (deterministic per seed)."""
    settings: GameSettings = ctx.obj
    from game_core.simulate import simulate as run_simulation

    with writer(settings.target) as engine, _progress_bar() as progress:
        summary = run_simulation(engine, players=players, tests_per_player=tests_per_player, seed=seed, progress=progress)
    _print_fields(
        _console(),
        ("players", f"{summary.players:,}"),
        ("results", f"{summary.results:,}"),
        ("seconds", f"{summary.seconds:.2f}"),
        ("results/s", f"{summary.results_per_second:,.0f}"),
        ("usernames", f"{summary.first_username} .. {summary.last_username}"),
    )


@contextmanager
def _progress_bar():
    """A progress callback: a rich bar on stderr when it is a terminal, else nothing."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=_console(stderr=True)
    ) as bar:
        task = bar.add_task("results", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def main() -> None:
    app()


if __name__ == "__main__":
    main()
