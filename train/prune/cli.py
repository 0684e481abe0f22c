"""``edgereid prune`` (attention-map-guided pruning + distilled fine-tuning) and ``edgereid cost``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..cli_common import add_data_arguments, add_distill_arguments
from .modes import MODES, STAGES, TOKEN_FORMS


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated block indices, e.g. 3,6,9") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prune", help="prune heads and/or tokens of a trained ViT, fine-tuning with distillation",
        description="Attention-map-guided pruning (seed 003): iterative rounds of {gathering pass; prune; "
                    "fine-tune}, then a final fine-tuning stage, distilled from the dense checkpoint. "
                    "Writes the pruned checkpoint, prune_log.jsonl and prune_summary.json to --out.")
    p.add_argument("--ckpt", required=True, help="the trained dense checkpoint folder (also the distillation teacher)")
    add_data_arguments(p)
    p.add_argument("--mode", default="tokens-kv", choices=list(MODES),
                   help="what to prune: " + "; ".join(f"{m.name} = {m.help}" for m in MODES.values())
                        + " (default tokens-kv)")
    p.add_argument("--rate", type=float, default=0.4,
                   help="fraction pruned: of all heads (heads), of all layer x patch key positions (tokens-kv), "
                        "of the patch tokens at each drop layer (tokens-drop) (default 0.4)")
    p.add_argument("--token-rate", type=float, default=None,
                   help="heads+tokens: the token stage's rate (default: --rate)")
    p.add_argument("--token-form", default="kv", choices=list(TOKEN_FORMS),
                   help="heads+tokens: the token stage, " + "; ".join(f"{f} = {STAGES[f].help}" for f in TOKEN_FORMS)
                        + " (default kv)")
    p.add_argument("--drop-layers", type=_int_list, default=None,
                   help="0-based blocks that drop tokens (default: depth/4, depth/2, 3*depth/4 = 3,6,9 for 12 blocks)")
    p.add_argument("--iterations", type=int, default=1, help="prune + fine-tune rounds per stage (default 1)")
    p.add_argument("--finetune-epochs", type=int, default=0, help="fine-tuning epochs after each round (default 0)")
    p.add_argument("--final-epochs", type=int, default=10, help="fine-tuning epochs after the last round (default 10)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate of every fine-tuning stage (default 1e-4)")
    p.add_argument("--weight-decay", type=float, default=1e-3, help="Adam weight decay (default 1e-3)")
    p.add_argument("--final-step-epochs", type=_int_list, default=None,
                   help="final-stage epochs where the lr drops x0.1 (default: at 70%% of the final stage)")
    p.add_argument("--stats-batches", type=int, default=None,
                   help="cap on the gathering pass's batches (default: the whole training split)")
    p.add_argument("--no-round-eval", action="store_true",
                   help="skip evaluating the dense model and each round without fine-tuning (saves time)")
    g = p.add_argument_group("fine-tuning batches and devices")
    g.add_argument("--batch-size", type=int, default=64, help="P*K images per step (default 64)")
    g.add_argument("--k", type=int, default=4, help="images per identity in a PK batch (default 4)")
    g.add_argument("--eval-every", type=int, default=2, help="final stage: evaluate and keep the best every N epochs")
    g.add_argument("--workers", type=int, default=2, help="data-loading worker processes (default 2)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--seed", type=int, default=0, help="random seed")
    g.add_argument("--max-steps-per-epoch", type=int, default=None, help="cap steps per epoch (quick runs, tests)")
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
    from ..engine import DistillConfig, TrainConfig
    from .schedule import PruneConfig, run_pruning

    pcfg = PruneConfig(mode=args.mode, rate=args.rate, token_rate=args.token_rate, token_form=args.token_form,
                       iterations=args.iterations, finetune_epochs=args.finetune_epochs,
                       final_epochs=args.final_epochs, drop_layers=args.drop_layers, lr=args.lr,
                       weight_decay=args.weight_decay, final_step_epochs=args.final_step_epochs,
                       stats_batches=args.stats_batches, eval_rounds=not args.no_round_eval)
    pcfg.validate()
    read_config(args.ckpt)  # a clear error for a folder that is not a checkpoint
    dataset = build_dataset(args.dataset, args.data)
    model = load_model(args.ckpt)
    if model.cfg.num_classes != dataset.num_train_pids:
        raise ValueError(f"{args.ckpt} was trained with {model.cfg.num_classes} identities but {args.data} has "
                         f"{dataset.num_train_pids}: prune on the data set the checkpoint was trained on")
    tcfg = TrainConfig(batch_size=args.batch_size, k=args.k, eval_every=args.eval_every, workers=args.workers,
                       device=args.device, seed=args.seed, max_steps_per_epoch=args.max_steps_per_epoch)
    teacher = None
    if args.distill == "soft" or args.embed_distill > 0:
        tcfg.distill = DistillConfig(alpha=args.alpha if args.distill == "soft" else 0.0, tau=args.tau,
                                     embed_weight=args.embed_distill, embed_kind=args.embed_distill_kind)
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
