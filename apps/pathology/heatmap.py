"""Tumour-probability heatmaps: a sliding window over the tissue of each slide.

Heatmap pixel ``(r, c)`` is the model's tumour probability for the patch
centred on the level-0 cell ``[c*s, (c+1)*s) x [r*s, (r+1)*s)``, ``s`` the
stride in level-0 pixels (by default the training centre region, so the
cells tile the slide as the labels did). Only cells on tissue are evaluated;
the rest are 0. Optional test-time augmentation averages the 8 orientations.
The model runs as an inference-only copy with BatchNorm folded into the
convolutions (:mod:`.inference`): same probabilities, fewer passes over memory.

Outputs per slide (atomically): ``<slide>.heatmap.tif`` (float32 tiled
pyramidal TIFF with the stride and microns per pixel in its description),
optionally ``<slide>.heatmap.zarr``, and ``<slide>.overlay.png``. Slides run
in parallel through :func:`deepsci.core.parallel.run_shards`; a re-run skips
finished slides.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepsci.core.errors import ConfigError, InputError
from deepsci.core.parallel import limit_tf_threads, marker_path, run_shards, threads_per_worker

from .io import Slide, write_pyramid_tiff
from .tissue import TissueConfig, slide_tissue

__all__ = ["HeatmapConfig", "heatmap_grid", "heatmap_slide", "heatmap_task", "run_heatmaps"]

_MODELS: dict[str, tuple] = {}  # per-process model cache (Dask workers reuse it)


@dataclass
class HeatmapConfig:
    """Settings of ``deepsci pathology heatmap``.

    Attributes
    ----------
    model : str
        ``model.keras`` written by ``train`` (its sidecar gives patch size and magnifications).
    slides : str
        A slide file or a folder of slides.
    out_dir : str
    stride : int, optional
        Window step in pixels at the model's finest magnification (default:
        the model's centre-region size).
    batch_size : int
    tta : bool
        Average the 8 orientations (8x the compute).
    format : {"tiff", "zarr", "both"}
    scheduler : str, optional
        ``"inline"``, ``"local"`` (Dask LocalCluster) or ``tcp://host:port``.
    workers : int, optional
        Dask workers (default: min(slides, CPUs)).
    threads : int, optional
        TensorFlow threads per worker (default: the cores divided among the
        local workers; all cores inline; TensorFlow's own default on a remote
        cluster).
    """

    model: str
    slides: str
    out_dir: str
    stride: int | None = None
    batch_size: int = 128
    tta: bool = False
    format: str = "tiff"
    scheduler: str | None = "local"
    workers: int | None = None
    threads: int | None = None
    mpp: float | None = None
    overwrite: bool = False
    tissue: TissueConfig = field(default_factory=TissueConfig)

    def validate(self) -> HeatmapConfig:
        if self.format not in ("tiff", "zarr", "both"):
            raise ConfigError(f"expected format tiff, zarr or both, found {self.format!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"expected threads >= 1, found {self.threads}")
        if self.batch_size < 1:
            raise ConfigError(f"expected batch_size >= 1, found {self.batch_size}")
        if self.stride is not None and self.stride < 1:
            raise ConfigError(f"expected stride >= 1, found {self.stride}")
        if not Path(self.model).is_file():
            raise InputError("expected a trained model (.keras), found no file", self.model)
        if not Path(self.slides).exists():
            raise InputError("expected a slide file or folder, found none", self.slides)
        return self


def _load(model_path: str, threads: int | None):
    # Keyed by modification time too: a model retrained in place is reloaded.
    key = f"{model_path}@{Path(model_path).stat().st_mtime_ns}"
    if key not in _MODELS:
        used = limit_tf_threads(threads)
        import tensorflow as tf

        from deepsci.core.models.serialization import load_model

        from .inference import fold_batchnorm
        from .patches import preprocess

        model, meta = load_model(model_path)
        if meta.get("app") != "pathology":
            raise InputError(f"expected a pathology model, found one from app {meta.get('app')!r}", model_path)
        # Inference-only copy, same probabilities: Conv+BN+ReLU become one fused
        # kernel, ~1.4x the tiles/s of the narrow small Inception.
        model = fold_batchnorm(model)

        @tf.function(reduce_retracing=True)
        def predict(xs, tta: bool):
            # uint8 in, probabilities out: scaling and the 8 orientations run in
            # the graph, so the Python side only hands over the raw batch. The
            # orientations are stacked along the batch (patches are square): one
            # model call, one graph copy of the model, bigger GEMMs.
            xs = [preprocess(x) for x in xs]
            if tta:
                xs = [tf.concat([v[i] for v in _orientations_tf(xs)], axis=0) for i in range(len(xs))]
            logits = model(xs[0] if len(xs) == 1 else tuple(xs), training=False)["tumor"][:, 0]
            probs = tf.sigmoid(logits)
            return tf.reduce_mean(tf.reshape(probs, (8, -1)), axis=0) if tta else probs

        _MODELS.clear()
        _MODELS[key] = (model, meta, predict, {"threads": used, "warm": set()})
    return _MODELS[key]


def _orientations_tf(xs):
    import tensorflow as tf

    views = []
    for k in range(4):
        r = [tf.image.rot90(x, k) for x in xs]
        views += [r, [tf.image.flip_left_right(x) for x in r]]
    return views


def heatmap_grid(slide: Slide, stride_px: float, tissue_cfg: TissueConfig) -> np.ndarray:
    """Which heatmap cells ``(gh, gw)`` lie on tissue (cells touching tissue count)."""
    from scipy import ndimage as ndi

    from .patches import _resize_mask

    w, h = slide.dimensions
    shape = (max(1, int(np.ceil(h / stride_px))), max(1, int(np.ceil(w / stride_px))))
    tissue, _ = slide_tissue(slide, tissue_cfg)
    grid = _resize_mask(tissue, shape)
    return ndi.binary_dilation(grid) if grid.any() else grid


def _tile_batches(slide: Slide, rows: np.ndarray, cols: np.ndarray, stride_px: float, pc, choices,
                  batch_size: int):
    """``(rows, cols, [uint8 (batch_size, P, P, 3) per scale])``; the last batch is padded."""
    from .patches import read_examples

    for start in range(0, len(rows), batch_size):
        r, c = rows[start:start + batch_size], cols[start:start + batch_size]
        centers = np.stack([(c + 0.5) * stride_px, (r + 0.5) * stride_px], axis=1)
        scales = read_examples(slide, centers, pc, choices)
        pad = batch_size - len(r)  # a fixed batch shape avoids retracing on the last batch
        if pad:
            scales = [np.concatenate([s, np.repeat(s[-1:], pad, 0)]) for s in scales]
        yield r, c, scales


_END = object()


def _prefetch(items, depth: int = 3):
    """Iterate ``items`` in a background thread, ``depth`` ahead of the consumer.

    Slide decoding (OpenSlide / tifffile C code) releases the GIL, so reading
    the next batches overlaps with inference on the current one. An error in
    the reader is raised in the consumer; a consumer that stops early stops
    the reader.
    """
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as e:  # handed to the consumer, which re-raises it
            put(("error", e))
            return
        put(_END)

    thread = threading.Thread(target=work, daemon=True, name="heatmap-reader")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, tuple) and len(item) == 2 and item[0] == "error":
                raise item[1]
            yield item
    finally:
        stop.set()
        thread.join()


def heatmap_slide(slide_path: str | Path, model_path: str, cfg: HeatmapConfig) -> tuple[np.ndarray, dict]:
    """The heatmap ``(gh, gw)`` float32 of one slide and its metadata (no files written)."""
    t_start = time.perf_counter()
    import tensorflow as tf

    from deepsci.core.progress import progress

    from .patches import PatchConfig

    model, meta, predict, state = _load(model_path, cfg.threads)
    spec = meta["input_spec"]
    pc = PatchConfig(patch_size=int(spec["patch_size"]), magnifications=tuple(spec["magnifications"]),
                     center_size=int(spec["center_size"]))
    bs, nscale = cfg.batch_size, len(pc.magnifications)
    if (bs, cfg.tta) not in state["warm"]:  # trace once, outside the timed loop
        zeros = tf.zeros((bs, pc.patch_size, pc.patch_size, 3), tf.uint8)
        predict([zeros] * nscale, bool(cfg.tta)).numpy()
        state["warm"].add((bs, cfg.tta))
    t0, cpu0 = time.perf_counter(), time.process_time()
    # once per process (TensorFlow import, model load and folding, tracing): a worker's first slide pays it
    startup = t0 - t_start
    with Slide(slide_path, mpp=cfg.mpp) as slide:
        choices = [slide.select_level(m) for m in pc.magnifications]
        finest_mpp = 10.0 / pc.magnifications[0]
        stride_px = (cfg.stride or pc.center_size) * finest_mpp / slide.mpp
        grid = heatmap_grid(slide, stride_px, cfg.tissue)
        rows, cols = np.nonzero(grid)
        heat = np.zeros(grid.shape, np.float32)
        bar = progress(total=len(rows), desc=f"heatmap {Path(slide_path).stem}", unit="tile")
        batches = _tile_batches(slide, rows, cols, stride_px, pc, choices, bs)
        for r, c, scales in _prefetch(batches):
            probs = predict([tf.constant(s) for s in scales], bool(cfg.tta)).numpy()
            heat[r, c] = probs[: len(r)]
            bar.update(len(r))
        bar.close()
        seconds = time.perf_counter() - t0
        # CPU seconds of this process (all its threads): on a shared machine this,
        # unlike wall time, does not grow with other people's load.
        cpu_seconds = time.process_time() - cpu0
        n = len(rows)
        info = {
            "slide_name": Path(slide_path).stem, "slide": str(slide_path), "stride": float(stride_px),
            "mpp": slide.mpp, "dimensions": list(slide.dimensions), "backend": slide.backend,
            "magnifications": list(pc.magnifications), "patch_size": pc.patch_size,
            "tta": bool(cfg.tta), "model": str(model_path), "tiles": int(n), "seconds": round(seconds, 3),
            "cpu_seconds": round(cpu_seconds, 3), "startup_seconds": round(startup, 3),
            "batch_size": bs, "tf_threads": int(state["threads"]),
            "level0_megapixels": float(n * stride_px * stride_px / 1e6),
        }
        return heat, info


def _thumbnail(slide_path: str | Path, mpp: float | None) -> np.ndarray:
    """The slide's ~1024-px thumbnail ``(h, w, 3)`` uint8 (run beside the inference)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colormaps  # noqa: F401 - imported here so the overlay does not wait for it

    with Slide(slide_path, mpp=mpp) as slide:
        w, h = slide.dimensions
        thumb, _ = slide.thumbnail(max(w, h) * slide.mpp / 1024)
    return thumb


