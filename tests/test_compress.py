"""Embedding compression: slice/low-rank equivalence, dimension pruning surgery, the STE, codes
ranked by integer distances, PTQ calibration, and real `edgereid compress` runs per method."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from edgereid.runtime import codec
from edgereid.train.config import BackboneConfig, EmbeddingConfig, ModelConfig
from edgereid.train.models import build_model
from edgereid.train.models.embedding_quant import fake_quantize
from market_tree import write_market_tree

BIN = Path(sys.executable).parent
IMG = (64, 32)


def micro(kind="full", dim=None, classes=8, **emb) -> ModelConfig:
    return ModelConfig(backbone=BackboneConfig.for_size("vit_micro", img_size=IMG),
                       embedding=EmbeddingConfig(kind=kind, dim=dim, **emb), num_classes=classes)


def randomise_neck(model) -> None:
    """Give the BNNeck non-trivial statistics and weights, so a wrong row shows up in the outputs."""
    g = torch.Generator().manual_seed(5)
    bn = model.neck.bn
    n = bn.weight.shape[0]
    with torch.no_grad():
        bn.weight.copy_(torch.rand(n, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(n, generator=g) * 0.1)
        bn.running_mean.copy_(torch.randn(n, generator=g))
        bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        model.neck.classifier.weight.copy_(torch.randn(model.neck.classifier.weight.shape, generator=g))


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    return write_market_tree(tmp_path_factory.mktemp("market"))


@pytest.fixture(scope="module")
def dataset(market):
    from edgereid.data import build_dataset

    return build_dataset("market1501", market)


def images(n=6, seed=0):
    return torch.randn(n, 3, *IMG, generator=torch.Generator().manual_seed(seed))


# -- slice vs low-rank -------------------------------------------------------------------------

def test_lowrank_with_slice_initialisation_gives_the_slice_embedding():
    from edgereid.train.compress.convert import lowrank_from, slice_from

    torch.manual_seed(0)
    dense = build_model(micro()).eval()
    sliced, low = slice_from(dense, 12).eval(), lowrank_from(dense, 12).eval()
    x = images()
    with torch.no_grad():
        assert torch.equal(sliced.raw_embedding(x), dense.raw_embedding(x)[:, :12])
        assert torch.allclose(low.raw_embedding(x), sliced.raw_embedding(x), atol=1e-6)
        assert torch.allclose(low(x), sliced(x), atol=1e-6)  # the deployable (normalised) embedding
    # also for models built from scratch: the low-rank head is initialised as the slice
    torch.manual_seed(1)
    low2 = build_model(micro("lowrank", 12)).eval()
    slice2 = build_model(micro("slice", 12)).eval()
    slice2.backbone.load_state_dict(low2.backbone.state_dict())
    low2.train(), slice2.train()
    torch.manual_seed(2)
    a = low2(x)["embedding"]
    torch.manual_seed(2)  # same drop-path draws
    b = slice2(x)["embedding"]
    assert torch.allclose(a, b, atol=1e-6)
    # and low-rank really has the learnable A, B (d x k, k x d) the slice lacks
    assert low2.embed_head.down.weight.shape == (12, 48) and low2.embed_head.up.weight.shape == (48, 12)


# -- dimension pruning ------------------------------------------------------------------------

def manual_raw_embeddings(model, records) -> np.ndarray:
    """Pre-BN embeddings computed image by image, independently of extract_features."""
    from edgereid.train.data.transforms import eval_transform
    from PIL import Image

    tf = eval_transform(IMG)
    out = []
    model.eval()
    with torch.no_grad():
        for path, _, _ in records:
            with Image.open(path) as im:
                out.append(model.raw_embedding(tf(im.convert("RGB"))[None])[0].numpy())
    return np.stack(out).astype(np.float64)


def test_pruning_keeps_the_top_norm_dims_with_their_bnneck_rows_and_classifier_columns(dataset):
    from edgereid.train.compress.dim_prune import prune_to

    torch.manual_seed(0)
    dense = build_model(micro(classes=dataset.num_train_pids)).eval()
    randomise_neck(dense)
    emb = manual_raw_embeddings(dense, dataset.train)
    norms = np.linalg.norm(emb, axis=0)
    expected = sorted(np.argsort(-norms)[:20].tolist())

    pruned, scores = prune_to(dense, 20, dataset.train, batch_size=7)
    pruned.eval()
    np.testing.assert_allclose(scores, norms, rtol=1e-4)
    assert pruned.cfg.embedding.kind == "select" and pruned.cfg.embedding.kept_dims == expected
    keep = torch.tensor(expected)
    for name in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(getattr(pruned.neck.bn, name), getattr(dense.neck.bn, name)[keep]), name
    assert torch.equal(pruned.neck.classifier.weight, dense.neck.classifier.weight[:, keep])
    assert pruned.neck.bn.num_features == 20

    x = images()
    with torch.no_grad():
        f = dense.raw_embedding(x)
        assert torch.equal(pruned.raw_embedding(x), f[:, keep])
        # the pruned logits are the dense logits restricted to the kept dims' contributions
        bn_dense = dense.neck.bn(f)
        restricted = bn_dense[:, keep] @ dense.neck.classifier.weight[:, keep].T
        assert torch.allclose(pruned.neck(pruned.raw_embedding(x)), restricted, atol=1e-5)
        # and differ from the full dense logits (the removed dims did contribute)
        assert not torch.allclose(restricted, dense.neck(f), atol=1e-3)

    # a second stage composes: kept dims are named in the original cls-token coordinates
    emb2 = manual_raw_embeddings(pruned, dataset.train)
    pos2 = sorted(np.argsort(-np.linalg.norm(emb2, axis=0))[:6].tolist())
    pruned2, _ = prune_to(pruned, 6, dataset.train)
    assert pruned2.cfg.embedding.kept_dims == [expected[i] for i in pos2]
    with torch.no_grad():
        assert torch.equal(pruned2.eval().raw_embedding(x), f[:, pruned2.cfg.embedding.kept_dims])
    assert torch.equal(pruned2.neck.bn.running_mean, dense.neck.bn.running_mean[pruned2.cfg.embedding.kept_dims])


def test_pruned_checkpoint_round_trips(tmp_path):
    from edgereid.train.checkpoint import load_model, save_checkpoint
    from edgereid.train.compress.dim_prune import keep_dims

    dense = build_model(micro()).eval()
    pruned = keep_dims(dense, [3, 5, 40]).eval()
    save_checkpoint(pruned, tmp_path / "p")
    loaded = load_model(tmp_path / "p")
    assert loaded.cfg.embedding.kept_dims == [3, 5, 40]
    x = images(2)
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned(x))
    with pytest.raises(ValueError, match="distinct"):
        keep_dims(dense, [1, 1])


def test_prune_walk_and_paper_sizes():
    from edgereid.train.compress.sizes import bytes_per_embedding, paper_sizes, prune_walk

    assert paper_sizes(768) == [576, 480, 384, 192, 64, 32]
    assert paper_sizes(192) == [144, 120, 96, 48, 16, 8]
    assert prune_walk(192, 32) == [144, 120, 96, 48, 32]
    assert prune_walk(192, 8) == [144, 120, 96, 48, 16, 8]
    assert [bytes_per_embedding(33, b) for b in (32, 8, 4, 1)] == [132, 33, 17, 5]


# -- quantisation -----------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [8, 4])
def test_ste_passes_gradients_inside_the_clamp_range_and_blocks_them_outside(bits):
    q = 2 ** (bits - 1) - 1
    scale = torch.tensor(0.01)
    e = torch.tensor([0.0, 0.003, -0.0149, q * 0.01 - 1e-4, q * 0.01 + 0.002, -(q * 0.01) - 0.05],
                     requires_grad=True)
    out = fake_quantize(e, scale, bits)
    out.backward(torch.arange(1.0, 7.0))
    assert torch.equal(e.grad, torch.tensor([1.0, 2.0, 3.0, 4.0, 0.0, 0.0]))
    # the forward really is quantised: s * clamp(round(e/s))
    assert torch.allclose(out.detach(), torch.tensor([0.0, 0.0, -0.01, q * 0.01, q * 0.01, -q * 0.01]))


def test_one_bit_ste_passes_gradients_only_inside_the_unit_range():
    e = torch.tensor([0.005, -0.009, 0.02, -0.5], requires_grad=True)
    out = fake_quantize(e, torch.tensor(0.01), 1)
    out.sum().backward()
    assert torch.equal(e.grad, torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert torch.equal(out.detach(), torch.tensor([0.01, -0.01, 0.01, -0.01]))


@pytest.mark.parametrize("bits", [8, 4])
def test_integer_distances_rank_exactly_like_float_distances_on_the_models_codes(dataset, bits):
    from edgereid.train.compress.evaluate_codes import code_distances, evaluate_embeddings
    from edgereid.train.compress.ptq import normalised_embeddings, ptq_model
    from edgereid.train.evaluate import evaluate_features, extract_features

    torch.manual_seed(3)
    model = ptq_model(build_model(micro("slice", 24, classes=dataset.num_train_pids)), dataset.train, bits)
    scale = float(model.quant.scale)
    # the model's own integer codes (what an int8-output graph emits) ...
    model.export_codes = True
    q_levels = extract_features(model, dataset.query, IMG)
    g_levels = extract_features(model, dataset.gallery, IMG)
    model.export_codes = False
    # ... equal the codec's codes of the float embeddings
    spec = codec.CodecSpec(dim=24, bits=bits, scale=scale)
    qf = normalised_embeddings(model, dataset.query)
    gf = normalised_embeddings(model, dataset.gallery)
    qc, gc = codec.quantize(qf, spec), codec.quantize(gf, spec)
    np.testing.assert_array_equal(codec.unpack(qc, spec), q_levels.astype(np.int8))
    np.testing.assert_array_equal(codec.unpack(gc, spec), g_levels.astype(np.int8))
    assert np.abs(q_levels).max() > 1  # real multi-level codes, not all zeros
    # integer distances order the gallery exactly as float distances between the dequantised vectors
    d_int = code_distances(qc, gc, spec)
    deq_q, deq_g = extract_features(model, dataset.query, IMG), extract_features(model, dataset.gallery, IMG)
    d_float = ((deq_q.astype(np.float64)[:, None, :] - deq_g[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_allclose(d_float, d_int * scale**2, rtol=1e-5, atol=1e-9)
    for i in range(len(qc)):
        order = np.argsort(d_float[i], kind="stable")
        assert (np.diff(d_int[i][order]) >= 0).all()
    ours = evaluate_embeddings(qf, gf, dataset.query, dataset.gallery, bits, scale)
    ref = evaluate_features(deq_q, deq_g, dataset.query, dataset.gallery)
    for k in ("rank1", "mAP", "mINP"):
        assert ours[k] == pytest.approx(ref[k], abs=1e-9)
    assert ours["bytes_per_embedding"] == (24 if bits == 8 else 12)


def test_rerank_shortlist_orders_the_short_list_by_fine_distance_then_the_rest_by_coarse():
    from edgereid.train.compress.evaluate_codes import rerank_shortlist

    coarse = np.array([[5, 1, 3, 1, 9, 0]])
    fine = np.array([[50, 40, 10, 30, 0, 20]])
    out = rerank_shortlist(coarse, lambda i, idx: fine[i, idx], shortlist=3)
    # short list by coarse (ties by index): 5, 1, 3 -> ordered by fine: 5 (20), 3 (30), 1 (40); then 2 (3), 0 (5), 4 (9)
    assert np.argsort(out[0], kind="stable").tolist() == [5, 3, 1, 2, 0, 4]


def test_ptq_checkpoint_writes_the_train_split_scale_into_the_config(dataset, tmp_path):
    from edgereid.train.checkpoint import load_model, read_config, save_checkpoint
    from edgereid.train.compress.ptq import normalised_embeddings, ptq_checkpoint

    torch.manual_seed(4)
    save_checkpoint(build_model(micro("slice", 16, classes=dataset.num_train_pids)), tmp_path / "float")
    out = ptq_checkpoint(tmp_path / "float", dataset, 8, tmp_path / "int8")
    cfg = read_config(out)
    expected = codec.calibrate_scale(normalised_embeddings(load_model(tmp_path / "float"), dataset.train), 8)
    assert cfg["model"]["embedding"]["bits"] == 8 and cfg["model"]["embedding"]["qat"] is False
    assert cfg["model"]["embedding"]["scale"] == pytest.approx(expected, rel=1e-6)
    assert cfg["ptq"]["calibration"] == "train split"
    loaded = load_model(out)
    assert loaded.quant.has_scale and float(loaded.quant.scale) == pytest.approx(expected, rel=1e-6)


# -- real `edgereid compress` runs ------------------------------------------------------------

@pytest.fixture(scope="module")
def dense_ckpt(dataset, tmp_path_factory):
    from edgereid.train.engine import TrainConfig, fit

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("dense") / "run"
    model = build_model(micro(classes=dataset.num_train_pids))
    fit(model, dataset, TrainConfig(epochs=2, batch_size=16, workers=0, max_steps_per_epoch=2, eval_every=0), out)
    return out


def run_compress(market, out, *extra):
    cmd = [str(BIN / "edgereid"), "compress", "--data", str(market), "--model", "vit_micro", "--img", "64x32",
           "--epochs", "1", "--batch-size", "16", "--workers", "0", "--max-steps-per-epoch", "2", "--out", str(out),
           *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert str(out) in res.stdout
    return json.loads((Path(out) / "compress.json").read_text())


def test_cli_slice_from_scratch_with_int8_qat(market, tmp_path):
    from edgereid.train.checkpoint import load_model

    rec = run_compress(market, tmp_path / "slice", "--method", "slice", "--dim", "12", "--bits", "8", "--qat")
    assert (rec["method"], rec["dim"], rec["bits"], rec["quant"]) == ("slice", 12, 8, "qat")
    assert rec["bytes_per_embedding"] == 12 and rec["compression_ratio"] == pytest.approx(48 * 4 / 12)
    assert 0 <= rec["mAP"] <= 1 and rec["train_seconds"] > 0
    model = load_model(tmp_path / "slice")
    assert model.cfg.embedding.kind == "slice" and model.cfg.embedding.qat and model.quant.has_scale
    log = (tmp_path / "slice" / "train" / "log.jsonl").read_text().splitlines()
    assert len(log) == 1 and json.loads(log[0])["step"] == 2  # really trained: 1 epoch of 2 steps


def test_cli_lowrank_from_a_dense_checkpoint_with_int8_ptq(market, dense_ckpt, tmp_path):
    from edgereid.train.checkpoint import load_model

    rec = run_compress(market, tmp_path / "low", "--method", "lowrank", "--dim", "8", "--bits", "8",
                       "--init-from", str(dense_ckpt))
    assert (rec["method"], rec["dim"], rec["quant"]) == ("lowrank", 8, "ptq")
    assert rec["total_train_seconds"] > rec["train_seconds"] > 0  # the dense model's cost is included
    model, dense = load_model(tmp_path / "low"), load_model(dense_ckpt)
    assert model.cfg.embedding.kind == "lowrank" and model.cfg.embedding.scale > 0
    # fine-tuned from the dense trunk (changed by training, but not re-initialised)
    a, b = model.backbone.patch_embed.proj.weight, dense.backbone.patch_embed.proj.weight
    assert not torch.equal(a, b) and torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.9


def test_cli_prune_walks_the_sizes_from_a_dense_checkpoint(market, dense_ckpt, tmp_path):
    from edgereid.train.checkpoint import load_model, read_config

    rec = run_compress(market, tmp_path / "prune", "--method", "prune", "--dim", "12", "--bits", "4",
                       "--init-from", str(dense_ckpt))
    # d = 48: 36 -> 30 -> 24 -> 12 (3/4, 5/8, 1/2, 1/4 of d), each stage saved
    assert [s["dim"] for s in rec["stages"]] == [36, 30, 24, 12]
    totals = [s["total_train_seconds"] for s in rec["stages"]]
    assert totals == sorted(totals) and rec["bytes_per_embedding"] == 6
    prev = None
    for k in (36, 30, 24, 12):
        cfg = read_config(tmp_path / "prune" / "stages" / f"dim_{k}")
        kept = cfg["model"]["embedding"]["kept_dims"]
        assert len(kept) == k and (prev is None or set(kept) <= set(prev))
        assert cfg["compress"]["stage_epochs"] == 1  # 20 % of the dense run's 2 epochs, at least 1
        prev = kept
    model = load_model(tmp_path / "prune")
    assert model.cfg.embedding.kept_dims == prev and model.cfg.embedding.bits == 4


def test_cli_rejects_prune_without_a_dense_checkpoint(market, tmp_path):
    res = subprocess.run([str(BIN / "edgereid"), "compress", "--data", str(market), "--method", "prune", "--dim", "4",
                          "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--init-from" in res.stderr and "Traceback" not in res.stderr


def test_cli_full_is_the_equal_budget_control(market, dense_ckpt, tmp_path):
    """--method full: the dense model fine-tuned by the same command, nothing compressed (no --dim)."""
    from edgereid.train.checkpoint import load_model

    rec = run_compress(market, tmp_path / "control", "--method", "full", "--init-from", str(dense_ckpt))
    assert (rec["method"], rec["dim"], rec["bits"], rec["quant"]) == ("full", 48, 32, "float")
    assert rec["bytes_per_embedding"] == 48 * 4 and rec["compression_ratio"] == pytest.approx(1.0)
    model, dense = load_model(tmp_path / "control"), load_model(dense_ckpt)
    assert model.cfg.embedding.kind == "full" and model.cfg.embed_dim == 48
    assert not torch.equal(model.backbone.blocks[0].mlp.fc1.weight, dense.backbone.blocks[0].mlp.fc1.weight)
    log = (tmp_path / "control" / "train" / "log.jsonl").read_text().splitlines()
    assert len(log) == 1 and json.loads(log[0])["step"] == 2  # the same epochs x steps as any compress run
    res = subprocess.run([str(BIN / "edgereid"), "compress", "--data", str(market), "--method", "slice",
                          "--init-from", str(dense_ckpt), "--out", str(tmp_path / "x")], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and "needs --dim" in res.stderr and "Traceback" not in res.stderr
