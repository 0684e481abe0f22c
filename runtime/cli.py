"""``reid-runtime``: the on-device command (numpy + Pillow + onnxruntime; never torch).

A thin layer on the library (``from edgereid.runtime import ...``): each command parses its
arguments, calls the library (``Embedder``, ``GalleryStore``, ``Matcher``, ``run_bench``,
``build_engine``, ...) and prints. The ``COMMANDS`` table pairs every command with its arguments
and its function.

The default command is the matching loop::

    reid-runtime --bundle B --gallery store.bin [IMAGES... | -]

which embeds each image, searches the gallery and prints one JSON line per image. Subcommands
(``enroll``, ``query``, ``info``, ``remove``, ``compact``, ``verify``, ``eval``, ``bench``,
``build-engine``) must come first: ``reid-runtime enroll --bundle B ...``.
``docs/runtime.md`` is the reference, including the exit codes below.

Bad input never produces a traceback: a bad bundle, store or argument is one ``error:`` line on
stderr and exit code 2; a bad image is one JSON error line and the stream carries on (exit code 1
at the end). ``EDGEREID_DEBUG=1`` shows tracebacks for bug reports.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
from edgereid.data.atomic import write_text_atomic
from edgereid.data.flags import add_options, options_from_args
from edgereid.data.logs import show_logs

__all__ = ["main", "build_parser", "build_parsers", "Command", "COMMANDS", "EXIT_OK", "EXIT_IMAGE_ERRORS", "EXIT_USAGE",
           "EXIT_VERIFY_FAILED", "EXIT_BACKEND_UNAVAILABLE", "EXIT_INTERNAL"]

EXIT_OK = 0  # everything done
EXIT_IMAGE_ERRORS = 1  # done, but some images could not be used (their JSON error lines say why)
EXIT_USAGE = 2  # bad arguments or bad input refused: bundle, store, spec mismatch, folder
EXIT_VERIFY_FAILED = 3  # `verify` found a damaged bundle or store
EXIT_BACKEND_UNAVAILABLE = 4  # the requested backend's library or device is not available here
EXIT_INTERNAL = 5  # a bug in edgereid (the traceback is printed)
EXIT_INTERRUPTED = 130  # Ctrl-C (what a shell reports for SIGINT)

PROG = "reid-runtime"


class UsageError(ValueError):
    """A command-line combination that cannot work (reported as exit code 2)."""


# ---------------------------------------------------------------------------------------------
# argument groups shared by several commands
# ---------------------------------------------------------------------------------------------


def _add_bundle_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    from .embedder import EmbedderConfig

    g = p.add_argument_group("model bundle")
    g.add_argument("--bundle", required=required, metavar="DIR",
                   help="bundle folder written by `edgereid export` (holds manifest.json); its files are "
                        "checked against their SHA-256 before use")
    add_options(g, EmbedderConfig)
    g.add_argument("--ov-inference-precision", default=None, metavar="P",
                   help="OpenVINO only: INFERENCE_PRECISION_HINT (default f32 for fp32 artifacts; bf16/f16 "
                        "are faster but change embeddings by about 1e-2)")


def _add_gallery_args(p: argparse.ArgumentParser, required: bool = True, create: bool = True) -> None:
    g = p.add_argument_group("gallery store")
    g.add_argument("--gallery", required=required, metavar="STORE",
                   help="gallery store file (store.bin); its embedding spec must equal the bundle's")
    if create:
        g.add_argument("--create", action="store_true",
                       help="create the gallery with the bundle's embedding spec if it does not exist "
                            "(without this flag a missing gallery is an error)")


def _add_match_args(p: argparse.ArgumentParser, enrolment: bool = False) -> None:
    from .matcher import MatchConfig

    add_options(p.add_argument_group("matching"), MatchConfig, only=("threshold", "topk", "per_identity"))
    if enrolment:
        add_options(p.add_argument_group("open-set enrolment"), MatchConfig, only=("enroll_unknown", "unknown_prefix"))


def _add_output_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", "-o", default=None, metavar="FILE",
                   help="write the JSON lines to FILE instead of stdout")


# ---------------------------------------------------------------------------------------------
# the arguments of each command (the COMMANDS table below pairs them with their functions)
# ---------------------------------------------------------------------------------------------


def _args_match(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="image files or folders (searched recursively); '-' reads paths from stdin, one per line")
    _add_bundle_args(p)
    _add_gallery_args(p)
    _add_match_args(p, enrolment=True)
    _add_output_arg(p)


def _args_enroll(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="FOLDER", help="folder of images")
    p.add_argument("--naming", choices=("auto", "market", "folders"), default="auto",
                   help="where identities come from: market = file names like 0002_c1s1_000451_03.jpg "
                        "(pid 2, camera 0; junk -1 and distractors 0 skipped), folders = one sub-folder per "
                        "identity, auto = market if every file name matches, else folders (default)")
    p.add_argument("--identity", default=None, metavar="ID",
                   help="give every image of FOLDER (recursively) this identity instead (an integer if it "
                        "looks like one)")
    _add_bundle_args(p)
    _add_gallery_args(p)


def _args_query(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files or folders (recursively); '-' reads paths from stdin")
    _add_bundle_args(p)
    _add_gallery_args(p, create=False)
    _add_match_args(p)
    _add_output_arg(p)


def _args_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gallery", default=None, metavar="STORE", help="gallery store to describe")
    p.add_argument("--bundle", default=None, metavar="DIR", help="bundle to describe (hashes are not checked: "
                                                                 "use verify)")
    p.add_argument("--max-identities", type=int, default=50, metavar="N",
                   help="list at most N identities with their entry counts (default 50; 0 lists all)")
    from .artifact_choice import CHOICE_MODES

    p.add_argument("--artifact-choice", choices=list(CHOICE_MODES), default=None,
                   help="with --bundle: auto (default) reports the artifact this device runs as cached by an "
                        "earlier command, timing nothing ('pending' when none has run yet); measure = time the "
                        "candidates now and cache the decision; manifest = report the manifest's default")


def _args_remove(p: argparse.ArgumentParser) -> None:
    p.add_argument("identities", nargs="+", metavar="ID", help="identities to remove")
    p.add_argument("--gallery", required=True, metavar="STORE", help="gallery store file")
    p.add_argument("--id-type", choices=("auto", "int", "str"), default="auto",
                   help="how to read each ID: auto = an integer if the gallery has that integer identity, "
                        "else the string (default); int; str")


def _args_compact(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gallery", required=True, metavar="STORE", help="gallery store file")


def _args_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", default=None, metavar="DIR", help="bundle to verify (all artifacts)")
    p.add_argument("--gallery", default=None, metavar="STORE", help="gallery store to verify")


def _args_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, metavar="ROOT",
                   help="Market-style root holding query/ and bounding_box_test/")
    p.add_argument("--query", default=None, metavar="DIR", help="query folder (overrides ROOT/query)")
    p.add_argument("--gallery-dir", default=None, metavar="DIR",
                   help="gallery folder (overrides ROOT/bounding_box_test)")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the JSON result to FILE")
    _add_bundle_args(p)


def _args_bench(p: argparse.ArgumentParser) -> None:
    from .bench import BenchConfig

    _add_bundle_args(p)
    add_options(p.add_argument_group("benchmark"), BenchConfig)


def _args_build_engine(p: argparse.ArgumentParser) -> None:
    from .engine_build import EngineBuildConfig

    p.add_argument("--bundle", required=True, metavar="DIR", help="bundle folder; the engine is written into it")
    add_options(p, EngineBuildConfig)


# ---------------------------------------------------------------------------------------------
# shared plumbing
# ---------------------------------------------------------------------------------------------


def _note(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


class _Out:
    """JSON lines to stdout or a file, flushed per line (results stream while images arrive)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.fh: TextIO = open(path, "w", encoding="utf-8") if path else sys.stdout
        self.lines = 0

    @property
    def where(self) -> str:
        return self.path or "stdout"

    def write(self, obj: dict) -> None:
        self.fh.write(json.dumps(obj, default=_jsonable) + "\n")
        self.fh.flush()
        self.lines += 1

    def close(self) -> None:
        if self.path:
            self.fh.close()


