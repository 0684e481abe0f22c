"""Rewrite ONNX ``LayerNormalization`` into primitive ops, for TensorRT 8.5 (JetPack 5).

TensorRT 8.5 has no LayerNormalization importer (8.6+ does), so a JetPack 5 bundle carries a copy
of the graph where each LayerNormalization(X, scale, bias; axis, epsilon) becomes

    mean = ReduceMean(X, axes)            d = Sub(X, mean)
    var  = ReduceMean(Pow(d, 2), axes)    y = Div(d, Sqrt(Add(var, eps)))
    out  = Add(Mul(y, scale), bias)

with the reduction axes as an *attribute* (opset 17 ReduceMean), which every TensorRT version reads.
The rewrite is exact up to float rounding; ``export.parity`` checks it against PyTorch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class DecomposeError(ValueError):
    pass


def _rank_of(name: str, graph) -> int | None:
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        if vi.name == name and vi.type.tensor_type.HasField("shape"):
            return len(vi.type.tensor_type.shape.dim)
    return None


def decompose_layernorm(model):
    """Return a copy of ``model`` (onnx.ModelProto) with every LayerNormalization decomposed.

    Needs the default-domain opset < 18 (ReduceMean's axes attribute); raises otherwise.
    """
    import onnx
    from onnx import helper, numpy_helper

    opset = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not opset or opset[0] >= 18:
        raise DecomposeError(f"LayerNormalization decomposition writes opset-17 ReduceMean; the model has opset {opset}")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    new_nodes = []
    count = 0
    for node in graph.node:
        if node.op_type != "LayerNormalization" or node.domain not in ("", "ai.onnx"):
            new_nodes.append(node)
            continue
        used_extra = [o for o in node.output[1:] if o]
        if used_extra:
            raise DecomposeError(f"LayerNormalization {node.name!r} uses its Mean/InvStdDev outputs {used_extra}; "
                                 "not supported by the decomposition")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axis = int(attrs.get("axis", -1))
        eps = float(attrs.get("epsilon", 1e-5))
        if axis < 0:
            axes = list(range(axis, 0))
        else:
            rank = _rank_of(node.input[0], inferred.graph)
            if rank is None:
                raise DecomposeError(f"LayerNormalization {node.name!r}: axis {axis} needs the input rank, which shape "
                                     "inference did not give")
            axes = list(range(axis, rank))
        p = f"{node.name or 'ln'}_{count}"
        count += 1
        x, out = node.input[0], node.output[0]
        eps_name, two_name = f"{p}_eps", f"{p}_two"
        graph.initializer.extend([numpy_helper.from_array(np.array(eps, np.float32), eps_name),
                                  numpy_helper.from_array(np.array(2.0, np.float32), two_name)])
        new_nodes += [
            helper.make_node("ReduceMean", [x], [f"{p}_mean"], axes=axes, keepdims=1, name=f"{p}_ReduceMean0"),
            helper.make_node("Sub", [x, f"{p}_mean"], [f"{p}_d"], name=f"{p}_Sub"),
            helper.make_node("Pow", [f"{p}_d", two_name], [f"{p}_d2"], name=f"{p}_Pow"),
            helper.make_node("ReduceMean", [f"{p}_d2"], [f"{p}_var"], axes=axes, keepdims=1, name=f"{p}_ReduceMean1"),
            helper.make_node("Add", [f"{p}_var", eps_name], [f"{p}_vareps"], name=f"{p}_AddEps"),
            helper.make_node("Sqrt", [f"{p}_vareps"], [f"{p}_std"], name=f"{p}_Sqrt"),
            helper.make_node("Div", [f"{p}_d", f"{p}_std"], [f"{p}_y"], name=f"{p}_Div"),
        ]
        has_bias = len(node.input) > 2 and node.input[2]
        scaled = f"{p}_ys" if has_bias else out
        new_nodes.append(helper.make_node("Mul", [f"{p}_y", node.input[1]], [scaled], name=f"{p}_Mul"))
        if has_bias:
            new_nodes.append(helper.make_node("Add", [scaled, node.input[2]], [out], name=f"{p}_AddBias"))
    del graph.node[:]
    graph.node.extend(new_nodes)
    remaining = sum(n.op_type == "LayerNormalization" for n in graph.node)
    if remaining:
        raise DecomposeError(f"{remaining} LayerNormalization nodes remain after the rewrite")
    onnx.checker.check_model(model, full_check=True)
    return model, count


def decompose_file(src: str | Path, dst: str | Path) -> int:
    """Decompose ``src`` into ``dst``; returns how many LayerNormalization nodes were rewritten."""
    import onnx

    model, count = decompose_layernorm(onnx.load(str(src)))
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return count
