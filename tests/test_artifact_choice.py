"""The artifact that runs by default: the fastest here among those the bundle records as accurate enough.

Real bundles (ONNX graphs made with onnx.helper, one of them made slow on purpose with a heavy side
branch, and the tiny bundle's OpenVINO IR), real timing runs, real cache files, the CLI as a
subprocess. No assertion on a duration: the slow artifact is tens of times slower, so which one
wins is not a matter of noise, and everything else is asserted through the reports and the cache.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from edgereid.runtime.artifact_choice import (
    CACHE_SUBDIR,
    CHOICE_ENV,
    ChoiceConfig,
    choose_artifact,
    eligible_candidates,
)
from edgereid.runtime.bundle import BundleError, load_bundle
from edgereid.runtime.cpu_features import FEATURES, FEATURES_ENV
from edgereid.runtime.embedder import Embedder, EmbedderConfig
from market_tree import write_market_tree
from tiny_bundle import write_multi_bundle

SCRIPT = Path(sys.executable).with_name("reid-runtime")
FAST = ChoiceConfig(seconds=0.5)  # the tiny graphs take microseconds: a short budget is plenty


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch) -> Path:
    """Every test gets its own user cache folder and the default choice mode."""
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv(CHOICE_ENV, raising=False)
    monkeypatch.delenv(FEATURES_ENV, raising=False)
    return cache


def fast_and_slow(root: Path, accuracy: dict | None = None, fast_precision: str = "fp32") -> Path:
    """The slow artifact is the manifest's default: picking the fast one is a real decision."""
    return write_multi_bundle(root, [("onnx-slow", "fp32", 40), ("onnx-fast", fast_precision, 0)],
                              default="onnx-slow", accuracy=accuracy)


def cache_files(bundle: Path) -> list[Path]:
    return sorted((bundle / CACHE_SUBDIR).glob("artifact-choice-*.json"))


def accuracy(fast_map: float | None, budget: float | None = None) -> dict:
    out: dict = {"torch-fp32": {"rank1": 0.9, "mAP": 0.700}}
    if fast_map is not None:
        out["onnx-fast"] = {"rank1": 0.9, "mAP": fast_map}
        if budget is not None:
            out["onnx-fast"]["max_map_drop_points"] = budget
    return out


def run(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "edgereid.runtime.cli"]
    full_env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    full_env.pop("EDGEREID_DEBUG", None)
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=180, env=full_env)


def artifact_line(stderr: str) -> str:
    found = [ln for ln in stderr.splitlines() if ln.startswith("reid-runtime: artifact: ")]
    assert len(found) == 1, stderr
    return found[0]


# ---------------------------------------------------------------------------------------------
# the library
# ---------------------------------------------------------------------------------------------


def test_the_faster_artifact_is_picked_measured_and_cached(tmp_path: Path):
    bundle = load_bundle(fast_and_slow(tmp_path / "b"))
    choice = choose_artifact(bundle, config=FAST, batch_size=4)
    assert choice.how == "measured" and choice.artifact == "onnx-fast"
    assert choice.verdict == "fastest here of 2 within tolerance"
    timed = {c.name: c for c in choice.candidates}
    assert all(c.eligible and c.b1_ms > 0 and c.bn_ms > 0 and c.score_ms > 0 for c in timed.values())
    assert choice.batch_size == 4 and choice.cpu["arch"] and set(choice.cpu["features"]) == set(FEATURES)
    [path] = cache_files(bundle.root)
    assert choice.cache_path == str(path) and f"cached in {path}" in choice.line()
    record = json.loads(path.read_text())
    assert record["artifact"] == "onnx-fast" and record["key"]["cpu"] and record["key"]["manifest_sha256"]
    assert record["key"]["libraries"]["onnxruntime"]  # keyed by the backend libraries' versions too

    # the Embedder runs what the choice picked, and its embeddings are the bundle's (same codec)
    with Embedder(bundle, EmbedderConfig(batch_size=4, choice_config=FAST)) as emb:
        assert emb.choice.how == "cached" and emb.backend.artifact.name == "onnx-fast"
        x = np.random.default_rng(0).standard_normal((3, 3, 32, 16)).astype(np.float32)
        codes = emb.encode(emb.embed_array(x))
    with Embedder(bundle, EmbedderConfig(artifact="onnx-slow")) as slow:
        assert np.array_equal(slow.encode(slow.embed_array(x)), codes)


