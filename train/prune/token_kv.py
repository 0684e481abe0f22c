"""Token pruning, AMG ``kv`` form: fixed key/value positions removed per layer.

Seed 003 prunes tokens as keys and values only: every query still attends, the MLP still runs on
every token, the sequence length does not change. The kept positions are image-independent, so
they export as a constant Gather (``PrunableAttention.kv_index``). Importance of position p in
layer l is the first-order Taylor score |sum_data mean_{batch, heads, queries} A * dL/dA| (from
``statistics.py``); each layer's vector is scaled to unit L2 norm, layer l is multiplied by
(1 - 0.03 l) so deeper layers lose positions sooner, and the globally lowest positions go. The
cls key (position 0) is never a candidate, so no layer is ever left without a key.

What it buys: the two attention matmuls shrink with the number of keys; qkv, proj and the MLP
(most of the MACs at these sequence lengths) do not. MACs fall a little; latency barely moves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

LAYER_DECAY = 0.03


def total_positions_to_prune(num_patches: int, depth: int, rate: float) -> int:
    """floor(N * L * rate) key/value positions over the whole network."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"token pruning rate must be in [0, 1), got {rate}")
    return math.floor(num_patches * depth * rate + 1e-9)


def layer_scores(taylor: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Unit-L2 per layer over the patch positions still present, times (1 - 0.03 l).

    taylor: per layer (1 + N,), nan where the position is already pruned. Returns per layer (N,)
    scores for positions 1..N (nan = already pruned).
    """
    out = []
    for layer, t in enumerate(taylor):
        s = t[1:].to(torch.float64).clone()
        present = ~torch.isnan(s)
        norm = s[present].norm() if present.any() else torch.tensor(0.0, dtype=torch.float64)
        s[present] = s[present] / norm.clamp_min(1e-30)
        out.append(s * (1.0 - LAYER_DECAY * layer))
    return out


def select_positions(taylor: Sequence[torch.Tensor], n: int) -> list[list[int]]:
    """The ``n`` globally lowest-scoring (layer, patch position) pairs. Returns per layer the
    *removed* original positions (1-based token positions; the cls key 0 is never removed)."""
    scores = layer_scores(taylor)
    flat = [(float(s), layer, p + 1) for layer, row in enumerate(scores) for p, s in enumerate(row.tolist())
            if not math.isnan(s)]
    if n > len(flat):
        raise ValueError(f"cannot remove {n} key/value positions: only {len(flat)} patch keys are left")
    flat.sort(key=lambda t: (t[0], t[1], t[2]))
    removed: list[list[int]] = [[] for _ in scores]
    for _, layer, pos in flat[:n]:
        removed[layer].append(pos)
    return [sorted(r) for r in removed]


def set_kv_keep(attn, positions: list[int] | None) -> None:
    """Install ``positions`` (sorted, including 0) as the layer's key/value gather, or remove it."""
    if "kv_index" in attn._buffers:
        del attn._buffers["kv_index"]
    elif hasattr(attn, "kv_index"):
        delattr(attn, "kv_index")
    if positions is None:
        attn.kv_index = None
        return
    if 0 not in positions:
        raise ValueError("kv_keep must keep position 0 (the cls token)")
    device = attn.qkv.weight.device
    attn.register_buffer("kv_index", torch.tensor(sorted(positions), dtype=torch.long, device=device),
                         persistent=False)


def apply_kv_plan(model, removed: Sequence[Sequence[int]]) -> list[list[int] | None]:
    """Remove the given positions from each layer's keys/values; updates ``cfg.backbone.kv_keep``."""
    model = getattr(model, "module", model)
    bb = model.cfg.backbone
    if bb.drop_layers:
        raise ValueError("kv token pruning needs fixed token positions; it cannot follow drop layers "
                         f"{bb.drop_layers} (prune kv first or use one token form)")
    total = 1 + bb.num_patches
    current = bb.kv_keep or [None] * bb.depth
    new: list[list[int] | None] = []
    for layer, attn in enumerate(model.backbone.attention_layers()):
        kept = list(range(total)) if current[layer] is None else list(current[layer])
        gone = set(removed[layer]) if layer < len(removed) else set()
        if 0 in gone:
            raise ValueError(f"layer {layer}: the cls key (position 0) cannot be pruned")
        kept = [p for p in kept if p not in gone]
        keep = None if len(kept) == total else kept
        set_kv_keep(attn, keep)
        new.append(keep)
    bb.kv_keep = None if all(k is None for k in new) else new
    return new


def prune_kv_by_taylor(model, taylor: Sequence[torch.Tensor], n: int) -> dict:
    """One pruning step: select ``n`` positions and remove them. Returns a JSON-able record."""
    removed = select_positions(taylor, n)
    keep = apply_kv_plan(model, removed)
    bb = model.cfg.backbone
    return {"removed": removed,
            "keys_per_layer": [1 + bb.num_patches if k is None else len(k) for k in keep]}
