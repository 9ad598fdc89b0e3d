"""``deepsci connectomics import-ffn``: a google/ffn ``convstack_3d`` checkpoint as a deepsci FFN.

google/ffn (Januszewski et al., Nature Methods 2018) trains its flood-filling
networks with TensorFlow 1 and saves them as TF checkpoints (``PREFIX.index`` +
``PREFIX.data-*``). Its ``convstack_3d`` network is the one deepsci's
:class:`~deepsci.core.models.ffn.FFNConvStack` implements, layer for layer:

* input: the normalised image patch and the object-mask logits, concatenated
  as channels 0 and 1 of a ``(N, Z, Y, X, 2)`` tensor;
* ``conv0_a`` (3x3x3, ReLU), ``conv0_b`` (3x3x3, linear);
* ``depth - 1`` residual modules ``x + conv_b(relu(conv_a(relu(x))))``;
* ReLU, ``conv_lom`` (1x1x1 to one channel), and the result *added* to the
  input logits (the logit update);

every convolution with a bias and ``SAME`` padding. The variables are read with
``tf.train.load_checkpoint`` by their names (``seed_update/conv{i}_{a,b}/weights``
and ``/biases``, ``seed_update/conv_lom/...``); no TF1 graph is built. Depth and
width are read from the variable shapes; FOV, movement step, voxel size and the
image normalisation are not stored in a checkpoint and come from the options
(defaults: the FIB-25 model of the google/ffn repository, ``models/fib25``:
FOV 33^3, deltas 8^3, image ``(x - 128) / 33``).

Before the model is written its output is compared with an evaluation of the
checkpoint's raw variables by ``tf.nn.conv3d`` on random inputs; a model that
differs is never written. The result is a ``.keras`` file with its card, usable
wherever a trained deepsci FFN is (``segment --model``, ``train --init-model``).
"""
from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsci.core.config import check_ranges, option
from deepsci.core.errors import ConfigError, InputError

__all__ = ["ImportFFNConfig", "import_ffn", "find_checkpoint", "read_convstack", "convstack_reference",
           "FIB25_DATA", "FIB25_LICENCE"]

FIB25_DATA = ("FIB-25 validation1 volume (NeuroProof examples, FlyEM, HHMI Janelia; Drosophila medulla FIB-SEM), "
              "as trained by google/ffn (models/fib25/model.ckpt-27465036)")
FIB25_LICENCE = ("model weights: Apache-2.0 (the google/ffn repository's licence); training data: CC BY "
                 "(janelia-flyem/neuroproof_examples)")

# Largest |difference| of logits allowed between the Keras model and the raw-variable evaluation.
# Both are float32 convolutions of the same numbers summed in different orders; a wrong mapping
# (a swapped layer, a transposed kernel) differs by O(1).
_TOLERANCE = 1e-3


@dataclass
class ImportFFNConfig:
    """Options of ``deepsci connectomics import-ffn``.

    Attributes
    ----------
    checkpoint : str
        A TF checkpoint prefix (``.../model.ckpt-27465036``, its ``.index`` file) or a folder holding one.
    out : str
        The ``.keras`` model to write (its ``model.card.json`` beside it).
    fov_size : tuple of int
        Field of view (z, y, x) the network was trained with (google/ffn's ``model_args`` ``fov_size``
        is (x, y, z): reverse it).
    deltas : tuple of int
        FOV movement step (z, y, x) (``model_args`` ``deltas``, reversed).
    voxel_size_nm : tuple of float
        Voxel size (z, y, x) in nm of the data it was trained on.
    image_mean, image_stddev : float
        The image normalisation of its training (google/ffn ``--image_mean``, ``--image_stddev``).
    scope : str
        Variable scope of the network in the checkpoint.
    training_data, licence : str
        What it was trained on and under which licences (for the card).
    """

    checkpoint: str = option(help="google/ffn TF checkpoint prefix (.../model.ckpt-N) or a folder holding one.")
    out: str = option(help="The .keras model to write (its card beside it).")
    fov_size: tuple[int, int, int] = option((33, 33, 33), "FOV (z, y, x) it was trained with.", min=3)
    deltas: tuple[int, int, int] = option((8, 8, 8), "FOV movement step (z, y, x) it was trained with.", min=1)
    voxel_size_nm: tuple[float, float, float] = option((8.0, 8.0, 8.0), "Voxel size (z, y, x) in nm of its "
                                                       "training data.", min=0, min_exclusive=True)
    image_mean: float = option(128.0, "Image mean of its training normalisation.")
    image_stddev: float = option(33.0, "Image standard deviation of its normalisation.", min=0,
                                 min_exclusive=True)
    scope: str = option("seed_update", "Variable scope of the network in the checkpoint.")
    training_data: str = option(FIB25_DATA, "What it was trained on (for the card).")
    licence: str = option(FIB25_LICENCE, "Licence of the weights and their training data (for the card).")

    def validate(self) -> ImportFFNConfig:
        check_ranges(self)
        if not self.checkpoint:
            raise ConfigError("expected CHECKPOINT (a TF checkpoint prefix or a folder holding one), found none")
        if Path(self.out).suffix != ".keras":
            raise ConfigError(f"expected --out ending in .keras, found {self.out!r}")
        for name in ("fov_size", "deltas", "voxel_size_nm"):
            if len(getattr(self, name)) != 3:
                raise ConfigError(f"expected --{name.replace('_', '-')} of 3 values (z, y, x), "
                                  f"found {getattr(self, name)!r}")
        self.ffn_config(depth=1, features=1)  # FOV odd, deltas < FOV / 2
        return self

    def ffn_config(self, *, depth: int, features: int):
        """The :class:`~deepsci.core.models.ffn.FFNConfig` of these options and a network's shape."""
        from deepsci.core.models.ffn import FFNConfig

        try:
            return FFNConfig(fov_size=tuple(self.fov_size), deltas=tuple(self.deltas), depth=depth,
                             features=features)
        except ValueError as e:
            raise ConfigError(f"expected --fov-size of odd sizes and --deltas below half of it, found "
                              f"fov_size {tuple(self.fov_size)}, deltas {tuple(self.deltas)} ({e})") from None


