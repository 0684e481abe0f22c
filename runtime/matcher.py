"""Open-set matching: images (or their codes) in, identities out, people the gallery does not know enrolled.

This is the loop ``reid-runtime`` runs for ``match`` and ``query``, as a library, so a tracker can
call it per frame::

    from edgereid.runtime import Embedder, GalleryStore, Matcher, MatchConfig

    with Embedder("bundle") as embedder, GalleryStore.open("store.bin", "a", spec=embedder.spec) as store:
        matcher = Matcher(embedder, store, MatchConfig(enroll_unknown=True))
        for m in matcher.match_images(["frame-17-crop-2.jpg"]):
            print(m.identity, m.decision, m.distance)

``enroll_images`` is the other half: labelled images (``labelled_images`` reads identities from
Market names or sub-folders) embedded and added to the gallery, batch by batch.

For each image: the ``topk`` nearest gallery entries (or identities, ``per_identity``), then the
open-set decision: the nearest entry is a ``match`` when its distance is at most the threshold,
else the person is ``unknown``. Distances are Euclidean, between the dequantised (normalised)
embeddings, 0..2. The threshold is the config's, else the bundle manifest's ``open_set.threshold``;
with neither, no decision is made (``decision`` None, ``identity`` the nearest). With
``enroll_unknown`` each unknown person is added to the gallery under a new identity
(``<prefix>000001``, ...) at once, so the same person seen in the next image matches it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from edgereid.data.flags import non_negative_float, option, positive_int

from .bundle import Bundle
from .codec import CodecSpec, code_distance_to_float
from .embedder import EmbeddedBatch, Embedder
from .image_sources import LabelledImage
from .matching import open_set_decision
from .store import GalleryStore

__all__ = ["Match", "MatchConfig", "Matcher", "bundle_threshold", "enroll_images", "euclidean_distance"]


@dataclass
class MatchConfig:
    """How to match. Defaults: 5 nearest entries, the bundle's threshold, nothing enrolled."""

    threshold: float | None = option(
        None, "open-set distance threshold: the nearest gallery entry matches when its distance (Euclidean, between "
              "normalised embeddings, 0..2) is <= D, else the image is 'unknown'. Default: the manifest's "
              "open_set.threshold; with neither, no decision is made (decision null, identity = nearest)",
        type=non_negative_float, metavar="D")
    topk: int = option(5, "how many nearest gallery results to list per image", type=positive_int, metavar="K")
    per_identity: bool = option(False, "list each identity once (at its best entry's distance) instead of every entry")
    enroll_unknown: bool = option(False, "store each unknown image under a new identity (<prefix>000001, ...), so the "
                                         "same person seen again later matches it; needs a threshold")
    unknown_prefix: str = option("unk-", "prefix of identities made by --enroll-unknown", metavar="TEXT")

    def validate(self) -> None:
        if isinstance(self.topk, bool) or not isinstance(self.topk, int) or self.topk < 1:
            raise ValueError(f"MatchConfig.topk must be a positive integer, got {self.topk!r}")
        if self.threshold is not None and not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise ValueError(f"MatchConfig.threshold must be a finite number >= 0, got {self.threshold!r}")


@dataclass
class Match:
    """The answer for one image: its identity and decision, the nearest results, or why it failed."""

    image: str
    identity: int | str | None = None  # the match (or the nearest entry's, with no threshold); a new one if enrolled
    distance: float | None = None  # Euclidean distance to the nearest entry (None: empty gallery)
    decision: str | None = None  # "match" | "unknown" | None (no threshold: no decision)
    topk: list[dict[str, Any]] = field(default_factory=list)  # [{"identity", "distance"}], nearest first
    enrolled: bool = False  # enroll_unknown stored this image under ``identity``
    error: str | None = None  # why the image could not be used (then nothing else is set)

    def to_dict(self) -> dict[str, Any]:
        """The JSON line ``reid-runtime`` prints for this image."""
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        out: dict[str, Any] = {"image": self.image, "identity": self.identity, "distance": self.distance,
                               "decision": self.decision}
        if self.enrolled:
            out["enrolled"] = True
        out["topk"] = self.topk
        return out


def bundle_threshold(bundle: Bundle) -> float | None:
    """The manifest's ``open_set.threshold`` when it is a finite number >= 0, else None."""
    open_set = bundle.manifest.get("open_set")
    t = open_set.get("threshold") if isinstance(open_set, dict) else None
    if isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t >= 0:
        return float(t)
    return None


def euclidean_distance(distances: np.ndarray, spec: CodecSpec) -> np.ndarray:
    """Store distances (codec units) -> Euclidean distance between the dequantised embeddings."""
    return np.sqrt(np.maximum(code_distance_to_float(distances, spec), 0.0))


