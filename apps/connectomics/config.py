"""The options of every stage, one dataclass each, and the named pipelines of ``segment``.

Every default is declared here once; the command line, the benchmark and the
notebooks build these. :data:`SEGMENT_PRESETS` names the pipelines chosen on the
validation slab of the NeuroProof volume (``bench/RESULTS.md``, connectomics).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from deepsci.core.errors import ConfigError
from deepsci.core.io import config_from_dict

__all__ = ["check_voxel_size", "AgglomerationConfig", "InferenceConfig", "BaselineConfig", "SegmentConfig", "SEGMENT_PRESETS",
           "resolve_preset", "preset_inference", "SegmentRun", "TrainAggloRun", "BaselineRun", "EvaluateRun"]

SEED_POLICIES = ("peaks", "membrane", "grid", "none", "watershed")


def _cli(default, name: str):
    """A field with its command-line spelling (where the field name alone would clash or say too little)."""
    return field(default=default, metadata={"cli": name})


def _check(checks) -> None:
    """Raise the first failed ``(ok, what, found)`` as one ConfigError line."""
    for ok, what, found in checks:
        if not ok:
            raise ConfigError(f"expected {what}, found {found!r}")


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

    radius: tuple[int, ...] = _cli((12, 12, 12), "agglo-radius")
    min_contact: int = _cli(100, "agglo-min-contact")
    threshold: float = _cli(0.8, "agglo-threshold")
    boundary_threshold: float | None = _cli(None, "agglo-boundary-threshold")
    max_pairs: int = _cli(10000, "agglo-max-pairs")
    rounds: int = _cli(1, "agglo-rounds")
    classifier: str | None = _cli(None, "agglo-classifier")

    def box_radius(self) -> tuple[int, int, int]:
        """``radius`` as (z, y, x): one value stands for all three axes."""
        r = tuple(int(v) for v in self.radius)
        return r * 3 if len(r) == 1 else r

    def validate(self) -> AgglomerationConfig:
        _check([
            (len(self.radius) in (1, 3) and min(self.radius) >= 1, "--agglo-radius of 1 or 3 values >= 1",
             self.radius),
            (self.min_contact >= 1, "--agglo-min-contact >= 1", self.min_contact),
            (self.max_pairs >= 1, "--agglo-max-pairs >= 1", self.max_pairs),
            (self.rounds >= 1, "--agglo-rounds >= 1", self.rounds),
            (0 < self.threshold <= 1, "0 < --agglo-threshold <= 1", self.threshold),
            (self.boundary_threshold is None or 0 < self.boundary_threshold < 1,
             "0 < --agglo-boundary-threshold < 1", self.boundary_threshold),
        ])
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
    grid_step : tuple of int, optional
        (z, y, x) step of the ``grid`` seeds; default: half the FOV.
    peak_min_distance : int
        Minimum distance (voxels) between two seeds (and supervoxel peaks).
    edge_sigma : float
        Smoothing (voxels) of the local mean edge strength of the ``peaks`` seeds.
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
        """Rebuild from :func:`~deepsci.core.io.config_to_dict` output (JSON lists back to tuples)."""
        return config_from_dict(cls, d)

    def validate(self) -> InferenceConfig:
        _check([
            (self.seed_policy in SEED_POLICIES, f"--seed-policy among {', '.join(SEED_POLICIES)}", self.seed_policy),
            (self.seed_policy != "none" or self.reseed_unclaimed > 0, "--reseed-unclaimed > 0 with --seed-policy none",
             self.reseed_unclaimed),
            (self.boundary_threshold is None or 0 < self.boundary_threshold < 1, "0 < --boundary-threshold < 1",
             self.boundary_threshold),
            (self.grid_step is None or (len(self.grid_step) == 3 and min(self.grid_step) >= 1),
             "--grid-step of 3 values >= 1", self.grid_step),
            (len(self.min_boundary_dist) == 3 and min(self.min_boundary_dist) >= 0,
             "--min-boundary-dist of 3 values >= 0", self.min_boundary_dist),
            (self.boundary_sigma >= 0, "--boundary-sigma >= 0", self.boundary_sigma),
            (self.edge_sigma > 0, "--edge-sigma > 0", self.edge_sigma),
            (0 < self.move_threshold < 1, "0 < --move-threshold < 1", self.move_threshold),
            (0 < self.segment_threshold < 1, "0 < --segment-threshold < 1", self.segment_threshold),
            (self.min_segment_size >= 1, "--min-segment-size >= 1", self.min_segment_size),
            (self.batch_size >= 1, "--batch-size >= 1", self.batch_size),
            (self.peak_min_distance >= 1, "--peak-min-distance >= 1", self.peak_min_distance),
            (self.max_fovs_per_object >= 1, "--max-fovs-per-object >= 1", self.max_fovs_per_object),
            (self.reseed_unclaimed >= 0, "--reseed-unclaimed >= 0", self.reseed_unclaimed),
            (not self.reseed_unclaimed or self.boundary_threshold is not None,
             "--boundary-threshold with --reseed-unclaimed", self.boundary_threshold),
        ])
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
        _check([
            (self.markers in ("peaks", "components"), "--markers peaks or components", self.markers),
            (self.sigma >= 0, "--sigma >= 0", self.sigma),
            (self.min_distance >= 1, "--min-distance >= 1", self.min_distance),
            (self.min_size >= 0, "--min-size >= 0", self.min_size),
            (self.threshold is None or 0 < self.threshold < 1, "0 < --threshold < 1", self.threshold),
        ])
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
        _check([
            (self.block_size is None or (len(self.block_size) == 3 and min(self.block_size) >= 1),
             "--block-size of 3 values >= 1", self.block_size),
            (self.overlap is None or (len(self.overlap) == 3 and min(self.overlap) >= 0),
             "--overlap of 3 values >= 0", self.overlap),
            (len(self.chunks) == 3 and min(self.chunks) >= 1, "--chunks of 3 values >= 1", self.chunks),
            (self.stitch_min_overlap >= 1, "--stitch-min-overlap >= 1", self.stitch_min_overlap),
            (0 <= self.stitch_min_fraction <= 1, "0 <= --stitch-min-fraction <= 1", self.stitch_min_fraction),
            (self.workers is None or self.workers >= 1, "--workers >= 1", self.workers),
        ])
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


def _over_defaults(cfg, values: dict, defaults):
    """``cfg`` with every field still at its default (that of ``defaults``) set to ``values``' entry."""
    return replace(cfg, **{k: v for k, v in values.items() if getattr(cfg, k) == getattr(defaults, k)})


