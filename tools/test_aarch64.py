#!/usr/bin/env python3
"""Run the runtime's tests on an emulated aarch64 CPU (the Jetson CPU): ``make test-aarch64``.

What it does, each step cached under ``build/aarch64/`` (a second run reuses everything but the
test run itself):

1. host tools, installed with apt-get when missing (needs root or sudo): ``qemu-user-static``
   (runs aarch64 Linux programs on this machine), ``mmdebstrap`` (an arm64 Debian root),
   ``gcc-aarch64-linux-gnu`` + ``libc6-dev-arm64-cross`` (cross-compiles the C scan);
2. an arm64 Debian bookworm root with Python 3.11 (``mmdebstrap --variant=extract``: unpacks
   packages, runs nothing);
3. aarch64 wheels of the runtime's dependencies and the test tools (``tools/aarch64-requirements.txt``),
   installed by pip with ``--platform`` into a folder named by the requirements' hash;
4. the edgereid packages staged as pyproject's ``package-dir`` maps them, with the compiled scan
   ``runtime/_l2scan.c`` cross-built for aarch64 beside ``native_scan.py``;
5. per emulated CPU: first a probe (the CPU's dot-product hwcap, ``cpu_features``, the scan's kernel
   body via ``native_scan.describe()``), then pytest on the selected files. The run fails when a test
   fails, when a file collected no test or ran none, when more than ``--max-skipped`` of the tests
   skipped, or when one of the tests this target exists for (``MUST_PASS``) did not pass.

Subprocesses of the tests (the CLI, the crash tests) re-run ``sys.executable``: that is a small
shell wrapper starting qemu again (qemu's ``-0`` sets argv[0], from which Python derives
``sys.executable``), so no binfmt_misc registration is needed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITE = "bookworm"  # Debian release of the arm64 root: its python3 is 3.11
PY_VERSION = "3.11"
ROOT_PACKAGES = ["python3", "libstdc++6", "libgomp1"]
REQUIREMENTS = REPO / "tools" / "aarch64-requirements.txt"
# the wheels' platform tags the root's glibc (2.36) accepts; pip does not infer older ones
WHEEL_PLATFORMS = ["manylinux2014_aarch64"] + [f"manylinux_2_{m}_aarch64" for m in range(17, 37)]

# host command -> the Debian package that provides it
HOST_TOOLS = {
    "qemu-aarch64-static": "qemu-user-static",
    "mmdebstrap": "mmdebstrap",
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
}
CROSS_LIBC_HEADER = Path("/usr/aarch64-linux-gnu/include/stdint.h")  # from libc6-dev-arm64-cross

# qemu CPU model -> (the boards it stands for, whether it has the dot-product extension)
CPUS = {
    "cortex-a76": ("Jetson Orin class (Orin's Cortex-A78AE: ARMv8.2-A with dot product)", True),
    "cortex-a57": ("Jetson Nano / TX2 class (Cortex-A57: ARMv8.0-A, no dot product)", False),
}

# test selections: every file must collect tests and run them
SELECTIONS = {
    "runtime": [
        "tests/test_cpu_features.py", "tests/test_codec.py", "tests/test_search.py", "tests/test_matching.py",
        "tests/test_metrics.py", "tests/test_store.py", "tests/test_store_crash.py", "tests/test_store_fuzz.py",
        "tests/test_preprocess.py", "tests/test_runtime_bundle.py", "tests/test_runtime_cli.py",
        "tests/test_runtime_no_torch.py", "tests/test_runtime_library.py",
    ],
    # the kernels whose results could depend on the CPU (integer products, the C scan), no CLI
    "kernels": ["tests/test_cpu_features.py", "tests/test_codec.py", "tests/test_search.py", "tests/test_matching.py", "tests/test_store.py"],
}
# (file, test-name prefix): tests that must have run and passed where their file was selected (the
# probe checks that the cross-built scan loads; these check what it and the other kernels compute)
MUST_PASS = [
    ("tests/test_search.py", "test_native_kernel_every_isa_equals_brute_force"),
    ("tests/test_search.py", "test_native_kernel_rejects_bad_arguments"),
    ("tests/test_search.py", "test_auto_kernel_picks_the_compiled_scan_for_few_int8_queries"),
    ("tests/test_search.py", "test_int_gemm_model_is_valid_onnx"),
    ("tests/test_search.py", "test_every_product_form_is_exact_or_refused"),
    ("tests/test_search.py", "test_every_kernel_is_exact_at_extreme_levels"),
    ("tests/test_store_crash.py", "test_sigkill_during_enrolment_20_times"),
    ("tests/test_store_fuzz.py", "test_random_flips_and_truncations_give_a_prefix_or_a_clean_error"),
    ("tests/test_runtime_cli.py", "test_enroll_from_folders_and_one_identity"),
    ("tests/test_runtime_cli.py", "test_openvino_backend_gives_the_same_answers"),
    ("tests/test_runtime_no_torch.py", "test_reid_runtime_works_without_torch"),
]

# run inside the emulated Python before the tests: what it runs on, and that the scan is there
PROBE = r"""
import ctypes, json, platform, sys
from edgereid.runtime import cpu_features, native_scan
hwcap = ctypes.CDLL(None).getauxval
hwcap.restype = ctypes.c_ulong
lib = native_scan.load()
print(json.dumps({
    "machine": platform.machine(), "python": sys.version.split()[0], "executable": sys.executable,
    "hwcap_asimddp": bool(hwcap(16) & (1 << 20)),  # AT_HWCAP, HWCAP_ASIMDDP: SDOT/UDOT
    "cpu_features": cpu_features.cpu_info().summary(),
    "neon_dot": cpu_features.cpu_info().has("neon_dot"),
    "scan": native_scan.describe(), "scan_library": str(lib.path) if lib else None,
}))
"""


def log(msg: str) -> None:
    print(f"[test-aarch64] {msg}", flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Run a preparation step; a failure ends the run naming the step (its own output is above)."""
    log("$ " + shlex.join(str(c) for c in cmd))
    proc = subprocess.run([str(c) for c in cmd], **kw)
    if proc.returncode != 0:
        sys.exit(f"test-aarch64: {Path(str(cmd[0])).name} {' '.join(str(c) for c in cmd[1:3])} ... "
                 f"exited {proc.returncode} (see its output above)")
    return proc