def _embedder(args: argparse.Namespace):
    from .embedder import Embedder, EmbedderConfig

    options = {"inference_precision": args.ov_inference_precision} if args.ov_inference_precision else {}
    embedder = Embedder(args.bundle, options_from_args(EmbedderConfig, args, backend_options=options))
    _note_choice(embedder.choice)
    return embedder


def _note_choice(choice) -> None:
    """The artifact line on stderr (which artifact runs, why, where the decision is cached)."""
    for note in choice.notes:
        _note(f"note: {note}")
    _note(choice.line())


def _open_store(path: str, spec, mode: str, create: bool):
    """Open (or with ``create`` make) the gallery, refusing one whose spec differs from ``spec``."""
    from .store import GalleryStore

    if not os.path.exists(path):
        if not create:
            raise UsageError(f"gallery {path} does not exist; pass --create to make an empty one with the "
                             f"bundle's embedding spec (dim={spec.dim}, bits={spec.bits}, scale={spec.scale:g}, "
                             f"metric={spec.metric})")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise UsageError(f"cannot create gallery {path}: folder {parent} does not exist")
        store = GalleryStore.create(path, dim=spec.dim, bits=spec.bits, scale=spec.scale, metric=spec.metric)
        _note(f"created gallery {path} (dim={spec.dim}, bits={spec.bits}, scale={spec.scale:g}, metric={spec.metric})")
        if mode == "r":
            store.close()
            store = GalleryStore.open(path, "r", spec=spec)
        return store
    return GalleryStore.open(path, mode, spec=spec)