def _step(prefix: Path) -> int:
    m = re.search(r"-(\d+)$", prefix.name)
    return int(m.group(1)) if m else -1


def find_checkpoint(spec: str | Path) -> Path:
    """The checkpoint prefix ``spec`` names: itself, its ``.index`` file, or the newest one in a folder.

    Raises
    ------
    InputError
        Nothing there, a folder without a checkpoint, or a file that is no checkpoint index.
    """
    p = Path(spec)
    if p.is_dir():
        found = sorted((Path(str(i)[:-len(".index")]) for i in p.glob("*.index")), key=lambda q: (_step(q), q.name))
        if not found:
            raise InputError("expected a folder holding a TensorFlow checkpoint (PREFIX.index + PREFIX.data-*), "
                             "found none", p)
        return found[-1]  # the highest global step, as tf.train.latest_checkpoint would pick
    if p.suffix == ".index" and p.is_file():
        return p.with_suffix("")
    if Path(f"{p}.index").is_file():
        return p
    if p.exists():
        raise InputError("expected a TensorFlow checkpoint prefix (PREFIX.index + PREFIX.data-*), found a file "
                         "that is not one", p)
    raise InputError("expected a TensorFlow checkpoint prefix (PREFIX.index + PREFIX.data-*), found nothing", p)


def _reader(prefix: Path):
    import tensorflow as tf

    try:
        return tf.train.load_checkpoint(str(prefix))
    except (tf.errors.OpError, ValueError) as e:
        first = str(getattr(e, "message", e)).strip().splitlines()[0]
        raise InputError(f"expected a readable TensorFlow checkpoint, found one that does not load ({first})",
                         prefix) from None


def _expect(shapes: dict, name: str, shape: tuple, prefix: Path) -> None:
    if name not in shapes:
        raise InputError(f"expected variable {name} (a google/ffn convstack_3d checkpoint), found none", prefix)
    if tuple(shapes[name]) != shape:
        raise InputError(f"expected variable {name} of shape {shape}, found {tuple(shapes[name])}", prefix)


