"""Verify an exported ONNX file and fail loudly: opset, checker, static shapes.

Why each check exists: the dynamo exporter builds at opset 18 and converts down; when
the conversion fails it prints a traceback and *leaves the file at opset 18*, which TensorRT 8.x
and older runtimes reject. And a graph with unknown dims defeats TensorRT's static engine build
and OpenVINO's static compilation. So the written file is read back and checked, never trusted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class OnnxCheckError(ValueError):
    """An exported ONNX file breaks the export contract (the message names the file and the problem)."""


def _load(model_or_path):
    import onnx

    if isinstance(model_or_path, (str, Path)):
        path = Path(model_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ONNX file not found")
        return onnx.load(str(path)), str(path)
    return model_or_path, "<model>"


def check_opset(model_or_path, expected: int) -> int:
    """The default-domain opset must be exactly ``expected``."""
    proto, name = _load(model_or_path)
    got = [op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")]
    if got != [expected]:
        raise OnnxCheckError(f"{name}: opset_import of the default domain is {got or 'missing'}, expected [{expected}] "
                             "(the exporter leaves opset 18 when its down-conversion fails)")
    return expected


def _dims(value_info) -> list[int | str | None]:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None  # type: ignore[return-value]
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]


def check_static_shapes(model_or_path, dynamic_batch: bool = False, batch_size: int = 1) -> dict[str, Any]:
    """Shape inference must give every tensor a fully known shape, except the optional batch axis.

    With ``dynamic_batch`` the input and outputs must have a symbolic axis 0 and nothing else
    symbolic; intermediate tensors are then checked with the batch pinned to 2 (so a dim that is
    unknown for any reason other than the batch is still caught). Without it, the input's batch
    must equal ``batch_size`` and no tensor may have a symbolic or unknown dim.
    """
    import onnx

    proto, name = _load(model_or_path)
    proto = onnx.ModelProto.FromString(proto.SerializeToString())  # a copy we may edit
    graph_inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    input_names = {graph_inputs[0].name} if graph_inputs else set()  # the image input carries the batch
    for vi in list(graph_inputs) + list(proto.graph.output):
        dims = _dims(vi)
        if dims is None:
            raise OnnxCheckError(f"{name}: graph input/output {vi.name!r} has no shape")
        symbolic = [i for i, d in enumerate(dims) if isinstance(d, str) or d == 0]
        if dynamic_batch:
            if symbolic != [0]:
                raise OnnxCheckError(f"{name}: {vi.name!r} has shape {dims}; with a dynamic batch only axis 0 may be "
                                     "symbolic")
        elif symbolic:
            raise OnnxCheckError(f"{name}: {vi.name!r} has shape {dims} with symbolic dims at axes {symbolic}; "
                                 "expected a fully static shape")
        elif vi.name in input_names and dims[0] != batch_size:
            raise OnnxCheckError(f"{name}: input {vi.name!r} has batch {dims[0]}, expected {batch_size}")
    pinned = 2 if dynamic_batch else batch_size
    if dynamic_batch:
        for vi in list(graph_inputs) + list(proto.graph.output):
            vi.type.tensor_type.shape.dim[0].dim_value = pinned
    del proto.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError/ValidationError subclasses
        raise OnnxCheckError(f"{name}: shape inference failed: {exc}") from None
    known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    bad = []
    for node in inferred.graph.node:
        for out in node.output:
            if not out:
                continue
            vi = known.get(out)
            dims = _dims(vi) if vi is not None else None
            if dims is None or any(isinstance(d, str) or d == 0 for d in dims):
                bad.append(f"{out} ({node.op_type}: {dims if dims is not None else 'no shape'})")
    if bad:
        what = f"with the batch pinned to {pinned}" if dynamic_batch else "at a static batch"
        raise OnnxCheckError(f"{name}: {len(bad)} tensor(s) have unknown or symbolic dims {what}: "
                             + ", ".join(bad[:8]) + (" ..." if len(bad) > 8 else ""))
    return {"tensors": len(known), "dynamic_batch": dynamic_batch}


def check_onnx(model_or_path, opset: int = 17, dynamic_batch: bool = False, batch_size: int = 1) -> dict[str, Any]:
    """All checks: opset, ``onnx.checker`` (full), static shapes. Returns a small report for the manifest."""
    import onnx

    proto, name = _load(model_or_path)
    check_opset(proto, opset)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise OnnxCheckError(f"{name}: onnx.checker failed: {exc}") from None
    report = check_static_shapes(proto, dynamic_batch=dynamic_batch, batch_size=batch_size)
    ops = sorted({n.op_type for n in proto.graph.node})
    return {"opset": opset, "checker": "passed", "static_shapes": "passed", **report, "op_types": ops}
