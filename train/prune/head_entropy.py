"""Head pruning by attention entropy (seed 003).

A head whose data-averaged attention map is nearly uniform (high entropy) mixes tokens without
selecting any: it carries little and is removed first. Scores are the entropy of the mean map,
H_h = mean over queries of -sum_k A[q, k] log2 A[q, k], times a depth weight 1.0 + 0.02 * layer
(deeper layers give up heads slightly sooner). The highest weighted scores go, globally, except
that a layer never loses its last head. Removal is physical (``PrunableAttention.keep_heads``)
and the per-layer head count is written to the model config so the checkpoint rebuilds as is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

DEPTH_WEIGHT_START = 1.0
DEPTH_WEIGHT_STEP = 0.02


def head_entropy(mean_attn: torch.Tensor) -> torch.Tensor:
    """(heads, T_q, T_kv) averaged attention map -> (heads,) entropy in bits, mean over queries."""
    if mean_attn.dim() != 3:
        raise ValueError(f"expected a (heads, queries, keys) map, got shape {tuple(mean_attn.shape)}")
    a = mean_attn.to(torch.float64)
    plogp = torch.where(a > 0, a * torch.log2(a.clamp_min(1e-300)), torch.zeros_like(a))
    return (-plogp.sum(dim=-1)).mean(dim=-1)


def depth_weight(layer: int) -> float:
    return DEPTH_WEIGHT_START + DEPTH_WEIGHT_STEP * layer


def weighted_entropies(mean_attn: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [head_entropy(m) * depth_weight(layer) for layer, m in enumerate(mean_attn)]


def total_heads_to_prune(depth: int, num_heads: int, rate: float) -> int:
    """n_total = floor(layers * heads * rate); refuses rates that would empty a layer."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"head pruning rate must be in [0, 1), got {rate}")
    n = math.floor(depth * num_heads * rate + 1e-9)
    most = depth * (num_heads - 1)
    if n > most:
        raise ValueError(f"head pruning rate {rate} asks for {n} of {depth * num_heads} heads, but at most {most} "
                         f"can go (every layer keeps one head)")
    return n


def split_over_rounds(total: int, rounds: int) -> list[int]:
    """``total`` removals split as evenly as possible over ``rounds`` (earlier rounds take the rest)."""
    if rounds < 1:
        raise ValueError(f"iterations must be >= 1, got {rounds}")
    base, extra = divmod(total, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


def select_heads(scores: Sequence[torch.Tensor], n: int) -> dict[int, list[int]]:
    """The ``n`` highest-scoring heads over all layers, never a layer's last head.

    scores: per layer (heads_l,). Returns {layer: [head indices into the current heads]}.
    """
    candidates = sorted(((float(s), layer, h) for layer, row in enumerate(scores) for h, s in enumerate(row.tolist())),
                        key=lambda t: (-t[0], t[1], t[2]))
    left = [len(row) for row in scores]
    chosen: dict[int, list[int]] = {}
    taken = 0
    for _, layer, h in candidates:
        if taken == n:
            break
        if left[layer] <= 1:
            continue  # the guard: a layer keeps at least one head
        chosen.setdefault(layer, []).append(h)
        left[layer] -= 1
        taken += 1
    if taken < n:
        raise ValueError(f"cannot remove {n} heads: only {taken} can go without emptying a layer")
    return {layer: sorted(hs) for layer, hs in sorted(chosen.items())}


def remove_heads(model, plan: dict[int, list[int]]) -> list[int]:
    """Physically delete the planned heads; updates ``model.cfg``; returns heads per layer."""
    model = getattr(model, "module", model)
    for layer, heads in plan.items():
        attn = model.backbone.blocks[layer].attn
        keep = [h for h in range(attn.num_heads) if h not in set(heads)]
        attn.keep_heads(keep)
    model.sync_config()
    return [b.attn.num_heads for b in model.backbone.blocks]


def prune_heads_by_entropy(model, mean_attn: Sequence[torch.Tensor], n: int) -> dict:
    """One pruning step: score, select ``n`` heads, remove them. Returns a JSON-able record."""
    scores = weighted_entropies(mean_attn)
    plan = select_heads(scores, n)
    heads = remove_heads(model, plan)
    return {"removed": {str(k): v for k, v in plan.items()}, "heads_per_layer": heads,
            "entropy": [[round(float(x), 5) for x in s] for s in scores]}
