"""Which artifact of a bundle runs here: the fastest on this device among those accurate enough.

The best artifact depends on the device: OpenVINO int8 ran 2-3x faster than fp32 on an AVX-512
VNNI CPU and *slower* on an AVX2-only one. So, unless the caller names an artifact (or a
backend/precision), the runtime measures the candidates once on this device and remembers the
answer. ``docs/runtime.md`` ("Which artifact runs") states the rules for users; in short:

1. **Runnable here**: the artifact's backend library is installed and the artifact opens on this
   device (TensorRT needs an NVIDIA GPU: without one it fails to open and is left out).
2. **Accurate enough**, by what the bundle records (``manifest.accuracy``, measured at export on
   the export data set's query/gallery): an artifact with a recorded mAP is a candidate when it is
   at most ``max_map_drop`` points below the reference (``torch-fp32``, else the best recorded
   mAP); the tolerance is :attr:`ChoiceConfig.max_map_drop`, else the budget the exporter recorded
   for that artifact (``max_map_drop_points``), else 0.5 points (the exporter's default budget).
   An artifact with no recorded accuracy is a candidate only if it is a float32 graph (the
   exporter checked those against PyTorch to 1e-4 and refuses to write them otherwise) or the
   manifest's default artifact (whoever made it the default vouched for it). Anything else
   (an int8 or fp16 artifact nobody evaluated) runs only when asked for by name.
3. **Fastest**: each candidate is timed briefly on a synthetic input of the bundle's shape, at
   batch 1 and at the run's batch size (warm-up calls, then timed calls within a budget of a few
   seconds for all together; a fixed-batch graph only at batch 1, as a batch of n is n such
   calls); its score is the geometric mean of its per-image time at the two batch sizes, so
   neither latency nor throughput alone decides. The lowest score wins, except
   that the manifest's default is kept when it is within ``margin`` (5 %) of the winner.

The decision is cached as JSON, keyed by the manifest's SHA-256, :func:`cpu_info().key
<edgereid.runtime.cpu_features.cpu_info>`, the backend libraries' versions and the settings that
change speed or eligibility (threads, backend options, tolerance); not by batch size, so that
enrolment and queries on one device run the same artifact whatever their batch sizes. The file
lives in ``BUNDLE/runtime-cache/`` when the bundle folder is writable, else in the user's cache
(``$XDG_CACHE_HOME/edgereid`` or ``~/.cache/edgereid``); it is written atomically, under a lock so
that two processes starting together measure once, and a corrupt or foreign file is ignored with
a note and replaced.

Modes (:data:`CHOICE_MODES`; ``EDGEREID_ARTIFACT_CHOICE`` sets the default): ``auto`` reuses the
cached decision or measures once, ``measure`` measures again now (and replaces the cache),
``manifest`` runs the manifest's default artifact without measuring anything.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgereid.data.atomic import write_text_atomic

from .backends import library_version, open_backend
from .bundle import Artifact, Bundle
from .cpu_features import cpu_info
from .timing import latency_stats

__all__ = ["CHOICE_MODES", "CHOICE_ENV", "ChoiceConfig", "Candidate", "ArtifactChoice", "resolve_mode",
           "eligible_candidates", "choose_artifact", "explicit_choice", "user_cache_dir", "CACHE_SUBDIR"]

CHOICE_ENV = "EDGEREID_ARTIFACT_CHOICE"
CHOICE_MODES: dict[str, str] = {
    "auto": "the fastest artifact within the recorded accuracy tolerance on this device, measured once and cached",
    "measure": "like auto, but measure again now and replace the cached decision",
    "manifest": "the manifest's default artifact, nothing measured",
}
CACHE_FORMAT = "edgereid-artifact-choice"
CACHE_VERSION = 1
CACHE_SUBDIR = "runtime-cache"  # inside the bundle folder
DEFAULT_MAX_MAP_DROP = 0.5  # mAP points: the exporter's default budget (ExportOptions.max_map_drop)
REFERENCE_ACCURACY = "torch-fp32"  # the accuracy entry the exporter measures every artifact against
FLOAT32_PRECISIONS = ("fp32", "f32", "float32")
_LOCK_WAIT_S = 120.0  # another process measuring the same bundle: wait this long for its answer
_IN_PROCESS = threading.Lock()  # POSIX record locks do not exclude threads of one process


@dataclass
class ChoiceConfig:
    """How the automatic choice measures and where it caches. Defaults suit a device at work."""

    max_map_drop: float | None = None  # tolerance in mAP points (None: the export's recorded budget, else 0.5)
    seconds: float = 2.0  # timing budget for all candidates together (opening/compiling them is extra)
    warmup: int = 2  # untimed calls per candidate and batch size
    min_calls: int = 3  # timed calls per candidate and batch size, at least ...
    max_calls: int = 25  # ... and at most (the budget ends it earlier for slow models)
    margin: float = 0.05  # the manifest's default is kept unless another candidate is this much faster
    cache_dir: str | None = None  # the fallback cache folder (None: $XDG_CACHE_HOME/edgereid or ~/.cache/edgereid)


@dataclass
class Candidate:
    """One artifact as the choice saw it: may it run here, why (not), and how fast it was."""

    name: str
    backend: str
    precision: str
    eligible: bool
    why: str
    b1_ms: float | None = None  # median latency of one call at batch 1
    bn_ms: float | None = None  # median latency of one call at the measured batch size (fixed-batch graphs: n x b1)
    score_ms: float | None = None  # geometric mean of the per-image times at batch 1 and batch n
    bn_timed: bool = True  # False: a fixed-batch graph, bn_ms is n x b1_ms (n calls), not timed

    def timing_text(self, batch: int | None) -> str:
        if self.score_ms is None:
            return f"{self.name} -"
        if not self.bn_timed or batch in (None, 1):
            return f"{self.name} {self.score_ms:.3g} ms/image (b1 {self.b1_ms:.3g} ms/call)"
        return f"{self.name} {self.score_ms:.3g} ms/image (b1 {self.b1_ms:.3g}, b{batch} {self.bn_ms:.3g} ms/call)"


@dataclass
class ArtifactChoice:
    """Which artifact runs, how it was decided and why: what ``info``, ``bench`` and stderr report.

    ``how``: ``explicit`` (named by the caller), ``manifest`` (the default, auto choice off),
    ``measured`` (timed now), ``cached`` (timed before on this device), ``single`` (one candidate:
    nothing to time), ``fallback`` (no candidate: the manifest's default), ``pending`` (reported
    without measuring, and nothing is cached yet).
    """

    artifact: str | None
    how: str
    reason: str
    mode: str
    candidates: list[Candidate] = field(default_factory=list)
    cache_path: str | None = None
    measured_utc: str | None = None
    batch_size: int | None = None  # the batch size the candidates were timed at (besides 1)
    verdict: str | None = None  # measured/cached: why the winner won ("fastest here of 3 within tolerance")
    cpu: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # ignored cache files, cache fallbacks: for stderr

    def line(self) -> str:
        """The one line commands print on stderr: ``artifact: NAME (why; where cached)``."""
        return f"artifact: {self.artifact or '(not chosen yet)'} ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["line"] = self.line()
        return out


# ---------------------------------------------------------------------------------------------
# eligibility: what the bundle records
# ---------------------------------------------------------------------------------------------


def resolve_mode(mode: str | None) -> str:
    """``mode``, else ``$EDGEREID_ARTIFACT_CHOICE``, else ``auto``; refuses unknown values."""
    source = "artifact choice"
    if mode is None:
        mode = os.environ.get(CHOICE_ENV) or "auto"
        source = CHOICE_ENV
    if mode not in CHOICE_MODES:
        raise ValueError(f"{source}: expected one of {', '.join(CHOICE_MODES)}, got {mode!r}")
    return mode


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _recorded_accuracy(bundle: Bundle) -> tuple[dict[str, dict], str | None, float | None]:
    """``(entries with a numeric mAP, reference name, reference mAP)`` from ``manifest.accuracy``.

    The manifest loader does not validate this section (it is informative), so anything malformed
    is read as "not recorded", never as an error.
    """
    raw = bundle.manifest.get("accuracy")
    if not isinstance(raw, dict):
        return {}, None, None
    entries = {k: v for k, v in raw.items() if isinstance(v, dict) and _number(v.get("mAP")) is not None}
    if not entries:
        return {}, None, None
    ref = REFERENCE_ACCURACY if REFERENCE_ACCURACY in entries else max(entries, key=lambda k: entries[k]["mAP"])
    return entries, ref, float(entries[ref]["mAP"])


def _accuracy_verdict(art: Artifact, bundle: Bundle, max_map_drop: float | None) -> tuple[bool, str]:
    entries, ref, ref_map = _recorded_accuracy(bundle)
    entry = entries.get(art.name)
    if entry is not None and ref is not None and ref_map is not None:
        tol = max_map_drop
        if tol is None:
            tol = _number(entry.get("max_map_drop_points"))
        if tol is None:
            tol = DEFAULT_MAX_MAP_DROP
        drop = 100.0 * (ref_map - float(entry["mAP"]))
        text = f"mAP {float(entry['mAP']):.4f}, {drop:+.2f} points below {ref} (tolerance {tol:g})"
        return drop <= tol + 1e-9, ("recorded " if drop <= tol + 1e-9 else "out of tolerance: recorded ") + text
    if art.precision.lower() in FLOAT32_PRECISIONS:
        return True, "float32 graph (checked against PyTorch at export)"
    if art.name == bundle.default_artifact:
        return True, "the manifest's default artifact (no accuracy recorded)"
    return False, f"no accuracy recorded for this {art.precision} artifact (run it by name to use it)"


def eligible_candidates(bundle: Bundle, max_map_drop: float | None = None) -> list[Candidate]:
    """Every artifact with its verdict: recorded accuracy within tolerance, backend library installed.

    Cheap (no file is hashed, no library imported); whether an eligible artifact really opens on
    this device is found out when it is timed.
    """
    out = []
    for art in bundle.artifacts.values():
        ok, why = _accuracy_verdict(art, bundle, max_map_drop)
        if ok and library_version(art.backend) is None:
            ok, why = False, f"{art.backend} is not installed here"
        out.append(Candidate(art.name, art.backend, art.precision, ok, why))
    return out


# ---------------------------------------------------------------------------------------------
# the cache
# ---------------------------------------------------------------------------------------------


def user_cache_dir(config: ChoiceConfig | None = None) -> Path | None:
    """The per-user cache folder: ``ChoiceConfig.cache_dir``, ``$XDG_CACHE_HOME/edgereid``, ``~/.cache/edgereid``."""
    if config is not None and config.cache_dir:
        return Path(config.cache_dir)
    base = os.environ.get("XDG_CACHE_HOME")
    if base:
        return Path(base) / "edgereid"
    try:
        return Path.home() / ".cache" / "edgereid"
    except (RuntimeError, KeyError):  # no home folder (a bare service account)
        return None


def _manifest_sha256(bundle: Bundle) -> str:
    return hashlib.sha256(bundle.manifest_path.read_bytes()).hexdigest()


def _cache_key(bundle: Bundle, tolerance: float | None, threads: int | None,
               backend_options: Mapping[str, Any]) -> dict[str, Any]:
    from .backends import BACKENDS

    return {"manifest_sha256": _manifest_sha256(bundle), "cpu": cpu_info().key,
            "libraries": {name: library_version(name) for name in BACKENDS},
            "threads": threads, "backend_options": {k: str(v) for k, v in sorted(backend_options.items())},
            "max_map_drop": tolerance}


def _cache_file_name(key: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return f"artifact-choice-{key['manifest_sha256'][:12]}-{digest}.json"


def _cache_dirs(bundle: Bundle, config: ChoiceConfig) -> list[Path]:
    dirs = [bundle.root / CACHE_SUBDIR]
    user = user_cache_dir(config)
    if user is not None and user.resolve() != dirs[0].resolve():
        dirs.append(user)
    return dirs


def _read_cache(path: Path, key: dict[str, Any], eligible: set[str],
                notes: list[str]) -> dict | None:
    """The cached decision at ``path`` if it is sound and still applies; a bad one earns a note."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        notes.append(f"ignored unreadable artifact-choice cache {path} ({type(exc).__name__}: {exc}); measuring again")
        return None
    problem = None
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        problem = f"not an {CACHE_FORMAT} file"
    elif data.get("version") != CACHE_VERSION:
        problem = f"version {data.get('version')!r}, this edgereid reads {CACHE_VERSION}"
    elif data.get("key") != key:
        problem = "its key (bundle, CPU, libraries, settings) is not this run's"
    elif data.get("artifact") not in eligible:
        problem = f"its artifact {data.get('artifact')!r} is not a candidate here"
    elif not isinstance(data.get("candidates"), list):
        problem = "no candidate list"
    if problem:
        notes.append(f"ignored artifact-choice cache {path}: {problem}; measuring again")
        return None
    return data


