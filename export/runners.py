"""One callable per way of running the model: ``runner(x: (N, 3, H, W) float32) -> (N, dim) outputs``.

Accuracy and benchmark code run the same images through torch, onnxruntime and OpenVINO; a graph
exported with a fixed batch gets its input split into that batch, the last one zero-padded and the
padding's outputs dropped, so callers never care which graphs are static.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

Runner = Callable[[np.ndarray], np.ndarray]


def _fixed_batch(fn: Runner, batch: int | None) -> Runner:
    if batch is None:
        return fn

    def run(x: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(0, len(x), batch):
            part = x[i:i + batch]
            n = len(part)
            if n < batch:
                part = np.concatenate([part, np.zeros((batch - n, *part.shape[1:]), part.dtype)])
            outs.append(np.asarray(fn(np.ascontiguousarray(part)))[:n])
        return np.concatenate(outs)

    return run


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
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return _fixed_batch(lambda b: sess.run(None, {name: b})[0], batch)


def openvino_runner(path: str | Path, batch: int | None = None, precision: str = "f32",
                    threads: int | None = None) -> Runner:
    """``precision``: f32 (exact) or bf16 (OpenVINO's default on AVX-512-BF16 CPUs); int8 IRs run their
    quantised ops in int8 either way and the rest at this precision."""
    import openvino as ov

    config: dict = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    out = compiled.output(0)
    return _fixed_batch(lambda b: np.array(request.infer({0: b})[out]), batch)


def graph_batch(path: str | Path) -> int | None:
    """The fixed batch of an ONNX file's input (None when dynamic)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in proto.graph.initializer}
    inp = next(i for i in proto.graph.input if i.name not in inits)
    d = inp.type.tensor_type.shape.dim[0]
    return d.dim_value if d.HasField("dim_value") else None
