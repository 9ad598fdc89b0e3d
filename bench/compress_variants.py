"""Issue #15 table for variants: ensemble, single, distilled student (fp32, int8), hard-label.

Everything is the product's: ``variants simulate`` (the bench's simulation: planted SNPs and
indels, 2x150 bp reads, BWA-MEM), ``train`` (the recipe, ``--ensemble``) for the teacher,
``distill`` for the student, ``train --examples`` with the student's width for the
hard-label control, ``export --quantize int8`` for the LiteRT rows, ``call-variants`` +
``postprocess-variants`` + ``evaluate`` (hap.py conventions) for SNP/INDEL F1 on the
held-out part of the genome, ``bcftools call -m`` on the same BAM as the peer, and
``deepsci variants run`` in a fresh process timed beside bcftools (the issue's wall-time goal).

Columns: F1 of the held-out region; items/s = pileups per second of the classifier alone
(probabilities of held-out pileups, batch 64, all cores, best of interleaved repeats: every
model runs once per repeat, in turn); bytes = model file(s); flops = floating-point
operations per pileup counted by TensorFlow's profiler on the frozen float graph (a LiteRT
row has its source model's count: the same arithmetic, in 8-bit integers); startup_s =
loading the model(s) and the first batch in this process (TensorFlow already imported).

``quick=True``: a 60 kb random genome, 2 teacher members of width 8 and students of
width 4, 2 epochs (minutes on 2 cores). Full: 240 kb of real C. elegans chromosome I as the
shipped model's build (``../shared/data/genomics/ce.fa``), the first 160 kb trained with
recipe D (1 replicate), a 3-member teacher of width 16 and students of width 8, 8 epochs.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("DEEPSCI_PROGRESS", "0")

CE = Path(__file__).resolve().parents[2] / "shared" / "data" / "genomics" / "ce.fa"


def _settings(quick: bool) -> dict:
    from deepsci.apps.variants.recipe import RecipeConfig

    if quick:
        return {"length": 60_000, "train_bp": 36_000, "members": 2, "width": 8, "student": 4,
                "epochs": 2, "batch": 16, "repeats": 3, "n_items": 256,
                "recipe": RecipeConfig(downsample=(1.0,), replicates=0, val_fraction=0.2)}
    return {"length": 240_000, "train_bp": 160_000, "members": 3, "width": 16, "student": 8,
            "epochs": 8, "batch": 32, "repeats": 5, "n_items": 1024,
            "recipe": RecipeConfig(replicates=1)}


def _genome(work: Path, s: dict, quick: bool) -> tuple[str, str]:
    from deepsci.apps.variants import io as vio
    from deepsci.apps.variants.synth import random_genome

    if quick or not CE.exists():
        genome, origin = random_genome(s["length"], seed=0), f"random genome {s['length']} bp"
    else:
        fa = vio.open_fasta(str(CE))
        genome = {"CHROMOSOME_I": fa.fetch("CHROMOSOME_I", 0, s["length"]).upper()}
        origin = f"C. elegans CHROMOSOME_I:1-{s['length']}"
    vio.write_fasta(genome, work / "source.fa")
    return str(work / "source.fa"), origin


def _score(work: Path, sim: dict, examples: Path, model: str, name: str, bed: Path) -> dict:
    """SNP/INDEL F1 of ``model`` on the held-out examples (call-variants -> VCF -> evaluate)."""
    from deepsci.apps.variants.evaluate import EvaluateConfig, evaluate_calls
    from deepsci.apps.variants.postprocess import PostprocessConfig, postprocess_variants
    from deepsci.apps.variants.predict import CallConfig, call_variants
    from deepsci.apps.variants.release import f1_table

    out = work / "calls" / name
    out.mkdir(parents=True, exist_ok=True)
    call_variants(CallConfig(examples=str(examples), model=model, out=str(out / "calls.tsv.gz")))
    postprocess_variants(PostprocessConfig(calls=str(out / "calls.tsv.gz"), ref=sim["ref"],
                                           out=str(out / "calls.vcf.gz")))
    return _f1(evaluate_calls(EvaluateConfig(calls=str(out / "calls.vcf.gz"), truth=sim["truth"],
                                             ref=sim["ref"], confident_bed=str(bed),
                                             out=str(out / "summary.csv"))), f1_table)


def _f1(rows, f1_table) -> dict:
    t = f1_table(rows)
    return {"snp_f1": (t.get("SNP") or {}).get("f1"), "indel_f1": (t.get("INDEL") or {}).get("f1"),
            "snp_tp_fp_fn": "/".join(str((t.get("SNP") or {}).get(k)) for k in ("tp", "fp", "fn")),
            "indel_tp_fp_fn": "/".join(str((t.get("INDEL") or {}).get(k))
                                       for k in ("tp", "fp", "fn"))}


def _flops(paths) -> int:
    """Float operations per pileup of the Keras model(s), TensorFlow's profiler on the frozen graph."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    from deepsci.apps.variants.model import INPUT_SHAPE, load_genotype_model

    total = 0
    for p in paths:
        model, _ = load_genotype_model(p)
        fn = tf.function(lambda x, m=model: m(x, training=False)).get_concrete_function(
            tf.TensorSpec((1, *INPUT_SHAPE), tf.float32))
        graph = convert_variables_to_constants_v2(fn).graph
        opts = (tf.compat.v1.profiler.ProfileOptionBuilder(
            tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()).with_empty_output().build())
        total += int(tf.compat.v1.profiler.profile(graph=graph, cmd="op", options=opts).total_float_ops)
    return total


