"""``run``: make-examples, call-variants and postprocess-variants chained in one command."""
from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path

from deepsci.core.errors import ConfigError, DeepSciError, InputError
from deepsci.core.io import save_config, write_json, write_run_info

from .make_examples import MakeExamplesConfig, make_examples
from .postprocess import PostprocessConfig, postprocess_variants
from .predict import CallConfig, call_variants, load_classifier, model_paths

__all__ = ["RunConfig", "run_pipeline"]


@dataclass
class RunConfig:
    """Options of ``deepsci variants run``."""

    reads: str = ""
    ref: str = ""
    model: str = ""
    out_dir: str = "calls"
    regions: str | None = None
    shards: int = 1
    scheduler: str | None = None
    gvcf: bool = False
    haploid_contigs: list[str] | None = None
    batch_size: int = 64

    def validate(self) -> None:
        if not (self.reads and self.ref and self.model):
            raise ConfigError("expected --reads, --ref and --model, found none")


def run_pipeline(config: RunConfig, *, command: str | None = None) -> dict:
    """make-examples -> call-variants -> postprocess-variants; returns counts and timings.

    Outputs in ``out_dir``: ``examples/``, ``calls.tsv.gz``, ``calls.vcf.gz`` (+ ``.tbi``)
    and with ``gvcf`` ``calls.g.vcf.gz``.
    """
    config.validate()
    for m in model_paths(config.model):        # fail on a missing model before any work
        if not Path(m).exists():
            raise InputError("expected a model.keras from `deepsci variants train`, found "
                             "nothing", m)
    out = Path(config.out_dir)
    t = {}
    t0 = time.time()
    me_cfg = MakeExamplesConfig(reads=config.reads, ref=config.ref,
                                out_dir=str(out / "examples"), regions=config.regions,
                                shards=config.shards, scheduler=config.scheduler,
                                gvcf=config.gvcf)
    # make-examples needs no TensorFlow: it runs in a child process while this one imports
    # TensorFlow, loads the model and traces it -- seconds of fixed cost that would
    # otherwise come after it on the critical path.
    ctx = _mp_context()
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_make_examples_job, args=(me_cfg, send), name="make-examples")
    child.start()
    send.close()
    try:
        t_load = time.time()
        loaded = load_classifier(config.model, config.batch_size)
        t["load model + trace (parent, overlapped)"] = time.time() - t_load
        me = _unwrap(recv)
    except BaseException:
        child.terminate()
        raise
    finally:
        child.join()
    t["make_examples (child process)"] = me["wall_seconds"]
    t["make_examples and load model, overlapped (wall)"] = time.time() - t0
    t0 = time.time()
    cv = call_variants(CallConfig(examples=str(out / "examples"), model=config.model,
                                  out=str(out / "calls.tsv.gz"), batch_size=config.batch_size),
                       loaded=loaded)
    t["call_variants"] = time.time() - t0
    t0 = time.time()
    pp = postprocess_variants(PostprocessConfig(
        calls=str(out / "calls.tsv.gz"), ref=config.ref, out=str(out / "calls.vcf.gz"),
        gvcf_out=str(out / "calls.g.vcf.gz") if config.gvcf else None,
        examples=str(out / "examples") if config.gvcf else None,
        haploid_contigs=config.haploid_contigs), command=command)
    t["postprocess_variants"] = time.time() - t0
    save_config(config, out / "config.json")
    write_run_info(out, command="variants run", config=config)
    res = {"vcf": str(out / "calls.vcf.gz"), "candidates": me["candidates"],
           "examples": cv["examples"], "filters": pp, "seconds": t,
           "candidates_per_second": me["candidates_per_second"]}
    write_json(out / "run_summary.json", res)         # stage times, for benchmarks and users
    return res


def _mp_context():
    # fork: the child starts at once with this process's imports (no TensorFlow yet when
    # run from the CLI); spawn where fork does not exist.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _make_examples_job(config, conn) -> None:
    """Child process: run make-examples and send back its summary or its error."""
    import traceback

    try:
        conn.send({"ok": make_examples(config)})
    except DeepSciError as e:
        # Sent as data: the error's path survives (pickling an exception drops it).
        conn.send({"error": type(e).__name__, "message": e.message, "path": e.path})
    except BaseException:
        conn.send({"bug": traceback.format_exc()})
        raise
    finally:
        conn.close()


def _unwrap(conn) -> dict:
    try:
        res = conn.recv()
    except EOFError:
        raise RuntimeError("make-examples process died without a result") from None
    if "ok" in res:
        return res["ok"]
    if "bug" in res:
        raise RuntimeError(f"make-examples failed:\n{res['bug']}")
    cls = ConfigError if res["error"] == "ConfigError" else InputError
    raise cls(res["message"], res["path"])
