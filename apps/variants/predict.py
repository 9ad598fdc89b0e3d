"""Stage 2, ``call-variants``: batched inference, genotype probabilities per example.

Output: ``calls.tsv.gz`` — ``##sample=``, ``##model=`` and ``##model_version=`` lines (the
model card's name, deepsci version and commit), then one line per example with the
candidate's alleles, which alts the image showed, its depth/allele depths and
``P(hom-ref), P(het), P(hom-alt)``. Inference runs through the core's predictor
(:mod:`deepsci.core.predict`, one traced graph per model) and ensemble
(:mod:`deepsci.core.ensemble`: several models' probabilities averaged).
"""
from __future__ import annotations

import gzip
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepsci.core.ensemble import Ensemble, load_ensemble, model_paths
from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import atomic_path, read_json
from deepsci.core.models.card import read_card
from deepsci.core.models.registry import resolve_model
from deepsci.core.progress import progress
from deepsci.core.runs import RunDir

from .igv import model_identity
from .io import check_new_file
from .make_examples import example_files
from .model import APP, HEAD, INPUT_SHAPE, TASK

__all__ = ["CallConfig", "call_variants", "run_call_variants", "check_models",
           "load_genotype_ensemble",
           "genotype_probabilities", "read_calls", "calls_meta", "COLUMNS"]

COLUMNS = ("contig", "pos", "ref", "alts", "alt_idx", "dp", "ad", "p_homref", "p_het",
           "p_homalt")


@dataclass
class CallConfig:
    """Options of ``deepsci variants call-variants``.

    Attributes
    ----------
    examples : str
        make-examples output folder.
    model : str
        model.keras from ``train``, a folder (model.keras, member_*/ or ensemble.json) or
        several comma-separated: their genotype probabilities are averaged (an ensemble).
        Omitted: the shipped default (``deepsci models list``); a shipped name works too.
    out : str
        Output table (calls.tsv.gz).
    batch_size : int
        Examples per inference batch.
    """

    examples: str = ""
    model: str = ""
    out: str = "calls.tsv.gz"
    batch_size: int = field(default=64)

    def validate(self) -> CallConfig:
        if not self.examples:
            raise ConfigError("expected --examples, found none")
        self.model = resolve_model(self.model, app="variants", task="genotype")
        if self.batch_size < 1:
            raise ConfigError(f"expected --batch-size >= 1, found {self.batch_size}")
        if not self.out.endswith(".tsv.gz"):
            raise ConfigError(f"expected --out ending in .tsv.gz, found {self.out!r}")
        return self


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


def genotype_probabilities(outputs):
    """Softmax of the genotype head, inside the predictor's graph (members average these)."""
    import tensorflow as tf

    return tf.nn.softmax(outputs[HEAD], axis=-1)


def check_models(spec: str | Path) -> list[Path]:
    """The model files ``spec`` names, their cards checked (no TensorFlow): refuses a
    missing model or card and another app's or task's model, before any work starts."""
    paths = model_paths(spec)
    for path in paths:
        read_card(path, expect=APP, task=TASK)
    return paths


def load_genotype_ensemble(spec: str | Path, batch_size: int) -> Ensemble:
    """Load a model or an ensemble and trace its inference graph for one batch shape.

    Tracing is done here, on a zero batch, so that :func:`run_pipeline` can do it while
    make-examples is still running in another process.

    Parameters
    ----------
    spec : str or Path
        A ``model.keras``, a training folder (``model.keras``, ``member_*/`` or
        ``ensemble.json``) or several comma-separated: their genotype probabilities are
        averaged (a deep ensemble; members trained with different seeds disagree mostly
        where each is unsure, and the mean is better calibrated).
    batch_size : int

    Returns
    -------
    Ensemble
        ``ensemble.predict(x)``: ``(N, 100, 221, 7) float32 -> (N, 3)`` probabilities.
    """
    ens = load_ensemble(spec, expect=APP, task=TASK, batch_size=batch_size,
                        postprocess=genotype_probabilities)
    ens.predict(np.zeros((batch_size, *INPUT_SHAPE), np.float32))
    return ens


