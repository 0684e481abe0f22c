"""``edgereid export``: checkpoint -> deployment bundle (ONNX / OpenVINO / TensorRT-ready) with manifest."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from edgereid.data import list_datasets
    from edgereid.runtime.tables import TARGETS

    p = sub.add_parser("export", help="export a checkpoint to a deployment bundle (onnx, cpu, jetson, rtx)",
                       description="Export a checkpoint to a bundle folder: ONNX with the pruning baked in (static "
                                   "shapes except a dynamic batch), int8 artefacts calibrated on the TRAIN split, "
                                   "parity and accuracy numbers in manifest.json, every file hashed. Graphs for "
                                   "TensorRT pass their target's pre-flight (edgereid check-graph) first. See "
                                   "docs/bundle-format.md.")
    p.add_argument("--ckpt", required=True, help="checkpoint folder (config.json + model.safetensors)")
    p.add_argument("--target", required=True, choices=list(TARGETS),
                   help="; ".join(f"{t.name}: {t.summary}" for t in TARGETS.values()))
    p.add_argument("--out", required=True, help="bundle folder to write (must be new or empty unless --overwrite)")
    p.add_argument("--data", default=None,
                   help="data set root: train images calibrate int8, query/gallery measure accuracy (omit: float "
                        "artefacts only, parity on random inputs)")
    p.add_argument("--dataset", default="market1501",
                   help=f"data set layout: {', '.join(list_datasets())} (market1501 also reads the synthetic set)")
    p.add_argument("--jetpack", type=int, choices=(5, 6), default=None,
                   help="jetson only: 5 adds LayerNorm-decomposed graphs for TensorRT 8.5")
    p.add_argument("--calib-size", type=int, default=256, help="calibration images drawn from the train split")
    p.add_argument("--calib-seed", type=int, default=0, help="seed of the stratified calibration draw")
    p.add_argument("--static-batch", type=int, default=None, metavar="N",
                   help="export a fixed batch of N instead of a dynamic batch (for a target that needs static shapes; "
                        "the runtime then pads the last chunk)")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="a dynamic batch axis: the default (kept so that older scripts still run)")
    p.add_argument("--min-batch", type=int, default=1, metavar="N",
                   help="TensorRT engines: smallest batch of the optimisation profile (default 1)")
    p.add_argument("--opt-batch", type=int, default=1, metavar="N",
                   help="TensorRT engines: the batch kernels are tuned for (default 1)")
    p.add_argument("--max-batch", type=int, default=32, metavar="N",
                   help="TensorRT engines: largest batch of the optimisation profile (default 32)")
    p.add_argument("--compute-capability", default=None, metavar="CC[,CC...]",
                   help="rtx: GPU compute capabilities of the TensorRT-RTX engines, e.g. 8.6,8.9,12.0 (default: "
                        "TensorRT-RTX's portable set, 8.0 and newer; 7.5 = Turing cannot run fp32 GEMMs)")
    p.add_argument("--output", choices=("embedding", "codes"), default="embedding",
                   help="graph output: float32 embedding, or int8 codes of a quantised embedding")
    p.add_argument("--store-bits", type=int, choices=(32, 8, 4, 1), default=8,
                   help="gallery code width recorded for a float model (its scale is calibrated on train images)")
    p.add_argument("--parity-images", type=int, default=16, help="images for the PyTorch parity check")
    p.add_argument("--no-eval", action="store_true", help="skip the query/gallery accuracy measurement")
    p.add_argument("--no-engine", action="store_true",
                   help="jetson: do not build engines even if TensorRT is here (rtx always builds them)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder once the new one is done")
    p.set_defaults(func=cmd_export)

    from .tensorrt_rules import TARGETS

    c = sub.add_parser("check-graph", help="pre-flight an ONNX graph for a TensorRT target (jetpack5, jetpack6, rtx)",
                       description="Check an ONNX graph against what a TensorRT target's parser and builder accept: "
                                   "opset range, operators, constant TopK K (at most 3840), Q/DQ zero points 0 and "
                                   "positive scales, Cast types, one static NCHW input, static shapes except the "
                                   "batch. Each problem names the node, the rule and the fix. Needs only onnx (no "
                                   "TensorRT, no GPU). Exit code 0: passed; 1: the graph breaks a rule; 2: bad input.")
    c.add_argument("model", metavar="MODEL.onnx", help="the ONNX graph to check")
    c.add_argument("--target", required=True, choices=(*TARGETS, "all"),
                   help="jetpack5 = TensorRT 8.5 (JetPack 5), jetpack6 = TensorRT 10.3 (JetPack 6), rtx = "
                        "TensorRT-RTX (RTX GPUs); all = each of them")
    c.add_argument("--json", default=None, metavar="FILE", help="also write the report(s) as JSON to FILE")
    c.set_defaults(func=cmd_check_graph)


def cmd_export(args: argparse.Namespace) -> int:
    from .bundle import ExportOptions, describe, export_bundle

    if args.static_batch is not None and args.dynamic_batch:
        raise ValueError("--static-batch and --dynamic-batch contradict each other: give one")
    ccs = [c.strip() for c in args.compute_capability.split(",") if c.strip()] if args.compute_capability else None
    opts = ExportOptions(target=args.target, data=args.data, dataset=args.dataset, jetpack=args.jetpack,
                         calib_size=args.calib_size, calib_seed=args.calib_seed,
                         dynamic_batch=args.static_batch is None, batch_size=args.static_batch or 1,
                         min_batch=args.min_batch, opt_batch=args.opt_batch, max_batch=args.max_batch,
                         compute_capabilities=ccs, output=args.output, store_bits=args.store_bits,
                         parity_images=args.parity_images, evaluate=not args.no_eval, overwrite=args.overwrite,
                         build_engine=not args.no_engine)
    out = export_bundle(args.ckpt, args.out, opts)
    print(describe(out))
    print(f"wrote {out}/manifest.json (and the files it lists)")
    if args.target in ("jetson", "rtx") and not (out / "tensorrt").exists():
        print(f"no TensorRT engine built here: see {out}/BUILD_ENGINE.md for the on-device build commands")
    return 0


def cmd_check_graph(args: argparse.Namespace) -> int:
    from edgereid.data.atomic import write_json_atomic

    from .preflight import check_graph
    from .tensorrt_rules import TARGETS

    targets = list(TARGETS) if args.target == "all" else [args.target]
    reports = [check_graph(args.model, t) for t in targets]
    for r in reports:
        print(r.summary())
    if args.json:
        out = write_json_atomic(args.json, {"model": args.model, "reports": [r.to_dict() for r in reports]})
        print(f"wrote {out}")
    return 0 if all(r.passed for r in reports) else 1