# ---- 1. host tools ----------------------------------------------------------------------------

def missing_host_packages() -> list[str]:
    pkgs = [pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None]
    if not CROSS_LIBC_HEADER.is_file():
        pkgs.append("libc6-dev-arm64-cross")
    if importlib.util.find_spec("ensurepip") is None:  # python3 -m venv needs it (Debian: python3-venv)
        pkgs.append("python3-venv")
    return pkgs


def ensure_host_tools(allow_apt: bool) -> None:
    pkgs = missing_host_packages()
    if not pkgs:
        return
    if not allow_apt:
        sys.exit(f"test-aarch64: missing host packages {' '.join(pkgs)}; install them "
                 f"(apt-get install {' '.join(pkgs)}) or run without --no-apt")
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            sys.exit(f"test-aarch64: needs the Debian packages {' '.join(pkgs)} and is not root (no sudo either)")
        prefix = ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    lock = ["-o", "DPkg::Lock::Timeout=600"]  # another apt run in progress: wait for it
    run(prefix + ["apt-get", *lock, "update", "-q"], env=env, stdout=subprocess.DEVNULL)
    run(prefix + ["apt-get", *lock, "install", "-y", "-q", "--no-install-recommends", *pkgs], env=env,
        stdout=subprocess.DEVNULL)
    still = missing_host_packages()
    if still:
        sys.exit(f"test-aarch64: apt-get install finished but {' '.join(still)} are still missing")


def qemu_binary() -> str:
    return shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64") or "qemu-aarch64-static"


# ---- 2. the arm64 root ------------------------------------------------------------------------

def ensure_root(build: Path) -> Path:
    root = build / "root"
    stamp = root / ".edgereid-root"
    want = f"{SUITE} {','.join(ROOT_PACKAGES)}"
    if stamp.is_file() and stamp.read_text() == want:
        return root
    tmp = build / "root.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    run(["mmdebstrap", "--variant=extract", "--arch=arm64", "--include=" + ",".join(ROOT_PACKAGES), "--quiet",
         SUITE, tmp])
    python = tmp / "usr" / "bin" / f"python{PY_VERSION}"
    if not python.is_file():
        sys.exit(f"test-aarch64: the {SUITE} root has no {python.relative_to(tmp)}; "
                 f"PY_VERSION in {Path(__file__).name} must match {SUITE}'s python3")
    # no tmp/ inside the root: qemu -L would map /tmp there for reads but not for new files
    shutil.rmtree(tmp / "tmp", ignore_errors=True)
    (tmp / stamp.name).write_text(want)
    tmp.rename(root)
    return root


