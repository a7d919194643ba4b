"""The dependency direction: integrity -> checks -> game_core, integrity -> game_core.

Walks every import in the source, function bodies included (a lazy import inside a
function is still a dependency), and is shown to catch a planted one.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What each package must never import.
FORBIDDEN = {
    "game_core": ("checks", "integrity"),
    "checks": ("integrity",),
}


def imported_modules(source: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def layering_violations(root: Path) -> list[str]:
    violations = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((root / package).rglob("*.py")):
            for line, module in imported_modules(path.read_text(encoding="utf-8")):
                top = module.split(".")[0]
                if top in forbidden:
                    violations.append(f"{path.relative_to(root)}:{line} imports {module}")
    return violations


def test_no_package_imports_against_the_direction():
    assert layering_violations(ROOT) == []


def test_a_planted_import_inside_a_function_body_is_caught(tmp_path):
    for package in ("game_core", "checks", "integrity"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "game_core" / "store.py").write_text(
        "import sqlalchemy\n\ndef helper():\n    from integrity.backups import create\n    return create\n"
    )
    (tmp_path / "checks" / "rules.py").write_text("import game_core.metrics\nimport integrity\n")
    assert layering_violations(tmp_path) == [
        "game_core/store.py:4 imports integrity.backups",
        "checks/rules.py:2 imports integrity",
    ]


# ---------------------------------------------------------------- inside integrity/

# Only the CLI layer renders: the library returns dataclasses (DESIGN.md section 2).
# integrity/runtime.py is the CLI's environment (`ctx.obj`), the one that emits results.
RENDER_IMPORTERS = ("integrity/cli.py", "integrity/runtime.py", "integrity/commands/", "integrity/render/")


def module_files(root: Path) -> dict[str, Path]:
    """`integrity.x.y` -> its file, for every module and package under root/integrity."""
    modules = {}
    for path in sorted((root / "integrity").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_graph(root: Path) -> dict[str, set[str]]:
    """Each integrity module and the integrity modules it imports, function bodies included;
    `from integrity.x import y` points at integrity.x.y when y is a module."""
    modules = module_files(root)

    def nearest_module(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(nearest_module(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets.update(nearest_module(f"{node.module}.{alias.name}") for alias in node.names)
        graph[name] = {target for target in targets if target and target != name}
    return graph


def import_cycles(root: Path) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan)."""
    graph = import_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(cycles)


def render_importers(root: Path) -> list[str]:
    found = []
    for name, path in module_files(root).items():
        where = path.relative_to(root).as_posix()
        if where.startswith(RENDER_IMPORTERS):
            continue
        for line, module in imported_modules(path.read_text(encoding="utf-8")):
            if module == "integrity.render" or module.startswith("integrity.render."):
                found.append(f"{where}:{line} imports {module}")
    return found


def test_integrity_has_no_import_circle():
    assert import_cycles(ROOT) == []


def test_only_the_cli_layer_imports_the_renderers():
    assert render_importers(ROOT) == []


