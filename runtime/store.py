"""The on-device gallery store: int8 (or 4/1-bit) embedding codes and their identities in one file.

Why it looks like this (``docs/store-format.md`` has the byte layout and the rules):

- **Append-only, checksummed records, fsync per commit.** A device can lose power at any byte.
  Nothing committed is ever rewritten, so a crash can only leave a torn *tail*; open finds it by
  its checksums and drops it (truncating it away when opened for writing). ``add`` and ``remove``
  return only after ``fsync``: a record is committed exactly when the call returns.
- **Memory mapping and blocked scans.** Galleries reach millions of entries on devices with little
  memory. Search maps the committed bytes read-only and hands the search kernel one block of codes
  at a time; nothing proportional to the gallery is copied into process memory. What *is* kept in
  memory is per identity (the identity table) and per record (offsets), not per entry.
- **Interned identities.** Each entry stores a uint32 index into the identity table (which is
  itself stored incrementally in the records), so an entry costs its code bytes + 4 bytes
  (+ 4 for a camera, + 8 for a timestamp, only when given).
- **Tombstones and compaction by rename.** ``remove`` appends a tombstone; ``compact`` writes a
  fresh file with only the live entries and renames it over the old one. Readers that opened the
  old file keep reading their snapshot (the old inode) until they ``refresh``.
- **One writer, many readers.** Writers take an exclusive POSIX lock on a sidecar ``<path>.lock``
  (``store_lock.py`` says why it is that lock); readers take no lock.
"""

from __future__ import annotations

import math
import mmap
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from edgereid.data.atomic import fsync_parent
from edgereid.runtime.codec import SCALE_REL_TOL, CodecSpec, check_codes, code_sqnorms
from edgereid.runtime.matching import topk_per_identity
from edgereid.runtime.search import topk
from edgereid.runtime.store_format import (
    FLAG_CAMERAS,
    FLAG_TIMESTAMPS,
    FLAG_TIMESTAMPS_INT,
    HEADER_FLAG_SQNORMS,
    HEADER_SIZE,
    REC_ADD,
    REC_REMOVE,
    FileHeader,
    Growable,
    Identity,
    RecordHeader,
    ScannedRecord,
    StoreError,
    VerifyReport,
    add_record,
    as_identities,
    as_identity,
    pread_exact,
    remove_record,
    scan_records,
    verify_file,
    write_all,
    write_record,
)

from .store_lock import StoreLockedError, acquire_lock, register_writer, release_lock

__all__ = [
    "GalleryStore",
    "StoreError",
    "StoreLockedError",
    "SpecMismatchError",
    "Entry",
    "VerifyReport",
]

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MAX = 2**63 - 1
SCAN_ROWS = 65536  # rows handed to the search kernel per block; bounds per-query working memory
COMPACT_ROWS = 65536  # entries per ADD record written by compact()
_PAGE = mmap.PAGESIZE


class SpecMismatchError(StoreError):
    """The store's codes were made with a different embedding spec than the one offered."""

    def __init__(self, message: str, fields: list[str]):
        super().__init__(message)
        self.fields = fields


@dataclass(frozen=True)
class Entry:
    """One stored embedding: its global row, identity, code bytes and optional camera/timestamp."""

    row: int
    identity: Identity
    code: np.ndarray
    camera: int | None
    timestamp: int | float | None


@dataclass(slots=True)
class _Block:
    """An ADD record's entry columns: absolute file offsets and the rows they hold."""

    start_row: int
    count: int
    idx_off: int
    codes_off: int
    sq_off: int  # -1: no stored squared norms (the kernel computes them)
    cam_off: int  # -1: no cameras in this record
    ts_off: int  # -1: no timestamps
    ts_int: bool
    flags: int
    dirty: bool = False  # some entry in it was removed: search must pass a validity mask


