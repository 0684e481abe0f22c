"""Byte layout of the gallery store file (``store.bin``, format version 1) and its record codec.

This module knows bytes, not galleries: it packs and unpacks the file header and the record
headers, lays out and writes record payloads, scans a file for its committed records and
verifies a whole file. It never trusts a
length read from disk: every count is checked against the bytes that are really there before
anything is allocated, so a corrupt or hostile file gives a :class:`StoreError` naming the offset,
the field and what was expected, never a crash or a huge allocation. ``docs/store-format.md`` is
the prose version of this module; keep the two in step.

Layout (all integers little-endian, every record starts 8-byte aligned)::

    file header   64 bytes   magic, version, dim, bits, flags, code_bytes, scale, metric, crc32
    record        32-byte record header + payload (a multiple of 8 bytes)
    record        ...

Record types: ``ADD`` (new identities + a block of entries) and ``REMOVE`` (a tombstone listing
identity indices). A record is committed once its bytes are written and ``fsync`` has returned.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from edgereid.runtime.codec import CodecSpec, code_sqnorms

__all__ = [
    "StoreError",
    "Identity",
    "as_identity",
    "as_identities",
    "write_all",
    "write_record",
    "Growable",
    "VerifyReport",
    "verify_file",
    "FORMAT_VERSION",
    "FILE_MAGIC",
    "RECORD_MAGIC",
    "HEADER_SIZE",
    "RECORD_HEADER_SIZE",
    "REC_ADD",
    "REC_REMOVE",
    "HEADER_FLAG_SQNORMS",
    "FLAG_CAMERAS",
    "FLAG_TIMESTAMPS",
    "FLAG_TIMESTAMPS_INT",
    "FLAG_SQNORMS",
    "KIND_INT",
    "KIND_STR",
    "FileHeader",
    "RecordHeader",
    "AddLayout",
    "ScannedRecord",
    "ScanResult",
    "pad8",
    "encode_identities",
    "decode_identities",
    "add_record",
    "remove_record",
    "scan_records",
    "pread_exact",
    "crc32_range",
]


Identity = int | str
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class StoreError(ValueError):
    """A store file (or a request against it) is not what it must be; the message says where."""


FORMAT_VERSION = 1
# PNG-style magic: a non-ASCII first byte and CR LF / ^Z / LF catch text-mode and 7-bit mangling.
FILE_MAGIC = b"\x89ERS\r\n\x1a\n"
RECORD_MAGIC = b"ERRC"
HEADER_SIZE = 64
RECORD_HEADER_SIZE = 32

REC_ADD = 1
REC_REMOVE = 2
RECORD_TYPE_NAMES = {REC_ADD: "ADD", REC_REMOVE: "REMOVE"}

HEADER_FLAG_SQNORMS = 0x01  # file header: ADD records written by this store carry squared norms

FLAG_CAMERAS = 0x01
FLAG_TIMESTAMPS = 0x02
FLAG_TIMESTAMPS_INT = 0x04  # timestamps are int64 (else float64); only with FLAG_TIMESTAMPS
FLAG_SQNORMS = 0x08  # int32 squared level norm per entry (codec.code_sqnorms), for the search kernel
_ADD_FLAGS = FLAG_CAMERAS | FLAG_TIMESTAMPS | FLAG_TIMESTAMPS_INT | FLAG_SQNORMS

KIND_INT = 0  # identity is an int64
KIND_STR = 1  # identity is a UTF-8 string

MAX_METRIC_BYTES = 16
_HEADER_STRUCT = struct.Struct("<8sHHIBBHId16s8sII")
_RECORD_STRUCT = struct.Struct("<4sBBHIIQII")
assert _HEADER_STRUCT.size == HEADER_SIZE and _RECORD_STRUCT.size == RECORD_HEADER_SIZE

_CRC_CHUNK = 1 << 20  # payload checksums stream through 1 MiB reads: bounded memory on open


def pad8(n: int) -> int:
    """``n`` rounded up to a multiple of 8 (sections and records are 8-byte aligned)."""
    return (n + 7) & ~7


# ---------------------------------------------------------------------------------------------
# file header
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileHeader:
    """The 64-byte file header: what every code in the file means."""

    dim: int
    bits: int
    code_bytes: int
    scale: float
    metric: str
    flags: int = 0  # HEADER_FLAG_SQNORMS: the writer stores each entry's squared norm
    version: int = FORMAT_VERSION

    def pack(self) -> bytes:
        metric = self.metric.encode("ascii")
        if not metric or len(metric) > MAX_METRIC_BYTES:
            raise StoreError(f"metric name {self.metric!r} must be 1..{MAX_METRIC_BYTES} ASCII bytes")
        body = _HEADER_STRUCT.pack(
            FILE_MAGIC, self.version, HEADER_SIZE, self.dim, self.bits, self.flags, 0,
            self.code_bytes, float(self.scale), metric, b"\0" * 8, 0, 0,
        )
        return body[:-4] + struct.pack("<I", zlib.crc32(body[:-4]))

    @classmethod
    def unpack(cls, raw: bytes, path: str) -> FileHeader:
        """Parse and check a header; every failure names the field, expected and got."""
        if len(raw) < HEADER_SIZE:
            raise StoreError(
                f"{path}: file is {len(raw)} bytes, shorter than the {HEADER_SIZE}-byte store header "
                "(not a gallery store, or truncated)"
            )
        (magic, version, header_size, dim, bits, flags, reserved, code_bytes, scale, metric,
         reserved2, reserved3, crc) = _HEADER_STRUCT.unpack(raw[:HEADER_SIZE])
        if magic != FILE_MAGIC:
            raise StoreError(f"{path}: offset 0, field magic: expected {FILE_MAGIC!r}, got {magic!r} "
                             "(not an edgereid gallery store)")
        want_crc = zlib.crc32(raw[: HEADER_SIZE - 4])
        if crc != want_crc:
            raise StoreError(f"{path}: offset 60, field header_crc: expected {want_crc:#010x} "
                             f"(computed), got {crc:#010x}: the store header is corrupt")
        if version != FORMAT_VERSION:
            raise StoreError(f"{path}: offset 8, field version: expected {FORMAT_VERSION}, got {version} "
                             "(written by a newer or older edgereid)")
        if header_size != HEADER_SIZE:
            raise StoreError(f"{path}: offset 10, field header_size: expected {HEADER_SIZE}, got {header_size}")
        if flags & ~HEADER_FLAG_SQNORMS:
            raise StoreError(f"{path}: offset 17, field flags: expected only bit 0 (stored norms), got {flags:#04x}")
        if reserved or reserved3 or reserved2 != b"\0" * 8:
            raise StoreError(f"{path}: offsets 18-19 and 48-59, reserved header fields: expected zeros")
        if dim < 1 or code_bytes < 1 or bits < 1:
            raise StoreError(f"{path}: header fields dim/bits/code_bytes must be positive, got "
                             f"dim={dim} bits={bits} code_bytes={code_bytes}")
        if not np.isfinite(scale) or scale <= 0:
            raise StoreError(f"{path}: offset 24, field scale: expected a finite positive float, got {scale!r}")
        name = metric.rstrip(b"\0")
        try:
            metric_str = name.decode("ascii")
        except UnicodeDecodeError:
            raise StoreError(f"{path}: offset 32, field metric: expected ASCII, got {metric!r}") from None
        if not metric_str or b"\0" in name:
            raise StoreError(f"{path}: offset 32, field metric: expected a NUL-padded name, got {metric!r}")
        return cls(dim=dim, bits=bits, code_bytes=code_bytes, scale=scale, metric=metric_str, flags=flags,
                   version=version)


# ---------------------------------------------------------------------------------------------
# record header
# ---------------------------------------------------------------------------------------------


def _header_crc(body28: bytes, offset: int) -> int:
    # Seeding with the record's file offset binds a record to its position: a stale copy of a record
    # found anywhere else (a recycled disk block, a misdirected write) never verifies.
    return zlib.crc32(body28, zlib.crc32(struct.pack("<Q", offset)))


@dataclass(frozen=True)
class RecordHeader:
    """The 32-byte header in front of every record payload."""

    rtype: int
    flags: int
    count: int
    n_idents: int
    payload_len: int
    payload_crc: int

    def pack(self, offset: int) -> bytes:
        body = _RECORD_STRUCT.pack(RECORD_MAGIC, self.rtype, self.flags, 0, self.count, self.n_idents,
                                   self.payload_len, self.payload_crc, 0)
        return body[:28] + struct.pack("<I", _header_crc(body[:28], offset))

    @staticmethod
    def checksum_ok(raw: bytes, offset: int) -> bool:
        """True when ``raw`` (32 bytes read at ``offset``) carries the record magic and a valid crc."""
        if len(raw) < RECORD_HEADER_SIZE or raw[:4] != RECORD_MAGIC:
            return False
        (crc,) = struct.unpack_from("<I", raw, 28)
        return crc == _header_crc(raw[:28], offset)

    @classmethod
    def unpack(cls, raw: bytes) -> tuple[RecordHeader, int]:
        """Fields of a header whose checksum has been verified; returns (header, reserved field)."""
        _magic, rtype, flags, reserved, count, n_idents, payload_len, payload_crc, _ = _RECORD_STRUCT.unpack(
            raw[:RECORD_HEADER_SIZE])
        return cls(rtype, flags, count, n_idents, payload_len, payload_crc), reserved


# ---------------------------------------------------------------------------------------------
# identity table encoding
# ---------------------------------------------------------------------------------------------


def encode_identities(keys: Sequence[int | str]) -> tuple[np.ndarray, np.ndarray, bytes]:
    """(kinds u8, values i64, blob): ints in ``values``; strings as UTF-8 in ``blob``, length in ``values``."""
    n = len(keys)
    kinds = np.zeros(n, dtype=np.uint8)
    values = np.zeros(n, dtype="<i8")
    parts: list[bytes] = []
    for i, key in enumerate(keys):
        if isinstance(key, str):
            raw = key.encode("utf-8")
            kinds[i] = KIND_STR
            values[i] = len(raw)
            parts.append(raw)
        else:
            values[i] = key
    return kinds, values, b"".join(parts)


def decode_identities(kinds: np.ndarray, values: np.ndarray, blob: bytes, where: str) -> list[int | str]:
    """Inverse of :func:`encode_identities`; ``where`` names the record for error messages."""
    bad = np.flatnonzero(kinds > KIND_STR)
    if bad.size:
        raise StoreError(f"{where}: identity {int(bad[0])} has kind {int(kinds[bad[0]])}, expected "
                         f"{KIND_INT} (int) or {KIND_STR} (string)")
    is_str = kinds == KIND_STR
    lengths = values[is_str].tolist()  # Python ints: a forged length cannot overflow the sum
    if lengths and (min(lengths) < 0 or sum(lengths) != len(blob)):
        raise StoreError(f"{where}: identity string lengths sum to {sum(lengths)} (min "
                         f"{min(lengths)}), expected the {len(blob)}-byte string blob")
    if not is_str.any() and blob:
        raise StoreError(f"{where}: identity string blob is {len(blob)} bytes but no identity is a string")
    out: list[int | str] = values.tolist()
    pos = 0
    for i in np.flatnonzero(is_str).tolist():
        length = out[i]
        try:
            out[i] = blob[pos:pos + length].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StoreError(f"{where}: identity {i} is not valid UTF-8 ({exc.reason})") from None
        pos += length
    return out


# ---------------------------------------------------------------------------------------------
# payload layout
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddLayout:
    """Byte offsets (from the payload start) of an ADD payload's sections.

    Sections, each zero-padded to 8 bytes: identity kinds u8[n_idents], identity values
    i64[n_idents], identity string blob, entry identity index u32[count], codes
    u8[count * code_bytes], squared norms i32[count] (FLAG_SQNORMS), cameras i32[count]
    (FLAG_CAMERAS), timestamps 8 bytes[count] (FLAG_TIMESTAMPS; int64 with FLAG_TIMESTAMPS_INT
    else float64).
    """

    kinds: int
    values: int
    blob: int
    blob_len: int
    ident_idx: int
    codes: int
    sqnorms: int  # -1 when absent
    cameras: int  # -1 when absent
    timestamps: int  # -1 when absent
    total: int

    @staticmethod
    def fixed_bytes(count: int, n_idents: int, flags: int, code_bytes: int) -> int:
        """Payload bytes excluding the (padded) string blob."""
        size = pad8(n_idents) + 8 * n_idents + pad8(4 * count) + pad8(count * code_bytes)
        if flags & FLAG_SQNORMS:
            size += pad8(4 * count)
        if flags & FLAG_CAMERAS:
            size += pad8(4 * count)
        if flags & FLAG_TIMESTAMPS:
            size += 8 * count
        return size

    @classmethod
    def build(cls, count: int, n_idents: int, blob_len: int, flags: int, code_bytes: int) -> AddLayout:
        kinds = 0
        values = pad8(n_idents)
        blob = values + 8 * n_idents
        ident_idx = blob + pad8(blob_len)
        codes = ident_idx + pad8(4 * count)
        pos = codes + pad8(count * code_bytes)
        sqnorms = cameras = timestamps = -1
        if flags & FLAG_SQNORMS:
            sqnorms, pos = pos, pos + pad8(4 * count)
        if flags & FLAG_CAMERAS:
            cameras, pos = pos, pos + pad8(4 * count)
        if flags & FLAG_TIMESTAMPS:
            timestamps, pos = pos, pos + 8 * count
        return cls(kinds, values, blob, blob_len, ident_idx, codes, sqnorms, cameras, timestamps, pos)


def _padded(buf: bytes | memoryview) -> list[bytes | memoryview]:
    extra = pad8(len(buf)) - len(buf)
    return [buf, b"\0" * extra] if extra else [buf]


def add_record(
    new_keys: Sequence[int | str],
    ident_idx: np.ndarray,
    codes: np.ndarray,
    sqnorms: np.ndarray | None,
    cameras: np.ndarray | None,
    timestamps: np.ndarray | None,
) -> tuple[int, AddLayout, list[bytes | memoryview]]:
    """Payload sections of an ADD record: returns (flags, layout, buffers to write in order)."""
    kinds, values, blob = encode_identities(new_keys)
    flags = 0
    sections: list[bytes | memoryview] = []
    for arr in (kinds, values.astype("<i8", copy=False)):
        sections += _padded(memoryview(np.ascontiguousarray(arr)).cast("B"))
    sections += _padded(blob)
    sections += _padded(memoryview(np.ascontiguousarray(ident_idx, dtype="<u4")).cast("B"))
    sections += _padded(memoryview(np.ascontiguousarray(codes, dtype=np.uint8)).cast("B"))
    if sqnorms is not None:
        flags |= FLAG_SQNORMS
        sections += _padded(memoryview(np.ascontiguousarray(sqnorms, dtype="<i4")).cast("B"))
    if cameras is not None:
        flags |= FLAG_CAMERAS
        sections += _padded(memoryview(np.ascontiguousarray(cameras, dtype="<i4")).cast("B"))
    if timestamps is not None:
        flags |= FLAG_TIMESTAMPS
        if timestamps.dtype.kind in "iu":
            flags |= FLAG_TIMESTAMPS_INT
            ts = np.ascontiguousarray(timestamps, dtype="<i8")
        else:
            ts = np.ascontiguousarray(timestamps, dtype="<f8")
        sections.append(memoryview(ts).cast("B"))
    layout = AddLayout.build(len(ident_idx), len(new_keys), len(blob), flags, codes.shape[1])
    assert layout.total == sum(len(s) for s in sections)
    return flags, layout, sections


def remove_record(ident_idx: np.ndarray) -> tuple[int, list[bytes | memoryview]]:
    """Payload sections of a REMOVE (tombstone) record: (payload_len, buffers)."""
    sections = _padded(memoryview(np.ascontiguousarray(ident_idx, dtype="<u4")).cast("B"))
    return sum(len(s) for s in sections), sections


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


def write_all(fd: int, buf: bytes | memoryview, offset: int) -> int:
    """pwrite until every byte is written (pwrite may write less); returns the end offset."""
    view = memoryview(buf).cast("B")
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
    return offset


def write_record(fd: int, offset: int, rtype: int, flags: int, count: int, n_idents: int,
                  sections: list[bytes | memoryview]) -> int:
    """Write one record (header + payload sections) at ``offset``; returns its end. No fsync."""
    crc = 0
    payload_len = 0
    for s in sections:
        crc = zlib.crc32(s, crc)
        payload_len += len(s)
    header = RecordHeader(rtype, flags, count, n_idents, payload_len, crc).pack(offset)
    pos = write_all(fd, header, offset)
    for s in sections:
        pos = write_all(fd, s, pos)
    return pos


def as_identity(value: Any, where: str) -> Identity:
    """Normalise one identity: str stays str, any integer becomes a Python int (int64 range)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where} is a bool ({value!r}): identities are int or str")
    if isinstance(value, (int, np.integer)):
        v = int(value)
        if not _INT64_MIN <= v <= _INT64_MAX:
            raise ValueError(f"{where} = {v} does not fit int64")
        return v
    raise TypeError(f"{where} is {type(value).__name__} {value!r}: identities are int or str")


