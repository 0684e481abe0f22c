"""Model surgery for embedding compression: change the embedding head of a trained model and carry
over every weight that still applies.

- ``transfer``: rebuild a model from a new config, copying the trunk and, when the neck narrows,
  the BNNeck rows (weight, bias, running mean/var) and classifier columns of the kept dims.
- ``with_embedding``: same architecture, other quantisation settings (bits, scale, QAT).
- ``slice_from`` / ``lowrank_from``: start a slice or low-rank head from a dense (full) model, so a
  compressed model can be fine-tuned instead of trained from scratch.
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from ..config import ModelConfig
from ..models import build_model
from ..models.reid_model import ReIDModel

_BN_ROWS = ("neck.bn.weight", "neck.bn.bias", "neck.bn.running_mean", "neck.bn.running_var")


def transfer(src: ReIDModel, cfg: ModelConfig, neck_keep: list[int] | None = None,
             keep_scale: bool = False) -> ReIDModel:
    """A model built from ``cfg`` holding ``src``'s weights.

    neck_keep: positions of ``src``'s neck input kept by the new model (None = the neck is unchanged).
    Weights of the new embedding head are copied when their shapes match, else left at their
    initialisation (e.g. a fresh low-rank head). The quantiser scale is reset unless ``keep_scale``
    (a scale calibrated for other dims or another bit width is meaningless).
    """
    src = getattr(src, "module", src)
    dst = build_model(cfg)
    target = dst.state_dict()
    source = src.state_dict()
    index = torch.as_tensor(neck_keep, dtype=torch.long) if neck_keep is not None else None
    new_state = {}
    for key, value in target.items():
        if key not in source:
            new_state[key] = value
            continue
        old = source[key]
        if index is not None and key in _BN_ROWS:
            old = old.index_select(0, index)
        elif index is not None and key == "neck.classifier.weight":
            old = old.index_select(1, index)
        if key == "quant.scale" and not keep_scale:
            old = torch.zeros_like(value)
        if key == "quant.frozen" and not keep_scale:
            old = torch.zeros_like(value)
        if key.startswith("embed_head.") and old.shape != value.shape:
            old = value
        if old.shape != value.shape:
            raise ValueError(f"cannot carry {key} over: source shape {tuple(old.shape)}, target {tuple(value.shape)}")
        new_state[key] = old.clone()
    dst.load_state_dict(new_state, strict=True)
    dst.train(src.training)
    return dst


def _with_cfg(model: ReIDModel, **embedding_changes) -> ModelConfig:
    cfg = copy.deepcopy(model.cfg)
    cfg.embedding = dataclasses.replace(cfg.embedding, **embedding_changes)
    cfg.validate()
    return cfg


def with_embedding(model: ReIDModel, **changes) -> ReIDModel:
    """The same model with other embedding quantisation settings (``bits``, ``scale``, ``qat``, ``scale_mode``).

    The scale survives only if neither the bit width nor the scale itself changes.
    """
    bad = set(changes) - {"bits", "scale", "qat", "scale_mode", "percentile"}
    if bad:
        raise ValueError(f"with_embedding changes quantisation only, got {sorted(bad)}")
    cfg = _with_cfg(model, **changes)
    keep = "scale" not in changes and cfg.embedding.bits == model.cfg.embedding.bits
    out = transfer(model, cfg, keep_scale=keep)
    if changes.get("scale"):
        out.quant.scale.data.fill_(float(changes["scale"]))
    return out


def _require_dense(model: ReIDModel, what: str) -> None:
    if model.cfg.embedding.kind != "full":
        raise ValueError(f"{what} starts from a dense model (embedding kind 'full'), got kind "
                         f"{model.cfg.embedding.kind!r}")


def slice_from(model: ReIDModel, k: int) -> ReIDModel:
    """Slice head of ``k`` dims on a dense model's trunk; BNNeck rows and classifier columns of the first k
    dims come along, so the start is the dense model restricted to those dims."""
    _require_dense(model, "slice_from")
    cfg = _with_cfg(model, kind="slice", dim=k, kept_dims=None)
    return transfer(model, cfg, neck_keep=list(range(k)))


def lowrank_from(model: ReIDModel, k: int) -> ReIDModel:
    """Low-rank head of rank ``k`` (slice-initialised A, B) on a dense model's trunk; the d-wide neck
    is kept whole (f_hat = B e feeds it)."""
    _require_dense(model, "lowrank_from")
    cfg = _with_cfg(model, kind="lowrank", dim=k, kept_dims=None)
    return transfer(model, cfg)
