"""What each TensorRT target accepts in an ONNX graph: one table per target, data only.

``edgereid.export.preflight`` checks a graph against one of these tables (``edgereid check-graph
--target jetpack5|jetpack6|rtx``, and the export before it writes a TensorRT bundle).

Where the tables come from:

- ``jetpack5`` (TensorRT 8.5, JetPack 5.x): onnx-tensorrt's operator table at the 8.5 release
  (``docs/operators.md``, branch ``release/8.5-GA``): operators up to opset 17; no
  ``LayerNormalization`` (it came in 8.6); ``TopK``'s K must be an initializer (dynamic K came in
  8.6); Q/DQ int8 only, zero point 0; ``Slice``/``Squeeze`` axes initializers, ``Unsqueeze`` axes
  constant.
- ``jetpack6`` (TensorRT 10.3, JetPack 6.x): onnx-tensorrt's 10.x operator table (opsets 9 to 20 in
  10.0) with the changes its changelog lists up to 10.3 (``DeformConv`` in 10.1, tensor ``axes``
  for ``Slice`` in 10.3) and without what came later (the window functions in 10.4, ``STFT`` in
  10.5, ``Attention`` in 10.14, ``RMSNormalization``/``RotaryEmbedding``/``TensorScatter`` in
  10.15). INT8 is a quantised type only (reached through Q/DQ); ``Cast`` does not list it.
- ``rtx`` (TensorRT-RTX 1.7, the ``tensorrt-rtx-cu12`` wheels): the onnx-tensorrt 10.x table, checked
  here against the real parser and builder (``tests/test_tensorrt_rtx.py`` builds a graph breaking
  each rule). Measured differences from the 10.x table: ``NonZero``, ``RoiAlign`` and
  ``DeformConv`` need plugins TensorRT-RTX does not ship, ``NonMaxSuppression`` has no kernel;
  ``Cast`` to int8 and uint8 Q/DQ zero points (of 0) are accepted.

Common to all three: ``TopK``'s K at most 3840 (the builder's limit); Q/DQ zero points all zero and
scales positive. Some rules are deliberately stricter than TensorRT-RTX really is (``policy``, measured): a missing Q/DQ
zero point (ONNX then means uint8, TensorRT int8: onnxruntime and TensorRT would compute different
things), a Q/DQ scale computed at run time (the int8 ranges are fixed at export), an opset below 9
(the 10.x documentation's floor), and custom-domain operators (an onnxruntime contrib op that
TensorRT-RTX happens to import is not one the other targets can).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["TensorRTTarget", "TARGETS", "RULES", "target_for_export"]

# rule id -> (what it checks, fix). The preflight names the rule, the node and the fix.
RULES: dict[str, tuple[str, str]] = {
    "opset-range": ("the graph's default-domain opset is within what the target's ONNX parser reads",
                    "export at opset 17 (edgereid's default) and read opset_import back: the dynamo exporter "
                    "leaves opset 18 when its down-conversion fails"),
    "custom-domain": ("every node is a standard ONNX operator (no custom domains, which TensorRT runs only "
                      "through plugins)",
                      "quantise with QuantizeLinear/DequantizeLinear (edgereid.calibration.onnx_qdq), not "
                      "onnxruntime's contrib operators"),
    "unsupported-op": ("every operator is in the target's ONNX operator table", "see the operator's own fix"),
    "constant-input": ("inputs the target needs at build time (TopK K, Slice/Squeeze/Unsqueeze/Reduce axes, CumSum "
                       "axis) are constants", "export with Python ints for sizes and axes so they become "
                                             "initializers"),
    "topk-k-limit": ("TopK's K is at most the builder's limit",
                     "keep fewer tokens per pruning step (a lower --token-rate / drop_keep) or a smaller input size"),
    "topk-sorted": ("TopK has sorted=1", "export torch.topk with sorted=True (the default)"),
    "qdq-zero-point": ("Q/DQ zero points are constants, all zero, of a type the target quantises to",
                       "quantise symmetrically with int8 zero points (edgereid.calibration.onnx_qdq; NNCF's "
                       "PERFORMANCE preset), never asymmetric uint8"),
    "qdq-scale": ("Q/DQ scales are constants, finite and positive",
                  "calibrate again: a scale of 0 or below means an empty calibration range"),
    "cast-type": ("Cast converts only to types the target supports",
                  "export with --output embedding (float32): the runtime quantises it to the same int8 codes"),
    "input": ("one float32 NCHW image input whose channels, height and width are static",
              "export through edgereid export (one 'images' input, static image size)"),
    "static-shapes": ("every tensor has a static shape once the batch is fixed (only axis 0 of the input and "
                      "outputs may be dynamic)",
                      "export with a static image size and static pruning (fixed token counts); no data-dependent "
                      "shapes"),
}


@dataclass(frozen=True)
class TensorRTTarget:
    """One TensorRT version's ONNX rules."""

    name: str
    tensorrt: str  # what runs the graph
    source: str  # where the table was read
    opset_min: int
    opset_max: int
    ops: frozenset[str]  # operators the parser imports
    cast_to: frozenset[str]  # onnx.TensorProto type names Cast may produce
    qdq_zero_point_types: frozenset[str]
    constant_inputs: dict[str, dict[int, str]]  # op -> {input index: what it is}
    topk_max_k: int = 3840
    topk_sorted: bool = False  # the table asks for sorted=1
    op_fixes: dict[str, str] = field(default_factory=dict)  # op -> fix when the op is not in the table
    policy: frozenset[str] = frozenset()  # rules stricter than this TensorRT really is (measured: rtx)


