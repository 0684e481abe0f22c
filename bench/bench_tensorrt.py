"""TensorRT without a GPU: every exported graph form, its pre-flight per TensorRT target, and its
TensorRT-RTX parse/build time and engine size on this CPU.

Loops over ``edgereid.export.graph_variants.VARIANTS`` (the table the tests use), at the demo's model
size by default (random weights: TensorRT's work does not depend on them). Each graph is exported
with the export's own code, checked by ``edgereid check-graph`` for jetpack5 / jetpack6 / rtx, then
parsed and built by TensorRT-RTX through ``edgereid.runtime.engine_build`` (fp32 from float graphs,
int8 from Q/DQ graphs; a dynamic batch gets the profile 1..32).

Usage: python bench/bench_tensorrt.py [--size vit_tiny] [--img 128x64] [--variants dense,qdq-int8]
       [--out-json benchmarks/tensorrt.json] [--out-md benchmarks/tensorrt.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from edgereid.data.atomic import write_json_atomic, write_text_atomic
from tqdm import tqdm


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="vit_tiny", help="backbone size (default vit_tiny, the demo's)")
    p.add_argument("--img", default="128x64", help="input HxW (default 128x64, the demo's)")
    p.add_argument("--variants", default=None, help="comma-separated variant names (default: every row of the table)")
    p.add_argument("--max-batch", type=int, default=32, help="largest batch of the engines' profile (default 32)")
    p.add_argument("--compute-capability", default=None,
                   help="TensorRT-RTX compute capabilities, e.g. 8.6,8.9 (default: its portable set)")
    p.add_argument("--work", default=None, help="folder for the exported graphs (default: a temporary one)")
    p.add_argument("--out-json", default="benchmarks/tensorrt.json", help="results as JSON")
    p.add_argument("--out-md", default="benchmarks/tensorrt.md", help="results as a BENCHMARKS.md section")
    return p.parse_args(argv)


def measure(args: argparse.Namespace, work: Path) -> dict:
    from edgereid.export.graph_variants import VARIANTS, write_variant
    from edgereid.export.preflight import check_graph
    from edgereid.export.tensorrt_rules import TARGETS
    from edgereid.runtime.engine_build import EngineBuildConfig, EngineBuildError, build_serialized_engine
    from edgereid.runtime.tensorrt_api import import_tensorrt

    h, w = (int(v) for v in args.img.lower().split("x"))
    wanted = args.variants.split(",") if args.variants else [v.name for v in VARIANTS]
    unknown = sorted(set(wanted) - {v.name for v in VARIANTS})
    if unknown:
        raise SystemExit(f"unknown variants {unknown}: the table has {[v.name for v in VARIANTS]}")
    lib = import_tensorrt("tensorrt-rtx")
    ccs = [c.strip() for c in args.compute_capability.split(",")] if args.compute_capability else None
    calib = np.random.default_rng(0).standard_normal((8, 3, h, w)).astype(np.float32)
    rows = []
    for v in tqdm([v for v in VARIANTS if v.name in wanted], desc="graphs", unit="graph"):
        t0 = time.perf_counter()
        path = write_variant(v, work, args.size, (h, w), calib)
        export_s = time.perf_counter() - t0
        preflight = {}
        for target in TARGETS:
            report = check_graph(path, target)
            preflight[target] = "pass" if report.passed else ", ".join(report.rules_broken())
        qdq = v.graph.startswith("qdq")
        cfg = EngineBuildConfig(precision="int8" if qdq else "fp32", max_batch=args.max_batch, library="tensorrt-rtx",
                                compute_capabilities=ccs)
        row = {"variant": v.name, "what": v.what, "onnx_bytes": path.stat().st_size, "export_s": round(export_s, 2),
               "preflight": preflight, "precision": cfg.precision, "batch": v.static_batch or "dynamic"}
        try:
            built = build_serialized_engine(path, cfg, lib, echo=False)
            row.update(parse_s=round(built.parse_seconds, 3), build_s=round(built.build_seconds, 2),
                       engine_bytes=len(built.engine), batch_profile=built.batch_profile, built=True)
        except EngineBuildError as exc:
            row.update(built=False, error=str(exc)[:300])
        rows.append(row)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"size": args.size, "img": [h, w], "library": lib.label, "compute_capabilities": ccs or ["default"],
            "cpu": _cpu(), "threads": os.cpu_count(), "python": platform.python_version(), "load_average": load,
            "rows": rows,
            "targets": {name: t.tensorrt for name, t in TARGETS.items()}}


def _cpu() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def markdown(res: dict, command: str) -> str:
    rows = res["rows"]
    targets = list(res["targets"])
    lines = ["## TensorRT without a GPU: parse/build on CPU, pre-flight per target", "",
             f"Command: `{command}`. {res['library']} parses and builds every graph form the export writes "
             f"({res['size']} at {res['img'][0]}x{res['img'][1]}, random weights), ahead of time on {res['cpu']} "
             f"({res['threads']} logical CPUs, no GPU), for "
             + ("its default portable set of GPUs (compute capability 8.0 and newer)"
                if res["compute_capabilities"] == ["default"] else
                "compute capability " + ", ".join(res["compute_capabilities"]))
             + ". Dynamic-batch graphs get the profile 1..32. Running the engines needs an RTX GPU: not measured."
             + (f" Load average at the end of the run: {res['load_average']:.1f} (a shared machine: times are "
                "indicative)." if res.get("load_average") is not None else ""),
             "", "| graph | precision | batch | ONNX MB | export s | parse s | build s | engine MB |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["built"]:
            lines.append(f"| {r['variant']} | {r['precision']} | {r['batch']} | {r['onnx_bytes'] / 1e6:.1f} | "
                         f"{r['export_s']:.1f} | {r['parse_s']:.2f} | {r['build_s']:.1f} | {r['engine_bytes'] / 1e6:.1f} |")
        else:
            lines.append(f"| {r['variant']} | {r['precision']} | {r['batch']} | {r['onnx_bytes'] / 1e6:.1f} | "
                         f"{r['export_s']:.1f} | refused | - | - |")
    lines += ["", "Pre-flight (`edgereid check-graph --target T`): pass, or the rules the graph breaks. "
              + "; ".join(f"{k} = {v}" for k, v in res["targets"].items()) + ".", "",
              "| graph | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
    for r in rows:
        lines.append(f"| {r['variant']} | " + " | ".join(r["preflight"][t] for t in targets) + " |")
    lines += ["", "jetpack5 refuses every graph with LayerNormalization (TensorRT 8.5 has no such layer): "
              "`--jetpack 5` exports the `*.jp5.onnx` graphs, which pass. jetpack6 refuses the int8 `codes` "
              "output (TensorRT 10.3 reaches int8 only through Q/DQ): export `--output embedding` for Jetson.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    command = "python bench/bench_tensorrt.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.work:
        work = Path(args.work)
        res = measure(args, work)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-trt-") as tmp:
            res = measure(args, Path(tmp))
    write_json_atomic(args.out_json, res)
    write_text_atomic(args.out_md, markdown(res, command.strip()))
    print(f"wrote {args.out_json} and {args.out_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
