"""The native int8 scan kernel (``_l2scan.c``), loaded with ctypes: single-query exact top-k.

Why a compiled kernel: for one query, the search is a matrix-vector product, and neither numpy
(no integer BLAS) nor onnxruntime's ``MatMulInteger`` (pads one query column to a 16-column panel
and needs the codes re-biased to uint8 first) reaches memory speed; faiss's SQ8 scan beat both.
The C kernel forms ``q - g`` in int16 and squares-and-sums it with one multiply-add instruction
per 16 (AVX2) or 32 (AVX-512BW) dimensions, exact in int32, with the top-k heap in the same pass:
one read of the codes, no temporaries, no norms needed.

It is built by ``setup.py`` as an optional extension (plain C, no Python API). Where it was not
built (no compiler at install time), :func:`load` returns None and search falls back to the
onnxruntime kernel; ``reid-runtime info`` and ``bench`` report which kernel ran.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
from pathlib import Path

import numpy as np

from .cpu_features import cpu_info

__all__ = ["NativeL2", "load", "describe", "ISA_NAMES", "MAX_DIM"]

MAX_DIM = 32768  # int32-exact limit of the kernel: 254^2 * 32768 < 2^31
ISA_NAMES = {0: "portable C", 1: "AVX2", 2: "AVX-512BW"}
_LIB_STEM = "_l2scan"


def _library_path() -> Path | None:
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        p = here / f"{_LIB_STEM}{suffix}"
        if p.is_file():
            return p
    return None


class NativeL2:
    """Exact single-query top-k by squared L2 over contiguous int8 rows (see ``_l2scan.c``)."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))  # CDLL releases the GIL during calls: search threads overlap
        fn = lib.edgereid_l2_topk_i8
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        fn.argtypes = [p, i64, i64, p, p, i64, i64, ctypes.c_int32, p, p]
        fn.restype = i64
        lib.edgereid_l2scan_isa.restype = ctypes.c_int32
        self._fn = fn
        self.path = path
        self.isa = int(lib.edgereid_l2scan_isa())

    @property
    def isa_name(self) -> str:
        return ISA_NAMES.get(self.default_isa, f"isa {self.default_isa}")

    @property
    def default_isa(self) -> int:
        """The body scans use: the best this CPU has, or, under ``EDGEREID_CPU_FEATURES``, the best
        of the features it names (benchmarks and tests take the AVX2 path on an AVX-512 machine)."""
        cpu = cpu_info()
        if not cpu.overridden:
            return self.isa
        wanted = 2 if cpu.has("avx512bw") else 1 if cpu.has("avx2") else 0
        return min(wanted, self.isa)

    def topk(self, codes: np.ndarray, q: np.ndarray, valid: np.ndarray | None, thr: int, k: int,
             isa: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """The (at most k) rows of ``codes`` nearest ``q`` with distance <= ``thr``, unordered.

        ``codes``: int8/uint8 (n, d) C-contiguous (a memory-mapped view is fine); ``q``: (d,) int8
        levels; ``valid``: bool (n,) or None. Returns ``(distances int64, rows int64)``; rows are
        indices into ``codes``. ``isa``: -1 for :attr:`default_isa` (tests pin others).
        """
        if codes.ndim != 2 or codes.dtype.itemsize != 1 or not codes.flags.c_contiguous:
            raise ValueError(f"native scan: codes must be C-contiguous 1-byte (n, d), got {codes.dtype} "
                             f"{codes.shape} contiguous={codes.flags.c_contiguous}")
        n, d = codes.shape
        qq = np.ascontiguousarray(q, dtype=np.int8)
        if qq.shape != (d,):
            raise ValueError(f"native scan: query must have {d} levels, got shape {qq.shape}")
        if not 1 <= d <= MAX_DIM:
            raise ValueError(f"native scan: dim must be 1..{MAX_DIM}, got {d}")
        vp = None
        if valid is not None:
            if valid.shape != (n,):
                raise ValueError(f"native scan: valid mask must have shape ({n},), got {valid.shape}")
            valid = np.ascontiguousarray(valid, dtype=np.bool_)
            vp = valid.ctypes.data
        k = int(k)
        if isa < 0:
            isa = self.default_isa
        od = np.empty(k, np.int64)
        orows = np.empty(k, np.int64)
        m = self._fn(codes.ctypes.data if n else None, n, d, qq.ctypes.data, vp, int(thr), k, int(isa),
                     od.ctypes.data, orows.ctypes.data)
        if m < 0:
            raise ValueError(f"native scan: kernel refused its arguments (code {m}: n={n}, d={d}, k={k}, isa={isa}; "
                             f"this CPU has isa {self.isa})")
        return od[:m], orows[:m]


@functools.cache
def load() -> NativeL2 | None:
    """The kernel, or None where the extension was not built (or cannot load on this machine)."""
    path = _library_path()
    if path is None:
        return None
    try:
        return NativeL2(path)
    except OSError:
        return None


def describe() -> str:
    """Which kernel a single int8 query runs on here (``reid-runtime info`` and ``bench`` print it)."""
    lib = load()
    if lib is None:
        return "onnxruntime MatMulInteger (the compiled scan edgereid.runtime._l2scan is not built)"
    return f"compiled scan ({lib.isa_name})"
