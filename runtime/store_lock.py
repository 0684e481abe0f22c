"""The gallery store's single-writer lock (a POSIX record lock on a sidecar ``<path>.lock``).

Why POSIX ``lockf`` and not ``flock``: an flock belongs to the open file description, which fork()
shares, so any forked child (multiprocessing, or a library's telemetry process: openvino forks one
from a background thread) would keep the store locked after the writer closed it. POSIX locks belong
to the process and are not inherited. Their trap, that closing ANY descriptor of the file in the
process drops the lock, is avoided by a registry: a second writer in the same process is refused
before it opens the lock file. In a forked child, writer handles are flagged and refuse to write.
A lock on the data file itself would not survive compaction's rename, hence the sidecar.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import weakref
from typing import Any

from .store_format import StoreError

__all__ = ["StoreLockedError", "acquire_lock", "release_lock", "register_writer"]


class StoreLockedError(StoreError):
    """Another process (or handle) holds the store's writer lock."""


_REGISTRY_GUARD = threading.Lock()
_LOCKED: dict[tuple[int, int], str] = {}  # (st_dev, st_ino) of lock files this process holds
_WRITERS: weakref.WeakSet[Any] = weakref.WeakSet()  # writer handles, flagged ``_forked`` in a child


def _after_fork_in_child() -> None:
    global _REGISTRY_GUARD
    _REGISTRY_GUARD = threading.Lock()  # the parent's may have been held by another thread
    _LOCKED.clear()  # the child holds no POSIX locks
    for store in list(_WRITERS):
        store._forked = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def register_writer(store: Any) -> None:
    """Remember a writer handle so that a forked child's copy of it refuses to write."""
    _WRITERS.add(store)


def acquire_lock(path: str) -> int:
    """Exclusive writer lock on ``<path>.lock``; returns its descriptor or raises StoreLockedError."""
    lock_path = path + ".lock"
    busy = StoreLockedError(f"{path}: another writer holds the lock {lock_path}; a store has one writer at a "
                            "time (open it with mode='r' to read)")
    with _REGISTRY_GUARD:
        try:
            st = os.stat(lock_path)
            if (st.st_dev, st.st_ino) in _LOCKED:
                raise busy  # held by this process: opening (and closing) it again would drop that lock
        except FileNotFoundError:
            pass
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                raise busy from None
            raise
        st = os.fstat(fd)
        _LOCKED[(st.st_dev, st.st_ino)] = lock_path
        return fd


def release_lock(fd: int) -> None:
    """Drop the writer lock (closing its only descriptor in this process releases it)."""
    with _REGISTRY_GUARD:
        st = os.fstat(fd)
        _LOCKED.pop((st.st_dev, st.st_ino), None)
        os.close(fd)