def _overlay(thumb: np.ndarray, heat: np.ndarray, path: Path) -> None:
    """``heat`` in jet over ``thumb`` where it exceeds 0.05, written as PNG."""
    from matplotlib import colormaps
    from PIL import Image

    from deepsci.core.io import atomic_path

    hh, ww = thumb.shape[:2]
    gh, gw = heat.shape
    # Which heatmap cell each thumbnail pixel shows (PIL's nearest-neighbour rule):
    # colouring the small heatmap and indexing is the same image as colouring the
    # upsampled one, at a fraction of the work.
    cells = np.arange(gh * gw, dtype=np.int32).reshape(gh, gw)
    idx = np.asarray(Image.fromarray(cells).resize((ww, hh), Image.NEAREST))
    flat = heat.ravel()
    rgb = (colormaps["jet"](np.clip(flat, 0, 1))[:, :3] * 255).astype(np.float32)[idx]
    alpha = np.where(flat > 0.05, 0.55, 0.0).astype(np.float32)[idx][..., None]
    out = thumb.astype(np.float32) * (1 - alpha) + rgb * alpha
    with atomic_path(path) as tmp:
        # a preview: fast zlib level, ~15 % larger than the default and 3x quicker
        Image.fromarray(out.astype(np.uint8)).save(tmp, format="PNG", compress_level=1)