def test_the_cached_decision_is_reused_without_measuring(tmp_path: Path):
    bundle = load_bundle(fast_and_slow(tmp_path / "b"))
    first = choose_artifact(bundle, config=FAST, batch_size=2)
    [path] = cache_files(bundle.root)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    # another batch size, the same device: the same answer from the cache (enrol and query agree)
    again = choose_artifact(load_bundle(bundle.root), config=FAST, batch_size=16)
    assert first.how == "measured" and again.how == "cached" and again.artifact == first.artifact
    assert again.cache_path == str(path) and again.measured_utc == first.measured_utc
    assert again.batch_size == 2  # the batch size it was measured at, from the file
    assert [c.score_ms for c in again.candidates] == [c.score_ms for c in first.candidates]
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before  # nothing re-measured, nothing rewritten
    # 'measure' times again and replaces the file; 'manifest' measures nothing
    remeasured = choose_artifact(bundle, mode="measure", config=FAST, batch_size=2)
    assert remeasured.how == "measured" and json.loads(path.read_text())["artifact"] == remeasured.artifact
    manifest = choose_artifact(bundle, mode="manifest", config=FAST)
    assert manifest.how == "manifest" and manifest.artifact == "onnx-slow" and not manifest.candidates


def test_the_cache_is_keyed_by_cpu_features(tmp_path: Path, monkeypatch):
    bundle = load_bundle(fast_and_slow(tmp_path / "b"))
    here = choose_artifact(bundle, config=FAST, batch_size=2)
    monkeypatch.setenv(FEATURES_ENV, "avx2")  # as if on an AVX2-only machine: another key, measured again
    other = choose_artifact(bundle, config=FAST, batch_size=2)
    assert here.how == other.how == "measured" and here.cache_path != other.cache_path
    assert other.cpu["features"] == {name: name == "avx2" for name in FEATURES}
    assert other.cpu["features_overridden"] is True
    assert len(cache_files(bundle.root)) == 2
    assert choose_artifact(bundle, config=FAST).how == "cached"  # each CPU finds its own entry
    monkeypatch.delenv(FEATURES_ENV)
    assert choose_artifact(bundle, config=FAST).cache_path == here.cache_path


def test_settings_that_change_speed_or_eligibility_are_part_of_the_key(tmp_path: Path):
    bundle = load_bundle(fast_and_slow(tmp_path / "b"))
    a = choose_artifact(bundle, config=FAST)
    b = choose_artifact(bundle, config=FAST, threads=1)
    c = choose_artifact(bundle, config=ChoiceConfig(seconds=0.5, max_map_drop=2.0))
    assert a.how == b.how == c.how == "measured" and len({a.cache_path, b.cache_path, c.cache_path}) == 3


def test_an_artifact_out_of_tolerance_is_never_picked(tmp_path: Path):
    # the fast int8 artifact loses 2 mAP points (tolerance 0.5): never a candidate, even though fastest
    bundle = load_bundle(fast_and_slow(tmp_path / "out", accuracy(0.680), fast_precision="int8"))
    choice = choose_artifact(bundle, config=FAST)
    fast = next(c for c in choice.candidates if c.name == "onnx-fast")
    assert choice.artifact == "onnx-slow" and choice.how == "single"
    assert not fast.eligible and "out of tolerance" in fast.why and "+2.00 points below torch-fp32" in fast.why
    assert fast.score_ms is None  # not even timed
    assert "onnx-fast (out of tolerance" in choice.line()
    # within tolerance it competes and wins
    inside = load_bundle(fast_and_slow(tmp_path / "in", accuracy(0.697), fast_precision="int8"))
    assert choose_artifact(inside, config=FAST).artifact == "onnx-fast"
    # the tolerance: the caller's, else the budget the exporter recorded for the artifact, else 0.5
    assert choose_artifact(bundle, config=ChoiceConfig(seconds=0.5, max_map_drop=3.0)).artifact == "onnx-fast"
    recorded = load_bundle(fast_and_slow(tmp_path / "budget", accuracy(0.680, budget=2.5), fast_precision="int8"))
    assert choose_artifact(recorded, config=FAST).artifact == "onnx-fast"


