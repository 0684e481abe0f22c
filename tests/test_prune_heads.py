"""Head pruning by attention entropy: scores by hand, the guard, physical removal, the gathering pass."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from edgereid.train.checkpoint import load_model, save_checkpoint
from edgereid.train.config import BackboneConfig, ModelConfig
from edgereid.train.models import build_model
from edgereid.train.prune.head_entropy import (
    depth_weight,
    head_entropy,
    remove_heads,
    select_heads,
    split_over_rounds,
    total_heads_to_prune,
    weighted_entropies,
)
from edgereid.train.prune.statistics import StatisticsAccumulator, gather_statistics
from hypothesis import given, settings
from hypothesis import strategies as st
from market_tree import write_market_tree


def micro(depth: int = 2, heads: int = 3, classes: int = 8) -> ModelConfig:
    return ModelConfig(backbone=BackboneConfig.for_size("vit_micro", img_size=(64, 32), depth=depth,
                                                        num_heads=heads), num_classes=classes)


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    return write_market_tree(tmp_path_factory.mktemp("market"))


def test_entropy_of_hand_made_maps():
    uniform = torch.full((2, 4), 0.25)  # 2 queries, 4 keys: 2 bits each
    one_hot = torch.tensor([[1.0, 0, 0, 0], [0, 0, 1.0, 0]])  # 0 bits
    half = torch.tensor([[0.5, 0.5, 0, 0], [0.25, 0.25, 0.25, 0.25]])  # 1 bit and 2 bits -> mean 1.5
    h = head_entropy(torch.stack([uniform, one_hot, half]))
    torch.testing.assert_close(h, torch.tensor([2.0, 0.0, 1.5], dtype=torch.float64))


def test_depth_weight_grows_by_two_percent_per_layer_and_changes_the_choice():
    assert depth_weight(0) == 1.0 and depth_weight(5) == pytest.approx(1.10)
    # layer 0 head 0 has 1.00 bit, layer 10 head 0 has 0.95 bit: weighted 1.00 vs 1.14 -> layer 10 goes first
    one_bit = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    p = 0.0
    for p in torch.linspace(0.5, 1.0, 2001):  # find a 2-key distribution with ~0.95 bits
        if -(p * math.log2(p) + (1 - p) * math.log2(1 - p)) < 0.95:
            break
    lower = torch.tensor([[float(p), 1 - float(p), 0.0, 0.0]])
    sharp = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    maps = [torch.stack([one_bit, sharp])] + [torch.stack([sharp, sharp])] * 9 + [torch.stack([lower, sharp])]
    scores = weighted_entropies(maps)
    assert float(head_entropy(maps[10])[0]) < float(head_entropy(maps[0])[0])
    assert select_heads(scores, 1) == {10: [0]}


def test_total_and_rounds_follow_the_seed_recipe():
    assert total_heads_to_prune(12, 3, 0.67) == 24  # LA-Tiny head 67 %: 24 heads, 24 rounds of 1
    assert split_over_rounds(24, 24) == [1] * 24
    assert split_over_rounds(10, 4) == [3, 3, 2, 2]
    with pytest.raises(ValueError, match="every layer keeps one head"):
        total_heads_to_prune(2, 3, 0.9)


def test_guard_never_empties_a_layer():
    # layer 1's heads are all the most uniform: only two of its three may go
    scores = [torch.tensor([0.1, 0.2, 0.3]), torch.tensor([9.0, 8.0, 7.0])]
    assert select_heads(scores, 2) == {1: [0, 1]}
    assert select_heads(scores, 3) == {0: [2], 1: [0, 1]}
    assert select_heads(scores, 4) == {0: [1, 2], 1: [0, 1]}
    with pytest.raises(ValueError, match="without emptying a layer"):
        select_heads(scores, 5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=6), min_size=1, max_size=6),
       st.data())
def test_guard_holds_for_any_scores(rows, data):
    scores = [torch.tensor(r) for r in rows]
    most = sum(len(r) - 1 for r in rows)
    n = data.draw(st.integers(0, most))
    plan = select_heads(scores, n)
    assert sum(len(v) for v in plan.values()) == n
    for layer, heads in plan.items():
        assert len(heads) < len(rows[layer])


def test_head_pruned_model_equals_the_dense_model_with_those_heads_zeroed():
    torch.manual_seed(0)
    dense = build_model(micro()).eval()
    pruned = copy.deepcopy(dense)
    plan = {0: [1], 1: [0, 2]}
    assert remove_heads(pruned, plan) == [2, 1]
    assert pruned.cfg.backbone.heads_per_layer == [2, 1]
    assert pruned.backbone.blocks[1].attn.qkv.weight.shape == (3 * 16, 48)
    assert pruned.backbone.blocks[1].attn.proj.weight.shape == (48, 16)
    for layer, heads in plan.items():
        gate = torch.ones(3)
        gate[heads] = 0.0
        dense.backbone.blocks[layer].attn.head_gate = gate
    x = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(pruned.forward_features(x), dense.forward_features(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(pruned(x), dense(x), atol=1e-5, rtol=0)
        # and the gate really matters: without it the outputs differ
        for b in dense.backbone.blocks:
            b.attn.head_gate = None
        assert (pruned(x) - dense(x)).abs().max() > 1e-3


def test_rebuilding_from_the_checkpoint_config_reproduces_outputs_exactly(tmp_path):
    torch.manual_seed(1)
    model = build_model(micro()).eval()
    remove_heads(model, {0: [0, 2], 1: [1]})
    save_checkpoint(model, tmp_path / "ck")
    loaded = load_model(tmp_path / "ck")
    assert loaded.cfg.backbone.heads_per_layer == [1, 2]
    assert [b.attn.num_heads for b in loaded.backbone.blocks] == [1, 2]
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_accumulated_taylor_is_the_absolute_value_of_the_signed_sum():
    acc = StatisticsAccumulator(num_positions=3)
    a = torch.tensor([[[[0.5, 0.25, 0.25]]]])  # (B=1, h=1, q=1, k=3)
    g = torch.tensor([[[[2.0, -4.0, 0.0]]]])
    acc.add([a], [g], [None])
    acc.add([a], [-g * 0.5], [None])  # half of it cancels
    stats = acc.result()
    torch.testing.assert_close(stats.taylor[0], torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
    torch.testing.assert_close(stats.mean_attn[0], a[0].double())
    assert stats.images == 2 and stats.batches == 2
    # kv-pruned layers report by original position; removed positions are nan
    acc = StatisticsAccumulator(num_positions=4)
    acc.add([torch.tensor([[[[0.5, 0.5]]]])], [torch.tensor([[[[1.0, 3.0]]]])], [torch.tensor([0, 2])])
    t = acc.result().taylor[0]
    assert t[0] == 0.5 and t[2] == 1.5 and math.isnan(t[1]) and math.isnan(t[3])


def test_gathering_pass_reads_gradients_and_changes_no_weight(market):
    from edgereid.data import build_dataset

    ds = build_dataset("market1501", market)
    torch.manual_seed(0)
    model = build_model(micro(classes=ds.num_train_pids))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = gather_statistics(model, ds.train, batch_size=16, max_batches=2, show_progress=False)
    assert model.training  # mode restored
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed during the gathering pass"
    assert all(p.grad is None for p in model.parameters())
    assert all(not a.capture and a.last_attn is None for a in model.backbone.attention_layers())
    assert stats.images == 32 and stats.depth == 2
    for m in stats.mean_attn:
        assert m.shape == (3, 9, 9)
        torch.testing.assert_close(m.sum(-1), torch.ones(3, 9, dtype=torch.float64))
    for t in stats.taylor:
        assert t.shape == (9,) and bool((t > 0).all())


def test_prune_and_finetune_heads_for_real(market, tmp_path):
    from edgereid.data import build_dataset
    from edgereid.train.engine import DistillConfig, TrainConfig
    from edgereid.train.prune.schedule import PruneConfig, run_pruning

    ds = build_dataset("market1501", market)
    torch.manual_seed(0)
    model = build_model(micro(classes=ds.num_train_pids))
    teacher = copy.deepcopy(model)
    pcfg = PruneConfig(mode="heads", rate=0.5, iterations=3, finetune_epochs=1, final_epochs=1)
    tcfg = TrainConfig(batch_size=16, workers=0, max_steps_per_epoch=2, eval_every=1,
                       distill=DistillConfig(alpha=0.2, tau=1.0))
    before = model.backbone.blocks[0].mlp.fc1.weight.clone()
    summary = run_pruning(model, ds, pcfg, tcfg, tmp_path / "run", teacher=teacher, log=lambda s: None)
    # floor(2 * 3 * 0.5) = 3 heads over 3 rounds
    assert sum(summary["pruned"]["heads_per_layer"]) == 3 and min(summary["pruned"]["heads_per_layer"]) >= 1
    assert summary["rounds"] == 3
    lines = (tmp_path / "run" / "prune_log.jsonl").read_text().splitlines()
    assert len(lines) == 5  # dense + 3 rounds + final
    import json

    rounds = [json.loads(x) for x in lines[1:4]]
    assert [sum(r["heads_per_layer"]) for r in rounds] == [5, 4, 3]
    assert all(r["finetune"][0]["kd"] >= 0 for r in rounds)  # distilled
    loaded = load_model(tmp_path / "run")
    assert sum(loaded.cfg.backbone.heads_per_layer) == 3
    assert not torch.equal(loaded.backbone.blocks[0].mlp.fc1.weight, before)  # it was fine-tuned
