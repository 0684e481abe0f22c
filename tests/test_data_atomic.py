"""The one atomic write every layer uses: old content or new content, never half of one."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from edgereid.data.atomic import atomic_path, write_json_atomic, write_text_atomic


def test_replaces_whole_files_and_leaves_no_temporaries(tmp_path: Path):
    target = tmp_path / "deep" / "report.json"
    assert write_json_atomic(target, {"a": 1}) == target
    assert json.loads(target.read_text()) == {"a": 1} and target.read_text().endswith("\n")
    write_text_atomic(target, "second\n")
    assert target.read_text() == "second\n"
    assert (target.stat().st_mode & 0o777) == 0o644  # readable by the other users of a bundle or data set
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path):
    target = tmp_path / "manifest.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half of the new one")
        raise RuntimeError("the writer failed")
    with pytest.raises(TypeError):
        write_json_atomic(target, {"not json": object()})
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_a_process_killed_mid_write_leaves_the_old_file(tmp_path: Path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old weights")
    child = textwrap.dedent(f"""
        import os, signal
        from edgereid.data.atomic import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"x" * 1_000_000)
                fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=60)
    assert proc.returncode == -9
    assert target.read_bytes() == b"old weights"
    strays = [p for p in tmp_path.iterdir() if p != target]
    assert all(p.name.startswith(".model.safetensors.") and p.name.endswith(".tmp") for p in strays)
