"""Train one compressed-embedding model (what ``edgereid compress`` runs).

Methods (ALGORITHMS.md section 2):
- ``slice`` / ``lowrank``: from scratch (the paper: the head is in place from initialisation), or,
  with ``init_from``, fine-tuned from a dense checkpoint (the head starts as the slice of the dense
  model, BNNeck rows and classifier columns carried over).
- ``prune``: iterative dimension pruning from a dense checkpoint (required), walking the paper's
  sizes down to ``dim``, each stage retrained for ``stage_fraction`` of the dense model's epochs.
Quantisation: ``qat`` trains with fake-quantised ``bits``-bit embeddings wherever training happens
(scale seeded from the train split); ``bits`` < 32 without ``qat`` is post-training quantisation,
calibrated on the train split after training. The final model is evaluated through the codec.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import load_model, read_config, save_checkpoint, write_json_atomic
from ..config import BackboneConfig, EmbeddingConfig, ModelConfig
from ..engine import TrainConfig, fit, resolve_device
from ..models import build_model
from .convert import lowrank_from, slice_from, with_embedding
from .dim_prune import PruneSchedule, dense_train_seconds, iterative_prune
from .evaluate_codes import evaluate_model_codes
from .ptq import ptq_model
from .qat import prepare_qat
from .sizes import bytes_per_embedding, compression_ratio, prune_walk

METHODS = ("slice", "lowrank", "prune")


@dataclass
class CompressConfig:
    """One compressed model.

    base_epochs: pruning only: the "original epochs" a stage takes ``stage_fraction`` of (default: the
        dense checkpoint's own training epochs).
    """

    method: str = "slice"
    dim: int = 32
    bits: int = 32
    qat: bool = False
    init_from: str | None = None
    scale_mode: str = "calibrated"
    base_epochs: int | None = None
    stage_fraction: float = 0.2
    model: str = "vit_tiny"
    img_size: tuple[int, int] = (256, 128)
    pretrained: str | None = None

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"compression method {self.method!r}: expected one of {', '.join(METHODS)}")
        if self.bits not in (32, 8, 4, 1):
            raise ValueError(f"--bits {self.bits}: expected 32, 8, 4 or 1")
        if self.qat and self.bits == 32:
            raise ValueError("--qat needs --bits 8, 4 or 1")
        if self.method == "prune" and not self.init_from:
            raise ValueError("--method prune starts from a trained dense model: pass --init-from DENSE_CKPT")
        if self.dim < 1:
            raise ValueError(f"--dim must be >= 1, got {self.dim}")


def _dense_epochs(ckpt: str | Path) -> int:
    train = read_config(ckpt).get("train", {})
    if "epochs" not in train:
        raise ValueError(f"{ckpt}/config.json has no train.epochs: pass --base-epochs for the pruning budget")
    return int(train["epochs"])


def compress(cfg: CompressConfig, dataset, tcfg: TrainConfig, out_dir: str | Path) -> dict[str, Any]:
    """Train the compressed model, write its checkpoint and ``compress.json`` to ``out_dir``; return the record."""
    cfg.validate()
    out = Path(out_dir)
    device = resolve_device(tcfg.device)
    meta = {"compress_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}}
    start_seconds = 0.0
    t0 = time.time()

    def to_qat(m):
        return prepare_qat(m.to(device), dataset.train, cfg.bits, cfg.scale_mode, tcfg.eval_batch_size, device)

    if cfg.method == "prune":
        dense = load_model(cfg.init_from)
        start_seconds = dense_train_seconds(cfg.init_from)
        d = dense.cfg.feature_dim
        schedule = PruneSchedule(prune_walk(d, cfg.dim), cfg.base_epochs or _dense_epochs(cfg.init_from),
                                 cfg.stage_fraction)
        records = iterative_prune(dense, dataset, schedule, tcfg, out / "stages", start_seconds=start_seconds,
                                  metadata=meta, prepare=to_qat if cfg.qat else None)
        model = load_model(records[-1]["ckpt"]).to(device)
        own_seconds = float(records[-1]["total_train_seconds"]) - start_seconds
        stages = [{k: r[k] for k in ("dim", "stage_train_seconds", "total_train_seconds")} for r in records]
    else:
        if cfg.init_from:
            dense = load_model(cfg.init_from)
            start_seconds = dense_train_seconds(cfg.init_from)
            model = slice_from(dense, cfg.dim) if cfg.method == "slice" else lowrank_from(dense, cfg.dim)
        else:
            mcfg = ModelConfig(backbone=BackboneConfig.for_size(cfg.model, img_size=tuple(cfg.img_size)),
                               embedding=EmbeddingConfig(kind=cfg.method, dim=cfg.dim), num_classes=dataset.num_train_pids)
            model = build_model(mcfg, pretrained=cfg.pretrained)
        if cfg.qat:
            model = to_qat(model) if cfg.init_from else with_embedding(model, bits=cfg.bits, qat=True,
                                                                       scale_mode=cfg.scale_mode)
        fit(model, dataset, tcfg, out / "train", metadata=meta)
        model = load_model(out / "train").to(device)
        own_seconds = time.time() - t0
        stages = None
    if cfg.bits < 32 and not cfg.qat:
        model = ptq_model(model, dataset.train, cfg.bits, tcfg.eval_batch_size, device)
    total = start_seconds + own_seconds
    metrics = evaluate_model_codes(model, dataset, tcfg.eval_batch_size, device)
    d_full = model.cfg.feature_dim
    record = {
        "method": cfg.method, "dim": cfg.dim, "bits": cfg.bits, "quant": "qat" if cfg.qat else ("ptq" if cfg.bits < 32 else "float"),
        "bytes_per_embedding": bytes_per_embedding(cfg.dim, cfg.bits),
        "compression_ratio": round(compression_ratio(d_full, cfg.dim, cfg.bits), 3),
        "rank1": metrics["rank1"], "mAP": metrics["mAP"], "mINP": metrics["mINP"], "metrics": metrics,
        "train_seconds": round(own_seconds, 2), "total_train_seconds": round(total, 2),
        "init_from": cfg.init_from, "ckpt": str(out), "stages": stages,
    }
    save_checkpoint(model, out, metadata={**meta, "metrics": metrics,
                                          "compress": {k: record[k] for k in ("method", "dim", "bits", "quant",
                                                                              "train_seconds", "total_train_seconds")}})
    write_json_atomic(out / "compress.json", record)
    return record

