"""The JSON document of a run: `schema_version`, the command, its exit code, where the data
is, and the result or the error. Scripts rely on this shape."""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

JSON_SCHEMA_VERSION = 1


def to_jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    return value


def json_document(*, command: str, exit_code: int, context: dict[str, Any], result: Any = None, error: str | None = None) -> str:
    document: dict[str, Any] = {"schema_version": JSON_SCHEMA_VERSION, "command": command, "exit_code": int(exit_code)}
    document.update(context)
    if error is not None:
        document["error"] = error
    if error is None or result is not None:  # a report that failed a precondition carries both
        document["result"] = to_jsonable(result)
    return json.dumps(document, indent=2, sort_keys=False)
