"""Exact integer matrix products for the search kernel, through onnxruntime's MatMulInteger.

Why: numpy has no fast int8 matmul (it does not use BLAS for integers: a few GOP/s), and
converting int8 codes to float32 for BLAS quadruples the bytes every scan touches. onnxruntime
(already the runtime's inference dependency) runs ``MatMulInteger`` with uint8 x int8 operands
on its MLAS kernels (AVX2/AVX-512 VNNI on x86, dot-product instructions on ARM): exact int32
results at several hundred GOP/s per core.

The graph is one node, ``Y = MatMulInteger(A, B, a_zero_point)``, with ``A`` uint8 (rows, K),
``B`` int8 (K, N) and an optional scalar uint8 zero point for ``A``. It is serialised here by hand
(a few protobuf fields) because the ``onnx`` Python package is not a runtime dependency. Sessions
use one intra-op thread: the search kernel runs several sessions' calls in parallel from its own
worker threads, which also parallelises the numpy work around each product.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

__all__ = ["matmul_integer_model", "IntGemm", "ort_available"]

# onnx.TensorProto.DataType values
_UINT8, _INT8, _INT32 = 2, 3, 6


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
    """``(A - a_zero_point) @ B`` exactly, int32, for uint8 ``A`` (rows, K) and a fixed int8 ``B``.

    ``B`` (the queries) is fixed at construction; ``__call__`` takes a C-contiguous uint8 ``A``.
    """

    def __init__(self, b: np.ndarray, a_zero_point: int | None) -> None:
        if b.dtype != np.int8 or b.ndim != 2:
            raise ValueError(f"IntGemm: B must be a 2-D int8 array, got {b.dtype} {b.shape}")
        self.b = np.ascontiguousarray(b)
        self.k = int(b.shape[0])
        self._sess = _session(self.k, a_zero_point)

    def __call__(self, a: np.ndarray) -> np.ndarray:
        return self._sess.run(None, {"A": a, "B": self.b})[0]
