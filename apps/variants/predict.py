"""Stage 2, ``call-variants``: batched inference, genotype probabilities per example.

Output: ``calls.tsv.gz`` — one line per example with the candidate's alleles, which alts the
image showed, its depth/allele depths and ``P(hom-ref), P(het), P(hom-alt)`` — plus
``calls_info.json`` carrying the sample name and contigs from make-examples.
"""
from __future__ import annotations

import gzip
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsci.core.errors import ConfigError
from deepsci.core.io import atomic_path, read_json, save_config, write_json, write_run_info
from deepsci.core.progress import progress

from .make_examples import example_files
from .model import HEAD, INPUT_SHAPE, load_genotype_model

__all__ = ["CallConfig", "call_variants", "load_classifier", "model_paths", "read_calls",
           "COLUMNS"]

COLUMNS = ("contig", "pos", "ref", "alts", "alt_idx", "dp", "ad", "p_homref", "p_het",
           "p_homalt")


@dataclass
class CallConfig:
    """Options of ``deepsci variants call-variants``."""

    examples: str = ""
    model: str = ""
    out: str = "calls.tsv.gz"
    batch_size: int = 64

    def validate(self) -> None:
        if not self.examples or not self.model:
            raise ConfigError("expected --examples and --model, found none")
        if self.batch_size < 1:
            raise ConfigError(f"expected --batch-size >= 1, found {self.batch_size}")


def _dataset(files, batch_size: int):
    import tensorflow as tf

    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "variant/contig": tf.io.FixedLenFeature([], tf.string),
        "variant/pos": tf.io.FixedLenFeature([], tf.int64),
        "variant/ref": tf.io.FixedLenFeature([], tf.string),
        "variant/alts": tf.io.VarLenFeature(tf.string),
        "variant/alt_idx": tf.io.VarLenFeature(tf.int64),
        "variant/dp": tf.io.FixedLenFeature([], tf.int64),
        "variant/ad": tf.io.VarLenFeature(tf.int64),
    }

    def parse(s):
        f = tf.io.parse_single_example(s, spec)
        img = tf.cast(tf.reshape(tf.io.decode_raw(f["image/encoded"], tf.uint8), INPUT_SHAPE),
                      tf.float32)
        meta = {
            "contig": f["variant/contig"], "pos": f["variant/pos"], "ref": f["variant/ref"],
            "alts": tf.strings.reduce_join(tf.sparse.to_dense(f["variant/alts"]), separator=","),
            "alt_idx": tf.strings.reduce_join(
                tf.strings.as_string(tf.sparse.to_dense(f["variant/alt_idx"])), separator=","),
            "dp": f["variant/dp"],
            "ad": tf.strings.reduce_join(
                tf.strings.as_string(tf.sparse.to_dense(f["variant/ad"])), separator=","),
        }
        return img, meta

    ds = tf.data.TFRecordDataset([str(f) for f in files], compression_type="GZIP")
    return ds.map(parse, num_parallel_calls=2, deterministic=True).batch(batch_size).prefetch(2)


def model_paths(spec: str | Path) -> list[str]:
    """The model(s) of ``--model``: one path, or several comma-separated (an ensemble)."""
    paths = [p for p in str(spec).split(",") if p]
    if not paths:
        raise ConfigError("expected --model, found none")
    return paths


def load_classifier(model_path: str | Path, batch_size: int) -> tuple:
    """Load a model (or an ensemble) and trace its inference graph for one batch shape.

    Tracing is done here, on a zero batch, so that :func:`run_pipeline` can do it while
    make-examples is still running in another process.

    Parameters
    ----------
    model_path : str or Path
        A ``model.keras`` (or its folder), or several comma-separated: their genotype
        probabilities are averaged (a deep ensemble; models trained with different seeds
        disagree mostly where each is unsure, and the mean is better calibrated).
    batch_size : int

    Returns
    -------
    models : list of keras.Model
    sidecar : dict
        The first model's sidecar.
    infer : callable
        ``(batch_size, 100, 221, 7) float32 -> (batch_size, 3)`` genotype probabilities.
    """
    import tensorflow as tf

    loaded = [load_genotype_model(p) for p in model_paths(model_path)]
    models = [m for m, _ in loaded]

    def probs(x):
        return tf.add_n([tf.nn.softmax(m(x, training=False)[HEAD], axis=-1)
                         for m in models]) / len(models)

    infer = tf.function(probs, reduce_retracing=True)
    infer(tf.zeros((batch_size, *INPUT_SHAPE), tf.float32))
    return models, loaded[0][1], infer


def call_variants(config: CallConfig, *, loaded: tuple | None = None) -> dict:
    """Classify every example; returns the number of examples and examples per second.

    ``loaded`` is the result of :func:`load_classifier` for ``config.model`` and
    ``config.batch_size``, when the caller has already loaded it.
    """
    import tensorflow as tf

    config.validate()
    files = example_files(config.examples)
    models, sidecar, infer = loaded or load_classifier(config.model, config.batch_size)
    out = Path(config.out)
    n, t0 = 0, time.time()
    with atomic_path(out) as tmp:
        with gzip.open(tmp, "wt", compresslevel=3) as f:
            f.write("#" + "\t".join(COLUMNS) + "\n")
            for img, meta in progress(_dataset(files, config.batch_size), desc="call-variants",
                                      unit="batch"):
                k = int(img.shape[0])
                if k < config.batch_size:
                    # Pad the last batch: one traced graph for all batches, no retrace.
                    img = tf.pad(img, [[0, config.batch_size - k], [0, 0], [0, 0], [0, 0]])
                probs = infer(img).numpy().astype(np.float64)[:k]
                cols = {k: v.numpy() for k, v in meta.items()}
                for i in range(probs.shape[0]):
                    f.write("\t".join([
                        cols["contig"][i].decode(), str(int(cols["pos"][i])),
                        cols["ref"][i].decode(), cols["alts"][i].decode(),
                        cols["alt_idx"][i].decode(), str(int(cols["dp"][i])),
                        cols["ad"][i].decode(),
                        *(f"{p:.6g}" for p in probs[i])]) + "\n")
                n += probs.shape[0]
    info = {}
    src = Path(config.examples)
    if src.is_dir() and (src / "examples_info.json").exists():
        info = read_json(src / "examples_info.json")
    info.update({"model": str(config.model), "models": len(models),
                 "model_variant": sidecar.get("variant"), "examples": n})
    write_json(out.with_name(out.name.split(".")[0] + "_info.json"), info)
    save_config(config, out.with_name(out.name.split(".")[0] + "_config.json"))
    write_run_info(out.parent, command="variants call-variants", config=config)
    wall = time.time() - t0
    return {"examples": n, "seconds": wall, "examples_per_second": n / max(wall, 1e-9)}


def read_calls(path) -> list[dict]:
    """Read ``calls.tsv.gz`` back into dicts (probabilities as a float array of 3)."""
    from deepsci.core.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError("expected calls.tsv.gz from call-variants, found nothing", path)
    rows = []
    with gzip.open(path, "rt") as f:
        header = f.readline()
        if not header.startswith("#contig"):
            raise InputError(f"expected a call-variants table, found header {header[:40]!r}",
                             path)
        for line in f:
            p = line.rstrip("\n").split("\t")
            rows.append({"contig": p[0], "pos": int(p[1]), "ref": p[2], "alts": p[3].split(","),
                         "alt_idx": tuple(int(x) for x in p[4].split(",")), "dp": int(p[5]),
                         "ad": [int(x) for x in p[6].split(",")],
                         "probs": np.array([float(x) for x in p[7:10]])})
    return rows
