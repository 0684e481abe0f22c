"""Drawing for the synthetic ReID generator: how people look (``Appearance``), cameras, one image at a time.

Everything here is a pure function of its arguments and a ``numpy.random.Generator``, so
``synth.py`` can seed one Generator per image and get byte-identical files for the same seed.

How an image is made:

1. The scene is drawn on a canvas ``SUPERSAMPLE`` times the output size (cheap anti-aliasing):
   the camera's background strip (a wide street/indoor scene, or ground seen from a drone) at a
   random horizontal offset, a soft shadow, then the person, then optional occluders.
2. The person is a layered 2D figure (legs, pelvis/skirt, torso with a pattern, arms, head,
   hair, hat, bag) drawn for one of four views. View-dependent attributes behave like the real
   thing: a logo is only on the chest (front), a backpack is a block from the back, two straps
   from the front and a bump from the side, a handbag hides behind the body when it hangs on the
   far side, long hair covers the back.
3. The camera model is applied at the output size: resolution loss (downscale then upscale),
   blur, a colour-mixing cast, saturation, contrast, brightness and sensor noise. A camera's cast
   makes the same clothes change colour from camera to camera (``camera_cast``; the default set
   has none: see ``synth.py`` for the calibration against a colour histogram).

Colour arithmetic uses element-wise numpy (no BLAS matmul) so results do not depend on the
CPU's BLAS kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

RGB = tuple[int, int, int]

# Drawing happens at SUPERSAMPLE x the output resolution, then is reduced (anti-aliasing).
SUPERSAMPLE = 2

VIEWS = ("front", "back", "left", "right")
PATTERNS = ("solid", "stripes", "checks", "logo")
LOWER_TYPES = ("trousers", "shorts", "skirt")
BAGS = ("none", "backpack", "handbag")

# Clothing colours. Only a seeded subset of `palette_size` of them is used by one data set, and
# several identities share one (upper, lower, secondary) scheme, so coarse colour statistics
# cannot tell them apart.
CLOTHING: tuple[RGB, ...] = (
    (28, 28, 30), (222, 222, 216), (126, 126, 128), (32, 42, 92), (52, 100, 178), (168, 36, 40),
    (50, 108, 60), (198, 178, 138), (104, 70, 46), (212, 182, 52), (218, 140, 160), (98, 60, 128),
    (108, 108, 50), (40, 118, 118), (212, 112, 40), (108, 32, 46),
)
SKIN: tuple[RGB, ...] = ((238, 192, 160), (222, 170, 130), (196, 134, 96), (158, 104, 70), (110, 72, 48), (82, 56, 40))
HAIR: tuple[RGB, ...] = ((22, 18, 18), (60, 40, 26), (108, 74, 40), (188, 158, 100), (160, 160, 158), (128, 52, 30))
SHOES: tuple[RGB, ...] = ((26, 26, 26), (228, 228, 228), (108, 70, 40), (62, 62, 62), (150, 32, 32), (42, 60, 120))
SCENE: tuple[RGB, ...] = (
    (150, 145, 135), (120, 120, 125), (170, 160, 140), (95, 100, 90), (180, 175, 170), (130, 110, 95),
    (100, 115, 130), (160, 150, 120), (85, 85, 90), (140, 150, 150), (175, 165, 150), (110, 95, 80),
)
GROUND: tuple[RGB, ...] = ((92, 92, 96), (84, 120, 62), (168, 160, 150), (188, 170, 132), (120, 104, 84), (110, 116, 110))
OCCLUDER: tuple[RGB, ...] = ((180, 30, 30), (30, 60, 140), (200, 200, 205), (40, 40, 45), (150, 150, 155), (60, 110, 60), (190, 160, 60))


class RenderSettings(Protocol):
    """The knobs the renderer reads (``synth.SynthConfig`` provides them)."""

    height: int
    width: int
    camera_cast: float
    camera_light: float
    max_blur: float
    max_noise: float
    min_resolution: float
    background_saturation: float
    aerial: bool


@dataclass(frozen=True)
class Appearance:
    """Fixed appearance of one person: every image of this pid is drawn from these attributes."""

    pid: int
    height: float  # fraction of the nominal person height (0.86..1.0)
    build: float  # width factor (slim 0.85 .. broad 1.2)
    skin: RGB
    hair: RGB
    hair_long: bool
    hat: RGB | None
    upper: RGB
    pattern: str  # one of PATTERNS
    secondary: RGB  # stripe/check/logo colour
    stripe_period: float  # in units of person height
    logo_shape: str  # circle | square | triangle | diamond
    long_sleeves: bool
    lower: RGB
    lower_type: str  # one of LOWER_TYPES
    shoes: RGB
    bag: str  # one of BAGS
    bag_side: int  # +1 = person's left, -1 = person's right
    bag_colour: RGB

    def signature(self) -> tuple:
        """The discrete attributes: identities sharing a colour scheme must differ here."""
        return (self.pattern, self.lower_type, self.bag, self.bag_side if self.bag == "handbag" else 0,
                self.hair_long, self.hat is not None, self.long_sleeves)


@dataclass(frozen=True)
class Scheme:
    """Clothing colours shared by a group of identities (what makes colour histograms fail)."""

    upper: RGB
    lower: RGB
    secondary: RGB


@dataclass
class Camera:
    """One camera: its colour response, optics and scene. Fixed for the whole data set."""

    index: int  # 0-based
    mix: np.ndarray  # 3x3 colour mixing matrix (rows: output channel)
    offset: np.ndarray  # 3 colour offsets
    brightness: float
    contrast: float
    saturation: float
    blur: float  # Gaussian radius at output resolution
    noise: float  # noise sigma (0..255 scale)
    resolution: float  # fraction of the output resolution the sensor really resolves
    view_weights: np.ndarray  # probabilities of VIEWS
    background: Image.Image  # wide scene strip at canvas height
    aerial: bool
    altitude: float  # aerial: person length as a fraction of the crop height
    foreshorten: float  # aerial: vertical squash of the body below the head
    sun: tuple[float, float]  # shadow direction (canvas fractions)


def _jitter(rgb: RGB, rng: np.random.Generator, amount: float) -> RGB:
    v = np.asarray(rgb, np.float64) + rng.uniform(-amount, amount, 3)
    return tuple(int(c) for c in np.clip(np.round(v), 0, 255))  # type: ignore[return-value]


def _shade(rgb: RGB, factor: float) -> RGB:
    return tuple(int(min(255, max(0, round(c * factor)))) for c in rgb)  # type: ignore[return-value]


def make_scheme(rng: np.random.Generator, palette: list[RGB]) -> Scheme:
    upper, lower = rng.integers(len(palette), size=2)
    secondary = (int(upper) + 1 + int(rng.integers(len(palette) - 1))) % len(palette)
    return Scheme(palette[int(upper)], palette[int(lower)], palette[secondary])


def make_appearance(pid: int, scheme: Scheme, rng: np.random.Generator, colour_jitter: float = 6.0,
                  avoid: set[tuple] | None = None) -> Appearance:
    """Sample one identity's attributes; resample (up to 50 times) while its signature is in ``avoid``."""
    for _ in range(50):
        pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
        lower_type = LOWER_TYPES[int(rng.choice(3, p=[0.55, 0.25, 0.2]))]
        bag = BAGS[int(rng.choice(3, p=[0.4, 0.3, 0.3]))]
        bag_side = 1 if rng.random() < 0.5 else -1
        hair_long = bool(rng.random() < 0.35)
        has_hat = bool(rng.random() < 0.25)
        long_sleeves = bool(rng.random() < 0.6)
        sig = (pattern, lower_type, bag, bag_side if bag == "handbag" else 0, hair_long, has_hat, long_sleeves)
        if not avoid or sig not in avoid:
            break
    return Appearance(
        pid=pid,
        height=float(rng.uniform(0.86, 1.0)),
        build=float(rng.uniform(0.85, 1.2)),
        skin=SKIN[int(rng.integers(len(SKIN)))],
        hair=HAIR[int(rng.integers(len(HAIR)))],
        hair_long=hair_long,
        hat=_jitter(CLOTHING[int(rng.integers(len(CLOTHING)))], rng, 10) if has_hat else None,
        upper=_jitter(scheme.upper, rng, colour_jitter),
        pattern=pattern,
        secondary=_jitter(scheme.secondary, rng, colour_jitter),
        stripe_period=float(rng.uniform(0.025, 0.045)),
        logo_shape=("circle", "square", "triangle", "diamond")[int(rng.integers(4))],
        long_sleeves=long_sleeves,
        lower=_jitter(scheme.lower, rng, colour_jitter),
        lower_type=lower_type,
        shoes=SHOES[int(rng.integers(len(SHOES)))],
        bag=bag,
        bag_side=bag_side,
        bag_colour=_jitter(CLOTHING[int(rng.integers(len(CLOTHING)))], rng, 10),
    )


