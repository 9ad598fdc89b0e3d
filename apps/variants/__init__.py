"""deepsci.apps.variants — DeepVariant-style germline SNP/indel calling.

Stages (each a plain function over a dataclass config, and a ``deepsci variants`` command):

* :func:`.synth.simulate` — plant variants, simulate reads, align with BWA-MEM;
* :func:`.make_examples.make_examples` — candidates and (100, 221, 7) pileup images as
  sharded TFRecords (labelled from a truth VCF + BED in training mode);
* :func:`.train.train_variants` — the core Inception on the core training loop;
* :func:`.predict.call_variants` — genotype probabilities per example;
* :func:`.postprocess.postprocess_variants` — VCF 4.2 / gVCF, bgzipped and indexed;
* :func:`.pipeline.run_pipeline` — the three calling stages chained;
* :func:`.evaluate.evaluate_calls` — hap.py-style SNP/INDEL precision, recall, F1.
"""
