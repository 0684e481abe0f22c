"""The runtime's extension tables: inference backends and bundle targets. One entry each; everything
that lists them reads them here.

``BACKENDS``: the manifest reader accepts an artifact only for a backend of this table, with the
files that backend needs; ``open_backend`` imports the entry's class; ``reid-runtime --backend``
offers the names; a backend whose library is missing says what to install (``install``). Adding a
backend is one entry here and its class in ``backends/`` (the tests loop over the table).

``TARGETS``: what ``edgereid export --target`` can build and a manifest may name; the exporter's
steps for each live in ``edgereid.export.targets`` (same names, checked at import).

Standard library only: the manifest reader (``bundle.py``) imports this before any backend.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BACKENDS", "TARGETS", "BackendInfo", "TargetInfo"]


@dataclass(frozen=True)
class BackendInfo:
    """An inference backend: which library runs which artifact files."""

    name: str  # as written in a manifest's artifacts[].backend
    module: str  # edgereid.runtime.backends.<module>
    cls: str  # the Backend subclass in it
    library: str  # import name of the library it needs (looked up without importing it)
    install: str  # how to get that library
    files: tuple[str, ...]  # file roles every artifact of this backend has (others are optional)
    formats: str  # what those files are


BACKENDS: dict[str, BackendInfo] = {b.name: b for b in (
    BackendInfo("onnxruntime", "onnxruntime_backend", "OnnxRuntimeBackend", "onnxruntime",
                "pip install onnxruntime (or onnxruntime-gpu; it is a dependency of edgereid)", ("model",),
                "ONNX graph, float32 or symmetric Q/DQ int8"),
    BackendInfo("openvino", "openvino_backend", "OpenVinoBackend", "openvino", "pip install edgereid[openvino]",
                ("xml",), "OpenVINO IR (model.xml + model.bin), f32 or NNCF int8"),
    BackendInfo("tensorrt", "tensorrt_backend", "TensorRTBackend", "tensorrt",
                "TensorRT ships with JetPack; on x86-64 pip install edgereid[tensorrt] (or edgereid[tensorrt-rtx] "
                "for TensorRT-RTX engines)", ("engine",), "serialized TensorRT or TensorRT-RTX engine"),
)}


@dataclass(frozen=True)
class TargetInfo:
    """An export target: the device family a bundle is built for."""

    name: str  # as written in a manifest's ``target`` and given to ``edgereid export --target``
    summary: str  # what the bundle holds


TARGETS: dict[str, TargetInfo] = {t.name: t for t in (
    TargetInfo("onnx", "float + Q/DQ int8 ONNX"),
    TargetInfo("cpu", "the ONNX graphs + OpenVINO IR f32 and NNCF int8"),
    TargetInfo("jetson", "ONNX for TensorRT (pre-flight for TensorRT 10.3, or 8.5 with --jetpack 5), engines when "
                         "TensorRT is importable, BUILD_ENGINE.md"),
    TargetInfo("rtx", "the ONNX graphs + TensorRT-RTX engines (fp32, int8) built at export for RTX GPUs (needs "
                      "edgereid[tensorrt-rtx], no GPU)"),
)}
