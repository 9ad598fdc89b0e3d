"""Each bench script records the goal rows it measures under the metric names stored in
bench/results/<app>.json, so that a rerun replaces its rows in place.

The row builders (``result_rows``) are pure functions of a run's figures: they are fed here
with hand-made figures (those of the stored rows), without TensorFlow or a benchmark run.
"""
import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
STAMP = {"commit": "abcdef0", "date": "2026-01-01"}


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rr = _load("render_results")
retinopathy, pathology, variants, molecules, core = (
    _load(n) for n in ("retinopathy", "pathology", "variants", "molecules", "core"))


def _stored(app: str) -> dict:
    return json.loads((BENCH / "results" / f"{app}.json").read_text(encoding="utf-8"))


def _valid(app: str, rows: list[dict], command: str = "python bench/x.py") -> list[dict]:
    """``rows`` as ``write_app_results`` stores them, checked against the results schema."""
    full = [{**row, "command": command, **STAMP} for row in rows]
    rr.validate({"app": app, "machine": "2 CPU cores", "rows": full})
    return full


def _metrics(rows):
    return [row["metric"] for row in rows]


# ----------------------------------------------------------------------------- retinopathy

RETINOPATHY = {
    "accuracy": {"n": 200, "members": 3, "width": 16, "size": 128, "auc": 0.9978,
                 "auc_ci_low": 0.9937, "auc_ci_high": 1.0, "kappa": 0.946912,
                 "high_sensitivity": {"sensitivity": 0.97, "specificity": 0.97},
                 "high_specificity": {"sensitivity": 0.949, "specificity": 1.0}},
    "preprocessing": {"images_per_s": 27.94, "per_cpu_s": 28.09, "peer_images_per_s": 6.621},
}
RETINOPATHY_METRICS = [
    "referable-DR ROC AUC (95 % CI), held-out synthetic set (200 photographs), ensemble of 3 "
    "small Inceptions (width 16, 128 px)",
    "sensitivity / specificity at the high-sensitivity operating point (chosen on validation "
    "patients)",
    "sensitivity / specificity at the high-specificity operating point (chosen on validation "
    "patients)",
    "quadratic weighted kappa of the ICDR grade, held-out synthetic set",
    "preprocessing, 1411-px JPEG photographs, 1 thread (decode, field of view, crop, rescale, "
    "contrast, gradability, cache)",
]


def test_retinopathy_rows():
    rows = _valid("retinopathy", retinopathy.result_rows(RETINOPATHY))
    assert _metrics(rows) == RETINOPATHY_METRICS
    assert rows[0]["deepsci"] == "0.9978 (0.9937–1.0000)" and rows[0]["met"] is True
    assert rows[1]["deepsci"] == "97.0 % / 97.0 %" and rows[1]["met"] is None
    assert rows[3]["deepsci"] == 0.9469
    assert rows[4]["deepsci"] == "27.94 images/s (28.09 per CPU-s)" and rows[4]["met"] is True
    bad = copy.deepcopy(RETINOPATHY)
    bad["accuracy"]["auc"], bad["preprocessing"]["images_per_s"] = 0.9799, 19.9
    rows = _valid("retinopathy", retinopathy.result_rows(bad))
    assert [rows[0]["met"], rows[4]["met"]] == [False, False]


def test_retinopathy_skip_accuracy_records_preprocessing_only():
    rows = retinopathy.result_rows({**RETINOPATHY, "accuracy": None})
    assert _metrics(rows) == RETINOPATHY_METRICS[-1:]


def test_retinopathy_one_member_is_named():
    acc = {**RETINOPATHY["accuracy"], "members": 1}
    metric = retinopathy.result_rows({**RETINOPATHY, "accuracy": acc})[0]["metric"]
    assert "(200 photographs), one small Inception (width 16, 128 px)" in metric


def test_retinopathy_command_leaves_out_scratch_paths():
    argv = ["--ensemble", "3", "--work", "/tmp/w", "--no-record", "--out=/tmp/r.md"]
    assert retinopathy.record_command(argv) == "python bench/retinopathy.py --ensemble 3"


# ----------------------------------------------------------------------------- pathology

PATHOLOGY_ACCURACY = {"froc": 1.0, "slide_auc": 1.0, "slides": 13, "test_normal": 5,
                      "test_tumour": 5, "test_small": 3, "small_lesions": 2,
                      "small_radius_um": (90.0, 120.0), "normal_max": 0.86, "tumour_min": 1.0}
