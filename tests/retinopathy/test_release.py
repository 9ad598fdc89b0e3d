"""The shipped model: a tiny build, its card, verbs without --model, names, the shipped demo.

One tiny build (``release.build(tiny=True)``, seconds) into a temporary models
folder is shared by the module; ``DEEPSCI_MODELS`` points the registry at it.
Every number checked is recomputed independently: the card's test metrics from
the test set regenerated with the card's seed, the demo's rows from the
predictions it wrote (scikit-learn's AUC and kappa).
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from deepsci.apps.cli import main
from deepsci.apps.retinopathy import release
from deepsci.apps.retinopathy.baseline import (
    BASELINE_FILE,
    FEATURES,
    baseline_probabilities,
    fit_baseline,
    load_baseline,
)
from deepsci.core.errors import InputError
from deepsci.core.models.card import ModelCard
from deepsci.core.models.registry import shipped

NAME = release.NAME


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    (root / NAME).mkdir()
    (root / NAME / "stale.txt").write_text("from an older build")
    paths = release.build(root, tiny=True)
    assert paths == [root / NAME / "member_0" / "model.keras"]
    # Another app's model beside it: its name must be refused by retinopathy verbs.
    other = root / "pathology-other"
    other.mkdir()
    card = ModelCard(app="pathology", task="patch-tumour", name="pathology-other")
    (other / "model.card.json").write_text(json.dumps(card.to_dict()))
    (other / "model.keras").write_bytes(b"not loaded: the card is refused first")
    return root


@pytest.fixture
def registry(root, monkeypatch):
    monkeypatch.setenv("DEEPSCI_MODELS", str(root))
    return root


@pytest.fixture(scope="module")
def photos(root, tmp_path_factory):
    """Two synthetic photographs (``synth``, marked) and the real skimage retina."""
    from skimage import data

    from deepsci.apps.retinopathy.synth import SynthConfig, run_synth

    folder = tmp_path_factory.mktemp("photos")
    # Seed 99 with two patients paints both referable and non-referable eyes (evaluate needs both).
    run_synth(SynthConfig(out=folder / "syn", n_patients=2, size=192, seed=99))
    real = folder / "real_retina.jpeg"
    Image.fromarray(data.retina()).resize((384, 384)).save(real, quality=92)
    return sorted((folder / "syn" / "train").glob("*.jpeg")), real


def test_build_replaces_the_folder_and_writes_a_complete_card(root):
    folder = root / NAME
    assert not (folder / "stale.txt").exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".")]
    assert sorted(p.name for p in folder.iterdir()) == [BASELINE_FILE, "ensemble.json", "member_0"]
    m = shipped(NAME, root=root)
    c = m.card
    assert (c.name, c.app, c.task, m.default, m.synthetic_only) == (
        NAME, "retinopathy", "dr-grade", True, True)
    assert c.data["real_input"] == "photographs" and "CC0" in c.data["licence"]
    assert c.data["seeds"]["train"] == release.TRAIN_SEED and c.data["seeds"]["test"] == release.TEST_SEED
    assert c.data["synth"]["train"]["seed"] == release.TRAIN_SEED
    assert c.data["synth"]["test"]["n_patients"] == release.TINY.test_patients
    assert c.training["command"] == "deepsci models build retinopathy --tiny"
    assert c.training["recipe"]["epochs"] == release.TINY.epochs
    shipped_info = c.extra["shipped"]
    assert shipped_info["build_seconds"] > 0 and "2 CPU cores" in shipped_info["build_machine"]
    assert shipped_info["size_bytes"] <= m.size_bytes
    for split in ("validation", "test"):
        assert c.metrics[split]["n"] > 0 and "high_sensitivity" in c.metrics[split]
    assert c.extra["baseline"]["metrics"]["test"]["n"] == c.metrics["test"]["n"]
    assert c.commit and c.limitations.startswith("A demo model")


def test_card_test_metrics_are_those_of_the_saved_model(root, tmp_path):
    """Regenerate the build's test set from the card's seed; the saved model and baseline
    score exactly what the card says."""
    from deepsci.apps.retinopathy.evaluate import EvaluateConfig, run_evaluate
    from deepsci.apps.retinopathy.io import DatasetSpec
    from deepsci.apps.retinopathy.synth import SynthConfig, run_synth

    c = shipped(NAME, root=root).card
    s = c.data["synth"]["test"]
    run_synth(SynthConfig(out=tmp_path / "test", n_patients=s["n_patients"], size=s["size"],
                          seed=s["seed"]))
    labels = tmp_path / "test" / "trainLabels.csv"
    m = run_evaluate(EvaluateConfig(model=root / NAME, out=tmp_path / "eval",
                                    data=DatasetSpec(labels=labels), n_boot=50,
                                    cache_dir=tmp_path / "cache"))
    card = c.metrics["test"]
    assert m["n"] == card["n"] and m["n_referable"] == card["n_referable"]
    assert m["auc"] == pytest.approx(card["auc"], abs=1e-6)
    assert m["kappa"] == pytest.approx(card["kappa"], abs=1e-6)
    assert m["high_sensitivity"]["sensitivity"] == pytest.approx(
        card["high_sensitivity"]["sensitivity"])
    b, _ = release.baseline_report(load_baseline(root / NAME / BASELINE_FILE),
                                   release.baseline_table(labels, tmp_path / "cache"), 50)
    assert b["auc"] == pytest.approx(c.extra["baseline"]["metrics"]["test"]["auc"], abs=1e-9)
    assert b["kappa"] == pytest.approx(c.extra["baseline"]["metrics"]["test"]["kappa"], abs=1e-9)


def _run(capsys, argv):
    rc = main(argv)
    return rc, capsys.readouterr().err.strip().splitlines()


def test_predict_without_model_uses_the_default_and_warns_only_on_real_photographs(
        registry, photos, tmp_path, capsys):
    syn, real = photos
    before = sorted(p.name for p in (registry / NAME).iterdir())
    rc, err = _run(capsys, ["retinopathy", "predict", *map(str, syn), "--out", str(tmp_path / "a")])
    assert rc == 0
    assert err == [f"model: {NAME} (shipped default; `deepsci models info {NAME}`)"]
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["config"]["model"] == str(registry / NAME)
    # The shipped model's folder stays as installed: its photographs are cached elsewhere.
    assert sorted(p.name for p in (registry / NAME).iterdir()) == before
    rc, err = _run(capsys, ["retinopathy", "predict", str(real), "--out", str(tmp_path / "b")])
    assert rc == 0 and err[0].startswith(f"model: {NAME} (shipped default")
    assert len(err) == 2 and err[1].startswith(f"warning: {NAME} is a demo model")
    assert "1 of 1 photographs are not deepsci synthetic, e.g. real_retina.jpeg" in err[1]
    # A shipped name works as --model and gives the same predictions.
    rc, err = _run(capsys, ["retinopathy", "predict", "--model", NAME, *map(str, syn),
                            "--out", str(tmp_path / "c")])
    assert rc == 0 and err == [f"model: {NAME} (shipped)"]
    a = pd.read_csv(tmp_path / "a" / "predictions.csv")
    assert a.equals(pd.read_csv(tmp_path / "c" / "predictions.csv"))
    # predictions.csv writes 9 significant digits.
    assert a["threshold"].iloc[0] == pytest.approx(json.loads(
        (registry / NAME / "ensemble.json").read_text())["operating_points"]["high_sensitivity"][
        "threshold"], abs=5e-6)


def test_evaluate_and_explain_without_model(registry, photos, tmp_path, capsys):
    syn, _ = photos
    labels = syn[0].parents[1] / "trainLabels.csv"
    rc, err = _run(capsys, ["retinopathy", "evaluate", "--labels", str(labels), "--out",
                            str(tmp_path / "e"), "--n-boot", "20"])
    assert rc == 0 and err == [f"model: {NAME} (shipped default; `deepsci models info {NAME}`)"]
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m["split_images"] == {"external": m["n"]}
    rc, err = _run(capsys, ["retinopathy", "explain", str(syn[0]), "--out", str(tmp_path / "x"),
                            "--steps", "4"])
    assert rc == 0 and err[0].startswith(f"model: {NAME} (shipped default")
    assert len(pd.read_csv(tmp_path / "x" / "saliency.csv")) == 1


def test_another_apps_model_and_unknown_names_are_refused(registry, photos, tmp_path, capsys):
    syn, _ = photos
    rc, err = _run(capsys, ["retinopathy", "predict", "--model", "pathology-other", str(syn[0]),
                            "--out", str(tmp_path / "o")])
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("error: expected a retinopathy model, found a pathology model")
    rc, err = _run(capsys, ["retinopathy", "predict", "--model", "no-such-model", str(syn[0]),
                            "--out", str(tmp_path / "o")])
    assert rc == 2 and len(err) == 1 and f"(pathology-other, {NAME})" in err[0]
    assert not (tmp_path / "o").exists()


def test_no_shipped_model_is_one_line(tmp_path, photos, monkeypatch, capsys):
    monkeypatch.setenv("DEEPSCI_MODELS", str(tmp_path / "empty"))
    rc, err = _run(capsys, ["retinopathy", "predict", str(photos[0][0]), "--out", str(tmp_path / "o")])
    assert rc == 2 and len(err) == 1 and "no default retinopathy model ships" in err[0]


def test_synthetic_photographs_are_recognised(photos, tmp_path):
    from deepsci.apps.retinopathy.io import is_synthetic

    syn, real = photos
    assert all(is_synthetic(p) for p in syn)
    assert not is_synthetic(real)
    # The same pixels without the marker are not recognised: the marker decides.
    copy = tmp_path / "copy.jpeg"
    # (Pillow keeps a JPEG comment on re-save, so copy the pixels, not the image.)
    Image.fromarray(np.asarray(Image.open(syn[0]))).save(copy, quality=92)
    assert not is_synthetic(copy) and not is_synthetic(tmp_path / "missing.jpeg")


def test_shipped_demo_rows_are_recomputable_from_its_outputs(registry, tmp_path):
    from deepsci.apps.retinopathy.demo import DEMO_SEED, check_unseen, run_demo

    res = run_demo(tmp_path, quick=True)
    # The page a grader opens, linked from the report: six photographs graded.
    assert [(v.viewer, Path(v.path).name) for v in res.viewers] == [("a web browser", "report.html")]
    assert len(pd.read_csv(tmp_path / "predict" / "predictions.csv")) == 6
    rows = {r.metric.split(" (")[0].split(" at the ")[0] + (
        "@" + r.metric.split(" at the ")[1].split(" ")[0] if " at the " in r.metric else ""): r
        for r in res.rows}
    assert len(res.rows) == 6 and all(r.model == NAME for r in res.rows)
    assert all(f"seed {DEMO_SEED}" in r.data for r in res.rows)
    info = json.loads((registry / NAME / "ensemble.json").read_text())
    base = load_baseline(registry / NAME / BASELINE_FILE)
    for col, folder, points in (("deepsci", "eval", info["operating_points"]),
                                ("baseline", "baseline", base["operating_points"])):
        p = pd.read_csv(tmp_path / folder / "predictions.csv", dtype={"image": str})
        if "gradable" in p:
            p = p[(p["gradable"] == 1) & (p["grade"] >= 0)]
        y, s = p["referable_true"].to_numpy(), p["p_referable"].to_numpy()
        assert getattr(rows["referable-DR ROC AUC"], col) == pytest.approx(roc_auc_score(y, s), abs=1e-9)
        grades = p[[f"p_grade{k}" for k in range(5)]].to_numpy().argmax(1)
        kappa = cohen_kappa_score(p["grade"], grades, weights="quadratic", labels=range(5))
        assert getattr(rows["quadratic kappa"], col) == pytest.approx(kappa, abs=1e-9)
        for point in ("high-sensitivity", "high-specificity"):
            thr = points[point.replace("-", "_")]["threshold"]
            sens = ((s >= thr) & (y == 1)).sum() / (y == 1).sum()
            spec = ((s < thr) & (y == 0)).sum() / (y == 0).sum()
            assert getattr(rows[f"sensitivity@{point}"], col) == pytest.approx(sens)
            assert getattr(rows[f"specificity@{point}"], col) == pytest.approx(spec)
    card = shipped(NAME, root=registry).card
    with pytest.raises(InputError, match="never saw"):
        check_unseen(card, release.TRAIN_SEED, 5)


def test_baseline_probabilities_are_scikit_learns():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, len(FEATURES)))
    grade = np.clip((x[:, 0] * 1.5 + 2 + rng.normal(0, 0.5, 120)).round(), 0, 4).astype(int)
    ref = (grade >= 2).astype(int)
    params = fit_baseline(x[:80], grade[:80], ref[:80], x[80:], grade[80:], ref[80:])
    z = (x - x[:80].mean(0)) / x[:80].std(0)
    for head, y in (("referable", ref), ("grade", grade)):
        lr = LogisticRegression(C=params[head]["C"], max_iter=5000).fit(z[:80], y[:80])
        p = baseline_probabilities(params, x)[head]
        want = lr.predict_proba(z)[:, 1] if head == "referable" else lr.predict_proba(z)
        if head == "grade":
            np.testing.assert_allclose(p[:, lr.classes_], want, atol=1e-9)
        else:
            np.testing.assert_allclose(p, want, atol=1e-9)
    # The high-sensitivity point reaches its target on the validation rows it was chosen on.
    s = baseline_probabilities(params, x[80:])["referable"]
    thr = params["operating_points"]["high_sensitivity"]["threshold"]
    assert ((s >= thr) & (ref[80:] == 1)).sum() / ref[80:].sum() >= 0.975
