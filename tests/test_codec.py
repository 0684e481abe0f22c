"""The embedding codec: layouts, round trips, exact integer distances, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from edgereid.runtime import codec
from edgereid.runtime.codec import CodecMismatchError, CodecSpec


def _levels(rng: np.random.Generator, n: int, dim: int, bits: int) -> np.ndarray:
    if bits == 1:
        return rng.integers(0, 2, (n, dim))
    m = codec.MAX_LEVEL[bits]
    return rng.integers(-m, m + 1, (n, dim))


def _codes_of_levels(levels: np.ndarray, spec: CodecSpec) -> np.ndarray:
    """Codes whose levels are ``levels``, made through the public quantize (x = level * scale)."""
    x = levels.astype(np.float64)
    x = 2.0 * x - 1.0 if spec.bits == 1 else x
    return codec.quantize((x * spec.scale).astype(np.float32), spec)


# ---------------------------------------------------------------------------------------------
# CodecSpec
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim,bits,expected", [(64, 32, 256), (64, 8, 64), (64, 4, 32), (64, 1, 8),
                                               (33, 32, 132), (33, 8, 33), (33, 4, 17), (33, 1, 5), (1, 1, 1)])
def test_code_bytes(dim: int, bits: int, expected: int) -> None:
    assert CodecSpec(dim, bits).code_bytes == expected


@pytest.mark.parametrize("kwargs,field", [
    (dict(dim=0, bits=8), "dim"), (dict(dim=3.0, bits=8), "dim"), (dict(dim=True, bits=8), "dim"),
    (dict(dim=8, bits=16), "bits"), (dict(dim=8, bits=8, scale=0.0), "scale"),
    (dict(dim=8, bits=8, scale=float("nan")), "scale"), (dict(dim=8, bits=8, metric="cosine"), "metric"),
])
def test_spec_validation_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"field {field}"):
        CodecSpec(**kwargs)


def test_spec_dict_round_trip_through_json() -> None:
    spec = CodecSpec(dim=192, bits=4, scale=0.0123456789012345, metric="l2")
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["code_bytes"] == 96
    assert CodecSpec.from_dict(d) == spec
    assert CodecSpec.from_dict({"dim": 8, "bits": 8}) == CodecSpec(8, 8, 1.0, "l2")  # defaults


@pytest.mark.parametrize("d,message", [
    ({"bits": 8}, r"field dim: missing"),
    ({"dim": 8, "bits": "8"}, r"field bits: expected an integer, got '8'"),
    ({"dim": 8, "bits": 8, "scale": "0.1"}, r"field scale: expected a number"),
    ({"dim": 8, "bits": 8, "metric": 2}, r"field metric: expected a string"),
    ({"dim": 8, "bits": 8, "code_bytes": 4}, r"field code_bytes: expected 8 .* got 4"),
    ({"dim": 8, "bits": 8, "sclae": 0.1}, r"unknown field\(s\) \['sclae'\]"),
    ({"dim": 8, "bits": 7}, r"field bits: expected one of"),
    ([8, 8], r"expected a dict"),
])
def test_from_dict_errors(d: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CodecSpec.from_dict(d)


def test_check_compatible() -> None:
    a = CodecSpec(64, 8, 0.01)
    a.check_compatible(CodecSpec(64, 8, 0.01 * (1 + 1e-9)))  # JSON/float32 round-trip noise is fine
    with pytest.raises(CodecMismatchError, match=r"bits: expected 8, store has 4") as e:
        a.check_compatible(CodecSpec(64, 4, 0.01), what="store")
    assert "dim" not in str(e.value)
    with pytest.raises(CodecMismatchError, match=r"dim: expected 64.*scale: expected 0.01"):
        a.check_compatible(CodecSpec(32, 8, 0.02))
    CodecSpec(8, 32, 1.0).check_compatible(CodecSpec(8, 32, 2.0))  # float32 codes ignore the scale
    with pytest.raises(TypeError):
        a.check_compatible({"dim": 64})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# layouts
# ---------------------------------------------------------------------------------------------


def test_l2_normalize() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]])
    y = codec.l2_normalize(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]], rtol=1e-6)


def test_int8_layout_rounding_and_clipping() -> None:
    spec = CodecSpec(7, 8, scale=0.25)
    x = np.array([[12.5, -12.5, 31.75, -40.0, 0.375, 0.625, -0.375]], np.float32)
    codes = codec.quantize(x, spec)
    assert codes.dtype == np.uint8 and codes.shape == (1, 7)
    # 1.5 -> 2, 2.5 -> 2, -1.5 -> -2 (round half to even); 31.75 / 0.25 = 127; -160 clips to -127
    np.testing.assert_array_equal(codes.view(np.int8), [[50, -50, 127, -127, 2, 2, -2]])
    assert codes[0, 1] == 256 - 50  # two's complement byte
    np.testing.assert_array_equal(codec.unpack(codes, spec), [[50, -50, 127, -127, 2, 2, -2]])


def test_int4_nibble_layout() -> None:
    spec = CodecSpec(5, 4, scale=1.0)
    codes = codec.quantize(np.array([[1, -1, 7, -9, 3]], np.float32), spec)  # -9 clips to -7
    # dim 2j in the low nibble, 2j+1 in the high nibble, two's complement; odd dim: high nibble 0
    assert codes.tolist() == [[0xF1, 0x97, 0x03]]
    np.testing.assert_array_equal(codec.unpack(codes, spec), [[1, -1, 7, -7, 3]])


def test_1bit_layout() -> None:
    spec = CodecSpec(9, 1, scale=0.5)
    codes = codec.quantize(np.array([[1, -1, 0, -0.5, 2, 3, -1, -1, 5]], np.float32), spec)
    assert codes.tolist() == [[0b10101100, 0b10000000]]  # x >= 0 -> 1, MSB first, padding 0
    np.testing.assert_array_equal(codec.unpack(codes, spec), [[1, 0, 1, 0, 1, 1, 0, 0, 1]])
    np.testing.assert_array_equal(codec.dequantize(codes, spec)[0, :3], [0.5, -0.5, 0.5])


def test_float32_layout_is_raw_little_endian() -> None:
    spec = CodecSpec(3, 32)
    x = np.array([[1.5, -2.25, 3.0e-8]], np.float32)
    codes = codec.quantize(x, spec)
    assert codes.shape == (1, 12) and codes.tobytes() == x.astype("<f4").tobytes()
    np.testing.assert_array_equal(codec.dequantize(codes, spec), x)


@pytest.mark.parametrize("bits", [8, 4, 1])
@pytest.mark.parametrize("dim", [1, 7, 8, 33, 64])
def test_level_round_trip(bits: int, dim: int) -> None:
    rng = np.random.default_rng(dim * 10 + bits)
    spec = CodecSpec(dim, bits, scale=0.0371)
    lv = _levels(rng, 50, dim, bits)
    codes = _codes_of_levels(lv, spec)
    assert codes.shape == (50, spec.code_bytes) and codes.dtype == np.uint8
    np.testing.assert_array_equal(codec.unpack(codes, spec), lv)
    expect = (2.0 * lv - 1.0 if bits == 1 else lv) * np.float32(spec.scale)
    np.testing.assert_allclose(codec.dequantize(codes, spec), expect, rtol=1e-6)
    # quantising the dequantised values gives the same codes back
    np.testing.assert_array_equal(codec.quantize(codec.dequantize(codes, spec), spec), codes)


def test_int_codes_accepted_as_int8_view() -> None:
    spec = CodecSpec(4, 8)
    lv = np.array([[-3, 0, 5, 127]], np.int8)
    np.testing.assert_array_equal(codec.unpack(lv, spec), lv)  # int8 arrays are viewed as bytes


# ---------------------------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------------------------


def test_calibrate_scale() -> None:
    rng = np.random.default_rng(0)
    e = codec.l2_normalize(rng.standard_normal((2000, 64)))
    s8 = codec.calibrate_scale(e, bits=8, percentile=99.0)
    assert s8 == pytest.approx(np.percentile(np.abs(e), 99.0) / 127)
    # about 1 % of the values clip at +-127
    lv = codec.unpack(codec.quantize(e, CodecSpec(64, 8, s8)), CodecSpec(64, 8, s8))
    assert 0.005 < np.mean(np.abs(lv) == 127) < 0.02
    assert codec.calibrate_scale(e, bits=4) == pytest.approx(np.percentile(np.abs(e), 99.99) / 7)
    assert codec.calibrate_scale(e, bits=1) == pytest.approx(np.abs(e).mean())
    assert codec.calibrate_scale(e, bits=32) == 1.0


@pytest.mark.parametrize("args,message", [
    ((np.zeros((3, 4), np.float32),), "cannot derive a positive scale"),
    ((np.array([[np.nan, 1.0]]),), "NaN"),
    ((np.zeros((0, 4)),), "no embeddings"),
    ((np.ones((2, 2), np.int64),), "floating-point"),
    ((np.ones((2, 2)), 8, 0), "percentile"),
    ((np.ones((2, 2)), 3), "bits"),
])
def test_calibrate_scale_errors(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        codec.calibrate_scale(*args)


# ---------------------------------------------------------------------------------------------
# distances
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("dim", [7, 32])
def test_pairwise_int_distances_are_exact(bits: int, dim: int) -> None:
    rng = np.random.default_rng(bits + dim)
    spec = CodecSpec(dim, bits, scale=0.02)
    ql, gl = _levels(rng, 9, dim, bits), _levels(rng, 40, dim, bits)
    d = codec.pairwise_distances(_codes_of_levels(ql, spec), _codes_of_levels(gl, spec), spec)
    assert d.dtype == np.int64
    np.testing.assert_array_equal(d, ((ql[:, None, :] - gl[None, :, :]) ** 2).sum(-1))


def test_pairwise_1bit_is_hamming_and_ignores_padding_bits() -> None:
    rng = np.random.default_rng(3)
    spec = CodecSpec(13, 1)
    ql, gl = _levels(rng, 5, 13, 1), _levels(rng, 30, 13, 1)
    q, g = _codes_of_levels(ql, spec), _codes_of_levels(gl, spec)
    expect = (ql[:, None, :] != gl[None, :, :]).sum(-1)
    np.testing.assert_array_equal(codec.pairwise_distances(q, g, spec), expect)
    g_dirty = g.copy()
    g_dirty[:, -1] |= 0b00000111  # set the 3 padding bits (13 = 8 + 5 dims)
    np.testing.assert_array_equal(codec.pairwise_distances(q, g_dirty, spec), expect)
    np.testing.assert_array_equal(codec.code_sqnorms(g_dirty, spec), gl.sum(1))


def test_pairwise_float32() -> None:
    rng = np.random.default_rng(4)
    spec = CodecSpec(6, 32)
    qf, gf = rng.standard_normal((3, 6)).astype(np.float32), rng.standard_normal((8, 6)).astype(np.float32)
    d = codec.pairwise_distances(codec.quantize(qf, spec), codec.quantize(gf, spec), spec)
    assert d.dtype == np.float64
    np.testing.assert_allclose(d, ((qf[:, None].astype(np.float64) - gf[None]) ** 2).sum(-1), rtol=1e-12)


@pytest.mark.parametrize("bits", [8, 4])
def test_int_ranking_equals_dequantised_float_ranking_with_ties(bits: int) -> None:
    rng = np.random.default_rng(5)
    # scale = 2^-7: every dequantised value and squared distance is exact in float64, so equal
    # integer distances are equal float distances and the stable orders must be identical.
    spec = CodecSpec(16, bits, scale=2.0**-7)
    gl = _levels(rng, 60, 16, bits)
    gl[30:] = gl[:30]  # duplicates: exact ties
    gl[10] = gl[11][::-1]  # a permutation: equal distance to a constant query, different vector
    ql = _levels(rng, 6, 16, bits)
    ql[0] = 0
    q, g = _codes_of_levels(ql, spec), _codes_of_levels(gl, spec)
    d_int = codec.pairwise_distances(q, g, spec)
    qf, gf = codec.dequantize(q, spec).astype(np.float64), codec.dequantize(g, spec).astype(np.float64)
    d_float = ((qf[:, None, :] - gf[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(d_float, d_int * spec.scale**2)
    np.testing.assert_array_equal(np.argsort(d_int, axis=1, kind="stable"), np.argsort(d_float, axis=1, kind="stable"))
    np.testing.assert_array_equal(codec.code_distance_to_float(d_int, spec), d_float)
    # any scale: the float distance is scale^2 times the integer one (up to rounding)
    spec2 = CodecSpec(16, bits, scale=0.0123)
    qf2 = codec.dequantize(_codes_of_levels(ql, spec2), spec2).astype(np.float64)
    gf2 = codec.dequantize(_codes_of_levels(gl, spec2), spec2).astype(np.float64)
    np.testing.assert_allclose(((qf2[:, None] - gf2[None]) ** 2).sum(-1), d_int * spec2.scale**2, rtol=1e-6)


def test_code_distance_to_float_1bit() -> None:
    spec = CodecSpec(8, 1, scale=0.25)
    a, b = codec.quantize(np.array([[1, 1, 1, 1, -1, -1, -1, -1]], np.float32), spec), codec.quantize(
        np.array([[1, -1, 1, 1, -1, -1, 1, -1]], np.float32), spec)
    ham = codec.pairwise_distances(a, b, spec)
    assert ham.tolist() == [[2]]
    fa, fb = codec.dequantize(a, spec).astype(np.float64), codec.dequantize(b, spec).astype(np.float64)
    assert codec.code_distance_to_float(ham, spec)[0, 0] == pytest.approx(((fa - fb) ** 2).sum())


@pytest.mark.parametrize("bits", [32, 8, 4, 1])
def test_code_sqnorms(bits: int) -> None:
    rng = np.random.default_rng(6)
    spec = CodecSpec(11, bits, scale=0.03)
    x = rng.standard_normal((20, 11)).astype(np.float32)
    codes = codec.quantize(x, spec)
    if bits == 32:
        np.testing.assert_allclose(codec.code_sqnorms(codes, spec), (x.astype(np.float64) ** 2).sum(1), rtol=1e-12)
    else:
        np.testing.assert_array_equal(codec.code_sqnorms(codes, spec), (codec.unpack(codes, spec).astype(np.int64) ** 2).sum(1))


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------


def test_bad_inputs_name_the_problem() -> None:
    spec = CodecSpec(8, 8, 0.1)
    with pytest.raises(ValueError, match=r"expected 8 values per row .* got shape \(2, 7\)"):
        codec.quantize(np.zeros((2, 7), np.float32), spec)
    with pytest.raises(ValueError, match=r"floating-point array, got dtype int64"):
        codec.quantize(np.zeros((2, 8), np.int64), spec)
    with pytest.raises(ValueError, match="NaN or infinite"):
        codec.quantize(np.full((1, 8), np.inf, np.float32), spec)
    with pytest.raises(ValueError, match=r"expected shape \(n, 8\) for dim=8 bits=8, got \(3, 4\)"):
        codec.unpack(np.zeros((3, 4), np.uint8), spec)
    with pytest.raises(ValueError, match=r"expected dtype uint8 .* got float32"):
        codec.dequantize(np.zeros((3, 8), np.float32), spec)
    with pytest.raises(ValueError, match="numpy uint8 array"):
        codec.unpack([[1, 2, 3, 4, 5, 6, 7, 8]], spec)
    with pytest.raises(ValueError, match="float32 codes have no integer levels"):
        codec.unpack(np.zeros((1, 32), np.uint8), CodecSpec(8, 32))
    with pytest.raises(ValueError, match=r"gallery codes: expected shape \(n, 8\)"):
        codec.pairwise_distances(np.zeros((1, 8), np.uint8), np.zeros((1, 9), np.uint8), spec)
    with pytest.raises(ValueError, match="numeric array"):
        codec.l2_normalize(np.array(["a"]))
