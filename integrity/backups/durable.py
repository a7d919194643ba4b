"""Durable file-system changes: a new file or a rename survives a crash only once the
directory that holds its name is fsynced too (STYLE.md convention 6)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
