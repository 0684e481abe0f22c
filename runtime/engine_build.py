"""``reid-runtime build-engine``: build a TensorRT engine from a bundle's ONNX and add it to the bundle.

A TensorRT engine is native code for one GPU family and one TensorRT version. Two ways to get one:

- **TensorRT** (Jetson, x86 GPU servers): build on the device itself. The exporter ships the ONNX
  graphs (float32, the symmetric Q/DQ int8 graph, and for JetPack 5 their LayerNorm-decomposed
  copies) and ``BUILD_ENGINE.md``; this command turns one into an engine where it will run.
  Precision comes from builder flags: ``fp16``, or ``int8`` (+ fp16 for the rest) from the Q/DQ
  graph, whose scales are in the graph (explicit quantisation: no calibrator).
- **TensorRT-RTX** (RTX workstations): engines are built ahead of time on any machine, without a
  GPU, for chosen compute capabilities (``--compute-capability 8.6,8.9``; default: TensorRT-RTX's
  portable set). Networks are strongly typed: ``fp32`` from the float graph, ``int8`` from the Q/DQ
  graph. ``edgereid export --target rtx`` calls this at export.

Both: an explicit-batch network from ``OnnxParser``; one optimisation profile over the batch
(``--min-batch``/``--opt-batch``/``--max-batch``; a fixed-batch graph uses its own size); a timing
cache reused across builds; optionally a Jetson DLA core with GPU fallback. The TensorRT log of the
build is written beside the engine, which is registered in the manifest like any other artifact
(path, SHA-256, bytes, ``built_for``, the library, the batch profile, the build time).
:func:`build_serialized_engine` is the part without a bundle: parse + build one ONNX file.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgereid.data.atomic import write_bytes_atomic, write_text_atomic
from edgereid.data.flags import comma_list, option

logger = logging.getLogger(__name__)

__all__ = ["EngineBuildConfig", "EngineBuild", "EngineBuildError",
           "build_serialized_engine", "build_engine", "engine_file_name", "default_artifact_name"]


@dataclass
class EngineBuildConfig:
    """How to build. Defaults: the library's default precision, batch 1..32 optimised for 1, 1 GiB workspace.

    ``reid-runtime build-engine`` takes its flags from these fields.
    """

    library: str = option("auto", "TensorRT library to build with: auto = tensorrt if importable, else TensorRT-RTX",
                          choices=("auto", "tensorrt", "tensorrt-rtx"))
    precision: str | None = option(None, "fp16 (TensorRT's default) or fp32 from the float ONNX; int8 from the "
                                         "bundle's Q/DQ ONNX (explicit quantisation, no calibrator). TensorRT-RTX is "
                                         "strongly typed: fp32 (its default) or int8", choices=("fp32", "fp16", "int8"))
    compute_capabilities: list[str] | None = option(
        None, "TensorRT-RTX only: GPU compute capabilities to build for, e.g. 8.6,8.9,12.0 (7.5 = Turing needs an "
              "fp16 graph); default: TensorRT-RTX's portable set (8.0 and newer)",
        flag="--compute-capability", type=comma_list, metavar="CC[,CC...]")
    min_batch: int = option(1, "smallest batch of the optimisation profile", metavar="N")
    opt_batch: int = option(1, "batch TensorRT tunes kernels for (1: a camera stream)", metavar="N")
    max_batch: int = option(32, "largest batch of the optimisation profile", metavar="N")
    workspace_mib: int = option(1024, "builder workspace memory limit in MiB", metavar="MIB")
    optimization_level: int = option(3, "builder optimisation level (5 searches longest)", choices=range(0, 6),
                                     metavar="0-5")
    timing_cache: str | None = option(None, "timing cache to read and update (default BUNDLE/tensorrt/timing.cache): "
                                            "later builds on the same device are much faster", metavar="FILE")
    dla_core: int | None = option(None, "build for this DLA core (Jetson Orin/Xavier), layers DLA cannot run fall "
                                        "back to the GPU", metavar="N")
    source_artifact: str | None = option(None, "ONNX artifact to build from (default: the onnxruntime artifact at "
                                               "int8 for --precision int8, else at fp32)", metavar="NAME")
    name: str | None = option(None, "artifact name (default tensorrt-<precision>, tensorrt-rtx-<precision> with "
                                    "TensorRT-RTX)", metavar="NAME")
    make_default: bool = option(False, "make the new engine the bundle's default artifact")

    def validate(self) -> None:
        if not (1 <= self.min_batch <= self.opt_batch <= self.max_batch):
            raise ValueError(f"batch profile must satisfy 1 <= min <= opt <= max, got {self.min_batch}, "
                             f"{self.opt_batch}, {self.max_batch}")
        if self.workspace_mib < 1:
            raise ValueError(f"workspace_mib must be >= 1, got {self.workspace_mib}")


@dataclass
class EngineBuild:
    """A serialized engine and what went into it."""

    engine: bytes
    library: str
    label: str  # e.g. "TensorRT-RTX 1.7.1.116"
    precision: str
    input_name: str
    input_shape: tuple[int, ...]  # as parsed: -1 = dynamic batch
    outputs: dict[str, tuple[int, ...]]
    batch_profile: list[int]  # [min, opt, max]
    compute_capabilities: list[str]
    parse_seconds: float
    build_seconds: float
    log: list[str] = field(default_factory=list)
    timing_cache: bytes | None = None


class EngineBuildError(ValueError):
    """TensorRT refused the graph (parser) or could not build it (builder); names the node(s) and why."""

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None, log: list[str] | None = None):
        super().__init__(message)
        self.errors = errors or []
        self.log = log or []


def _device_name() -> str:
    try:
        from cuda.bindings import runtime as cudart

        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = props.name.decode(errors="replace").rstrip("\0") if isinstance(props.name, bytes) else str(props.name)
            return f"{name} (sm_{props.major}{props.minor})"
    except Exception:  # no cuda-python or no device: the engine still builds; only the label is vaguer
        pass
    return "unknown GPU"


def _parser_errors(parser) -> list[dict[str, str]]:
    """The parser's errors as {node, operator, message}; TensorRT 8.5 lacks the node-name accessors."""
    out = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node = getattr(err, "node_name", None)
        op = getattr(err, "node_operator", None)
        out.append({"node": (node() if callable(node) else "") or f"#{err.node()}",
                    "operator": (op() if callable(op) else "") or "?",
                    "message": str(err.desc())})
    return out


