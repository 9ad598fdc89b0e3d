"""Synthetic H&E lymph-node whole-slide images with metastases, for tests and demos.

Each slide is drawn at level 0 from stain concentrations mixed with
``skimage.color.combine_stains`` (hematoxylin nuclei, eosin stroma), on white
glass. Normal tissue is packed with small round lymphocyte nuclei; metastases
are star-shaped regions with larger, denser, irregular, pleomorphic nuclei in
eosinophilic cytoplasm. Outputs, per slide, are what Camelyon16 ships:

* ``<name>.tif`` - tiled pyramidal TIFF (generic-tiff for OpenSlide, mpp set),
* ``<name>.xml`` - ASAP annotations of the metastases (``_0``, holes ``_2``),
* ``<name>_Mask.tif`` - the tumour mask as a pyramidal TIFF (255 = tumour).

Sizes are in microns so the texture looks the same at any ``mpp``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsci.core.config import check_ranges, option
from deepsci.core.errors import ConfigError
from deepsci.core.runs import RunDir

from .io import Polygon, mask_to_polygons, rasterize, write_asap_xml, write_pyramid_tiff

__all__ = ["SYNTH_MARKER", "SynthConfig", "SynthSlide", "SynthSetConfig", "render_slide", "write_slide", "make_slides",
           "run_synth"]

#: Key of the JSON in level 0's ImageDescription of every slide written here.
SYNTH_MARKER = "deepsci_synthetic"


@dataclass
class SynthConfig:
    """Geometry and appearance of one synthetic slide.

    Attributes
    ----------
    width, height : int
        Level-0 size in pixels.
    mpp : float
        Microns per pixel at level 0 (0.25 is 40x).
    n_tumours : int
        Number of metastases (0 gives a normal slide).
    tumour_radius_um : (float, float)
        Range of the metastases' mean radius in microns.
    hole_probability : float
        Chance that a metastasis has a normal-tissue hole (an ``_2`` annotation).
    """

    width: int = 2048
    height: int = 2048
    mpp: float = 0.5
    n_tumours: int = 1
    tumour_radius_um: tuple[float, float] = (120.0, 220.0)
    hole_probability: float = 0.3
    lymphocyte_radius_um: float = 3.0
    tumour_nucleus_radius_um: float = 5.5
    tile: int = 256


@dataclass
class SynthSlide:
    """Paths written for one synthetic slide and its truth."""

    name: str
    slide: Path
    annotations: Path | None
    mask: Path | None
    is_tumour: bool


def _star(rng: np.random.Generator, cx: float, cy: float, radius: float, n: int = 72,
          roughness: float = 0.12) -> np.ndarray:
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for k in range(2, 7):
        r += rng.normal(0, roughness / k ** 0.5) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r = radius * np.clip(r, 0.45, 1.8)
    return np.stack([cx + r * np.cos(theta), cy + r * np.sin(theta)], axis=1)


def _smooth_noise(rng, shape, sigma) -> np.ndarray:
    from scipy import ndimage as ndi

    # Smooth on a coarse grid and upsample: same look, a fraction of the cost.
    f = max(1, int(sigma // 4))
    small = rng.standard_normal((shape[0] // f + 2, shape[1] // f + 2)).astype(np.float32)
    small = ndi.gaussian_filter(small, sigma / f)
    small /= small.std() + 1e-6
    big = ndi.zoom(small, f, order=1)[: shape[0], : shape[1]]
    return big


def _draw_nuclei(rng, conc: np.ndarray, region: np.ndarray, *, radius_px: float, cover: float,
                 irregular: float, strength: float, pleo: float) -> None:
    """Stamp elliptical nuclei of hematoxylin into ``conc`` where ``region`` is set."""
    from skimage.draw import ellipse

    h, w = region.shape
    area = region.sum()
    if area == 0:
        return
    n = int(cover * area / (np.pi * radius_px ** 2))
    ys, xs = np.nonzero(region)
    pick = rng.integers(0, len(ys), size=n)
    for y, x in zip(ys[pick], xs[pick], strict=True):
        r = radius_px * np.exp(rng.normal(0, pleo))
        ecc = 1 + irregular * rng.uniform(0, 1)
        rr, cc = ellipse(y, x, r * ecc, r / ecc, shape=(h, w), rotation=rng.uniform(0, np.pi))
        if len(rr) == 0:
            continue
        conc[rr, cc] = np.maximum(conc[rr, cc], strength * rng.uniform(0.75, 1.15))


def render_slide(config: SynthConfig, seed: int) -> tuple[np.ndarray, list[Polygon], np.ndarray]:
    """Draw one slide.

    Returns
    -------
    rgb : ndarray, shape (H, W, 3), uint8
    polygons : list of Polygon
        Metastases (and their holes) in level-0 pixels.
    tissue, tumour : ndarray, shape (H, W), bool
    """
    from scipy import ndimage as ndi
    from skimage.color import rgb_from_hed

    rng = np.random.default_rng(seed)
    h, w, um = config.height, config.width, 1.0 / config.mpp
    # Tissue: one or two large lobes with ragged edges on glass.
    tissue_polys = [Polygon(_star(rng, w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6),
                                  0.36 * min(w, h), roughness=0.25))]
    if rng.random() < 0.5:
        tissue_polys.append(Polygon(_star(rng, w * rng.uniform(0.2, 0.8), h * rng.uniform(0.2, 0.8),
                                          0.18 * min(w, h), roughness=0.3)))
    tissue = rasterize(tissue_polys, (h, w), 1.0)

    polys: list[Polygon] = []
    inner = ndi.binary_erosion(tissue[::8, ::8], iterations=max(1, int(config.tumour_radius_um[1] * um / 8)))
    if not inner.any():
        inner = tissue[::8, ::8]
    iy, ix = np.nonzero(inner)
    for _ in range(config.n_tumours):
        k = rng.integers(len(iy))
        cx, cy = ix[k] * 8 + 4, iy[k] * 8 + 4
        radius = rng.uniform(*config.tumour_radius_um) * um
        polys.append(Polygon(_star(rng, cx, cy, radius), group="_0"))
        if rng.random() < config.hole_probability:
            polys.append(Polygon(_star(rng, cx + rng.normal(0, radius * 0.1), cy + rng.normal(0, radius * 0.1),
                                       radius * 0.3, roughness=0.08), group="_2", exclude=True))
    tumour = rasterize(polys, (h, w), 1.0) & tissue if polys else np.zeros((h, w), bool)
    # The truth is what is drawn: metastases clipped to tissue, traced back to
    # polygons (outer rings as _0, holes as _2), as a pathologist would outline them.
    polys = mask_to_polygons(tumour, 1.0, tolerance=1.0) if polys else []

    hem = np.zeros((h, w), np.float32)
    normal = tissue & ~tumour
    _draw_nuclei(rng, hem, normal, radius_px=config.lymphocyte_radius_um * um, cover=0.30,
                 irregular=0.15, strength=0.075, pleo=0.12)
    _draw_nuclei(rng, hem, tumour, radius_px=config.tumour_nucleus_radius_um * um, cover=0.55,
                 irregular=0.6, strength=0.060, pleo=0.3)
    # Nuclear chromatin texture and slight optical blur.
    hem *= 1 + 0.25 * rng.standard_normal((h, w)).astype(np.float32)
    hem = ndi.gaussian_filter(hem, 0.6 * um / 2)

    fibres = _smooth_noise(rng, (h, w), 6 * um)
    eos = np.where(tissue, 0.020 + 0.006 * fibres, 0.0).astype(np.float32)
    eos += np.where(tumour, 0.010, 0.0).astype(np.float32)  # eosinophilic tumour cytoplasm
    eos = np.clip(eos, 0, None)
    # A slide-wide stain-intensity drift, as between scanners and batches.
    scale_h, scale_e = rng.uniform(0.85, 1.15), rng.uniform(0.8, 1.2)
    stains = np.stack([hem * scale_h, eos * scale_e, np.zeros_like(hem)], axis=-1)
    # Beer-Lambert mixing as skimage.color.combine_stains does, kept in float32
    # because slides are large (same matrix, same log scaling).
    log_adjust = np.float32(-np.log(1e-6))
    rgb = np.exp(-(stains * log_adjust) @ rgb_from_hed.astype(np.float32))
    rgb = rgb * 0.96 + 0.02 * rng.standard_normal((h, w, 1)).astype(np.float32) * tissue[..., None]
    rgb = np.where(tissue[..., None], rgb, 0.95 + 0.01 * rng.standard_normal((h, w, 1)))
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8), polys, tissue, tumour


def write_slide(out_dir: str | Path, name: str, config: SynthConfig, seed: int) -> SynthSlide:
    """Render and write ``<name>.tif`` (+ ``.xml`` and ``_Mask.tif`` when it has tumour)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rgb, polys, _, tumour = render_slide(config, seed)
    # The marker tells deepsci's own slides from real ones (a demo model warns on real ones).
    slide = write_pyramid_tiff(out_dir / f"{name}.tif", rgb, mpp=config.mpp, tile=config.tile,
                               compression="jpeg", min_size=64,
                               description={SYNTH_MARKER: "pathology synth", "seed": int(seed)})
    if not polys:
        return SynthSlide(name, slide, None, None, False)
    xml = write_asap_xml(out_dir / f"{name}.xml", polys)
    mask = tumour.astype(np.uint8) * 255
    mask_path = write_pyramid_tiff(out_dir / f"{name}_Mask.tif", mask, mpp=config.mpp, tile=config.tile,
                                   compression="zlib", min_size=64, mode="max")
    return SynthSlide(name, slide, xml, mask_path, True)


