"""Which TensorRT this process can use, and the few places where their Python APIs differ.

Two libraries build and run the engines:

- ``tensorrt`` (TensorRT 8.5 on JetPack 5, 10.x on JetPack 6 and on x86 GPUs): weakly typed
  networks, precision chosen by builder flags (``FP16``, ``INT8``); TensorRT 8.x must ask for an
  explicit-batch network, 10.x networks always are. Engines are built on the GPU they run on.
- ``tensorrt_rtx_bindings`` (TensorRT for RTX, ``pip install edgereid[tensorrt-rtx]``): strongly
  typed networks (the precision is the graph's own: float32 graph -> fp32 engine, Q/DQ graph ->
  int8 engine; no precision flags, no calibrator), and engines built ahead of time on any machine,
  even one without a GPU, for a list of compute capabilities (default: TensorRT-RTX's portable set,
  Ampere and newer; Turing, 7.5, must be asked for). Running an engine needs an RTX GPU.

Everything else the builder and the backend use (``OnnxParser``, ``Builder``, optimisation
profiles, timing caches, ``Runtime.deserialize_cuda_engine``, the named-tensor execution API) is
the same in both. :func:`import_tensorrt` returns a :class:`TensorRTLibrary` that hides the
differences; the code that uses it never branches on the library's name itself.
"""

from __future__ import annotations

import importlib
import platform
from dataclasses import dataclass
from typing import Any

from .backends.base import BackendUnavailable

__all__ = ["LIBRARIES", "TensorRTLibrary", "import_tensorrt", "available_libraries", "MIN_TENSORRT"]

# name -> (Python module, label, what to install). Order = the preference of library="auto".
LIBRARIES: dict[str, tuple[str, str, str]] = {
    "tensorrt": ("tensorrt", "TensorRT",
                 "TensorRT ships with JetPack on Jetson (python3-libnvinfer); on an x86 GPU machine install it from "
                 "NVIDIA's index (pip install edgereid[tensorrt])"),
    "tensorrt-rtx": ("tensorrt_rtx_bindings", "TensorRT-RTX",
                     "pip install edgereid[tensorrt-rtx] (tensorrt-rtx-cu12-libs and tensorrt-rtx-cu12-bindings)"),
}
# TensorRT-RTX wheels exist for x86-64 only (pyproject's tensorrt-rtx markers): elsewhere (a Jetson)
# its install hint would install nothing
RTX_MACHINES = ("x86_64", "AMD64")
MIN_TENSORRT = (8, 5)  # JetPack 5: the named-tensor API (execute_async_v3) and memory pools exist from 8.5