PATHOLOGY_HEATMAP = [
    {"variant": variant, "patch": patch, "mode": mode, "pct": pct, "tiles_per_s": tps,
     "peak": peak, "slides": 8, "size": 2048, "v3_slides": 4}
    for variant, patch, mode, pct, tps, peak in [
        ("small", 96, "1 process, cold", 40.65, 646.8, 192.9),
        ("small", 96, "1 process, warm (same session)", 38.73, 612.6, 191.8),
        ("small", 96, "2 Dask workers, cold (cluster per run)", 31.03, 443.5, 173.3),
        ("small", 96, "2 Dask workers, warm (running cluster)", 41.63, 682.7, 198.8),
        ("v3", 299, "1 process, cold", 61.94, 10.67, 196.8),
        ("v3", 299, "1 process, warm (same session)", 68.33, 11.82, 197.7),
        ("v3", 299, "2 Dask workers, cold (cluster per run)", 52.02, 9.051, 198.7),
        ("v3", 299, "2 Dask workers, warm (running cluster)", 75.46, 12.83, 194.2)]]
PATHOLOGY_METRICS = [
    "Camelyon16 FROC (official rule, ITC excluded), 13 held-out synthetic slides (5 normal, 5 "
    "with training-like metastases, 3 with two 90–120 µm metastases each)",
    "slide-level ROC AUC, the same 13 held-out slides (normal slides' heatmap maximum up to "
    "0.86: a margin of about 0.14)",
] + [f"heatmap throughput end to end, {model}, {mode}, 8 synthetic 2048² slides (v3: 4), share "
     "of the matmul peak"
     for model in ("small Inception (96 px)", "Inception-v3 (299 px)")
     for mode in ("1 process, cold", "1 process, warm (same session)",
                  "2 Dask workers, cold (cluster per run)", "2 Dask workers, warm (running cluster)")]


def test_pathology_rows():
    rows = _valid("pathology", pathology.result_rows(
        {"accuracy": PATHOLOGY_ACCURACY, "heatmap": PATHOLOGY_HEATMAP}))
    assert _metrics(rows) == PATHOLOGY_METRICS
    assert [row["met"] for row in rows] == [True, True, True, False, False, True, True, True,
                                            True, True]
    assert rows[2]["deepsci"] == "40.65 % (646.8 tiles/s)"
    assert rows[8]["deepsci"] == "52.02 % (9.051 tiles/s)"
    assert rows[2]["peer"] == "float32 matmul peak 192.9 GFLOP/s, measured beside the row"
    bad = {**PATHOLOGY_ACCURACY, "froc": 0.89, "slide_auc": 0.96, "tumour_min": 0.8}
    rows = _valid("pathology", pathology.result_rows({"accuracy": bad, "heatmap": []}))
    assert [row["met"] for row in rows] == [False, False]
    assert rows[1]["metric"].endswith("up to 0.86: the lowest tumour slide at 0.80)")


def test_pathology_records_only_what_ran():
    # --skip-heatmap: the accuracy rows; --skip-accuracy --skip-v3: the small model's rows
    assert _metrics(pathology.result_rows({"accuracy": PATHOLOGY_ACCURACY, "heatmap": []})) \
        == PATHOLOGY_METRICS[:2]
    assert _metrics(pathology.result_rows({"accuracy": None, "heatmap": PATHOLOGY_HEATMAP[:4]})) \
        == PATHOLOGY_METRICS[2:6]
    assert pathology.result_rows({"accuracy": None, "heatmap": []}) == []


def test_pathology_command_keeps_the_empty_width_sweep():
    argv = ["--skip-accuracy", "--skip-reading", "--width-sweep", "", "--skip-breakdown",
            "--results", "/tmp/p.md", "--no-record"]
    assert pathology.record_command(argv) == ("python bench/pathology.py --skip-accuracy "
                                              "--skip-reading --width-sweep '' --skip-breakdown")


# ----------------------------------------------------------------------------- variants

def _scores(snp, snp_counts, indel, indel_counts):
    return {"SNP F1": snp, "SNP TP/FP/FN": snp_counts, "INDEL F1": indel,
            "INDEL TP/FP/FN": indel_counts}