def random_appearance(rng: np.random.Generator) -> Appearance:
    """A passer-by (distractor, occluding person) drawn from the full palette."""
    return make_appearance(0, make_scheme(rng, list(CLOTHING)), rng)


# ----------------------------------------------------------------------------------------------
# Scenes


def _street_scene(rng: np.random.Generator, hc: int, ws: int, saturation: float = 0.5) -> Image.Image:
    img = Image.new("RGB", (ws, hc), SCENE[int(rng.integers(len(SCENE)))])
    d = ImageDraw.Draw(img)
    horizon = int(hc * rng.uniform(0.45, 0.7))
    # facades: wall segments of different colours, so backgrounds vary within one camera
    x = 0
    while x < ws:
        seg = int(hc * rng.uniform(0.3, 1.0))
        d.rectangle([x, 0, x + seg, horizon], fill=SCENE[int(rng.integers(len(SCENE)))])
        x += seg
    floor = SCENE[int(rng.integers(len(SCENE)))]
    x = 0
    while x < ws:  # pavement zones, also varying along the strip
        seg = int(hc * rng.uniform(0.4, 1.2))
        d.rectangle([x, horizon, x + seg, hc], fill=SCENE[int(rng.integers(len(SCENE)))])
        x += seg
    # floor: tiles / lane lines that get denser towards the horizon
    line = _shade(floor, rng.uniform(0.7, 1.25))
    y, step = float(hc), hc * rng.uniform(0.12, 0.2)
    while y > horizon and step >= SUPERSAMPLE:  # the geometric series may never reach the horizon
        d.line([0, int(y), ws, int(y)], fill=line, width=max(1, SUPERSAMPLE))
        y -= step
        step *= 0.7
    if rng.random() < 0.6:
        period = int(hc * rng.uniform(0.2, 0.45))
        for x in range(int(rng.integers(period)), ws, period):
            d.line([x, horizon, x + int((x - ws / 2) * 0.15), hc], fill=line, width=max(1, SUPERSAMPLE))
    # wall clutter: windows, doors, shop signs, poles, plants, benches
    for _ in range(int(rng.integers(20, 40))):
        kind = rng.choice(["window", "door", "sign", "pole", "plant", "bench", "panel"])
        x = int(rng.uniform(0, ws))
        colour = SCENE[int(rng.integers(len(SCENE)))] if rng.random() < 0.7 else CLOTHING[int(rng.integers(len(CLOTHING)))]
        if kind == "window":
            w, h = int(hc * rng.uniform(0.15, 0.35)), int(hc * rng.uniform(0.12, 0.3))
            y0 = int(rng.uniform(0.05, 0.6) * horizon)
            d.rectangle([x, y0, x + w, y0 + h], fill=_shade(colour, 0.6), outline=_shade(colour, 1.3), width=SUPERSAMPLE)
        elif kind == "door":
            w, h = int(hc * rng.uniform(0.15, 0.25)), int(horizon * rng.uniform(0.5, 0.85))
            d.rectangle([x, horizon - h, x + w, horizon], fill=colour)
        elif kind == "sign":
            w, h = int(hc * rng.uniform(0.1, 0.3)), int(hc * rng.uniform(0.04, 0.1))
            y0 = int(rng.uniform(0.05, 0.5) * horizon)
            d.rectangle([x, y0, x + w, y0 + h], fill=CLOTHING[int(rng.integers(len(CLOTHING)))])
        elif kind == "pole":
            w = int(hc * rng.uniform(0.015, 0.04))
            d.rectangle([x, 0, x + w, int(horizon + rng.uniform(0, hc - horizon))], fill=_shade(colour, 0.8))
        elif kind == "plant":
            r = int(hc * rng.uniform(0.04, 0.1))
            y0 = int(horizon + rng.uniform(0, 0.3) * (hc - horizon))
            for _ in range(4):
                dx, dy = rng.uniform(-r, r, 2)
                d.ellipse([x + dx - r, y0 + dy - r, x + dx + r, y0 + dy + r], fill=_jitter((60, 110, 55), rng, 25))
        elif kind == "bench":
            w, h = int(hc * rng.uniform(0.2, 0.4)), int(hc * rng.uniform(0.05, 0.1))
            y0 = int(horizon + rng.uniform(-0.05, 0.1) * hc)
            d.rectangle([x, y0, x + w, y0 + h], fill=_shade(colour, 0.7))
        else:
            w, h = int(hc * rng.uniform(0.2, 0.6)), int(horizon * rng.uniform(0.2, 0.6))
            d.rectangle([x, horizon - h, x + w, horizon], fill=_shade(colour, rng.uniform(0.8, 1.2)))
    # a lighting gradient across the strip
    arr = np.asarray(img, np.float32)
    gx = np.linspace(0, 1, ws, dtype=np.float32)[None, :, None]
    gain = 1.0 + rng.uniform(-0.25, 0.25) * np.cos(gx * np.float32(rng.uniform(2, 8)) + np.float32(rng.uniform(0, 6)))
    # muted: real backdrops are mostly greyish; the person should carry most of the colour
    grey = arr.mean(axis=-1, keepdims=True)
    arr = grey + (arr - grey) * np.float32(saturation)
    return Image.fromarray(np.clip(arr * gain, 0, 255).astype(np.uint8))


