"""``edgereid compress`` (train one compressed-embedding model) and ``edgereid sweep`` (the whole
methods x sizes x precision sweep). Heavy imports happen inside the command functions."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from edgereid.data.flags import add_options, options_from_args

from ..cli_common import add_data_arguments, add_model_arguments, add_training_arguments
from .methods import SWEEP_METHODS, CompressConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compress", help="train one compressed-embedding model (slice, low-rank, dim pruning; int8 QAT/PTQ)",
                       description="Train one compressed-embedding ReID model (arXiv 2405.14730) and evaluate "
                                   "it through the int8/4-bit/1-bit codec. slice/lowrank train from scratch, or "
                                   "fine-tune from --init-from; prune needs --init-from (a dense checkpoint).")
    add_data_arguments(p)
    add_model_arguments(p)
    add_training_arguments(p)
    add_options(p.add_argument_group("compression"), CompressConfig, required=("method",))
    p.add_argument("--out", required=True, help="run folder: the final checkpoint, compress.json, training logs")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("sweep", help="the compression sweep: methods x sizes x {fp32, int8 PTQ, int8 QAT} + 4/1-bit",
                       description="Run (or resume) the embedding-compression sweep; writes sweep.json, sweep.md "
                                   "and sweep.png to --out. A finished run is never trained again.")
    add_data_arguments(p)
    add_model_arguments(p)
    add_training_arguments(p, epochs=30)
    p.set_defaults(img=(128, 64))
    g = p.add_argument_group("sweep")
    g.add_argument("--out", default="runs/sweep", help="sweep folder (default runs/sweep)")
    g.add_argument("--dense-ckpt", default=None, help="use this trained dense checkpoint instead of training one")
    g.add_argument("--methods", nargs="+", default=list(SWEEP_METHODS), choices=list(SWEEP_METHODS),
                   help=f"methods to sweep (default all: {' '.join(SWEEP_METHODS)})")
    g.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="compressed dims (default: 3/4, 5/8, 1/2, 1/4, 1/12, 1/24 of d, plus --extra-dims)")
    g.add_argument("--extra-dims", type=int, nargs="*", default=[32],
                   help="dims added to the paper's six (default 32: 32 dims x int8 = 32 bytes)")
    g.add_argument("--variants", nargs="+", default=None,
                   help="records per float model (default all: float32 int8-ptq int8-qat 4bit-ptq 1bit-ptq "
                        "1bit-ptq+int8-rerank)")
    g.add_argument("--finetune-fraction", type=float, default=0.2,
                   help="slice/low-rank fine-tune and pruning-stage length as a fraction of --epochs (default 0.2)")
    g.add_argument("--finetune-lr-scale", type=float, default=0.5, help="fine-tune LR = this x --lr (default 0.5)")
    g.add_argument("--from-scratch", action="store_true",
                   help="train slice/low-rank models from scratch for --epochs (the paper's recipe; slow)")
    g.add_argument("--qat-epochs", type=int, default=2, help="epochs of each int8 QAT fine-tune (default 2)")
    g.add_argument("--qat-lr-scale", type=float, default=0.2, help="QAT fine-tune LR = this x --lr (default 0.2)")
    g.add_argument("--shortlist", type=int, default=100, help="1-bit + int8 re-ranking short-list length (default 100)")
    g.add_argument("--no-control", action="store_true",
                   help="skip the equal-budget control (the dense model fine-tuned with the methods' schedule, "
                        "nothing compressed); without it every delta mixes the method with its extra epochs")
    g.add_argument("--quick", action="store_true",
                   help="CI-sized sweep: 1-epoch dense model, <= 2 steps an epoch, sizes 1/2 and 1/12 of d")
    g.add_argument("--report-only", action="store_true", help="only rewrite the table and plot from sweep.json")
    g.add_argument("--markdown", default=None, help="also write the report here (e.g. benchmarks/compression.md)")
    g.add_argument("--plot", default=None, help="with --markdown: write the plot here (e.g. benchmarks/compression.png)")
    p.set_defaults(func=cmd_sweep)


def cmd_compress(args: argparse.Namespace) -> int:
    from edgereid.data import build_dataset

    from ..cli_common import train_config_from_args
    from .methods import compress

    cfg = options_from_args(CompressConfig, args, model=args.model, img_size=tuple(args.img), pretrained=args.pretrained)
    cfg.validate()  # fail on bad flags before loading any data
    if args.init_from and not (Path(args.init_from) / "config.json").is_file():
        raise FileNotFoundError(f"--init-from {args.init_from}: not a checkpoint folder (no config.json)")
    dataset = build_dataset(args.dataset, args.data)
    record = compress(cfg, dataset, train_config_from_args(args), args.out)
    print(json.dumps({k: record[k] for k in ("method", "dim", "bits", "quant", "bytes_per_embedding",
                                             "compression_ratio", "rank1", "mAP", "mINP", "total_train_seconds")},
                     indent=2))
    print(f"wrote the checkpoint and compress.json to {args.out}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .report import write_report

    out = Path(args.out)
    this = "edgereid " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["sweep"] else None
    if args.report_only:
        path = out / "sweep.json"
        if not path.is_file():
            raise FileNotFoundError(f"--report-only: {path} does not exist (run the sweep first)")
        data = json.loads(path.read_text())
    else:
        from edgereid.data import build_dataset

        from ..cli_common import train_config_from_args
        from .sweep import VARIANTS, SweepConfig, run_sweep

        variants = tuple(args.variants or VARIANTS)
        bad = [v for v in variants if v not in VARIANTS]
        if bad:
            raise ValueError(f"--variants {bad}: expected some of {', '.join(VARIANTS)}")
        cfg = SweepConfig(data=args.data, dataset=args.dataset, out=str(out), model=args.model, img_size=tuple(args.img),
                          pretrained=args.pretrained, epochs=args.epochs, dense_ckpt=args.dense_ckpt,
                          methods=tuple(args.methods), sizes=args.sizes, extra_dims=list(args.extra_dims),
                          variants=variants, finetune_fraction=args.finetune_fraction,
                          finetune_lr_scale=args.finetune_lr_scale, from_scratch=args.from_scratch,
                          qat_epochs=args.qat_epochs, qat_lr_scale=args.qat_lr_scale, shortlist=args.shortlist,
                          control=not args.no_control,
                          train=train_config_from_args(args))
        dataset = build_dataset(args.dataset, args.data)
        run_sweep(cfg, dataset, quick=args.quick, command=this)
        data = json.loads((out / "sweep.json").read_text())
    # the report names the sweep commands that produced the records, in order (resumes included)
    commands = [inv["command"] for inv in data.get("invocations", []) if inv.get("command")]
    command = "\n".join(commands) if commands else this
    md, png = write_report(data, out, command=command)
    print(f"wrote {out / 'sweep.json'}, {md} and {png}")
    if args.markdown:
        md2, png2 = write_report(data, out, Path(args.markdown), Path(args.plot) if args.plot else None, command=command)
        print(f"wrote {md2} and {png2}")
    return 0