def resolve_preset(cfg: InferenceConfig, preset: str, *, training: bool = False) -> InferenceConfig:
    """The options of a named pipeline: every field of ``cfg`` left at its default takes the preset's value.

    A field set to anything else wins over the preset (to use a default the preset changes, start
    from ``ffn``). Resolving twice changes nothing, so a recorded run re-runs as it ran.

    Parameters
    ----------
    cfg : InferenceConfig
    preset : str
        A key of :data:`SEGMENT_PRESETS`.
    training : bool
        The options ``train-agglo`` fits this preset's classifier with: no agglomeration
        (the supervoxels it starts from), its box and contact settings kept, no classifier needed.

    Returns
    -------
    InferenceConfig
        Validated; the ``learned`` preset without a classifier is refused.
    """
    if preset not in SEGMENT_PRESETS:
        raise ConfigError(f"expected --preset among {', '.join(SEGMENT_PRESETS)}, found {preset!r}")
    values = copy.deepcopy(SEGMENT_PRESETS[preset])
    agg = _over_defaults(cfg.agglomeration, values.pop("agglomeration", {}), AgglomerationConfig())
    out = replace(_over_defaults(cfg, values, InferenceConfig()), agglomeration=agg)
    if training:
        out = replace(out, agglomerate=False)
    elif out.agglomerate and preset == "learned" and out.agglomeration.classifier is None:
        raise ConfigError("expected --agglo-classifier (a pair classifier from train-agglo) with --preset learned, "
                          "found none")
    return out.validate()


