"""Iterative dimension pruning of the embedding (arXiv 2405.14730's "iterative
structured pruning").

Score each embedding dimension j by the L2 (Frobenius) norm of coordinate j over the training set's
pre-BN embeddings, computed in eval mode without augmentation (``model.raw_embedding``); keep the
top-scoring dims and physically remove the others: the model's head becomes a ``select`` head
listing the kept coordinates of the backbone feature (composed across stages, so each stage's
checkpoint names dims of the original cls token), and the BNNeck rows and classifier columns of the
removed dims are deleted. Each stage retrains for 20 % of the original epochs; the walk is
d -> 3/4 -> 5/8 -> 1/2 -> 1/4 -> 1/12 -> 1/24 of d and every stage is that size's result. The cost
is reported cumulatively: the dense model's training time plus every stage so far.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import read_config, write_json_atomic
from ..config import ModelConfig
from ..engine import TrainConfig, fit
from ..evaluate import extract_features
from ..models.reid_model import ReIDModel
from .convert import transfer


def current_dims(model: ReIDModel) -> list[int]:
    """Coordinates of the backbone feature that the embedding currently holds."""
    emb = model.cfg.embedding
    if emb.kind == "full":
        return list(range(model.cfg.feature_dim))
    if emb.kind == "slice":
        return list(range(emb.out_dim(model.cfg.feature_dim)))
    if emb.kind == "select":
        return list(emb.kept_dims or [])
    raise ValueError(f"dimension pruning works on full, slice or select embeddings, not {emb.kind!r} "
                     "(a low-rank head mixes the dims)")


def dimension_scores(model: ReIDModel, records, batch_size: int = 128, device: str | torch.device = "cpu",
                     workers: int = 0) -> np.ndarray:
    """L2 norm of each embedding coordinate over ``records`` (pre-BN, pre-normalisation, eval mode)."""
    if not records:
        raise ValueError("dimension pruning needs training images to score the dims; the train split is empty")
    e = extract_features(model, records, tuple(model.cfg.backbone.img_size), batch_size, device, workers,
                         desc="scoring dims", raw=True).astype(np.float64)
    return np.sqrt((e * e).sum(0))


def top_dims(scores: np.ndarray, k: int) -> list[int]:
    """Positions of the ``k`` highest scores, in ascending position order (ties: the lower position wins)."""
    if not 1 <= k <= len(scores):
        raise ValueError(f"cannot keep {k} of {len(scores)} dims")
    order = np.argsort(-np.asarray(scores), kind="stable")[:k]
    return sorted(int(i) for i in order)


def keep_dims(model: ReIDModel, keep: list[int]) -> ReIDModel:
    """Physically remove every embedding position not in ``keep`` (positions in the current embedding).

    The new model has a ``select`` head on the original feature coordinates, BNNeck rows and classifier
    columns of the kept positions, and the same trunk. Any quantisation scale is reset (it was
    calibrated for other dims).
    """
    model = getattr(model, "module", model)
    dims = current_dims(model)
    if len(set(keep)) != len(keep) or not all(0 <= i < len(dims) for i in keep):
        raise ValueError(f"kept positions must be distinct and in 0..{len(dims) - 1}")
    keep = sorted(keep)
    cfg: ModelConfig = copy.deepcopy(model.cfg)
    cfg.embedding = dataclasses.replace(cfg.embedding, kind="select", dim=None, kept_dims=[dims[i] for i in keep],
                                        scale=None)
    cfg.validate()
    # full/slice/select heads feed the neck with the embedding itself: neck row i == embedding position i
    return transfer(model, cfg, neck_keep=keep)


def prune_to(model: ReIDModel, k: int, records, batch_size: int = 128, device: str | torch.device = "cpu",
             workers: int = 0) -> tuple[ReIDModel, np.ndarray]:
    """One pruning step: score on ``records``, keep the top ``k``. Returns (pruned model, scores)."""
    scores = dimension_scores(model, records, batch_size, device, workers)
    return keep_dims(model, top_dims(scores, k)), scores


@dataclass
class PruneSchedule:
    """The iterative walk: sizes (descending) and the retraining budget per stage.

    stage_fraction: each stage retrains for this fraction of ``base_epochs`` (the dense model's epochs),
        at least one epoch. The paper uses 0.2.
    """

    sizes: list[int]
    base_epochs: int
    stage_fraction: float = 0.2

    @property
    def stage_epochs(self) -> int:
        return max(1, math.ceil(self.base_epochs * self.stage_fraction - 1e-9))


def dense_train_seconds(ckpt_dir: str | Path) -> float:
    """Training seconds of a checkpoint's run (its summary.json, else the cost recorded in its config)."""
    summary = Path(ckpt_dir) / "summary.json"
    if summary.is_file():
        try:
            return float(json.loads(summary.read_text()).get("train_seconds", 0.0))
        except (ValueError, json.JSONDecodeError):
            pass
    cost = read_config(ckpt_dir).get("compress", {})
    return float(cost.get("total_train_seconds", 0.0))


def stage_dir(out_root: str | Path, k: int) -> Path:
    return Path(out_root) / f"dim_{k}"


def stage_done(path: Path) -> bool:
    return (path / "model.safetensors").is_file() and (path / "config.json").is_file() and \
        "compress" in read_config(path)


def iterative_prune(model: ReIDModel, dataset, schedule: PruneSchedule, train_cfg: TrainConfig, out_root: str | Path,
                    start_seconds: float = 0.0, metadata: dict[str, Any] | None = None,
                    on_stage=None, prepare=None) -> list[dict[str, Any]]:
    """Walk ``schedule.sizes`` from ``model``; each stage is pruned, retrained, saved to ``out_root/dim_K``.

    ``start_seconds`` is the training cost already spent (the dense model). A stage whose checkpoint
    exists is loaded instead of retrained (resumable). ``prepare(model) -> model`` runs on each freshly
    pruned model before its retraining (QAT switches it to fake quantisation there);
    ``on_stage(k, model, record)`` runs after each stage.
    Returns one record per stage: dim, kept_dims, stage and cumulative training seconds, metrics.
    """
    from ..checkpoint import load_model

    tcfg = dataclasses.replace(train_cfg, epochs=schedule.stage_epochs, eval_every=0)
    sizes = list(schedule.sizes)
    if sizes != sorted(sizes, reverse=True) or len(set(sizes)) != len(sizes):
        raise ValueError(f"pruning sizes must be strictly decreasing, got {sizes}")
    records: list[dict[str, Any]] = []
    total = float(start_seconds)
    current = model
    for k in sizes:
        path = stage_dir(out_root, k)
        if stage_done(path):
            current = load_model(path)
            info = read_config(path)["compress"]
            total = float(info["total_train_seconds"])
            record = {**info, "metrics": read_config(path).get("metrics", {}), "ckpt": str(path), "resumed": True}
        else:
            width = len(current_dims(current))
            if k >= width:
                raise ValueError(f"pruning stage {k}: the model already has only {width} dims")
            t0 = time.time()
            pruned, scores = prune_to(current, k, dataset.train, tcfg.eval_batch_size, _device(tcfg))
            if prepare is not None:
                pruned = prepare(pruned)
            score_seconds = time.time() - t0
            summary = fit(pruned, dataset, tcfg, path, metadata=metadata)
            stage_seconds = score_seconds + float(summary["train_seconds"])
            total += stage_seconds
            info = {"method": "prune", "dim": k, "kept_dims": pruned.cfg.embedding.kept_dims,
                    "stage_epochs": tcfg.epochs, "stage_train_seconds": round(stage_seconds, 2),
                    "total_train_seconds": round(total, 2)}
            cfg = read_config(path)
            cfg["compress"] = info
            write_json_atomic(path / "config.json", cfg)
            current = pruned
            record = {**info, "metrics": summary["best"], "ckpt": str(path), "resumed": False}
        records.append(record)
        if on_stage is not None:
            on_stage(k, current, record)
    return records


def _device(cfg: TrainConfig) -> torch.device:
    from ..engine import resolve_device

    return resolve_device(cfg.device)
