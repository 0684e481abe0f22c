"""cpu_features reads only what applies to this process's architecture (real /proc/cpuinfo texts)."""

from __future__ import annotations

import platform

import pytest
from edgereid.runtime import cpu_features

ZEN4 = """processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 25
model		: 17
model name	: AMD EPYC 9R14
stepping	: 1
flags		: fpu sse2 avx avx2 avx512f avx512bw avx512_vnni

processor	: 1
vendor_id	: AuthenticAMD
"""

ORIN = """processor	: 0
BogoMIPS	: 62.50
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x3
CPU part	: 0xd42
CPU revision	: 1
"""


@pytest.fixture
def fake_cpu(monkeypatch: pytest.MonkeyPatch):
    def make(arch: str, cpuinfo: str, hwcaps: set[str] | None):
        monkeypatch.setattr(cpu_features.platform, "machine", lambda: arch)
        monkeypatch.setattr(cpu_features, "_read_cpuinfo", lambda: cpuinfo)
        monkeypatch.setattr(cpu_features, "_arm64_hwcap_flags", lambda: hwcaps)
        monkeypatch.setattr(cpu_features, "_board_model", lambda: "")
        monkeypatch.delenv(cpu_features.FEATURES_ENV, raising=False)
        cpu_features._detected.cache_clear()
        return cpu_features.cpu_info()

    yield make
    cpu_features._detected.cache_clear()


def test_x86_reads_its_flags(fake_cpu) -> None:
    info = fake_cpu("x86_64", ZEN4, None)
    assert info.features == ("avx2", "avx512bw", "vnni")
    assert info.model == "AMD EPYC 9R14" and info.ident == "f25m17s1"


def test_aarch64_ignores_an_x86_host_file_and_trusts_hwcaps(fake_cpu) -> None:
    # qemu-user: the emulated aarch64 process reads the x86 host's /proc/cpuinfo
    info = fake_cpu("aarch64", ZEN4, {"asimddp"})
    assert info.features == ("neon_dot",)
    assert info.model == "" and info.ident == "" and "AMD" not in info.summary()
    assert fake_cpu("aarch64", ZEN4, set()).features == ()  # a Cortex-A57 (Jetson Nano) under qemu
    assert fake_cpu("aarch64", ZEN4, None).features == ()  # no hwcaps either: nothing is claimed


def test_aarch64_hwcaps_win_over_cpuinfo(fake_cpu) -> None:
    info = fake_cpu("aarch64", ORIN, None)  # hwcaps unreadable: the Features line
    assert info.features == ("neon_dot",) and info.ident == "i0x41p0xd42"
    assert fake_cpu("aarch64", ORIN, set()).features == ()  # the kernel withholds it: not usable


@pytest.mark.skipif(platform.machine() not in ("aarch64", "arm64"), reason="aarch64 Linux only (make test-aarch64)")
def test_aarch64_hwcaps_are_readable_here() -> None:
    assert cpu_features._arm64_hwcap_flags() is not None
    cpu_features._detected.cache_clear()
    assert cpu_features.cpu_info().has("neon_dot") == ("asimddp" in cpu_features._arm64_hwcap_flags())
