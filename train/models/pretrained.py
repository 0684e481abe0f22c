"""Load ViT weights from a local file (timm ``.safetensors`` / ``.pth`` / ``.bin``); never from a hub.

Accepts timm/DeiT/LA-Transformer-style state dicts (``model.``/``module.``/``backbone.`` prefixes are
stripped, classifier heads ignored). The position embedding is resampled to this model's patch grid.
"""

from __future__ import annotations

from pathlib import Path

import torch
from timm.layers import resample_abs_pos_embed

from .vit_backbone import ViTBackbone

_PREFIXES = ("module.", "model.", "backbone.", "base.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path} (weights load only from a local file)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        for key in ("state_dict", "model", "module"):
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def load_pretrained_backbone(backbone: ViTBackbone, path: str | Path) -> dict[str, list[str]]:
    """Copy matching weights into ``backbone``; returns the missing and unexpected keys."""
    state = {}
    for key, value in read_state_dict(path).items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        state[key] = value
    own = backbone.state_dict()
    if backbone.cfg.stem != "patch":  # a convolutional stem has no counterpart in a ViT checkpoint: it trains
        state = {k: v for k, v in state.items() if not k.startswith("patch_embed.")}
    if "pos_embed" in state and state["pos_embed"].shape != own["pos_embed"].shape:
        old_tokens = state["pos_embed"].shape[1] - 1
        side = int(round(old_tokens**0.5))
        old_grid = [side, side] if side * side == old_tokens else None
        if old_grid is None:
            raise ValueError(
                f"{path}: pos_embed has {old_tokens} patch positions, not a square grid; cannot resample "
                f"to {list(backbone.cfg.grid)}"
            )
        state["pos_embed"] = resample_abs_pos_embed(
            state["pos_embed"], new_size=list(backbone.cfg.grid), old_size=old_grid, num_prefix_tokens=1
        )
    loadable, mismatched = {}, []
    for key, value in state.items():
        if key in own:
            if own[key].shape == value.shape:
                loadable[key] = value
            else:
                mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)}")
    if mismatched:
        raise ValueError(f"{path}: weights do not fit this backbone:\n  " + "\n  ".join(mismatched))
    result = backbone.load_state_dict(loadable, strict=False)
    if len(loadable) == 0:
        raise ValueError(f"{path}: no ViT weights matched (is this a ViT checkpoint?)")
    return {"missing": list(result.missing_keys), "unexpected": sorted(set(state) - set(own))}
