"""Per-process model cache and a reused Dask cluster: only the first run loads the model."""
import os

import numpy as np
import pytest

from deepsci.apps.pathology import heatmap, io, predict, synth
from deepsci.apps.pathology.cluster import warm_up, worker_threads


def _slides(folder, n=2, size=256):
    for seed in range(n):
        rgb, *_ = synth.render_slide(synth.SynthConfig(width=size, height=size, mpp=0.5, n_tumours=0),
                                     seed=seed + 1)
        io.write_pyramid_tiff(folder / f"s{seed}.tif", rgb, mpp=0.5, tile=64, min_size=32)
    return folder


def test_engine_is_cached_until_the_model_file_changes(tmp_path, monkeypatch, tiny_model):
    from deepsci.core.models import serialization

    loads = []
    real = serialization.load_model
    monkeypatch.setattr(serialization, "load_model", lambda p, **kw: loads.append(p) or real(p, **kw))
    path = tiny_model(tmp_path / "m.keras", (20.0,))
    predict.drop_cached_models()
    first, cached = predict.engine(str(path), 8, False, None)
    assert not cached and len(loads) == 1
    again, cached = predict.engine(str(path), 8, False, None)
    assert cached and again is first and len(loads) == 1
    # another batch size or TTA: traced again, the loaded model is reused
    other, cached = predict.engine(str(path), 4, True, None)
    assert not cached and other is not first and len(loads) == 1
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    assert other.predict(x).shape == (4,)
    # the same file rewritten (a retrained model): loaded again, old engines dropped
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    fresh, cached = predict.engine(str(path), 8, False, None)
    assert not cached and fresh is not first and len(loads) == 2
    assert predict.engine(str(path), 8, False, None)[1]
    predict.drop_cached_models()


def test_second_run_on_a_running_cluster_does_not_reload(tmp_path, tiny_model):
    from dask.distributed import Client, LocalCluster

    slides = _slides(tmp_path / "slides")
    path = tiny_model(tmp_path / "m.keras", (20.0,))
    common = {"model": str(path), "slides": str(slides), "stride": 64, "batch_size": 4}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=40) as cluster, Client(cluster) as client:
        addr = cluster.scheduler_address
        # one 1-thread worker on this machine gets all its cores
        assert list(worker_threads(client).values()) == [os.cpu_count() or 1]
        # a worker missing from the run's map (joined later) asks the scheduler itself
        assert client.submit(heatmap._this_worker, {}, pure=False).result() == (os.cpu_count() or 1)
        assert heatmap._this_worker({}) is None  # not in a worker

        def run(out):
            return heatmap.run_heatmaps(heatmap.HeatmapConfig(out=str(tmp_path / out), scheduler=addr,
                                                              **common))

        first = run("a")
        built = {r["model_built_at"] for r in first.values()}
        assert len(built) == 1  # the warm-up (or the first slide) built it, the other slide reused it
        assert {r["tf_threads"] for r in first.values()} == {os.cpu_count() or 1}
        second = run("b")
        assert all(r["model_cached"] for r in second.values())
        assert {r["model_built_at"] for r in second.values()} == built
        assert max(r["startup_seconds"] for r in second.values()) < 0.5
        for name in ("s0", "s1"):
            np.testing.assert_allclose(io.read_heatmap(tmp_path / "b" / f"{name}.heatmap.tif")[0],
                                       io.read_heatmap(tmp_path / "a" / f"{name}.heatmap.tif")[0], atol=0)
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        third = run("c")
        assert {r["model_built_at"] for r in third.values()} != built
        assert len({r["model_built_at"] for r in third.values()}) == 1


def test_warm_up_skipped_when_fewer_slides_than_workers():
    assert warm_up(None, {"tcp://a:1": 1, "tcp://b:1": 1}, print, todo=1) == []


@pytest.mark.parametrize("scheduler", ["udp://x:1", "nonsense"])
def test_bad_scheduler_is_a_config_error(tmp_path, scheduler):
    from deepsci.core.errors import ConfigError

    with pytest.raises(ConfigError, match="scheduler"):
        heatmap.HeatmapConfig(model=str(tmp_path / "m.keras"), slides=str(tmp_path), out=str(tmp_path / "o"),
                              scheduler=scheduler).validate()
