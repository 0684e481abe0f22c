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