def _ground_scene(rng: np.random.Generator, hc: int, ws: int) -> Image.Image:
    """Ground seen from a drone: asphalt, grass, paving or sand with markings and blotches."""
    base = GROUND[int(rng.integers(len(GROUND)))]
    img = Image.new("RGB", (ws, hc), base)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(20, 40))):
        r = hc * rng.uniform(0.03, 0.15)
        x, y = rng.uniform(0, ws), rng.uniform(0, hc)
        d.ellipse([x - r, y - r * rng.uniform(0.5, 1.5), x + r, y + r], fill=_jitter(base, rng, 18))
    style = int(rng.integers(3))
    if style == 0:  # paving grid
        step = int(hc * rng.uniform(0.08, 0.16))
        line = _shade(base, 0.8)
        for x in range(0, ws, step):
            d.line([x, 0, x, hc], fill=line, width=SUPERSAMPLE)
        for y in range(0, hc, step):
            d.line([0, y, ws, y], fill=line, width=SUPERSAMPLE)
    elif style == 1:  # road markings
        for _ in range(int(rng.integers(2, 5))):
            y = rng.uniform(0, hc)
            colour = (230, 230, 225) if rng.random() < 0.7 else (220, 190, 60)
            for x in range(0, ws, int(hc * 0.3)):
                d.rectangle([x, y, x + int(hc * 0.15), y + 2 * SUPERSAMPLE], fill=colour)
    for _ in range(int(rng.integers(2, 6))):  # objects: kerbs, manholes, car roofs
        x, y = rng.uniform(0, ws), rng.uniform(0, hc)
        w, h = hc * rng.uniform(0.05, 0.3), hc * rng.uniform(0.05, 0.2)
        d.rectangle([x, y, x + w, y + h], fill=OCCLUDER[int(rng.integers(len(OCCLUDER)))] if rng.random() < 0.4 else _shade(base, 0.6))
    return img


