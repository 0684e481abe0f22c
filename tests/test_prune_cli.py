"""``edgereid prune`` / ``edgereid cost`` as real subprocesses, and MAC counting on the layers as run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from edgereid.train.checkpoint import save_checkpoint
from edgereid.train.config import BackboneConfig, ModelConfig
from edgereid.train.models import build_model
from edgereid.train.prune.cost import count_macs, count_params, model_cost
from edgereid.train.prune.head_entropy import remove_heads
from edgereid.train.prune.token_drop_plan import apply_drop_plan
from edgereid.train.prune.token_kv import apply_kv_plan
from market_tree import write_market_tree

BIN = Path(sys.executable).parent


def micro(classes: int = 8, **bb) -> ModelConfig:
    return ModelConfig(backbone=BackboneConfig.for_size("vit_micro", img_size=(64, 32), **bb), num_classes=classes)


def _run(args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("EDGEREID_DEBUG", None)
    return subprocess.run([str(BIN / "edgereid"), *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """A tiny data set and a 'dense' checkpoint for it (random weights: the mechanics are under test)."""
    root = tmp_path_factory.mktemp("prunecli")
    market = write_market_tree(root / "market")
    torch.manual_seed(0)
    save_checkpoint(build_model(micro(classes=8)), root / "dense")
    return market, root / "dense"


def _block_macs(t: int, keys: int, heads: int, d: int = 48, hd: int = 16, t_mlp: int | None = None) -> int:
    t_mlp = t if t_mlp is None else t_mlp
    return t * d * 3 * heads * hd + 2 * heads * t * keys * hd + t * heads * hd * d + 2 * t_mlp * d * 4 * d


def test_macs_follow_heads_keys_and_dropped_tokens():
    torch.manual_seed(0)
    model = build_model(micro(depth=3)).eval()
    patch = 8 * 3 * 16 * 16 * 48
    macs = count_macs(model)
    assert macs["per_kind"]["patch_embed"] == patch
    assert macs["per_block"] == [_block_macs(9, 9, 3)] * 3
    assert macs["total"] == patch + 3 * _block_macs(9, 9, 3)
    remove_heads(model, {0: [1]})  # block 0: 2 heads
    apply_kv_plan(model, [[1, 2, 3], [], []])  # block 0: 6 keys
    model = apply_drop_plan(model, [1], 0.5)  # after block 1's attention: 1 + 4 + 1 tokens
    macs = count_macs(model)
    assert macs["per_block"] == [_block_macs(9, 6, 2), _block_macs(9, 9, 3, t_mlp=6), _block_macs(6, 6, 3)]
    params = count_params(model)
    assert params["deploy"] < params["total"]
    assert params["backbone"] == sum(p.numel() for p in model.backbone.parameters())


def test_cost_reports_structure_and_latency():
    model = build_model(micro())
    apply_kv_plan(model, [[1, 2], []])
    cost = model_cost(model, latency_runs=3)
    assert cost["heads_kept"] == 6 and cost["keys_per_layer"] == [7, 9]
    assert cost["keys_kept_fraction"] == pytest.approx(16 / 18, abs=1e-4)
    assert cost["latency"]["runs"] == 3 and cost["latency"]["median_ms"] > 0


def test_prune_cli_heads_then_tokens_and_cost_cli(dense, tmp_path):
    market, ckpt = dense
    out = tmp_path / "pruned"
    res = _run(["prune", "--ckpt", str(ckpt), "--data", str(market), "--mode", "heads+tokens", "--rate", "0.34",
                "--token-rate", "0.25", "--iterations", "1", "--finetune-epochs", "1", "--final-epochs", "1",
                "--batch-size", "16", "--workers", "0", "--max-steps-per-epoch", "2", "--stats-batches", "2",
                "--distill", "soft", "--alpha", "0.2", "--tau", "1", "--embed-distill", "0.5", "--out", str(out)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert str(out) in res.stdout  # results on stdout, progress lines on stderr
    assert "[train] round 1 (heads" in res.stderr and "[train] round 2 (kv" in res.stderr
    cfg = json.loads((out / "config.json").read_text())
    bb = cfg["model"]["backbone"]
    assert sum(bb["heads_per_layer"]) == 6 - 2  # floor(2 * 3 * 0.34) = 2 heads
    # floor(8 * 2 * 0.25) = 4 key positions (a layer that lost none is stored as null)
    assert sum(9 if k is None else len(k) for k in bb["kv_keep"]) == 18 - 4
    assert cfg["prune"]["mode"] == "heads+tokens" and cfg["teacher"] == str(ckpt)
    log = [json.loads(x) for x in (out / "prune_log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log] == ["dense", "heads", "kv", "final"]
    assert log[1]["finetune"][0]["kd"] >= 0 and "kd_embed" in log[1]["finetune"][0]
    summary = json.loads((out / "prune_summary.json").read_text())
    assert summary["dense"]["heads_per_layer"] == [3, 3]

    res = _run(["cost", "--ckpt", str(out), "--runs", "3"])
    assert res.returncode == 0, res.stderr[-2000:]
    cost = json.loads((out / "cost.json").read_text())
    assert cost["heads_kept"] == 4 and str(out / "cost.json") in res.stdout
    res = _run(["cost", "--ckpt", str(ckpt), "--runs", "0", "--out", str(tmp_path / "dense_cost.json")])
    assert res.returncode == 0, res.stderr[-2000:]
    dense_cost = json.loads((tmp_path / "dense_cost.json").read_text())
    assert "latency" not in dense_cost
    assert cost["macs"]["total"] < dense_cost["macs"]["total"]
    assert cost["params"]["deploy"] < dense_cost["params"]["deploy"]


def test_prune_cli_names_bad_inputs(dense, tmp_path):
    market, ckpt = dense
    res = _run(["prune", "--ckpt", str(tmp_path / "nope"), "--data", str(market), "--out", str(tmp_path / "o")])
    assert res.returncode != 0 and "nope" in res.stderr and "Traceback" not in res.stderr
    res = _run(["prune", "--ckpt", str(ckpt), "--data", str(market), "--mode", "heads", "--rate", "0.9",
                "--final-epochs", "0", "--workers", "0", "--stats-batches", "1", "--no-round-eval",
                "--out", str(tmp_path / "o")])
    assert res.returncode != 0 and "every layer keeps one head" in res.stderr and "Traceback" not in res.stderr
    other = write_market_tree(tmp_path / "other", train_ids=5)
    res = _run(["prune", "--ckpt", str(ckpt), "--data", str(other), "--out", str(tmp_path / "o")])
    assert res.returncode != 0 and "8 identities" in res.stderr and "Traceback" not in res.stderr


def test_report_table_compares_checkpoints_measured_in_one_process(tmp_path):
    from edgereid.train.prune.report import main as report_main

    torch.manual_seed(0)
    dense_model = build_model(micro())
    save_checkpoint(dense_model, tmp_path / "dense", metadata={"metrics": {"rank1": 0.5, "mAP": 0.4}})
    remove_heads(dense_model, {0: [0], 1: [1]})
    pruned = apply_drop_plan(dense_model, [1], 0.5)
    save_checkpoint(pruned, tmp_path / "pruned", metadata={"metrics": {"rank1": 0.45, "mAP": 0.41},
                                                           "prune": {"mode": "heads+tokens"}, "distill": "soft"})
    out = tmp_path / "table.md"
    assert report_main(["--dense", str(tmp_path / "dense"), "--run", f"both={tmp_path / 'pruned'}",
                        "--run", f"both={tmp_path / 'pruned'}", "--rounds", "1", "--runs", "2",
                        "--out", str(out), "--json", str(tmp_path / "rows.json")]) == 0
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["label"] for r in rows] == ["dense", "both", "both"]
    assert rows[1]["heads_kept"] == 4 and rows[1]["macs"] < rows[0]["macs"]
    assert all(r["latency"]["runs"] == 2 for r in rows)
    text = out.read_text()
    assert "| both | soft | 4/6 |" in text and "(-5.0)" in text and "(+1.0)" in text


def test_report_merges_extra_split_columns_from_eval_files(tmp_path):
    from edgereid.train.prune.report import main as report_main

    torch.manual_seed(0)
    dense_model = build_model(micro())
    save_checkpoint(dense_model, tmp_path / "dense", metadata={"metrics": {"rank1": 0.5, "mAP": 0.4}})
    pruned = apply_drop_plan(dense_model, [1], 0.5)
    save_checkpoint(pruned, tmp_path / "pruned", metadata={"metrics": {"rank1": 0.45, "mAP": 0.41},
                                                           "prune": {"mode": "tokens-drop"}, "distill": "none"})
    save_checkpoint(pruned, tmp_path / "no_eval", metadata={"metrics": {"rank1": 0.4, "mAP": 0.4},
                                                            "prune": {"mode": "tokens-drop"}, "distill": "none"})
    # what `edgereid eval --out CKPT/eval_occ.json` writes
    (tmp_path / "dense" / "eval_occ.json").write_text(json.dumps({"ckpt": "dense", "data": "occ", "rank1": 0.3,
                                                                   "mAP": 0.25}))
    (tmp_path / "pruned" / "eval_occ.json").write_text(json.dumps({"ckpt": "pruned", "data": "occ", "rank1": 0.28,
                                                                    "mAP": 0.27}))
    out = tmp_path / "table.md"
    assert report_main(["--dense", str(tmp_path / "dense"), "--run", f"drop={tmp_path / 'pruned'}",
                        "--run", f"bare={tmp_path / 'no_eval'}", "--split", "occluded=eval_occ.json",
                        "--rounds", "1", "--runs", "1", "--out", str(out), "--json", str(tmp_path / "rows.json"),
                        "--plot", str(tmp_path / "plot.png")]) == 0
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert rows[0]["splits"]["occluded"]["rank1"] == 0.3 and rows[1]["splits"]["occluded"]["mAP"] == 0.27
    assert rows[2]["splits"]["occluded"] == {"rank1": None, "mAP": None}
    lines = out.read_text().splitlines()
    header = next(x for x in lines if x.startswith("| method"))
    assert header.endswith("| rank-1 | mAP | rank-1 (occluded) | mAP (occluded) |")
    sep = next(x for x in lines if x.startswith("|---"))
    assert sep.count("---") == header.count("|") - 1
    dense_row = next(x for x in lines if x.startswith("| dense |"))
    assert dense_row.endswith("| 30.0 | 25.0 |")
    drop_row = next(x for x in lines if x.startswith("| drop |"))
    assert drop_row.endswith("| 28.0 (-2.0) | 27.0 (+2.0) |")
    assert next(x for x in lines if x.startswith("| bare |")).endswith("| - | - |")
    with pytest.raises(SystemExit):
        report_main(["--dense", str(tmp_path / "dense"), "--split", "occluded", "--out", str(out)])


def test_report_split_file_errors_name_the_file(tmp_path):
    from edgereid.train.prune.report import read_split_metrics

    assert read_split_metrics(tmp_path, "missing.json") == {"rank1": None, "mAP": None}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad.json: not valid JSON \(.* line 1 column 2\); expected an `edgereid eval` JSON"):
        read_split_metrics(tmp_path, "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="list.json: expected an `edgereid eval` JSON object .*, got a JSON list"):
        read_split_metrics(tmp_path, "list.json")
    (tmp_path / "ok.json").write_text(json.dumps({"rank1": 0.25, "mAP": 0.2, "data": "d"}))
    assert read_split_metrics(tmp_path, "ok.json")["mAP"] == 0.2
