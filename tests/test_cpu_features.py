"""CPU feature detection: what the kernel and artifact choices (and reports) see."""

from __future__ import annotations

import pytest
from edgereid.runtime import cpu_features
from edgereid.runtime.cpu_features import cpu_info, parse_cpu

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
stepping\t: 1
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma bmi2

processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu avx512f avx512bw avx512_vnni
"""
ZEN4_FLAGS = "fpu sse4_2 avx avx2 avx512f avx512bw avx512vl avx512_vnni avx512_bf16"
ORIN = """processor\t: 0
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp uscat
CPU implementer\t: 0x41
CPU part\t: 0xd42
"""
NANO = ORIN.replace(" asimddp", "").replace("0xd42", "0xd07")


def test_x86_features_come_from_the_first_processor() -> None:
    zen3 = parse_cpu(ZEN3, "x86_64", cpus=2)
    assert zen3.features == ("avx2",)  # the second block's AVX-512 flags are not this CPU's first
    assert not zen3.has("vnni") and zen3.has("avx2")
    assert zen3.model == "AMD EPYC 7B13" and zen3.ident == "f25m1s1"
    zen4 = parse_cpu(ZEN3.replace("fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma bmi2", ZEN4_FLAGS), "x86_64", cpus=2)
    assert zen4.features == ("avx2", "avx512bw", "vnni")
    assert zen3.key != zen4.key  # cached measurements of one never serve the other
    assert "/" not in zen4.key and " " not in zen4.key
    assert zen4.to_dict()["features"] == {"avx2": True, "avx512bw": True, "vnni": True, "neon_dot": False}
    with pytest.raises(ValueError, match="unknown CPU feature 'sse'"):
        zen4.has("sse")


def test_aarch64_dot_product_and_board_name() -> None:
    orin = parse_cpu(ORIN, "aarch64", board="NVIDIA Jetson AGX Orin Developer Kit")
    assert orin.features == ("neon_dot",) and orin.model == "NVIDIA Jetson AGX Orin Developer Kit"
    assert orin.ident == "i0x41p0xd42"
    assert parse_cpu(NANO, "aarch64").features == ()
    # the kernel's HWCAP bits decide, and an x86 host's cpuinfo seen under qemu-user is ignored
    emulated = parse_cpu(ZEN3, "aarch64", hwcap=1 << 20)
    assert emulated.features == ("neon_dot",) and emulated.model == "" and emulated.ident == ""
    assert parse_cpu(ZEN3, "aarch64", hwcap=0).features == ()


def test_auxv_is_read_as_pairs() -> None:
    import struct

    raw = struct.pack("=QQQQQQ", 6, 4096, 16, 0x1234, 0, 0)
    assert cpu_features._auxv_hwcap(raw) == 0x1234
    assert cpu_features._auxv_hwcap(b"") is None


def test_override_replaces_the_features(monkeypatch: pytest.MonkeyPatch) -> None:
    real = cpu_info()
    assert real.logical_cpus >= 1 and not real.overridden
    monkeypatch.setenv("EDGEREID_CPU_FEATURES", "vnni, avx2")
    forced = cpu_info()
    assert forced.features == ("avx2", "vnni") and forced.overridden and "[overridden]" in forced.summary()
    assert forced.arch == real.arch and forced.model == real.model
    monkeypatch.setenv("EDGEREID_CPU_FEATURES", "")
    assert cpu_info().features == ()
    monkeypatch.setenv("EDGEREID_CPU_FEATURES", "avx2,avx3")
    with pytest.raises(ValueError, match=r"EDGEREID_CPU_FEATURES: unknown feature\(s\) avx3; known: avx2"):
        cpu_info()
