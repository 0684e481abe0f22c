"""``reid-runtime`` end to end, as real subprocesses on real files (tiny bundle, Market-named JPEGs)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from edgereid.runtime.cli import build_parsers
from market_tree import write_market_tree
from tiny_bundle import write_tiny_bundle

SCRIPT = Path(sys.executable).with_name("reid-runtime")


def run(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "edgereid.runtime.cli"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("EDGEREID_DEBUG", None)
    return subprocess.run(cmd + [str(a) for a in args], input=stdin, capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd)


def lines(proc: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]


def pid_of(path: str) -> int:
    return int(Path(path).name.split("_")[0])


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A bundle, a Market tree, and a gallery enrolled from bounding_box_test (shared, read-only)."""
    root = tmp_path_factory.mktemp("cli")
    bundle = write_tiny_bundle(root / "bundle")
    data = write_market_tree(root / "market")
    gallery = root / "gallery.bin"
    proc = run("enroll", "--bundle", bundle, "--gallery", gallery, "--create", data / "bounding_box_test")
    assert proc.returncode == 0, proc.stderr
    summary = lines(proc)[-1]
    assert summary["enrolled"] == 24 and summary["identities_enrolled"] == 6  # 6 ids x 2 cams x 2; junk skipped
    assert summary["notes"] == ["skipped 2 junk/distractor images (pid -1 or 0)"]
    assert f"into {gallery}" in proc.stderr  # says where it wrote
    return {"root": root, "bundle": bundle, "data": data, "gallery": gallery}


@pytest.fixture
def gallery(world, tmp_path: Path) -> Path:
    """A private copy of the enrolled gallery."""
    dst = tmp_path / "g.bin"
    shutil.copy(world["gallery"], dst)
    return dst


def test_query_finds_every_identity(world):
    queries = sorted((world["data"] / "query").glob("*.jpg"))
    proc = run("query", "--bundle", world["bundle"], "--gallery", world["gallery"], "--topk", "3", *queries)
    assert proc.returncode == 0, proc.stderr
    out = lines(proc)
    assert [o["image"] for o in out] == [str(q) for q in queries]
    for o in out:
        assert o["decision"] == "match" and o["identity"] == pid_of(o["image"])
        assert len(o["topk"]) == 3 and o["topk"][0]["distance"] == o["distance"]
        assert all(t["distance"] >= o["distance"] for t in o["topk"])
    assert "results written to stdout" in proc.stderr


def test_query_accepts_a_folder_and_per_identity(world):
    proc = run("query", "--bundle", world["bundle"], "--gallery", world["gallery"], "--per-identity",
               "--topk", "6", world["data"] / "query")
    assert proc.returncode == 0, proc.stderr
    out = lines(proc)
    assert len(out) == 6
    for o in out:
        ids = [t["identity"] for t in o["topk"]]
        assert len(ids) == len(set(ids)) == 6  # every identity once
        assert ids[0] == pid_of(o["image"])


def test_main_loop_over_stdin_survives_bad_images(world, gallery: Path, tmp_path: Path):
    q = sorted((world["data"] / "query").glob("*.jpg"))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(q[0].read_bytes()[:200])  # truncated JPEG
    notimage = tmp_path / "notes.jpg"
    notimage.write_text("hello")
    gray = tmp_path / "0103_gray.png"
    from PIL import Image

    Image.open(q[3]).convert("L").save(gray)
    rgba = tmp_path / "0104_rgba.png"
    Image.open(q[4]).convert("RGBA").save(rgba)
    paths = [q[0], corrupt, q[1], notimage, tmp_path / "missing.jpg", gray, rgba, q[5]]
    proc = run("--bundle", world["bundle"], "--gallery", gallery, "--batch-size", "3", "-",
               stdin="\n".join(map(str, paths)) + "\n\n")
    assert proc.returncode == 1, proc.stderr  # finished, but some images failed
    out = lines(proc)
    assert [o["image"] for o in out] == [str(p) for p in paths]  # one line per image, in order
    assert "truncated" in out[1]["error"]
    assert "not a readable image" in out[3]["error"]
    assert out[4]["error"] == "no such file"
    for i in (0, 2, 7):
        assert out[i]["decision"] == "match" and out[i]["identity"] == pid_of(out[i]["image"])
    assert out[5]["topk"] and out[6]["identity"] == 104  # RGBA converted and still recognised
    assert "8 images" in proc.stderr and "3 errors" in proc.stderr


