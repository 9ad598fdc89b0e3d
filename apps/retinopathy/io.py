"""Readers for the label files and image folders of public fundus datasets.

Every reader returns the same table, a :class:`pandas.DataFrame` with columns

``image`` (str, the dataset's image id), ``path`` (str, absolute image path),
``grade`` (int 0-4, ICDR scale, or -1 when unknown), ``dme`` (int 0/1 or -1 when
unknown), ``gradable`` (int 0/1 or -1 when unknown), ``patient`` (str) and
``eye`` (``"left"``, ``"right"`` or ``""``).

Supported layouts (``fmt``):

* ``eyepacs`` -- Kaggle EyePACS ``trainLabels.csv`` (``image,level``), images in
  ``train/<image>.jpeg``; the patient id is the part of ``<patient>_<left|right>``
  before the underscore.  An optional ``dme`` column is read when present.
* ``aptos`` -- APTOS 2019 ``train.csv`` (``id_code,diagnosis``), images in
  ``train_images/<id_code>.png``.
* ``idrid`` -- IDRiD disease-grading CSV (``Image name,Retinopathy grade,Risk of
  macular edema `` with a trailing space and empty trailing columns), images
  ``<Image name>.jpg``.  Referable DME is risk grade 2 (hard exudates within one
  disc diameter of the macula).
* ``messidor2`` -- Messidor-2 adjudicated grades
  (``image_id,adjudicated_dr_grade,adjudicated_dme,adjudicated_gradable``).
* ``generic`` -- any CSV with named columns (``image_col``, ``grade_col`` and
  optionally ``dme_col``, ``patient_col``).

Outputs: :func:`write_report_html` writes the self-contained ``report.html``
of ``predict`` and ``explain`` (photographs, grades, decisions, overlays).
"""
from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from deepsci.core.config import check_ranges, option
from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import write_text

# Photographs are decoded in .images; imported from here by the app's other modules.
from .images import IMAGE_ERRORS, MAX_PIXELS, SYNTH_MARKER, is_synthetic, load_image  # noqa: F401

FORMATS = ("auto", "eyepacs", "aptos", "idrid", "messidor2", "generic")
IMAGE_EXTS = (".jpeg", ".jpg", ".png", ".tif", ".tiff", ".JPG", ".JPEG", ".PNG", ".tif")
COLUMNS = ["image", "path", "grade", "dme", "gradable", "patient", "eye"]



@dataclass
class DatasetSpec:
    """Where a labelled dataset lives and how to read it.

    Attributes
    ----------
    labels : Path or None
        The label CSV; ``None`` when a command runs on image files instead.
    images : Path or None
        Image folder; ``None`` picks the dataset's usual folder next to the CSV.
    fmt : str
        One of :data:`FORMATS`; ``"auto"`` recognises the header.
    image_col, grade_col, dme_col, patient_col : str or None
        Column names for ``fmt="generic"``.
    ext : str or None
        Image file extension to append when the id has none (``None`` tries
        the usual ones).
    """

    labels: Path | None = option(None, "Label CSV: EyePACS trainLabels.csv, APTOS train.csv, IDRiD "
                                     "grading CSV, Messidor-2 adjudicated CSV, or any CSV with "
                                     "--image-col/--grade-col.")
    images: Path | None = option(None, "Image folder (default: the dataset's usual folder next to "
                                     "the CSV).")
    fmt: str = option("auto", "auto|eyepacs|aptos|idrid|messidor2|generic", cli="format",
                      choices=FORMATS)
    image_col: str | None = option(None, "Generic CSV: image id column.")
    grade_col: str | None = option(None, "Generic CSV: ICDR grade column (0-4).")
    dme_col: str | None = option(None, "Generic CSV: referable DME column (0/1).")
    patient_col: str | None = option(None, "Column with patient ids (split by patient).")
    ext: str | None = option(None, "Image extension when ids have none.")

    def __post_init__(self) -> None:
        # Configs rebuilt from run.json or the command line carry paths as text.
        self.labels = None if self.labels is None else Path(self.labels)
        self.images = None if self.images is None else Path(self.images)

    def validate(self) -> DatasetSpec:
        """Raise :class:`ConfigError` for an unknown format; return self."""
        check_ranges(self)
        return self