def _expand_sources(items: Iterable[str], stdin: TextIO | None = None) -> Iterator[object]:
    """Image arguments -> image paths: files as given, folders expanded, '-' = paths from stdin.

    Stdin is live: when no further path is waiting, ``Embedder.FLUSH`` is yielded so the images
    received so far are answered now rather than when a full batch has arrived.
    """
    from edgereid.data.naming import list_images

    from .embedder import Embedder
    from .image_sources import read_path_lines

    for item in items:
        if item == "-":
            yield from read_path_lines(stdin, idle_marker=Embedder.FLUSH)
        elif os.path.isdir(item):
            yield from (str(p) for p in list_images(item, recursive=True))
        else:
            yield item  # missing files become per-image errors, in order


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------


def _run_matching(args: argparse.Namespace, writable: bool, create: bool) -> int:
    from .matcher import MatchConfig, Matcher, bundle_threshold

    embedder = _embedder(args)
    cfg = options_from_args(MatchConfig, args)
    if cfg.threshold is None:
        cfg.threshold = bundle_threshold(embedder.bundle)
    if cfg.enroll_unknown and cfg.threshold is None:
        raise UsageError("--enroll-unknown needs a threshold: pass --threshold (the bundle's manifest has no "
                         "open_set.threshold)")
    if cfg.threshold is None:
        _note("no --threshold and no open_set.threshold in the manifest: results carry the nearest identity "
              "and decision null")
    store = _open_store(args.gallery, embedder.spec, "a" if writable else "r", create)
    out = _Out(args.output)
    try:
        matcher = Matcher(embedder, store, cfg)
        for m in matcher.match_images(_expand_sources(args.images)):
            out.write(m.to_dict())
    finally:
        out.close()
        n_store = len(store)
        store.close()
        embedder.close()
    counts = matcher.counts
    _note(f"{counts['images']} images: {counts['match']} matched, {counts['unknown']} unknown"
          + (f" ({counts['enrolled']} enrolled)" if cfg.enroll_unknown else "")
          + (f", {counts['undecided']} without a decision (no threshold)" if counts["undecided"] else "")
          + f", {counts['errors']} errors; results written to {out.where}; gallery {args.gallery} "
            f"({n_store} entries)")
    return EXIT_IMAGE_ERRORS if counts["errors"] else EXIT_OK


