"""edgereid.train: ViT ReID training, embedding compression and attention-guided pruning (torch, timm).

``edgereid.train.load_model(checkpoint_dir)`` rebuilds a checkpoint's model in eval mode. Attributes
are resolved lazily so that importing the package (e.g. for the CLI's --help) does not import torch.
"""

from __future__ import annotations

__all__ = ["load_model", "save_checkpoint", "build_model", "fit"]


def __getattr__(name: str):
    if name in ("load_model", "save_checkpoint"):
        from . import checkpoint

        return getattr(checkpoint, name)
    if name == "build_model":
        from .models import build_model

        return build_model
    if name == "fit":
        from .engine import fit

        return fit
    raise AttributeError(f"module 'edgereid.train' has no attribute {name!r}")
