"""Compressed embedding sizes and storage accounting (arXiv 2405.14730).

The paper's six sizes for d = 768 are 576, 480, 384, 192, 64 and 32 dims: the ratios 3/4, 5/8,
1/2, 1/4, 1/12 and 1/24 of d. For another width the same ratios are used (rounded, at least 1).
Storage is what one gallery entry costs in the store: float32 = 4 bytes a dim, int8 = 1, 4-bit =
two codes a byte, 1-bit = eight a byte. The compression ratio is against d x float32.
"""

from __future__ import annotations

import math
from fractions import Fraction

PAPER_RATIOS: tuple[Fraction, ...] = (Fraction(3, 4), Fraction(5, 8), Fraction(1, 2), Fraction(1, 4),
                                      Fraction(1, 12), Fraction(1, 24))


def paper_sizes(d: int) -> list[int]:
    """The six compressed sizes for width ``d`` (descending, distinct, each in 1..d-1 where possible)."""
    sizes: list[int] = []
    for r in PAPER_RATIOS:
        k = max(1, round(d * r))
        if k not in sizes and k < d:
            sizes.append(k)
    return sizes


def bytes_per_embedding(dim: int, bits: int) -> int:
    """Bytes one stored embedding takes: ceil(dim * bits / 8)."""
    if bits not in (32, 8, 4, 1):
        raise ValueError(f"bits {bits}: expected 32, 8, 4 or 1")
    return math.ceil(dim * bits / 8)


def compression_ratio(full_dim: int, dim: int, bits: int) -> float:
    """(full_dim x 4 bytes) / stored bytes: how much smaller than the uncompressed float32 embedding."""
    return full_dim * 4 / bytes_per_embedding(dim, bits)


def prune_walk(d: int, target: int, sizes: list[int] | None = None) -> list[int]:
    """The dimension-pruning walk from ``d`` down to ``target``: every size of the walk above the target,
    then the target itself (inserted if it is not one of the paper's sizes)."""
    if not 1 <= target < d:
        raise ValueError(f"pruning target dim {target}: expected 1..{d - 1} (the model's width is {d})")
    walk = [k for k in (sizes or paper_sizes(d)) if target < k < d]
    return sorted(set(walk), reverse=True) + [target]