def as_identities(ids: Any, name: str = "ids") -> list[Identity]:
    if isinstance(ids, (str, bytes)) or np.isscalar(ids):
        raise TypeError(f"{name} must be a sequence of identities (int or str), got a single "
                        f"{type(ids).__name__}; wrap it in a list")
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {ids.shape}")
        if ids.dtype.kind in "iu":
            return [int(v) for v in ids.tolist()]
        if ids.dtype.kind == "U":
            return [str(v) for v in ids.tolist()]
        ids = ids.tolist()
    return [as_identity(v, f"{name}[{i}]") for i, v in enumerate(ids)]


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    """Read exactly ``size`` bytes at ``offset``, or fewer only when the file ends first."""
    parts: list[bytes] = []
    while size > 0:
        chunk = os.pread(fd, min(size, 1 << 24), offset)
        if not chunk:
            break
        parts.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def crc32_range(fd: int, offset: int, length: int) -> int | None:
    """crc32 of ``length`` bytes at ``offset`` read in bounded chunks; None if the file is shorter."""
    crc = 0
    while length > 0:
        chunk = os.pread(fd, min(length, _CRC_CHUNK), offset)
        if not chunk:
            return None
        crc = zlib.crc32(chunk, crc)
        offset += len(chunk)
        length -= len(chunk)
    return crc


