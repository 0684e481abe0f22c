"""``edgereid calibrate``: int8 artefacts from a float ONNX graph and a list of TRAIN images.

Works on files only (an exported ONNX + images), importing nothing but ``edgereid.runtime``, so it
runs on a machine without torch. Give it train-split images (``--train-dir`` or ``--list``): never
the query or gallery that the accuracy is measured on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgereid.data.atomic import write_json_atomic

METHODS = ("qdq", "openvino", "scale")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="int8 calibration of an exported ONNX (Q/DQ ONNX, OpenVINO int8, scale)",
                       description="Draw a stratified calibration set from TRAIN images and write int8 artefacts of "
                                   "a float ONNX graph: a symmetric Q/DQ ONNX (TensorRT 10 / onnxruntime), an "
                                   "NNCF OpenVINO int8 IR, and the embedding's integer-code scale.")
    p.add_argument("--onnx", required=True, help="float32 ONNX exported by `edgereid export` (carries its input spec)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--train-dir", help="folder of TRAIN images (Market-1501 names give identity/camera)")
    src.add_argument("--list", help="text file: one train image per line, 'path' or 'path pid camid'")
    p.add_argument("--out", required=True, help="output folder for the artefacts and calibration.json")
    p.add_argument("--size", type=int, default=256, help="calibration images (stratified over identities/cameras)")
    p.add_argument("--seed", type=int, default=0, help="seed of the stratified draw")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated subset of {', '.join(METHODS)} (default: all)")
    p.add_argument("--bits", type=int, default=8, choices=(8, 4, 1), help="embedding code width for the scale")
    p.add_argument("--percentile", type=float, default=99.99, help="percentile of |e| mapped to the top level")
    p.add_argument("--qdq-method", default="minmax", choices=("minmax", "entropy", "percentile"),
                   help="onnxruntime activation calibration method for the Q/DQ graph")
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .calib_set import (
        CalibrationConfig,
        calibration_set_from_records,
        input_spec_from_onnx,
        load_calibration_images,
        read_image_list,
        scan_train_folder,
    )

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise ValueError(f"--methods: unknown {unknown or 'empty'}; expected a subset of {', '.join(METHODS)}")
    onnx_path = Path(args.onnx)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"--onnx {onnx_path}: file not found")
    spec = input_spec_from_onnx(onnx_path)
    batch = None if spec.get("batch") == "dynamic" else int(spec.get("batch", 1))
    records = scan_train_folder(args.train_dir) if args.train_dir else read_image_list(args.list)
    calib = calibration_set_from_records(records, CalibrationConfig(size=args.size, seed=args.seed),
                                         source=f"train images from {args.train_dir or args.list}")
    images = load_calibration_images(calib.paths, spec)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    list_path = calib.write_list(out / "calibration_list.txt")
    report: dict = {"onnx": str(onnx_path), "calibration": calib.summary(), "outputs": {"list": str(list_path)}}
    if "scale" in methods:
        from .embedding_scale import calibrate_embedding_scale, embeddings_from_onnx

        report["embedding_scale"] = calibrate_embedding_scale(embeddings_from_onnx(onnx_path, images, batch),
                                                              bits=args.bits, percentile=args.percentile)
    if "qdq" in methods:
        from .onnx_qdq import quantize_onnx_qdq

        dst = out / "model.int8.qdq.onnx"
        report["qdq"] = quantize_onnx_qdq(onnx_path, dst, images, batch=batch, method=args.qdq_method)
        report["outputs"]["qdq"] = str(dst)
    if "openvino" in methods:
        from .nncf_openvino import quantize_openvino_int8

        xml, _ = quantize_openvino_int8(onnx_path, images, out / "openvino-int8" / "model.xml", batch=batch)
        report["outputs"]["openvino_int8"] = str(xml)
    summary = out / "calibration.json"
    write_json_atomic(summary, report)
    print(json.dumps(report.get("embedding_scale", {}), indent=2))
    for name, path in report["outputs"].items():
        print(f"wrote {name}: {path}")
    print(f"wrote {summary}")
    return 0
