"""Quantisation-aware training of the embedding beyond the model's own fake quantiser.

The model (``models/embedding_quant.py``) already fake-quantises in the loop when
``EmbeddingConfig.qat`` is set; what lives here is the recipe the sweep uses to keep QAT cheap: start
from a trained float model, seed the scale with the codec's calibration on the train split (the
same scale PTQ would use, so QAT starts exactly at the PTQ point), then fine-tune a few epochs with
fake quantisation in the loop, the scale frozen for the last epoch(s)
(``TrainConfig.qat_freeze_epochs``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ..engine import TrainConfig, fit
from ..models.reid_model import ReIDModel
from .convert import with_embedding
from .ptq import calibrate_scale, normalised_embeddings


@dataclasses.dataclass
class QATConfig:
    """A QAT fine-tune: ``epochs`` at ``lr_scale`` x the training LR, no warm-up.

    freeze_epochs: epochs at the end with the calibrated scale frozen; None = all of them (the
        codec's train-split scale is the one deployed, so the fine-tune adapts the weights to it).
    """

    bits: int = 8
    epochs: int = 2
    lr_scale: float = 0.2
    scale_mode: str = "calibrated"
    freeze_epochs: int | None = None


def prepare_qat(model: ReIDModel, train_records, bits: int, scale_mode: str = "calibrated",
                batch_size: int = 128, device: str | torch.device = "cpu") -> ReIDModel:
    """The float ``model`` switched to QAT with ``bits``-bit codes, its scale seeded from the train split."""
    if bits not in (8, 4, 1):
        raise ValueError(f"QAT bits {bits}: expected 8, 4 or 1")
    emb = normalised_embeddings(model, train_records, batch_size, device, desc="calibration")
    scale = calibrate_scale(emb, bits)
    return with_embedding(model, bits=bits, qat=True, scale=scale, scale_mode=scale_mode)


def qat_finetune(model: ReIDModel, dataset, qcfg: QATConfig, train_cfg: TrainConfig, out_dir: str | Path,
                 metadata: dict[str, Any] | None = None) -> tuple[ReIDModel, dict[str, Any]]:
    """Fine-tune a float model with fake-quantised embeddings; the best checkpoint goes to ``out_dir``.

    Returns (the model after the last epoch, fit's summary).
    """
    from ..engine import resolve_device

    device = resolve_device(train_cfg.device)
    qmodel = prepare_qat(model.to(device), dataset.train, qcfg.bits, qcfg.scale_mode, train_cfg.eval_batch_size,
                         device)
    tcfg = dataclasses.replace(train_cfg, epochs=qcfg.epochs, lr=train_cfg.lr * qcfg.lr_scale, warmup_epochs=0.0,
                               eval_every=0, qat_freeze_epochs=qcfg.epochs if qcfg.freeze_epochs is None
                               else min(qcfg.freeze_epochs, qcfg.epochs))
    summary = fit(qmodel, dataset, tcfg, out_dir, metadata={"qat": dataclasses.asdict(qcfg), **(metadata or {})})
    return qmodel, summary