@dataclass(frozen=True)
class ScannedRecord:
    """A committed record: where it is and what its header says. ADD records carry their layout."""

    offset: int
    header: RecordHeader
    layout: AddLayout | None
    new_keys: list[int | str]

    @property
    def end(self) -> int:
        return self.offset + RECORD_HEADER_SIZE + self.header.payload_len

    @property
    def payload(self) -> int:
        return self.offset + RECORD_HEADER_SIZE


@dataclass
class ScanResult:
    """Records found from a start offset, where the committed data ends, and what follows it."""

    records: list[ScannedRecord]
    committed_end: int
    file_size: int
    tail_reason: str | None  # why the bytes after committed_end are not a record (None: no tail)

    @property
    def torn_bytes(self) -> int:
        return self.file_size - self.committed_end


class _BadRecord(Exception):
    """A record that fails its checksums or extent: a torn tail, unless committed records follow."""


def _find_later_record(fd: int, start: int, file_size: int) -> int | None:
    """Offset of the first checksum-valid record header after ``start`` (8-aligned), or None."""
    pos = pad8(start + 1)
    window = 1 << 20
    while pos + RECORD_HEADER_SIZE <= file_size:
        buf = pread_exact(fd, min(window + RECORD_HEADER_SIZE, file_size - pos), pos)
        hit = buf.find(RECORD_MAGIC)
        while hit >= 0:
            cand = pos + hit
            if cand % 8 == 0 and cand + RECORD_HEADER_SIZE <= file_size:
                raw = buf[hit:hit + RECORD_HEADER_SIZE]
                if len(raw) < RECORD_HEADER_SIZE:
                    raw = pread_exact(fd, RECORD_HEADER_SIZE, cand)
                if RecordHeader.checksum_ok(raw, cand):
                    return cand
            hit = buf.find(RECORD_MAGIC, hit + 1)
        pos += window
    return None


