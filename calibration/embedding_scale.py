"""The embedding's integer-code scale from calibration-set embeddings (post-training, no QAT).

A model trained with int8 QAT carries its scale; any other model gets one here: run the float
graph on the calibration images (train split), then ``runtime.codec.calibrate_scale`` (a high
percentile of |e| mapped to the largest level), the same rule the runtime and training use, so the
gallery codes the device writes match what was measured at export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from edgereid.runtime.codec import calibrate_scale


def embeddings_from_onnx(onnx_path: str | Path, images: np.ndarray, batch: int | None = None) -> np.ndarray:
    """Float embeddings of ``images`` through onnxruntime (``batch`` = the graph's fixed batch)."""
    from edgereid.runtime.backends.onnxruntime_backend import onnxruntime_session

    sess = onnxruntime_session(onnx_path)
    inp = sess.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
    b = batch or fixed or len(images)
    usable = (len(images) // b) * b
    if usable == 0:
        raise ValueError(f"{len(images)} images are fewer than the graph's batch {b}")
    out = [sess.run(None, {inp.name: np.ascontiguousarray(images[i:i + b])})[0] for i in range(0, usable, b)]
    emb = np.concatenate(out)
    if emb.dtype.kind != "f":
        raise ValueError(f"{onnx_path}: outputs {emb.dtype} codes, not float embeddings: calibrate the scale on the "
                         "float graph")
    return emb


def calibrate_embedding_scale(embeddings: np.ndarray, bits: int = 8, percentile: float = 99.99) -> dict[str, Any]:
    """``{"bits", "scale", "percentile", "images", "scale_source": "calibration"}`` for the manifest."""
    e = np.asarray(embeddings, dtype=np.float32)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be (N, dim), got shape {e.shape}")
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    e = e / np.maximum(norms, 1e-12)  # codes are taken of the L2-normalised embedding
    scale = calibrate_scale(e, bits=bits, percentile=percentile)
    return {"bits": int(bits), "scale": float(scale), "percentile": float(percentile), "images": int(len(e)),
            "scale_source": "calibration"}
