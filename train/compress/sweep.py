"""The compression sweep: methods x sizes x {float32, int8 PTQ, int8 QAT}, plus 4-bit and 1-bit points.

Plan (sized for a slow shared CPU; every choice is recorded in ``sweep.json``):
1. a dense model (trained here for ``epochs``, or given with ``dense_ckpt``);
2. per method and size one float model: ``slice``/``lowrank`` fine-tuned from the dense model for
   ``finetune_fraction`` of ``epochs`` (or trained from scratch for ``epochs`` with
   ``from_scratch``, the paper's recipe), ``prune`` walking the sizes with stages of
   ``finetune_fraction`` of ``epochs`` (the paper's 20 %);
3. per float model, from one pass of embeddings: float32, int8 PTQ, 4-bit PTQ, 1-bit (Hamming) and
   1-bit + int8 re-ranking, all through the runtime codec, scales calibrated on the train split;
4. per float model an int8 QAT fine-tune of ``qat_epochs`` (scale from the train split, frozen).

Outputs in ``out``: ``sweep.json`` (config + one record per run), ``sweep.md`` (table), ``sweep.png``
(mAP vs bytes per embedding, log x). Resumable: records are written after every run, and a
run whose record exists (or whose checkpoint is complete) is not trained again.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..checkpoint import load_model, read_config, write_json_atomic
from ..config import BackboneConfig, ModelConfig
from ..engine import TrainConfig, fit, resolve_device
from ..models import build_model
from .dim_prune import PruneSchedule, iterative_prune
from .evaluate_codes import evaluate_embeddings, evaluate_model_codes
from .methods import METHODS, SWEEP_METHODS
from .ptq import calibrate_scale, normalised_embeddings
from .qat import QATConfig, qat_finetune
from .sizes import bytes_per_embedding, paper_sizes

SWEEP_FORMAT = "edgereid-compression-sweep"
# one float model gives these records (variant name -> bits, quantisation, re-ranking)
VARIANTS: dict[str, tuple[int, str, bool]] = {
    "float32": (32, "float", False),
    "int8-ptq": (8, "ptq", False),
    "int8-qat": (8, "qat", False),
    "4bit-ptq": (4, "ptq", False),
    "1bit-ptq": (1, "ptq", False),
    "1bit-ptq+int8-rerank": (1, "ptq", True),
}


@dataclass
class SweepConfig:
    """Everything that decides the sweep's numbers.

    sizes: compressed dims (None: the paper's six ratios of d plus ``extra_dims``).
    extra_dims: sizes beside the paper's ratios (32 dims x int8 = 32 bytes, the headline byte count).
    variants: which of ``VARIANTS`` to record per float model.
    control: also fine-tune the dense model with nothing compressed, stage by stage with the methods'
        fine-tuning schedule (records ``full/d/<variant>@<stage>``): the equal-budget reference each
        compressed point is compared with, so that a delta is the method's, not its extra epochs'.
    """

    data: str = "runs/synth"
    dataset: str = "market1501"
    out: str = "runs/sweep"
    model: str = "vit_tiny"
    img_size: tuple[int, int] = (128, 64)
    pretrained: str | None = None
    epochs: int = 30
    dense_ckpt: str | None = None
    methods: tuple[str, ...] = SWEEP_METHODS
    sizes: list[int] | None = None
    extra_dims: list[int] = field(default_factory=lambda: [32])
    variants: tuple[str, ...] = tuple(VARIANTS)
    finetune_fraction: float = 0.2
    from_scratch: bool = False
    finetune_lr_scale: float = 0.5
    qat_epochs: int = 2
    qat_lr_scale: float = 0.2
    shortlist: int = 100
    control: bool = True
    quick: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)

    def resolved_sizes(self, d: int) -> list[int]:
        if self.sizes:
            sizes = list(self.sizes)
        elif self.quick:
            sizes = [max(1, d // 2), max(1, round(d / 12))]
        else:
            sizes = paper_sizes(d) + [k for k in self.extra_dims if 0 < k < d]
        bad = [k for k in sizes if not 0 < k < d]
        if bad:
            raise ValueError(f"sizes {bad}: each compressed size must be in 1..{d - 1} (width d = {d})")
        return sorted(set(sizes), reverse=True)

    @property
    def finetune_epochs(self) -> int:
        return max(1, round(self.epochs * self.finetune_fraction))

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


def quick_config(cfg: SweepConfig) -> SweepConfig:
    """CI-sized: 1-epoch dense model, <= 2 steps an epoch, two sizes (1/2 and 1/12 of d), 1-epoch QAT."""
    train = dataclasses.replace(cfg.train, max_steps_per_epoch=cfg.train.max_steps_per_epoch or 2, eval_every=0)
    return dataclasses.replace(cfg, epochs=1, qat_epochs=1, train=train, extra_dims=[], quick=True)


def record_key(method: str, dim: int, variant: str, stage: int | None = None) -> str:
    """``method/dim/variant``; the control's records add ``@stage`` (its fine-tuning stages)."""
    return f"{method}/{dim}/{variant}" + (f"@{stage}" if stage is not None else "")


class SweepState:
    """``sweep.json``: the config, the records (keyed), and a log of invocations; written atomically."""

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {"format": SWEEP_FORMAT, "version": 1, "config": config, "records": [],
                                     "invocations": []}
        if path.is_file():
            try:
                old = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not valid JSON ({exc}); move it away to start a fresh sweep") from None
            if old.get("format") != SWEEP_FORMAT:
                raise ValueError(f"{path}: field format: expected {SWEEP_FORMAT!r}, got {old.get('format')!r}")
            self.data.update({k: old[k] for k in ("records", "invocations") if k in old})
        self.invocation = {"started_at": _now(), "trained": 0, "evaluated": 0, "skipped": 0, "config": config}
        self.data["invocations"].append(self.invocation)

    def has(self, key: str) -> bool:
        return any(r["key"] == key for r in self.data["records"])

    def add(self, record: dict[str, Any]) -> None:
        self.data["records"] = [r for r in self.data["records"] if r["key"] != record["key"]] + [record]
        self.invocation["evaluated"] += 1
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path, self.data)

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.data["records"]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _run_done(path: Path) -> bool:
    return (path / "summary.json").is_file() and (path / "model.safetensors").is_file()


