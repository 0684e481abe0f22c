"""The exact TensorRT build commands written into a jetson or rtx bundle (``BUILD_ENGINE.md``).

Engines are specific to the GPU and TensorRT version they are built with, so the usual place to
build a Jetson engine is the Jetson itself: the bundle carries the ONNX graphs plus
``BUILD_ENGINE.md`` with a ``trtexec`` line and the ``reid-runtime build-engine`` equivalent. The
builder itself is ``edgereid.runtime.engine_build`` (the same code on the workstation and the
device); the exporter calls it when TensorRT is importable where it runs, and always for the rtx
target (TensorRT-RTX builds ahead of time, without a GPU; BUILD_ENGINE.md then says how to rebuild
for other compute capabilities).

int8 comes from the explicit Q/DQ graph (``model.int8.qdq.onnx``, zero points 0): TensorRT 8.5+
reads its scales from the graph, no calibrator needed (``edgereid.calibration.tensorrt_calibrator``
remains for implicit int8 calibration).
"""

from __future__ import annotations

from edgereid.runtime.engine_build import EngineBuildConfig as EngineConfig


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def trtexec_command(onnx_name: str, engine_name: str, cfg: EngineConfig, input_name: str, input_shape: tuple,
                    dynamic_batch: bool) -> str:
    """The equivalent ``trtexec`` line (run inside the bundle folder on the device)."""
    parts = ["trtexec", f"--onnx={onnx_name}", f"--saveEngine={engine_name}"]
    if cfg.precision in ("fp16", "int8"):
        parts.append("--fp16")
    if cfg.precision == "int8":
        parts.append("--int8")
    if dynamic_batch:
        rest = "x".join(str(d) for d in input_shape[1:])
        parts += [f"--minShapes={input_name}:{cfg.min_batch}x{rest}", f"--optShapes={input_name}:{cfg.opt_batch}x{rest}",
                  f"--maxShapes={input_name}:{cfg.max_batch}x{rest}"]
    parts += [f"--memPoolSize=workspace:{cfg.workspace_mib}M", "--timingCacheFile=tensorrt/timing.cache"]
    if cfg.dla_core is not None:
        parts += [f"--useDLACore={cfg.dla_core}", "--allowGPUFallback"]
    return " ".join(parts)


def runtime_build_command(precision: str, dynamic_batch: bool, cfg: EngineConfig, source_artifact: str | None = None) -> str:
    """The ``reid-runtime build-engine`` equivalent (builds, hashes and registers the engine in the manifest)."""
    parts = ["reid-runtime build-engine", "--bundle ."]
    if cfg.library != "auto":
        parts.append(f"--library {cfg.library}")
    parts.append(f"--precision {precision}")
    if cfg.compute_capabilities:
        parts.append(f"--compute-capability {','.join(cfg.compute_capabilities)}")
    if source_artifact:
        parts.append(f"--source-artifact {source_artifact}")
    if dynamic_batch:
        parts += [f"--min-batch {cfg.min_batch}", f"--opt-batch {cfg.opt_batch}", f"--max-batch {cfg.max_batch}"]
    if cfg.dla_core is not None:
        parts.append(f"--dla-core {cfg.dla_core}")
    parts.append("--make-default")
    return " ".join(parts)


def build_instructions(graphs: dict[str, tuple[str, str]], input_name: str, input_shape: tuple, dynamic_batch: bool,
                       jetpack: int | None, reason: str | None = None, profile: tuple[int, int, int] = (1, 1, 32),
                       library: str = "tensorrt", compute_capabilities: list[str] | None = None) -> str:
    """BUILD_ENGINE.md: which file to build from, and the exact commands, per precision.

    graphs: precision -> (ONNX file name, its artifact name in the manifest).
    """
    rtx = library == "tensorrt-rtx"
    lines = ["# Building the TensorRT engine" + (" (TensorRT-RTX)" if rtx else " on the device"), ""]
    if reason:
        lines += [f"**No engine in this bundle**: {reason}", ""]
    if rtx:
        lines += ["This bundle's TensorRT-RTX engines (`tensorrt/model.rtx.*.engine`) were built at export, ahead of",
                  "time, for " + (f"compute capability {', '.join(compute_capabilities)}" if compute_capabilities
                                  else "TensorRT-RTX's default portable set (compute capability 8.0 and newer)")
                  + ". To build for other GPUs (7.5 = Turing",
                  "needs fp16 graphs), or again after editing the graphs, run inside this bundle folder (no GPU",
                  "needed; `pip install edgereid[tensorrt-rtx]`). TensorRT-RTX is strongly typed: fp32 from the",
                  "float graph, int8 from the Q/DQ graph.", ""]
    else:
        lines += ["TensorRT engines are tied to the GPU and the TensorRT version, so build on the target device,",
                  "inside this bundle folder. `reid-runtime build-engine` builds the engine, writes the build log",
                  "and adds the engine with its SHA-256 to `manifest.json`; `trtexec` gives the same engine but",
                  "leaves the manifest alone.", ""]
    if jetpack == 5:
        lines += ["JetPack 5 ships TensorRT 8.5, which has no LayerNormalization: use the `*.jp5.onnx` graphs",
                  "(LayerNormalization decomposed into primitive ops). TensorRT 8.5 reads the Q/DQ graph's",
                  "explicit int8 as well; for implicit calibration use",
                  "`edgereid.calibration.tensorrt_calibrator` (cache named by the model's SHA-256).", ""]
    if dynamic_batch:
        lines += [f"The graphs have a dynamic batch: the engine's optimisation profile covers batches {profile[0]} to "
                  f"{profile[2]}", f"(tuned for {profile[1]}); change `--min-batch/--opt-batch/--max-batch` to taste.",
                  ""]
    for precision, (onnx_name, artifact) in graphs.items():
        engine = f"tensorrt/model.{precision}.engine"
        ecfg = EngineConfig(precision=precision, min_batch=profile[0], opt_batch=profile[1], max_batch=profile[2],
                            library="tensorrt-rtx" if rtx else "auto",
                            compute_capabilities=compute_capabilities if rtx else None)
        lines += [f"## {precision}", "", "```sh"]
        if rtx:
            lines += [runtime_build_command(precision, dynamic_batch, ecfg, artifact).replace(" --make-default", "")]
        else:
            lines += ["mkdir -p tensorrt", runtime_build_command(precision, dynamic_batch, ecfg, artifact),
                      "# or, without touching the manifest:",
                      trtexec_command(onnx_name, engine, ecfg, input_name, input_shape, dynamic_batch)
                      + f" 2>&1 | tee tensorrt/build.{precision}.log"]
        lines += ["```", ""]
    if not rtx:
        lines += ["Add `--useDLACore=0 --allowGPUFallback` (trtexec) or `--dla-core 0` to run on a Jetson DLA.", ""]
    lines += ["Check a graph against a TensorRT version first (no TensorRT needed): "
              "`edgereid check-graph --target jetpack5|jetpack6|rtx MODEL.onnx`.", ""]
    return "\n".join(lines)
