"""The core run record (RunDir), model cards and their checks."""
import json
import os

import pytest

from deepsci.core.errors import InputError
from deepsci.core.models.card import ModelCard, card_path, read_card
from deepsci.core.runs import RunDir, config_from_run, is_chief, read_run


def _card(app="molecules", **kw):
    return ModelCard(app=app, task=kw.pop("task", "t"), input_spec={"n": 3},
                     outputs={"gap": {"unit": "eV"}}, **kw)


def test_run_json_records_config_inputs_stages_and_results(tmp_path):
    from deepsci.core.training import TrainConfig

    data = tmp_path / "in.csv"
    data.write_text("a,b\n1,2\n")
    cfg = TrainConfig(epochs=3, batch_size=8)
    with RunDir(tmp_path / "out", command="x train", config=cfg, inputs=[data]) as run:
        with run.stage("first", {"k": 1}) as st:
            st.record(n=5)
        with run.stage("second") as st:
            st.record(n=6)
        run.record(score=0.25)
    rec = read_run(tmp_path / "out" / "run.json")
    assert rec["status"] == "done" and rec["command"] == "x train"
    assert rec["inputs"] == [{"path": str(data), "bytes": data.stat().st_size}]
    assert rec["stages"]["first"]["config"] == {"k": 1}
    assert [rec["stages"][s]["results"]["n"] for s in ("first", "second")] == [5, 6]
    assert rec["results"] == {"score": 0.25}
    assert config_from_run(tmp_path / "out" / "run.json") == cfg
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["run.json"]


def test_failed_run_leaves_no_folder_and_a_file_is_not_replaced(tmp_path):
    with pytest.raises(RuntimeError), RunDir(tmp_path / "new", command="x"):
        raise RuntimeError("boom")
    assert not (tmp_path / "new").exists()
    user_file = tmp_path / "mine.txt"
    user_file.write_text("precious")
    with pytest.raises(InputError, match="expected an output folder, found a file"):
        with RunDir(user_file, command="x"):
            pass
    assert user_file.read_text() == "precious"


def test_failed_run_with_markers_is_resumable(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt), RunDir(out, command="x") as run:
        run.mark("shard-1", {"n": 1})
        raise KeyboardInterrupt
    assert read_run(out)["status"] == "failed"
    with RunDir(out, command="x") as run:
        assert run.done("shard-1") and run.marker("shard-1") == {"n": 1}
        assert not run.done("shard-2")


def test_file_output_record_sits_beside_the_file(tmp_path):
    out = tmp_path / "pred.csv"
    with RunDir(out, command="x predict", file_output=True) as run:
        out.write_text("a\n")
        run.record(n=1)
    assert read_run(tmp_path / "pred.csv.run.json")["results"] == {"n": 1}
    with pytest.raises(InputError, match="expected an output file, found a folder"):
        with RunDir(tmp_path, command="x", file_output=True):
            pass


def test_only_the_chief_writes(tmp_path, monkeypatch):
    cluster = {"worker": ["localhost:1", "localhost:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert not is_chief()
    with RunDir(tmp_path / "out", command="x") as run:
        run.file("model.txt").write_text("worker copy")
        private = run.path
    assert not (tmp_path / "out").exists() and not private.exists()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {**cluster, "chief": ["h:3"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert not is_chief()


def test_card_round_trip_and_refusal(tmp_path):
    card = _card(metrics={"test": {"gap": 0.1}})
    assert ModelCard.from_dict(json.loads(json.dumps(card.to_dict()))) == card
    model = tmp_path / "model.keras"
    model.write_bytes(b"x")
    card_path(model).write_text(json.dumps(card.to_dict()))
    assert read_card(model, expect="molecules").outputs == {"gap": {"unit": "eV"}}
    with pytest.raises(InputError) as e:
        read_card(model, expect="variants")
    assert str(e.value) == f"expected a variants model, found a molecules model ({model})"
    card_path(model).write_text(json.dumps({**card.to_dict(), "schema": "other"}))
    with pytest.raises(InputError, match="schema"):
        read_card(model)
    card_path(model).unlink()
    with pytest.raises(InputError, match="model card model.card.json"):
        read_card(model)


def test_saved_model_loads_with_its_card_and_a_damaged_file_is_one_error(tmp_path):
    import keras
    import numpy as np

    from deepsci.core.models.serialization import load_model, save_model

    m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = save_model(m, tmp_path / "model.keras", card=_card(app="variants"))
    loaded, card = load_model(path, expect="variants")
    x = np.ones((2, 3), "float32")
    np.testing.assert_allclose(loaded(x), m(x), rtol=1e-6)
    assert card.app == "variants" and card.deepsci_version and card.created
    with pytest.raises(InputError, match="expected a molecules model, found a variants model"):
        load_model(path, expect="molecules")
    path.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="does not load"):
        load_model(path, expect="variants")


def test_chief_check_ignores_absent_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert is_chief() and os.environ.get("TF_CONFIG") is None