def _plant(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_planted_circle_through_a_function_body_is_caught(tmp_path):
    _plant(tmp_path, {
        "integrity/__init__.py": "",
        "integrity/scheduler/__init__.py": "",
        "integrity/scheduler/runner.py": "from integrity.runtime import Runtime\n",
        "integrity/runtime.py": "def emit():\n    from integrity import status\n",
        "integrity/status.py": "def heartbeat():\n    from integrity.scheduler.runner import run_job\n",
        "integrity/ledger.py": "import integrity.errors\n",
        "integrity/errors.py": "",
    })
    assert import_cycles(tmp_path) == [["integrity.runtime", "integrity.scheduler.runner", "integrity.status"]]


def test_a_planted_render_import_in_the_library_is_caught(tmp_path):
    _plant(tmp_path, {
        "integrity/__init__.py": "",
        "integrity/render/__init__.py": "",
        "integrity/render/text.py": "",
        "integrity/cli.py": "from integrity.render.text import render_text\n",
        "integrity/commands/backup.py": "from integrity.render import text\n",
        "integrity/status.py": "def detail():\n    from integrity.render.text import age_text\n",
        "integrity/backups/verify.py": "import integrity.render\n",
    })
    assert render_importers(tmp_path) == [
        "integrity/backups/verify.py:1 imports integrity.render",
        "integrity/status.py:2 imports integrity.render.text",
    ]


# ---------------------------------------------------------------- the commands call only the API

# A command parses its options, calls one `integrity.api` function and renders the result
# (DESIGN.md section 2): it never reaches past the API into the library, so the CLI, the
# scheduler and a program all run the same operation. `timeparse` parses option text.
COMMANDS_ROOM = ("integrity/commands/", "integrity/cli.py")
COMMANDS_MAY_IMPORT = ("integrity.api", "integrity.commands", "integrity.render", "integrity.runtime",
                       "integrity.settings", "integrity.timeparse")


def command_imports_past_the_api(root: Path) -> list[str]:
    found = []
    for path in sorted((root / "integrity").rglob("*.py")):
        where = path.relative_to(root).as_posix()
        if not where.startswith(COMMANDS_ROOM):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{alias.name}" if node.module == "integrity" else node.module for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] == "integrity" and not any(
                    name == allowed or name.startswith(allowed + ".") for allowed in COMMANDS_MAY_IMPORT
                ):
                    found.append(f"{where}:{node.lineno} imports {name}")
    return found


def test_the_commands_call_only_the_api():
    assert command_imports_past_the_api(ROOT) == []


def test_a_planted_command_reaching_past_the_api_is_caught(tmp_path):
    _plant(tmp_path, {
        "integrity/__init__.py": "",
        "integrity/cli.py": "from integrity import api\nfrom integrity.runtime import Runtime\n",
        "integrity/commands/backup.py": (
            "from integrity.commands.params import LockWait\n"
            "def create():\n    from integrity import api, ledger\n"
            "def verify():\n    from integrity.backups.verify import verify_one\n"
        ),
        "integrity/commands/audit.py": "import integrity.audits\nfrom integrity.render.audits import show\n",
    })
    assert command_imports_past_the_api(tmp_path) == [
        "integrity/commands/audit.py:1 imports integrity.audits",
        "integrity/commands/backup.py:3 imports integrity.ledger",
        "integrity/commands/backup.py:5 imports integrity.backups.verify",
    ]


# ---------------------------------------------------------------- the one way to each database

DATABASE_ROOM = "integrity/db/"  # the only code that opens a database (DESIGN.md section 2)
MAINTENANCE_NAMES = ("postgres", "MAINTENANCE_DATABASE")


def _called_name(node: ast.Call) -> str | None:
    function = node.func
    return function.id if isinstance(function, ast.Name) else getattr(function, "attr", None)


def _aims_at_maintenance(node: ast.Call) -> bool:
    """`url.set(database="postgres")` or `database=MAINTENANCE_DATABASE`: an engine on
    the maintenance database in the making."""
    for keyword in node.keywords:
        value = keyword.value
        named = value.value if isinstance(value, ast.Constant) else getattr(value, "id", getattr(value, "attr", None))
        if keyword.arg == "database" and named in MAINTENANCE_NAMES:
            return True
    return False


def _calls_sqlite3_connect(node: ast.Call) -> bool:
    function = node.func
    return (isinstance(function, ast.Attribute) and function.attr == "connect"
            and isinstance(function.value, ast.Name) and function.value.id == "sqlite3")