def _python(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


class Matcher:
    """Matches against a gallery store with an embedder; the caller opens and closes both.

    ``enroll_unknown`` needs a store opened for appending (``"a"``) and a threshold. A store opened
    read-only is refreshed before each batch, so a long stream sees what another process enrolled.
    ``counts`` adds up what was answered: images, match, unknown, undecided, enrolled, errors.
    """

    def __init__(self, embedder: Embedder, store: GalleryStore, config: MatchConfig | None = None) -> None:
        self.config = config or MatchConfig()
        self.config.validate()
        self.embedder, self.store = embedder, store
        self.spec = embedder.spec
        store.check_spec(self.spec)
        self.threshold = self.config.threshold if self.config.threshold is not None else bundle_threshold(
            embedder.bundle)
        if self.config.enroll_unknown:
            if self.threshold is None:
                raise ValueError("enroll_unknown needs a threshold: MatchConfig.threshold, or open_set.threshold in "
                                 "the bundle's manifest")
            if store.mode != "a":
                raise ValueError(f"enroll_unknown needs the gallery opened for appending ('a'), not {store.mode!r}")
        self.counts = {"images": 0, "match": 0, "unknown": 0, "undecided": 0, "enrolled": 0, "errors": 0}
        self._pattern = re.compile(re.escape(self.config.unknown_prefix) + r"(\d+)$")
        self._next_unknown = self._first_free_unknown() if self.config.enroll_unknown else 0

    def _first_free_unknown(self) -> int:
        numbers = [int(m.group(1)) for i in self.store.identities() if isinstance(i, str) and (m := self._pattern.match(i))]
        return max(numbers, default=0) + 1

    # -- searching ---------------------------------------------------------------------------
    def nearest(self, codes: np.ndarray) -> list[list[dict[str, Any]]]:
        """The ``topk`` nearest entries of each code row: ``[{"identity", "distance"}]``, nearest first."""
        if len(self.store) == 0 or len(codes) == 0:
            return [[] for _ in range(len(codes))]
        ids, dist = self.store.search(codes, self.config.topk, per_identity=self.config.per_identity)
        out = []
        for row_ids, row_d in zip(ids, euclidean_distance(dist, self.spec)):
            out.append([{"identity": _python(i), "distance": round(float(d), 6)}
                        for i, d in zip(row_ids, row_d) if i is not None])
        return out

    def _decide(self, image: str, topk: list[dict[str, Any]], code: np.ndarray) -> Match:
        nearest = topk[0] if topk else None
        m = Match(image, distance=nearest["distance"] if nearest else None, topk=topk)
        if self.threshold is None:
            m.identity = nearest["identity"] if nearest else None
            self.counts["undecided"] += 1
        elif nearest is not None and bool(open_set_decision(nearest["distance"], self.threshold)):
            m.identity, m.decision = nearest["identity"], "match"
            self.counts["match"] += 1
        else:
            m.decision = "unknown"
            self.counts["unknown"] += 1
            if self.config.enroll_unknown:
                m.identity = f"{self.config.unknown_prefix}{self._next_unknown:06d}"
                self._next_unknown += 1
                self.store.add([m.identity], code[None])
                m.enrolled = True
                self.counts["enrolled"] += 1
        return m

    def match_codes(self, codes: np.ndarray, images: Sequence[str]) -> list[Match]:
        """Match gallery codes (one row per image, named by ``images``), in order."""
        codes = np.asarray(codes)
        if len(codes) != len(images):
            raise ValueError(f"match_codes: {len(codes)} code rows for {len(images)} image names")
        if self.store.mode != "a":
            self.store.refresh()  # a long stream sees what another process enrolled meanwhile
        if not self.config.enroll_unknown:
            return [self._decide(name, topk, code) for name, topk, code in zip(images, self.nearest(codes), codes)]
        # one at a time: an unknown enrolled now must match the next image
        return [self._decide(name, self.nearest(codes[r:r + 1])[0], codes[r]) for r, name in enumerate(images)]

    def match_batch(self, batch: EmbeddedBatch) -> list[Match]:
        """One embedded batch -> a Match per input, in input order (failed images carry their error)."""
        results: dict[int, Match] = {}
        for pos, err in batch.errors:
            results[pos] = Match(str(batch.sources[pos]), error=err.reason)
            self.counts["errors"] += 1
        names = [str(batch.sources[pos]) for pos in batch.indices]
        for pos, m in zip(batch.indices, self.match_codes(batch.codes, names)):
            results[pos] = m
        self.counts["images"] += len(results)
        return [results[pos] for pos in sorted(results)]

    def match_images(self, sources: Iterable[Any]) -> Iterator[Match]:
        """Stream images (paths, bytes, file objects; ``Embedder.FLUSH`` answers what has arrived)."""
        for batch in self.embedder.iter_images(sources):
            yield from self.match_batch(batch)


def enroll_images(embedder: Embedder, store: GalleryStore,
                  images: Sequence[LabelledImage]) -> Iterator[tuple[LabelledImage, str | None]]:
    """Embed ``images`` and add each to ``store`` under its identity (and camera, when every image of a
    batch has one); yields ``(image, None)`` once stored, or ``(image, why)`` for an unusable one, in order.

    Each batch of ``embedder.config.batch_size`` images is one committed store record.
    """
    offset = 0
    for batch in embedder.iter_images([str(im.path) for im in images]):
        labels = [images[offset + i] for i in batch.indices]
        if labels:
            cams = [lab.camera for lab in labels]
            store.add([lab.identity for lab in labels], batch.codes,
                      cameras=np.asarray(cams, np.int64) if all(c is not None for c in cams) else None)
        errors = dict(batch.errors)
        for pos in range(len(batch.sources)):
            yield images[offset + pos], errors[pos].reason if pos in errors else None
        offset += len(batch.sources)
