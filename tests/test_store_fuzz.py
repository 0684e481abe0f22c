"""Corrupt store files: random byte flips, truncations, garbage and forged records.

Whatever the damage, opening gives either a store holding exactly the entries of some committed
prefix of the original's records, or a clean StoreError (a ValueError) naming the problem; never
a crash, a hang or a huge allocation.
"""

from __future__ import annotations

import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from edgereid.runtime.codec import CodecSpec, quantize
from edgereid.runtime.store import GalleryStore, StoreError
from edgereid.runtime.store_format import (
    FLAG_CAMERAS,
    HEADER_SIZE,
    REC_ADD,
    REC_REMOVE,
    RECORD_HEADER_SIZE,
    RecordHeader,
    add_record,
    pad8,
    remove_record,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DIM = 8
SPEC = CodecSpec(dim=DIM, bits=8, scale=0.05)


def _state(store: GalleryStore) -> list[tuple]:
    return [(e.row, type(e.identity).__name__, e.identity, e.code.tobytes(), e.camera, e.timestamp)
            for e in store.entries()]


def _build(path: Path) -> tuple[bytes, list[list[tuple]]]:
    """A store with varied records; returns its bytes and the entry list after each commit."""
    rng = np.random.default_rng(3)
    codes = quantize(rng.standard_normal((40, DIM)).astype(np.float32) * 0.3, SPEC)
    states: list[list[tuple]] = []
    with GalleryStore.create(path, DIM, 8, 0.05) as store:
        states.append(_state(store))
        store.add([1, 2, 1], codes[0:3], cameras=[0, 1, 2], timestamps=[0.5, 1.5, 2.5])
        states.append(_state(store))
        store.add(["ann", "bob", "ann", "Zoë"], codes[3:7], timestamps=np.array([7, 8, 9, 10]))
        states.append(_state(store))
        store.add([2, "bob", 3], codes[7:10])
        states.append(_state(store))
        assert store.remove(["bob", 1]) == 4
        states.append(_state(store))
        store.add(list(range(100, 120)), codes[10:30], cameras=np.arange(20))
        states.append(_state(store))
    return path.read_bytes(), states


with tempfile.TemporaryDirectory(prefix="store_fuzz_") as _d:  # built once, at import (hypothesis needs len)
    BASE, STATES = _build(Path(_d) / "base.bin")


def _open_result(path: Path, mode: str) -> list[tuple] | None:
    """The opened store's entries (after a search, to exercise it), or None for a StoreError."""
    try:
        with GalleryStore.open(path, mode) as store:
            state = _state(store)
            if len(store):
                ids, dist = store.search(np.frombuffer(BASE[-DIM:], np.uint8).reshape(1, DIM), 3)
                assert ids.shape == (1, 3) and dist.shape == (1, 3)
            if mode == "a":
                rep = store.verify()
                assert rep.ok and rep.torn_tail_bytes == 0, rep
            return state
    except StoreError as exc:
        assert str(exc)  # a message, naming the problem
        return None


def _check_mutant(data: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="store_fuzz_") as d:
        path = Path(d) / "s.bin"
        path.write_bytes(data)
        got = _open_result(path, "r")
        assert got is None or got in STATES
        got_a = _open_result(path, "a")  # the writer's recovery agrees with the reader
        assert got_a == got
        if got is not None:  # after recovery the file is a clean prefix that appends fine
            with GalleryStore.open(path, "a") as store:
                store.add(["new"], np.zeros((1, DIM), np.uint8))
            after = _open_result(path, "r")
            assert after is not None and after[:-1] == got and after[-1][1:] == ("str", "new", bytes(DIM), None, None)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.integers(0, len(BASE) - 1), st.integers(1, 255)), min_size=1, max_size=3),
       cut=st.one_of(st.none(), st.integers(0, len(BASE))))
def test_random_flips_and_truncations_give_a_prefix_or_a_clean_error(flips, cut) -> None:
    data = bytearray(BASE)
    for pos, xor in flips:
        data[pos] ^= xor
    if cut is not None:
        del data[cut:]
    _check_mutant(bytes(data))


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(0, len(BASE)), junk=st.binary(max_size=200))
def test_truncation_plus_junk_tail_gives_the_committed_prefix(cut, junk) -> None:
    _check_mutant(BASE[:cut] + junk)


@settings(max_examples=40, deadline=None)
@given(body=st.binary(min_size=0, max_size=2000))
def test_arbitrary_bytes_after_a_valid_header(body) -> None:
    _check_mutant(BASE[:HEADER_SIZE] + body)


def test_rows_stay_numbered_after_recovery() -> None:
    """Sanity for the helper above: the committed prefix after cutting the last record."""
    with tempfile.TemporaryDirectory(prefix="store_fuzz_") as d:
        path = Path(d) / "s.bin"
        path.write_bytes(BASE[:-1])
        with GalleryStore.open(path, "a") as store:
            assert _state(store) == STATES[-2]
            assert store.num_rows == 10


# --------------------------------------------------------------------------------------------
# forged records: checksums valid, contents absurd. Must be refused quickly, without allocating.
# --------------------------------------------------------------------------------------------


