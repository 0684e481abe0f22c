"""Post-training quantisation of the embedding: int8 / 4-bit / 1-bit codes with one scale.

The scale is calibrated on the TRAIN split (never on query/gallery) by the runtime codec
(``edgereid.runtime.codec.calibrate_scale``), from the model's L2-normalised float embeddings, so
the torch side and the device agree on one definition. The scale is written into the model's
``EmbeddingConfig`` (bits, scale, qat=False) and so into the checkpoint's ``config.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from edgereid.runtime import codec

from ..checkpoint import load_model, read_config, save_checkpoint
from ..evaluate import extract_features
from ..models.reid_model import ReIDModel
from .convert import with_embedding


def normalised_embeddings(model: ReIDModel, records, batch_size: int = 128, device: str | torch.device = "cpu",
                          workers: int = 0, desc: str = "embeddings") -> np.ndarray:
    """The model's float, L2-normalised embeddings (before any quantisation), float32 (N, dim)."""
    raw = extract_features(model, records, tuple(model.cfg.backbone.img_size), batch_size, device, workers,
                           desc=desc, raw=True)
    norm = np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
    return (raw / norm).astype(np.float32)


def calibrate_scale(train_embeddings: np.ndarray, bits: int) -> float:
    """The codec's scale for ``bits``-bit codes of these (normalised) train embeddings."""
    if train_embeddings.ndim != 2 or len(train_embeddings) == 0:
        raise ValueError(f"calibration needs a non-empty (N, dim) array of train embeddings, got shape "
                         f"{train_embeddings.shape}")
    return float(codec.calibrate_scale(train_embeddings, bits))


def quantize_model(model: ReIDModel, bits: int, scale: float) -> ReIDModel:
    """The same model with a post-training quantised embedding (eval output = dequantised codes)."""
    if bits not in (8, 4, 1):
        raise ValueError(f"post-training quantisation bits {bits}: expected 8, 4 or 1")
    if not scale > 0:
        raise ValueError(f"quantisation scale must be positive, got {scale}")
    return with_embedding(model, bits=bits, scale=float(scale), qat=False).eval()


def ptq_model(model: ReIDModel, train_records, bits: int, batch_size: int = 128,
              device: str | torch.device = "cpu") -> ReIDModel:
    """Calibrate on ``train_records`` and return the quantised model."""
    emb = normalised_embeddings(model, train_records, batch_size, device, desc="calibration")
    return quantize_model(model, bits, calibrate_scale(emb, bits))


def ptq_checkpoint(src_ckpt: str | Path, dataset, bits: int, out_dir: str | Path, batch_size: int = 128,
                   device: str | torch.device = "cpu") -> Path:
    """Write a copy of ``src_ckpt`` whose config carries the calibrated ``bits``-bit scale."""
    t0 = time.time()
    model = load_model(src_ckpt).to(device)
    quant = ptq_model(model, dataset.train, bits, batch_size, device)
    meta: dict[str, Any] = {k: v for k, v in read_config(src_ckpt).items() if k not in ("format", "version", "model")}
    meta["ptq"] = {"bits": bits, "scale": float(quant.quant.scale), "calibration": "train split",
                   "source": str(src_ckpt), "seconds": round(time.time() - t0, 2)}
    return save_checkpoint(quant, out_dir, metadata=meta)
