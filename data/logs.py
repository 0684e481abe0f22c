"""How the commands show what the modules log: plain lines on stderr.

Library modules log with ``logging.getLogger(__name__)`` and print nothing; a command calls
:func:`show_logs` once, and every record of an ``edgereid`` logger at ``level`` or above becomes
one stderr line, ``[export] model.onnx: opset 17, checks passed`` (the label says which stage
spoke) or whatever ``label`` returns. A tqdm progress bar on the terminal stays intact (lines go
through ``tqdm.write`` when tqdm is installed).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

__all__ = ["show_logs", "stage_of"]


def stage_of(record: logging.LogRecord) -> str:
    """``edgereid.export.bundle`` -> ``[export] ``: the stage (subpackage) a record comes from."""
    parts = record.name.split(".")
    return f"[{parts[1] if len(parts) > 1 else parts[0]}] "


class _Lines(logging.Handler):
    def __init__(self, label: Callable[[logging.LogRecord], str]) -> None:
        super().__init__()
        self.label = label

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.label(record) + record.getMessage()
            try:
                from tqdm import tqdm
            except ImportError:
                print(line, file=sys.stderr, flush=True)
            else:
                tqdm.write(line, file=sys.stderr)
        except Exception:  # logging must never break the command
            self.handleError(record)


def show_logs(label: Callable[[logging.LogRecord], str] = stage_of, level: int = logging.INFO) -> None:
    """Show ``edgereid.*`` log records on stderr, one line each (calling it again replaces the setup)."""
    logger = logging.getLogger("edgereid")
    for handler in [h for h in logger.handlers if isinstance(h, _Lines)]:
        logger.removeHandler(handler)
    logger.addHandler(_Lines(label))
    logger.setLevel(level)
