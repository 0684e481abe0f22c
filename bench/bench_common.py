"""What every benchmark script shares: the machine's load, and writing its JSON + Markdown report."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgereid.data.atomic import write_json_atomic, write_text_atomic


def load_average() -> list[float]:
    """1/5/15-minute load: recorded before and after a run, since the machines are shared."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def write_report(report: dict[str, Any], out_json: str | Path, out_md: str | Path,
                 markdown: Callable[[dict[str, Any], str], str], script: str, argv: list[str] | None) -> None:
    """Write ``report`` as JSON and as Markdown (which names the exact command that produced it)."""
    command = f"python {script} " + " ".join(sys.argv[1:] if argv is None else argv)
    write_json_atomic(out_json, report)
    write_text_atomic(out_md, markdown(report, command.strip()))
    print(f"wrote {out_json} and {out_md}")