def test_enroll_unknown_gives_new_identities_that_match_later(world, gallery: Path):
    train = world["data"] / "bounding_box_train"
    stranger = sorted(train.glob("0002_*.jpg"))  # pid 2 is not in the gallery
    known = sorted((world["data"] / "query").glob("0101_*.jpg"))
    paths = [*stranger[:2], *known, *stranger[2:4]]
    args = ["--bundle", world["bundle"], "--gallery", gallery, "--enroll-unknown", "--threshold", "0.5", "-"]
    proc = run(*args, stdin="\n".join(map(str, paths)))
    assert proc.returncode == 0, proc.stderr
    out = lines(proc)
    assert out[0]["decision"] == "unknown" and out[0]["identity"] == "unk-000001" and out[0]["enrolled"]
    assert out[1]["decision"] == "match" and out[1]["identity"] == "unk-000001"  # same person, next frame
    assert out[2]["identity"] == 101
    assert all(o["identity"] == "unk-000001" for o in out[3:])
    # numbering continues across runs; the store really holds the new identity
    stranger8 = sorted(train.glob("0008_*.jpg"))[0]  # far from pid 2 and from the gallery
    out2 = lines(run(*args, stdin=str(stranger8)))
    assert out2[0]["identity"] == "unk-000002"
    info = json.loads(run("info", "--gallery", gallery, "--max-identities", "0").stdout)
    counts = {d["identity"]: d["entries"] for d in info["gallery"]["identity_counts"]}
    assert counts["unk-000001"] == 1 and counts["unk-000002"] == 1 and info["gallery"]["entries"] == 26


def test_live_stdin_answers_each_image_and_sees_new_enrolments(world, gallery: Path, tmp_path: Path):
    """A camera process feeding paths one at a time gets each answer at once (no waiting for a full
    batch), and a reader stream sees identities another process enrols meanwhile."""
    import selectors

    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "edgereid.runtime.cli"]
    proc = subprocess.Popen(cmd + ["--bundle", str(world["bundle"]), "--gallery", str(gallery), "--batch-size", "16",
                                   "--threshold", "0.5", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)

    def ask(path: Path) -> dict:
        proc.stdin.write(f"{path}\n")
        proc.stdin.flush()
        assert sel.select(timeout=60), "no answer within 60 s: the stream waited for a full batch"
        return json.loads(proc.stdout.readline())

    try:
        first = ask(sorted((world["data"] / "query").glob("0100_*.jpg"))[0])
        assert first["identity"] == 100
        stranger = sorted((world["data"] / "bounding_box_train").glob("0002_*.jpg"))
        assert ask(stranger[0])["decision"] == "unknown"
        folder = tmp_path / "p2"
        folder.mkdir()
        shutil.copy(stranger[1], folder / "a.jpg")
        enrol = run("enroll", "--bundle", world["bundle"], "--gallery", gallery, "--identity", "visitor", folder)
        assert enrol.returncode == 0, enrol.stderr
        assert ask(stranger[2])["identity"] == "visitor"  # the running reader picked up the new record
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr.read()


def test_threshold_rules(world, gallery: Path, tmp_path: Path):
    q = str(sorted((world["data"] / "query").glob("*.jpg"))[0])
    strict = lines(run("--bundle", world["bundle"], "--gallery", gallery, "--threshold", "0.0001", q))[0]
    assert strict["decision"] == "unknown" and strict["identity"] is None and strict["distance"] > 0.0001
    # no threshold anywhere: nearest identity, no decision; --enroll-unknown is then refused
    bare = write_tiny_bundle(tmp_path / "bare", threshold=None)
    proc = run("--bundle", bare, "--gallery", gallery, q)
    assert proc.returncode == 0 and lines(proc)[0]["decision"] is None and lines(proc)[0]["identity"] == 100
    proc = run("--bundle", bare, "--gallery", gallery, "--enroll-unknown", q)
    assert proc.returncode == 2 and "--enroll-unknown needs a threshold" in proc.stderr


def test_missing_gallery_needs_create_and_mismatched_gallery_is_refused(world, tmp_path: Path):
    q = str(sorted((world["data"] / "query").glob("*.jpg"))[0])
    missing = tmp_path / "new.bin"
    proc = run("--bundle", world["bundle"], "--gallery", missing, q)
    assert proc.returncode == 2 and "--create" in proc.stderr and not missing.exists()
    proc = run("--bundle", world["bundle"], "--gallery", missing, "--create", q)
    assert proc.returncode == 0 and missing.exists() and lines(proc)[0]["decision"] == "unknown"
    # a gallery made for another bundle (same shape, another quantisation scale)
    other = write_tiny_bundle(tmp_path / "other", bits=8, scale=0.02)
    proc = run("--bundle", other, "--gallery", world["gallery"], q)
    assert proc.returncode == 2 and "scale" in proc.stderr and "Traceback" not in proc.stderr
    from edgereid.runtime.store import GalleryStore

    GalleryStore.create(tmp_path / "b4.bin", dim=16, bits=4, scale=1 / 7).close()
    proc = run("--bundle", world["bundle"], "--gallery", tmp_path / "b4.bin", q)
    assert proc.returncode == 2 and "bits" in proc.stderr


def test_altered_bundle_is_refused(world, tmp_path: Path):
    bundle = tmp_path / "b"
    shutil.copytree(world["bundle"], bundle)
    model = bundle / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-10] ^= 0xFF
    model.write_bytes(bytes(data))
    q = str(sorted((world["data"] / "query").glob("*.jpg"))[0])
    proc = run("--bundle", bundle, "--gallery", world["gallery"], q)
    assert proc.returncode == 2 and "model.onnx" in proc.stderr and "sha256" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    proc = run("verify", "--bundle", bundle)
    assert proc.returncode == 3 and "model.onnx" in json.loads(proc.stdout)["bundle"]["problem"]


