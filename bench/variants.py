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

The goal rows of the run (SNP and INDEL F1 beside the peers, the wall-time ratio to bcftools)
replace their rows in ``bench/results/variants.json`` and ``bench/RESULTS.md``
(:func:`result_rows`; the model's recipe is read from its model card); ``--no-record`` only
prints.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CE = Path(__file__).resolve().parents[2] / "shared" / "data" / "genomics" / "ce.fa"

#: The named training recipes of bench/RESULTS.md (variants session 5), as a model card's
#: ``training.config`` records them; D is the product's default.
RECIPE_D = {"epochs": 8, "class_weight": "none", "af_augment": 0.25, "af_augment_min_vaf": 0.15,
            "af_augment_alleles": "snp", "recipe.downsample": [1.0, 0.7, 0.5],
            "recipe.replicates": 7, "recipe.replicate_downsample": [1.0, 0.6],
            "recipe.val_fraction": 0.2}
RECIPES = {"D": RECIPE_D, "C": {**RECIPE_D, "af_augment_min_vaf": 0.2}}
#: Options left out of the recorded command (scratch paths) or recorded as a placeholder.
_UNRECORDED = {"--work"}
_PLACEHOLDERS = {"--model": "MODEL"}
GOALS = {"SNP": 0.999, "INDEL": 0.99}


def recipe_label(config: dict | None) -> str:
    """``recipe D``, ``recipe C`` or how a model card's training config differs from D."""
    if not config or not config.get("reads"):
        return "recipe not recorded"
    flat = {**config, **{f"recipe.{k}": v for k, v in (config.get("recipe") or {}).items()}}

    def same(a, b) -> bool:
        if isinstance(b, list):
            return isinstance(a, list | tuple) and len(a) == len(b) and all(map(same, a, b))
        if isinstance(b, float):
            return isinstance(a, int | float) and abs(a - b) < 1e-9
        return a == b

    for name, recipe in RECIPES.items():
        if all(same(flat.get(k), v) for k, v in recipe.items()):
            return f"recipe {name}"
    diff = [f"{k.rpartition('.')[2].replace('_', '-')} {flat.get(k)}" for k, v in RECIPE_D.items()
            if not same(flat.get(k), v)]
    return "recipe D but " + ", ".join(diff)


def _model_config(model: str) -> dict | None:
    """``training.config`` of the model card of ``model`` (its first member), if any."""
    first = Path(model.split(",")[0])
    for path in (first, first / "model.keras", first / "member_0" / "model.keras"):
        card = path.with_suffix(".card.json")
        if path.suffix == ".keras" and card.is_file():
            return (json.loads(card.read_text()).get("training") or {}).get("config")
    return None


def _beats(f1: float, peers: dict[str, float], goal: float) -> tuple[str, bool]:
    """Goal text and whether it is met: ``f1 >= goal`` and above every peer (a tie at 1 counts)."""
    text = f">= {goal:g} and above {' and '.join(peers)}"
    perfect = [name for name, p in peers.items() if p >= 1.0]
    if perfect and len(perfect) == len(peers) and len(peers) > 1:
        text += " (the peers are perfect: a tie is the best possible)"
    elif perfect:
        text += f" ({perfect[0]} is perfect: a tie with it is the best possible)"
    met = f1 >= goal and all(f1 > p or (f1 >= 1.0 and p >= 1.0) for p in peers.values())
    return text, bool(met)


def result_rows(measured: dict) -> list[dict]:
    """The goal rows of ``bench/results/variants.json`` from one run's figures.

    ``measured``: ``genome`` (e.g. ``C. elegans chromosome I``), ``coverage``,
    ``homopolymer_slip``, ``seed``, ``models`` (1, or the ensemble's size), ``recipe``
    (:func:`recipe_label`), ``scores`` (caller -> the columns of ``_score``: ``SNP F1``,
    ``SNP TP/FP/FN``, ...; callers ``deepsci``, ``bcftools`` and, when run, ``freebayes``),
    ``walls`` (caller -> wall seconds per repeat), ``loads`` (1-minute load averages before
    each repeat and at the end) and ``cores``.
    """
    seed, sc = measured["seed"], measured["scores"]
    model = (("one model" if measured["models"] == 1 else f"ensemble of {measured['models']}")
             + f" ({measured['recipe']})")
    slip = ", homopolymer slippage" if measured["homopolymer_slip"] else ""
    where = {"SNP": f"test half of the simulated {measured['genome']} "
                    f"({measured['coverage']:g}x{slip})",
             "INDEL": "the same test half"}
    peers = [c for c in ("bcftools", "freebayes") if c in sc]
    rows = []
    for kind, goal in GOALS.items():
        f1 = sc["deepsci"][f"{kind} F1"]
        counts = sc["deepsci"][f"{kind} TP/FP/FN"]
        text, met = _beats(float(f1), {c: float(sc[c][f"{kind} F1"]) for c in peers}, goal)
        rows.append({"metric": f"{kind} F1, {where[kind]}, simulation seed {seed}, {model}",
                     "deepsci": f"{f1} ({'TP/FP/FN ' if kind == 'SNP' else ''}{counts})",
                     "peer": " / ".join(f"{c} {sc[c][f'{kind} F1']}" for c in peers),
                     "goal": text, "met": met})
    walls = measured["walls"]
    ours, bcf = min(walls["deepsci"]), min(walls["bcftools"])
    top = max(measured["loads"])
    quiet = ("quiet machine" if top < measured["cores"] else
             f"shared machine (load average up to {top:.1f})")
    fb = sorted(walls.get("freebayes") or [])
    fb_text = "" if not fb else (f" (freebayes {fb[0]:.2f} s)" if len(fb) == 1 else
                                 f" (freebayes {fb[0]:.2f}–{fb[-1]:.2f} s)")
    rows.append({
        "metric": "wall time of `deepsci variants run` (fresh process) vs bcftools mpileup + call "
                  f"-m, seed {seed} test half, {model}, best of {len(walls['deepsci'])}, {quiet}",
        "deepsci": f"{ours:.2f} s = {ours / bcf:.2f}× bcftools",
        "peer": f"bcftools {bcf:.2f} s{fb_text}", "goal": "<= 5× bcftools",
        "met": bool(ours / bcf <= 5)})
    return rows


def record_command(argv: list[str]) -> str:
    """This run's command as ``bench/results`` records it: scratch paths left out, MODEL."""
    words, rest = [], list(argv)
    while rest:
        word = rest.pop(0)
        name, eq, _ = word.partition("=")
        if name in _UNRECORDED or name in _PLACEHOLDERS:
            if not eq and rest:
                rest.pop(0)
            words += [name, _PLACEHOLDERS[name]] if name in _PLACEHOLDERS else []
        elif name != "--no-record":
            words.append(word)
    return shlex.join(["python", f"bench/{Path(__file__).name}", *words])


def _record(rows: list[dict], argv: list[str], loads: str) -> None:
    """Replace the rows of the same metric in ``bench/results/variants.json`` and the page."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from render_results import write_app_results

    from deepsci.core.bench import machine_info, machine_line

    machine = (f"{machine_line()}, TensorFlow {machine_info().get('tensorflow')}; load average "
               f"(1/5/15 min) before each repeat and at the end: {loads}")
    cmd = record_command(argv)
    path = write_app_results("variants", [{**r, "command": cmd} for r in rows], machine=machine)
    print(f"recorded {len(rows)} row(s) in {path}")


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
    p.add_argument("--no-record", action="store_true",
                   help="do not write bench/results/variants.json (and bench/RESULTS.md)")
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


def _rows(work: Path, sim: dict, test_bed: Path, walls, cpus, vcfs,
          scores: dict | None = None) -> list[dict]:
    """One table row per caller; ``scores`` (when given) gets each caller's ``_score``."""
    rows, best_bcf = [], min(walls["bcftools"])
    for name, key in (("deepsci (small Inception)", "deepsci"),
                      ("bcftools mpileup + call -m", "bcftools"), ("freebayes", "freebayes")):
        if vcfs.get(key) is None:
            continue
        d = _score(vcfs[key], sim["truth"], sim["ref"], test_bed, work / f"{key}.summary.csv")
        if scores is not None:
            scores[key] = d
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
    scores: dict[str, dict] = {}
    rows = _rows(work, sim, test_bed, walls, cpus, vcfs, scores)
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
    if args.no_record:
        return
    measured = {"genome": _genome_name(origin, length), "coverage": args.coverage,
                "homopolymer_slip": sim.get("homopolymer_slip", args.homopolymer_slip),
                "seed": args.seed, "models": len(model.split(",")) if args.model else args.ensemble,
                "recipe": recipe_label(_model_config(model)), "scores": scores, "walls": walls,
                "loads": [float(x.split("/")[0]) for x in loads], "cores": os.cpu_count()}
    _record(result_rows(measured), sys.argv[1:] if argv is None else list(argv), "; ".join(loads))


def _genome_name(origin: str, length: int) -> str:
    """How the metric names the simulated genome (see ``_simulate``'s ``origin``)."""
    name = ("C. elegans chromosome I" if origin.startswith("C. elegans")
            else f"random genome of {length:,} bp")
    first = origin.partition(", first ")[2]
    return name + (f", first {int(first.split()[0]):,} bp" if first and "C. elegans" in name else "")


if __name__ == "__main__":
    main()
