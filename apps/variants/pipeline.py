"""``run``: make-examples, call-variants and postprocess-variants chained in one command.

One output folder and one ``run.json``: each stage records its config, seconds and results
inside it (``run.json["stages"]``), and the whole run's counts and timings are its results.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from deepsci.core.errors import ConfigError, DeepSciError, InputError
from deepsci.core.io import read_json, remove_stale_temporaries, write_json
from deepsci.core.models.registry import resolve_model
from deepsci.core.parallel import start_child
from deepsci.core.runs import RunDir

from .igv import check_bam_out
from .make_examples import MakeExamplesConfig, make_examples, remove_if_nothing_done
from .postprocess import PostprocessConfig, postprocess_variants
from .predict import CallConfig, call_variants, check_models, load_genotype_ensemble

__all__ = ["RunConfig", "run_pipeline"]


@dataclass
class RunConfig:
    """Options of ``deepsci variants run``.

    Attributes
    ----------
    reads : str
        Indexed, coordinate-sorted BAM or CRAM.
    ref : str
        Reference FASTA.
    model : str
        model.keras from ``train``, its folder (an ensemble's too) or several
        comma-separated: their genotype probabilities are averaged.
        Omitted: the shipped default (``deepsci models list``); a shipped name works too.
    out_dir : str
        Output folder: examples/, calls.tsv.gz, calls.vcf.gz (+ calls.g.vcf.gz).
    regions : str or None
        chr:start-end (1-based), a comma list, or a BED file; None: every contig.
    shards : int
        Split the regions into this many make-examples shards (resumable).
    scheduler : str or None
        Dask scheduler of make-examples: local (default), inline or tcp://host:port.
    gvcf : bool
        Also write calls.g.vcf.gz.
    haploid_contigs : list of str or None
        Contigs called haploid, e.g. chrX,chrY.
    batch_size : int
        Examples per inference batch.
    bam_out : str or None
        Also write the reads around each called variant (its pileup window) as an indexed
        BAM, to check the calls in IGV beside calls.vcf.gz.
    """

    reads: str = ""
    ref: str = ""
    model: str = ""
    out_dir: str = field(default="calls", metadata={"cli": "out"})
    regions: str | None = None
    shards: int = 1
    scheduler: str | None = None
    gvcf: bool = False
    haploid_contigs: list[str] | None = None
    batch_size: int = 64
    bam_out: str | None = None

    def validate(self) -> RunConfig:
        if not (self.reads and self.ref):
            raise ConfigError("expected --reads and --ref, found none")
        # No --model: the shipped default (named in one line); a shipped name: its path.
        self.model = resolve_model(self.model, app="variants", task="genotype")
        for name in ("shards", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"expected --{name.replace('_', '-')} >= 1, found "
                                  f"{getattr(self, name)}")
        return self


def _stage_configs(config: RunConfig, out: Path):
    me = MakeExamplesConfig(reads=config.reads, ref=config.ref, out_dir=str(out / "examples"),
                            regions=config.regions, shards=config.shards,
                            scheduler=config.scheduler, gvcf=config.gvcf)
    cv = CallConfig(examples=str(out / "examples"), model=config.model,
                    out=str(out / "calls.tsv.gz"), batch_size=config.batch_size)
    pp = PostprocessConfig(calls=str(out / "calls.tsv.gz"), ref=config.ref,
                           out=str(out / "calls.vcf.gz"),
                           gvcf_out=str(out / "calls.g.vcf.gz") if config.gvcf else None,
                           examples=str(out / "examples") if config.gvcf else None,
                           haploid_contigs=config.haploid_contigs,
                           bam_out=config.bam_out, reads=config.reads)
    return me, cv, pp


def run_pipeline(config: RunConfig, *, command: str | None = None,
                 overwrite: bool = False) -> dict:
    """make-examples -> call-variants -> postprocess-variants; returns counts and timings.

    Outputs in ``out_dir``: ``examples/``, ``calls.tsv.gz``, ``calls.vcf.gz`` (+ ``.tbi``),
    with ``gvcf`` ``calls.g.vcf.gz``, and ``run.json``; with ``bam_out`` that BAM (+ ``.bai``).
    """
    config.validate()
    check_bam_out(config.bam_out, overwrite=overwrite)
    models = check_models(config.model)        # refuse a wrong model before any work
    with RunDir(config.out_dir, command="variants run", config=config, overwrite=overwrite,
                inputs=[config.reads, config.ref, *models]) as run:
        me_cfg, cv_cfg, pp_cfg = _stage_configs(config, run.path)
        t, t0 = {}, time.time()
        # make-examples needs no TensorFlow: it runs in a child process while this one
        # imports TensorFlow, loads the model and traces it -- seconds of fixed cost that
        # would otherwise come after it on the critical path. fork: the child starts at once
        # with this process's imports (no TensorFlow yet when run from the CLI).
        examples = run.path / "examples"
        fresh = not examples.exists()
        with tempfile.TemporaryDirectory(prefix="deepsci-make-examples-") as tmp:
            result = Path(tmp) / "result.json"
            child = start_child(make_examples_job, (me_cfg, str(result)), name="make-examples",
                                context="fork")
            try:
                with run.stage("load_model") as st:
                    ensemble = load_genotype_ensemble(config.model, config.batch_size)
                    st.record(models=[str(m) for m in models])
                with run.stage("make_examples", me_cfg) as st:
                    child.join()
                    me = _unwrap(result)
                    st.record(**me)
            except BaseException:
                # A failure here (a damaged model) stops the child mid-shard: its
                # temporaries go, and the examples folder too when no shard finished.
                if child.is_alive():
                    child.terminate()
                child.join()
                remove_stale_temporaries(examples)
                remove_if_nothing_done(examples, fresh)
                raise
            finally:
                if child.is_alive():
                    child.terminate()
                child.join()
        t["make_examples (child process)"] = me["wall_seconds"]
        t["make_examples and load model, overlapped (wall)"] = time.time() - t0
        with run.stage("call_variants", cv_cfg) as st:
            cv = call_variants(cv_cfg, ensemble=ensemble)
            st.record(**cv)
        t["call_variants"] = cv["seconds"]
        with run.stage("postprocess_variants", pp_cfg) as st:
            t0 = time.time()
            pp = postprocess_variants(pp_cfg, command=command)
            st.record(filters=pp)
        t["postprocess_variants"] = time.time() - t0
        res = {"vcf": pp_cfg.out, "candidates": me["candidates"], "examples": cv["examples"],
               "filters": pp, "seconds": t, "candidates_per_second": me["candidates_per_second"],
               "bam": pp_cfg.bam_out}
        run.record(**res)
    return res


def make_examples_job(config: MakeExamplesConfig, result: str) -> None:
    """Child process: run make-examples and write its summary or its error to ``result``."""
    import traceback

    try:
        write_json(result, {"ok": make_examples(config)})
    except DeepSciError as e:
        # Sent as data: the error's path survives (pickling an exception drops it).
        write_json(result, {"error": type(e).__name__, "message": e.message,
                            "path": str(e.path) if e.path is not None else None})
    except BaseException:
        write_json(result, {"bug": traceback.format_exc()})
        raise


def _unwrap(result: Path) -> dict:
    if not result.exists():
        raise RuntimeError("make-examples process died without a result")
    res = read_json(result)
    if "ok" in res:
        return res["ok"]
    if "bug" in res:
        raise RuntimeError(f"make-examples failed:\n{res['bug']}")
    cls = ConfigError if res["error"] == "ConfigError" else InputError
    raise cls(res["message"], res["path"])
