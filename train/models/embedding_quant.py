"""Fake quantisation of the L2-normalised embedding (int8 QAT).

q = clamp(round(e / s), -Q, Q), e_hat = s * q with Q = 2^(bits-1) - 1 (127 for int8, 7 for 4-bit);
1-bit codes are signs (e_hat = s * sign(e)). Gradients pass straight through inside the clamp range
and are blocked outside it. One scale serves every vector, so distances between integer codes rank
exactly like distances between the dequantised vectors: the runtime compares codes directly.

Scale modes:
- ``calibrated``: a running (EMA) estimate of a high percentile of |e| divided by Q; ``freeze()``
  stops updating it (the last epochs of QAT train against a fixed grid).
- ``learned``: LSQ, the scale is a parameter with the gradient scaled by 1/sqrt(numel * Q).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def qmax(bits: int) -> int:
    return 1 if bits == 1 else 2 ** (bits - 1) - 1


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # noqa: D102
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        return g


def fake_quantize(e: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantise-dequantise with a straight-through gradient inside [-Q*s, Q*s], zero outside."""
    if bits == 1:
        # sign with a clipped identity gradient (|e/s| <= 1 passes)
        x = e / scale
        hard = torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
        soft = x.clamp(-1.0, 1.0)
        return scale * (soft + (hard - soft).detach())
    q = qmax(bits)
    x = e / scale
    return scale * _RoundSTE.apply(x.clamp(-q, q))


def quantize_codes(e: torch.Tensor, scale: float, bits: int) -> torch.Tensor:
    """Integer levels (as float tensor) of the already-normalised embedding ``e``."""
    if bits == 1:
        return torch.where(e >= 0, torch.ones_like(e), -torch.ones_like(e))
    q = qmax(bits)
    return torch.round(e / scale).clamp(-q, q)


class EmbeddingQuantizer(nn.Module):
    """Holds the embedding scale; fake-quantises in QAT training and in eval once a scale exists."""

    def __init__(self, bits: int, scale: float | None = None, mode: str = "calibrated",
                 qat: bool = False, percentile: float = 99.99, momentum: float = 0.1) -> None:
        super().__init__()
        self.bits, self.mode, self.qat = bits, mode, qat
        self.percentile, self.momentum = percentile, momentum
        init = float(scale) if scale else 0.0
        if mode == "learned":
            self.scale = nn.Parameter(torch.tensor(init if init > 0 else 1.0 / (qmax(bits) * 4.0)))
        else:
            self.register_buffer("scale", torch.tensor(init))
        self.register_buffer("frozen", torch.tensor(False))

    @property
    def enabled(self) -> bool:
        return self.bits < 32

    @property
    def has_scale(self) -> bool:
        return float(self.scale.detach()) > 0

    def freeze(self) -> None:
        self.frozen.fill_(True)

    @torch.no_grad()
    def observe(self, e: torch.Tensor) -> None:
        """Update the calibrated scale from a batch of normalised embeddings."""
        if self.mode != "calibrated" or bool(self.frozen):
            return
        if self.bits == 1:  # sign codes: scale = mean |e| keeps dequantised norms close to 1
            target = e.abs().mean()
        else:
            target = torch.quantile(e.detach().abs().flatten().float(), self.percentile / 100.0) / qmax(self.bits)
        if not self.has_scale:
            self.scale.fill_(float(target))
        else:
            self.scale.mul_(1 - self.momentum).add_(self.momentum * target)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return e
        if self.training:
            if not self.qat:
                return e
            self.observe(e)
            scale = self.scale
            if self.mode == "learned":
                grad_scale = 1.0 / math.sqrt(e.numel() * max(qmax(self.bits), 1))
                scale = (scale - scale * grad_scale).detach() + scale * grad_scale
                scale = scale.abs() + 1e-8
            return fake_quantize(e, scale, self.bits)
        if not self.has_scale:  # PTQ model not calibrated yet: float output
            return e
        return fake_quantize(e, self.scale.detach().abs(), self.bits)
