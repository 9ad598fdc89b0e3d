"""Tumour-probability heatmaps: a sliding window over the tissue of each slide.

Heatmap pixel ``(r, c)`` is the model's tumour probability for the patch
centred on the level-0 cell ``[c*s, (c+1)*s) x [r*s, (r+1)*s)``, ``s`` the
stride in level-0 pixels (by default the training centre region, so the
cells tile the slide as the labels did). Only cells on tissue are evaluated;
the rest are 0. Optional test-time augmentation averages the 8 orientations.
The model runs as an inference-only copy with BatchNorm folded into the
convolutions (:mod:`.predict`): same probabilities, fewer passes over memory.

Outputs per slide (atomically): ``<slide>.heatmap.tif`` (float32 tiled
pyramidal TIFF with the stride and microns per pixel in its description),
optionally ``<slide>.heatmap.zarr``, ``<slide>.overlay.png`` and, with
``contours``, ``<slide>.contours.geojson``: the tumour-probability contours at
those levels as QuPath annotations (:mod:`.contours`). Slides run
in parallel through :func:`deepsci.core.parallel.run_shards`; a re-run skips
finished slides. On a running Dask cluster (``--scheduler tcp://...``) each
worker keeps its ready model (:func:`.predict.engine`) between runs (:mod:`.cluster`).
"""
from __future__ import annotations

import dataclasses
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from deepsci.core.config import check_ranges, option
from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import atomic_dir, atomic_path, config_from_dict, config_to_dict
from deepsci.core.models.card import ModelCard, read_card
from deepsci.core.parallel import (
    REMOTE_SCHEMES,
    marker_path,
    run_shards,
    thread_map,
    threads_per_worker,
)
from deepsci.core.progress import progress
from deepsci.core.runs import RunDir

from .cluster import open_cluster, warm_up, worker_tf_threads
from .io import Slide, list_slides, read_heatmap, resize_mask, write_pyramid_tiff
from .model import APP, TASK
from .patches import PatchConfig, read_examples
from .predict import engine, warm_worker
from .shipped import resolve_patch_model
from .tissue import TissueConfig, slide_tissue

__all__ = ["HeatmapConfig", "FORMATS", "heatmap_grid", "heatmap_slide", "heatmap_task", "run_heatmaps"]

FORMATS = ("tiff", "zarr", "both")