VARIANTS = {
    "genome": "C. elegans chromosome I", "coverage": 30.0, "homopolymer_slip": 2e-4, "seed": 0,
    "models": 1, "recipe": "recipe D", "cores": 2, "loads": [1.0, 1.1, 1.2],
    "scores": {"deepsci": _scores("1.00000", "492/0/0", "1.00000", "33/0/0"),
               "bcftools": _scores("1.00000", "492/0/0", "0.94286", "33/3/1"),
               "freebayes": _scores("1.00000", "492/0/0", "0.72527", "30/9/3")},
    "walls": {"deepsci": [12.16, 13.1, 12.4], "bcftools": [3.51, 3.9, 3.6],
              "freebayes": [2.67, 3.11, 2.9]},
}
VARIANTS_METRICS = [
    "SNP F1, test half of the simulated C. elegans chromosome I (30x, homopolymer slippage), "
    "simulation seed 0, one model (recipe D)",
    "INDEL F1, the same test half, simulation seed 0, one model (recipe D)",
    "wall time of `deepsci variants run` (fresh process) vs bcftools mpileup + call -m, seed 0 "
    "test half, one model (recipe D), best of 3, quiet machine",
]


def test_variants_rows():
    rows = _valid("variants", variants.result_rows(VARIANTS))
    assert _metrics(rows) == VARIANTS_METRICS
    assert rows[0]["deepsci"] == "1.00000 (TP/FP/FN 492/0/0)"
    assert rows[0]["goal"] == (">= 0.999 and above bcftools and freebayes (the peers are perfect: "
                               "a tie is the best possible)")
    assert rows[1]["deepsci"] == "1.00000 (33/0/0)"
    assert rows[1]["peer"] == "bcftools 0.94286 / freebayes 0.72527"
    assert rows[1]["goal"] == ">= 0.99 and above bcftools and freebayes"
    assert rows[2]["deepsci"] == "12.16 s = 3.46× bcftools"
    assert rows[2]["peer"] == "bcftools 3.51 s (freebayes 2.67–3.11 s)"
    assert [row["met"] for row in rows] == [True, True, True]


def test_variants_met_fails_below_the_goal_or_a_peer():
    bad = copy.deepcopy(VARIANTS)
    bad["scores"]["deepsci"] = _scores("0.99896", "491/0/1", "0.93000", "31/1/2")
    bad["walls"]["deepsci"] = [17.6]
    rows = variants.result_rows(bad)
    assert [row["met"] for row in rows] == [False, False, False]
    # above the goal but below a peer
    bad["scores"]["deepsci"] = _scores("0.99990", "492/0/0", "0.99100", "33/0/0")
    bad["scores"]["bcftools"]["INDEL F1"] = "0.99500"
    assert [row["met"] for row in variants.result_rows(bad)[:2]] == [False, False]


def test_variants_seed_one_rows_and_loaded_machine():
    run = {**VARIANTS, "seed": 1, "loads": [1.5, 2.4], "walls": {**VARIANTS["walls"],
                                                                  "deepsci": [10.7]}}
    rows = variants.result_rows(run)
    assert rows[0]["metric"] == ("SNP F1, test half of the simulated C. elegans chromosome I (30x, "
                                 "homopolymer slippage), simulation seed 1, one model (recipe D)")
    assert rows[1]["metric"] == "INDEL F1, the same test half, simulation seed 1, one model (recipe D)"
    assert rows[2]["metric"].endswith(", seed 1 test half, one model (recipe D), best of 1, shared "
                                      "machine (load average up to 2.4)")


def _training_config(**over):
    config = {"reads": "sim/reads.bam", "epochs": 8, "class_weight": "none", "af_augment": 0.25,
              "af_augment_min_vaf": 0.15, "af_augment_alleles": "snp",
              "recipe": {"downsample": [1.0, 0.7, 0.5], "replicates": 7,
                         "replicate_downsample": [1.0, 0.6], "val_fraction": 0.2}}
    config.update(over)
    return config


def test_variants_recipe_is_named_from_the_model_card(tmp_path):
    assert variants.recipe_label(_training_config()) == "recipe D"
    assert variants.recipe_label(_training_config(af_augment_min_vaf=0.2)) == "recipe C"
    other = _training_config()
    other["recipe"]["replicates"] = 1
    assert variants.recipe_label(other) == "recipe D but replicates 1"
    assert variants.recipe_label(None) == "recipe not recorded"
    model = tmp_path / "member_0" / "model.keras"
    model.parent.mkdir()
    model.write_bytes(b"")
    model.with_suffix(".card.json").write_text(json.dumps(
        {"training": {"config": _training_config(af_augment_min_vaf=0.2)}}))
    assert variants.recipe_label(variants._model_config(str(tmp_path))) == "recipe C"
    assert variants._model_config(f"{model},{model}")["af_augment_min_vaf"] == 0.2


def test_variants_genome_names():
    ce = "C. elegans CHROMOSOME_I (htslib test data)"
    assert variants._genome_name(ce, 1_009_800) == "C. elegans chromosome I"
    assert variants._genome_name(ce + ", first 200000 bp", 200_000) == \
        "C. elegans chromosome I, first 200,000 bp"
    assert variants._genome_name("random genome, 1000000 bp, first 5000 bp", 5000) == \
        "random genome of 5,000 bp"


