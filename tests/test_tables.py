"""One table per extension axis, and every entry of every table checked: a new entry gets these tests.

Backends and bundle targets (``runtime.tables``), export steps per target (``export.targets``),
compression methods (``train.compress.methods``), pruning modes and stages (``train.prune.modes``),
data sets (``data`` registry): the lists the CLIs, the manifest reader and the docs show come from
the tables, and each entry really runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from edgereid.data import build_dataset, list_datasets
from edgereid.export.targets import EXPORT_TARGETS
from edgereid.runtime.backends import backend_class, library_version, open_backend
from edgereid.runtime.bundle import BundleError, load_bundle
from edgereid.runtime.cli import build_parsers
from edgereid.runtime.tables import BACKENDS, TARGETS
from edgereid.train.checkpoint import load_model, save_checkpoint
from edgereid.train.compress.methods import METHODS, SWEEP_METHODS, CompressConfig, compress
from edgereid.train.config import BackboneConfig, ModelConfig
from edgereid.train.engine import TrainConfig, fit
from edgereid.train.models import build_model
from edgereid.train.prune.modes import MODES, STAGES, TOKEN_FORMS
from edgereid.train.prune.schedule import PruneConfig, run_pruning
from market_tree import write_market_tree
from tiny_bundle import write_tiny_bundle

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = (REPO / "docs" / "architecture.md").read_text()


def choices(parser, dest: str) -> list:
    return next(a.choices for a in parser._actions if a.dest == dest)


def edgereid_parser():
    from edgereid.cli import build_parser

    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices


# ---------------------------------------------------------------------------------------------
# the lists everyone shows are the tables


def test_cli_choices_and_docs_come_from_the_tables():
    rt = build_parsers()
    assert choices(rt["match"], "backend") == list(BACKENDS)
    sub = edgereid_parser()
    assert choices(sub["export"], "target") == list(TARGETS)
    assert choices(sub["compress"], "method") == list(METHODS)
    assert choices(sub["sweep"], "methods") == list(SWEEP_METHODS) == [n for n, m in METHODS.items() if not m.is_control]
    assert choices(sub["prune"], "mode") == list(MODES) and choices(sub["prune"], "token_form") == list(TOKEN_FORMS)
    for name in list_datasets():
        assert name in next(a.help for a in sub["train"]._actions if a.dest == "dataset")
    # the architecture page names every entry of every table
    for table in (BACKENDS, TARGETS, METHODS, MODES, STAGES, list_datasets()):
        for name in table:
            assert f"`{name}`" in ARCHITECTURE, name


# ---------------------------------------------------------------------------------------------
# backends


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_backend_entry_names_its_class_library_and_files(name, tmp_path):
    info = BACKENDS[name]
    assert backend_class(name).name == name  # the class the table points at runs this backend
    installed = library_version(name)
    assert installed is None or isinstance(installed, str)
    assert info.install and info.files and info.formats
    # the manifest reader refuses an artifact of this backend without the files it needs
    bundle = write_tiny_bundle(tmp_path / "b")
    manifest = json.loads((bundle / "manifest.json").read_text())
    art = dict(manifest["artifacts"][0], name="other", backend=name)
    art["files"] = {"weights": art["files"]["model"]}
    manifest["artifacts"].append(art)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=rf"artifacts\[1\]\.files: expected the file roles a {name} artifact needs"):
        load_bundle(bundle)


# ---------------------------------------------------------------------------------------------
# export targets: each one builds a bundle the runtime loads, verifies and runs


@pytest.fixture(scope="module")
def micro_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=BackboneConfig.for_size("vit_micro", img_size=(32, 16)), num_classes=4)
    return save_checkpoint(build_model(cfg).eval(), tmp_path_factory.mktemp("micro") / "ckpt")


def test_export_and_runtime_tables_name_the_same_targets():
    assert list(EXPORT_TARGETS) == list(TARGETS)
    for target in EXPORT_TARGETS.values():
        assert all(isinstance(s, str) and s for s in target.steps) and callable(target.add)


@pytest.mark.parametrize("name", list(EXPORT_TARGETS))
def test_every_export_target_builds_a_bundle_the_runtime_runs(name, micro_ckpt, tmp_path):
    from edgereid.export.bundle import ExportOptions, export_bundle

    opts = ExportOptions(target=name, parity_images=2)
    try:
        opts.validate()
    except ValueError as exc:  # a target whose build library is missing here says so, before any work
        pytest.skip(str(exc))
    out = export_bundle(micro_ckpt, tmp_path / name, opts)
    bundle = load_bundle(out)
    assert bundle.target == name and bundle.verify_all()
    assert {a.backend for a in bundle.artifacts.values()} <= set(BACKENDS)
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 16)).astype(np.float32)
    ref = open_backend(bundle, artifact="onnx-fp32").embed(x)
    for art in bundle.artifacts.values():
        if library_version(art.backend) is None or art.backend == "tensorrt":  # engines need a GPU to run
            continue
        assert np.abs(open_backend(bundle, artifact=art.name).embed(x) - ref).max() < 1e-4, art.name


# ---------------------------------------------------------------------------------------------
# compression methods and pruning modes: each one trains (or prunes) a real model


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    data = write_market_tree(root / "market")
    ds = build_dataset("market1501", data)
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=BackboneConfig.for_size("vit_micro", img_size=(64, 32)), num_classes=ds.num_train_pids)
    fit(build_model(cfg), ds, TrainConfig(epochs=1, batch_size=16, workers=0, max_steps_per_epoch=1, eval_every=0),
        root / "dense")
    return ds, root / "dense"


@pytest.mark.parametrize("name", list(METHODS))
def test_every_compression_method_trains_an_embedding_of_the_asked_size(name, market, tmp_path):
    ds, dense = market
    cfg = CompressConfig(method=name, dim=12, bits=8, init_from=str(dense), model="vit_micro", img_size=(64, 32))
    tcfg = TrainConfig(epochs=1, batch_size=16, workers=0, max_steps_per_epoch=1, eval_every=0)
    rec = compress(cfg, ds, tcfg, tmp_path / name)
    model = load_model(tmp_path / name)
    # the control compresses nothing: it keeps the dense model's full embedding (and ignores dim)
    want = model.cfg.feature_dim if METHODS[name].is_control else 12
    assert rec["method"] == name and rec["dim"] == want and model.cfg.embed_dim == want and model.cfg.embedding.bits == 8
    assert rec["quant"] == "ptq" and model.quant.has_scale and 0 <= rec["mAP"] <= 1
    with pytest.raises(ValueError, match="--init-from") if METHODS[name].needs_dense else _nothing():
        CompressConfig(method=name, dim=12).validate()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_every_stage_is_reached_by_some_mode():
    reached = set()
    for mode in MODES:
        for form in TOKEN_FORMS:
            reached |= {kind for kind, _ in PruneConfig(mode=mode, token_form=form).stages()}
    assert reached == set(STAGES)


@pytest.mark.parametrize("mode", list(MODES))
def test_every_pruning_mode_removes_what_its_stages_say(mode, market, tmp_path):
    ds, dense = market
    model = load_model(dense)
    pcfg = PruneConfig(mode=mode, rate=0.4, token_form="drop", final_epochs=0, stats_batches=1, eval_rounds=False,
                       drop_layers=[1])
    summary = run_pruning(model, ds, pcfg, TrainConfig(batch_size=16, workers=0), tmp_path / mode, log=lambda s: None)
    before, after = summary["dense"], summary["pruned"]
    shrinks = {"heads": "heads_per_layer", "kv": "keys_per_layer", "drop": "tokens_out_per_layer"}
    for kind, _rate in pcfg.stages():
        assert sum(after[shrinks[kind]]) < sum(before[shrinks[kind]]), (mode, kind)
    rebuilt = load_model(tmp_path / mode)  # the checkpoint's config rebuilds the pruned structure
    assert [b.attn.num_heads for b in rebuilt.backbone.blocks] == after["heads_per_layer"]


# ---------------------------------------------------------------------------------------------
# data sets: every registered loader has a layout the tests write and read


def test_every_registered_data_set_is_read_by_the_data_set_tests():
    text = (REPO / "tests" / "test_datasets.py").read_text()
    tested = set(re.findall(r'build_dataset\("(\w+)"', text)) | set(re.findall(r'\("(\w+)", "[\w-]+"\)', text))
    assert set(list_datasets()) <= tested, sorted(set(list_datasets()) - tested)
