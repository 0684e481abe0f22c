"""Export targets, one table entry each: the steps a target adds to a bundle after the common ones.

Every target first gets the common steps of ``bundle.export_bundle`` (calibration set from the
train split, embedding scale, float ONNX + checks, the symmetric Q/DQ int8 ONNX when there are
calibration images); then its entry's ``add`` runs on the :class:`TargetBuild` being assembled
(adding artifacts, checks, notes, the default artifact, TensorRT engines to build once the
manifest exists); then parity, accuracy and the manifest are common again.

The names are the runtime's ``tables.TARGETS`` (what a manifest may say); this module owns what
each one builds. Adding a target: one ``TargetInfo`` there, one ``ExportTarget`` here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from edgereid.runtime.tables import TARGETS as BUNDLE_TARGETS

if TYPE_CHECKING:
    from .bundle import ExportOptions

__all__ = ["EXPORT_TARGETS", "ExportTarget", "TargetBuild"]

log = logging.getLogger(__name__)


@dataclass
class TargetBuild:
    """A bundle being assembled in ``root``: what the common steps made, and what a target adds."""

    root: Path
    opts: ExportOptions
    spec_in: dict[str, Any]
    calib_images: np.ndarray | None  # train-split images as graph input (None: no --data)
    batch: int | None  # the fixed batch of the graphs (None: dynamic)
    float_graphs: dict[str, Path]  # artifact name -> float graph, parity-checked against PyTorch
    int8_graphs: dict[str, tuple[str, Path]]  # artifact name -> (runner kind, graph), cosine- and mAP-checked
    artifacts: list[tuple]  # (name, backend, precision, files, extra) for the manifest
    checks: dict[str, Any]
    notes: list[str]
    default: str = "onnx-fp32"  # the manifest's default artifact
    build_engine_md: Path | None = None
    engine_builds: list = field(default_factory=list)  # EngineBuildConfig, built after the manifest is written

    @property
    def have_int8(self) -> bool:
        return self.calib_images is not None


@dataclass(frozen=True)
class ExportTarget:
    name: str
    steps: tuple[str, ...]  # what ``add`` does, in order (``edgereid export --help``, docs)
    add: Callable[[TargetBuild], None]
    check: Callable[[ExportOptions], None] | None = None  # refuse early what cannot be built here


# ---------------------------------------------------------------------------------------------
# the steps


def _onnx(b: TargetBuild) -> None:
    """Target onnx: the common float and Q/DQ int8 graphs only."""


def _cpu(b: TargetBuild) -> None:
    """Target cpu: OpenVINO IR f32, and the NNCF int8 IR when calibration images are given."""
    from .openvino_ir import convert_to_ir

    convert_to_ir(b.root / "model.onnx", b.root / "openvino" / "model.xml")
    b.float_graphs["openvino-fp32"] = b.root / "openvino" / "model.xml"
    b.artifacts.append(("openvino-fp32", "openvino", "fp32",
                        {"xml": "openvino/model.xml", "bin": "openvino/model.bin"}, {}))
    b.default = "openvino-fp32"
    if b.calib_images is None:
        return
    from edgereid.calibration.nncf_openvino import quantize_openvino_int8

    quantize_openvino_int8(b.root / "model.onnx", b.calib_images, b.root / "openvino-int8" / "model.xml",
                           batch=b.batch or 1)
    b.artifacts.append(("openvino-int8", "openvino", "int8",
                        {"xml": "openvino-int8/model.xml", "bin": "openvino-int8/model.bin"},
                        {"notes": "NNCF post-training quantisation, model_type=TRANSFORMER"}))
    b.int8_graphs["openvino-int8"] = ("openvino", b.root / "openvino-int8" / "model.xml")
    b.default = "openvino-int8"


def _preflight(b: TargetBuild, names: list[str], target: str) -> None:
    """Every graph TensorRT will get must pass its target's pre-flight; the export stops otherwise."""
    from .preflight import require_graph

    for name in names:
        report = require_graph(b.root / name, target)  # PreflightError names the node, the rule and the fix
        b.checks.setdefault(name, {})["preflight"] = {"target": target, "tensorrt": report.tensorrt,
                                                      "passed": report.passed, "nodes": report.nodes}
        log.info(f"{name}: pre-flight for {report.tensorrt} passed")


def _engine_config(opts: ExportOptions, precision: str, source: str, library: str, default: bool = False):
    from edgereid.runtime.engine_build import EngineBuildConfig

    return EngineBuildConfig(precision=precision, source_artifact=source, make_default=default, library=library,
                             min_batch=opts.min_batch, opt_batch=opts.opt_batch, max_batch=opts.max_batch,
                             compute_capabilities=opts.compute_capabilities if library == "tensorrt-rtx" else None)


