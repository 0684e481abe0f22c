"""Baseline training: real optimisation steps, PK batches, losses, the CLIs, and 2-process DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from edgereid.train.config import BackboneConfig, ModelConfig
from edgereid.train.data.sampler import PKSampler
from edgereid.train.engine import TrainConfig, fit, lr_factor
from edgereid.train.losses import batch_hard_triplet, kd_logits
from edgereid.train.models import build_model
from market_tree import write_market_tree

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    return write_market_tree(tmp_path_factory.mktemp("market"))


def test_pk_sampler_batches_hold_p_identities_with_k_images():
    pids = [i // 5 for i in range(40)]  # 8 identities x 5 images
    sampler = PKSampler(pids, batch_size=8, k=4, seed=1)
    order = list(sampler)
    assert len(order) == len(sampler) and len(order) % 8 == 0
    for start in range(0, len(order), 8):
        batch = [pids[i] for i in order[start:start + 8]]
        assert sorted(batch.count(p) for p in set(batch)) == [4, 4]


def test_pk_sampler_splits_batches_across_ranks():
    pids = [i // 4 for i in range(64)]
    a = list(PKSampler(pids, 8, 4, seed=3, num_replicas=2, rank=0))
    b = list(PKSampler(pids, 8, 4, seed=3, num_replicas=2, rank=1))
    assert len(a) == len(b) > 0 and not set(a) & set(b)


def test_batch_hard_triplet_picks_the_hardest_pairs():
    emb = torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, 0.0], [10.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # anchor 0: hardest positive 3.0 (to 1), hardest negative 1.0 (to 2) -> relu(3 - 1 + 0.5) = 2.5
    loss = batch_hard_triplet(emb[:3], labels[:3], margin=0.5)
    # anchors 0 and 1 have positives; anchor 2 has none and is ignored
    # anchor 1: d_ap = 3, d_an = 2 -> 1.5 ; mean (2.5 + 1.5) / 2 = 2.0
    assert loss.item() == pytest.approx(2.0)


def test_kd_logits_is_zero_for_identical_logits_and_positive_otherwise():
    t = torch.randn(4, 6)
    assert kd_logits(t, t).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_logits(torch.randn(4, 6), t, tau=2.0).item() > 0


def test_warmup_then_cosine_schedule():
    cfg = TrainConfig(epochs=10, warmup_epochs=2, min_lr_ratio=0.0)
    assert lr_factor(cfg, 1.0) == pytest.approx(0.5)
    assert lr_factor(cfg, 2.0) == pytest.approx(1.0)
    assert lr_factor(cfg, 10.0) == pytest.approx(0.0, abs=1e-9)


def test_real_training_lowers_the_loss_and_keeps_the_best_checkpoint(market, tmp_path):
    from edgereid.data import build_dataset
    from edgereid.train.checkpoint import load_model

    torch.manual_seed(0)
    ds = build_dataset("market1501", market)
    model = build_model(ModelConfig(backbone=BackboneConfig.for_size("vit_micro", img_size=(64, 32)),
                                    num_classes=ds.num_train_pids))
    cfg = TrainConfig(epochs=6, batch_size=16, workers=0, lr=1e-3, warmup_epochs=0.5, eval_every=3)
    summary = fit(model, ds, cfg, tmp_path / "run")
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 6
    assert log[-1]["loss"] < log[0]["loss"]
    assert "eval_mAP" in log[2] and "eval_mAP" in log[5]
    best = max(r["eval_mAP"] for r in log if "eval_mAP" in r)
    assert summary["best"]["mAP"] == pytest.approx(best)
    loaded = load_model(tmp_path / "run")
    assert loaded.cfg.num_classes == ds.num_train_pids


def _run(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, **kw)


def test_train_and_eval_cli_end_to_end(market, tmp_path):
    run = tmp_path / "cli-run"
    res = _run([str(BIN / "edgereid"), "train", "--data", str(market), "--model", "vit_micro", "--img", "64x32",
                "--epochs", "1", "--batch-size", "16", "--workers", "0", "--out", str(run)])
    assert res.returncode == 0, res.stderr[-2000:]
    assert (run / "model.safetensors").is_file() and (run / "config.json").is_file()
    assert str(run) in res.stdout
    res = _run([str(BIN / "edgereid"), "eval", "--ckpt", str(run), "--data", str(market)])
    assert res.returncode == 0, res.stderr[-2000:]
    metrics = json.loads((run / "eval.json").read_text())
    assert {"rank1", "rank5", "rank10", "mAP", "mINP"} <= set(metrics)
    assert 0.0 <= metrics["mAP"] <= 1.0


def test_train_cli_names_a_bad_data_root(tmp_path):
    res = _run([str(BIN / "edgereid"), "train", "--data", str(tmp_path / "missing"), "--model", "vit_micro",
                "--img", "64x32", "--out", str(tmp_path / "r")])
    assert res.returncode != 0
    assert "missing" in res.stderr and "Traceback" not in res.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_ddp_training_step(market, tmp_path):
    run = tmp_path / "ddp"
    res = _run([str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(_free_port()), str(BIN / "edgereid"),
                "train", "--data", str(market), "--model", "vit_micro", "--img", "64x32", "--epochs", "1",
                "--batch-size", "16", "--workers", "0", "--max-steps-per-epoch", "2", "--out", str(run)])
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