class _CacheLock:
    """An exclusive POSIX record lock on ``folder/name.lock``: two processes starting together measure once.

    :meth:`acquire` raises OSError when the folder cannot hold the lock file (not writable): the
    caller moves on to the next cache folder. lockf, not flock: OpenVINO forks a helper process,
    which would inherit an flock and hold it after we are done.
    """

    def __init__(self, folder: Path, name: str) -> None:
        self.path = folder / f"{name}.lock"
        self.fd: int | None = None

    def acquire(self) -> _CacheLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
        except ImportError:  # not POSIX: no cross-process exclusion; the atomic write still holds
            return self
        deadline = time.monotonic() + _LOCK_WAIT_S
        while True:
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError:
                if time.monotonic() > deadline:
                    return self  # a stuck holder: measure anyway (the write is still atomic)
                time.sleep(0.05)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the POSIX lock
            self.fd = None


# ---------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------


def _median_call_ms(fn, warmup: int, min_calls: int, max_calls: int, budget_s: float) -> float:
    """Median latency of ``fn()``: at least ``min_calls`` calls, more while the budget lasts (up to ``max_calls``)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_calls and (len(times) < min_calls or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return latency_stats(times)["median_ms"]


def _time_candidate(bundle: Bundle, cand: Candidate, batch: int, threads: int | None,
                    backend_options: Mapping[str, Any], budget_s: float, cfg: ChoiceConfig) -> None:
    """Fill ``cand``'s timings, or mark it not runnable here (a damaged file still raises)."""
    bundle.verify(cand.name)  # a file that does not match its hash is a damaged bundle: refused, as always
    try:
        backend = open_backend(bundle, artifact=cand.name, max_batch=batch, threads=threads, **backend_options)
    except Exception as exc:  # library, device or plugin refuses it here (TensorRT without a GPU, ...)
        cand.eligible, cand.why = False, f"cannot run here: {_first_line(exc)}"
        return
    try:
        rng = np.random.default_rng(0)
        x1 = rng.standard_normal((1, *backend.input_shape)).astype(np.float32)
        # A fixed-batch graph runs a batch of n as ceil(n / its batch) calls: timing one call is enough (the
        # exporter's default is batch 1), which keeps the choice within a few seconds on big models.
        timed_n = batch > 1 and backend.fixed_batch is None
        half = budget_s / 2 if timed_n else budget_s
        cand.b1_ms = _median_call_ms(lambda: backend.embed(x1), cfg.warmup, cfg.min_calls, cfg.max_calls, half)
        if timed_n:
            xn = rng.standard_normal((batch, *backend.input_shape)).astype(np.float32)
            # warm already (batch 1 ran): one untimed call for the new shape
            cand.bn_ms = _median_call_ms(lambda: backend.embed(xn), 1, cfg.min_calls, cfg.max_calls, half)
        else:
            cand.bn_ms, cand.bn_timed = cand.b1_ms * math.ceil(batch / (backend.fixed_batch or 1)), False
    except Exception as exc:  # it opened but cannot run (a plugin or device failure): not a candidate here
        cand.eligible, cand.why = False, f"cannot run here: {_first_line(exc)}"
        cand.b1_ms = cand.bn_ms = None
        return
    finally:
        backend.close()
    cand.score_ms = math.sqrt(cand.b1_ms * cand.bn_ms / batch)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def _pick(cands: list[Candidate], default: str, margin: float) -> tuple[Candidate, str]:
    timed = sorted((c for c in cands if c.eligible and c.score_ms is not None), key=lambda c: c.score_ms)
    best = timed[0]
    dflt = next((c for c in timed if c.name == default), None)
    if dflt is not None and dflt is not best and dflt.score_ms <= best.score_ms * (1 + margin):
        return dflt, f"the manifest's default, within {margin:.0%} of the fastest here ({best.name})"
    return best, f"fastest here of {len(timed)} within tolerance"