_COMMON_FIXES = {
    "LayerNormalization": "export with --jetpack 5: the bundle then holds *.jp5.onnx graphs with LayerNormalization "
                          "decomposed into ReduceMean/Sub/Pow/Sqrt/Div (TensorRT 8.6+ has the layer)",
    "MatMulInteger": "integer matmuls are onnxruntime's dynamic quantisation; for TensorRT quantise with "
                     "QuantizeLinear/DequantizeLinear pairs (edgereid.calibration.onnx_qdq)",
    "ConvInteger": "use QuantizeLinear/DequantizeLinear pairs (edgereid.calibration.onnx_qdq) instead",
    "DynamicQuantizeLinear": "use static Q/DQ quantisation calibrated at export (edgereid.calibration.onnx_qdq)",
    "NonZero": "data-dependent output shape: keep it out of the embedding graph (do it on the host)",
    "NonMaxSuppression": "detection post-processing: keep it out of the embedding graph (do it on the host)",
    "Unique": "data-dependent output shape: keep it out of the embedding graph",
    "RoiAlign": "crop on the host before the embedding graph (TensorRT-RTX has no RoiAlign plugin)",
    "DeformConv": "not available without TensorRT plugins on this target: replace the layer",
}

# onnx-tensorrt, release/8.5-GA, docs/operators.md: the operators marked supported.
_TRT85_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu Clip
Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout
Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gemm GlobalAveragePool
GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GRU HardSwish HardSigmoid Identity If ImageScaler
InstanceNormalization IsNaN LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool
MatMul Max MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range
Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements
ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt
Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

# onnx-tensorrt's 10.x table (operators marked supported), before the additions its changelog dates after 10.3.
_TRT10_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike Ceil Celu
Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear
Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HardSigmoid
HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less
LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization
Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear
RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid
Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh
ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())
_AFTER_10_3 = frozenset("BlackmanWindow HammingWindow HannWindow STFT Attention RMSNormalization RotaryEmbedding "
                        "TensorScatter".split())
# Refused by TensorRT-RTX 1.7 here although the 10.x table lists them (plugin missing / no kernel).
_RTX_REJECTS = frozenset({"NonZero", "NonMaxSuppression", "RoiAlign", "DeformConv"})

_REDUCE_OPS = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
               "ReduceProd", "ReduceSum", "ReduceSumSquare")
_CONST_85 = {"TopK": {1: "K"}, "Slice": {3: "axes"}, "Squeeze": {1: "axes"}, "Unsqueeze": {1: "axes"},
             "CumSum": {1: "axis"}, "QuantizeLinear": {1: "scale"}, "DequantizeLinear": {1: "scale"}}
_CONST_10 = {"TopK": {1: "K"}, "Squeeze": {1: "axes"}, "Unsqueeze": {1: "axes"}, "CumSum": {1: "axis"},
             "QuantizeLinear": {1: "scale"}, "DequantizeLinear": {1: "scale"},
             **{op: {1: "axes"} for op in _REDUCE_OPS}}

TARGETS: dict[str, TensorRTTarget] = {
    "jetpack5": TensorRTTarget(
        name="jetpack5", tensorrt="TensorRT 8.5 (JetPack 5)",
        source="onnx-tensorrt docs/operators.md, release/8.5-GA",
        opset_min=7, opset_max=17, ops=_TRT85_OPS,
        cast_to=frozenset({"FLOAT", "FLOAT16", "INT32", "INT64", "INT8", "BOOL"}),
        qdq_zero_point_types=frozenset({"INT8"}), constant_inputs=_CONST_85, op_fixes=_COMMON_FIXES,
    ),
    "jetpack6": TensorRTTarget(
        name="jetpack6", tensorrt="TensorRT 10.3 (JetPack 6)",
        source="onnx-tensorrt docs/operators.md (10.x) and CHANGELOG.md up to 10.3",
        opset_min=9, opset_max=20, ops=_TRT10_OPS,
        cast_to=frozenset({"FLOAT", "FLOAT16", "BFLOAT16", "INT32", "INT64", "UINT8", "BOOL"}),
        qdq_zero_point_types=frozenset({"INT8"}), constant_inputs=_CONST_10, topk_sorted=True,
        op_fixes=_COMMON_FIXES,
    ),
    "rtx": TensorRTTarget(
        name="rtx", tensorrt="TensorRT-RTX 1.7 (RTX GPUs, compute capability 7.5/8.x/12.x)",
        source="onnx-tensorrt docs/operators.md (10.x), checked against the TensorRT-RTX 1.7 parser and builder",
        opset_min=9, opset_max=25, ops=(_TRT10_OPS | _AFTER_10_3) - _RTX_REJECTS,
        cast_to=frozenset({"FLOAT", "FLOAT16", "BFLOAT16", "INT32", "INT64", "UINT8", "INT8", "BOOL"}),
        qdq_zero_point_types=frozenset({"INT8", "UINT8"}), constant_inputs=_CONST_10, op_fixes=_COMMON_FIXES,
        # measured: TensorRT-RTX takes these, edgereid refuses them anyway (see the module docstring)
        policy=frozenset({"qdq-zero-point:missing", "constant-input:QuantizeLinear", "constant-input:DequantizeLinear",
                          "opset-range:below", "custom-domain:any"}),
    ),
}


def target_for_export(export_target: str, jetpack: int | None = None) -> str | None:
    """The TensorRT rule table an export target's engine graphs must pass (None: no TensorRT)."""
    if export_target == "jetson":
        return "jetpack5" if jetpack == 5 else "jetpack6"
    if export_target == "rtx":
        return "rtx"
    return None