def test_artifacts_without_recorded_accuracy(tmp_path: Path):
    # an int8 artifact nobody evaluated runs only by name; a float32 one is the reference's own graph
    bundle = load_bundle(fast_and_slow(tmp_path / "b", accuracy(None), fast_precision="int8"))
    verdict = {c.name: c for c in eligible_candidates(bundle)}
    assert verdict["onnx-slow"].eligible and "float32" in verdict["onnx-slow"].why
    assert not verdict["onnx-fast"].eligible and "no accuracy recorded" in verdict["onnx-fast"].why
    # ... unless it is the manifest's default (whoever made it the default vouched for it)
    default_int8 = load_bundle(write_multi_bundle(tmp_path / "d", [("onnx-slow", "fp32", 40), ("onnx-fast", "int8", 0)],
                                                  default="onnx-fast"))
    assert {c.name: c.eligible for c in eligible_candidates(default_int8)} == {"onnx-slow": True, "onnx-fast": True}
    # a malformed accuracy section is read as "not recorded", never a crash
    odd = load_bundle(fast_and_slow(tmp_path / "odd", {"torch-fp32": {"mAP": "high"}, "onnx-fast": [1]},
                                    fast_precision="int8"))
    assert {c.name: c.eligible for c in eligible_candidates(odd)} == {"onnx-slow": True, "onnx-fast": False}


def test_explicit_artifact_backend_or_precision_wins(tmp_path: Path):
    bundle = load_bundle(fast_and_slow(tmp_path / "b", accuracy(0.700), fast_precision="int8"))
    for cfg, want in ((EmbedderConfig(artifact="onnx-slow"), "onnx-slow"),
                      (EmbedderConfig(precision="int8"), "onnx-fast"),
                      (EmbedderConfig(backend="onnxruntime"), "onnx-slow")):  # the default's precision
        with Embedder(bundle, cfg) as emb:
            assert emb.backend.artifact.name == want and emb.choice.how == "explicit"
            assert emb.choice.line().startswith(f"artifact: {want} (asked for explicitly: ")
    assert cache_files(bundle.root) == []  # nothing was measured


def test_a_corrupt_or_foreign_cache_file_is_ignored_with_a_note(tmp_path: Path):
    bundle = load_bundle(fast_and_slow(tmp_path / "b"))
    first = choose_artifact(bundle, config=FAST)
    path = Path(first.cache_path)
    for damage, note in ((b"{\"format\": \"edgereid-artifact-choice\", \"vers", "unreadable"),
                         (b"\xff\xfe not text", "unreadable"),
                         (b"[1, 2, 3]", "not an edgereid-artifact-choice file"),
                         (json.dumps({**json.loads(path.read_text()), "artifact": "nope"}).encode(),
                          "'nope' is not a candidate here"),
                         (json.dumps({**json.loads(path.read_text()), "key": {"cpu": "elsewhere"}}).encode(),
                          "its key")):
        good = path.read_text()
        path.write_bytes(damage)
        choice = choose_artifact(bundle, config=FAST)
        assert choice.how == "measured" and choice.artifact == "onnx-fast"
        assert any(note in n and str(path) in n for n in choice.notes), choice.notes
        assert json.loads(path.read_text())["artifact"] == "onnx-fast"  # replaced by a sound file
        assert good  # (the previous good content is simply superseded)