def make_slides(out_dir: str | Path, *, n_tumour: int, n_normal: int, seed: int,
                config: SynthConfig | None = None, prefix: str = "") -> list[SynthSlide]:
    """Write a set of slides named like Camelyon16 (``tumor_001``, ``normal_001``).

    Every slide gets its own seed derived from ``seed``, so two sets made with
    different seeds share no slide.
    """
    base = config or SynthConfig()
    out = []
    seeds = np.random.SeedSequence(seed).spawn(n_tumour + n_normal)
    for i in range(n_tumour + n_normal):
        tumour = i < n_tumour
        cfg = SynthConfig(**{**base.__dict__, "n_tumours": max(1, base.n_tumours) if tumour else 0})
        name = f"{prefix}tumor_{i + 1:03d}" if tumour else f"{prefix}normal_{i - n_tumour + 1:03d}"
        out.append(write_slide(out_dir, name, cfg, int(seeds[i].generate_state(1)[0])))
    return out


@dataclass
class SynthSetConfig:
    """``deepsci pathology synth``: a set of synthetic slides (recorded in the folder's ``run.json``).

    Attributes
    ----------
    out : str
        Output folder (slides, ASAP XML, ``*_Mask.tif``).
    tumour, normal : int
        Slides with and without metastases.
    size : int
        Level-0 width and height in pixels.
    mpp : float
        Microns per pixel at level 0 (0.25 = 40x).
    lesions : int
        Metastases per tumour slide.
    radius_um : (float, float)
        Range of the metastases' mean radius in microns.
    seed : int
        Seed of the set; every slide gets its own seed derived from it.
    prefix : str
        Prefix of the slide names.
    """

    out: str = option(help="Output folder (slides, ASAP XML, *_Mask.tif).")
    tumour: int = option(4, "Slides with metastases.", min=0)
    normal: int = option(4, "Slides without metastases.", min=0)
    # a synthetic slide is drawn whole in memory (3 bytes a pixel, plus its mask): 16384 px is 1 GB
    size: int = option(2048, "Level-0 width and height in pixels.", min=64, max=16384)
    mpp: float = option(0.5, "Microns per pixel at level 0 (0.25 = 40x).", min=0, min_exclusive=True)
    lesions: int = option(1, "Metastases per tumour slide.", min=1, max=100)
    radius_um: tuple[float, float] = option((120.0, 220.0), "Range of the metastases' radius (um).",
                                            min=0, min_exclusive=True)
    seed: int = option(0, "Seed of the set.", min=0)  # NumPy refuses negative seeds
    prefix: str = option("", "Prefix of the slide names.")

    def validate(self) -> SynthSetConfig:
        """Raise ConfigError for an empty set or out-of-range sizes; return self."""
        check_ranges(self)
        if self.tumour + self.normal < 1:
            raise ConfigError("expected --tumour + --normal >= 1, found 0")
        if len(self.radius_um) != 2 or self.radius_um[0] > self.radius_um[1]:
            raise ConfigError(f"expected --radius-um as low,high, found {self.radius_um}")
        return self


def run_synth(config: SynthSetConfig, *, overwrite: bool = False) -> list[SynthSlide]:
    """Write the slide set of ``config`` into ``config.out`` with its ``run.json``."""
    cfg = config.validate()
    slide_cfg = SynthConfig(width=cfg.size, height=cfg.size, mpp=cfg.mpp, n_tumours=cfg.lesions,
                            tumour_radius_um=tuple(cfg.radius_um))
    with RunDir(cfg.out, command="pathology synth", config=cfg, overwrite=overwrite) as run:
        slides = make_slides(run.path, n_tumour=cfg.tumour, n_normal=cfg.normal, seed=cfg.seed,
                             config=slide_cfg, prefix=cfg.prefix)
        run.record(slides=[s.name for s in slides], tumour_slides=cfg.tumour, normal_slides=cfg.normal)
    return slides
