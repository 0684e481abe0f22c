"""The no-learning baselines every evaluation reports beside the model, and the verdict against them.

``BASELINES`` is the one table of baseline kinds (tests and the CLI loop over it):

- ``histogram``: HSV colour histogram over horizontal stripes (``histogram_baseline``): what
  clothing colour alone gives;
- ``pixels``: raw-pixel nearest neighbour on the model's own preprocessing (``pixel_baseline``):
  what appearance without any learning gives.

``run_baselines`` evaluates them on a data set's query/gallery (standard Market-1501 protocol);
``compare`` says, plainly, whether a model's metrics beat each of them. numpy + Pillow only: the
demo report and ``edgereid baseline`` use it without torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgereid.data.atomic import write_json_atomic
from edgereid.data.json_file import read_json_object

FORMAT = "edgereid-baselines"


@dataclass(frozen=True)
class BaselineKind:
    label: str  # how tables name it
    description: str  # one line: what it computes
    run: Callable[..., dict[str, Any]]  # run(dataset_name, root, size=(H, W), **options) -> metrics dict


def _run_histogram(dataset_name: str, root: str | Path, size: tuple[int, int] = (128, 64),
                   histogram: Any = None) -> dict[str, Any]:
    from .histogram_baseline import HistogramConfig, run_baseline

    cfg = histogram or HistogramConfig()
    return run_baseline(dataset_name, root, cfg=cfg)


def _run_pixels(dataset_name: str, root: str | Path, size: tuple[int, int] = (128, 64), **_: Any) -> dict[str, Any]:
    from .pixel_baseline import PixelConfig, run_pixel_baseline

    return run_pixel_baseline(dataset_name, root, PixelConfig(size=tuple(size)))


BASELINES: dict[str, BaselineKind] = {
    "histogram": BaselineKind("colour histogram", "HSV colour histogram (8x4x4 bins, 6 stripes), Hellinger distance",
                              _run_histogram),
    "pixels": BaselineKind("raw pixels", "nearest neighbour on the model's preprocessed input pixels, L2-normalised",
                           _run_pixels),
}


def run_baselines(dataset_name: str, root: str | Path, kinds: Sequence[str] = tuple(BASELINES),
                  size: tuple[int, int] = (128, 64), histogram: Any = None) -> dict[str, Any]:
    """Evaluate each baseline in ``kinds``; returns the ``baselines.json`` document.

    ``size`` is the (height, width) the pixel baseline resizes to (pass the model's input size);
    ``histogram`` an optional ``HistogramConfig``.
    """
    unknown = [k for k in kinds if k not in BASELINES]
    if unknown:
        raise ValueError(f"baseline kinds {unknown}: expected some of {', '.join(BASELINES)}")
    results = {k: BASELINES[k].run(dataset_name, root, size=tuple(size), histogram=histogram) for k in kinds}
    return {"format": FORMAT, "version": 1, "dataset": dataset_name, "data": str(root), "baselines": results}


def write_baselines(path: str | Path, doc: dict[str, Any]) -> Path:
    """Write the document atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, doc)
    return path


