"""Training losses: ID cross-entropy, batch-hard triplet, and distillation from a teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def pairwise_euclidean(x: torch.Tensor) -> torch.Tensor:
    sq = (x * x).sum(1, keepdim=True)
    d2 = sq + sq.t() - 2.0 * (x @ x.t())
    return d2.clamp_min(1e-12).sqrt()


def batch_hard_triplet(emb: torch.Tensor, labels: torch.Tensor, margin: float | None = None) -> torch.Tensor:
    """Batch-hard triplet loss: hardest positive and hardest negative per anchor.

    margin=None uses the soft margin softplus(d_ap - d_an); a number uses relu(d_ap - d_an + margin).
    Anchors without a positive or a negative in the batch are ignored.
    """
    dist = pairwise_euclidean(emb)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=emb.device)
    pos_mask, neg_mask = same & ~eye, ~same
    valid = pos_mask.any(1) & neg_mask.any(1)
    if not valid.any():
        return emb.sum() * 0.0
    d_ap = torch.where(pos_mask, dist, torch.full_like(dist, -1.0)).max(1).values
    d_an = torch.where(neg_mask, dist, torch.full_like(dist, float("inf"))).min(1).values
    diff = (d_ap - d_an)[valid]
    if margin is None:
        return F.softplus(diff).mean()
    return F.relu(diff + margin).mean()


def kd_logits(student: torch.Tensor, teacher: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """tau^2 * KL(softmax(teacher/tau) || softmax(student/tau)), batch mean (Hinton et al.'s soft distillation)."""
    log_p_s = F.log_softmax(student / tau, dim=1)
    log_p_t = F.log_softmax(teacher / tau, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * tau * tau


def kd_embedding(student: torch.Tensor, teacher: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """Embedding distillation: retrieval is decided by the embedding, so match it directly."""
    if student.shape != teacher.shape:
        raise ValueError(f"embedding distillation needs equal shapes, got {tuple(student.shape)} vs {tuple(teacher.shape)}")
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(student, teacher, dim=1)).mean()
    if kind == "mse":
        return F.mse_loss(F.normalize(student, dim=1), F.normalize(teacher, dim=1))
    raise ValueError(f"embedding distillation kind {kind!r}: expected cosine or mse")
