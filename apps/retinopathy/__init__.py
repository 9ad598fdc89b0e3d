"""Diabetic-retinopathy grading of fundus photographs (Gulshan et al., JAMA 2016, on deepsci).

Command line (``deepsci retinopathy --help``)::

    deepsci retinopathy synth data/ --patients 200            # graded EyePACS-style set
    deepsci retinopathy train --labels data/trainLabels.csv --out model/ [--ensemble 3]
    deepsci retinopathy evaluate model/ --labels data/trainLabels.csv --split test --out eval/
    deepsci retinopathy predict model/ photos/*.jpeg --out pred/
    deepsci retinopathy explain model/ photos/*.jpeg --out why/

Python (one stage per function, each over its config dataclass, each writing
one ``run.json``): :func:`.synth.run_synth`, :func:`.preprocess.run_preprocess`,
:func:`.train.run_train`, :func:`.predict.run_predict`, :func:`.evaluate.run_evaluate`,
:func:`.explain.run_explain`; building blocks :func:`.io.read_dataset`,
:func:`.preprocess.preprocess_image`, :mod:`.model` (network, model card),
:mod:`.evaluate` (AUC/CI, operating points, kappa).
"""
