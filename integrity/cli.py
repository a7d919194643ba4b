"""The `integrity` command line: parse, call one library function, render.

Heavy imports (SQLAlchemy ORM, pandas, pandera, alembic, apscheduler) stay inside the
command bodies so that `integrity --help` starts fast; a test checks `sys.modules`.
Exceptions become one `Error:` line and the documented exit code in one place:
`IntegrityGroup.invoke`.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from game_core.errors import EXIT_CODE_HELP, ExitCode, Failure
from integrity.runtime import Runtime



class IntegrityGroup(TyperGroup):
    """The root group: records every run in the ledger and turns exceptions into exit codes."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        _plain_options(self, ctx, below=False)
        json_output = "--json" in args  # before parsing: the parser consumes `args`
        try:
            return super().parse_args(ctx, args)
        except Exception as exc:
            # A bad global option fails before `invoke`; `--json` still means one document.
            if not (_is_usage_error(exc) and json_output):
                raise
            from integrity.render.document import json_document

            print(json_document(command="integrity", exit_code=ExitCode.USAGE, context={}, error=exc.format_message()))
            raise typer.Exit(int(ExitCode.USAGE)) from None

    def resolve_command(self, ctx: typer.Context, args: list[str]):
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            _plain_options(command, ctx)
        return name, command, rest

    def invoke(self, ctx: typer.Context):
        tokens = [*ctx._protected_args, *ctx.args]
        ctx.meta["integrity.command"] = _command_path(self, tokens)
        ctx.meta["integrity.help"] = any(t in ("--help", "-h") for t in tokens)
        exit_code, error = ExitCode.OK, None
        try:
            super().invoke(ctx)
        except typer.Exit as exc:
            exit_code = exc.exit_code
        except Failure as exc:
            exit_code, error = exc.exit_code, str(exc)
        except KeyboardInterrupt:
            exit_code, error = ExitCode.INTERRUPTED, "interrupted"
        except Exception as exc:
            if not _is_usage_error(exc):
                runtime = _runtime(ctx)
                exit_code, error = ExitCode.BUG, runtime.bug(exc)
            else:
                exit_code = ExitCode.USAGE
                runtime = _runtime(ctx)
                runtime.finish_run(exit_code, exc.format_message())
                if not runtime.json_output:
                    raise  # the parser prints the usage line and exits 2
                error = exc.format_message()
        runtime = _runtime(ctx)
        if error is not None:
            runtime.error(error, int(exit_code))
        runtime.finish_run(int(exit_code), error)
        raise typer.Exit(int(exit_code))


def _plain_options(command, ctx: typer.Context, *, below: bool = True) -> None:
    """Typer coerces every parameter's value through a Pydantic TypeAdapter built on first
    use, the global options and every command's --help included, so every run imported
    Pydantic and built adapters (about 60 ms, issue 20) for values that need no coercion:
    text (`--config`, `--database-url`) and flags. Hand those typer's own pass-through
    instead, in `command` and (`below`) the commands under it; a flag read from an
    environment variable keeps its adapter (it parses the text), and so does any
    parameter with a parser of its own. It is typer's private API: should it move, runs
    only get slower again, and tests/test_startup.py says so."""
    try:
        from typer._coercion import PassThroughRuntimeParam
    except ImportError:
        return
    if below:
        for sub in getattr(command, "commands", {}).values():
            _plain_options(sub, ctx)
    for param in command.get_params(ctx):
        described = getattr(param, "type_descriptor", None)
        if (described is None or described.file_annotation is not None or described.parameter_info.parser is not None
                or getattr(param, "_runtime_param", False) is not None):
            continue
        if described.annotation is str or (described.annotation is bool and getattr(param, "is_flag", False)
                                           and not param.envvar):
            param._runtime_param = PassThroughRuntimeParam(annotation=described.annotation,
                                                           parameter_info=described.parameter_info)


def _is_usage_error(exc: Exception) -> bool:
    # Typer vendors Click: recognise its UsageError by shape instead of importing it.
    return getattr(exc, "exit_code", None) == 2 and hasattr(exc, "format_message")


def _runtime(ctx: typer.Context) -> Runtime:
    if not isinstance(ctx.obj, Runtime):
        # The callback did not run (an unknown command fails before it): the global
        # options are parsed already, so `--json` still gets its JSON document.
        ctx.obj = Runtime(
            json_output=bool(ctx.params.get("json_output")),
            quiet=bool(ctx.params.get("quiet")),
            verbose=bool(ctx.params.get("verbose")),
            command=ctx.meta.get("integrity.command", "integrity"),
        )
    return ctx.obj


def _command_path(group: TyperGroup, tokens: list[str]) -> str:
    """'backup create' from the tokens after the global options."""
    names: list[str] = []
    command = group
    for token in tokens:
        if token.startswith("-") or not hasattr(command, "commands"):
            if token.startswith("-"):
                continue
            break
        sub = command.commands.get(token)
        if sub is None:
            break
        names.append(token)
        command = sub
    return " ".join(names) or "integrity"


