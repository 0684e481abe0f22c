"""ONNX -> OpenVINO IR (f32): ``ov.convert_model`` + ``ov.save_model(compress_to_fp16=False)``.

``ov.save_model`` compresses weights to fp16 by default; the bundle's ``openvino-fp32`` artifact must
hold the exact float weights (parity is checked against PyTorch at 1e-4), so compression is off.
The int8 IR comes from ``edgereid.calibration.nncf_openvino``.
"""

from __future__ import annotations

from pathlib import Path


def convert_to_ir(onnx_path: str | Path, xml_path: str | Path) -> tuple[Path, Path]:
    """Write ``xml_path`` and its ``.bin`` beside it; returns both paths."""
    import openvino as ov

    onnx_path, xml_path = Path(onnx_path), Path(xml_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: ONNX file not found")
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path, xml_path.with_suffix(".bin")