def heatmap_task(task: dict) -> dict:
    """One slide: compute and write its heatmap files (a :func:`run_shards` task)."""
    from deepsci.core.io import atomic_dir

    started = time.time()
    cfg = HeatmapConfig(**{**task["config"], "tissue": TissueConfig(**task["config"]["tissue"])})
    out = Path(cfg.out_dir)
    name = Path(task["slide"]).stem
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        # the overlay's thumbnail is read while the model runs (decoding releases the GIL)
        thumb = pool.submit(_thumbnail, task["slide"], cfg.mpp)
        heat, info = heatmap_slide(task["slide"], cfg.model, cfg)
        t_write = time.perf_counter()
        thumb = thumb.result()
    if cfg.format in ("tiff", "both"):
        write_pyramid_tiff(out / f"{name}.heatmap.tif", heat, mpp=info["mpp"] * info["stride"], tile=64,
                           compression="zlib", min_size=32, mode="max", description=info)
    if cfg.format in ("zarr", "both"):
        import zarr

        with atomic_dir(out / f"{name}.heatmap.zarr") as tmp:
            arr = zarr.create_array(str(tmp), shape=heat.shape, dtype="float32",
                                    chunks=(min(256, heat.shape[0]), min(256, heat.shape[1])),
                                    overwrite=True)
            arr[...] = heat
            arr.attrs.update(info)
    _overlay(thumb, heat, out / f"{name}.overlay.png")
    # wall-clock stamps (seconds since the epoch) let a caller see where a Dask run's time went
    return {**info, "score": float(heat.max()) if heat.size else 0.0,
            "write_seconds": round(time.perf_counter() - t_write, 3), "started": started, "finished": time.time(),
            "worker_pid": os.getpid()}