def _describe(cands: list[Candidate], batch: int | None) -> str:
    timed = sorted((c for c in cands if c.score_ms is not None and c.eligible), key=lambda c: c.score_ms)
    out = ", ".join(c.timing_text(batch) for c in timed)
    excluded = [f"{c.name} ({c.why})" for c in cands if not c.eligible]
    if out and any(c.bn_timed for c in timed) and batch not in (None, 1):
        out = f"{out}; ms/image: geometric mean over batch 1 and {batch}"
    elif out:
        out = f"{out}; ms/image at batch 1 (fixed-batch graphs)" if batch not in (None, 1) else out
    if excluded:
        out += ("; " if out else "") + "left out: " + ", ".join(excluded)
    return out


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------
# the choice
# ---------------------------------------------------------------------------------------------


def explicit_choice(bundle: Bundle, artifact: str, asked: Mapping[str, Any]) -> ArtifactChoice:
    """The record for an artifact the caller named (``asked``: the backend/precision/artifact given)."""
    text = ", ".join(f"{k}={v}" for k, v in asked.items() if v)
    return ArtifactChoice(artifact=artifact, how="explicit", reason=f"asked for explicitly: {text}", mode="explicit",
                          cpu=cpu_info().to_dict())


def choose_artifact(bundle: Bundle, *, mode: str | None = None, config: ChoiceConfig | None = None,
                    batch_size: int = 16, threads: int | None = None,
                    backend_options: Mapping[str, Any] | None = None, measure: bool = True) -> ArtifactChoice:
    """Decide which artifact of ``bundle`` runs here (see the module docstring for the rules).

    ``batch_size``, ``threads`` and ``backend_options`` are the run's own (candidates are timed as
    they would run). ``measure=False`` never times anything (``reid-runtime info``): it reports the
    cached decision, or ``how="pending"`` when there is none yet. For ``how`` in ``manifest``,
    ``fallback`` and ``pending``, ``artifact`` is the manifest's default (or None when pending):
    the caller opens the default with :func:`open_backend`'s usual fallbacks.
    """
    cfg = config or ChoiceConfig()
    mode = resolve_mode(mode)
    backend_options = dict(backend_options or {})
    cpu = cpu_info().to_dict()
    if mode == "manifest":
        return ArtifactChoice(artifact=bundle.default_artifact, how="manifest", mode=mode, cpu=cpu,
                              reason=f"the manifest's default; automatic choice off ({mode})")
    cands = eligible_candidates(bundle, cfg.max_map_drop)
    eligible = [c for c in cands if c.eligible]
    if not eligible:
        return ArtifactChoice(artifact=bundle.default_artifact, how="fallback", mode=mode, candidates=cands, cpu=cpu,
                              reason="no artifact is within tolerance and installed here, so the manifest's default; "
                                     + _describe(cands, None))
    if len(eligible) == 1:
        only = eligible[0]
        return ArtifactChoice(artifact=only.name, how="single", mode=mode, candidates=cands, cpu=cpu,
                              reason=f"the only candidate of {len(cands)}: {only.why}"
                                     + (f"; {_describe(cands, None)}" if len(cands) > 1 else ""))
    key = _cache_key(bundle, cfg.max_map_drop, threads, backend_options)
    name = _cache_file_name(key)
    notes: list[str] = []
    names = {c.name for c in eligible}
    dirs = _cache_dirs(bundle, cfg)
    if mode == "auto":
        for folder in dirs:
            data = _read_cache(folder / name, key, names, notes)
            if data is not None:
                return _from_cache(data, folder / name, cands, cpu, mode, notes)
    if not measure:
        return ArtifactChoice(artifact=None, how="pending", mode=mode, candidates=cands, cpu=cpu, notes=notes,
                              reason=f"not measured on this CPU yet: {len(eligible)} candidates "
                                     f"({', '.join(sorted(names))}); the next enroll/match/query/eval/bench measures "
                                     "them (or `reid-runtime info --bundle B --artifact-choice measure`)")
    with _IN_PROCESS:
        for i, folder in enumerate(dirs):
            try:
                lock = _CacheLock(folder, name).acquire()
            except OSError as exc:  # the folder cannot hold the lock file: not writable here
                nxt = f"caching in {dirs[i + 1]}" if i + 1 < len(dirs) else "the choice is not cached"
                notes.append(f"cannot write to {folder} ({exc.strerror or exc}); {nxt}")
                continue
            try:
                if mode == "auto":  # another process may have measured while we waited for the lock
                    data = _read_cache(folder / name, key, names, notes)
                    if data is not None:
                        return _from_cache(data, folder / name, cands, cpu, mode, notes)
                choice = _measure(bundle, cands, cfg, batch_size, threads, backend_options, mode, cpu, notes)
                if choice.how == "measured":
                    _store(choice, key, bundle, [folder, *dirs[i + 1:]], name, notes)
                return choice
            finally:
                lock.release()
        choice = _measure(bundle, cands, cfg, batch_size, threads, backend_options, mode, cpu, notes)
        if choice.how == "measured":
            choice.reason += "; measured now, not cached (no writable cache folder)"
        return choice