def make_camera(index: int, rng: np.random.Generator, cfg: RenderSettings) -> Camera:
    """Sample a camera. ``camera_cast`` scales the colour cast, ``camera_light`` the exposure spread."""
    cast, light = cfg.camera_cast, cfg.camera_light
    gains = 1.0 + cast * rng.uniform(-1.0, 1.0, 3)
    mix = np.diag(gains) + 0.5 * cast * rng.uniform(-1.0, 1.0, (3, 3)) * (1 - np.eye(3))
    mix /= mix.sum(axis=1).mean()  # keep overall exposure; brightness is a separate knob
    hc, wc = cfg.height * SUPERSAMPLE, cfg.width * SUPERSAMPLE
    if cfg.aerial:
        strip = _ground_scene(rng, hc, wc * 10)
    else:
        strip = _street_scene(rng, hc, wc * 10, cfg.background_saturation)
    weights = rng.dirichlet([0.6] * 4) + 0.06
    sun_angle = rng.uniform(0, 2 * math.pi)
    return Camera(
        index=index,
        mix=mix.astype(np.float32),
        offset=(rng.uniform(-25, 25, 3) * cast).astype(np.float32),
        brightness=float(rng.uniform(1 - light, 1 + 0.6 * light)),
        contrast=float(rng.uniform(1 - light, 1 + 0.4 * light)),
        saturation=float(rng.uniform(1 - 1.3 * light, 1 + 0.7 * light)),
        blur=float(rng.uniform(0.0, cfg.max_blur)),
        noise=float(rng.uniform(1.0, max(1.0, cfg.max_noise))),
        resolution=float(rng.uniform(cfg.min_resolution, 1.0)),
        view_weights=weights / weights.sum(),
        background=strip,
        aerial=cfg.aerial,
        altitude=float(rng.uniform(0.4, 0.62)),
        foreshorten=float(rng.uniform(0.3, 0.6)),
        sun=(math.cos(sun_angle) * 0.06, math.sin(sun_angle) * 0.04),
    )


# ----------------------------------------------------------------------------------------------
# The person


class _Pen:
    """Maps body coordinates to canvas pixels.

    ``u`` is horizontal in units of the person height ``hp`` (positive = the person's left in
    front/back views, forward in side views), ``v`` is down from the top of the head (0..1).
    ``m`` mirrors: back views and left-facing side views have m = -1.
    """

    def __init__(self, draw: ImageDraw.ImageDraw, cx: float, top: float, hp: float, m: int) -> None:
        self.d, self.cx, self.top, self.hp, self.m = draw, cx, top, hp, m

    def p(self, u: float, v: float) -> tuple[float, float]:
        return (self.cx + self.m * u * self.hp, self.top + v * self.hp)

    def poly(self, pts: list[tuple[float, float]], fill: RGB) -> None:
        self.d.polygon([self.p(u, v) for u, v in pts], fill=fill)

    def ellipse(self, u: float, v: float, ru: float, rv: float, fill: RGB) -> None:
        (x0, y0), (x1, y1) = self.p(u - ru, v - rv), self.p(u + ru, v + rv)
        self.d.ellipse([min(x0, x1), y0, max(x0, x1), y1], fill=fill)

    def rect(self, u0: float, v0: float, u1: float, v1: float, fill: RGB, radius: float = 0.0) -> None:
        (x0, y0), (x1, y1) = self.p(u0, v0), self.p(u1, v1)
        box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        if radius > 0:
            self.d.rounded_rectangle(box, radius=radius * self.hp, fill=fill)
        else:
            self.d.rectangle(box, fill=fill)

    def limb(self, a: tuple[float, float], b: tuple[float, float], w0: float, w1: float, fill: RGB) -> None:
        """A tapered segment from a to b (body coords) with a round cap at b."""
        (x0, y0), (x1, y1) = self.p(*a), self.p(*b)
        dx, dy = x1 - x0, y1 - y0
        n = math.hypot(dx, dy) or 1e-6
        nx, ny = -dy / n, dx / n
        h0, h1 = w0 * self.hp / 2, w1 * self.hp / 2
        self.d.polygon([(x0 + nx * h0, y0 + ny * h0), (x1 + nx * h1, y1 + ny * h1),
                        (x1 - nx * h1, y1 - ny * h1), (x0 - nx * h0, y0 - ny * h0)], fill=fill)
        self.d.ellipse([x1 - h1, y1 - h1, x1 + h1, y1 + h1], fill=fill)
        self.d.ellipse([x0 - h0, y0 - h0, x0 + h0, y0 + h0], fill=fill)


