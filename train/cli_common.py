"""Argparse pieces shared by the training-side commands (train, compress, prune)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from edgereid.data import list_datasets

from .config import VIT_SIZES

if TYPE_CHECKING:  # the engine imports torch: keep `edgereid --help` fast
    from .engine import TrainConfig


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
    p.add_argument("--head", default="cls", choices=["cls", "la"],
                   help="cls: the cls token is the embedding; la: LA-Transformer row stripes fused with the cls token")
    p.add_argument("--la-lambda", type=float, default=8.0, help="LA head: stripe weight in (cls + lambda*stripe)/(1+lambda)")


def add_training_arguments(p: argparse.ArgumentParser, epochs: int = 12, lr: float = 5e-4) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default {epochs})")
    g.add_argument("--batch-size", type=int, default=64, help="P*K images per step, summed over DDP ranks (default 64)")
    g.add_argument("--k", type=int, default=4, help="images per identity in a PK batch (default 4)")
    g.add_argument("--optimizer", default="adamw", choices=["adamw", "adam", "sgd"], help="optimiser (default adamw)")
    g.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {lr})")
    g.add_argument("--weight-decay", type=float, default=0.05, help="weight decay (default 0.05)")
    g.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up length in epochs (default 1)")
    g.add_argument("--schedule", default="cosine", choices=["cosine", "step", "constant"], help="LR schedule after warm-up")
    g.add_argument("--label-smoothing", type=float, default=0.0, help="ID loss label smoothing (default 0)")
    g.add_argument("--margin", type=float, default=None, help="triplet margin; omit for the soft margin")
    g.add_argument("--eval-every", type=int, default=4, help="evaluate (and keep the best checkpoint) every N epochs")
    g.add_argument("--workers", type=int, default=2, help="data-loading worker processes (default 2)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--seed", type=int, default=0, help="random seed")
    g.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    g.add_argument("--max-steps-per-epoch", type=int, default=None, help="cap steps per epoch (quick runs, tests)")


def add_distill_arguments(p: argparse.ArgumentParser, alpha: float = 0.2) -> None:
    g = p.add_argument_group("distillation from the dense teacher")
    g.add_argument("--distill", default="soft", choices=["soft", "none"], help="soft KD on logits, or none")
    g.add_argument("--alpha", type=float, default=alpha, help=f"weight of the logit KD term (default {alpha})")
    g.add_argument("--tau", type=float, default=1.0, help="KD temperature (default 1)")
    g.add_argument("--embed-distill", type=float, default=0.0,
                   help="weight of the embedding distillation term (cosine to the teacher's feature; default 0)")
    g.add_argument("--embed-distill-kind", default="cosine", choices=["cosine", "mse"], help="embedding KD distance")


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    from .engine import DistillConfig, TrainConfig

    cfg = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, k=args.k, optimizer=args.optimizer, lr=args.lr,
        weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, schedule=args.schedule,
        label_smoothing=args.label_smoothing, triplet_margin=args.margin, eval_every=args.eval_every,
        workers=args.workers, device=args.device, seed=args.seed, amp=not args.no_amp,
        max_steps_per_epoch=args.max_steps_per_epoch,
    )
    if getattr(args, "distill", None) == "soft":
        cfg.distill = DistillConfig(alpha=args.alpha, tau=args.tau, embed_weight=args.embed_distill,
                                    embed_kind=args.embed_distill_kind)
    elif getattr(args, "embed_distill", 0.0):
        cfg.distill = DistillConfig(alpha=0.0, embed_weight=args.embed_distill, embed_kind=args.embed_distill_kind)
    return cfg