def preset_inference(preset: str = "ffn", *, training: bool = False, **overrides) -> InferenceConfig:
    """:func:`resolve_preset` of InferenceConfig fields given as keywords (``None``: not given).

    ``agglomeration`` is a dict of AgglomerationConfig fields.
    """
    agg = {k: v for k, v in (overrides.pop("agglomeration", None) or {}).items() if v is not None}
    known = {f.name for f in fields(InferenceConfig)}
    if set(overrides) - known:
        raise ConfigError(f"expected inference options among {sorted(known)}, found {sorted(set(overrides) - known)}")
    cfg = InferenceConfig(**{k: v for k, v in overrides.items() if v is not None},
                          agglomeration=AgglomerationConfig(**agg))
    return resolve_preset(cfg, preset, training=training)


def check_voxel_size(voxel_size) -> None:
    """``--voxel-size``: absent, or 3 finite values > 0 (nm)."""
    import math

    ok = voxel_size is None or (len(voxel_size) == 3 and all(math.isfinite(v) and v > 0 for v in voxel_size))
    _check([(ok, "--voxel-size of 3 values > 0", None if voxel_size is None else tuple(voxel_size))])


def _check_volume(spec: str, what: str) -> None:
    if not spec:
        raise ConfigError(f"expected {what} (a volume PATH[:INNER]), found none")


@dataclass
class SegmentRun:
    """``deepsci connectomics segment``: a trained FFN applied to a volume, block by block.

    Attributes
    ----------
    image : str
        EM volume ``PATH[:INNER]`` (zarr, FILE.h5:DATASET, N5, slice folder, TIFF).
    out : str
        Output folder: ``segmentation.zarr`` (OME-Zarr: image and label pyramids, probability) and ``run.json``.
    model : str, optional
        FFN ``model.keras`` from ``train``, or a shipped model's name; default: the shipped default
        (``connectomics-neuroproof-ffn``) with its pair classifier.
    preset : str
        Pipeline (:data:`SEGMENT_PRESETS`): learned (the default and the best on real EM: watershed supervoxels,
        FFN pair recoveries, learned agglomeration; the classifier is the shipped model's, else
        --agglo-classifier) | ffn (flood fill) | membrane (membrane seeds, boundary limit, FFN agglomeration) |
        supervoxels (watershed over-segmentation for train-agglo). Options left at their default take the
        preset's value.
    voxel_size : tuple of float, optional
        (z, y, x) voxel size in nm; overrides the file's metadata.
    segment : SegmentConfig
        Blocks, stitching, scheduler and the inference options.
    """

    image: str
    out: str
    model: str | None = None
    preset: str = "learned"
    voxel_size: tuple[float, float, float] | None = None
    segment: SegmentConfig = field(default_factory=SegmentConfig)

    def resolved(self) -> SegmentRun:
        """The run with its models found (shipped names, defaults) and the preset's options applied.

        See :func:`~deepsci.apps.connectomics.shipped.resolve_segment_models` and :func:`resolve_preset`;
        a shipped model used is named in one line on stderr.
        """
        from .shipped import resolve_segment_models

        inf = self.segment.inference
        # The learned preset always agglomerates with a classifier (agglomerate's default, False, is its value).
        model, clf = resolve_segment_models(self.model, inf.agglomeration.classifier,
                                            wants_classifier=self.preset == "learned")
        inf = replace(inf, agglomeration=replace(inf.agglomeration, classifier=clf))
        icfg = resolve_preset(inf, self.preset)
        return replace(self, model=model, segment=replace(self.segment, inference=icfg))

    def validate(self) -> SegmentRun:
        _check_volume(self.image, "--image")
        _check([(self.preset in SEGMENT_PRESETS, f"--preset among {', '.join(SEGMENT_PRESETS)}", self.preset)])
        check_voxel_size(self.voxel_size)
        self.segment.validate()
        return self


