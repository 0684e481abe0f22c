"""Read a JSON file that must hold an object, with an error that names the file and what is wrong.

The writers are ``atomic.write_json_atomic``; this is the reading side for records, configs and
reports (``ValueError`` naming the path, the line and column of bad JSON, or the type found).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["read_json_object"]


def read_json_object(path: str | os.PathLike, what: str = "a JSON object") -> dict[str, Any]:
    """The object in ``path``; ``what`` says in an error what the file should have been."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); expected {what}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                         f"expected {what}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected {what}, got a JSON {type(data).__name__}")
    return data
