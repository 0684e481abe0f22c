"""``edgereid export``: checkpoint -> deployment bundle (ONNX / OpenVINO / TensorRT-ready) with manifest."""

from __future__ import annotations

import argparse

from edgereid.data.flags import add_options, options_from_args


def register(sub: argparse._SubParsersAction) -> None:
    from .bundle import ExportOptions

    p = sub.add_parser("export", help="export a checkpoint to a deployment bundle (onnx, cpu, jetson, rtx)",
                       description="Export a checkpoint to a bundle folder: ONNX with the pruning baked in (static "
                                   "shapes except a dynamic batch), int8 artefacts calibrated on the TRAIN split, "
                                   "parity and accuracy numbers in manifest.json, every file hashed. Graphs for "
                                   "TensorRT pass their target's pre-flight (edgereid check-graph) first. See "
                                   "docs/bundle-format.md.")
    p.add_argument("--ckpt", required=True, help="checkpoint folder (config.json + model.safetensors)")
    p.add_argument("--out", required=True, help="bundle folder to write (must be new or empty unless --overwrite)")
    add_options(p, ExportOptions, required=("target",))
    p.add_argument("--static-batch", type=int, default=None, metavar="N",
                   help="export a fixed batch of N instead of a dynamic batch (for a target that needs static shapes; "
                        "the runtime then pads the last chunk)")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="a dynamic batch axis: the default (kept so that older scripts still run)")
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
    opts = options_from_args(ExportOptions, args, dynamic_batch=args.static_batch is None,
                             batch_size=args.static_batch or 1)
    out = export_bundle(args.ckpt, args.out, opts)
    print(describe(out))
    print(f"wrote {out}/manifest.json (and the files it lists)")
    if (out / "BUILD_ENGINE.md").exists() and not (out / "tensorrt").exists():
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