def database_openings(root: Path) -> list[str]:
    """Every place in integrity/ outside integrity/db/ that opens a database itself: a call
    or an import of `create_engine` (SQLAlchemy's or game_core.db's, under any alias), a
    driver connection (`sqlite3.connect`, or `connect` imported from sqlite3), or a URL
    aimed at the maintenance database. Function bodies included."""
    found = []
    for path in sorted((root / "integrity").rglob("*.py")):
        where = path.relative_to(root).as_posix()
        if where.startswith(DATABASE_ROOM):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and any(alias.name == "create_engine" for alias in node.names):
                found.append((where, node.lineno, f"imports create_engine from {node.module}"))
            elif isinstance(node, ast.ImportFrom) and node.module == "sqlite3" and any(
                    alias.name == "connect" for alias in node.names):
                found.append((where, node.lineno, "imports connect from sqlite3"))
            elif isinstance(node, ast.Call) and _called_name(node) == "create_engine":
                found.append((where, node.lineno, "calls create_engine"))
            elif isinstance(node, ast.Call) and _calls_sqlite3_connect(node):
                found.append((where, node.lineno, "calls sqlite3.connect"))
            elif isinstance(node, ast.Call) and _aims_at_maintenance(node):
                found.append((where, node.lineno, "opens the maintenance database"))
    return [f"{where}:{line} {what}" for where, line, what in sorted(found)]


def test_only_integrity_db_opens_a_database():
    assert database_openings(ROOT) == []


def test_a_planted_database_opening_is_caught(tmp_path):
    _plant(tmp_path, {
        "integrity/__init__.py": "",
        "integrity/db/connect.py": "import sqlalchemy as sa\n\ndef open_it(url):\n    return sa.create_engine(url)\n",
        "integrity/backups/verify.py": "def copy(target):\n    from game_core.db import create_engine as open_engine\n",
        "integrity/probe.py": "import sqlalchemy as sa\n\ndef probe(url):\n    return sa.create_engine(url)\n",
        "integrity/recovery/swap.py": (
            "MAINTENANCE_DATABASE = 'postgres'\n\ndef admin(engine_of, live):\n"
            "    return engine_of(live.url.set(database=MAINTENANCE_DATABASE))\n"
        ),
        "integrity/migrate/snapshot.py": "def admin(live):\n    return live.url.set(database='postgres')\n",
        "integrity/migrate/copy.py": "import sqlite3\n\ndef copy(path):\n    return sqlite3.connect(path)\n",
        "integrity/tablediff/attach.py": "def attach(path):\n    from sqlite3 import connect\n",
        "integrity/db/sqlite_swap.py": "import sqlite3\n\ndef swap(path):\n    return sqlite3.connect(path)\n",
    })
    assert database_openings(tmp_path) == [
        "integrity/backups/verify.py:2 imports create_engine from game_core.db",
        "integrity/migrate/copy.py:4 calls sqlite3.connect",
        "integrity/migrate/snapshot.py:2 opens the maintenance database",
        "integrity/probe.py:4 calls create_engine",
        "integrity/recovery/swap.py:4 opens the maintenance database",
        "integrity/tablediff/attach.py:2 imports connect from sqlite3",
    ]


# ---------------------------------------------------------------- the rooms and their order

# The README's architecture table, from the edge inwards: a module may import its own room
# and any room after it, never one before it. A module that is in no room fails the test,
# so a new one has to be placed (the longest matching prefix decides; the package itself,
# `integrity`, names only its __init__).
ROOMS = (
    ("cli", ("integrity.cli", "integrity.runtime", "integrity.commands", "integrity.render")),
    ("api", ("integrity.api", "integrity.invocation", "integrity.recorder", "integrity.scheduler")),
    ("operations", ("integrity.backups", "integrity.recovery", "integrity.migrate", "integrity.snapshots",
                    "integrity.pitr", "integrity.storage", "integrity.audits", "integrity.audit_history",
                    "integrity.probe", "integrity.probe_checks", "integrity.status", "integrity.prometheus",
                    "integrity.evidence", "integrity.notify", "integrity.notify_records", "integrity.ledger_report",
                    "integrity.initialize", "integrity.schema_check", "integrity.guarded")),
    # What status, metrics, notifications and the evidence read of the scheduler's work:
    # the job table, the scheduler's own records and their health, and the ledger itself.
    ("records", ("integrity.jobs", "integrity.scheduler.records", "integrity.scheduler.health",
                 "integrity.scheduler.triggers", "integrity.ledger")),
    ("tablediff", ("integrity.tablediff",)),
    ("db", ("integrity.db",)),
    ("foundations", ("integrity", "integrity.settings", "integrity.locks", "integrity.errors", "integrity.phases",
                     "integrity.progress", "integrity.timeparse", "integrity.crashpoints", "integrity.fingerprint",
                     "integrity.storage.location")),
)

