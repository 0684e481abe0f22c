"""LA-Transformer head: horizontal stripes of patch tokens fused with the cls token.

LA-Transformer (the seed's baseline model) classifies each horizontal stripe of the image on its
own: the patch tokens after the final norm are averaged into R stripes (R = patch rows), each
stripe is blended with the global cls token as ``(cls + lam * stripe) / (1 + lam)``, and each
fused stripe has its own classifier (d -> bottleneck, BN, dropout, -> classes). The training loss
is the sum of the stripe cross-entropies (``engine.compute_loss`` sums ``stripe_logits``). The
deployable feature is the concatenation of the fused stripes, each L2-normalised on its own, so
no stripe dominates the distance; it is large (R * d) and is what the embedding head compresses.

Export: every reduction is a ``sum`` times a constant (no ``mean(dim)`` / ``norm``), because the
dynamo ONNX exporter cannot bring ReduceMean/ReduceL2 with axis inputs down to opset 17
(it leaves the graph at opset 18). All shapes are fixed by ``grid``.
"""

from __future__ import annotations

import torch
from torch import nn


class StripeClassifier(nn.Module):
    """One stripe's ID classifier: d -> bottleneck, BatchNorm, dropout, -> classes."""

    def __init__(self, dim: int, bottleneck: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, bottleneck)
        self.bn = nn.BatchNorm1d(bottleneck)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(bottleneck, max(num_classes, 1))
        nn.init.kaiming_normal_(self.fc.weight, a=0, mode="fan_out")
        nn.init.zeros_(self.fc.bias)
        nn.init.normal_(self.classifier.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.bn(self.fc(x))))


def _unit_rows(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """L2-normalise the last dimension with export-safe ops (ReduceSum + Sqrt)."""
    return x / (x * x).sum(dim=-1, keepdim=True).clamp_min(eps * eps).sqrt()


class LAHead(nn.Module):
    """Locally-aware stripes head.

    embed_dim: token width d; grid: (patch rows, patch cols) of the backbone; lam: weight of the
    stripe against the cls token (8 in LA-Transformer); bottleneck: width of each stripe classifier.
    """

    def __init__(self, embed_dim: int, grid: tuple[int, int], num_classes: int, lam: float = 8.0,
                 bottleneck: int = 256, dropout: float = 0.5) -> None:
        super().__init__()
        rows, cols = int(grid[0]), int(grid[1])
        if rows < 1 or cols < 1:
            raise ValueError(f"LA head needs a patch grid of at least 1x1, got {grid}")
        if lam < 0:
            raise ValueError(f"LA head lambda must be >= 0, got {lam}")
        self.embed_dim, self.rows, self.cols, self.lam = embed_dim, rows, cols, float(lam)
        self.classifiers = nn.ModuleList(StripeClassifier(embed_dim, bottleneck, num_classes, dropout)
                                         for _ in range(rows))

    @property
    def out_dim(self) -> int:
        return self.rows * self.embed_dim

    def fused_stripes(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 1 + rows*cols, d) tokens -> (B, rows, d) fused stripes (cls + lam * stripe) / (1 + lam)."""
        n = self.rows * self.cols
        if tokens.dim() != 3 or tokens.shape[1] != 1 + n or tokens.shape[2] != self.embed_dim:
            raise ValueError(
                f"LA head expects tokens of shape (B, {1 + n}, {self.embed_dim}) (cls + a {self.rows}x{self.cols} "
                f"patch grid), got {tuple(tokens.shape)}; token dropping (drop_layers) cannot be combined with "
                "the LA head because the dropped sequence no longer has a spatial layout")
        cls = tokens[:, :1]  # (B, 1, d)
        patches = tokens[:, 1:].reshape(tokens.shape[0], self.rows, self.cols, self.embed_dim)
        stripes = patches.sum(dim=2) * (1.0 / self.cols)  # (B, rows, d): mean over the row
        return (cls + self.lam * stripes) * (1.0 / (1.0 + self.lam))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        fused = self.fused_stripes(tokens)
        feature = _unit_rows(fused).reshape(tokens.shape[0], self.out_dim)
        if not self.training:
            return feature, None
        logits = [clf(fused[:, r]) for r, clf in enumerate(self.classifiers)]
        return feature, logits