class GalleryStore:
    """An append-only, memory-mapped gallery of embedding codes. Use :meth:`create` or :meth:`open`.

    A handle opened with ``mode="r"`` is a reader: it sees the records committed when it opened
    (or last called :meth:`refresh`) and never takes a lock. ``mode="a"`` is the single writer.
    """

    # ------------------------------------------------------------------ construction

    def __init__(self, path: str, mode: str, fd: int, lock_fd: int | None, header: FileHeader,
                 spec: CodecSpec, release_pages: bool) -> None:
        self._path = path
        self._mode = mode
        self._fd = fd
        self._lock_fd = lock_fd
        self._header = header
        self._spec = spec
        self._release_pages = release_pages
        self._forked = False  # set in a forked child: this handle's lock belongs to the parent
        # Integer codes: store each entry's squared level norm (int32) so the search kernel does not
        # recompute it per query (about 3x faster single-query scans for 4 bytes per entry).
        self._stores_sqnorms = bool(header.flags & HEADER_FLAG_SQNORMS)
        self._closed = False
        self._reset_state()

    def _reset_state(self) -> None:
        self._keys: list[Identity] = []
        self._key_index: dict[Identity, int] = {}
        self._live = Growable()  # live entries per identity
        self._dead_below = Growable()  # entries of identity i at rows < this are removed
        self._blocks: list[_Block] = []
        self._starts: list[int] = []  # start row of each block
        self._starts_arr: np.ndarray | None = None  # cached array of _starts
        self._n_rows = 0
        self._n_live = 0
        self._end = HEADER_SIZE
        self._torn_bytes = 0  # bytes after the committed data that this handle ignores
        self._torn_reason: str | None = None
        self._mm: mmap.mmap | None = None
        self._mapped = 0

    @classmethod
    def create(cls, path: str | os.PathLike, dim: int, bits: int, scale: float, metric: str = "l2",
               *, overwrite: bool = False, norms: bool = True, release_pages: bool = False) -> GalleryStore:
        """Create an empty store and return it open for writing (``mode="a"``).

        Refuses to replace an existing file unless ``overwrite=True``. The header is written to a
        temporary file, fsynced and renamed into place, so ``path`` is never half-created.
        ``norms``: store each entry's squared level norm (int32, 4 bytes; integer codes only) so
        searches need not recompute it per query (about 3x faster single queries); False keeps an
        entry at code bytes + 4.
        """
        path = os.fspath(path)
        spec = CodecSpec(dim=dim, bits=bits, scale=scale, metric=metric)
        store_norms = bool(norms) and spec.is_integer and spec.max_level**2 * spec.dim < 2**31
        header = FileHeader(dim=int(spec.dim), bits=int(spec.bits), code_bytes=int(spec.code_bytes),
                            scale=float(spec.scale), metric=str(spec.metric),
                            flags=HEADER_FLAG_SQNORMS if store_norms else 0)
        raw = header.pack()
        lock_fd = acquire_lock(path)
        try:
            if os.path.exists(path) and not overwrite:
                raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it "
                                      "(its entries will be lost)")
            tmp = f"{path}.create-{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                write_all(fd, raw, 0)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            fsync_parent(path)
            return cls._open_locked(path, "a", lock_fd, release_pages=release_pages, check_payloads=True)
        except BaseException:
            release_lock(lock_fd)
            raise

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r", *, spec: CodecSpec | None = None,
             check_payloads: bool = True, release_pages: bool = False) -> GalleryStore:
        """Open an existing store.

        ``mode="r"``: a reader (no lock; a torn tail is ignored). ``mode="a"``: the writer (takes the
        lock; a torn tail is saved to ``<path>.torn-<offset>-<ns>`` and truncated away).
        ``spec``: if given, the store must have been made with it (:meth:`check_spec`).
        ``check_payloads``: verify every record's payload checksum on open (reads the whole file
        once, in 1 MiB pieces); False checks headers and the last record only, for fast opens of
        huge stores (run :meth:`verify` separately then).
        ``release_pages``: drop each scanned block's pages from this process's mapping after use,
        so resident memory stays at one block even for page-cache-hungry galleries (costs page
        faults on every search).
        """
        path = os.fspath(path)
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' (reader) or 'a' (writer), got {mode!r}")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such gallery store (create it with GalleryStore.create)")
        lock_fd = acquire_lock(path) if mode == "a" else None
        try:
            store = cls._open_locked(path, mode, lock_fd, release_pages=release_pages,
                                     check_payloads=check_payloads)
        except BaseException:
            if lock_fd is not None:
                release_lock(lock_fd)
            raise
        if spec is not None:
            try:
                store.check_spec(spec)
            except BaseException:
                store.close()
                raise
        return store

    @classmethod
    def _open_locked(cls, path: str, mode: str, lock_fd: int | None, *, release_pages: bool,
                     check_payloads: bool) -> GalleryStore:
        """Open ``path`` for a caller that already holds the lock (writer); the lock passes to the
        handle only on success, so the caller still owns (and closes) it if this raises."""
        fd = os.open(path, os.O_RDWR if mode == "a" else os.O_RDONLY)
        store = cls._from_fd(path, mode, fd, release_pages=release_pages, check_payloads=check_payloads)
        if mode == "a":
            try:
                store._recover_tail()
            except BaseException:
                store.close()
                raise
        store._lock_fd = lock_fd
        if mode == "a":
            register_writer(store)
        return store

    @classmethod
    def _from_fd(cls, path: str, mode: str, fd: int, *, release_pages: bool, check_payloads: bool) -> GalleryStore:
        """A lock-less handle reading the file open on ``fd``; ``fd`` is closed if this raises."""
        try:
            header = FileHeader.unpack(pread_exact(fd, HEADER_SIZE, 0), path)
            try:
                spec = CodecSpec(dim=header.dim, bits=header.bits, scale=header.scale, metric=header.metric)
            except (ValueError, TypeError) as exc:
                raise StoreError(f"{path}: header describes an invalid embedding spec: {exc}") from None
            if int(spec.code_bytes) != header.code_bytes:
                raise StoreError(f"{path}: offset 20, field code_bytes: expected {spec.code_bytes} for "
                                 f"dim={header.dim} bits={header.bits}, got {header.code_bytes}")
            store = cls(path, mode, fd, None, header, spec, release_pages)
        except BaseException:
            os.close(fd)
            raise
        try:
            store._load(check_payloads)
        except BaseException:
            store.close()
            raise
        return store

    def _adopt(self, other: GalleryStore) -> None:
        """Take over ``other``'s file and state (after compaction); keep this handle's lock."""
        self._drop_map()
        old_fd, lock_fd = self._fd, self._lock_fd
        self.__dict__.update(other.__dict__)
        self._lock_fd = lock_fd
        other._fd, other._lock_fd, other._mm, other._closed = -1, None, None, True
        os.close(old_fd)

    # ------------------------------------------------------------------ loading

    def _load(self, check_payloads: bool, start: int = HEADER_SIZE, file_size: int | None = None) -> int:
        """Scan records from ``start`` and apply them; returns the number of entries added."""
        scan = scan_records(self._fd, self._header, start, len(self._keys), self._path,
                            check_payloads=check_payloads, file_size=file_size)
        before = self._n_rows
        new_keys = [key for rec in scan.records for key in rec.new_keys]
        if len(set(new_keys)) != len(new_keys) or any(key in self._key_index for key in new_keys):
            # a writer never defines an identity twice: find the record that does, for the message
            seen = set(self._key_index)
            for rec in scan.records:
                for key in rec.new_keys:
                    if key in seen:
                        raise StoreError(f"{self._path}: record at offset {rec.offset}: identity {key!r} is "
                                         "defined twice in the identity table")
                    seen.add(key)
        removed_any = False
        for rec in scan.records:
            if rec.header.rtype == REC_ADD:
                self._apply_add(rec)
            else:
                idx = np.frombuffer(pread_exact(self._fd, 4 * rec.header.count, rec.payload), dtype="<u4")
                self._apply_remove(idx)
                removed_any = True
        self._end = scan.committed_end
        self._torn_bytes = scan.torn_bytes
        self._torn_reason = scan.tail_reason
        if removed_any:
            self._mark_dirty()
        return self._n_rows - before

    def _intern_new(self, keys: list[Identity]) -> None:
        for key in keys:
            self._key_index[key] = len(self._keys)
            self._keys.append(key)
        self._live.extend_zeros(len(keys))
        self._dead_below.extend_zeros(len(keys))

    def _apply_add(self, rec: ScannedRecord) -> None:
        self._intern_new(rec.new_keys)
        lay, h = rec.layout, rec.header
        assert lay is not None
        base = rec.payload
        if h.count:
            idx = np.frombuffer(pread_exact(self._fd, 4 * h.count, base + lay.ident_idx), dtype="<u4")
            np.add.at(self._live.view, idx.astype(np.intp), 1)
            self._blocks.append(_Block(
                start_row=self._n_rows, count=h.count, idx_off=base + lay.ident_idx, codes_off=base + lay.codes,
                sq_off=base + lay.sqnorms if lay.sqnorms >= 0 else -1,
                cam_off=base + lay.cameras if lay.cameras >= 0 else -1,
                ts_off=base + lay.timestamps if lay.timestamps >= 0 else -1,
                ts_int=bool(h.flags & FLAG_TIMESTAMPS_INT), flags=h.flags,
            ))
            self._starts.append(self._n_rows)
            self._starts_arr = None
            self._n_rows += h.count
            self._n_live += h.count

    def _apply_remove(self, idx: np.ndarray) -> int:
        idx = np.unique(idx).astype(np.intp)
        removed = int(self._live.view[idx].sum())
        self._live.view[idx] = 0
        self._dead_below.view[idx] = self._n_rows
        self._n_live -= removed
        return removed

    def _mark_dirty(self) -> None:
        """Flag blocks holding removed entries (their searches need a validity mask)."""
        dead = self._dead_below.view
        if not dead.size:
            return
        horizon = int(dead.max())
        for b in self._blocks:
            if b.dirty or b.start_row >= horizon:
                continue
            idx = np.frombuffer(pread_exact(self._fd, 4 * b.count, b.idx_off), dtype="<u4")
            rows = np.arange(b.start_row, b.start_row + b.count, dtype=np.int64)
            b.dirty = bool((rows < dead[idx]).any())

    def _recover_tail(self) -> None:
        """Writer open: keep a copy of a torn tail next to the store, then truncate it away.

        Also deletes temporary files of an interrupted create or compaction: they are written only
        under the writer lock, which this handle now holds, so nobody is still writing them.
        """
        folder, base = os.path.split(os.path.abspath(self._path))
        for name in os.listdir(folder):
            if name.startswith((base + ".compact-", base + ".create-")) and name.endswith(".tmp"):
                os.unlink(os.path.join(folder, name))
        size = os.fstat(self._fd).st_size
        if size <= self._end:
            return
        keep = f"{self._path}.torn-{self._end}-{time.time_ns()}"
        tail = pread_exact(self._fd, size - self._end, self._end)
        tfd = os.open(keep, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            write_all(tfd, tail, 0)
            os.fsync(tfd)
        finally:
            os.close(tfd)
        os.ftruncate(self._fd, self._end)
        os.fsync(self._fd)
        fsync_parent(self._path)
        self._torn_bytes = 0

    # ------------------------------------------------------------------ properties

    @property
    def path(self) -> str:
        return self._path

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def spec(self) -> CodecSpec:
        """The embedding spec every code in this store was made with."""
        return self._spec

    @property
    def code_bytes(self) -> int:
        return self._header.code_bytes

    @property
    def num_rows(self) -> int:
        """Entries ever added in this file (live + removed); row ids run 0..num_rows-1."""
        return self._n_rows

    @property
    def committed_bytes(self) -> int:
        """Length of the committed prefix of the file this handle reads."""
        return self._end

    @property
    def torn_tail_bytes(self) -> int:
        """Bytes after the committed data that this handle ignores (a writer truncates them: 0)."""
        return self._torn_bytes

    def __len__(self) -> int:
        return self._n_live

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"mode={self._mode!r}"
        return (f"GalleryStore({self._path!r}, {state}, live={self._n_live}, identities={len(self._keys)}, "
                f"dim={self._header.dim}, bits={self._header.bits})")

    def check_spec(self, spec: CodecSpec) -> None:
        """Raise :class:`SpecMismatchError` naming every field where ``spec`` differs from the store."""
        mine = self._header
        diffs: list[str] = []
        fields: list[str] = []
        for name, have, want in (("dim", mine.dim, spec.dim), ("bits", mine.bits, spec.bits),
                                 ("metric", mine.metric, spec.metric)):
            if have != want:
                fields.append(name)
                diffs.append(f"{name}: store has {have!r}, bundle embedding has {want!r}")
        # float32 codes ignore the scale; otherwise a JSON / float32 round trip is not a change
        if mine.bits != 32 and not math.isclose(mine.scale, float(spec.scale), rel_tol=SCALE_REL_TOL, abs_tol=0.0):
            fields.append("scale")
            diffs.append(f"scale: store has {mine.scale!r}, bundle embedding has {float(spec.scale)!r}")
        if diffs:
            raise SpecMismatchError(
                f"{self._path}: the gallery's codes were made with a different embedding spec ("
                + "; ".join(diffs) + "); re-enrol the gallery with this bundle or use the bundle it was "
                "built with", fields)

    # ------------------------------------------------------------------ writing

    def _require_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self._path}: store is closed")

    def _require_writer(self) -> None:
        self._require_open()
        if self._mode != "a":
            raise StoreError(f"{self._path}: opened read-only (mode='r'); open with mode='a' to modify")
        if self._forked:
            raise StoreError(f"{self._path}: this writer handle was inherited through fork() and its lock "
                             "belongs to the parent process; open the store again in this process")

    def _commit(self, rtype: int, flags: int, count: int, n_idents: int,
                sections: list[bytes | memoryview]) -> int:
        """Append one record and fsync it; on any failure roll the file back to the last commit."""
        start = self._end
        try:
            end = write_record(self._fd, start, rtype, flags, count, n_idents, sections)
            os.fsync(self._fd)
        except BaseException:
            try:
                os.ftruncate(self._fd, start)
                os.fsync(self._fd)
            except OSError:
                self._closed = True  # cannot restore a clean tail: refuse further use of this handle
            raise
        self._end = end
        return start

    def _check_codes(self, codes: Any, n: int | None, name: str) -> np.ndarray:
        """(n, code_bytes) uint8 view of ``codes`` (int8 accepted; 1-D = one row when n is None)."""
        if not isinstance(codes, np.ndarray) or (codes.ndim == 1 and n is not None):
            arr = np.asarray(codes)
            if arr.ndim == 1 and n is not None:
                raise ValueError(f"{name}: expected shape (n, {self.code_bytes}), got {arr.shape}")
            codes = arr
        arr = check_codes(codes, self._spec, name)
        if n is not None and arr.shape[0] != n:
            raise ValueError(f"{name}: has {arr.shape[0]} rows but {n} ids were given")
        return np.ascontiguousarray(arr)

    def add(self, ids: Sequence[Identity] | np.ndarray, codes: np.ndarray,
            cameras: Sequence[int] | np.ndarray | None = None,
            timestamps: Sequence[float] | np.ndarray | None = None) -> None:
        """Append entries and commit them (returns after fsync: then they survive any crash).

        ``ids``: one identity (int or str) per row; ints come back as ints, strings as strings.
        ``codes``: (n, code_bytes) uint8 (int8 accepted) from the store's codec. ``cameras``: ints
        (int32 range); ``timestamps``: floats (stored float64) or integers (stored int64).
        """
        self._require_writer()
        keys = as_identities(ids)
        n = len(keys)
        arr = self._check_codes(codes, n, "codes")
        cams = ts = None
        if cameras is not None:
            cams = np.asarray(cameras)
            if cams.shape != (n,) or cams.dtype.kind not in "iu":
                raise ValueError(f"cameras must be {n} integers, got shape {cams.shape} dtype {cams.dtype}")
            if n and (int(cams.min()) < _INT32_MIN or int(cams.max()) > _INT32_MAX):
                raise ValueError("cameras must fit int32")
        if timestamps is not None:
            ts = np.asarray(timestamps)
            if ts.shape != (n,) or ts.dtype.kind not in "iuf":
                raise ValueError(f"timestamps must be {n} numbers, got shape {ts.shape} dtype {ts.dtype}")
            if ts.dtype.kind == "u" and n and int(ts.max()) > _INT64_MAX:
                raise ValueError("integer timestamps must fit int64")
        if n == 0:
            return
        new_keys: list[Identity] = []
        pending: dict[Identity, int] = {}
        idx = np.empty(n, dtype=np.uint32)
        known = self._key_index
        base = len(self._keys)
        for i, key in enumerate(keys):
            j = known.get(key)
            if j is None:
                j = pending.get(key)
                if j is None:
                    j = pending[key] = base + len(new_keys)
                    new_keys.append(key)
            idx[i] = j
        if base + len(new_keys) > 0xFFFFFFFF:
            raise StoreError(f"{self._path}: more than 2**32 identities")
        sqn = code_sqnorms(arr, self._spec).astype(np.int32) if self._stores_sqnorms else None
        flags, layout, sections = add_record(new_keys, idx, arr, sqn, cams, ts)
        offset = self._commit(REC_ADD, flags, n, len(new_keys), sections)
        # committed: mirror it in memory exactly as a fresh open would
        header = RecordHeader(REC_ADD, flags, n, len(new_keys), layout.total, 0)
        self._apply_add(ScannedRecord(offset, header, layout, new_keys))

    def remove(self, ids: Identity | Sequence[Identity]) -> int:
        """Remove every live entry of the given identities; returns how many entries were removed.

        Appends one tombstone record (nothing is rewritten); identities with no live entries are
        ignored. The space comes back with :meth:`compact`.
        """
        self._require_writer()
        keys = [as_identity(ids, "ids")] if isinstance(ids, (str, int, np.integer)) else as_identities(ids)
        idx = sorted({self._key_index[k] for k in keys if k in self._key_index})
        live = self._live.view
        idx_arr = np.asarray([i for i in idx if live[i] > 0], dtype=np.uint32)
        if not idx_arr.size:
            return 0
        _len, sections = remove_record(idx_arr)
        self._commit(REC_REMOVE, 0, int(idx_arr.size), 0, sections)
        removed = self._apply_remove(idx_arr)
        self._mark_dirty()
        return removed

    # ------------------------------------------------------------------ reading

    def _map(self) -> mmap.mmap:
        """A read-only mapping of exactly the committed bytes (never a torn tail)."""
        self._require_open()
        if self._mm is None or self._mapped != self._end:
            old = self._mm
            self._mm = mmap.mmap(self._fd, self._end, access=mmap.ACCESS_READ)
            self._mapped = self._end
            if old is not None:
                try:
                    old.close()
                except BufferError:  # a caller still holds a view; the GC closes it later
                    pass
        return self._mm

    def _release(self, mm: mmap.mmap, start: int, length: int) -> None:
        if not self._release_pages or length <= 0:
            return
        lo = start - start % _PAGE
        hi = min(start + length, self._mapped)
        if hi > lo:
            mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)

    def _codes_view(self, mm: mmap.mmap, b: _Block, lo: int, hi: int) -> np.ndarray:
        cb = self._header.code_bytes
        return np.frombuffer(mm, dtype=np.uint8, count=(hi - lo) * cb, offset=b.codes_off + lo * cb).reshape(
            hi - lo, cb)

    def _valid_mask(self, mm: mmap.mmap, b: _Block, lo: int, hi: int) -> np.ndarray | None:
        if not b.dirty:
            return None
        idx = np.frombuffer(mm, dtype="<u4", count=hi - lo, offset=b.idx_off + 4 * lo)
        rows = np.arange(b.start_row + lo, b.start_row + hi, dtype=np.int64)
        return rows >= self._dead_below.view[idx]

    def iter_blocks(self, max_rows: int = SCAN_ROWS) -> Iterator[tuple]:
        """Blocks for ``search.topk`` over the committed entries, at most ``max_rows`` rows each:
        ``(start_row, codes, valid mask or None[, squared norms])``. The arrays are zero-copy views
        into the file mapping, valid until the next write, refresh or close. A block's pages are
        released (``release_pages``) when the next block is requested: the kernel is done with it."""
        mm = self._map()
        cb = self._header.code_bytes
        for b in self._blocks:
            for lo in range(0, b.count, max_rows):
                hi = min(lo + max_rows, b.count)
                item: tuple = (b.start_row + lo, self._codes_view(mm, b, lo, hi), self._valid_mask(mm, b, lo, hi))
                if b.sq_off >= 0:
                    item += (np.frombuffer(mm, dtype="<i4", count=hi - lo, offset=b.sq_off + 4 * lo),)
                yield item
                self._release(mm, b.codes_off + lo * cb, (hi - lo) * cb)
                if b.sq_off >= 0:
                    self._release(mm, b.sq_off + 4 * lo, 4 * (hi - lo))
                if b.dirty:
                    self._release(mm, b.idx_off + 4 * lo, 4 * (hi - lo))

    def _locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For global rows (>= 0): (block index, row within block)."""
        if self._starts_arr is None:
            self._starts_arr = np.asarray(self._starts, dtype=np.int64)
        bi = np.searchsorted(self._starts_arr, rows, side="right") - 1
        return bi, rows - self._starts_arr[bi]

    def identity_index_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """Identity-table index (int64) of each global row; -1 where the row is -1."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.full(rows.shape, -1, dtype=np.int64)
        ok = rows >= 0
        if not ok.any():
            return out
        if int(rows[ok].max()) >= self._n_rows:
            raise IndexError(f"row {int(rows[ok].max())} out of range (store has {self._n_rows} rows)")
        mm = self._map()
        flat_rows = rows[ok]
        bi, within = self._locate(flat_rows)
        vals = np.empty(flat_rows.size, dtype=np.int64)
        for j in np.unique(bi).tolist():
            sel = bi == j
            b = self._blocks[j]
            col = np.frombuffer(mm, dtype="<u4", count=b.count, offset=b.idx_off)
            vals[sel] = col[within[sel]]
        out[ok] = vals
        return out

    def identities_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """Identities (object array: int or str; None where the row is -1) of global rows."""
        idx = self.identity_index_of_rows(rows)
        out = np.empty(idx.shape, dtype=object)
        flat = idx.ravel()
        out_flat = out.reshape(-1)
        keys = self._keys
        for i, j in enumerate(flat.tolist()):
            out_flat[i] = keys[j] if j >= 0 else None
        return out

    def _check_query(self, codes: Any) -> np.ndarray:
        self._require_open()
        return self._check_codes(codes, None, "query codes")

    def search_rows(self, codes: np.ndarray, k: int, block_rows: int = SCAN_ROWS) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` live rows per query: (rows int64 (nq, k), distances int64 (nq, k)); row -1 = none."""
        q = self._check_query(codes)
        k = self._check_k(k)
        rows, dist = topk(q, self.iter_blocks(block_rows), self._spec, k, block_rows=block_rows)
        return rows, dist

    @staticmethod
    def _check_k(k: Any) -> int:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        return int(k)

    def search(self, codes: np.ndarray, k: int, per_identity: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Nearest live entries to each query code (exact; ``search.topk`` over the mapped blocks).

        Returns ``(ids, distances)``: ``ids`` an object array (nq, k) of identities (None where
        fewer than k results exist), ``distances`` (nq, k) in the codec's units, smaller is closer:
        int64 for 8/4/1-bit codes (int64 max where missing), float64 for float32 codes (inf).
        Ties are broken by row (enrolment order). With ``per_identity=True`` each identity appears
        at most once per query, at its best entry's distance. A 1-D ``codes`` is one query.
        """
        q = self._check_query(codes)
        k = self._check_k(k)
        if per_identity:
            # exact: deepens the row search for queries whose short list held < k identities
            ids, _rows, dist = topk_per_identity(q, self.iter_blocks, self._spec, k, self.identities_of_rows,
                                                 block_rows=SCAN_ROWS)
            return ids, dist
        rows, dist = topk(q, self.iter_blocks(), self._spec, k, block_rows=SCAN_ROWS)
        return self.identities_of_rows(rows), dist

    # ------------------------------------------------------------------ inspection

    def identities(self) -> list[Identity]:
        """Identities with at least one live entry, in first-enrolled order."""
        live = self._live.view
        return [self._keys[i] for i in np.flatnonzero(live > 0).tolist()]

    def count(self, identity: Identity) -> int:
        """Live entries of ``identity`` (0 if unknown)."""
        j = self._key_index.get(as_identity(identity, "identity"))
        return 0 if j is None else int(self._live.view[j])

    def entries(self, live_only: bool = True) -> Iterator[Entry]:
        """Every (live) entry in row order, with copies of its code, camera and timestamp."""
        return self._entries(live_only, None)

    def get(self, identity: Identity) -> list[Entry]:
        """The live entries of one identity, in row order (scans the 4-byte identity column)."""
        j = self._key_index.get(as_identity(identity, "identity"))
        if j is None or self._live.view[j] == 0:
            return []
        return list(self._entries(True, j))

    def _entries(self, live_only: bool, only: int | None) -> Iterator[Entry]:
        mm = self._map()
        dead = self._dead_below.view
        for b in self._blocks:
            for lo in range(0, b.count, SCAN_ROWS):
                hi = min(lo + SCAN_ROWS, b.count)
                idx = np.frombuffer(mm, dtype="<u4", count=hi - lo, offset=b.idx_off + 4 * lo).astype(np.int64)
                rows = np.arange(b.start_row + lo, b.start_row + hi, dtype=np.int64)
                keep = rows >= dead[idx] if live_only else np.ones(hi - lo, dtype=bool)
                if only is not None:
                    keep &= idx == only
                sel = np.flatnonzero(keep)
                if not sel.size:
                    continue
                codes = self._codes_view(mm, b, lo, hi)[sel]  # fancy indexing copies
                cams = (np.frombuffer(mm, dtype="<i4", count=hi - lo, offset=b.cam_off + 4 * lo)[sel].tolist()
                        if b.cam_off >= 0 else [None] * sel.size)
                ts = [None] * sel.size
                if b.ts_off >= 0:
                    ts = np.frombuffer(mm, dtype="<i8" if b.ts_int else "<f8", count=hi - lo,
                                       offset=b.ts_off + 8 * lo)[sel].tolist()
                keys = self._keys
                for i, r in enumerate(sel.tolist()):
                    yield Entry(int(rows[r]), keys[idx[r]], codes[i], cams[i], ts[i])

    # ------------------------------------------------------------------ maintenance

    def refresh(self) -> int:
        """Reader: pick up records committed since open (or the compacted file); returns new rows.

        After a compaction the path names a new file: the handle re-opens it (row numbers change).
        """
        self._require_open()
        st = os.stat(self._path)
        mine = os.fstat(self._fd)
        if (st.st_ino, st.st_dev) != (mine.st_ino, mine.st_dev):
            fd = os.open(self._path, os.O_RDWR if self._mode == "a" else os.O_RDONLY)
            new = self._from_fd(self._path, self._mode, fd, release_pages=self._release_pages, check_payloads=True)
            if new._header != self._header:
                new.close()
                raise StoreError(f"{self._path}: was replaced by a store with a different header "
                                 f"({new._header} instead of {self._header})")
            self._adopt(new)
            return self._n_rows
        return self._load(check_payloads=True, start=self._end)

    def compact(self) -> VerifyReport:
        """Rewrite the store with only its live entries, atomically, and switch this handle to it.

        Write ``<path>.compact-<pid>.tmp`` + fsync, rename it over ``path``, fsync the directory.
        A crash before the rename leaves the old file untouched (the temp file is deleted by the
        next writer open); after it, the new file is complete. Returns the new file's report.
        """
        self._require_writer()
        tmp = f"{self._path}.compact-{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            pos = write_all(fd, self._header.pack(), 0)
            pos = self._write_live(fd, pos)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        self._drop_map()
        os.replace(tmp, self._path)
        fsync_parent(self._path)
        self._adopt(self._from_fd(self._path, "a", fd, release_pages=self._release_pages, check_payloads=True))
        return self.verify()

    def _write_live(self, fd: int, pos: int) -> int:
        """Stream live entries into ``fd`` as ADD records of up to COMPACT_ROWS rows, in row order.

        Entries are grouped into records by which optional columns they carry; the identity table
        is rebuilt with only the identities that still have live entries.
        """
        new_index: dict[int, int] = {}
        pend: list[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]] = []
        pend_rows = 0
        pend_kind = -1
        optional = FLAG_CAMERAS | FLAG_TIMESTAMPS | FLAG_TIMESTAMPS_INT

        def flush() -> None:
            nonlocal pend, pend_rows, pos
            if not pend:
                return
            old_idx = np.concatenate([p[0] for p in pend])
            codes = np.concatenate([p[1] for p in pend])
            cams = np.concatenate([p[2] for p in pend]) if pend[0][2] is not None else None
            ts = np.concatenate([p[3] for p in pend]) if pend[0][3] is not None else None
            base = len(new_index)
            mapped = np.fromiter((new_index.setdefault(j, len(new_index)) for j in old_idx.tolist()),
                                 dtype=np.uint32, count=old_idx.size)
            new_keys = [self._keys[j] for j, nj in new_index.items() if nj >= base]
            sqn = code_sqnorms(codes, self._spec).astype(np.int32) if self._stores_sqnorms else None
            flags, _layout, sections = add_record(new_keys, mapped, codes, sqn, cams, ts)
            pos = write_record(fd, pos, REC_ADD, flags, int(mapped.size), len(new_keys), sections)
            pend, pend_rows = [], 0

        mm = self._map()
        dead = self._dead_below.view
        cb = self.code_bytes
        for b in self._blocks:
            for lo in range(0, b.count, COMPACT_ROWS):
                hi = min(lo + COMPACT_ROWS, b.count)
                idx = np.frombuffer(mm, dtype="<u4", count=hi - lo, offset=b.idx_off + 4 * lo).astype(np.int64)
                keep = np.flatnonzero(np.arange(b.start_row + lo, b.start_row + hi) >= dead[idx])
                if not keep.size:
                    continue
                cols = (idx[keep], self._codes_view(mm, b, lo, hi)[keep],
                        np.frombuffer(mm, dtype="<i4", count=hi - lo, offset=b.cam_off + 4 * lo)[keep]
                        if b.cam_off >= 0 else None,
                        np.frombuffer(mm, dtype="<i8" if b.ts_int else "<f8", count=hi - lo,
                                      offset=b.ts_off + 8 * lo)[keep] if b.ts_off >= 0 else None)
                if b.flags & optional != pend_kind:
                    flush()
                    pend_kind = b.flags & optional
                taken = 0
                while taken < keep.size:
                    part = tuple(None if c is None else c[taken:taken + COMPACT_ROWS - pend_rows] for c in cols)
                    pend.append(part)  # type: ignore[arg-type]
                    pend_rows += part[0].shape[0]
                    taken += part[0].shape[0]
                    if pend_rows >= COMPACT_ROWS:
                        flush()
                self._release(mm, b.codes_off + lo * cb, (hi - lo) * cb)
        flush()
        return pos

    def verify(self) -> VerifyReport:
        """Re-read the whole file at ``path`` and check every checksum, index, norm and count, and
        that this handle's snapshot is a prefix of it. Never raises for a bad file: problems are
        listed in the report (``ok`` False)."""
        self._require_open()
        rep = verify_file(self._path, self._spec)
        mine = os.fstat(self._fd)
        if rep.file_id is not None and rep.file_id != (mine.st_dev, mine.st_ino):
            rep.notes.append("the path now names a different file (compacted); call refresh()")
        elif rep.committed_bytes < self._end and not rep.problems:
            rep.problems.append(f"the file's committed data ends at {rep.committed_bytes}, before this "
                                f"handle's snapshot end {self._end}: committed records were lost")
        elif rep.committed_bytes == self._end and (rep.live_entries, rep.entries) != (self._n_live, self._n_rows):
            rep.problems.append(f"on-disk counts (entries {rep.entries}, live {rep.live_entries}) differ "
                                f"from this handle's (entries {self._n_rows}, live {self._n_live})")
        rep.ok = not rep.problems
        return rep

    # ------------------------------------------------------------------ closing

    def _drop_map(self) -> None:
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass
            self._mm = None
            self._mapped = 0

    def close(self) -> None:
        """Release the mapping, the file and (writer) the lock. Idempotent."""
        self._drop_map()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd is not None:
            release_lock(self._lock_fd)
            self._lock_fd = None
        self._closed = True

    def __enter__(self) -> GalleryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

