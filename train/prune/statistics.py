"""The gathering pass: attention statistics over the training set, with gradients, no update.

One pass over (a part of) the training split, in eval mode (no dropout / drop-path, BatchNorm
running statistics left untouched), with every attention layer's ``capture`` flag on so the
post-softmax map A is kept together with its gradient dL/dA. The loss is the training task loss
(ID cross-entropy through the BNNeck classifier + batch-hard triplet on the embedding), so the
Taylor scores measure what the fine-tuning objective cares about. Parameter gradients are
discarded: this pass never changes a weight or a buffer.

Accumulated per layer l:

* ``mean_attn[l]``: (heads_l, T_q, T_kv) the attention map averaged over every image (what the
  head-entropy criterion reads);
* ``taylor[l]``: (1 + N,) |sum over batches of mean over batch, heads, queries of A * dL/dA|,
  indexed by *original* token position (0 = cls). Positions a layer no longer attends to
  (already kv-pruned) score ``nan``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.image_dataset import ImageDataset
from ..data.transforms import collate, eval_transform
from ..losses import batch_hard_triplet, cross_entropy


@dataclass
class AttentionStatistics:
    mean_attn: list[torch.Tensor]  # per layer (heads, T_q, T_kv), float64
    taylor: list[torch.Tensor]  # per layer (1 + N,), float64, nan where a position is not a key
    images: int
    batches: int

    @property
    def depth(self) -> int:
        return len(self.mean_attn)


class StatisticsAccumulator:
    """Sums attention maps and A * dL/dA over batches; ``result()`` turns them into statistics.

    Kept separate from the data loop so tests can feed hand-made attention maps and gradients.
    """

    def __init__(self, num_positions: int) -> None:
        self.num_positions = num_positions  # 1 + N (cls + patches)
        self.attn_sum: list[torch.Tensor] | None = None
        self.taylor_sum: list[torch.Tensor] | None = None
        self.kv_positions: list[torch.Tensor | None] = []
        self.images = 0
        self.batches = 0

    def add(self, attns: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None],
            kv_positions: Sequence[torch.Tensor | None]) -> None:
        """attns/grads: per layer (B, h, T_q, T_kv); kv_positions: per layer the original position of
        each key column (None = all positions in order)."""
        if self.attn_sum is None:
            self.attn_sum = [torch.zeros(a.shape[1:], dtype=torch.float64) for a in attns]
            self.taylor_sum = [torch.zeros(self.num_positions, dtype=torch.float64) for _ in attns]
            self.kv_positions = list(kv_positions)
        b = attns[0].shape[0]
        for layer, (a, g) in enumerate(zip(attns, grads)):
            a64 = a.detach().to(torch.float64)
            if a64.shape[1:] != self.attn_sum[layer].shape:
                raise ValueError(f"layer {layer}: attention map shape changed during the pass "
                                 f"({tuple(a64.shape[1:])} vs {tuple(self.attn_sum[layer].shape)})")
            self.attn_sum[layer] += a64.sum(dim=0)
            if g is None:
                raise ValueError(f"layer {layer}: the attention map has no gradient (is the loss connected?)")
            per_key = (a64 * g.detach().to(torch.float64)).mean(dim=(0, 1, 2))  # (T_kv,)
            pos = kv_positions[layer]
            if pos is None:
                if per_key.shape[0] > self.num_positions:
                    raise ValueError(f"layer {layer}: {per_key.shape[0]} keys but only {self.num_positions} positions")
                self.taylor_sum[layer][: per_key.shape[0]] += per_key
            else:
                self.taylor_sum[layer].index_add_(0, pos.cpu(), per_key)
        self.images += b
        self.batches += 1

    def result(self) -> AttentionStatistics:
        if self.attn_sum is None or self.images == 0:
            raise ValueError("no batch was gathered: the training split is empty")
        taylor = []
        for layer, t in enumerate(self.taylor_sum):
            t = t.abs()
            pos = self.kv_positions[layer]
            if pos is not None:
                missing = torch.ones(self.num_positions, dtype=torch.bool)
                missing[pos.cpu()] = False
                t = t.masked_fill(missing, float("nan"))
            taylor.append(t)
        return AttentionStatistics([s / self.images for s in self.attn_sum], taylor, self.images, self.batches)


def gather_statistics(model, records: Sequence[tuple[str, int, int]], batch_size: int = 64,
                      device: str | torch.device = "cpu", max_batches: int | None = None, workers: int = 0,
                      show_progress: bool = True) -> AttentionStatistics:
    """Run the gathering pass of ``model`` over ``records`` (the training split, pids 0..C-1)."""
    model = getattr(model, "module", model)
    if not records:
        raise ValueError("the gathering pass needs training images, got none")
    device = torch.device(device)
    img_size = tuple(model.cfg.backbone.img_size)
    loader = DataLoader(ImageDataset(records, eval_transform(img_size)), batch_size=batch_size, shuffle=False,
                        num_workers=workers, collate_fn=collate)
    layers = model.backbone.attention_layers()
    was_training = model.training
    model.eval().to(device)
    acc = StatisticsAccumulator(1 + model.cfg.backbone.num_patches)
    kv_positions = [a.kv_index.cpu() if a.kv_index is not None else None for a in layers]
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    try:
        for a in layers:
            a.capture = True
        with torch.enable_grad():
            for i, (images, pids, _) in enumerate(tqdm(loader, total=total, desc="gathering", leave=False,
                                                       disable=not show_progress)):
                if max_batches is not None and i >= max_batches:
                    break
                images, pids = images.to(device), pids.to(device)
                if int(pids.max()) >= model.cfg.num_classes:
                    raise ValueError(f"training pid {int(pids.max())} is outside the classifier's "
                                     f"{model.cfg.num_classes} classes: wrong data set for this checkpoint?")
                tokens = model.forward_features(images)
                f, _ = model.pool(tokens)
                e, n = model.embed_head(f)
                loss = cross_entropy(model.neck(n), pids) + batch_hard_triplet(e, pids)
                model.zero_grad(set_to_none=True)
                loss.backward()
                acc.add([a.last_attn for a in layers], [a.last_attn.grad for a in layers], kv_positions)
    finally:
        for a in layers:
            a.capture = False
            a.last_attn = None
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return acc.result()
