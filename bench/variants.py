"""Benchmark of the variants app: deepsci vs bcftools (and freebayes) on the same BAM.

Plants variants (1 SNP / kb, 1 indel / 10 kb) into C. elegans chromosome I when
``../shared/data/genomics/ce.fa`` exists (else a random genome), simulates 30x 2x150 bp
reads, aligns them with BWA-MEM, trains the small Inception on the first half of the
chromosome and calls the second half with deepsci, ``bcftools mpileup | call -m`` and, when
installed, freebayes. deepsci is timed as users run it, ``deepsci variants run`` in a fresh
process (Python and TensorFlow start-up included); bcftools through pysam in this process.
Each caller is timed ``--repeats`` times, interleaved, and the best wall time is compared.
Prints Markdown tables (accuracy, wall time, make-examples throughput) and the load average.

Usage::

    python bench/variants.py [--limit BP] [--coverage 30] [--epochs 8] [--work DIR]

The defaults are the recipe of the last RESULTS.md entry (session 5, recipe D): 7
replicates, allele-fraction augmentation 0.25 of het SNPs with a VAF floor of 0.15, 8 epochs.

Training is the product's: ``deepsci variants train --reads ... --truth-vcf ...`` on the
first half (:func:`deepsci.apps.variants.train.train_variants` with the recipe of
:mod:`deepsci.apps.variants.recipe`): the main BAM's reads at ``--downsample`` read fractions,
``--train-replicates`` independent simulations of the first half only (reads of the second
half are never made) at ``--replicate-downsample`` fractions, the last ``--val-fraction`` of
the first half held out as validation, ``--class-weight`` and the allele-fraction
augmentation ``--af-augment`` (``--af-augment-min-vaf``, ``--af-augment-alleles``). This
script only simulates the benchmark genome, times the callers, scores them and prints.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CE = Path(__file__).resolve().parents[2] / "shared" / "data" / "genomics" / "ce.fa"


def _score(vcf, truth, ref, bed, out) -> dict:
    from deepsci.apps.variants.evaluate import EvaluateConfig, evaluate_calls

    rows = evaluate_calls(EvaluateConfig(calls=str(vcf), truth=str(truth), ref=str(ref),
                                         confident_bed=str(bed), out=str(out)))
    d = {}
    for r in rows:
        if r["Filter"] == "PASS":
            k = r["Type"]
            # Five decimals and the raw counts: one error in ~480 SNPs gives F1 0.99896,
            # which four decimals would round up to the 0.999 goal.
            d[f"{k} F1"] = f"{r['METRIC.F1_Score']:.5f}"
            d[f"{k} P"] = f"{r['METRIC.Precision']:.4f}"
            d[f"{k} R"] = f"{r['METRIC.Recall']:.4f}"
            d[f"{k} TP/FP/FN"] = f"{r['TRUTH.TP']}/{r['QUERY.FP']}/{r['TRUTH.FN']}"
    return d


def _deepsci_cli(bam, ref, model, out, region, shards, scheduler) -> tuple[float, dict]:
    """Time ``deepsci variants run`` as a user runs it: a fresh process, imports included."""
    cmd = [sys.executable, "-m", "deepsci.apps.cli", "variants", "run", "--reads", str(bam),
           "--ref", str(ref), "--model", str(model), "--out", str(out), "--regions", region,
           "--shards", str(shards)] + (["--scheduler", scheduler] if scheduler else [])
    shutil.rmtree(out, ignore_errors=True)          # never reuse finished shards
    env = {**os.environ, "DEEPSCI_PROGRESS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    t0, c0 = time.time(), _cpu(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.time() - t0
    summary = json.loads((Path(out) / "run.json").read_text())["results"]
    summary["cpu_seconds"] = _cpu(resource.RUSAGE_CHILDREN) - c0   # incl. its make-examples child
    return wall, summary


def _cpu(who) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _train(args, work: Path, bam, ref, truth, bed, train_reg: str) -> dict:
    """The product's training recipe on the first half (reused with ``--reuse``)."""
    from deepsci.apps.variants.recipe import RecipeConfig
    from deepsci.apps.variants.train import TrainVariantsConfig, train_variants

    done = work / "train_result.json"
    if args.reuse and done.exists() and (work / "model" / "run.json").exists():
        return {**json.loads(done.read_text()), "reused": True}
    t0 = time.time()
    recipe = RecipeConfig(downsample=_fractions(args.downsample),
                          replicates=args.train_replicates,
                          replicate_downsample=_fractions(args.replicate_downsample),
                          val_fraction=args.val_fraction, coverage=args.coverage,
                          read_length=150, homopolymer_slip=args.homopolymer_slip,
                          threads=args.threads)
    tr = train_variants(TrainVariantsConfig(
        reads=str(bam), ref=str(ref), truth_vcf=str(truth), confident_bed=str(bed),
        regions=train_reg, out_dir=str(work / "model"), recipe=recipe, shards=args.shards,
        scheduler=args.scheduler, ensemble=args.ensemble, epochs=args.epochs,
        batch_size=args.batch_size, seed=args.seed, width=args.width,
        class_weight=args.class_weight, af_augment=args.af_augment,
        af_augment_alleles=args.af_augment_alleles,
        af_augment_min_vaf=args.af_augment_min_vaf), progress=False)
    made = tr["recipe"]
    res = {"model": tr["model"], "examples": tr["examples"], "val_examples": tr["val_examples"],
           "labels": made.labels, "val_labels": made.val_labels, "first": made.first,
           "fit_regions": made.fit_regions, "val_regions": made.val_regions,
           "seconds": {"simulate + BWA-MEM first-half replicates":
                       made.seconds["simulate replicates"],
                       "make-examples (train half)": made.seconds["make-examples (training)"]
                       + made.seconds["make-examples (validation)"],
                       "train": time.time() - t0 - sum(made.seconds.values())}}
    done.write_text(json.dumps(res))
    return res


