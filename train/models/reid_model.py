"""The ReID model: ViT trunk -> embedding head -> (quantiser) ; BNNeck -> ID classifier.

Training-mode ``forward`` returns a dict with what the losses need; eval-mode ``forward`` returns
the deployable embedding: L2-normalised, and fake-quantised (``scale * q``) when the embedding has
fewer than 32 bits and a scale. ``export_codes=True`` makes eval return the integer levels instead
(what an int8-output ONNX graph emits).

Follows timm's split: ``forward_features`` (tokens after the final norm) and ``forward_head``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .embedding_head import build_embedding_head, neck_dim
from .embedding_quant import EmbeddingQuantizer, quantize_codes
from .vit_backbone import ViTBackbone


class BNNeck(nn.Module):
    """BatchNorm1d with a frozen (zero) bias, then a bias-free linear ID classifier."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(dim, max(num_classes, 1), bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.bn(x))


class ReIDModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.pretrained_cfg = {
            "architecture": f"edgereid_{cfg.backbone.name}_patch{cfg.backbone.patch_size}",
            "input_size": (3, *cfg.backbone.img_size),
            "mean": (0.485, 0.456, 0.406),
            "std": (0.229, 0.224, 0.225),
            "interpolation": "bilinear",
            "num_classes": cfg.num_classes,
        }
        self.backbone = ViTBackbone(cfg.backbone)
        d = cfg.feature_dim
        if cfg.head == "la":
            from .la_head import LAHead

            self.la_head = LAHead(cfg.backbone.embed_dim, cfg.backbone.grid, cfg.num_classes,
                                  lam=cfg.la_lambda, bottleneck=cfg.la_bottleneck)
        else:
            self.la_head = None
        self.embed_head = build_embedding_head(cfg.embedding, d)
        self.quant = EmbeddingQuantizer(cfg.embedding.bits, cfg.embedding.scale, cfg.embedding.scale_mode,
                                        qat=cfg.embedding.qat, percentile=cfg.embedding.percentile)
        self.neck = BNNeck(neck_dim(cfg.embedding, d), cfg.num_classes)
        self.export_codes = False

    # -- timm-style split ---------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def pool(self, tokens: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """The feature f the embedding head compresses, plus LA stripe logits when training."""
        if self.la_head is None:
            return tokens[:, 0], None
        return self.la_head(tokens)

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        f, la_logits = self.pool(tokens)
        e, n = self.embed_head(f)
        if self.training:
            out = {"feature": f, "embedding": e}
            if self.quant.enabled and self.quant.qat:
                out["embedding"] = self.quant(F.normalize(e, dim=1))
            out["logits"] = self.neck(n)
            if la_logits is not None:
                out["stripe_logits"] = la_logits
            return out
        e = F.normalize(e, dim=1)
        if self.export_codes:
            if not (self.quant.enabled and self.quant.has_scale):
                raise ValueError("export_codes needs a quantised embedding with a scale (bits < 32)")
            return quantize_codes(e, float(self.quant.scale.detach().abs()), self.quant.bits)
        return self.quant(e)

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def raw_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-normalisation embedding e (what dimension pruning scores), eval mode."""
        f, _ = self.pool(self.forward_features(x))
        return self.embed_head(f)[0]

    def sync_config(self) -> ModelConfig:
        """Write structural state back into the config (heads per layer, embedding scale)."""
        bb = self.cfg.backbone
        heads = [b.attn.num_heads for b in self.backbone.blocks]
        bb.heads_per_layer = None if all(h == bb.num_heads for h in heads) else heads
        if self.quant.enabled and self.quant.has_scale:
            self.cfg.embedding.scale = float(self.quant.scale.detach().abs())
        return self.cfg
