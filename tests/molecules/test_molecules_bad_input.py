"""The molecules app's share of the user-error promise (issue #19).

Every reader (SMILES list, CSV, SDF, xyz file/folder/tarball), every output rule
(a folder or a user's file where an output goes, the SDF beside the CSV, an output
that is the input), every numeric option's range, the model files and the per-molecule
rule (``--skip-invalid`` with nothing valid left) gets one case: one ``error:`` line,
exit 2, no traceback, and the folder holding the inputs, the models and every output
location unchanged (the ``bad_input`` fixture of tests/conftest.py).
"""
from __future__ import annotations

import json
import re

import pytest

from deepsci.apps.molecules import synth
from deepsci.core.runs import RUN_SCHEMA

WATER = ("3\nwater\nO -0.0343604951 0.9775395708 0.0076015923\n"
         "H 0.0647664923 0.0205721989 0.0015346341\nH 0.8717903737 1.3007924048 0.0006931336\n")


def _write(root, name, data):
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def _models(root):
    """A good tiny model, another app's, one without its card and a corrupt one (with a card)."""
    good = synth.untrained_members(root / "models", n=1)[0]
    card = json.loads(good.with_suffix(".card.json").read_text())
    other = _write(root, "other/model.keras", good.read_bytes())
    _write(root, "other/model.card.json", json.dumps({**card, "app": "variants",
                                                      "task": "genotype"}))
    _write(root, "nocard/model.keras", good.read_bytes())
    corrupt = _write(root, "corrupt/model.keras", b"PK\x03\x04 not really a zip" * 10)
    _write(root, "corrupt/model.card.json", json.dumps(card))
    (root / "emptymodels").mkdir()
    return {"model": good, "other": other, "nocard": root / "nocard/model.keras",
            "corrupt": corrupt, "emptymodels": root / "emptymodels"}


def _tables(root):
    """Training tables whose label cells are text, and CSVs broken in other ways."""
    ms = synth.synthetic_set(8)
    ok = synth.write_csv_set(ms, root / "train.csv")
    lines = ok.read_text().splitlines()
    header = lines[0].split(",")
    gap = header.index("gap [eV]")

    def with_cell(name, text):
        rows = [line.split(",") if i else line for i, line in enumerate(lines)]
        # The xyz column has no commas, so rows split cleanly into their cells.
        rows[4][gap] = text
        return _write(root, name, "\n".join(r if isinstance(r, str) else ",".join(r)
                                            for r in rows) + "\n")

    return {"train": ok, "text_label": with_cell("text_label.csv", "high"),
            "text_label2": with_cell("text_label2.csv", "gap = high"),
            "inf_label": with_cell("inf_label.csv", "inf")}


@pytest.fixture(scope="module")
def f(tmp_path_factory):
    """Every bad input, built once: name -> path (all under ``f["root"]``)."""
    root = tmp_path_factory.mktemp("molbad")
    f = {"root": root, **_models(root), **_tables(root)}
    texts = {
        "good.smi": "CCO ethanol\nc1ccccc1 benzene\n", "empty.smi": "",
        "comments.smi": "# nothing but a comment\n\n", "bad_line.smi": "CCO\nC1CC broken\n",
        "all_bad.smi": "C1CC\nXx\n", "chloro.smi": "CCl chloro\n",
        "nosmiles.csv": "name,gap [eV]\na,1.0\n", "badxyz.csv": "smiles,xyz\nC,C 0 0\n",
        "emptysmiles.csv": "smiles,gap [eV]\n,1.0\n", "header_only.csv": "smiles\n",
        "garbage.sdf": "not a molfile\nat all\n$$$$\n",
        "count.xyz": "x\n\nC 0 0 0\n", "short.xyz": "3\n\nC 0 0 0\n", "nan.xyz": "1\n\nC nan 0 0\n",
        "element.xyz": "1\n\nQq 0 0 0\n", "water.xyz": WATER, "mol.pdb": "ATOM\n",
        "existing.csv": "the user's own table\n", "user.sdf": "the user's own SDF\n",
        "run_train.json": json.dumps({
            "schema": RUN_SCHEMA, "command": "molecules train", "status": "done",
            "config_class": "deepsci.apps.molecules.train:MoleculeTrainConfig", "config": {}}),
    }
    for name, text in texts.items():
        f[name.replace(".", "_")] = _write(root, name, text)
    f["binary_smi"] = _write(root, "binary.smi", bytes(range(256)) * 4)
    f["badgz_csv"] = _write(root, "bad.csv.gz", b"\x1f\x8b\x08\x00garbage")
    f["badgz_sdf"] = _write(root, "bad.sdf.gz", b"\x1f\x8b\x08\x00garbage")
    f["corrupt_tar"] = _write(root, "qm9.tar.bz2", b"BZh91AY&SY not a tarball")
    ms = synth.synthetic_set(2)
    f["mols_sdf"] = synth.write_sdf(ms, root / "mols.sdf")
    sdf = synth.write_sdf(ms, root / "badprop.sdf")
    # The first record's gap value becomes text.
    sdf.write_text(re.sub(r"(>  <gap \[eV\]>[^\n]*\n)[^\n]*", r"\1abc", sdf.read_text(), count=1))
    f["badprop_sdf"] = sdf
    for name in ("outdir", "emptydir", "dir.smi", "sdfdir.sdf"):
        (root / name).mkdir()
        f[name.replace(".", "_")] = root / name
    return f