def _fill_pattern(layer: Image.Image, pen: _Pen, torso: list[tuple[float, float]], ident: Appearance) -> None:
    """Overlay stripes or checks inside the torso polygon (mask = torso AND pattern)."""
    mask = Image.new("L", layer.size, 0)
    ImageDraw.Draw(mask).polygon([pen.p(u, v) for u, v in torso], fill=255)
    period = max(2.0, ident.stripe_period * pen.hp)
    ys = ((np.arange(layer.size[1], dtype=np.float32) - pen.top) / period).astype(np.int32)[:, None]
    on = (ys % 2) == 0
    if ident.pattern == "checks":
        xs = ((np.arange(layer.size[0], dtype=np.float32) - pen.cx) / period).astype(np.int32)[None, :]
        on = on ^ ((xs % 2) == 0)
    else:
        on = np.broadcast_to(on, (layer.size[1], layer.size[0]))
    m = np.asarray(mask) & np.where(on, 255, 0).astype(np.uint8)
    layer.paste(ident.secondary + (255,), (0, 0), Image.fromarray(m))


def _logo(pen: _Pen, ident: Appearance) -> None:
    u, v, r = 0.03, 0.27, 0.035
    c = ident.secondary
    if ident.logo_shape == "circle":
        pen.ellipse(u, v, r, r, c)
    elif ident.logo_shape == "square":
        pen.rect(u - r, v - r, u + r, v + r, c)
    elif ident.logo_shape == "triangle":
        pen.poly([(u - r, v + r), (u + r, v + r), (u, v - r)], c)
    else:
        pen.poly([(u, v - r * 1.3), (u + r, v), (u, v + r * 1.3), (u - r, v)], c)


