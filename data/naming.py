"""What image files are called: the image suffixes, and the Market-1501 file name, read and written here only.

Market-1501 names a person crop ``PPPP_cCsS_FFFFFF_NN.jpg``: person id ``P`` (``-1`` = junk, ``0`` =
distractor), camera ``C`` (1-based in the name), sequence, frame and box index. DukeMTMC-reID
(``0005_c2_f0046985.jpg``), Occluded-Duke and the synthetic set use the same ``PID_cCAMERA`` start.

Cameras are numbered from 0 everywhere in edgereid (``c1`` in a name is camera 0): the data set
readers, the calibration set, the gallery store's camera column and ``reid-runtime eval`` all use
the number :func:`parse_market_name` returns.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

__all__ = ["IMAGE_SUFFIXES", "MarketName", "is_image", "list_images", "market_name", "parse_market_name"]

#: file suffixes treated as images when listing folders (what Pillow reads)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                            ".pgm", ".pbm"})

_MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")


class MarketName(NamedTuple):
    pid: int  # -1 junk, 0 distractor, else the person
    camera: int  # 0-based


def parse_market_name(name: str | os.PathLike) -> MarketName | None:
    """``(pid, camera)`` of a Market-1501 style file name (camera 0-based), or None when it is not one.

    ``0002_c1s1_000451_03.jpg`` -> ``MarketName(pid=2, camera=0)``. A camera field of ``c0`` is not a
    Market name (their cameras start at 1) and gives None too.
    """
    m = _MARKET_NAME.match(Path(name).name)
    if not m or int(m.group(2)) < 1:
        return None
    return MarketName(int(m.group(1)), int(m.group(2)) - 1)


def market_name(pid: int, camera: int, seq: int, frame: int, box: int = 1) -> str:
    """The Market-1501 file name of a crop; ``camera`` is 0-based here and 1-based in the name; junk is ``-1``."""
    head = "-1" if pid == -1 else f"{pid:04d}"
    return f"{head}_c{camera + 1}s{seq}_{frame:06d}_{box:02d}.jpg"


def is_image(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files of a folder (by suffix), sorted by path for a reproducible order."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    found = root.rglob("*") if recursive else root.iterdir()
    return sorted(p for p in found if p.is_file() and is_image(p))
