"""Token pruning: kv Taylor selection by hand, kv = masked attention, drop keeps k tokens and is
order-invariant, rebuild from config, real prune + fine-tune runs, static opset-17 ONNX export."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from edgereid.train.checkpoint import load_model, save_checkpoint
from edgereid.train.config import BackboneConfig, ModelConfig
from edgereid.train.models import build_model
from edgereid.train.models.attention import PrunableAttention
from edgereid.train.models.token_drop import drop_tokens
from edgereid.train.prune.token_drop_plan import apply_drop_plan, configure_drop, default_drop_layers
from edgereid.train.prune.token_kv import (
    apply_kv_plan,
    layer_scores,
    select_positions,
    set_kv_keep,
    total_positions_to_prune,
)
from market_tree import write_market_tree


def micro(classes: int = 8, **bb) -> ModelConfig:
    return ModelConfig(backbone=BackboneConfig.for_size("vit_micro", img_size=(64, 32), **bb), num_classes=classes)


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    return write_market_tree(tmp_path_factory.mktemp("market"))


def test_taylor_scores_are_unit_normalised_per_layer_and_decay_with_depth():
    t0 = torch.tensor([100.0, 3.0, 4.0], dtype=torch.float64)  # cls score is ignored
    t1 = torch.tensor([0.0, 6.0, 8.0], dtype=torch.float64)
    s = layer_scores([t0, t1])
    torch.testing.assert_close(s[0], torch.tensor([0.6, 0.8], dtype=torch.float64))
    torch.testing.assert_close(s[1], torch.tensor([0.6, 0.8], dtype=torch.float64) * 0.97)
    # globally lowest: layer 1 pos 1 (0.582), then layer 0 pos 1 (0.6)
    assert select_positions([t0, t1], 1) == [[], [1]]
    assert select_positions([t0, t1], 2) == [[1], [1]]
    assert select_positions([t0, t1], 3) == [[1], [1, 2]]
    with pytest.raises(ValueError, match="only 4 patch keys"):
        select_positions([t0, t1], 5)


def test_the_cls_key_is_never_pruned_even_with_the_lowest_score():
    t = torch.tensor([0.0, 5.0, 1.0, 2.0], dtype=torch.float64)
    removed = select_positions([t], 3)
    assert removed == [[1, 2, 3]]  # every patch key, never position 0
    already = torch.tensor([0.0, float("nan"), 1.0, 2.0], dtype=torch.float64)
    assert select_positions([already], 1) == [[2]]  # pruned positions are not candidates again
    assert total_positions_to_prune(128, 12, 0.4) == math.floor(128 * 12 * 0.4)


def test_kv_pruned_attention_equals_attention_with_the_removed_keys_masked():
    torch.manual_seed(0)
    attn = PrunableAttention(dim=12, num_heads=3, head_dim=4).eval()
    x = torch.randn(2, 6, 12)
    keep = [0, 2, 3, 5]
    with torch.no_grad():
        q, k, v = attn.qkv(x).reshape(2, 6, 3, 3, 4).permute(2, 0, 3, 1, 4)
        logits = (q * 0.5) @ k.transpose(-2, -1)
        mask = torch.full((6,), float("-inf"))
        mask[keep] = 0.0
        ref = ((logits + mask).softmax(-1) @ v).transpose(1, 2).reshape(2, 6, 12)
        ref = attn.proj(ref)
        set_kv_keep(attn, keep)
        out, _ = attn(x)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
        out2, amap = attn(x, need_attn=True)
        assert amap.shape == (2, 3, 6, 4)  # queries unchanged, keys pruned
        torch.testing.assert_close(out2, ref, atol=1e-5, rtol=0)


def test_kv_plan_updates_config_and_rebuilds_exactly(tmp_path):
    torch.manual_seed(0)
    model = build_model(micro()).eval()
    apply_kv_plan(model, [[1, 4], [2, 3, 8]])
    assert model.cfg.backbone.kv_keep == [[0, 2, 3, 5, 6, 7, 8], [0, 1, 4, 5, 6, 7]]
    assert model.backbone.tokens_per_layer == [9, 9]  # queries and MLP keep every token
    apply_kv_plan(model, [[2], []])  # a second round removes more from what is left
    assert model.cfg.backbone.kv_keep[0] == [0, 3, 5, 6, 7, 8]
    with pytest.raises(ValueError, match="cls key"):
        apply_kv_plan(model, [[0], []])
    save_checkpoint(model, tmp_path / "ck")
    loaded = load_model(tmp_path / "ck")
    assert loaded.backbone.blocks[0].attn.kv_index.tolist() == [0, 3, 5, 6, 7, 8]
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def _drop_inputs(n: int = 7, d: int = 5, heads: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 1 + n, d, generator=g)
    attn = torch.rand(2, heads, 1 + n, 1 + n, generator=g).softmax(-1)
    return x, attn


def test_drop_keeps_exactly_k_tokens_by_cls_attention_and_fuses_the_rest():
    x, attn = _drop_inputs()
    k = 4
    out = drop_tokens(x, attn, k)
    assert out.shape == (2, 1 + k + 1, 5)
    torch.testing.assert_close(out[:, 0], x[:, 0])
    score = attn[:, :, 0, 1:].mean(1)
    for b in range(2):
        top = score[b].topk(k).indices
        torch.testing.assert_close(out[b, 1:1 + k], x[b, 1:][top])
        rest = [i for i in range(7) if i not in top.tolist()]
        w = score[b, rest]
        torch.testing.assert_close(out[b, -1], (w[:, None] * x[b, 1:][rest]).sum(0) / w.sum(), atol=1e-5, rtol=1e-5)


def test_drop_output_does_not_depend_on_the_order_of_the_dropped_tokens():
    x, attn = _drop_inputs(n=9, seed=3)
    k = 3
    out = drop_tokens(x, attn, k)
    score = attn[:, :, 0, 1:].mean(1)
    for b in range(2):  # permute only the dropped tokens (and their attention columns), per sample
        top = set(score[b].topk(k).indices.tolist())
        dropped = [i for i in range(9) if i not in top]
        perm = list(range(9))
        shuffled = [dropped[j] for j in torch.randperm(len(dropped), generator=torch.Generator().manual_seed(b))]
        for src, dst in zip(dropped, shuffled):
            perm[src] = dst
        assert perm != list(range(9))
        idx = torch.tensor([0] + [p + 1 for p in perm])
        x2, attn2 = x[b:b + 1, idx], attn[b:b + 1][:, :, :, idx]
        torch.testing.assert_close(drop_tokens(x2, attn2, k), out[b:b + 1], atol=1e-6, rtol=1e-6)


def test_drop_plan_shortens_later_layers_and_rebuilds_exactly(tmp_path):
    assert default_drop_layers(12) == [3, 6, 9] and default_drop_layers(2) == [0, 1]
    torch.manual_seed(0)
    dense = build_model(micro(depth=3)).eval()
    model = apply_drop_plan(dense, [1], 0.5)
    assert model.cfg.backbone.drop_layers == [1]
    assert model.backbone.tokens_per_layer == [9, 9, 6]  # 8 patches -> 4 kept + cls + fused
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone.blocks[0](dense.backbone.embed(x)),
                                   dense.backbone.blocks[0](dense.backbone.embed(x)))
        save_checkpoint(model, tmp_path / "ck")
        loaded = load_model(tmp_path / "ck")
        assert loaded.backbone.tokens_per_layer == [9, 9, 6]
        assert torch.equal(loaded(x), model(x))
    la = micro()
    la.head = "la"
    with pytest.raises(ValueError, match="LA head"):
        configure_drop(la, None, 0.7)
    kv = micro(depth=3)
    kv.backbone.kv_keep = [None, [0, 1, 2], None]
    with pytest.raises(ValueError, match="after the last kv-pruned block 1"):
        configure_drop(kv, [1], 0.7)


@pytest.mark.parametrize("mode", ["tokens-kv", "tokens-drop"])
def test_prune_and_finetune_tokens_for_real(market, tmp_path, mode):
    from edgereid.data import build_dataset
    from edgereid.train.engine import DistillConfig, TrainConfig
    from edgereid.train.prune.schedule import PruneConfig, run_pruning

    ds = build_dataset("market1501", market)
    torch.manual_seed(0)
    model = build_model(micro(classes=ds.num_train_pids))
    teacher = copy.deepcopy(model)
    pcfg = PruneConfig(mode=mode, rate=0.4, iterations=2, finetune_epochs=1, final_epochs=1, stats_batches=2)
    tcfg = TrainConfig(batch_size=16, workers=0, max_steps_per_epoch=2, eval_every=1,
                       distill=DistillConfig(alpha=0.2, tau=1.0, embed_weight=1.0))
    summary = run_pruning(model, ds, pcfg, tcfg, tmp_path / "run", teacher=teacher, log=lambda s: None)
    rounds = [json.loads(x) for x in (tmp_path / "run" / "prune_log.jsonl").read_text().splitlines()][1:3]
    loaded = load_model(tmp_path / "run")
    if mode == "tokens-kv":
        # floor(8 patches * 2 layers * 0.4) = 6 positions, 3 per round
        assert [sum(r["keys_per_layer"]) for r in rounds] == [15, 12]
        assert sum(len(k) for k in loaded.cfg.backbone.kv_keep) == 12
        assert all(0 in k for k in loaded.cfg.backbone.kv_keep)
    else:
        # keep 0.8 then 0.6 of the 8 patch tokens at blocks 0 and 1
        assert [r["tokens_out_per_layer"] for r in rounds] == [[9, 9], [7, 6]]
        assert loaded.cfg.backbone.drop_layers == [0, 1] and loaded.cfg.backbone.drop_keep == pytest.approx(0.6)
        assert loaded.backbone.tokens_per_layer == [9, 7]
    assert all("kd_embed" in r["finetune"][0] for r in rounds)
    assert summary["pruned"]["metrics"]["mAP"] >= 0


def test_pruned_model_exports_to_static_opset17_onnx(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from edgereid.export.onnx_export import DeployableReID  # the eval forward with an export-safe L2 norm
    from edgereid.train.prune.head_entropy import remove_heads

    torch.manual_seed(0)
    model = build_model(micro()).eval()
    remove_heads(model, {1: [0, 2]})
    apply_kv_plan(model, [[2, 5, 7], []])
    model = apply_drop_plan(model, [1], 0.5).eval()
    path = tmp_path / "pruned.onnx"
    x = torch.randn(1, 3, 64, 32)
    torch.onnx.export(DeployableReID(model).eval(), (x,), str(path), dynamo=True, opset_version=17)
    m = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [17]
    for v in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input):
        dims = v.type.tensor_type.shape.dim
        assert all(d.HasField("dim_value") for d in dims), f"{v.name} has a dynamic dim"
    ops = {n.op_type for n in m.graph.node}
    assert "TopK" in ops and "Shape" not in ops
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x), atol=1e-4, rtol=1e-4)
