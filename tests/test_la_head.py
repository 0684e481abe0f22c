"""LA-Transformer head: stripe fusion by hand, per-stripe normalisation, training, static ONNX."""

from __future__ import annotations

import pytest
import torch
from edgereid.train.config import BackboneConfig, ModelConfig
from edgereid.train.models import build_model
from edgereid.train.models.la_head import LAHead


def la_cfg(**bb) -> ModelConfig:
    return ModelConfig(backbone=BackboneConfig.for_size("vit_micro", img_size=(64, 32), **bb), num_classes=5,
                       head="la", la_lambda=8.0, la_bottleneck=16)


def test_fused_stripes_match_a_hand_computation():
    head = LAHead(embed_dim=2, grid=(2, 3), num_classes=4, lam=8.0, bottleneck=8).eval()
    cls = torch.tensor([9.0, -9.0])
    rows = [[[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]],  # stripe 0 mean (2, 0)
            [[0.0, 4.0], [0.0, 4.0], [0.0, 1.0]]]  # stripe 1 mean (0, 3)
    tokens = torch.cat([cls.view(1, 1, 2), torch.tensor(rows).view(1, 6, 2)], dim=1)
    fused = head.fused_stripes(tokens)[0]
    expected = torch.stack([(cls + 8 * torch.tensor([2.0, 0.0])) / 9, (cls + 8 * torch.tensor([0.0, 3.0])) / 9])
    torch.testing.assert_close(fused, expected)
    feature, logits = head(tokens)
    assert logits is None  # eval mode: no classifier runs
    assert feature.shape == (1, 4)
    torch.testing.assert_close(feature[0, :2], expected[0] / expected[0].norm())
    torch.testing.assert_close(feature[0, 2:], expected[1] / expected[1].norm())


def test_training_mode_gives_one_logit_vector_per_stripe():
    head = LAHead(embed_dim=8, grid=(4, 2), num_classes=6, bottleneck=16).train()
    feature, logits = head(torch.randn(5, 9, 8))
    assert feature.shape == (5, 32) and len(logits) == 4
    assert all(lg.shape == (5, 6) for lg in logits)
    # each stripe of the feature is unit-norm on its own
    torch.testing.assert_close(feature.view(5, 4, 8).norm(dim=2), torch.ones(5, 4))


def test_wrong_token_count_is_a_clear_error():
    head = LAHead(embed_dim=8, grid=(4, 2), num_classes=6)
    with pytest.raises(ValueError, match="expects tokens of shape"):
        head(torch.randn(2, 7, 8))


def test_model_with_la_head_trains_on_the_summed_stripe_loss():
    from edgereid.train.engine import TrainConfig, build_optimizer, compute_loss

    torch.manual_seed(0)
    model = build_model(la_cfg()).train()
    assert model.cfg.feature_dim == 48 * 4
    x = torch.randn(8, 3, 64, 32)
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    cfg = TrainConfig(lr=1e-3, optimizer="adam", weight_decay=0.0)
    out = model(x)
    assert len(out["stripe_logits"]) == 4
    loss, parts = compute_loss(model, out, pids, cfg)
    manual = sum(torch.nn.functional.cross_entropy(lg, pids) for lg in out["stripe_logits"])
    assert parts["id"] == pytest.approx(float(manual.detach()), rel=1e-5)
    opt = build_optimizer(model, cfg)
    first = float(loss.detach())
    for _ in range(15):
        loss, _ = compute_loss(model, model(x), pids, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first
    model.eval()
    emb = model(x)
    assert emb.shape == (8, 48 * 4)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(8))


def test_la_head_model_exports_to_static_opset17_onnx(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from edgereid.export.onnx_export import DeployableReID  # the eval forward with an export-safe L2 norm

    model = build_model(la_cfg()).eval()
    path = tmp_path / "la.onnx"
    torch.onnx.export(DeployableReID(model).eval(), (torch.randn(1, 3, 64, 32),), str(path), dynamo=True, opset_version=17)
    m = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [17]
    for v in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input):
        dims = v.type.tensor_type.shape.dim
        assert all(d.HasField("dim_value") for d in dims), f"{v.name} has a dynamic dim"
    out = m.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in out] == [1, 48 * 4]
    ort = pytest.importorskip("onnxruntime")
    x = torch.randn(1, 3, 64, 32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x), atol=1e-4, rtol=1e-4)
