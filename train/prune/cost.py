"""What a (pruned) model costs: parameters, MACs as the graph really runs, measured latency.

MACs are counted by running one image through the deployed (eval) model with hooks, so they
follow the layers exactly as executed: the patch convolution, every Linear on the tokens it
really receives (qkv and proj per remaining head, the MLP on the shortened sequence after drop
layers), and the two attention matmuls on (queries x kept keys) per head. qkv is counted on all
tokens even in kv-pruned layers because that is what runs (keys/values are gathered after the
projection). LayerNorm, softmax, GELU, the token-drop top-k/fusion and additions are not
multiply-accumulates of a weight and are left out (< 2 % here). The seed's tables count blocks
only and skip the query side; their figures are theirs, not comparable with these.

Parameters: ``deploy`` = what the exported embedding graph holds (backbone + embedding head);
``total`` adds the training-only classifiers (BNNeck, LA stripe classifiers).

Latency: torch eager, batch 1, float32, ``torch.inference_mode``, median of ``runs`` timed calls
after ``warmup`` calls, with the thread count reported; also the median CPU time of the process
per call, which a busy machine disturbs much less than wall time. Figures vary by about 30 % on a shared
machine: compare models measured in the same process.
"""

from __future__ import annotations

from typing import Any

import torch
from edgereid.runtime.timing import latency_stats, time_calls
from torch import nn

from ..models.attention import PrunableAttention


def count_params(model) -> dict[str, int]:
    model = getattr(model, "module", model)
    total = sum(p.numel() for p in model.parameters())
    deploy = sum(p.numel() for p in model.backbone.parameters()) + sum(p.numel() for p in model.embed_head.parameters())
    backbone = sum(p.numel() for p in model.backbone.parameters())
    return {"deploy": deploy, "backbone": backbone, "total": total}


@torch.no_grad()
def count_macs(model) -> dict[str, Any]:
    """Multiply-accumulates of one eval forward pass at batch 1, per kind and per block."""
    model = getattr(model, "module", model)
    was_training = model.training
    model.eval()
    per_kind = {"patch_embed": 0, "qkv": 0, "attention": 0, "proj": 0, "mlp": 0, "head": 0}
    per_block = [0] * len(model.backbone.blocks)
    where: dict[nn.Module, tuple[str, int | None]] = {}
    for i, block in enumerate(model.backbone.blocks):
        where[block.attn.qkv] = ("qkv", i)
        where[block.attn.proj] = ("proj", i)
        where[block.mlp.fc1] = ("mlp", i)
        where[block.mlp.fc2] = ("mlp", i)
        where[block.attn] = ("attention", i)

    def add(kind: str, block: int | None, macs: int) -> None:
        per_kind[kind] += int(macs)
        if block is not None:
            per_block[block] += int(macs)

    def linear_hook(mod: nn.Linear, inputs, output) -> None:
        rows = inputs[0].numel() // mod.in_features
        kind, block = where.get(mod, ("head", None))
        add(kind, block, rows * mod.in_features * mod.out_features)

    def conv_hook(mod: nn.Conv2d, inputs, output) -> None:
        k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
        add("patch_embed", None, output.numel() * k)

    def attn_hook(mod: PrunableAttention, inputs, output) -> None:
        x = inputs[0]
        b, t = x.shape[0], x.shape[1]
        keys = len(mod.kv_index) if mod.kv_index is not None else t
        # q @ k^T and attn @ v, each (t x keys x head_dim) per head
        add("attention", where[mod][1], 2 * b * mod.num_heads * t * keys * mod.head_dim)

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, PrunableAttention):
            handles.append(m.register_forward_hook(attn_hook))
    try:
        h, w = model.cfg.backbone.img_size
        model(torch.zeros(1, 3, h, w, device=next(model.parameters()).device))
    finally:
        for hd in handles:
            hd.remove()
        model.train(was_training)
    return {"total": sum(per_kind.values()), "per_kind": per_kind, "per_block": per_block}


@torch.inference_mode()
def measure_latency(model, runs: int = 50, warmup: int = 10, threads: int | None = None) -> dict[str, Any]:
    """Median / p90 / min wall time and median CPU time of one eval forward at batch 1 on the CPU, in ms."""
    model = getattr(model, "module", model)
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    was_training = model.training
    model.eval().cpu()
    h, w = model.cfg.backbone.img_size
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    try:
        wall, cpu = time_calls(lambda _i: model(x), runs, warmup)
    finally:
        model.train(was_training)
        torch.set_num_threads(old_threads)
    stats = latency_stats(wall, cpu_seconds=cpu)
    return {**{k: round(stats[k], 4) for k in ("median_ms", "p90_ms", "min_ms", "cpu_median_ms")}, "runs": runs,
            "threads": threads or old_threads, "batch": 1, "engine": "torch eager fp32"}


def model_cost(model, latency_runs: int = 50, threads: int | None = None) -> dict[str, Any]:
    """Parameters, MACs and (if ``latency_runs`` > 0) measured latency of ``model``."""
    model = getattr(model, "module", model)
    bb = model.cfg.backbone
    out: dict[str, Any] = {
        "params": count_params(model),
        "macs": count_macs(model),
        "heads_per_layer": [b.attn.num_heads for b in model.backbone.blocks],
        "heads_kept": sum(b.attn.num_heads for b in model.backbone.blocks),
        "heads_dense": bb.depth * bb.num_heads,
        "tokens_per_layer": model.backbone.tokens_per_layer,
        "keys_per_layer": [len(b.attn.kv_index) if b.attn.kv_index is not None else b.tokens_in
                           for b in model.backbone.blocks],
        "img_size": list(bb.img_size),
    }
    dense_tokens = bb.depth * (1 + bb.num_patches)
    out["tokens_kept_fraction"] = round(sum(out["tokens_per_layer"]) / dense_tokens, 4)
    out["keys_kept_fraction"] = round(sum(out["keys_per_layer"]) / dense_tokens, 4)
    if latency_runs > 0:
        out["latency"] = measure_latency(model, runs=latency_runs, threads=threads)
    return out