def cmd_match(args: argparse.Namespace) -> int:
    if not args.images:
        raise UsageError("no images given: pass image paths or folders, or '-' to read paths from stdin "
                         f"(see {PROG} --help)")
    return _run_matching(args, writable=args.enroll_unknown, create=args.create)


def cmd_query(args: argparse.Namespace) -> int:
    return _run_matching(args, writable=False, create=False)


def cmd_enroll(args: argparse.Namespace) -> int:
    from .image_sources import labelled_images
    from .matcher import enroll_images

    images, notes = labelled_images(args.folder, args.naming, args.identity)
    for n in notes:
        _note(n)
    embedder = _embedder(args)
    store = _open_store(args.gallery, embedder.spec, "a", args.create)
    enrolled = errors = 0
    idents: set = set()
    try:
        for image, error in enroll_images(embedder, store, images):
            if error is not None:
                print(json.dumps({"image": str(image.path), "error": error}), flush=True)
                errors += 1
            else:
                enrolled += 1
                idents.add(image.identity)
        n_store, n_ids = len(store), len(store.identities())
    finally:
        store.close()
        embedder.close()
    print(json.dumps({"gallery": args.gallery, "enrolled": enrolled, "identities_enrolled": len(idents),
                      "errors": errors, "gallery_entries": n_store, "gallery_identities": n_ids,
                      "notes": notes}), flush=True)
    _note(f"enrolled {enrolled} images of {len(idents)} identities into {args.gallery} "
          f"({n_store} entries); {errors} errors")
    return EXIT_IMAGE_ERRORS if errors else EXIT_OK


def _store_info(path: str, max_identities: int) -> dict:
    from .store import GalleryStore

    with GalleryStore.open(path, "r") as store:
        idents = store.identities()
        shown = idents if max_identities <= 0 else idents[:max_identities]
        return {
            "path": path,
            "spec": store.spec.to_dict(),
            "file_bytes": os.path.getsize(path),
            "committed_bytes": store.committed_bytes,
            "entries": len(store),
            "rows": store.num_rows,
            "identities": len(idents),
            "identity_counts": [{"identity": i, "entries": store.count(i)} for i in shown],
            "identities_listed": len(shown),
        }


def cmd_info(args: argparse.Namespace) -> int:
    from .device_report import device_report

    if not args.gallery and not args.bundle:
        raise UsageError("info needs --gallery and/or --bundle")
    out: dict[str, Any] = device_report()
    if args.gallery:
        out["gallery"] = _store_info(args.gallery, args.max_identities)
    if args.bundle:
        from .artifact_choice import choose_artifact, resolve_mode
        from .bundle import load_bundle

        bundle = load_bundle(args.bundle)
        out["bundle"] = bundle.summary()
        mode = resolve_mode(args.artifact_choice)
        choice = choose_artifact(bundle, mode=mode, measure=mode == "measure")
        out["artifact_choice"] = choice.to_dict()
        _note_choice(choice)
    print(json.dumps(out, indent=2, default=_jsonable), flush=True)
    _note("info written to stdout")
    return EXIT_OK


