"""`integrity migrate lint FILE...`: lint the revisions a commit changes (the pre-commit hook).

Without --alembic-config the project is the one the files belong to: the alembic.ini (or
pyproject.toml with [tool.alembic]) in a revision's folder or above it (pre-commit passes
only file names, and `pre-commit try-repo` no arguments at all).

The static pass judges a revision against the schema before it, so the lint starts at
the parent of the earliest changed revision (tables that exist there count as holding
rows) and reports only the changed revisions. Given files that are not revisions of the
project (an env.py, a README in the versions folder) are left out; none at all is a
clean report that says so.
"""

from __future__ import annotations

import time
from pathlib import Path


def lint_files(settings, files: list[Path], *, alembic_config: Path | None = None, fail_on: str = "error"):
    """The static pass over the revisions among `files` (with the ones between them), from
    the parent of the earliest; the report keeps only the given revisions. Like `lint`
    without a database, the findings of both engines count."""
    from integrity.migrate.dry_run import _published, _report, _revision_run, for_engine
    from integrity.migrate.intent import apply_intent
    from integrity.migrate.project import MigrationProject
    from integrity.migrate.static_pass import lint_revisions
    from integrity.phases import PhaseTimer

    started = time.perf_counter()
    project = MigrationProject.load(alembic_config if alembic_config is not None else discover_config(files))
    everything = project.pending(None)  # the whole history in upgrade order (checks the graph too)
    wanted = {Path(f).resolve() for f in files}
    changed = [r for r in everything if r.path.resolve() in wanted]
    if not changed:
        return _report(project, None, None, None, None, None, [], [], fail_on, started, data_pass=False,
                       note=f"no revision of {project.description} among the {len(files)} file(s) given")
    earliest = changed[0]
    start = earliest.down_revisions[0] if earliest.down_revisions else None
    pending = project.pending(start, changed[-1].id)
    timer = PhaseTimer()
    with timer.phase("static pass"):
        result = lint_revisions(project, pending, start_revision=start)
    ids = {r.id for r in changed}
    findings = apply_intent([f for f in for_engine(result.findings, None) if f.revision in ids], changed, data_pass=False)
    runs = [_revision_run(r, lint_for=result, engine=None) for r in changed]  # no database: every dialect
    return _report(project, None, None, None, start, changed[-1].id, runs, findings, fail_on, started,
                   data_pass=False, phases=_published(timer))


def discover_config(files: list[Path], cwd: Path | None = None) -> Path | None:
    """The Alembic project of the given revision files: the first alembic.ini, or
    pyproject.toml with a [tool.alembic] table, in a revision's folder or above it, then
    in the working directory; None (the game's own history) when there is none."""
    folders: list[Path] = []
    for file in files:
        folders += list(Path(file).resolve().parents)
    folders.append((cwd or Path.cwd()).resolve())
    for folder in dict.fromkeys(folders):  # each once, in order
        if (folder / "alembic.ini").is_file():
            return folder / "alembic.ini"
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and _has_tool_alembic(pyproject):
            return pyproject
    return None


def _has_tool_alembic(pyproject: Path) -> bool:
    import tomllib

    try:
        return "alembic" in tomllib.loads(pyproject.read_text()).get("tool", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
