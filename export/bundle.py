"""Assemble a deployment bundle (docs/bundle-format.md) for one target from a checkpoint.

Targets (one entry each in ``export.targets``, what they add after the common steps):
- ``onnx``: float ONNX (``model.onnx``) + symmetric Q/DQ int8 ONNX (``model.int8.qdq.onnx``).
- ``cpu``: the same ONNX + OpenVINO IR f32 (``openvino/``) + NNCF int8 IR (``openvino-int8/``).
- ``jetson``: the ONNX graphs ready for TensorRT (+ ``*.jp5.onnx`` LayerNorm-decomposed copies
  with ``jetpack=5``), TensorRT engines when TensorRT is importable here, and always
  ``BUILD_ENGINE.md`` with the exact on-device build commands.
- ``rtx``: the ONNX graphs + TensorRT-RTX engines (fp32 and int8) built here ahead of time for the
  chosen compute capabilities (no GPU needed to build; an RTX GPU to run), and ``BUILD_ENGINE.md``.

Graphs have a dynamic batch by default (any number of crops per call, no padding; the per-image
shapes and so the pruning stay static); ``dynamic_batch=False`` exports a fixed ``batch_size``.
TensorRT engines get one optimisation profile over ``min_batch``/``opt_batch``/``max_batch``. Every
graph handed to TensorRT passes the pre-flight of its target first (``export.preflight``: jetson
-> jetpack6, or jetpack5 with ``jetpack=5``; rtx -> rtx); a graph that fails it stops the export.

Every float graph is parity-checked against PyTorch (onnxruntime and OpenVINO f32, 1e-4), at batch 1
and at a larger batch when the batch is dynamic; every int8 artefact is compared with float32
(embedding cosine at both batch sizes, and mAP/rank-1 on the data set's query/gallery, run in
batches of 64, when one is given); the numbers go into the manifest. Calibration images come from
the TRAIN split only. The bundle is built in a temporary sibling folder and moved into place at
the end, so a failed export never leaves a half bundle or destroys an existing one.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from edgereid.calibration.calib_set import (
    CalibrationConfig,
    calibration_set_from_dataset,
    load_calibration_images,
)
from edgereid.data import list_datasets
from edgereid.data.atomic import fsync_parent
from edgereid.data.flags import comma_list, non_negative_float, option
from edgereid.runtime.bundle import BundleWriter
from edgereid.runtime.tables import TARGETS

from .accuracy import OPEN_SET_SOURCES
from .targets import EXPORT_TARGETS, TargetBuild

# torch comes in with onnx_export and parity, imported where they are used: `edgereid export --help`
# builds its flags from ExportOptions without loading torch.


@dataclass
class ExportOptions:
    """What ``edgereid export`` does; defaults give a dynamic-batch float-output bundle.

    dynamic_batch / batch_size: a symbolic batch axis (any count per call), or a fixed ``batch_size``.
    min_batch / opt_batch / max_batch: the TensorRT optimisation profile of a dynamic-batch engine.
    compute_capabilities: target ``rtx``: GPUs the TensorRT-RTX engines are built for (None = its default).
    output: ``embedding`` (float32) or ``codes`` (int8 levels; needs a quantised embedding).
    store_bits: gallery code width recorded for a float (non-quantised) model (8, 4, 1 or 32).
    max_map_drop: the accuracy budget of an int8 artefact, in mAP points (reported, and warned on).
    open_set_far / open_set_images / open_set_source: the manifest's open-set threshold is chosen for
        this false-accept rate on up to this many images (whole identities) of the data set's gallery
        (unseen people; default) or training split (``accuracy.calibrate_open_set``).
    """

    target: str = option("onnx", lambda: "; ".join(f"{t.name}: {t.summary}" for t in TARGETS.values()),
                         choices=lambda: list(TARGETS))
    data: str | None = option(None, "data set root: train images calibrate int8, query/gallery measure accuracy "
                                    "(omit: float artefacts only, parity on random inputs)")
    dataset: str = option("market1501", lambda: f"data set layout: {', '.join(list_datasets())} (market1501 also "
                                                "reads the synthetic set)")
    jetpack: int | None = option(None, "jetson only: 5 adds LayerNorm-decomposed graphs for TensorRT 8.5",
                                 choices=(5, 6))
    calib_size: int = option(256, "calibration images drawn from the train split")
    calib_seed: int = option(0, "seed of the stratified calibration draw")
    dynamic_batch: bool = True  # the CLI's --static-batch N sets this and batch_size
    batch_size: int = 1
    min_batch: int = option(1, "TensorRT engines: smallest batch of the optimisation profile", metavar="N")
    opt_batch: int = option(1, "TensorRT engines: the batch kernels are tuned for", metavar="N")
    max_batch: int = option(32, "TensorRT engines: largest batch of the optimisation profile", metavar="N")
    compute_capabilities: list[str] | None = option(
        None, "rtx: GPU compute capabilities of the TensorRT-RTX engines, e.g. 8.6,8.9,12.0 (default: TensorRT-RTX's "
              "portable set, 8.0 and newer; 7.5 = Turing cannot run fp32 GEMMs)", flag="--compute-capability",
        type=comma_list, metavar="CC[,CC...]")
    output: str = option("embedding", "graph output: float32 embedding, or int8 codes of a quantised embedding",
                         choices=("embedding", "codes"))
    store_bits: int = option(8, "gallery code width recorded for a float model (its scale is calibrated on train "
                                "images)", choices=(32, 8, 4, 1))
    opset: int = 17
    parity_images: int = option(16, "images for the PyTorch parity check")
    parity_tol: float = 1e-4
    evaluate: bool = option(True, "skip the query/gallery accuracy measurement", flag="--no-eval")
    max_map_drop: float = 0.5
    open_set_far: float = option(0.05, "false-accept rate the manifest's open-set threshold is chosen for (0.05: one "
                                       "unknown person in 20 matched to somebody)", type=non_negative_float)
    open_set_images: int = option(800, "images (whole identities, at most half of them) the open-set threshold is "
                                       "calibrated on")
    open_set_source: str = option("gallery", lambda: "images the open-set threshold is calibrated on: " + "; ".join(
        f"{k} = {v}" for k, v in OPEN_SET_SOURCES.items()), choices=lambda: list(OPEN_SET_SOURCES))
    overwrite: bool = option(False, "replace an existing bundle folder once the new one is done")
    build_engine: bool = option(True, "jetson: do not build engines even if TensorRT is here (rtx always builds them)",
                                flag="--no-engine")

    def validate(self) -> None:
        if self.target not in EXPORT_TARGETS:
            raise ValueError(f"target {self.target!r}: expected one of {', '.join(EXPORT_TARGETS)}")
        if self.jetpack not in (None, 5, 6):
            raise ValueError(f"jetpack {self.jetpack!r}: expected 5 or 6 (or none)")
        if self.jetpack is not None and self.target != "jetson":
            raise ValueError("--jetpack applies to --target jetson only")
        if self.open_set_source not in OPEN_SET_SOURCES:
            raise ValueError(f"open_set_source {self.open_set_source!r}: expected one of {', '.join(OPEN_SET_SOURCES)}")
        if not 0.0 <= self.open_set_far < 1.0:
            raise ValueError(f"open_set_far {self.open_set_far}: expected a false-accept rate in [0, 1)")
        if self.calib_size < 1:
            raise ValueError(f"calib_size must be >= 1, got {self.calib_size}")
        if self.store_bits not in (32, 8, 4, 1):
            raise ValueError(f"store_bits {self.store_bits}: expected 32, 8, 4 or 1")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (1 <= self.min_batch <= self.opt_batch <= self.max_batch):
            raise ValueError(f"TensorRT batch profile must satisfy 1 <= min <= opt <= max, got {self.min_batch}, "
                             f"{self.opt_batch}, {self.max_batch}")
        if self.compute_capabilities and self.target != "rtx":
            raise ValueError("--compute-capability applies to --target rtx only (Jetson engines are built on the "
                             "device, for its own GPU)")
        check = EXPORT_TARGETS[self.target].check
        if check is not None:
            check(self)


log = logging.getLogger(__name__)
_log = log.info  # the export's progress lines (`edgereid export` shows them on stderr as [export] ...)


def _model_section(model) -> dict[str, Any]:
    from edgereid.train.prune.cost import count_macs, count_params

    cfg = model.sync_config()
    bb = cfg.backbone
    blocks = model.backbone.blocks
    kv_tokens = [len(b.attn.kv_index) if b.attn.kv_index is not None else b.tokens_in for b in blocks]
    return {
        "architecture": model.pretrained_cfg["architecture"],
        "config": cfg.to_dict(),
        "params": int(count_params(model)["deploy"]),
        "macs": int(count_macs(model)["total"]),
        "pruning": {
            "heads_per_layer": bb.heads_per_layer,
            "tokens_per_layer": model.backbone.tokens_per_layer,
            "kv_tokens_per_layer": kv_tokens,
            "drop_layers": list(bb.drop_layers), "drop_keep": bb.drop_keep if bb.drop_layers else None,
        },
    }


def _default_scale(bits: int, dim: int) -> float:
    """Scale when no calibration data is given: one that can never clip a unit-norm coordinate."""
    if bits == 32:
        return 1.0
    if bits == 1:
        return float(1.0 / np.sqrt(dim))
    return 1.0 / (127 if bits == 8 else 7)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} exists and is not empty; pass --overwrite to replace it (the old bundle is "
                         "removed only after the new one is complete)")


def _prepare_out(out: Path, overwrite: bool) -> Path:
    _check_out(out, overwrite)
    tmp = out.with_name(f".{out.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _finish(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
    tmp.rename(out)
    fsync_parent(out)  # the rename that publishes the bundle is on disk before the old one goes
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def export_bundle(ckpt, out: str | Path, opts: ExportOptions | None = None, dataset: Any = None) -> Path:
    """Export ``ckpt`` (a checkpoint folder or a ReIDModel) to the bundle folder ``out``.

    ``dataset``: an already loaded data set (``.train/.query/.gallery`` records) instead of
    ``opts.data``; only ``.train`` is read for calibration, query/gallery only for accuracy.
    """
    from edgereid.train.checkpoint import load_model

    opts = opts or ExportOptions()
    opts.validate()
    out = Path(out)
    _check_out(out, opts.overwrite)  # before any slow work
    model = load_model(ckpt) if isinstance(ckpt, (str, Path)) else ckpt.eval()
    if dataset is None and opts.data:
        from edgereid.data import build_dataset

        dataset = build_dataset(opts.dataset, opts.data)
    work = _prepare_out(out, opts.overwrite)
    try:
        _build(model, dataset, work, opts)
        _finish(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


def _build(model, dataset, root: Path, opts: ExportOptions) -> None:
    from .onnx_export import DeployableReID, export_onnx, input_spec

    batch = None if opts.dynamic_batch else opts.batch_size
    spec_in = input_spec(model, "dynamic" if opts.dynamic_batch else opts.batch_size)
    notes: list[str] = []

    # 1. calibration set (train split only) -------------------------------------------------
    calib_images = None
    calibration: dict[str, Any] = {"images": 0, "source": None}
    if dataset is not None:
        calib = calibration_set_from_dataset(dataset, CalibrationConfig(size=opts.calib_size, seed=opts.calib_seed))
        calib.write_list(root / "calibration" / "calibration_list.txt")
        calib_images = load_calibration_images(calib.paths, spec_in)
        calibration = {**calib.summary(), "list": "calibration/calibration_list.txt"}
        _log(f"calibration set: {len(calib.records)} train images, {calibration['identities']} identities")
    else:
        notes.append("no --data: parity on random inputs, no int8 artefacts, no accuracy")

    # 2. the embedding scale (QAT: from the model; otherwise calibrated on the train split) ------
    quant = model.quant
    emb_bits = quant.bits if quant.enabled else opts.store_bits
    scale_info: dict[str, Any]
    if quant.enabled and quant.has_scale:
        scale_info = {"scale": float(quant.scale.detach().abs()), "scale_source": "qat" if quant.qat else "checkpoint"}
    elif calib_images is not None:
        from edgereid.calibration.embedding_scale import calibrate_embedding_scale

        floats = DeployableReID(model, "embedding")  # no scale yet: float output
        emb = _run_torch(floats, calib_images)
        scale_info = calibrate_embedding_scale(emb, bits=emb_bits, percentile=model.cfg.embedding.percentile)
    else:
        scale_info = {"scale": _default_scale(emb_bits, model.cfg.embed_dim),
                      "scale_source": "default (no calibration data; pass --data)"}
    if quant.enabled and not quant.has_scale:
        quant.scale.data.fill_(scale_info["scale"])  # PTQ: the exported graph quantises with it
        model.sync_config()
    calibration["embedding_scale"] = scale_info

    # 3. float ONNX + checks ----------------------------------------------------------------
    res = export_onnx(model, root / "model.onnx", output=opts.output, dynamic_batch=opts.dynamic_batch,
                      batch_size=opts.batch_size, opset=opts.opset, scale_source=scale_info["scale_source"])
    _log(f"model.onnx: opset {opts.opset}, checks passed ({len(res.checks['op_types'])} op types)")
    codes = opts.output == "codes"
    embedding = {
        "output_name": opts.output, "output": "codes" if codes else "float32", "dim": int(model.cfg.embed_dim),
        "bits": int(emb_bits), "scale": float(scale_info["scale"]), "metric": "l2", "normalized": True,
        "scale_source": str(scale_info["scale_source"]),
    }
    reference = DeployableReID(model, opts.output)
    graph_scale = res.embedding["scale"]  # None for a float model: its graph output is not quantised

    # parity inputs: real train images when a data set is given
    if calib_images is not None:
        n = min(opts.parity_images, len(calib_images))
        px = calib_images[: max(n - n % (batch or 1), batch or 1)]
        if len(px) < (batch or 1):
            px = np.concatenate([px] * (batch or 1))[: batch]
    else:
        rng = np.random.default_rng(0)
        px = rng.standard_normal((max(opts.parity_images - opts.parity_images % (batch or 1), batch or 1), 3,
                                  spec_in["height"], spec_in["width"])).astype(np.float32)
    float_graphs: dict[str, Path] = {"onnx-fp32": root / "model.onnx"}
    artifacts: list[tuple] = [("onnx-fp32", "onnxruntime", "fp32", {"model": "model.onnx"}, {})]
    int8_graphs: dict[str, tuple[str, Path]] = {}  # name -> (kind, path)

    # 4. int8 Q/DQ ONNX (every target) ---------------------------------------------------------
    checks: dict[str, Any] = {"model.onnx": res.checks}
    if calib_images is not None:
        from edgereid.calibration.onnx_qdq import quantize_onnx_qdq

        qdq = quantize_onnx_qdq(root / "model.onnx", root / "model.int8.qdq.onnx", calib_images, batch=batch)
        checks["model.int8.qdq.onnx"] = qdq
        artifacts.append(("onnx-int8-qdq", "onnxruntime", "int8", {"model": "model.int8.qdq.onnx"},
                          {"notes": "symmetric Q/DQ (zero points 0, per-channel weights): TensorRT 10 explicit int8"}))
        int8_graphs["onnx-int8-qdq"] = ("onnxruntime", root / "model.int8.qdq.onnx")
        _log(f"model.int8.qdq.onnx: {qdq['qdq_nodes']} Q/DQ nodes, zero points all 0")

    # 5. per-target artefacts (export.targets: one entry per target) ----------------------------
    target = TargetBuild(root, opts, spec_in, calib_images, batch, float_graphs, int8_graphs, artifacts, checks, notes)
    EXPORT_TARGETS[opts.target].add(target)
    default, build_engine_md, engine_builds = target.default, target.build_engine_md, target.engine_builds

    # 6. parity of every float graph, cosine of every int8 graph (batch 1 and a larger batch) -------
    parity = _parity(reference, px, float_graphs, int8_graphs, batch, opts, graph_scale, codes)
    _log("parity vs PyTorch: " + ", ".join(f"{k} {v}" for k, v in parity.items() if isinstance(v, dict)))
    accuracy: dict[str, Any] = {}
    if int8_graphs and dataset is not None and opts.evaluate:
        accuracy = _accuracy(dataset, spec_in, reference, float_graphs, int8_graphs, batch, codes, graph_scale,
                             opts)
        default = default_within_budget(default, artifacts, accuracy)

    # 7. manifest ---------------------------------------------------------------------------
    writer = BundleWriter(root, input=spec_in, embedding=embedding, model=_model_section(model), target=opts.target)
    for name, backend, precision, files, extra in artifacts:
        writer.add_artifact(name, backend, precision, files, default=(name == default), **extra)
    writer.set("default_artifact", default)
    writer.set("calibration", calibration)
    writer.set("parity", parity)
    writer.set("accuracy", accuracy)
    reference = accuracy.get("torch-fp32", {}) if accuracy else {}
    if reference.get("open_set", {}).get("threshold") is not None:
        writer.set("open_set", reference["open_set"])
    writer.set("checks", checks)
    if build_engine_md:
        writer.set("build_engine", writer.add_file("build_engine", build_engine_md.name))
    if notes:
        writer.set("notes", notes)
    writer.write()
    # 8. TensorRT engines, built by the runtime's builder (the device-side code), which registers them ----
    if engine_builds:
        from edgereid.runtime.engine_build import build_engine

        for cfg in engine_builds:
            entry = build_engine(root, cfg)
            _log(f"built {entry['name']} from {cfg.source_artifact} with {entry['library']} "
                 f"{entry['library_version']} in {entry['build']['seconds']} s ({entry['built_for']})")


def default_within_budget(default: str | None, artifacts: list, accuracy: dict[str, Any]) -> str | None:
    """The target's preferred default artifact, unless its measured accuracy is out of the int8 budget:
    then the float artifact of the same backend (else the first float one), with a warning.

    ``artifacts``: (name, backend, precision, files, extra) tuples; ``accuracy``: name -> result with
    ``within_budget`` (int8 artefacts measured by ``_accuracy``).
    """
    if default is None or (accuracy.get(default) or {}).get("within_budget", True):
        return default
    backend = next((a[1] for a in artifacts if a[0] == default), None)
    floats = [a[0] for a in artifacts if a[2] == "fp32"]
    same_backend = [a[0] for a in artifacts if a[2] == "fp32" and a[1] == backend]
    pick = (same_backend or floats or [default])[0]
    if pick != default:
        lost = accuracy[default].get("mAP_drop_points", float("nan"))
        log.warning(f"{default} is out of the accuracy budget ({lost:.2f} mAP points lost): the bundle's default "
                    f"artifact is {pick}")
    return pick


def _parity(reference, px: np.ndarray, float_graphs: dict, int8_graphs: dict, batch: int | None,
            opts: ExportOptions, graph_scale: float | None, codes: bool) -> dict[str, Any]:
    """Float graphs against PyTorch (``parity_report``), int8 graphs by cosine; with a dynamic batch at
    batch 1 and at ``len(px)`` (the worse of the two is recorded, with both batch sizes)."""
    from .parity import cosine_stats, parity_report
    from .runners import onnxruntime_runner, openvino_runner

    batches = [batch] if batch else sorted({1, len(px)})
    reports = [parity_report(reference, px, dict(float_graphs), batch=b if b == batch or b == 1 else None,
                             tol=opts.parity_tol, scale=graph_scale, codes=codes) for b in batches]
    parity: dict[str, Any] = reports[-1]
    for name in float_graphs:
        entry = dict(reports[-1][name])
        for other in reports[:-1]:
            for key, value in other[name].items():
                entry[key] = max(entry.get(key, value), value)
        parity[name] = {**entry, "batches": batches}
    if int8_graphs:
        ref = _run_torch(reference, px)
        for name, (kind, path) in int8_graphs.items():
            make = onnxruntime_runner if kind == "onnxruntime" else openvino_runner
            got = {b: make(path, batch or (1 if b == 1 else None))(px) for b in batches}
            full = got[batches[-1]]
            entry = {"cosine_to_torch_fp32": cosine_stats(_deq(ref, codes, graph_scale), _deq(full, codes, graph_scale)),
                     "batches": batches}
            if len(batches) > 1:  # the same images at batch 1 and batch N must give the same embeddings
                entry["batch1_vs_batch_n_max_abs"] = float(np.abs(_deq(got[1], codes, graph_scale)
                                                                  - _deq(full, codes, graph_scale)).max())
            parity[name] = entry
    return parity


def _run_torch(module, x: np.ndarray) -> np.ndarray:
    from .runners import torch_runner

    return torch_runner(module)(x)


def _deq(y: np.ndarray, codes: bool, scale: float | None) -> np.ndarray:
    return y.astype(np.float32) * np.float32(scale) if codes else y.astype(np.float32)


def _accuracy(dataset, spec_in: dict, reference, float_graphs: dict, int8_graphs: dict, batch: int | None,
              codes: bool, scale: float | None, opts: ExportOptions) -> dict[str, Any]:
    from .accuracy import calibrate_open_set, evaluate_runners
    from .runners import onnxruntime_runner, openvino_runner, torch_runner

    runners = {"torch-fp32": torch_runner(reference)}
    baseline_of: dict[str, str] = {}
    for name, (kind, path) in int8_graphs.items():
        runners[name] = onnxruntime_runner(path, batch) if kind == "onnxruntime" else openvino_runner(path, batch)
        baseline_of[name] = "torch-fp32"
    code_scale = {n: scale for n in runners} if codes else None
    _log(f"accuracy on {len(dataset.query)} query / {len(dataset.gallery)} gallery images: {', '.join(runners)}")
    results = evaluate_runners(dataset.query, dataset.gallery, spec_in, runners, "torch-fp32", code_scale)
    results["torch-fp32"]["open_set"] = calibrate_open_set(
        dataset.gallery if opts.open_set_source == "gallery" else dataset.train, spec_in, runners["torch-fp32"],
        far=opts.open_set_far, max_images=opts.open_set_images, seed=opts.calib_seed,
        code_scale=scale if codes else None, source=opts.open_set_source)
    t = results["torch-fp32"]["open_set"].get("threshold")
    if t is not None:
        _log(f"open-set threshold {t:.4f} for a false-accept rate of {opts.open_set_far:g} ({opts.open_set_source})")
    max_map_drop = opts.max_map_drop
    for name, base in baseline_of.items():
        drop = 100.0 * (results[base]["mAP"] - results[name]["mAP"])
        results[name]["mAP_drop_points"] = drop
        results[name]["max_map_drop_points"] = float(max_map_drop)  # the runtime's automatic choice reads it
        results[name]["within_budget"] = bool(drop <= max_map_drop)
        if drop > max_map_drop:
            log.warning(f"{name} loses {drop:.2f} mAP points against {base} (budget {max_map_drop})")
    return results


def describe(out: Path) -> str:
    manifest = json.loads((out / "manifest.json").read_text())
    arts = ", ".join(f"{a['name']} ({a['backend']}, {a['precision']})" for a in manifest["artifacts"])
    return f"bundle {out}: target {manifest['target']}, artifacts: {arts}; default {manifest['default_artifact']}"
