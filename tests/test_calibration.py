"""Calibration: train-split-only stratified sets, Q/DQ ONNX, NNCF OpenVINO int8, embedding scale, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from edgereid.calibration.calib_set import (
    CalibrationConfig,
    calibration_set_from_dataset,
    input_spec_from_onnx,
    load_calibration_images,
    read_image_list,
    scan_train_folder,
    select_calibration_records,
)
from edgereid.calibration.embedding_scale import calibrate_embedding_scale, embeddings_from_onnx
from edgereid.calibration.nncf_openvino import quantize_openvino_int8
from edgereid.calibration.onnx_qdq import check_symmetric_qdq, quantize_onnx_qdq
from edgereid.calibration.tensorrt_calibrator import CalibrationBatcher, CalibrationCache, cache_path_for
from edgereid.export.onnx_export import export_onnx
from edgereid.export.parity import cosine_stats
from edgereid.export.runners import onnxruntime_runner, openvino_runner
from edgereid.train.config import BackboneConfig, EmbeddingConfig, ModelConfig
from edgereid.train.models import build_model
from market_tree import write_market_tree
from onnx import numpy_helper

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calib")
    root = write_market_tree(tmp / "data", train_ids=6, test_ids=2, per_cam=2, cams=3)
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=BackboneConfig.for_size("vit_micro", img_size=(64, 32), drop_layers=[1]),
                      embedding=EmbeddingConfig(kind="slice", dim=16), num_classes=6)
    model = build_model(cfg).eval()
    export_onnx(model, tmp / "model.onnx")
    # a data set whose query/gallery files do not exist: calibration must never open them
    train = scan_train_folder(root / "bounding_box_train")
    missing = [(str(tmp / "nowhere" / f"q{i}.jpg"), 100 + i, 0) for i in range(4)]
    dataset = SimpleNamespace(train=train, query=missing, gallery=missing)
    return SimpleNamespace(tmp=tmp, root=root, model=model, onnx=tmp / "model.onnx", dataset=dataset, train=train)


def test_selection_is_stratified_over_identities_then_cameras():
    train = [(f"{pid}_{cam}_{s}.jpg", pid, cam) for pid in range(10) for cam in range(3) for s in range(4)]
    eight = select_calibration_records(train, 8, seed=1)
    assert len({r[1] for r in eight}) == 8  # eight different identities before any repeats
    thirty = select_calibration_records(train, 30, seed=1)
    assert len({(r[1], r[2]) for r in thirty}) == 30  # every (identity, camera) once before any repeats
    assert select_calibration_records(train, 30, seed=1) == thirty  # deterministic
    assert select_calibration_records(train, 30, seed=2) != thirty
    assert len(select_calibration_records(train, 1000)) == len(train)  # capped at the split's size
    with pytest.raises(ValueError, match="empty"):
        select_calibration_records([], 4)
    with pytest.raises(ValueError, match=">= 1"):
        select_calibration_records(train, 0)


def test_calibration_reads_only_the_train_split(setup):
    calib = calibration_set_from_dataset(setup.dataset, CalibrationConfig(size=12))
    train_paths = {r[0] for r in setup.train}
    assert set(calib.paths) <= train_paths and len(calib.paths) == 12
    images = load_calibration_images(calib.paths, input_spec_from_onnx(setup.onnx))
    assert images.shape == (12, 3, 64, 32) and images.dtype == np.float32
    # the whole int8 path runs with query/gallery paths that do not exist
    xml, _ = quantize_openvino_int8(setup.onnx, images, setup.tmp / "ov8" / "model.xml", batch=1)
    assert xml.is_file()
    quantize_onnx_qdq(setup.onnx, setup.tmp / "q.onnx", images, batch=1)
    summary = calib.summary()
    assert summary["source"] == "train split" and summary["identities"] == 6 and len(summary["sha256_list"]) == 64
    listed = read_image_list(calib.write_list(setup.tmp / "list.txt"))
    assert listed == calib.records
    with pytest.raises(ValueError, match="train images only"):  # a data set root holds query/gallery
        scan_train_folder(setup.root)


def test_qdq_graph_is_symmetric_per_channel_and_close_to_float(setup):
    images = load_calibration_images([r[0] for r in setup.train[:16]], input_spec_from_onnx(setup.onnx))
    report = quantize_onnx_qdq(setup.onnx, setup.tmp / "qdq.onnx", images, batch=1)
    assert report["per_channel_weights"] > 0 and report["zero_points"] == "all int8 0"
    proto = onnx.load(str(setup.tmp / "qdq.onnx"))
    assert [o.version for o in proto.opset_import if o.domain == ""] == [17]
    assert any(p.key == "edgereid.input" for p in proto.metadata_props)
    dq_outputs = {o for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    fed_by_dq = {n.op_type for n in proto.graph.node if any(i in dq_outputs for i in n.input)}
    assert {"MatMul", "Gemm"} & fed_by_dq  # the matrix products run on int8-representable inputs
    ref = onnxruntime_runner(setup.onnx, 1)(images)
    got = onnxruntime_runner(setup.tmp / "qdq.onnx", 1)(images)
    assert cosine_stats(ref, got)["mean"] > 0.99
    # a graph with a non-zero zero point is refused
    for t in proto.graph.initializer:
        if t.name.endswith("_zero_point") and numpy_helper.to_array(t).dtype == np.int8:
            arr = numpy_helper.to_array(t).copy()
            arr.flat[0] = 3
            t.CopyFrom(numpy_helper.from_array(arr, t.name))
            break
    onnx.save(proto, str(setup.tmp / "bad.onnx"))
    with pytest.raises(ValueError, match="zero point"):
        check_symmetric_qdq(setup.tmp / "bad.onnx")


def test_nncf_int8_ir_is_close_to_float(setup):
    images = load_calibration_images([r[0] for r in setup.train[:16]], input_spec_from_onnx(setup.onnx))
    xml, binf = quantize_openvino_int8(setup.onnx, images, setup.tmp / "ovq" / "model.xml", batch=1)
    assert binf.is_file()
    text = xml.read_text()
    assert "FakeQuantize" in text or "i8" in text  # really quantised
    ref = onnxruntime_runner(setup.onnx, 1)(images)
    got = openvino_runner(xml, 1)(images)
    assert cosine_stats(ref, got)["mean"] > 0.98


def test_embedding_scale_from_calibration_embeddings(setup):
    images = load_calibration_images([r[0] for r in setup.train[:12]], input_spec_from_onnx(setup.onnx))
    emb = embeddings_from_onnx(setup.onnx, images)
    assert emb.shape == (12, 16)
    info = calibrate_embedding_scale(emb, bits=8, percentile=100.0)
    normed = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    assert info["scale"] == pytest.approx(np.abs(normed).max() / 127, rel=1e-5)
    assert info["scale_source"] == "calibration" and info["images"] == 12
    four = calibrate_embedding_scale(emb, bits=4, percentile=100.0)
    assert four["scale"] == pytest.approx(np.abs(normed).max() / 7, rel=1e-5)


def test_tensorrt_batcher_and_cache_need_no_tensorrt(tmp_path):
    images = np.arange(7 * 3 * 4 * 2, dtype=np.float32).reshape(7, 3, 4, 2)
    b = CalibrationBatcher(images[:, :, ::-1], batch_size=3)  # a non-contiguous view
    assert b.num_batches == 2 and b.batch_shape == (3, 3, 4, 2) and b.batch_nbytes == 3 * 3 * 4 * 2 * 4
    first = b.next_batch()
    assert first.flags.c_contiguous and first.dtype == np.float32
    np.testing.assert_array_equal(first, images[:3, :, ::-1])
    np.testing.assert_array_equal(b.next_batch(), images[3:6, :, ::-1])
    assert b.next_batch() is None  # the 7th image (a partial batch) is dropped
    b.reset()
    np.testing.assert_array_equal(b.next_batch(), first)
    with pytest.raises(ValueError, match="fewer than one batch"):
        CalibrationBatcher(images[:2], batch_size=3)
    m1, m2 = tmp_path / "a.onnx", tmp_path / "b.onnx"
    m1.write_bytes(b"graph one")
    m2.write_bytes(b"graph two")
    c1, c2 = cache_path_for(m1, tmp_path / "cache"), cache_path_for(m2, tmp_path / "cache")
    assert c1 != c2 and c1.name.startswith("c4133df3")  # sha256("graph one") = c4133df3...
    cache = CalibrationCache(c1)
    assert cache.read() is None
    cache.write(b"\x01\x02")
    assert CalibrationCache(c1).read() == b"\x01\x02"


def test_calibrate_cli_without_torch(setup):
    out = setup.tmp / "cli"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = ("import sys, runpy; sys.argv = sys.argv[1:]; "
            "from edgereid.calibration import cli as c; import argparse; p = argparse.ArgumentParser(); "
            "s = p.add_subparsers(); c.register(s); a = p.parse_args(); rc = a.func(a); "
            "assert 'torch' not in sys.modules, 'calibration imported torch'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "x", "calibrate", "--onnx", str(setup.onnx),
                           "--train-dir", str(setup.root / "bounding_box_train"), "--out", str(out), "--size", "8",
                           "--methods", "qdq,scale"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"wrote {out / 'calibration.json'}" in proc.stdout
    report = json.loads((out / "calibration.json").read_text())
    assert report["calibration"]["images"] == 8 and report["embedding_scale"]["scale"] > 0
    assert (out / "model.int8.qdq.onnx").is_file() and (out / "calibration_list.txt").is_file()
    # the real `edgereid calibrate` entry point, with a bad argument: a clear error, no traceback
    proc = subprocess.run([sys.executable, "-m", "edgereid", "calibrate", "--onnx", str(setup.tmp / "missing.onnx"),
                           "--train-dir", str(setup.root), "--out", str(out)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 2 and "missing.onnx" in proc.stderr and "Traceback" not in proc.stderr