def test_variants_command_names_the_model_file_model():
    argv = ["--seed", "0", "--reuse", "--repeats", "1", "--model", "/tmp/m/model.keras",
            "--work", "/tmp/v"]
    assert variants.record_command(argv) == ("python bench/variants.py --seed 0 --reuse --repeats 1 "
                                             "--model MODEL")


# ----------------------------------------------------------------------------- molecules

_RATIOS = {"mu": 9.0, "alpha": 8.0, "homo": 3.6, "lumo": 3.7, "gap": 4.9, "r2": 30.0,
           "zpve": 5.5, "u0": 4.3, "u": 4.4, "h": 4.5, "g": 4.6, "cv": 7.0}
_MAES = {"gap": 0.2115, "u0": 0.1856}
MOLECULES = {
    "speed": {"cores": 2, "molecules": 10_000, "batch": 1024, "streams": 2, "dft_molecules": 5,
              "dft_cpu_s": 307.2, "dft_wall_s": 174.9,
              "graphs": {"bond": {"per_s": {"1 stream": 3900.0, "2 streams": 6242.0,
                                            "2 streams + XLA": 7614.0},
                                  "cpu_s": [307.2 / 9.9e5, 307.2 / 1.2e6],
                                  "featurise_per_s": 3762.0,
                                  "wall_s_with_featurisation": 1 / 3762 + 1 / 7614}}},
    "accuracy": {"limit": None, "val": 10_000.0, "test": 10_000.0, "budget_min": 30.0,
                 "steps": 6500, "chemprop_version": "2.3.1",
                 "ours": {n: {"mae": _MAES.get(n, r * 0.043), "unit": "eV", "ratio": r}
                          for n, r in _RATIOS.items()},
                 "chemprop": {n: {"mae": m, "unit": "eV"}
                              for n, m in {"gap": 0.4333, "u0": 402.1}.items()}},
}
MOLECULES_METRICS = [
    "MPNN inference on 2 CPU cores, bond graph, default model, 10,000 QM9 molecules, batch 1024",
    "speed-up of MPNN inference over the DFT it learns, by CPU time (2 streams; 5 QM9 molecules "
    "with 9 heavy atoms for DFT)",
    "the same speed-up by wall time, RDKit featurisation included",
    "HOMO–LUMO gap test MAE, full QM9 (random 10k validation / 10k test split, seed 0), "
    "30-minute CPU budget",
    "U0 test MAE, the same run",
    "targets within chemical accuracy after the 30-minute budget (best ratios: HOMO 3.6, LUMO "
    "3.7, U0 4.3)",
]


def test_molecules_rows():
    rows = _valid("molecules", molecules.result_rows(MOLECULES))
    assert _metrics(rows) == MOLECULES_METRICS
    assert rows[0]["deepsci"] == "7614 molecules/s (2 streams + XLA); 6242 (2 streams)"
    assert rows[0]["peer"] == ("RDKit featurisation of the same molecules: 3762 molecules/s "
                               "(the pipeline's bottleneck)")
    assert rows[1]["deepsci"] == "9.9 × 10⁵ (1.2 × 10⁶ with XLA)"
    assert rows[2]["deepsci"] == "4.4 × 10⁵"
    assert rows[3]["deepsci"] == "0.2115 eV (4.9 × chemical accuracy)"
    assert rows[3]["peer"] == "chemprop 2.3.1, same split and budget: 0.4333 eV"
    assert rows[5]["deepsci"] == "0 of 12"
    assert rows[5]["peer"] == "Gilmer et al. 2017 trained ~3 × 10⁶ steps; this run 6,500"
    assert [row["met"] for row in rows] == [True, True, True, True, True, None]


def test_molecules_met_fails():
    bad = copy.deepcopy(MOLECULES)
    g = bad["speed"]["graphs"]["bond"]
    g["per_s"].update({"2 streams": 4100.0, "2 streams + XLA": 4900.0})
    g["cpu_s"] = [307.2 / 2.9e5, 307.2 / 3.1e5]
    g["wall_s_with_featurisation"] = 174.9 / 2.0e5
    bad["accuracy"]["chemprop"]["gap"]["mae"] = 0.2
    rows = molecules.result_rows(bad)
    assert [row["met"] for row in rows[:5]] == [False, False, False, False, True]


