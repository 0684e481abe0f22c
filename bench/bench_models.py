"""Batch-1 CPU latency and accuracy of ReID models across runtimes: torch eager, onnxruntime, OpenVINO.

For each model (``--model NAME=CHECKPOINT``, the first one is the reference) this exports the static
ONNX, the OpenVINO IR and the int8 artefacts (NNCF IR and Q/DQ ONNX, calibrated on the TRAIN split),
then measures, on the same real image:

- torch eager float32, onnxruntime float32 and int8 (Q/DQ),
- OpenVINO f32, bf16 (its default on AVX-512-BF16 CPUs), int8 (rest f32) and int8 (rest bf16),

batch 1, median and p90 of timed calls after a warm-up. Each runner is timed in a process of its
own (runtimes sharing a process fight over the cores with their worker threads), in interleaved
rounds so that load from other processes on a shared machine spreads over all of them alike.
Accuracy (mAP, rank-1 on the data set's query/gallery, standard protocol) and the embedding cosine
to torch float32 are measured for every runner beside its latency.

    python bench/bench_models.py --model dense=RUN_DENSE --model pruned=RUN_PRUNED --data runs/synth \\
        --out-md benchmarks/model_latency.md --out-json benchmarks/model_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
from edgereid.data.atomic import write_json_atomic, write_text_atomic
from edgereid.runtime.timing import latency_stats, time_calls


def _parse_model(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--model expects NAME=CHECKPOINT, got {text!r}")
    name, path = text.split("=", 1)
    return name, path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", type=_parse_model, default=None,
                   help="NAME=CHECKPOINT, repeatable; the first is the reference (its torch eager fp32 = 1.0x)")
    p.add_argument("--data", default=None, help="data set root (train: calibration; query/gallery: accuracy)")
    p.add_argument("--dataset", default="market1501", help="data set loader name")
    p.add_argument("--work", default="runs/bench_models", help="folder for the exported artefacts")
    p.add_argument("--calib-size", type=int, default=256, help="calibration images from the train split")
    p.add_argument("--runs", type=int, default=300, help="timed batch-1 calls per runner (over all rounds)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    p.add_argument("--warmup", type=int, default=30, help="untimed calls per runner before timing")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for every runtime (default 1: on a loaded 2-core machine torch's OpenMP barriers "
                        "with 2 threads made torch eager 100x slower; use 2 on an idle machine)")
    p.add_argument("--no-accuracy", action="store_true", help="latency only")
    p.add_argument("--out-md", default="benchmarks/model_latency.md", help="markdown section to write")
    p.add_argument("--out-json", default="benchmarks/model_latency.json", help="JSON results to write")
    p.add_argument("--time-one", nargs=3, metavar=("MODEL_DIR", "RUNNER", "CKPT"), default=None,
                   help=argparse.SUPPRESS)  # internal: the per-runner timing subprocess
    return p


def prepare(name: str, ckpt: str, dataset, work: Path, calib_size: int) -> dict[str, Any]:
    """Export one checkpoint's artefacts; returns the model, its paths and its cost."""
    from edgereid.calibration.calib_set import (
        CalibrationConfig,
        calibration_set_from_dataset,
        load_calibration_images,
    )
    from edgereid.calibration.nncf_openvino import quantize_openvino_int8
    from edgereid.calibration.onnx_qdq import quantize_onnx_qdq
    from edgereid.export.onnx_export import DeployableReID, export_onnx
    from edgereid.export.openvino_ir import convert_to_ir
    from edgereid.train.checkpoint import load_model
    from edgereid.train.prune.cost import count_macs, count_params

    out = work / name
    model = load_model(ckpt)
    res = export_onnx(model, out / "model.onnx")
    convert_to_ir(out / "model.onnx", out / "openvino" / "model.xml")
    calib = calibration_set_from_dataset(dataset, CalibrationConfig(size=calib_size))
    images = load_calibration_images(calib.paths, res.input)
    quantize_openvino_int8(out / "model.onnx", images, out / "openvino-int8" / "model.xml", batch=1)
    quantize_onnx_qdq(out / "model.onnx", out / "model.int8.qdq.onnx", images, batch=1)
    bb = model.cfg.backbone
    return {"name": name, "ckpt": ckpt, "module": DeployableReID(model), "input": res.input, "dir": out,
            "params": count_params(model)["deploy"], "macs": count_macs(model)["total"],
            "tokens_per_layer": model.backbone.tokens_per_layer, "heads_per_layer": bb.heads_per_layer,
            "drop_layers": bb.drop_layers, "img_size": list(bb.img_size), "arch": bb.name}


