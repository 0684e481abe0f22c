"""``tools/test_aarch64.py`` (make test-aarch64) on this machine: its gate, its import tree, its CLI.

The emulated run itself is ``make test-aarch64``; these tests check, without qemu, that the
driver fails a run that collected nothing, skipped too much or skipped a test it exists for,
and that the tree it stages is the one pyproject.toml describes.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "test_aarch64.py"
_spec = importlib.util.spec_from_file_location("test_aarch64_tool", SCRIPT)
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)


def junit(tmp_path: Path, cases: list[tuple[str, str, str]]) -> Path:
    """A pytest junit report: (file, test name, passed|skipped|failed) per case."""
    body = []
    for file, name, outcome in cases:
        inner = {"passed": "", "skipped": '<skipped message="no"/>', "failed": '<failure message="x"/>'}[outcome]
        body.append(f'<testcase classname="{file[:-3].replace("/", ".")}" name="{name}">{inner}</testcase>')
    path = tmp_path / "junit.xml"
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{"".join(body)}</testsuite></testsuites>')
    return path


def gate(tmp_path: Path, cases, files, max_skipped=0.05) -> list[str]:
    counts, outcomes = tool.summarise(junit(tmp_path, cases), files)
    return tool.check_results(counts, outcomes, files, max_skipped)


def test_every_selected_file_and_required_test_exists() -> None:
    for name, files in tool.SELECTIONS.items():
        assert files, name
        for f in files:
            assert (REPO / f).is_file(), f"selection {name}: {f} does not exist"
    selected = {f for files in tool.SELECTIONS.values() for f in files}
    for f, prefix in tool.MUST_PASS:
        assert f in selected, f"{f} is required but in no selection"
        assert re.search(rf"^def {prefix}\b", (REPO / f).read_text(), re.M), f"{f} has no test {prefix}"


def test_gate_passes_a_complete_run(tmp_path: Path) -> None:
    files = ["tests/test_a.py", "tests/test_b.py"]
    cases = [("tests/test_a.py", f"test_x[{i}]", "passed") for i in range(30)] + [("tests/test_b.py", "test_y", "passed"),
                                                                                   ("tests/test_b.py", "test_z", "skipped")]
    assert gate(tmp_path, cases, files) == []


def test_gate_fails_on_nothing_collected_nothing_run_or_too_many_skips(tmp_path: Path) -> None:
    files = ["tests/test_a.py", "tests/test_b.py"]
    problems = gate(tmp_path, [("tests/test_a.py", "test_x", "passed")], files)
    assert problems == ["tests/test_b.py collected no tests"]
    problems = gate(tmp_path, [("tests/test_a.py", "test_x", "passed"), ("tests/test_b.py", "test_y", "skipped")],
                    files, max_skipped=1.0)
    assert problems == ["tests/test_b.py ran no test (all skipped or failed)"]
    cases = [("tests/test_a.py", f"t{i}", "passed") for i in range(8)] + [("tests/test_b.py", "u", "passed"),
                                                                          ("tests/test_b.py", "v", "skipped")]
    assert gate(tmp_path, cases, files, max_skipped=0.05) == ["1 of 10 tests skipped (more than 5%)"]
    assert gate(tmp_path, cases, files, max_skipped=0.1) == []


def test_gate_fails_when_a_required_test_skips_or_is_missing(tmp_path: Path) -> None:
    file, prefix = next((f, p) for f, p in tool.MUST_PASS if p == "test_native_kernel_every_isa_equals_brute_force")
    others = [(file, f"test_other{i}", "passed") for i in range(100)]
    ok = others + [(file, f"{prefix}[{d}]", "passed") for d in (1, 7)]
    problems = gate(tmp_path, ok, [file])
    assert not any(prefix in p for p in problems)
    skipped = others + [(file, f"{prefix}[1]", "passed"), (file, f"{prefix}[7]", "skipped")]
    assert f"{file}::{prefix} must pass here, got passed, skipped" in gate(tmp_path, skipped, [file], 1.0)
    assert f"{file}::{prefix} must pass here, got not collected" in gate(tmp_path, others, [file])


def test_staged_tree_follows_package_dir(tmp_path: Path) -> None:
    pkg = tool.stage_packages(tmp_path)
    for name in tool.package_dirs():
        assert (pkg / name.replace(".", "/") / "__init__.py").is_file(), name
    scan = pkg / "edgereid" / "runtime" / "native_scan.py"
    assert scan.read_bytes() == (REPO / "runtime" / "native_scan.py").read_bytes()
    assert not list(pkg.rglob("*.so")) and not list(pkg.rglob("__pycache__"))  # the host's build stays out
    stale = pkg / "edgereid" / "runtime" / "gone.py"
    stale.write_text("x = 1\n")
    os.utime(scan, ns=(1, 1))  # looks changed: copied again
    mtime = (pkg / "edgereid" / "runtime" / "codec.py").stat().st_mtime_ns
    tool.stage_packages(tmp_path)
    assert not stale.exists()
    assert scan.stat().st_mtime_ns == (REPO / "runtime" / "native_scan.py").stat().st_mtime_ns
    assert (pkg / "edgereid" / "runtime" / "codec.py").stat().st_mtime_ns == mtime


def test_help_and_bad_arguments() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for flag in ("--cpu", "--build-dir", "--jobs", "--max-skipped", "--no-apt", "--prepare-only"):
        assert flag in proc.stdout
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu", "cortex-a76:everything"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "unknown selection 'everything'; known: runtime, kernels" in proc.stderr
    proc = subprocess.run([sys.executable, str(SCRIPT), "--max-skipped", "5"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "--max-skipped must be a fraction in 0..1, got 5.0" in proc.stderr