def P(*argv):  # noqa: N802 - a case's argv: "{key}" is f[key], "OUT" a fresh output path
    return argv


# (case id, argv, regex the error line must match)
CASES = [
    # -- inputs: each reader and the damaged files each library rejects
    ("missing_input", P("predict", "{root}/nope.smi"), "expected an existing molecule file"),
    ("unsupported_suffix", P("predict", "{mol_pdb}"), r"expected \.csv, \.sdf"),
    ("folder_named_smi", P("predict", "{dir_smi}"), r"expected \*\.xyz files in the folder"),
    ("empty_smi", P("predict", "{empty_smi}"), "at least one valid molecule"),
    ("comments_only_smi", P("predict", "{comments_smi}"), "at least one valid molecule"),
    ("bad_smiles_line", P("predict", "{bad_line_smi}"), r"line 2: expected a valid SMILES.*C1CC"),
    ("binary_smi", P("predict", "{binary_smi}"), "line 1: expected a valid SMILES"),
    ("chlorine", P("predict", "{chloro_smi}"), "expected only elements H/C/N/O/F, found Cl"),
    ("all_bad_skip_invalid", P("predict", "{all_bad_smi}", "--skip-invalid"),
     "at least one valid molecule"),
    ("csv_without_smiles", P("predict", "{nosmiles_csv}"), "expected a column 'smiles'"),
    ("csv_other_smiles_column", P("predict", "{train}", "--smiles-column", "smi"),
     "expected a column 'smi'"),
    ("csv_bad_xyz_cell", P("predict", "{badxyz_csv}"), "row 2: expected 'El x y z'"),
    ("csv_empty_smiles_cell", P("predict", "{emptysmiles_csv}"), "row 2: expected a SMILES"),
    ("csv_header_only", P("predict", "{header_only_csv}"), "at least one valid molecule"),
    ("csv_gz_corrupt", P("predict", "{badgz_csv}"), "expected a CSV table, found unreadable"),
    ("sdf_garbage", P("predict", "{garbage_sdf}"), "record 1: expected a valid molfile"),
    ("sdf_gz_corrupt", P("predict", "{badgz_sdf}"), "expected an SDF file, found unreadable"),
    ("xyz_bad_count", P("predict", "{count_xyz}"), "expected an atom count on line 1"),
    ("xyz_short", P("predict", "{short_xyz}"), "expected 3 atom lines, found 1"),
    ("xyz_nan", P("predict", "{nan_xyz}"), "expected finite coordinates"),
    ("xyz_element", P("predict", "{element_xyz}"), "expected element symbols|expected only"),
    ("xyz_folder_empty", P("predict", "{emptydir}"), r"expected \*\.xyz files in the folder"),
    ("tarball_corrupt", P("predict", "{corrupt_tar}"), "expected a readable tar archive"),
    # -- training data: a label that is text is a bad row, never a missing value
    ("train_text_label", P("train", "--data", "{text_label}", "--targets", "gap", "--out", "OUT"),
     r"row 5, column 'gap \[eV\]': expected a finite number, found 'high'.*text_label\.csv"),
    ("train_text_label_2", P("train", "--data", "{text_label2}", "--targets", "gap", "--out",
                             "OUT"), r"row 5, column 'gap \[eV\]'.*'gap = high'"),
    ("train_inf_label", P("train", "--data", "{inf_label}", "--targets", "gap", "--out", "OUT"),
     "expected a finite number, found 'inf'"),
    ("sdf_text_property", P("train", "--data", "{badprop_sdf}", "--targets", "gap", "--out", "OUT"),
     r"record 1: property 'gap \[eV\]': expected a number"),
    ("train_missing_target", P("train", "--data", "{train}", "--targets", "cv", "--out", "OUT"),
     r"expected target column\(s\) \['cv'\]"),
    # -- outputs: never replace a user's file or the input, never write into a file
    ("out_is_a_folder", P("predict", "{good_smi}", "--out", "{outdir}"),
     "expected an output file, found a folder"),
    ("out_under_a_file", P("predict", "{good_smi}", "--out", "{good_smi}/p.csv"),
     "expected a folder on the output path, found a file"),
    ("out_is_users_file", P("predict", "{good_smi}", "--out", "{existing_csv}"),
     "expected a new output file, found an existing file .pass --overwrite"),
    ("sdf_beside_is_users_file", P("predict", "{good_smi}", "--out", "{root}/user.csv"),
     r"found an existing file .pass --overwrite.*user\.sdf"),
    ("sdf_beside_is_a_folder", P("predict", "{good_smi}", "--out", "{root}/sdfdir.csv"),
     r"expected an output file, found a folder.*sdfdir\.sdf"),
    ("out_is_the_input", P("predict", "{train}", "--out", "{train}", "--overwrite"),
     "expected an output other than an input file"),
    ("sdf_beside_is_the_input", P("predict", "{mols_sdf}", "--out", "{root}/mols.csv",
                                  "--overwrite"), r"the input itself.*mols\.sdf"),
    ("out_named_sdf", P("predict", "{good_smi}", "--out", "{root}/p.sdf"),
     "expected --out as a .csv or .csv.gz file"),
    ("label_out_is_users_file", P("label", "{water_xyz}", "--method", "hf/sto-3g", "--out",
                                  "{existing_csv}"), "pass --overwrite"),
    ("train_out_is_a_file", P("train", "--data", "{train}", "--out", "{existing_csv}"),
     "expected an output folder, found a file"),
    # -- numbers: every numeric option's range, named
    ("predict_batch_size_0", P("predict", "{good_smi}", "--batch-size", "0"),
     "expected --batch-size >= 1, found 0"),
    ("predict_seed_negative", P("predict", "{good_smi}", "--seed", "-1"),
     "expected --seed >= 0, found -1"),
    ("evaluate_batch_size_0", P("evaluate", "--data", "{train}", "--batch-size", "0", "--out",
                                "OUT"), "expected --batch-size >= 1, found 0"),
    ("label_field_0", P("label", "{water_xyz}", "--field", "0", "--out", "OUT"),
     r"expected --field in \(0, 0.05\) au, found 0"),
    ("label_field_negative", P("label", "{water_xyz}", "--field", "-0.01", "--out", "OUT"),
     r"expected --field in \(0, 0.05\)"),
    ("label_memory", P("label", "{water_xyz}", "--max-memory-mb", "10", "--out", "OUT"),
     "expected --max-memory-mb >= 100, found 10"),
    ("label_seed", P("label", "{water_xyz}", "--seed", "-3", "--out", "OUT"),
     "expected --seed >= 0, found -3"),
    ("train_val_test_sum", P("train", "--data", "{train}", "--val", "0.6", "--test", "0.5",
                             "--out", "OUT"), r"expected --val \+ --test fractions < 1"),
    ("train_batch_size_0", P("train", "--data", "{train}", "--batch-size", "0", "--out", "OUT"),
     "expected --batch-size >= 1, found 0"),
    ("train_epochs_0", P("train", "--data", "{train}", "--epochs", "0", "--out", "OUT"),
     "expected --epochs >= 1, found 0"),
    ("train_lr_0", P("train", "--data", "{train}", "--lr", "0", "--out", "OUT"),
     "expected --lr > 0, found 0"),
    ("train_decay_rate", P("train", "--data", "{train}", "--decay-rate", "1.5", "--out", "OUT"),
     r"expected --decay-rate in \(0, 1\], found 1.5"),
    ("train_patience", P("train", "--data", "{train}", "--patience", "0", "--out", "OUT"),
     "expected --patience >= 1, found 0"),
    ("train_units_0", P("train", "--data", "{train}", "--units", "0", "--out", "OUT"),
     "expected --units >= 1, found 0"),
    ("distill_epochs_0", P("distill", "--teacher", "{model}", "--epochs", "0", "--out", "OUT"),
     "expected --epochs >= 1, found 0"),
    ("distill_alpha", P("distill", "--teacher", "{model}", "--alpha", "2", "--out", "OUT"),
     r"expected --alpha in \[0, 1\], found 2"),
    ("distill_unlabelled_missing", P("distill", "--teacher", "{model}", "--unlabelled",
                                     "{root}/none.smi", "--out", "OUT"),
     r"expected an existing --unlabelled molecule file, found none .*none\.smi"),
    ("export_samples_0", P("export", "{model}", "--samples", "0", "--out", "{root}/e.tflite"),
     "expected --samples >= 1, found 0"),
    ("export_tolerance", P("export", "{model}", "--tolerance", "-1", "--out", "{root}/e.tflite"),
     "expected --tolerance >= 0"),
    # -- label's method: PySCF's messages, one line (its basis error has two)
    ("label_unknown_basis", P("label", "{water_xyz}", "--method", "hf/nonsense", "--out", "OUT"),
     "expected --method with a PySCF basis name, found 'nonsense'"),
    ("label_unknown_functional", P("label", "{water_xyz}", "--method", "foo/sto-3g", "--out",
                                   "OUT"), "expected --method with a PySCF functional"),
    ("label_method_shape", P("label", "{water_xyz}", "--method", "hf/", "--out", "OUT"),
     "expected --method b3lyp-qm9 or <method>/<basis>"),
    # -- models: another app's, no card, corrupt, missing, an empty folder
    ("model_other_app", P("predict", "{good_smi}", "--model", "{other}"),
     "expected a molecules model, found a variants model"),
    ("model_without_card", P("predict", "{good_smi}", "--model", "{nocard}"),
     "expected the model card"),
    ("model_corrupt", P("predict", "{good_smi}", "--model", "{corrupt}"), r"corrupt/model\.keras"),
    ("model_missing", P("predict", "{good_smi}", "--model", "{root}/none.keras"), "none.keras"),
    ("model_empty_folder", P("predict", "{good_smi}", "--model", "{emptymodels}"), "emptymodels"),
    # -- a recorded run of another command as --config
    ("config_of_train_for_predict", P("predict", "--config", "{run_train_json}"),
     "expected a run record of PredictConfig"),
]


