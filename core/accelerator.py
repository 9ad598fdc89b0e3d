"""One way to choose where models run: CPU, GPU(s), TPU or many workers.

Everything returns a :class:`tf.distribute.Strategy`, so the training loop and
inference code are the same on a laptop, a multi-GPU box, a TPU pod slice or a
Slurm allocation.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace

from .errors import ConfigError

__all__ = [
    "AcceleratorConfig",
    "resolve_strategy",
    "setup",
    "split_cpu",
    "set_precision",
    "describe_devices",
    "is_chief",
    "current",
]

_SPECS = "auto, cpu, gpu, gpu:N, mirrored, tpu, tpu:NAME, multi-worker"


_PRECISIONS = ("float32", "mixed", "mixed_float16", "mixed_bfloat16")


@dataclass
class AcceleratorConfig:
    """Where and how models run; every ``train`` and inference command takes one.

    The CLI builds one option per field from ``metadata["cli"]`` (the option
    name) and ``metadata["help"]``; a field without ``"cli"`` is not shown.

    Attributes
    ----------
    strategy : str
        One of ``auto``, ``cpu``, ``gpu``, ``gpu:N``, ``mirrored``, ``tpu``,
        ``tpu:NAME`` or ``multi-worker``; see :func:`resolve_strategy`.
    precision : str
        ``float32``, ``mixed`` (``mixed_float16`` on GPU, ``mixed_bfloat16`` on
        TPU/CPU), ``mixed_float16`` or ``mixed_bfloat16``.
    xla : bool
        Compile train and predict steps with XLA (``--xla``).
    logical_cpus : int, optional
        Split the CPU into this many logical devices (multi-replica tests).
    """

    strategy: str = field(default="auto", metadata={
        "cli": "strategy", "help": f"Where to run: {_SPECS}."})
    precision: str = field(default="float32", metadata={
        "cli": "precision",
        "help": "float32, or mixed (float16 on GPU, bfloat16 on TPU/CPU), mixed_float16, mixed_bfloat16."})
    xla: bool = field(default=False, metadata={
        "cli": "xla", "help": "Compile the train and predict steps with XLA."})
    logical_cpus: int | None = field(default=None, metadata={
        "help": "Split the CPU into N logical devices (tests of multi-replica code)."})

    @property
    def jit_compile(self) -> bool:
        """The same as :attr:`xla` (TensorFlow's name for it)."""
        return self.xla

    def validate(self) -> AcceleratorConfig:
        """Raise :class:`ConfigError` for an unknown precision or CPU split; return self."""
        if self.precision not in _PRECISIONS:
            raise ConfigError(f"expected precision among {', '.join(_PRECISIONS)}; "
                              f"found {self.precision!r}")
        if self.logical_cpus is not None and self.logical_cpus < 1:
            raise ConfigError(f"expected logical_cpus >= 1, found {self.logical_cpus}")
        return self


def _tf():
    import tensorflow as tf

    return tf


def split_cpu(n: int) -> None:
    """Split the first physical CPU into ``n`` logical devices.

    Must run before TensorFlow initialises its devices; later calls with the
    same ``n`` are no-ops, a different ``n`` is an error.
    """
    if n < 1:
        raise ConfigError(f"expected logical_cpus >= 1, found {n}")
    tf = _tf()
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == n:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
        )
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != n:
            raise ConfigError(
                f"expected to split the CPU before TensorFlow starts, found it already "
                f"initialised with {have} logical CPU(s)"
            ) from None


def _tpu_resolver(name: str | None):
    tf = _tf()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=name or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return resolver
    except Exception:  # noqa: BLE001 - any failure to reach a TPU means "no TPU here"
        return None


def _multi_worker():
    tf = _tf()
    if "SLURM_JOB_ID" in os.environ and "TF_CONFIG" not in os.environ:
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver()
    elif "TF_CONFIG" in os.environ:
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError:
            raise ConfigError("expected TF_CONFIG to hold JSON, found unparsable text") from None
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    else:
        raise ConfigError("expected TF_CONFIG or a Slurm job for multi-worker, found neither")
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)


_CACHE: dict[tuple, object] = {}