def cmd_remove(args: argparse.Namespace) -> int:
    from .image_sources import identity_from_text
    from .store import GalleryStore

    with GalleryStore.open(args.gallery, "a") as store:
        targets, missing = [], []
        for text in args.identities:
            as_int = identity_from_text(text)
            if args.id_type == "int":
                candidates = [as_int] if isinstance(as_int, int) else []
            elif args.id_type == "str":
                candidates = [text]
            else:  # an integer identity if the gallery has it, else the string
                candidates = [as_int, text] if isinstance(as_int, int) else [text]
            found = next((c for c in candidates if store.count(c) > 0), None)
            if found is None:
                missing.append(text)
            elif found not in targets:
                targets.append(found)
        removed = store.remove(targets) if targets else 0
        left = len(store)
    print(json.dumps({"gallery": args.gallery, "removed_entries": removed, "removed_identities": targets,
                      "not_found": missing, "entries_left": left}), flush=True)
    if missing:
        _note(f"not in the gallery: {', '.join(missing)}")
    _note(f"removed {removed} entries of {len(targets)} identities from {args.gallery} (tombstone appended; "
          f"run `{PROG} compact` to reclaim the space)")
    if not targets:
        raise UsageError(f"none of the identities {args.identities} is in {args.gallery}")
    return EXIT_OK


def cmd_compact(args: argparse.Namespace) -> int:
    from .store import GalleryStore

    before = os.path.getsize(args.gallery)
    with GalleryStore.open(args.gallery, "a") as store:
        report = store.compact()
    after = os.path.getsize(args.gallery)
    print(json.dumps({"gallery": args.gallery, "bytes_before": before, "bytes_after": after,
                      "live_entries": report.live_entries, "identities": report.identities, "ok": report.ok}),
          flush=True)
    _note(f"compacted {args.gallery}: {before} -> {after} bytes, {report.live_entries} entries")
    return EXIT_OK if report.ok else EXIT_VERIFY_FAILED


def cmd_verify(args: argparse.Namespace) -> int:
    from .bundle import BundleError, load_bundle
    from .store import GalleryStore, StoreError

    if not args.gallery and not args.bundle:
        raise UsageError("verify needs --bundle and/or --gallery")
    out: dict[str, Any] = {}
    ok = True
    bundle = None
    if args.bundle:
        try:
            bundle = load_bundle(args.bundle)
            names = bundle.verify_all()
            out["bundle"] = {"path": args.bundle, "ok": True, "artifacts_verified": names}
        except BundleError as exc:
            out["bundle"] = {"path": args.bundle, "ok": False, "problem": str(exc)}
            ok = False
    if args.gallery:
        try:
            with GalleryStore.open(args.gallery, "r") as store:
                rep = store.verify()
                # A torn tail (a record cut short or failing its checksum at the end of the file) is what a
                # crash mid-write leaves, but a damaged last record looks the same: report it, exit 3.
                g_ok = rep.ok and rep.torn_tail_bytes == 0
                out["gallery"] = {"path": args.gallery, "ok": g_ok, "problems": rep.problems, "notes": rep.notes,
                                  "records": rep.records, "entries": rep.entries, "live_entries": rep.live_entries,
                                  "identities": rep.identities, "torn_tail_bytes": rep.torn_tail_bytes}
                ok &= g_ok
                if bundle is not None:
                    try:
                        store.check_spec(bundle.embedding.codec_spec())
                        out["spec_match"] = True
                    except StoreError as exc:
                        out["spec_match"] = False
                        out["spec_problem"] = str(exc)
                        ok = False
        except (StoreError, OSError) as exc:
            out["gallery"] = {"path": args.gallery, "ok": False, "problems": [str(exc)]}
            ok = False
    out["ok"] = ok
    print(json.dumps(out, indent=2), flush=True)
    _note(("verified: no problems" if ok else "verification FAILED (see the JSON above)") + "; report written to stdout")
    return EXIT_OK if ok else EXIT_VERIFY_FAILED


