"""Train one compressed-embedding model (what ``edgereid compress`` runs).

Methods (arXiv 2405.14730), one entry each of ``METHODS``:
- ``slice`` / ``lowrank``: from scratch (the paper: the head is in place from initialisation), or,
  with ``init_from``, fine-tuned from a dense checkpoint (the head starts as the slice of the dense
  model, BNNeck rows and classifier columns carried over).
- ``prune``: iterative dimension pruning from a dense checkpoint (required), walking the paper's
  sizes down to ``dim``, each stage retrained for ``stage_fraction`` of the dense model's epochs.
- ``full``: the equal-budget control: the dense checkpoint (required) fine-tuned by the same command,
  same epochs and schedule, with its full embedding (``dim`` is ignored): a compressed model's delta
  against it is the compression's, not the extra epochs'.
Quantisation: ``qat`` trains with fake-quantised ``bits``-bit embeddings wherever training happens
(scale seeded from the train split); ``bits`` < 32 without ``qat`` is post-training quantisation,
calibrated on the train split after training. The final model is evaluated through the codec.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgereid.data.atomic import write_json_atomic
from edgereid.data.flags import option

from ..config import BackboneConfig, EmbeddingConfig, ModelConfig
from .sizes import bytes_per_embedding, compression_ratio, prune_walk

if TYPE_CHECKING:
    from ..engine import TrainConfig

# The torch side (checkpoint, engine, models, convert, dim_prune, ...) is imported inside the functions:
# ``edgereid --help`` and the CLI choices read METHODS without loading torch.


@dataclass
class CompressConfig:
    """One compressed model.

    base_epochs: pruning only: the "original epochs" a stage takes ``stage_fraction`` of (default: the
        dense checkpoint's own training epochs).
    """

    method: str = option("slice", lambda: "; ".join(f"{m.name}: {m.help}" for m in METHODS.values()),
                         choices=lambda: list(METHODS))
    dim: int | None = option(None, "compressed embedding size K (required except for the control, full)")
    bits: int = option(32, "embedding code width: 32 = float; 8/4 = integer codes; 1 = sign bits",
                       choices=(32, 8, 4, 1))
    qat: bool = option(False, "quantisation-aware training (else --bits < 32 is post-training)")
    init_from: str | None = option(None, "dense checkpoint to start from (required for prune; slice/lowrank then "
                                         "fine-tune)")
    scale_mode: str = option("calibrated", "QAT scale: calibrated running percentile (frozen late) or learned (LSQ)",
                             choices=("calibrated", "learned"))
    base_epochs: int | None = option(None, "prune: the original epochs each stage takes --stage-fraction of "
                                           "(default: the dense run's)")
    stage_fraction: float = option(0.2, "prune: retraining per stage as a fraction of the original epochs")
    model: str = "vit_tiny"
    img_size: tuple[int, int] = (256, 128)
    pretrained: str | None = None

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"compression method {self.method!r}: expected one of {', '.join(METHODS)}")
        method = METHODS[self.method]
        if self.bits not in (32, 8, 4, 1):
            raise ValueError(f"--bits {self.bits}: expected 32, 8, 4 or 1")
        if self.qat and self.bits == 32:
            raise ValueError("--qat needs --bits 8, 4 or 1")
        if method.needs_dense and not self.init_from:
            raise ValueError(f"--method {method.name} starts from a trained dense model: pass --init-from DENSE_CKPT")
        if self.dim is None and not method.is_control:
            raise ValueError(f"--method {method.name} needs --dim K (the compressed embedding size)")
        if self.dim is not None and self.dim < 1:
            raise ValueError(f"--dim must be >= 1, got {self.dim}")


def _dense_epochs(ckpt: str | Path) -> int:
    from ..checkpoint import read_config

    train = read_config(ckpt).get("train", {})
    if "epochs" not in train:
        raise ValueError(f"{ckpt}/config.json has no train.epochs: pass --base-epochs for the pruning budget")
    return int(train["epochs"])


@dataclass
class _Run:
    """One ``compress`` call, as the method strategies see it."""

    cfg: CompressConfig
    dataset: Any
    tcfg: TrainConfig
    out: Path
    device: Any
    meta: dict[str, Any]

    def to_qat(self, model):
        from .qat import prepare_qat

        return prepare_qat(model.to(self.device), self.dataset.train, self.cfg.bits, self.cfg.scale_mode,
                           self.tcfg.eval_batch_size, self.device)


@dataclass
class _Trained:
    model: Any
    start_seconds: float  # training time already spent on the model it started from
    own_seconds: float
    stages: list[dict[str, Any]] | None = None


def _train_head(method: CompressionMethod, r: _Run) -> _Trained:
    """A compression head (slice, low-rank) fine-tuned from the dense checkpoint, or trained from scratch."""
    from ..checkpoint import load_model
    from ..engine import fit
    from ..models import build_model
    from .convert import with_embedding
    from .dim_prune import dense_train_seconds

    cfg, t0, start_seconds = r.cfg, time.time(), 0.0
    if cfg.init_from:
        dense = load_model(cfg.init_from)
        start_seconds = dense_train_seconds(cfg.init_from)
        model = method.from_dense(dense, cfg.dim)
    else:
        mcfg = ModelConfig(backbone=BackboneConfig.for_size(cfg.model, img_size=tuple(cfg.img_size)),
                           embedding=EmbeddingConfig(kind=method.name, dim=cfg.dim),
                           num_classes=r.dataset.num_train_pids)
        model = build_model(mcfg, pretrained=cfg.pretrained)
    if cfg.qat:
        model = r.to_qat(model) if cfg.init_from else with_embedding(model, bits=cfg.bits, qat=True,
                                                                     scale_mode=cfg.scale_mode)
    fit(model, r.dataset, r.tcfg, r.out / "train", metadata=r.meta)
    return _Trained(load_model(r.out / "train").to(r.device), start_seconds, time.time() - t0)


def _dim_prune(method: CompressionMethod, r: _Run) -> _Trained:
    """Iterative dimension pruning from the dense checkpoint, down the paper's sizes to ``dim``."""
    from ..checkpoint import load_model
    from .dim_prune import PruneSchedule, dense_train_seconds, iterative_prune

    cfg = r.cfg
    dense = load_model(cfg.init_from)
    start_seconds = dense_train_seconds(cfg.init_from)
    schedule = PruneSchedule(prune_walk(dense.cfg.feature_dim, cfg.dim), cfg.base_epochs or _dense_epochs(cfg.init_from),
                             cfg.stage_fraction)
    records = iterative_prune(dense, r.dataset, schedule, r.tcfg, r.out / "stages", start_seconds=start_seconds,
                              metadata=r.meta, prepare=r.to_qat if cfg.qat else None)
    stages = [{k: rec[k] for k in ("dim", "stage_train_seconds", "total_train_seconds")} for rec in records]
    return _Trained(load_model(records[-1]["ckpt"]).to(r.device), start_seconds,
                    float(records[-1]["total_train_seconds"]) - start_seconds, stages)


def _slice_from(dense, dim: int):
    from .convert import slice_from

    return slice_from(dense, dim)


def _lowrank_from(dense, dim: int):
    from .convert import lowrank_from

    return lowrank_from(dense, dim)


def _full_from(dense, dim: int | None):
    if dense.cfg.embedding.kind != "full":
        raise ValueError(f"--method full fine-tunes a dense model, but --init-from has a {dense.cfg.embedding.kind!r} "
                         "embedding")
    return dense


@dataclass(frozen=True)
class CompressionMethod:
    """One way to compress the embedding: an entry of ``METHODS`` (CLI choices and the sweep read it)."""

    name: str
    help: str
    needs_dense: bool  # starts from a trained dense checkpoint (--init-from is required)
    train: Callable[[CompressionMethod, _Run], _Trained]
    from_dense: Callable[[Any, int], Any] | None = None  # dense model, dim -> the model with this head
    is_control: bool = False  # compresses nothing: the dense model fine-tuned by the same command


METHODS: dict[str, CompressionMethod] = {m.name: m for m in (
    CompressionMethod("slice", "the first K dimensions of the cls token", False, _train_head, _slice_from),
    CompressionMethod("lowrank", "a learnable projection e = A^T f", False, _train_head, _lowrank_from),
    CompressionMethod("prune", "iterative dimension pruning of a dense model", True, _dim_prune),
    CompressionMethod("full", "nothing compressed: the equal-budget control (the --init-from model fine-tuned by "
                              "the same command)", True, _train_head, _full_from, is_control=True),
)}
# what the sweep compares (the control is trained by the sweep itself, stage by stage)
SWEEP_METHODS: tuple[str, ...] = tuple(name for name, m in METHODS.items() if not m.is_control)


def compress(cfg: CompressConfig, dataset, tcfg: TrainConfig, out_dir: str | Path) -> dict[str, Any]:
    """Train the compressed model, write its checkpoint and ``compress.json`` to ``out_dir``; return the record."""
    from ..checkpoint import save_checkpoint
    from ..engine import resolve_device
    from .evaluate_codes import evaluate_model_codes
    from .ptq import ptq_model

    cfg.validate()
    out = Path(out_dir)
    device = resolve_device(tcfg.device)
    meta = {"compress_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}}
    method = METHODS[cfg.method]
    trained = method.train(method, _Run(cfg, dataset, tcfg, out, device, meta))
    model, start_seconds, own_seconds, stages = trained.model, trained.start_seconds, trained.own_seconds, trained.stages
    if cfg.bits < 32 and not cfg.qat:
        model = ptq_model(model, dataset.train, cfg.bits, tcfg.eval_batch_size, device)
    total = start_seconds + own_seconds
    metrics = evaluate_model_codes(model, dataset, tcfg.eval_batch_size, device)
    d_full = model.cfg.feature_dim
    if method.is_control:
        cfg = dataclasses.replace(cfg, dim=d_full)
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