@dataclass
class HeatmapConfig:
    """Settings of ``deepsci pathology heatmap`` (recorded in the output's ``run.json``).

    Attributes
    ----------
    model : str, optional
        ``model.keras`` written by ``train`` or ``distill`` (its card gives patch
        size and magnifications), a ``.tflite`` written by ``export`` (run by
        LiteRT), or a shipped model's name; ``None``: the shipped default.
    slides : str
        A slide file or a folder of slides.
    out : str
        Output folder: ``<slide>.heatmap.tif`` / ``.zarr``, ``<slide>.overlay.png``, ``run.json``.
    stride : int, optional
        Window step in pixels at the model's finest magnification (default:
        the model's centre-region size).
    batch_size : int
        Tiles per inference batch.
    tta : bool
        Average the 8 orientations (8x the compute).
    format : {"tiff", "zarr", "both"}
    contours : tuple of float
        Probability levels in (0, 1] traced into ``<slide>.contours.geojson``
        (QuPath annotations, level-0 pixels); empty: none. Written from each
        finished heatmap, so a re-run with other levels rewrites them.
    scheduler : str, optional
        ``"inline"``, ``"local"`` (a Dask LocalCluster for this run) or
        ``tcp://host:port`` (a running cluster, whose workers keep the loaded model).
    workers : int, optional
        Local Dask workers (default: min(slides, CPUs)).
    threads : int, optional
        TensorFlow threads per worker (default: each machine's cores split
        among its Dask threads; all cores inline).
    mpp : float, optional
        Microns per pixel at level 0, for slides that do not record it.
    xla : bool
        Compile the inference step with XLA.
    skip_invalid : bool
        Skip a slide that does not open or decode, naming it in ``run.json``
        (``results.skipped``), instead of stopping; still an error when none is left.
    tissue : TissueConfig
        Which cells are evaluated (tissue detection).
    """

    slides: str = option(help="A slide or a folder of slides.")
    out: str = option(help="Output folder.")
    model: str | None = option(None, "model.keras from `train`/`distill`, a .tflite from `export`, "
                               "or a shipped name (default: the shipped default, `deepsci models list`).")
    stride: int | None = option(None, "Window step in pixels at the finest scale (default: the "
                                "centre region).", min=1)
    batch_size: int = option(128, "Tiles per inference batch.", min=1)
    tta: bool = option(False, "Average the 8 orientations.")
    format: str = option("tiff", "tiff, zarr or both.", choices=FORMATS)
    contours: tuple[float, ...] = option((), "Tumour-probability levels traced as polygons into "
                                         "<slide>.contours.geojson for QuPath, e.g. 0.5,0.9.",
                                         min=0, min_exclusive=True, max=1)
    scheduler: str | None = option("local", "local (a Dask cluster started for this run), inline, "
                                   "or tcp://host:port: a running cluster (`dask scheduler`; `dask "
                                   "worker ADDRESS --nworkers N --nthreads 1`), whose workers keep "
                                   "the loaded model, so runs after the first start at once.")
    workers: int | None = option(None, "Local Dask workers (default: min(slides, cores)).", min=1)
    threads: int | None = option(None, "TensorFlow threads per worker (default: each machine's "
                                 "cores split among its Dask threads).", min=1)
    mpp: float | None = option(None, "Microns per pixel at level 0, for slides that do not record "
                               "it.", min=0, min_exclusive=True)
    xla: bool = option(False, "Compile the inference step with XLA.")
    skip_invalid: bool = option(False, "Skip slides that do not read (named in run.json) instead of "
                                "stopping at the first.")
    tissue: TissueConfig = option(factory=TissueConfig)

    def validate(self) -> HeatmapConfig:
        """Raise ConfigError / InputError for impossible settings or missing inputs; return self."""
        check_ranges(self)
        if self.scheduler not in (None, "local", "inline") and not str(self.scheduler).startswith(REMOTE_SCHEMES):
            raise ConfigError(f"expected a scheduler 'local', 'inline' or tcp://host:port, found {self.scheduler!r}")
        named = (self.model is not None and os.sep not in self.model
                 and not self.model.endswith((".keras", ".tflite")))
        if self.model is not None and not named and not Path(self.model).is_file():
            raise InputError("expected a trained model (.keras or .tflite), found no file", self.model)
        if not Path(self.slides).exists():
            raise InputError("expected a slide file or folder, found none", self.slides)
        if len(set(self.contours)) != len(self.contours):
            raise ConfigError(f"expected distinct --contours levels, found {','.join(map(str, self.contours))}")
        return self


def heatmap_grid(slide: Slide, stride_px: float, tissue_cfg: TissueConfig) -> np.ndarray:
    """Which heatmap cells ``(gh, gw)`` lie on tissue (cells touching tissue count)."""
    from scipy import ndimage as ndi

    w, h = slide.dimensions
    shape = (max(1, int(np.ceil(h / stride_px))), max(1, int(np.ceil(w / stride_px))))
    tissue, _ = slide_tissue(slide, tissue_cfg)
    grid = resize_mask(tissue, shape)
    return ndi.binary_dilation(grid) if grid.any() else grid


def _tile_batches(slide: Slide, rows: np.ndarray, cols: np.ndarray, stride_px: float, pc, choices,
                  batch_size: int):
    """``(rows, cols, [uint8 (n, P, P, 3) per scale])``, ``n <= batch_size`` (the predictor pads)."""
    for start in range(0, len(rows), batch_size):
        r, c = rows[start:start + batch_size], cols[start:start + batch_size]
        centers = np.stack([(c + 0.5) * stride_px, (r + 0.5) * stride_px], axis=1)
        yield r, c, read_examples(slide, centers, pc, choices)


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
    eng, cached = engine(model_path, cfg.batch_size, cfg.tta, cfg.threads, xla=cfg.xla)
    spec = eng.card.input_spec
    pc = PatchConfig(patch_size=int(spec["patch_size"]), magnifications=tuple(spec["magnifications"]),
                     center_size=int(spec["center_size"]))
    bs = cfg.batch_size
    t0, cpu0 = time.perf_counter(), time.process_time()
    # 0 on a warm worker; otherwise TensorFlow import, model load and folding, tracing
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
            heat[r, c] = eng.predict(scales)
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
            "batch_size": bs, "tf_threads": int(eng.threads), "model_cached": cached,
            "model_built_at": eng.built_at, "model_build_seconds": round(eng.build_seconds, 3),
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


