"""The options of every stage, one dataclass each, and the named pipelines of ``segment``.

Every default is declared here once; the command line, the benchmark and the
notebooks build these. :data:`SEGMENT_PRESETS` names the pipelines chosen on the
validation slab of the NeuroProof volume (``bench/RESULTS.md``, connectomics).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, replace

from deepsci.core.errors import ConfigError

__all__ = ["AgglomerationConfig", "InferenceConfig", "BaselineConfig", "SegmentConfig", "SEGMENT_PRESETS",
           "preset_inference"]


@dataclass
class AgglomerationConfig:
    """Options of the agglomeration of touching segments (one source of defaults: the CLI's ``--agglo-*``).

    Attributes
    ----------
    radius : tuple of int
        Half-size (z, y, x) of the box around each contact for the FFN pair runs
        (clipped to the volume, never smaller than the FOV).
    min_contact : int
        Pairs touching on fewer face-adjacent voxel pairs get no FFN runs (and are
        never joined by the threshold rule; the classifier still scores them).
    threshold : float
        Threshold rule: join when both directed FFN recoveries reach this fraction.
        With a ``classifier``: join while the best pair's probability reaches it.
    boundary_threshold : float, optional
        The agglomeration fills never enter voxels at or above this boundary-map
        level; ``None``: no limit (the FFN alone decides).
    max_pairs : int
        At most this many pairs (largest contacts first) get FFN runs per round.
    rounds : int
        Threshold rule: after a round that joined segments, the pairs touching a joined
        segment are tested again (its shape near each contact changed), up to this many rounds.
    classifier : str, optional
        Pair-classifier JSON (``deepsci connectomics train-agglo``): greedy agglomeration
        on the region adjacency graph, the FFN recoveries being two of its features
        (:mod:`~deepsci.apps.connectomics.rag`); ``None``: the threshold rule.
    """

    radius: tuple[int, int, int] = (12, 12, 12)
    min_contact: int = 100
    threshold: float = 0.8
    boundary_threshold: float | None = None
    max_pairs: int = 10000
    rounds: int = 1
    classifier: str | None = None

    @classmethod
    def from_options(cls, *, radius: int | None = None, **given) -> AgglomerationConfig:
        """From command-line options: ``radius`` one int for all axes; ``None`` (unset) keeps the default."""
        if radius is not None:
            given["radius"] = (radius,) * 3
        return cls(**{k: v for k, v in given.items() if v is not None})

    def validate(self) -> AgglomerationConfig:
        if min(self.radius) < 1 or self.min_contact < 1 or self.max_pairs < 1 or self.rounds < 1:
            raise ConfigError(f"expected radius, min_contact, max_pairs, rounds >= 1, found {self.radius}, "
                              f"{self.min_contact}, {self.max_pairs}, {self.rounds}")
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"expected 0 < threshold <= 1, found {self.threshold}")
        if self.boundary_threshold is not None and not 0 < self.boundary_threshold < 1:
            raise ConfigError(f"expected 0 < boundary_threshold < 1, found {self.boundary_threshold}")
        return self


@dataclass
class InferenceConfig:
    """Options of the flood fill (shared by every block).

    Attributes
    ----------
    seed_policy : {"peaks", "membrane", "grid", "none", "watershed"}
        ``peaks``: maxima of the distance transform of a Sobel edge map;
        ``membrane``: maxima of the distance transform of the cell interior of
        the boundary map (below ``boundary_threshold``, or Otsu's level);
        ``grid``: a regular grid with step ``grid_step``; ``none``: no flood fill at
        all, the segments are the interior regions of ``reseed_unclaimed`` (a
        component-marker watershed) for the FFN agglomeration to join; ``watershed``:
        no flood fill, the segments are the supervoxels of a peak-marker watershed of
        the boundary map (interior below ``boundary_threshold`` or Otsu's level, peaks
        ``peak_min_distance`` apart, every voxel kept) for the learned agglomeration.
    move_threshold : float
        Face probability needed to move the FOV there.
    segment_threshold : float
        Probability above which a voxel joins the object.
    min_segment_size : int
        Smaller objects are dropped (their voxels may be claimed later).
    min_boundary_dist : tuple of int
        No seed closer than this (z, y, x) to a voxel of an existing object.
    batch_size : int
        FOVs evaluated per FFN call.
    consensus : bool
        Run twice (seeds forward and reversed) and split where the runs disagree.
    max_fovs_per_object : int
        Safety bound on the FOV evaluations of one object.
    boundary_threshold : float, optional
        Boundary-map level (0-1, see :func:`~deepsci.apps.connectomics.baseline.boundary_map`)
        at or above which a voxel never joins an object and no FOV is centred,
        so an FFN that leaks across a membrane is stopped there; ``None``: no limit.
    boundary_sigma : float
        Gaussian smoothing (voxels) of the boundary map.
    fill_unclaimed : bool
        Give every voxel no object claimed to an object by a watershed of the
        boundary map seeded with the objects (VI counts unclaimed voxels as
        one segment, which merges everything they touch).
    reseed_unclaimed : int
        Before the fill, every connected region of at least this many voxels
        below ``boundary_threshold`` that no object claimed becomes an object
        of its own, instead of being shared out among its neighbours by the
        fill (0: off). Splits it causes are for the agglomeration to repair.
    agglomerate : bool
        Join touching segments the FFN, seeded on both sides, finds to be one
        (:mod:`~deepsci.apps.connectomics.agglomerate`).
    agglomeration : AgglomerationConfig
        Its options.
    """

    seed_policy: str = "peaks"
    grid_step: tuple[int, int, int] | None = None
    peak_min_distance: int = 3
    edge_sigma: float = 8.0
    move_threshold: float = 0.9
    segment_threshold: float = 0.6
    min_segment_size: int = 100
    min_boundary_dist: tuple[int, int, int] = (1, 1, 1)
    batch_size: int = 8
    consensus: bool = True
    max_fovs_per_object: int = 20000
    boundary_threshold: float | None = None
    boundary_sigma: float = 1.0
    fill_unclaimed: bool = False
    reseed_unclaimed: int = 0
    agglomerate: bool = False
    agglomeration: AgglomerationConfig = field(default_factory=AgglomerationConfig)

    @classmethod
    def from_dict(cls, d: dict) -> InferenceConfig:
        """Rebuild from :func:`dataclasses.asdict` output (JSON lists back to tuples)."""
        d = dict(d)
        agg = dict(d.pop("agglomeration", None) or {})
        if "radius" in agg:
            agg["radius"] = tuple(agg["radius"])
        for key in ("min_boundary_dist", "grid_step"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d, agglomeration=AgglomerationConfig(**agg))

    def validate(self) -> InferenceConfig:
        checks = [
            (self.seed_policy in ("peaks", "membrane", "grid", "none", "watershed"),
             "seed_policy 'peaks', 'membrane', 'grid', 'none' or 'watershed'", self.seed_policy),
            (self.seed_policy != "none" or self.reseed_unclaimed > 0, "reseed_unclaimed > 0 with seed_policy 'none'",
             self.reseed_unclaimed),
            (self.boundary_threshold is None or 0 < self.boundary_threshold < 1, "0 < boundary_threshold < 1",
             self.boundary_threshold),
            (self.boundary_sigma >= 0, "boundary_sigma >= 0", self.boundary_sigma),
            (0 < self.move_threshold < 1, "0 < move_threshold < 1", self.move_threshold),
            (0 < self.segment_threshold < 1, "0 < segment_threshold < 1", self.segment_threshold),
            (self.min_segment_size >= 1, "min_segment_size >= 1", self.min_segment_size),
            (self.batch_size >= 1, "batch_size >= 1", self.batch_size),
            (self.peak_min_distance >= 1, "peak_min_distance >= 1", self.peak_min_distance),
            (self.max_fovs_per_object >= 1, "max_fovs_per_object >= 1", self.max_fovs_per_object),
            (self.reseed_unclaimed >= 0, "reseed_unclaimed >= 0", self.reseed_unclaimed),
            (not self.reseed_unclaimed or self.boundary_threshold is not None,
             "boundary_threshold with reseed_unclaimed", self.boundary_threshold),
        ]
        for ok, what, found in checks:
            if not ok:
                raise ConfigError(f"expected {what}, found {found!r}")
        if self.agglomerate:
            self.agglomeration.validate()
        return self


@dataclass
class BaselineConfig:
    """Options of the watershed baseline.

    Attributes
    ----------
    sigma : float
        Gaussian smoothing (voxels) of the image before inversion.
    threshold : float, optional
        Boundary-map level separating interior (below) from membrane; ``None`` = Otsu.
    min_distance : int
        Minimum distance (voxels) between two watershed seeds.
    min_size : int
        Segments smaller than this become 0 (and, with ``components``, smaller
        interior regions are no markers).
    markers : {"peaks", "components"}
        Watershed markers: distance-transform peaks or connected interior regions.
    """

    sigma: float = 1.0
    threshold: float | None = None
    min_distance: int = 4
    min_size: int = 100
    markers: str = "peaks"

    def validate(self) -> BaselineConfig:
        if self.markers not in ("peaks", "components"):
            raise ConfigError(f"expected markers 'peaks' or 'components', found {self.markers!r}")
        if self.sigma < 0 or self.min_distance < 1 or self.min_size < 0:
            raise ConfigError(f"expected sigma >= 0, min_distance >= 1, min_size >= 0, found {self.sigma}, "
                              f"{self.min_distance}, {self.min_size}")
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise ConfigError(f"expected 0 < threshold < 1, found {self.threshold}")
        return self


@dataclass
class SegmentConfig:
    """Options of ``deepsci connectomics segment``.

    Attributes
    ----------
    block_size : tuple of int, optional
        (z, y, x) size of a block; ``None`` = the whole volume in one block.
    overlap : tuple of int, optional
        Voxels shared by neighbouring blocks; default: the model's FOV.
    scheduler : str
        ``"local"`` (Dask LocalCluster), ``"inline"`` (this process) or ``tcp://host:port``.
    workers : int, optional
        Local Dask workers (default: CPU count).
    stitch_min_overlap : int
        Voxels two objects of neighbouring blocks must share to be joined.
    stitch_min_fraction : float
        ... and the share of the smaller one's part of the overlap they must reach.
    chunks : tuple of int
        (z, y, x) chunk shape of the output arrays.
    """

    inference: InferenceConfig = field(default_factory=InferenceConfig)
    block_size: tuple[int, int, int] | None = None
    overlap: tuple[int, int, int] | None = None
    stitch_min_overlap: int = 20
    stitch_min_fraction: float = 0.5
    scheduler: str = "local"
    workers: int | None = None
    chunks: tuple[int, int, int] = (64, 64, 64)

    def validate(self) -> SegmentConfig:
        self.inference.validate()
        for name in ("block_size", "overlap", "chunks"):
            v = getattr(self, name)
            if v is not None and (len(v) != 3 or min(v) < (0 if name == "overlap" else 1)):
                raise ConfigError(f"expected {name} of three positive sizes (z, y, x), found {v}")
        if self.stitch_min_overlap < 1 or not 0 <= self.stitch_min_fraction <= 1:
            raise ConfigError(f"expected stitch_min_overlap >= 1 and 0 <= stitch_min_fraction <= 1, found "
                              f"{self.stitch_min_overlap}, {self.stitch_min_fraction}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"expected workers >= 1, found {self.workers}")
        return self


_SUPERVOXELS = {"seed_policy": "watershed", "boundary_threshold": 0.6, "peak_min_distance": 4, "consensus": False,
                "segment_threshold": 0.5, "batch_size": 16}

#: ``segment --preset NAME``: InferenceConfig fields over its defaults (``agglomeration``: AgglomerationConfig fields).
SEGMENT_PRESETS: dict[str, dict] = {
    # Flood fill from edge-distance peaks, split consensus of two seed orders: the dataclass defaults.
    "ffn": {},
    # Session 3, run A: membrane seeds, growth stopped at membranes, unclaimed cells reseeded, FFN agglomeration.
    "membrane": {"seed_policy": "membrane", "peak_min_distance": 12, "boundary_threshold": 0.5,
                 "segment_threshold": 0.5, "fill_unclaimed": True, "reseed_unclaimed": 100, "consensus": False,
                 "batch_size": 16, "agglomerate": True, "agglomeration": {"threshold": 0.8, "min_contact": 100,
                                                                           "radius": (12, 12, 12)}},
    # The over-segmentation the learned agglomeration starts from (and ``train-agglo`` learns on).
    "supervoxels": dict(_SUPERVOXELS),
    # Session 4, the pipeline that beats the watershed: supervoxels -> FFN pair runs -> random-forest greedy merging
    # (needs ``agglomeration.classifier``, from ``train-agglo``).
    "learned": {**_SUPERVOXELS, "agglomerate": True,
                "agglomeration": {"threshold": 0.65, "min_contact": 20, "radius": (12, 12, 12)}},
}


def preset_inference(preset: str = "ffn", *, training: bool = False, **overrides) -> InferenceConfig:
    """The inference options of a named pipeline, with ``overrides`` (``None`` = keep the preset's) on top.

    Parameters
    ----------
    preset : str
        A key of :data:`SEGMENT_PRESETS`.
    training : bool
        The options ``train-agglo`` fits this preset's classifier with: no agglomeration
        (the supervoxels it starts from), its box and contact settings kept, no classifier needed.
    **overrides
        InferenceConfig fields; ``agglomeration`` a dict of AgglomerationConfig fields.

    Returns
    -------
    InferenceConfig
        Validated; the ``learned`` preset without a classifier is refused.
    """
    if preset not in SEGMENT_PRESETS:
        raise ConfigError(f"expected a preset among {', '.join(SEGMENT_PRESETS)}, found {preset!r}")
    values = copy.deepcopy(SEGMENT_PRESETS[preset])
    agg = {**values.pop("agglomeration", {}), **{k: v for k, v in (overrides.pop("agglomeration", None) or {}).items()
                                                 if v is not None}}
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(InferenceConfig)}
    if set(values) - known:
        raise ConfigError(f"expected inference options among {sorted(known)}, found {sorted(set(values) - known)}")
    cfg = replace(InferenceConfig(), **values, agglomeration=replace(AgglomerationConfig(), **agg))
    if training:
        cfg = replace(cfg, agglomerate=False)
        cfg.agglomeration.validate()
    elif preset == "learned" and cfg.agglomeration.classifier is None:
        raise ConfigError("expected a pair classifier (--agglo-classifier, from train-agglo) with --preset learned, "
                          "found none")
    return cfg.validate()