def read_baselines(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{kind: metrics}`` from a ``baselines.json`` (or an older single colour-histogram result file)."""
    path = Path(path)
    doc = read_json_object(path, "a baselines JSON object (written by `edgereid baseline --out`)")
    if doc.get("format") == FORMAT:
        results = doc.get("baselines")
        if not isinstance(results, dict):
            raise ValueError(f"{path}: field 'baselines' must be an object of kind -> metrics")
        return results
    if doc.get("method") == "colour_histogram" and "mAP" in doc:
        return {"histogram": doc}
    raise ValueError(f"{path}: field format: expected {FORMAT!r} (written by `edgereid baseline`), got {doc.get('format')!r}")


@dataclass(frozen=True)
class Verdict:
    kind: str
    label: str
    baseline_map: float
    baseline_rank1: float
    model_map: float
    model_rank1: float

    @property
    def margin(self) -> float:
        """Model mAP minus baseline mAP (positive: the model is better)."""
        return self.model_map - self.baseline_map

    @property
    def beaten(self) -> bool:
        return self.model_map > self.baseline_map and self.model_rank1 >= self.baseline_rank1

    def sentence(self) -> str:
        if self.beaten:
            return (f"beats the {self.label} baseline: mAP {self.model_map:.3f} vs {self.baseline_map:.3f} "
                    f"({self.margin:+.3f}), rank-1 {self.model_rank1:.3f} vs {self.baseline_rank1:.3f}")
        return (f"does NOT beat the {self.label} baseline: mAP {self.model_map:.3f} vs {self.baseline_map:.3f}, "
                f"rank-1 {self.model_rank1:.3f} vs {self.baseline_rank1:.3f}")


def compare(metrics: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> list[Verdict]:
    """One verdict per baseline: the model beats it when its mAP is higher and its rank-1 not lower."""
    out = []
    for kind, res in baselines.items():
        label = BASELINES[kind].label if kind in BASELINES else kind
        out.append(Verdict(kind, label, float(res["mAP"]), float(res["rank1"]),
                           float(metrics["mAP"]), float(metrics["rank1"])))
    return out


def summary_lines(name: str, metrics: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> list[str]:
    """Lines for a terminal: the model and each baseline side by side, then one verdict line each."""
    width = max([len(name)] + [len(BASELINES[k].label if k in BASELINES else k) + 9 for k in baselines])
    lines = [f"{'':{width}s} {'rank-1':>7s} {'mAP':>7s}", f"{name:{width}s} {metrics['rank1']:7.3f} {metrics['mAP']:7.3f}"]
    verdicts = compare(metrics, baselines)
    for v in verdicts:
        lines.append(f"{v.label + ' baseline':{width}s} {v.baseline_rank1:7.3f} {v.baseline_map:7.3f}")
    for v in verdicts:
        lines.append(f"{name} {v.sentence()}" if v.beaten else f"WARNING: {name} {v.sentence()}")
    return lines


def add_baselines_flag(parser: argparse.ArgumentParser) -> None:
    """``--baselines`` of ``edgereid train`` / ``eval``: compute, reuse a file, or skip."""
    parser.add_argument("--baselines", default="auto", metavar="auto|none|FILE",
                        help="no-learning baselines printed beside the model, with a plain verdict: auto = compute "
                             "them on --data (seconds on the synthetic set), FILE = reuse a JSON written by "
                             "`edgereid baseline --out`, none = skip (default auto)")


def resolve_baselines(choice: str, dataset_name: str, root: str | Path, size: tuple[int, int]) -> dict[str, dict[str, Any]]:
    """``{kind: metrics}`` for the ``--baselines`` choice (empty for ``none``)."""
    if choice == "none":
        return {}
    if choice == "auto":
        return run_baselines(dataset_name, root, size=size)["baselines"]
    path = Path(choice)
    if not path.is_file():
        raise FileNotFoundError(f"--baselines {choice}: no such file (expected auto, none or a baselines JSON)")
    return read_baselines(path)


def attach(record: dict[str, Any], metrics: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``record`` plus ``baselines`` (kind -> rank-1/mAP) and ``beats_baselines`` (kind -> bool)."""
    if not baselines:
        return record
    keep = ("rank1", "rank5", "rank10", "mAP", "mINP")
    return {**record, "baselines": {k: {m: v.get(m) for m in keep} for k, v in baselines.items()},
            "beats_baselines": {v.kind: v.beaten for v in compare(metrics, baselines)}}


# ----------------------------------------------------------------------------------------------
# CLI glue for `edgereid baseline` (train/cli.py)


def add_baseline_arguments(parser: argparse.ArgumentParser, data_arguments: bool = True) -> None:
    """Flags of ``edgereid baseline``. ``data_arguments=False`` when the caller adds --data/--dataset."""
    from .cli_common import add_data_arguments, parse_img_size
    from .histogram_baseline import DISTANCES, SPACES, HistogramConfig, parse_bins

    d = HistogramConfig()
    if data_arguments:
        add_data_arguments(parser)
    parser.add_argument("--kind", default="all", choices=[*BASELINES, "all"],
                        help="which baseline: " + "; ".join(f"{k} = {b.description}" for k, b in BASELINES.items())
                        + "; all = every one (default)")
    parser.add_argument("--out", default=None, help="write the results JSON here (format edgereid-baselines)")
    parser.add_argument("--img", type=parse_img_size, default=(128, 64),
                        help="pixels: HxW the images are resized to, as the model's input (default 128x64)")
    g = parser.add_argument_group("colour histogram")
    g.add_argument("--space", choices=SPACES, default=d.space, help=f"colour space of the histogram (default {d.space})")
    g.add_argument("--bins", type=parse_bins, default=d.bins, help="bins per channel as AxBxC (default 8x4x4)")
    g.add_argument("--stripes", type=int, default=d.stripes, help=f"horizontal stripes, one histogram each (default {d.stripes})")
    g.add_argument("--distance", choices=DISTANCES, default=d.distance, help=f"histogram distance (default {d.distance})")


def main_baseline(args: argparse.Namespace) -> int:
    """``edgereid baseline``: print each baseline's metrics; write the JSON when --out is given."""
    from edgereid.data import DatasetLayoutError

    from .histogram_baseline import HistogramConfig

    kinds = list(BASELINES) if args.kind == "all" else [args.kind]
    hist = HistogramConfig(space=args.space, bins=tuple(args.bins), stripes=args.stripes, distance=args.distance)
    try:
        hist.validate()
        doc = run_baselines(args.dataset, args.data, kinds, size=tuple(args.img), histogram=hist)
    except (DatasetLayoutError, ValueError) as exc:
        print(f"edgereid baseline: {exc}", file=sys.stderr)
        return 2
    for kind, res in doc["baselines"].items():
        print(f"{BASELINES[kind].label:18s} rank-1 {res['rank1']:.3f}  rank-5 {res['rank5']:.3f}  "
              f"mAP {res['mAP']:.3f}  mINP {res['mINP']:.3f}  ({res['seconds']:.1f} s)")
    if args.out:
        print(f"wrote {write_baselines(args.out, doc)}")
    return 0
