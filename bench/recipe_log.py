"""Run one training experiment and append what happened to a JSON-lines log (the recipe ablation).

    python bench/recipe_log.py run --log benchmarks/recipe_runs.jsonl --name conv_stem --note "..." -- \\
        edgereid train --data runs/d400 ... --out runs/recipe/conv_stem
    python bench/recipe_log.py table --log benchmarks/recipe_runs.jsonl --out-md benchmarks/recipe_runs.md

``run`` executes the command as given (no shell), times it, records the machine's load average
before and after (the machine is shared: wall times are only comparable at similar load), and
reads the run folder's ``summary.json`` (``edgereid train``; the folder is the command's
``--out``): best rank-1/mAP, the epoch they came from, steps, training seconds, the baselines when
the command wrote them. One JSON object per line, appended, so an interrupted session keeps its
earlier records. ``table`` renders every record as a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import load_average  # noqa: E402


def _out_folder(command: list[str]) -> Path | None:
    for i, arg in enumerate(command[:-1]):
        if arg == "--out":
            return Path(command[i + 1])
    return None


def result_of(out: Path | None) -> dict[str, Any]:
    """What the run folder says: best metrics, steps, seconds (empty when the command wrote none)."""
    if out is None or not (out / "summary.json").is_file():
        return {}
    summary = json.loads((out / "summary.json").read_text())
    best = summary.get("best", {})
    res = {k: best.get(k) for k in ("rank1", "rank5", "mAP", "mINP", "epoch")}
    res.update({k: summary.get(k) for k in ("steps", "epochs", "train_seconds")})
    if isinstance(summary.get("baselines"), dict):
        res["baselines"] = {k: {"rank1": v.get("rank1"), "mAP": v.get("mAP")} for k, v in summary["baselines"].items()}
    return res


def cmd_run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print("recipe_log run: no command given after --", file=sys.stderr)
        return 2
    record: dict[str, Any] = {"name": args.name, "note": args.note, "command": " ".join(command),
                              "started": dt.datetime.now().isoformat(timespec="seconds"), "load_before": load_average()}
    t0 = time.perf_counter()
    rc = subprocess.call(command)
    record.update(wall_s=round(time.perf_counter() - t0, 1), load_after=load_average(), returncode=rc,
                  result=result_of(_out_folder(command)))
    log = Path(args.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        fh.write(json.dumps(record) + "\n")
    res = record["result"]
    print(f"{args.name}: rc {rc}, {record['wall_s']} s, rank-1 {res.get('rank1')}, mAP {res.get('mAP')}; appended to {log}")
    return rc


def read_log(path: Path) -> list[dict[str, Any]]:
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} line {n}: not JSON ({exc})") from None
    return records


def _f(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def to_markdown(records: list[dict[str, Any]]) -> str:
    lines = ["| # | name | rank-1 | mAP | steps | train s | wall s | load (1 min, before/after) | note |",
             "|---:|---|---:|---:|---:|---:|---:|---|---|"]
    for i, r in enumerate(records, 1):
        res = r.get("result", {})
        load = "/".join(_f((r.get(k) or [None])[0], ".1f") for k in ("load_before", "load_after"))
        lines.append(f"| {i} | {r['name']} | {_f(res.get('rank1'))} | {_f(res.get('mAP'))} | {_f(res.get('steps'), 'd')} | "
                     f"{_f(res.get('train_seconds'), '.0f')} | {_f(r.get('wall_s'), '.0f')} | {load} | {r.get('note') or ''} |")
    lines += ["", "Commands:", ""]
    lines += [f"{i}. `{r['command']}`" for i, r in enumerate(records, 1)]
    return "\n".join(lines) + "\n"


def cmd_table(args: argparse.Namespace) -> int:
    log = Path(args.log)
    if not log.is_file():
        print(f"recipe_log table: log not found: {log}", file=sys.stderr)
        return 2
    md = to_markdown(read_log(log))
    Path(args.out_md).write_text(md)
    print(f"wrote {args.out_md}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="run one experiment and append its record to the log")
    p.add_argument("--log", required=True, help="JSON-lines log to append to")
    p.add_argument("--name", required=True, help="short name of the experiment (a row of the table)")
    p.add_argument("--note", default="", help="what this run changes, in a few words")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run (its --out is read)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("table", help="render the log as a Markdown table with the commands")
    p.add_argument("--log", required=True, help="JSON-lines log to read")
    p.add_argument("--out-md", required=True, help="Markdown file to write")
    p.set_defaults(func=cmd_table)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
