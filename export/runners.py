"""One callable per way of running the model: ``runner(x: (N, 3, H, W) float32) -> (N, dim) outputs``.

Accuracy and benchmark code run the same images through torch, onnxruntime and OpenVINO, on files
that are not in a bundle yet (the runtime's backends run verified bundle artifacts). Sessions are
opened and fixed-batch graphs padded exactly as the runtime does (``onnxruntime_session``,
``openvino_config``, ``run_in_batches``), so callers never care which graphs are static.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from edgereid.runtime.backends.base import run_in_batches
from edgereid.runtime.backends.onnxruntime_backend import onnxruntime_session
from edgereid.runtime.backends.openvino_backend import openvino_config

Runner = Callable[[np.ndarray], np.ndarray]


def _batched(fn: Runner, batch: int | None) -> Runner:
    """A fixed-batch graph gets exactly ``batch`` rows a call (the runtime's padding); a dynamic one the whole input."""
    if batch is None:
        return fn
    return lambda x: run_in_batches(fn, x, batch, batch)


def torch_runner(module, threads: int | None = None) -> Runner:
    """A torch ``nn.Module`` in eval mode under ``inference_mode`` (torch imported only here)."""
    import torch

    module.eval()
    if threads:
        torch.set_num_threads(threads)

    @torch.inference_mode()
    def run(x: np.ndarray) -> np.ndarray:
        return module(torch.from_numpy(np.ascontiguousarray(x))).numpy()

    return run


def onnxruntime_runner(path: str | Path, batch: int | None = None, threads: int | None = None) -> Runner:
    sess = onnxruntime_session(path, threads)
    name = sess.get_inputs()[0].name
    return _batched(lambda b: sess.run(None, {name: b})[0], batch)


def openvino_runner(path: str | Path, batch: int | None = None, precision: str = "f32",
                    threads: int | None = None) -> Runner:
    """``precision``: f32 (exact) or bf16 (OpenVINO's default on AVX-512-BF16 CPUs); int8 IRs run their
    quantised ops in int8 either way and the rest at this precision."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", openvino_config(precision, threads))
    request = compiled.create_infer_request()
    out = compiled.output(0)
    return _batched(lambda b: np.array(request.infer({0: b})[out]), batch)
