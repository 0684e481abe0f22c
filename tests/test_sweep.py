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
    # quick: d = 48 -> sizes 24 (1/2) and 4 (1/12); full + the control's 2 stages (one per pruning stage)
    # + 3 methods x 2 sizes, 6 variants each
    keys = {r["key"] for r in records}
    assert len(records) == len(keys) == 6 * (1 + 2 + 3 * 2)
    assert {(r["method"], r["dim"]) for r in records} == {("full", 48)} | {
        (m, k) for m in ("slice", "lowrank", "prune") for k in (24, 4)}
    by_key = {r["key"]: r for r in records}
    # the equal-budget control: the full model fine-tuned with the methods' schedule, stage after stage
    assert by_key["full/48/float32"]["finetune_epochs"] == 0 and by_key["full/48/float32"]["stage"] is None
    assert by_key["full/48/float32@1"]["finetune_epochs"] == by_key["slice/24/float32"]["finetune_epochs"] == 1
    assert by_key["full/48/float32@2"]["finetune_epochs"] == by_key["prune/4/float32"]["finetune_epochs"] == 2
    assert by_key["full/48/int8-qat@1"]["finetune_epochs"] == by_key["lowrank/4/int8-qat"]["finetune_epochs"] == 2
    assert by_key["full/48/float32@2"]["bytes_per_embedding"] == 48 * 4
    assert by_key["full/48/float32@2"]["total_train_seconds"] > by_key["full/48/float32@1"]["total_train_seconds"]
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
    # dense + its QAT, (float + QAT) per control stage, and (float + QAT) per method and size
    assert first["trained"] == 2 + 2 * 2 + 3 * 2 * 2
    for name in ("sweep.md", "sweep.png"):
        assert (out / name).stat().st_size > 0
    md = (tmp_path / "bench" / "c.md").read_text()
    assert "| slice | 24 | int8-ptq | 24 | 8.0x | 1 |" in md and "c.png" in md and "edgereid sweep" in md
    assert "| control (stage 2) | 48 | float32 | 192 | 1.0x | 2 |" in md
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


def test_target_is_also_judged_against_the_equal_budget_control():
    from edgereid.train.compress.report import full_float, target_lines

    def rec(method, dim, variant, nbytes, m, ft, stage=None):
        return {"method": method, "dim": dim, "variant": variant, "bytes_per_embedding": nbytes, "mAP": m,
                "rank1": m, "compression_ratio": 768 / nbytes, "finetune_epochs": ft, "stage": stage}

    records = [rec("full", 192, "float32", 768, 0.50, 0), rec("full", 192, "float32", 768, 0.60, 2, stage=1),
               rec("slice", 32, "int8-qat", 32, 0.55, 2)]
    assert full_float(records)["mAP"] == 0.50  # the dense model, not a control stage
    text = "\n".join(target_lines(records))
    # +10 % against the under-trained dense model, -8.3 % against the control with the same 2 epochs
    assert "+10.0 % relative to the full fp32 mAP" in text and "target MET" in text
    assert "equal-budget control (the full model fine-tuned 2 epochs the same way, float32): mAP 60.0, so -8.3 % " \
           "relative -> target NOT met" in text