# ---- 3. aarch64 wheels ------------------------------------------------------------------------

def host_pip(build: Path) -> list[str]:
    """pip in a small venv of this machine's Python (Debian's own python3 refuses pip installs)."""
    venv = build / "host-venv"
    py = venv / "bin" / "python"
    if not py.is_file():
        run([sys.executable, "-m", "venv", "--clear", venv])
    return [str(py), "-m", "pip"]


def ensure_site(build: Path) -> Path:
    text = REQUIREMENTS.read_text()
    key = hashlib.sha256((text + PY_VERSION + " ".join(WHEEL_PLATFORMS)).encode()).hexdigest()[:12]
    site = build / f"site-{key}"
    if (site / ".edgereid-complete").is_file():
        return site
    for old in build.glob("site-*"):  # an older requirements file's wheels
        shutil.rmtree(old, ignore_errors=True)
    tmp = build / f"site-{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    plats = [a for p in WHEEL_PLATFORMS for a in ("--platform", p)]
    run([*host_pip(build), "install", "--quiet", "--disable-pip-version-check", "--no-compile", "--only-binary", ":all:",
         *plats, "--python-version", PY_VERSION, "--implementation", "cp", "--target", tmp, "-r", REQUIREMENTS])
    (tmp / ".edgereid-complete").write_text(text)
    tmp.rename(site)
    return site


# ---- 4. the edgereid import tree + the cross-built scan -----------------------------------------

def package_dirs() -> dict[str, str]:
    try:
        import tomllib
    except ModuleNotFoundError:
        sys.exit("test-aarch64: needs Python 3.11+ on this machine (tomllib) to read pyproject.toml")
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]["package-dir"]


def stage_packages(build: Path) -> Path:
    """Copy the packages (not symlinks: native_scan finds its library next to its resolved path)."""
    pkg = build / "pkg"
    wanted: set[Path] = set()
    for name, src in sorted(package_dirs().items()):
        src_dir, dst_dir = REPO / src, pkg / name.replace(".", "/")
        for f in src_dir.rglob("*"):
            if not f.is_file() or "__pycache__" in f.parts or f.suffix in (".so", ".pyc"):
                continue
            dst = dst_dir / f.relative_to(src_dir)
            wanted.add(dst)
            st = f.stat()
            if dst.is_file() and dst.stat().st_mtime_ns == st.st_mtime_ns and dst.stat().st_size == st.st_size:
                continue  # unchanged: keeps its __pycache__ valid
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst)
    for f in pkg.rglob("*"):
        if f.is_file() and f not in wanted and "__pycache__" not in f.parts:
            f.unlink()  # deleted upstream (and any stale compiled scan)
    return pkg


def build_scan(pkg: Path, suffix: str) -> Path:
    out = pkg / "edgereid" / "runtime" / f"_l2scan{suffix}"
    cmd = ["aarch64-linux-gnu-gcc", "-O3", "-Wall", "-fPIC", "-shared", "-o", out, REPO / "runtime" / "_l2scan.c"]
    run(cmd)
    return out


# ---- 5. emulated runs --------------------------------------------------------------------------

def write_wrappers(build: Path, root: Path, cpu: str) -> Path:
    """bin/python (qemu + the root's python3.11 for this CPU) and bin/reid-runtime beside it."""
    bindir = build / f"cpu-{cpu}" / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    python = bindir / "python"
    python.write_text("#!/bin/sh\n# the arm64 root's Python on an emulated " + cpu + " (tools/test_aarch64.py)\n"
                      f"exec {shlex.quote(qemu_binary())} -cpu {cpu} -L {shlex.quote(str(root))} -0 \"$0\" "
                      f"{shlex.quote(str(root / 'usr' / 'bin' / ('python' + PY_VERSION)))} \"$@\"\n")
    cli = bindir / "reid-runtime"  # what the console script does (tests/test_runtime_cli.py looks for it)
    cli.write_text("#!/bin/sh\nexec \"$(dirname \"$0\")/python\" -c "
                   "'import sys; from edgereid.runtime.cli import main; sys.exit(main())' \"$@\"\n")
    for f in (python, cli):
        f.chmod(0o755)
    return python


