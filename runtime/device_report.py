"""What this device is and which kernels run on it: the one description ``info`` and ``bench`` print.

Speed on a CPU box or a Jetson depends on the instruction set (AVX2, AVX-512BW, VNNI, NEON dot
product), and so do the kernels and the artifact the runtime picks; a benchmark or a bug report
without them cannot be read. Both commands call :func:`device_report`, so they say the same thing.
"""

from __future__ import annotations

from typing import Any

from .cpu_features import cpu_info
from .native_scan import describe as describe_scan

__all__ = ["search_kernels", "device_report"]


def search_kernels() -> dict[str, str]:
    """Which kernel each kind of gallery search runs on here, in words."""
    kernels = {"single_query": describe_scan()}
    # --- the integer-product kernel (batched queries; 4/1-bit codes): its description goes here, ---
    # --- one line, e.g. kernels["product"] = int_gemm.describe()                                  ---
    return kernels


def device_report() -> dict[str, Any]:
    """``{"cpu": {arch, model, features, summary, ...}, "search_kernel": {...}}`` for reports."""
    cpu = cpu_info()
    return {"cpu": {**cpu.to_dict(), "summary": cpu.summary()}, "search_kernel": search_kernels()}
