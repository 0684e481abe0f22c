"""What this CPU can do, for the choices that depend on it and for reports.

The runtime picks kernels and artifacts by what the CPU offers: x86 machines differ in AVX2,
AVX-512BW and VNNI (integer dot products accumulated in 32 bits), aarch64 boards (Jetson) in the
NEON dot-product extension. :func:`cpu_info` reads ``/proc/cpuinfo`` once (Linux; elsewhere the
fields stay empty and every feature reads as absent) and :attr:`CpuInfo.key` names the CPU for
caches of per-device measurements.

The environment variable ``EDGEREID_CPU_FEATURES`` (comma-separated, e.g. ``avx2``) replaces the
detected feature list: tests and benchmarks use it to make the code choose as it would on another
CPU. It changes choices made in Python, never what the hardware or a library can execute.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

__all__ = ["CpuInfo", "cpu_info", "parse_cpu", "FEATURES", "FEATURES_ENV"]

FEATURES_ENV = "EDGEREID_CPU_FEATURES"
# the features reports name, in this order: (name in reports, flags that mean it in /proc/cpuinfo)
FEATURES: dict[str, tuple[str, ...]] = {
    "avx2": ("avx2",),
    "avx512bw": ("avx512bw",),
    "vnni": ("avx512_vnni", "avx_vnni"),  # x86: int8 dot products into int32 (512- or 256-bit)
    "neon_dot": ("asimddp",),  # aarch64: SDOT/UDOT (Cortex-A76/A78: Jetson Orin; not Xavier's Carmel, TX2/Nano A57)
}


@dataclass(frozen=True)
class CpuInfo:
    """The CPU as reports and caches name it."""

    arch: str  # platform.machine(): x86_64, aarch64, ...
    model: str  # "model name" (x86), else the board or part when known, else ""
    ident: str  # family/model/stepping (x86) or implementer/part (arm): tells CPUs of one name apart
    features: tuple[str, ...]  # of FEATURES' names, those present
    logical_cpus: int
    overridden: bool = False  # features came from EDGEREID_CPU_FEATURES

    def has(self, feature: str) -> bool:
        if feature not in FEATURES:
            raise ValueError(f"unknown CPU feature {feature!r}; known: {', '.join(FEATURES)}")
        return feature in self.features

    @property
    def key(self) -> str:
        """A file-name-safe name for this CPU: measurements cached under it are valid here only."""
        text = f"{self.arch}-{self.model}-{self.ident}-{'+'.join(self.features) or 'base'}-{self.logical_cpus}"
        return "".join(c if c.isalnum() or c in "+-." else "_" for c in text)[:160]

    def to_dict(self) -> dict:
        return {"arch": self.arch, "model": self.model, "ident": self.ident, "logical_cpus": self.logical_cpus,
                "features": {name: name in self.features for name in FEATURES},
                "features_overridden": self.overridden}

    def summary(self) -> str:
        feats = ", ".join(self.features) or "none of " + "/".join(FEATURES)
        name = self.model or self.arch
        return f"{name} ({self.arch}, {self.logical_cpus} logical CPUs; {feats}{' [overridden]' if self.overridden else ''})"


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _first_block(text: str) -> dict[str, str]:
    """The first processor's ``key: value`` lines (keys lower-cased)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if out:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            out.setdefault(key.strip().lower(), value.strip())
    return out


_AT_HWCAP = 16
_HWCAP_ASIMDDP = 1 << 20  # aarch64: SDOT/UDOT


def _auxv_hwcap(raw: bytes) -> int | None:
    """AT_HWCAP from /proc/self/auxv (pairs of native unsigned longs), or None."""
    import struct

    for i in range(0, len(raw) - 15, 16):
        key, value = struct.unpack_from("=QQ", raw, i)
        if key == _AT_HWCAP:
            return value
        if key == 0:
            break
    return None


def parse_cpu(cpuinfo: str, arch: str, hwcap: int | None = None, board: str = "", cpus: int = 1) -> CpuInfo:
    """A :class:`CpuInfo` from ``/proc/cpuinfo`` text and, on aarch64, the kernel's HWCAP bits.

    On aarch64 the HWCAP bits decide (under qemu-user ``/proc/cpuinfo`` is the host's, while the
    auxiliary vector is the emulated CPU's); an ``/proc/cpuinfo`` of another architecture's shape
    is ignored.
    """
    block = _first_block(cpuinfo)
    is_arm = arch in ("aarch64", "arm64")
    if is_arm and "flags" in block:  # an x86 host's /proc/cpuinfo seen through an emulator
        block = {}
    flags = set((block.get("flags") or block.get("features") or "").split())
    if is_arm and hwcap is not None:
        flags = {"asimddp"} if hwcap & _HWCAP_ASIMDDP else set()
    model = block.get("model name") or board or block.get("hardware", "")
    if "cpu family" in block:
        ident = f"f{block.get('cpu family')}m{block.get('model', '?')}s{block.get('stepping', '?')}"
    elif "cpu part" in block:
        ident = f"i{block.get('cpu implementer', '?')}p{block.get('cpu part')}"
    else:
        ident = ""
    features = tuple(name for name, aliases in FEATURES.items() if flags.intersection(aliases))
    return CpuInfo(arch=arch, model=model, ident=ident, features=features, logical_cpus=cpus)


@functools.cache
def _detected() -> CpuInfo:
    arch = platform.machine()
    hwcap = _auxv_hwcap(_read("/proc/self/auxv")) if arch in ("aarch64", "arm64") else None
    # aarch64 boards (Jetson) name themselves in the device tree, not in /proc/cpuinfo
    board = _read("/proc/device-tree/model").rstrip(b"\x00").decode("utf-8", "replace").strip()
    return parse_cpu(_read("/proc/cpuinfo").decode("utf-8", "replace"), arch, hwcap, board, os.cpu_count() or 1)


def _parse_features(text: str) -> tuple[str, ...]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ValueError(f"{FEATURES_ENV}: unknown feature(s) {', '.join(unknown)}; known: {', '.join(FEATURES)}")
    return tuple(n for n in FEATURES if n in names)


def cpu_info() -> CpuInfo:
    """This CPU (detected once); ``EDGEREID_CPU_FEATURES`` replaces the feature list when set."""
    info = _detected()
    env = os.environ.get(FEATURES_ENV)
    if env is None:
        return info
    return CpuInfo(arch=info.arch, model=info.model, ident=info.ident, features=_parse_features(env),
                   logical_cpus=info.logical_cpus, overridden=True)
