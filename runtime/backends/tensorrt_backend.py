"""TensorRT backend: runs an engine with ``tensorrt`` (Jetson, x86 GPU servers) or TensorRT-RTX.

Which library runs an engine is recorded with it in the manifest (``library``: ``tensorrt`` or
``tensorrt-rtx``, written by ``reid-runtime build-engine`` / ``edgereid export --target rtx``); an
engine without that field runs with whichever is importable (``tensorrt`` first). Both use the same
execution API (``edgereid.runtime.tensorrt_api``): ``Runtime.deserialize_cuda_engine``, the
named-tensor API (``num_io_tensors``, ``get_tensor_name``, ``get_tensor_mode``,
``get_tensor_dtype``, ``get_tensor_profile_shape``), ``IExecutionContext.set_input_shape``,
``set_tensor_address`` and ``execute_async_v3`` (TensorRT 8.5+).

Device memory and copies go through cuda-python's runtime bindings
(``from cuda.bindings import runtime as cudart``), or pycuda when cuda-python is missing. Buffers
are sized for the engine's largest profile batch once, and reused; a dynamic-batch engine runs any
count up to its profile's maximum without padding.

The engine file is verified against the manifest's SHA-256 (like every artifact) before it is
deserialised. A machine without a usable NVIDIA GPU is reported as :class:`BackendUnavailable`
before the engine is touched (so ``open_backend`` can fall back to the bundle's ONNX); an engine
built for another GPU or TensorRT version is reported with the manifest's ``built_for``.

Not run in CI: no GPU there. What CI does run is the TensorRT-RTX build of every exported graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..bundle import Artifact, Bundle, BundleError
from ..tensorrt_api import import_tensorrt
from .base import Backend, BackendUnavailable

__all__ = ["TensorRTBackend", "import_tensorrt"]


class _CudaRT:
    """The few CUDA calls needed: malloc, free, async copies, a stream. cuda-python or pycuda."""

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart

            self.cudart = cudart
            self.kind = "cuda-python"
            err, count = cudart.cudaGetDeviceCount()
            if int(err) != 0 or not count:
                _, msg = cudart.cudaGetErrorString(err)
                why = msg.decode() if isinstance(msg, bytes) else str(msg)
                raise BackendUnavailable(f"no usable NVIDIA GPU here (CUDA: {why if int(err) else 'no device'}): "
                                         "a TensorRT engine runs only on the GPU family it was built for")
            self.stream = self._check(cudart.cudaStreamCreate())
            return
        except ImportError:
            pass
        try:
            import pycuda.autoinit  # noqa: F401  (creates the context)
            import pycuda.driver as cuda
        except ImportError as exc:
            raise BackendUnavailable(f"the TensorRT backend needs cuda-python or pycuda ({exc}): they ship with "
                                     "JetPack; elsewhere pip install cuda-python") from None
        self.cudart = None
        self.cuda = cuda
        self.kind = "pycuda"
        self.stream = cuda.Stream()
        self._allocs: dict[int, Any] = {}

    def _check(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            _, msg = self.cudart.cudaGetErrorString(err)
            raise RuntimeError(f"CUDA error {int(err)}: {msg.decode() if isinstance(msg, bytes) else msg}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def malloc(self, nbytes: int) -> int:
        if self.cudart is not None:
            return int(self._check(self.cudart.cudaMalloc(nbytes)))
        mem = self.cuda.mem_alloc(nbytes)
        self._allocs[int(mem)] = mem
        return int(mem)

    def free(self, ptr: int) -> None:
        if self.cudart is not None:
            self._check(self.cudart.cudaFree(ptr))
        else:
            self._allocs.pop(ptr, None)

    def htod(self, dst: int, host: np.ndarray) -> None:
        if self.cudart is not None:
            self._check(self.cudart.cudaMemcpyAsync(dst, host.ctypes.data, host.nbytes,
                                                    self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
        else:
            self.cuda.memcpy_htod_async(dst, host, self.stream)

    def dtoh(self, host: np.ndarray, src: int) -> None:
        if self.cudart is not None:
            self._check(self.cudart.cudaMemcpyAsync(host.ctypes.data, src, host.nbytes,
                                                    self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        else:
            self.cuda.memcpy_dtoh_async(host, src, self.stream)

    @property
    def stream_handle(self) -> int:
        return int(self.stream) if self.cudart is not None else self.stream.handle

    def synchronize(self) -> None:
        if self.cudart is not None:
            self._check(self.cudart.cudaStreamSynchronize(self.stream))
        else:
            self.stream.synchronize()


class TensorRTBackend(Backend):
    """A deserialised engine with one input and the embedding output (other outputs ignored)."""

    name = "tensorrt"

    def __init__(self, bundle: Bundle, artifact: Artifact | str | None = None, max_batch: int | None = None) -> None:
        super().__init__(bundle, artifact, max_batch)
        lib = import_tensorrt(str(self.artifact.extra.get("library", "auto")))
        trt = lib.module
        self.library = lib
        self.cuda = _CudaRT()
        path = bundle.file(self.artifact, "engine")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            built_for = self.artifact.extra.get("built_for", "unknown")
            raise BundleError(f"{path}: {lib.label} cannot deserialise this engine (built for {built_for}); "
                              "rebuild it for this device: reid-runtime build-engine")
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if inputs != [self.input_spec.name]:
            raise BundleError(f"{path}: engine inputs are {inputs}, the manifest's input.name says "
                              f"{self.input_spec.name!r}")
        if self.embedding_spec.output_name not in outputs:
            raise BundleError(f"{path}: engine has no output {self.embedding_spec.output_name!r}; it has {outputs}")
        self._in, self._out = inputs[0], self.embedding_spec.output_name
        self._in_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self._in)))
        self._out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self._out)))
        in_shape = tuple(engine.get_tensor_shape(self._in))
        if in_shape[0] == -1:  # dynamic batch: the profile's max caps one call
            profile_max = int(engine.get_tensor_profile_shape(self._in, 0)[2][0])
            self.max_batch = min(self.max_batch, profile_max) if max_batch else profile_max
        else:
            self.fixed_batch = self.max_batch = int(in_shape[0])
        # other outputs (if any) still need an address: give each a buffer, never read it
        self._buffers: dict[str, int] = {}
        for n in names:
            shape = list(engine.get_tensor_shape(n))
            shape[0] = self.max_batch if shape[0] == -1 else shape[0]
            nbytes = int(np.prod(shape)) * np.dtype(trt.nptype(engine.get_tensor_dtype(n))).itemsize
            self._buffers[n] = self.cuda.malloc(max(nbytes, 1))
            self.context.set_tensor_address(n, self._buffers[n])

    def _run(self, batch: np.ndarray) -> np.ndarray:
        rows = batch.shape[0]
        host_in = np.ascontiguousarray(batch, dtype=self._in_dtype)
        if not self.context.set_input_shape(self._in, host_in.shape):
            raise RuntimeError(f"TensorRT refused input shape {host_in.shape} for {self._in!r}")
        out_shape = tuple(self.context.get_tensor_shape(self._out))
        host_out = np.empty(out_shape, self._out_dtype)
        self.cuda.htod(self._buffers[self._in], host_in)
        if not self.context.execute_async_v3(self.cuda.stream_handle):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        self.cuda.dtoh(host_out, self._buffers[self._out])
        self.cuda.synchronize()
        return host_out.reshape(rows, -1)

    def close(self) -> None:
        for ptr in getattr(self, "_buffers", {}).values():
            try:
                self.cuda.free(ptr)
            except Exception:  # closing must not raise on a dying context
                pass
        self._buffers = {}
        self.context = None
        self.engine = None
