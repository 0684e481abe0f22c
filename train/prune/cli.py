"""``edgereid prune`` (attention-map-guided pruning + distilled fine-tuning) and ``edgereid cost``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgereid.data.flags import add_options, options_from_args

from ..cli_common import add_data_arguments, add_distill_arguments, distill_config_from_args
from ..config import TrainConfig
from .config import PruneConfig

# the training flags a pruning run takes (lr and weight decay are PruneConfig's: every stage uses Adam at them)
_TRAIN_FLAGS = ("batch_size", "k", "eval_every", "workers", "device", "seed", "max_steps_per_epoch")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prune", help="prune heads and/or tokens of a trained ViT, fine-tuning with distillation",
        description="Attention-map-guided pruning (seed 003): iterative rounds of {gathering pass; prune; "
                    "fine-tune}, then a final fine-tuning stage, distilled from the dense checkpoint. "
                    "Writes the pruned checkpoint, prune_log.jsonl and prune_summary.json to --out.")
    p.add_argument("--ckpt", required=True, help="the trained dense checkpoint folder (also the distillation teacher)")
    add_data_arguments(p)
    add_options(p, PruneConfig)
    add_options(p.add_argument_group("fine-tuning batches and devices"), TrainConfig, only=_TRAIN_FLAGS,
                defaults={"eval_every": 2})
    add_distill_arguments(p)
    p.add_argument("--out", required=True, help="run folder for the pruned checkpoint and logs")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("cost", help="parameters, MACs and CPU latency of a checkpoint",
                       description="Count parameters and MACs (on the layers as they really run: heads, kv "
                                   "positions, dropped tokens) and measure torch-eager CPU latency at batch 1. "
                                   "Prints JSON and writes it (default CKPT/cost.json).")
    p.add_argument("--ckpt", required=True, help="checkpoint folder (config.json + model.safetensors)")
    p.add_argument("--runs", type=int, default=50, help="timed forward passes for the latency median (0 = skip)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads while timing (default: torch's)")
    p.add_argument("--out", default=None, help="JSON path (default CKPT/cost.json)")
    p.set_defaults(func=cmd_cost)


def cmd_prune(args: argparse.Namespace) -> int:
    from edgereid.data import build_dataset

    from ..checkpoint import load_model, read_config
    from .schedule import run_pruning

    pcfg = options_from_args(PruneConfig, args)
    pcfg.validate()
    read_config(args.ckpt)  # a clear error for a folder that is not a checkpoint
    dataset = build_dataset(args.dataset, args.data)
    model = load_model(args.ckpt)
    if model.cfg.num_classes != dataset.num_train_pids:
        raise ValueError(f"{args.ckpt} was trained with {model.cfg.num_classes} identities but {args.data} has "
                         f"{dataset.num_train_pids}: prune on the data set the checkpoint was trained on")
    tcfg = options_from_args(TrainConfig, args, only=_TRAIN_FLAGS)
    teacher = None
    if args.distill == "soft" or args.embed_weight > 0:
        tcfg.distill = distill_config_from_args(args)
        teacher = load_model(args.ckpt)  # the frozen dense copy
    out = Path(args.out)
    d = tcfg.distill
    distill = f"alpha {d.alpha:g} tau {d.tau:g} embed {d.embed_weight:g}" if teacher else "none"
    print(f"pruning {args.ckpt} ({args.mode}, rate {args.rate}) on {args.data}; distillation: {distill}")
    summary = run_pruning(model, dataset, pcfg, tcfg, out, teacher=teacher,
                          metadata={"dataset": args.dataset, "data": str(args.data), "teacher": str(args.ckpt),
                                    "distill": args.distill})
    print(json.dumps({"dense": summary["dense"]["metrics"], "pruned": summary["pruned"]["metrics"]}, indent=2))
    print(f"wrote the pruned checkpoint, prune_log.jsonl, prune_summary.json, log.jsonl and summary.json to {out}")
    return 0


def cmd_cost(args: argparse.Namespace) -> int:
    from ..checkpoint import load_model, write_json_atomic
    from .cost import model_cost

    if args.runs < 0:
        raise ValueError(f"--runs must be >= 0, got {args.runs}")
    model = load_model(args.ckpt)
    cost = model_cost(model, latency_runs=args.runs, threads=args.threads)
    out = Path(args.out) if args.out else Path(args.ckpt) / "cost.json"
    write_json_atomic(out, {"ckpt": str(args.ckpt), **cost})
    lat = cost.get("latency")
    print(json.dumps(cost, indent=2))
    print(f"params {cost['params']['deploy'] / 1e6:.3f} M  MACs {cost['macs']['total'] / 1e6:.1f} M"
          + (f"  latency {lat['median_ms']:.2f} ms (median, batch 1, {lat['threads']} threads)" if lat else ""))
    print(f"wrote {out}")
    return 0