def test_verify_finds_corrupt_records_and_torn_tails(world, gallery: Path):
    assert run("verify", "--gallery", gallery).returncode == 0
    raw = bytearray(gallery.read_bytes())
    raw[100] ^= 0xFF  # inside the first record (enrolment wrote two records: 16 + 8 entries)
    broken = gallery.with_name("broken.bin")
    broken.write_bytes(bytes(raw))
    proc = run("verify", "--gallery", broken)
    assert proc.returncode == 3 and json.loads(proc.stdout)["gallery"]["ok"] is False
    assert "FAILED" in proc.stderr
    # the last record cut short (a crash mid-write): reported, exit 3, explained as a torn tail
    torn = gallery.with_name("torn.bin")
    torn.write_bytes(gallery.read_bytes()[:-20])
    proc = run("verify", "--gallery", torn)
    assert proc.returncode == 3
    rep = json.loads(proc.stdout)["gallery"]
    assert rep["torn_tail_bytes"] > 0 and any("torn tail" in n for n in rep["notes"])
    # searching still works on the committed records
    q = sorted((world["data"] / "query").glob("0100_*.jpg"))
    assert lines(run("query", "--bundle", world["bundle"], "--gallery", torn, *q))[0]["identity"] == 100


def test_info_remove_compact_verify(world, gallery: Path):
    info = json.loads(run("info", "--gallery", gallery, "--bundle", world["bundle"], "--max-identities", "2").stdout)
    g = info["gallery"]
    assert g["entries"] == 24 and g["identities"] == 6 and g["identities_listed"] == 2
    assert g["spec"] == {"dim": 16, "bits": 8, "scale": 1 / 127, "metric": "l2", "code_bytes": 16}
    assert info["bundle"]["default_artifact"] == "onnx-fp32" and info["bundle"]["input"]["height"] == 32
    assert info["search_kernel"]["single_query_int8"].startswith(("compiled scan (", "onnxruntime MatMulInteger"))
    assert set(info["cpu"]["features"]) == {"avx2", "avx512bw", "vnni", "neon_dot"} and info["cpu"]["arch"]
    # one artifact: nothing to time, and the report says so
    assert info["artifact_choice"]["artifact"] == "onnx-fp32" and info["artifact_choice"]["how"] == "single"

    proc = run("remove", "--gallery", gallery, "100", "0102", "nobody")
    assert proc.returncode == 0, proc.stderr
    rem = json.loads(proc.stdout)
    assert rem["removed_entries"] == 8 and rem["removed_identities"] == [100, 102] and rem["not_found"] == ["nobody"]
    assert "nobody" in proc.stderr
    proc = run("remove", "--gallery", gallery, "nobody")
    assert proc.returncode == 2 and "none of the identities" in proc.stderr

    q = sorted((world["data"] / "query").glob("0100_*.jpg"))
    out = lines(run("query", "--bundle", world["bundle"], "--gallery", gallery, "--topk", "16", *q))[0]
    assert 100 not in [t["identity"] for t in out["topk"]] and len(out["topk"]) == 16

    size_before = gallery.stat().st_size
    proc = run("compact", "--gallery", gallery)
    assert proc.returncode == 0, proc.stderr
    comp = json.loads(proc.stdout)
    assert comp["live_entries"] == 16 and comp["bytes_after"] < size_before == comp["bytes_before"]
    assert gallery.stat().st_size == comp["bytes_after"]
    assert json.loads(run("info", "--gallery", gallery).stdout)["gallery"]["entries"] == 16

    proc = run("verify", "--gallery", gallery, "--bundle", world["bundle"])
    assert proc.returncode == 0, proc.stdout
    rep = json.loads(proc.stdout)
    assert rep["ok"] and rep["spec_match"] and rep["gallery"]["live_entries"] == 16
    assert rep["bundle"]["artifacts_verified"] == ["onnx-fp32"]