def _jetson(b: TargetBuild) -> None:
    """Target jetson: graphs for the Jetson's TensorRT, pre-flighted; engines when TensorRT is here; BUILD_ENGINE.md."""
    from .layernorm_decompose import decompose_file
    from .onnx_checks import check_onnx
    from .tensorrt_engine import build_instructions, tensorrt_available
    from .tensorrt_rules import target_for_export

    opts, root = b.opts, b.root
    sources = {"fp16": "model.onnx"}
    if b.have_int8:
        sources["int8"] = "model.int8.qdq.onnx"
    if opts.jetpack == 5:
        for precision, name in list(sources.items()):
            jp5 = name.replace(".onnx", ".jp5.onnx")
            count = decompose_file(root / name, root / jp5)
            b.checks[jp5] = {"layernorm_decomposed": count,
                             **check_onnx(root / jp5, opset=opts.opset, dynamic_batch=opts.dynamic_batch,
                                          batch_size=opts.batch_size)}
            art = "onnx-fp32-jp5" if precision == "fp16" else "onnx-int8-qdq-jp5"
            b.artifacts.append((art, "onnxruntime", "fp32" if precision == "fp16" else "int8", {"model": jp5},
                                {"notes": "LayerNormalization decomposed for TensorRT 8.5 (JetPack 5)"}))
            if precision == "fp16":
                b.float_graphs[art] = root / jp5
            else:
                b.int8_graphs[art] = ("onnxruntime", root / jp5)
            sources[precision] = jp5
    _preflight(b, list(sources.values()), target_for_export("jetson", opts.jetpack))
    shape = (opts.batch_size if not opts.dynamic_batch else -1, 3, b.spec_in["height"], b.spec_in["width"])
    reason = None
    names = {"model.onnx": "onnx-fp32", "model.int8.qdq.onnx": "onnx-int8-qdq", "model.jp5.onnx": "onnx-fp32-jp5",
             "model.int8.qdq.jp5.onnx": "onnx-int8-qdq-jp5"}
    if opts.build_engine and tensorrt_available():
        # Built after the manifest is written, by the runtime's builder (it registers each engine).
        b.engine_builds = [_engine_config(opts, precision, names[name], "tensorrt", default=True)
                           for precision, name in sources.items()]
    else:
        reason = ("TensorRT is not importable on the exporting machine" if opts.build_engine
                  else "engine building was turned off (--no-engine)")
        msg = (f"{reason}: the bundle holds the ONNX graphs ready for TensorRT; build the engine on the Jetson "
               "with the commands in BUILD_ENGINE.md (`reid-runtime build-engine --bundle BUNDLE`)")
        b.notes.append(msg)
        log.warning(msg)
    b.build_engine_md = root / "BUILD_ENGINE.md"
    graphs = {precision: (name, names[name]) for precision, name in sources.items()}
    b.build_engine_md.write_text(build_instructions(graphs, b.spec_in["name"], shape, opts.dynamic_batch,
                                                    opts.jetpack, reason,
                                                    profile=(opts.min_batch, opts.opt_batch, opts.max_batch)))


def _rtx(b: TargetBuild) -> None:
    """Target rtx: pre-flight the graphs, and TensorRT-RTX engines (fp32, int8) built ahead of time after the manifest."""
    from .tensorrt_engine import build_instructions

    opts = b.opts
    sources = {"fp32": ("model.onnx", "onnx-fp32")}
    if b.have_int8:
        sources["int8"] = ("model.int8.qdq.onnx", "onnx-int8-qdq")
    _preflight(b, [name for name, _ in sources.values()], "rtx")
    b.engine_builds = [_engine_config(opts, precision, art, "tensorrt-rtx", default=(precision == list(sources)[-1]))
                       for precision, (_, art) in sources.items()]
    shape = (opts.batch_size if not opts.dynamic_batch else -1, 3, b.spec_in["height"], b.spec_in["width"])
    b.build_engine_md = b.root / "BUILD_ENGINE.md"
    b.build_engine_md.write_text(build_instructions(
        sources, b.spec_in["name"], shape, opts.dynamic_batch, None, None,
        profile=(opts.min_batch, opts.opt_batch, opts.max_batch), library="tensorrt-rtx",
        compute_capabilities=opts.compute_capabilities))


def _rtx_buildable(opts: ExportOptions) -> None:
    from edgereid.runtime.backends import BackendUnavailable
    from edgereid.runtime.tensorrt_api import import_tensorrt

    try:
        import_tensorrt("tensorrt-rtx")
    except BackendUnavailable as exc:
        raise ValueError(f"--target rtx builds TensorRT-RTX engines at export: {exc}") from None


EXPORT_TARGETS: dict[str, ExportTarget] = {t.name: t for t in (
    ExportTarget("onnx", (), _onnx),
    ExportTarget("cpu", ("OpenVINO IR f32", "NNCF int8 IR (with --data)"), _cpu),
    ExportTarget("jetson", ("LayerNorm-decomposed graphs (--jetpack 5)",
                            "TensorRT pre-flight (jetpack6, or jetpack5)",
                            "TensorRT engines when TensorRT is importable here", "BUILD_ENGINE.md"), _jetson),
    ExportTarget("rtx", ("TensorRT pre-flight (rtx)", "TensorRT-RTX engines fp32 and int8 (with --data)",
                         "BUILD_ENGINE.md"), _rtx, check=_rtx_buildable),
)}

if set(EXPORT_TARGETS) != set(BUNDLE_TARGETS):  # the runtime's table names what a manifest may say
    raise ImportError(f"export targets {sorted(EXPORT_TARGETS)} differ from the runtime's bundle targets "
                      f"{sorted(BUNDLE_TARGETS)} (edgereid.runtime.tables.TARGETS)")