def read_convstack(prefix: str | Path, scope: str = "seed_update") -> dict:
    """The convstack variables of a checkpoint, checked, as float32 arrays.

    Parameters
    ----------
    prefix : path
        Checkpoint prefix (see :func:`find_checkpoint`).
    scope : str
        Variable scope of the network.

    Returns
    -------
    dict
        ``depth``, ``features``, ``global_step`` (or None), and ``layers``: a list of
        ``(name, kernel, bias)`` in evaluation order (``conv0_a``, ``conv0_b``, ``conv1_a`` …
        ``conv_lom``); kernels ``(kz, ky, kx, in, out)``, biases ``(out,)``.

    Raises
    ------
    InputError
        A variable missing or of the wrong shape, a width that changes between layers
        (deepsci's FFN has one), or variables under ``scope`` that are no part of convstack_3d.
    """
    prefix = Path(prefix)
    reader = _reader(prefix)
    shapes = {k: tuple(v) for k, v in reader.get_variable_to_shape_map().items()}
    base = f"{scope}/conv0_a/weights"
    if base not in shapes:
        raise InputError(f"expected variable {base} (a google/ffn convstack_3d checkpoint), found none", prefix)
    kernel0 = shapes[base]
    if len(kernel0) != 5 or kernel0[:4] != (3, 3, 3, 2):
        raise InputError(f"expected {base} of shape (3, 3, 3, 2, features) (image and logits in), "
                         f"found {kernel0}", prefix)
    f = int(kernel0[4])
    depth = 0
    while f"{scope}/conv{depth}_a/weights" in shapes or f"{scope}/conv{depth}_b/weights" in shapes:
        depth += 1
    names = [f"conv{i}_{ab}" for i in range(depth) for ab in "ab"] + ["conv_lom"]
    for n in names:
        k = (1, 1, 1, f, 1) if n == "conv_lom" else (3, 3, 3, 2 if n == "conv0_a" else f, f)
        _expect(shapes, f"{scope}/{n}/weights", k, prefix)
        _expect(shapes, f"{scope}/{n}/biases", (k[-1],), prefix)
    known = {f"{scope}/{n}/{v}" for n in names for v in ("weights", "biases")}
    # Optimizer slots (".../Adam") are training state, not the network.
    other = sorted(k for k in shapes if k.startswith(f"{scope}/") and k not in known and not _slot(k))
    if other:
        raise InputError(f"expected only convstack_3d variables under {scope}/, found others: {other[:3]}"
                         + (" ..." if len(other) > 3 else ""), prefix)
    layers = [(n, np.asarray(reader.get_tensor(f"{scope}/{n}/weights"), np.float32),
               np.asarray(reader.get_tensor(f"{scope}/{n}/biases"), np.float32)) for n in names]
    step = int(reader.get_tensor("global_step")) if "global_step" in shapes else None
    return {"depth": depth, "features": f, "global_step": step, "layers": layers}


def _slot(name: str) -> bool:
    return bool(re.search(r"/(Adam|Adam_1|Momentum|RMSProp|RMSProp_1|Adagrad|ExponentialMovingAverage)$", name))


def convstack_reference(layers: list, x: np.ndarray) -> np.ndarray:
    """convstack_3d evaluated from its raw variables with ``tf.nn.conv3d``.

    Parameters
    ----------
    layers : list of (name, kernel, bias)
        As :func:`read_convstack` returns them.
    x : ndarray of float32, shape (N, Z, Y, X, 2)
        Normalised image and logits.

    Returns
    -------
    ndarray of float32, shape (N, Z, Y, X, 1)
        The updated logits ``x[..., 1:] + update``.
    """
    import tensorflow as tf

    w = {n: (tf.constant(k), tf.constant(b)) for n, k, b in layers}

    def conv(net, name):
        kernel, bias = w[name]
        return tf.nn.conv3d(net, kernel, strides=[1] * 5, padding="SAME") + bias

    x = tf.constant(x, tf.float32)
    net = conv(tf.nn.relu(conv(x, "conv0_a")), "conv0_b")
    depth = (len(layers) - 1) // 2
    for i in range(1, depth):
        net = net + conv(tf.nn.relu(conv(tf.nn.relu(net), f"conv{i}_a")), f"conv{i}_b")
    return (x[..., 1:2] + conv(tf.nn.relu(net), "conv_lom")).numpy()


def _keras_model(layers: list, mc):
    """deepsci's FFN of shape ``mc`` holding the checkpoint's weights."""
    from deepsci.core.models.ffn import ffn_model

    model = ffn_model(mc)
    stack = model.get_layer("convstack")
    targets = {"conv0_a": stack.conv0_a, "conv0_b": stack.conv0_b, "conv_lom": stack.conv_out}
    for i, module in enumerate(stack.residuals, start=1):
        targets[f"conv{i}_a"], targets[f"conv{i}_b"] = module.conv_a, module.conv_b
    if set(targets) != {n for n, _, _ in layers}:
        raise AssertionError(f"layer mapping covers {sorted(targets)}, checkpoint has {[n for n, _, _ in layers]}")
    for name, kernel, bias in layers:
        targets[name].set_weights([kernel, bias])
    return model