RUNNERS = {  # key -> (runtime, precision)
    "torch-fp32": ("torch eager", "fp32"),
    "onnxruntime-fp32": ("onnxruntime", "fp32"),
    "onnxruntime-int8": ("onnxruntime", "int8 (Q/DQ)"),
    "openvino-f32": ("OpenVINO", "f32"),
    "openvino-bf16": ("OpenVINO", "bf16"),
    "openvino-int8-f32": ("OpenVINO", "int8 (rest f32)"),
    "openvino-int8": ("OpenVINO", "int8 (rest bf16)"),
}


def make_runner(key: str, model_dir: Path, ckpt: str, threads: int):
    """One runner of one exported model (only its own runtime gets imported)."""
    from edgereid.export.runners import onnxruntime_runner, openvino_runner, torch_runner

    d = Path(model_dir)
    if key == "torch-fp32":
        from edgereid.export.onnx_export import DeployableReID
        from edgereid.train.checkpoint import load_model

        return torch_runner(DeployableReID(load_model(ckpt)), threads)
    if key == "onnxruntime-fp32":
        return onnxruntime_runner(d / "model.onnx", 1, threads)
    if key == "onnxruntime-int8":
        return onnxruntime_runner(d / "model.int8.qdq.onnx", 1, threads)
    if key == "openvino-f32":
        return openvino_runner(d / "openvino" / "model.xml", 1, "f32", threads)
    if key == "openvino-bf16":
        return openvino_runner(d / "openvino" / "model.xml", 1, "bf16", threads)
    if key == "openvino-int8-f32":
        return openvino_runner(d / "openvino-int8" / "model.xml", 1, "f32", threads)
    if key == "openvino-int8":
        return openvino_runner(d / "openvino-int8" / "model.xml", 1, "bf16", threads)
    raise ValueError(f"unknown runner {key!r}: expected one of {sorted(RUNNERS)}")


def time_one(args: argparse.Namespace) -> int:
    """Subprocess mode: time one runner in a process of its own and print the call times as JSON.

    One process per runtime: run in one process, torch's OpenMP threads and OpenVINO's/onnxruntime's
    spinning workers fight over the 2 cores (torch ran 50x slower right after OpenVINO here).
    """
    model_dir, key, ckpt = args.time_one
    run = make_runner(key, Path(model_dir), ckpt, args.threads)
    x = np.load(Path(model_dir) / "bench_input.npy")
    print(json.dumps(time_calls(lambda _i: run(x), args.runs, args.warmup)[0]))  # seconds per call
    return 0


