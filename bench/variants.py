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

Training recipe (all of it on the first half): the main BAM's reads of the training part at
``--downsample`` read fractions, plus ``--train-replicates`` independent simulations of the
first half only (other variant and read seeds; reads of the second half are never made) at
``--replicate-downsample`` fractions; the last ``--val-fraction`` of the first half is held
out as validation (the epoch with the lowest validation loss is kept); ``--class-weight``
weights the loss per genotype class; ``--af-augment`` (with ``--af-augment-min-vaf`` and
``--af-augment-alleles``) thins het training pileups of alt reads (``variants train``).
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
    summary = json.loads((Path(out) / "run_summary.json").read_text())
    summary["cpu_seconds"] = _cpu(resource.RUSAGE_CHILDREN) - c0   # incl. its make-examples child
    return wall, summary


def _cpu(who) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _replicates(args, work: Path, genome: dict, contig: str, mid: int) -> list[dict]:
    """Independent simulations of the first half only (training data; reused if present).

    Each has its own planted variants and reads (seed ``SEED + 100 + r``), so the model sees
    more homopolymer contexts with and without variants; no read of the second half exists.
    """
    from deepsci.apps.variants import io as vio
    from deepsci.apps.variants.synth import SimulateConfig, simulate

    half = work / "train_half.fa"
    if args.train_replicates and not half.exists():
        vio.write_fasta({contig: genome[contig][:mid]}, half)
    out = []
    for r in range(args.train_replicates):
        seed = args.seed + 100 + r
        d = work / f"rep_{seed}" / "sim"
        if (d / "sim.json").exists():
            sim = json.loads((d / "sim.json").read_text())
        else:
            sim = simulate(SimulateConfig(
                out_dir=str(d), fasta=str(half), snp_rate=1e-3, indel_rate=1e-4,
                coverage=args.coverage, read_length=150,
                homopolymer_slip=args.homopolymer_slip, threads=args.threads, seed=seed))
            sim["homopolymer_slip"] = args.homopolymer_slip
            (d / "sim.json").write_text(json.dumps(sim))
        out.append({**sim, "seed": seed})
    return out


def _train(args, out: Path, dirs: list[str], val_dirs: list[str], seed: int) -> str:
    """Train one model of the recipe on the given examples; returns its model.keras."""
    from deepsci.apps.variants.train import TrainVariantsConfig, train_variants

    return train_variants(TrainVariantsConfig(
        examples=",".join(dirs), out_dir=str(out), val_examples=",".join(val_dirs) or None,
        epochs=args.epochs, batch_size=args.batch_size, seed=seed, width=args.width,
        class_weight=args.class_weight, af_augment=args.af_augment,
        af_augment_alleles=args.af_augment_alleles,
        af_augment_min_vaf=args.af_augment_min_vaf))["model"]


