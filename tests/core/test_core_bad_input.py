"""The core's share of the user-error promise (issue #19): one ``error:`` line, exit 2, nothing left.

Every path by which a user's file or option reaches the core is driven through the
cheapest app verb that reaches it: ``--config run.json`` (any config command rebuilds its
config before it runs), ``--model`` (model cards, ``.keras`` files, ensembles), the CLI's
own usage errors, the output location of ``deepsci demo`` and the shipped-model names.
Each case is one line through the shared ``bad_input`` fixture, which also checks that
the folder holding the inputs and the output location is unchanged afterwards.
"""
from __future__ import annotations

import json
import zipfile

import pytest

from deepsci.core.models.card import CARD_SCHEMA, ModelCard
from deepsci.core.runs import RUN_SCHEMA

MOL = ("molecules", "qm9-properties")


def _card(app=MOL[0], task=MOL[1], **extra) -> dict:
    return {**ModelCard(app=app, task=task, input_spec={"graph": "bond"},
                        outputs={"gap": {"unit": "eV"}}).to_dict(), **extra}


def _run(config_class="deepsci.apps.molecules.predict:PredictConfig", config=None, **extra) -> dict:
    config = {"inputs": "mols.smi", "model": "m.keras", "out": "p.csv"} if config is None else config
    return {"schema": RUN_SCHEMA, "command": "molecules predict", "status": "done",
            "config_class": config_class, "config": config, **extra}