def _summary_seconds(path: Path) -> float:
    return float(json.loads((path / "summary.json").read_text())["train_seconds"])


class Sweep:
    def __init__(self, cfg: SweepConfig, dataset) -> None:
        self.cfg = cfg
        self.dataset = dataset
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(cfg.train.device)
        self.state = SweepState(self.out / "sweep.json", cfg.to_dict())
        self.bar: tqdm | None = None

    # -- the dense model ------------------------------------------------------------------------
    def dense(self) -> tuple[Any, float, Path]:
        if self.cfg.dense_ckpt:
            path = Path(self.cfg.dense_ckpt)
            from .dim_prune import dense_train_seconds

            return load_model(path), dense_train_seconds(path), path
        path = self.out / "dense"
        if _run_done(path):
            return load_model(path), _summary_seconds(path), path
        mcfg = ModelConfig(backbone=BackboneConfig.for_size(self.cfg.model, img_size=tuple(self.cfg.img_size)),
                           num_classes=self.dataset.num_train_pids)
        model = build_model(mcfg, pretrained=self.cfg.pretrained)
        tqdm.write(f"sweep: training the dense model ({self.cfg.epochs} epochs) -> {path}")
        summary = fit(model, self.dataset, self.cfg.train, path)
        self.state.invocation["trained"] += 1
        return load_model(path), float(summary["train_seconds"]), path

    # -- per float model ------------------------------------------------------------------------
    def keys(self, method: str, dim: int, stage: int | None = None) -> list[str]:
        return [record_key(method, dim, v, stage) for v in self.cfg.variants]

    def all_done(self, method: str, dim: int, stage: int | None = None) -> bool:
        return all(self.state.has(k) for k in self.keys(method, dim, stage))

    def evaluate(self, method: str, dim: int, model, own_seconds: float, total_seconds: float, run_dir: Path,
                 d_full: int, finetune_epochs: int = 0, stage: int | None = None) -> None:
        """All records of one float model (PTQ variants from one embedding pass; QAT fine-tuned).

        ``finetune_epochs``: epochs this float model trained after the dense model (the budget the
        equal-budget control matches); ``stage``: the control's stage number (None for the methods).
        """
        ptq = [v for v in self.cfg.variants
               if VARIANTS[v][1] != "qat" and not self.state.has(record_key(method, dim, v, stage))]
        base = {"method": method, "dim": dim, "d": d_full, "float_ckpt": str(run_dir),
                "finetune_epochs": finetune_epochs, "stage": stage}
        if ptq:
            model = model.to(self.device)
            bs = self.cfg.train.eval_batch_size
            emb = {name: normalised_embeddings(model, getattr(self.dataset, name), bs, self.device, desc=name)
                   for name in ("train", "query", "gallery")}
            scales: dict[int, float] = {}
            for v in ptq:
                bits, quant, rerank = VARIANTS[v]
                if bits < 32 and bits not in scales:
                    scales[bits] = calibrate_scale(emb["train"], bits)
                if rerank and 8 not in scales:
                    scales[8] = calibrate_scale(emb["train"], 8)
                m = evaluate_embeddings(emb["query"], emb["gallery"], self.dataset.query, self.dataset.gallery,
                                        bits, scales.get(bits), scales[8] if rerank else None, self.cfg.shortlist)
                self._add(base, v, m, own_seconds, total_seconds, scale=scales.get(bits))
        if "int8-qat" in self.cfg.variants and not self.state.has(record_key(method, dim, "int8-qat", stage)):
            qdir = self.out / "qat8" / (f"{method}_{dim}" + (f"_stage{stage}" if stage is not None else ""))
            qcfg = QATConfig(bits=8, epochs=self.cfg.qat_epochs, lr_scale=self.cfg.qat_lr_scale)
            if _run_done(qdir):
                qmodel, qsec = load_model(qdir), _summary_seconds(qdir)
            else:
                self._status(f"{method} {dim}: int8 QAT fine-tune")
                qmodel, summary = qat_finetune(load_model(run_dir) if run_dir.is_dir() else model, self.dataset, qcfg,
                                               self.cfg.train, qdir)
                qsec = float(summary["train_seconds"])
                self.state.invocation["trained"] += 1
                qmodel = load_model(qdir)
            m = read_config(qdir).get("metrics")
            if m is None or not all(k in m for k in ("rank1", "mAP", "mINP")):
                m = evaluate_model_codes(qmodel.to(self.device), self.dataset, self.cfg.train.eval_batch_size,
                                         self.device)
            else:
                # fit evaluated the QAT model's eval output, the dequantised codes s*q: with one scale their
                # float distances rank exactly like the codec's integer distances (tests/test_compress.py)
                m = {**m, "bytes_per_embedding": bytes_per_embedding(dim, 8)}
            self._add({**base, "qat_ckpt": str(qdir), "finetune_epochs": finetune_epochs + self.cfg.qat_epochs},
                      "int8-qat", m, own_seconds + qsec, total_seconds + qsec, scale=float(qmodel.quant.scale))

    def _add(self, base: dict[str, Any], variant: str, m: dict[str, Any], own: float, total: float,
             scale: float | None) -> None:
        bits, quant, rerank = VARIANTS[variant]
        nbytes = int(m["bytes_per_embedding"])
        self.state.add({
            "key": record_key(base["method"], base["dim"], variant, base.get("stage")), **base, "variant": variant,
            "bits": bits,
            "quant": quant, "rerank": m.get("rerank"), "bytes_per_embedding": nbytes,
            "compression_ratio": round(base["d"] * 4 / nbytes, 3), "scale": scale,
            "rank1": round(m["rank1"], 5), "mAP": round(m["mAP"], 5), "mINP": round(m["mINP"], 5),
            "rank5": round(m.get("rank5", float("nan")), 5), "train_seconds": round(own, 2),
            "total_train_seconds": round(total, 2), "finished_at": _now()})
        if self.bar is not None:
            self.bar.update(1)

    def _status(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description(text)

    # -- the methods ----------------------------------------------------------------------------
    def finetuned(self, method: str, dim: int, dense, dense_seconds: float, d: int) -> None:
        run_dir = self.out / method / f"dim_{dim}"
        if self.all_done(method, dim):
            self.state.invocation["skipped"] += 1
            return
        if _run_done(run_dir):
            model = load_model(run_dir)
            own = _summary_seconds(run_dir)
        else:
            self._status(f"{method} {dim}: training")
            if self.cfg.from_scratch:
                from ..config import EmbeddingConfig

                mcfg = ModelConfig(backbone=BackboneConfig.for_size(self.cfg.model, img_size=tuple(self.cfg.img_size)),
                                   embedding=EmbeddingConfig(kind=method, dim=dim), num_classes=self.dataset.num_train_pids)
                model = build_model(mcfg, pretrained=self.cfg.pretrained)
                tcfg = self.cfg.train
            else:
                model = METHODS[method].from_dense(dense, dim)
                tcfg = dataclasses.replace(self.cfg.train, epochs=self.cfg.finetune_epochs, eval_every=0,
                                           warmup_epochs=0.0, lr=self.cfg.train.lr * self.cfg.finetune_lr_scale)
            summary = fit(model, self.dataset, tcfg, run_dir, metadata={"sweep": {"method": method, "dim": dim}})
            self.state.invocation["trained"] += 1
            own = float(summary["train_seconds"])
            model = load_model(run_dir)
        total = own if self.cfg.from_scratch else dense_seconds + own
        self.evaluate(method, dim, model, own, total, run_dir, d,
                      finetune_epochs=0 if self.cfg.from_scratch else self.cfg.finetune_epochs)

    def pruned(self, sizes: list[int], dense, dense_seconds: float, d: int) -> None:
        todo = [k for k in sizes if not self.all_done("prune", k)]
        self.state.invocation["skipped"] += len(sizes) - len(todo)
        if not todo:
            return
        walk = [k for k in sizes if k >= min(todo)]  # stages up to the smallest unfinished size
        schedule = PruneSchedule(walk, self.cfg.epochs, self.cfg.finetune_fraction)
        tcfg = dataclasses.replace(self.cfg.train, warmup_epochs=0.0, lr=self.cfg.train.lr * self.cfg.finetune_lr_scale)

        def on_stage(k: int, model, record: dict[str, Any]) -> None:
            if not record.get("resumed"):
                self.state.invocation["trained"] += 1
            if not self.all_done("prune", k):
                self.evaluate("prune", k, model, float(record["total_train_seconds"]) - dense_seconds,
                              float(record["total_train_seconds"]), Path(record["ckpt"]), d,
                              finetune_epochs=(walk.index(k) + 1) * schedule.stage_epochs)
            self._status(f"prune {k}: done")

        self._status(f"prune: walking {walk}")
        iterative_prune(dense, self.dataset, schedule, tcfg, self.out / "prune", start_seconds=dense_seconds,
                        on_stage=on_stage)

    def control_stages(self, sizes: list[int]) -> int:
        """How many fine-tuning stages the control needs: one per dimension-pruning stage (else one)."""
        return len(sizes) if "prune" in self.cfg.methods else 1

    def control(self, stages: int, dense, dense_seconds: float, d: int) -> None:
        """The equal-budget control: the dense model fine-tuned stage after stage with the fine-tuning
        schedule of slice/low-rank (= one stage) and of every dimension-pruning stage (same epochs,
        learning rate, no warm-up), nothing compressed. Stage j matches slice/low-rank (j = 1) and the
        j-th pruning stage; its int8 QAT variant adds the same QAT fine-tune as theirs."""
        tcfg = dataclasses.replace(self.cfg.train, epochs=self.cfg.finetune_epochs, eval_every=0, warmup_epochs=0.0,
                                   lr=self.cfg.train.lr * self.cfg.finetune_lr_scale)
        model, total = dense, dense_seconds
        for j in range(1, stages + 1):
            run_dir = self.out / "control" / f"stage_{j}"
            if _run_done(run_dir):
                own = _summary_seconds(run_dir)
                if self.all_done("full", d, j):
                    self.state.invocation["skipped"] += 1
            else:
                self._status(f"control: stage {j}/{stages}")
                summary = fit(model, self.dataset, tcfg, run_dir, metadata={"sweep": {"method": "control", "stage": j}})
                self.state.invocation["trained"] += 1
                own = float(summary["train_seconds"])
            model = load_model(run_dir)
            total += own
            if not self.all_done("full", d, j):
                self.evaluate("full", d, model, total - dense_seconds, total, run_dir, d,
                              finetune_epochs=j * tcfg.epochs, stage=j)

    def run(self) -> list[dict[str, Any]]:
        dense, dense_seconds, dense_path = self.dense()
        d = dense.cfg.feature_dim
        if dense.cfg.embedding.kind != "full":
            raise ValueError(f"{dense_path}: the sweep's dense model must have a full embedding, got "
                             f"{dense.cfg.embedding.kind!r}")
        sizes = self.cfg.resolved_sizes(d)
        stages = self.control_stages(sizes) if self.cfg.control else 0
        total = len(self.cfg.variants) * (1 + stages + len(sizes) * len(self.cfg.methods))
        done = sum(1 for r in self.state.records if r["key"].split("/")[0] in ("full", *self.cfg.methods))
        self.bar = tqdm(total=total, initial=min(done, total), desc="sweep", unit="run")
        try:
            if self.all_done("full", d):
                self.state.invocation["skipped"] += 1
            else:
                self.evaluate("full", d, dense, dense_seconds, dense_seconds, dense_path, d)
            if stages and not self.cfg.from_scratch:
                self.control(stages, dense, dense_seconds, d)
            for method in self.cfg.methods:
                if method == "prune":
                    self.pruned(sizes, dense, dense_seconds, d)
                else:
                    for k in sizes:
                        self.finetuned(method, k, dense, dense_seconds, d)
        finally:
            self.bar.close()
            self.state.invocation["finished_at"] = _now()
            self.state.save()
        return self.state.records


def run_sweep(cfg: SweepConfig, dataset, quick: bool = False, command: str | None = None) -> list[dict[str, Any]]:
    """Run (or resume) the sweep; returns the records. Writes sweep.json, sweep.md and sweep.png.

    ``command``: the command line, recorded with this invocation (the report lists them).
    """
    if quick:
        cfg = quick_config(cfg)
    sweep = Sweep(cfg, dataset)
    if command:
        sweep.state.invocation["command"] = command
        sweep.state.save()
    t0 = time.time()
    records = sweep.run()
    from .report import write_report

    commands = [inv["command"] for inv in sweep.state.data["invocations"] if inv.get("command")]
    write_report(sweep.state.data, Path(cfg.out), command="\n".join(commands) or None)
    tqdm.write(f"sweep finished in {time.time() - t0:.0f}s: {len(records)} records")
    return records
