"""The runtime as a library: its public names, the Matcher, and docs/python.md's example run as written."""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import edgereid.runtime as rt
import numpy as np
import pytest
from edgereid.runtime import (
    Embedder,
    GalleryStore,
    MatchConfig,
    Matcher,
    enroll_images,
    labelled_images,
)
from market_tree import write_market_tree
from tiny_bundle import write_tiny_bundle

REPO = Path(__file__).resolve().parents[1]


def test_every_public_name_resolves_and_all_is_the_table():
    assert sorted(rt.__all__) == sorted(rt._EXPORTS) and len(set(rt.__all__)) == len(rt.__all__)
    # a public name that is also a submodule's name would become the module once that module is imported
    modules = {m.name for m in pkgutil.iter_modules(rt.__path__)}
    assert not modules & set(rt.__all__), modules & set(rt.__all__)
    for module in sorted(set(rt._EXPORTS.values())):
        importlib.import_module(f"edgereid.runtime.{module}")  # as the CLI and other modules do
    for name in rt.__all__:
        value = getattr(rt, name)
        assert getattr(value, "__name__", name) == name or name == "BACKENDS", name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rt.nope  # noqa: B018


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("library")
    return {"bundle": write_tiny_bundle(root / "bundle"), "bare": write_tiny_bundle(root / "bare", threshold=None),
            "data": write_market_tree(root / "market", test_ids=4)}


def test_matcher_enrols_unknown_people_and_counts_what_it_answered(world, tmp_path):
    data = world["data"]
    with Embedder(world["bundle"]) as embedder:
        spec = embedder.spec
        images, notes = labelled_images(data / "bounding_box_test")
        assert notes == ["skipped 2 junk/distractor images (pid -1 or 0)"]
        store = GalleryStore.create(tmp_path / "g.bin", dim=spec.dim, bits=spec.bits, scale=spec.scale,
                                    metric=spec.metric)
        with store:
            results = list(enroll_images(embedder, store, images))
            assert [why for _, why in results] == [None] * len(images) and len(store) == len(images)
            assert {e.camera for e in store.entries()} == {1, 2}  # c2, c3 in the names: cameras from 0
            matcher = Matcher(embedder, store, MatchConfig(topk=2, enroll_unknown=True, threshold=0.5))
            stranger = sorted((data / "bounding_box_train").glob("0002_*.jpg"))[:2]
            queries = [*sorted((data / "query").glob("*.jpg")), *stranger, tmp_path / "missing.jpg"]
            out = list(matcher.match_images(queries))
        assert [m.image for m in out] == [str(q) for q in queries]
        for m in out[:4]:
            assert m.decision == "match" and m.identity == int(Path(m.image).name[:4]) and len(m.topk) == 2
        assert out[4].decision == "unknown" and out[4].identity == "unk-000001" and out[4].enrolled
        assert out[5].decision == "match" and out[5].identity == "unk-000001"  # the same person, next image
        assert out[6].error == "no such file" and out[6].to_dict() == {"image": str(queries[6]), "error": "no such file"}
        assert matcher.counts == {"images": 7, "match": 5, "unknown": 1, "undecided": 0, "enrolled": 1, "errors": 1}
        assert out[4].to_dict()["enrolled"] is True and "enrolled" not in out[0].to_dict()
        with GalleryStore.open(tmp_path / "g.bin", "r", spec=spec) as ro:
            with pytest.raises(ValueError, match="opened for appending"):
                Matcher(embedder, ro, MatchConfig(enroll_unknown=True, threshold=0.5))
            codes = embedder.embed_images([str(queries[0])]).codes
            with Embedder(world["bare"]) as bare:  # the same model, no open_set.threshold in its manifest
                with pytest.raises(ValueError, match="needs a threshold"):
                    Matcher(bare, ro, MatchConfig(enroll_unknown=True))
                undecided = Matcher(bare, ro)
                m = undecided.match_codes(codes, ["q0"])[0]
            assert m.decision is None and m.identity == 100 and undecided.counts["undecided"] == 1


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_the_use_it_from_python_page_runs_as_written(world, tmp_path):
    blocks = python_blocks((REPO / "docs" / "python.md").read_text())
    assert len(blocks) == 1
    shutil.copytree(world["bundle"], tmp_path / "bundle")
    shutil.copytree(world["data"] / "bounding_box_test", tmp_path / "gallery")
    shutil.copytree(world["data"] / "query", tmp_path / "query")
    shutil.copy(sorted((world["data"] / "bounding_box_train").glob("0002_*.jpg"))[0], tmp_path / "query")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", blocks[0]], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "enrolled 16 crops of 4 people; 0 unusable"
    answers = {line.split()[0]: line.split()[1:] for line in lines[1:-1]}
    assert answers["0100_c1s1_000000_00.jpg"][:2] == ["match", "100"]
    assert answers["0002_c1s1_000000_00.jpg"][:2] == ["unknown", "unk-000001"]
    assert "'images': 5" in lines[-1] and "'enrolled': 1" in lines[-1]
    with GalleryStore.open(tmp_path / "store.bin") as store:
        assert len(store) == 17 and np.isin("unk-000001", np.asarray(store.identities(), dtype=object))
