"""Pre-flight of an ONNX graph for one TensorRT target: what its parser and builder would refuse.

``edgereid check-graph --target jetpack5|jetpack6|rtx MODEL.onnx`` runs it on its own; ``edgereid
export`` runs it on every graph it hands to TensorRT (``--target jetson``: jetpack6, or jetpack5
with ``--jetpack 5``; ``--target rtx``: rtx) and refuses to write a bundle whose graphs fail.

The rules are the tables in :mod:`edgereid.export.tensorrt_rules`: opset range, operators, constant
inputs the builder needs (TopK's K and its limit, axes), Q/DQ zero points (0) and scales
(positive constants), Cast types, one static NCHW input, and static shapes everywhere once the
batch is fixed. Each finding names the node, the rule and the fix. Only ``onnx`` is needed (no
TensorRT, no GPU): a Jetson graph can be checked on the workstation before it is copied.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .tensorrt_rules import RULES, TARGETS, TensorRTTarget

__all__ = ["Finding", "PreflightReport", "PreflightError", "check_graph", "require_graph"]

_RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
_MAX_SHAPE_FINDINGS = 8


@dataclass
class Finding:
    """One rule a node (or the graph) breaks for a target."""

    rule: str
    node: str  # node name, or "<graph>" / the tensor for graph-level rules
    op: str
    message: str
    fix: str
    policy: bool = False  # stricter than the target's TensorRT really is (edgereid's own rule)

    def __str__(self) -> str:
        where = f"node {self.node!r} ({self.op})" if self.op else self.node
        return f"{where}: [{self.rule}] {self.message}. Fix: {self.fix}"


@dataclass
class PreflightReport:
    path: str
    target: str
    tensorrt: str
    findings: list[Finding] = field(default_factory=list)
    nodes: int = 0
    opset: int | None = None

    @property
    def passed(self) -> bool:
        return not self.findings

    def rules_broken(self) -> list[str]:
        return sorted({f.rule for f in self.findings})

    def summary(self) -> str:
        head = f"{self.path}: {self.tensorrt} ({self.target}): "
        if self.passed:
            return head + f"passed ({self.nodes} nodes, opset {self.opset})"
        lines = [head + f"{len(self.findings)} problem(s), rules {', '.join(self.rules_broken())}"]
        groups: dict[tuple, list[str]] = {}  # the same problem at many nodes is listed once
        for f in self.findings:
            groups.setdefault((f.rule, f.op, f.message, f.fix), []).append(f.node)
        for (rule, op, message, fix), nodes in groups.items():
            names = ", ".join(repr(n) for n in nodes[:4]) + (f" and {len(nodes) - 4} more" if len(nodes) > 4 else "")
            where = f"node{'s' if len(nodes) > 1 else ''} {names} ({op})" if op else nodes[0]
            lines.append(f"  - {where}: [{rule}] {message}. Fix: {fix}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "tensorrt": self.tensorrt, "passed": self.passed, "nodes": self.nodes,
                "opset": self.opset, "findings": [asdict(f) for f in self.findings]}


class PreflightError(ValueError):
    """A graph breaks its TensorRT target's rules; the message lists every finding."""

    def __init__(self, report: PreflightReport) -> None:
        super().__init__(report.summary())
        self.report = report


def _fix(rule: str) -> str:
    return RULES[rule][1]


