"""Load, validate and verify a model bundle (``docs/bundle-format.md``), and write one.

A bundle is the only thing the device receives from the export stage, so this module is where a
wrong or damaged delivery must be caught: an unknown format, a manifest field of the wrong type, a
file whose SHA-256 does not match (a partial copy, a bit flip, a swapped model). Every refusal
names the manifest, the field or file, what was expected and what was found.

:class:`BundleWriter` is the other half of the contract: the exporter (and ``reid-runtime
build-engine`` on the device) use it so that paths, digests and sizes are always computed the
same way and the manifest is replaced atomically (``edgereid.data.atomic``: a temporary file,
fsync, rename, fsync the folder): a crash leaves the old manifest or the new one, never half of one.

Only the standard library is used here (JSON, hashlib): no pickle, nothing heavy.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from edgereid.data.atomic import write_json_atomic
from edgereid.data.json_file import read_json_object

from .tables import BACKENDS, TARGETS

__all__ = [
    "BundleError",
    "FORMAT",
    "FORMAT_VERSION",
    "KNOWN_FORMAT_VERSIONS",
    "MANIFEST_NAME",
    "FileEntry",
    "Artifact",
    "InputSpec",
    "EmbeddingSpec",
    "Bundle",
    "load_bundle",
    "sha256_file",
    "BundleWriter",
]

FORMAT = "edgereid-bundle"
FORMAT_VERSION = 1
KNOWN_FORMAT_VERSIONS = (1,)
MANIFEST_NAME = "manifest.json"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_HASH_CHUNK = 1 << 20  # hashing streams 1 MiB at a time: engines can be hundreds of MB


class BundleError(ValueError):
    """The bundle is not usable; the message names the manifest field or file and why."""


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (bounded memory for big engines)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# typed views of the manifest
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One file of an artifact: its role (``model``, ``xml``, ``bin``, ``engine``), where, digest."""

    role: str
    path: str  # POSIX path relative to the bundle root
    sha256: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "bytes": self.bytes}


@dataclass(frozen=True)
class Artifact:
    """A runnable form of the model for one backend at one precision."""

    name: str
    backend: str
    precision: str
    files: dict[str, FileEntry]
    extra: dict[str, Any] = field(default_factory=dict)  # built_for, notes: kept, not interpreted

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "backend": self.backend, "precision": self.precision,
               "files": {role: f.to_dict() for role, f in self.files.items()}}
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class InputSpec:
    """What the graph's input tensor holds; the runtime's preprocessing follows it exactly."""

    name: str = "images"
    layout: str = "NCHW"
    dtype: str = "float32"
    height: int = 256
    width: int = 128
    channel_order: str = "RGB"
    resize: str = "bilinear"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    batch: int | str = "dynamic"  # "dynamic" or the fixed batch size the graph was exported with

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the graph requires, or None when any batch size is accepted."""
        return None if self.batch == "dynamic" else int(self.batch)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layout": self.layout, "dtype": self.dtype, "height": self.height,
                "width": self.width, "channel_order": self.channel_order, "resize": self.resize,
                "scale": self.scale, "mean": list(self.mean), "std": list(self.std), "batch": self.batch}


@dataclass(frozen=True)
class EmbeddingSpec:
    """What the graph outputs and how the gallery stores it (must equal the store header)."""

    output_name: str = "embedding"
    output: str = "float32"  # "float32" (normalised floats) or "codes" (integer levels)
    dim: int = 32
    bits: int = 8
    scale: float = 1.0 / 127.0
    metric: str = "l2"
    normalized: bool = True
    scale_source: str = "calibration"

    def codec_spec(self):
        """The codec's view of this spec (what the gallery store header records)."""
        from .codec import CodecSpec  # runtime-internal; imported here to keep bundle.py stdlib-only

        return CodecSpec(dim=self.dim, bits=self.bits, scale=self.scale, metric=self.metric)

    def to_dict(self) -> dict[str, Any]:
        return {"output_name": self.output_name, "output": self.output, "dim": self.dim, "bits": self.bits,
                "scale": self.scale, "metric": self.metric, "normalized": self.normalized,
                "scale_source": self.scale_source}


