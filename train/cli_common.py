"""Argparse pieces shared by the training-side commands (train, compress, sweep, prune).

The training and distillation flags come from ``config.TrainConfig`` / ``config.DistillConfig``
(``edgereid.data.flags``): a new training option is one field there.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from edgereid.data import list_datasets
from edgereid.data.flags import add_options, options_from_args

from .config import STEMS, VIT_SIZES, AugmentConfig, DistillConfig, TrainConfig


def parse_img_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size {text!r}: expected HxW, e.g. 256x128") from None
    return h, w


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset root folder (for the synthetic set: the `edgereid synth` output)")
    p.add_argument("--dataset", default="market1501",
                   help=f"dataset layout: {', '.join(list_datasets())} (market1501 also reads the synthetic set)")


def add_model_arguments(p: argparse.ArgumentParser, with_head: bool = False) -> None:
    p.add_argument("--model", default="vit_tiny", choices=sorted(VIT_SIZES), help="ViT size (patch 16)")
    p.add_argument("--img", type=parse_img_size, default=(256, 128), help="input HxW, divisible by 16 (default 256x128)")
    p.add_argument("--pretrained", default=None, help="local timm/safetensors/.pth ViT weights file (never downloaded)")
    if not with_head:
        return
    p.add_argument("--stem", default="patch", choices=list(STEMS),
                   help="how pixels become tokens: patch = one 16x16 convolution (timm's ViT; what pretrained "
                        "weights hold); conv = 3x3 stride-2 conv + BN + ReLU stages, then a 1x1 projection (same "
                        "token grid; learns much faster from scratch on small data)")
    p.add_argument("--stem-width", type=int, default=24, help="conv stem: channels of its first stage, doubling (default 24)")
    p.add_argument("--drop-path", type=float, default=0.1, help="stochastic depth rate of the last block (default 0.1)")
    p.add_argument("--head", default="cls", choices=["cls", "la"],
                   help="cls: the cls token is the embedding; la: LA-Transformer row stripes fused with the cls token")
    p.add_argument("--la-lambda", type=float, default=8.0, help="LA head: stripe weight in (cls + lambda*stripe)/(1+lambda)")


def add_training_arguments(p: argparse.ArgumentParser, epochs: int = 12, lr: float = 5e-4) -> None:
    """The TrainConfig flags (``config.TrainConfig``: one field each) and the augmentation's
    (``config.AugmentConfig``), with this command's epochs and lr defaults."""
    g = p.add_argument_group("training")
    add_options(g, TrainConfig, defaults={"epochs": epochs, "lr": lr})
    add_options(g, AugmentConfig)


def add_distill_arguments(p: argparse.ArgumentParser, alpha: float = 0.2) -> None:
    g = p.add_argument_group("distillation from the dense teacher")
    g.add_argument("--distill", default="soft", choices=["soft", "none"],
                   help="soft KD on logits (and the embedding term when --embed-distill > 0), or none")
    add_options(g, DistillConfig, defaults={"alpha": alpha})


def distill_config_from_args(args: argparse.Namespace) -> DistillConfig:
    """--distill soft: the KD flags as given; none: only the embedding term (off unless --embed-distill > 0)."""
    if args.distill == "soft":
        return options_from_args(DistillConfig, args)
    return options_from_args(DistillConfig, args, alpha=0.0)


def train_config_from_args(args: argparse.Namespace, only: Iterable[str] | None = None) -> TrainConfig:
    """TrainConfig from the flags (``only`` those a command offers; the rest keep their defaults)."""
    cfg = options_from_args(TrainConfig, args, only=only)
    cfg.augment = options_from_args(AugmentConfig, args)
    if hasattr(args, "distill"):
        cfg.distill = distill_config_from_args(args)
    return cfg
