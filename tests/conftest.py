"""Shared fixtures. ``tiny_bundle``: a real, small model bundle for the runtime tests.

It is built by ``tests/tiny_bundle.py`` with onnx.helper (no torch, about a second). To test the
runtime against the real exporter instead, replace the body of ``tiny_bundle`` with a call to
``edgereid export`` on a tiny checkpoint; the tests only rely on the bundle contract.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_bundle_master(tmp_path_factory) -> Path:
    from tiny_bundle import write_tiny_bundle

    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny", openvino=True)


@pytest.fixture
def tiny_bundle(tiny_bundle_master: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny bundle (ONNX fp32 + OpenVINO fp32 artifacts, dim 16, int8, 32x16 input).

    A copy per test, so tests may alter or break it.
    """
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_master, dst)
    return dst


def pytest_terminal_summary(terminalreporter) -> None:
    """Say which search kernel bodies ran (or were refused) on this CPU: tests record them as
    ``record_property("kernel_body", (name, status))``; the properties travel from xdist workers."""
    bodies: dict[str, str] = {}
    for reports in terminalreporter.stats.values():
        for rep in reports:
            for key, value in getattr(rep, "user_properties", ()) or ():
                if key == "kernel_body":
                    bodies[value[0]] = value[1]
    if not bodies:
        return
    from edgereid.runtime.cpu_features import cpu_info
    from edgereid.runtime.search import describe_kernels

    terminalreporter.section("search kernels on this CPU")
    terminalreporter.write_line(f"CPU: {cpu_info().summary()}")
    for kind, text in describe_kernels().items():
        terminalreporter.write_line(f"default {kind}: {text}")
    for name in sorted(bodies):
        terminalreporter.write_line(f"  {name}: {bodies[name]}")
