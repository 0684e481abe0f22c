"""PK sampling: batches of P identities x K images each (batch-hard triplet needs positives)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class PKSampler(Sampler[int]):
    """Yields indices so that every consecutive ``P*K`` block holds P identities with K images each.

    Identities with fewer than K images are sampled with replacement. One epoch visits every
    identity about ``len(images)/K`` times in proportion to its images (like torchreid's
    RandomIdentitySampler). With ``num_replicas > 1`` (DDP), each rank takes a disjoint share of
    the P-blocks, so ranks see different identities in a step.
    """

    def __init__(self, pids: Sequence[int], batch_size: int, k: int = 4, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0) -> None:
        if batch_size % k:
            raise ValueError(f"batch_size {batch_size} must be a multiple of K={k}")
        self.index_by_pid: dict[int, list[int]] = defaultdict(list)
        for i, pid in enumerate(pids):
            self.index_by_pid[int(pid)].append(i)
        self.pids = sorted(self.index_by_pid)
        self.p = batch_size // k
        if len(self.pids) < self.p:
            raise ValueError(f"PK sampling needs at least P={self.p} identities, the data set has {len(self.pids)}")
        self.k, self.seed, self.epoch = k, seed, 0
        self.num_replicas, self.rank = num_replicas, rank
        self._length = self._compute_length()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _chunks(self, rng: np.random.Generator) -> list[list[int]]:
        chunks: list[tuple[int, list[int]]] = []
        for pid in self.pids:
            idx = self.index_by_pid[pid]
            take = rng.choice(idx, size=max(len(idx), self.k), replace=len(idx) < self.k).tolist()
            usable = len(take) - len(take) % self.k
            chunks += [(pid, take[i:i + self.k]) for i in range(0, usable, self.k)]
        order = rng.permutation(len(chunks))
        chunks = [chunks[i] for i in order]
        # Greedily group chunks of distinct identities into batches of P.
        batches, pending = [], []
        for pid, chunk in chunks:
            pending.append((pid, chunk))
        while True:
            seen, batch, rest = set(), [], []
            for pid, chunk in pending:
                if pid not in seen and len(batch) < self.p:
                    seen.add(pid)
                    batch.append(chunk)
                else:
                    rest.append((pid, chunk))
            if len(batch) < self.p:
                break
            batches.append([i for c in batch for i in c])
            pending = rest
        return batches

    def _compute_length(self) -> int:
        batches = self._chunks(np.random.default_rng(self.seed))
        return (len(batches) // self.num_replicas) * self.p * self.k

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng(self.seed + 1000003 * self.epoch)
        batches = self._chunks(rng)
        per_rank = min(len(batches) // self.num_replicas, self._length // (self.p * self.k))
        mine = batches[self.rank::self.num_replicas][:per_rank]
        for batch in mine:
            yield from batch

    def __len__(self) -> int:
        return self._length
