"""The benchmark scripts behind `make bench`, run as subprocesses on tiny inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_pareto_plot_and_frontier(tmp_path: Path) -> None:
    lat = {"rows": [
        {"model": "dense", "runtime": "torch eager", "precision": "fp32", "median_ms": 8.0, "mAP": 0.16},
        {"model": "pruned", "runtime": "OpenVINO", "precision": "int8", "median_ms": 1.0, "mAP": 0.18},
        {"model": "pruned", "runtime": "OpenVINO", "precision": "f32", "median_ms": 2.5, "mAP": 0.19},
        {"model": "dense", "runtime": "OpenVINO", "precision": "f32", "median_ms": 3.0, "mAP": 0.185},  # dominated
        {"model": "dense", "runtime": "tensorrt", "precision": "fp16", "median_ms": None, "mAP": None},  # not measured
    ]}
    comp = {"records": [
        {"method": "slice", "dim": 32, "variant": "int8-qat", "bytes_per_embedding": 32, "mAP": 0.17},
        {"method": "prune", "dim": 32, "variant": "int8-qat", "bytes_per_embedding": 32, "mAP": 0.20},
        {"method": "full", "dim": 192, "variant": "float32", "bytes_per_embedding": 768, "mAP": 0.16},  # dominated
        {"method": "prune", "dim": 8, "variant": "1bit-ptq", "bytes_per_embedding": 1, "mAP": 0.03},
    ]}
    (tmp_path / "lat.json").write_text(json.dumps(lat))
    (tmp_path / "comp.json").write_text(json.dumps(comp))
    proc = run(str(REPO / "bench/pareto.py"), "--latency", "lat.json", "--compression", "comp.json",
               "--demo", "missing.json", "--out-png", "out/p.png", "--out-md", "out/p.md", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "wrote out/p.png and out/p.md" in proc.stdout
    png = (tmp_path / "out/p.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    md = (tmp_path / "out/p.md").read_text()
    assert "](./p.png)" in md
    lat_rows = md.split("Frontier, accuracy vs latency:")[1].split("Frontier, accuracy vs bytes")[0]
    assert "pruned OpenVINO int8 | 1.00 | 18.0" in lat_rows and "pruned OpenVINO f32 | 2.50 | 19.0" in lat_rows
    assert "dense" not in lat_rows  # both dense points are slower and less accurate than a pruned one
    byte_rows = md.split("Frontier, accuracy vs bytes")[1]
    assert "prune 8d 1bit-ptq | 1 | 3.0" in byte_rows and "prune 32d int8-qat | 32 | 20.0" in byte_rows
    assert "slice" not in byte_rows and "full" not in byte_rows


def test_pareto_names_a_missing_input(tmp_path: Path) -> None:
    proc = run(str(REPO / "bench/pareto.py"), "--latency", "nope.json", cwd=tmp_path)
    assert proc.returncode != 0
    assert "latency results not found: nope.json" in proc.stderr


def test_assemble_orders_sections_and_fixes_image_links(tmp_path: Path) -> None:
    sec = tmp_path / "benchmarks"
    sec.mkdir()
    (sec / "search.md").write_text("## Search\n\n![plot](./s.png)\n")
    (sec / "compression.md").write_text("## Compression\n\n![plot](c.png) and [site](https://example.com/x.png)\n")
    (sec / "zzz.md").write_text("## Extra\n")
    proc = run(str(REPO / "bench/assemble.py"), "--sections", "benchmarks", "--out", "B.md", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "B.md").read_text()
    assert text.index("## Compression") < text.index("## Search") < text.index("## Extra")
    assert "](benchmarks/s.png)" in text and "](benchmarks/c.png)" in text
    assert "(https://example.com/x.png)" in text
    assert "Measured on commit" in text


def test_search_benchmark_quick_run(tmp_path: Path) -> None:
    proc = run(str(REPO / "bench/bench_search.py"), "--sizes", "3000", "--dims", "16", "--single-queries", "3",
               "--batch", "8", "--repeats", "1", "--no-metrics", "--workdir", str(tmp_path),
               "--out-json", "s.json", "--out-md", "s.md", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "s.json").read_text())
    (r,) = report["results"]
    assert r["n"] == 3000 and r["dim"] == 16
    assert r["exact_vs_faiss_flat"] is True  # same k distances as faiss's exact float index
    for key in ("edgereid_single_ms", "edgereid_1t_single_ms", "edgereid_ort_1t_single_ms", "faiss_sq8_single_ms",
                "edgereid_batch_qps", "faiss_sq8_batch_qps"):
        assert r[key] > 0, key
    assert report["single_kernel"]
    md = (tmp_path / "s.md").read_text()
    assert "| 3,000 | 16 |" in md and "vs SQ8 (1 thread)" in md


def test_bench_tensorrt_builds_each_graph_and_tables_the_preflight(tmp_path: Path) -> None:
    proc = run(str(REPO / "bench/bench_tensorrt.py"), "--size", "vit_micro", "--img", "64x32",
               "--variants", "codes-output", "--max-batch", "4", "--out-json", "o/t.json", "--out-md", "o/t.md",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote o/t.json and o/t.md" in proc.stdout
    res = json.loads((tmp_path / "o/t.json").read_text())
    assert [r["variant"] for r in res["rows"]] == ["codes-output"] and res["library"].startswith("TensorRT-RTX")
    row = res["rows"][0]
    assert row["built"] and row["engine_bytes"] > 100_000 and row["build_s"] > 0 and row["batch_profile"] == [1, 1, 4]
    assert row["preflight"] == {"jetpack5": "unsupported-op", "jetpack6": "cast-type", "rtx": "pass"}
    md = (tmp_path / "o/t.md").read_text()
    assert "| codes-output | unsupported-op | cast-type | pass |" in md and "| codes-output | fp32 | dynamic |" in md
    bad = run(str(REPO / "bench/bench_tensorrt.py"), "--variants", "nope", cwd=tmp_path)
    assert bad.returncode != 0 and "unknown variants ['nope']" in bad.stderr


def test_recipe_log_records_a_run_and_renders_the_table(tmp_path: Path) -> None:
    log = tmp_path / "runs.jsonl"
    fake_train = ("import json, os, sys; out = sys.argv[sys.argv.index('--out') + 1]; os.makedirs(out); "
                  "json.dump({'best': {'rank1': 0.9, 'mAP': 0.8, 'epoch': 3}, 'steps': 30, 'epochs': 3, "
                  "'train_seconds': 12.5, 'baselines': {'pixels': {'rank1': 0.1, 'mAP': 0.07}}}, "
                  "open(os.path.join(out, 'summary.json'), 'w'))")
    proc = run(str(REPO / "bench/recipe_log.py"), "run", "--log", str(log), "--name", "conv", "--note", "conv stem",
               "--", sys.executable, "-c", fake_train, "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"appended to {log}" in proc.stdout
    rec = json.loads(log.read_text().splitlines()[0])
    assert rec["name"] == "conv" and rec["returncode"] == 0 and rec["wall_s"] >= 0
    assert rec["result"]["mAP"] == 0.8 and rec["result"]["steps"] == 30
    assert rec["result"]["baselines"]["pixels"]["mAP"] == 0.07
    proc = run(str(REPO / "bench/recipe_log.py"), "table", "--log", str(log), "--out-md", "t.md", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "t.md").read_text()
    assert "| 1 | conv | 0.900 | 0.800 | 30 | 12 |" in md and "conv stem" in md and fake_train[:20] in md
    # a failing command is recorded with its exit status and no result
    proc = run(str(REPO / "bench/recipe_log.py"), "run", "--log", str(log), "--name", "bad", "--",
               sys.executable, "-c", "raise SystemExit(3)", cwd=tmp_path)
    assert proc.returncode == 3
    bad = json.loads(log.read_text().splitlines()[1])
    assert bad["returncode"] == 3 and bad["result"] == {}
