"""Where in a revision file a finding's operation is: the line an annotation points at.

Findings name a revision, a table and a column, not a line (the static pass reads the
operations through Alembic, the data pass measures their effect). The line is found in
the revision's source: the first call in upgrade() (downgrade() for findings about the
way back) whose string arguments name the finding's column and table (a batch's table
from its `with op.batch_alter_table(...)`), else its table (also inside raw SQL), else a
name the message quotes (an index, a constraint); else the function's `def` line; else 1.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

_DOWNGRADE_RULES = {"empty-downgrade", "round-trip-lossy", "round-trip-failed", "enum-not-dropped"}


def finding_line(path: str | Path, finding) -> int:
    """The 1-based line of `finding`'s operation in the revision file at `path`."""
    try:
        tree = ast.parse(Path(path).read_text())
    except (OSError, SyntaxError, ValueError):
        return 1
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    downgrade_first = finding.rule in _DOWNGRADE_RULES or "downgrade" in finding.message.lower()
    order = ("downgrade", "upgrade") if downgrade_first else ("upgrade", "downgrade")
    for name in order:
        if name in functions:
            line = _call_line(functions[name], finding)
            if line is not None:
                return line
    first = functions.get(order[0]) or functions.get(order[1])
    return first.lineno if first is not None else 1


def _call_line(function: ast.FunctionDef, finding) -> int | None:
    calls = list(_calls(function, batch_table=None))
    table, column = finding.table, finding.column
    if column:
        for call, strings, batch in calls:
            if column in strings and (table is None or table in strings or batch == table):
                return call.lineno
    if table:
        word = re.compile(rf"(?<![\w$]){re.escape(table)}(?![\w$])", re.I)
        for call, strings, batch in calls:
            if table in strings or batch == table or any(word.search(s) for s in strings):
                return call.lineno
    quoted = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]{2,}", finding.message))
    for call, strings, _batch in calls:
        if strings & quoted:
            return call.lineno
    return None


def _calls(node: ast.AST, batch_table: str | None):
    """(call, its string arguments, the enclosing batch's table) in source order."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.With, ast.AsyncWith)):
            table = batch_table
            for item in child.items:
                call = item.context_expr
                if isinstance(call, ast.Call) and _name(call.func).endswith("batch_alter_table") and call.args:
                    first = call.args[0]
                    if isinstance(first, ast.Constant) and isinstance(first.value, str):
                        table = first.value
                    yield call, _strings(call), batch_table
            for statement in child.body:
                yield from _calls_in_statement(statement, table)
            continue
        yield from _calls_in_statement(child, batch_table)


def _calls_in_statement(node: ast.AST, batch_table: str | None):
    if isinstance(node, (ast.With, ast.AsyncWith)):
        yield from _calls(ast.Module(body=[node], type_ignores=[]), batch_table)
        return
    if isinstance(node, ast.Call):
        yield node, _strings(node), batch_table
        # Nested calls (sa.Column(...) inside op.add_column(...)) belong to the outer one.
        return
    yield from _calls(node, batch_table)


def _strings(call: ast.Call) -> set[str]:
    return {n.value for n in ast.walk(call) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _name(func: ast.AST) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""
