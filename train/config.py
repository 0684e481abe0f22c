"""Configuration dataclasses: everything needed to rebuild a model from its checkpoint.

A checkpoint folder holds ``model.safetensors`` plus ``config.json`` = ``ModelConfig.to_dict()``
(and training metadata). ``ModelConfig.from_dict`` is the only way a model is rebuilt, so every
structural change (pruned heads, kept tokens, compressed embedding, int8 scale) lives here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from edgereid.data.flags import option

# Width/depth/heads of the supported ViT sizes (patch 16). `micro` is for tests and toy runs.
VIT_SIZES: dict[str, dict[str, int]] = {
    "vit_micro": {"embed_dim": 48, "depth": 2, "num_heads": 3},
    "vit_tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3},
    "vit_small": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "vit_base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
}

# How pixels become tokens (BackboneConfig.stem); train/models/vit_backbone.py builds each.
STEMS = ("patch", "conv")


@dataclass
class BackboneConfig:
    """The ViT trunk, including its pruning plan.

    heads_per_layer: heads each block keeps (None = ``num_heads`` everywhere). Head pruning is
        physical: a block with h heads has qkv of 3*h*head_dim rows and proj of h*head_dim columns.
    kv_keep: per block, the token positions kept as keys/values (``kv`` token pruning; position 0
        is the cls token and is always kept), or None for a block that keeps all of them.
    drop_layers / drop_keep: ``drop`` token pruning: after attention in each listed block keep the
        top ``ceil(drop_keep * n)`` non-cls tokens by cls attention and fuse the rest into one token.
    stem: how pixels become tokens. ``patch`` = one patch_size x patch_size convolution (timm's
        ViT, what pretrained checkpoints hold); ``conv`` = a stack of 3x3 stride-2 convolutions with
        BatchNorm + ReLU down to the same patch grid, then a 1x1 projection (a locality prior that
        makes a ViT trained from scratch on a small data set learn much faster; the token count is
        the same). ``stem_width``: channels of the first conv stage (doubling every stage).
    """

    name: str = "vit_tiny"
    img_size: tuple[int, int] = (256, 128)
    patch_size: int = 16
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1
    heads_per_layer: list[int] | None = None
    kv_keep: list[list[int] | None] | None = None
    drop_layers: list[int] = field(default_factory=list)
    drop_keep: float = 0.7
    stem: str = "patch"
    stem_width: int = 24

    @classmethod
    def for_size(cls, name: str, **overrides: Any) -> BackboneConfig:
        if name not in VIT_SIZES:
            raise ValueError(f"unknown backbone {name!r}: expected one of {sorted(VIT_SIZES)}")
        return cls(name=name, **{**VIT_SIZES[name], **overrides})

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def grid(self) -> tuple[int, int]:
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    @property
    def num_patches(self) -> int:
        gh, gw = self.grid
        return gh * gw

    def heads(self, layer: int) -> int:
        return self.heads_per_layer[layer] if self.heads_per_layer is not None else self.num_heads

    def validate(self) -> None:
        h, w = self.img_size
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        if self.stem not in STEMS:
            raise ValueError(f"stem {self.stem!r}: expected one of {', '.join(STEMS)}")
        if self.stem == "conv" and (self.patch_size & (self.patch_size - 1) or self.patch_size < 2):
            raise ValueError(f"the conv stem needs a power-of-two patch_size >= 2, got {self.patch_size}")
        if self.stem_width < 1:
            raise ValueError(f"stem_width must be >= 1, got {self.stem_width}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.heads_per_layer is not None:
            if len(self.heads_per_layer) != self.depth:
                raise ValueError(f"heads_per_layer has {len(self.heads_per_layer)} entries, expected depth={self.depth}")
            if any(not 1 <= h <= self.num_heads for h in self.heads_per_layer):
                raise ValueError(f"heads_per_layer {self.heads_per_layer}: each must be in 1..{self.num_heads}")
        if self.kv_keep is not None and len(self.kv_keep) != self.depth:
            raise ValueError(f"kv_keep has {len(self.kv_keep)} entries, expected depth={self.depth}")
        if any(not 0 <= layer < self.depth for layer in self.drop_layers):
            raise ValueError(f"drop_layers {self.drop_layers} must be block indices in 0..{self.depth - 1}")
        if self.drop_layers and self.kv_keep is not None:
            late = [i for i, kv in enumerate(self.kv_keep) if kv is not None and i >= min(self.drop_layers)]
            if late:
                raise ValueError(f"kv_keep prunes blocks {late} at or after the first drop layer {min(self.drop_layers)}: "
                                 "kv positions refer to the original patch grid, which token dropping reorders")
        if self.drop_layers and not 0.0 < self.drop_keep <= 1.0:
            raise ValueError(f"drop_keep must be in (0, 1], got {self.drop_keep}")


@dataclass
class EmbeddingConfig:
    """The deployable embedding: compression head + optional quantisation (``train/compress``).

    kind: ``full`` (the cls token), ``slice`` (its first ``dim`` coordinates), ``lowrank``
        (e = A^T f with A learnable, f_hat = B e feeds the neck), ``select`` (the coordinates listed in
        ``kept_dims``: the result of iterative dimension pruning).
    bits: 32 = float32 output; 8/4 = symmetric per-tensor integer codes; 1 = sign bits.
    scale: the quantisation step (``None`` until calibrated or learned).
    scale_mode: ``calibrated`` (running percentile of |e|, frozen late in training) or ``learned`` (LSQ).
    qat: train with fake quantisation in the loop (False = post-training quantisation).
    """

    kind: str = "full"
    dim: int | None = None
    kept_dims: list[int] | None = None
    bits: int = 32
    scale: float | None = None
    scale_mode: str = "calibrated"
    qat: bool = False
    percentile: float = 99.99

    def out_dim(self, width: int) -> int:
        if self.kind == "full":
            return width
        if self.kind == "select":
            if not self.kept_dims:
                raise ValueError("embedding kind 'select' needs kept_dims")
            return len(self.kept_dims)
        if self.dim is None or not 1 <= self.dim <= width:
            raise ValueError(f"embedding kind {self.kind!r} needs dim in 1..{width}, got {self.dim}")
        return self.dim

    def validate(self, width: int) -> None:
        if self.kind not in ("full", "slice", "lowrank", "select"):
            raise ValueError(f"embedding kind {self.kind!r}: expected full, slice, lowrank or select")
        if self.bits not in (32, 8, 4, 1):
            raise ValueError(f"embedding bits {self.bits}: expected 32, 8, 4 or 1")
        if self.scale_mode not in ("calibrated", "learned"):
            raise ValueError(f"scale_mode {self.scale_mode!r}: expected calibrated or learned")
        self.out_dim(width)


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    num_classes: int = 0
    head: str = "cls"  # "cls" (cls token embedding) or "la" (LA-Transformer stripes)
    la_lambda: float = 8.0
    la_bottleneck: int = 256
    neck_feat: str = "after"  # embedding fed to the classifier through the BNNeck

    def validate(self) -> None:
        self.backbone.validate()
        self.embedding.validate(self.feature_dim)
        if self.head not in ("cls", "la"):
            raise ValueError(f"head {self.head!r}: expected cls or la")

    @property
    def feature_dim(self) -> int:
        """Width of the backbone feature the embedding head compresses."""
        if self.head == "la":
            return self.backbone.embed_dim * self.backbone.grid[0]
        return self.backbone.embed_dim

    @property
    def embed_dim(self) -> int:
        """Dimension of the deployable embedding."""
        return self.embedding.out_dim(self.feature_dim)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        try:
            bb = dict(data["backbone"])
            bb["img_size"] = tuple(bb["img_size"])
            backbone = _build(BackboneConfig, bb, "backbone")
            embedding = _build(EmbeddingConfig, dict(data.get("embedding", {})), "embedding")
        except KeyError as exc:
            raise ValueError(f"model config is missing the field {exc.args[0]!r}") from None
        rest = {k: v for k, v in data.items() if k not in ("backbone", "embedding")}
        cfg = _build(cls, {**rest, "backbone": backbone, "embedding": embedding}, "model")
        cfg.validate()
        return cfg


@dataclass
class AugmentConfig:
    """Training-image augmentation (``data/transforms.train_transform`` applies it, in this order):
    horizontal flip with probability ``flip``; zero-pad by ``pad`` pixels and crop back at a random
    offset; colour jitter of strength ``color_jitter`` (brightness/contrast/saturation, hue a quarter
    of it; 0 = off); after normalisation, erase a random rectangle with probability ``random_erasing``."""

    flip: float = 0.5
    pad: int = option(10, "pad-and-random-crop margin in pixels")
    random_erasing: float = option(0.5, "probability of erasing a random rectangle of each training image")
    color_jitter: float = option(0.0, "brightness/contrast/saturation jitter strength, hue a quarter of it (0 = off)")


@dataclass
class DistillConfig:
    """Distillation from a frozen teacher: soft KD on logits and/or an embedding term."""

    alpha: float = option(0.0, "weight of the logit KD term, tau^2 * KL (0 = off; the seed uses 0.2)")
    tau: float = option(1.0, "KD temperature")
    embed_weight: float = option(0.0, "weight of the embedding distillation term (distance to the teacher's "
                                      "feature; 0 = off)", flag="--embed-distill")
    embed_kind: str = option("cosine", "embedding KD distance", flag="--embed-distill-kind", choices=("cosine", "mse"))

    @property
    def enabled(self) -> bool:
        return self.alpha > 0 or self.embed_weight > 0


@dataclass
class TrainConfig:
    """One run of ``engine.fit``. The fields with help text are the flags of train, compress and sweep."""

    epochs: int = option(12, "training epochs")
    batch_size: int = option(64, "P*K images per step, summed over DDP ranks")
    k: int = option(4, "images per identity in a PK batch")
    optimizer: str = option("adamw", "optimiser", choices=("adamw", "adam", "sgd"))
    lr: float = option(5e-4, "peak learning rate")
    weight_decay: float = option(0.05, "weight decay")
    momentum: float = 0.9
    warmup_epochs: float = option(1.0, "linear warm-up length in epochs")
    schedule: str = option("cosine", "LR schedule after warm-up", choices=("cosine", "step", "constant"))
    step_epochs: list[int] = field(default_factory=list)  # step schedule: x0.1 at these epochs
    min_lr_ratio: float = 0.01
    label_smoothing: float = option(0.0, "ID loss label smoothing")
    triplet_margin: float | None = option(None, "triplet margin; omit for the soft margin", flag="--margin")
    id_weight: float = 1.0
    triplet_weight: float = 1.0
    qat_freeze_epochs: int = 1  # QAT, calibrated scale: freeze the scale for the last N epochs
    eval_every: int = option(4, "evaluate (and keep the best checkpoint) every N epochs")
    seed: int = option(0, "random seed")
    workers: int = option(2, "data-loading worker processes")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    amp: bool = option(True, "disable mixed precision on CUDA", flag="--no-amp")
    max_steps_per_epoch: int | None = option(None, "cap steps per epoch (quick runs, tests)")
    eval_batch_size: int = 128
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


def _build(klass: type, data: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(klass)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where} config has unknown fields {unknown}; expected a subset of {sorted(names)}")
    return klass(**data)
