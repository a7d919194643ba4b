"""Where the embedded default lives: one absolute per-user data directory.

Cron, systemd and a shell in any working directory must all find the same files, so the
default never depends on the current directory.
"""

from __future__ import annotations

import os
from pathlib import Path

APP_DIR_NAME = "typing-game"


def data_dir(environ: os._Environ[str] | dict[str, str] | None = None) -> Path:
    """`$XDG_DATA_HOME/typing-game`, else `~/.local/share/typing-game` (absolute)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "share"
    return (root / APP_DIR_NAME).absolute()


def default_database_path(environ=None) -> Path:
    return data_dir(environ) / "game.db"


def default_database_url(environ=None) -> str:
    return f"sqlite:///{default_database_path(environ)}"