def call_variants(config: CallConfig, *, ensemble: Ensemble | None = None) -> dict:
    """Classify every example into ``config.out``; returns counts and examples per second.

    ``ensemble`` is the result of :func:`load_genotype_ensemble` for ``config.model`` and
    ``config.batch_size``, when the caller has already loaded it.
    """
    config.validate()
    if ensemble is None:
        check_models(config.model)
    files = example_files(config.examples)
    ens = ensemble or load_genotype_ensemble(config.model, config.batch_size)
    src = Path(config.examples)
    info = read_json(src / "examples_info.json") if (src / "examples_info.json").exists() \
        else {}
    out = Path(config.out)
    n, t0 = 0, time.time()
    with atomic_path(out) as tmp:
        with gzip.open(tmp, "wt", compresslevel=3) as f:
            f.write(f"##sample={info.get('sample', '')}\n")
            # The model's name and version travel to the VCF header (postprocess-variants).
            for key, value in model_identity(ens.cards).items():
                f.write(f"##{key}={value}\n")
            f.write("#" + "\t".join(COLUMNS) + "\n")
            for img, meta in progress(_dataset(files, config.batch_size), desc="call-variants",
                                      unit="batch"):
                probs = ens.predict(img.numpy())
                cols = {k: v.numpy() for k, v in meta.items()}
                for i in range(probs.shape[0]):
                    f.write("\t".join([
                        cols["contig"][i].decode(), str(int(cols["pos"][i])),
                        cols["ref"][i].decode(), cols["alts"][i].decode(),
                        cols["alt_idx"][i].decode(), str(int(cols["dp"][i])),
                        cols["ad"][i].decode(),
                        *(f"{p:.6g}" for p in probs[i])]) + "\n")
                n += probs.shape[0]
    wall = time.time() - t0
    return {"examples": n, "models": len(ens), "seconds": wall,
            "examples_per_second": n / max(wall, 1e-9)}


def run_call_variants(config: CallConfig, *, overwrite: bool = False) -> dict:
    """``deepsci variants call-variants``: :func:`call_variants`, recorded beside the table."""
    config.validate()
    check_new_file(config.out, overwrite=overwrite)
    inputs = [config.examples, *check_models(config.model)]
    with RunDir(config.out, command="variants call-variants", config=config, inputs=inputs,
                overwrite=overwrite, file_output=True) as run:
        res = call_variants(config)
        run.record(**res)
    return res


def calls_meta(path) -> dict:
    """The ``##key=value`` lines at the top of a ``calls.tsv.gz``."""
    meta = {}
    with _open_calls(path) as f:
        for line in f:
            if not line.startswith("##"):
                break
            key, _, value = line[2:].rstrip("\n").partition("=")
            meta[key] = value
    return meta


class _open_calls:
    """``gzip.open(path, "rt")`` whose decoding errors become one :class:`InputError`.

    A file that is not gzip (``BadGzipFile``), a truncated stream (``EOFError``), damaged
    data (``zlib.error``) or bytes that are not UTF-8 are all the user's file, named once.
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError("expected calls.tsv.gz from call-variants, found nothing",
                             self.path)

    def __enter__(self):
        self._f = gzip.open(self.path, "rt", encoding="utf-8")
        return self._f

    def __exit__(self, exc_type, exc, tb):
        import zlib

        self._f.close()
        if exc_type is not None and issubclass(
                exc_type, (OSError, EOFError, zlib.error, UnicodeDecodeError)):
            raise InputError(f"expected a gzip-compressed call-variants table, found "
                             f"unreadable data ({exc_type.__name__})", self.path) from None
        return False


def _calls_row(line: str, i: int, path: Path) -> dict:
    """One line of calls.tsv.gz as a dict; a malformed line is an :class:`InputError`."""
    p = line.rstrip("\n").split("\t")
    try:
        if len(p) != len(COLUMNS):
            raise ValueError(f"{len(p)} columns")
        row = {"contig": p[0], "pos": int(p[1]), "ref": p[2], "alts": p[3].split(","),
               "alt_idx": tuple(int(x) for x in p[4].split(",")), "dp": int(p[5]),
               "ad": [int(x) for x in p[6].split(",")],
               "probs": np.array([float(x) for x in p[7:10]])}
        ok = (row["contig"] and row["pos"] >= 0 and row["ref"] and all(row["alts"])
              and row["dp"] >= 0 and len(row["ad"]) == len(row["alts"]) + 1
              and min(row["ad"]) >= 0 and row["alt_idx"]
              and all(0 <= k < len(row["alts"]) for k in row["alt_idx"])
              and np.all(np.isfinite(row["probs"])) and np.all(row["probs"] >= 0)
              and row["probs"].sum() > 0)
        if not ok:
            raise ValueError("values out of range")
    except ValueError:
        raise InputError(f"expected line {i} of a call-variants table (contig, pos, ref, "
                         f"alts, alt_idx, dp, ad, 3 probabilities), found "
                         f"{line.strip()[:60]!r}", path) from None
    return row


def read_calls(path) -> list[dict]:
    """Read ``calls.tsv.gz`` back into dicts (probabilities as a float array of 3)."""
    path = Path(path)
    rows = []
    with _open_calls(path) as f:
        header, i = f.readline(), 1
        while header.startswith("##"):
            header, i = f.readline(), i + 1
        if not header.startswith("#contig"):
            raise InputError(f"expected a call-variants table, found header {header[:40]!r}",
                             path)
        first = i + 1
        for k, line in enumerate(f, first):
            if line.strip():        # a blank (last) line, from an editor, is no row
                rows.append(_calls_row(line, k, path))
    return rows
