"""variants export (LiteRT) and distill, through the CLI, on tiny data the tests make.

Tolerances (probabilities of the tiny models, which sit near 1/3 each, so a genotype flip
needs only a tiny change): float16 within 2e-3 of Keras, int8 within 0.05 (8-bit activations
of a barely trained net).
"""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from deepsci.apps.cli import main


def _probs(path) -> dict:
    """``(contig, pos, alts) -> (P(hom-ref), P(het), P(hom-alt))`` of a calls.tsv.gz."""
    out = {}
    with gzip.open(path, "rt") as f:
        for line in f:
            if line.startswith("#"):
                continue
            p = line.rstrip("\n").split("\t")
            out[(p[0], p[1], p[3], p[4])] = np.array([float(x) for x in p[7:10]])
    return out


def _one_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _other_member(trained, out, seed: int) -> None:
    """A second teacher member at no training cost: the same network (width 4) initialised
    with another seed, under the trained member's card. Its outputs differ from member 0's,
    so the ensemble's mean is not either member's alone."""
    import dataclasses

    import keras

    from deepsci.apps.variants.model import build_model
    from deepsci.core.models.card import read_card
    from deepsci.core.models.serialization import save_model

    card = read_card(trained)
    card = dataclasses.replace(card, extra={**card.extra, "member": 1},
                               training={**card.training, "seed": seed, "steps": 0})
    keras.utils.set_random_seed(seed)
    save_model(build_model("small", width=4), out, card=card)


@pytest.fixture(scope="module")
def setup(tiny_sim, tmp_path_factory):
    """Labelled examples of the tiny simulation and a 2-member tiny teacher: member 0 trained
    (one epoch) by ``variants train``, member 1 the same network with another seed."""
    from deepsci.core.ensemble import write_ensemble

    root = tmp_path_factory.mktemp("variants_compress")
    ex = root / "ex"
    assert main(["variants", "make-examples", "--reads", tiny_sim["bam"], "--ref",
                 tiny_sim["ref"], "--out", str(ex), "--truth-vcf", tiny_sim["truth"],
                 "--confident-bed", tiny_sim["bed"], "--scheduler", "inline"]) == 0
    teacher = root / "teacher"
    members = [teacher / f"member_{k}" / "model.keras" for k in (0, 1)]
    assert main(["variants", "train", "--examples", str(ex), "--out", str(members[0].parent),
                 "--epochs", "1", "--width", "4", "--batch-size", "8", "--af-augment", "0",
                 "--progress", "off"]) == 0
    _other_member(members[0], members[1], seed=1)
    write_ensemble(teacher, members, info={"seeds": [0, 1]})
    return {"root": root, "ex": ex, "members": members}


@pytest.fixture(scope="module")
def exported(setup):
    """member_0 as int8 and float16 LiteRT files (calibrated on the examples)."""
    out = {}
    for q in ("int8", "float16"):
        path = setup["root"] / f"m_{q}.tflite"
        assert main(["variants", "export", str(setup["members"][0]), "--out", str(path),
                     "--quantize", q, "--inputs", str(setup["ex"]), "--samples", "12",
                     "--check", "8", "--batch-size", "8", "--tolerance", "1"]) == 0
        out[q] = path
    return out


def test_call_variants_takes_tflite_and_matches_keras(setup, exported, tmp_path):
    calls = {}
    for name, model in [("keras", setup["members"][0]), *exported.items()]:
        out = tmp_path / f"{name}.tsv.gz"
        assert main(["variants", "call-variants", "--examples", str(setup["ex"]), "--model",
                     str(model), "--out", str(out), "--batch-size", "5"]) == 0
        calls[name] = _probs(out)
    ref = calls["keras"]
    assert len(ref) >= 10
    for name, tol in (("float16", 2e-3), ("int8", 0.05)):
        assert calls[name].keys() == ref.keys()
        worst = max(float(np.abs(calls[name][k] - ref[k]).max()) for k in ref)
        assert worst <= tol, (name, worst)
        np.testing.assert_allclose(sum(calls[name].values()).sum(), len(ref), rtol=1e-4)
    card = json.loads(exported["int8"].with_name("m_int8.card.json").read_text())
    lite = card["extra"]["litert"]
    assert card["app"] == "variants" and lite["quantize"] == "int8" and lite["batch_size"] == 8
    run = json.loads(exported["int8"].with_name("m_int8.tflite.run.json").read_text())["results"]
    assert run["calibration_rows"] == 12 and run["check_rows"] >= 4
    assert run["measure"] == "share of genotypes changed" and run["difference"] <= 0.5
    # 1-byte weights against 2-byte ones (a tiny net: graph overhead hides the 2x).
    assert exported["int8"].stat().st_size < exported["float16"].stat().st_size


