"""Turn image files into the graph's input tensor, exactly as the bundle's input spec says.

The exported graph expects an already resized and normalised tensor (``docs/bundle-format.md``),
so this module is the single place where pixels become numbers on the device. It mirrors the
training-time evaluation transform: PIL bilinear resize of the whole crop to (width, height),
RGB, ``x * scale``, ``(x - mean) / std``, NCHW float32.

Real camera pipelines deliver odd files, so every way an image can be unusable becomes an
:class:`ImageError` naming the image and the reason, and a caller processing a stream can report
it and carry on:

- unreadable / not an image / truncated / corrupt data (decoding is forced here, not later);
- enormous images (more than ``max_pixels``; checked from the header before any pixel is
  decoded, and PIL's own decompression-bomb guard is turned into the same error);
- every pixel mode PIL opens is converted to RGB: grayscale (``L``, ``I;16``, ``F``), palette,
  ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, bilevel, and modes with alpha, which are composited over
  the normalisation mean colour so that transparent pixels become zeros after normalisation
  (no information) instead of whatever colour hides under the alpha channel.
- EXIF orientation is applied (a phone photo stored sideways is turned upright); a broken EXIF
  block is ignored rather than failing the image.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .bundle import InputSpec

__all__ = ["ImageError", "DEFAULT_MAX_PIXELS", "Preprocessor", "load_rgb", "PreparedBatch"]

# 40 megapixels: far above any person crop or full camera frame (4K is 8.3 MP), far below what
# would take gigabytes to decode. Configurable per Preprocessor.
DEFAULT_MAX_PIXELS = 40_000_000

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "nearest": Image.Resampling.NEAREST}

ImageSource = str | os.PathLike | bytes | BinaryIO


class ImageError(ValueError):
    """One image cannot be used; ``image`` names it and ``reason`` says why (one line)."""

    def __init__(self, image: str, reason: str) -> None:
        super().__init__(f"{image}: {reason}")
        self.image = image
        self.reason = reason


def _name(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return getattr(source, "name", "<stream>")


def _to_rgb(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (see the module docstring for the choices made)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grayscale (PNG, TIFF): PIL's convert clips at 255 instead of scaling.
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        gray = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        finite = arr[np.isfinite(arr)]
        top = 1.0 if finite.size and finite.max() <= 1.0 else 255.0
        gray = np.clip(np.rint(np.nan_to_num(arr) * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    if mode == "1":
        im = im.convert("L")
    return im.convert("RGB")  # L, P, CMYK, YCbCr, LAB, HSV


def load_rgb(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS,
             background: tuple[int, int, int] = (124, 116, 104)) -> Image.Image:
    """Open, fully decode and convert one image to RGB, or raise :class:`ImageError`.

    ``source`` is a path, the encoded bytes, or a binary file object.
    """
    name = _name(source)
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            # PIL warns (then errors at 2x) above its own limit; make both an error we control.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                w, h = im.size
                if w < 1 or h < 1:
                    raise ImageError(name, f"image has no pixels ({w}x{h})")
                if w * h > max_pixels:
                    raise ImageError(name, f"image is enormous: {w}x{h} = {w * h} pixels, more than the "
                                           f"limit of {max_pixels} (refused before decoding)")
                im.load()  # decode now: truncated or corrupt data fails here, inside this try
                try:
                    im = ImageOps.exif_transpose(im)
                except Exception:  # a broken EXIF block: keep the stored orientation
                    pass
                return _to_rgb(im, background)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(name, "no such file") from None
    except IsADirectoryError:
        raise ImageError(name, "is a folder, not an image") from None
    except PermissionError:
        raise ImageError(name, "permission denied") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(name, f"image is enormous: {exc}") from None
    except UnidentifiedImageError:
        raise ImageError(name, "not a readable image (unknown format or corrupt header)") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, IndexError, TypeError,
            struct.error) as exc:
        text = str(exc) or type(exc).__name__
        if "truncated" in text.lower():
            raise ImageError(name, f"truncated image data ({text})") from None
        raise ImageError(name, f"corrupt image data ({type(exc).__name__}: {text})") from None


@dataclass
class PreparedBatch:
    """Images that loaded (as one NCHW tensor) plus the per-image errors of those that did not."""

    array: np.ndarray  # (n_ok, 3, H, W) float32, or NHWC per the spec
    indices: list[int]  # position of each row in the input sequence
    errors: list[tuple[int, ImageError]]


class Preprocessor:
    """Bundle input spec -> a callable turning images into the graph's input tensor."""

    def __init__(self, spec: InputSpec, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
        self.spec = spec
        self.max_pixels = max_pixels
        self.size = (spec.width, spec.height)  # PIL order
        self.resample = _RESAMPLE[spec.resize]
        mean = np.asarray(spec.mean, np.float32)
        std = np.asarray(spec.std, np.float32)
        # (x * scale - mean) / std == x * a + b: one fused multiply-add per pixel
        self._a = (np.float32(spec.scale) / std).astype(np.float32)
        self._b = (-mean / std).astype(np.float32)
        # mean/std are given in the graph's channel order (for BGR: blue first), like the tensor.
        # The colour alpha is composited onto is the mean (as RGB), so it normalises to 0.
        rgb_mean = spec.mean[::-1] if spec.channel_order == "BGR" else spec.mean
        self.background = tuple(int(np.clip(round(m / spec.scale), 0, 255)) for m in rgb_mean)

    def image_to_array(self, im: Image.Image) -> np.ndarray:
        """An RGB PIL image -> one normalised (3, H, W) (or (H, W, 3)) float32 array."""
        if im.size != self.size:
            im = im.resize(self.size, self.resample)
        x = np.asarray(im, dtype=np.float32)  # (H, W, 3)
        if self.spec.channel_order == "BGR":
            x = x[..., ::-1]
        x = x * self._a + self._b
        if self.spec.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x, dtype=np.float32)

    def __call__(self, source: ImageSource) -> np.ndarray:
        """One image (path, bytes, file object) -> its input array; raises :class:`ImageError`."""
        return self.image_to_array(load_rgb(source, self.max_pixels, self.background))

    def batch(self, sources: Sequence[ImageSource] | Iterable[ImageSource]) -> PreparedBatch:
        """Many images -> one stacked tensor of those that loaded, and the errors of the rest."""
        rows: list[np.ndarray] = []
        indices: list[int] = []
        errors: list[tuple[int, ImageError]] = []
        for i, src in enumerate(sources):
            try:
                rows.append(self(src))
                indices.append(i)
            except ImageError as exc:
                errors.append((i, exc))
        shape = (0, 3, self.spec.height, self.spec.width) if self.spec.layout == "NCHW" else (
            0, self.spec.height, self.spec.width, 3)
        array = np.stack(rows) if rows else np.zeros(shape, np.float32)
        return PreparedBatch(array=array, indices=indices, errors=errors)