def _argv(case_argv, f, out):
    argv = ["molecules", *(a.format(**f) if "{" in a else a for a in case_argv)]
    argv = [str(out) if a == "OUT" else a for a in argv]
    if argv[1] in ("predict", "label") and "--out" not in argv:
        argv += ["--out", str(out) + ".csv"]
    if argv[1] == "predict" and "--model" not in argv and "--config" not in argv:
        argv += ["--model", str(f["model"])]
    if argv[1] == "evaluate" and "--model" not in argv:
        argv += ["--model", str(f["model"])]
    return argv


@pytest.mark.parametrize("argv,match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(f, bad_input, argv, match, request):
    if {"hf/nonsense", "foo/sto-3g"} & set(argv):
        pytest.importorskip("pyscf")  # PySCF itself judges the names
    out = f["root"] / "out" / request.node.callspec.id
    line = bad_input(_argv(argv, f, out), watch=[f["root"]], match=match)
    assert len(line) < 400, line


def test_the_cases_cover_every_reader_and_command():
    """At least 20 cases, every input format and every command that writes outputs."""
    ids = [c[0] for c in CASES]
    assert len(ids) >= 20 and len(set(ids)) == len(ids)
    flat = " ".join(" ".join(c[1]) for c in CASES)
    for key in ("_smi", "_csv", "_sdf", "_xyz", "corrupt_tar", "emptydir"):
        assert key in flat, key
    assert {c[1][0] for c in CASES} >= {"predict", "label", "train", "evaluate", "distill",
                                        "export"}
