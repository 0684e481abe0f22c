"""``reid-runtime build-engine``: build a TensorRT engine on the device, from the bundle's ONNX.

A TensorRT engine is native code for one GPU model and one TensorRT version, so it cannot be
shipped in a bundle made elsewhere: the exporter ships the ONNX graphs (float32, and the symmetric
Q/DQ int8 graph) and ``BUILD_ENGINE.md``; this command turns one into an engine where it will run
and records it in the manifest like any other artifact (path, SHA-256, bytes, ``built_for``).

TensorRT 10+ API only: an explicit-batch network from ``OnnxParser``, one optimisation profile
over the batch sizes (``--min-batch``/``--opt-batch``/``--max-batch``; a fixed-batch graph uses
its own size), ``FP16`` for fp16, ``INT8`` (+ ``FP16`` for the rest) from the Q/DQ graph, whose
scales come from the graph itself (explicit quantisation: no calibrator), a timing cache reused
across builds, and optionally a DLA core (Jetson Orin) with GPU fallback. The TensorRT log of the
build is written next to the engine.

Untested in CI (TensorRT cannot be installed on the development machines; see TOOLCHAIN.md);
kept short and written against the documented TensorRT 10 Python API only.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["add_build_engine_args", "run_build_engine", "EngineBuildConfig", "build_engine"]


@dataclass
class EngineBuildConfig:
    """How to build. Defaults: fp16, batch 1..32 optimised for 1, 1 GiB workspace."""

    precision: str = "fp16"  # fp32 | fp16 | int8
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 32
    workspace_mib: int = 1024
    optimization_level: int = 3
    timing_cache: str | None = None  # default: <bundle>/tensorrt/timing.cache
    dla_core: int | None = None
    source_artifact: str | None = None  # default: the ONNX artifact matching the precision
    name: str | None = None  # default: tensorrt-<precision>
    make_default: bool = False


def add_build_engine_args(p: argparse.ArgumentParser) -> None:
    d = EngineBuildConfig()
    p.add_argument("--bundle", required=True, metavar="DIR", help="bundle folder; the engine is written into it")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default=d.precision,
                   help="fp16 (default) or fp32 from the float ONNX; int8 from the bundle's Q/DQ ONNX "
                        "(explicit quantisation, no calibrator)")
    p.add_argument("--min-batch", type=int, default=d.min_batch, metavar="N",
                   help="smallest batch of the optimisation profile (default 1)")
    p.add_argument("--opt-batch", type=int, default=d.opt_batch, metavar="N",
                   help="batch TensorRT tunes kernels for (default 1: a camera stream)")
    p.add_argument("--max-batch", type=int, default=d.max_batch, metavar="N",
                   help="largest batch of the optimisation profile (default 32)")
    p.add_argument("--workspace-mib", type=int, default=d.workspace_mib, metavar="MIB",
                   help="builder workspace memory limit in MiB (default 1024)")
    p.add_argument("--optimization-level", type=int, choices=range(0, 6), default=d.optimization_level,
                   metavar="0-5", help="builder optimisation level (default 3; 5 searches longest)")
    p.add_argument("--timing-cache", default=None, metavar="FILE",
                   help="timing cache to read and update (default BUNDLE/tensorrt/timing.cache): later "
                        "builds on the same device are much faster")
    p.add_argument("--dla-core", type=int, default=None, metavar="N",
                   help="build for this DLA core (Jetson Orin/Xavier), layers DLA cannot run fall back to the GPU")
    p.add_argument("--source-artifact", default=None, metavar="NAME",
                   help="ONNX artifact to build from (default: the onnxruntime artifact at int8 for --precision "
                        "int8, else at fp32)")
    p.add_argument("--name", default=None, metavar="NAME", help="artifact name (default tensorrt-<precision>)")
    p.add_argument("--make-default", action="store_true",
                   help="make the new engine the bundle's default artifact")


def _config_from_args(args: argparse.Namespace) -> EngineBuildConfig:
    return EngineBuildConfig(precision=args.precision, min_batch=args.min_batch, opt_batch=args.opt_batch,
                             max_batch=args.max_batch, workspace_mib=args.workspace_mib,
                             optimization_level=args.optimization_level, timing_cache=args.timing_cache,
                             dla_core=args.dla_core, source_artifact=args.source_artifact, name=args.name,
                             make_default=args.make_default)


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


def build_engine(bundle_path: str | os.PathLike, cfg: EngineBuildConfig) -> dict[str, Any]:
    """Build, write and register the engine; returns the new manifest artifact entry."""
    from .backends.base import BackendUnavailable
    from .backends.tensorrt_backend import import_tensorrt
    from .bundle import BundleError, BundleWriter, load_bundle

    bundle = load_bundle(bundle_path)
    if not (1 <= cfg.min_batch <= cfg.opt_batch <= cfg.max_batch):
        raise ValueError(f"batch profile must satisfy 1 <= min <= opt <= max, got {cfg.min_batch}, "
                         f"{cfg.opt_batch}, {cfg.max_batch}")
    want = "int8" if cfg.precision == "int8" else "fp32"
    if cfg.source_artifact:
        src = bundle.artifact(cfg.source_artifact)
    else:
        found = [a for a in bundle.artifacts.values() if a.backend == "onnxruntime" and a.precision == want]
        if not found:
            what = "the Q/DQ int8 ONNX" if want == "int8" else "a float32 ONNX"
            raise BundleError(f"{bundle.manifest_path}: --precision {cfg.precision} builds from {what} artifact "
                              f"(onnxruntime, {want}); the bundle has: "
                              + ", ".join(f"{a.name} ({a.backend}, {a.precision})" for a in bundle.artifacts.values()))
        src = found[0]
    if src.backend != "onnxruntime" or "model" not in src.files:
        raise BundleError(f"artifact {src.name!r} is not an ONNX artifact (backend onnxruntime with a model file)")
    bundle.verify(src)
    onnx_path = bundle.file(src, "model")
    trt = import_tensorrt()

    out_dir = bundle.root / "tensorrt"
    out_dir.mkdir(exist_ok=True)
    engine_path = out_dir / f"model.{cfg.precision}.engine"
    log_path = out_dir / f"model.{cfg.precision}.build.log"
    cache_path = Path(cfg.timing_cache) if cfg.timing_cache else out_dir / "timing.cache"
    log_lines: list[str] = []

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg):  # noqa: D401 (TensorRT callback)
            line = f"[{severity.name if hasattr(severity, 'name') else severity}] {msg}"
            log_lines.append(line)
            if int(severity) <= int(trt.ILogger.Severity.WARNING):
                print(line, file=sys.stderr, flush=True)

    logger = _Logger()
    builder = trt.Builder(logger)
    # TensorRT 10: every network is explicit-batch (flag 0); TensorRT 8.x (JetPack 5) must ask for it.
    major = int(str(trt.__version__).split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        log_path.write_text("\n".join(log_lines) + "\n", encoding="utf-8")
        raise BundleError(f"{onnx_path}: TensorRT cannot parse the ONNX graph: {errors} (log: {log_path})")
    if network.num_inputs != 1:
        raise BundleError(f"{onnx_path}: expected one input, the network has {network.num_inputs}")
    inp = network.get_input(0)
    shape = tuple(inp.shape)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mib << 20)
    if hasattr(config, "builder_optimization_level"):  # TensorRT 8.6+
        config.builder_optimization_level = cfg.optimization_level
    if cfg.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if cfg.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    if shape[0] == -1:
        profile = builder.create_optimization_profile()
        rest = tuple(shape[1:])
        profile.set_shape(inp.name, (cfg.min_batch, *rest), (cfg.opt_batch, *rest), (cfg.max_batch, *rest))
        config.add_optimization_profile(profile)
        batches = [cfg.min_batch, cfg.opt_batch, cfg.max_batch]
    else:
        batches = [shape[0]] * 3
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    if cfg.dla_core is not None:
        if builder.num_DLA_cores <= cfg.dla_core:
            raise BundleError(f"--dla-core {cfg.dla_core}: this device has {builder.num_DLA_cores} DLA cores")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = cfg.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    started = _dt.datetime.now(_dt.timezone.utc)
    serialized = builder.build_serialized_network(network, config)
    seconds = (_dt.datetime.now(_dt.timezone.utc) - started).total_seconds()
    log_lines.append(f"build finished in {seconds:.1f} s")
    log_path.write_text("\n".join(log_lines) + "\n", encoding="utf-8")
    if serialized is None:
        raise BackendUnavailable(f"TensorRT failed to build the engine (see {log_path})")
    tmp = engine_path.with_name(engine_path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(memoryview(serialized))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, engine_path)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_bytes(memoryview(config.get_timing_cache().serialize()))

    built_for = f"{_device_name()}, TensorRT {trt.__version__}" + (f", DLA core {cfg.dla_core}" if cfg.dla_core is not None else "")
    writer = BundleWriter.from_bundle(bundle.root)
    entry = writer.add_artifact(
        cfg.name or f"tensorrt-{cfg.precision}", "tensorrt", cfg.precision,
        {"engine": engine_path, "build_log": log_path}, default=cfg.make_default,
        built_for=built_for,
        build={"source_artifact": src.name, "batch_profile": batches, "workspace_mib": cfg.workspace_mib,
               "optimization_level": cfg.optimization_level, "dla_core": cfg.dla_core, "seconds": round(seconds, 1),
               "built_utc": started.replace(microsecond=0).isoformat().replace("+00:00", "Z")})
    writer.write()
    return entry


def run_build_engine(args: argparse.Namespace) -> int:
    entry = build_engine(args.bundle, _config_from_args(args))
    print(json.dumps(entry, indent=2), flush=True)
    files = ", ".join(os.path.join(args.bundle, f["path"]) for f in entry["files"].values())
    print(f"reid-runtime: wrote {files} and updated {os.path.join(args.bundle, 'manifest.json')}",
          file=sys.stderr, flush=True)
    return 0
