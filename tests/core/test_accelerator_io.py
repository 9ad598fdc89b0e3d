import dataclasses
import os

import keras
import pytest
import tensorflow as tf

from deepsci.core import accelerator
from deepsci.core.errors import ConfigError, InputError, expected
from deepsci.core.io import (
    atomic_dir,
    atomic_path,
    read_json,
)
from deepsci.core.training import TrainConfig


def test_strategies_resolve():
    assert accelerator.resolve_strategy("cpu").num_replicas_in_sync == 1
    mirrored = accelerator.resolve_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2  # conftest split the CPU in two
    # auto on a GPU-less machine with a split CPU mirrors over the logical CPUs,
    # and is the same object as an explicit "mirrored" (one strategy per device set).
    assert accelerator.resolve_strategy("auto") is mirrored


@pytest.mark.parametrize("spec,match", [("gpu:3", "GPU 3"), ("warp", "expected a strategy"),
                                        ("tpu:nowhere", "reachable TPU")])
def test_unavailable_strategies_are_config_errors(spec, match, monkeypatch):
    # No network in tests: a TPU that cannot be reached resolves to None.
    monkeypatch.setattr(accelerator, "_tpu_resolver", lambda name: None)
    with pytest.raises(ConfigError, match=match):
        accelerator.resolve_strategy(spec)


def test_multi_worker_needs_a_cluster(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    accelerator._CACHE.pop("multi-worker", None)
    with pytest.raises(ConfigError, match="TF_CONFIG or a Slurm job"):
        accelerator.resolve_strategy("multi-worker")


def test_precision_policy_per_device():
    try:
        assert accelerator.set_precision("mixed", accelerator.resolve_strategy("cpu")) == "mixed_bfloat16"
        assert keras.mixed_precision.dtype_policy().compute_dtype == "bfloat16"
        with pytest.raises(ConfigError):
            accelerator.set_precision("float8")
    finally:
        accelerator.set_precision("float32")


def test_setup_sets_the_policy_and_becomes_current():
    config = accelerator.AcceleratorConfig(strategy="cpu", precision="mixed", xla=True)
    try:
        assert accelerator.setup(config) is accelerator.resolve_strategy("cpu")
        assert keras.mixed_precision.dtype_policy().name == "mixed_bfloat16"
        assert accelerator.current() == config and accelerator.current().jit_compile
        accelerator.current().xla = False  # a copy: the current config is not shared
        assert accelerator.current().xla
    finally:
        accelerator.setup(accelerator.AcceleratorConfig())
    assert accelerator.current() == accelerator.AcceleratorConfig()
    assert keras.mixed_precision.dtype_policy().name == "float32"
    with pytest.raises(ConfigError, match="precision among"):
        accelerator.setup(accelerator.AcceleratorConfig(precision="half"))
    assert accelerator.current().precision == "float32"  # a refused config changes nothing


def test_config_fields_name_their_cli_options():
    fields = dataclasses.fields(accelerator.AcceleratorConfig)
    assert {f.name: f.metadata.get("cli") for f in fields} == {
        "strategy": "strategy", "precision": "precision", "xla": "xla", "logical_cpus": None}
    assert all(f.metadata["help"].strip() for f in fields)
    train_fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert train_fields["learning_rate"].metadata["cli"] == "lr"
    assert all(f.metadata["help"].strip() for f in train_fields.values())


def test_split_cpu_after_start_must_agree():
    accelerator.split_cpu(2)  # same as conftest: fine
    with pytest.raises(ConfigError, match="already initialised"):
        accelerator.split_cpu(3)


def test_describe_devices_names_the_auto_strategy():
    info = accelerator.describe_devices()
    assert info["auto"]["strategy"] == "MirroredStrategy" and info["auto"]["replicas"] == 2
    assert any(d["type"] == "CPU" for d in info["physical"])
    assert info["tensorflow"] == tf.__version__


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.vcf.gz"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.name.endswith(".vcf.gz") and tmp.parent == tmp_path
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.vcf.gz"]


def test_atomic_dir_replaces_whole(tmp_path):
    target = tmp_path / "seg.zarr"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "b").write_text("2")
            raise ValueError
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    with atomic_dir(target) as tmp:
        (tmp / "c").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.zarr"]


@dataclasses.dataclass
class _Outer:
    name: str = "x"
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    shape: tuple = (1, 2)


def test_config_round_trip_and_run_record(tmp_path):
    from deepsci.core.io import config_from_dict
    from deepsci.core.runs import RunDir, config_from_run

    cfg = _Outer(name="run", train=TrainConfig(epochs=3), shape=(4, 5))
    with RunDir(tmp_path / "r", command="test run", config=cfg):
        pass
    assert config_from_run(tmp_path / "r" / "run.json", _Outer) == cfg
    with pytest.raises(InputError, match="unknown"):
        config_from_dict(_Outer, {"nope": 1}, tmp_path / "bad.json")
    info = read_json(tmp_path / "r" / "run.json")
    assert info["command"] == "test run" and info["config"]["train"]["epochs"] == 3
    assert info["machine"]["cpu_count"] == os.cpu_count()


def test_error_text():
    e = expected("an indexed BAM", "no .bai", "reads.bam")
    assert isinstance(e, InputError) and str(e) == "expected an indexed BAM, found no .bai (reads.bam)"
    with pytest.raises(InputError, match="syntax error"):
        bad = os.path.join(os.path.dirname(__file__), "__nope__.json")
        try:
            open(bad, "w").write("{")
            read_json(bad)
        finally:
            os.unlink(bad)


def test_save_figure_is_atomic_and_closes(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepsci.core.io import save_figure

    fig, ax = plt.subplots(figsize=(2, 1), dpi=50)
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "a.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
    from PIL import Image

    assert Image.open(path).size == (100, 50)  # the figure's own dpi
    fig2, _ = plt.subplots(figsize=(2, 1))
    assert Image.open(save_figure(fig2, tmp_path / "b.png", dpi=20)).size == (40, 20)
