"""What this CPU can do, for the choices that depend on it and for reports.

The runtime picks kernels and artifacts by what the CPU offers: x86 machines differ in AVX2,
AVX-512BW and VNNI (integer dot products accumulated in 32 bits), aarch64 boards (Jetson) in the
NEON dot-product extension. :func:`cpu_info` reads ``/proc/cpuinfo`` once (Linux; elsewhere the
fields stay empty and every feature reads as absent) and :attr:`CpuInfo.key` names the CPU for
caches of per-device measurements. On aarch64 Linux the features come from the kernel's hwcaps
(``getauxval(AT_HWCAP)``: what this process may execute), and a ``/proc/cpuinfo`` written for
another architecture is ignored: under qemu-user (``make test-aarch64``) an aarch64 process reads
the x86 host's file, whose AVX flags it cannot use.

The environment variable ``EDGEREID_CPU_FEATURES`` (comma-separated, e.g. ``avx2``) replaces the
detected feature list: tests and benchmarks use it to make the code choose as it would on another
CPU. It changes choices made in Python, never what the hardware or a library can execute.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

__all__ = ["CpuInfo", "cpu_info", "FEATURES", "FEATURES_ENV"]

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


def _read_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


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


def _board_model() -> str:
    """aarch64 boards (Jetson) name themselves in the device tree, not in /proc/cpuinfo."""
    try:
        with open("/proc/device-tree/model", "rb") as f:
            return f.read().rstrip(b"\x00").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _parse_features(text: str) -> tuple[str, ...]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ValueError(f"{FEATURES_ENV}: unknown feature(s) {', '.join(unknown)}; known: {', '.join(FEATURES)}")
    return tuple(n for n in FEATURES if n in names)


_X86_ARCHES = ("x86_64", "amd64", "i386", "i686")
_ARM64_ARCHES = ("aarch64", "arm64")
_AT_HWCAP = 16  # getauxval() key of the aarch64 hwcap bits (linux/auxvec.h)
_ARM64_HWCAPS = {"asimddp": 1 << 20}  # /proc/cpuinfo name -> HWCAP_* bit (arch/arm64 uapi hwcap.h)


def _arm64_hwcap_flags() -> set[str] | None:
    """aarch64 Linux: the hwcaps the kernel grants this process, as /proc/cpuinfo names; None if unreadable."""
    try:
        import ctypes

        getauxval = ctypes.CDLL(None).getauxval
    except (OSError, AttributeError):
        return None
    getauxval.restype = ctypes.c_ulong
    getauxval.argtypes = [ctypes.c_ulong]
    caps = int(getauxval(_AT_HWCAP))
    if caps == 0:  # every aarch64 CPU has at least fp/asimd: 0 means no hwcaps were passed
        return None
    return {name for name, bit in _ARM64_HWCAPS.items() if caps & bit}


def _describes(block: dict[str, str], arch: str) -> bool:
    """Whether a /proc/cpuinfo block was written for ``arch`` (x86 blocks name a vendor and family)."""
    x86_block = "vendor_id" in block or "cpu family" in block
    return not block or x86_block == (arch.lower() in _X86_ARCHES)


@functools.cache
def _detected() -> CpuInfo:
    arch = platform.machine()
    block = _first_block(_read_cpuinfo())
    if not _describes(block, arch):
        block = {}  # an emulated process reading its host's file (qemu-user): nothing in it applies here
    flags = set((block.get("flags") or block.get("features") or "").split())
    if arch.lower() in _ARM64_ARCHES:
        hwcaps = _arm64_hwcap_flags()
        if hwcaps is not None:
            flags = hwcaps
    model = block.get("model name") or _board_model() or block.get("hardware", "")
    if "cpu family" in block:
        ident = f"f{block.get('cpu family')}m{block.get('model', '?')}s{block.get('stepping', '?')}"
    elif "cpu part" in block:
        ident = f"i{block.get('cpu implementer', '?')}p{block.get('cpu part')}"
    else:
        ident = ""
    features = tuple(name for name, aliases in FEATURES.items() if flags.intersection(aliases))
    return CpuInfo(arch=arch, model=model, ident=ident, features=features, logical_cpus=os.cpu_count() or 1)


def cpu_info() -> CpuInfo:
    """This CPU (detected once); ``EDGEREID_CPU_FEATURES`` replaces the feature list when set."""
    info = _detected()
    env = os.environ.get(FEATURES_ENV)
    if env is None:
        return info
    return CpuInfo(arch=info.arch, model=info.model, ident=info.ident, features=_parse_features(env),
                   logical_cpus=info.logical_cpus, overridden=True)
