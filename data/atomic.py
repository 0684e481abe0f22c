"""Atomic file writes: after a crash or power loss a file holds its old content or its new content,
never half of one.

Every writer of a checkpoint, bundle manifest, data set marker, cache or report goes through
:func:`atomic_path`: write a temporary sibling, flush and fsync it, rename it over the target,
then fsync the folder so that the rename itself is on disk. It lives in the bottom layer
(``edgereid.data``) so that runtime, calibration, train and export all write files the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "fsync_parent", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]


def fsync_parent(path: str | os.PathLike) -> None:
    """fsync the folder holding ``path``, so that a file created or renamed there survives power loss."""
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    except OSError:  # a platform that cannot open folders: the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on leaving, publish it atomically as ``path``.

    For writers that take a file name (safetensors, onnx.save, an exporter): the temporary file is
    fsynced, given ``mode`` (readable by the other users of a bundle or data set), renamed over
    ``path`` and the folder fsynced. If the block raises, the temporary file is removed and
    ``path`` is untouched. The parent folder is created when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_parent(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically; returns the path."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Replace ``path`` with ``text`` atomically; returns the path."""
    return write_bytes_atomic(path, text.encode(encoding))


def write_json_atomic(path: str | os.PathLike, data: Any, *, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Replace ``path`` with ``data`` as JSON (and a final newline) atomically; returns the path.

    The value is serialised before anything is written, so a value JSON cannot hold leaves no file.
    """
    return write_text_atomic(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")
