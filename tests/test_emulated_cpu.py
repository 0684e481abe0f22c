"""The search tests again, on x86 CPUs this machine is not: emulated by qemu-user.

Whether a search is exact must not depend on the CPU CI happens to run on. The kernels differ by
instruction set (the compiled scan has AVX-512BW, AVX2 and portable bodies; onnxruntime's int8
products saturate on x86 without VNNI), so the same tests run here under ``qemu-x86_64`` with CPU
models that lack AVX-512 and VNNI (like AMD Zen 3 or Intel Haswell) or even AVX2. qemu executes
the real instructions of those CPUs, saturating ``pmaddubsw`` included, and answers ``cpuid``
as they would: onnxruntime and the compiled scan pick the kernels they would pick there.

``/proc/cpuinfo`` is not emulated (it still shows this machine's features). The AVX2 run leaves it
so: the feature list then claims VNNI, and the probe alone must keep the saturating direct product
out. The other run states the emulated CPU's features with ``EDGEREID_CPU_FEATURES``.
Needs ``qemu-x86_64-static`` (Debian's qemu-user-static) on an x86-64 machine; skipped elsewhere.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
QEMU = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")

# name -> (qemu CPU model: qemu64 plus features, so qemu has nothing to warn about;
#          EDGEREID_CPU_FEATURES for the run (None: this machine's /proc/cpuinfo shows through);
#          the compiled scan body and the integer product form expected there)
EMULATED_X86 = {
    "avx2-no-avx512-no-vnni": ("qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+avx,+avx2,+fma,+bmi1,+bmi2,+f16c,+movbe,+xsave",
                               None, "AVX2", "bounded"),
    "sse4.2-no-avx": ("qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt", "", "portable C", "bounded"),
}

pytestmark = pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64") or QEMU is None,
    reason="needs qemu-x86_64-static (apt install qemu-user-static) on an x86-64 machine")

_KERNELS = """
from edgereid.runtime import int_gemm, native_scan
lib = native_scan.load()
print("scan=" + (lib.isa_name if lib else "none"))
print("form=" + int_gemm.product_form())
print("direct_exact=" + str(int_gemm.usable("direct")))
"""


def _run(cpu: str, features: str | None, args: list[str], timeout: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "EDGEREID_CPU"))}
    if features is not None:
        env["EDGEREID_CPU_FEATURES"] = features
    return subprocess.run([QEMU, "-cpu", cpu, sys.executable, *args], cwd=TESTS.parent, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name", EMULATED_X86)
def test_search_is_exact_on_an_emulated_cpu(name: str, record_property) -> None:
    cpu, features, scan_body, form = EMULATED_X86[name]
    probe = _run(cpu, features, ["-c", _KERNELS], timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    got = dict(line.split("=", 1) for line in probe.stdout.splitlines() if "=" in line)
    # the kernels that CPU gets: the scan body it has, and never a saturating direct product
    assert got["scan"] == scan_body and got["form"] == form, got
    if features is None:  # the feature list claims VNNI: the probe must be what refuses direct
        assert got["direct_exact"] == "False", got
    tests = _run(cpu, features, ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                       str(TESTS / "test_search.py")], timeout=900)
    tail = tests.stdout[-4000:] + tests.stderr[-2000:]
    assert tests.returncode == 0, tail
    assert " passed" in tests.stdout and " failed" not in tests.stdout, tail
    direct = "exact" if got["direct_exact"] == "True" else "refused: its kernel saturates"
    record_property("kernel_body", (f"emulated {name}", f"test_search.py passed (scan {scan_body}, product {form}; "
                                                         f"direct product {direct})"))
