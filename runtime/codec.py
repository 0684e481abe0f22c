"""The embedding codec: how a float embedding becomes the bytes the gallery stores and compares.

Shared by training (int8 QAT and post-training quantisation use the same rounding) and the
runtime (store, search), so a model is evaluated exactly the way the device will rank it.

Code layouts (``quantize`` writes them, ``unpack``/``dequantize`` read them; one row per
embedding, ``CodecSpec.code_bytes`` bytes per row, always handed around as ``uint8``):

- ``bits=32``: the float32 values, little-endian, ``4 * dim`` bytes.
- ``bits=8``: level ``q = clip(rint(x / scale), -127, 127)`` stored as one two's-complement
  int8 byte per dimension (``-128`` is never produced, so the level range is symmetric).
- ``bits=4``: level ``q = clip(rint(x / scale), -7, 7)`` as a two's-complement nibble, two per
  byte: dimension ``2j`` in the LOW nibble (bits 0-3) of byte ``j``, dimension ``2j + 1`` in the
  HIGH nibble (bits 4-7). With an odd ``dim`` the last high nibble is 0. Nibble ``0x8`` (-8) is
  never produced.
- ``bits=1``: bit ``x >= 0`` per dimension, eight per byte, most significant bit first
  (``numpy.packbits`` order: dimension ``8j`` is bit 7 of byte ``j``); padding bits are 0.

``rint`` rounds half to even (``numpy.rint``, the same as ``torch.round`` and ONNX
``QuantizeLinear``), and ``x / scale`` is computed in float32 as they do.

Distances are computed on the integer levels (``unpack``): squared L2 for 8/4-bit, which for
1-bit levels in {0, 1} is the Hamming distance. One scale serves every vector, so for 8/4-bit
``||scale*a - scale*b||^2 == scale^2 * ||a - b||^2``: integer distances rank exactly like
distances between the dequantised floats, and integer arithmetic makes the ranking reproducible
on every device. For 1-bit, ``dequantize`` gives ``+-scale`` and the float squared distance is
``4 * scale^2 * hamming``. For float32 codes the distance is the float64 sum of squared float32
differences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CodecSpec",
    "CodecMismatchError",
    "SUPPORTED_BITS",
    "SUPPORTED_METRICS",
    "l2_normalize",
    "quantize",
    "unpack",
    "dequantize",
    "calibrate_scale",
    "pairwise_distances",
    "code_sqnorms",
    "code_distance_to_float",
    "check_codes",
    "NIBBLE_LEVELS",
    "float_sqdist",
]

SUPPORTED_BITS = (32, 8, 4, 1)
SUPPORTED_METRICS = ("l2",)
# Largest integer level per bit width (levels are symmetric: -max..max; 1-bit levels are 0/1).
MAX_LEVEL = {8: 127, 4: 7, 1: 1}
# Relative tolerance when comparing two scales: scales travel through JSON and float32 tensors.
SCALE_REL_TOL = 1e-6


class CodecMismatchError(ValueError):
    """Two codec specs that must agree (a store and a bundle, a query and a gallery) do not."""


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


@dataclass(frozen=True)
class CodecSpec:
    """What a code means: embedding width, bits per value, the shared quantisation scale, metric.

    ``scale`` is the float value of one integer level (8/4-bit) and the magnitude of a dequantised
    1-bit value; float32 codes ignore it (keep 1.0). ``metric`` is ``"l2"`` (squared Euclidean on
    the levels; Hamming for 1-bit codes).
    """

    dim: int
    bits: int  # 32 (float32), 8, 4 or 1
    scale: float = 1.0
    metric: str = "l2"

    def __post_init__(self) -> None:
        if not _is_int(self.dim) or self.dim < 1:
            raise ValueError(f"CodecSpec field dim: expected a positive integer, got {self.dim!r}")
        if not _is_int(self.bits) or int(self.bits) not in SUPPORTED_BITS:
            raise ValueError(f"CodecSpec field bits: expected one of {SUPPORTED_BITS}, got {self.bits!r}")
        if (isinstance(self.scale, (bool, np.bool_)) or not isinstance(self.scale, (int, float, np.integer, np.floating))
                or not math.isfinite(float(self.scale)) or float(self.scale) <= 0):
            raise ValueError(f"CodecSpec field scale: expected a finite positive number, got {self.scale!r}")
        if self.metric not in SUPPORTED_METRICS:
            raise ValueError(f"CodecSpec field metric: expected one of {SUPPORTED_METRICS}, got {self.metric!r}")
        # Normalise numpy scalars to plain Python types so specs compare, hash and serialise cleanly.
        object.__setattr__(self, "dim", int(self.dim))
        object.__setattr__(self, "bits", int(self.bits))
        object.__setattr__(self, "scale", float(self.scale))

    @property
    def code_bytes(self) -> int:
        """Bytes per stored embedding."""
        if self.bits == 32:
            return self.dim * 4
        if self.bits == 8:
            return self.dim
        if self.bits == 4:
            return (self.dim + 1) // 2
        return (self.dim + 7) // 8

    @property
    def is_integer(self) -> bool:
        """True for 8/4/1-bit codes (integer levels, integer distances)."""
        return self.bits != 32

    @property
    def max_level(self) -> int:
        """Largest absolute integer level (127, 7 or 1); ValueError for float32 codes."""
        if self.bits == 32:
            raise ValueError("float32 codes have no integer levels")
        return MAX_LEVEL[self.bits]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``code_bytes`` included for readers; ``from_dict`` checks it)."""
        return {"dim": self.dim, "bits": self.bits, "scale": self.scale, "metric": self.metric,
                "code_bytes": self.code_bytes}

    @classmethod
    def from_dict(cls, d: Any) -> CodecSpec:
        """Build from ``to_dict`` output (e.g. a bundle manifest); every problem names its field."""
        if not isinstance(d, dict):
            raise ValueError(f"codec spec: expected a dict, got {type(d).__name__}")
        known = {"dim", "bits", "scale", "metric", "code_bytes"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"codec spec: unknown field(s) {unknown}; expected only {sorted(known)}")
        for name in ("dim", "bits"):
            if name not in d:
                raise ValueError(f"codec spec field {name}: missing (expected an integer)")
            if not _is_int(d[name]):
                raise ValueError(f"codec spec field {name}: expected an integer, got {d[name]!r}")
        scale = d.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise ValueError(f"codec spec field scale: expected a number, got {scale!r}")
        metric = d.get("metric", "l2")
        if not isinstance(metric, str):
            raise ValueError(f"codec spec field metric: expected a string, got {metric!r}")
        spec = cls(dim=d["dim"], bits=d["bits"], scale=scale, metric=metric)
        if "code_bytes" in d and d["code_bytes"] != spec.code_bytes:
            raise ValueError(f"codec spec field code_bytes: expected {spec.code_bytes} for dim={spec.dim} "
                             f"bits={spec.bits}, got {d['code_bytes']!r}")
        return spec

    def check_compatible(self, other: CodecSpec, what: str = "other") -> None:
        """Raise ``CodecMismatchError`` naming every field where ``other`` differs from this spec.

        Codes are only comparable under the same dim, bits, metric and scale (scales compared with
        a relative tolerance of 1e-6, so a JSON or float32 round trip does not count as a change).
        """
        if not isinstance(other, CodecSpec):
            raise TypeError(f"{what}: expected a CodecSpec, got {type(other).__name__}")
        diffs = [f"{name}: expected {getattr(self, name)!r}, {what} has {getattr(other, name)!r}"
                 for name in ("dim", "bits", "metric") if getattr(self, name) != getattr(other, name)]
        if self.bits != 32 and not math.isclose(self.scale, other.scale, rel_tol=SCALE_REL_TOL, abs_tol=0.0):
            diffs.append(f"scale: expected {self.scale!r}, {what} has {other.scale!r}")
        if diffs:
            raise CodecMismatchError("codec specs differ (codes are not comparable): " + "; ".join(diffs))