class _Graph:
    """The facts the rules read: constants (folded), value types, inferred static shapes."""

    def __init__(self, proto) -> None:
        import onnx
        from onnx import numpy_helper

        self.proto = proto
        g = proto.graph
        self.nodes = list(g.node)
        self.values: dict[str, Any] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        for n in self.nodes:
            if n.op_type == "Constant" and n.output:
                for a in n.attribute:
                    if a.name == "value":
                        self.values[n.output[0]] = numpy_helper.to_array(a.t)
                    elif a.name in ("value_int", "value_ints", "value_float", "value_floats"):
                        import numpy as np

                        self.values[n.output[0]] = np.asarray(onnx.helper.get_attribute_value(a))
        self.inputs = [i for i in g.input if i.name not in self.values]
        self.shapes, self.types, self.shape_error = self._infer()
        self.constant = set(self.values)
        for n in self.nodes:  # graph order is topological: a node whose inputs are all constant folds
            if n.op_type in _RANDOM_OPS or n.op_type == "Constant":
                continue
            if n.op_type == "Shape":
                shape = self.shapes.get(n.input[0])
                if shape is not None and all(isinstance(d, int) for d in shape) and not self._batch_dependent(n):
                    self.constant.update(o for o in n.output if o)
                continue
            ins = [i for i in n.input if i]
            if ins and all(i in self.constant for i in ins):
                self.constant.update(o for o in n.output if o)

    def _batch_dependent(self, node) -> bool:
        return node.input[0] in self.batch_tensors

    def _infer(self):
        """Shapes with a symbolic batch pinned to 2 (and the tensors whose axis 0 is that batch)."""
        import onnx

        proto = onnx.ModelProto.FromString(self.proto.SerializeToString())
        self.batch_tensors: set[str] = set()
        self.dynamic_batch = False
        for vi in list(proto.graph.input) + list(proto.graph.output):
            if vi.name in self.values:
                continue
            dims = vi.type.tensor_type.shape.dim
            if dims and not dims[0].HasField("dim_value"):
                self.dynamic_batch = True
                dims[0].dim_value = 2
        del proto.graph.value_info[:]
        custom = any(n.domain not in ("", "ai.onnx") for n in proto.graph.node)
        try:  # custom-domain operators have no shape functions: infer around them (their own rule reports them)
            inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=not custom, data_prop=True)
            error = None
        except Exception as exc:  # onnx's InferenceError and friends: reported as a static-shapes finding
            inferred, error = proto, str(exc).strip().splitlines()[0]
        shapes: dict[str, list | None] = {}
        types: dict[str, int] = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            t = vi.type.tensor_type
            types[vi.name] = t.elem_type
            if t.HasField("shape"):
                shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
            else:
                shapes[vi.name] = None
        if self.dynamic_batch:  # tensors whose size follows the batch: found by propagating a different batch
            self.batch_tensors = self._follow_batch(proto, shapes)
        return shapes, types, error

    def _follow_batch(self, proto, shapes_at_2: dict) -> set[str]:
        import onnx

        other = onnx.ModelProto.FromString(proto.SerializeToString())
        for vi in list(other.graph.input) + list(other.graph.output):
            if vi.name not in self.values and vi.type.tensor_type.shape.dim:
                vi.type.tensor_type.shape.dim[0].dim_value = 3
        try:
            inferred = onnx.shape_inference.infer_shapes(other, data_prop=True)
        except Exception:
            return set()
        out = set()
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input):
            t = vi.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim] if t.HasField("shape") else None
            if dims != shapes_at_2.get(vi.name):
                out.add(vi.name)
        return out


def _name(node) -> str:
    return node.name or (node.output[0] if node.output else "?")


def check_graph(model: str | Path | Any, target: str) -> PreflightReport:
    """Check an ONNX file (or ``ModelProto``) against ``TARGETS[target]``; never raises on a bad graph."""
    import onnx

    if target not in TARGETS:
        raise ValueError(f"target {target!r}: expected one of {', '.join(TARGETS)}")
    rules = TARGETS[target]
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ONNX file not found")
        try:
            proto = onnx.load(str(path))
        except Exception as exc:
            raise ValueError(f"{path}: not a readable ONNX file ({exc})") from None
        where = str(path)
    else:
        proto, where = model, "<model>"
    report = PreflightReport(where, target, rules.tensorrt, nodes=len(proto.graph.node))
    graph = _Graph(proto)
    found = report.findings

    def add(rule: str, node, message: str, fix: str | None = None, policy_key: str | None = None) -> None:
        policy = policy_key is not None and f"{rule}:{policy_key}" in rules.policy
        name, op = (_name(node), node.op_type) if node is not None else ("<graph>", "")
        found.append(Finding(rule, name, op, message, fix or _fix(rule), policy))

    _check_opset(proto, rules, report, add)
    _check_input(graph, add)
    for node in graph.nodes:
        _check_node(node, graph, rules, add)
    _check_shapes(graph, add)
    return report


def require_graph(path: str | Path, target: str) -> PreflightReport:
    """:func:`check_graph`, raising :class:`PreflightError` when the graph fails."""
    report = check_graph(path, target)
    if not report.passed:
        raise PreflightError(report)
    return report


def _check_opset(proto, rules: TensorRTTarget, report: PreflightReport, add) -> None:
    versions = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    report.opset = versions[0] if versions else None
    if not versions:
        add("opset-range", None, "the graph imports no default-domain opset")
    elif not rules.opset_min <= versions[0] <= rules.opset_max:
        add("opset-range", None, f"opset {versions[0]}; {rules.tensorrt} reads opsets {rules.opset_min} to "
                                 f"{rules.opset_max}", policy_key="below" if versions[0] < rules.opset_min else "above")


def _check_input(graph: _Graph, add) -> None:
    from onnx import TensorProto

    if len(graph.inputs) != 1:
        add("input", None, f"the graph has {len(graph.inputs)} inputs ({[i.name for i in graph.inputs]}), expected one")
        return
    vi = graph.inputs[0]
    t = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
    if t.elem_type != TensorProto.FLOAT or len(dims) != 4 or any(not isinstance(d, int) or d < 1 for d in dims[1:]):
        add("input", None, f"input {vi.name!r} is {TensorProto.DataType.Name(t.elem_type)} {dims}; expected float32 "
                            "(N, 3, H, W) with static C, H, W")