def main(argv=None) -> None:
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
                        "examples and call with their mean probabilities")
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
    args = p.parse_args(argv)

    from deepsci.apps.variants import io as vio
    from deepsci.apps.variants.make_examples import MakeExamplesConfig, make_examples
    from deepsci.apps.variants.pipeline import (
        bcftools_call,
        freebayes_call,
    )
    from deepsci.apps.variants.synth import SimulateConfig, simulate
    from deepsci.core.bench import machine_info, table

    work = Path(args.work)
    if work.exists() and not args.reuse:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    stages_file = work / "stages.json"
    old_stages = json.loads(stages_file.read_text()) if stages_file.exists() else {}
    src = work / "source.fa"
    if CE.exists():
        genome = vio.read_fasta(CE, contigs=["CHROMOSOME_I"])
        origin = "C. elegans CHROMOSOME_I (htslib test data)"
    else:
        from deepsci.apps.variants.synth import random_genome
        genome = random_genome(args.length, seed=args.seed)
        origin = f"random genome, {args.length} bp"
    if args.limit:
        genome = {c: s[: args.limit] for c, s in genome.items()}
        origin += f", first {args.limit} bp"
    vio.write_fasta(genome, src)
    contig, length = next(iter(genome.items()))
    length = len(length)

    t = {}
    t0 = time.time()
    sim_cfg = SimulateConfig(out_dir=str(work / "sim"), fasta=str(src), snp_rate=1e-3,
                             indel_rate=1e-4, coverage=args.coverage, read_length=150,
                             homopolymer_slip=args.homopolymer_slip,
                             threads=args.threads, seed=args.seed)
    if args.reuse and (work / "sim" / "sim.json").exists():
        sim = json.loads((work / "sim" / "sim.json").read_text())
        t["simulate + BWA-MEM"] = old_stages.get("simulate + BWA-MEM")
    else:
        sim = simulate(sim_cfg)
        sim["homopolymer_slip"] = args.homopolymer_slip
        (work / "sim" / "sim.json").write_text(json.dumps(sim))
        t["simulate + BWA-MEM"] = time.time() - t0
    ref, bam, truth = sim["ref"], sim["bam"], sim["truth"]
    mid = length // 2
    train_reg = f"{contig}:1-{mid}"
    test_bed = work / "test.bed"
    vio.write_bed([(contig, max(mid, 200), length - 200)], test_bed)
    test_reg = f"{contig}:{mid + 1}-{length}"

    from deepsci.apps.variants.candidates import CandidateConfig

    t0 = time.time()
    model_path = work / "model" / "model.keras"
    reuse_model = args.reuse and model_path.exists() and (work / "train_labels.json").exists()
    if args.model:
        # A model trained elsewhere (e.g. a previous full run at another coverage).
        model_path, reuse_model = Path(args.model), True
        (work / "train_labels.json").write_text(json.dumps([[0, 0, 0], {
            "candidates_per_second": float("nan"), "candidates": 0}]))
    val_start = int(mid * (1 - args.val_fraction)) if args.val_fraction > 0 else mid
    fit_reg = f"{contig}:1-{val_start}"
    val_reg = f"{contig}:{val_start + 1}-{mid}"
    sets = [(bam, ref, truth, sim["bed"], float(f), "train_ex")
            for f in args.downsample.split(",")]
    reps = []
    if not reuse_model:
        t1 = time.time()
        reps = _replicates(args, work, genome, contig, mid)
        t["simulate + BWA-MEM first-half replicates"] = time.time() - t1
        for rep in reps:
            sets += [(rep["bam"], rep["ref"], rep["truth"], rep["bed"], float(f),
                      f"rep_{rep['seed']}_ex") for f in args.replicate_downsample.split(",")]
    dirs, labels, me = [], [0, 0, 0], None
    for k, (b, r, tv, bed, frac, name) in enumerate([] if reuse_model else sets):
        # DeepVariant-style augmentation: the same truth at several read depths.
        d = work / f"{name}_{frac:g}"
        s = make_examples(MakeExamplesConfig(
            reads=b, ref=r, out_dir=str(d), regions=fit_reg, truth_vcf=tv,
            confident_bed=bed, shards=args.shards, scheduler=args.scheduler, gvcf=False, seed=k,
            candidates=CandidateConfig(downsample_fraction=frac, downsample_seed=k)),
            progress=False)
        me = me or s
        labels = [a + b for a, b in zip(labels, s["labels"], strict=True)]
        dirs.append(str(d))
    val_dirs, val_labels = [], [0, 0, 0]
    val_sets = [(bam, ref, truth, sim["bed"], "val_ex")]
    val_sets += [(rep["bam"], rep["ref"], rep["truth"], rep["bed"], f"rep_{rep['seed']}_val_ex")
                 for rep in ([] if reuse_model else reps)]
    for b, r, tv, bed, name in ([] if reuse_model or args.val_fraction <= 0 else val_sets):
        # Validation: the held-out last part of the first half, in every read set.
        v = make_examples(MakeExamplesConfig(
            reads=b, ref=r, out_dir=str(work / name), regions=val_reg, truth_vcf=tv,
            confident_bed=bed, shards=args.shards, scheduler=args.scheduler,
            gvcf=False), progress=False)
        val_labels = [a + b for a, b in zip(val_labels, v["labels"], strict=True)]
        val_dirs.append(str(work / name))
    if reuse_model:
        labels, me, *val_labels = json.loads((work / "train_labels.json").read_text())
        val_labels = val_labels[0] if val_labels else "?"
        t["make-examples (train half)"] = old_stages.get("make-examples (train half)")
        t["train"] = old_stages.get("train")
        if args.model:
            t.pop("make-examples (train half)")
            t.pop("train")
        tr = {"model": str(model_path)}
    else:
        (work / "train_labels.json").write_text(json.dumps([labels, me, val_labels]))
        t["make-examples (train half)"] = time.time() - t0
        t0 = time.time()
        tr = {"model": _train(args, work / "model", dirs, val_dirs, args.seed)}
        t["train"] = time.time() - t0
    if args.ensemble > 1 and not args.model:
        # More members, same examples, other seeds (initialisation, order, thinning).
        cfg = json.loads((work / "model" / "config.json").read_text())
        members = [tr["model"]]
        for k in range(1, args.ensemble):
            out = work / f"model_{k}"
            if not (args.reuse and (out / "model.keras").exists()):
                t0 = time.time()
                _train(args, out, cfg["examples"].split(","),
                       (cfg["val_examples"] or "").split(","), args.seed + k)
                t[f"train ensemble member {k}"] = time.time() - t0
            members.append(str(out / "model.keras"))
        tr = {"model": ",".join(members)}
    stages_file.write_text(json.dumps(t))

    # Callers alternate within each repeat so that load changes hit all of them alike.
    walls: dict[str, list[float]] = {"deepsci": [], "bcftools": [], "freebayes": []}
    cpus: dict[str, list[float]] = {k: [] for k in walls}
    loads, run, fb = [], None, None
    for _ in range(args.repeats):
        loads.append(_load())
        w, run = _deepsci_cli(bam, ref, tr["model"], work / "deepsci", test_reg, args.shards,
                              args.scheduler)
        walls["deepsci"].append(w)
        cpus["deepsci"].append(run["cpu_seconds"])
        t0, c0 = time.time(), _cpu(resource.RUSAGE_SELF)     # pysam runs bcftools in-process
        bcf = bcftools_call(bam, ref, work / "bcftools.vcf.gz", regions=test_reg,
                            threads=args.threads)
        walls["bcftools"].append(time.time() - t0)
        cpus["bcftools"].append(_cpu(resource.RUSAGE_SELF) - c0)
        t0, c0 = time.time(), _cpu(resource.RUSAGE_CHILDREN)
        fb = freebayes_call(bam, ref, work / "freebayes.vcf.gz", regions=str(test_bed))
        if fb is not None:
            walls["freebayes"].append(time.time() - t0)
            cpus["freebayes"].append(_cpu(resource.RUSAGE_CHILDREN) - c0)
    loads.append(_load())

    rows = []
    best_bcf = min(walls["bcftools"])
    for name, key, vcf in (("deepsci (small Inception)", "deepsci", run["vcf"]),
                           ("bcftools mpileup + call -m", "bcftools", bcf),
                           ("freebayes", "freebayes", fb)):
        if vcf is None:
            continue
        d = _score(vcf, truth, ref, test_bed, work / f"{key}.summary.csv")
        rows.append({"caller": name, **d, "best wall s": min(walls[key]),
                     "all wall s": ", ".join(f"{w:.1f}" for w in walls[key]),
                     "best wall / best bcftools": min(walls[key]) / best_bcf,
                     "best CPU s": min(cpus[key]),
                     "best CPU / best bcftools": min(cpus[key]) / min(cpus["bcftools"])})
    ratios = [a / b for a, b in zip(walls["deepsci"], walls["bcftools"], strict=True)]
    mi = machine_info()
    cols = ["caller", "SNP F1", "SNP P", "SNP R", "SNP TP/FP/FN", "INDEL F1", "INDEL P",
            "INDEL R", "INDEL TP/FP/FN", "best wall s", "all wall s",
            "best wall / best bcftools", "best CPU s", "best CPU / best bcftools"]
    print(f"## variants — {dt.date.today().isoformat()}, {mi.get('cores')} cores "
          f"({mi.get('cpu_model', mi.get('cpu', ''))}), TF {mi.get('tensorflow', '')}\n")
    trained = (f"model {args.model} (not trained in this run)" if args.model else
               f"train on {train_reg}")
    print(f"Genome: {origin}; {sim['n_snps']} SNPs + {sim['n_indels']} indels planted; "
          f"{args.coverage:g}x 2x150 bp, homopolymer slippage "
          f"{sim.get('homopolymer_slip', 'not recorded (0 before it existed)')}, "
          f"BWA-MEM (pybwa). {trained}"
          + ("" if args.model else
             f" ({labels} hom-ref/het/hom-alt examples of {fit_reg}: main reads at fractions "
             f"{args.downsample}, {args.train_replicates} first-half replicates at "
             f"{args.replicate_downsample}; validation {val_reg} of every read set "
             f"({val_labels} examples); class weight "
             f"{args.class_weight}; allele-fraction augmentation {args.af_augment:g} "
             f"({args.af_augment_alleles}, VAF floor {args.af_augment_min_vaf:g}); small Inception width {args.width}"
             f"{f', ensemble of {args.ensemble}' if args.ensemble > 1 else ''}, up to "
             f"{args.epochs} epochs, best validation epoch kept)")
          + f", call {test_reg}.\n")
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
    print(f"\nmake-examples throughput (test half, {args.shards} shards, scheduler "
          f"{args.scheduler}, incl. start-up, last repeat): "
          f"{run['candidates_per_second']:.1f} candidates/s "
          f"({run['candidates']} candidates); first training set: "
          + (f"{me['candidates_per_second']:.1f} candidates/s ({me['candidates']} candidates)"
             if me.get("wall_seconds", 0) > 1 else "its shards were reused, not timed"))


if __name__ == "__main__":
    main()
