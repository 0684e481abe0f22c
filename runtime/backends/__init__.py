"""Inference backends: pick and open the right one for a bundle.

``open_backend(bundle)`` runs the manifest's default artifact; ``backend=``/``precision=`` pick
another (``Bundle.select`` explains the rules). Only onnxruntime is imported eagerly-on-use by
default; openvino and tensorrt are imported only when asked for, and a missing one fails with
:class:`BackendUnavailable` saying what to install.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from typing import Any

from ..bundle import Bundle, BundleError
from ..tables import BACKENDS
from .base import Backend, BackendUnavailable

__all__ = ["Backend", "BackendUnavailable", "BACKENDS", "open_backend", "backend_class", "library_version"]

# BACKENDS (runtime/tables.py): name -> our module and class, and the library it needs. Classes are
# imported lazily, so a missing optional library costs nothing; the library's import name tells
# whether it is installed without importing it.


def backend_class(name: str) -> type[Backend]:
    """The Backend subclass for a backend name (its module imported now)."""
    if name not in BACKENDS:
        raise BundleError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    info = BACKENDS[name]
    return getattr(importlib.import_module(f"{__name__}.{info.module}"), info.cls)


def open_backend(bundle: Bundle, backend: str | None = None, precision: str | None = None,
                 artifact: str | None = None, **options: Any) -> Backend:
    """Verify and open an artifact of ``bundle`` on its backend.

    ``artifact`` names one directly; otherwise ``backend``/``precision`` select one (defaults
    from the manifest). When none of the three is given and the default artifact's library is
    missing here, the bundle's onnxruntime artifact runs instead (with a RuntimeWarning).
    ``options`` go to the backend's constructor (``max_batch``, ``threads``,
    OpenVINO's ``inference_precision``...); options a backend does not take are dropped, so one
    call site can serve all backends.
    """
    art = bundle.artifact(artifact) if artifact else bundle.select(backend, precision)
    if backend is not None and art.backend != backend:
        raise BundleError(f"artifact {art.name!r} runs on {art.backend!r}, not {backend!r}")
    try:
        return _construct(bundle, art, options)
    except BackendUnavailable as exc:
        # Nothing was asked for explicitly and the manifest's default needs an optional library this
        # device lacks (an OpenVINO default on an onnxruntime-only install): run the bundle's ONNX
        # artifact instead, saying so, rather than refusing a bundle that can run here.
        onnx_arts = [a for a in bundle.artifacts.values() if a.backend == "onnxruntime"]
        # the ONNX artifact at the default's precision (a TensorRT int8 engine -> the Q/DQ int8 graph)
        fallback = next((a for a in onnx_arts if a.precision == art.precision), onnx_arts[0] if onnx_arts else None)
        if artifact or backend or precision or fallback is None or art.backend == "onnxruntime":
            raise
        warnings.warn(f"{exc}; running artifact {fallback.name!r} (onnxruntime, {fallback.precision}) instead "
                      f"of the default {art.name!r}", RuntimeWarning, stacklevel=2)
        return _construct(bundle, fallback, options)


def _construct(bundle: Bundle, art, options: dict[str, Any]) -> Backend:
    cls = backend_class(art.backend)
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in options.items() if k in accepted and v is not None}
    return cls(bundle, art, **kwargs)


def library_version(name: str) -> str | None:
    """The installed version of backend ``name``'s library, or None when it is not installed.

    Found without importing the library (importing openvino or tensorrt takes seconds): its
    distribution's metadata, else ``"unknown"`` (TensorRT from JetPack's apt packages has none).
    """
    import importlib.metadata
    import importlib.util

    if name not in BACKENDS:
        raise BundleError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    library = BACKENDS[name].library
    try:
        if importlib.util.find_spec(library) is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:  # another distribution provides it (onnxruntime-gpu, ...)
        pass
    for dist in importlib.metadata.packages_distributions().get(library, []):  # slower: scans every distribution
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"
