"""Bundles: cpu / jetson / onnx targets end to end, hashes enforced by the runtime, clear TensorRT message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from edgereid.data import build_dataset
from edgereid.export.bundle import ExportOptions, export_bundle
from edgereid.export.tensorrt_engine import tensorrt_available
from edgereid.runtime.bundle import BundleError, load_bundle
from edgereid.train.checkpoint import save_checkpoint
from edgereid.train.config import BackboneConfig, EmbeddingConfig, ModelConfig
from edgereid.train.models import build_model
from market_tree import write_market_tree

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundle")
    data = write_market_tree(tmp / "data", train_ids=6, test_ids=5, per_cam=2, cams=3)
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=BackboneConfig.for_size("vit_micro", img_size=(64, 32), drop_layers=[1]),
                      embedding=EmbeddingConfig(kind="slice", dim=16), num_classes=6)
    model = build_model(cfg).eval()
    model.backbone.blocks[0].attn.keep_heads([0, 1])
    save_checkpoint(model, tmp / "ckpt")
    return SimpleNamespace(tmp=tmp, data=data, ckpt=tmp / "ckpt")


@pytest.fixture(scope="module")
def cpu_bundle(work):
    opts = ExportOptions(target="cpu", data=str(work.data), calib_size=12, parity_images=4)
    return export_bundle(work.ckpt, work.tmp / "cpu", opts)


def test_cpu_bundle_is_complete_and_measured(cpu_bundle):
    bundle = load_bundle(cpu_bundle, verify="all")
    assert set(bundle.artifacts) == {"onnx-fp32", "onnx-int8-qdq", "openvino-fp32", "openvino-int8"}
    assert bundle.default_artifact == "openvino-int8"
    m = bundle.manifest
    assert m["model"]["pruning"]["heads_per_layer"] == [2, 3] and m["model"]["pruning"]["drop_layers"] == [1]
    assert m["model"]["params"] > 0 and m["model"]["macs"] > 0
    assert m["embedding"]["dim"] == 16 and m["embedding"]["bits"] == 8 and m["embedding"]["scale"] > 0
    assert m["embedding"]["scale_source"] == "calibration"
    assert m["input"]["height"] == 64 and m["input"]["batch"] == "dynamic"  # the default: any count per call
    # calibration from the train split, recorded with the list's digest
    cal = m["calibration"]
    assert cal["images"] == 12 and cal["source"] == "train split"
    listed = (cpu_bundle / cal["list"]).read_text().splitlines()
    assert len(listed) == 12 and all("bounding_box_train" in line for line in listed)
    # parity (at batch 1 and at the 4 parity images in one batch) and int8 accuracy numbers
    assert m["parity"]["onnx-fp32"]["onnxruntime_max_abs"] <= 1e-4 and m["parity"]["onnx-fp32"]["batches"] == [1, 4]
    assert m["parity"]["openvino-fp32"]["openvino_f32_max_abs"] <= 1e-4
    for name in ("onnx-int8-qdq", "openvino-int8"):
        assert m["parity"][name]["cosine_to_torch_fp32"]["mean"] > 0.95
        assert m["parity"][name]["batches"] == [1, 4] and m["parity"][name]["batch1_vs_batch_n_max_abs"] < 0.05
        acc = m["accuracy"][name]
        assert 0.0 <= acc["mAP"] <= 1.0 and "mAP_drop_points" in acc and "within_budget" in acc
        assert acc["max_map_drop_points"] == 0.5  # the budget, for the runtime's automatic choice
        assert acc["cosine_to_torch-fp32_mean"] > 0.95
    assert 0.0 < m["accuracy"]["torch-fp32"]["mAP"] <= 1.0
    # the open-set threshold: chosen for a stated false-accept rate on gallery people, never on the query images
    o = m["open_set"]
    assert o["threshold"] > 0 and o["target_false_accept_rate"] == 0.05
    assert o["calibration_false_accept_rate"] <= 0.05 and o["calibration_source"] == "gallery"


def test_altered_bundle_file_is_refused(work, cpu_bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(cpu_bundle, copy)
    load_bundle(copy, verify="all")
    xml = copy / "openvino-int8" / "model.bin"
    data = bytearray(xml.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit-pattern, same size
    xml.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.bin.*sha256"):
        load_bundle(copy, verify="openvino-int8")
    load_bundle(copy, verify="onnx-fp32")  # the untouched artifacts still verify


def test_jetson_without_tensorrt_gives_a_complete_bundle_and_instructions(work, caplog):
    if tensorrt_available():
        pytest.skip("TensorRT is installed here: the engine is built instead of the message")
    # a data set whose query/gallery do not exist: calibration and export read only the train split
    real = build_dataset("market1501", work.data)
    missing = [(str(work.tmp / "gone" / "q.jpg"), 1, 0)]
    dataset = SimpleNamespace(train=real.train, query=missing, gallery=missing)
    opts = ExportOptions(target="jetson", jetpack=5, calib_size=8, parity_images=2, evaluate=False)
    with caplog.at_level("INFO", logger="edgereid"):
        out = export_bundle(work.ckpt, work.tmp / "jetson", opts, dataset=dataset)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("TensorRT is not importable" in w and "BUILD_ENGINE.md" in w for w in warned)
    bundle = load_bundle(out, verify="all")
    assert set(bundle.artifacts) == {"onnx-fp32", "onnx-int8-qdq", "onnx-fp32-jp5", "onnx-int8-qdq-jp5"}
    assert any("BUILD_ENGINE.md" in n for n in bundle.manifest["notes"])
    md = (out / "BUILD_ENGINE.md").read_text()
    assert "trtexec --onnx=model.int8.qdq.jp5.onnx" in md and "--int8" in md
    assert "reid-runtime build-engine --bundle . --precision int8 --source-artifact onnx-int8-qdq-jp5" in md
    assert bundle.manifest["build_engine"]["path"] == "BUILD_ENGINE.md"
    assert bundle.manifest["checks"]["model.jp5.onnx"]["layernorm_decomposed"] == 5
    assert bundle.manifest["parity"]["onnx-fp32-jp5"]["onnxruntime_max_abs"] <= 1e-4
    # with evaluation on, the missing query images are read (so the test above really excluded them)
    with pytest.raises(ValueError, match="could not be read"):
        export_bundle(work.ckpt, work.tmp / "jetson-eval", ExportOptions(target="jetson", calib_size=8,
                                                                          parity_images=2), dataset=dataset)
    assert not (work.tmp / "jetson-eval").exists() and not (work.tmp / ".jetson-eval.partial").exists()


def test_export_cli_onnx_target_codes_output_and_overwrite(work, tmp_path, capsys):
    # a QAT-style int8 embedding with a scale: the graph emits int8 codes
    torch.manual_seed(1)
    cfg = ModelConfig(backbone=BackboneConfig.for_size("vit_micro", img_size=(64, 32)),
                      embedding=EmbeddingConfig(kind="lowrank", dim=12, bits=8, scale=0.02, qat=True), num_classes=6)
    save_checkpoint(build_model(cfg).eval(), tmp_path / "qat")
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "edgereid", "export", "--ckpt", str(tmp_path / "qat"), "--target", "onnx",
           "--out", str(out), "--data", str(work.data), "--output", "codes", "--calib-size", "8", "--no-eval",
           "--dynamic-batch"]
    from edgereid.cli import main

    assert main(cmd[3:]) == 2  # in-process: refused before any work
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "user data"  # nothing lost
    proc = subprocess.run(cmd + ["--overwrite"], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote {out}/manifest.json" in proc.stdout
    assert "[export] model.onnx: opset 17, checks passed" in proc.stderr  # the modules' log lines, on stderr
    bundle = load_bundle(out, verify="all")
    assert not (out / "keep.txt").exists()
    emb = bundle.manifest["embedding"]
    assert emb["output"] == "codes" and emb["scale"] == pytest.approx(0.02) and emb["scale_source"] == "qat"
    assert bundle.manifest["input"]["batch"] == "dynamic"
    assert set(bundle.artifacts) == {"onnx-fp32", "onnx-int8-qdq"}
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"images": np.zeros((3, 3, 64, 32), np.float32)})[0]
    assert y.dtype == np.int8 and y.shape == (3, 12)
    par = bundle.manifest["parity"]["onnx-fp32"]
    assert par["onnxruntime_max_level_diff"] <= 1 and par["openvino_f32_max_level_diff"] <= 1
    assert json.loads(json.dumps(bundle.manifest["checks"]["model.onnx"]))["opset"] == 17


def test_runtime_choice_on_the_exported_bundle_follows_its_recorded_accuracy(cpu_bundle, tmp_path, monkeypatch):
    """The real exporter's cpu bundle (4 artifacts, accuracy recorded): eligibility as recorded, one is timed in."""
    import shutil

    from edgereid.runtime.artifact_choice import ChoiceConfig, choose_artifact

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGEREID_ARTIFACT_CHOICE", raising=False)
    copy = tmp_path / "copy"
    shutil.copytree(cpu_bundle, copy)
    bundle = load_bundle(copy)
    choice = choose_artifact(bundle, config=ChoiceConfig(seconds=1.0), batch_size=4)
    acc = bundle.manifest["accuracy"]
    ref = acc["torch-fp32"]["mAP"]
    verdict = {c.name: c.eligible for c in choice.candidates}
    for name in ("onnx-int8-qdq", "openvino-int8"):  # recorded: within 0.5 mAP points of torch-fp32 or not
        assert verdict[name] == (100 * (ref - acc[name]["mAP"]) <= acc[name]["max_map_drop_points"] + 1e-9)
    assert verdict["onnx-fp32"] and verdict["openvino-fp32"]  # float graphs, parity-checked at export
    assert choice.artifact in {n for n, ok in verdict.items() if ok} and choice.how in ("measured", "single")
    if choice.how == "measured":
        assert all(c.score_ms > 0 for c in choice.candidates if c.eligible)
        assert choice.cache_path.startswith(str(copy / "runtime-cache"))


def test_an_int8_default_out_of_the_accuracy_budget_falls_back_to_its_float_artifact():
    from edgereid.export.bundle import default_within_budget

    arts = [("onnx-fp32", "onnxruntime", "fp32", {}, {}), ("onnx-int8-qdq", "onnxruntime", "int8", {}, {}),
            ("openvino-fp32", "openvino", "fp32", {}, {}), ("openvino-int8", "openvino", "int8", {}, {})]
    ok = {"openvino-int8": {"within_budget": True, "mAP_drop_points": 0.2}}
    bad = {"openvino-int8": {"within_budget": False, "mAP_drop_points": 18.2}}
    assert default_within_budget("openvino-int8", arts, ok) == "openvino-int8"
    assert default_within_budget("openvino-int8", arts, bad) == "openvino-fp32"  # same backend, float
    assert default_within_budget("openvino-int8", arts, {}) == "openvino-int8"  # not measured (no --data)
    assert default_within_budget("onnx-int8-qdq", arts[:2], {"onnx-int8-qdq": {"within_budget": False}}) == "onnx-fp32"
