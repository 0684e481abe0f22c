"""``edgereid`` training-side subcommands: synth, baseline, train, eval (+ compress, sweep, prune, cost).

Heavy modules (torch, timm) are imported inside each command so ``edgereid --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .baselines import add_baselines_flag
from .cli_common import add_data_arguments, add_model_arguments, add_training_arguments


def register(sub: argparse._SubParsersAction) -> None:
    from edgereid.data.synth import add_synth_arguments

    p = sub.add_parser("synth", help="generate the synthetic ReID data set (Market-1501 layout)",
                       description="Write a deterministic synthetic person-ReID data set in the Market-1501 layout.")
    add_synth_arguments(p)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("baseline", help="no-learning baselines: colour histogram, raw-pixel nearest neighbour",
                       description="Evaluate the no-learning ReID baselines (what a trained model must beat) on a "
                                   "data set's query/gallery under the standard Market-1501 protocol.")
    add_data_arguments(p)
    from .baselines import add_baseline_arguments

    add_baseline_arguments(p, data_arguments=False)
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("train", help="train a ViT ReID model (PK sampling, ID + triplet loss)",
                       description="Train a ViT ReID model; works under torchrun (DDP). The best checkpoint "
                                   "(safetensors + config.json) is kept in --out.")
    add_data_arguments(p)
    add_model_arguments(p, with_head=True)
    add_training_arguments(p)
    p.add_argument("--out", required=True, help="run folder: checkpoint, log.jsonl, summary.json")
    add_baselines_flag(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint (rank-1/5/10, mAP, mINP)",
                       description="Evaluate a checkpoint on a data set's query/gallery under the standard "
                                   "Market-1501 protocol; prints and writes JSON.")
    p.add_argument("--ckpt", required=True, help="checkpoint folder (config.json + model.safetensors)")
    add_data_arguments(p)
    p.add_argument("--batch-size", type=int, default=128, help="inference batch size")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--out", default=None, help="metrics JSON path (default CKPT/eval.json)")
    add_baselines_flag(p)
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
    from .baselines import main_baseline

    return main_baseline(args)


def cmd_train(args: argparse.Namespace) -> int:
    import torch
    from edgereid.data import build_dataset

    from .cli_common import train_config_from_args
    from .config import BackboneConfig, ModelConfig
    from .engine import fit
    from .models import build_model

    dataset = build_dataset(args.dataset, args.data)
    print(dataset.summary())
    cfg = ModelConfig(backbone=BackboneConfig.for_size(args.model, img_size=tuple(args.img), stem=args.stem,
                                                       stem_width=args.stem_width, drop_path_rate=args.drop_path),
                      num_classes=dataset.num_train_pids, head=args.head, la_lambda=args.la_lambda)
    if args.pretrained and args.stem != "patch":
        print(f"note: --stem {args.stem} has no counterpart in {args.pretrained}: the stem trains from scratch, "
              "every other ViT weight is loaded (--stem patch keeps the pretrained patch embedding)")
    torch.manual_seed(args.seed)  # the initial weights depend on --seed too
    model = build_model(cfg, pretrained=args.pretrained)
    tcfg = train_config_from_args(args)
    summary = fit(model, dataset, tcfg, args.out, metadata={"dataset": args.dataset, "data": str(args.data),
                                                            "pretrained": args.pretrained})
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 reports
        print(json.dumps(summary["best"], indent=2))
        _report_baselines(args, summary["best"], Path(args.out) / "summary.json", summary)
        print(f"wrote checkpoint, log.jsonl and summary.json to {args.out}")
    return 0


def _report_baselines(args: argparse.Namespace, metrics: dict, path: Path, record: dict) -> dict:
    """Print the model beside the baselines with the verdict; write ``record`` + baselines to ``path``."""
    from edgereid.data.atomic import write_json_atomic

    from .baselines import attach, resolve_baselines, summary_lines

    baselines = resolve_baselines(args.baselines, args.dataset, args.data, tuple(args.img))
    if baselines and "mAP" in metrics:
        print("\n".join(summary_lines("the model", metrics, baselines)))
        record = attach(record, metrics, baselines)
    write_json_atomic(path, record)
    return record


def cmd_eval(args: argparse.Namespace) -> int:
    from edgereid.data import build_dataset

    from .checkpoint import load_model
    from .engine import resolve_device
    from .evaluate import evaluate_model

    device = resolve_device(args.device)
    model = load_model(args.ckpt).to(device)
    dataset = build_dataset(args.dataset, args.data)
    metrics = evaluate_model(model, dataset, tuple(model.cfg.backbone.img_size), args.batch_size, device)
    out = Path(args.out) if args.out else Path(args.ckpt) / "eval.json"
    print(json.dumps(metrics, indent=2))
    args.img = tuple(model.cfg.backbone.img_size)
    _report_baselines(args, metrics, out, {"ckpt": str(args.ckpt), "dataset": args.dataset, "data": str(args.data),
                                           **metrics})
    print(f"wrote {out}")
    return 0
