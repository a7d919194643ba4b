"""`integrity audit ...`: the audits of what the data means, and their history.

`integrity audit` itself runs the audit (the group is invoked without a subcommand);
`integrity audit history` lists what earlier runs found.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from integrity.commands.params import MAX_CHUNK_ROWS, MAX_ROWS_SHOWN, MAX_RUNS_LISTED


class Engine(str, Enum):
    sql = "sql"
    pandera = "pandera"


audit_app = typer.Typer(
    invoke_without_command=True,
    subcommand_metavar="[history]",
    no_args_is_help=False,
)


@audit_app.callback()
def audit(
    ctx: typer.Context,
    table: Annotated[list[str] | None, typer.Option("--table", metavar="TABLE", help="Only the rules of this table (repeatable).")] = None,
    rule: Annotated[list[str] | None, typer.Option("--rule", metavar="RULE", help="Only this rule id (repeatable); see runbooks/audit-findings.md.")] = None,
    engine: Annotated[Engine, typer.Option("--engine", help="sql: everything in SQL; pandera: row rules validated on chunks by Pandera.")] = Engine.sql,
    since_last: Annotated[bool, typer.Option("--since-last", help="Only rows added since the last whole-catalogue audit, and the players they touch.")] = False,
    chunk_size: Annotated[int | None, typer.Option("--chunk-size", min=1, max=MAX_CHUNK_ROWS, metavar="ROWS", help="Rows per chunk for --engine pandera (default: [audits] chunk_size).")] = None,
    samples: Annotated[int | None, typer.Option("--samples", min=0, max=MAX_ROWS_SHOWN, metavar="N", help="Sample rows shown per failing rule (default: [audits] samples).")] = None,
) -> None:
    """Audit scores, levels and progress on the guarded database (read only) and record the run;
    `integrity audit history` lists past runs. Exit 0 when no error-severity rule fails, 3 when
    one does, 4 when the audit could not run (among others: a database with no game schema, or at
    a revision this code does not know or none); drift warnings never change the exit code."""
    if ctx.invoked_subcommand is not None:
        return
    from integrity import api

    ctx.obj.emit(api.audit(
        ctx.obj.invocation(), rules=rule, tables=table, engine=engine.value,
        since_last=since_last, chunk_size=chunk_size, samples=samples,
    ))


@audit_app.command("history")
def history(
    ctx: typer.Context,
    rule: Annotated[str | None, typer.Option("--rule", metavar="RULE", help="One rule's failing rows run by run.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=MAX_RUNS_LISTED, help="How many runs, newest first.")] = 20,
) -> None:
    """The recorded audit runs, newest first: scope, engine, failing rules, drift warnings."""
    from integrity import api

    ctx.obj.emit(api.audit_history(ctx.obj.invocation(), rule=rule, limit=limit))