def _fractions(text: str) -> tuple[float, ...]:
    return tuple(float(f) for f in text.split(",") if f)


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/deepsci-bench-variants")
    p.add_argument("--limit", type=int, default=0, help="use only the first BP of the contig")
    p.add_argument("--length", type=int, default=1_000_000, help="random genome length")
    p.add_argument("--coverage", type=float, default=30.0)
    p.add_argument("--homopolymer-slip", type=float, default=2e-4,
                   help="read simulation: slippage error chance at a 4-bp homopolymer "
                        "(0: the simpler error model of earlier runs)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=16, help="small Inception width")
    p.add_argument("--scheduler", default="inline",
                   help="make-examples shards: inline (this process) or local (Dask cluster)")
    p.add_argument("--model", default=None,
                   help="use this trained model.keras (or comma-separated ensemble) instead "
                        "of training on the first half")
    p.add_argument("--ensemble", type=int, default=1,
                   help="train this many models (seeds SEED, SEED+1, ...) on the same "
                        "examples (train --ensemble) and call with their mean probabilities")
    p.add_argument("--reuse", action="store_true",
                   help="keep --work: reuse its simulation and trained model if present")
    p.add_argument("--repeats", type=int, default=2,
                   help="time deepsci/bcftools/freebayes this many times each (best is used)")
    p.add_argument("--downsample", default="1.0,0.7,0.5",
                   help="read fractions of the training examples (augmentation)")
    p.add_argument("--train-replicates", type=int, default=7,
                   help="extra read sets of the first half only (own variants and reads, "
                        "seeds SEED+100+r), as DeepVariant trains on several replicates")
    p.add_argument("--replicate-downsample", default="1.0,0.6",
                   help="read fractions of the replicates' training examples")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="hold out the last share of the first half as validation")
    p.add_argument("--class-weight", default="none",
                   help="training loss weight per genotype class (none|balanced|w0,w1,w2)")
    p.add_argument("--af-augment", type=float, default=0.25,
                   help="train --af-augment: chance per het example and epoch of dropping "
                        "a random share of its alt reads (0 = off)")
    p.add_argument("--af-augment-alleles", default="snp",
                   help="train --af-augment-alleles: snp or all")
    p.add_argument("--af-augment-min-vaf", type=float, default=0.15,
                   help="train --af-augment-min-vaf: lowest VAF a thinned het may reach")
    return p.parse_args(argv)