@dataclass
class TrainAggloRun:
    """``deepsci connectomics train-agglo``: fit the pair classifier of ``segment --preset learned``.

    Attributes
    ----------
    image : str
        EM volume ``PATH[:INNER]``.
    labels : str
        Its ground truth ``PATH[:INNER]`` (integer ids, 0 = unlabelled).
    out : str
        Output folder: ``pair_classifier.json`` and ``run.json``.
    model : str, optional
        FFN model.keras or a shipped FFN's name: its pair recoveries become features; default: boundary and
        size features only.
    seg : str, optional
        Un-agglomerated segmentation of IMAGE (``segment --preset supervoxels``); default: made here
        with the preset's supervoxel settings.
    preset : str
        The pipeline whose classifier this is (its supervoxel, box and contact settings).
    kind : str
        forest (random forest) | logistic (logistic regression).
    voxel_size : tuple of float, optional
        (z, y, x) voxel size in nm; overrides the file's metadata.
    inference : InferenceConfig
        Supervoxel settings and the FFN pair runs' options (use the same at inference).
    """

    image: str
    labels: str
    out: str
    model: str | None = None
    seg: str | None = None
    preset: str = "learned"
    kind: str = "forest"
    voxel_size: tuple[float, float, float] | None = None
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def resolved(self) -> TrainAggloRun:
        """The run with the preset's options applied (agglomeration off: these are its inputs), a shipped
        FFN's name turned into its path."""
        from .shipped import resolve_ffn

        return replace(self, model=resolve_ffn(self.model),
                       inference=resolve_preset(self.inference, self.preset, training=True))

    def validate(self) -> TrainAggloRun:
        _check_volume(self.image, "--image")
        _check_volume(self.labels, "--labels")
        _check([(self.kind in ("forest", "logistic"), "--kind forest or logistic", self.kind),
                (self.preset in SEGMENT_PRESETS, f"--preset among {', '.join(SEGMENT_PRESETS)}", self.preset)])
        check_voxel_size(self.voxel_size)
        self.inference.validate()
        return self


@dataclass
class BaselineRun:
    """``deepsci connectomics baseline``: boundary map -> seeded watershed.

    Attributes
    ----------
    image : str
        EM volume ``PATH[:INNER]``.
    out : str
        Output folder: ``segmentation.zarr`` (OME-Zarr: image and label pyramids) and ``run.json``.
    voxel_size : tuple of float, optional
        (z, y, x) voxel size in nm; overrides the file's metadata.
    baseline : BaselineConfig
        The watershed's options.
    """

    image: str
    out: str
    voxel_size: tuple[float, float, float] | None = None
    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    def validate(self) -> BaselineRun:
        _check_volume(self.image, "--image")
        check_voxel_size(self.voxel_size)
        self.baseline.validate()
        return self


@dataclass
class EvaluateRun:
    """``deepsci connectomics evaluate``: VI, adapted Rand error, ERL, merges and splits.

    Attributes
    ----------
    labels : str
        Ground-truth volume ``PATH[:INNER]`` (integer ids, 0 = unlabelled, ignored).
    seg : list of str
        Segmentations ``[NAME=]PATH[:INNER]``, comma-separated.
    out : str
        Output folder: ``scores.json``, ``metrics.json``, ``scores.md``, ``segments.csv`` (one row
        per segment), ``slices.png`` and ``run.json``.
    image : str, optional
        EM image: adds the slice figure and the watershed baseline.
    baseline : bool
        Score a watershed baseline too (needs --image).
    min_overlap : int
        Voxels for an overlap to count as a merge or split.
    skip_invalid : bool
        An unreadable --seg (or one of another shape) is skipped and named in ``run.json``'s
        results (``skipped``) instead of being an error; still an error when none is left.
    voxel_size : tuple of float, optional
        (z, y, x) voxel size in nm; overrides the file's metadata.
    """

    labels: str
    seg: list[str]
    out: str
    image: str | None = None
    baseline: bool = True
    min_overlap: int = 100
    voxel_size: tuple[float, float, float] | None = None
    skip_invalid: bool = False

    def named(self) -> dict[str, str]:
        """Name -> volume spec of every ``seg`` (unnamed: its folder's name, else its own file name).

        Two segmentations of one name would silently score only the last: that is an error.
        """
        out = {}
        for s in self.seg:
            name, _, spec = s.partition("=") if "=" in s.split(":")[0] else ("", "", s)
            path = Path(spec.split(":")[0])
            if not name:
                name = path.parent.name or spec
                name = path.name or spec if name in out else name
            if name in out:
                raise ConfigError(f"expected distinct --seg names (NAME=PATH), found {name!r} twice")
            out[name] = spec
        return out

    def validate(self) -> EvaluateRun:
        _check_volume(self.labels, "--labels")
        _check([(bool(self.seg), "--seg (one or more segmentations)", self.seg),
                (self.min_overlap >= 1, "--min-overlap >= 1", self.min_overlap)])
        check_voxel_size(self.voxel_size)
        return self
