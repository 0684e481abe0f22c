"""The compression sweep: a real quick sweep as a subprocess, its outputs, and resuming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from market_tree import write_market_tree

BIN = Path(sys.executable).parent


def run_sweep(market: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "edgereid"), "sweep", "--data", str(market), "--out", str(out), "--model", "vit_micro",
           "--img", "64x32", "--batch-size", "16", "--workers", "0", "--quick", *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_quick_sweep_writes_records_table_plot_and_resumes_without_training(tmp_path):
    market = write_market_tree(tmp_path / "market")
    out = tmp_path / "sweep"
    res = run_sweep(market, out, "--markdown", str(tmp_path / "bench" / "c.md"), "--plot", str(tmp_path / "bench" / "c.png"))
    assert str(out / "sweep.json") in res.stdout
    data = json.loads((out / "sweep.json").read_text())
    records = data["records"]
    # quick: d = 48 -> sizes 24 (1/2) and 4 (1/12); full + 3 methods x 2 sizes, 6 variants each
    keys = {r["key"] for r in records}
    assert len(records) == len(keys) == 6 * (1 + 3 * 2)
    assert {(r["method"], r["dim"]) for r in records} == {("full", 48)} | {
        (m, k) for m in ("slice", "lowrank", "prune") for k in (24, 4)}
    by_key = {r["key"]: r for r in records}
    r = by_key["slice/24/int8-ptq"]
    assert (r["bits"], r["bytes_per_embedding"], r["compression_ratio"]) == (8, 24, 8.0)
    assert by_key["lowrank/4/4bit-ptq"]["bytes_per_embedding"] == 2
    assert by_key["prune/24/1bit-ptq"]["bytes_per_embedding"] == 3
    assert by_key["prune/24/1bit-ptq+int8-rerank"]["bytes_per_embedding"] == 3 + 24
    for rec in records:
        for m in ("rank1", "mAP", "mINP"):
            assert 0.0 <= rec[m] <= 1.0
        assert rec["total_train_seconds"] >= rec["train_seconds"] >= 0
    # pruning cost is cumulative along the walk; QAT adds its fine-tune to its float model's cost
    assert by_key["prune/4/float32"]["total_train_seconds"] > by_key["prune/24/float32"]["total_train_seconds"]
    assert by_key["slice/24/int8-qat"]["total_train_seconds"] > by_key["slice/24/float32"]["total_train_seconds"]
    first = data["invocations"][0]
    assert first["trained"] == 2 + 3 * 2 * 2  # dense + its QAT, and (float + QAT) per method and size
    for name in ("sweep.md", "sweep.png"):
        assert (out / name).stat().st_size > 0
    md = (tmp_path / "bench" / "c.md").read_text()
    assert "| slice | 24 | int8-ptq | 24 |" in md and "c.png" in md and "edgereid sweep" in md
    assert (tmp_path / "bench" / "c.png").read_bytes()[:4] == b"\x89PNG"

    # resume: drop one record; a second run re-evaluates only it, trains nothing, touches no checkpoint
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")}
    data["records"] = [r for r in records if r["key"] != "lowrank/4/int8-qat"]
    (out / "sweep.json").write_text(json.dumps(data))
    run_sweep(market, out)
    again = json.loads((out / "sweep.json").read_text())
    second = again["invocations"][-1]
    assert (second["trained"], second["evaluated"]) == (0, 1)
    assert {r["key"] for r in again["records"]} == keys
    new = {r["key"]: r for r in again["records"]}
    for key, rec in by_key.items():
        if key != "lowrank/4/int8-qat":
            assert new[key]["finished_at"] == rec["finished_at"], key
    assert new["lowrank/4/int8-qat"]["mAP"] == pytest.approx(by_key["lowrank/4/int8-qat"]["mAP"])
    assert {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")} == mtimes