def _call(job: Callable):
    return job()


def heatmap_task(task: dict) -> dict:
    """One slide: compute and write its heatmap files (a :func:`run_shards` task)."""
    started = time.time()
    cfg = config_from_dict(HeatmapConfig, task["config"])
    if cfg.threads is None and task.get("worker_threads") is not None:
        cfg.threads = _this_worker(task["worker_threads"])
    out = Path(cfg.out)
    name = Path(task["slide"]).stem
    # the overlay's thumbnail is read while the model runs (decoding releases the GIL)
    try:
        thumb, (heat, info) = thread_map(_call, [partial(_thumbnail, task["slide"], cfg.mpp),
                                                 partial(heatmap_slide, task["slide"], cfg.model, cfg)],
                                         workers=2)
    except InputError as e:  # a tile deep in the slide that does not decode
        if not cfg.skip_invalid:
            raise
        return {"skipped": e.message, "slide": task["slide"]}
    t_write = time.perf_counter()
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


def _this_worker(mapping: dict[str, int | None]) -> int | None:
    """This Dask worker's TF threads from ``worker address -> threads`` (``None`` outside a worker)."""
    from distributed import get_worker

    try:
        address = get_worker().address
    except ValueError:
        return None
    # a worker that joined after the run started (or before any had): the same rule, asked now
    return mapping[address] if address in mapping else worker_tf_threads()


def _check_slides(slides: list[Path], card: ModelCard, cfg: HeatmapConfig) -> tuple[list[Path], dict[str, str]]:
    """The slides that open, have the model's magnifications and whose tissue level decodes.

    Checked here, before any output or worker exists, so a bad file is a one-line error
    (or, with ``skip_invalid``, a skipped slide), not a worker traceback and a half-made
    output folder. Reading the tissue level catches a truncated file, whose coarse levels
    (written last) are the first lost. Returns ``(good, {slide: why})``.
    """
    mags = card.input_spec.get("magnifications")
    if not isinstance(mags, list) or not mags or not all(isinstance(m, (int, float)) and m > 0 for m in mags):
        raise InputError(f"expected the model card's input_spec.magnifications as positive numbers, found "
                         f"{str(mags)[:40]}", cfg.model)
    good, skipped = [], {}
    for s in slides:
        try:
            with Slide(s, mpp=cfg.mpp) as slide:
                for m in mags:
                    slide.select_level(m)
                slide.thumbnail(cfg.tissue.mpp)
        except InputError as e:
            if not cfg.skip_invalid:
                raise
            skipped[str(s)] = e.message
            continue
        good.append(s)
    if not good:
        raise InputError(f"expected at least one valid slide, found none ({len(skipped)} skipped: "
                         f"{next(iter(skipped.values()))})", cfg.slides)
    return good, skipped


def _run_slides(cfg: HeatmapConfig, tasks: list[dict], state: Path) -> dict[str, dict]:
    """Every slide's :func:`heatmap_task` in this process or on a Dask cluster."""
    todo = sum(not marker_path(state, _key(t)).exists() for t in tasks)
    workers = cfg.workers or max(1, min(todo, os.cpu_count() or 1))
    # One slide gains nothing from a cluster but would pay its start-up.
    scheduler = "inline" if (todo <= 1 and cfg.scheduler in (None, "local")) else cfg.scheduler
    if scheduler == "inline":
        threads = cfg.threads or threads_per_worker(scheduler, workers)
        tasks = [{**t, "config": {**t["config"], "threads": threads}} for t in tasks]
        return run_shards(heatmap_task, tasks, key=_key, state_dir=state, scheduler="inline", desc="slides")
    with open_cluster(scheduler, workers, cfg.threads) as (client, tf_threads):
        warm = warm_up(client, tf_threads, warm_worker, tasks[0]["config"]["model"], cfg.batch_size, cfg.tta,
                       cfg.xla, todo=todo)
        tasks = [{**t, "worker_threads": tf_threads} for t in tasks]
        results = run_shards(heatmap_task, tasks, key=_key, state_dir=state, client=client, desc="slides")
        del warm  # held until the slides are done: a released future is cancelled
    return results