# ---------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------


def _as_float_rows(x: Any, spec: CodecSpec, name: str) -> np.ndarray:
    """(n, dim) floating array from ``x``; 1-D is one row. Errors name the problem."""
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.dtype.kind != "f":
        raise ValueError(f"{name}: expected a floating-point array, got dtype {x.dtype}")
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"{name}: expected shape (n, {spec.dim}), got {x.shape}")
    if x.shape[1] != spec.dim:
        raise ValueError(f"{name}: expected {spec.dim} values per row (CodecSpec dim), got shape {x.shape}")
    if x.size and not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return x


def check_codes(codes: Any, spec: CodecSpec, name: str = "codes") -> np.ndarray:
    """Validate raw codes and return them as a 2-D ``uint8`` view (n, code_bytes); no copy.

    ``int8`` arrays are accepted and viewed as bytes; a 1-D array of ``code_bytes`` is one row.
    """
    if not isinstance(codes, np.ndarray):
        raise ValueError(f"{name}: expected a numpy uint8 array of code bytes, got {type(codes).__name__}")
    if codes.dtype == np.int8:
        codes = codes.view(np.uint8)
    if codes.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8 (raw code bytes from quantize), got {codes.dtype}")
    if codes.ndim == 1:
        codes = codes[None, :]
    if codes.ndim != 2 or codes.shape[1] != spec.code_bytes:
        raise ValueError(f"{name}: expected shape (n, {spec.code_bytes}) for dim={spec.dim} bits={spec.bits}, "
                         f"got {codes.shape}")
    return codes


