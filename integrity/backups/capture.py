"""What an engine hands back after writing a backup's data files into the temp directory."""

from __future__ import annotations

from dataclasses import dataclass

from integrity.backups.repository import FileEntry


@dataclass(frozen=True)
class Capture:
    files: tuple[FileEntry, ...]
    tables: dict[str, dict]
    identity: str | None
    revision: str | None
    timings: dict[str, float]
    tool: dict[str, str]  # external tools used and their versions (pg_dump)
    source: dict  # where it came from: {"path"} or {"host", "port", "database", "system_identifier"}
    tables_without_data: tuple[str, ...] = ()  # tables the data files hold no rows for (a schema-only dump)
