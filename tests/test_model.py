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


def test_conv_stem_keeps_the_token_grid_and_trains(tmp_path):
    """stem='conv': 3x3 stride-2 stages down to the patch grid; same token count, different parameters."""
    patch = micro_cfg()
    conv = micro_cfg()
    conv.backbone.stem, conv.backbone.stem_width = "conv", 8
    m_patch, m_conv = build_model(patch), build_model(conv)
    x = torch.randn(2, 3, 64, 32)
    assert m_conv.forward_features(x).shape == m_patch.forward_features(x).shape == (2, 1 + 4 * 2, 48)
    stages = [m for m in m_conv.backbone.patch_embed.stages if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride for c in stages] == [(2, 2)] * 4 and [c.out_channels for c in stages] == [8, 16, 32, 64]
    assert m_conv.backbone.patch_embed.proj.kernel_size == (1, 1)
    # one training step moves the stem's weights
    m_conv.train()
    before = stages[0].weight.detach().clone()
    out = m_conv(x)
    (out["logits"].sum() + out["embedding"].sum()).backward()
    torch.optim.SGD(m_conv.parameters(), lr=0.1).step()
    assert not torch.equal(before, stages[0].weight)
    # the config round trip rebuilds the conv stem with its BatchNorm statistics
    m_conv.eval()
    save_checkpoint(m_conv, tmp_path / "ck")
    again = load_model(tmp_path / "ck")
    assert again.cfg.backbone.stem == "conv"
    with torch.no_grad():
        assert torch.allclose(again(x), m_conv(x), atol=1e-6)
    with pytest.raises(ValueError, match="stem 'pixels'"):
        BackboneConfig.for_size("vit_micro", stem="pixels").validate()
    with pytest.raises(ValueError, match="power-of-two patch_size"):
        BackboneConfig.for_size("vit_micro", img_size=(60, 36), patch_size=12, stem="conv").validate()


def test_pretrained_weights_load_into_a_conv_stem_model_except_the_stem(tmp_path):
    from safetensors.torch import save_file

    ref = timm.models.vision_transformer.VisionTransformer(
        img_size=(64, 32), patch_size=16, embed_dim=48, depth=2, num_heads=3, num_classes=0).eval()
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    cfg = micro_cfg()
    cfg.backbone.stem = "conv"
    model = build_model(cfg, pretrained=str(path))
    assert torch.equal(model.backbone.blocks[1].mlp.fc2.weight, ref.blocks[1].mlp.fc2.weight)
    assert torch.equal(model.backbone.pos_embed, ref.pos_embed)


def test_augmentation_flags_change_pixels_as_specified():
    from edgereid.train.config import AugmentConfig
    from edgereid.train.data.transforms import eval_transform, train_transform
    from PIL import Image

    img = Image.fromarray((torch.rand(64, 32, 3) * 200 + 30).to(torch.uint8).numpy())
    plain = train_transform((64, 32), AugmentConfig(flip=0, pad=0, random_erasing=0, color_jitter=0))
    assert torch.equal(plain(img), eval_transform((64, 32))(img))  # nothing on: the eval tensor
    torch.manual_seed(0)
    erased = train_transform((64, 32), AugmentConfig(flip=0, pad=0, random_erasing=1.0))(img)
    zero = erased == 0
    assert zero.any() and zero.all(0).sum() >= 2  # a whole-channel rectangle set to 0 (the mean after normalising)
    torch.manual_seed(0)
    jittered = train_transform((64, 32), AugmentConfig(flip=0, pad=0, random_erasing=0, color_jitter=0.4))(img)
    assert not torch.allclose(jittered, eval_transform((64, 32))(img))


def test_augmentation_and_training_flags_reach_the_train_config():
    """`edgereid train --pad/--random-erasing/--color-jitter` (AugmentConfig fields) land in TrainConfig.augment."""
    import argparse

    from edgereid.train.cli_common import add_training_arguments, train_config_from_args
    from edgereid.train.config import AugmentConfig

    p = argparse.ArgumentParser()
    add_training_arguments(p, epochs=20, lr=1.5e-3)
    default = train_config_from_args(p.parse_args([]))
    assert default.augment == AugmentConfig() and default.epochs == 20 and default.lr == 1.5e-3
    cfg = train_config_from_args(p.parse_args(["--pad", "0", "--random-erasing", "0.25", "--color-jitter", "0.2",
                                               "--label-smoothing", "0.1", "--seed", "3"]))
    assert (cfg.augment.pad, cfg.augment.random_erasing, cfg.augment.color_jitter) == (0, 0.25, 0.2)
    assert cfg.label_smoothing == 0.1 and cfg.seed == 3
    assert "pad-and-random-crop" in p.format_help()
