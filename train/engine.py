"""The training loop shared by baseline training, embedding compression and pruning fine-tuning.

``fit`` trains a ``ReIDModel`` on a dataset's train split with PK batches, ID cross-entropy +
batch-hard triplet (+ optional distillation from a frozen teacher), warm-up + cosine (or step)
learning rate, AMP on CUDA, periodic evaluation, keeps the best checkpoint, and writes a JSON log
line per epoch. It runs under ``torchrun`` (DDP; gloo on CPU, nccl on GPU): rank 0 evaluates and
saves.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from .checkpoint import save_checkpoint, write_json_atomic
from .config import DistillConfig, TrainConfig  # defined with the other configs (no torch there)
from .data.image_dataset import ImageDataset
from .data.sampler import PKSampler
from .data.transforms import collate, train_transform
from .evaluate import evaluate_model
from .losses import batch_hard_triplet, cross_entropy, kd_embedding, kd_logits

logger = logging.getLogger(__name__)

__all__ = ["DistillConfig", "TrainConfig", "build_optimizer", "compute_loss", "fit", "lr_factor", "resolve_device",
           "setup_distributed"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_factor(cfg: TrainConfig, progress_epochs: float) -> float:
    """Learning-rate multiplier at a fractional epoch: linear warm-up, then cosine/step/constant."""
    if cfg.warmup_epochs > 0 and progress_epochs < cfg.warmup_epochs:
        return max(progress_epochs / cfg.warmup_epochs, 1e-3)
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return 0.1 ** sum(progress_epochs >= e for e in cfg.step_epochs)
    span = max(cfg.epochs - cfg.warmup_epochs, 1e-6)
    t = min(max((progress_epochs - cfg.warmup_epochs) / span, 0.0), 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(("cls_token", "pos_embed")) else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    raise ValueError(f"optimizer {cfg.optimizer!r}: expected adamw, adam or sgd")


def compute_loss(model, out: dict[str, torch.Tensor], pids: torch.Tensor, cfg: TrainConfig,
                 teacher_out: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    parts: dict[str, torch.Tensor] = {}
    if "stripe_logits" in out:  # LA-Transformer: one classifier per stripe, summed cross-entropies
        parts["id"] = sum(cross_entropy(lg, pids, cfg.label_smoothing) for lg in out["stripe_logits"])
    else:
        parts["id"] = cross_entropy(out["logits"], pids, cfg.label_smoothing)
    parts["id"] = parts["id"] * cfg.id_weight
    if cfg.triplet_weight > 0:
        parts["triplet"] = cfg.triplet_weight * batch_hard_triplet(out["embedding"], pids, cfg.triplet_margin)
    d = cfg.distill
    if teacher_out is not None and d.enabled:
        if d.alpha > 0:
            parts["kd"] = d.alpha * kd_logits(out["logits"], teacher_out["logits"], d.tau)
        if d.embed_weight > 0:
            parts["kd_embed"] = d.embed_weight * kd_embedding(out["feature"], teacher_out["feature"], d.embed_kind)
    total = sum(parts.values())
    return total, {k: float(v.detach()) for k, v in parts.items()}


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def setup_distributed(device: torch.device) -> tuple[int, int]:
    """Initialise the process group when launched by torchrun; returns (world_size, rank)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return _dist_info()


class JsonLog:
    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(record) + "\n")