def time_runners(jobs: list[tuple[str, str, Path, str]], runs: int, rounds: int, warmup: int,
                 threads: int) -> dict[tuple[str, str], dict]:
    """(model, runner key, model dir, ckpt) jobs, each timed in its own subprocess, in ``rounds``
    interleaved passes (load from other processes spreads over every runner alike)."""
    import subprocess

    times: dict[tuple[str, str], list[float]] = {(j[0], j[1]): [] for j in jobs}
    per_round = max(1, runs // rounds)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for r in range(rounds):
        for name, key, model_dir, ckpt in jobs:
            cmd = [sys.executable, __file__, "--time-one", str(model_dir), key, ckpt, "--threads", str(threads),
                   "--runs", str(per_round), "--warmup", str(warmup)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise RuntimeError(f"timing {name}/{key} failed:\n{proc.stderr[-2000:]}")
            times[(name, key)] += json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"[bench] round {r + 1}/{rounds} {name}/{key}: median "
                  f"{latency_stats(times[(name, key)])['median_ms']:.2f} ms", file=sys.stderr, flush=True)
    return {k: {n: latency_stats(ts)[n] for n in ("median_ms", "p90_ms", "mean_ms", "calls")} for k, ts in times.items()}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.time_one:
        return time_one(args)
    if not args.model or not args.data:
        build_parser().error("--model and --data are required")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from edgereid.calibration.calib_set import load_calibration_images
    from edgereid.data import build_dataset
    from edgereid.export.accuracy import evaluate_runners

    dataset = build_dataset(args.dataset, args.data)
    work = Path(args.work)
    results: dict[str, Any] = {"machine": _machine(), "threads": args.threads, "runs": args.runs,
                               "data": args.data, "models": {}}
    models = []
    for name, ckpt in args.model:
        print(f"[bench] exporting {name} ({ckpt})", file=sys.stderr, flush=True)
        m = prepare(name, ckpt, dataset, work, args.calib_size)
        np.save(m["dir"] / "bench_input.npy", load_calibration_images([dataset.query[0][0]], m["input"]))
        models.append(m)
        results["models"][name] = {k: m[k] for k in ("ckpt", "params", "macs", "tokens_per_layer", "heads_per_layer",
                                                     "drop_layers", "img_size", "arch")}
    acc: dict[tuple[str, str], dict] = {}
    if not args.no_accuracy:
        for m in models:
            print(f"[bench] accuracy of {m['name']} on {len(dataset.query)} query / {len(dataset.gallery)} gallery",
                  file=sys.stderr, flush=True)
            runners = {k: make_runner(k, m["dir"], m["ckpt"], args.threads) for k in RUNNERS}
            res = evaluate_runners(dataset.query, dataset.gallery, m["input"], runners, "torch-fp32")
            acc.update({(m["name"], k): v for k, v in res.items()})
            del runners
    jobs = [(m["name"], k, m["dir"], m["ckpt"]) for m in models for k in RUNNERS]
    print(f"[bench] timing {len(jobs)} runners, batch 1, {args.threads} threads, one process each",
          file=sys.stderr, flush=True)
    lat = time_runners(jobs, args.runs, args.rounds, args.warmup, args.threads)
    ref_ms = lat[(models[0]["name"], "torch-fp32")]["median_ms"]
    ref_map = acc.get((models[0]["name"], "torch-fp32"), {}).get("mAP")
    rows = []
    for name, key, _, _ in jobs:
        runtime, precision = RUNNERS[key]
        row = {"model": name, "runner": key, "runtime": runtime, "precision": precision, **lat[(name, key)],
               "speedup_vs_reference": ref_ms / lat[(name, key)]["median_ms"]}
        if (name, key) in acc:
            a = acc[(name, key)]
            row.update(mAP=a["mAP"], rank1=a["rank1"], cosine_to_torch=a.get("cosine_to_torch-fp32_mean", 1.0))
            if ref_map is not None:
                row["mAP_delta_points_vs_reference"] = 100 * (a["mAP"] - ref_map)
        rows.append(row)
    results["rows"] = rows
    write_json_atomic(args.out_json, results)
    write_text_atomic(args.out_md, markdown(results, argv if argv is not None else sys.argv[1:]))
    print(f"wrote {args.out_md} and {args.out_json}")
    return 0


def markdown(results: dict[str, Any], argv: list[str]) -> str:
    rows = results["rows"]
    ref = next(iter(results["models"]))
    lines = ["## Model latency on CPU (batch 1) and accuracy", "",
             f"Command: `python bench/bench_models.py {' '.join(argv)}`", "",
             f"Machine: {results['machine']}; {results['threads']} thread(s) for every runtime; median of "
             f"{results['runs']} timed calls per runner (one process per runner, interleaved rounds) on one real image (shared machine: "
             "figures vary by about 30 %). Accuracy: standard Market-1501 protocol on the data set's query/gallery; "
             "cosine = mean embedding cosine to the same model in torch fp32. Speed-up is against the "
             f"`{ref}` model in torch eager fp32. int8 artefacts were calibrated on train-split images only.", ""]
    for name, m in results["models"].items():
        lines.append(f"- `{name}`: {m['arch']} at {m['img_size'][0]}x{m['img_size'][1]}, {m['params'] / 1e6:.2f} M "
                     f"params, {m['macs'] / 1e6:.0f} M MACs, tokens per layer {m['tokens_per_layer']}, heads "
                     f"{m['heads_per_layer'] or 'all'}, drop layers {m['drop_layers'] or 'none'} ({m['ckpt']})")
    lines += ["", "| model | runtime | precision | median ms | p90 ms | speed-up | mAP | rank-1 | cosine |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        acc = (f"{100 * r['mAP']:.2f} | {100 * r['rank1']:.2f} | {r['cosine_to_torch']:.4f}" if "mAP" in r
               else "- | - | -")
        lines.append(f"| {r['model']} | {r['runtime']} | {r['precision']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} "
                     f"| {r['speedup_vs_reference']:.2f}x | {acc} |")
    ref_row = next((r for r in rows if r["model"] == ref and r["runner"] == "torch-fp32"), {})
    if "mAP" in ref_row and ref_row["mAP"] < 0.05:
        lines += ["", f"Note: `{ref}` in torch fp32 reaches only {100 * ref_row['mAP']:.1f} mAP (near chance): these "
                      "checkpoints are barely trained, so the accuracy columns say nothing about what pruning or int8 "
                      "cost; rerun the command with trained checkpoints."]
    if all("mAP" not in r for r in rows):
        lines += ["", "Latency only (--no-accuracy): random-weight checkpoints at the deployment resolution."]
    best = [r for r in rows if r["model"] != ref and r["runner"] in ("openvino-int8", "openvino-int8-f32")]
    if best:
        lines.append("")
        for r in best:
            delta = (f", {r['mAP_delta_points_vs_reference']:+.2f} mAP points vs {ref} torch fp32"
                     if "mAP_delta_points_vs_reference" in r else "")
            lines.append(f"**{r['model']} in OpenVINO {r['precision']}**: {r['speedup_vs_reference']:.2f}x faster than "
                         f"{ref} in torch eager fp32{delta} (target: >= 3x within 1 mAP point).")
    return "\n".join(lines) + "\n"


def _machine() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    return f"{cpu}, {os.cpu_count()} logical CPUs"


if __name__ == "__main__":
    sys.exit(main())
