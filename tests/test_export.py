"""Export: static opset-17 ONNX with pruning baked in, its checks, parity in ORT/OpenVINO, LayerNorm rewrite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from edgereid.export.layernorm_decompose import decompose_file
from edgereid.export.onnx_checks import OnnxCheckError, check_onnx, check_opset, check_static_shapes
from edgereid.export.onnx_export import DeployableReID, export_onnx, read_metadata
from edgereid.export.openvino_ir import convert_to_ir
from edgereid.export.parity import ParityError, load_images, parity_report, run_onnxruntime
from edgereid.train.config import BackboneConfig, EmbeddingConfig, ModelConfig
from edgereid.train.models import build_model
from market_tree import write_market_tree
from onnx import TensorProto, helper

IMG = (64, 32)


def _model(embedding: EmbeddingConfig | None = None, **backbone) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=BackboneConfig.for_size("vit_micro", img_size=IMG, **backbone),
                      embedding=embedding or EmbeddingConfig(), num_classes=6)
    model = build_model(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorm affine parameters, so the LN rewrite is really tested
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> np.ndarray:
    return _images(tmp_path_factory.mktemp("imgs"))


def _images(tmp_path: Path, n: int = 8) -> np.ndarray:
    root = write_market_tree(tmp_path / "data", train_ids=4, test_ids=2)
    paths = sorted(str(p) for p in (root / "bounding_box_train").glob("*.jpg"))[:n]
    from edgereid.export.onnx_export import input_spec

    return load_images(paths, input_spec(_model(), 1))


def _head_pruned(**kw):
    model = _model(**kw)
    model.backbone.blocks[0].attn.keep_heads([0, 2])
    model.backbone.blocks[1].attn.keep_heads([1])
    return model


# Each pruning/compression form appears in at least one case (combined to keep the suite fast).
CASES = {
    "dense": lambda: _model(),
    "conv-stem": lambda: _model(stem="conv", stem_width=8),
    "heads-kv-slice": lambda: _head_pruned(embedding=EmbeddingConfig(kind="slice", dim=16),
                                           kv_keep=[[0, 1, 2, 3, 5, 8], [0, 2, 4, 6]]),
    "heads-drop-lowrank": lambda: _head_pruned(embedding=EmbeddingConfig(kind="lowrank", dim=12), drop_layers=[0],
                                               drop_keep=0.5),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_float_export_matches_torch_in_ort_and_openvino(case, tmp_path, images):
    model = CASES[case]()
    x = images
    res = export_onnx(model, tmp_path / "m.onnx")
    assert res.checks["opset"] == 17 and res.checks["static_shapes"] == "passed"
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert [o.version for o in proto.opset_import if o.domain == ""] == [17]
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 3, *IMG]
    if "heads" in case:  # the pruned widths are in the graph, not masked
        widths = {tuple(t.dims) for t in proto.graph.initializer}
        assert not any(3 * 3 * 16 in w for w in widths)  # no dense qkv (3 heads x 16 x q/k/v) left
        assert any(w in ((96, 48), (48, 96)) for w in widths)  # block 0: 2 heads kept
    if "drop" in case:
        assert "TopK" in res.checks["op_types"]
    if "kv" in case:
        assert "Gather" in res.checks["op_types"]
    if case == "conv-stem":  # 4 stride-2 3x3 stages + the 1x1 projection
        assert sum(n.op_type == "Conv" for n in proto.graph.node) == 5
    xml, _ = convert_to_ir(tmp_path / "m.onnx", tmp_path / "ov" / "model.xml")
    report = parity_report(model, x, {"onnx": tmp_path / "m.onnx", "ir": xml}, batch=1)
    assert report["onnx"]["onnxruntime_max_abs"] <= 1e-4
    assert report["onnx"]["openvino_f32_max_abs"] <= 1e-4
    assert report["ir"]["openvino_f32_max_abs"] <= 1e-4
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta["edgereid.input"]["height"] == IMG[0] and meta["edgereid.input"]["batch"] == 1
    assert meta["edgereid.embedding"]["dim"] == model.cfg.embed_dim


def test_int8_codes_output_and_dequantised_output(tmp_path, images):
    model = _head_pruned(embedding=EmbeddingConfig(kind="slice", dim=16, bits=8, scale=0.01), drop_layers=[0])
    x = images
    codes = export_onnx(model, tmp_path / "codes.onnx", output="codes")
    assert codes.embedding["output"] == "codes" and codes.embedding["scale"] == pytest.approx(0.01)
    out = run_onnxruntime(tmp_path / "codes.onnx", x, batch=1)
    assert out.dtype == np.int8 and np.abs(out).max() <= 127
    model.export_codes = True
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()  # the un-wrapped model's own codes path
    model.export_codes = False
    assert np.mean(out != ref) <= 0.01 and np.abs(out.astype(int) - ref).max() <= 1
    rep = parity_report(DeployableReID(model, "codes"), x, {"codes": tmp_path / "codes.onnx"}, batch=1,
                        scale=0.01, codes=True)
    assert rep["codes"]["onnxruntime_max_level_diff"] <= 1
    export_onnx(model, tmp_path / "deq.onnx")
    deq = run_onnxruntime(tmp_path / "deq.onnx", x, batch=1)
    levels = deq / 0.01
    assert np.allclose(levels, np.rint(levels), atol=1e-3)  # dequantised: scale * integer
    with torch.no_grad():
        assert np.abs(deq - model(torch.from_numpy(x)).numpy()).max() <= 0.01 + 1e-6


def test_codes_output_needs_a_quantised_embedding(tmp_path):
    with pytest.raises(ValueError, match="quantised embedding"):
        export_onnx(_model(), tmp_path / "x.onnx", output="codes")


def test_dynamic_batch_export(tmp_path, images):
    model = _model(drop_layers=[1])
    x = images
    res = export_onnx(model, tmp_path / "dyn.onnx", dynamic_batch=True)
    assert res.input["batch"] == "dynamic"
    dims = onnx.load(str(tmp_path / "dyn.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, *IMG]
    for n in (1, 3, 8):
        assert parity_report(model, x[:n], {"dyn": tmp_path / "dyn.onnx"}, batch=None, openvino=n == 3)
    # a static-batch check of the same file must refuse it
    with pytest.raises(OnnxCheckError, match="symbolic"):
        check_static_shapes(tmp_path / "dyn.onnx", dynamic_batch=False)


def test_parity_failure_is_loud(tmp_path, images):
    model = _model()
    x = images[:2]
    export_onnx(model, tmp_path / "m.onnx")
    with torch.no_grad():
        model.backbone.norm.bias.add_(0.05)  # the torch model drifts away from the file
    with pytest.raises(ParityError, match="exceeds"):
        parity_report(model, x, {"onnx": tmp_path / "m.onnx"}, batch=1, openvino=False)


# -- the checks catch what the exporter can silently produce ---------------------------------------

def _tiny_graph(path: Path, opset: int, in_shape, out_shape) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def test_planted_opset18_file_is_refused(tmp_path):
    path = _tiny_graph(tmp_path / "o18.onnx", 18, [1, 4], [1, 4])
    with pytest.raises(OnnxCheckError, match=r"\[18\].*expected \[17\]"):
        check_opset(path, 17)
    with pytest.raises(OnnxCheckError, match="opset"):
        check_onnx(path, opset=17)
    check_onnx(_tiny_graph(tmp_path / "o17.onnx", 17, [1, 4], [1, 4]), opset=17)


def test_exporter_opset18_fallback_is_caught(tmp_path):
    """``x.mean(dim)`` makes the dynamo exporter's 18->17 conversion fail and leave opset 18."""

    class MeanModel(torch.nn.Module):  # noqa: D401
        def forward(self, x):
            return x.mean(dim=1)

    path = tmp_path / "mean.onnx"
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(MeanModel().eval(), (torch.randn(1, 4, 3),), str(path), dynamo=True, opset_version=17)
    with pytest.raises(OnnxCheckError, match="opset"):
        check_onnx(path, opset=17)


