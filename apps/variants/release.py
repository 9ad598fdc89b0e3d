"""The shipped variants model, rebuilt reproducibly: ``deepsci models build variants``.

``variants-illumina`` is the small-Inception genotype classifier trained with the
product's recipe (:mod:`.recipe`) on simulated 2x150 bp Illumina reads (30x, BWA-MEM,
homopolymer slippage) over a stretch of the real *C. elegans* chromosome I
(``../shared/data/genomics/ce.fa``, MIT licence, Genome Research Ltd.). The first part
of the stretch trains it; the rest is called once, beside ``bcftools call -m`` on the
same BAM, and both scores go into the card. ``tiny=True`` uses a random genome and a
few steps (what the tests build).
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from deepsci.core.bench import machine_line
from deepsci.core.errors import InputError
from deepsci.core.io import atomic_dir, read_json, write_json
from deepsci.core.models.card import card_path, read_card

from . import io as vio
from .baselines import bcftools_call
from .evaluate import EvaluateConfig, evaluate_calls
from .model import APP, TASK
from .pipeline import RunConfig, run_pipeline
from .recipe import RecipeConfig
from .synth import SimulateConfig, random_genome, simulate
from .train import TrainVariantsConfig, train_variants

__all__ = ["NAME", "GENOME", "build", "f1_table"]

NAME = "variants-illumina"
GENOME = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "genomics" / "ce.fa"
_SIM_SEED = 0  # the demo simulates with other seeds (see demo.py)


def _settings(tiny: bool) -> dict:
    if tiny:
        return {"length": 24_000, "train_bp": 12_000, "epochs": 1, "width": 8, "batch": 8,
                "recipe": RecipeConfig(downsample=(1.0,), replicates=0, val_fraction=0.0)}
    # Recipe D with one simulated replicate instead of seven: the replicates are what makes
    # the bench's recipe take an hour on 2 cores; the card records exactly what ran.
    return {"length": 240_000, "train_bp": 160_000, "epochs": 8, "width": 16, "batch": 32,
            "recipe": RecipeConfig(replicates=1)}


def _reference(work: Path, tiny: bool, length: int) -> tuple[dict, dict]:
    if tiny:
        genome = random_genome(length, seed=_SIM_SEED)
        return genome, {"name": "random genome (tiny test build)", "licence": "none (generated)"}
    if not GENOME.exists():
        raise InputError("expected the C. elegans genome of the shared data (ce.fa), found no file",
                         GENOME)
    fa = vio.open_fasta(str(GENOME))
    genome = {"CHROMOSOME_I": fa.fetch("CHROMOSOME_I", 0, length).upper()}
    return genome, {"name": f"C. elegans CHROMOSOME_I:1-{length} (real sequence), simulated reads",
                    "licence": "MIT (htslib test data, Genome Research Ltd.)",
                    "files": [str(GENOME.name)]}


def f1_table(rows: list[dict]) -> dict:
    """``{"SNP": {"f1", "tp", "fp", "fn"}, "INDEL": {...}}`` from hap.py-style summary rows."""
    out = {}
    for r in rows:
        if r["Filter"] == "PASS" and r["Type"] in ("SNP", "INDEL"):
            f1 = float(r["METRIC.F1_Score"])
            out[r["Type"]] = {"f1": None if f1 != f1 else f1, "tp": int(r["TRUTH.TP"]),
                              "fp": int(r["QUERY.FP"]), "fn": int(r["TRUTH.FN"])}
    return out


def _score(work: Path, sim: dict, model: str, region: tuple[str, int, int]) -> dict:
    contig, start, end = region
    bed = work / "test.bed"
    vio.write_bed([(contig, start, end)], bed)
    reg = f"{contig}:{start + 1}-{end}"
    run = run_pipeline(RunConfig(reads=sim["bam"], ref=sim["ref"], model=model,
                                 out_dir=str(work / "calls"), regions=reg, scheduler="inline"),
                       command="variants release", overwrite=True)
    ours = evaluate_calls(EvaluateConfig(calls=run["vcf"], truth=sim["truth"], ref=sim["ref"],
                                         confident_bed=str(bed), out=str(work / "summary.csv")))
    bcf = bcftools_call(sim["bam"], sim["ref"], work / "bcftools.vcf.gz", regions=reg)
    peer = evaluate_calls(EvaluateConfig(calls=str(bcf), truth=sim["truth"], ref=sim["ref"],
                                         confident_bed=str(bed), out=str(work / "bcftools.csv")))
    return {"region": reg, "deepsci": f1_table(ours), "bcftools": f1_table(peer)}


def build(out_root: str | Path, *, tiny: bool = False, work: str | Path | None = None) -> list[Path]:
    """Build ``variants-illumina`` into ``out_root/variants-illumina/``; return the model path.

    Parameters
    ----------
    out_root : path
        The registry folder (the package's ``data/models`` by default).
    tiny : bool
        A 24 kb random genome and one short epoch (seconds), for tests.
    work : path, optional
        Scratch folder (default ``out_root/.build-variants``, removed at the end).
    """
    t0 = time.time()
    s = _settings(tiny)
    out_root = Path(out_root)
    scratch = work is None
    work = Path(work) if work else out_root / ".build-variants"
    work.mkdir(parents=True, exist_ok=True)
    genome, data = _reference(work, tiny, s["length"])
    contig, length = next(iter(genome)), len(next(iter(genome.values())))
    # Resumable: a killed build keeps its simulation and trained model in `work`.
    done = work / "stages.json"
    stages = read_json(done) if done.exists() else {}
    # Seconds spent by earlier, killed invocations; this one's are added once per stage.
    before = stages.get("seconds", 0.0)
    if "sim" not in stages:
        vio.write_fasta(genome, work / "source.fa")
        stages["sim"] = simulate(SimulateConfig(out_dir=str(work / "sim"), fasta=str(work / "source.fa"),
                                                coverage=30.0, read_length=150, seed=_SIM_SEED))
        stages["seconds"] = before + (time.time() - t0)
        write_json(done, stages)
    sim = stages["sim"]
    cfg = TrainVariantsConfig(reads=sim["bam"], ref=sim["ref"], truth_vcf=sim["truth"],
                              confident_bed=sim["bed"], regions=f"{contig}:1-{s['train_bp']}",
                              recipe=s["recipe"], scheduler="inline", out_dir=str(work / "model"),
                              epochs=s["epochs"], batch_size=s["batch"], width=s["width"])
    if "model" not in stages:
        stages["model"] = train_variants(cfg, progress=False, overwrite=True)["model"]
        stages["seconds"] = before + (time.time() - t0)
        write_json(done, stages)
    held_out = _score(work, sim, stages["model"], (contig, s["train_bp"], length - 200))
    seconds = before + (time.time() - t0)
    path = _install(out_root, stages["model"], cfg, data, sim, held_out, seconds, tiny)
    if scratch:
        shutil.rmtree(work, ignore_errors=True)
    return [path]


def _install(out_root: Path, model: str, cfg: TrainVariantsConfig, data: dict, sim: dict,
             held_out: dict, seconds: float, tiny: bool) -> Path:
    card = read_card(model, expect=APP, task=TASK)
    data = {**data, "reads": "simulated 2x150 bp Illumina-like pairs, 30x, fragment 400+-50 bp, "
                             "quality-matched substitutions, 1-2 bp indel errors, homopolymer "
                             "slippage 2e-4, aligned with BWA-MEM (pybwa)",
            "synthetic_reads": True, "seeds": {"simulation": _SIM_SEED, "training": cfg.seed},
            "variants_planted": {"snps": sim.get("n_snps"), "indels": sim.get("n_indels")}}
    card = dataclasses.replace(
        card, name=NAME, data=data,
        metrics={**card.metrics, "test": held_out},
        training={**card.training, "command": "deepsci models build variants",
                  "recipe": dataclasses.asdict(cfg.recipe)},
        intended_use="Germline SNP and small-indel calling from 2x150 bp Illumina whole-genome "
                     "reads at 20-40x (deepsci variants run / call-variants).",
        limitations="Trained on SIMULATED reads over 160 kb of the C. elegans genome, not on real "
                    "sequencing runs; not trained on other platforms (PacBio, ONT), exomes or "
                    "panels, other read lengths, somatic or low-fraction variants, or polyploid "
                    "genomes. Check it against a truth set of your own before relying on it.",
        extra={**card.extra, "shipped": {"default": True, "build_seconds": round(seconds, 1),
                                         "build_machine": machine_line()}})
    with atomic_dir(out_root / NAME) as tmp:
        shutil.copy2(model, tmp / "model.keras")
        write_json(card_path(tmp / "model.keras"), card.stamped().to_dict())
    return out_root / NAME / "model.keras"