def _timed(models: dict, x, repeats: int) -> tuple[dict, dict]:
    """Start-up (load + first batch) and best items/s over interleaved repeats."""
    from deepsci.apps.variants.predict import load_genotype_ensemble

    loaded, startup = {}, {}
    for name, spec in models.items():
        t0 = time.perf_counter()
        loaded[name] = load_genotype_ensemble(spec, 64)      # traces on one zero batch
        startup[name] = time.perf_counter() - t0
    best = {name: 0.0 for name in models}
    for _ in range(repeats):
        for name, ens in loaded.items():
            t0 = time.perf_counter()
            ens.predict(x)
            best[name] = max(best[name], len(x) / (time.perf_counter() - t0))
    return best, startup


def _wall_run(sim: dict, model: str, region: str, out: Path) -> float:
    """``deepsci variants run`` as a user runs it: a fresh process, imports included."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "deepsci.apps.cli", "variants", "run", "--reads", sim["bam"],
           "--ref", sim["ref"], "--model", model, "--out", str(out), "--regions", region,
           "--shards", "2", "--scheduler", "inline"]
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "DEEPSCI_PROGRESS": "0"})
    return time.time() - t0


def _train_all(work: Path, s: dict, sim: dict, train_reg: str) -> dict:
    """Teacher ensemble (recipe), distilled student, hard-label student, int8 exports."""
    from deepsci.apps.variants.compress import EXPORT, DistillConfig, VariantsExportConfig, distill
    from deepsci.apps.variants.train import TrainVariantsConfig, train_variants
    from deepsci.core.compress import DistillSettings, run_export

    t = {}
    t0 = time.time()
    teacher = train_variants(TrainVariantsConfig(
        reads=sim["bam"], ref=sim["ref"], truth_vcf=sim["truth"], confident_bed=sim["bed"],
        regions=train_reg, out_dir=str(work / "teacher"), recipe=s["recipe"], scheduler="inline",
        ensemble=s["members"], epochs=s["epochs"], batch_size=s["batch"], width=s["width"]),
        progress=False)
    t["teacher"] = time.time() - t0
    ex, val = ",".join(teacher["examples"]), ",".join(teacher["val_examples"]) or None
    common = {"epochs": s["epochs"], "batch_size": s["batch"], "width": s["student"]}
    t0 = time.time()
    student = distill(DistillConfig(distill=DistillSettings(teacher=teacher["model"]),
                                    examples=ex, val_examples=val, out_dir=str(work / "student"),
                                    **common))
    t["distill"] = time.time() - t0
    t0 = time.time()
    hard = train_variants(TrainVariantsConfig(examples=ex, val_examples=val, af_augment=0.0,
                                              out_dir=str(work / "hard"), **common), progress=False)
    t["hard-label"] = time.time() - t0
    exports = {}
    for name, src in (("student", student["model"]), ("single", teacher["members"][0])):
        out = work / f"{name}_int8.tflite"
        if not out.exists():
            exports[name] = run_export(VariantsExportConfig(model=src, out=out, batch_size=64,
                                                            inputs=Path(ex.split(",")[0])).validate(),
                                       EXPORT, overwrite=True)
        else:
            exports[name] = json.loads(out.with_name(out.name + ".run.json").read_text())["results"]
    return {"teacher": teacher, "student": student["model"], "hard": hard["model"],
            "student_int8": str(work / "student_int8.tflite"),
            "single_int8": str(work / "single_int8.tflite"), "exports": exports, "seconds": t}


def rows(quick: bool = False, work: str | os.PathLike | None = None) -> dict:
    """The bench table of issue #15 for variants (see the module docstring)."""
    from deepsci.apps.variants import io as vio
    from deepsci.apps.variants.baselines import bcftools_call
    from deepsci.apps.variants.compress import draw
    from deepsci.apps.variants.evaluate import EvaluateConfig, evaluate_calls
    from deepsci.apps.variants.make_examples import MakeExamplesConfig, make_examples
    from deepsci.apps.variants.release import f1_table
    from deepsci.apps.variants.synth import SimulateConfig, simulate
    from deepsci.core.ensemble import model_paths

    s = _settings(quick)
    work = Path(work or f"/tmp/deepsci-bench-compress-variants{'-quick' if quick else ''}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    fasta, origin = _genome(work, s, quick)
    sim = simulate(SimulateConfig(out_dir=str(work / "sim"), fasta=fasta, coverage=30.0,
                                  read_length=150, seed=0, **({"snp_rate": 5e-3, "indel_rate": 1e-3}
                                                              if quick else {})))
    contig, end = "chr1" if quick else "CHROMOSOME_I", s["length"] - 200
    train_reg, test_reg = f"{contig}:1-{s['train_bp']}", f"{contig}:{s['train_bp'] + 1}-{end}"
    bed = vio.write_bed([(contig, s["train_bp"], end)], work / "test.bed")
    m = _train_all(work, s, sim, train_reg)
    test_ex = work / "test_examples"
    make_examples(MakeExamplesConfig(reads=sim["bam"], ref=sim["ref"], out_dir=str(test_ex),
                                     regions=test_reg, scheduler="inline", gvcf=False),
                  progress=False)
    models = {"teacher ensemble (fp32, Keras)": m["teacher"]["model"],
              "single model (fp32, Keras)": m["teacher"]["members"][0],
              "single model int8 (LiteRT)": m["single_int8"],
              "distilled student (fp32, Keras)": m["student"],
              "distilled student int8 (LiteRT)": m["student_int8"],
              "hard-label student (fp32, Keras)": m["hard"]}
    keras_src = {"single model int8 (LiteRT)": m["teacher"]["members"][0],
                 "distilled student int8 (LiteRT)": m["student"]}
    x = draw(test_ex, s["n_items"], 0)
    speed, startup = _timed(models, x, s["repeats"])
    out = []
    for i, (name, spec) in enumerate(models.items()):
        paths = model_paths(spec)
        out.append({"model": name, **_score(work, sim, test_ex, spec, f"m{i}", bed),
                    "items_per_s": round(speed[name], 1),
                    "bytes": sum(p.stat().st_size for p in paths),
                    "flops": _flops(model_paths(keras_src.get(name, spec))),
                    "startup_s": round(startup[name], 3)})
    bcf = bcftools_call(sim["bam"], sim["ref"], work / "bcftools.vcf.gz", regions=test_reg)
    out.append({"model": "bcftools call -m (peer)", **_f1(evaluate_calls(EvaluateConfig(
        calls=str(bcf), truth=sim["truth"], ref=sim["ref"], confident_bed=str(bed),
        out=str(work / "bcftools.csv"))), f1_table)})
    return {"app": "variants", "rows": out,
            "notes": _notes(work, sim, m, s, origin, train_reg, test_reg, out)}


def _notes(work, sim, m, s, origin, train_reg, test_reg, out) -> list[str]:
    from deepsci.apps.variants.baselines import bcftools_call
    from deepsci.core.compress import DistillSettings

    _D = DistillSettings()  # noqa: N806 - the settings the student was distilled with
    by = {r["model"]: r for r in out}
    walls = {"deepsci run (int8 student)": [], "deepsci run (fp32 single)": [], "bcftools": []}
    for _ in range(2 if s["repeats"] < 5 else 3):       # interleaved; best of each
        walls["deepsci run (int8 student)"].append(
            _wall_run(sim, m["student_int8"], test_reg, work / "e2e_int8"))
        walls["deepsci run (fp32 single)"].append(
            _wall_run(sim, m["teacher"]["members"][0], test_reg, work / "e2e_fp32"))
        t0 = time.time()
        bcftools_call(sim["bam"], sim["ref"], work / "bcf_timed.vcf.gz", regions=test_reg)
        walls["bcftools"].append(time.time() - t0)
    best = {k: min(v) for k, v in walls.items()}
    st, st8 = by["distilled student (fp32, Keras)"], by["distilled student int8 (LiteRT)"]
    sg, sg8 = by["single model (fp32, Keras)"], by["single model int8 (LiteRT)"]
    return [
        f"data: {origin}, {sim['n_snps']} SNPs + {sim['n_indels']} indels planted, 30x 2x150 bp, "
        f"BWA-MEM; teacher trained on {train_reg} (recipe {s['recipe']}), scored on {test_reg}",
        f"teacher: {s['members']} members width {s['width']}; students width {s['student']}, "
        f"{s['epochs']} epochs, T={_D.temperature:g}, alpha={_D.alpha:g} (distill defaults); "
        "hard-label student: "
        "train --examples on the same examples, no allele-fraction augmentation (as distill)",
        f"int8 / fp32 Keras throughput, same model and batch: student "
        f"{st8['items_per_s'] / st['items_per_s']:.2f}x, single {sg8['items_per_s'] / sg['items_per_s']:.2f}x; "
        f"file size fp32 .keras / int8 .tflite: student {st['bytes'] / st8['bytes']:.2f}x, "
        f"single {sg['bytes'] / sg8['bytes']:.2f}x",
        "int8 export check (share of genotypes changed on held-out training pileups): "
        + ", ".join(f"{k} {v['difference']:.4f} (float ops: {', '.join(v['float_ops']) or 'none'})"
                    for k, v in m["exports"].items()),
        "end-to-end `deepsci variants run --shards 2` on the held-out region, best wall s of "
        "interleaved repeats: " + ", ".join(f"{k} {v:.1f}" for k, v in best.items())
        + f"; int8 student / bcftools = {best['deepsci run (int8 student)'] / best['bcftools']:.2f}x"
        f", fp32 single / bcftools = {best['deepsci run (fp32 single)'] / best['bcftools']:.2f}x",
        f"training seconds: {json.dumps({k: round(v, 1) for k, v in m['seconds'].items()})}",
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end",
    ]


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    print(json.dumps(rows(quick=quick), indent=1, default=str))
