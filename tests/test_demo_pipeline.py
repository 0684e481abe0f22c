"""`make demo` at toy size, through the same make targets a user runs: every stage must connect.

synth + baselines -> train -> control (dense fine-tuned like the compressed model) -> compress (32-byte
style: slice + int8 QAT) -> prune heads+tokens with distillation -> export cpu bundles (ONNX, OpenVINO
f32/int8, calibration, open-set threshold) + onnx and jetson bundles -> reid-runtime enrol / stream /
eval (+ open-set rates) / bench -> report. One epoch per stage, ViT-Micro, a handful of identities.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)  # the virtual environment running the tests (not its resolved base interpreter)

TOY = {
    "SYNTH_IDS": "16", "MODEL": "vit_micro", "IMG": "64x32", "EPOCHS": "1", "BATCH": "16", "WORKERS": "0",
    "EMB_DIM": "16", "COMPRESS_EPOCHS": "1", "PRUNE_EPOCHS": "1", "CALIB": "16", "BENCH_ITERS": "3",
    "TRAIN_ARGS": "--eval-every 1",
}


@pytest.mark.slow
def test_make_demo_runs_every_stage_at_toy_size(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    if not (VENV / "bin" / "edgereid").exists():
        pytest.skip(f"the tests do not run from an environment with edgereid installed ({VENV})")
    work = tmp_path / "demo"
    args = ["make", "-C", str(REPO), "demo", f"VENV={VENV}", f"WORK={work}"] + [f"{k}={v}" for k, v in TOY.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    (VENV / ".edgereid-installed").touch()  # the venv running the tests is the installed one
    res = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1500)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])

    assert (work / "data" / ".complete").is_file()
    assert (work / "synth_preview.png").stat().st_size > 1000
    baselines = json.loads((work / "baselines.json").read_text())["baselines"]
    assert set(baselines) == {"histogram", "pixels"}
    summary = json.loads((work / "dense" / "summary.json").read_text())
    assert set(summary["beats_baselines"]) == {"histogram", "pixels"}  # the verdict is recorded with the model
    dense_cfg = json.loads((work / "dense" / "config.json").read_text())["model"]
    assert dense_cfg["backbone"]["stem"] == "conv"  # the demo's recipe
    control = json.loads((work / "control" / "compress.json").read_text())
    assert control["method"] == "full" and control["bits"] == 32
    for stage, marker in (("dense", "summary.json"), ("control", "compress.json"), ("compressed", "compress.json"),
                          ("pruned", "prune_summary.json")):
        assert (work / stage / marker).is_file(), stage
        assert (work / stage / "model.safetensors").is_file(), stage
    pruned_cfg = json.loads((work / "pruned" / "config.json").read_text())["model"]
    assert pruned_cfg["embedding"]["dim"] == 16 and pruned_cfg["embedding"]["bits"] == 8
    assert pruned_cfg["backbone"]["heads_per_layer"] is not None or pruned_cfg["backbone"]["drop_layers"]

    for name in ("dense", "compressed", "pruned", "pruned-onnx", "pruned-jetson"):
        manifest = json.loads((work / f"bundle-{name}" / "manifest.json").read_text())
        assert manifest["format"] == "edgereid-bundle"
    jetson = work / "bundle-pruned-jetson"
    assert (jetson / "BUILD_ENGINE.md").is_file() and "trtexec" in (jetson / "BUILD_ENGINE.md").read_text()

    queries = sorted(p.name for p in (work / "data" / "query").glob("*.jpg"))
    for name in ("dense", "compressed", "pruned"):
        out = [json.loads(line) for line in (work / f"runtime-{name}" / "matches.jsonl").read_text().splitlines()]
        # one real answer per query image: no error lines, the nearest gallery entries, a decision
        assert sorted(Path(o["image"]).name for o in out) == queries
        assert all("error" not in o and o["topk"] and o["decision"] in ("match", "unknown") for o in out)
        assert all(o["identity"] is not None for o in out if o["decision"] != "unknown")
        ev = json.loads((work / f"runtime-{name}" / "eval.json").read_text())
        assert ev["errors"] == 0 and ev["queries"] == len(queries)
        assert 0.0 < ev["codes"]["mAP"] <= 1.0 and 0.0 <= ev["codes"]["rank1"] <= 1.0  # mAP > 0 once a query scores
        o = ev["open_set"]  # the threshold's rates on queries of enrolled and not-enrolled people
        assert o["enrolled_queries"] > 0 and o["not_enrolled_queries"] > 0
        assert o["target_false_accept_rate"] == 0.05 and 0.0 <= o["false_accept_rate"] <= 1.0
        assert (work / f"gallery-{name}.bin").stat().st_size > 0
        assert (work / f"runtime-{name}" / "bench-openvino-int8" / "bench.json").is_file()

    report = json.loads((work / "report.json").read_text())
    rows = {r["model"]: r for r in report["rows"]}
    assert list(rows) == ["dense", "control", "compressed", "pruned"]
    assert rows["control"]["epochs"] == "1 + 1" and rows["pruned"]["epochs"] == "1 + 1 + 1"
    assert rows["control"]["torch_mAP"] is not None and rows["control"].get("mAP") is None  # no bundle: PyTorch only
    assert rows["compressed"]["bytes_per_embedding"] == 16
    assert rows["dense"]["bytes_per_embedding"] > rows["compressed"]["bytes_per_embedding"]
    assert set(rows["pruned"]["latency_b1_ms"]) == {"onnx-fp32", "openvino-fp32", "openvino-int8"}
    assert "rank-1" in res.stdout and "pruned + compressed" in res.stdout and "dense control" in res.stdout
    md = (work / "report.md").read_text()
    assert "raw pixels baseline (no learning)" in md and "colour histogram baseline (no learning)" in md
    assert "beat the raw pixels baseline" in md  # a plain verdict per model (beats / does NOT beat)
    assert "false-accept rate" in md

    # A second run finds every output in place and redoes nothing.
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "edgereid train" not in again.stdout and "edgereid export" not in again.stdout