def draw_person(layer: Image.Image, ident: Appearance, view: str, phase: float, cx: float, top: float, hp: float) -> None:
    """Draw ``ident`` on an RGBA ``layer``: head top at ``top``, height ``hp`` px, centred on ``cx``.

    ``phase`` in [-1, 1] is the walking stride (leg and arm swing).
    """
    d = ImageDraw.Draw(layer)
    side = view in ("left", "right")
    m = {"front": 1, "back": -1, "right": 1, "left": -1}[view]
    pen = _Pen(d, cx, top, hp, m)
    b = ident.build
    sw, ww = 0.125 * b, 0.095 * b  # half widths at shoulders and waist
    skin, lower, upper = ident.skin + (255,), ident.lower + (255,), ident.upper + (255,)
    hair, shoes = ident.hair + (255,), ident.shoes + (255,)
    bag = ident.bag_colour + (255,)
    leg_colour = lower if ident.lower_type == "trousers" else skin
    arm_colour = upper if ident.long_sleeves else skin

    def legs_front() -> None:
        lift = 0.02 * abs(phase)
        for s in (-1, 1):
            hip, ankle = (s * ww * 0.5, 0.54), (s * (ww * 0.55 + 0.01), 0.955 - (lift if s * phase > 0 else 0))
            pen.limb(hip, ankle, 0.075 * b, 0.045, leg_colour)
            if ident.lower_type == "shorts":
                knee = (hip[0] * 0.5 + ankle[0] * 0.5, 0.7)
                pen.limb(hip, knee, 0.082 * b, 0.07, lower)
            pen.ellipse(ankle[0], ankle[1] + 0.018, 0.03, 0.02, shoes)

    def legs_side() -> None:
        for s, shade in ((-1, 0.72), (1, 1.0)):
            ang = s * phase * 0.38
            hip = (0.0, 0.54)
            ankle = (math.sin(ang) * 0.41, 0.54 + math.cos(ang) * 0.41)
            lc = tuple(_shade(leg_colour[:3], shade)) + (255,)
            pen.limb(hip, ankle, 0.08 * b, 0.045, lc)
            if ident.lower_type == "shorts":
                knee = (math.sin(ang) * 0.17, 0.54 + math.cos(ang) * 0.17)
                pen.limb(hip, knee, 0.086 * b, 0.072, tuple(_shade(ident.lower, shade)) + (255,))
            pen.ellipse(ankle[0] + 0.015, ankle[1] + 0.015, 0.04, 0.018, tuple(_shade(ident.shoes, shade)) + (255,))

    def pelvis() -> None:
        half = ww * (0.75 if side else 1.0)
        if ident.lower_type == "skirt":
            flare = half * 1.55
            pen.poly([(-half, 0.47), (half, 0.47), (flare, 0.72), (-flare, 0.72)], lower)
        else:
            pen.poly([(-half, 0.47), (half, 0.47), (half * 1.05, 0.58), (-half * 1.05, 0.58)], lower)

    def arms_front() -> None:
        swing = 0.015 * phase
        for s in (-1, 1):
            shoulder, wrist = (s * (sw - 0.012), 0.18), (s * (sw + 0.012) + s * swing, 0.5)
            elbow = ((shoulder[0] + wrist[0]) / 2, 0.34)
            pen.limb(shoulder, elbow, 0.058 * b, 0.05, upper)
            pen.limb(elbow, wrist, 0.05, 0.04, arm_colour)
            pen.ellipse(wrist[0], wrist[1] + 0.015, 0.02, 0.022, skin)

    def arm_side(far: bool) -> None:
        ang = (-1 if far else 1) * -phase * 0.45
        shade = 0.72 if far else 1.0
        shoulder = (0.0, 0.19)
        elbow = (math.sin(ang) * 0.15, 0.19 + math.cos(ang) * 0.15)
        wrist = (elbow[0] + math.sin(ang * 1.3 + 0.15) * 0.15, elbow[1] + math.cos(ang * 1.3 + 0.15) * 0.15)
        pen.limb(shoulder, elbow, 0.06 * b, 0.05, tuple(_shade(ident.upper, shade)) + (255,))
        pen.limb(elbow, wrist, 0.05, 0.04, tuple(_shade(arm_colour[:3], shade)) + (255,))
        pen.ellipse(wrist[0], wrist[1] + 0.01, 0.02, 0.022, tuple(_shade(ident.skin, shade)) + (255,))

    def torso() -> None:
        if side:
            pts = [(-0.075 * b, 0.165), (0.07 * b, 0.165), (0.078 * b, 0.3), (0.06 * b, 0.5), (-0.07 * b, 0.5)]
        else:
            pts = [(-sw, 0.165), (sw, 0.165), (ww * 1.02, 0.5), (-ww * 1.02, 0.5)]
            pen.ellipse(-sw + 0.01, 0.19, 0.03 * b, 0.028, upper)
            pen.ellipse(sw - 0.01, 0.19, 0.03 * b, 0.028, upper)
        pen.poly(pts, upper)
        if ident.pattern in ("stripes", "checks"):
            _fill_pattern(layer, pen, pts, ident)
        if ident.pattern == "logo" and view == "front":
            _logo(pen, ident)

    def head() -> None:
        pen.rect(-0.02, 0.1, 0.02, 0.175, skin)
        if view == "back":
            pen.ellipse(0, 0.065, 0.046, 0.066, hair)
        elif side:
            pen.ellipse(0.004, 0.065, 0.044, 0.066, skin)
            pen.ellipse(0.05, 0.075, 0.008, 0.012, skin)  # nose
            pen.ellipse(-0.012, 0.052, 0.04, 0.056, hair)
        else:
            pen.ellipse(0, 0.065, 0.045, 0.066, hair)
            pen.ellipse(0, 0.078, 0.04, 0.052, skin)
        if ident.hat is not None:
            hat = ident.hat + (255,)
            pen.poly([(-0.05, 0.045), (0.05, 0.045), (0.04, -0.004), (-0.04, -0.004)], hat)
            if side:
                pen.rect(0.02, 0.038, 0.085, 0.05, hat)
            elif view == "front":
                pen.rect(-0.055, 0.038, 0.055, 0.05, hat)

    def long_hair_behind() -> None:
        if not ident.hair_long:
            return
        if side:
            pen.rect(-0.06, 0.04, -0.005, 0.27, hair, radius=0.02)
        elif view == "front":
            pen.rect(-0.058, 0.04, 0.058, 0.25, hair, radius=0.02)

    def long_hair_over_back() -> None:
        if ident.hair_long and view == "back":
            pen.rect(-0.055, 0.06, 0.055, 0.29, hair, radius=0.025)

    def backpack() -> None:
        if ident.bag != "backpack":
            return
        if view == "back":
            pen.rect(-sw * 0.72, 0.2, sw * 0.72, 0.45, bag, radius=0.02)
            pen.rect(-sw * 0.5, 0.36, sw * 0.5, 0.44, tuple(_shade(ident.bag_colour, 0.75)) + (255,), radius=0.01)
        elif view == "front":
            for s in (-1, 1):
                pen.limb((s * sw * 0.6, 0.17), (s * sw * 0.55, 0.36), 0.022, 0.018, bag)
        else:
            pen.rect(-0.075 * b - 0.085, 0.19, -0.06 * b, 0.44, bag, radius=0.02)

    def strap_side() -> None:
        if ident.bag == "backpack" and side:
            pen.limb((-0.05, 0.17), (0.04 * b, 0.33), 0.02, 0.018, bag)

    def handbag(front_side: bool) -> None:
        """Draw the handbag if it hangs on the side facing the camera (``front_side``) or the far side."""
        if ident.bag != "handbag":
            return
        if side:
            # facing image-right shows the person's right side (bag_side -1), and vice versa
            visible = (ident.bag_side == -1) == (view == "right")
            if visible != front_side:
                return
            pen.limb((0.0, 0.19), (-0.01, 0.46), 0.012, 0.012, tuple(_shade(ident.bag_colour, 0.8)) + (255,))
            pen.rect(-0.06, 0.45, 0.045, 0.57, bag, radius=0.012)
        elif front_side:
            s = ident.bag_side
            pen.limb((s * sw * 0.55, 0.17), (s * (sw + 0.045), 0.46), 0.012, 0.012, tuple(_shade(ident.bag_colour, 0.8)) + (255,))
            pen.rect(s * (sw + 0.005), 0.45, s * (sw + 0.095), 0.57, bag, radius=0.012)

    if side:
        arm_side(far=True)
        handbag(front_side=False)
        backpack()
        long_hair_behind()
        legs_side()
        pelvis()
        torso()
        strap_side()
        head()
        arm_side(far=False)
        handbag(front_side=True)
    else:
        long_hair_behind()
        legs_front()
        pelvis()
        arms_front()
        torso()
        if view == "front":
            backpack()
        head()
        if view == "back":
            backpack()
            long_hair_over_back()
            if ident.hat is not None:  # hat over the long hair from behind
                pen.poly([(-0.05, 0.045), (0.05, 0.045), (0.04, -0.004), (-0.04, -0.004)], ident.hat + (255,))
        handbag(front_side=True)


