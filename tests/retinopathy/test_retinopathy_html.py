"""predict and explain write report.html: one offline page whose rows are the CSV's rows.

The page is parsed back with :mod:`html.parser`; every number it shows must be
the CSV's at the printed precision, every image must decode to its stated size
and look like its source, nothing may point outside the file, and a file name
with ``<&>"`` must come back intact (escaped once, not raw and not twice).
"""
import base64
import io
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepsci.apps.cli import main
from deepsci.apps.retinopathy.io import OVERLAY_HEIGHT, THUMB_SIDE
from deepsci.apps.retinopathy.model import GRADE_NAMES

GRADES = [f"p_grade{k}" for k in range(5)]
POINTS = ("high_sensitivity", "high_specificity")
ODD = 'left <&> "eye"'
DASH = "\u2014"


class Page(HTMLParser):
    """Rows ``<tr class="photo">`` as {cell class: (text, [img attributes])}, every URL seen."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.rows, self.urls, self.tags = [], [], set()
        self._row = self._cell = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href", "action", "srcset")]
        if tag == "tr" and "photo" in (a.get("class") or "").split():
            self._row = {"_class": a["class"]}
            self.rows.append(self._row)
        elif tag == "td" and self._row is not None:
            self._cell = [(a.get("class") or "").split()[0], "", []]
        elif tag == "img" and self._cell is not None:
            self._cell[2].append(a)

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            name, text, imgs = self._cell
            self._row[name] = (text.strip(), imgs)
            self._cell = None
        elif tag == "tr":
            self._row = None


@pytest.fixture(scope="module")
def photos(tiny, tmp_path_factory):
    """Two synthetic photographs (one named with ``<&>"``) and a black one (no field of view)."""
    folder = tmp_path_factory.mktemp("retino-html")
    files = [folder / f"{ODD}.jpeg", folder / "plain.jpeg", folder / "black.png"]
    shutil.copy(tiny.photos[0], files[0])
    shutil.copy(tiny.photos[3], files[1])
    Image.fromarray(np.zeros((120, 160, 3), np.uint8)).save(files[2])
    return files


def _decode(img: dict) -> Image.Image:
    """An embedded image: a base64 JPEG of exactly its width x height."""
    head, _, data = img["src"].partition(",")
    assert head == "data:image/jpeg;base64"
    im = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
    im.load()
    assert im.format == "JPEG" and im.size == (int(img["width"]), int(img["height"]))
    return im.convert("RGB")


def _like(im: Image.Image, source: Image.Image) -> float:
    """Mean absolute difference (0-255) of ``im`` and ``source`` resized to its size."""
    ref = np.asarray(source.convert("RGB").resize(im.size, Image.BILINEAR), float)
    return float(np.abs(np.asarray(im, float) - ref).mean())


def _offline(page: str, parsed: Page) -> None:
    assert parsed.urls and all(u.startswith("data:image/jpeg;base64,") for u in parsed.urls)
    rest = re.sub(r"data:image/jpeg;base64,[A-Za-z0-9+/=]+", "", page).lower()
    for bad in ("http:", "https:", "//", "url(", "@import"):
        assert bad not in rest, bad
    assert not parsed.tags & {"script", "link", "iframe", "object", "embed", "base"}


def _escaped(page: str, parsed: Page) -> None:
    assert ODD not in page and "<&>" not in page and "&amp;amp;" not in page
    assert "left &lt;&amp;&gt; &quot;eye&quot;" in page
    assert parsed.rows[0]["image"][0] == ODD and parsed.rows[0]["thumb"][1][0]["alt"] == ODD


def _same_values(row: dict, c: pd.Series, thresholds: dict) -> None:
    """One page row against its CSV row: probabilities to 3 decimals, grade, both decisions."""
    assert ("p_dme" in row) == ("p_dme" in c.index)
    for col in [k for k in (*GRADES, "p_referable", "p_dme") if k in c.index]:
        assert row[col][0] == (DASH if pd.isna(c[col]) else f"{c[col]:.3f}"), col
    if c["gradable"] == 1:
        g = int(c["grade"])
        assert row["grade"][0] == f"{g} {GRADE_NAMES[g]}" and row["quality"][0] == "gradable"
        for k in POINTS:
            assert int(c[f"referable_{k}"]) == int(c["p_referable"] >= thresholds[k])
            want = "referable" if c[f"referable_{k}"] == 1 else "not referable"
            assert row[f"referable_{k}"][0] == want, k
    else:
        assert pd.isna(c["grade"]) and all(pd.isna(c[f"referable_{k}"]) for k in POINTS)
        assert row["grade"][0] == DASH and all(row[f"referable_{k}"][0] == DASH for k in POINTS)
        assert row["quality"][0] == f"ungradable: {c['quality']}"
        assert "ungradable" in row["_class"]


def _thumbnail(row: dict, photo) -> None:
    (img,) = row["thumb"][1]
    im = _decode(img)
    with Image.open(photo) as src:
        w, h = src.size
        assert max(im.size) == min(THUMB_SIDE, max(w, h))  # shrunk, never enlarged
        assert abs(im.size[0] * h - im.size[1] * w) <= max(w, h)  # aspect kept
        assert _like(im, src) < 8


def test_predict_report_is_predictions_csv(tiny, photos, tmp_path):
    out = tmp_path / "pred"
    assert main(["retinopathy", "predict", "--model", str(tiny.teacher), *map(str, photos),
                 "--out", str(out), "--cache", str(tiny.cache)]) == 0
    csv = pd.read_csv(out / "predictions.csv", dtype={"image": str})
    page = (out / "report.html").read_text(encoding="utf-8")
    parsed = Page(page)
    assert [r["image"][0] for r in parsed.rows] == list(csv["image"]) == [ODD, "plain", "black"]
    assert list(csv["gradable"]) == [1, 1, 0]
    for row, (_, c), photo in zip(parsed.rows, csv.iterrows(), photos, strict=True):
        _same_values(row, c, tiny.thresholds)
        _thumbnail(row, photo)
        assert "overlay" not in row
    # The two operating points disagree somewhere, so swapped columns would fail above.
    graded = csv[csv["gradable"] == 1]
    assert (graded["referable_high_sensitivity"] != graded["referable_high_specificity"]).any()
    for k, t in tiny.thresholds.items():
        assert f"<th>referable at {k.replace('_', ' ')} (p &ge; {t:.4f})</th>" in page
    _offline(page, parsed)
    _escaped(page, parsed)


def test_explain_report_shows_the_overlays(tiny, photos, tmp_path):
    out = tmp_path / "explain"
    assert main(["retinopathy", "explain", "--model", str(tiny.members[0]), *map(str, photos),
                 "--out", str(out), "--steps", "2", "--cache", str(tiny.cache)]) == 0
    csv = pd.read_csv(out / "saliency.csv", dtype={"image": str})
    page = (out / "report.html").read_text(encoding="utf-8")
    parsed = Page(page)
    # The black photograph has no field of view: nothing to explain.
    assert [r["image"][0] for r in parsed.rows] == list(csv["image"]) == [ODD, "plain"]
    for row, (_, c), photo in zip(parsed.rows, csv.iterrows(), photos[:2], strict=True):
        _same_values(row, c, tiny.thresholds)
        _thumbnail(row, photo)
        (img,) = row["overlay"][1]
        im = _decode(img)
        assert im.size == (2 * OVERLAY_HEIGHT, OVERLAY_HEIGHT)  # photograph | overlay
        with Image.open(out / c["overlay"]) as src:
            assert _like(im, src) < 8
    _offline(page, parsed)
    _escaped(page, parsed)
