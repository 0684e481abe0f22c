"""Exact integer matrix products for the search kernel, through onnxruntime's MatMulInteger.

Why: numpy has no fast int8 matmul (it does not use BLAS for integers: a few GOP/s), and
converting int8 codes to float32 for BLAS quadruples the bytes every scan touches. onnxruntime
(already the runtime's inference dependency) runs ``MatMulInteger`` with uint8 x int8 operands
on its MLAS kernels: exact int32 results at several hundred GOP/s per core, *if* the kernel never
saturates.

**Exact by construction.** x86 CPUs without VNNI (AVX2, and AVX-512 before Ice Lake / Zen 4)
multiply uint8 by int8 with ``pmaddubsw``, which adds each pair of products into a *saturating
int16*: with ``a`` up to 255 and ``b`` up to +-127 a pair reaches 64,770 and the result is
silently wrong. Every product here therefore has one of two forms:

- ``bounded`` (the default, any CPU): ``|b| <= 64`` always, so a pair is at most
  ``2 * 255 * 64 = 32,640`` and fits int16 whatever the kernel. Wider query levels are split,
  ``b = 2 h + l`` with ``h = floor(b / 2)`` in -64..63 and ``l`` in {0, 1}, and the product is
  taken over a doubled inner dimension, ``[A | A] @ [h ; h + l] = A @ b``: no carry step, one
  int32 result, twice the multiply-adds (the gallery is still read once).
- ``direct``: ``b`` as it is. Only where the CPU has int8 dot products that accumulate in int32
  (x86 VNNI; aarch64 SDOT/UDOT, e.g. Jetson Orin's Cortex-A78AE), and only after a probe with
  extreme operands (255 x 127, and -128 x -128 through the zero point: any 16-bit pair sum
  overflows on them) came back exact on this machine, once per process.

:func:`product_form` makes that choice (``EDGEREID_CPU_FEATURES`` forces what the CPU is taken to
have, ``form=`` forces the form; a forced ``direct`` that fails its probe is refused);
:func:`describe` says which form runs, for ``reid-runtime info`` and ``bench``.

The graph is one node, ``Y = MatMulInteger(A, B, a_zero_point)``, with ``A`` uint8 (rows, K),
``B`` int8 (K, N) and an optional scalar uint8 zero point for ``A``. It is serialised here by hand
(a few protobuf fields) because the ``onnx`` Python package is not a runtime dependency. Sessions
use one intra-op thread: the search kernel runs several sessions' calls in parallel from its own
worker threads, which also parallelises the numpy work around each product.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import numpy as np

from .cpu_features import cpu_info

__all__ = ["matmul_integer_model", "IntGemm", "ort_available", "product_form", "probe", "usable", "describe", "FORMS",
           "BOUNDED_MAX"]

# onnx.TensorProto.DataType values
_UINT8, _INT8, _INT32 = 2, 3, 6
FORMS = ("bounded", "direct")
BOUNDED_MAX = 64  # |b| <= 64: 2 * 255 * 64 = 32640 <= 32767, exact even with 16-bit pair sums


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(num: int, payload: bytes) -> bytes:
    return _varint((num << 3) | 2) + _varint(len(payload)) + payload


def _field_int(num: int, value: int) -> bytes:
    return _varint(num << 3) + _varint(value)


def _str(num: int, s: str) -> bytes:
    return _field_bytes(num, s.encode("utf-8"))


def _value_info(name: str, elem_type: int, dims: list[int | str]) -> bytes:
    """ValueInfoProto{name, type: TypeProto{tensor_type{elem_type, shape{dim...}}}}."""
    shape = b"".join(_field_bytes(1, _field_int(1, d) if isinstance(d, int) else _str(2, d)) for d in dims)
    tensor_type = _field_int(1, elem_type) + _field_bytes(2, shape)
    return _str(1, name) + _field_bytes(2, _field_bytes(1, tensor_type))


def matmul_integer_model(k: int, a_zero_point: int | None) -> bytes:
    """Serialized ONNX ModelProto (IR 8, opset 13) for ``Y = MatMulInteger(A, B[, a_zp])``.

    ``A``: uint8 (rows, k); ``B``: int8 (k, cols); ``Y``: int32 (rows, cols). rows and cols are
    symbolic, so one session serves every chunk size and query count.
    """
    inputs = ["A", "B"]
    initializers = b""
    if a_zero_point is not None:
        if not 0 <= a_zero_point <= 255:
            raise ValueError(f"a_zero_point: expected 0..255, got {a_zero_point}")
        # TensorProto{data_type=UINT8, name, raw_data}; no dims field = a scalar
        tensor = _field_int(2, _UINT8) + _str(8, "a_zero_point") + _field_bytes(9, bytes([a_zero_point]))
        initializers = _field_bytes(5, tensor)
        inputs.append("a_zero_point")
    node = b"".join(_str(1, i) for i in inputs) + _str(2, "Y") + _str(3, "mmi") + _str(4, "MatMulInteger")
    graph = (
        _field_bytes(1, node)
        + _str(2, "edgereid_int_gemm")
        + initializers
        + _field_bytes(11, _value_info("A", _UINT8, ["rows", k]))
        + _field_bytes(11, _value_info("B", _INT8, [k, "cols"]))
        + _field_bytes(12, _value_info("Y", _INT32, ["rows", "cols"]))
    )
    opset = _str(1, "") + _field_int(2, 13)
    return _field_int(1, 8) + _str(2, "edgereid") + _field_bytes(7, graph) + _field_bytes(8, opset)


def ort_available() -> bool:
    """True when onnxruntime imports (it is a runtime dependency, but devices can be odd)."""
    try:
        import onnxruntime  # noqa: F401
    except Exception:
        return False
    return True


_SESSIONS: dict[tuple[int, int | None], Any] = {}
_SESSIONS_LOCK = threading.Lock()


def _session(k: int, a_zero_point: int | None) -> Any:
    """One cached single-threaded CPU session per (K, zero point); ``run`` is thread-safe."""
    key = (k, a_zero_point)
    with _SESSIONS_LOCK:
        sess = _SESSIONS.get(key)
        if sess is None:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.log_severity_level = 3
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            sess = ort.InferenceSession(matmul_integer_model(k, a_zero_point), so,
                                        providers=["CPUExecutionProvider"])
            _SESSIONS[key] = sess
    return sess


class IntGemm:
    """``(A - a_zero_point) @ B`` exactly, int32, for uint8 ``A`` and a fixed int8 ``B`` (the queries).

    ``form`` (:data:`FORMS`): ``bounded`` splits a ``B`` wider than +-64 over a doubled inner
    dimension; ``direct`` uses it as it is (see the module text). :attr:`reps` is how many copies
    of each operand row, side by side, :meth:`__call__` expects: ``A`` is (rows, ``reps`` * K).
    :meth:`product` takes a plain (rows, K) ``A`` and lays out the copies itself.
    """

    def __init__(self, b: np.ndarray, a_zero_point: int | None, form: str = "bounded") -> None:
        if b.dtype != np.int8 or b.ndim != 2:
            raise ValueError(f"IntGemm: B must be a 2-D int8 array, got {b.dtype} {b.shape}")
        if form not in FORMS:
            raise ValueError(f"IntGemm: form must be one of {', '.join(FORMS)}, got {form!r}")
        self.form = form
        wide = b.size and int(np.abs(b.astype(np.int16)).max()) > BOUNDED_MAX
        if form == "bounded" and wide:
            bi = b.astype(np.int16)
            hi = bi >> 1  # floor(b / 2): -64..63
            lo = bi - 2 * hi  # 0 or 1
            self.b = np.ascontiguousarray(np.concatenate([hi, hi + lo]).astype(np.int8))  # |values| <= 64
            self.reps = 2
        else:
            self.b = np.ascontiguousarray(b)
            self.reps = 1
        self.k = int(self.b.shape[0])
        self._sess = _session(self.k, a_zero_point)

    def __call__(self, a: np.ndarray) -> np.ndarray:
        """int32 (rows, N) for a C-contiguous uint8 ``A`` of (rows, ``reps`` * K) (copies side by side)."""
        return self._sess.run(None, {"A": a, "B": self.b})[0]

    def product(self, a: np.ndarray) -> np.ndarray:
        """int32 (rows, N) for a plain uint8 ``A`` of (rows, K)."""
        a = np.ascontiguousarray(a, dtype=np.uint8)
        return self(a if self.reps == 1 else np.concatenate([a] * self.reps, axis=1))


def probe(form: str) -> bool:
    """True when ``form`` computes extreme products exactly on this machine (onnxruntime's kernels).

    ``A`` rows of all 255, all 0, alternating 0/255 and random bytes; ``B`` columns of all +127,
    all -128, alternating signs, +-64 and random levels; with and without a zero point. Kernels
    differ in how they sign the operands (x86 without VNNI: ``A * B`` as uint8 x int8; aarch64
    without dot products: ``(A - 128) * B`` as int8 x int8), so both extremes are there: 255 x 127
    and, with the zero point 128, (0 - 128) x -128. A kernel that adds two such products in 16 bits
    overflows on them, so it cannot pass.
    """
    rng = np.random.default_rng(0)
    k = 48
    a = np.concatenate([np.full((8, k), 255, np.uint8), np.zeros((8, k), np.uint8),
                        np.tile(np.array([0, 255], np.uint8), (8, k // 2)),
                        rng.integers(0, 256, (24, k), dtype=np.uint8)])
    b = np.stack([np.full(k, 127), np.full(k, -128), np.tile([127, -128], k // 2),
                  rng.integers(-128, 128, k), np.full(k, 64), np.full(k, -64)], axis=1).astype(np.int8)
    for zp in (128, None):
        want = (a.astype(np.int64) - (zp or 0)) @ b.astype(np.int64)
        if not np.array_equal(IntGemm(b, zp, form).product(a), want):
            return False
    return True


@functools.cache
def usable(form: str) -> bool:
    """:func:`probe` of ``form``, run once per process."""
    return probe(form)


def _direct_expected() -> bool:
    """The CPU has int8 dot products that accumulate in 32 bits: x86 VNNI, or aarch64's SDOT/UDOT.

    (aarch64 without them, e.g. the Cortex-A57 of a Jetson Nano/TX2, adds pairs of int8 products
    in 16-bit lanes: (-128) x (-128) twice overflows there.)"""
    cpu = cpu_info()
    return cpu.has("vnni") or cpu.has("neon_dot")


def product_form(requested: str = "auto") -> str:
    """The product form searches use here: ``direct`` where the CPU accumulates int8 dot products
    in 32 bits and the probe agrees, else ``bounded``. ``requested`` forces one; a forced ``direct``
    that the probe finds inexact on this CPU is refused (ValueError). Needs onnxruntime."""
    if requested not in ("auto", *FORMS):
        raise ValueError(f"integer product form: expected auto, {' or '.join(FORMS)}, got {requested!r}")
    if requested == "bounded":
        return "bounded"
    if requested == "direct":
        if not usable("direct"):
            raise ValueError("integer product form 'direct': onnxruntime's uint8 x int8 kernel is not exact on this "
                             f"CPU ({cpu_info().summary()}: it adds products in saturating 16-bit lanes); "
                             "use 'bounded' (the default here)")
        return "direct"
    return "direct" if _direct_expected() and usable("direct") else "bounded"


def describe(form: str | None = None) -> str:
    """One line on the batched-search product: library, form and why (``reid-runtime info`` / ``bench``)."""
    if not ort_available():
        return "numpy (float BLAS on integer levels; onnxruntime is not importable)"
    form = form or product_form()
    if form == "direct":
        return "onnxruntime MatMulInteger, direct uint8 x int8 (int8 dot products accumulate in 32 bits here)"
    return (f"onnxruntime MatMulInteger, bounded uint8 x int8 (query levels split to |b| <= {BOUNDED_MAX}: exact "
            "on any kernel; twice the multiply-adds)")