def person_layer(size: tuple[int, int], ident: Appearance, view: str, phase: float, cx: float, top: float, hp: float) -> Image.Image:
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw_person(layer, ident, view, phase, cx, top, hp)
    return layer


def _aerial_person(ident: Appearance, view: str, phase: float, cam: Camera, rng: np.random.Generator,
                   hc: int, wc: int) -> tuple[Image.Image, Image.Image]:
    """The person seen from above: head kept, body squashed, rotated. Returns (layer, shadow)."""
    hp = hc * 0.9
    size = (int(hp * 0.6), int(hp * 1.02))
    full = person_layer(size, ident, view, phase, size[0] / 2, hp * 0.01, hp)
    cut = int(hp * 0.17)
    head, body = full.crop((0, 0, size[0], cut)), full.crop((0, cut, size[0], size[1]))
    squash = cam.foreshorten * rng.uniform(0.85, 1.15)
    body = body.resize((size[0], max(2, int(body.size[1] * squash))), Image.BILINEAR)
    head = head.resize((int(size[0] * 1.1), int(cut * 1.1)), Image.BILINEAR)
    fig = Image.new("RGBA", (head.size[0], head.size[1] + body.size[1]), (0, 0, 0, 0))
    fig.alpha_composite(body, (int((head.size[0] - size[0]) / 2), head.size[1] - int(cut * 0.12)))
    fig.alpha_composite(head, (0, 0))
    target = hc * cam.altitude * rng.uniform(0.85, 1.15) * ident.height
    scale = target / fig.size[1]
    fig = fig.resize((max(2, int(fig.size[0] * scale)), max(2, int(fig.size[1] * scale))), Image.BILINEAR)
    fig = fig.rotate(float(rng.uniform(-35, 35)), resample=Image.BICUBIC, expand=True)
    alpha = fig.getchannel("A")
    shadow = Image.new("RGBA", fig.size, (0, 0, 0, 0))
    shadow.putalpha(alpha.point(lambda a: a * 90 // 255).filter(ImageFilter.GaussianBlur(2 * SUPERSAMPLE)))
    return fig, shadow


# ----------------------------------------------------------------------------------------------
# Occluders


def draw_occluder(canvas: Image.Image, rng: np.random.Generator, box: tuple[float, float, float, float],
                  aerial: bool) -> None:
    """Cover 20-55 % of the person's box ``(x0, y0, x1, y1)`` with an object (Occluded-Duke-like)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    wc, hc = canvas.size
    d = ImageDraw.Draw(canvas)
    colour = OCCLUDER[int(rng.integers(len(OCCLUDER)))]
    kinds = ["car", "bush", "box", "pole", "person", "sign"] if not aerial else ["car", "bush", "box", "person"]
    kind = kinds[int(rng.integers(len(kinds)))]
    cover = rng.uniform(0.25, 0.55)
    if kind == "car":
        top = y1 - cover * h
        d.rounded_rectangle([-wc * 0.2, top, wc * 1.2, hc * 1.1], radius=int(hc * 0.05), fill=colour)
        d.rectangle([-wc * 0.2, top + h * 0.03, wc * 1.2, top + h * 0.12], fill=_shade(colour, 0.45))
        for x in (rng.uniform(0, wc * 0.4), rng.uniform(wc * 0.6, wc)):
            r = h * 0.07
            d.ellipse([x - r, y1 - r, x + r, y1 + r], fill=(20, 20, 20))
    elif kind == "bush":
        top = y1 - cover * h
        green = (58, 104, 50)
        for _ in range(int(rng.integers(5, 10))):
            r = w * rng.uniform(0.25, 0.5)
            cx, cy = rng.uniform(x0 - w * 0.2, x1 + w * 0.2), rng.uniform(top + r * 0.6, y1 + r)
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_jitter(green, rng, 25))
    elif kind == "box":
        left = rng.random() < 0.5
        bw = w * rng.uniform(0.5, 0.9)
        top = y1 - cover * h * 1.2
        bx = x0 - w * 0.2 if left else x1 + w * 0.2 - bw
        d.rectangle([bx, top, bx + bw, hc], fill=colour, outline=_shade(colour, 0.6), width=SUPERSAMPLE)
    elif kind == "pole":
        pw = w * rng.uniform(0.3, 0.55)
        px = rng.uniform(x0 - pw * 0.3, x1 - pw * 0.7)
        d.rectangle([px, 0, px + pw, hc], fill=_shade(colour, 0.8))
    elif kind == "sign":
        sh = h * cover * 0.8
        sy = rng.uniform(y0 + h * 0.15, y0 + h * 0.55)
        d.rectangle([x0 - w * 0.3, sy, x1 + w * 0.3, sy + sh], fill=colour)
        d.rectangle([wc * 0.5 - wc * 0.03, sy + sh, wc * 0.5 + wc * 0.03, hc], fill=(90, 90, 90))
    else:  # another person in front, shifted to one side
        other = random_appearance(rng)
        hp = (y1 - y0) * rng.uniform(1.0, 1.25)
        shift = w * rng.uniform(0.55, 0.9) * (1 if rng.random() < 0.5 else -1)
        if aerial:
            hp *= 0.6
        layer = person_layer(canvas.size, other, VIEWS[int(rng.integers(4))], float(rng.uniform(-1, 1)),
                             (x0 + x1) / 2 + shift, y1 - hp + h * 0.05, hp)
        canvas.paste(layer, (0, 0), layer)


# ----------------------------------------------------------------------------------------------
# Camera model


def apply_camera(canvas: Image.Image, cam: Camera, rng: np.random.Generator, out_size: tuple[int, int]) -> Image.Image:
    """Reduce the canvas to ``out_size`` (w, h) through the camera: resolution, blur, colour, noise."""
    w, h = out_size
    res = min(1.0, cam.resolution * float(rng.uniform(0.85, 1.15)))
    if res < 0.98:
        small = canvas.resize((max(8, round(w * res)), max(16, round(h * res))), Image.BOX)
        img = small.resize((w, h), Image.BILINEAR)
    else:
        img = canvas.resize((w, h), Image.BOX)
    blur = cam.blur * float(rng.uniform(0.6, 1.3))
    if blur > 0.15:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    x = np.asarray(img, dtype=np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    mx, off = cam.mix, cam.offset
    out = np.stack([r * mx[i, 0] + g * mx[i, 1] + b * mx[i, 2] + off[i] for i in range(3)], axis=-1)
    lum = out.mean(axis=-1, keepdims=True)
    out = lum + (out - lum) * np.float32(cam.saturation)
    out = (out - np.float32(128.0)) * np.float32(cam.contrast) + np.float32(128.0)
    out = out * np.float32(cam.brightness * float(rng.uniform(0.88, 1.12)))
    out = out + rng.normal(0.0, cam.noise, out.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def _background(cam: Camera, rng: np.random.Generator, wc: int, hc: int) -> Image.Image:
    strip = cam.background
    x = int(rng.integers(0, strip.size[0] - wc))
    bg = strip.crop((x, 0, x + wc, hc))
    if rng.random() < 0.5:
        bg = bg.transpose(Image.FLIP_LEFT_RIGHT)
    return bg.copy()


def render(ident: Appearance | None, cam: Camera, rng: np.random.Generator, cfg: RenderSettings, *,
           occluded: bool = False, mode: str = "person") -> Image.Image:
    """One image of ``ident`` seen by ``cam``.

    mode: ``person`` (a normal detection), ``partial`` (a bad detection: the person much too big
    or shifted so only part shows; distractor/junk material), ``background`` (no person; ``ident``
    may be None).
    """
    w, h = cfg.width, cfg.height
    wc, hc = w * SUPERSAMPLE, h * SUPERSAMPLE
    canvas = _background(cam, rng, wc, hc)
    view = VIEWS[int(rng.choice(4, p=cam.view_weights))]
    phase = float(rng.uniform(-1, 1))
    box: tuple[float, float, float, float] | None = None
    if mode != "background" and ident is not None:
        if cam.aerial:
            fig, shadow = _aerial_person(ident, view, phase, cam, rng, hc, wc)
            if mode == "partial":
                fig = fig.resize((fig.size[0] * 2, fig.size[1] * 2), Image.BILINEAR)
                shadow = shadow.resize(fig.size, Image.BILINEAR)
            px = int(wc / 2 - fig.size[0] / 2 + rng.uniform(-0.1, 0.1) * wc)
            py = int(hc / 2 - fig.size[1] / 2 + rng.uniform(-0.08, 0.08) * hc)
            if mode == "partial":
                px += int(rng.choice([-1, 1]) * wc * rng.uniform(0.3, 0.5))
            sx, sy = int(cam.sun[0] * wc * 4), int(cam.sun[1] * hc * 2)
            canvas.paste((0, 0, 0), (px + sx, py + sy), shadow)
            canvas.paste(fig, (px, py), fig)
            box = (px, py, px + fig.size[0], py + fig.size[1])
        else:
            scale = rng.uniform(0.8, 0.96) * ident.height
            if mode == "partial":
                scale *= rng.uniform(1.5, 2.4)
            hp = hc * scale
            feet = hc * rng.uniform(0.95, 1.0)
            cx = wc / 2 + rng.uniform(-0.08, 0.08) * wc
            top = feet - hp
            if mode == "partial":
                cx += rng.choice([-1, 1]) * wc * rng.uniform(0.25, 0.55)
                top += rng.uniform(-0.3, 0.1) * hp
            d = ImageDraw.Draw(canvas, "RGBA")
            d.ellipse([cx - hp * 0.14, top + hp * 0.975, cx + hp * 0.14, top + hp * 1.02], fill=(0, 0, 0, 70))
            layer = person_layer((wc, hc), ident, view, phase, cx, top, hp)
            canvas.paste(layer, (0, 0), layer)
            box = (cx - hp * 0.15, top, cx + hp * 0.15, top + hp)
    if occluded and box is not None:
        draw_occluder(canvas, rng, box, cam.aerial)
    return apply_camera(canvas, cam, rng, (w, h))
