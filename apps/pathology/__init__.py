"""Metastasis detection in whole-slide images, Camelyon16-style (Liu et al. 2017).

Stages, each a plain function over a config dataclass (and a ``deepsci pathology`` command).
Modules in import order: a module imports only modules listed before it.

* :mod:`.io` - formats: OpenSlide slides with levels chosen by magnification, ASAP XML /
  GeoJSON annotations and masks, pyramidal TIFF writing, Camelyon16 submission CSVs,
  the ground truth at the evaluation level;
* :mod:`.synth` - synthetic H&E slides with metastases (``synth``);
* :mod:`.tissue` - Otsu-on-saturation tissue detection (``tissue``);
* :mod:`.patches` - balanced patch sampling, multi-scale patches, augmentation, tf.data;
* :mod:`.model` - the core Inception (single scale or multi-tower) as the app builds it;
* :mod:`.train` - training on the core loop (``train``);
* :mod:`.shipped` - ``--model`` by shipped name or omitted (the default), the demo-model
  warning on slides deepsci did not synthesise;
* :mod:`.predict` - inference: the BatchNorm-folded copy, the traced tile step, the
  per-process model cache;
* :mod:`.cluster` - the Dask cluster of a heatmap run, or a running one reused across runs;
* :mod:`.heatmap` - sliding-window heatmaps over tissue, slides in parallel (``heatmap``);
* :mod:`.baseline` - the classical baseline: rgb2hed stain densities, logistic fit;
* :mod:`.detect` - slide scores and lesion NMS (``detect``);
* :mod:`.evaluate` - the official Camelyon16 FROC and slide AUC (``evaluate``);
* :mod:`.release` - the build of the shipped model (``deepsci models build pathology``);
* :mod:`.demo` - the shipped model beside the baseline on fresh synthetic slides, or the
  whole pipeline trained from scratch (``deepsci demo [--train]``);
* :mod:`.cli` - the ``deepsci pathology`` commands.
"""