def _simulate(args, work: Path, old_stages: dict, t: dict) -> tuple[dict, str]:
    """The benchmark genome, its planted variants and 2x150 bp reads (reused with --reuse)."""
    from deepsci.apps.variants import io as vio
    from deepsci.apps.variants.synth import SimulateConfig, random_genome, simulate

    if CE.exists():
        genome = vio.read_fasta(CE, contigs=["CHROMOSOME_I"])
        origin = "C. elegans CHROMOSOME_I (htslib test data)"
    else:
        genome = random_genome(args.length, seed=args.seed)
        origin = f"random genome, {args.length} bp"
    if args.limit:
        genome = {c: s[: args.limit] for c, s in genome.items()}
        origin += f", first {args.limit} bp"
    vio.write_fasta(genome, work / "source.fa")
    t0 = time.time()
    if args.reuse and (work / "sim" / "sim.json").exists():
        sim = json.loads((work / "sim" / "sim.json").read_text())
        t["simulate + BWA-MEM"] = old_stages.get("simulate + BWA-MEM")
    else:
        sim = simulate(SimulateConfig(out_dir=str(work / "sim"), fasta=str(work / "source.fa"),
                                      snp_rate=1e-3, indel_rate=1e-4, coverage=args.coverage,
                                      read_length=150, homopolymer_slip=args.homopolymer_slip,
                                      threads=args.threads, seed=args.seed))
        sim["homopolymer_slip"] = args.homopolymer_slip
        (work / "sim" / "sim.json").write_text(json.dumps(sim))
        t["simulate + BWA-MEM"] = time.time() - t0
    contig, seq = next(iter(genome.items()))
    sim.update(contig=contig, length=len(seq))
    return sim, origin


def _time_callers(args, work: Path, sim: dict, model: str, test_reg: str, test_bed: Path):
    """Callers alternate within each repeat so that load changes hit all of them alike."""
    from deepsci.apps.variants.baselines import bcftools_call, freebayes_call

    bam, ref = sim["bam"], sim["ref"]
    walls: dict[str, list[float]] = {"deepsci": [], "bcftools": [], "freebayes": []}
    cpus: dict[str, list[float]] = {k: [] for k in walls}
    loads, run, vcfs = [], None, {}
    for _ in range(args.repeats):
        loads.append(_load())
        w, run = _deepsci_cli(bam, ref, model, work / "deepsci", test_reg, args.shards,
                              args.scheduler)
        walls["deepsci"].append(w)
        cpus["deepsci"].append(run["cpu_seconds"])
        vcfs["deepsci"] = run["vcf"]
        t0, c0 = time.time(), _cpu(resource.RUSAGE_SELF)     # pysam runs bcftools in-process
        vcfs["bcftools"] = bcftools_call(bam, ref, work / "bcftools.vcf.gz", regions=test_reg,
                                         threads=args.threads)
        walls["bcftools"].append(time.time() - t0)
        cpus["bcftools"].append(_cpu(resource.RUSAGE_SELF) - c0)
        t0, c0 = time.time(), _cpu(resource.RUSAGE_CHILDREN)
        vcfs["freebayes"] = freebayes_call(bam, ref, work / "freebayes.vcf.gz",
                                           regions=str(test_bed))
        if vcfs["freebayes"] is not None:
            walls["freebayes"].append(time.time() - t0)
            cpus["freebayes"].append(_cpu(resource.RUSAGE_CHILDREN) - c0)
    loads.append(_load())
    return walls, cpus, loads, run, vcfs


def _rows(work: Path, sim: dict, test_bed: Path, walls, cpus, vcfs) -> list[dict]:
    rows, best_bcf = [], min(walls["bcftools"])
    for name, key in (("deepsci (small Inception)", "deepsci"),
                      ("bcftools mpileup + call -m", "bcftools"), ("freebayes", "freebayes")):
        if vcfs.get(key) is None:
            continue
        d = _score(vcfs[key], sim["truth"], sim["ref"], test_bed, work / f"{key}.summary.csv")
        rows.append({"caller": name, **d, "best wall s": min(walls[key]),
                     "all wall s": ", ".join(f"{w:.1f}" for w in walls[key]),
                     "best wall / best bcftools": min(walls[key]) / best_bcf,
                     "best CPU s": min(cpus[key]),
                     "best CPU / best bcftools": min(cpus[key]) / min(cpus["bcftools"])})
    return rows