def cmd_eval(args: argparse.Namespace) -> int:
    from .folder_eval import evaluate_folders

    if args.data:
        query = args.query or os.path.join(args.data, "query")
        gallery = args.gallery_dir or os.path.join(args.data, "bounding_box_test")
    elif args.query and args.gallery_dir:
        query, gallery = args.query, args.gallery_dir
    else:
        raise UsageError("eval needs --data ROOT, or both --query DIR and --gallery-dir DIR")
    for folder in (query, gallery):  # before the backend is opened (and perhaps artifacts are timed)
        if not os.path.isdir(folder):
            raise NotADirectoryError(f"{folder}: not a folder")
    embedder = _embedder(args)
    try:
        result = evaluate_folders(embedder, query, gallery)
    finally:
        embedder.close()
    for err in result.pop("error_list"):
        print(json.dumps(err), flush=True)
    text = json.dumps(result, indent=2)
    print(text, flush=True)
    if args.out:
        write_text_atomic(args.out, text + "\n")
    codes = result["codes"]
    _note(f"rank-1 {codes['rank1']:.4f}, mAP {codes['mAP']:.4f} (codes) on {result['queries']} queries x "
          f"{result['gallery']} gallery images; results written to stdout" + (f" and {args.out}" if args.out else ""))
    if result.get("open_set"):
        o = result["open_set"]
        _note(f"open set at threshold {o['threshold']:.4f} (half of the query identities enrolled): true-accept rate "
              f"{_rate(o['true_accept_rate'])} of {o['enrolled_queries']} queries of enrolled people, false-accept "
              f"rate {_rate(o['false_accept_rate'])} of {o['not_enrolled_queries']} of people not enrolled "
              f"(target {_rate(o.get('target_false_accept_rate'))})")
    return EXIT_IMAGE_ERRORS if result["errors"] else EXIT_OK