def test_run_with_shards_takes_tflite(tiny_sim, setup, exported, tmp_path):
    out = tmp_path / "run"
    assert main(["variants", "run", "--reads", tiny_sim["bam"], "--ref", tiny_sim["ref"],
                 "--model", str(exported["float16"]), "--out", str(out), "--shards", "2",
                 "--scheduler", "inline", "--regions", "chr1:1-12000"]) == 0
    assert (out / "calls.vcf.gz").exists()
    assert main(["variants", "call-variants", "--examples", str(out / "examples"), "--model",
                 str(setup["members"][0]), "--out", str(tmp_path / "k.tsv.gz")]) == 0
    got, ref = _probs(out / "calls.tsv.gz"), _probs(tmp_path / "k.tsv.gz")
    assert got.keys() == ref.keys() and len(ref) >= 10
    assert max(float(np.abs(got[k] - ref[k]).max()) for k in ref) <= 2e-3


def test_distill_records_teacher_and_resumes_its_cache(setup, tmp_path, monkeypatch, capsys):
    import keras

    from deepsci.apps.variants import compress

    monkeypatch.setattr(compress, "CHUNK", 8)           # several cache shards from ~20 examples
    out = tmp_path / "student"
    teacher = ",".join(str(m) for m in setup["members"])
    args = ["variants", "distill", "--teacher", teacher, "--examples", str(setup["ex"]),
            "--out", str(out), "--width", "4", "--blocks", "1,0,1", "--epochs", "1",
            "--batch-size", "8", "--temperature", "2.5", "--alpha", "0.6", "--progress", "off"]
    assert main(args) == 0
    card = json.loads((out / "model.card.json").read_text())
    d = card["training"]["distillation"]
    assert d["teacher"] == [str(m) for m in setup["members"]]
    assert (d["temperature"], d["alpha"]) == (2.5, 0.6)
    assert d["student"] == {"variant": "small", "width": 4, "blocks": [1, 0, 1]}
    # The cache holds the members' mean of softmax(logits / T), in the examples' order.
    cache = out / "teacher-cache" / "train"
    shards = sorted(cache.glob("shard-*.npz"))
    assert len(shards) >= 2
    x = compress.read_images(compress.example_files(setup["ex"])).astype("float32")
    soft = np.mean([keras.ops.softmax(keras.saving.load_model(m)(x)["genotype"] / 2.5).numpy()
                    for m in setup["members"]], axis=0)
    got = np.concatenate([np.load(s)["genotype"] for s in shards])
    np.testing.assert_allclose(got, soft, atol=1e-5)
    # Resume: only the removed shard is computed again; the others are not touched.
    stamps = {s.name: s.stat().st_mtime_ns for s in shards}
    shards[1].unlink()
    assert main(args) == 0
    again = {s.name: s.stat().st_mtime_ns for s in sorted(cache.glob("shard-*.npz"))}
    assert again.keys() == stamps.keys()
    assert all(again[k] == stamps[k] for k in stamps if k != shards[1].name)
    np.testing.assert_allclose(np.load(shards[1])["genotype"], got[8:16], atol=1e-6)
    # The student is a normal genotype model: call-variants takes it.
    calls = tmp_path / "s.tsv.gz"
    assert main(["variants", "call-variants", "--examples", str(setup["ex"]), "--model",
                 str(out), "--out", str(calls)]) == 0
    assert len(_probs(calls)) == len(x)
    # Another teacher in the same folder is refused rather than mixed in.
    capsys.readouterr()
    assert main([*args[:3], str(setup["members"][0]), *args[4:]]) == 2
    assert "same teacher" in _one_error(capsys)


def test_corrupt_or_foreign_tflite_is_one_line(setup, exported, tmp_path, capsys):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"TFL3 not a flatbuffer" * 10)
    bad.with_name("bad.card.json").write_text(
        exported["int8"].with_name("m_int8.card.json").read_text())
    foreign = tmp_path / "mol.tflite"
    foreign.write_bytes(exported["int8"].read_bytes())
    card = json.loads(exported["int8"].with_name("m_int8.card.json").read_text())
    foreign.with_name("mol.card.json").write_text(json.dumps({**card, "app": "molecules",
                                                              "task": "qm9-properties"}))
    for model, want in ((bad, "does not load"), (foreign, "found a molecules model")):
        capsys.readouterr()
        assert main(["variants", "call-variants", "--examples", str(setup["ex"]), "--model",
                     str(model), "--out", str(tmp_path / "o.tsv.gz")]) == 2
        assert want in _one_error(capsys)
    # export takes one model: an ensemble folder is refused, nothing is written.
    capsys.readouterr()
    assert main(["variants", "export", str(setup["root"] / "teacher"), "--out",
                 str(tmp_path / "e.tflite"), "--inputs", str(setup["ex"])]) == 2
    assert "ensemble of 2" in _one_error(capsys)
    assert not (tmp_path / "e.tflite").exists()
