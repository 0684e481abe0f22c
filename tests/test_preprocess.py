"""Preprocessing of real image files: every pixel mode, EXIF orientation, and every way a file can be bad."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from edgereid.runtime.bundle import InputSpec
from edgereid.runtime.preprocess import ImageError, Preprocessor, load_rgb
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
SPEC = InputSpec(height=32, width=16, mean=tuple(MEAN.tolist()), std=tuple(STD.tolist()))


def _denorm(x: np.ndarray) -> np.ndarray:
    """(3, H, W) normalised -> (H, W, 3) in 0..255 (undo the runtime's normalisation)."""
    return ((x.transpose(1, 2, 0) * STD + MEAN) * 255.0)


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def _photo(h: int = 40, w: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rgb_is_resized_bilinear_and_normalised(tmp_path: Path):
    arr = _photo()
    path = _save(Image.fromarray(arr), tmp_path / "a.png")
    x = Preprocessor(SPEC)(path)
    assert x.shape == (3, 32, 16) and x.dtype == np.float32 and x.flags.c_contiguous
    ref = np.asarray(Image.fromarray(arr).resize((16, 32), Image.Resampling.BILINEAR), np.float32)
    expect = ((ref / 255.0 - MEAN) / STD).transpose(2, 0, 1)
    np.testing.assert_allclose(x, expect, atol=1e-5)


def test_uniform_colour_gives_the_exact_normalised_value(tmp_path: Path):
    path = _save(Image.new("RGB", (16, 32), (10, 128, 250)), tmp_path / "c.png")
    x = Preprocessor(SPEC)(path)
    for c, v in enumerate((10, 128, 250)):
        np.testing.assert_allclose(x[c], (v / 255 - MEAN[c]) / STD[c], atol=1e-5)


def test_grayscale_becomes_three_equal_channels(tmp_path: Path):
    g = np.random.default_rng(1).integers(0, 256, (32, 16), dtype=np.uint8)
    x = Preprocessor(SPEC)(_save(Image.fromarray(g, "L"), tmp_path / "g.png"))
    rgb = _denorm(x)
    for c in range(3):
        np.testing.assert_allclose(rgb[..., c], g, atol=1e-3)


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path: Path):
    g = np.full((32, 16), 65535, np.uint16)
    g[:16] = 32896  # 128 * 257
    x = Preprocessor(SPEC)(_save(Image.fromarray(g), tmp_path / "g16.png"))
    rgb = _denorm(x)
    np.testing.assert_allclose(rgb[20:, :, 0], 255, atol=1e-3)
    np.testing.assert_allclose(rgb[:14, :, 0], 128, atol=1e-3)


def test_rgba_transparent_pixels_become_zero_after_normalisation(tmp_path: Path):
    a = np.zeros((32, 16, 4), np.uint8)
    a[:16] = (200, 30, 60, 255)  # opaque top half
    a[16:] = (255, 255, 255, 0)  # transparent bottom half hiding white
    x = Preprocessor(SPEC)(_save(Image.fromarray(a, "RGBA"), tmp_path / "a.png"))
    np.testing.assert_allclose(_denorm(x)[:15], np.broadcast_to([200, 30, 60], (15, 16, 3)), atol=1e-3)
    # background = the mean colour: rounded to 8 bits, so within half a level of zero
    assert np.abs(x[:, 17:]).max() < 0.5 / 255 / STD.min() + 1e-6


def test_palette_with_transparency_and_la(tmp_path: Path):
    p = Image.new("P", (16, 32), 0)
    p.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    p.paste(1, (0, 0, 16, 16))
    path = _save(p, tmp_path / "p.png", transparency=0)
    x = Preprocessor(SPEC)(path)
    np.testing.assert_allclose(_denorm(x)[:15], np.broadcast_to([0, 255, 0], (15, 16, 3)), atol=1e-3)
    assert np.abs(x[:, 17:]).max() < 0.01
    la = Image.fromarray(np.dstack([np.full((32, 16), 90, np.uint8), np.full((32, 16), 255, np.uint8)]), "LA")
    np.testing.assert_allclose(_denorm(Preprocessor(SPEC)(_save(la, tmp_path / "la.png"))), 90, atol=1e-3)


def test_cmyk_jpeg_is_converted(tmp_path: Path):
    cmyk = Image.new("CMYK", (16, 32), (0, 255, 255, 0))  # pure red in CMYK
    path = _save(cmyk, tmp_path / "k.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    rgb = _denorm(Preprocessor(SPEC)(path))
    assert rgb[..., 0].mean() > 230 and rgb[..., 1].mean() < 25 and rgb[..., 2].mean() < 25


def test_exif_orientation_is_applied(tmp_path: Path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))  # landscape as stored
    img.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "o.jpg"
    img.save(path, exif=exif, quality=95)
    im = load_rgb(path)
    assert im.size == (20, 40)  # upright: portrait
    arr = np.asarray(im, np.float32)
    assert arr[:20].mean() > 200 and arr[20:].mean() < 50  # the white half is now on top


def test_bgr_order_and_nhwc_layout(tmp_path: Path):
    path = _save(Image.new("RGB", (16, 32), (10, 128, 250)), tmp_path / "c.png")
    rgb = Preprocessor(SPEC)(path)
    bgr = Preprocessor(InputSpec(height=32, width=16, channel_order="BGR", mean=SPEC.mean[::-1],
                                 std=SPEC.std[::-1]))(path)
    np.testing.assert_allclose(bgr, rgb[::-1], atol=1e-6)
    nhwc = Preprocessor(InputSpec(height=32, width=16, layout="NHWC", mean=SPEC.mean, std=SPEC.std))(path)
    assert nhwc.shape == (32, 16, 3)
    np.testing.assert_allclose(nhwc, rgb.transpose(1, 2, 0), atol=1e-6)


def test_bytes_and_file_objects(tmp_path: Path):
    buf = io.BytesIO()
    Image.fromarray(_photo()).save(buf, "PNG")
    data = buf.getvalue()
    pre = Preprocessor(SPEC)
    np.testing.assert_array_equal(pre(data), pre(io.BytesIO(data)))


# ---------------------------------------------------------------------------------------------
# bad images: one clear ImageError each
# ---------------------------------------------------------------------------------------------


def _jpeg(tmp_path: Path) -> Path:
    return _save(Image.fromarray(_photo(64, 32)), tmp_path / "ok.jpg", quality=90)


def test_corrupt_truncated_missing_and_folder(tmp_path: Path):
    pre = Preprocessor(SPEC)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ImageError, match="not a readable image") as e:
        pre(junk)
    assert e.value.image == str(junk)
    good = _jpeg(tmp_path).read_bytes()
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageError, match="truncated"):
        pre(trunc)
    broken = bytearray(good)
    broken[200:400] = b"\xff" * 200  # garbage in the entropy-coded data
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(bytes(broken[:300]))
    with pytest.raises(ImageError):
        pre(bad)
    with pytest.raises(ImageError, match="no such file"):
        pre(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="is a folder"):
        pre(tmp_path)
    png = io.BytesIO()
    Image.fromarray(_photo()).save(png, "PNG")
    with pytest.raises(ImageError, match="truncated|corrupt"):
        pre(png.getvalue()[:-40])