def _check_record(
    fd: int, offset: int, file_size: int, header: FileHeader, n_idents_before: int, where: str,
    check_payload: bool,
) -> ScannedRecord:
    """Validate one record; raises _BadRecord (maybe torn) or StoreError (checksummed but invalid)."""
    raw = pread_exact(fd, RECORD_HEADER_SIZE, offset)
    if len(raw) < RECORD_HEADER_SIZE:
        raise _BadRecord(f"record header at offset {offset} is cut short: {len(raw)} of "
                         f"{RECORD_HEADER_SIZE} bytes present")
    if raw[:4] != RECORD_MAGIC:
        raise _BadRecord(f"offset {offset}, field record magic: expected {RECORD_MAGIC!r}, got {raw[:4]!r}")
    if not RecordHeader.checksum_ok(raw, offset):
        raise _BadRecord(f"offset {offset + 28}, field record header_crc: does not match the header")
    rec, reserved = RecordHeader.unpack(raw)
    # From here on the header is checksummed: a bad field is a writer bug or a forged file, not a
    # torn write, and is reported as such.
    if rec.rtype not in RECORD_TYPE_NAMES:
        raise StoreError(f"{where}: field type: expected {sorted(RECORD_TYPE_NAMES)}, got {rec.rtype}")
    if reserved:
        raise StoreError(f"{where}: reserved field: expected 0, got {reserved}")
    available = file_size - offset - RECORD_HEADER_SIZE
    if rec.payload_len > available:
        raise _BadRecord(f"record at offset {offset} declares a {rec.payload_len}-byte payload but only "
                         f"{available} bytes follow it")
    if rec.payload_len % 8:
        raise StoreError(f"{where}: field payload_len: expected a multiple of 8, got {rec.payload_len}")
    if check_payload:
        crc = crc32_range(fd, offset + RECORD_HEADER_SIZE, rec.payload_len)
        if crc is None:
            raise _BadRecord(f"record at offset {offset}: payload cut short")
        if crc != rec.payload_crc:
            raise _BadRecord(f"offset {offset + 24}, field payload_crc: expected {rec.payload_crc:#010x}, "
                             f"computed {crc:#010x} over the payload")
    base = offset + RECORD_HEADER_SIZE
    if rec.rtype == REC_REMOVE:
        if rec.flags or rec.n_idents:
            raise StoreError(f"{where}: REMOVE record must have flags 0 and n_idents 0, got "
                             f"flags={rec.flags} n_idents={rec.n_idents}")
        if rec.payload_len != pad8(4 * rec.count):
            raise StoreError(f"{where}: field payload_len: expected {pad8(4 * rec.count)} for "
                             f"{rec.count} identity indices, got {rec.payload_len}")
        idx = np.frombuffer(pread_exact(fd, 4 * rec.count, base), dtype="<u4")
        if idx.size and int(idx.max()) >= n_idents_before:
            raise StoreError(f"{where}: tombstone names identity index {int(idx.max())}, expected < "
                             f"{n_idents_before} (identities defined so far)")
        return ScannedRecord(offset, rec, None, [])
    if rec.flags & ~_ADD_FLAGS or (rec.flags & FLAG_TIMESTAMPS_INT and not rec.flags & FLAG_TIMESTAMPS):
        raise StoreError(f"{where}: field flags: unknown combination {rec.flags:#04x}")
    if rec.flags & FLAG_SQNORMS and header.bits == 32:
        raise StoreError(f"{where}: field flags: squared norms (0x08) are only stored for integer codes, "
                         "this store holds float32 codes")
    fixed = AddLayout.fixed_bytes(rec.count, rec.n_idents, rec.flags, header.code_bytes)
    blob_room = rec.payload_len - fixed
    if blob_room < 0:
        raise StoreError(f"{where}: field payload_len: expected at least {fixed} bytes for "
                         f"{rec.count} entries and {rec.n_idents} identities, got {rec.payload_len}")
    # The padded blob is blob_room bytes; its true length comes from the string lengths.
    lay = AddLayout.build(rec.count, rec.n_idents, blob_room, rec.flags, header.code_bytes)
    kinds = np.frombuffer(pread_exact(fd, rec.n_idents, base + lay.kinds), dtype=np.uint8)
    values = np.frombuffer(pread_exact(fd, 8 * rec.n_idents, base + lay.values), dtype="<i8")
    bad = np.flatnonzero(kinds > KIND_STR)
    if bad.size:
        raise StoreError(f"{where}: identity {int(bad[0])} has kind {int(kinds[bad[0]])}, expected "
                         f"{KIND_INT} (int) or {KIND_STR} (string)")
    str_len = sum(max(v, 0) for v in values[kinds == KIND_STR].tolist())
    if not (str_len <= blob_room < str_len + 8 and pad8(str_len) == blob_room):
        raise StoreError(f"{where}: identity strings total {str_len} bytes, expected them to fill the "
                         f"{blob_room}-byte string section (padded to 8)")
    blob = pread_exact(fd, blob_room, base + lay.blob)
    if blob[str_len:].strip(b"\0"):
        raise StoreError(f"{where}: identity string section has non-zero padding after the {str_len} "
                         "bytes of identity strings")
    keys = decode_identities(kinds, values, blob[:str_len], where)
    lay = AddLayout.build(rec.count, rec.n_idents, str_len, rec.flags, header.code_bytes)
    if rec.count:
        idx = np.frombuffer(pread_exact(fd, 4 * rec.count, base + lay.ident_idx), dtype="<u4")
        limit = n_idents_before + rec.n_idents
        if int(idx.max()) >= limit:
            raise StoreError(f"{where}: entry identity index {int(idx.max())} out of range, expected < {limit}")
    return ScannedRecord(offset, rec, lay, keys)