def _check_node(node, graph: _Graph, rules: TensorRTTarget, add) -> None:
    from onnx import TensorProto

    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        add("custom-domain", node, f"operator {node.domain}.{op} is not a standard ONNX operator", policy_key="any")
        return
    if op not in rules.ops:
        fix = rules.op_fixes.get(op, f"replace {op} with supported operators, or choose another target")
        add("unsupported-op", node, f"{op} is not in the {rules.tensorrt} ONNX operator table", fix)
        return
    for index, what in rules.constant_inputs.get(op, {}).items():
        if index < len(node.input) and node.input[index] and node.input[index] not in graph.constant:
            add("constant-input", node, f"input {index} ({what}) {node.input[index]!r} is computed at run time; "
                                        f"{rules.tensorrt} needs it at build time", policy_key=op)
    if op == "TopK":
        k = graph.values.get(node.input[1]) if len(node.input) > 1 else None
        if k is not None and int(k.reshape(-1)[0]) > rules.topk_max_k:
            add("topk-k-limit", node, f"K = {int(k.reshape(-1)[0])} exceeds {rules.tensorrt}'s limit of "
                                      f"{rules.topk_max_k}")
        sorted_attr = next((a.i for a in node.attribute if a.name == "sorted"), 1)
        if rules.topk_sorted and sorted_attr != 1:
            add("topk-sorted", node, f"sorted={sorted_attr}; the {rules.tensorrt} table requires sorted=1")
    elif op in ("QuantizeLinear", "DequantizeLinear"):
        _check_qdq(node, graph, rules, add)
    elif op == "Cast":
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        name = TensorProto.DataType.Name(to) if to is not None else "?"
        if name not in rules.cast_to:
            add("cast-type", node, f"Cast to {name}; {rules.tensorrt} casts to {', '.join(sorted(rules.cast_to))}"
                + (" (INT8 only through Q/DQ quantisation)" if name == "INT8" else ""))


def _check_qdq(node, graph: _Graph, rules: TensorRTTarget, add) -> None:
    import numpy as np
    from onnx import helper

    scale = graph.values.get(node.input[1]) if len(node.input) > 1 else None
    if scale is not None:
        s = np.asarray(scale, dtype=np.float64)
        if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0):
            add("qdq-scale", node, f"scale {s.reshape(-1)[:4].tolist()} is not positive and finite")
    if len(node.input) < 3 or not node.input[2]:
        add("qdq-zero-point", node, "no zero point: ONNX then quantises to uint8 [0, 255] while TensorRT uses int8, "
                                    "so onnxruntime and TensorRT would compute different things",
            policy_key="missing")
        return
    zp_name = node.input[2]
    zp = graph.values.get(zp_name)
    if zp is None:
        add("qdq-zero-point", node, f"zero point {zp_name!r} is computed at run time")
        return
    dtype = helper.np_dtype_to_tensor_dtype(zp.dtype)
    from onnx import TensorProto

    type_name = TensorProto.DataType.Name(dtype)
    if np.any(zp != 0):
        add("qdq-zero-point", node, f"zero point {zp.reshape(-1)[:4].tolist()} ({type_name}): TensorRT quantises "
                                    "symmetrically, zero points must be 0")
    elif type_name not in rules.qdq_zero_point_types:
        add("qdq-zero-point", node, f"zero point of type {type_name}; {rules.tensorrt} quantises to "
                                    f"{', '.join(sorted(rules.qdq_zero_point_types))}")


def _check_shapes(graph: _Graph, add) -> None:
    if graph.shape_error:
        add("static-shapes", None, f"shape inference failed: {graph.shape_error}")
        return
    bad = []
    opaque: set[str] = set()  # computed by custom-domain operators: reported by their own rule, not here
    for node in graph.nodes:
        if node.domain not in ("", "ai.onnx") or any(i in opaque for i in node.input if i):
            opaque.update(o for o in node.output if o)
            continue
        for out in node.output:
            if not out:
                continue
            dims = graph.shapes.get(out)
            if dims is None or any(not isinstance(d, int) for d in dims):
                bad.append((node, out, dims))
    what = "with the batch fixed" if graph.dynamic_batch else ""
    for node, out, dims in bad[:_MAX_SHAPE_FINDINGS]:
        add("static-shapes", node, f"output {out!r} has shape {dims if dims is not None else 'unknown'} {what}".strip())
    if len(bad) > _MAX_SHAPE_FINDINGS:
        add("static-shapes", None, f"{len(bad) - _MAX_SHAPE_FINDINGS} more tensors with unknown or symbolic shapes")
