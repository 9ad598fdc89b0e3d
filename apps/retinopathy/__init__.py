"""Diabetic-retinopathy grading of fundus photographs (Gulshan et al., JAMA 2016, on deepsci).

Command line (``deepsci retinopathy --help``)::

    deepsci retinopathy synth data/ --patients 200            # graded EyePACS-style set
    deepsci retinopathy train --labels data/trainLabels.csv --out model/ [--ensemble 3]
    deepsci retinopathy evaluate model/ --labels data/trainLabels.csv --split test --out eval/
    deepsci retinopathy predict model/ photos/*.jpeg --out pred/
    deepsci retinopathy explain model/ photos/*.jpeg --out why/

Python: :func:`.io.read_dataset`, :func:`.preprocess.preprocess_image`,
:func:`.train.fit`, :func:`.predict.predict_dataset`,
:func:`.predict.evaluate_dataset`, :func:`.predict.explain_images`,
:func:`.synth.make_dataset`, :mod:`.evaluate` (AUC/CI, operating points, kappa).
"""