def _read_csv(path: Path) -> pd.DataFrame:
    if path.is_dir():
        raise InputError("expected a CSV label file, found a folder", path)
    if not path.is_file():
        raise InputError("expected a CSV label file, found no file", path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise InputError("expected a CSV label file, found an empty file", path) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise InputError(f"expected a CSV label file, found unparsable text ({first})",
                         path) from None
    # IDRiD ships a header with trailing spaces and unnamed empty columns.
    df.columns = [str(c).strip() for c in df.columns]
    df = df.loc[:, [c for c in df.columns if c and not c.startswith("Unnamed:")]]
    # pandas renames a repeated column "level" to "level.1"; which one is meant is unknowable.
    cols = set(df.columns)
    dups = [m[1] for c in df.columns if (m := re.fullmatch(r"(.+)\.\d+", c)) and m[1] in cols]
    if dups or df.columns.duplicated().any():
        dup = dups[0] if dups else df.columns[df.columns.duplicated()][0]
        raise InputError(f"expected unique column names, found {dup!r} twice", path)
    # A short row leaves NaN even without NA parsing; an empty cell is what it means.
    return df.fillna("").astype(str)


def detect_format(columns: list[str]) -> str:
    """Name the dataset layout from a CSV header (``"generic"`` if unknown)."""
    cols = {c.strip().lower() for c in columns}
    if {"image", "level"} <= cols:
        return "eyepacs"
    if {"id_code", "diagnosis"} <= cols:
        return "aptos"
    if {"image name", "retinopathy grade"} <= cols:
        return "idrid"
    if {"image_id", "adjudicated_dr_grade"} <= cols:
        return "messidor2"
    return "generic"


def _require(df: pd.DataFrame, cols: list[str], path: Path, fmt: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(
            f"expected {fmt} columns {cols}, found {list(df.columns)} (missing {missing})", path
        )


def _int_labels(df: pd.DataFrame, column: str, path: Path, what: str, allowed: range,
                allow_empty: bool = False) -> np.ndarray:
    """The integer labels of ``df[column]``; InputError naming the row and column otherwise."""
    out = np.full(len(df), -1, dtype=np.int64)
    for i, v in enumerate(df[column]):
        v = str(v).strip()
        if v == "" and allow_empty:
            continue
        try:
            f = float(v)
        except ValueError:
            f = float("nan")
        if not f.is_integer() or int(f) not in allowed:
            raise InputError(f"expected {what} in {allowed.start}-{allowed.stop - 1}, "
                             f"found {v!r} in column {column!r} on data row {i + 1}", path)
        out[i] = int(f)
    return out


def _text_column(df: pd.DataFrame, column: str, path: Path, what: str) -> pd.Series:
    """``df[column]`` stripped; InputError naming the first empty cell."""
    values = df[column].str.strip()
    empty = np.flatnonzero((values == "").to_numpy())
    if len(empty):
        raise InputError(f"expected {what} in column {column!r}, found an empty cell on data "
                         f"row {empty[0] + 1}", path)
    return values


def _resolve_image(folder: Path, name: str, ext: str | None) -> Path:
    p = folder / name
    if Path(name).suffix.lower() in {e.lower() for e in IMAGE_EXTS}:
        return p
    if ext:
        return folder / (name + (ext if ext.startswith(".") else "." + ext))
    for e in IMAGE_EXTS:
        if (folder / (name + e)).is_file():
            return folder / (name + e)
    return folder / (name + ".jpeg")


def _default_folder(labels: Path, candidates: list[str]) -> Path:
    for c in candidates:
        if (labels.parent / c).is_dir():
            return labels.parent / c
    return labels.parent


_EYE = re.compile(r"^(?P<patient>.+?)[_-](?P<eye>left|right|l|r|od|os)$", re.IGNORECASE)
_EYE_NAMES = {"l": "left", "os": "left", "left": "left", "r": "right", "od": "right",
              "right": "right"}


def _patient_eye(image_id: str) -> tuple[str, str]:
    m = _EYE.match(Path(image_id).stem if Path(image_id).suffix else image_id)
    if m:
        return m["patient"], _EYE_NAMES[m["eye"].lower()]
    return image_id, ""


def _eyepacs(df: pd.DataFrame, spec: DatasetSpec, labels: Path) -> dict:
    _require(df, ["image", "level"], labels, "eyepacs")
    cols = {"ids": _text_column(df, "image", labels, "image ids"),
            "grade": _int_labels(df, "level", labels, "ICDR grade", range(5)),
            "folder": spec.images or _default_folder(labels, ["train", "test"]),
            "ext": spec.ext or ".jpeg"}
    if "dme" in df.columns:
        cols["dme"] = _int_labels(df, "dme", labels, "DME label", range(2), allow_empty=True)
    return cols


def _aptos(df: pd.DataFrame, spec: DatasetSpec, labels: Path) -> dict:
    _require(df, ["id_code", "diagnosis"], labels, "aptos")
    return {"ids": _text_column(df, "id_code", labels, "image ids"),
            "grade": _int_labels(df, "diagnosis", labels, "ICDR grade", range(5)),
            "folder": spec.images or _default_folder(labels, ["train_images", "test_images"]),
            "ext": spec.ext or ".png"}


def _idrid(df: pd.DataFrame, spec: DatasetSpec, labels: Path) -> dict:
    _require(df, ["Image name", "Retinopathy grade"], labels, "idrid")
    cols = {"ids": _text_column(df, "Image name", labels, "image ids"),
            "grade": _int_labels(df, "Retinopathy grade", labels, "ICDR grade", range(5)),
            "folder": spec.images or labels.parent, "ext": spec.ext or ".jpg"}
    if "Risk of macular edema" in df.columns:
        risk = _int_labels(df, "Risk of macular edema", labels, "DME risk", range(3))
        cols["dme"] = (risk == 2).astype(np.int64)
    return cols


def _messidor2(df: pd.DataFrame, spec: DatasetSpec, labels: Path) -> dict:
    _require(df, ["image_id", "adjudicated_dr_grade"], labels, "messidor2")
    cols = {"ids": _text_column(df, "image_id", labels, "image ids")}
    if "adjudicated_gradable" in df.columns:
        cols["gradable"] = _int_labels(df, "adjudicated_gradable", labels, "gradable flag",
                                       range(2))
    # Ungradable Messidor-2 images carry no adjudicated grade.
    cols["grade"] = _int_labels(df, "adjudicated_dr_grade", labels, "ICDR grade", range(5),
                                allow_empty=True)
    if "adjudicated_dme" in df.columns:
        cols["dme"] = _int_labels(df, "adjudicated_dme", labels, "DME label", range(2),
                                  allow_empty=True)
    cols["folder"] = spec.images or _default_folder(labels, ["IMAGES", "images"])
    cols["ext"] = spec.ext
    return cols


def _generic(df: pd.DataFrame, spec: DatasetSpec, labels: Path) -> dict:
    if not (spec.image_col and spec.grade_col):
        raise ConfigError("expected --image-col and --grade-col for the generic format")
    _require(df, [c for c in (spec.image_col, spec.grade_col, spec.dme_col,
                              spec.patient_col) if c], labels, "generic")
    cols = {"ids": _text_column(df, spec.image_col, labels, "image ids"),
            "grade": _int_labels(df, spec.grade_col, labels, "ICDR grade", range(5)),
            "folder": spec.images or labels.parent, "ext": spec.ext}
    if spec.dme_col:
        cols["dme"] = _int_labels(df, spec.dme_col, labels, "DME label", range(2),
                                  allow_empty=True)
    return cols


_READERS = {"eyepacs": _eyepacs, "aptos": _aptos, "idrid": _idrid, "messidor2": _messidor2,
            "generic": _generic}


def read_dataset(spec: DatasetSpec, *, check_files: bool = True) -> pd.DataFrame:
    """Read a labelled fundus dataset into the common table.

    Parameters
    ----------
    spec : DatasetSpec
        Label file, image folder and layout.
    check_files : bool
        Raise :class:`InputError` naming the first image listed in the CSV that
        does not exist.

    Returns
    -------
    pandas.DataFrame
        One row per image with columns :data:`COLUMNS`.
    """
    if spec.labels is None:
        raise ConfigError("expected --labels, found none")
    labels = Path(spec.labels)
    df = _read_csv(labels)
    fmt = spec.fmt
    if fmt not in FORMATS:
        raise ConfigError(f"expected format in {FORMATS}, found {fmt!r}")
    if fmt == "auto":
        fmt = detect_format(list(df.columns))
        if fmt == "generic" and not (spec.image_col and spec.grade_col):
            raise InputError(
                "expected a known label header (image,level | id_code,diagnosis | Image name,"
                "Retinopathy grade | image_id,adjudicated_dr_grade) or --image-col/--grade-col, "
                f"found columns {list(df.columns)}", labels)
    if len(df) == 0:
        raise InputError("expected at least one labelled image, found an empty table", labels)
    if spec.patient_col:
        _require(df, [spec.patient_col], labels, fmt)
    cols = _READERS[fmt](df, spec, labels)
    ids = cols["ids"]
    unknown = np.full(len(df), -1, np.int64)
    paths = [_resolve_image(Path(cols["folder"]), i, cols["ext"]) for i in ids]
    pe = [_patient_eye(i) for i in ids]
    patients = (list(_text_column(df, spec.patient_col, labels, "patient ids"))
                if spec.patient_col else [p for p, _ in pe])
    out = pd.DataFrame({
        "image": list(ids), "path": [str(p.absolute()) for p in paths], "grade": cols["grade"],
        "dme": cols.get("dme", unknown), "gradable": cols.get("gradable", unknown),
        "patient": patients, "eye": [e for _, e in pe],
    })
    if out["image"].duplicated().any():
        dup = out.loc[out["image"].duplicated(), "image"].iloc[0]
        raise InputError(f"expected unique image ids, found {dup!r} twice", labels)
    if check_files:
        for p in paths:
            if not p.is_file():
                found = "a folder" if p.is_dir() else "no file"
                raise InputError(f"expected the image listed in {labels.name}, found {found}", p)
    return out


def referable(grade: np.ndarray, dme: np.ndarray | None = None) -> np.ndarray:
    """Referable DR: ICDR grade >= 2 (moderate or worse) or referable DME.

    Parameters
    ----------
    grade : array of int, shape (N,)
    dme : array of int, shape (N,), optional
        1 for referable DME, 0 for none, -1 for unknown (ignored).

    Returns
    -------
    array of int, shape (N,)
    """
    r = (np.asarray(grade) >= 2).astype(np.int64)
    if dme is not None:
        r = np.maximum(r, (np.asarray(dme) == 1).astype(np.int64))
    return r


def patient_split(df: pd.DataFrame, *, val_frac: float = 0.15, test_frac: float = 0.15,
                  seed: int = 0) -> pd.Series:
    """Assign each image to ``train``/``val``/``test`` so no patient straddles splits.

    Patients are shuffled with ``seed`` and stratified by their worst grade so
    that rare severe grades reach every split.

    Returns
    -------
    pandas.Series of str, aligned with ``df.index``.
    """
    if not 0 <= val_frac < 1 or not 0 <= test_frac < 1 or val_frac + test_frac >= 1:
        raise ConfigError(f"expected val_frac + test_frac < 1, found {val_frac} + {test_frac}")
    rng = np.random.default_rng(seed)
    worst = df.groupby("patient")["grade"].max()
    assign: dict[str, str] = {}
    for _, group in worst.groupby(worst.values):
        pats = list(group.index)
        rng.shuffle(pats)
        n = len(pats)
        # Round per stratum but keep a fractional carry so small strata still
        # feed val/test in proportion overall.
        n_test = int(round(n * test_frac))
        n_val = int(round(n * val_frac))
        for i, p in enumerate(pats):
            assign[p] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return df["patient"].map(assign).rename("split")


# ------------------------------------------------------------------ report.html

#: Longest side of a photograph's thumbnail in ``report.html``, pixels.
THUMB_SIDE = 192
#: Height of an embedded saliency figure (photograph | overlay) in ``report.html``.
OVERLAY_HEIGHT = 224
_CSS = ("body{font-family:sans-serif;margin:1em;color:#222}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:middle}"
        "th{background:#eee}td.image,td.quality,td.grade{text-align:left}"
        "td.yes{background:#f6cccc;font-weight:bold}td.no{background:#d6efd6}"
        "tr.ungradable td{color:#777;background:#f3f3f3}p.warn{background:#fff0b3;padding:.5em}")


def fit_size(size: tuple[int, int], *, side: int | None = None, height: int | None = None
             ) -> tuple[int, int]:
    """``(width, height)`` scaled to a longest ``side`` (never enlarged) or to a ``height``."""
    w, h = size
    scale = height / h if height else min(1.0, side / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def data_uri(image: Image.Image) -> str:
    """``image`` as an inline ``data:image/jpeg;base64,...`` URI (JPEG, quality 85)."""
    buf = BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(path: str | os.PathLike, alt: str, **fit) -> str:
    """An ``<img>`` of ``path`` resized by :func:`fit_size`, or a dash when it cannot be read."""
    try:
        if fit.get("side"):
            im = Image.fromarray(load_image(path, min_side=fit["side"]))
        else:
            with Image.open(path) as f:
                im = f.convert("RGB")
    except (InputError, *IMAGE_ERRORS):
        return "&mdash;"
    w, h = fit_size(im.size, **fit)
    im = im.resize((w, h), Image.LANCZOS)
    return f'<img src="{data_uri(im)}" width="{w}" height="{h}" alt="{html.escape(alt)}">'


def _missing(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))


def _prob(v) -> str:
    return "&mdash;" if _missing(v) else f"{float(v):.3f}"


def _decision(v) -> tuple[str, str]:
    if _missing(v):
        return "", "&mdash;"
    return ("yes", "referable") if int(v) == 1 else ("no", "not referable")


def _row(r: dict, points: Sequence[str], grade_names: Sequence[str], folder: Path) -> str:
    """One ``<tr class="photo">``: thumbnail, name, probabilities, grade, decisions, overlay."""
    name = str(r["image"])
    cells = [("thumb", _img(r["path"], name, side=THUMB_SIDE)), ("image", html.escape(name))]
    cells += [(f"p_grade{k}", _prob(r.get(f"p_grade{k}"))) for k in range(len(grade_names))]
    g = r.get("grade")
    cells.append(("grade", "&mdash;" if _missing(g)
                  else f"{int(g)} {html.escape(grade_names[int(g)])}"))
    cells.append(("p_referable", _prob(r.get("p_referable"))))
    for k in points:
        kind, text = _decision(r.get(f"referable_{k}"))
        cells.append((f"referable_{k} {kind}".strip(), text))
    if "p_dme" in r:
        cells.append(("p_dme", _prob(r["p_dme"])))
    gradable = int(r.get("gradable", 1)) == 1
    quality = "gradable" if gradable else f"ungradable: {r.get('quality') or 'flagged'}"
    cells.append(("quality", html.escape(str(quality))))
    if "overlay" in r:
        cells.append(("overlay", _img(folder / str(r["overlay"]), f"saliency of {name}",
                                      height=OVERLAY_HEIGHT)))
    tds = "".join(f'<td class="{c}">{v}</td>' for c, v in cells)
    return f'<tr class="photo{"" if gradable else " ungradable"}">{tds}</tr>'


def _header(table: pd.DataFrame, points: dict, notes: Sequence[str]) -> list[str]:
    """Counts, the operating points (threshold, validation sensitivity/specificity), warnings."""
    n_bad = int((table["gradable"] != 1).sum()) if "gradable" in table else 0
    out = [f"<p>{len(table)} photograph(s), {n_bad} ungradable (flagged, not graded).</p>",
           "<table><tr><th>operating point</th><th>referable when p(referable) &ge;</th>"
           "<th>validation sensitivity</th><th>validation specificity</th>"
           "<th>referable photographs</th></tr>"]
    for k, p in points.items():
        col = table.get(f"referable_{k}", pd.Series(dtype=float))
        sens, spec = (f"{100 * float(p[s]):.1f} %" if s in p else "&mdash;"
                      for s in ("sensitivity", "specificity"))
        out.append(f"<tr><td>{html.escape(k.replace('_', ' '))}</td>"
                   f"<td>{float(p['threshold']):.4f}</td><td>{sens}</td><td>{spec}</td>"
                   f"<td>{int((col == 1).sum())}</td></tr>")
    out.append("</table>")
    out += [f'<p class="warn">{html.escape(n)}</p>' for n in notes]
    return out


def write_report_html(path: str | os.PathLike, table: pd.DataFrame, *, title: str,
                      points: dict[str, dict], grade_names: Sequence[str],
                      notes: Sequence[str] = (), folder: str | os.PathLike | None = None) -> Path:
    """Write one self-contained HTML page of a batch of photographs, atomically.

    Images are embedded as base64 JPEG (``data:`` URIs), the style is
    inline and there is no script and no link, so any browser opens the file
    from disk, offline. Every name is HTML-escaped.

    Parameters
    ----------
    path : path-like
        The page, e.g. ``<out>/report.html``.
    table : pandas.DataFrame
        One row per photograph: ``image``, ``path`` (the photograph),
        ``p_grade0`` .., ``grade`` (empty when ungradable), ``p_referable``,
        ``referable_<point>`` (1/0, empty when ungradable) for each of
        ``points``, and optionally ``p_dme``, ``gradable``, ``quality`` and
        ``overlay`` (a saliency figure, relative to ``folder``).
    title : str
    points : dict
        Operating point name -> ``{"threshold", "sensitivity", "specificity"}``
        (``ensemble.json``'s ``operating_points``).
    grade_names : sequence of str
        ICDR grade names, index = grade.
    notes : sequence of str
        Warnings shown above the table (e.g. a demo model on real photographs).
    folder : path-like, optional
        Where ``overlay`` paths start (default: the page's folder).

    Returns
    -------
    Path
    """
    path = Path(path)
    folder = Path(folder) if folder is not None else path.parent
    names = list(points)
    heads = ["photograph", "image", *[f"p(grade {k})" for k in range(len(grade_names))],
             "grade", "p(referable)",
             *[f"referable at {k.replace('_', ' ')} (p &ge; {float(points[k]['threshold']):.4f})"
               for k in names]]
    heads += ["p(DME)"] * ("p_dme" in table) + ["quality"] + ["saliency"] * ("overlay" in table)
    rows = [_row(r, names, grade_names, folder) for r in table.to_dict("records")]
    body = [f"<h1>{html.escape(title)}</h1>", *_header(table, points, notes),
            "<table><tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>", *rows, "</table>"]
    page = (f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}'
            f"</title><style>{_CSS}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")
    return write_text(path, page)