def scan_records(
    fd: int,
    header: FileHeader,
    start: int,
    n_idents_before: int,
    path: str,
    check_payloads: bool = True,
    file_size: int | None = None,
) -> ScanResult:
    """Walk records from ``start`` until the data ends or a record fails its checks.

    A failing record ends the committed data when nothing valid follows it (a torn tail: the last
    write never completed). If a checksum-valid record header lies beyond the failure, committed
    data was damaged in place; that is not a torn tail and raises :class:`StoreError` rather than
    silently dropping committed records. With ``check_payloads=False`` payload checksums are only
    verified for the last record (enough to find a torn tail, not to detect bit rot).
    """
    size = os.fstat(fd).st_size if file_size is None else file_size
    records: list[ScannedRecord] = []
    offset = start
    n_idents = n_idents_before
    while offset < size:
        where = f"{path}: record {len(records)} at offset {offset}"
        try:
            rec = _check_record(fd, offset, size, header, n_idents, where, check_payloads)
            if not check_payloads and rec.end >= size:  # the last record: always verify its payload
                rec = _check_record(fd, offset, size, header, n_idents, where, check_payload=True)
        except _BadRecord as bad:
            later = _find_later_record(fd, offset, size)
            if later is not None:
                raise StoreError(
                    f"{path}: {bad}; a valid record follows at offset {later}, so this is damage inside "
                    "committed data, not a torn tail (refusing to drop the records after it; "
                    "restore from a backup or salvage with GalleryStore.verify)"
                ) from None
            return ScanResult(records, offset, size, str(bad))
        records.append(rec)
        n_idents += rec.header.n_idents
        offset = rec.end
    return ScanResult(records, offset, size, None)


