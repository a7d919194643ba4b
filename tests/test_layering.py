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
