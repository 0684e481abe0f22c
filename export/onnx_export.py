"""Static ONNX export of a ReID model, pruning baked in (``torch.onnx.export(dynamo=True)``, opset 17).

The graph's input is ``images`` (N, 3, H, W), already resized and normalised by the runtime; the
output is either ``embedding`` (float32: L2-normalised, dequantised when the embedding is quantised)
or ``codes`` (int8 levels of the quantised embedding; the scale goes into the bundle manifest).

Why a wrapper instead of exporting ``ReIDModel`` directly: the model's eval path asks
``float(scale) > 0`` at run time (data-dependent control flow the exporter cannot trace) and uses
``F.normalize`` (ReduceL2, whose opset-18 form the exporter cannot convert back to 17, which would
leave the file at opset 18). ``DeployableReID`` freezes those decisions at wrap time and normalises
with ReduceSum + Sqrt; parity against the unwrapped model is checked by ``export.parity``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from edgereid.data.atomic import atomic_path
from edgereid.train.models.embedding_quant import quantize_codes
from edgereid.train.models.reid_model import ReIDModel
from torch import nn

from .onnx_checks import check_onnx

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
INPUT_NAME = "images"
BATCH_DIM = "batch"
META_INPUT = "edgereid.input"
META_EMBEDDING = "edgereid.embedding"


class DeployableReID(nn.Module):
    """The eval-mode forward of ``ReIDModel`` with the quantisation scale frozen as a constant.

    output="embedding": normalised float32 embedding (``scale * q`` when quantised with a scale);
    output="codes": the integer levels q as int8 (needs a quantised embedding with a scale).
    """

    def __init__(self, model: ReIDModel, output: str = "embedding") -> None:
        super().__init__()
        if output not in ("embedding", "codes"):
            raise ValueError(f"output {output!r}: expected 'embedding' or 'codes'")
        self.model = model.eval()
        self.output = output
        quant = model.quant
        self.bits = int(quant.bits)
        self.scale = float(quant.scale.detach().abs()) if quant.enabled else 0.0
        self.quantised = quant.enabled and self.scale > 0
        if output == "codes" and not self.quantised:
            raise ValueError("output 'codes' needs a quantised embedding (bits < 32) with a scale; "
                             f"this model has bits={self.bits}, scale={self.scale or None}")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        f, _ = self.model.pool(self.model.forward_features(images))
        e, _ = self.model.embed_head(f)
        e = e / torch.sqrt((e * e).sum(dim=1, keepdim=True)).clamp_min(1e-12)
        if not self.quantised:
            return e
        q = quantize_codes(e, self.scale, self.bits)
        if self.output == "codes":
            return q.to(torch.int8)
        return q * self.scale


def input_spec(model: ReIDModel, batch: int | str = "dynamic") -> dict[str, Any]:
    """The preprocessing contract (bundle manifest ``input`` and the ONNX metadata prop)."""
    h, w = model.cfg.backbone.img_size
    pcfg = getattr(model, "pretrained_cfg", {}) or {}
    return {
        "name": INPUT_NAME, "layout": "NCHW", "dtype": "float32",
        "height": int(h), "width": int(w), "channel_order": "RGB", "resize": "bilinear",
        "scale": 1.0 / 255.0,
        "mean": list(pcfg.get("mean", IMAGENET_MEAN)), "std": list(pcfg.get("std", IMAGENET_STD)),
        "batch": batch,
    }


def embedding_spec(model: ReIDModel, output: str = "embedding", scale_source: str | None = None) -> dict[str, Any]:
    """The embedding contract (bundle manifest ``embedding``)."""
    wrapper = DeployableReID(model, output)
    bits = wrapper.bits if wrapper.quantised else 32
    return {
        "output_name": output, "output": "codes" if output == "codes" else "float32",
        "dim": int(model.cfg.embed_dim), "bits": bits,
        "scale": wrapper.scale if wrapper.quantised else None,
        "metric": "l2", "normalized": True,
        "scale_source": scale_source or ("qat" if model.cfg.embedding.qat else ("calibration" if wrapper.quantised else None)),
        "kind": model.cfg.embedding.kind,
    }


@dataclass
class ExportResult:
    path: Path
    input: dict[str, Any]
    embedding: dict[str, Any]
    checks: dict[str, Any] = field(default_factory=dict)


def export_onnx(model: ReIDModel, path: str | Path, *, output: str = "embedding", dynamic_batch: bool = False,
                batch_size: int = 1, opset: int = 17, scale_source: str | None = None,
                quiet: bool = True) -> ExportResult:
    """Export ``model`` to ``path`` and verify the file (opset, checker, static shapes); raise on failure.

    dynamic_batch: axis 0 of input and output is the symbolic ``batch``; everything else is static.
    Otherwise the batch is fixed to ``batch_size``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = DeployableReID(model, output).eval()
    h, w = model.cfg.backbone.img_size
    # A dynamic axis traced at size 1 gets specialised to 1: trace with 2 in that case.
    example = torch.randn(2 if dynamic_batch else batch_size, 3, h, w)
    kwargs: dict[str, Any] = {}
    if dynamic_batch:
        kwargs["dynamic_shapes"] = {INPUT_NAME: {0: torch.export.Dim(BATCH_DIM, min=1, max=4096)}}
    import onnx

    spec_in = input_spec(model, "dynamic" if dynamic_batch else batch_size)
    spec_emb = embedding_spec(model, output, scale_source)
    with atomic_path(path) as tmp:  # a graph that fails its checks is never published
        with torch.no_grad(), _quiet_exporter(quiet):
            program = torch.onnx.export(wrapper, (example,), dynamo=True, opset_version=opset,
                                        input_names=[INPUT_NAME], output_names=[output], verbose=False, **kwargs)
            program.save(str(tmp))
        proto = onnx.load(str(tmp))
        _set_metadata(proto, {META_INPUT: spec_in, META_EMBEDDING: spec_emb})
        onnx.save(proto, str(tmp))
        checks = check_onnx(tmp, opset=opset, dynamic_batch=dynamic_batch, batch_size=batch_size)
    return ExportResult(path, spec_in, spec_emb, checks)


def _set_metadata(proto, props: dict[str, Any]) -> None:
    keep = [p for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = json.dumps(value, sort_keys=True)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The edgereid metadata props of an ONNX file, JSON-decoded."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    out = {}
    for p in proto.metadata_props:
        if p.key.startswith("edgereid."):
            out[p.key] = json.loads(p.value)
    return out


@contextlib.contextmanager
def _quiet_exporter(quiet: bool):
    """The dynamo exporter prints progress and conversion notes on stdout/stderr; keep CLIs readable.

    Failures are not hidden: the opset and shape checks run on the written file afterwards.
    """
    if not quiet:
        yield
        return
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    buf = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
