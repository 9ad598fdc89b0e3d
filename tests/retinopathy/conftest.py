"""Tiny retinopathy data and models shared by the test files that need no trained model.

:func:`tiny` builds them once per test session: 20 synthetic photographs
(10 patients, 256 px -- gradability is judged at 256 px, so smaller
photographs are flagged too blurred) and a 2-member *untrained* ensemble at the
smallest input the model takes (32 px, width 4) with fixed operating points
(high sensitivity 0.3, high specificity 0.7). Tests must not write into it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

SIZE = 32
HEADS = {"grade": 5, "referable": 1, "dme": 1}
GRADES = [f"p_grade{k}" for k in range(5)]
THRESHOLDS = {"high_sensitivity": 0.3, "high_specificity": 0.7}


@dataclass
class Tiny:
    """What :func:`tiny` made.

    Attributes
    ----------
    root : Path
        Its folder; ``root / "cache"`` is the preprocessed-image cache tests may share.
    labels : Path
        ``data/trainLabels.csv`` (EyePACS layout).
    photos : list of Path
        The photographs, sorted.
    teacher : Path
        The ensemble folder (``ensemble.json``, ``member_<i>/model.keras``).
    members : list of Path
    models : list of keras.Model
        The members as built (same weights as the saved files).
    thresholds : dict of str to float
        The operating points of ``teacher/ensemble.json``.
    """

    root: Path
    labels: Path
    photos: list[Path]
    teacher: Path
    members: list[Path] = field(default_factory=list)
    models: list = field(default_factory=list)
    thresholds: dict = field(default_factory=lambda: dict(THRESHOLDS))

    @property
    def cache(self) -> Path:
        return self.root / "cache"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Tiny:
    """Synthetic photographs and an untrained 2-member ensemble (see the module docstring)."""
    import keras

    from deepsci.apps.cli import main
    from deepsci.apps.retinopathy.model import build_model, model_card
    from deepsci.apps.retinopathy.preprocess import PreprocessConfig
    from deepsci.core.ensemble import write_ensemble
    from deepsci.core.models.serialization import save_model

    root = tmp_path_factory.mktemp("retino-tiny")
    assert main(["retinopathy", "synth", str(root / "data"), "--patients", "10", "--size", "256",
                 "--seed", "5"]) == 0
    teacher = root / "teacher"
    card = model_card(size=SIZE, heads=HEADS, variant="small", width=4,
                      preprocessing=asdict(PreprocessConfig(size=SIZE)))
    out = Tiny(root=root, labels=root / "data" / "trainLabels.csv",
               photos=sorted((root / "data" / "train").glob("*.jpeg")), teacher=teacher)
    for i in range(2):
        keras.utils.set_random_seed(i)
        out.models.append(build_model(SIZE, HEADS, width=4))
        out.members.append(teacher / f"member_{i}" / "model.keras")
        save_model(out.models[-1], out.members[-1], card=card)
    points = {k: {"name": k, "threshold": t, "sensitivity": 1.0, "specificity": 0.5}
              for k, t in THRESHOLDS.items()}
    write_ensemble(teacher, out.members, info={"heads": HEADS, "operating_points": points})
    return out