def test_enormous_images_are_refused_before_decoding(tmp_path: Path):
    big = _save(Image.new("L", (4000, 3000)), tmp_path / "big.png")  # 12 MP, a few KB on disk
    with pytest.raises(ImageError, match="enormous: 4000x3000"):
        Preprocessor(SPEC, max_pixels=1_000_000)(big)
    assert Preprocessor(SPEC, max_pixels=20_000_000)(big).shape == (3, 32, 16)


def test_pil_decompression_bomb_guard_becomes_an_image_error(tmp_path: Path, monkeypatch):
    path = _save(Image.new("RGB", (100, 100)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 10000 px > 2x the limit: PIL raises
    with pytest.raises(ImageError, match="enormous"):
        Preprocessor(SPEC)(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 8000)  # between 1x and 2x: PIL only warns
    with pytest.raises(ImageError, match="enormous"):
        Preprocessor(SPEC)(path)


def test_batch_keeps_good_images_and_reports_bad_ones(tmp_path: Path):
    good = _jpeg(tmp_path)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    gray = _save(Image.new("L", (10, 10), 7), tmp_path / "g.png")
    out = Preprocessor(SPEC).batch([good, bad, gray, tmp_path / "missing.png"])
    assert out.array.shape == (2, 3, 32, 16)
    assert out.indices == [0, 2]
    assert [(i, e.image) for i, e in out.errors] == [(1, str(bad)), (3, str(tmp_path / "missing.png"))]
    empty = Preprocessor(SPEC).batch([bad])
    assert empty.array.shape == (0, 3, 32, 16) and len(empty.errors) == 1