def emulated_env(pkg: Path, site: Path, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTHON") and k not in ("VIRTUAL_ENV", "OPENBLAS_CORETYPE", "EDGEREID_CPU_FEATURES")}
    env.update(PYTHONPATH=f"{pkg}:{site}", PYTHONSAFEPATH="1", PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1",
               TMPDIR=str(tmp))
    return env


def probe(python: Path, env: dict[str, str], cpu: str) -> dict:
    import json

    out = subprocess.run([str(python), "-c", PROBE], env=env, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        sys.exit(f"test-aarch64: the emulated Python failed on {cpu}:\n{out.stdout}{out.stderr}")
    info = json.loads(out.stdout.strip().splitlines()[-1])
    problems = []
    if info["machine"] != "aarch64":
        problems.append(f"platform.machine() is {info['machine']!r}, expected 'aarch64'")
    if info["scan_library"] is None:
        problems.append(f"the cross-built scan did not load: {info['scan']}")
    dot = CPUS.get(cpu, (None, None))[1]
    if dot is not None and info["hwcap_asimddp"] != dot:
        problems.append(f"qemu's {cpu} reports dot product {info['hwcap_asimddp']}, expected {dot}")
    if info["neon_dot"] != info["hwcap_asimddp"]:
        problems.append(f"cpu_features says neon_dot={info['neon_dot']} but the kernel's hwcap says "
                        f"{info['hwcap_asimddp']}")
    if problems:
        sys.exit("test-aarch64: " + "; ".join(problems))
    return info


def summarise(junit: Path, files: list[str]) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
    """Per file: passed/skipped/failed counts; per test (file::name): its outcome."""
    counts = {f: {"passed": 0, "skipped": 0, "failed": 0} for f in files}
    outcomes: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        file = case.get("classname", "").replace(".", "/") + ".py"
        if file not in counts:  # a class inside a module: tests/test_x.TestY
            file = "/".join(case.get("classname", "").split(".")[:2]) + ".py"
        if case.find("skipped") is not None:
            outcome = "skipped"
        elif case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        else:
            outcome = "passed"
        counts.setdefault(file, {"passed": 0, "skipped": 0, "failed": 0})[outcome] += 1
        outcomes[f"{file}::{case.get('name')}"] = outcome
    return counts, outcomes


def check_results(counts, outcomes, files, max_skipped: float) -> list[str]:
    problems = []
    total = sum(sum(c.values()) for c in counts.values())
    skipped = sum(c["skipped"] for c in counts.values())
    for f in files:
        c = counts.get(f, {})
        if not sum(c.values()):
            problems.append(f"{f} collected no tests")
        elif not c["passed"]:
            problems.append(f"{f} ran no test (all skipped or failed)")
    if total and skipped / total > max_skipped:
        problems.append(f"{skipped} of {total} tests skipped (more than {max_skipped:.0%})")
    for f, prefix in MUST_PASS:
        if f not in files:
            continue
        got = [o for name, o in outcomes.items() if name.startswith(f"{f}::{prefix}")]
        if not got or any(o != "passed" for o in got):
            problems.append(f"{f}::{prefix} must pass here, got {', '.join(got) or 'not collected'}")
    return problems


def run_cpu(cpu: str, selection: str, build: Path, root: Path, pkg: Path, site: Path, jobs: int,
            max_skipped: float, pytest_args: list[str]) -> tuple[bool, str]:
    python = write_wrappers(build, root, cpu)
    tmp = build / f"cpu-{cpu}" / "tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    env = emulated_env(pkg, site, tmp)
    t0 = time.monotonic()
    info = probe(python, env, cpu)
    log(f"emulated CPU: qemu -cpu {cpu} ({CPUS.get(cpu, ('a qemu CPU model', None))[0]}); "
        f"dot product (hwcap asimddp): {'yes' if info['hwcap_asimddp'] else 'no'}")
    log(f"emulated Python {info['python']} on {info['machine']}; cpu_features: {info['cpu_features']}")
    log(f"search kernel: {info['scan']} from {info['scan_library']}")
    files = SELECTIONS[selection]
    junit = build / f"cpu-{cpu}" / "junit.xml"
    junit.unlink(missing_ok=True)
    cmd = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs", "--durations=10",
           f"--junitxml={junit}", *(["-n", str(jobs)] if jobs > 1 else []), *pytest_args, *files]
    log("$ " + shlex.join(cmd))
    rc = subprocess.run(cmd, env=env, cwd=REPO).returncode
    minutes = (time.monotonic() - t0) / 60
    if not junit.is_file():
        return False, f"{cpu}: pytest exited {rc} without a report"
    counts, outcomes = summarise(junit, files)
    log(f"results on {cpu} ({selection}):")
    for f in sorted(counts):
        c = counts[f]
        log(f"  {f:34s} {c['passed']:4d} passed {c['skipped']:3d} skipped {c['failed']:3d} failed")
    problems = check_results(counts, outcomes, files, max_skipped)
    if rc != 0:
        problems.insert(0, f"pytest exited {rc}")
    tot = {k: sum(c[k] for c in counts.values()) for k in ("passed", "skipped", "failed")}
    line = (f"{cpu} ({selection}, {info['scan']}): {tot['passed']} passed, {tot['skipped']} skipped, "
            f"{tot['failed']} failed in {minutes:.1f} min")
    for p in problems:
        log(f"FAIL {cpu}: {p}")
    return not problems, line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + " See the module docstring for the steps.")
    ap.add_argument("--cpu", action="append", metavar="MODEL[:SELECTION]",
                    help="qemu CPU model to emulate, optionally with a test selection (default: "
                         "cortex-a76:runtime and cortex-a57:kernels); repeat for several. "
                         f"Selections: {', '.join(f'{k} ({len(v)} files)' for k, v in SELECTIONS.items())}; "
                         f"known models: {', '.join(CPUS)} (others are passed to qemu as they are)")
    ap.add_argument("--build-dir", type=Path, default=REPO / "build" / "aarch64",
                    help="where the root, wheels, staged packages and reports are kept (default: build/aarch64)")
    ap.add_argument("--jobs", "-n", type=int, default=min(os.cpu_count() or 1, 4),
                    help="pytest-xdist workers per run (each an emulated Python; default: CPUs, at most 4)")
    ap.add_argument("--max-skipped", type=float, default=0.05,
                    help="fail when more than this fraction of the collected tests skipped (default 0.05)")
    ap.add_argument("--no-apt", action="store_true",
                    help="never run apt-get: fail naming the missing host packages instead")
    ap.add_argument("--prepare-only", action="store_true", help="install and build everything, run no tests")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --), e.g. -- -k store -x")
    args = ap.parse_args(argv)
    args.cpu = args.cpu or ["cortex-a76:runtime", "cortex-a57:kernels"]
    runs = []
    for spec in args.cpu:
        cpu, _, sel = spec.partition(":")
        sel = sel or "runtime"
        if sel not in SELECTIONS:
            ap.error(f"--cpu {spec}: unknown selection {sel!r}; known: {', '.join(SELECTIONS)}")
        runs.append((cpu, sel))
    args.runs = runs
    if not 0 <= args.max_skipped <= 1:
        ap.error(f"--max-skipped must be a fraction in 0..1, got {args.max_skipped}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    build = args.build_dir.resolve()
    build.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    ensure_host_tools(not args.no_apt)
    root = ensure_root(build)
    site = ensure_site(build)
    pkg = stage_packages(build)
    suffix = run([qemu_binary(), "-L", root, root / "usr" / "bin" / f"python{PY_VERSION}", "-c",
                  "import importlib.machinery as m; print(m.EXTENSION_SUFFIXES[0])"],
                 capture_output=True, text=True).stdout.strip()  # the emulated Python's, e.g. .cpython-311-aarch64-linux-gnu.so
    build_scan(pkg, suffix)
    log(f"prepared in {time.monotonic() - t0:.0f} s: root {root}, wheels {site}, packages {pkg}")
    if args.prepare_only:
        return 0
    ok, lines = True, []
    for cpu, sel in args.runs:
        good, line = run_cpu(cpu, sel, build, root, pkg, site, args.jobs, args.max_skipped, args.pytest_args)
        ok &= good
        lines.append(("ok   " if good else "FAIL ") + line)
    log(f"summary ({time.monotonic() - t0:.0f} s in all; reports in {build}/cpu-*/junit.xml):")
    for line in lines:
        log("  " + line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
