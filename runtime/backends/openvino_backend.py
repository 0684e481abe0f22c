"""OpenVINO backend (``pip install edgereid[openvino]``): the fastest CPU path (int8 IR from NNCF).

Compiles the artifact's IR (``xml`` + ``bin``) for a device (``CPU`` by default). On CPUs with
AVX-512 BF16 OpenVINO silently runs float graphs in bf16 (about 3e-2 error on embeddings), so
float32 artifacts are compiled with ``INFERENCE_PRECISION_HINT = f32`` unless the caller asks
otherwise (``inference_precision="bf16"`` trades accuracy for speed knowingly). Int8 artifacts
keep the plugin's default for the layers NNCF left in float.

A dynamic-batch model is compiled twice: reshaped to batch 1 (the camera-stream case; OpenVINO's
CPU plugin runs a static shape about a quarter faster than a dynamic one at batch 1 on the
2-core machine this was measured on) and as it is, for any other count; ``embed`` never pads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..bundle import Artifact, Bundle, BundleError
from ..tables import BACKENDS
from .base import Backend, BackendUnavailable
from .onnxruntime_backend import check_graph_metadata

__all__ = ["OpenVinoBackend", "import_openvino", "openvino_config"]


def import_openvino():
    """Import openvino or explain how to get it."""
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailable(f"the OpenVINO backend needs openvino, which is not installed ({exc}): "
                                 f"{BACKENDS['openvino'].install}") from None
    return openvino


def openvino_config(inference_precision: str | None = None, threads: int | None = None,
                    performance_hint: str | None = "LATENCY", extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``compile_model`` config every edgereid caller uses: latency hint, the inference precision
    (``f32`` keeps float graphs exact on CPUs that default to bf16), ``threads`` inference threads."""
    cfg: dict[str, Any] = {}
    if performance_hint:
        cfg["PERFORMANCE_HINT"] = performance_hint
    if inference_precision:
        cfg["INFERENCE_PRECISION_HINT"] = inference_precision
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    cfg.update(extra or {})
    return cfg


class OpenVinoBackend(Backend):
    """``openvino.Core().compile_model`` over the artifact's ``xml``/``bin`` files."""

    name = "openvino"

    def __init__(self, bundle: Bundle, artifact: Artifact | str | None = None, max_batch: int | None = None,
                 device: str = "CPU", inference_precision: str | None = None, threads: int | None = None,
                 performance_hint: str | None = "LATENCY", config: Mapping[str, Any] | None = None,
                 static_batch1: bool = True) -> None:
        super().__init__(bundle, artifact, max_batch)
        ov = import_openvino()
        xml = bundle.file(self.artifact, "xml")
        weights = bundle.file(self.artifact, "bin") if "bin" in self.artifact.files else None
        core = ov.Core()
        try:
            model = core.read_model(str(xml), str(weights) if weights else None)
        except Exception as exc:
            raise BundleError(f"{xml}: OpenVINO cannot read the model: {exc}") from None
        if inference_precision is None and self.artifact.precision in ("fp32", "f32", "float32"):
            inference_precision = "f32"
        self.config = cfg = openvino_config(inference_precision, threads, performance_hint, config)
        self._check_model(str(xml), model)
        try:
            self.compiled = core.compile_model(model, device, cfg)
        except Exception as exc:
            raise BundleError(f"{xml}: OpenVINO cannot compile the model for {device} with {cfg}: {exc}") from None
        self._request = self.compiled.create_infer_request()
        self._output = self.compiled.output(self.embedding_spec.output_name)
        self._request1 = None  # the batch-1 static compilation of a dynamic-batch model
        if static_batch1 and self.fixed_batch is None and model.inputs[0].get_partial_shape()[0].is_dynamic:
            single = core.read_model(str(xml), str(weights) if weights else None)
            single.reshape({single.inputs[0].any_name: ov.PartialShape([1, *self.input_shape])})
            compiled1 = core.compile_model(single, device, cfg)
            self._request1 = compiled1.create_infer_request()
            self._output1 = compiled1.output(self.embedding_spec.output_name)

    def _check_model(self, where: str, model) -> None:
        inputs = model.inputs
        if len(inputs) != 1:
            raise BundleError(f"{where}: expected 1 model input, got {len(inputs)}")
        names = inputs[0].get_names()
        if self.input_spec.name not in names:
            raise BundleError(f"{where}: model input is named {sorted(names)}, the manifest's input.name says "
                              f"{self.input_spec.name!r}")
        pshape = inputs[0].get_partial_shape()
        want = [self.fixed_batch, *self.input_shape]
        for axis, (dim, exp) in enumerate(zip(pshape, want)):
            if dim.is_static and exp is not None and dim.get_length() != exp:
                raise BundleError(f"{where}: model input has shape {pshape}, the manifest's input spec gives "
                                  f"{want} (axis {axis} differs)")
        out_name = self.embedding_spec.output_name
        outs = [o for o in model.outputs if out_name in o.get_names()]
        if not outs:
            raise BundleError(f"{where}: model has no output {out_name!r} (embedding.output_name); it has "
                              f"{[sorted(o.get_names()) for o in model.outputs]}")
        last = outs[0].get_partial_shape()[-1]
        if last.is_static and last.get_length() != self.embedding_spec.dim:
            raise BundleError(f"{where}: model output {out_name!r} has width {last.get_length()}, the manifest's "
                              f"embedding.dim says {self.embedding_spec.dim}")
        meta: dict[str, str] = {}
        try:  # an IR converted from our ONNX keeps its metadata props under rt_info "framework"
            if model.has_rt_info(["framework", "edgereid.input"]):
                meta["edgereid.input"] = model.get_rt_info(["framework", "edgereid.input"]).astype(str)
        except Exception:  # older OpenVINO without nested rt_info access: skip this extra check
            meta = {}
        check_graph_metadata(where, meta, self.bundle)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[0] == 1 and self._request1 is not None:
            self._request1.infer({0: batch})
            return self._request1.get_tensor(self._output1).data.copy()
        self._request.infer({0: batch})
        return self._request.get_tensor(self._output).data.copy()

    def describe(self) -> dict:
        out = super().describe()
        out["config"] = {k: str(v) for k, v in self.config.items()}
        return out

    def close(self) -> None:
        self._request = self._request1 = None
        self.compiled = None
