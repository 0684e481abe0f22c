"""``drop`` token pruning: keep the top-k tokens by cls attention, fuse the rest into one token.

k is a Python int fixed when the model is built, so the exported graph has a constant-K TopK and
static shapes. The fused token is the cls-attention-weighted mean of the dropped tokens, which
does not depend on their order.
"""

from __future__ import annotations

import math

import torch


def kept_count(num_tokens: int, keep: float) -> int:
    """How many of ``num_tokens`` non-cls tokens a drop layer keeps (at least one)."""
    return max(1, min(num_tokens, math.ceil(keep * num_tokens)))


def drop_tokens(x: torch.Tensor, attn: torch.Tensor, k: int) -> torch.Tensor:
    """x: (B, 1 + n, d) tokens after attention; attn: (B, heads, 1 + n, 1 + n) attention map.

    Returns (B, 1 + k + 1, d): cls, the k tokens the cls token attends to most, one fused token.
    """
    n = x.shape[1] - 1
    heads = attn.shape[1]
    score = attn[:, :, 0, 1:].sum(dim=1) * (1.0 / heads)  # (B, n) mean over heads, export-safe
    cls, tokens = x[:, :1], x[:, 1:]
    top = torch.topk(score, k, dim=1, largest=True, sorted=True).indices  # (B, k)
    kept = torch.gather(tokens, 1, top.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    if k == n:
        return torch.cat([cls, kept], dim=1)
    kept_mask = torch.zeros_like(score).scatter(1, top, 1.0)
    w = score * (1.0 - kept_mask)
    fused = (w.unsqueeze(-1) * tokens).sum(dim=1, keepdim=True) / (w.sum(dim=1, keepdim=True).unsqueeze(-1) + 1e-6)
    return torch.cat([cls, kept, fused], dim=1)