def _rate(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import BenchConfig, current_rss_bytes, run_bench, to_markdown, write_bench

    cfg = options_from_args(BenchConfig, args)
    cfg.validate()  # before the backend is opened
    start = current_rss_bytes()
    embedder = _embedder(args)
    try:
        report = run_bench(embedder, cfg, start_rss=start)
    finally:
        embedder.close()
    json_path, md_path = write_bench(report, cfg.out_dir)
    print(to_markdown(report), flush=True)
    _note(f"bench results written to {json_path} and {md_path}")
    return EXIT_OK


def cmd_build_engine(args: argparse.Namespace) -> int:
    from .engine_build import EngineBuildConfig, build_engine

    entry = build_engine(args.bundle, options_from_args(EngineBuildConfig, args))
    print(json.dumps(entry, indent=2), flush=True)
    files = ", ".join(os.path.join(args.bundle, f["path"]) for f in entry["files"].values())
    _note(f"wrote {files} and updated {os.path.join(args.bundle, 'manifest.json')}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------


def _error_exit(command: str, exc: BaseException, code: int) -> int:
    if os.environ.get("EDGEREID_DEBUG"):
        raise exc
    print(f"{PROG} {command}: error: {exc}", file=sys.stderr, flush=True)
    return code


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, a one-line summary for the top-level help, its arguments, its function."""

    name: str
    summary: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: tuple[Command, ...] = (
    Command("match", "the matching loop (the default command): embed, search, decide, optionally enrol unknowns",
            "Match person crops against a gallery: one JSON line per image "
            '{"image", "identity", "distance", "decision": "match"|"unknown", "topk": [...]}, '
            'or {"image", "error"} for an image that cannot be used.', _args_match, cmd_match),
    Command("enroll", "add a folder of images to the gallery (identities from Market names, sub-folders or --identity)",
            "Embed every image of a folder and add it to the gallery under its identity. Prints one JSON error line "
            "per unusable image and a JSON summary at the end.", _args_enroll, cmd_enroll),
    Command("query", "search the gallery for images or folders of images (read-only)",
            "Search the gallery for images (read-only: nothing is enrolled). One JSON line per image.",
            _args_query, cmd_query),
    Command("info", "describe a gallery store (header, counts, identities) and/or a bundle",
            "Describe this device (CPU model and features, search kernels), a gallery store and/or a bundle (with "
            "the artifact chosen here and why) as one JSON object on stdout.", _args_info, cmd_info),
    Command("remove", "remove identities from the gallery (tombstones; space comes back with compact)",
            "Remove every entry of the given identities from the gallery (appends a tombstone).",
            _args_remove, cmd_remove),
    Command("compact", "rewrite the gallery with only its live entries (atomic rename)",
            "Rewrite the gallery with only its live entries (new file + atomic rename).", _args_compact, cmd_compact),
    Command("verify", "check a bundle's file hashes and/or a gallery's checksums",
            "Check every file of a bundle against its SHA-256 and/or every record checksum of a gallery; with "
            "both, also that their embedding specs agree. Exit 3 on any problem.", _args_verify, cmd_verify),
    Command("eval", "rank-1/mAP of the bundle on a Market-style query/gallery folder pair",
            "Evaluate the bundle on a Market-1501-style query/gallery folder pair (standard protocol: same identity "
            "and camera removed, junk -1 ignored): rank-1/5/10, mAP, mINP, for the stored codes and for the float "
            "embeddings.", _args_eval, cmd_eval),
    Command("bench", "latency/throughput of embedding and search, peak memory (JSON + Markdown)",
            "Measure embedding latency (batch 1 and N), throughput, search latency and peak memory on this device; "
            "writes bench.json and bench.md.", _args_bench, cmd_bench),
    Command("build-engine", "build a TensorRT engine (here, or TensorRT-RTX ahead of time) and add it to the bundle",
            "Build a TensorRT engine from the bundle's ONNX (TensorRT 8.5+ on this device, or TensorRT-RTX ahead of "
            "time, no GPU needed), write it into the bundle with its build log, and add it to the manifest.",
            _args_build_engine, cmd_build_engine),
)
_BY_NAME = {c.name: c for c in COMMANDS}


def _epilog() -> str:
    lines = ["commands (give the command first, e.g. `reid-runtime enroll --help`):"]
    lines += [f"  {c.name:<13} {c.summary}" for c in COMMANDS]
    lines += ["", "exit codes: 0 ok; 1 some images failed (JSON error lines); 2 bad arguments or input refused "
              "(bundle, store, spec mismatch); 3 verify found damage; 4 backend not available; 5 internal error (a bug); "
              "130 interrupted"]
    return "\n".join(lines)


def build_parser(name: str) -> argparse.ArgumentParser:
    """The parser of one command; ``match`` is also the top-level ``reid-runtime`` one."""
    c = _BY_NAME[name]
    if name == "match":
        p = argparse.ArgumentParser(prog=PROG, description=c.description, epilog=_epilog(),
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    else:
        p = argparse.ArgumentParser(prog=f"{PROG} {name}", description=c.description)
    c.add_arguments(p)
    p.set_defaults(func=c.run, command=name)
    return p


def build_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser (``_top`` is the ``match`` one: ``reid-runtime IMAGES...``)."""
    parsers = {c.name: build_parser(c.name) for c in COMMANDS}
    parsers["_top"] = parsers["match"]
    return parsers


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = argv.pop(0) if argv and argv[0] in _BY_NAME else "match"
    args = build_parser(name).parse_args(argv)  # argparse exits 2 itself on bad usage
    show_logs(lambda record: f"{PROG}: ")  # what the library logs (TensorRT's build warnings, ...)
    func: Callable[[argparse.Namespace], int] = args.func
    from .backends import BackendUnavailable

    try:
        return int(func(args) or 0)
    except BackendUnavailable as exc:
        return _error_exit(args.command, exc, EXIT_BACKEND_UNAVAILABLE)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, and keep Python from complaining at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except (ValueError, OSError, FloatingPointError) as exc:
        # BundleError, StoreError, SpecMismatchError, CodecMismatchError, UsageError are ValueErrors;
        # FileNotFoundError and friends are OSErrors: all bad input, reported without a traceback.
        return _error_exit(args.command, exc, EXIT_USAGE)
    except Exception:  # a bug, not bad input: the traceback is for the bug report
        traceback.print_exc()
        print(f"{PROG} {args.command}: internal error (a bug: please report it with the traceback above)",
              file=sys.stderr, flush=True)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
