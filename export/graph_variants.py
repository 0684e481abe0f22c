"""Every form of graph ``edgereid export`` writes, as one table, built from a random model of any size.

The TensorRT tests (``tests/test_tensorrt_rtx.py``: TensorRT-RTX parses and builds each one) and the
TensorRT benchmark (``bench/bench_tensorrt.py``: build time, engine size, pre-flight per target)
loop over :data:`VARIANTS`; a new export form gets a row here and is covered by both.

Rows: dense; pruned heads; dropped tokens (TopK + Gather with a constant K); key/value token
pruning (constant Gather); heads + tokens; the LA-Transformer head; the three compressed
embeddings (slice, low-rank, dimension-pruned); the int8 codes output; the symmetric Q/DQ int8
graph; the JetPack-5 graphs with LayerNormalization decomposed (float and Q/DQ); a static batch
of 4. All have a dynamic batch except the static row. Weights are random: these graphs test what
TensorRT accepts, not accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GraphVariant", "VARIANTS", "build_variant_model", "write_variant"]


@dataclass(frozen=True)
class GraphVariant:
    name: str
    what: str
    prune_heads: bool = False
    tokens: str | None = None  # None | "drop" | "kv"
    embedding: dict[str, Any] = field(default_factory=dict)  # EmbeddingConfig fields
    head: str = "cls"
    output: str = "embedding"
    graph: str = "float"  # float | qdq | jp5 | qdq-jp5
    static_batch: int | None = None


VARIANTS: tuple[GraphVariant, ...] = (
    GraphVariant("dense", "dense ViT, float32"),
    GraphVariant("heads", "attention heads pruned (smaller qkv/proj per block)", prune_heads=True),
    GraphVariant("tokens-drop", "tokens dropped by cls attention (TopK + Gather, constant K)", tokens="drop"),
    GraphVariant("tokens-kv", "key/value token pruning (constant Gather)", tokens="kv"),
    GraphVariant("heads+tokens", "heads pruned + tokens dropped", prune_heads=True, tokens="drop"),
    GraphVariant("la-head", "LA-Transformer stripe head", head="la"),
    GraphVariant("emb-slice", "embedding sliced to 16 dims", embedding={"kind": "slice", "dim": 16}),
    GraphVariant("emb-lowrank", "learnable low-rank embedding, 12 dims", embedding={"kind": "lowrank", "dim": 12}),
    GraphVariant("emb-dimprune", "dimension-pruned embedding (kept dims)", embedding={"kind": "select"}),
    GraphVariant("codes-output", "int8 codes output of a quantised embedding (Cast to int8)",
                 embedding={"kind": "slice", "dim": 16, "bits": 8, "scale": 0.01}, output="codes"),
    GraphVariant("qdq-int8", "symmetric Q/DQ int8 graph of heads + tokens", prune_heads=True, tokens="drop",
                 graph="qdq"),
    GraphVariant("jp5", "heads + tokens with LayerNormalization decomposed (TensorRT 8.5)", prune_heads=True,
                 tokens="drop", graph="jp5"),
    GraphVariant("qdq-int8-jp5", "the Q/DQ graph with LayerNormalization decomposed", prune_heads=True,
                 tokens="drop", graph="qdq-jp5"),
    GraphVariant("static-batch-4", "heads + tokens with a fixed batch of 4", prune_heads=True, tokens="drop",
                 static_batch=4),
)


def build_variant_model(variant: GraphVariant, size: str = "vit_micro", img: tuple[int, int] = (64, 32), seed: int = 0):
    """A random ``ReIDModel`` with the variant's pruning and embedding (eval mode)."""
    import torch
    from edgereid.train.config import BackboneConfig, EmbeddingConfig, ModelConfig
    from edgereid.train.models import build_model

    probe = BackboneConfig.for_size(size, img_size=img)
    depth, patches = probe.depth, probe.num_patches
    backbone: dict[str, Any] = {}
    if variant.tokens == "drop":
        backbone.update(drop_layers=[4, 7, 10] if depth >= 12 else [depth - 1], drop_keep=0.7 if depth >= 12 else 0.5)
    elif variant.tokens == "kv":  # keep the cls key and every other patch position, in every block
        backbone.update(kv_keep=[[0, *range(1, patches + 1, 2)] for _ in range(depth)])
    emb = dict(variant.embedding)
    if emb.get("kind") == "select":
        emb["kept_dims"] = list(range(0, probe.embed_dim, 3))[:16]
    torch.manual_seed(seed)
    cfg = ModelConfig(backbone=BackboneConfig.for_size(size, img_size=img, **backbone),
                      embedding=EmbeddingConfig(**emb), num_classes=6, head=variant.head, la_bottleneck=16)
    model = build_model(cfg).eval()
    if variant.prune_heads:  # every other block loses one head
        for i, block in enumerate(model.backbone.blocks):
            if i % 2 == 0 and block.attn.num_heads > 1:
                block.attn.keep_heads([h for h in range(block.attn.num_heads) if h != i % block.attn.num_heads])
        model.sync_config()
    return model


def write_variant(variant: GraphVariant, out_dir: str | Path, size: str = "vit_micro", img: tuple[int, int] = (64, 32),
                  calib_images: np.ndarray | None = None) -> Path:
    """Export the variant's graph into ``out_dir`` (the same code paths as ``edgereid export``); returns its path.

    ``calib_images``: (N, 3, H, W) for the Q/DQ rows (default: 8 random images).
    """
    from .layernorm_decompose import decompose_file
    from .onnx_export import export_onnx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = build_variant_model(variant, size, img)
    dynamic = variant.static_batch is None
    float_path = out_dir / f"{variant.name}.float.onnx"
    export_onnx(model, float_path, output=variant.output, dynamic_batch=dynamic, batch_size=variant.static_batch or 1)
    path = float_path
    if variant.graph.startswith("qdq"):
        from edgereid.calibration.onnx_qdq import quantize_onnx_qdq

        if calib_images is None:
            calib_images = np.random.default_rng(0).standard_normal((8, 3, *img)).astype(np.float32)
        path = out_dir / f"{variant.name}.qdq.onnx"
        quantize_onnx_qdq(float_path, path, calib_images, batch=None if dynamic else variant.static_batch)
    if variant.graph.endswith("jp5"):
        jp5 = path.with_name(path.name.replace(".onnx", ".jp5.onnx"))
        decompose_file(path, jp5)
        path = jp5
    return path