def test_dynamic_dims_are_refused(tmp_path):
    sym = _tiny_graph(tmp_path / "sym.onnx", 17, [1, "W"], [1, "W"])
    with pytest.raises(OnnxCheckError, match="symbolic"):
        check_onnx(sym, opset=17)
    with pytest.raises(OnnxCheckError, match="only axis 0"):
        check_onnx(sym, opset=17, dynamic_batch=True)
    # an intermediate tensor whose shape is data-dependent (Reshape to a runtime shape)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    s = helper.make_tensor_value_info("s", TensorProto.INT64, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("ReduceSum", ["r"], ["y"], keepdims=0)]
    model = helper.make_model(helper.make_graph(nodes, "g", [x, s], [y]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "inner.onnx"))
    with pytest.raises(OnnxCheckError, match="unknown or symbolic dims.*Reshape"):
        check_onnx(tmp_path / "inner.onnx", opset=17)


def test_layernorm_decomposed_export_matches(tmp_path, images):
    model = _model(drop_layers=[1])
    x = images
    export_onnx(model, tmp_path / "m.onnx")
    count = decompose_file(tmp_path / "m.onnx", tmp_path / "m.jp5.onnx")
    assert count == 2 * 2 + 1  # two LayerNorms per block + the final norm
    ops = {n.op_type for n in onnx.load(str(tmp_path / "m.jp5.onnx")).graph.node}
    assert "LayerNormalization" not in ops and {"ReduceMean", "Pow", "Sqrt"} <= ops
    check_onnx(tmp_path / "m.jp5.onnx", opset=17)
    rep = parity_report(model, x, {"jp5": tmp_path / "m.jp5.onnx"}, batch=1)
    assert rep["jp5"]["onnxruntime_max_abs"] <= 1e-4 and rep["jp5"]["openvino_f32_max_abs"] <= 1e-4
    meta = read_metadata(tmp_path / "m.jp5.onnx")
    assert json.dumps(meta["edgereid.input"]) == json.dumps(read_metadata(tmp_path / "m.onnx")["edgereid.input"])
