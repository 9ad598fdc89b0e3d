"""Graded synthetic fundus photographs painted onto a real fundus.

No graded fundus set can be downloaded here, so tests and demos use a real
normal fundus photograph -- :func:`skimage.data.retina` (CC0, shipped with
scikit-image) -- and paint diabetic-retinopathy lesions on it following the
ICDR severity rules:

* grade 0: no lesions;
* grade 1 (mild NPDR): microaneurysms only;
* grade 2 (moderate NPDR): microaneurysms plus dot/blot or flame haemorrhages,
  hard exudates and/or cotton-wool spots, not meeting grade 3;
* grade 3 (severe NPDR): many haemorrhages in all four quadrants and venous
  beading (the 4-2-1 rule, scaled to what is visible at screening resolution);
* grade 4 (PDR): neovascular tufts (at the disc or elsewhere) and/or a
  pre-retinal (boat-shaped) haemorrhage, over severe-NPDR background;
* referable DME: hard exudates within one disc diameter of the fovea.

Each image is also warped (rotation, scale, smooth elastic field), recoloured
(channel gains, gamma), re-lit (illumination gradient and vignetting), mirrored
for right eyes, placed off-centre on a dark camera frame that may clip the top
and bottom, and JPEG-compressed.  A lesion label mask (codes in
:data:`LESIONS`) is kept for every image so saliency can be checked against
where the lesions are.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage as ndi

from deepsci.core.config import check_ranges, option
from deepsci.core.errors import ConfigError
from deepsci.core.io import atomic_path, write_text
from deepsci.core.progress import progress
from deepsci.core.runs import RunDir

from .io import SYNTH_MARKER

#: Lesion codes used in the masks (0 is background).
LESIONS = {1: "microaneurysm", 2: "haemorrhage", 3: "hard_exudate", 4: "cotton_wool_spot",
           5: "venous_beading", 6: "neovascularisation", 7: "preretinal_haemorrhage"}

# Landmarks of skimage.data.retina() as fractions of its 1411 px side, measured
# once on the photograph (a left eye: optic disc on the image's left).
_BASE_SIDE = 1411
_FOV_C = (702.4 / _BASE_SIDE, 703.7 / _BASE_SIDE)  # (y, x)
_FOV_R = 698.3 / _BASE_SIDE
_DISC = (0.447, 0.158)
_FOVEA = (0.492, 0.497)
_DD = 0.125  # disc diameter as a fraction of the side



@dataclass
class SynthConfig:
    """Settings of :func:`run_synth`.

    Attributes
    ----------
    out : Path
        Output folder (EyePACS layout).
    n_patients : int
        Patients; each contributes a left and a right eye.
    size : int
        Fundus diameter in pixels of the written photographs.
    seed : int
        Random seed; the same seed gives the same files.
    grade_probs : list of float
        Probability of each ICDR grade 0-4 for a patient's worse eye.
    dme_prob : float
        Probability of referable DME in an eye of grade >= 2.
    ungradable_frac : float
        Fraction of photographs degraded (heavy blur or under-exposure) to
        exercise the gradability check; their label is kept.
    jpeg_quality : int
    """

    out: Path = field(metadata={"help": "Output folder (EyePACS layout)."})
    n_patients: int = option(50, "Patients (two eyes each).", cli="patients", min=1)
    size: int = option(512, "Fundus diameter in pixels.", min=64)
    seed: int = option(0, "Random seed (the same seed writes the same files).")
    grade_probs: list[float] = option(help="P(ICDR grade 0..4) of a patient's worse eye.", min=0,
                                    factory=lambda: [0.3, 0.15, 0.25, 0.15, 0.15])
    dme_prob: float = option(0.3, "P(referable DME | grade >= 2).", min=0, max=1)
    ungradable_frac: float = option(0.0, "Fraction of photographs blurred or darkened.", min=0,
                                    max=1)
    jpeg_quality: int = option(92, "JPEG quality (1-100).", min=1, max=100)

    def __post_init__(self) -> None:
        self.out = Path(self.out)

    def validate(self) -> SynthConfig:
        """Raise :class:`ConfigError` for impossible values; return self."""
        check_ranges(self)
        p = np.asarray(self.grade_probs, float)
        if p.shape != (5,) or p.sum() <= 0:
            raise ConfigError(f"expected 5 non-negative --grade-probs, found {self.grade_probs}")
        return self


@functools.lru_cache(maxsize=4)
def _base(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The real fundus at ``size`` px, its vessel mask and vessel-skeleton distance map."""
    from skimage import data, morphology

    im = Image.fromarray(data.retina()).resize((size, size), Image.LANCZOS)
    rgb = np.asarray(im, dtype=np.float32) / 255.0
    green = rgb[..., 1]
    # Vessels are dark, thin and elongated in green: a black top-hat finds them.
    rad = max(2, round(size * 0.012))
    tophat = morphology.black_tophat(green, morphology.disk(rad))
    fov = _disc_mask(size, _FOV_C, _FOV_R * 0.92)
    vessels = (tophat > np.percentile(tophat[fov], 88)) & fov
    vessels = morphology.remove_small_objects(vessels, max_size=max(8, size // 8))
    width = ndi.distance_transform_edt(vessels)
    return rgb, vessels, width


def _disc_mask(size: int, centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.ogrid[:size, :size]
    return (yy - centre[0] * size) ** 2 + (xx - centre[1] * size) ** 2 <= (radius * size) ** 2


class _Painter:
    """Paints soft lesions onto a float RGB image and records a label mask."""

    def __init__(self, rgb: np.ndarray, rng: np.random.Generator):
        self.rgb = rgb
        self.mask = np.zeros(rgb.shape[:2], np.uint8)
        self.rng = rng
        self.size = rgb.shape[0]
        self.dd = _DD * self.size

    def blob(self, cy, cx, ry, rx, *, code, colour, alpha=1.0, angle=None, soft=0.3,
             irregular=0.15, mode="blend", flat_top=False):
        rng = self.rng
        angle = rng.uniform(0, np.pi) if angle is None else angle
        r = max(ry, rx) * (1 + irregular) + 2
        y0, y1 = int(max(0, cy - r)), int(min(self.size, cy + r + 1))
        x0, x1 = int(max(0, cx - r)), int(min(self.size, cx + r + 1))
        if y1 <= y0 or x1 <= x0:
            return
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        theta = np.arctan2(v, u)
        wobble = 1 + irregular * sum(rng.uniform(-1, 1) * np.cos(k * theta + rng.uniform(0, 6.3))
                                     for k in (2, 3, 5))
        d = np.sqrt((u / max(rx, 0.5)) ** 2 + (v / max(ry, 0.5)) ** 2) / wobble
        # Soft edge: alpha ramps from 1 inside to 0 over `soft` of the radius.
        a = np.clip((1 - d) / max(soft, 1e-3), 0, 1) * alpha
        if flat_top:
            # Pre-retinal blood settles: a horizontal fluid level cuts the top.
            a[dy < -0.25 * ry] = 0
        a = a[..., None]
        patch = self.rgb[y0:y1, x0:x1]
        col = np.asarray(colour, np.float32)
        if mode == "multiply":
            patch *= 1 - a * (1 - col)
        else:
            patch += a * (col - patch)
        self.mask[y0:y1, x0:x1][a[..., 0] > 0.3 * alpha] = code

    def random_point(self, *, min_disc=0.8, quadrant=None, near=None, within=None, beyond=None):
        """A point inside the FOV, away from the optic disc, with optional constraints (in DD)."""
        s, rng = self.size, self.rng
        for _ in range(500):
            if near is not None:
                ang, rad = rng.uniform(0, 2 * np.pi), within * self.dd * np.sqrt(rng.uniform())
                y, x = near[0] * s + rad * np.sin(ang), near[1] * s + rad * np.cos(ang)
            else:
                y, x = rng.uniform(0, s, 2)
            if (y - _FOV_C[0] * s) ** 2 + (x - _FOV_C[1] * s) ** 2 > (0.86 * _FOV_R * s) ** 2:
                continue
            if np.hypot(y - _DISC[0] * s, x - _DISC[1] * s) < min_disc * self.dd:
                continue
            if quadrant is not None:
                q = (int(y > _FOV_C[0] * s) << 1) | int(x > _FOV_C[1] * s)
                if q != quadrant:
                    continue
            if beyond is not None and np.hypot(y - _FOVEA[0] * s,
                                               x - _FOVEA[1] * s) < beyond * self.dd:
                continue
            return y, x
        return _FOV_C[0] * s, _FOV_C[1] * s

    # --- lesion types -------------------------------------------------------
    def microaneurysm(self, **where):
        y, x = self.random_point(**where)
        r = self.dd * self.rng.uniform(0.05, 0.08)
        self.blob(y, x, r, r, code=1, colour=(0.6, 0.3, 0.3), mode="multiply", soft=0.4,
                  irregular=0.0)

    def haemorrhage(self, **where):
        y, x = self.random_point(**where)
        rng = self.rng
        if rng.uniform() < 0.3:  # flame-shaped: elongated along the nerve-fibre layer
            ang = np.arctan2(y - _DISC[0] * self.size, x - _DISC[1] * self.size) + np.pi / 2
            self.blob(y, x, self.dd * rng.uniform(0.06, 0.1), self.dd * rng.uniform(0.2, 0.35),
                      code=2, colour=(0.62, 0.3, 0.28), mode="multiply", angle=ang, soft=0.5)
        else:  # dot/blot
            r = self.dd * rng.uniform(0.1, 0.28)
            self.blob(y, x, r * rng.uniform(0.7, 1.0), r, code=2, colour=(0.58, 0.25, 0.24),
                      mode="multiply", soft=0.35, irregular=0.2)

    def exudates(self, **where):
        """A cluster of hard exudates (sharp, waxy yellow)."""
        cy, cx = self.random_point(**where)
        rng = self.rng
        for _ in range(rng.integers(4, 14)):
            r = self.dd * rng.uniform(0.035, 0.09)
            ang, rad = rng.uniform(0, 2 * np.pi), self.dd * rng.uniform(0, 0.45)
            self.blob(cy + rad * np.sin(ang), cx + rad * np.cos(ang), r, r * rng.uniform(0.6, 1),
                      code=3, colour=(1.0, 0.93, 0.5), alpha=0.95, soft=0.2, irregular=0.25)

    def cotton_wool(self, **where):
        y, x = self.random_point(**where)
        r = self.dd * self.rng.uniform(0.22, 0.4)
        self.blob(y, x, r * self.rng.uniform(0.6, 0.9), r, code=4, colour=(0.97, 0.92, 0.85),
                  alpha=0.7, soft=0.8, irregular=0.3)

    def venous_beading(self, vessels_width: np.ndarray):
        """Sausage-like calibre changes along a major vessel, walked from a random point."""
        rng = self.rng
        thick = np.argwhere(vessels_width >= max(1.5, np.percentile(
            vessels_width[vessels_width > 0], 85)))
        if len(thick) == 0:
            return
        start = thick[rng.integers(len(thick))]
        # Breadth-first walk along vessel pixels gives points ordered along the vessel.
        vessel = vessels_width > 0
        seen = np.zeros_like(vessel)
        frontier = [tuple(start)]
        seen[tuple(start)] = True
        path = []
        while frontier and len(path) < int(2.5 * self.dd):
            nxt = []
            for p in frontier:
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        q = (p[0] + dy, p[1] + dx)
                        if (0 <= q[0] < self.size and 0 <= q[1] < self.size and vessel[q]
                                and not seen[q]):
                            seen[q] = True
                            nxt.append(q)
            if nxt:
                path.append(nxt[len(nxt) // 2])
            frontier = nxt[:6]
        w = float(vessels_width[tuple(start)])
        for i, (y, x) in enumerate(path):
            if i % max(2, int(w * 3)) == 0:
                r = w * rng.uniform(1.8, 2.4)
                self.blob(y, x, r, r, code=5, colour=(0.55, 0.25, 0.28), mode="multiply",
                          soft=0.5, irregular=0.05)

    def neovascularisation(self, at_disc: bool):
        """A tuft of fine, tortuous new vessels (NVD at the disc or NVE elsewhere)."""
        rng, s = self.rng, self.size
        if at_disc:
            cy, cx = _DISC[0] * s + rng.normal(0, 0.2) * self.dd, _DISC[1] * s + rng.normal(
                0, 0.2) * self.dd
        else:
            cy, cx = self.random_point(min_disc=1.5)
        canvas = np.zeros((s, s), np.float32)
        for _ in range(rng.integers(8, 16)):
            y, x = cy, cx
            ang = rng.uniform(0, 2 * np.pi)
            for _ in range(int(0.8 * self.dd)):
                ang += rng.normal(0, 0.35)
                y, x = y + 0.7 * np.sin(ang), x + 0.7 * np.cos(ang)
                if 0 <= int(y) < s and 0 <= int(x) < s:
                    canvas[int(y), int(x)] = 1.0
        canvas = ndi.gaussian_filter(canvas, max(0.6, s / 700))
        a = np.clip(canvas / (canvas.max() + 1e-6) * 2.0, 0, 1) * 0.9
        self.rgb *= 1 - a[..., None] * (1 - np.asarray((0.55, 0.22, 0.25), np.float32))
        self.mask[a > 0.25] = 6

    def preretinal(self):
        y, x = self.random_point(min_disc=1.2)
        r = self.dd * self.rng.uniform(0.5, 0.9)
        self.blob(y, x, r * 0.8, r, code=7, colour=(0.5, 0.18, 0.17), mode="multiply",
                  angle=0.0, soft=0.15, irregular=0.08, flat_top=True)


# Exudates outside the macula must stay > 1 DD from the fovea so DME is exact.
_OUTSIDE_MACULA = {"beyond": 1.6}


def _paint_moderate(p: _Painter, n, rng: np.random.Generator, counts: dict) -> None:
    """Moderate NPDR: haemorrhages confined to at most three quadrants, few of them."""
    quads = rng.choice(4, size=n(1, 3), replace=False)
    k = n(1, 6)
    for i in range(k):
        p.haemorrhage(quadrant=int(quads[i % len(quads)]))
    counts["haemorrhage"] = k
    kx, kc = n(0, 2), n(0, 2)
    if k + kx + kc == 0:
        kx = 1
    for _ in range(kx):
        p.exudates(**_OUTSIDE_MACULA)
    for _ in range(kc):
        p.cotton_wool()
    counts["hard_exudate"], counts["cotton_wool_spot"] = kx, kc


def _paint_severe(p: _Painter, n, rng: np.random.Generator, counts: dict, *, grade: int,
                  vessels_width: np.ndarray | None) -> None:
    """Severe NPDR and the non-proliferative signs of PDR: haemorrhages in all four quadrants,
    venous beading, cotton-wool spots, exudates."""
    per_q = n(5, 10) if grade == 3 else n(3, 8)
    for q in range(4):
        for _ in range(per_q):
            p.haemorrhage(quadrant=q)
    counts["haemorrhage"] = 4 * per_q
    if vessels_width is not None and (grade == 3 or rng.uniform() < 0.5):
        kb = n(2, 3)
        for _ in range(kb):
            p.venous_beading(vessels_width)
        counts["venous_beading"] = kb
    kc = n(0, 3)
    for _ in range(kc):
        p.cotton_wool()
    counts["cotton_wool_spot"] = kc
    kx = n(0, 2)
    for _ in range(kx):
        p.exudates(**_OUTSIDE_MACULA)
    counts["hard_exudate"] = kx


def paint_lesions(rgb: np.ndarray, grade: int, dme: bool, rng: np.random.Generator,
                  vessels_width: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Paint ICDR-consistent lesions in place on a base-geometry fundus.

    Parameters
    ----------
    rgb : ndarray of float32, shape (S, S, 3), values 0-1
        The base fundus (landmarks as :func:`skimage.data.retina`).
    grade : int
        ICDR grade 0-4.
    dme : bool
        Put hard exudates within one disc diameter of the fovea.
    vessels_width : ndarray, shape (S, S), optional
        Vessel half-width map, needed for venous beading (grade >= 3).

    Returns
    -------
    mask : ndarray of uint8, shape (S, S)
        Lesion codes (:data:`LESIONS`).
    counts : dict
        Number of lesions painted per type.
    """
    if grade not in range(5):
        raise ConfigError(f"expected grade in 0-4, found {grade}")
    if dme and grade < 2:
        raise ConfigError("expected grade >= 2 for DME (hard exudates are a grade-2 sign), "
                          f"found grade {grade}")
    p = _Painter(rgb, rng)
    counts = dict.fromkeys(LESIONS.values(), 0)

    def n(lo, hi):
        return int(rng.integers(lo, hi + 1))

    if grade >= 1:
        k = n(2, 8) if grade == 1 else n(3, 10)
        for _ in range(k):
            p.microaneurysm()
        counts["microaneurysm"] = k
    if grade == 2:
        _paint_moderate(p, n, rng, counts)
    if grade >= 3:
        _paint_severe(p, n, rng, counts, grade=grade, vessels_width=vessels_width)
    if grade == 4:
        nv = n(1, 2)
        for i in range(nv):
            p.neovascularisation(at_disc=(i == 0 and rng.uniform() < 0.5))
        counts["neovascularisation"] = nv
        if rng.uniform() < 0.5:
            p.preretinal()
            counts["preretinal_haemorrhage"] = 1
    if dme:
        k = n(1, 3)
        for _ in range(k):
            p.exudates(near=_FOVEA, within=0.7, min_disc=1.0)
        counts["hard_exudate"] += k
    return p.mask, counts


def _warp(rgb: np.ndarray, mask: np.ndarray, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray]:
    """Random rotation/scale/shift plus a smooth elastic field (same for image and mask)."""
    s = rgb.shape[0]
    c = (s - 1) / 2
    ang = rng.uniform(-0.25, 0.25)
    sc = rng.uniform(1.0, 1.08)
    shift = rng.normal(0, 0.004 * s, 2)
    yy, xx = np.mgrid[:s, :s].astype(np.float32)
    y0, x0 = yy - c, xx - c
    src_y = (np.cos(ang) * y0 - np.sin(ang) * x0) / sc + c + shift[0]
    src_x = (np.sin(ang) * y0 + np.cos(ang) * x0) / sc + c + shift[1]
    # Low-frequency displacement: the eye's curvature and camera distortion differ.
    for grid in (src_y, src_x):
        coarse = rng.normal(0, 0.005 * s, (4, 4)).astype(np.float32)
        grid += ndi.zoom(coarse, s / 4, order=3)[:s, :s]
    coords = np.stack([src_y, src_x])
    out = np.stack([ndi.map_coordinates(rgb[..., k], coords, order=1, mode="constant")
                    for k in range(3)], axis=-1)
    m = ndi.map_coordinates(mask, coords, order=0, mode="constant")
    return out, m


def _relight(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Recolour (channel gains, gamma) and re-light (gradient, vignetting)."""
    s = rgb.shape[0]
    gains = np.array([rng.uniform(0.85, 1.12), rng.uniform(0.7, 1.2), rng.uniform(0.6, 1.35)],
                     np.float32)
    gamma = rng.uniform(0.8, 1.25)
    out = np.clip(rgb, 0, 1) ** gamma * gains
    yy, xx = np.mgrid[:s, :s].astype(np.float32) / s - 0.5
    ang = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(0, 0.35) * (np.cos(ang) * xx + np.sin(ang) * yy) * 2
    light -= rng.uniform(0.0, 0.5) * (xx**2 + yy**2) * 2
    return np.clip(out * light[..., None], 0, 1)


def _degrade(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    if rng.uniform() < 0.5:
        sigma = rgb.shape[0] / 60
        return np.stack([ndi.gaussian_filter(rgb[..., k], sigma) for k in range(3)], -1), "blur"
    return rgb * rng.uniform(0.03, 0.06), "dark"


def _frame(rgb: np.ndarray, mask: np.ndarray, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray]:
    """Place the fundus on a wider dark camera frame, maybe clipped top and bottom."""
    s = rgb.shape[0]
    # The camera aperture is circular whatever the warp did to the retina.
    fov = _disc_mask(s, _FOV_C, _FOV_R * 0.93)
    rgb = rgb * fov[..., None]
    h = int(s * rng.uniform(0.88, 1.08))
    w = int(s * rng.uniform(1.05, 1.5))
    top = (h - s) // 2 + int(rng.integers(-s // 40, s // 40 + 1))
    left = int(rng.integers(0, w - s + 1))
    img = np.zeros((h, w, 3), np.float32)
    lab = np.zeros((h, w), np.uint8)
    ys, yd = max(0, -top), max(0, top)
    n = min(s - ys, h - yd)
    img[yd:yd + n, left:left + s] = rgb[ys:ys + n]
    lab[yd:yd + n, left:left + s] = mask[ys:ys + n]
    img += rng.uniform(0, 0.012, img.shape).astype(np.float32)  # sensor noise
    return img, lab


def synth_image(grade: int, *, dme: bool = False, eye: str = "left", size: int = 512,
                rng: np.random.Generator | None = None, degrade: bool = False
                ) -> tuple[np.ndarray, np.ndarray, dict]:
    """One synthetic graded fundus photograph.

    Parameters
    ----------
    grade : int
        ICDR grade 0-4.
    dme : bool
        Referable diabetic macular oedema (needs grade >= 2).
    eye : {"left", "right"}
        Right eyes are mirrored (optic disc on the image's right).
    size : int
        Fundus diameter in pixels.
    rng : numpy.random.Generator, optional
    degrade : bool
        Blur or under-expose the photograph (ungradable).

    Returns
    -------
    image : ndarray of uint8, shape (H, W, 3)
    mask : ndarray of uint8, shape (H, W)
        Lesion codes (:data:`LESIONS`), aligned with ``image``.
    info : dict
        Lesion counts and the degradation applied ("" when none).
    """
    rng = np.random.default_rng() if rng is None else rng
    if eye not in ("left", "right"):
        raise ConfigError(f"expected eye 'left' or 'right', found {eye!r}")
    base, _, width = _base(size)
    rgb = base.copy()
    mask, counts = paint_lesions(rgb, grade, dme, rng, width)
    rgb, mask = _warp(rgb, mask, rng)
    rgb = _relight(rgb, rng)
    how = ""
    if degrade:
        rgb, how = _degrade(rgb, rng)
    if eye == "right":
        rgb, mask = rgb[:, ::-1], mask[:, ::-1]
    img, lab = _frame(rgb, mask, rng)
    return (np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), lab,
            {**counts, "degraded": how})


def run_synth(config: SynthConfig, *, overwrite: bool = False) -> pd.DataFrame:
    """Write an EyePACS-style graded folder at ``config.out``.

    Layout::

        out/trainLabels.csv     image,level,dme   (EyePACS columns + dme)
        out/train/<patient>_<left|right>.jpeg
        out/masks/<image>.png   lesion codes (uint8)
        out/lesions.csv         lesion counts per image, degradation
        out/run.json

    The same config always writes the same files.

    Returns
    -------
    pandas.DataFrame
        The lesion table.
    """
    config.validate()
    with RunDir(config.out, command="retinopathy synth", config=config,
                overwrite=overwrite) as run:
        out = run.path
        (out / "train").mkdir(parents=True, exist_ok=True)
        (out / "masks").mkdir(parents=True, exist_ok=True)
        rows = []
        for name, eye, g, dme, seed, degrade in progress(_plan(config), desc="synth", unit="img"):
            jpg, png = out / "train" / f"{name}.jpeg", out / "masks" / f"{name}.png"
            img, lab, info = synth_image(g, dme=dme, eye=eye, size=config.size,
                                         rng=np.random.default_rng(seed), degrade=degrade)
            with atomic_path(png) as tmp:
                Image.fromarray(lab).save(tmp, format="PNG")
            with atomic_path(jpg) as tmp:
                # The comment marks the photograph as synthetic (io.is_synthetic).
                Image.fromarray(img).save(tmp, format="JPEG", quality=config.jpeg_quality,
                                          comment=SYNTH_MARKER + f" seed={config.seed}".encode())
            rows.append({"image": name, "level": g, "dme": int(dme), **info})
        table = pd.DataFrame(rows)
        write_text(out / "trainLabels.csv", table[["image", "level", "dme"]].to_csv(index=False))
        write_text(out / "lesions.csv", table.to_csv(index=False))
        run.record(images=len(table),
                   grades={int(k): int(v) for k, v in table["level"].value_counts().items()})
    return table


def _plan(config: SynthConfig) -> list[tuple]:
    """(image, eye, grade, dme, seed, degrade) per photograph, in file order."""
    rng = np.random.default_rng(config.seed)
    probs = np.asarray(config.grade_probs, float) / np.sum(config.grade_probs)
    plan = []
    for i in range(config.n_patients):
        worst = int(rng.choice(5, p=probs))
        # The fellow eye is usually as bad or one grade better.
        other = max(0, worst - int(rng.choice(3, p=[0.6, 0.3, 0.1])))
        eyes = ["left", "right"] if rng.uniform() < 0.5 else ["right", "left"]
        for eye, g in zip(eyes, (worst, other), strict=True):
            dme = bool(g >= 2 and rng.uniform() < config.dme_prob)
            plan.append((f"{10 + i}_{eye}", eye, g, dme, int(rng.integers(2**31)),
                         bool(rng.uniform() < config.ungradable_frac)))
    plan.sort(key=lambda t: (int(t[0].split("_")[0]), t[1]))
    return plan
