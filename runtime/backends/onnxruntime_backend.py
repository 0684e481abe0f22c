"""ONNX Runtime backend: the default, installed with the runtime on every device.

Runs an artifact whose ``model`` file is an ONNX graph (float32, or the symmetric Q/DQ int8
graph). Before the first inference it checks that the graph is the one the manifest describes:
input name and spatial size, output name and width, and the ``edgereid.input`` metadata the
exporter writes into the graph, so a model swapped under a stale manifest is refused with the
differing field named rather than producing quietly wrong embeddings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..bundle import Artifact, Bundle, BundleError
from ..tables import BACKENDS
from .base import Backend, BackendUnavailable

__all__ = ["OnnxRuntimeBackend", "check_graph_metadata", "onnxruntime_session"]


def onnxruntime_session(path: str | Path, threads: int | None = None, providers: Sequence[str] | None = None):
    """An ``onnxruntime.InferenceSession`` opened the way every edgereid caller opens one: all graph
    optimisations, errors-only logging (ORT's warnings about unused initialisers are noise here), ``threads``
    intra-op threads (None: ORT's choice), the CPU provider unless others are named. Raises
    :class:`BackendUnavailable` when onnxruntime or a provider is missing; ORT's own errors pass through."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable(f"onnxruntime is not installed ({exc}): {BACKENDS['onnxruntime'].install}") from None
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    available = ort.get_available_providers()
    wanted = list(providers) if providers else ["CPUExecutionProvider"]
    missing = [p for p in wanted if p not in available]
    if missing:
        raise BackendUnavailable(f"onnxruntime providers {missing} are not available here (available: {available})")
    return ort.InferenceSession(str(path), sess_options=opts, providers=wanted)


def check_graph_metadata(where: str, meta: dict[str, str], bundle: Bundle) -> None:
    """Compare the graph's ``edgereid.input`` metadata (if any) with the manifest's input spec."""
    raw = meta.get("edgereid.input")
    if not raw:
        return
    try:
        graph_input = json.loads(raw)
    except json.JSONDecodeError:
        raise BundleError(f"{where}: metadata edgereid.input is not valid JSON") from None
    if not isinstance(graph_input, dict):
        raise BundleError(f"{where}: metadata edgereid.input is not a JSON object")
    manifest_input = bundle.input.to_dict()
    for key in ("height", "width", "channel_order", "scale", "mean", "std", "layout"):
        if key not in graph_input:
            continue
        a, b = graph_input[key], manifest_input[key]
        same = np.allclose(a, b, rtol=1e-6, atol=0) if key in ("scale", "mean", "std") else a == b
        if not same:
            raise BundleError(f"{where}: the graph's metadata says input.{key} = {a!r} but the manifest says "
                              f"{b!r}: the model and the manifest do not belong together")


class OnnxRuntimeBackend(Backend):
    """``onnxruntime.InferenceSession`` over the artifact's ``model`` file."""

    name = "onnxruntime"

    def __init__(self, bundle: Bundle, artifact: Artifact | str | None = None, max_batch: int | None = None,
                 threads: int | None = None, providers: Sequence[str] | None = None) -> None:
        super().__init__(bundle, artifact, max_batch)
        path = bundle.file(self.artifact, "model")
        try:
            self.session = onnxruntime_session(path, threads, providers)
        except BackendUnavailable:
            raise
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise BundleError(f"{path}: onnxruntime cannot load the model: {exc}") from None
        self._check_graph(str(path))

    def _check_graph(self, where: str) -> None:
        inputs = self.session.get_inputs()
        spec = self.input_spec
        if len(inputs) != 1:
            raise BundleError(f"{where}: expected 1 graph input, got {[i.name for i in inputs]}")
        gi = inputs[0]
        if gi.name != spec.name:
            raise BundleError(f"{where}: graph input is named {gi.name!r}, the manifest's input.name says {spec.name!r}")
        shape = list(gi.shape)
        want = [self.fixed_batch, *self.input_shape]
        if len(shape) != 4:
            raise BundleError(f"{where}: graph input {gi.name!r} has rank {len(shape)}, expected 4 ({spec.layout})")
        for axis, (got, exp) in enumerate(zip(shape, want)):
            if isinstance(got, int) and exp is not None and got != exp:
                raise BundleError(f"{where}: graph input {gi.name!r} has shape {shape}, the manifest's input spec "
                                  f"gives {want} (axis {axis} differs)")
        outputs = {o.name: o for o in self.session.get_outputs()}
        out_name = self.embedding_spec.output_name
        if out_name not in outputs:
            raise BundleError(f"{where}: graph has no output {out_name!r} (embedding.output_name); it has "
                              f"{list(outputs)}")
        last = outputs[out_name].shape[-1] if outputs[out_name].shape else None
        if isinstance(last, int) and last != self.embedding_spec.dim:
            raise BundleError(f"{where}: graph output {out_name!r} has width {last}, the manifest's embedding.dim "
                              f"says {self.embedding_spec.dim}")
        check_graph_metadata(where, self.session.get_modelmeta().custom_metadata_map, self.bundle)
        self._input_name = gi.name
        self._output_name = out_name

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self._output_name], {self._input_name: batch})[0]

    def close(self) -> None:
        self.session = None