def _store(choice: ArtifactChoice, key: dict, bundle: Bundle, folders: list[Path], name: str,
           notes: list[str]) -> None:
    """Write the decision into the first folder that takes it; say where in the choice's reason."""
    record = json.dumps(_cache_record(choice, key, bundle), indent=2) + "\n"
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_text_atomic(folder / name, record)
        except OSError as exc:
            notes.append(f"could not write the artifact-choice cache in {folder} ({exc.strerror or exc})")
            continue
        choice.cache_path = str(folder / name)
        choice.reason += f"; measured now, cached in {choice.cache_path}"
        return
    choice.reason += "; measured now, not cached (no writable cache folder)"


def _measure(bundle: Bundle, cands: list[Candidate], cfg: ChoiceConfig, batch: int, threads: int | None,
             backend_options: Mapping[str, Any], mode: str, cpu: dict, notes: list[str]) -> ArtifactChoice:
    eligible = [c for c in cands if c.eligible]
    budget = cfg.seconds / max(len(eligible), 1)
    for cand in eligible:
        _time_candidate(bundle, cand, batch, threads, backend_options, budget, cfg)
    runnable = [c for c in cands if c.eligible]
    if not runnable:
        return ArtifactChoice(artifact=bundle.default_artifact, how="fallback", mode=mode, candidates=cands, cpu=cpu,
                              notes=notes, reason="no candidate runs here, so the manifest's default; "
                                                  + _describe(cands, batch))
    if len(runnable) == 1:  # the others failed to open or run: remembered too, so they are not retried each run
        winner, verdict = runnable[0], f"the only one of {len(eligible)} candidates that runs here"
    else:
        winner, verdict = _pick(cands, bundle.default_artifact, cfg.margin)
    return ArtifactChoice(artifact=winner.name, how="measured", mode=mode, candidates=cands, cpu=cpu, notes=notes,
                          batch_size=batch, measured_utc=_utc_now(), verdict=verdict,
                          reason=f"{verdict}: {_describe(cands, batch)}")


