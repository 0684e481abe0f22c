"""The gallery store's behaviour on real files: round trips, search, removal, compaction, spec checks.

Crash safety and concurrency live in test_store_crash.py, corrupt-input fuzzing in test_store_fuzz.py.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from edgereid.runtime.codec import (
    CodecSpec,
    code_distance_to_float,
    code_sqnorms,
    dequantize,
    l2_normalize,
    pairwise_distances,
    quantize,
)
from edgereid.runtime.store import GalleryStore, SpecMismatchError, StoreError
from edgereid.runtime.store_format import FILE_MAGIC, HEADER_SIZE


def embeddings(n: int, dim: int, seed: int) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32))


def test_round_trip_ints_strings_cameras_timestamps(tmp_path: Path) -> None:
    spec = CodecSpec(dim=12, bits=8, scale=1 / 127)
    path = tmp_path / "store.bin"
    rng = np.random.default_rng(0)
    c1 = quantize(embeddings(6, 12, 1), spec)
    c2 = quantize(embeddings(5, 12, 2), spec)
    c3 = quantize(embeddings(4, 12, 3), spec)
    big = 2**62 + 5
    with GalleryStore.create(path, dim=12, bits=8, scale=1 / 127) as store:
        # ints (numpy and Python, incl. 1 vs "1" and int64 extremes), cameras, float timestamps
        store.add(np.array([7, 7, 1, big, -3, 7]), c1, cameras=[0, 1, 2, 3, 4, 5],
                  timestamps=np.array([0.5, 1.25, 2.0, 3.0, 4.0, 1e9 + 0.125]))
        # strings (unicode, empty) and "1" next to the int 1, int64 timestamps, no cameras
        store.add(["alice", "1", "", "Zoë ✓", "alice"], c2, timestamps=np.array([10, 11, 12, 2**40, -1]))
        # no optional columns; identities seen before get more entries
        store.add([7, "alice", 1, "bob"], c3)
        assert len(store) == 15
    assert not list(tmp_path.glob("*.tmp"))
    with GalleryStore.open(path) as store:
        assert len(store) == 15 and store.num_rows == 15
        assert store.identities() == [7, 1, big, -3, "alice", "1", "", "Zoë ✓", "bob"]
        assert store.count(7) == 4 and store.count("alice") == 3 and store.count(1) == 2 and store.count("1") == 1
        entries = list(store.entries())
        assert [e.row for e in entries] == list(range(15))
        ids = [e.identity for e in entries]
        assert ids == [7, 7, 1, big, -3, 7, "alice", "1", "", "Zoë ✓", "alice", 7, "alice", 1, "bob"]
        assert [type(i) for i in ids] == [int] * 6 + [str] * 5 + [int, str, int, str]
        np.testing.assert_array_equal(np.stack([e.code for e in entries]), np.concatenate([c1, c2, c3]))
        assert [e.camera for e in entries] == [0, 1, 2, 3, 4, 5] + [None] * 9
        ts = [e.timestamp for e in entries]
        assert ts[:6] == [0.5, 1.25, 2.0, 3.0, 4.0, 1e9 + 0.125] and all(type(t) is float for t in ts[:6])
        assert ts[6:11] == [10, 11, 12, 2**40, -1] and all(type(t) is int for t in ts[6:11])
        assert ts[11:] == [None] * 4
        got = store.get("alice")
        assert [e.row for e in got] == [6, 10, 12]
        assert store.get(1)[0].row == 2 and store.get("1")[0].row == 7 and store.get("nobody") == []
        assert store.spec == spec
        rng.shuffle(c1)  # the store returned copies: mutating caller arrays changes nothing
        assert store.verify().ok


def brute_force(q: np.ndarray, g: np.ndarray, g_rows: np.ndarray, spec: CodecSpec, k: int):
    """Top-k over dequantised floats (float64 squared L2), ties by row; plus the integer distances."""
    qf = dequantize(q, spec).astype(np.float64)
    gf = dequantize(g, spec).astype(np.float64)
    fd = ((qf[:, None, :] - gf[None, :, :]) ** 2).sum(-1)
    idist = pairwise_distances(q, g, spec)
    order = np.stack([np.lexsort((g_rows, idist[i])) for i in range(len(q))])[:, :k]
    return fd, g_rows[order], np.take_along_axis(idist, order, 1)


@pytest.mark.parametrize("bits", [8, 4, 1, 32])
def test_search_equals_brute_force_over_dequantised_floats(tmp_path: Path, bits: int) -> None:
    dim, k = 24, 7
    spec = CodecSpec(dim=dim, bits=bits, scale={8: 0.5 / 127, 4: 0.08, 1: 0.2, 32: 1.0}[bits])
    g = quantize(embeddings(900, dim, 10 + bits), spec)
    q = quantize(embeddings(9, dim, 99), spec)
    labels = [f"id{i % 150}" if i % 3 else i % 150 for i in range(900)]
    with GalleryStore.create(tmp_path / "s.bin", dim, bits, spec.scale) as store:
        for lo in range(0, 900, 250):  # several records: several blocks
            store.add(labels[lo:lo + 250], g[lo:lo + 250])
        rows_all = np.arange(900)
        fd, want_rows, want_d = brute_force(q, g, rows_all, spec, k)
        rows, dist = store.search_rows(q, k, block_rows=128)
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_array_equal(dist, want_d)
        # the integer distances are the float distances between dequantised vectors
        np.testing.assert_allclose(code_distance_to_float(dist, spec), np.take_along_axis(fd, rows, 1),
                                   rtol=1e-5, atol=1e-9)
        assert (len(next(store.iter_blocks())) == 4) == (bits != 32)  # stored norms for integer codes
        ids, dist2 = store.search(q, k)
        np.testing.assert_array_equal(dist2, want_d)
        assert ids.tolist() == [[labels[r] for r in row] for row in want_rows.tolist()]

        # removed identities never come back; the rest is still exact brute force
        victims = list({labels[r] for r in want_rows[:, 0].tolist()})
        removed = store.remove(victims)
        live = np.array([lab not in victims for lab in labels])
        assert removed == int((~live).sum()) and len(store) == int(live.sum())
        _fd, want_rows, want_d = brute_force(q, g[live], rows_all[live], spec, k)
        rows, dist = store.search_rows(q, k, block_rows=100)
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_array_equal(dist, want_d)

        # per identity: each identity once, at its best entry's distance, best first
        ids, dist = store.search(q, k, per_identity=True)
        gl = [lab for lab, ok in zip(labels, live) if ok]
        idist = pairwise_distances(q, g[live], spec)
        for i in range(len(q)):
            best: dict = {}
            for lab, d, r in zip(gl, idist[i].tolist(), rows_all[live].tolist()):
                if lab not in best or (d, r) < best[lab]:
                    best[lab] = (d, r)
            want = sorted(best.items(), key=lambda kv: kv[1])[:k]
            assert ids[i].tolist() == [lab for lab, _ in want]
            assert dist[i].tolist() == [d for _, (d, _r) in want]


def test_norms_false_costs_4_bytes_less_and_searches_the_same(tmp_path: Path) -> None:
    spec = CodecSpec(dim=16, bits=8, scale=0.01)
    codes = quantize(embeddings(512, 16, 4), spec)
    q = quantize(embeddings(5, 16, 5), spec)
    results, sizes = [], []
    for norms in (True, False):
        path = tmp_path / f"{norms}.bin"
        with GalleryStore.create(path, 16, 8, 0.01, norms=norms) as store:
            store.add(np.arange(512) // 4, codes)
            results.append(store.search(q, 9))
            assert len(next(store.iter_blocks())) == (4 if norms else 3)
        with GalleryStore.open(path) as store:  # the choice is recorded in the header
            assert store.verify().ok and len(next(store.iter_blocks())) == (4 if norms else 3)
        sizes.append(path.stat().st_size)
    assert sizes[0] - sizes[1] == 4 * 512
    assert results[0][0].tolist() == results[1][0].tolist()
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_release_pages_gives_the_same_answers(tmp_path: Path) -> None:
    spec = CodecSpec(dim=32, bits=8, scale=0.01)
    codes = quantize(embeddings(3000, 32, 6), spec)
    path = tmp_path / "s.bin"
    with GalleryStore.create(path, 32, 8, 0.01) as w:
        for lo in range(0, 3000, 700):
            w.add(list(range(lo, min(lo + 700, 3000))), codes[lo:lo + 700])
        w.remove([5, 1500])
    with GalleryStore.open(path) as plain, GalleryStore.open(path, release_pages=True) as lean:
        for _ in range(2):  # pages dropped after the first scan are faulted back in, unchanged
            a, b = plain.search_rows(codes[:20], 5, block_rows=256), lean.search_rows(codes[:20], 5, block_rows=256)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
        assert [e.code.tobytes() for e in lean.entries()] == [e.code.tobytes() for e in plain.entries()]


def test_search_returns_fewer_than_k_and_rejects_bad_queries(tmp_path: Path) -> None:
    spec = CodecSpec(dim=8, bits=8, scale=0.01)
    codes = quantize(embeddings(3, 8, 0), spec)
    with GalleryStore.create(tmp_path / "s.bin", 8, 8, 0.01) as store:
        ids, dist = store.search(codes[:1], 5)  # empty store
        assert ids.tolist() == [[None] * 5] and dist.shape == (1, 5)
        store.add([1, 2, 3], codes)
        ids, dist = store.search(codes[0], 5)  # 1-D: one query
        assert ids[0, 0] == 1 and set(ids[0, :3].tolist()) == {1, 2, 3}
        assert ids[0, 3] is None and ids[0, 4] is None and dist[0, 0] == 0
        with pytest.raises(ValueError, match=r"expected shape \(n, 8\)"):
            store.search(np.zeros((1, 9), np.uint8), 1)
        with pytest.raises(ValueError, match="dtype uint8"):
            store.search(np.zeros((1, 8), np.float32), 1)
        with pytest.raises(ValueError, match="k must be a positive integer"):
            store.search(codes, 0)
        # memory mapping: the blocks handed to the kernel are views into the file, not copies
        start, blk, valid, sqnorms = next(store.iter_blocks())
        assert start == 0 and valid is None and not blk.flags.owndata and not blk.flags.writeable
        np.testing.assert_array_equal(sqnorms, code_sqnorms(codes, spec))  # stored for the kernel


def test_remove_compact_and_reader_snapshots(tmp_path: Path) -> None:
    spec = CodecSpec(dim=16, bits=8, scale=0.01)
    path = tmp_path / "s.bin"
    codes = quantize(embeddings(400, 16, 5), spec)
    labels = [i % 40 if i % 2 else f"p{i % 40}" for i in range(400)]
    with GalleryStore.create(path, 16, 8, 0.01) as w:
        w.add(labels[:200], codes[:200], cameras=np.arange(200) % 6)
        w.add(labels[200:], codes[200:], timestamps=np.arange(200, 400) * 0.5)
        assert w.remove([1, "p2", "unknown"]) == 20  # 10 entries each; unknown ignored
        assert w.remove([1]) == 0  # nothing live left: no tombstone written
        size_before = path.stat().st_size
        assert w.remove(["p2"]) == 0 and path.stat().st_size == size_before
        # re-enrolling a removed identity: new entries live, old ones stay removed
        w.add([1], codes[:1])
        assert w.count(1) == 1 and len(w) == 381
        old_reader = GalleryStore.open(path, "r")
        before = [(e.identity, e.code.tobytes(), e.camera, e.timestamp) for e in w.entries()]
        report = w.compact()
        assert report.ok and report.entries == 381 and report.live_entries == 381 and report.remove_records == 0
        assert path.stat().st_size < size_before
        assert not list(tmp_path.glob("*.tmp"))
        after = [(e.identity, e.code.tobytes(), e.camera, e.timestamp) for e in w.entries()]
        assert after == before  # same entries, same order, cameras/timestamps kept
        assert len(w) == 381 and w.num_rows == 381
        # writes after compaction go to the new file
        w.add(["late"], codes[:1])
    # the old reader keeps its snapshot (the old inode) until it refreshes
    assert len(old_reader) == 381 and old_reader.num_rows == 401
    assert old_reader.verify().notes and "different file" in old_reader.verify().notes[-1]
    assert old_reader.refresh() == 382
    assert len(old_reader) == 382 and old_reader.count("late") == 1
    ids, dist = old_reader.search(codes[0:1], 2)
    assert ids.tolist() == [["p0", 1]] and dist.tolist() == [[0, 0]]  # codes[0] twice: ties by row
    old_reader.close()
    with GalleryStore.open(path) as r:
        assert r.count(1) == 1 and r.count("p2") == 0 and "p2" not in r.identities()
        assert [e.code.tobytes() for e in r.get(1)] == [codes[0].tobytes()]


def test_refresh_picks_up_appends(tmp_path: Path) -> None:
    spec = CodecSpec(dim=8, bits=4, scale=0.1)
    codes = quantize(embeddings(10, 8, 1), spec)
    path = tmp_path / "s.bin"
    w = GalleryStore.create(path, 8, 4, 0.1)
    r = GalleryStore.open(path)
    w.add(list(range(5)), codes[:5])
    assert len(r) == 0 and r.refresh() == 5 and len(r) == 5
    w.remove([0, 1])
    w.add([9], codes[5:6])
    assert r.refresh() == 1 and len(r) == 4 and r.identities() == [2, 3, 4, 9]
    assert r.refresh() == 0
    w.close()
    r.close()


def test_spec_mismatch_names_the_field(tmp_path: Path, tiny_bundle: Path) -> None:
    from edgereid.runtime.bundle import load_bundle

    bundle_spec = load_bundle(tiny_bundle).embedding.codec_spec()
    path = tmp_path / "s.bin"
    GalleryStore.create(path, bundle_spec.dim, bundle_spec.bits, bundle_spec.scale * 2).close()
    with pytest.raises(SpecMismatchError, match=r"scale: store has .*, bundle embedding has") as err:
        GalleryStore.open(path, spec=bundle_spec)
    assert err.value.fields == ["scale"]
    GalleryStore.open(path, "a").close()  # the refused open released the writer lock
    with GalleryStore.open(path) as store:
        ok = CodecSpec(bundle_spec.dim, bundle_spec.bits, bundle_spec.scale * 2 * (1 + 1e-9))
        store.check_spec(ok)  # a float32/JSON round trip of the scale is not a change
        for field, other in [
            ("dim", CodecSpec(bundle_spec.dim + 1, bundle_spec.bits, bundle_spec.scale * 2)),
            ("bits", CodecSpec(bundle_spec.dim, 4, bundle_spec.scale * 2)),
            ("metric", SimpleNamespace(dim=bundle_spec.dim, bits=bundle_spec.bits, scale=bundle_spec.scale * 2,
                                       metric="cosine")),
        ]:
            with pytest.raises(SpecMismatchError, match=rf"{field}: store has") as err:
                store.check_spec(other)
            assert err.value.fields == [field]
        with pytest.raises(SpecMismatchError) as err:
            store.check_spec(CodecSpec(bundle_spec.dim + 1, 1, 1.0))
        assert err.value.fields == ["dim", "bits", "scale"]


def test_create_refuses_to_overwrite_and_bad_files_are_named(tmp_path: Path) -> None:
    path = tmp_path / "s.bin"
    spec = CodecSpec(8, 8, 0.01)
    with GalleryStore.create(path, 8, 8, 0.01) as store:
        store.add([1], quantize(embeddings(1, 8, 0), spec))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        GalleryStore.create(path, 8, 8, 0.01)
    with GalleryStore.create(path, 16, 4, 0.1, overwrite=True) as store:
        assert len(store) == 0 and store.spec == CodecSpec(16, 4, 0.1)
    with pytest.raises(ValueError, match="bits"):
        GalleryStore.create(tmp_path / "x.bin", 8, 3, 0.1)
    assert not (tmp_path / "x.bin").exists()
    with pytest.raises(FileNotFoundError):
        GalleryStore.open(tmp_path / "missing.bin")
    (tmp_path / "text.bin").write_bytes(b"hello world, not a store" * 4)
    with pytest.raises(StoreError, match="field magic"):
        GalleryStore.open(tmp_path / "text.bin")
    # a store from a future format version: refused naming the field (checksum valid)
    raw = bytearray(path.read_bytes()[:HEADER_SIZE])
    assert raw[:8] == FILE_MAGIC
    struct.pack_into("<H", raw, 8, 2)
    struct.pack_into("<I", raw, 60, zlib.crc32(bytes(raw[:60])))
    (tmp_path / "v2.bin").write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="field version: expected 1, got 2"):
        GalleryStore.open(tmp_path / "v2.bin")


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    spec = CodecSpec(8, 8, 0.01)
    codes = quantize(embeddings(2, 8, 0), spec)
    path = tmp_path / "s.bin"
    with GalleryStore.create(path, 8, 8, 0.01) as store:
        with pytest.raises(TypeError, match=r"ids\[1\] is float"):
            store.add([1, 2.0], codes)
        with pytest.raises(TypeError, match=r"ids\[0\] is a bool"):
            store.add([True, 2], codes)
        with pytest.raises(TypeError, match="single str"):
            store.add("ab", codes)
        with pytest.raises(ValueError, match="3 rows but 2 ids"):
            store.add([1, 2], np.concatenate([codes, codes[:1]]))
        with pytest.raises(ValueError, match=r"expected shape \(n, 8\)"):
            store.add([1, 2], codes[:, :4])
        with pytest.raises(ValueError, match="cameras must be 2 integers"):
            store.add([1, 2], codes, cameras=[1.5, 2.5])
        with pytest.raises(ValueError, match="timestamps must be 2 numbers"):
            store.add([1, 2], codes, timestamps=[1.0])
        with pytest.raises(ValueError, match="int64"):
            store.add([2**63, 2], codes)
        assert len(store) == 0 and store.committed_bytes == HEADER_SIZE  # nothing half-written
        store.add([], codes[:0])
        assert store.committed_bytes == HEADER_SIZE
    with GalleryStore.open(path) as reader:
        with pytest.raises(StoreError, match="read-only"):
            reader.add([1], codes[:1])
        with pytest.raises(StoreError, match="read-only"):
            reader.compact()
    with pytest.raises(StoreError, match="closed"):
        reader.search(codes, 1)
    with pytest.raises(ValueError, match="mode"):
        GalleryStore.open(path, "w")
    assert os.path.getsize(path) == HEADER_SIZE
