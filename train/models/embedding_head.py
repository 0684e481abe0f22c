"""Embedding compression heads (slice, low-rank, selected dimensions).

Each head maps the backbone feature f (width d) to ``(e, n)``: ``e`` the deployable embedding the
triplet loss sees, ``n`` what feeds the BNNeck and the ID classifier.

- full:    e = f,          n = f
- slice:   e = f[:k],      n = e       (no parameters)
- lowrank: e = A^T f,      n = B e     (A: d x k, B: k x d, no biases, initialised as the slice)
- select:  e = f[kept],    n = e       (the result of iterative dimension pruning)
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import EmbeddingConfig


class FullHead(nn.Module):
    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return f, f


class SliceHead(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = f[:, : self.k]
        return e, e


class SelectHead(nn.Module):
    def __init__(self, kept_dims: list[int]) -> None:
        super().__init__()
        self.register_buffer("kept", torch.tensor(kept_dims, dtype=torch.long), persistent=False)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = f.index_select(1, self.kept)
        return e, e


class LowRankHead(nn.Module):
    def __init__(self, d: int, k: int) -> None:
        super().__init__()
        self.down = nn.Linear(d, k, bias=False)  # e = A^T f: weight is A^T, shape (k, d)
        self.up = nn.Linear(k, d, bias=False)  # f_hat = B e: weight is B, shape (d, k)
        with torch.no_grad():  # slice initialisation: e = f[:k], f_hat = [e; 0]
            self.down.weight.zero_()
            self.down.weight[:, :k].copy_(torch.eye(k))
            self.up.weight.zero_()
            self.up.weight[:k, :].copy_(torch.eye(k))

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.down(f)
        return e, self.up(e)


def build_embedding_head(cfg: EmbeddingConfig, d: int) -> nn.Module:
    if cfg.kind == "full":
        return FullHead()
    if cfg.kind == "slice":
        return SliceHead(cfg.out_dim(d))
    if cfg.kind == "lowrank":
        return LowRankHead(d, cfg.out_dim(d))
    if cfg.kind == "select":
        return SelectHead(list(cfg.kept_dims or []))
    raise ValueError(f"unknown embedding head {cfg.kind!r}")


def neck_dim(cfg: EmbeddingConfig, d: int) -> int:
    """Width of what the BNNeck/classifier see for a given head."""
    return d if cfg.kind in ("full", "lowrank") else cfg.out_dim(d)
