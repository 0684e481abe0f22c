"""Assemble BENCHMARKS.md from the per-suite sections in benchmarks/ (each written by its own command).

Usage: python bench/assemble.py [--sections benchmarks] [--out BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
from pathlib import Path

from edgereid.data.atomic import write_text_atomic

# Section files in reading order; any other .md in the folder follows, alphabetically.
ORDER = ["baseline.md", "recipe.md", "compression.md", "pruning.md", "model_latency.md", "tensorrt.md", "search.md",
         "search_avx2_proxy.md",
         "store.md", "demo.md", "pareto.md"]
_IMAGE_LINK = re.compile(r"\]\((?:\./)?([^)/:]+\.(?:png|jpg|svg))\)")


def machine_line() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    return f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}"


def commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        # the results themselves (benchmarks/, BENCHMARKS.md) are rewritten by the run: not "uncommitted code"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":!benchmarks", ":!BENCHMARKS.md"], capture_output=True, text=True).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", default="benchmarks", help="folder of section .md files (default benchmarks/)")
    p.add_argument("--out", default="BENCHMARKS.md", help="output file (default BENCHMARKS.md)")
    p.add_argument("--commit", default=None,
                   help="the commit the suites were measured on (default: this checkout's HEAD, marked when dirty)")
    args = p.parse_args()
    folder = Path(args.sections)
    files = [folder / n for n in ORDER if (folder / n).is_file()]
    files += sorted(f for f in folder.glob("*.md") if f.name not in ORDER)
    head = [
        "# edgereid benchmarks",
        "",
        f"Measured on commit `{args.commit or commit()}`, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d}, on {machine_line()}.",
        "The machine is shared: timings vary by about 30 % between runs. Every section names the command",
        "that produced it; `make bench` reruns the performance suites and rewrites this file.",
        "",
    ]
    body = []
    for f in files:
        text = f.read_text().strip()
        # Section images are referenced relative to benchmarks/ (``](x.png)`` or ``](./x.png)``).
        text = _IMAGE_LINK.sub(lambda m: f"]({folder.as_posix()}/{m.group(1)})", text)
        body += [text, ""]
    write_text_atomic(args.out, "\n".join(head + body))
    print(f"wrote {args.out} from {len(files)} sections in {folder}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
