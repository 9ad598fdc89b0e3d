"""deepsci.apps.variants — DeepVariant-style germline SNP/indel calling.

Modules, each importing only those listed before it: ``io`` (FASTA, BAM/CRAM, VCF, BED),
``candidates``, ``pileup``, ``labels``, ``gvcf``, ``tfrecord``, ``make_examples``,
``augment``, ``model``, ``predict``, ``synth``, ``recipe``, ``train``, ``baselines``,
``postprocess``, ``pipeline``, ``evaluate``, ``demo``, ``cli``.

Stages (each a plain function over a dataclass config; ``run_*`` and the chained ones record
their run in one ``run.json`` and are the ``deepsci variants`` commands):

* :func:`.synth.simulate` — plant variants, simulate reads, align with BWA-MEM;
* :func:`.make_examples.make_examples` — candidates and (100, 221, 7) pileup images as
  sharded TFRecords (labelled from a truth VCF + BED in training mode);
* :func:`.train.train_variants` — the core Inception on the core training loop, from
  labelled examples or, by the benchmark's recipe (:mod:`.recipe`), from reads and a truth
  set; ``ensemble`` members with consecutive seeds;
* :func:`.predict.call_variants` — genotype probabilities per example (core predictor and
  ensembles);
* :func:`.postprocess.postprocess_variants` — VCF 4.2 / gVCF, bgzipped and indexed;
* :func:`.pipeline.run_pipeline` — the three calling stages chained;
* :func:`.evaluate.evaluate_calls` — hap.py-style SNP/INDEL precision, recall, F1;
* :func:`.baselines.bcftools_call` / :func:`.baselines.freebayes_call` — peer callers.
"""
