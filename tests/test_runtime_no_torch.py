"""The runtime runs on a device with no torch: every runtime module imports, and reid-runtime works,
in a subprocess where torch, timm, torchvision and onnx cannot be imported at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from market_tree import write_market_tree
from tiny_bundle import write_tiny_bundle

# A meta-path finder that makes the named top-level packages unimportable, as on a bare device.
BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = set({blocked!r})
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: not on this device)", name=name)
            return None
    sys.meta_path.insert(0, Block())
""")

HEAVY = ["torch", "timm", "torchvision", "onnx", "onnxscript", "nncf", "safetensors"]


def run_blocked(body: str, blocked=HEAVY, *args: str) -> subprocess.CompletedProcess:
    code = BLOCKER.format(blocked=sorted(blocked)) + textwrap.dedent(body)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=180, env=env)


def test_blocker_really_blocks():
    proc = run_blocked("import torch")
    assert proc.returncode != 0 and "blocked: not on this device" in proc.stderr


def test_every_runtime_module_imports_without_torch():
    proc = run_blocked("""
        import importlib, pkgutil, sys
        import edgereid.runtime as rt, edgereid.runtime.backends as be
        names = [m.name for m in pkgutil.walk_packages(rt.__path__, "edgereid.runtime.")]
        # _l2scan is the compiled search kernel: a plain C library loaded with ctypes, not a module
        names = [n for n in names if n != "edgereid.runtime._l2scan"]
        for name in names:
            importlib.import_module(name)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "timm", "onnx", "openvino", "tensorrt"})
        print(len(names), heavy)
    """)
    assert proc.returncode == 0, proc.stderr
    count, heavy = proc.stdout.split(" ", 1)
    assert int(count) >= 12  # bundle, preprocess, backends..., cli, bench, engine_build, store, codec, ...
    assert heavy.strip() == "[]"  # and optional backends were not imported eagerly either


def test_reid_runtime_works_without_torch(tmp_path: Path):
    bundle = write_tiny_bundle(tmp_path / "bundle")
    data = write_market_tree(tmp_path / "market", train_ids=1, test_ids=3)
    gallery = tmp_path / "g.bin"
    main = """
        import sys
        from edgereid.runtime.cli import main
        code = main(sys.argv[1:])
        assert not [m for m in sys.modules if m.split(".")[0] in {"torch", "timm", "onnx"}]
        sys.exit(code)
    """
    proc = run_blocked(main, HEAVY, "enroll", "--bundle", str(bundle), "--gallery", str(gallery), "--create",
                       str(data / "bounding_box_test"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["enrolled"] == 12
    queries = sorted((data / "query").glob("*.jpg"))
    proc = run_blocked(main, HEAVY, "--bundle", str(bundle), "--gallery", str(gallery), *map(str, queries))
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o["identity"] for o in out] == [100, 101, 102]


def test_missing_openvino_names_the_extra(tmp_path: Path):
    bundle = write_tiny_bundle(tmp_path / "bundle", openvino=True)
    data = write_market_tree(tmp_path / "market", train_ids=1, test_ids=1)
    main = """
        import sys
        from edgereid.runtime.cli import main
        sys.exit(main(sys.argv[1:]))
    """
    proc = run_blocked(main, HEAVY + ["openvino"], "--bundle", str(bundle), "--gallery", str(tmp_path / "g.bin"),
                       "--create", "--backend", "openvino", str(next((data / "query").glob("*.jpg"))))
    assert proc.returncode == 4, proc.stderr
    assert "pip install edgereid[openvino]" in proc.stderr and "Traceback" not in proc.stderr
    # an OpenVINO *default* (what the exporter writes for target cpu) still runs here, on onnxruntime:
    # the automatic choice leaves it out, and the manifest's default falls back with a warning
    from edgereid.runtime.bundle import BundleWriter

    w = BundleWriter.from_bundle(bundle)
    w.manifest["default_artifact"] = "openvino-fp32"
    w.write()
    query = str(next((data / "query").glob("*.jpg")))
    proc = run_blocked(main, HEAVY + ["openvino"], "--bundle", str(bundle), "--gallery", str(tmp_path / "g.bin"),
                       "--create", query)
    assert proc.returncode == 0, proc.stderr
    assert ("artifact: onnx-fp32 (the only candidate of 2: float32 graph (checked against PyTorch at export); "
            "left out: openvino-fp32 (openvino is not installed here))") in proc.stderr
    assert json.loads(proc.stdout)["decision"] == "unknown"  # empty gallery
    proc = run_blocked(main, HEAVY + ["openvino"], "--bundle", str(bundle), "--gallery", str(tmp_path / "g.bin"),
                       "--artifact-choice", "manifest", query)
    assert proc.returncode == 0, proc.stderr
    assert "running artifact 'onnx-fp32' (onnxruntime, fp32) instead of the default 'openvino-fp32'" in proc.stderr
    assert "openvino-fp32 needs a library missing here, so onnx-fp32" in proc.stderr