def build_serialized_engine(onnx_path: str | os.PathLike, cfg: EngineBuildConfig | None = None, trt=None,
                            timing_cache: bytes | None = None, echo: bool = True) -> EngineBuild:
    """Parse ``onnx_path`` and build a serialized engine; raises :class:`EngineBuildError` with the nodes
    TensorRT refused. ``trt``: a :class:`~edgereid.runtime.tensorrt_api.TensorRTLibrary` (default:
    ``import_tensorrt(cfg.library)``). ``echo``: log TensorRT's warnings and errors (the commands show them on stderr)."""
    from .tensorrt_api import import_tensorrt

    cfg = cfg or EngineBuildConfig()
    cfg.validate()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: ONNX file not found")
    lib = trt or import_tensorrt(cfg.library)
    m = lib.module
    precision = lib.check_precision(cfg.precision or lib.default_precision)
    log_lines: list[str] = []

    class _Logger(m.ILogger):
        def __init__(self) -> None:
            m.ILogger.__init__(self)

        def log(self, severity, msg):  # noqa: D401 (TensorRT callback)
            line = f"[{severity.name if hasattr(severity, 'name') else severity}] {msg}"
            log_lines.append(line)
            if echo and int(severity) <= int(m.ILogger.Severity.WARNING):
                logger.warning(line)

    logger = _Logger()
    builder = m.Builder(logger)
    network = builder.create_network(lib.network_flags())
    parser = m.OnnxParser(network, logger)
    t0 = time.perf_counter()
    parsed = parser.parse_from_file(str(onnx_path))
    parse_seconds = time.perf_counter() - t0
    if not parsed:
        errors = _parser_errors(parser)
        what = "; ".join(f"node {e['node']} ({e['operator']}): {e['message']}" for e in errors)
        raise EngineBuildError(f"{onnx_path}: {lib.label} cannot parse the ONNX graph: {what}", errors, log_lines)
    if network.num_inputs != 1:
        raise EngineBuildError(f"{onnx_path}: expected one input, the network has {network.num_inputs}", log=log_lines)
    inp = network.get_input(0)
    shape = tuple(int(d) for d in inp.shape)
    if any(d < 0 for d in shape[1:]):
        raise EngineBuildError(f"{onnx_path}: input {inp.name!r} has shape {shape}: only the batch (axis 0) may be "
                               "dynamic", log=log_lines)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(m.MemoryPoolType.WORKSPACE, cfg.workspace_mib << 20)
    if hasattr(config, "builder_optimization_level"):  # TensorRT 8.6+ and TensorRT-RTX
        config.builder_optimization_level = cfg.optimization_level
    lib.set_precision(config, precision)
    targets = lib.set_compute_capabilities(config, cfg.compute_capabilities)
    if shape[0] == -1:
        profile = builder.create_optimization_profile()
        rest = shape[1:]
        profile.set_shape(inp.name, (cfg.min_batch, *rest), (cfg.opt_batch, *rest), (cfg.max_batch, *rest))
        config.add_optimization_profile(profile)
        batches = [cfg.min_batch, cfg.opt_batch, cfg.max_batch]
    else:
        batches = [shape[0]] * 3
    cache = config.create_timing_cache(timing_cache or b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    if cfg.dla_core is not None:
        if builder.num_DLA_cores <= cfg.dla_core:
            raise ValueError(f"--dla-core {cfg.dla_core}: this device has {builder.num_DLA_cores} DLA cores")
        config.default_device_type = m.DeviceType.DLA
        config.DLA_core = cfg.dla_core
        config.set_flag(m.BuilderFlag.GPU_FALLBACK)
    outputs = {network.get_output(i).name: tuple(int(d) for d in network.get_output(i).shape)
               for i in range(network.num_outputs)}
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - t0
    log_lines.append(f"build finished in {build_seconds:.2f} s")
    if serialized is None:
        errors = [ln for ln in log_lines if ln.startswith(("[ERROR]", "[INTERNAL_ERROR]", "[Severity.ERROR]"))]
        raise EngineBuildError(f"{onnx_path}: {lib.label} could not build the engine: "
                               + (" | ".join(errors[-3:]) or "no error logged"), log=log_lines)
    return EngineBuild(engine=bytes(memoryview(serialized)), library=lib.library, label=lib.label,
                       precision=precision, input_name=inp.name, input_shape=shape, outputs=outputs,
                       batch_profile=batches, compute_capabilities=targets, parse_seconds=parse_seconds,
                       build_seconds=build_seconds, log=log_lines,
                       timing_cache=bytes(memoryview(config.get_timing_cache().serialize())))


def default_artifact_name(library: str, precision: str) -> str:
    return f"tensorrt-rtx-{precision}" if library == "tensorrt-rtx" else f"tensorrt-{precision}"


def engine_file_name(library: str, precision: str, name: str | None = None) -> str:
    """``model.<precision>.engine`` (TensorRT), ``model.rtx.<precision>.engine`` (TensorRT-RTX), or
    ``<name>.engine`` for an artifact given its own name (so it never overwrites another engine)."""
    if name and name != default_artifact_name(library, precision):
        return f"{name}.engine"
    return f"model.rtx.{precision}.engine" if library == "tensorrt-rtx" else f"model.{precision}.engine"


def build_engine(bundle_path: str | os.PathLike, cfg: EngineBuildConfig) -> dict[str, Any]:
    """Build, write and register the engine; returns the new manifest artifact entry."""
    from .bundle import BundleError, BundleWriter, load_bundle
    from .tensorrt_api import import_tensorrt

    bundle = load_bundle(bundle_path)
    cfg.validate()
    lib = import_tensorrt(cfg.library)
    precision = lib.check_precision(cfg.precision or lib.default_precision)
    want = "int8" if precision == "int8" else "fp32"
    if cfg.source_artifact:
        src = bundle.artifact(cfg.source_artifact)
    else:
        found = [a for a in bundle.artifacts.values() if a.backend == "onnxruntime" and a.precision == want]
        if not found:
            what = "the Q/DQ int8 ONNX" if want == "int8" else "a float32 ONNX"
            raise BundleError(f"{bundle.manifest_path}: --precision {precision} builds from {what} artifact "
                              f"(onnxruntime, {want}); the bundle has: "
                              + ", ".join(f"{a.name} ({a.backend}, {a.precision})" for a in bundle.artifacts.values()))
        src = found[0]
    if src.backend != "onnxruntime" or "model" not in src.files:
        raise BundleError(f"artifact {src.name!r} is not an ONNX artifact (backend onnxruntime with a model file)")
    bundle.verify(src)
    onnx_path = bundle.file(src, "model")

    out_dir = bundle.root / "tensorrt"
    out_dir.mkdir(exist_ok=True)
    name = cfg.name or default_artifact_name(lib.library, precision)
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"--name {name!r}: use letters, digits, '-', '_' and '.' only (it names the engine file)")
    engine_path = out_dir / engine_file_name(lib.library, precision, name)
    log_path = engine_path.with_suffix(".build.log")
    cache_path = Path(cfg.timing_cache) if cfg.timing_cache else out_dir / "timing.cache"
    started = _dt.datetime.now(_dt.timezone.utc)
    try:
        built = build_serialized_engine(onnx_path, EngineBuildConfig(**{**cfg.__dict__, "precision": precision}), lib,
                                        timing_cache=cache_path.read_bytes() if cache_path.is_file() else None)
    except EngineBuildError as exc:
        write_text_atomic(log_path, "\n".join(exc.log) + "\n")
        raise EngineBuildError(f"{exc} (log: {log_path})", exc.errors, exc.log) from None
    out_name = bundle.embedding.output_name
    if out_name not in built.outputs:
        raise BundleError(f"{onnx_path}: the network has outputs {sorted(built.outputs)}, the manifest's "
                          f"embedding.output_name is {out_name!r}")
    if built.outputs[out_name][-1] != bundle.embedding.dim:
        raise BundleError(f"{onnx_path}: output {out_name!r} has shape {built.outputs[out_name]}, the manifest's "
                          f"embedding.dim is {bundle.embedding.dim}")
    write_text_atomic(log_path, "\n".join(built.log) + "\n")
    write_bytes_atomic(engine_path, built.engine)
    if built.timing_cache:
        write_bytes_atomic(cache_path, built.timing_cache)

    if lib.ahead_of_time:
        ccs = built.compute_capabilities
        targets = ("TensorRT-RTX's default portable set (compute capability 8.0 and newer)" if ccs == ["default"]
                   else "compute capability " + ", ".join(ccs))
        built_for = f"{targets}, {built.label}, built ahead of time"
    else:
        built_for = f"{_device_name()}, {built.label}"
    if cfg.dla_core is not None:
        built_for += f", DLA core {cfg.dla_core}"
    writer = BundleWriter.from_bundle(bundle.root)
    entry = writer.add_artifact(
        name, "tensorrt", precision,
        {"engine": engine_path, "build_log": log_path}, default=cfg.make_default,
        built_for=built_for, library=lib.library, library_version=lib.version,
        build={"source_artifact": src.name, "batch_profile": built.batch_profile,
               "compute_capabilities": built.compute_capabilities, "workspace_mib": cfg.workspace_mib,
               "optimization_level": cfg.optimization_level, "dla_core": cfg.dla_core,
               "parse_seconds": round(built.parse_seconds, 3), "seconds": round(built.build_seconds, 2),
               "built_utc": started.replace(microsecond=0).isoformat().replace("+00:00", "Z")})
    writer.write()
    return entry