def resolve_strategy(spec: str = "auto", *, logical_cpus: int | None = None):
    """Return the :class:`tf.distribute.Strategy` that ``spec`` names.

    Parameters
    ----------
    spec : str
        ``auto``: a TPU when one resolves, ``MirroredStrategy`` over all GPUs
        when there are two or more, the GPU when there is one, else the CPU
        (``MirroredStrategy`` over the logical CPUs when the CPU was split).
        ``cpu``, ``gpu``, ``gpu:N``: one device. ``mirrored``: all GPUs, or all
        logical CPUs when there is no GPU. ``tpu`` / ``tpu:NAME``: a TPU cluster.
        ``multi-worker``: ``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``, or
        from Slurm's environment when running under Slurm.
    logical_cpus : int, optional
        Split the CPU first (see :func:`split_cpu`).

    Examples
    --------
    >>> resolve_strategy("cpu").num_replicas_in_sync
    1
    """
    tf = _tf()
    spec = (spec or "auto").strip().lower()
    if spec in ("multi-worker", "multiworker", "multi_worker"):
        # Collective ops must be configured before TensorFlow lists devices.
        if "multi-worker" not in _CACHE:
            _CACHE["multi-worker"] = _multi_worker()
        return _CACHE["multi-worker"]
    if logical_cpus:
        split_cpu(logical_cpus)
    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    # One strategy per spec and device set for the life of the process: a second
    # strategy over the same devices reuses collective keys and can deadlock or
    # mismatch with the first one's ops.
    if spec == "auto" and not (os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR")):
        spec = "mirrored" if len(gpus) >= 2 or (not gpus and len(cpus) >= 2) else (
            "gpu:0" if gpus else "cpu")
    if spec == "gpu":
        spec = "gpu:0"
    cache_key = (spec, tuple(d.name for d in gpus + cpus))
    if cache_key not in _CACHE:
        _CACHE[cache_key] = _build(tf, spec, gpus, cpus)
    return _CACHE[cache_key]


def _build(tf, spec, gpus, cpus):
    if spec == "auto":
        if os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR"):
            resolver = _tpu_resolver(None)
            if resolver is not None:
                return tf.distribute.TPUStrategy(resolver)
        if len(gpus) >= 2:
            return tf.distribute.MirroredStrategy([d.name for d in gpus])
        if len(gpus) == 1:
            return tf.distribute.OneDeviceStrategy(gpus[0].name)
        if len(cpus) >= 2:
            return tf.distribute.MirroredStrategy([d.name for d in cpus])
        return tf.distribute.OneDeviceStrategy(cpus[0].name)
    if spec == "cpu":
        return tf.distribute.OneDeviceStrategy(cpus[0].name)
    if spec == "gpu" or spec.startswith("gpu:"):
        index = int(spec.split(":", 1)[1]) if ":" in spec else 0
        if index >= len(gpus):
            raise ConfigError(f"expected GPU {index} to exist, found {len(gpus)} GPU(s)")
        return tf.distribute.OneDeviceStrategy(gpus[index].name)
    if spec == "mirrored":
        devices = gpus or cpus
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if spec == "tpu" or spec.startswith("tpu:"):
        name = spec.split(":", 1)[1] if ":" in spec else None
        resolver = _tpu_resolver(name)
        if resolver is None:
            raise ConfigError(f"expected a reachable TPU{' ' + name if name else ''}, found none")
        return tf.distribute.TPUStrategy(resolver)
    raise ConfigError(f"expected a strategy among {_SPECS}; found {spec!r}")


def _device_kind(strategy) -> str:
    tf = _tf()
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "TPU"
    devices = getattr(strategy.extended, "worker_devices", ()) or ()
    return "GPU" if any("GPU" in d.upper() for d in devices) else "CPU"


def set_precision(precision: str, strategy=None) -> str:
    """Set the Keras dtype policy; returns the policy name in force.

    ``mixed`` resolves to ``mixed_float16`` on GPU and ``mixed_bfloat16`` on
    TPU or CPU. Variables stay float32 under both; the training loop casts
    outputs to float32 before the loss and loss-scales under float16.
    """
    import keras

    if precision not in _PRECISIONS:
        raise ConfigError(f"expected precision among {', '.join(_PRECISIONS)}; found {precision!r}")
    if precision == "mixed":
        kind = _device_kind(strategy) if strategy is not None else "CPU"
        precision = "mixed_float16" if kind == "GPU" else "mixed_bfloat16"
    keras.mixed_precision.set_dtype_policy(precision)
    return precision


_ACTIVE: list[AcceleratorConfig] = []


def setup(config: AcceleratorConfig):
    """Resolve the strategy, set the precision policy and make ``config`` current.

    Call it before building models. The training loop and the inference
    helpers read :func:`current` for ``xla``, so one call configures a run.

    Returns
    -------
    tf.distribute.Strategy
    """
    config.validate()
    strategy = resolve_strategy(config.strategy, logical_cpus=config.logical_cpus)
    set_precision(config.precision, strategy)
    _ACTIVE[:] = [replace(config)]
    return strategy


def current() -> AcceleratorConfig:
    """The configuration of the last :func:`setup` (defaults before any)."""
    return replace(_ACTIVE[0]) if _ACTIVE else AcceleratorConfig()


def is_chief(strategy=None) -> bool:
    """True on the worker that writes checkpoints, logs and models."""
    tf = _tf()
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "cluster_spec", None):
        return True
    spec = resolver.cluster_spec().as_dict()
    task_type, task_id = resolver.task_type, resolver.task_id
    if not spec or task_type is None:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in spec


def describe_devices() -> dict:
    """What TensorFlow sees and which strategy ``auto`` picks (for ``deepsci devices``)."""
    tf = _tf()
    info = {
        "tensorflow": tf.__version__,
        "built_with_cuda": tf.test.is_built_with_cuda(),
        "physical": [
            {"type": d.device_type, "name": d.name} for d in tf.config.list_physical_devices()
        ],
        "logical": [d.name for d in tf.config.list_logical_devices()],
    }
    strategy = resolve_strategy("auto")
    info["auto"] = {
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "devices": list(getattr(strategy.extended, "worker_devices", ())),
        "mixed_precision": "mixed_float16" if _device_kind(strategy) == "GPU" else "mixed_bfloat16",
    }
    info["tf_config"] = bool(os.environ.get("TF_CONFIG"))
    info["slurm"] = "SLURM_JOB_ID" in os.environ
    return info
