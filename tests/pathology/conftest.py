"""Shared synthetic slides for the pathology tests (small, seeded, made once per session)."""
import numpy as np
import pytest

from deepsci.apps.pathology.synth import SynthConfig, make_slides


@pytest.fixture(scope="session")
def slide_dir(tmp_path_factory):
    """One tumour slide and one normal slide, 1024x1024 px at 0.5 um/px (20x)."""
    out = tmp_path_factory.mktemp("pathology_slides")
    cfg = SynthConfig(width=1024, height=1024, mpp=0.5, tumour_radius_um=(110.0, 140.0),
                      hole_probability=1.0)
    make_slides(out, n_tumour=1, n_normal=1, seed=7, config=cfg)
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def tiny_model():
    """``make(path, mags, patch=32, center=32)``: save an untrained width-4 pathology model with its sidecar."""
    from deepsci.apps.pathology import patches
    from deepsci.apps.pathology.model import build_model
    from deepsci.apps.pathology.train import PathologyTrainConfig
    from deepsci.core.models.serialization import save_model

    def make(path, mags, patch=32, center=32):
        cfg = PathologyTrainConfig(slides=".", out_dir=".", width=4,
                                   patch=patches.PatchConfig(patch_size=patch, magnifications=mags,
                                                             center_size=center))
        save_model(build_model(cfg), path, sidecar={"app": "pathology", "input_spec": {
            "patch_size": patch, "magnifications": list(mags), "center_size": center}})
        return path

    return make
