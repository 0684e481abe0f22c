"""Where images and their labels come from on the device: paths, stdin, folders, Market-1501 names.

Identities for enrolment come from one of three places:

- Market-1501 file names ``PPPP_cCsS_FFFFFF_NN.jpg`` (``edgereid.data.naming`` reads them):
  person id ``P`` (``-1`` = junk, ``0`` = distractor), camera ``C`` numbered from 0
  (``0002_c1s1_000451_03.jpg`` -> pid 2, camera 0). The same pattern names DukeMTMC-reID and
  the synthetic data set.
- sub-folder names (``gallery/alice/*.jpg`` -> identity ``"alice"``), the ImageFolder layout;
- one identity given on the command line for every image.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from edgereid.data.naming import IMAGE_SUFFIXES, list_images, parse_market_name

__all__ = ["LabelledImage", "labelled_images", "read_path_lines", "identity_from_text"]


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    identity: int | str
    camera: int | None = None


def identity_from_text(text: str) -> int | str:
    """A command-line identity: an integer if it is one (``0002`` -> 2), else the string."""
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def labelled_images(folder: str | os.PathLike, naming: str = "auto", identity: str | None = None,
                    skip_junk: bool = True) -> tuple[list[LabelledImage], list[str]]:
    """Images of ``folder`` with identities; returns ``(images, notes)``.

    ``naming``: ``market`` (file names, top-level files only), ``folders`` (each sub-folder is one
    identity, its images found recursively), ``auto`` (market if every top-level image matches
    the Market pattern, else folders if there are sub-folders with images). ``identity``
    overrides naming: every image of the folder (recursively) gets it. Market junk (-1) and
    distractor (0) images are skipped when ``skip_junk`` (they are no person's identity).
    """
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    notes: list[str] = []
    if identity is not None:
        ident = identity_from_text(identity)
        return [LabelledImage(p, ident, None) for p in list_images(root, recursive=True)], notes
    top = list_images(root)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    if naming == "auto":
        if top and all(parse_market_name(p) for p in top):
            naming = "market"
        elif subdirs:
            naming = "folders"
        elif top:
            bad = next(p.name for p in top if not parse_market_name(p))
            raise ValueError(f"{root}: cannot tell identities: {bad} is not a Market-1501 name "
                             "(PPPP_cC...) and there are no sub-folders; pass --identity or --naming")
        else:
            raise ValueError(f"{root}: no images found (extensions: {', '.join(sorted(IMAGE_SUFFIXES))})")
    out: list[LabelledImage] = []
    if naming == "market":
        skipped = 0
        for p in top:
            parsed = parse_market_name(p)
            if parsed is None:
                raise ValueError(f"{p}: not a Market-1501 file name (expected PPPP_cC..., e.g. 0002_c1s1_000451_03.jpg)")
            pid, cam = parsed
            if skip_junk and pid <= 0:
                skipped += 1
                continue
            out.append(LabelledImage(p, pid, cam))
        if skipped:
            notes.append(f"skipped {skipped} junk/distractor images (pid -1 or 0)")
    elif naming == "folders":
        for d in subdirs:
            for p in list_images(d, recursive=True):
                out.append(LabelledImage(p, d.name, None))
        if top:
            notes.append(f"ignored {len(top)} images at the top level of {root} (not in an identity sub-folder)")
    else:
        raise ValueError(f"naming must be auto, market or folders, got {naming!r}")
    if not out:
        raise ValueError(f"{root}: no usable images found with naming={naming}")
    return out, notes


def read_path_lines(stream: TextIO | None = None, idle_marker: object | None = None) -> Iterator[object]:
    """Image paths, one per line, from stdin (or ``stream``); blank lines are skipped.

    With ``idle_marker``, the marker is yielded whenever no further complete line is waiting
    (the writer paused): a batching consumer then processes what it has instead of waiting for a
    full batch, so a live stream gets each result as soon as its image path arrives. This reads
    the file descriptor directly (Python's own read-ahead buffer would hide waiting lines).
    """
    stream = stream or sys.stdin
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if idle_marker is None or fd is None:
        for line in stream:
            line = line.rstrip("\r\n")
            if line.strip():
                yield line
        return
    import select

    buf = b""
    while True:
        while b"\n" in buf:
            raw, buf = buf.split(b"\n", 1)
            line = raw.decode("utf-8", errors="surrogateescape").rstrip("\r")
            if line.strip():
                yield line
        if not select.select([fd], [], [], 0)[0]:
            yield idle_marker  # nothing waiting: let the consumer flush its partial batch
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
    line = buf.decode("utf-8", errors="surrogateescape").rstrip("\r\n")
    if line.strip():
        yield line