def test_a_read_only_bundle_folder_caches_in_the_user_cache(tmp_path: Path, _private_cache: Path):
    root = fast_and_slow(tmp_path / "b")
    # The bundle folder cannot take the cache: its cache subfolder is blocked by a file (this holds
    # even for root, who ignores permission bits), and the folder is made read-only as well.
    (root / CACHE_SUBDIR).write_text("not a folder")
    os.chmod(root, stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    try:
        bundle = load_bundle(root)
        choice = choose_artifact(bundle, config=FAST)
        assert choice.how == "measured" and choice.artifact == "onnx-fast"
        assert Path(choice.cache_path).parent == _private_cache / "edgereid"
        assert any(f"cannot write to {root / CACHE_SUBDIR}" in n and "caching in" in n for n in choice.notes)
        again = choose_artifact(load_bundle(root), config=FAST)
        assert again.how == "cached" and again.cache_path == choice.cache_path
    finally:
        os.chmod(root, stat.S_IRWXU)
    # with no writable folder at all, the choice is made and said to be uncached, never an error
    nowhere = fast_and_slow(tmp_path / "n")
    (nowhere / CACHE_SUBDIR).write_text("blocked")
    blocked_user = tmp_path / "user-file"
    blocked_user.write_text("blocked")
    lonely = choose_artifact(load_bundle(nowhere), config=ChoiceConfig(seconds=0.5, cache_dir=str(blocked_user)))
    assert lonely.how == "measured" and lonely.cache_path is None and "not cached" in lonely.reason


def test_a_damaged_candidate_is_refused_not_skipped(tmp_path: Path):
    root = fast_and_slow(tmp_path / "b")
    data = bytearray((root / "onnx-fast.onnx").read_bytes())
    data[-10] ^= 0xFF
    (root / "onnx-fast.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="onnx-fast.onnx.*sha256"):
        choose_artifact(load_bundle(root), config=FAST)
    assert cache_files(root) == []


def test_an_artifact_that_cannot_run_here_is_left_out_and_remembered(tmp_path: Path):
    """An artifact the backend refuses on this device (here: an operator onnxruntime does not have)."""
    import onnx
    from edgereid.runtime.bundle import BundleWriter
    from onnx import helper

    root = fast_and_slow(tmp_path / "b")
    model = onnx.load(str(root / "onnx-fast.onnx"))
    last = model.graph.node[-1]
    last.output[0] = "pre"
    model.graph.node.append(helper.make_node("NoSuchOp", ["pre"], ["embedding"], domain="edgereid.test"))
    model.opset_import.append(helper.make_opsetid("edgereid.test", 1))
    onnx.save(model, str(root / "exotic.onnx"))
    writer = BundleWriter.from_bundle(root)
    writer.add_artifact("onnx-exotic", "onnxruntime", "fp32", {"model": "exotic.onnx"})
    writer.write()
    choice = choose_artifact(load_bundle(root), config=FAST)
    exotic = next(c for c in choice.candidates if c.name == "onnx-exotic")
    assert choice.how == "measured" and choice.artifact == "onnx-fast"
    assert not exotic.eligible and exotic.why.startswith("cannot run here: ") and exotic.score_ms is None
    assert "onnx-exotic (cannot run here: " in choice.line()
    again = choose_artifact(load_bundle(root), config=FAST)  # from the cache: not opened again
    assert again.how == "cached" and not next(c for c in again.candidates if c.name == "onnx-exotic").eligible


def test_openvino_and_onnxruntime_artifacts_compete(tiny_bundle: Path):
    """The tiny bundle's two float artifacts, on two libraries: both timed, one picked, either is valid."""
    choice = choose_artifact(load_bundle(tiny_bundle), config=FAST, batch_size=4)
    assert choice.how in ("measured", "cached") and choice.artifact in ("onnx-fp32", "openvino-fp32")
    assert {c.name for c in choice.candidates if c.score_ms} == {"onnx-fp32", "openvino-fp32"}


def test_a_bad_mode_is_refused(tmp_path: Path, monkeypatch):
    bundle = load_bundle(fast_and_slow(tmp_path / "b"))
    with pytest.raises(ValueError, match="artifact choice: expected one of auto, measure, manifest, got 'fastest'"):
        choose_artifact(bundle, mode="fastest")
    monkeypatch.setenv(CHOICE_ENV, "sometimes")
    with pytest.raises(ValueError, match=f"{CHOICE_ENV}: expected one of auto, measure, manifest, got 'sometimes'"):
        choose_artifact(bundle)


# ---------------------------------------------------------------------------------------------
# the CLI
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return write_market_tree(tmp_path_factory.mktemp("market") / "market")


def test_cli_enrol_measures_once_and_query_reuses_it(tmp_path: Path, market: Path, _private_cache: Path):
    bundle = fast_and_slow(tmp_path / "b")
    env = {"XDG_CACHE_HOME": str(_private_cache)}
    gallery = tmp_path / "g.bin"
    proc = run("enroll", "--bundle", bundle, "--gallery", gallery, "--create", market / "bounding_box_test", env=env)
    assert proc.returncode == 0, proc.stderr
    line = artifact_line(proc.stderr)
    [path] = cache_files(bundle)
    assert line.startswith("reid-runtime: artifact: onnx-fast (fastest here of 2 within tolerance: onnx-fast ")
    assert f"measured now, cached in {path}" in line
    proc = run("query", "--bundle", bundle, "--gallery", gallery, "--batch-size", "1",
               *sorted((market / "query").glob("*.jpg"))[:2], env=env)
    assert proc.returncode == 0, proc.stderr
    line = artifact_line(proc.stderr)
    assert line.startswith("reid-runtime: artifact: onnx-fast (fastest here of 2 within tolerance (measured ")
    assert "measured now" not in line and line.endswith(f"cached in {path})")
    # info reports the cached choice, the CPU and the search kernels, and times nothing
    proc = run("info", "--bundle", bundle, env=env)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["artifact_choice"]["artifact"] == "onnx-fast" and info["artifact_choice"]["how"] == "cached"
    assert info["artifact_choice"]["cache_path"] == str(path)
    assert set(info["cpu"]["features"]) == {"avx2", "avx512bw", "vnni", "neon_dot"}
    assert info["cpu"]["arch"] and "summary" in info["cpu"] and "model" in info["cpu"]
    assert info["search_kernel"]["single_query_int8"].startswith(("compiled scan (", "onnxruntime MatMulInteger"))
    # explicit flags win, and say so
    proc = run("query", "--bundle", bundle, "--gallery", gallery, "--artifact", "onnx-slow",
               sorted((market / "query").glob("*.jpg"))[0], env=env)
    assert proc.returncode == 0, proc.stderr
    assert artifact_line(proc.stderr) == ("reid-runtime: artifact: onnx-slow (asked for explicitly: "
                                          "artifact=onnx-slow)")


def test_cli_choice_flags_and_environment(tmp_path: Path, market: Path, _private_cache: Path):
    bundle = fast_and_slow(tmp_path / "b")
    env = {"XDG_CACHE_HOME": str(_private_cache)}
    # manifest mode (flag or environment): the default runs, nothing is timed or cached
    for extra, more_env in ((["--artifact-choice", "manifest"], {}), ([], {CHOICE_ENV: "manifest"})):
        proc = run("eval", "--bundle", bundle, "--data", market, *extra, env={**env, **more_env})
        assert proc.returncode == 0, proc.stderr
        assert artifact_line(proc.stderr) == ("reid-runtime: artifact: onnx-slow (the manifest's default; "
                                              "automatic choice off (manifest))")
    assert cache_files(bundle) == []
    # info before anything was measured: pending, with the candidates; `--artifact-choice measure` times them
    info = json.loads(run("info", "--bundle", bundle, env=env).stdout)
    assert info["artifact_choice"]["how"] == "pending" and info["artifact_choice"]["artifact"] is None
    assert "not measured on this CPU yet: 2 candidates" in info["artifact_choice"]["reason"]
    proc = run("info", "--bundle", bundle, "--artifact-choice", "measure", env=env)
    info = json.loads(proc.stdout)
    assert info["artifact_choice"]["how"] == "measured" and info["artifact_choice"]["artifact"] == "onnx-fast"
    assert "measured now, cached in" in artifact_line(proc.stderr)
    # a bad environment value is a clear error, not a traceback
    proc = run("eval", "--bundle", bundle, "--data", market, env={**env, CHOICE_ENV: "always"})
    assert proc.returncode == 2 and f"{CHOICE_ENV}: expected one of auto, measure, manifest" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "--artifact-choice {auto,measure,manifest}" in run("--help").stdout


def test_cli_two_processes_starting_together_agree(tmp_path: Path, market: Path, _private_cache: Path):
    """Enrolments started at once still run one artifact: the others wait for the first one's answer."""
    bundle = fast_and_slow(tmp_path / "b")
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "edgereid.runtime.cli"]
    env = dict(os.environ, OMP_NUM_THREADS="1", XDG_CACHE_HOME=str(_private_cache))
    procs = [subprocess.Popen(cmd + ["enroll", "--bundle", str(bundle), "--gallery", str(tmp_path / f"g{i}.bin"),
                                     "--create", str(market / "bounding_box_test")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outs]
    lines = [artifact_line(err) for _, err in outs]
    assert all(ln.startswith("reid-runtime: artifact: onnx-fast (") for ln in lines), lines
    assert sum("measured now" in ln for ln in lines) == 1, lines  # one measured, the others read its answer
    assert len(cache_files(bundle)) == 1


def test_cli_bench_reports_cpu_kernel_and_choice(tmp_path: Path, _private_cache: Path):
    bundle = fast_and_slow(tmp_path / "b")
    out = tmp_path / "bench"
    proc = run("bench", "--bundle", bundle, "--iterations", "3", "--warmup", "1", "--batch", "2",
               "--gallery-size", "500", "--query-batch", "4", "--out-dir", out,
               env={"XDG_CACHE_HOME": str(_private_cache), FEATURES_ENV: "avx2,vnni"})
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((out / "bench.json").read_text())
    assert rep["backend"]["artifact"] == "onnx-fast" == rep["artifact_choice"]["artifact"]
    assert rep["artifact_choice"]["how"] == "measured"
    assert rep["cpu"]["features"] == {"avx2": True, "avx512bw": False, "vnni": True, "neon_dot": False}
    assert rep["cpu"]["features_overridden"] is True and rep["cpu"]["arch"]
    assert set(rep["search_kernel"]) == {"single_query_int8", "batch"}
    md = (out / "bench.md").read_text()
    assert "- cpu: " in md and "avx2, vnni [overridden]" in md
    assert "- artifact: onnx-fast (fastest here of 2 within tolerance" in md and "- search kernels: single query int8: " in md