@dataclass(frozen=True)
class TensorRTLibrary:
    """An imported TensorRT module and what it can do."""

    module: Any
    library: str  # a key of LIBRARIES
    version: str

    @property
    def label(self) -> str:
        return f"{LIBRARIES[self.library][1]} {self.version}"

    @property
    def strongly_typed(self) -> bool:
        """Precision comes from the graph's types, not from builder flags (TensorRT-RTX)."""
        return self.library == "tensorrt-rtx"

    @property
    def ahead_of_time(self) -> bool:
        """Engines can be built without a GPU, for chosen compute capabilities (TensorRT-RTX)."""
        return self.library == "tensorrt-rtx"

    @property
    def precisions(self) -> tuple[str, ...]:
        return ("fp32", "int8") if self.strongly_typed else ("fp32", "fp16", "int8")

    @property
    def default_precision(self) -> str:
        return "fp32" if self.strongly_typed else "fp16"

    def network_flags(self) -> int:
        """Flags for ``Builder.create_network``: explicit batch on TensorRT 8.x, nothing otherwise."""
        if self.library == "tensorrt" and int(self.version.split(".")[0]) < 10:
            return 1 << int(self.module.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        return 0

    def check_precision(self, precision: str) -> str:
        if precision not in self.precisions:
            why = (" (strongly typed: an fp32 engine comes from the float32 graph, an int8 engine from the Q/DQ "
                   "graph; there are no precision flags)" if self.strongly_typed else "")
            raise ValueError(f"precision {precision!r}: {self.label} builds {', '.join(self.precisions)}{why}")
        return precision

    def set_precision(self, config, precision: str) -> None:
        """Builder flags for ``precision``; a strongly typed library takes the graph's types as they are."""
        self.check_precision(precision)
        if self.strongly_typed:
            return
        if precision in ("fp16", "int8"):
            config.set_flag(self.module.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(self.module.BuilderFlag.INT8)

    def compute_capability_names(self) -> list[str]:
        """The compute capabilities an ahead-of-time build can target, as ``8.6``-style strings."""
        if not self.ahead_of_time:
            return []
        names = [n for n in self.module.ComputeCapability.__members__ if n.startswith("SM")]
        return [_sm_to_dotted(n) for n in names]

    def set_compute_capabilities(self, config, capabilities: list[str] | tuple[str, ...] | None) -> list[str]:
        """Target ``capabilities`` (``["8.6", "8.9"]``, or ``["current"]`` on a GPU machine); None = the
        library's default. Returns what the engine is built for, for the manifest."""
        if not capabilities:
            return ["default"] if self.ahead_of_time else ["current"]
        if not self.ahead_of_time:
            raise ValueError(f"--compute-capability: {self.label} builds for the GPU it runs on; compute "
                             "capabilities are chosen only with TensorRT-RTX (--library tensorrt-rtx)")
        enum = self.module.ComputeCapability
        values = []
        for cc in capabilities:
            key = "CURRENT" if cc.lower() == "current" else "SM" + cc.replace(".", "")
            if key not in enum.__members__ or key in ("NONE",):
                raise ValueError(f"compute capability {cc!r}: {self.label} knows "
                                 f"{', '.join(self.compute_capability_names())} (or 'current' on a GPU machine)")
            values.append(enum.__members__[key])
        config.num_compute_capabilities = len(values)
        for i, value in enumerate(values):
            config.set_compute_capability(value, i)
        return [c.lower() if c.lower() == "current" else _sm_to_dotted("SM" + c.replace(".", "")) for c in capabilities]


def _sm_to_dotted(name: str) -> str:
    digits = name[2:]
    return f"{digits[:-1]}.{digits[-1]}"


def available_libraries() -> list[str]:
    """The TensorRT libraries importable here, in preference order."""
    out = []
    for name, (module, _, _) in LIBRARIES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        out.append(name)
    return out


def import_tensorrt(library: str = "auto") -> TensorRTLibrary:
    """Import ``tensorrt`` (8.5+) or ``tensorrt_rtx_bindings``; ``auto`` takes the first one present.

    Raises :class:`BackendUnavailable` naming what to install when none (or not the one asked for) is here.
    """
    if library != "auto" and library not in LIBRARIES:
        raise ValueError(f"TensorRT library {library!r}: expected auto or one of {', '.join(LIBRARIES)}")
    names = list(LIBRARIES) if library == "auto" else [library]
    errors = []
    for name in names:
        module_name, label, install = LIBRARIES[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if name == "tensorrt-rtx" and platform.machine() not in RTX_MACHINES:
                install = (f"it has no {platform.machine() or 'build for this machine'} build (x86-64 only); "
                           "on a Jetson, TensorRT comes with JetPack")
            errors.append(f"{label}: {exc}; {install}")
            continue
        version = str(getattr(module, "__version__", "0"))
        if name == "tensorrt" and tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) < MIN_TENSORRT:
            errors.append(f"{label} {version} found; edgereid needs TensorRT {'.'.join(map(str, MIN_TENSORRT))} or "
                          "newer (JetPack 5.1+)")
            continue
        return TensorRTLibrary(module, name, version)
    raise BackendUnavailable("no usable TensorRT here: " + " | ".join(errors))
