"""Images -> float embeddings -> gallery codes: the bundle, a backend and the codec, batched.

This is the one path every runtime command uses to turn pixels into codes, so enrolment, queries,
evaluation and benchmarks all see the same preprocessing, the same backend and the same codec
spec (the manifest's ``dim``/``bits``/``scale``/``metric``), which is what makes a gallery
enrolled on one day comparable with queries made on another.

Images are streamed: :meth:`Embedder.iter_images` reads, preprocesses and embeds ``batch_size``
images at a time, so a million-image folder or an endless stdin never sits in memory, and a bad
image costs only its own result (an :class:`ImageError` in the batch's ``errors``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from edgereid.data.flags import option, positive_int

from .artifact_choice import (
    CHOICE_ENV,
    CHOICE_MODES,
    ArtifactChoice,
    ChoiceConfig,
    choose_artifact,
    explicit_choice,
)
from .backends import Backend, open_backend
from .bundle import Bundle, load_bundle
from .codec import CodecSpec, l2_normalize, quantize
from .preprocess import DEFAULT_MAX_PIXELS, ImageError, ImageSource, Preprocessor
from .tables import BACKENDS

__all__ = ["EmbedderConfig", "Embedder", "EmbeddedBatch"]


@dataclass
class EmbedderConfig:
    """How to run a bundle. Defaults: the fastest artifact here within tolerance, batches of 16 images.

    The fields with help text are the flags of every ``reid-runtime`` command that runs a bundle.

    Naming an ``artifact`` (or a ``backend`` and/or ``precision``, picked by ``Bundle.select``)
    runs that. With none of the three, ``choice`` decides (:mod:`edgereid.runtime.artifact_choice`):
    ``auto`` the fastest artifact on this device among those the bundle records as accurate
    enough, measured once and cached; ``measure`` the same, measured again now; ``manifest`` the
    manifest's default artifact. None reads ``$EDGEREID_ARTIFACT_CHOICE``, else ``auto``.
    """

    backend: str | None = option(None, "run this backend's artifact (at the default artifact's precision if it has "
                                       "one); turns the automatic choice off", choices=lambda: list(BACKENDS))
    precision: str | None = option(None, "run the artifact of this precision, e.g. fp32, fp16, int8 (on the default "
                                         "artifact's backend if it has one); turns the automatic choice off",
                                   metavar="P")
    artifact: str | None = option(None, "run this artifact of the manifest by name (overrides --backend/--precision); "
                                        "turns the automatic choice off", metavar="NAME")
    choice: str | None = option(
        None, f"which artifact runs when none of --artifact/--backend/--precision is given: auto = the fastest on this "
              "device among those whose accuracy the bundle records as within tolerance, timed once (a few seconds) "
              "and cached in BUNDLE/runtime-cache/ (or ~/.cache/edgereid when the bundle is read-only) per bundle, CPU "
              "and library versions; measure = time them again now and replace the cached decision; manifest = the "
              f"manifest's default artifact, nothing timed. Default: ${CHOICE_ENV}, else auto",
        flag="--artifact-choice", choices=lambda: list(CHOICE_MODES))
    batch_size: int = option(16, "images embedded per backend call (a fixed-batch graph uses its own size)",
                             type=positive_int, metavar="N")
    threads: int | None = option(None, "backend intra-op threads (default: the backend's own choice)",
                                 type=positive_int, metavar="N")
    max_pixels: int = option(DEFAULT_MAX_PIXELS, "refuse images with more pixels than this before decoding them",
                             type=positive_int, metavar="N")
    backend_options: dict[str, Any] = field(default_factory=dict)
    choice_config: ChoiceConfig = field(default_factory=ChoiceConfig)


@dataclass
class EmbeddedBatch:
    """One batch of inputs: embeddings and codes for the images that loaded, errors for the rest."""

    sources: list[Any]  # every input of the batch, in order
    indices: list[int]  # position (in ``sources``) of each embedded row
    embeddings: np.ndarray  # (n_ok, dim) float32
    codes: np.ndarray  # (n_ok, code_bytes) uint8
    errors: list[tuple[int, ImageError]]  # (position in ``sources``, error)


class Embedder:
    """A verified bundle on a backend, with its preprocessing and codec."""

    def __init__(self, bundle: Bundle | str, config: EmbedderConfig | None = None) -> None:
        self.config = config or EmbedderConfig()
        if self.config.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.config.batch_size}")
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.spec: CodecSpec = self.bundle.embedding.codec_spec()
        self.preprocessor = Preprocessor(self.bundle.input, self.config.max_pixels)
        cfg = self.config
        options = dict(max_batch=max(cfg.batch_size, 1), threads=cfg.threads, **cfg.backend_options)
        asked = {"artifact": cfg.artifact, "backend": cfg.backend, "precision": cfg.precision}
        if any(asked.values()):
            self.backend: Backend = open_backend(self.bundle, backend=cfg.backend, precision=cfg.precision,
                                                 artifact=cfg.artifact, **options)
            #: which artifact runs and why (``info``/``bench`` report it, the CLI prints its line)
            self.choice: ArtifactChoice = explicit_choice(self.bundle, self.backend.artifact.name, asked)
            return
        self.choice = choose_artifact(self.bundle, mode=cfg.choice, config=cfg.choice_config,
                                      batch_size=cfg.batch_size, threads=cfg.threads,
                                      backend_options=cfg.backend_options)
        if self.choice.how in ("measured", "cached", "single"):
            self.backend = open_backend(self.bundle, artifact=self.choice.artifact, **options)
        else:  # the manifest's default, with open_backend's fallback when its library is missing here
            self.backend = open_backend(self.bundle, **options)
            if self.backend.artifact.name != self.bundle.default_artifact:
                self.choice.reason += (f"; {self.bundle.default_artifact} needs a library missing here, so "
                                       f"{self.backend.artifact.name}")
            self.choice.artifact = self.backend.artifact.name

    # -- arrays ------------------------------------------------------------------------------
    def embed_array(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed ``(n, 3, H, W)`` -> ``(n, dim)`` float32 embeddings (normalised)."""
        emb = self.backend.embed(batch)
        if not self.bundle.embedding.normalized:
            emb = l2_normalize(emb)
        if emb.size and not np.isfinite(emb).all():
            raise FloatingPointError(f"{self.backend.name}: the model produced NaN or infinite embeddings")
        return emb

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        """Float embeddings -> gallery codes under the bundle's codec spec."""
        return quantize(embeddings, self.spec)

    # -- images ------------------------------------------------------------------------------
    def embed_images(self, sources: Sequence[ImageSource]) -> EmbeddedBatch:
        """Embed one list of images (as a single batch of results; chunked for the backend)."""
        prepared = self.preprocessor.batch(sources)
        emb = self.embed_array(prepared.array) if prepared.indices else np.zeros((0, self.spec.dim), np.float32)
        codes = self.encode(emb) if len(emb) else np.zeros((0, self.spec.code_bytes), np.uint8)
        return EmbeddedBatch(list(sources), prepared.indices, emb, codes, prepared.errors)

    #: put this in the source iterable to have the images so far processed now (a live stream paused)
    FLUSH = object()

    def iter_images(self, sources: Iterable[ImageSource], batch_size: int | None = None) -> Iterator[EmbeddedBatch]:
        """Stream any iterable of images in batches of ``batch_size`` (stdin, huge folders).

        An :attr:`FLUSH` item in ``sources`` ends the current batch early (if it has any image).
        """
        size = batch_size or self.config.batch_size
        pending: list[ImageSource] = []
        for src in sources:
            if src is Embedder.FLUSH:
                if pending:
                    yield self.embed_images(pending)
                    pending = []
                continue
            pending.append(src)
            if len(pending) >= size:
                yield self.embed_images(pending)
                pending = []
        if pending:
            yield self.embed_images(pending)

    def describe(self) -> dict[str, Any]:
        out = self.backend.describe()
        out.update({"bundle": str(self.bundle.root), "codec": self.spec.to_dict()})
        return out

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
