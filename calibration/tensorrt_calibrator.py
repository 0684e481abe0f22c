"""Implicit int8 calibration for TensorRT older than 10 (JetPack 5 ships TensorRT 8.5).

TensorRT 10 builds int8 engines from the explicit Q/DQ ONNX (``onnx_qdq.py``); before 10 the usual
path is an ``IInt8EntropyCalibrator2`` / ``IInt8MinMaxCalibrator`` fed with calibration batches.

The feeding logic lives in :class:`CalibrationBatcher`, pure numpy, so it is tested without
TensorRT; :func:`make_tensorrt_calibrator` wraps it in a TensorRT calibrator class (TensorRT and
``cuda-python`` are imported lazily, only on the device). The calibration cache file is named by the
model's SHA-256: a cache computed for one graph is never silently reused for another.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from edgereid.data.atomic import write_bytes_atomic


def model_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def cache_path_for(model_path: str | Path, cache_dir: str | Path, algorithm: str = "entropy") -> Path:
    """``cache_dir/<sha256 of the model>.<algorithm>.calib``."""
    return Path(cache_dir) / f"{model_sha256(model_path)}.{algorithm}.calib"


class CalibrationBatcher:
    """Hands out fixed-size, C-contiguous float32 batches of the calibration images, then None.

    A trailing partial batch is dropped (TensorRT's calibration binding has a fixed batch size).
    """

    def __init__(self, images: np.ndarray, batch_size: int) -> None:
        if images.ndim != 4:
            raise ValueError(f"calibration images must be (N, C, H, W), got shape {images.shape}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(images) < batch_size:
            raise ValueError(f"{len(images)} calibration images are fewer than one batch of {batch_size}")
        self.images = images
        self.batch_size = batch_size
        self.index = 0

    @property
    def num_batches(self) -> int:
        return len(self.images) // self.batch_size

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return (self.batch_size, *self.images.shape[1:])

    @property
    def batch_nbytes(self) -> int:
        return int(np.prod(self.batch_shape)) * 4

    def reset(self) -> None:
        self.index = 0

    def next_batch(self) -> np.ndarray | None:
        if self.index >= self.num_batches:
            return None
        i = self.index * self.batch_size
        self.index += 1
        return np.ascontiguousarray(self.images[i:i + self.batch_size], dtype=np.float32)


class CalibrationCache:
    """Read/write of the calibration cache bytes (what TensorRT asks for and hands back)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> bytes | None:
        return self.path.read_bytes() if self.path.is_file() else None

    def write(self, data: bytes) -> None:
        write_bytes_atomic(self.path, bytes(data))


def make_tensorrt_calibrator(onnx_path: str | Path, images: np.ndarray, batch_size: int, cache_dir: str | Path,
                             algorithm: str = "entropy"):
    """A TensorRT int8 calibrator (entropy or minmax) over ``images``; needs tensorrt + cuda-python."""
    try:
        import tensorrt as trt
        from cuda.bindings import runtime as cudart
    except ImportError as exc:
        raise ImportError(f"TensorRT int8 calibration needs tensorrt and cuda-python on the device ({exc}); "
                          "install the [tensorrt] extra or use JetPack's packages") from None
    bases = {"entropy": trt.IInt8EntropyCalibrator2, "minmax": trt.IInt8MinMaxCalibrator}
    if algorithm not in bases:
        raise ValueError(f"calibration algorithm {algorithm!r}: expected one of {sorted(bases)}")
    batcher = CalibrationBatcher(images, batch_size)
    cache = CalibrationCache(cache_path_for(onnx_path, cache_dir, algorithm))

    def check(result):
        err = result[0] if isinstance(result, tuple) else result
        if int(err) != 0:
            raise RuntimeError(f"CUDA error {err}")
        return result[1] if isinstance(result, tuple) and len(result) > 1 else None

    class Calibrator(bases[algorithm]):
        def __init__(self) -> None:
            super().__init__()
            self.batcher, self.cache = batcher, cache
            self.device_ptr = check(cudart.cudaMalloc(batcher.batch_nbytes))

        def get_batch_size(self) -> int:
            return self.batcher.batch_size

        def get_batch(self, names):  # noqa: ARG002 - one input
            batch = self.batcher.next_batch()
            if batch is None:
                return None
            check(cudart.cudaMemcpy(self.device_ptr, batch.ctypes.data, batch.nbytes,
                                    cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))
            return [int(self.device_ptr)]

        def read_calibration_cache(self):
            return self.cache.read()

        def write_calibration_cache(self, data) -> None:
            self.cache.write(bytes(data))

        def free(self) -> None:
            if self.device_ptr is not None:
                check(cudart.cudaFree(self.device_ptr))
                self.device_ptr = None

    return Calibrator()