app = typer.Typer(
    cls=IntegrityGroup,
    help="Keep the typing game's player data safe: backups, verification, restores, drills, "
    "migration dry runs and audits.\n\n" + EXIT_CODE_HELP,
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
    config: Annotated[
        str | None,
        typer.Option("--config", envvar="INTEGRITY_CONFIG", help="integrity.toml to use (default: ./integrity.toml, else the data directory's)."),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", envvar="INTEGRITY_DATABASE_URL", help="The guarded database (default: [database] url, GAME_DATABASE_URL, else the embedded database)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON document on stdout, also on failure.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing when the run succeeds (no report, notes or progress bars); a failure still prints its report and the Error: line. --json still prints its document.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging; tracebacks of bugs.")] = False,
    no_input: Annotated[bool, typer.Option("--no-input", help="Never prompt; refuse what needs consent unless --yes.")] = False,
) -> None:
    runtime = Runtime(json_output=json_output, quiet=quiet, verbose=verbose, no_input=no_input)
    runtime.command = ctx.meta.get("integrity.command", "integrity")
    ctx.obj = runtime
    runtime.configure_logging()
    if ctx.meta.get("integrity.help") or ctx.resilient_parsing:
        return  # `integrity CMD --help` must work even with a broken configuration
    from integrity.settings import resolve_settings

    runtime.settings = resolve_settings(
        environ=os.environ,
        cwd=Path.cwd(),
        config_option=config,
        database_url_option=database_url,
        require_config_file=runtime.command != "init",
    )
    ctx.meta["integrity.config_option"] = config
    ctx.meta["integrity.database_url_option"] = database_url
    runtime.announce()
    runtime.start_run()
    _startup_collection.end()


@app.command()
def init(ctx: typer.Context) -> None:
    """Write a starter integrity.toml, create the state directory and repository, and
    create the schema on an empty database."""
    from integrity import api
    from integrity.settings import default_config_path

    runtime: Runtime = ctx.obj
    settings = runtime.settings
    config_path = settings.config_path or default_config_path(ctx.meta.get("integrity.config_option") or os.environ.get("INTEGRITY_CONFIG"), settings.data_dir)
    runtime.emit(api.init(runtime.invocation(), config_path=config_path,
                          database_url_given=ctx.meta.get("integrity.database_url_option")))


@app.command()
def status(ctx: typer.Context) -> None:
    """Is the data safe now? Database, schema revision and row counts; the exit code is
    the worst state found (5, 4, 3, then 0)."""
    from integrity import api

    ctx.obj.emit(api.status(ctx.obj.invocation()))


@app.command()
def history(
    ctx: typer.Context,
    kind: Annotated[str | None, typer.Option("--kind", help="Only runs of this command or command group, e.g. 'status' or 'backup'.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000, help="How many runs, newest first.")] = 20,
) -> None:
    """The ledger of `integrity` runs: command, outcome, exit code, duration, host."""
    from integrity import api

    ctx.obj.emit(api.history(ctx.obj.invocation(), kind=kind, limit=limit))


from integrity.commands.backup import backup_app  # noqa: E402  (typer only: --help stays light)

app.add_typer(backup_app, name="backup")
from integrity.commands.audit import audit_app  # noqa: E402
app.add_typer(audit_app, name="audit")
from integrity.commands.drill import drill  # noqa: E402
app.command("drill")(drill)
from integrity.commands.restore import restore_app  # noqa: E402
app.add_typer(restore_app)  # `restore` and `salvage`, each a top-level command
from integrity.commands.diff import diff_app  # noqa: E402
app.add_typer(diff_app)  # `diff`, a top-level command
from integrity.commands.repair import repair_app  # noqa: E402
app.add_typer(repair_app, name="repair")
from integrity.commands.schedule import schedule_app  # noqa: E402
app.add_typer(schedule_app, name="schedule")
from integrity.commands.migrate import migrate_app  # noqa: E402
app.add_typer(migrate_app, name="migrate")
from integrity.commands.probe import probe  # noqa: E402
app.command("probe")(probe)
from integrity.commands.metrics import metrics  # noqa: E402
app.command("metrics")(metrics)
from integrity.commands.pitr import pitr_app  # noqa: E402
app.add_typer(pitr_app, name="pitr")
from integrity.commands.snapshot import snapshot_app  # noqa: E402
app.add_typer(snapshot_app, name="snapshot")
from integrity.commands.notify import notify_app  # noqa: E402
app.add_typer(notify_app, name="notify")
from integrity.commands.report import report  # noqa: E402
app.command("report")(report)


class _StartupCollection:
    """The cyclic garbage collector while the program starts (issue 20).

    Starting a run imports SQLAlchemy, typer and rich: hundreds of thousands of objects
    that live as long as the process. Each full collection while they are built walks all
    of them again, and the interpreter walks them once more at exit: about 100-150 ms of
    CPU in every `status`, which does little else. So `main` (the program's edge, never
    a library call) pauses the collector until the run is open in the ledger, then
    freezes what exists by then (never collected: it is the program's own machinery)
    and lets the collector work on everything newer, as a long backup or the scheduler
    needs; at exit it freezes again, so the final walk is skipped."""

    paused = False

    def start(self) -> None:
        gc.disable()
        self.paused = True

    def end(self) -> None:
        if self.paused:
            gc.freeze()
            gc.enable()
            self.paused = False


_startup_collection = _StartupCollection()


def main() -> None:
    from integrity.runtime import guard_standard_streams

    _startup_collection.start()
    # `integrity ... | head -1`: a reader that leaves early must not turn a finished
    # operation into exit 1 (rich's own handler) or a traceback at exit.
    saved = sys.stdout, sys.stderr
    guard_standard_streams()
    try:
        app()
    finally:
        sys.stdout.flush()
        sys.stdout, sys.stderr = saved
        _startup_collection.end()
        gc.freeze()  # the process ends here: nothing left needs collecting


if __name__ == "__main__":
    main()
