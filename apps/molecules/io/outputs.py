"""The outputs of ``predict`` and ``label``: the app's CSV and, beside it, an SDF.

The SDF (``predictions.csv`` → ``predictions.sdf``, ``x.csv.gz`` → ``x.sdf``)
holds each molecule as the model or the DFT run saw it: explicit hydrogens
and the 3-D conformer in Å, title = the molecule's id, and SD tags ``id``,
``smiles`` and one per property named like the CSV header with its unit
(``gap [eV]``, ``gap_std [eV]``). Tag values are the CSV's cells, printed by
the same function (:func:`.csvfile.format_value`), so both files parse to the
same numbers. RDKit, DataWarrior, KNIME and PyMOL open it with the structures
and properties.

Both files are written to temporaries first and renamed into place only when
both are complete, so a failure never leaves one without the other.
"""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import numpy as np

from deepsci.core.errors import InputError
from deepsci.core.io import atomic_path, remove_stale_temporaries

from .csvfile import format_value, output_frame, write_frame

__all__ = ["sdf_path", "sdf_text", "write_outputs", "remove_stale_outputs", "check_outputs"]


def sdf_path(csv_path) -> Path:
    """The SDF beside an output CSV: ``<stem>.sdf`` with ``.csv``/``.csv.gz`` removed."""
    path = Path(csv_path)
    name = path.name
    for suffix in (".gz", ".csv"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return path.with_name(f"{name}.sdf")


def sdf_text(frame, mols) -> str:
    """SD records of ``mols`` with every column of ``frame`` but ``xyz`` as tags.

    Parameters
    ----------
    frame : pandas.DataFrame
        :func:`.csvfile.output_frame` of the same molecules, in the same order.
    mols : sequence of rdkit.Chem.Mol
        Explicit hydrogens and the conformer that was used.
    """
    from rdkit import Chem

    tags = [c for c in frame.columns if c != "xyz"]
    records = []
    for i, mol in enumerate(mols):
        m = Chem.Mol(mol)
        # Properties a reader left on the molecule (an input SDF's own tags) would
        # repeat or contradict the predicted ones; the record carries only this table's.
        for name in list(m.GetPropNames()):
            m.ClearProp(name)
        # One line per field: a title or tag with a newline would break the record.
        title = str(frame["id"].iloc[i]).replace("\n", " ").replace("\r", " ")
        try:
            block = Chem.MolToMolBlock(m)  # Kekulé bonds: what every viewer reads
        except (ValueError, RuntimeError):  # pragma: no cover - read molecules kekulize
            block = Chem.MolToMolBlock(m, kekulize=False)
        block = block[block.index("\n"):]  # replace RDKit's title line by the id
        lines = [title + block.rstrip("\n")]
        for tag in tags:
            value = frame[tag].iloc[i]
            text = format_value(value.item() if isinstance(value, np.generic) else value)
            lines += [f">  <{tag}>", text.replace("\n", " "), ""]
        records.append("\n".join(lines) + "\n$$$$\n")
    return "".join(records)


def _finished(csv_path: Path) -> bool:
    """Whether ``csv_path`` is the output of a finished deepsci run (its record says done)."""
    import json

    from deepsci.core.runs import run_record_path

    record = run_record_path(csv_path, file_output=True)
    try:
        return json.loads(record.read_text()).get("status") == "done"
    except (OSError, ValueError, AttributeError):
        return False


def check_outputs(csv_path, *, inputs=(), sdf: bool = True, overwrite: bool = False) -> None:
    """Refuse outputs that would replace a user's file, before anything is read or written.

    An output that is one of ``inputs`` is always an error; an existing folder
    at either path too; an existing file (a finished run's CSV, a user's own
    SDF) only without ``overwrite``.

    Raises
    ------
    InputError
        Naming the path, e.g. ``expected a new output file, found an existing
        file (pass --overwrite to replace it) (pred.sdf)``.
    """
    csv_path = Path(csv_path)
    paths = [csv_path, *([sdf_path(csv_path)] if sdf else [])]
    given = {Path(p).resolve() for p in inputs if p is not None}
    for path in paths:
        if path.resolve() in given:
            raise InputError("expected an output other than an input file, found the input "
                             "itself", path)
        if path.is_dir():
            raise InputError("expected an output file, found a folder", path)
    if overwrite:
        return
    for path in paths:
        if path.exists():
            what = "a finished run's output" if path == csv_path and _finished(path) else \
                "an existing file"
            raise InputError(f"expected a new output file, found {what} (pass --overwrite to "
                             "replace it)", path)


def remove_stale_outputs(csv_path) -> None:
    """Remove the SDF temporaries a killed earlier attempt left beside ``csv_path``.

    :class:`deepsci.core.runs.RunDir` removes the CSV's (``.<csv stem>.…tmp…``);
    the SDF's stem differs for ``x.csv.gz`` (``x`` vs ``x.csv``).
    """
    sdf = sdf_path(csv_path)
    if sdf.parent.is_dir():
        remove_stale_temporaries(sdf.parent, stem=sdf.stem)


def write_outputs(path, *, ids, smiles, columns: dict[str, np.ndarray], units: dict[str, str],
                  mols, sdf: bool = True) -> dict[str, Path]:
    """Write the app's CSV and (with ``sdf``) its SDF, both or neither.

    Parameters
    ----------
    path : path-like
        The CSV (``.csv`` or ``.csv.gz``); the SDF is :func:`sdf_path` of it.
    ids, smiles, columns, units, mols
        As :func:`.csvfile.write_csv`.
    sdf : bool
        Also write the SDF.

    Returns
    -------
    dict
        ``{"csv": path, "sdf": path}`` (``"sdf"`` only with ``sdf``).
    """
    path = Path(path)
    frame = output_frame(ids=ids, smiles=smiles, columns=columns, units=units, mols=mols)
    text = sdf_text(frame, mols) if sdf else None
    written = {"csv": path}
    with ExitStack() as stack:
        # Entered CSV first, so on exit the SDF is renamed into place before the CSV:
        # a CSV (the file a resumed run checks) never stands without its SDF.
        tmp_csv = stack.enter_context(atomic_path(path))
        write_frame(tmp_csv, frame, gz=path.name.lower().endswith(".gz"), name=path.name)
        if text is not None:
            written["sdf"] = sdf_path(path)
            stack.enter_context(atomic_path(written["sdf"])).write_text(text)
    return written
