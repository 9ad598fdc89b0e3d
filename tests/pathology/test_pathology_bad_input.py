"""Issue #19: every way a user's file or option reaches the pathology commands fails in one line.

Each case runs ``deepsci pathology ...`` in-process through the shared ``bad_input`` fixture
(tests/conftest.py): exit 2, one ``error:`` line, no traceback, and the watched folder exactly as
it was (no output, no temporary file, no input changed). The inputs are made once per module:
a small synthetic slide pair, a JPEG slide cut short and one with garbage in its tiles (the
reported ``Jpeg8Error``), heatmaps, detection CSVs, annotations and fake models (a card with a
``.keras`` that is no Keras archive, a model of another app, a model without its card). No case
loads TensorFlow: every refusal must come before the model is loaded.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from deepsci.apps.pathology.io import write_detections_csv, write_pyramid_tiff
from deepsci.apps.pathology.synth import SynthConfig, make_slides
from deepsci.core.models.card import ModelCard, card_path

SPEC = {"patch_size": 32, "magnifications": [10.0], "center_size": 32}


def _card(path: Path, app: str = "pathology", task: str = "patch-tumour") -> None:
    card = ModelCard(app=app, task=task, input_spec=dict(SPEC))
    card_path(path).write_text(json.dumps(card.to_dict()))


def _jpeg_slide(path: Path, rng) -> Path:
    """A 512x512 RGB JPEG-tiled pyramid at 0.5 um/px with H&E-like colours."""
    img = np.full((512, 512, 3), 235, np.uint8)
    img[64:448, 64:448] = (200, 120, 170)
    img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
    return write_pyramid_tiff(path, img, mpp=0.5, tile=64, compression="jpeg", min_size=32)


def _garble_tiles(path: Path) -> None:
    """Overwrite the middle of every JPEG tile (headers kept, so the file still opens)."""
    import tifffile

    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        spans = [(o, n) for page in tif.pages
                 for o, n in zip(page.dataoffsets, page.databytecounts, strict=True)]
    for offset, count in spans:
        start, end = offset + count // 3, offset + count - 2
        data[start:end] = (b"\xff\xd9" * count)[: end - start]  # end-of-image markers mid-scan
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Every bad (and good) input file of the cases below, made once."""
    root = tmp_path_factory.mktemp("patho_bad")
    rng = np.random.default_rng(3)
    d = {"root": root}
    slides = root / "slides"
    make_slides(slides, n_tumour=1, n_normal=1, seed=5,
                config=SynthConfig(width=512, height=512, mpp=1.0, tumour_radius_um=(150.0, 160.0)))
    d["slides"] = slides
    d["slide"] = sorted(p for p in slides.glob("*.tif") if not p.stem.endswith("_Mask"))[0]
    # a slide cut short (a failed copy) and one whose tiles do not decode
    bad = root / "badslides"
    bad.mkdir()
    full = _jpeg_slide(root / "jpeg_ok.tif", rng).read_bytes()
    (bad / "truncated.tif").write_bytes(full[: len(full) // 2])
    garbled = _jpeg_slide(bad / "garbled.tif", rng)
    _garble_tiles(garbled)
    d["truncated"], d["garbled"] = bad / "truncated.tif", garbled
    (root / "text.tif").write_text("not a slide\n")
    d["text_slide"] = root / "text.tif"
    (root / "noslides").mkdir()
    (root / "noslides" / "readme.txt").write_text("x")
    # models: a card whose .keras is no archive, another app's, one without its card
    for name, app in (("corrupt", "pathology"), ("retina", "retina")):
        (root / f"{name}.keras").write_bytes(b"PK\x03\x04 not really a zip" + bytes(200))
        _card(root / f"{name}.keras", app=app)
    # a Keras archive in shape (its weights are not real): the slide cases get past the model checks
    import zipfile

    with zipfile.ZipFile(root / "card_only.keras", "w") as z:
        for member in ("metadata.json", "config.json", "model.weights.h5"):
            z.writestr(member, "{}")
    _card(root / "card_only.keras")
    (root / "nocard.keras").write_bytes(b"PK\x05\x06" + bytes(18))
    (root / "broken.tflite").write_bytes(b"garbage tflite" * 8)
    card_path(root / "broken.tflite").write_text(json.dumps(ModelCard(
        app="pathology", task="patch-tumour", input_spec=dict(SPEC),
        extra={"litert": {"batch_size": 4, "outputs": [], "n_inputs": 1}}).to_dict()))
    # heatmaps for detect
    hm = root / "heatmaps"
    hm.mkdir()
    write_pyramid_tiff(hm / "a.heatmap.tif", rng.random((16, 16)).astype(np.float32), mpp=16.0, tile=16,
                       min_size=8, mode="max", description={"stride": 32.0, "mpp": 0.5, "slide_name": "a"})
    (root / "hm_garbage").mkdir()
    (root / "hm_garbage" / "b.heatmap.tif").write_bytes(b"II*\x00garbage" + bytes(40))
    (root / "hm_nostride").mkdir()
    write_pyramid_tiff(root / "hm_nostride" / "c.heatmap.tif", np.zeros((16, 16), np.float32), mpp=16.0,
                       tile=16, min_size=8)
    (root / "hm_zarr").mkdir()
    (root / "hm_zarr" / "d.heatmap.zarr").mkdir()
    (root / "hm_zarr" / "d.heatmap.zarr" / "zarr.json").write_text("{broken")
    # detections and truth for evaluate
    det = root / "det"
    det.mkdir()
    write_detections_csv(det / "tumor_001.csv", [0.9], [100], [100])
    d["det"] = det
    for name, text in (("badline", "0.9,10,10\nnope,1\n"), ("nan", "nan,10,10\n"), ("prob2", "1.5,10,10\n"),
                       ("negative", "0.5,-10,10\n")):
        (root / f"det_{name}").mkdir()
        (root / f"det_{name}" / "tumor_001.csv").write_text(text)
    (root / "det_binary").mkdir()
    (root / "det_binary" / "tumor_001.csv").write_bytes(b"\xff\xfe\x00\x81garbage\x00")
    (root / "det_scores").mkdir()
    write_detections_csv(root / "det_scores" / "tumor_001.csv", [0.9], [100], [100])
    (root / "det_scores" / "slides.csv").write_text("image,score\ntumor_001,high\n")
    truth = {}
    for name, text in (("xml_broken", "<ASAP_Annotations><Annotations>"),
                       ("xml_group", '<ASAP_Annotations><Annotations><Annotation PartOfGroup="weird">'
                                     '<Coordinates><Coordinate Order="0" X="1" Y="1"/><Coordinate Order="1" '
                                     'X="9" Y="1"/><Coordinate Order="2" X="9" Y="9"/></Coordinates>'
                                     '</Annotation></Annotations></ASAP_Annotations>'),
                       ("xml_bomb", '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>')):
        t = root / name
        t.mkdir()
        (t / "tumor_001.xml").write_text(text)
        truth[name] = t
    for name, text in (("geo_broken", "{not json"), ("geo_number", "42"),
                       ("geo_coords", '{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": '
                                      '[[["a", 1], [2, 2], [3, 1]]]}, "properties": {}}')):
        t = root / name
        t.mkdir()
        (t / "tumor_001.geojson").write_text(text)
        truth[name] = t
    d["truth"] = truth
    (root / "reference_bad.csv").write_text("image,class\ntumor_001,Maybe\n")
    (root / "reference_other.csv").write_text("image,class\nother,Tumor\n")
    (root / "reference_binary.csv").write_bytes(b"\x81\xfe\xff" * 20)
    (root / "a_file").write_text("I am a file")
    (root / "user.png").write_bytes(b"my own picture")
    (root / "folder_out").mkdir()
    return d


def _p(d, name):
    return d["root"] / name


# (id, argv builder, match): argv builders take the data dict; every case watches the data root.
CASES = [
    # -- tissue: the slide, the output, the numbers
    ("tissue-missing-slide", lambda d: ["tissue", _p(d, "nope.tif"), "--out", _p(d, "m.png")], "found no file"),
    ("tissue-text-slide", lambda d: ["tissue", d["text_slide"], "--out", _p(d, "m.png")], "text.tif"),
    ("tissue-truncated-slide", lambda d: ["tissue", d["truncated"], "--out", _p(d, "m.png")], "truncated.tif"),
    ("tissue-garbled-tiles", lambda d: ["tissue", d["garbled"], "--out", _p(d, "m.png")], "garbled.tif"),
    ("tissue-resolution-0", lambda d: ["tissue", d["slide"], "--out", _p(d, "m.png"), "--resolution", "0"],
     "--resolution > 0"),
    ("tissue-resolution-neg", lambda d: ["tissue", d["slide"], "--out", _p(d, "m.png"), "--resolution", "-8"],
     "--resolution"),
    ("tissue-mpp-0", lambda d: ["tissue", d["slide"], "--out", _p(d, "m.png"), "--mpp", "0"], "--mpp"),
    ("tissue-min-saturation", lambda d: ["tissue", d["slide"], "--out", _p(d, "m.png"), "--min-saturation", "2"],
     "--min-saturation"),
    ("tissue-out-folder", lambda d: ["tissue", d["slide"], "--out", _p(d, "folder_out")], "found a folder"),
    ("tissue-out-under-file", lambda d: ["tissue", d["slide"], "--out", _p(d, "a_file") / "m.png"],
     "found a file"),
    ("tissue-replace-user-file", lambda d: ["tissue", d["slide"], "--out", _p(d, "user.png")], "--overwrite"),
    # -- heatmap: options, models, slides, output location
    ("heatmap-batch-size-0", lambda d: _hm(d, "--batch-size", "0"), r"--batch-size >= 1, found 0"),
    ("heatmap-stride-0", lambda d: _hm(d, "--stride", "0"), "--stride"),
    ("heatmap-workers-0", lambda d: _hm(d, "--workers", "0"), "--workers"),
    ("heatmap-threads-neg", lambda d: _hm(d, "--threads", "-1"), "--threads"),
    ("heatmap-contour-1.5", lambda d: _hm(d, "--contours", "1.5"), "--contours"),
    ("heatmap-contour-twice", lambda d: _hm(d, "--contours", "0.5,0.5"), "distinct"),
    ("heatmap-scheduler", lambda d: _hm(d, "--scheduler", "bogus"), "scheduler"),
    ("heatmap-format", lambda d: _hm(d, "--format", "png"), "--format"),
    ("heatmap-missing-model", lambda d: _hm(d, model=_p(d, "nope.keras")), "found no file"),
    ("heatmap-corrupt-keras", lambda d: _hm(d, model=_p(d, "corrupt.keras")), "corrupt.keras"),
    ("heatmap-broken-tflite", lambda d: _hm(d, model=_p(d, "broken.tflite")), "broken.tflite"),
    ("heatmap-other-app-model", lambda d: _hm(d, model=_p(d, "retina.keras")), "found a retina model"),
    ("heatmap-model-without-card", lambda d: _hm(d, model=_p(d, "nocard.keras")), "card"),
    ("heatmap-model-is-folder", lambda d: _hm(d, model=_p(d, "folder_out")), "folder_out"),
    ("heatmap-missing-slides", lambda d: _hm(d, slides=_p(d, "nope")), "found none"),
    ("heatmap-no-slides", lambda d: _hm(d, slides=_p(d, "noslides")), "found none"),
    ("heatmap-text-slide", lambda d: _hm(d, slides=d["text_slide"]), "text.tif"),
    ("heatmap-truncated-slide", lambda d: _hm(d, slides=d["truncated"]), "truncated.tif"),
    ("heatmap-garbled-tiles", lambda d: _hm(d, slides=d["garbled"]), "garbled.tif"),
    ("heatmap-all-invalid-skipped", lambda d: _hm(d, "--skip-invalid", slides=_p(d, "badslides")),
     "at least one valid slide"),
    ("heatmap-magnification", lambda d: _hm(d, "--mpp", "2.0"), "10x level"),
    ("heatmap-out-is-file", lambda d: _hm(d, out=_p(d, "a_file")), "found a file"),
    ("heatmap-out-under-file", lambda d: _hm(d, out=_p(d, "a_file") / "hm"), "found a file"),
    # -- detect
    ("detect-missing", lambda d: _det(d, _p(d, "nope")), "found none"),
    ("detect-no-heatmaps", lambda d: _det(d, _p(d, "noslides")), "found none"),
    ("detect-garbage-tiff", lambda d: _det(d, _p(d, "hm_garbage")), "b.heatmap.tif"),
    ("detect-no-stride", lambda d: _det(d, _p(d, "hm_nostride")), "stride"),
    ("detect-broken-zarr", lambda d: _det(d, _p(d, "hm_zarr")), "d.heatmap.zarr"),
    ("detect-all-invalid-skipped", lambda d: _det(d, _p(d, "hm_garbage"), "--skip-invalid"), "at least one valid heatmap"),
    ("detect-threshold-2", lambda d: _det(d, _p(d, "heatmaps"), "--threshold", "2"), "--threshold"),
    ("detect-radius-0", lambda d: _det(d, _p(d, "heatmaps"), "--radius", "0"), "--radius"),
    ("detect-max-0", lambda d: _det(d, _p(d, "heatmaps"), "--max-per-slide", "0"), "--max-per-slide"),
    ("detect-out-is-file", lambda d: ["detect", "--heatmaps", _p(d, "heatmaps"), "--out", _p(d, "a_file")],
     "found a file"),
    # -- evaluate: detection CSVs, reference, annotations, numbers
    ("evaluate-missing-detections", lambda d: _ev(d, det=_p(d, "nope")), "found none"),
    ("evaluate-csv-bad-line", lambda d: _ev(d, det=_p(d, "det_badline")), "line 2"),
    ("evaluate-csv-binary", lambda d: _ev(d, det=_p(d, "det_binary")), "tumor_001.csv"),
    ("evaluate-csv-nan", lambda d: _ev(d, det=_p(d, "det_nan")), "probability"),
    ("evaluate-csv-prob-1.5", lambda d: _ev(d, det=_p(d, "det_prob2")), "probability"),
    ("evaluate-csv-negative-x", lambda d: _ev(d, det=_p(d, "det_negative")), "coordinates"),
    ("evaluate-slide-scores", lambda d: _ev(d, det=_p(d, "det_scores")), "slides.csv"),
    ("evaluate-xml-broken", lambda d: _ev(d, truth=d["truth"]["xml_broken"]), "well-formed"),
    ("evaluate-xml-group", lambda d: _ev(d, truth=d["truth"]["xml_group"]), "group"),
    ("evaluate-xml-entity", lambda d: _ev(d, truth=d["truth"]["xml_bomb"]), "tumor_001.xml"),
    ("evaluate-geojson-broken", lambda d: _ev(d, truth=d["truth"]["geo_broken"]), "invalid JSON"),
    ("evaluate-geojson-number", lambda d: _ev(d, truth=d["truth"]["geo_number"]), "FeatureCollection"),
    ("evaluate-geojson-coords", lambda d: _ev(d, truth=d["truth"]["geo_coords"]), "coordinate"),
    ("evaluate-reference-kind", lambda d: _ev(d, "--reference", _p(d, "reference_bad.csv")), "Tumor|Normal"),
    ("evaluate-reference-missing-row", lambda d: _ev(d, "--reference", _p(d, "reference_other.csv")),
     "row for slide"),
    ("evaluate-reference-binary", lambda d: _ev(d, "--reference", _p(d, "reference_binary.csv")),
     "reference_binary.csv"),
    ("evaluate-reference-missing", lambda d: _ev(d, "--reference", _p(d, "nope.csv")), "found none"),
    ("evaluate-level-11", lambda d: _ev(d, "--level", "11"), "--level"),
    ("evaluate-points-0", lambda d: _ev(d, "--points", "0"), "--points"),
    ("evaluate-out-is-file", lambda d: _ev(d, "--pixel-size", "slide", out=_p(d, "a_file")), "found a file"),
    # -- train and distill: their numbers and the teacher model (all refused before TensorFlow)
    ("train-batch-size-0", lambda d: ["train", "--slides", d["slides"], "--out", _p(d, "tr"), "--batch-size", "0"],
     r"batch.size >= 1"),
    ("train-patch-size-8", lambda d: ["train", "--slides", d["slides"], "--out", _p(d, "tr"), "--patch-size", "8"],
     "--patch-size"),
    ("train-epochs-0", lambda d: ["train", "--slides", d["slides"], "--out", _p(d, "tr"), "--epochs", "0"],
     "epochs"),
    ("train-dropout", lambda d: ["train", "--slides", d["slides"], "--out", _p(d, "tr"), "--dropout", "1.5"],
     "--dropout"),
    ("distill-temperature-0", lambda d: _dist(d, "--temperature", "0"), "--temperature"),
    ("distill-alpha-2", lambda d: _dist(d, "--alpha", "2"), "--alpha"),
    ("distill-corrupt-teacher", lambda d: _dist(d, teacher=_p(d, "corrupt.keras")), "corrupt.keras"),
    ("distill-other-app-teacher", lambda d: _dist(d, teacher=_p(d, "retina.keras")), "found a retina model"),
    # -- synth
    ("synth-size-0", lambda d: ["synth", _p(d, "s"), "--size", "0"], "--size"),
    ("synth-size-huge", lambda d: ["synth", _p(d, "s"), "--size", "10000000"], "--size"),
    ("synth-no-slides", lambda d: ["synth", _p(d, "s"), "--tumour", "0", "--normal", "0"], "found 0"),
    ("synth-negative", lambda d: ["synth", _p(d, "s"), "--normal", "-1"], "--normal"),
    ("synth-mpp-0", lambda d: ["synth", _p(d, "s"), "--mpp", "0"], "--mpp"),
    ("synth-seed-neg", lambda d: ["synth", _p(d, "s"), "--seed", "-1"], "--seed"),
    ("synth-out-is-file", lambda d: ["synth", _p(d, "a_file"), "--tumour", "1", "--normal", "0"], "found a file"),
]


def _hm(d, *extra, model=None, slides=None, out=None):
    return ["heatmap", "--model", model or _p(d, "card_only.keras"), "--slides", slides or d["slide"],
            "--out", out or _p(d, "hm_out"), "--scheduler", "inline", *extra]


def _dist(d, *extra, teacher=None):
    return ["distill", "--teacher", teacher or _p(d, "card_only.keras"), "--slides", d["slides"],
            "--out", _p(d, "di"), *extra]


def _det(d, heatmaps, *extra):
    return ["detect", "--heatmaps", heatmaps, "--out", _p(d, "det_out"), *extra]


def _ev(d, *extra, det=None, truth=None, out=None):
    return ["evaluate", "--detections", det or d["det"], "--truth", truth or d["slides"],
            "--slides", d["slides"], "--out", out or _p(d, "ev_out"), *extra]


@pytest.mark.parametrize("case,argv,match", CASES, ids=[c[0] for c in CASES])
def test_bad_input(bad_input, data, case, argv, match):
    line = bad_input(["pathology", *argv(data)], watch=[data["root"]], match=match)
    assert "\n" not in line


def test_detect_skip_invalid_names_the_bad_heatmap(data, tmp_path):
    """--skip-invalid: the good heatmap's outputs are written, the bad one is named in run.json."""
    import shutil

    from deepsci.apps.cli import main

    mixed = tmp_path / "mixed"
    shutil.copytree(_p(data, "heatmaps"), mixed)
    shutil.copy(_p(data, "hm_garbage") / "b.heatmap.tif", mixed)
    out = tmp_path / "det"
    assert main(["pathology", "detect", "--heatmaps", str(mixed), "--out", str(out), "--skip-invalid"]) == 0
    results = json.loads((out / "run.json").read_text())["results"]
    assert list(results["skipped"]) == [str(mixed / "b.heatmap.tif")]
    assert "does not decode" in results["skipped"][str(mixed / "b.heatmap.tif")] or \
        "TIFF" in results["skipped"][str(mixed / "b.heatmap.tif")]
    assert sorted(p.name for p in out.glob("*.csv")) == ["a.csv", "slides.csv"]
    assert (out / "slides.csv").read_text().splitlines()[1:] == [f"a,{results['slide_scores']['a']:.6f}"]


def test_real_cli_prints_one_line_for_a_truncated_slide(data, tmp_path):
    """Out of pytest's log capture: tifffile's and asyncio's messages about the bad tiles stay quiet."""
    import subprocess
    import sys

    env = {**__import__("os").environ, "DEEPSCI_PROGRESS": "0"}
    env.pop("DEEPSCI_VERBOSE", None)
    run = subprocess.run([sys.executable, "-m", "deepsci.apps.cli", "pathology", "tissue", str(data["truncated"]),
                          "--out", str(tmp_path / "m.png")], env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert str(data["truncated"]) in lines[0] and not list(tmp_path.iterdir())


def test_heatmap_skip_invalid_names_the_bad_slides(bad_input, data, tmp_path, monkeypatch):
    """--skip-invalid: a slide refused up front and one failing in its task are named and retried.

    The model's part is replaced (no TensorFlow); the checks, the task's error handling, the
    markers and run.json are the real ones.
    """
    import shutil

    from deepsci.apps.cli import main
    from deepsci.apps.pathology import heatmap
    from deepsci.core.errors import InputError

    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("normal_001.tif", "tumor_001.tif"):
        shutil.copy(data["slides"] / name, slides)
    shutil.copy(data["truncated"], slides)

    def fake(slide_path, model_path, cfg):
        if "tumor_001" in str(slide_path):
            raise InputError("expected a slide whose tiles decode, found a damaged file (test)", slide_path)
        return np.full((4, 4), 0.25, np.float32), {"slide_name": Path(slide_path).stem, "stride": 128.0,
                                                   "mpp": 1.0, "tiles": 16, "seconds": 0.0}

    monkeypatch.setattr(heatmap, "heatmap_slide", fake)
    out = tmp_path / "hm"
    argv = ["pathology", "heatmap", "--model", str(_p(data, "card_only.keras")), "--slides", str(slides),
            "--out", str(out), "--scheduler", "inline", "--skip-invalid"]
    assert main(argv) == 0
    results = json.loads((out / "run.json").read_text())["results"]
    assert list(results["slides"]) == ["normal_001"]
    assert sorted(Path(k).name for k in results["skipped"]) == ["truncated.tif", "tumor_001.tif"]
    assert sorted(p.name for p in out.glob("*.heatmap.tif")) == ["normal_001.heatmap.tif"]
    assert not (out / ".state").exists() or [p.name for p in (out / ".state").iterdir()] == ["normal_001.done.json"]
    # without --skip-invalid the task's error is the run's one line, naming the slide
    shutil.rmtree(out)
    (slides / "truncated.tif").unlink()
    bad_input(argv[:-1], watch=[slides], match="tumor_001.tif")