# ---------------------------------------------------------------------------------------------
# verification
# ---------------------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    """What :meth:`GalleryStore.verify` found. ``ok`` is False when ``problems`` is not empty."""

    path: str
    ok: bool
    file_bytes: int = 0
    committed_bytes: int = 0
    torn_tail_bytes: int = 0
    records: int = 0
    add_records: int = 0
    remove_records: int = 0
    identities: int = 0
    entries: int = 0
    live_entries: int = 0
    code_bytes: int = 0
    file_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the file verified
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.ok


class Growable:
    """An int64 array with amortised appends (per-identity state)."""

    def __init__(self) -> None:
        self.data = np.zeros(16, dtype=np.int64)
        self.size = 0

    def extend_zeros(self, n: int) -> None:
        need = self.size + n
        if need > self.data.size:
            grown = np.zeros(max(need, 2 * self.data.size), dtype=np.int64)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.size = need

    @property
    def view(self) -> np.ndarray:
        return self.data[: self.size]


def verify_file(path: str, spec: CodecSpec) -> VerifyReport:
    """Check every checksum, index, identity and stored norm of the store file at ``path``.

    Never raises for a bad file: problems are listed in the report. ``spec`` is the store's own
    (its header's) codec spec, used to recompute the stored squared norms.
    """
    rep = VerifyReport(path=path, ok=True, code_bytes=spec.code_bytes)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        rep.ok, rep.problems = False, [f"cannot open: {exc}"]
        return rep
    try:
        st = os.fstat(fd)
        rep.file_bytes, rep.file_id = st.st_size, (st.st_dev, st.st_ino)
        try:
            header = FileHeader.unpack(pread_exact(fd, HEADER_SIZE, 0), path)
            scan = scan_records(fd, header, HEADER_SIZE, 0, path, check_payloads=True, file_size=st.st_size)
        except StoreError as exc:
            rep.ok, rep.problems = False, [str(exc)]
            return rep
        rep.committed_bytes, rep.torn_tail_bytes = scan.committed_end, scan.torn_bytes
        if scan.tail_reason:
            rep.notes.append(f"torn tail of {scan.torn_bytes} bytes after offset {scan.committed_end}: "
                             f"{scan.tail_reason} (dropped on the next writer open)")
        seen: set[Identity] = set()
        live = Growable()
        for rec in scan.records:
            rep.records += 1
            if rec.header.rtype == REC_REMOVE:
                rep.remove_records += 1
                idx = np.frombuffer(pread_exact(fd, 4 * rec.header.count, rec.payload), dtype="<u4")
                live.view[idx.astype(np.intp)] = 0
                continue
            rep.add_records += 1
            for key in rec.new_keys:
                if key in seen:
                    rep.problems.append(f"record at offset {rec.offset}: identity {key!r} defined twice")
                seen.add(key)
            live.extend_zeros(len(rec.new_keys))
            lay = rec.layout
            assert lay is not None
            idx = np.frombuffer(pread_exact(fd, 4 * rec.header.count, rec.payload + lay.ident_idx), dtype="<u4")
            np.add.at(live.view, idx.astype(np.intp), 1)
            rep.entries += rec.header.count
            if lay.sqnorms >= 0:
                _verify_sqnorms(fd, rec, spec, rep)
        rep.identities = len(seen)
        rep.live_entries = int(live.view.sum())
    finally:
        os.close(fd)
    rep.ok = not rep.problems
    return rep


def _verify_sqnorms(fd: int, rec: ScannedRecord, spec: CodecSpec, rep: VerifyReport) -> None:
    """Stored squared norms must be those of the stored codes (search trusts them)."""
    lay = rec.layout
    assert lay is not None
    cb = spec.code_bytes
    for lo in range(0, rec.header.count, 65536):
        n = min(65536, rec.header.count - lo)
        codes = np.frombuffer(pread_exact(fd, n * cb, rec.payload + lay.codes + lo * cb), np.uint8)
        stored = np.frombuffer(pread_exact(fd, 4 * n, rec.payload + lay.sqnorms + 4 * lo), "<i4")
        bad = np.flatnonzero(code_sqnorms(codes.reshape(n, cb), spec) != stored)
        if bad.size:
            rep.problems.append(f"record at offset {rec.offset}: entry {lo + int(bad[0])} stores squared norm "
                                f"{int(stored[bad[0]])}, its code's is {int(code_sqnorms(codes.reshape(n, cb)[bad[:1]], spec)[0])} "
                                f"({bad.size} such entries)")
            return
