"""Build a tiny, real bundle for runtime tests without torch: an ONNX graph made with onnx.helper.

The graph is a stand-in for the exported ViT with the same contract (``docs/bundle-format.md``):
input ``images`` (N, 3, H, W) float32, already normalised; output ``embedding`` (N, dim) float32,
L2-normalised and (with ``bits=8``) fake-quantised to ``scale * clamp(round(e / scale))``.
Inside: a 4x4 stride-4 convolution (a patch embedding), ReLU, flatten, a linear layer. Random
but seeded weights: a random projection of patch colours separates the colour-coded identities
of ``market_tree`` well, so retrieval metrics are meaningful.

``write_tiny_bundle`` writes model.onnx (+ an OpenVINO IR when asked) and the manifest through
the runtime's own ``BundleWriter``, exactly as the exporter does. When the real exporter can make
bundles quickly enough, the ``tiny_bundle`` fixture (conftest.py) can be switched to it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from edgereid.runtime.bundle import BundleWriter, EmbeddingSpec, InputSpec
from onnx import TensorProto, helper, numpy_helper

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def tiny_onnx(path: Path, height: int = 32, width: int = 16, dim: int = 16, bits: int = 8,
              scale: float = 1.0 / 127, fixed_batch: int | None = None, seed: int = 0,
              input_meta: dict | None = None, heavy: int = 0) -> Path:
    """Write the tiny graph to ``path`` (opset 17) and return it.

    ``heavy`` > 0 adds a deliberately slow side branch (``heavy`` chained 512 x 512 MatMul + Tanh
    layers over the flattened input, about 0.5 MFLOP each per image) whose mean is added to the
    embedding times 1e-6 before normalisation: the same contract and, up to that tiny term, the same
    embeddings, at many times the cost (what an artifact that is slow on this device looks like).
    """
    rng = np.random.default_rng(seed)
    ch, patch = 8, 4
    feat = ch * (height // patch) * (width // patch)
    w_conv = rng.normal(0, 0.5, (ch, 3, patch, patch)).astype(np.float32)
    b_conv = rng.normal(0, 0.1, ch).astype(np.float32)
    w_fc = rng.normal(0, 1.0 / np.sqrt(feat), (feat, dim)).astype(np.float32)
    b_fc = np.zeros(dim, np.float32)
    inits = [
        numpy_helper.from_array(w_conv, "w_conv"), numpy_helper.from_array(b_conv, "b_conv"),
        numpy_helper.from_array(w_fc, "w_fc"), numpy_helper.from_array(b_fc, "b_fc"),
        numpy_helper.from_array(np.array([1], np.int64), "axes1"),
        numpy_helper.from_array(np.array(1e-12, np.float32), "eps"),
    ]
    nodes = [
        helper.make_node("Conv", ["images", "w_conv", "b_conv"], ["c"], kernel_shape=[patch, patch],
                         strides=[patch, patch]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w_fc", "b_fc"], ["e"] if not heavy else ["e_fast"]),
    ]
    if heavy:
        width_h = 512
        inits += [numpy_helper.from_array(rng.normal(0, 1 / np.sqrt(3 * height * width),
                                                     (3 * height * width, width_h)).astype(np.float32), "w_h_in"),
                  numpy_helper.from_array(rng.normal(0, 1 / np.sqrt(width_h), (width_h, width_h)).astype(np.float32),
                                          "w_h"),
                  numpy_helper.from_array(np.array(1e-6, np.float32), "h_gain")]
        nodes += [helper.make_node("Flatten", ["images"], ["h_flat"], axis=1),
                  helper.make_node("MatMul", ["h_flat", "w_h_in"], ["h0_pre"]),
                  helper.make_node("Tanh", ["h0_pre"], ["h0"])]
        for i in range(heavy):
            nodes += [helper.make_node("MatMul", [f"h{i}", "w_h"], [f"h{i + 1}_pre"]),
                      helper.make_node("Tanh", [f"h{i + 1}_pre"], [f"h{i + 1}"])]
        nodes += [helper.make_node("ReduceMean", [f"h{heavy}"], ["h_mean"], axes=[1], keepdims=1),
                  helper.make_node("Mul", ["h_mean", "h_gain"], ["h_small"]),
                  helper.make_node("Add", ["e_fast", "h_small"], ["e"])]
    nodes += [
        helper.make_node("Mul", ["e", "e"], ["sq"]),
        helper.make_node("ReduceSum", ["sq", "axes1"], ["ss"], keepdims=1),
        helper.make_node("Sqrt", ["ss"], ["norm"]),
        helper.make_node("Max", ["norm", "eps"], ["norm_eps"]),
    ]
    if bits == 8:
        inits += [numpy_helper.from_array(np.array(scale, np.float32), "scale"),
                  numpy_helper.from_array(np.array(-127, np.float32), "qmin"),
                  numpy_helper.from_array(np.array(127, np.float32), "qmax")]
        nodes += [helper.make_node("Div", ["e", "norm_eps"], ["en"]),
                  helper.make_node("Div", ["en", "scale"], ["es"]),
                  helper.make_node("Round", ["es"], ["er"]),
                  helper.make_node("Clip", ["er", "qmin", "qmax"], ["q"]),
                  helper.make_node("Mul", ["q", "scale"], ["embedding"])]
    else:
        nodes.append(helper.make_node("Div", ["e", "norm_eps"], ["embedding"]))
    batch = fixed_batch if fixed_batch else "batch"
    graph = helper.make_graph(
        nodes, "tiny_reid",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, height, width])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, dim])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgereid-tests")
    model.ir_version = 8
    meta = input_meta if input_meta is not None else input_spec(height, width, fixed_batch).to_dict()
    helper.set_model_props(model, {"edgereid.input": json.dumps(meta)})
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def input_spec(height: int = 32, width: int = 16, fixed_batch: int | None = None) -> InputSpec:
    return InputSpec(height=height, width=width, mean=tuple(MEAN), std=tuple(STD),
                     batch=fixed_batch if fixed_batch else "dynamic")


def write_tiny_bundle(root: Path, *, height: int = 32, width: int = 16, dim: int = 16, bits: int = 8,
                      scale: float = 1.0 / 127, fixed_batch: int | None = None, openvino: bool = False,
                      threshold: float | None = 0.6, seed: int = 0) -> Path:
    """A complete bundle folder: model.onnx (+ openvino/model.xml/.bin) and manifest.json."""
    root = Path(root)
    tiny_onnx(root / "model.onnx", height, width, dim, bits, scale, fixed_batch, seed)
    writer = BundleWriter(
        root, input=input_spec(height, width, fixed_batch),
        embedding=EmbeddingSpec(dim=dim, bits=bits, scale=scale if bits != 32 else 1.0, metric="l2",
                                scale_source="calibration"),
        model={"architecture": "tiny_test_net", "params": int(8 * 48 + 8 + dim * 8 * (height // 4) * (width // 4))},
        target="cpu")
    writer.add_artifact("onnx-fp32", "onnxruntime", "fp32", {"model": "model.onnx"}, default=True)
    if openvino:
        import openvino as ov

        ir = root / "openvino" / "model.xml"
        ir.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(ov.convert_model(str(root / "model.onnx")), str(ir), compress_to_fp16=False)
        writer.add_artifact("openvino-fp32", "openvino", "fp32",
                            {"xml": "openvino/model.xml", "bin": "openvino/model.bin"})
    if threshold is not None:
        writer.set("open_set", {"threshold": threshold, "source": "test fixture"})
    writer.write()
    return root


def write_multi_bundle(root: Path, artifacts: list[tuple[str, str, int]], default: str,
                       accuracy: dict | None = None, height: int = 32, width: int = 16, dim: int = 16,
                       seed: int = 0) -> Path:
    """A bundle of several onnxruntime artifacts ``(name, precision, heavy)``: the tiny graph, some
    made slow on purpose (``heavy`` layers, see :func:`tiny_onnx`), with an optional ``accuracy``
    section as the exporter writes it. Same weights and contract for all: any of them can serve a
    gallery. Precision is only a label here (what the choice's accuracy rules read)."""
    root = Path(root)
    writer = BundleWriter(root, input=input_spec(height, width),
                          embedding=EmbeddingSpec(dim=dim, bits=8, scale=1.0 / 127, metric="l2",
                                                  scale_source="calibration"),
                          model={"architecture": "tiny_test_net"}, target="cpu")
    for name, precision, heavy in artifacts:
        tiny_onnx(root / f"{name}.onnx", height, width, dim, seed=seed, heavy=heavy)
        writer.add_artifact(name, "onnxruntime", precision, {"model": f"{name}.onnx"}, default=name == default)
    writer.set("default_artifact", default)
    if accuracy is not None:
        writer.set("accuracy", accuracy)
    writer.set("open_set", {"threshold": 0.6, "source": "test fixture"})
    writer.write()
    return root
