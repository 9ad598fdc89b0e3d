"""Synthetic EM-like volumes with ground truth, for tests and demos.

The generator paints tubular neurites (smooth random curves whose radius varies
along their length) into a (z, y, x) volume and renders an image that has the
features an FFN must cope with in real FIB-SEM: dark membranes between touching
processes, textured cytoplasm, dark organelles (mitochondria-like blobs and
vesicle-like dots), blur, noise and a per-slice contrast jitter.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from deepsci.core.errors import ConfigError, InputError
from deepsci.core.runs import RunDir

from .io import write_volume

__all__ = ["SynthConfig", "SynthRun", "synthetic_volume", "tube_paths", "run_synth"]


@dataclass
class SynthConfig:
    """Parameters of :func:`synthetic_volume`.

    Attributes
    ----------
    shape : tuple of int
        Volume shape ``(Z, Y, X)``.
    n_neurites : int
        Number of tubes; more tubes pack the volume more densely.
    radius : tuple of float
        ``(min, max)`` radius in voxels; each tube oscillates between the two.
    membrane : float
        Intensity of membranes (0 = black, 1 = white).
    organelles : float
        Expected number of organelles per 1000 voxels of neurite.
    blur : float
        Gaussian point-spread sigma in voxels.
    noise : float
        Standard deviation of additive Gaussian noise (in [0, 1] intensity units).
    contrast_jitter : float
        Relative standard deviation of the per-z-slice gain and offset.
    gap : int
        When > 0, tubes that touch are pulled apart by this many voxels of
        extracellular space ("separable" tubes; 0 = densely packed neuropil).
    label_membranes : bool
        Whether the membrane shell belongs to its object in ``labels`` (dense
        ground truth, like NeuroProof) or is 0 = unlabelled (boundary-free
        ground truth, like CREMI, whose evaluation ignores it).
    seed : int
        Seed of the random generator; the output is a pure function of the config.
    """

    shape: tuple[int, int, int] = (48, 96, 96)
    n_neurites: int = field(default=12, metadata={"cli": "neurites"})
    radius: tuple[float, float] = (3.0, 7.0)
    membrane: float = 0.12
    organelles: float = 0.4
    blur: float = 0.7
    noise: float = 0.05
    contrast_jitter: float = 0.05
    gap: int = 0
    label_membranes: bool = True
    seed: int = 0

    def validate(self) -> SynthConfig:
        checks = [
            (len(self.shape) == 3 and min(self.shape) >= 4, "--shape of 3 sizes >= 4", self.shape),
            (self.n_neurites >= 1, "--neurites >= 1", self.n_neurites),
            (len(self.radius) == 2 and 0 < self.radius[0] <= self.radius[1], "--radius MIN,MAX with 0 < MIN <= MAX",
             self.radius),
            (0 <= self.membrane <= 1, "0 <= --membrane <= 1", self.membrane),
            (self.organelles >= 0, "--organelles >= 0", self.organelles),
            (self.blur >= 0, "--blur >= 0", self.blur),
            (self.noise >= 0, "--noise >= 0", self.noise),
            (self.contrast_jitter >= 0, "--contrast-jitter >= 0", self.contrast_jitter),
            (self.gap >= 0, "--gap >= 0", self.gap),
        ]
        for ok, what, found in checks:
            if not ok:
                raise ConfigError(f"expected {what}, found {found!r}")
        return self


@dataclass
class SynthRun:
    """``deepsci connectomics synth``: a synthetic EM-like volume with its ground truth.

    Attributes
    ----------
    out : str
        Output ``.zarr`` (arrays image and labels), its ``run.json`` inside.
    voxel_size : tuple of float
        (z, y, x) voxel size in nm stored with the volume.
    synth : SynthConfig
        The generator's parameters.
    """

    out: str
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    synth: SynthConfig = field(default_factory=SynthConfig)

    def validate(self) -> SynthRun:
        if len(self.voxel_size) != 3 or min(self.voxel_size) <= 0:
            raise ConfigError(f"expected --voxel-size of 3 values > 0, found {self.voxel_size!r}")
        self.synth.validate()
        return self


def tube_paths(
    shape: tuple[int, int, int], n: int, rng: np.random.Generator, *, n_ctrl: int = 5
) -> list[np.ndarray]:
    """Smooth random curves crossing the volume from one face to the opposite one.

    Returns
    -------
    list of ndarray
        One ``(P, 3)`` float array of densely sampled (z, y, x) points per tube,
        spaced about half a voxel apart.
    """
    shape_arr = np.asarray(shape, float)
    paths = []
    for _ in range(n):
        axis = int(rng.integers(3))
        ctrl = rng.uniform(0.1, 0.9, size=(n_ctrl, 3)) * (shape_arr - 1)
        # Run the chosen axis monotonically from face to face (a bit beyond, so
        # the tube leaves the volume instead of ending with a cap).
        ctrl[:, axis] = np.linspace(-0.1, 1.1, n_ctrl) * (shape_arr[axis] - 1)
        # Cubic interpolation through the control points gives a smooth path.
        t_ctrl = np.linspace(0.0, 1.0, n_ctrl)
        length = np.sum(np.linalg.norm(np.diff(ctrl, axis=0), axis=1))
        t = np.linspace(0.0, 1.0, max(int(length * 2), 8))
        pts = np.stack([_cubic(t_ctrl, ctrl[:, d], t) for d in range(3)], axis=1)
        paths.append(pts)
    return paths


def _cubic(x: np.ndarray, y: np.ndarray, t: np.ndarray) -> np.ndarray:
    from scipy.interpolate import CubicSpline

    return CubicSpline(x, y, bc_type="natural")(t)


def _paint_tubes(shape, paths, radius, rng) -> np.ndarray:
    """Rasterise tubes; overlapping tubes share space by normalised distance."""
    labels = np.zeros(shape, np.uint32)
    best = np.full(shape, np.inf, np.float32)
    r_min, r_max = radius
    for i, pts in enumerate(paths, start=1):
        phase, freq = rng.uniform(0, 2 * np.pi), rng.uniform(1.0, 3.0)
        s = np.linspace(0.0, 1.0, len(pts))
        radii = r_min + (r_max - r_min) * 0.5 * (1 + np.sin(2 * np.pi * freq * s + phase))
        for p, r in zip(pts[::2], radii[::2], strict=False):
            lo = np.maximum(np.floor(p - r - 1).astype(int), 0)
            hi = np.minimum(np.ceil(p + r + 2).astype(int), shape)
            if np.any(hi <= lo):
                continue
            grid = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            d = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, p, strict=True))) / r
            box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
            win = (d < 1.0) & (d < best[box])
            best[box][win] = d[win]
            labels[box][win] = i
    return labels


def _separate(labels: np.ndarray, gap: int) -> np.ndarray:
    """Clear ``gap`` voxels on each side of every contact between two objects."""
    contact = np.zeros(labels.shape, bool)
    for ax in range(3):
        a = np.moveaxis(labels, ax, 0)
        c = np.moveaxis(contact, ax, 0)
        diff = (a[1:] != a[:-1]) & (a[1:] > 0) & (a[:-1] > 0)
        c[1:] |= diff
        c[:-1] |= diff
    if gap > 1:
        contact = ndi.binary_dilation(contact, iterations=gap - 1)
    out = labels.copy()
    out[contact] = 0
    return out


def _boundaries(labels: np.ndarray) -> np.ndarray:
    """Voxels whose 6-neighbourhood holds another label (1-2 voxels thick)."""
    edge = np.zeros(labels.shape, bool)
    for ax in range(3):
        a = np.moveaxis(labels, ax, 0)
        e = np.moveaxis(edge, ax, 0)
        diff = a[1:] != a[:-1]
        e[1:] |= diff
        e[:-1] |= diff
    return edge


def _organelles(labels: np.ndarray, density: float, rng: np.random.Generator) -> np.ndarray:
    """Dark blobs (mitochondria) and dots (vesicles) strictly inside neurites."""
    out = np.zeros(labels.shape, np.float32)
    inside = ndi.binary_erosion(labels > 0, iterations=2)
    coords = np.argwhere(inside)
    if len(coords) == 0 or density <= 0:
        return out
    n = rng.poisson(density * len(coords) / 1000.0)
    for c in coords[rng.integers(len(coords), size=n)]:
        big = rng.random() < 0.3
        r = rng.uniform(1.5, 2.5) if big else rng.uniform(0.6, 1.1)
        lo = np.maximum(c - 3, 0)
        hi = np.minimum(c + 4, labels.shape)
        grid = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        d = np.sqrt(sum((g - v) ** 2 for g, v in zip(grid, c, strict=True)))
        box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        # Keep each organelle inside its own neurite.
        same = labels[box] == labels[tuple(c)]
        out[box] = np.maximum(out[box], ((d < r) & same) * (0.35 if big else 0.25))
    return out


def synthetic_volume(config: SynthConfig | None = None, **overrides) -> tuple[np.ndarray, np.ndarray]:
    """Make an EM-like image and its dense neurite labels.

    Parameters
    ----------
    config : SynthConfig, optional
        Generator parameters; keyword ``overrides`` replace single fields.

    Returns
    -------
    image : ndarray of uint8, shape (Z, Y, X)
        Bright cytoplasm, dark membranes and organelles, grey extracellular space.
    labels : ndarray of uint32, shape (Z, Y, X)
        Neurite ids ``1..n_neurites`` (ids of tubes that miss the volume are absent);
        0 is extracellular space.
    """
    cfg = config or SynthConfig()
    if overrides:
        cfg = SynthConfig(**{**cfg.__dict__, **overrides})
    shape = tuple(int(s) for s in cfg.shape)
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"Expected a 3-D shape of at least 4 per axis. Received: shape={cfg.shape}")
    if cfg.radius[0] <= 0 or cfg.radius[1] < cfg.radius[0]:
        raise ValueError(f"Expected 0 < radius[0] <= radius[1]. Received: radius={cfg.radius}")
    rng = np.random.default_rng(cfg.seed)
    labels = _paint_tubes(shape, tube_paths(shape, cfg.n_neurites, rng), cfg.radius, rng)
    if cfg.gap > 0:
        labels = _separate(labels, cfg.gap)

    texture = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.5)
    texture /= texture.std() + 1e-6
    img = np.where(labels > 0, 0.72 + 0.06 * texture, 0.45 + 0.03 * texture).astype(np.float32)
    img -= _organelles(labels, cfg.organelles, rng)
    edge = _boundaries(labels)
    img[edge] = cfg.membrane
    if cfg.blur > 0:
        img = ndi.gaussian_filter(img, cfg.blur)
    gain = 1 + cfg.contrast_jitter * rng.standard_normal(shape[0])
    offset = cfg.contrast_jitter * 0.5 * rng.standard_normal(shape[0])
    img = img * gain[:, None, None] + offset[:, None, None]
    img += cfg.noise * rng.standard_normal(shape).astype(np.float32)
    image = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    if not cfg.label_membranes:
        labels = np.where(edge, 0, labels).astype(np.uint32)
    return image, labels


#: The group attribute that marks a store as synth's own (so a store it left unfinished is resumed).
GENERATOR = "deepsci connectomics synth"


def _json_get(path: Path, *keys):
    """``data[k0][k1]...`` of a JSON file, ``None`` when it is missing, malformed or lacks a key."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for k in keys:
        data = data.get(k) if isinstance(data, dict) else None
    return data


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an output that is not synth's to replace; remove what a killed earlier attempt left.

    A new path, an empty folder and a store synth wrote but did not finish (no ``run.json`` with
    status done) are written; a finished run or any other zarr store only with ``--overwrite``;
    a folder of other files never.
    """
    if out.is_dir() and any(out.iterdir()):
        if not any((out / m).exists() for m in ("zarr.json", ".zgroup", ".zarray")):
            raise InputError("expected a new path or a zarr store for the synthetic volume, found a folder of "
                             "other files", out)
        ours = _json_get(out / "zarr.json", "attributes", "generator") == GENERATOR
        done = _json_get(out / "run.json", "status") == "done"
        if (done or not ours) and not overwrite:
            raise InputError("expected a new path for the synthetic volume, found an existing zarr store "
                             "(pass --overwrite to replace it)", out)
    # atomic_dir's temporaries of this store are siblings: .<stem>.<random>.tmp<suffixes>.
    if out.parent.is_dir():
        for tmp in out.parent.glob(f".{out.stem}.*.tmp{''.join(out.suffixes)}"):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def run_synth(cfg: SynthRun, *, overwrite: bool = False) -> dict:
    """Write ``cfg.out`` (zarr: ``image`` uint8, ``labels`` uint32) and its ``run.json``; a summary."""
    out = Path(cfg.out)
    if not out.is_file():  # a file: RunDir's own one-line error
        _check_out(out, overwrite)
    image, labels = synthetic_volume(cfg.synth.validate())
    with RunDir(cfg.out, command="connectomics synth", config=cfg, overwrite=overwrite) as run:
        # The zarr group is replaced whole; run.json is written into it afterwards.
        write_volume(run.path, {"image": image, "labels": labels}, voxel_size=cfg.voxel_size,
                     attrs={"generator": GENERATOR})
        summary = {"volume": str(run.path), "shape": list(image.shape), "objects": int(len(np.unique(labels)) - 1)}
        run.record(**summary)
    return summary