def test_molecules_records_only_what_ran():
    acc = molecules.result_rows({"speed": None, "accuracy": MOLECULES["accuracy"]})
    assert _metrics(acc) == MOLECULES_METRICS[3:]
    speed = molecules.result_rows({"speed": MOLECULES["speed"], "accuracy": None})
    assert _metrics(speed) == MOLECULES_METRICS[:3]
    no_dft = molecules.result_rows({"speed": {**MOLECULES["speed"], "dft_molecules": 0}})
    assert _metrics(no_dft) == MOLECULES_METRICS[:1]
    # without --chemprop there is no peer, so no goal
    solo = molecules.result_rows({"accuracy": {**MOLECULES["accuracy"], "chemprop": None}})
    assert [(row["peer"], row["goal"], row["met"]) for row in solo[:2]] == [(None, None, None)] * 2
    _valid("molecules", solo)


def test_molecules_command_names_chemprop_chemprop():
    argv = ["--skip-speed", "--chemprop", "/tmp/cp/bin/chemprop", "--work=/tmp/m", "--results",
            "/tmp/m.md"]
    assert molecules.record_command(argv) == "python bench/molecules.py --skip-speed --chemprop CHEMPROP"


# ----------------------------------------------------------------------------- core

CORE = {"batch": 32, "size": 299, "repeats": 5, "pct": 89.5, "pct_min": 85.2, "pct_max": 91.0,
        "images_per_s": 16.66, "gflops": 190.3,
        "peak": {"median": 212.7, "min": 205.0, "max": 215.0, "moved": False}}


def test_core_row():
    rows = _valid("core", core.result_rows(CORE))
    assert _metrics(rows) == ["Inception-v3 inference, batch 32, 299 × 299 × 3, share of the "
                              "float32 matmul peak"]
    assert rows[0]["deepsci"].startswith("89.5 % (16.66 images/s, 190.3 GFLOP/s")
    assert rows[0]["met"] is True
    assert core.result_rows({**CORE, "pct": 39.9})[0]["met"] is False
    assert core.record_command(["--repeats", "5", "--no-record"]) == "python bench/core.py --repeats 5"


def test_bench_scripts_load_without_tensorflow():
    # The suite's conftest imports TensorFlow, so a fresh interpreter checks the scripts.
    code = ("import importlib.util, sys\n"
            "for n in ('core', 'retinopathy', 'pathology', 'variants', 'molecules'):\n"
            "    spec = importlib.util.spec_from_file_location('b_' + n, f'bench/{n}.py')\n"
            "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- stored rows

#: Stored rows no single run of the script can produce (see the report of issue #14).
UNPRODUCIBLE = {
    ("variants", "the same wall-time ratio with the recipe D model, one repeat (seeds 0 and 1)"),
}
RECIPE_C_WALL = {**VARIANTS, "recipe": "recipe C"}
PRODUCED = {
    "retinopathy": retinopathy.result_rows(RETINOPATHY),
    "pathology": pathology.result_rows({"accuracy": PATHOLOGY_ACCURACY,
                                        "heatmap": PATHOLOGY_HEATMAP}),
    "variants": variants.result_rows(VARIANTS)[:2] + variants.result_rows(
        {**VARIANTS, "seed": 1})[:2] + variants.result_rows(RECIPE_C_WALL)[2:],
    "molecules": molecules.result_rows(MOLECULES),
    "core": core.result_rows(CORE),
}


@pytest.mark.parametrize("app", sorted(PRODUCED))
def test_every_carried_over_row_is_produced_by_its_script(app):
    """Rows not yet re-measured keep their diary wording; the scripts must reproduce it."""
    produced = {row["metric"]: row for row in PRODUCED[app]}
    for row in _stored(app)["rows"]:
        if not row.get("carried_over") or (app, row["metric"]) in UNPRODUCIBLE:
            continue
        assert row["metric"] in produced, row["metric"]
        new = produced[row["metric"]]
        assert (new["goal"], new["met"], "unit" in new) == (row["goal"], row["met"], "unit" in row)


@pytest.mark.parametrize("app", sorted(PRODUCED))
def test_a_rerun_replaces_the_stored_rows_in_place(app, tmp_path):
    stored = _stored(app)
    path = tmp_path / f"{app}.json"
    path.write_text(json.dumps(stored), encoding="utf-8")
    fresh = [{**row, "command": "python bench/x.py", **STAMP} for row in PRODUCED[app]]
    rr.write_app_results(app, fresh, machine="2 CPU cores", path=path)
    after = json.loads(path.read_text(encoding="utf-8"))
    assert _metrics(after["rows"]) == _metrics(stored["rows"])
    replaced = [row for row in after["rows"] if not row.get("carried_over")
                and row["commit"] == STAMP["commit"]]
    assert len(replaced) == len(fresh)
