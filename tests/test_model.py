"""The ReID model: timm weight compatibility, checkpoint round trip, embedding heads, timm registry."""

from __future__ import annotations

import json

import pytest
import torch

timm = pytest.importorskip("timm")

from edgereid.train.checkpoint import load_model, save_checkpoint  # noqa: E402
from edgereid.train.config import BackboneConfig, EmbeddingConfig, ModelConfig  # noqa: E402
from edgereid.train.models import build_model  # noqa: E402


def micro_cfg(**emb) -> ModelConfig:
    return ModelConfig(backbone=BackboneConfig.for_size("vit_micro", img_size=(64, 32)),
                       embedding=EmbeddingConfig(**emb), num_classes=7)


def test_backbone_matches_timm_vit_with_the_same_weights(tmp_path):
    """Weights from a timm VisionTransformer load into ours and give the same tokens."""
    from safetensors.torch import save_file

    ref = timm.models.vision_transformer.VisionTransformer(
        img_size=(64, 32), patch_size=16, embed_dim=48, depth=2, num_heads=3, num_classes=0).eval()
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model = build_model(micro_cfg(), pretrained=str(path)).eval()
    x = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        ours = model.forward_features(x)
        theirs = ref.forward_features(x)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_pretrained_pos_embed_is_resampled_from_a_square_grid(tmp_path):
    from safetensors.torch import save_file

    ref = timm.models.vision_transformer.VisionTransformer(
        img_size=64, patch_size=16, embed_dim=48, depth=2, num_heads=3, num_classes=10)
    path = tmp_path / "square.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model = build_model(micro_cfg(), pretrained=str(path))  # 4x2 grid from a 4x4 one; head.* ignored
    assert torch.equal(model.backbone.blocks[0].attn.qkv.weight, ref.blocks[0].attn.qkv.weight)


def test_pretrained_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        build_model(micro_cfg(), pretrained=str(tmp_path / "nope.safetensors"))


def test_eval_forward_is_the_normalised_deployable_embedding():
    model = build_model(micro_cfg(kind="slice", dim=16)).eval()
    with torch.no_grad():
        e = model(torch.randn(4, 3, 64, 32))
    assert e.shape == (4, 16)
    assert torch.allclose(e.norm(dim=1), torch.ones(4), atol=1e-5)


def test_training_forward_returns_what_the_losses_need():
    model = build_model(micro_cfg(kind="lowrank", dim=8)).train()
    out = model(torch.randn(4, 3, 64, 32))
    assert out["embedding"].shape == (4, 8)
    assert out["logits"].shape == (4, 7)
    assert out["feature"].shape == (4, 48)


def test_checkpoint_round_trip_reproduces_outputs_exactly(tmp_path):
    model = build_model(micro_cfg(kind="lowrank", dim=8, bits=8, scale=0.01)).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        before = model(x)
    save_checkpoint(model, tmp_path / "ckpt", metadata={"note": "test"})
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfg["model"]["embedding"]["kind"] == "lowrank" and cfg["note"] == "test"
    loaded = load_model(tmp_path / "ckpt")
    assert not loaded.training
    with torch.no_grad():
        after = loaded(x)
    assert torch.equal(before, after)


def test_load_model_names_a_missing_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)


def test_config_rejects_a_bad_field_by_name():
    data = micro_cfg().to_dict()
    data["backbone"]["img_size"] = [65, 32]
    with pytest.raises(ValueError, match="not divisible"):
        ModelConfig.from_dict(data)
    data = micro_cfg().to_dict()
    data["embedding"]["colour"] = 1
    with pytest.raises(ValueError, match="colour"):
        ModelConfig.from_dict(data)


def test_timm_registry_creates_edgereid_models():
    model = timm.create_model("edgereid_vit_micro_patch16", num_classes=5, img_size=(64, 32))
    assert model.cfg.backbone.embed_dim == 48 and model.cfg.num_classes == 5
    assert model.pretrained_cfg["input_size"] == (3, 64, 32)
    with pytest.raises(ValueError, match="local file"):
        timm.create_model("edgereid_vit_micro_patch16", pretrained=True)