def _cache_record(choice: ArtifactChoice, key: dict, bundle: Bundle) -> dict[str, Any]:
    return {"format": CACHE_FORMAT, "version": CACHE_VERSION, "key": key, "bundle": str(bundle.root),
            "artifact": choice.artifact, "verdict": choice.verdict, "measured_utc": choice.measured_utc,
            "batch_size": choice.batch_size, "cpu": choice.cpu, "candidates": [asdict(c) for c in choice.candidates]}


def _from_cache(data: dict, path: Path, cands: list[Candidate], cpu: dict, mode: str,
                notes: list[str]) -> ArtifactChoice:
    timings = {c.get("name"): c for c in data["candidates"] if isinstance(c, dict)}
    for cand in cands:
        old = timings.get(cand.name, {})
        if cand.eligible and old.get("eligible") is False:  # it failed to open when measured
            cand.eligible, cand.why = False, str(old.get("why", "could not run here when measured"))
        for attr in ("b1_ms", "bn_ms", "score_ms"):
            setattr(cand, attr, _number(old.get(attr)))
        cand.bn_timed = old.get("bn_timed") is not False
    batch = data.get("batch_size") if isinstance(data.get("batch_size"), int) else None
    verdict = str(data.get("verdict") or "measured before")
    return ArtifactChoice(artifact=data["artifact"], how="cached", mode=mode, candidates=cands, cpu=cpu, notes=notes,
                          cache_path=str(path), measured_utc=data.get("measured_utc"), batch_size=batch,
                          verdict=verdict, reason=f"{verdict} (measured {data.get('measured_utc')}): "
                                                  f"{_describe(cands, batch)}; cached in {path}")