def test_enroll_from_folders_and_one_identity(world, tmp_path: Path):
    people = tmp_path / "people"
    for name, pid in (("alice", 100), ("bob", 103)):
        (people / name).mkdir(parents=True)
        for src in sorted((world["data"] / "bounding_box_test").glob(f"{pid:04d}_*.jpg"))[:2]:
            shutil.copy(src, people / name / src.name.replace(f"{pid:04d}_", "img_"))
    g = tmp_path / "people.bin"
    proc = run("enroll", "--bundle", world["bundle"], "--gallery", g, "--create", people)
    assert proc.returncode == 0, proc.stderr
    assert lines(proc)[-1]["gallery_identities"] == 2
    single = tmp_path / "carol"
    shutil.copytree(people / "bob", single)
    (single / "broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    proc = run("enroll", "--bundle", world["bundle"], "--gallery", g, "--identity", "carol", single)
    assert proc.returncode == 1  # one image failed, the others were enrolled
    out = lines(proc)
    assert out[0]["image"].endswith("broken.jpg") and "error" in out[0]
    assert out[-1]["enrolled"] == 2 and out[-1]["errors"] == 1 and out[-1]["gallery_identities"] == 3
    q = sorted((world["data"] / "query").glob("0100_*.jpg"))
    assert lines(run("query", "--bundle", world["bundle"], "--gallery", g, *q))[0]["identity"] == "alice"
    proc = run("enroll", "--bundle", world["bundle"], "--gallery", g, tmp_path / "nothing")
    assert proc.returncode == 2 and "not a folder" in proc.stderr


def test_eval_reports_rank1_and_map(world, tmp_path: Path):
    out_file = tmp_path / "eval.json"
    proc = run("eval", "--bundle", world["bundle"], "--data", world["data"], "--out", out_file)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res == json.loads(out_file.read_text())
    assert res["queries"] == 6 and res["gallery"] == 26  # junk and distractor stay in the gallery
    for kind in ("codes", "float"):
        assert set(res[kind]) >= {"rank1", "rank5", "rank10", "mAP", "mINP"}
    # the tiny model separates these colour-coded identities perfectly (see test_query_finds_every_identity)
    assert res["codes"]["rank1"] == 1.0 and res["codes"]["mAP"] == 1.0
    assert str(out_file) in proc.stderr
    # open set at the manifest's threshold (0.6): half of the 6 query identities enrolled; every query of an
    # enrolled person is accepted as the right one, the others' nearest entries are other people
    o = res["open_set"]
    assert o["threshold"] == 0.6 and o["enrolled_queries"] == 3 and o["not_enrolled_queries"] == 3
    assert o["true_accept_rate"] == 1.0 and o["true_accepts"] == 3
    assert o["false_accepts"] == round(o["false_accept_rate"] * 3)
    assert "open set at threshold 0.6000" in proc.stderr and "false-accept rate" in proc.stderr


def test_bench_writes_json_and_markdown(world, tmp_path: Path):
    out = tmp_path / "bench"
    proc = run("bench", "--bundle", world["bundle"], "--iterations", "3", "--warmup", "1", "--batch", "4",
               "--gallery-size", "2000", "--query-batch", "8", "--out-dir", out,
               "--images", world["data"] / "query")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((out / "bench.json").read_text())
    assert set(rep["results"]) == {"preprocess", "embed_b1", "embed_b4", "search_1", "search_q8", "pipeline_b1"}
    for r in rep["results"].values():
        assert r["median_ms"] > 0 and r["median_ms"] <= r["p99_ms"] and r["throughput_per_s"] > 0
    assert rep["gallery"]["entries"] == 2000 and rep["memory"]["peak_rss_bytes"] > 10 * 2**20
    md = (out / "bench.md").read_text()
    assert "| embed_b4 | 4 |" in md and "Peak resident memory" in md
    assert str(out / "bench.json") in proc.stderr


def test_tensorrt_paths_explain_what_to_install(world, tmp_path: Path):
    from edgereid.runtime.tensorrt_api import available_libraries

    if "tensorrt" in available_libraries():
        pytest.skip("TensorRT itself is installed here")
    bundle = tmp_path / "b"
    shutil.copytree(world["bundle"], bundle)
    proc = run("build-engine", "--bundle", bundle, "--library", "tensorrt", "--precision", "fp16")
    assert proc.returncode == 4 and "JetPack" in proc.stderr
    if "tensorrt-rtx" in available_libraries():  # make setup installs it: auto picks it, and it is strongly typed
        proc = run("build-engine", "--bundle", bundle, "--precision", "fp16")
        assert proc.returncode == 2 and "strongly typed" in proc.stderr
    proc = run("build-engine", "--bundle", bundle, "--precision", "int8")
    if available_libraries():
        assert proc.returncode == 2 and "Q/DQ int8 ONNX" in proc.stderr  # this bundle has no int8 graph
    else:  # no TensorRT at all (aarch64 without JetPack's: make test-aarch64): what to install, for this machine
        assert proc.returncode == 4 and "JetPack" in proc.stderr and "Traceback" not in proc.stderr
        rtx_here = platform.machine() in ("x86_64", "AMD64")
        assert ("pip install edgereid[tensorrt-rtx]" in proc.stderr) == rtx_here, proc.stderr



def test_missing_tensorrt_advice_fits_the_machine(monkeypatch: pytest.MonkeyPatch):
    from edgereid.runtime import tensorrt_api
    from edgereid.runtime.backends import BackendUnavailable

    # neither library importable: TensorRT-RTX's pip hint only where its wheels exist (x86-64)
    monkeypatch.setattr(tensorrt_api, "LIBRARIES", {n: (f"_edgereid_absent_{i}", *v[1:])
                                                   for i, (n, v) in enumerate(tensorrt_api.LIBRARIES.items())})
    for machine, rtx_hint in (("x86_64", True), ("aarch64", False)):
        monkeypatch.setattr(tensorrt_api.platform, "machine", lambda m=machine: m)
        with pytest.raises(BackendUnavailable) as exc:
            tensorrt_api.import_tensorrt()
        assert "JetPack" in str(exc.value)
        assert ("pip install edgereid[tensorrt-rtx]" in str(exc.value)) == rtx_hint, str(exc.value)
        assert ("no aarch64 build" in str(exc.value)) == (not rtx_hint)

def test_usage_errors_exit_2_without_traceback(world):
    for args in (["--gallery", "x.bin", "img.jpg"],  # no --bundle
                 ["--bundle", world["bundle"], "--gallery", world["gallery"]],  # no images
                 ["--bundle", world["root"] / "nope", "--gallery", world["gallery"], "a.jpg"],
                 ["query", "--bundle", world["bundle"], "--gallery", world["gallery"], "--topk", "0", "a.jpg"],
                 ["info"]):
        proc = run(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and "error" in proc.stderr


def test_every_flag_has_help():
    parsers = build_parsers()
    assert set(parsers) >= {"_top", "match", "enroll", "query", "info", "remove", "compact", "verify", "eval",
                            "bench", "build-engine"}
    for name, parser in parsers.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and len(action.help) > 10, (name, action.dest)
    proc = run("--help")
    assert proc.returncode == 0 and "build-engine" in proc.stdout and "exit codes" in proc.stdout
    assert run("enroll", "--help").returncode == 0


def test_outputs_can_go_to_a_file(world, tmp_path: Path):
    q = sorted((world["data"] / "query").glob("*.jpg"))
    target = tmp_path / "out.jsonl"
    proc = run("query", "--bundle", world["bundle"], "--gallery", world["gallery"], "-o", target, *q[:2])
    assert proc.returncode == 0 and proc.stdout == ""
    assert [json.loads(x)["identity"] for x in target.read_text().splitlines()] == [100, 101]
    assert f"results written to {target}" in proc.stderr


def test_openvino_backend_gives_the_same_answers(world, tmp_path: Path):
    bundle = write_tiny_bundle(tmp_path / "ov", openvino=True)
    q = sorted((world["data"] / "query").glob("*.jpg"))
    a = lines(run("query", "--bundle", bundle, "--gallery", world["gallery"], *q))
    b = lines(run("query", "--bundle", bundle, "--gallery", world["gallery"], "--backend", "openvino", *q))
    assert [x["identity"] for x in a] == [x["identity"] for x in b]
    assert np.allclose([x["distance"] for x in a], [x["distance"] for x in b], atol=0.02)
