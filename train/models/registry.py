"""Model construction and timm registration.

``build_model(cfg)`` is the one constructor. The ``edgereid_vit_{micro,tiny,small,base}_patch16``
names are also registered with timm, so ``timm.create_model("edgereid_vit_tiny_patch16",
num_classes=751, img_size=(256, 128))`` works like any timm model (``pretrained_file=`` takes a
local weights file; nothing is downloaded).
"""

from __future__ import annotations

import dataclasses

from timm.models import register_model

from ..config import VIT_SIZES, BackboneConfig, EmbeddingConfig, ModelConfig
from .pretrained import load_pretrained_backbone
from .reid_model import ReIDModel


def build_model(cfg: ModelConfig, pretrained: str | None = None) -> ReIDModel:
    model = ReIDModel(cfg)
    if pretrained:
        load_pretrained_backbone(model.backbone, pretrained)
    return model


def _timm_entry(size: str):
    def create(pretrained: bool = False, num_classes: int = 0, img_size=(256, 128), pretrained_file: str | None = None,
               embedding: dict | None = None, **kwargs) -> ReIDModel:
        if pretrained and not pretrained_file:
            raise ValueError("edgereid models load weights only from a local file: pass pretrained_file=PATH")
        fields = {f.name for f in dataclasses.fields(BackboneConfig)}
        # timm passes its own bookkeeping (pretrained_cfg, cache_dir, ...): keep only backbone fields.
        backbone_overrides = {k: v for k, v in kwargs.items() if k in fields}
        if isinstance(img_size, int):
            img_size = (img_size, img_size)
        cfg = ModelConfig(
            backbone=BackboneConfig.for_size(size, img_size=tuple(img_size), **backbone_overrides),
            embedding=EmbeddingConfig(**(embedding or {})),
            num_classes=num_classes,
        )
        return build_model(cfg, pretrained_file)

    create.__name__ = f"edgereid_{size}_patch16"
    create.__doc__ = f"edgereid ReID {size} (patch 16) with BNNeck; see edgereid.train.config."
    return create


for _size in VIT_SIZES:
    register_model(_timm_entry(_size))