# The imports against the order that the README names, each with its reason. An entry
# matches a module and a target by prefix.
ALLOWED_AGAINST_THE_ORDER = {
    # The engines write and read the backup format: the archive, the capture's result, the
    # repository's manifest, the statistics a backup records, the durable rename.
    ("integrity.db", "integrity.backups.archive"): "the backup format",
    ("integrity.db", "integrity.backups.capture"): "the backup format",
    ("integrity.db", "integrity.backups.repository"): "the backup format",
    ("integrity.db", "integrity.backups.statistics"): "the backup format",
    ("integrity.db", "integrity.backups.durable"): "the backup format",
    # The engines' snapshot copies are the dry run's copy types, fingerprinted beside the
    # source they were copied from.
    ("integrity.db", "integrity.migrate.snapshot"): "the dry run's copy types",
    ("integrity.db", "integrity.migrate.beside"): "the dry run's copy types",
    # The differ's front end for a migration compares two shapes the dry run observed.
    ("integrity.tablediff.migration", "integrity.migrate.observe"): "the dry run's table shapes",
    # Settings check recipients when they are loaded (pyrage only when some are set).
    ("integrity.settings", "integrity.backups.encryption"): "recipients checked at load",
}


def room_of(module: str) -> int | None:
    best = None
    for rank, (_, prefixes) in enumerate(ROOMS):
        for prefix in prefixes:
            inside = module == prefix or (prefix != "integrity" and module.startswith(prefix + "."))
            if inside and (best is None or len(prefix) > best[1]):
                best = (rank, len(prefix))
    return None if best is None else best[0]


def imports_against_the_order(root: Path) -> list[str]:
    found = []
    for module, targets in sorted(import_graph(root).items()):
        rank = room_of(module)
        if rank is None:
            found.append(f"{module} is in no room: place it in tests/test_layering.py's ROOMS and the README's table")
            continue
        for target in sorted(targets):
            target_rank = room_of(target)
            if target_rank is None or target_rank >= rank:
                continue
            if any((module == m or module.startswith(m + ".")) and (target == t or target.startswith(t + "."))
                   for m, t in ALLOWED_AGAINST_THE_ORDER):
                continue
            found.append(f"{module} ({ROOMS[rank][0]}) imports {target} ({ROOMS[target_rank][0]})")
    return found


def test_no_room_imports_a_room_nearer_the_edge():
    assert imports_against_the_order(ROOT) == []


def test_a_planted_import_against_the_order_is_caught(tmp_path):
    _plant(tmp_path, {
        "integrity/__init__.py": "",
        "integrity/settings.py": "def load():\n    from integrity.status import collect_status\n",
        "integrity/status.py": "from integrity.jobs import JOBS\nfrom integrity.api import audit\n",
        "integrity/jobs.py": "",
        "integrity/api.py": "",
        "integrity/db/__init__.py": "",
        "integrity/db/sqlite_swap.py": "from integrity.backups.repository import Manifest\nimport integrity.backups.prune\n",
        "integrity/backups/__init__.py": "",
        "integrity/backups/repository.py": "",
        "integrity/backups/prune.py": "",
        "integrity/newcomer.py": "",
    })
    assert imports_against_the_order(tmp_path) == [
        "integrity.db.sqlite_swap (db) imports integrity.backups.prune (operations)",
        "integrity.newcomer is in no room: place it in tests/test_layering.py's ROOMS and the README's table",
        "integrity.settings (foundations) imports integrity.status (operations)",
        "integrity.status (operations) imports integrity.api (api)",
    ]