# ---------------------------------------------------------------------------------------------
# field checks: every failure names the manifest, the field path, expected and got
# ---------------------------------------------------------------------------------------------


class _Fields:
    def __init__(self, manifest_path: Path) -> None:
        self.where = str(manifest_path)

    def fail(self, field_path: str, expected: str, got: Any) -> BundleError:
        return BundleError(f"{self.where}: field {field_path}: expected {expected}, got {got!r}")

    def get(self, obj: Mapping, key: str, prefix: str, default: Any = ...) -> Any:
        if key not in obj:
            if default is ...:
                raise BundleError(f"{self.where}: missing field {prefix}{key}")
            return default
        return obj[key]

    def string(self, obj: Mapping, key: str, prefix: str, default: Any = ..., choices=None) -> str:
        v = self.get(obj, key, prefix, default)
        if not isinstance(v, str) or not v:
            raise self.fail(prefix + key, "a non-empty string", v)
        if choices is not None and v not in choices:
            raise self.fail(prefix + key, "one of " + ", ".join(map(repr, choices)), v)
        return v

    def integer(self, obj: Mapping, key: str, prefix: str, default: Any = ..., minimum: int = 1) -> int:
        v = self.get(obj, key, prefix, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise self.fail(prefix + key, f"an integer >= {minimum}", v)
        return v

    def positive(self, obj: Mapping, key: str, prefix: str, default: Any = ...) -> float:
        v = self.get(obj, key, prefix, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise self.fail(prefix + key, "a finite number > 0", v)
        return float(v)

    def triple(self, obj: Mapping, key: str, prefix: str, default: Any, positive: bool) -> tuple:
        v = self.get(obj, key, prefix, default)
        ok = isinstance(v, (list, tuple)) and len(v) == 3 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            and (x > 0 or not positive) for x in v)
        if not ok:
            raise self.fail(prefix + key, "a list of 3 finite numbers" + (" > 0" if positive else ""), v)
        return tuple(float(x) for x in v)

    def mapping(self, obj: Mapping, key: str, prefix: str, default: Any = ...) -> dict:
        v = self.get(obj, key, prefix, default)
        if not isinstance(v, dict):
            raise self.fail(prefix + key, "an object", v)
        return v


def _check_relpath(fields: _Fields, path: Any, field_path: str) -> str:
    """Artifact paths are relative POSIX paths inside the bundle (no absolute paths, no '..')."""
    if not isinstance(path, str) or not path:
        raise fields.fail(field_path, "a relative path inside the bundle", path)
    pure = PurePosixPath(path)
    if pure.is_absolute() or "\\" in path or any(part in ("..", "") for part in pure.parts) or ":" in pure.parts[0]:
        raise fields.fail(field_path, "a relative path inside the bundle (no '..', no absolute path)", path)
    return pure.as_posix()


def _parse_input(fields: _Fields, raw: dict) -> InputSpec:
    p = "input."
    d = InputSpec()
    batch = raw.get("batch", "dynamic")
    if batch != "dynamic" and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise fields.fail(p + "batch", "'dynamic' or an integer >= 1", batch)
    return InputSpec(
        name=fields.string(raw, "name", p, d.name),
        layout=fields.string(raw, "layout", p, d.layout, choices=("NCHW", "NHWC")),
        dtype=fields.string(raw, "dtype", p, d.dtype, choices=("float32",)),
        height=fields.integer(raw, "height", p),
        width=fields.integer(raw, "width", p),
        channel_order=fields.string(raw, "channel_order", p, d.channel_order, choices=("RGB", "BGR")),
        resize=fields.string(raw, "resize", p, d.resize, choices=("bilinear", "bicubic", "nearest")),
        scale=fields.positive(raw, "scale", p, d.scale),
        mean=fields.triple(raw, "mean", p, list(d.mean), positive=False),
        std=fields.triple(raw, "std", p, list(d.std), positive=True),
        batch=batch,
    )


def _parse_embedding(fields: _Fields, raw: dict) -> EmbeddingSpec:
    p = "embedding."
    d = EmbeddingSpec()
    bits = fields.integer(raw, "bits", p)
    if bits not in (1, 4, 8, 32):
        raise fields.fail(p + "bits", "one of 1, 4, 8, 32", bits)
    normalized = raw.get("normalized", True)
    if not isinstance(normalized, bool):
        raise fields.fail(p + "normalized", "true or false", normalized)
    output = fields.string(raw, "output", p, d.output, choices=("float32", "codes"))
    if bits == 32 and raw.get("scale") is None:
        # a float32 gallery has no quantisation step; 1.0 is what its store header records
        if output == "codes":
            raise fields.fail(p + "output", "'float32' when bits is 32 (codes need a scale)", output)
        scale = 1.0
    else:
        scale = fields.positive(raw, "scale", p)
    scale_source = raw.get("scale_source") or ("none" if bits == 32 else d.scale_source)
    if not isinstance(scale_source, str):
        raise fields.fail(p + "scale_source", "a string", scale_source)
    return EmbeddingSpec(
        output_name=fields.string(raw, "output_name", p, d.output_name),
        output=output,
        dim=fields.integer(raw, "dim", p),
        bits=bits,
        scale=scale,
        metric=fields.string(raw, "metric", p, d.metric),
        normalized=normalized,
        scale_source=scale_source,
    )


def _parse_artifact(fields: _Fields, raw: Any, i: int) -> Artifact:
    p = f"artifacts[{i}]."
    if not isinstance(raw, dict):
        raise fields.fail(f"artifacts[{i}]", "an object", raw)
    name = fields.string(raw, "name", p)
    backend = fields.string(raw, "backend", p, choices=tuple(BACKENDS))
    precision = fields.string(raw, "precision", p)
    files_raw = fields.mapping(raw, "files", p)
    if not files_raw:
        raise fields.fail(p + "files", "at least one file", files_raw)
    files: dict[str, FileEntry] = {}
    for role, entry in files_raw.items():
        fp = f"{p}files.{role}."
        if not isinstance(entry, dict):
            raise fields.fail(f"{p}files.{role}", "an object with path, sha256, bytes", entry)
        path = _check_relpath(fields, entry.get("path"), fp + "path")
        digest = entry.get("sha256")
        if not isinstance(digest, str) or not _SHA256_RE.match(digest):
            raise fields.fail(fp + "sha256", "64 lowercase hex digits", digest)
        size = fields.integer(entry, "bytes", fp, minimum=0)
        files[role] = FileEntry(role=role, path=path, sha256=digest, bytes=size)
    missing = [role for role in BACKENDS[backend].files if role not in files]
    if missing:
        raise fields.fail(p + "files", f"the file roles a {backend} artifact needs ({', '.join(BACKENDS[backend].files)}"
                          f": {BACKENDS[backend].formats})", sorted(files))
    extra = {k: v for k, v in raw.items() if k not in ("name", "backend", "precision", "files")}
    return Artifact(name=name, backend=backend, precision=precision, files=files, extra=extra)


# ---------------------------------------------------------------------------------------------
# the bundle
# ---------------------------------------------------------------------------------------------


class Bundle:
    """A parsed, structurally valid bundle. File digests are checked by :meth:`verify`.

    Construction (through :func:`load_bundle`) checks the manifest only; hashing is separate so
    that ``reid-runtime info`` stays instant on a bundle with a large engine, while every backend
    calls :meth:`verify` on the artifact it is about to run (:func:`open_backend` does).
    """

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest_path = root / MANIFEST_NAME
        self.manifest = manifest
        fields = _Fields(self.manifest_path)
        fmt = manifest.get("format")
        if fmt != FORMAT:
            raise fields.fail("format", repr(FORMAT), fmt)
        version = manifest.get("format_version")
        if version not in KNOWN_FORMAT_VERSIONS:
            raise fields.fail("format_version", "one of " + ", ".join(map(str, KNOWN_FORMAT_VERSIONS))
                              + " (a newer edgereid wrote this bundle?)", version)
        self.format_version: int = version
        self.target: str = fields.string(manifest, "target", "", "onnx", choices=tuple(TARGETS))
        self.input = _parse_input(fields, fields.mapping(manifest, "input", ""))
        self.embedding = _parse_embedding(fields, fields.mapping(manifest, "embedding", ""))
        raw_artifacts = fields.get(manifest, "artifacts", "")
        if not isinstance(raw_artifacts, list) or not raw_artifacts:
            raise fields.fail("artifacts", "a non-empty list", raw_artifacts)
        self.artifacts: dict[str, Artifact] = {}
        for i, raw in enumerate(raw_artifacts):
            art = _parse_artifact(fields, raw, i)
            if art.name in self.artifacts:
                raise fields.fail(f"artifacts[{i}].name", "a name not used by another artifact", art.name)
            self.artifacts[art.name] = art
        default = manifest.get("default_artifact", next(iter(self.artifacts)))
        if default not in self.artifacts:
            raise fields.fail("default_artifact", "the name of an artifact: " + ", ".join(self.artifacts), default)
        self.default_artifact: str = default
        self._verified: set[str] = set()

    # -- selection ---------------------------------------------------------------------------
    def artifact(self, name: str | None = None) -> Artifact:
        """The named artifact (the default one when ``name`` is None)."""
        name = name or self.default_artifact
        if name not in self.artifacts:
            raise BundleError(f"{self.manifest_path}: no artifact named {name!r}; "
                              f"the bundle has: {', '.join(self.artifacts)}")
        return self.artifacts[name]

    def select(self, backend: str | None = None, precision: str | None = None) -> Artifact:
        """The artifact for a backend/precision pair; unset parts come from the default artifact.

        With neither given, the default artifact. With only a backend, that backend's artifact at
        the default artifact's precision if there is one, else its first. With only a precision,
        the default backend's artifact at that precision if there is one, else the first artifact
        at that precision.
        """
        default = self.artifact()
        if backend is None and precision is None:
            return default
        candidates = [a for a in self.artifacts.values()
                      if (backend is None or a.backend == backend) and (precision is None or a.precision == precision)]
        if not candidates:
            have = ", ".join(f"{a.name} ({a.backend}, {a.precision})" for a in self.artifacts.values())
            want = " ".join(x for x in (f"backend={backend}" if backend else "",
                                        f"precision={precision}" if precision else "") if x)
            raise BundleError(f"{self.manifest_path}: no artifact for {want}; the bundle has: {have}")
        for prefer in (lambda a: a.backend == default.backend and a.precision == default.precision,
                       lambda a: a.precision == default.precision,
                       lambda a: a.backend == default.backend):
            for a in candidates:
                if prefer(a):
                    return a
        return candidates[0]

    def path(self, entry: FileEntry) -> Path:
        return self.root / entry.path

    def file(self, artifact: Artifact | str, role: str) -> Path:
        """Path of one file of an artifact, by role (``model``, ``xml``, ``engine``...)."""
        art = self.artifact(artifact) if isinstance(artifact, str) or artifact is None else artifact
        if role not in art.files:
            raise BundleError(f"{self.manifest_path}: artifact {art.name!r} has no {role!r} file "
                              f"(it has: {', '.join(art.files)})")
        return self.path(art.files[role])

    # -- verification ------------------------------------------------------------------------
    def verify(self, artifact: Artifact | str | None = None) -> Artifact:
        """Check every file of one artifact against its size and SHA-256; refuse on any mismatch.

        Done once per artifact per process (the result is remembered).
        """
        art = artifact if isinstance(artifact, Artifact) else self.artifact(artifact)
        if art.name in self._verified:
            return art
        for entry in art.files.values():
            path = self.path(entry)
            if not path.is_file():
                raise BundleError(f"{self.root}: artifact {art.name!r}: file {entry.path} is missing "
                                  f"(the manifest lists it as {entry.role})")
            size = path.stat().st_size
            if size != entry.bytes:
                raise BundleError(f"{self.root}: artifact {art.name!r}: file {entry.path} is {size} bytes, "
                                  f"the manifest expects {entry.bytes} (truncated or replaced?)")
            digest = sha256_file(path)
            if digest != entry.sha256:
                raise BundleError(f"{self.root}: artifact {art.name!r}: file {entry.path} does not match the "
                                  f"manifest: sha256 expected {entry.sha256}, got {digest} (altered or corrupt; "
                                  "re-copy the bundle)")
        self._verified.add(art.name)
        return art

    def verify_all(self) -> list[str]:
        """Verify every artifact; returns their names. Raises on the first bad file."""
        return [self.verify(a).name for a in self.artifacts.values()]

    # -- reporting ---------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """A short, JSON-ready description for ``reid-runtime info``."""
        model = self.manifest.get("model") if isinstance(self.manifest.get("model"), dict) else {}
        return {
            "path": str(self.root),
            "format_version": self.format_version,
            "created_utc": self.manifest.get("created_utc"),
            "edgereid_version": self.manifest.get("edgereid_version"),
            "target": self.target,
            "architecture": model.get("architecture"),
            "params": model.get("params"),
            "macs": model.get("macs"),
            "input": self.input.to_dict(),
            "embedding": self.embedding.to_dict(),
            "artifacts": [{"name": a.name, "backend": a.backend, "precision": a.precision,
                           "bytes": sum(f.bytes for f in a.files.values())} for a in self.artifacts.values()],
            "default_artifact": self.default_artifact,
            "accuracy": self.manifest.get("accuracy"),
            "open_set": self.manifest.get("open_set"),
        }

    def __repr__(self) -> str:
        return f"Bundle({str(self.root)!r}, artifacts={list(self.artifacts)})"


def load_bundle(path: str | os.PathLike, verify: bool | str = False) -> Bundle:
    """Read and validate ``path/manifest.json`` (``path`` may also be the manifest itself).

    ``verify=True`` checks the default artifact's files, a string checks the named artifact's,
    ``"all"`` checks every artifact; ``False`` checks structure only (backends verify before use).
    """
    root = Path(path)
    if root.is_file() and root.name == MANIFEST_NAME:
        root = root.parent
    if not root.exists():
        raise BundleError(f"bundle {root} does not exist")
    if not root.is_dir():
        raise BundleError(f"bundle {root} is not a folder (expected a folder holding {MANIFEST_NAME})")
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{root}: no {MANIFEST_NAME} (not an edgereid bundle)")
    try:
        manifest = read_json_object(manifest_path, "a bundle manifest (a JSON object)")
    except ValueError as exc:
        raise BundleError(str(exc)) from None
    bundle = Bundle(root, manifest)
    if verify == "all":
        bundle.verify_all()
    elif verify is True:
        bundle.verify()
    elif isinstance(verify, str) and verify:
        bundle.verify(verify)
    return bundle


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class BundleWriter:
    """Build (or extend) a bundle's manifest from files already written into the bundle folder.

    Typical use by the exporter::

        w = BundleWriter(out, input=InputSpec(height=256, width=128), embedding=EmbeddingSpec(dim=32, ...),
                         model={"architecture": ..., "config": ...}, target="cpu")
        w.add_artifact("onnx-fp32", "onnxruntime", "fp32", {"model": "model.onnx"})
        w.set("accuracy", {...})
        w.write()

    and by ``reid-runtime build-engine``: ``BundleWriter.from_bundle(path)`` then
    ``add_artifact(...)`` and ``write()``. Digests are computed from the files on disk at the
    time they are added, so add a file only once it is complete.
    """

    def __init__(self, root: str | os.PathLike, *, input: InputSpec | Mapping, embedding: EmbeddingSpec | Mapping,
                 model: Mapping | None = None, target: str = "onnx", edgereid_version: str | None = None) -> None:
        self.root = Path(root)
        if target not in TARGETS:
            raise BundleError(f"target: expected one of {', '.join(TARGETS)}, got {target!r}")
        if edgereid_version is None:
            try:
                from importlib.metadata import version

                edgereid_version = version("edgereid")
            except Exception:  # not installed as a distribution (a source checkout)
                edgereid_version = "unknown"
        self.manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_utc": _utc_now(),
            "edgereid_version": edgereid_version,
            "target": target,
            "model": dict(model or {}),
            "input": input.to_dict() if isinstance(input, InputSpec) else dict(input),
            "embedding": embedding.to_dict() if isinstance(embedding, EmbeddingSpec) else dict(embedding),
            "artifacts": [],
        }

    @classmethod
    def from_bundle(cls, path: str | os.PathLike) -> BundleWriter:
        """A writer holding an existing bundle's manifest, to add artifacts or fields to it."""
        bundle = load_bundle(path)
        writer = cls.__new__(cls)
        writer.root = bundle.root
        writer.manifest = copy.deepcopy(bundle.manifest)
        return writer

    def add_file(self, role: str, path: str | os.PathLike) -> dict[str, Any]:
        """Describe one file already inside the bundle folder: ``{"path", "sha256", "bytes"}``.

        ``path`` may be absolute or relative to the bundle root; it must lie inside the bundle.
        ``role`` is only used in error messages here (the artifact's ``files`` key is the role).
        """
        p = Path(path)
        full = p if p.is_absolute() else self.root / p
        try:
            rel = full.resolve().relative_to(self.root.resolve())
        except ValueError:
            raise BundleError(f"{role} file {full} is not inside the bundle folder {self.root}") from None
        if not full.is_file():
            raise BundleError(f"{role} file {full} does not exist (write it before adding it to the manifest)")
        return {"path": rel.as_posix(), "sha256": sha256_file(full), "bytes": full.stat().st_size}

    def add_artifact(self, name: str, backend: str, precision: str, files: Mapping[str, str | os.PathLike],
                     *, default: bool = False, replace: bool = True, **extra: Any) -> dict[str, Any]:
        """Add (or replace) an artifact whose files (role -> path) are already written."""
        if backend not in BACKENDS:
            raise BundleError(f"artifact {name!r}: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if not files:
            raise BundleError(f"artifact {name!r}: needs at least one file")
        entry: dict[str, Any] = {"name": name, "backend": backend, "precision": precision,
                                 "files": {role: self.add_file(role, p) for role, p in files.items()}}
        entry.update(extra)
        arts = self.manifest.setdefault("artifacts", [])
        existing = [i for i, a in enumerate(arts) if a.get("name") == name]
        if existing and not replace:
            raise BundleError(f"artifact {name!r} already exists in {self.root / MANIFEST_NAME}")
        if existing:
            arts[existing[0]] = entry
        else:
            arts.append(entry)
        if default or "default_artifact" not in self.manifest:
            self.manifest["default_artifact"] = name
        return entry

    def set(self, key: str, value: Any) -> None:
        """Set a top-level manifest field (``calibration``, ``parity``, ``accuracy``, ``open_set``...)."""
        json.dumps(value)  # refuse values JSON cannot hold now, not at write time
        self.manifest[key] = value

    def write(self) -> Path:
        """Validate the manifest as the runtime will read it, then replace it atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        Bundle(self.root, json.loads(json.dumps(self.manifest)))  # the same checks load_bundle applies
        path = self.root / MANIFEST_NAME
        write_json_atomic(path, self.manifest)
        return path
