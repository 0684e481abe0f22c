"""A real TensorRT in CI: TensorRT-RTX parses and builds every graph the export writes, on the CPU.

TensorRT-RTX (``pip install edgereid[tensorrt-rtx]``, installed by ``make setup``) builds engines
ahead of time without a GPU, with the same ONNX parser generation as TensorRT 10. These tests run
the device-side builder (``edgereid.runtime.engine_build``) against it for each row of
``export.graph_variants.VARIANTS``, check each graph's pre-flight for the three TensorRT targets,
check the pre-flight rules one by one against what the real parser/builder refuses, and export and
run an ``rtx`` bundle. Running an engine needs an NVIDIA GPU: not done here.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from edgereid.export.graph_variants import VARIANTS, build_variant_model, write_variant
from edgereid.export.preflight import check_graph
from edgereid.export.tensorrt_rules import TARGETS
from edgereid.runtime.engine_build import EngineBuildConfig, EngineBuildError, build_serialized_engine
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
IMG = (64, 32)

if platform.machine().lower() not in ("x86_64", "amd64"):  # the wheels exist for x86-64 only
    pytest.skip("TensorRT-RTX wheels are x86-64 only", allow_module_level=True)
# Elsewhere a missing TensorRT-RTX is a broken install, not a reason to skip: make setup installs it.
import tensorrt_rtx_bindings  # noqa: E402,F401

# The pre-flight verdict expected for each exported graph: target -> rules it breaks (empty = passes).
# TensorRT 8.5 has no LayerNormalization (only the jp5 graphs pass it); TensorRT 10.3 casts to int8
# only through Q/DQ (the codes output); TensorRT-RTX takes all of them.
_LN = {"unsupported-op"}
EXPECTED_PREFLIGHT: dict[str, dict[str, set[str]]] = {
    name: {"jetpack5": set() if name.endswith("jp5") else _LN, "jetpack6": set(), "rtx": set()}
    for name in (v.name for v in VARIANTS)
}
EXPECTED_PREFLIGHT["codes-output"]["jetpack6"] = {"cast-type"}


def test_the_expectations_cover_the_variant_table():
    assert set(EXPECTED_PREFLIGHT) == {v.name for v in VARIANTS}
    assert len(VARIANTS) >= 14


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_every_exported_graph_passes_preflight_and_tensorrt_rtx_builds_it(variant, tmp_path):
    import torch
    from edgereid.export.onnx_export import DeployableReID
    from edgereid.export.parity import run_onnxruntime

    path = write_variant(variant, tmp_path, "vit_micro", IMG)
    proto = onnx.load(str(path))
    assert [o.version for o in proto.opset_import if o.domain == ""] == [17]  # no silent opset-18 fallback
    for target in TARGETS:
        report = check_graph(path, target)
        assert set(report.rules_broken()) == EXPECTED_PREFLIGHT[variant.name][target], report.summary()

    qdq = variant.graph.startswith("qdq")
    cfg = EngineBuildConfig(precision="int8" if qdq else "fp32", min_batch=1, opt_batch=2, max_batch=8,
                            library="tensorrt-rtx")
    built = build_serialized_engine(path, cfg, echo=False)
    assert built.library == "tensorrt-rtx" and built.precision == cfg.precision
    assert len(built.engine) > 100_000  # a real serialized engine, not an empty plan
    batch = variant.static_batch
    assert built.input_shape == (batch or -1, 3, *IMG)
    assert built.batch_profile == ([batch] * 3 if batch else [1, 2, 8])
    model = build_variant_model(variant, "vit_micro", IMG)
    out_dim = model.cfg.embed_dim
    assert built.outputs == {variant.output: (batch or -1, out_dim)}
    assert built.compute_capabilities == ["default"] and built.build_seconds > 0

    # the same graph in onnxruntime: batch 1 and a larger batch give the same embeddings (and PyTorch's,
    # for the float graphs): the pruning (TopK + Gather with a constant K) holds with a dynamic batch
    x = np.random.default_rng(1).standard_normal((batch or 5, 3, *IMG)).astype(np.float32)
    at_n = run_onnxruntime(path, x, batch=batch)
    at_1 = run_onnxruntime(path, x, batch=batch) if batch else np.concatenate([run_onnxruntime(path, x[i:i + 1])
                                                                              for i in range(len(x))])
    assert at_n.shape == (len(x), out_dim)
    assert np.abs(at_n.astype(np.float32) - at_1.astype(np.float32)).max() <= (1 if variant.output == "codes" else 1e-4)
    if not qdq:
        with torch.no_grad():
            ref = DeployableReID(model, variant.output)(torch.from_numpy(x)).numpy()
        tol = 1 if variant.output == "codes" else 1e-4  # codes: one level at a rounding boundary
        assert np.abs(at_n.astype(np.float32) - ref.astype(np.float32)).max() <= tol


# -- each pre-flight rule, against the real TensorRT-RTX parser and builder ----------------------------

def _model(nodes, inits=(), opset=17, shape=(1, 3, 8, 8), out_type=TensorProto.FLOAT, extra_inputs=()):
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("embedding", out_type, None)
    graph = helper.make_graph(nodes, "g", [x, *extra_inputs], [y],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _flat(tail, inits=(), **kw):
    """images (1, 3, 8, 8) -> (1, 192) -> tail nodes -> embedding."""
    return _model([helper.make_node("Reshape", ["images", "flat_shape"], ["flat"], name="flatten"), *tail],
                  [("flat_shape", np.array([1, -1], np.int64)), *inits], **kw)


def _qdq(scale, zero_point=None, zp_dtype=np.int8):
    ins = ["flat", "s"] + (["z"] if zero_point is not None else [])
    inits = [("s", np.float32(scale))] + ([("z", np.asarray(zero_point, zp_dtype))] if zero_point is not None else [])
    return _flat([helper.make_node("QuantizeLinear", ins, ["q"], name="quant"),
                  helper.make_node("DequantizeLinear", ["q", *ins[1:]], ["embedding"], name="dequant")], inits)


def _topk(k, sorted_=1, shape=(1, 3, 64, 64)):
    return _model([helper.make_node("Reshape", ["images", "flat_shape"], ["flat"], name="flatten"),
                   helper.make_node("TopK", ["flat", "k"], ["embedding", "idx"], name="topk", sorted=sorted_)],
                  [("flat_shape", np.array([1, -1], np.int64)), ("k", np.array([k], np.int64))], shape=shape)


def _nms():
    tail = [helper.make_node("Reshape", ["images", "box_shape"], ["boxes"], name="boxes"),
            helper.make_node("ReduceMean", ["boxes"], ["s2"], name="scores", axes=[2], keepdims=0),
            helper.make_node("Unsqueeze", ["s2", "one"], ["scores3"], name="scores3"),
            helper.make_node("NonMaxSuppression", ["boxes", "scores3", "maxb", "iou", "thr"], ["sel"], name="nms"),
            helper.make_node("Cast", ["sel"], ["embedding"], name="to_float", to=TensorProto.FLOAT)]
    inits = [("box_shape", np.array([1, 48, 4], np.int64)), ("one", np.array([1], np.int64)),
             ("maxb", np.array([5], np.int64)), ("iou", np.array([0.5], np.float32)),
             ("thr", np.array([0.1], np.float32))]
    return _model(tail, inits)


def _data_dependent_k():
    tail = [helper.make_node("ReduceMax", ["flat"], ["m"], name="max", keepdims=1),
            helper.make_node("Abs", ["m"], ["am"], name="abs"),
            helper.make_node("Cast", ["am"], ["mi"], name="to_int", to=TensorProto.INT64),
            helper.make_node("Reshape", ["mi", "one"], ["k"], name="k_shape"),
            helper.make_node("TopK", ["flat", "k"], ["embedding", "idx"], name="topk")]
    return _flat(tail, [("one", np.array([1], np.int64))])


def _with(rule_nodes, inits=(), **kw):
    return _flat(rule_nodes, inits, **kw)


def _contrib_gelu():
    m = _with([helper.make_node("Gelu", ["flat"], ["embedding"], name="ms_gelu", domain="com.microsoft")])
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return m


# name -> (graph, target -> rules the pre-flight must report)
RULE_CASES = {
    "opset 18": (_with([helper.make_node("Relu", ["flat"], ["embedding"], name="relu")], opset=18),
                 {"jetpack5": {"opset-range"}, "jetpack6": set(), "rtx": set()}),
    "opset 21": (_with([helper.make_node("Relu", ["flat"], ["embedding"], name="relu")], opset=21),
                 {"jetpack5": {"opset-range"}, "jetpack6": {"opset-range"}, "rtx": set()}),
    "opset 8": (_with([helper.make_node("Relu", ["flat"], ["embedding"], name="relu")], opset=8),
                {"jetpack5": set(), "jetpack6": {"opset-range"}, "rtx": {"opset-range"}}),
    "LayerNormalization": (_with([helper.make_node("LayerNormalization", ["flat", "g", "b"], ["embedding"], name="ln")],
                                 [("g", np.ones(192, np.float32)), ("b", np.zeros(192, np.float32))]),
                           {"jetpack5": {"unsupported-op"}, "jetpack6": set(), "rtx": set()}),
    "TopK K=3840": (_topk(3840), {"jetpack5": set(), "jetpack6": set(), "rtx": set()}),
    "TopK K=3841": (_topk(3841), {t: {"topk-k-limit"} for t in TARGETS}),
    "TopK unsorted": (_topk(8, sorted_=0), {"jetpack5": set(), "jetpack6": {"topk-sorted"}, "rtx": set()}),
    "TopK data-dependent K": (_data_dependent_k(), {t: {"constant-input", "static-shapes"} for t in TARGETS}),
    "Q/DQ int8 zero point 0": (_qdq(0.1, 0), {t: set() for t in TARGETS}),
    "Q/DQ zero point 3": (_qdq(0.1, 3), {t: {"qdq-zero-point"} for t in TARGETS}),
    "Q/DQ uint8 zero point 0": (_qdq(0.1, 0, np.uint8),
                                {"jetpack5": {"qdq-zero-point"}, "jetpack6": {"qdq-zero-point"}, "rtx": set()}),
    "Q/DQ uint8 zero point 128": (_qdq(0.1, 128, np.uint8), {t: {"qdq-zero-point"} for t in TARGETS}),
    "Q/DQ no zero point": (_qdq(0.1), {t: {"qdq-zero-point"} for t in TARGETS}),
    "Q/DQ negative scale": (_qdq(-0.1, 0), {t: {"qdq-scale"} for t in TARGETS}),
    "Q/DQ zero scale": (_qdq(0.0, 0), {t: {"qdq-scale"} for t in TARGETS}),
    "Cast to int8": (_with([helper.make_node("Cast", ["flat"], ["embedding"], name="codes", to=TensorProto.INT8)],
                           out_type=TensorProto.INT8),
                     {"jetpack5": set(), "jetpack6": {"cast-type"}, "rtx": set()}),
    "MatMulInteger": (_with([helper.make_node("Cast", ["flat"], ["u8"], name="to_u8", to=TensorProto.UINT8),
                             helper.make_node("MatMulInteger", ["u8", "w"], ["acc"], name="mmi"),
                             helper.make_node("Cast", ["acc"], ["embedding"], name="to_f", to=TensorProto.FLOAT)],
                            [("w", np.ones((192, 4), np.int8))]),
                      {"jetpack5": {"cast-type", "unsupported-op"}, "jetpack6": {"unsupported-op"},
                       "rtx": {"unsupported-op"}}),
    "NonZero": (_with([helper.make_node("NonZero", ["flat"], ["nz"], name="nonzero"),
                       helper.make_node("Cast", ["nz"], ["embedding"], name="to_f", to=TensorProto.FLOAT)]),
                {"jetpack5": {"static-shapes"}, "jetpack6": {"static-shapes"},
                 "rtx": {"unsupported-op", "static-shapes"}}),
    "NonMaxSuppression": (_nms(), {"jetpack5": {"static-shapes"}, "jetpack6": {"static-shapes"},
                                   "rtx": {"unsupported-op", "static-shapes"}}),
    "Unique": (_with([helper.make_node("Unique", ["flat"], ["embedding"], name="unique")]),
               {t: {"unsupported-op", "static-shapes"} for t in TARGETS}),
    "custom domain": (_contrib_gelu(), {t: {"custom-domain"} for t in TARGETS}),
}


def _tensorrt_rtx_accepts(model, tmp_path: Path) -> tuple[bool, str]:
    path = tmp_path / "case.onnx"
    onnx.save(model, str(path))
    try:
        build_serialized_engine(path, EngineBuildConfig(library="tensorrt-rtx"), echo=False)
    except EngineBuildError as exc:
        return False, str(exc)
    return True, ""


@pytest.mark.parametrize("case", sorted(RULE_CASES))
def test_each_rule_is_refused_by_the_preflight_and_by_tensorrt_rtx_where_it_really_fails(case, tmp_path):
    model, expected = RULE_CASES[case]
    for target in TARGETS:
        report = check_graph(model, target)
        assert set(report.rules_broken()) == expected[target], f"{target}: {report.summary()}"
        for f in report.findings:  # every finding names a node (or the graph), the rule and a fix
            assert f.node and f.rule in expected[target] and len(f.fix) > 20
    # the rtx table against the real thing: TensorRT-RTX refuses exactly the graphs with a non-policy finding
    rtx = check_graph(model, "rtx")
    really_refused = any(not f.policy for f in rtx.findings)
    accepted, why = _tensorrt_rtx_accepts(model, tmp_path)
    assert accepted != really_refused, (f"pre-flight says {'refused' if really_refused else 'accepted'}, "
                                        f"TensorRT-RTX {'accepted' if accepted else 'refused: ' + why}")


def test_preflight_names_the_node_the_rule_and_the_fix():
    report = check_graph(RULE_CASES["TopK K=3841"][0], "jetpack6")
    text = report.summary()
    assert "node 'topk' (TopK): [topk-k-limit] K = 3841 exceeds TensorRT 10.3 (JetPack 6)'s limit of 3840" in text
    assert "Fix: keep fewer tokens" in text
    ln = check_graph(RULE_CASES["LayerNormalization"][0], "jetpack5").summary()
    assert "node 'ln' (LayerNormalization)" in ln and "--jetpack 5" in ln


def test_check_graph_cli(tmp_path):
    bad, good = tmp_path / "bad.onnx", tmp_path / "good.onnx"
    onnx.save(RULE_CASES["Q/DQ zero point 3"][0], str(bad))
    onnx.save(RULE_CASES["Q/DQ int8 zero point 0"][0], str(good))
    run = [sys.executable, "-m", "edgereid", "check-graph"]
    ok = subprocess.run(run + ["--target", "all", str(good), "--json", str(tmp_path / "r.json")],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("passed") == 3 and f"wrote {tmp_path / 'r.json'}" in ok.stdout
    reports = json.loads((tmp_path / "r.json").read_text())["reports"]
    assert [r["target"] for r in reports] == list(TARGETS) and all(r["passed"] for r in reports)
    fail = subprocess.run(run + ["--target", "jetpack6", str(bad)], capture_output=True, text=True, timeout=120)
    assert fail.returncode == 1
    assert "node 'quant' (QuantizeLinear): [qdq-zero-point]" in fail.stdout and "Fix: quantise symmetrically" in fail.stdout
    missing = subprocess.run(run + ["--target", "rtx", str(tmp_path / "none.onnx")], capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2 and "none.onnx: ONNX file not found" in missing.stderr


def test_builder_errors_name_the_node(tmp_path):
    path = tmp_path / "zp3.onnx"
    onnx.save(RULE_CASES["Q/DQ zero point 3"][0], str(path))
    with pytest.raises(EngineBuildError, match=r"node quant \(QuantizeLinear\): .*zero point") as info:
        build_serialized_engine(path, EngineBuildConfig(library="tensorrt-rtx"), echo=False)
    assert info.value.errors[0]["node"] == "quant"
    with pytest.raises(ValueError, match="strongly typed"):
        build_serialized_engine(path, EngineBuildConfig(library="tensorrt-rtx", precision="fp16"), echo=False)


def test_compute_capabilities_are_chosen_and_turing_needs_fp16(tmp_path):
    path = write_variant(VARIANTS[0], tmp_path, "vit_micro", IMG)
    built = build_serialized_engine(path, EngineBuildConfig(library="tensorrt-rtx", compute_capabilities=["8.6", "12.0"]),
                                    echo=False)
    assert built.compute_capabilities == ["8.6", "12.0"]
    with pytest.raises(ValueError, match=r"compute capability '9.0'.*knows 7.5, 8.0, 8.6, 8.9, 12.0"):
        build_serialized_engine(path, EngineBuildConfig(library="tensorrt-rtx", compute_capabilities=["9.0"]),
                                echo=False)
    # a real limit of TensorRT-RTX, surfaced with the builder's own words: Turing runs no fp32 GEMM
    with pytest.raises(EngineBuildError, match="Turing .*FP32 GEMM is not supported"):
        build_serialized_engine(path, EngineBuildConfig(library="tensorrt-rtx", compute_capabilities=["7.5"]),
                                echo=False)


# -- the rtx export target, end to end ------------------------------------------------------------------

def test_rtx_export_builds_engines_runs_without_a_gpu_and_rebuilds_for_another_gpu(tmp_path):
    """One test (the export is the slow part): the bundle, its fallback on this GPU-less machine, a rebuild."""
    import shutil

    from edgereid.runtime.bundle import load_bundle
    from edgereid.train.checkpoint import save_checkpoint
    from market_tree import write_market_tree

    data = write_market_tree(tmp_path / "data", train_ids=6, test_ids=4, per_cam=2, cams=3)
    model = build_variant_model(next(v for v in VARIANTS if v.name == "heads+tokens"), "vit_micro", IMG)
    save_checkpoint(model, tmp_path / "ckpt")
    out = tmp_path / "bundle"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "edgereid", "export", "--ckpt", str(tmp_path / "ckpt"), "--target",
                           "rtx", "--data", str(data), "--calib-size", "8", "--parity-images", "4", "--no-eval",
                           "--opt-batch", "2", "--max-batch", "8", "--compute-capability", "8.6,8.9",
                           "--out", str(out)], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"wrote {out}/manifest.json" in proc.stdout and "pre-flight for TensorRT-RTX" in proc.stderr

    # 1. the bundle: both engines built ahead of time, hashed, recorded with their library and profile
    bundle = load_bundle(out, verify="all")
    assert bundle.manifest["target"] == "rtx" and bundle.manifest["input"]["batch"] == "dynamic"
    assert set(bundle.artifacts) == {"onnx-fp32", "onnx-int8-qdq", "tensorrt-rtx-fp32", "tensorrt-rtx-int8"}
    assert bundle.default_artifact == "tensorrt-rtx-int8"
    for precision, source in (("fp32", "onnx-fp32"), ("int8", "onnx-int8-qdq")):
        art = bundle.artifact(f"tensorrt-rtx-{precision}")
        assert art.backend == "tensorrt" and art.precision == precision
        assert art.extra["library"] == "tensorrt-rtx" and art.extra["library_version"].startswith("1.")
        assert "compute capability 8.6, 8.9" in art.extra["built_for"]
        assert art.extra["build"]["source_artifact"] == source and art.extra["build"]["batch_profile"] == [1, 2, 8]
        assert art.files["engine"].path == f"tensorrt/model.rtx.{precision}.engine" and art.files["engine"].bytes > 1e5
    checks = bundle.manifest["checks"]
    assert checks["model.onnx"]["preflight"]["passed"] and checks["model.int8.qdq.onnx"]["preflight"]["target"] == "rtx"
    md = (out / "BUILD_ENGINE.md").read_text()
    assert ("reid-runtime build-engine --bundle . --library tensorrt-rtx --precision int8 --compute-capability 8.6,8.9 "
            "--source-artifact onnx-int8-qdq --min-batch 1 --opt-batch 2 --max-batch 8") in md

    # 2. no GPU here. The automatic choice leaves both engines out (they cannot open) and runs an
    # ONNX artifact; with the manifest's default, the default engine falls back to the Q/DQ ONNX
    # (same precision), saying why
    run = [sys.executable, "-m", "edgereid.runtime.cli"]
    store = tmp_path / "store.bin"
    enroll = subprocess.run(run + ["enroll", "--bundle", str(out), "--gallery", str(store), "--create",
                                   str(data / "bounding_box_test")], capture_output=True, text=True, timeout=300)
    assert enroll.returncode == 0, enroll.stderr
    assert "artifact: onnx-" in enroll.stderr, enroll.stderr
    info = json.loads(subprocess.run(run + ["info", "--bundle", str(out)], capture_output=True, text=True,
                                     timeout=300, check=True).stdout)
    left_out = {c["name"]: c for c in info["artifact_choice"]["candidates"] if not c["eligible"]}
    assert {"tensorrt-rtx-fp32", "tensorrt-rtx-int8"} <= set(left_out), info["artifact_choice"]
    manifest_default = subprocess.run(run + ["query", "--bundle", str(out), "--gallery", str(store),
                                             "--artifact-choice", "manifest", str(data / "query")],
                                      capture_output=True, text=True, timeout=300)
    assert manifest_default.returncode == 0, manifest_default.stderr
    assert ("no usable NVIDIA GPU" in manifest_default.stderr
            and "running artifact 'onnx-int8-qdq'" in manifest_default.stderr), manifest_default.stderr
    explicit = subprocess.run(run + ["query", "--bundle", str(out), "--gallery", str(store), "--backend", "tensorrt",
                                     str(data / "query")], capture_output=True, text=True, timeout=300)
    assert explicit.returncode == 4 and "no usable NVIDIA GPU" in explicit.stderr

    # 3. reid-runtime build-engine adds an engine for another GPU, under its own name and file
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    build = run + ["build-engine", "--bundle", str(copy)]
    proc = subprocess.run(build + ["--library", "tensorrt-rtx", "--precision", "int8", "--compute-capability", "12.0",
                                   "--max-batch", "16", "--name", "tensorrt-rtx-int8-sm120"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote" in proc.stderr and "manifest.json" in proc.stderr
    rebuilt = load_bundle(copy, verify="all")  # the other engines are untouched
    art = rebuilt.artifact("tensorrt-rtx-int8-sm120")
    assert art.files["engine"].path == "tensorrt/tensorrt-rtx-int8-sm120.engine"
    assert art.extra["build"]["compute_capabilities"] == ["12.0"] and art.extra["build"]["batch_profile"] == [1, 1, 16]
    bad = subprocess.run(build + ["--library", "tensorrt-rtx", "--precision", "fp16"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "strongly typed" in bad.stderr


def test_export_refuses_a_graph_its_tensorrt_target_cannot_take(tmp_path):
    """The int8 codes output casts to int8, which TensorRT 10.3 does only through Q/DQ: a jetson export stops."""
    from edgereid.export.bundle import ExportOptions, export_bundle
    from edgereid.export.preflight import PreflightError

    model = build_variant_model(next(v for v in VARIANTS if v.name == "codes-output"), "vit_micro", IMG)
    with pytest.raises(PreflightError, match=r"\[cast-type\] Cast to INT8.*Fix: export with --output embedding"):
        export_bundle(model, tmp_path / "jetson", ExportOptions(target="jetson", output="codes", parity_images=2))
    assert not (tmp_path / "jetson").exists() and not (tmp_path / ".jetson.partial").exists()
    # the same model as a float output passes and gives the bundle (its pre-flight recorded)
    out = export_bundle(model, tmp_path / "ok", ExportOptions(target="jetson", parity_images=2))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["checks"]["model.onnx"]["preflight"] == {"target": "jetpack6", "tensorrt": "TensorRT 10.3 (JetPack 6)",
                                                             "passed": True, "nodes": manifest["checks"]["model.onnx"]
                                                             ["preflight"]["nodes"]}
