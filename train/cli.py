"""``edgereid`` training-side subcommands: synth, baseline, train, eval (+ compress, sweep, prune, cost).

Heavy modules (torch, timm) are imported inside each command so ``edgereid --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .cli_common import add_data_arguments, add_model_arguments, add_training_arguments


def register(sub: argparse._SubParsersAction) -> None:
    from edgereid.data.synth import add_synth_arguments

    p = sub.add_parser("synth", help="generate the synthetic ReID data set (Market-1501 layout)",
                       description="Write a deterministic synthetic person-ReID data set in the Market-1501 layout.")
    add_synth_arguments(p)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("baseline", help="colour-histogram baseline (the sanity floor)",
                       description="Evaluate a colour-histogram ReID baseline on a data set's query/gallery.")
    add_data_arguments(p)
    from .histogram_baseline import add_baseline_arguments

    add_baseline_arguments(p, data_arguments=False)
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("train", help="train a ViT ReID model (PK sampling, ID + triplet loss)",
                       description="Train a ViT ReID model; works under torchrun (DDP). The best checkpoint "
                                   "(safetensors + config.json) is kept in --out.")
    add_data_arguments(p)
    add_model_arguments(p, with_head=True)
    add_training_arguments(p)
    p.add_argument("--out", required=True, help="run folder: checkpoint, log.jsonl, summary.json")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint (rank-1/5/10, mAP, mINP)",
                       description="Evaluate a checkpoint on a data set's query/gallery under the standard "
                                   "Market-1501 protocol; prints and writes JSON.")
    p.add_argument("--ckpt", required=True, help="checkpoint folder (config.json + model.safetensors)")
    add_data_arguments(p)
    p.add_argument("--batch-size", type=int, default=128, help="inference batch size")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--out", default=None, help="metrics JSON path (default CKPT/eval.json)")
    p.set_defaults(func=cmd_eval)

    for module in ("compress.cli", "prune.cli"):
        try:
            mod = __import__(f"edgereid.train.{module}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("edgereid.train"):
                continue  # that stage is not part of this build
            raise
        mod.register(sub)


def cmd_synth(args: argparse.Namespace) -> int:
    from edgereid.data.synth import run_synth_command

    return run_synth_command(args)


def cmd_baseline(args: argparse.Namespace) -> int:
    from .histogram_baseline import main_baseline

    return main_baseline(args)


def cmd_train(args: argparse.Namespace) -> int:
    from edgereid.data import build_dataset

    from .cli_common import train_config_from_args
    from .config import BackboneConfig, ModelConfig
    from .engine import fit
    from .models import build_model

    dataset = build_dataset(args.dataset, args.data)
    print(dataset.summary())
    cfg = ModelConfig(backbone=BackboneConfig.for_size(args.model, img_size=tuple(args.img)),
                      num_classes=dataset.num_train_pids, head=args.head, la_lambda=args.la_lambda)
    model = build_model(cfg, pretrained=args.pretrained)
    tcfg = train_config_from_args(args)
    summary = fit(model, dataset, tcfg, args.out, metadata={"dataset": args.dataset, "data": str(args.data),
                                                            "pretrained": args.pretrained})
    print(json.dumps(summary["best"], indent=2))
    print(f"wrote checkpoint, log.jsonl and summary.json to {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from edgereid.data import build_dataset

    from .checkpoint import load_model, write_json_atomic
    from .engine import resolve_device
    from .evaluate import evaluate_model

    device = resolve_device(args.device)
    model = load_model(args.ckpt).to(device)
    dataset = build_dataset(args.dataset, args.data)
    metrics = evaluate_model(model, dataset, tuple(model.cfg.backbone.img_size), args.batch_size, device)
    out = Path(args.out) if args.out else Path(args.ckpt) / "eval.json"
    write_json_atomic(out, {"ckpt": str(args.ckpt), "dataset": args.dataset, "data": str(args.data), **metrics})
    print(json.dumps(metrics, indent=2))
    print(f"wrote {out}")
    return 0