def _forge(path: Path, rtype: int, flags: int, count: int, n_idents: int, payload: bytes) -> None:
    """Append a record with valid checksums to a fresh empty store at ``path``."""
    GalleryStore.create(path, DIM, 8, 0.05, overwrite=True).close()
    offset = path.stat().st_size
    header = RecordHeader(rtype, flags, count, n_idents, len(payload), zlib.crc32(payload)).pack(offset)
    with open(path, "ab") as f:
        f.write(header + payload)


def _valid_add_payload(keys, idx, n) -> tuple[int, bytes]:
    codes = np.zeros((n, DIM), np.uint8)
    flags, _layout, sections = add_record(keys, np.asarray(idx, np.uint32), codes, None, None, None)
    return flags, b"".join(bytes(s) for s in sections)


CASES = {
    "huge count": (REC_ADD, 0, 0xFFFFFFFF, 0, b"\0" * 64, "payload_len"),
    "huge n_idents": (REC_ADD, 0, 0, 0xFFFFFFFF, b"\0" * 64, "payload_len"),
    "unknown type": (7, 0, 0, 0, b"", "field type"),
    "unknown flags": (REC_ADD, 0x80, 0, 0, b"", "flags"),
    "ts int without ts": (REC_ADD, 0x04, 0, 0, b"", "flags"),
    "remove with flags": (REC_REMOVE, FLAG_CAMERAS, 0, 0, b"", "REMOVE record"),
    "remove length": (REC_REMOVE, 0, 3, 0, b"\0" * 8, "payload_len"),
    "odd payload": (REC_ADD, 0, 0, 0, b"\0" * 5 + b"\0" * 0, "multiple of 8"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_forged_headers_are_refused_by_name(tmp_path: Path, case: str) -> None:
    rtype, flags, count, n_idents, payload, words = CASES[case]
    path = tmp_path / "s.bin"
    _forge(path, rtype, flags, count, n_idents, payload)
    for mode in ("r", "a"):
        with pytest.raises(StoreError, match=words):
            GalleryStore.open(path, mode)


def test_forged_payload_contents_are_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "s.bin"
    # identity index beyond the table
    flags, payload = _valid_add_payload([5], [3], 1)
    _forge(path, REC_ADD, flags, 1, 1, payload)
    with pytest.raises(StoreError, match="entry identity index 3 out of range, expected < 1"):
        GalleryStore.open(path)
    # an identity defined twice
    flags, payload = _valid_add_payload(["x", "x"], [0, 1], 2)
    _forge(path, REC_ADD, flags, 2, 2, payload)
    with pytest.raises(StoreError, match="'x' is defined twice"):
        GalleryStore.open(path)
    # string lengths that do not fill the string section; negative and absurd lengths
    for length in (2, -1, 2**62):
        flags, payload = _valid_add_payload(["abc"], [0], 1)
        raw = bytearray(payload)
        struct.pack_into("<q", raw, 8, length)  # identity values start after the padded kinds
        _forge(path, REC_ADD, flags, 1, 1, bytes(raw))
        with pytest.raises(StoreError, match="identity string"):
            GalleryStore.open(path)
    # unknown identity kind, invalid UTF-8
    flags, payload = _valid_add_payload(["abc"], [0], 1)
    _forge(path, REC_ADD, flags, 1, 1, b"\x05" + payload[1:])
    with pytest.raises(StoreError, match="kind 5"):
        GalleryStore.open(path)
    raw = bytearray(payload)
    raw[16:19] = b"\xff\xfe\xfd"
    _forge(path, REC_ADD, flags, 1, 1, bytes(raw))
    with pytest.raises(StoreError, match="not valid UTF-8"):
        GalleryStore.open(path)
    # a tombstone naming an identity that does not exist yet
    _len, sections = remove_record(np.array([0], np.uint32))
    _forge(path, REC_REMOVE, 0, 1, 0, b"".join(bytes(s) for s in sections))
    with pytest.raises(StoreError, match="tombstone names identity index 0"):
        GalleryStore.open(path)


def test_damaged_header_fields_are_named(tmp_path: Path) -> None:
    path = tmp_path / "s.bin"
    path.write_bytes(BASE)
    for offset, field in [(0, "magic"), (12, "header_crc"), (60, "header_crc")]:
        raw = bytearray(BASE)
        raw[offset] ^= 0x01
        path.write_bytes(bytes(raw))
        with pytest.raises(StoreError, match=field):
            GalleryStore.open(path)
    # header checksum recomputed over a forged code_bytes: caught by the codec cross-check
    raw = bytearray(BASE[:HEADER_SIZE])
    struct.pack_into("<I", raw, 20, 9)
    struct.pack_into("<I", raw, 60, zlib.crc32(bytes(raw[:60])))
    path.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="field code_bytes: expected 8 .* got 9"):
        GalleryStore.open(path)


def test_payload_bit_rot_found_by_verify_even_without_payload_checks(tmp_path: Path) -> None:
    """check_payloads=False skips older payload checksums on open; verify() still finds the rot."""
    path = tmp_path / "s.bin"
    raw = bytearray(BASE)
    raw[HEADER_SIZE + RECORD_HEADER_SIZE + pad8(2) + 2] ^= 0x10  # inside record 0's payload
    path.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="payload_crc"):
        GalleryStore.open(path)
    with GalleryStore.open(path, check_payloads=False) as store:
        rep = store.verify()
        assert not rep.ok and "payload_crc" in rep.problems[0]