def _exactness(model, layers: list, fov, *, n: int = 2, seed: int = 0) -> dict:
    """Largest |logit difference| between ``model`` and :func:`convstack_reference` on random FOVs."""
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((n, *fov, 1))
    logits = rng.uniform(-3.0, 3.0, (n, *fov, 1))  # about logit(0.05) .. logit(0.95), the canvas range
    x = np.concatenate([image, logits], -1).astype(np.float32)
    ours = np.asarray(model(x, training=False))
    ref = convstack_reference(layers, x)
    diff = float(np.max(np.abs(ours - ref)))
    return {"max_abs_diff": diff, "max_abs_logit": float(np.max(np.abs(ref))), "inputs": n, "seed": seed,
            "reference": "tf.nn.conv3d on the checkpoint's raw variables", "tolerance": _TOLERANCE}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _card(cfg: ImportFFNConfig, prefix: Path, files: list[Path], net: dict, mc, check: dict):
    from deepsci.core.io import config_to_dict
    from deepsci.core.models.card import ModelCard

    from .predict import APP, TASK

    return ModelCard(
        app=APP, task=TASK, name=f"google/ffn convstack_3d {prefix.name}",
        description=(f"google/ffn convstack_3d FFN imported from {prefix.name}: FOV {mc.fov_size}, deltas "
                     f"{mc.deltas}, depth {mc.depth}, {mc.features} features."),
        input_spec={"fov_size": list(mc.fov_size), "channels": ["image", "logits"], "axes": "zyx",
                    "dtype": "float32", "voxel_size": [float(v) for v in cfg.voxel_size_nm]},
        outputs={"object_logits": {"unit": "logit", "shape": [*mc.fov_size, 1]}},
        preprocessing={"image_mean": float(cfg.image_mean), "image_stddev": float(cfg.image_stddev),
                       "image": f"(image - {cfg.image_mean:g}) / {cfg.image_stddev:g}",
                       "canvas": "logit(0.05) everywhere, logit(0.95) at the seed (google/ffn init_activation "
                                 "0.95, pad_value 0.05)"},
        training={"command": "connectomics import-ffn", "config": config_to_dict(cfg),
                  "recipe": "trained by google/ffn (its train.py, convstack_3d.ConvStack3DFFNModel), not by "
                            "deepsci; the weights are imported unchanged",
                  "source": {"repository": "https://github.com/google/ffn", "model": "convstack_3d",
                             "checkpoint": str(prefix), "global_step": net["global_step"]}},
        data={"name": cfg.training_data, "licence": cfg.licence, "synthetic": False,
              "files": [{"name": p.name, "sha256": _sha256(p), "bytes": p.stat().st_size} for p in files]},
        metrics={},
        extra={"ffn": mc.to_dict(), "imported_from": "google/ffn", "import_check": check},
        intended_use="Flood-filling segmentation (deepsci connectomics segment --model) of FIB-SEM volumes like "
                     "its training data, normalised as its preprocessing says.",
        limitations=("No held-out metrics on the card (bench/connectomics.py --fib25 scores it on the NeuroProof "
                     "test slab). Trained by google/ffn only on its training volume: not on other tissue, other "
                     "imaging (serial-section TEM, SBEM), other voxel sizes or contrast; deepsci's flood fill is "
                     "not google/ffn's inference code, so segmentations are not google/ffn's."),
    )


def import_ffn(cfg: ImportFFNConfig) -> dict:
    """Read a google/ffn convstack_3d checkpoint and write it as a deepsci FFN ``.keras`` with its card.

    Parameters
    ----------
    cfg : ImportFFNConfig

    Returns
    -------
    dict
        ``model`` (the path written), ``checkpoint`` (the prefix read), ``global_step``, ``depth``,
        ``features``, ``fov_size``, ``deltas``, ``parameters``, ``max_abs_diff`` (Keras model vs the
        raw-variable ``tf.nn.conv3d`` evaluation, on random inputs) and ``seconds``.

    Raises
    ------
    InputError
        No checkpoint there, a file that is not one, or one that is not a convstack_3d.
    ConfigError
        Bad options (FOV, deltas, an output that is not ``.keras``).
    """
    from deepsci.core.models.serialization import save_model
    from deepsci.core.runs import RunDir

    t0 = time.perf_counter()
    cfg.validate()
    prefix = find_checkpoint(cfg.checkpoint)
    net = read_convstack(prefix, cfg.scope)
    mc = cfg.ffn_config(depth=net["depth"], features=net["features"])
    model = _keras_model(net["layers"], mc)
    check = _exactness(model, net["layers"], mc.fov_size)
    if not check["max_abs_diff"] <= _TOLERANCE:
        raise AssertionError(f"imported FFN differs from its checkpoint by {check['max_abs_diff']:.3g} (> "
                             f"{_TOLERANCE}); nothing written")
    files = [Path(f"{prefix}.index"), *sorted(prefix.parent.glob(f"{prefix.name}.data-*"))]
    with RunDir(cfg.out, command="connectomics import-ffn", config=cfg, inputs=files, file_output=True) as run:
        save_model(model, cfg.out, card=_card(cfg, prefix, files, net, mc, check))
        summary = {"model": str(cfg.out), "checkpoint": str(prefix), "global_step": net["global_step"],
                   "depth": mc.depth, "features": mc.features, "fov_size": list(mc.fov_size),
                   "deltas": list(mc.deltas), "parameters": int(model.count_params()),
                   "max_abs_diff": check["max_abs_diff"], "seconds": round(time.perf_counter() - t0, 2)}
        run.record(**summary)
    return summary