def _describe(args, sim: dict, origin: str, tr: dict | None, train_reg: str,
              test_reg: str) -> str:
    trained = (f"model {args.model} (not trained in this run)" if tr is None else
               f"train on {train_reg}")
    text = (f"Genome: {origin}; {sim['n_snps']} SNPs + {sim['n_indels']} indels planted; "
            f"{args.coverage:g}x 2x150 bp, homopolymer slippage "
            f"{sim.get('homopolymer_slip', 'not recorded (0 before it existed)')}, "
            f"BWA-MEM (pybwa). {trained}")
    if tr is not None:
        text += (f" (`deepsci variants train` recipe: {tr['labels']} hom-ref/het/hom-alt "
                 f"examples of {tr['fit_regions']}: main reads at fractions "
                 f"{args.downsample}, {args.train_replicates} first-half replicates at "
                 f"{args.replicate_downsample}; validation {tr['val_regions']} of every read "
                 f"set ({tr['val_labels']} examples); class weight {args.class_weight}; "
                 f"allele-fraction augmentation {args.af_augment:g} ({args.af_augment_alleles}"
                 f", VAF floor {args.af_augment_min_vaf:g}); small Inception width "
                 f"{args.width}{f', ensemble of {args.ensemble}' if args.ensemble > 1 else ''}"
                 f", up to {args.epochs} epochs, best validation epoch kept)")
    return text + f", call {test_reg}.\n"


def main(argv=None) -> None:
    args = _parse(argv)
    from deepsci.apps.variants import io as vio
    from deepsci.core.bench import machine_info, table

    work = Path(args.work)
    if work.exists() and not args.reuse:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    stages_file = work / "stages.json"
    old_stages = json.loads(stages_file.read_text()) if stages_file.exists() else {}
    t: dict[str, float | None] = {}
    sim, origin = _simulate(args, work, old_stages, t)
    contig, length = sim["contig"], sim["length"]
    mid = length // 2
    train_reg, test_reg = f"{contig}:1-{mid}", f"{contig}:{mid + 1}-{length}"
    test_bed = vio.write_bed([(contig, max(mid, 200), length - 200)], work / "test.bed")
    tr = None
    model = args.model          # a model trained elsewhere (e.g. at another coverage)
    if not model:
        tr = _train(args, work, sim["bam"], sim["ref"], sim["truth"], sim["bed"], train_reg)
        model = tr["model"]
        t.update({k: (old_stages.get(k) if tr.get("reused") else v)
                  for k, v in tr["seconds"].items()})
    stages_file.write_text(json.dumps(t))
    walls, cpus, loads, run, vcfs = _time_callers(args, work, sim, model, test_reg, test_bed)
    rows = _rows(work, sim, test_bed, walls, cpus, vcfs)
    ratios = [a / b for a, b in zip(walls["deepsci"], walls["bcftools"], strict=True)]
    mi = machine_info()
    cols = ["caller", "SNP F1", "SNP P", "SNP R", "SNP TP/FP/FN", "INDEL F1", "INDEL P",
            "INDEL R", "INDEL TP/FP/FN", "best wall s", "all wall s",
            "best wall / best bcftools", "best CPU s", "best CPU / best bcftools"]
    print(f"## variants — {dt.date.today().isoformat()}, {mi.get('cores')} cores "
          f"({mi.get('cpu_model', mi.get('cpu', ''))}), TF {mi.get('tensorflow', '')}\n")
    print(_describe(args, sim, origin, tr, train_reg, test_reg))
    print(table(rows, cols))
    print(f"\ndeepsci / bcftools wall time per repeat: "
          f"{', '.join(f'{r:.2f}' for r in ratios)}; load average (1/5/15 min) before each "
          f"repeat and at the end: {'; '.join(loads)}")
    stage = [{"stage": k + (" (reused from the previous run)" if args.reuse else ""),
              "wall s": v} for k, v in t.items()]
    stage += [{"stage": f"deepsci run (last repeat): {k}", "wall s": v}
              for k, v in run["seconds"].items()]
    print()
    print(table(stage, ["stage", "wall s"]))
    me = (tr or {}).get("first") or {}
    print(f"\nmake-examples throughput (test half, {args.shards} shards, scheduler "
          f"{args.scheduler}, incl. start-up, last repeat): "
          f"{run['candidates_per_second']:.1f} candidates/s "
          f"({run['candidates']} candidates); first training set: "
          + (f"{me['candidates_per_second']:.1f} candidates/s ({me['candidates']} candidates)"
             if me.get("wall_seconds", 0) > 1 else "its shards were reused, not timed"))


if __name__ == "__main__":
    main()