def _model(folder, name, card, body=b"not a zip"):
    """``folder/name/model.keras`` (``body``) with ``card`` beside it (dict, text or bytes; None: no card)."""
    d = folder / name
    d.mkdir()
    (d / "model.keras").write_bytes(body)
    if isinstance(card, (dict, list)):
        (d / "model.card.json").write_text(json.dumps(card))
    elif isinstance(card, str):
        (d / "model.card.json").write_text(card)
    elif isinstance(card, bytes):
        (d / "model.card.json").write_bytes(card)
    return d / "model.keras"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every bad input, built once: name -> path."""
    root = tmp_path_factory.mktemp("bad")
    (root / "mols.smi").write_text("CCO\nCC\n")
    f = {"root": root, "mols": root / "mols.smi", "missing": root / "nope.json", "dir": root / "adir"}
    f["dir"].mkdir()
    (root / "user.txt").write_text("the user's own file\n")
    f["user"] = root / "user.txt"
    (root / "dir.tflite").mkdir()
    (root / "have.tflite").write_bytes(b"the user's export")
    texts = {
        "text": "this is not json\n", "list": "[1, 2, 3]\n", "empty": "",
        "deep": "[" * 5000 + "]" * 5000,
        "other_cmd": json.dumps(_run("deepsci.apps.variants.train:VariantsTrainConfig")),
        "unknown_field": json.dumps(_run(config={"inputs": "a", "no_such_field": 1})),
        "wrong_type": json.dumps(_run(config={"inputs": "a", "model": "m.keras", "out": "p.csv",
                                              "batch_size": "many"})),
        "config_list": json.dumps(_run(config=[1, 2])),
        "config_class_num": json.dumps(_run(config_class=7)),
        "incomplete": json.dumps(_run(config={"model": "m.keras"})),
        "out_of_range": json.dumps(_run(config={"inputs": str(root / "mols.smi"), "model": "m.keras",
                                                "out": str(root / "p.csv"), "batch_size": 0})),
        "bool_as_text": json.dumps(_run(config={"inputs": "a", "out": "p.csv", "skip_invalid": "yes"})),
        "card_schema": json.dumps({"schema": "other/1"}),
    }
    for name, text in texts.items():
        (root / f"{name}.json").write_text(text)
        f[name] = root / f"{name}.json"
    (root / "binary.json").write_bytes(b"\xff\xfe\x00\x01\x80binary")
    f["binary"] = root / "binary.json"
    # models: wrong or damaged cards, damaged .keras files, another app's model
    f["no_card"] = _model(root, "no_card", None)
    f["card_text"] = _model(root, "card_text", "{not json")
    f["card_binary"] = _model(root, "card_binary", b"\x89PNG\r\n\x1a\n\x00")
    f["card_schema_m"] = _model(root, "card_schema_m", {"schema": "other/1", "app": "molecules"})
    f["card_list"] = _model(root, "card_list", [1, 2])
    f["other_app"] = _model(root, "other_app", _card(app="variants", task="genotype"))
    f["other_task"] = _model(root, "other_task", _card(task="solubility"))
    f["card_unknown"] = _model(root, "card_unknown", _card(colour="red"))
    f["card_no_app"] = _model(root, "card_no_app", _card(app=""))
    f["card_outputs_list"] = _model(root, "card_outputs_list", _card(outputs=["gap"]))
    f["keras_text"] = _model(root, "keras_text", _card(), body=b"just some text\n")
    buf = root / "full.zip"
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("config.json", json.dumps({"class_name": "Functional"}) * 50)
        z.writestr("model.weights.h5", b"\0" * 4000)
    f["keras_truncated"] = _model(root, "keras_truncated", _card(), body=buf.read_bytes()[:900])
    buf.unlink()
    f["keras_bad_config"] = _model(root, "keras_bad_config", _card(), body=_zip({"config.json": "{}"}))
    wrong = root / "wrong_suffix"
    wrong.mkdir()
    (wrong / "model.txt").write_text("weights")
    (wrong / "model.card.json").write_text(json.dumps(_card()))
    f["wrong_suffix"] = wrong / "model.txt"
    for name, ens in {"ens_text": "{oops", "ens_str": json.dumps({"members": "member_0/model.keras"}),
                      "ens_empty": json.dumps({"members": []}),
                      "ens_missing": json.dumps({"members": ["member_9/model.keras"]}),
                      "ens_ints": json.dumps({"members": [1, 2]})}.items():
        d = root / name
        d.mkdir()
        (d / "ensemble.json").write_text(ens)
        f[name] = d
    return f


def _zip(members: dict) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _predict_config(f, key, out="p.csv"):
    return ["molecules", "predict", "--config", f[key], "--out", f["root"] / out]


def _predict_model(f, key):
    return ["molecules", "predict", f["mols"], "--model", f[key], "--out", f["root"] / "p.csv"]


CASES = [
    # --config run.json: missing, not JSON, not a run record, another command's, bad fields
    ("config missing", lambda f: _predict_config(f, "missing"), r"expected a JSON file, found no file .*nope\.json"),
    ("config a folder", lambda f: _predict_config(f, "dir"), r"found no file .*adir/run\.json"),
    ("config text", lambda f: _predict_config(f, "text"), r"expected valid JSON, found a syntax error at line 1 .*text\.json"),
    ("config empty", lambda f: _predict_config(f, "empty"), r"syntax error .*empty\.json"),
    ("config binary", lambda f: _predict_config(f, "binary"), r"found binary data .*binary\.json"),
    ("config too deep", lambda f: _predict_config(f, "deep"), r"expected valid JSON.*deep\.json"),
    ("config a list", lambda f: _predict_config(f, "list"), r"expected a deepsci run record .*found 'list' .*list\.json"),
    ("config a card", lambda f: _predict_config(f, "card_schema"), r"run record .*found 'other/1'"),
    ("config another command", lambda f: _predict_config(f, "other_cmd"),
     r"expected a run record of PredictConfig \('molecules predict' is another command's\)"),
    ("config unknown field", lambda f: _predict_config(f, "unknown_field"), r"unknown \['no_such_field'\]"),
    ("config wrong type", lambda f: _predict_config(f, "wrong_type"),
     r"expected PredictConfig\.batch_size as an integer, found 'many' .*wrong_type\.json"),
    ("config bool as text", lambda f: _predict_config(f, "bool_as_text"), r"skip_invalid as true or false, found 'yes'"),
    ("config not an object", lambda f: _predict_config(f, "config_list"), r"config as an object, found list"),
    ("config class a number", lambda f: _predict_config(f, "config_class_num"), r"config_class as text, found 7"),
    ("config incomplete", lambda f: _predict_config(f, "incomplete"), r"expected a complete config of PredictConfig"),
    ("config out of range", lambda f: _predict_config(f, "out_of_range"), r"^error: expected --batch-size >= 1, found 0$"),
    # --model: cards, .keras files, ensembles, another app's model
    ("model missing", lambda f: _predict_model(f, "missing"), r"expected a trained model, found no file .*nope\.json"),
    ("model empty folder", lambda f: _predict_model(f, "dir"), r"expected a trained model \(model\.keras.*found none .*adir"),
    ("model without card", lambda f: _predict_model(f, "no_card"), r"expected the model card model\.card\.json beside the model, found none"),
    ("card not JSON", lambda f: _predict_model(f, "card_text"), r"syntax error .*card_text/model\.card\.json"),
    ("card binary", lambda f: _predict_model(f, "card_binary"), r"binary data .*model\.card\.json"),
    ("card wrong schema", lambda f: _predict_model(f, "card_schema_m"), rf"expected a model card of schema {CARD_SCHEMA}, found 'other/1'"),
    ("card a list", lambda f: _predict_model(f, "card_list"), r"expected a model card \(JSON object\), found list"),
    ("card unknown field", lambda f: _predict_model(f, "card_unknown"), r"unknown \['colour'\]"),
    ("card without app", lambda f: _predict_model(f, "card_no_app"), r"name its app"),
    ("card outputs a list", lambda f: _predict_model(f, "card_outputs_list"), r"card's outputs as an object, found list"),
    ("another app's model", lambda f: _predict_model(f, "other_app"),
     r"expected a molecules model, found a variants model .*other_app/model\.keras"),
    ("another task's model", lambda f: _predict_model(f, "other_task"), r"for qm9-properties, found one for solubility"),
    ("keras a text file", lambda f: _predict_model(f, "keras_text"), r"expected a Keras model file \(a \.keras zip archive\), found one that does not load: not a zip archive .*keras_text/model\.keras"),
    ("keras truncated zip", lambda f: _predict_model(f, "keras_truncated"), r"does not load.*keras_truncated/model\.keras"),
    ("keras without a model config", lambda f: _predict_model(f, "keras_bad_config"), r"does not load.*keras_bad_config"),
    ("model wrong suffix", lambda f: _predict_model(f, "wrong_suffix"), r"expected a model file \(.*found \.txt"),
    ("ensemble not JSON", lambda f: _predict_model(f, "ens_text"), r"syntax error .*ens_text/ensemble\.json"),
    ("ensemble members text", lambda f: _predict_model(f, "ens_str"), r"members as a list of paths, found str"),
    ("ensemble members numbers", lambda f: _predict_model(f, "ens_ints"), r"members as a list of paths, found list"),
    ("ensemble no members", lambda f: _predict_model(f, "ens_empty"), r"expected members in ensemble\.json, found none"),
    ("ensemble member missing", lambda f: _predict_model(f, "ens_missing"), r"found no file .*member_9/model\.keras"),
    # usage errors: one line, with where the help is
    ("unknown option", lambda f: ["molecules", "predict", f["mols"], "--data", "x"],
     r"^error: no such option: --data \(try 'deepsci molecules predict --help'\)$"),
    ("option without value", lambda f: ["molecules", "predict", f["mols"], "--out"], r"^error: option '--out' requires an argument"),
    ("option of wrong type", lambda f: ["molecules", "predict", f["mols"], "--batch-size", "many"],
     r"^error: invalid value for '--batch-size'.*\(try 'deepsci molecules predict --help'\)$"),
    ("extra argument", lambda f: ["version", "extra"], r"^error: got unexpected extra argument"),
    ("unknown command", lambda f: ["molecules", "fly"], r"^error: no such command 'fly'"),
    ("missing argument", lambda f: ["models", "info"], r"^error: missing argument '(?i:name)' \(try 'deepsci models info --help'\)$"),
    # numbers and names the CLI itself takes
    ("logical cpus zero", lambda f: ["devices", "--logical-cpus", "0"], r"^error: expected --logical-cpus >= 1, found 0$"),
    ("unknown shipped model", lambda f: ["models", "info", "no-such-model"], r"expected a shipped model name .*found 'no-such-model'"),
    ("unknown app to build", lambda f: ["models", "build", "astrology"], r"expected an app among .*, found astrology"),
    ("unknown demo app", lambda f: ["demo", "--app", "astrology", "--out", f["root"] / "d"], r"expected apps among .*, found astrology"),
    # output locations: a user's file is never replaced, a path under a file is refused
    ("demo out is a file", lambda f: ["demo", "--app", "molecules", "--out", f["user"]],
     r"expected an output folder, found a file .*user\.txt"),
    ("demo out a folder of other files", lambda f: ["demo", "--app", "molecules", "--out", f["root"]],
     r"expected a new folder or an earlier demo's for --out, found a folder of other files"),
    ("demo out under a file", lambda f: ["demo", "--app", "molecules", "--out", f["user"] / "sub"],
     r"expected a folder on the output path, found a file .*user\.txt\)$"),
    ("export out a folder", lambda f: ["molecules", "export", f["keras_text"], "--out", f["root"] / "dir.tflite"],
     r"expected an output file, found a folder .*dir\.tflite\)$"),
    ("export out an existing file", lambda f: ["molecules", "export", f["keras_text"], "--out", f["root"] / "have.tflite"],
     r"expected a new output file, found an existing file \(pass --overwrite to replace it\) .*have\.tflite\)$"),
    ("export out under a file", lambda f: ["molecules", "export", f["keras_text"], "--out", f["user"] / "m.tflite"],
     r"expected a folder on the output path, found a file .*user\.txt\)$"),
    ("export a damaged model", lambda f: ["molecules", "export", f["keras_truncated"], "--out", f["root"] / "m.tflite"],
     r"does not load.*keras_truncated/model\.keras\)$"),
]


@pytest.mark.parametrize("argv, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_core_bad_input(bad_input, files, argv, match):
    bad_input(argv(files), watch=[files["root"]], match=match)
