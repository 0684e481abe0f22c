"""Bundles on disk: manifest validation, hash verification, BundleWriter, and the backends running them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from edgereid.runtime.backends import BACKENDS, BackendUnavailable, open_backend
from edgereid.runtime.bundle import (
    MANIFEST_NAME,
    BundleError,
    BundleWriter,
    EmbeddingSpec,
    load_bundle,
    sha256_file,
)
from tiny_bundle import input_spec, tiny_onnx, write_tiny_bundle


def _manifest(root: Path) -> dict:
    return json.loads((root / MANIFEST_NAME).read_text())


def _rewrite(root: Path, mutate) -> None:
    m = _manifest(root)
    mutate(m)
    (root / MANIFEST_NAME).write_text(json.dumps(m))


def _inputs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, 32, 16)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# loading and validation
# ---------------------------------------------------------------------------------------------


def test_load_parses_the_manifest(tiny_bundle: Path):
    b = load_bundle(tiny_bundle)
    assert (b.input.height, b.input.width, b.input.batch) == (32, 16, "dynamic")
    assert b.input.mean == (0.485, 0.456, 0.406)
    assert (b.embedding.dim, b.embedding.bits, b.embedding.metric) == (16, 8, "l2")
    assert set(b.artifacts) == {"onnx-fp32", "openvino-fp32"}
    assert b.default_artifact == "onnx-fp32"
    spec = b.embedding.codec_spec()
    assert (spec.dim, spec.bits, spec.code_bytes) == (16, 8, 16)
    assert b.summary()["artifacts"][0]["bytes"] == (tiny_bundle / "model.onnx").stat().st_size
    # the manifest file itself may be given
    assert load_bundle(tiny_bundle / MANIFEST_NAME).root == tiny_bundle


def test_verify_accepts_intact_files_and_records_digests(tiny_bundle: Path):
    b = load_bundle(tiny_bundle, verify="all")
    entry = b.artifact("onnx-fp32").files["model"]
    assert entry.sha256 == sha256_file(tiny_bundle / "model.onnx")
    assert b.verify_all() == ["onnx-fp32", "openvino-fp32"]


def test_an_altered_file_is_refused_naming_it(tiny_bundle: Path):
    path = tiny_bundle / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, same size
    path.write_bytes(bytes(data))
    expected = _manifest(tiny_bundle)["artifacts"][0]["files"]["model"]["sha256"]
    b = load_bundle(tiny_bundle)  # structure is fine
    with pytest.raises(BundleError) as e:
        b.verify()
    msg = str(e.value)
    assert "model.onnx" in msg and expected in msg and sha256_file(path) in msg
    # and no backend runs it: verification happens before the model is parsed
    with pytest.raises(BundleError, match="model.onnx"):
        open_backend(load_bundle(tiny_bundle))
    # the other artifact is untouched and still opens
    assert open_backend(load_bundle(tiny_bundle), backend="openvino").embed(_inputs(1)).shape == (1, 16)


def test_truncated_and_missing_files_are_refused(tiny_bundle: Path):
    xml = tiny_bundle / "openvino" / "model.bin"
    xml.write_bytes(xml.read_bytes()[:100])
    with pytest.raises(BundleError, match=r"openvino/model.bin is 100 bytes, the manifest expects"):
        load_bundle(tiny_bundle, verify="openvino-fp32")
    os.remove(tiny_bundle / "model.onnx")
    with pytest.raises(BundleError, match="model.onnx is missing"):
        load_bundle(tiny_bundle, verify=True)


@pytest.mark.parametrize("mutate, needle", [
    (lambda m: m.update(format="something-else"), "field format"),
    (lambda m: m.update(format_version=2), "field format_version"),
    (lambda m: m["embedding"].update(dim="16"), "field embedding.dim"),
    (lambda m: m["embedding"].update(bits=7), "field embedding.bits"),
    (lambda m: m["embedding"].update(scale=-1.0), "field embedding.scale"),
    (lambda m: m["input"].update(std=[0.2, 0.0, 0.2]), "field input.std"),
    (lambda m: m["input"].pop("height"), "missing field input.height"),
    (lambda m: m["input"].update(batch=0), "field input.batch"),
    (lambda m: m["artifacts"][0]["files"]["model"].update(path="../outside.onnx"), "artifacts[0].files.model.path"),
    (lambda m: m["artifacts"][0]["files"]["model"].update(path="/etc/passwd"), "artifacts[0].files.model.path"),
    (lambda m: m["artifacts"][0]["files"]["model"].update(sha256="abc"), "artifacts[0].files.model.sha256"),
    (lambda m: m["artifacts"][1].update(name="onnx-fp32"), "artifacts[1].name"),
    (lambda m: m["artifacts"][0].update(backend="tflite"), "artifacts[0].backend"),
    (lambda m: m.update(default_artifact="nope"), "field default_artifact"),
    (lambda m: m.update(artifacts=[]), "field artifacts"),
])
def test_manifest_errors_name_the_field(tiny_bundle: Path, mutate, needle):
    _rewrite(tiny_bundle, mutate)
    with pytest.raises(BundleError) as e:
        load_bundle(tiny_bundle)
    assert needle in str(e.value) and MANIFEST_NAME in str(e.value)


def test_unknown_fields_are_ignored_and_bad_json_is_reported(tiny_bundle: Path):
    _rewrite(tiny_bundle, lambda m: m.update(future_field={"x": 1}))
    load_bundle(tiny_bundle)
    (tiny_bundle / MANIFEST_NAME).write_text('{"format": "edgereid-bundle",\n  oops}')
    with pytest.raises(BundleError, match="not valid JSON.*line 2"):
        load_bundle(tiny_bundle)
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(tiny_bundle / "openvino")
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tiny_bundle / "nope")


def test_float32_gallery_without_scale_is_accepted(tiny_bundle: Path):
    _rewrite(tiny_bundle, lambda m: m["embedding"].update(bits=32, scale=None, scale_source=None))
    b = load_bundle(tiny_bundle)
    assert (b.embedding.bits, b.embedding.scale) == (32, 1.0)
    assert b.embedding.codec_spec().code_bytes == 64


def test_select_artifacts(tiny_bundle: Path):
    b = load_bundle(tiny_bundle)
    assert b.select().name == "onnx-fp32"
    assert b.select(backend="openvino").name == "openvino-fp32"
    assert b.select(precision="fp32").name == "onnx-fp32"
    with pytest.raises(BundleError, match="no artifact for precision=int8.*onnx-fp32 \\(onnxruntime, fp32\\)"):
        b.select(precision="int8")
    with pytest.raises(BundleError, match="no artifact named 'x'"):
        b.artifact("x")


# ---------------------------------------------------------------------------------------------
# BundleWriter
# ---------------------------------------------------------------------------------------------


def test_writer_extends_a_bundle_atomically(tiny_bundle: Path):
    extra = tiny_bundle / "extra" / "model2.onnx"
    extra.parent.mkdir()
    shutil.copy(tiny_bundle / "model.onnx", extra)
    w = BundleWriter.from_bundle(tiny_bundle)
    entry = w.add_artifact("onnx-copy", "onnxruntime", "fp32", {"model": extra}, built_for="test")
    assert entry["files"]["model"] == {"path": "extra/model2.onnx", "sha256": sha256_file(extra),
                                       "bytes": extra.stat().st_size}
    w.write()
    assert not [p for p in tiny_bundle.iterdir() if p.name.startswith(".manifest")]  # no temp file left
    b = load_bundle(tiny_bundle, verify="all")
    assert list(b.artifacts) == ["onnx-fp32", "openvino-fp32", "onnx-copy"]
    assert b.artifact("onnx-copy").extra == {"built_for": "test"}
    assert b.default_artifact == "onnx-fp32"


def test_writer_refuses_bad_input_and_keeps_the_old_manifest(tiny_bundle: Path, tmp_path: Path):
    before = (tiny_bundle / MANIFEST_NAME).read_bytes()
    w = BundleWriter.from_bundle(tiny_bundle)
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(b"x")
    with pytest.raises(BundleError, match="not inside the bundle folder"):
        w.add_file("model", outside)
    with pytest.raises(BundleError, match="does not exist"):
        w.add_file("model", "missing.onnx")
    with pytest.raises(BundleError, match="backend must be one of"):
        w.add_artifact("x", "tflite", "fp32", {"model": "model.onnx"})
    w.manifest["embedding"]["dim"] = 0  # the writer validates like the loader before replacing anything
    with pytest.raises(BundleError, match="embedding.dim"):
        w.write()
    assert (tiny_bundle / MANIFEST_NAME).read_bytes() == before


def test_writer_makes_a_new_bundle(tmp_path: Path):
    root = tmp_path / "new"
    tiny_onnx(root / "m.onnx")
    w = BundleWriter(root, input=input_spec(), embedding=EmbeddingSpec(dim=16, bits=8, scale=1 / 127),
                     model={"architecture": "t"}, target="cpu", edgereid_version="9.9")
    w.add_artifact("a", "onnxruntime", "fp32", {"model": "m.onnx"})
    w.set("accuracy", {"a": {"rank1": 0.5}})
    with pytest.raises(TypeError):
        w.set("bad", object())
    w.write()
    m = _manifest(root)
    assert m["format"] == "edgereid-bundle" and m["format_version"] == 1 and m["edgereid_version"] == "9.9"
    assert m["created_utc"].endswith("Z") and m["default_artifact"] == "a"
    assert load_bundle(root, verify=True).manifest["accuracy"] == {"a": {"rank1": 0.5}}


# ---------------------------------------------------------------------------------------------
# backends
# ---------------------------------------------------------------------------------------------


def test_onnxruntime_embeds_normalised_quantised_vectors(tiny_bundle: Path):
    backend = open_backend(load_bundle(tiny_bundle), max_batch=2)
    assert backend.name == "onnxruntime" and backend.max_batch == 2
    x = _inputs(5)
    out = backend.embed(x)
    assert out.shape == (5, 16) and out.dtype == np.float32
    levels = out / (1 / 127)
    np.testing.assert_allclose(levels, np.rint(levels), atol=1e-3)  # fake-quantised to the manifest scale
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=0.02)
    # chunked in twos == one call per row
    np.testing.assert_array_equal(out, np.concatenate([backend.embed(x[i:i + 1]) for i in range(5)]))
    with pytest.raises(ValueError, match=r"shape \(n, 3, 32, 16\)"):
        backend.embed(np.zeros((1, 3, 16, 32), np.float32))


def test_fixed_batch_graph_is_padded(tmp_path: Path, tiny_bundle: Path):
    fixed = write_tiny_bundle(tmp_path / "fixed", fixed_batch=4)
    backend = open_backend(load_bundle(fixed), max_batch=64)
    assert backend.max_batch == 4  # the graph decides
    x = _inputs(6)
    dyn = open_backend(load_bundle(tiny_bundle)).embed(x)
    np.testing.assert_array_equal(backend.embed(x), dyn)


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_backend_runs_any_count_of_a_dynamic_batch_without_padding(name, tmp_path: Path):
    """A tracker embeds a different number of crops each frame: each count is one call of exactly that many rows."""
    bundle = load_bundle(write_tiny_bundle(tmp_path / "dyn", bits=32, openvino=True))
    assert bundle.input.fixed_batch is None
    if name == "tensorrt":  # no GPU here (and no engine in this bundle): the table entry is covered by its own tests
        pytest.skip("running a TensorRT engine needs an NVIDIA GPU")
    backend = open_backend(bundle, backend=name, max_batch=64)
    calls = []
    run = backend._run
    backend._run = lambda b: (calls.append(b.shape[0]), run(b))[1]
    x = _inputs(11, seed=5)
    outs = {n: backend.embed(x[:n]) for n in (1, 3, 11)}
    assert calls == [1, 3, 11]  # no padding to a fixed batch, no splitting below max_batch
    ref = open_backend(bundle, backend="onnxruntime").embed(x)
    for n, out in outs.items():
        assert out.shape == (n, 16) and np.abs(out - ref[:n]).max() < 1e-5


def test_openvino_matches_onnxruntime(tmp_path: Path, tiny_bundle: Path):
    x = _inputs(7, seed=3)
    # float output (no fake quantisation): the two runtimes agree to float rounding
    flt = load_bundle(write_tiny_bundle(tmp_path / "f32", bits=32, openvino=True))
    ort_f = open_backend(flt).embed(x)
    ov_backend = open_backend(flt, backend="openvino")
    assert ov_backend.config["INFERENCE_PRECISION_HINT"] == "f32"  # not the CPU's bf16 default
    assert np.abs(ov_backend.embed(x) - ort_f).max() < 1e-5
    # quantised output: identical levels except (rarely) one step at a rounding boundary
    b = load_bundle(tiny_bundle)
    a, o = open_backend(b).embed(x), open_backend(b, backend="openvino").embed(x)
    step = 1 / 127
    assert np.abs(a - o).max() <= step * 1.001
    assert np.mean(a == o) > 0.98


def test_graph_that_does_not_match_the_manifest_is_refused(tmp_path: Path):
    root = write_tiny_bundle(tmp_path / "b")
    _rewrite(root, lambda m: m["embedding"].update(dim=8))
    with pytest.raises(BundleError, match="embedding.dim says 8"):
        open_backend(load_bundle(root))
    _rewrite(root, lambda m: m["embedding"].update(dim=16, output_name="codes"))
    with pytest.raises(BundleError, match="no output 'codes'"):
        open_backend(load_bundle(root))
    _rewrite(root, lambda m: m["embedding"].update(output_name="embedding"))
    _rewrite(root, lambda m: m["input"].update(height=64))
    with pytest.raises(BundleError, match="axis 2 differs"):
        open_backend(load_bundle(root))
    # the ONNX metadata (edgereid.input) disagreeing with the manifest: model and manifest were mixed up
    meta = input_spec().to_dict() | {"mean": [0.5, 0.5, 0.5]}
    tiny_onnx(root / "model.onnx", input_meta=meta)
    w = BundleWriter.from_bundle(root)
    w.manifest["input"]["height"] = 32
    w.add_artifact("onnx-fp32", "onnxruntime", "fp32", {"model": "model.onnx"})
    w.write()
    with pytest.raises(BundleError, match="input.mean"):
        open_backend(load_bundle(root))


def test_codes_output_is_scaled_to_floats(tiny_bundle: Path):
    # a graph whose output is the integer levels: the backend multiplies by the manifest's scale
    ref = open_backend(load_bundle(tiny_bundle)).embed(_inputs(2))
    _rewrite(tiny_bundle, lambda m: m["embedding"].update(output="codes", scale=0.5))
    np.testing.assert_allclose(open_backend(load_bundle(tiny_bundle)).embed(_inputs(2)), ref * 0.5)


def test_tensorrt_backend_without_a_gpu_is_unavailable_and_says_why(tiny_bundle: Path):
    """Here (and in CI) TensorRT-RTX is installed but there is no GPU: the backend refuses before the engine
    is read, as BackendUnavailable, so a default engine artifact falls back to the bundle's ONNX."""
    from edgereid.runtime.tensorrt_api import available_libraries

    engine = tiny_bundle / "tensorrt" / "model.fp16.engine"
    engine.parent.mkdir()
    engine.write_bytes(b"not really an engine")
    w = BundleWriter.from_bundle(tiny_bundle)
    w.add_artifact("tensorrt-fp16", "tensorrt", "fp16", {"engine": engine}, built_for="nothing", default=True)
    w.write()
    why = "no usable NVIDIA GPU" if available_libraries() else "no usable TensorRT"
    with pytest.raises(BackendUnavailable, match=why):
        open_backend(load_bundle(tiny_bundle), backend="tensorrt")
    with pytest.warns(RuntimeWarning, match="running artifact 'onnx-fp32'"):
        backend = open_backend(load_bundle(tiny_bundle))  # the default engine cannot run here: ONNX instead
    assert backend.name == "onnxruntime" and backend.embed(_inputs(2)).shape == (2, 16)


def test_tensorrt_library_that_is_missing_says_where_it_comes_from():
    from edgereid.runtime.tensorrt_api import available_libraries, import_tensorrt

    if "tensorrt" in available_libraries():
        pytest.skip("TensorRT itself is installed here")
    with pytest.raises(BackendUnavailable, match="JetPack"):
        import_tensorrt("tensorrt")
    with pytest.raises(ValueError, match="expected auto or one of tensorrt, tensorrt-rtx"):
        import_tensorrt("tensorrt11")