def _write_contours(levels, tasks: list[dict], out: Path) -> None:
    """``<slide>.contours.geojson`` of every finished heatmap (a resumed run's slides too)."""
    from .contours import write_contours

    for task in tasks:
        name = _key(task)
        tif = out / f"{name}.heatmap.tif"
        heat, meta = read_heatmap(tif if tif.exists() else out / f"{name}.heatmap.zarr")
        write_contours(out / f"{name}.contours.geojson", heat, levels, float(meta["stride"]))


def run_heatmaps(config: HeatmapConfig, *, overwrite: bool = False) -> dict[str, dict]:
    """Heatmaps of every slide in ``config.slides``; returns per-slide info.

    With ``scheduler="local"`` a Dask cluster is started for the run; with
    ``tcp://host:port`` a running one is used, and its workers keep their
    loaded model for the next run (see :mod:`.cluster`). Either way every
    worker starts loading the model as soon as the cluster is up. A re-run
    skips the slides finished before; ``overwrite`` recomputes them all.
    Contours (``contours``) are traced here from the written heatmaps.
    """
    cfg = config.validate()
    slides = list_slides(cfg.slides)
    if cfg.model is None or not Path(cfg.model).is_file():
        # omitted or a shipped name: the registry's file, said in one line
        cfg = dataclasses.replace(cfg, model=resolve_patch_model(cfg.model, slides)).validate()
    card = read_card(cfg.model, expect=APP, task=TASK)  # no TensorFlow in this process
    if Path(cfg.model).suffix == ".tflite":
        from deepsci.core.litert import LiteRTModel

        # A damaged export is one line here, not a traceback in every worker (which
        # load it again by path: interpreters are not picklable).
        LiteRTModel.load(cfg.model, expect=APP, task=TASK, threads=1)
    slides, skipped = _check_slides(slides, card, cfg)
    with RunDir(cfg.out, command="pathology heatmap", config=cfg, inputs=[cfg.model, cfg.slides],
                overwrite=overwrite) as run:
        if overwrite:  # an unfinished run's markers too
            shutil.rmtree(run.state_dir, ignore_errors=True)
        cfg_dict = {**config_to_dict(cfg), "model": str(Path(cfg.model).resolve()), "out": str(run.path)}
        tasks = [{"slide": str(Path(s).resolve()), "config": cfg_dict} for s in slides]
        results = _run_slides(cfg, tasks, run.state_dir)
        results, skipped = _drop_skipped(results, skipped, run.state_dir, cfg.slides)
        if cfg.contours:
            _write_contours(cfg.contours, [t for t in tasks if _key(t) in results], run.path)
        run.record(slides={k: {kk: v[kk] for kk in ("tiles", "seconds", "score")} for k, v in results.items()},
                   skipped=skipped)
    return results


def _drop_skipped(results: dict[str, dict], skipped: dict[str, str], state: Path,
                  slides: str) -> tuple[dict[str, dict], dict[str, str]]:
    """The finished slides, and every skipped one (checked up front or failed in a worker).

    A skipped slide's marker is removed, so a rerun tries it again (it may have been
    replaced by a good copy); nothing valid left is an error.
    """
    done = {}
    for key, result in results.items():
        if "skipped" in result:
            skipped[result["slide"]] = result["skipped"]
            marker_path(state, key).unlink(missing_ok=True)
        else:
            done[key] = result
    if not done:
        raise InputError(f"expected at least one valid slide, found none ({len(skipped)} skipped: "
                         f"{next(iter(skipped.values()))})", slides)
    return done, skipped


def _key(task: dict) -> str:
    return Path(task["slide"]).stem