def fit(model, dataset, cfg: TrainConfig, out_dir: str | Path, teacher=None, metadata: dict | None = None,
        epoch_callback=None) -> dict[str, Any]:
    """Train ``model`` on ``dataset.train``; keeps the best (by mAP) checkpoint in ``out_dir``.

    ``epoch_callback(model, epoch)`` runs after each epoch (pruning schedules use it).
    Returns a summary dict (best metrics, seconds, steps) that is also written to ``summary.json``.
    """
    device = resolve_device(cfg.device)
    world, rank = setup_distributed(device)
    torch.manual_seed(cfg.seed + rank)
    run_dir = Path(out_dir)
    is_main = rank == 0
    log = JsonLog(run_dir / "log.jsonl", is_main)
    if is_main and (run_dir / "log.jsonl").exists():
        (run_dir / "log.jsonl").unlink()

    img_size = tuple(model.cfg.backbone.img_size)
    train_set = ImageDataset(dataset.train, train_transform(img_size, cfg.augment))
    sampler = PKSampler([r[1] for r in dataset.train], cfg.batch_size // world if world > 1 else cfg.batch_size,
                        k=cfg.k, seed=cfg.seed, num_replicas=world, rank=rank)
    loader = DataLoader(train_set, batch_size=sampler.p * sampler.k, sampler=sampler, num_workers=cfg.workers,
                        collate_fn=collate, drop_last=True, persistent_workers=cfg.workers > 0,
                        pin_memory=device.type == "cuda")
    model.to(device)
    if teacher is not None:
        teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    train_model = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    optimizer = build_optimizer(model, cfg)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    steps_per_epoch = len(loader) if cfg.max_steps_per_epoch is None else min(len(loader), cfg.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise ValueError(f"no training batch: {len(dataset.train)} images cannot fill one PK batch of {cfg.batch_size}")

    best: dict[str, Any] = {"mAP": -1.0}
    start, step = time.time(), 0
    quant = model.quant
    for epoch in range(cfg.epochs):
        sampler.set_epoch(epoch)
        train_model.train()
        if quant.enabled and quant.qat and epoch >= cfg.epochs - cfg.qat_freeze_epochs and quant.has_scale:
            quant.freeze()
        sums: dict[str, float] = {}
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not is_main, leave=False)
        for i, (images, pids, _) in enumerate(loader):
            if i >= steps_per_epoch:
                break
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(cfg, epoch + i / steps_per_epoch)
            images, pids = images.to(device, non_blocking=True), pids.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                out = train_model(images)
                teacher_out = None
                if teacher is not None and cfg.distill.enabled:
                    with torch.no_grad():
                        teacher.train(False)
                        teacher_out = _teacher_outputs(teacher, images)
                loss, parts = compute_loss(model, out, pids, cfg, teacher_out)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
            bar.update(1)
        bar.close()
        record: dict[str, Any] = {"epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"],
                                  "seconds": round(time.time() - start, 2)}
        record.update({k: v / max(steps_per_epoch, 1) for k, v in sums.items()})
        if epoch_callback is not None:
            epoch_callback(model, epoch)
        last = epoch + 1 == cfg.epochs
        if is_main and (last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)):
            metrics = evaluate_model(model, dataset, img_size, cfg.eval_batch_size, device)
            record.update({f"eval_{k}": v for k, v in metrics.items()})
            if metrics["mAP"] > best["mAP"]:
                best = {**metrics, "epoch": epoch + 1}
                save_checkpoint(model, run_dir, metadata={"train": _jsonable(asdict(cfg)), "metrics": metrics,
                                                     "epoch": epoch + 1, **(metadata or {})})
            logger.info(f"epoch {epoch + 1}: loss {record.get('loss', 0):.4f}  rank-1 {metrics['rank1']:.4f}  "
                        f"mAP {metrics['mAP']:.4f}  ({record['seconds']:.0f}s)")
        log.write(record)
    seconds = time.time() - start
    summary = {"best": best, "train_seconds": round(seconds, 2), "steps": step, "epochs": cfg.epochs,
               "world_size": world, "device": str(device)}
    if is_main:
        write_json_atomic(run_dir / "summary.json", summary)
    if world > 1:
        dist.barrier()
    return summary


def _teacher_outputs(teacher, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Teacher logits and feature in eval mode (BN running stats), without its quantiser."""
    tokens = teacher.forward_features(images)
    f, _ = teacher.pool(tokens)
    _, n = teacher.embed_head(f)
    return {"feature": f, "logits": teacher.neck(n)}


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
