"""Run every exported graph against PyTorch on the same input tensors and fail loudly on drift.

Float graphs must match within ``tol`` (1e-4 max abs difference) in onnxruntime and in OpenVINO
compiled with ``INFERENCE_PRECISION_HINT=f32`` (OpenVINO picks bf16 by default on AVX-512-BF16 CPUs,
which drifts by ~3e-2). Quantised outputs (integer codes, or their dequantised floats)
are compared in quantisation levels: a float difference of 1e-6 can flip a value sitting on a
rounding boundary by one level, so the test is "at most one level apart, on at most 1 % of the
coordinates" and the numbers go into the manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from edgereid.runtime.backends.base import run_in_batches

from .runners import onnxruntime_runner, openvino_runner, torch_runner


class ParityError(ValueError):
    pass


def run_onnxruntime(path: str | Path, x: np.ndarray, batch: int | None = None) -> np.ndarray:
    """Run an ONNX file on CPU; ``batch`` = the graph's fixed batch (None = feed everything at once)."""
    return onnxruntime_runner(path, batch)(x)


def run_openvino(model: str | Path, x: np.ndarray, batch: int | None = None, precision: str = "f32") -> np.ndarray:
    """Run an ONNX file or IR .xml on the CPU with OpenVINO at the given inference precision (f32 or bf16)."""
    return openvino_runner(model, batch, precision)(x)


def run_torch(module: torch.nn.Module, x: np.ndarray, batch: int | None = None) -> np.ndarray:
    run = torch_runner(module)
    return run(x) if batch is None else run_in_batches(run, x, batch, batch)


@dataclass
class Comparison:
    max_abs: float
    level_mismatch: float | None = None  # fraction of coordinates whose level differs (quantised outputs)
    max_level_diff: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"max_abs": self.max_abs}
        if self.level_mismatch is not None:
            out.update(level_mismatch=self.level_mismatch, max_level_diff=self.max_level_diff)
        return out


def compare(reference: np.ndarray, got: np.ndarray, *, scale: float | None = None, codes: bool = False) -> Comparison:
    """Difference between two outputs; ``scale`` given = quantised output (codes, or scale * codes)."""
    if reference.shape != got.shape:
        raise ParityError(f"output shapes differ: reference {reference.shape}, exported {got.shape}")
    ref = reference.astype(np.float64)
    out = got.astype(np.float64)
    max_abs = float(np.abs(ref - out).max()) if ref.size else 0.0
    if scale is None:
        return Comparison(max_abs)
    lr, lo = (ref, out) if codes else (np.rint(ref / scale), np.rint(out / scale))
    diff = np.abs(lr - lo)
    return Comparison(max_abs, float((diff > 0).mean()), int(diff.max()) if diff.size else 0)


def check(name: str, cmp: Comparison, tol: float, quantised: bool, max_mismatch: float = 0.01) -> None:
    if quantised:
        if cmp.max_level_diff is not None and (cmp.max_level_diff > 1 or cmp.level_mismatch > max_mismatch):
            raise ParityError(f"{name}: quantised output differs from PyTorch by up to {cmp.max_level_diff} levels "
                              f"on {cmp.level_mismatch:.2%} of coordinates (allowed: 1 level on {max_mismatch:.0%})")
    elif cmp.max_abs > tol:
        raise ParityError(f"{name}: max abs difference {cmp.max_abs:.3g} from PyTorch exceeds {tol:g}")


def parity_report(reference_module: torch.nn.Module, x: np.ndarray, graphs: dict[str, str | Path], *,
                  batch: int | None = None, tol: float = 1e-4, scale: float | None = None, codes: bool = False,
                  openvino: bool = True, raise_on_fail: bool = True) -> dict[str, Any]:
    """Run each float graph (name -> ONNX or IR path) in ORT (ONNX files only) and OpenVINO f32.

    ``scale``: the output is quantised with this step (compare in levels); ``codes``: it is the levels.
    Returns ``{name: {"onnxruntime_max_abs": ..., "openvino_f32_max_abs": ..., ...}}``.
    """
    ref = run_torch(reference_module, x, batch)
    report: dict[str, Any] = {"images": int(len(x)), "tolerance": tol}
    quantised = scale is not None
    for name, path in graphs.items():
        entry: dict[str, Any] = {}
        runs = []
        if str(path).endswith(".onnx"):
            runs.append(("onnxruntime", lambda p=path: run_onnxruntime(p, x, batch)))
        if openvino:
            runs.append(("openvino_f32", lambda p=path: run_openvino(p, x, batch, "f32")))
        for backend, fn in runs:
            cmp = compare(ref, fn(), scale=scale, codes=codes)
            entry[f"{backend}_max_abs"] = cmp.max_abs
            if cmp.level_mismatch is not None:
                entry[f"{backend}_level_mismatch"] = cmp.level_mismatch
                entry[f"{backend}_max_level_diff"] = cmp.max_level_diff
            if raise_on_fail:
                check(f"{name} ({backend}, {path})", cmp, tol, quantised)
        report[name] = entry
    return report


def load_images(paths: Sequence[str], input_spec: dict[str, Any]) -> np.ndarray:
    """Real images -> the graph input, through the runtime's preprocessing (the contract under test)."""
    from edgereid.calibration.calib_set import load_calibration_images

    return load_calibration_images(paths, input_spec)


def cosine_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Row-wise cosine between two embedding sets (float reference vs int8 artefact)."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return {"mean": float(cos.mean()), "min": float(cos.min())}