# ---------------------------------------------------------------------------------------------
# encode / decode
# ---------------------------------------------------------------------------------------------


def l2_normalize(x: Any, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32). A zero row stays zero instead of becoming NaN."""
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"l2_normalize: expected a numeric array, got dtype {a.dtype}")
    a = a.astype(np.float32, copy=False)
    norm = np.sqrt(np.sum(a.astype(np.float64) ** 2, axis=-1, keepdims=True))
    return (a / np.maximum(norm, eps)).astype(np.float32)


# byte -> (low nibble level, high nibble level), two's complement nibbles (search unpacks 4-bit codes with it)
_NIB = np.arange(256, dtype=np.int16)
NIBBLE_LEVELS = np.stack([((_NIB & 0xF) ^ 8) - 8, ((_NIB >> 4) ^ 8) - 8], axis=1).astype(np.int8)


def quantize(x: Any, spec: CodecSpec) -> np.ndarray:
    """Float embeddings (n, dim) -> raw code bytes, uint8 (n, code_bytes). See the module doc."""
    x = _as_float_rows(x, spec, "quantize input")
    n = x.shape[0]
    if spec.bits == 32:
        return np.ascontiguousarray(x, dtype="<f4").view(np.uint8).reshape(n, spec.code_bytes)
    if spec.bits == 1:
        return np.packbits(x >= 0, axis=1)
    m = MAX_LEVEL[spec.bits]
    # float32 arithmetic, like torch fake quantisation and ONNX QuantizeLinear: a value that sits
    # on a rounding boundary gets the same level in training, in the exported graph and here.
    q = np.clip(np.rint(x.astype(np.float32) / np.float32(spec.scale)), -m, m).astype(np.int8)
    if spec.bits == 8:
        return q.view(np.uint8)
    nib = (q.view(np.uint8) & 0x0F)
    if spec.dim % 2:
        nib = np.concatenate([nib, np.zeros((n, 1), np.uint8)], axis=1)
    return np.ascontiguousarray(nib[:, 0::2] | (nib[:, 1::2] << 4))


def unpack(codes: Any, spec: CodecSpec) -> np.ndarray:
    """Raw codes -> integer levels, int8 (n, dim): -127..127, -7..7, or 0/1 for 1-bit codes."""
    if spec.bits == 32:
        raise ValueError("unpack: float32 codes have no integer levels; use dequantize")
    codes = check_codes(codes, spec)
    if spec.bits == 8:
        return codes.view(np.int8).copy()
    if spec.bits == 1:
        return np.unpackbits(codes, axis=1, count=spec.dim).view(np.int8)
    return NIBBLE_LEVELS[codes].reshape(codes.shape[0], -1)[:, : spec.dim].copy()


def dequantize(codes: Any, spec: CodecSpec) -> np.ndarray:
    """Raw codes -> float32 (n, dim): ``level * scale`` (1-bit: ``+-scale``; float32: the values)."""
    codes = check_codes(codes, spec)
    if spec.bits == 32:
        return np.ascontiguousarray(codes).view("<f4").astype(np.float32).reshape(codes.shape[0], spec.dim)
    lv = unpack(codes, spec).astype(np.float32)
    if spec.bits == 1:
        lv = 2.0 * lv - 1.0
    return (lv * np.float32(spec.scale)).astype(np.float32)


def calibrate_scale(embeddings: Any, bits: int = 8, percentile: float = 99.99) -> float:
    """The shared scale for ``bits``-bit codes of (L2-normalised) ``embeddings``.

    8/4-bit: the ``percentile`` of ``|e|`` maps to the largest level, so only the rarest outliers
    clip. 1-bit: the mean ``|e|`` (the ``+-scale`` dequantisation with the least squared error).
    float32: 1.0. Calibrate on training data, never on the query/gallery being evaluated.
    """
    if not _is_int(bits) or int(bits) not in SUPPORTED_BITS:
        raise ValueError(f"calibrate_scale: bits: expected one of {SUPPORTED_BITS}, got {bits!r}")
    if not (isinstance(percentile, (int, float)) and 0 < percentile <= 100):
        raise ValueError(f"calibrate_scale: percentile: expected a number in (0, 100], got {percentile!r}")
    e = np.asarray(embeddings)
    if e.dtype.kind != "f":
        raise ValueError(f"calibrate_scale: expected floating-point embeddings, got dtype {e.dtype}")
    if e.size == 0:
        raise ValueError("calibrate_scale: no embeddings given")
    if not np.isfinite(e).all():
        raise ValueError("calibrate_scale: embeddings contain NaN or infinite values")
    if int(bits) == 32:
        return 1.0
    a = np.abs(e.astype(np.float64)).ravel()
    value = float(a.mean()) if int(bits) == 1 else float(np.percentile(a, percentile)) / MAX_LEVEL[int(bits)]
    if not value > 0:
        raise ValueError(f"calibrate_scale: the embeddings' |e| statistic is {value}: cannot derive a positive "
                         "scale (all values zero?)")
    return value


# ---------------------------------------------------------------------------------------------
# distances
# ---------------------------------------------------------------------------------------------

# byte -> sum of squared nibble levels (4-bit) / popcount (1-bit)
_NIBBLE_SQ = (NIBBLE_LEVELS.astype(np.int64) ** 2).sum(axis=1)
_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1).astype(np.int64)
_SQNORM_ROWS = 16384  # rows per step when converting codes to float (bounded temporary memory)


def float_sqdist(diff: np.ndarray) -> np.ndarray:
    """Row sums of squares of a 2-D float64 array: the float32 codec's distance.

    Each row's sum is computed on its own (a row-wise reduction over a contiguous 2-D array), so
    the result does not depend on which other rows share the call: search recomputes candidate
    distances with this function and gets bit-identical values to ``pairwise_distances``, so
    equal distances (duplicate vectors) tie and order the same way in both.
    """
    diff = np.ascontiguousarray(diff, dtype=np.float64)
    return np.square(diff).sum(axis=1)


def _pad_mask(spec: CodecSpec) -> int:
    """Padding bits of the last byte of a 1-bit code (numpy.packbits puts them lowest)."""
    return (1 << (8 - spec.dim % 8)) - 1 if spec.dim % 8 else 0


def code_sqnorms(codes: Any, spec: CodecSpec) -> np.ndarray:
    """Squared L2 norm of each row's levels (int64; float64 for float32 codes).

    Search needs ``||g||^2`` per gallery row; a store can compute it once with this function and
    hand it to the search kernel with each block instead of having it recomputed per query.
    """
    codes = check_codes(codes, spec)
    n = codes.shape[0]
    if spec.bits == 4:
        out = _NIBBLE_SQ[codes].sum(axis=1)
        if spec.dim % 2:  # the last high nibble is padding, whatever it holds
            out -= NIBBLE_LEVELS[codes[:, -1], 1].astype(np.int64) ** 2
        return out
    if spec.bits == 1:
        out = _POPCOUNT[codes].sum(axis=1)
        if spec.dim % 8:  # the last byte's low bits are padding
            out -= _POPCOUNT[codes[:, -1] & _pad_mask(spec)]
        return out
    out = np.empty(n, np.float64 if spec.bits == 32 else np.int64)
    # int8: float32 sums of squared levels are exact while 127^2 * dim < 2^24.
    ftype = np.float32 if (spec.bits == 8 and 127 * 127 * spec.dim < 2**24) else np.float64
    for s in range(0, n, _SQNORM_ROWS):
        chunk = codes[s : s + _SQNORM_ROWS]
        if spec.bits == 32:
            f = np.ascontiguousarray(chunk).view("<f4").astype(np.float64)
            out[s : s + len(chunk)] = float_sqdist(f)
        else:
            f = chunk.view(np.int8).astype(ftype)
            out[s : s + len(chunk)] = np.einsum("ij,ij->i", f, f)
    return out


def pairwise_distances(q_codes: Any, g_codes: Any, spec: CodecSpec) -> np.ndarray:
    """All query x gallery distances: int64 (nq, ng) for 8/4/1-bit codes, float64 for float32.

    8/4-bit: squared L2 between integer levels (``scale^2`` times the float distance, exactly).
    1-bit: Hamming distance. float32: float64 squared L2 of the float32 values. A reference and an
    offline evaluator (``pairwise`` memory is nq * ng); the runtime's blocked search is ``search.topk``.
    """
    q = check_codes(q_codes, spec, "query codes")
    g = check_codes(g_codes, spec, "gallery codes")
    if spec.bits == 32:
        qf = np.ascontiguousarray(q).view("<f4").astype(np.float64)
        gf = np.ascontiguousarray(g).view("<f4").astype(np.float64)
        out = np.empty((q.shape[0], g.shape[0]), np.float64)
        for i in range(q.shape[0]):
            out[i] = float_sqdist(gf - qf[i])
        return out
    if spec.bits == 1:
        # Hamming = popcount(a XOR b), through a 256-entry table.
        out = np.empty((q.shape[0], g.shape[0]), np.int64)
        keep_last = 0xFF ^ _pad_mask(spec)
        for i in range(q.shape[0]):
            x = np.bitwise_xor(g, q[i])
            x[:, -1] &= keep_last  # padding bits never count
            out[i] = _POPCOUNT[x].sum(axis=1)
        return out
    # float64 products and sums of integer levels are exact (every partial sum is far below 2^53).
    ql = unpack(q, spec).astype(np.float64)
    gl = unpack(g, spec).astype(np.float64)
    d = (ql * ql).sum(1)[:, None] + (gl * gl).sum(1)[None, :] - 2.0 * (ql @ gl.T)
    return np.rint(d).astype(np.int64)


def code_distance_to_float(distance: Any, spec: CodecSpec) -> np.ndarray:
    """Code distances -> squared L2 between the dequantised floats (for thresholds in float units).

    8/4-bit: ``scale^2 * d``; 1-bit: ``4 * scale^2 * d`` (``+-scale`` values); float32: unchanged.
    """
    d = np.asarray(distance, dtype=np.float64)
    if spec.bits == 32:
        return d
    return d * (spec.scale**2) * (4.0 if spec.bits == 1 else 1.0)
