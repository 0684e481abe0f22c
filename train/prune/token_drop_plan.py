"""Configuring the ``drop`` token-pruning form (ours): which layers drop, and how many they keep.

The mechanism lives in ``models/token_drop.py`` (top-k by cls attention + one fused token). A
drop layer changes every later block's sequence length, so applying a plan rebuilds the model
from its updated config (the weights do not change: dropping tokens adds no parameter) and
copies the state across. ``rate`` is the fraction of patch tokens each drop layer removes
(keep = 1 - rate), so the default rate 0.3 gives the design's keep 0.7 at blocks 4, 7, 10.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..config import ModelConfig


def default_drop_layers(depth: int) -> list[int]:
    """0-based blocks at a quarter, half and three quarters of the depth: 3, 6, 9 (the 4th, 7th and
    10th blocks) for depth 12; a shallow model still gets at least one drop layer."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return sorted({min(depth - 1, (depth * i) // 4) for i in (1, 2, 3)})


def keep_for_rate(rate: float) -> float:
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"token drop rate must be in [0, 1), got {rate}")
    return 1.0 - rate


def configure_drop(cfg: ModelConfig, layers: Sequence[int] | None, keep: float) -> ModelConfig:
    """Write a drop plan into ``cfg`` (validated); returns ``cfg``."""
    bb = cfg.backbone
    layers = default_drop_layers(bb.depth) if layers is None else sorted(set(int(x) for x in layers))
    if cfg.head == "la":
        raise ValueError("token dropping cannot be used with the LA head (its stripes need every patch token)")
    if bb.kv_keep is not None:
        last_kv = max(i for i, k in enumerate(bb.kv_keep) if k is not None)
        if layers and min(layers) <= last_kv:
            raise ValueError(f"drop layers {layers} must all come after the last kv-pruned block {last_kv}: a drop "
                             "layer ranks every token by cls attention (so it needs all keys) and moves tokens, "
                             "which fixed key positions in later blocks cannot follow")
    bb.drop_layers = list(layers)
    bb.drop_keep = float(keep)
    bb.validate()
    return cfg


def apply_drop_plan(model, layers: Sequence[int] | None, keep: float):
    """Return a new model (same weights, kv plan, train/eval mode and device) running with the drop plan."""
    from ..models.registry import build_model

    model = getattr(model, "module", model)
    cfg = configure_drop(ModelConfig.from_dict(model.sync_config().to_dict()), layers, keep)
    new = build_model(cfg)
    state = model.state_dict()
    missing, unexpected = new.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"drop plan changed the parameters (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return new.to(next(model.parameters()).device).train(model.training)


def tokens_kept(model) -> list[int]:
    """Tokens each block's queries and MLP process (cls included)."""
    model = getattr(model, "module", model)
    return [b.tokens_out for b in model.backbone.blocks]
