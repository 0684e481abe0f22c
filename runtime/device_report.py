"""What this device is and which kernels run on it: the one description ``info`` and ``bench`` print.

Speed on a CPU box or a Jetson depends on the instruction set (AVX2, AVX-512BW, VNNI, NEON dot
product), and so do the kernels and the artifact the runtime picks; a benchmark or a bug report
without them cannot be read. Both commands call :func:`device_report`, so they say the same thing.
"""

from __future__ import annotations

from typing import Any

from .cpu_features import cpu_info

__all__ = ["search_kernels", "device_report"]


def search_kernels() -> dict[str, str]:
    """Which kernel each kind of gallery search runs on here, in words (search owns the list:
    ``single_query_int8``, the compiled scan or its fallback; ``batch``, the integer product and its
    form, which may run its one-off exactness probe here)."""
    from .search import describe_kernels

    return describe_kernels()


def device_report() -> dict[str, Any]:
    """``{"cpu": {arch, model, features, summary, ...}, "search_kernel": {...}}`` for reports."""
    cpu = cpu_info()
    return {"cpu": {**cpu.to_dict(), "summary": cpu.summary()}, "search_kernel": search_kernels()}