def run_heatmaps(config: HeatmapConfig) -> dict[str, dict]:
    """Heatmaps of every slide in ``config.slides``; returns per-slide info."""
    import dataclasses

    from deepsci.core.io import save_config, write_run_info

    from .train import list_slides

    cfg = config.validate()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    slides = list_slides(cfg.slides)
    cfg_dict = dataclasses.asdict(cfg)
    cfg_dict["model"] = str(Path(cfg.model).resolve())
    tasks = [{"slide": str(Path(s).resolve()), "config": cfg_dict} for s in slides]
    state = out / ".state"
    if cfg.overwrite:
        for t in tasks:
            marker_path(state, Path(t["slide"]).stem).unlink(missing_ok=True)
    # Validate every slide up front: a bad file is a one-line error, not a worker traceback.
    from deepsci.core.models.serialization import load_model  # noqa: F401 - fail fast on import

    meta = _sidecar(cfg.model)
    for s in slides:
        with Slide(s, mpp=cfg.mpp) as slide:
            for m in meta["input_spec"]["magnifications"]:
                slide.select_level(m)
    save_config(cfg, out / "heatmap_config.json")
    workers = cfg.workers or max(1, min(len(tasks), os.cpu_count() or 1))
    # One slide gains nothing from a cluster but would pay its start-up.
    scheduler = "inline" if (len(tasks) == 1 and cfg.scheduler in (None, "local")) else cfg.scheduler
    if cfg.threads is None and scheduler in ("inline", None, "local"):
        threads = (os.cpu_count() or 1) if scheduler == "inline" else threads_per_worker(scheduler, workers)
        for t in tasks:
            t["config"] = {**t["config"], "threads": threads}
    results = run_shards(heatmap_task, tasks, key=lambda t: Path(t["slide"]).stem, state_dir=state,
                         scheduler=scheduler, workers=workers, desc="slides")
    write_run_info(out, command="pathology heatmap", config=cfg,
                   extra={"slides": {k: {kk: v[kk] for kk in ("tiles", "seconds", "score")}
                                     for k, v in results.items()}})
    return results


def _sidecar(model_path: str) -> dict:
    from deepsci.core.io import read_json
    from deepsci.core.models.serialization import sidecar_path

    meta = read_json(sidecar_path(model_path))
    if meta.get("app") != "pathology" or "input_spec" not in meta:
        raise InputError("expected a pathology model sidecar with input_spec, found another kind",
                         sidecar_path(model_path))
    return meta
