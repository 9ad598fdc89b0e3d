"""Shared synthetic slides for the pathology tests (small, seeded, made once per session), a tiny
model, and the official Camelyon16 FROC (``Evaluation_FROC.py``) transcribed as an independent check."""
import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage as nd
from skimage import measure

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
def one_line_error(capsys):
    """Run the CLI on ``args``; assert exit 2 and one ``error: ...`` line on stderr, return it."""
    from deepsci.apps.cli import main

    def run(args) -> str:
        capsys.readouterr()
        rc = main(args)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), (rc, err)
        return err[0]

    return run


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def tiny_model():
    """``make(path, mags, patch=32, center=32)``: save an untrained width-4 pathology model with its card."""
    from deepsci.apps.pathology import patches
    from deepsci.apps.pathology.model import build_model, model_card
    from deepsci.apps.pathology.train import PathologyTrainConfig
    from deepsci.core.models.serialization import save_model

    def make(path, mags, patch=32, center=32):
        cfg = PathologyTrainConfig(slides=".", out=".", width=4,
                                   patch=patches.PatchConfig(patch_size=patch, magnifications=mags,
                                                             center_size=center))
        save_model(build_model(cfg), path, card=model_card(cfg))
        return path

    return make


# -- a direct transcription of the official Evaluation_FROC.py (Python 3) --------
def _official_mask(mask, resolution, level):
    pixelarray = np.where(mask, 255, 0)
    distance = nd.distance_transform_edt(255 - pixelarray)
    Threshold = 75 / (resolution * pow(2, level) * 2)
    binary = distance < Threshold
    filled_image = nd.binary_fill_holes(binary)
    return measure.label(filled_image, connectivity=2)


def _official_itc(evaluation_mask, resolution, level):
    max_label = np.amax(evaluation_mask)
    properties = measure.regionprops(evaluation_mask)
    Isolated_Tumor_Cells = []
    threshold = 275 / (resolution * pow(2, level))
    for i in range(0, max_label):
        if properties[i].axis_major_length < threshold:
            Isolated_Tumor_Cells.append(i + 1)
    return Isolated_Tumor_Cells


def _official_fp_tp(Ycorr, Xcorr, Probs, is_tumor, evaluation_mask, Isolated_Tumor_Cells, level):
    max_label = np.amax(evaluation_mask) if is_tumor else 0
    FP_probs = []
    TP_probs = np.zeros((max_label,), dtype=np.float32)
    if is_tumor:
        for i in range(0, len(Xcorr)):
            HittedLabel = evaluation_mask[Ycorr[i] // pow(2, level), Xcorr[i] // pow(2, level)]
            if HittedLabel == 0:
                FP_probs.append(Probs[i])
            elif HittedLabel not in Isolated_Tumor_Cells:
                if Probs[i] > TP_probs[HittedLabel - 1]:
                    TP_probs[HittedLabel - 1] = Probs[i]
    else:
        for i in range(0, len(Xcorr)):
            FP_probs.append(Probs[i])
    num_of_tumors = max_label - len(Isolated_Tumor_Cells)
    return FP_probs, TP_probs, num_of_tumors


def _official_froc(FROC_data):
    unlisted_FPs = [item for sublist in FROC_data[1] for item in sublist]
    unlisted_TPs = [item for sublist in FROC_data[2] for item in sublist]
    total_FPs, total_TPs = [], []
    # key=float: under NumPy 2 a Python float and a float32 compare in float32, so the script's
    # plain sort can misorder p and float32(p); the script was written for exact-value order.
    all_probs = sorted(set(unlisted_FPs + unlisted_TPs), key=float)
    for Thresh in all_probs[1:]:
        total_FPs.append((np.asarray(unlisted_FPs) >= Thresh).sum())
        total_TPs.append((np.asarray(unlisted_TPs) >= Thresh).sum())
    total_FPs.append(0)
    total_TPs.append(0)
    total_FPs = np.asarray(total_FPs) / float(len(FROC_data[0]))
    total_sensitivity = np.asarray(total_TPs) / float(sum(FROC_data[3]))
    return total_FPs, total_sensitivity


FROC_POINTS = (0.25, 0.5, 1, 2, 4, 8)  # the script's eval_threshold


def _read_mask_level(path: Path, level: int) -> tuple[np.ndarray, float]:
    """Page ``level`` of a mask TIFF and level 0's microns per pixel, read with tifffile only.

    The script reads the level with OpenSlide's read_region and needs it to exist; so does this.
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page0, page = tif.pages[0], tif.pages[level]
        assert page0.shape[1] == page.shape[1] * 2 ** level, f"{path.name} has no level {level}"
        num, den = page0.tags["XResolution"].value  # pixels per centimetre
        return page.asarray(), 1e4 * den / num


def _official_from_files(det_dir, mask_dir, level: int = 5) -> tuple[float, np.ndarray, np.ndarray]:
    """The script's main(): every ``<name>.csv`` of ``det_dir`` against ``<name>_Mask.tif`` of
    ``mask_dir`` (a slide without one is normal) -> (FROC score, FPs per slide, sensitivity)."""
    names, fp_l, tp_l, n_l = [], [], [], []
    for path in sorted(Path(det_dir).glob("*.csv")):
        if path.name == "slides.csv":
            continue
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if r]
        probs = [float(r[0]) for r in rows]
        xs, ys = [int(r[1]) for r in rows], [int(r[2]) for r in rows]
        mask_path = Path(mask_dir) / f"{path.stem}_Mask.tif"
        if mask_path.is_file():
            pixels, mpp = _read_mask_level(mask_path, level)
            ev = _official_mask(pixels == 255, mpp, level)
            itc = _official_itc(ev, mpp, level)
            fp, tp, nt = _official_fp_tp(ys, xs, probs, True, ev, itc, level)
        else:
            fp, tp, nt = _official_fp_tp(ys, xs, probs, False, None, [], level)
        names.append(path.stem)
        fp_l.append(fp)
        tp_l.append(tp)
        n_l.append(nt)
    total_fps, sens = _official_froc([names, fp_l, tp_l, n_l])
    score = float(np.mean(np.interp(FROC_POINTS, total_fps[::-1], sens[::-1])))
    return score, total_fps, sens


@pytest.fixture(scope="session")
def official():
    """Camelyon16's Evaluation_FROC.py, transcribed: ``mask``, ``itc``, ``fp_tp``, ``froc`` and
    ``from_files(det_dir, mask_dir, level)`` (its main: CSVs and mask TIFFs in, FROC out)."""
    return SimpleNamespace(mask=_official_mask, itc=_official_itc, fp_tp=_official_fp_tp,
                           froc=_official_froc, from_files=_official_from_files)
