"""The interface every inference backend implements, and the checks they all share.

A backend runs one artifact of a bundle: input is the preprocessed NCHW float32 batch, output is
``(n, dim)`` float32 embeddings (the graph's ``float32`` output, or its integer ``codes`` output
times the bundle's scale, so callers always see floats). Batching policy lives here too: a graph
exported with a fixed batch size gets padded chunks, and ``max_batch`` caps what one call sends
to the device, so ``embed`` accepts any number of rows.
"""

from __future__ import annotations

import abc

import numpy as np

from ..bundle import Artifact, Bundle, BundleError

__all__ = ["Backend", "BackendUnavailable", "run_in_batches"]


class BackendUnavailable(RuntimeError):
    """The backend's library is not installed (or cannot run here); the message says what to install."""


def run_in_batches(run, x: np.ndarray, max_batch: int, fixed_batch: int | None = None) -> np.ndarray:
    """``run`` over ``x`` in chunks of at most ``max_batch`` rows, outputs stacked in order.

    With ``fixed_batch`` (a graph exported with a fixed batch) every call gets exactly that many
    rows: the last chunk is zero-padded and the padding's outputs are dropped. Every way of running
    a graph (the backends, the exporter's runners) batches through here.
    """
    step = fixed_batch or max_batch
    outs = []
    for lo in range(0, len(x), step):
        chunk = np.ascontiguousarray(x[lo:lo + step], dtype=np.float32)
        rows = chunk.shape[0]
        if fixed_batch and rows < fixed_batch:
            chunk = np.concatenate([chunk, np.zeros((fixed_batch - rows, *chunk.shape[1:]), np.float32)])
        outs.append(np.asarray(run(chunk))[:rows])
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


class Backend(abc.ABC):
    """Runs one verified artifact of a bundle.

    Subclasses implement :meth:`_run` for one chunk of at most ``max_batch`` rows (exactly
    ``fixed_batch`` rows when the graph has a fixed batch size).
    """

    #: backend name as written in the manifest's ``artifacts[].backend``
    name: str = ""

    def __init__(self, bundle: Bundle, artifact: Artifact | str | None = None, max_batch: int | None = None) -> None:
        art = artifact if isinstance(artifact, Artifact) else bundle.artifact(artifact)
        if art.backend != self.name:
            raise BundleError(f"artifact {art.name!r} is for backend {art.backend!r}, not {self.name!r}")
        bundle.verify(art)  # hashes before any byte of the model is parsed
        self.bundle = bundle
        self.artifact = art
        self.input_spec = bundle.input
        self.embedding_spec = bundle.embedding
        self.fixed_batch = bundle.input.fixed_batch
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        # a fixed-batch graph takes exactly that many rows per call, whatever the caller asked
        self.max_batch: int = self.fixed_batch or max_batch or 64

    @property
    def input_shape(self) -> tuple[int, int, int]:
        s = self.input_spec
        return (3, s.height, s.width) if s.layout == "NCHW" else (s.height, s.width, 3)

    @abc.abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray:
        """One chunk (rows <= max_batch, contiguous float32) -> the graph's raw output (rows, dim)."""

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """``(n, 3, H, W)`` float32 -> ``(n, dim)`` float32 embeddings, any ``n`` (chunked)."""
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[1:] != self.input_shape:
            raise ValueError(f"{self.name}: input batch must have shape (n, {', '.join(map(str, self.input_shape))}), "
                             f"got {batch.shape}")
        n, dim = batch.shape[0], self.embedding_spec.dim
        if n == 0:
            return np.zeros((0, dim), np.float32)

        def run(chunk: np.ndarray) -> np.ndarray:
            raw = np.asarray(self._run(chunk))
            return raw.reshape(raw.shape[0], -1)

        raw = run_in_batches(run, batch, self.max_batch, self.fixed_batch)
        if raw.shape != (n, dim):
            raise BundleError(f"{self.name} artifact {self.artifact.name!r}: output has shape {raw.shape}, "
                              f"the manifest's embedding.dim says ({n}, {dim})")
        return self._to_float(raw)

    def _to_float(self, raw: np.ndarray) -> np.ndarray:
        """Graph output -> float embeddings: ``codes`` outputs are integer levels times the scale."""
        if self.embedding_spec.output == "codes":
            return raw.astype(np.float32) * np.float32(self.embedding_spec.scale)
        return raw.astype(np.float32, copy=False)

    def close(self) -> None:  # noqa: B027 (optional hook: most backends hold nothing to release)
        """Release device resources (sessions, buffers). Safe to call twice."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> dict:
        return {"backend": self.name, "artifact": self.artifact.name, "precision": self.artifact.precision,
                "max_batch": self.max_batch}
