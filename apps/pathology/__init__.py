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
* :mod:`.predict` - inference: the BatchNorm-folded copy, the traced tile step, the
  per-process model cache;
* :mod:`.cluster` - the Dask cluster of a heatmap run, or a running one reused across runs;
* :mod:`.heatmap` - sliding-window heatmaps over tissue, slides in parallel (``heatmap``);
* :mod:`.detect` - slide scores and lesion NMS (``detect``);
* :mod:`.evaluate` - the official Camelyon16 FROC and slide AUC (``evaluate``);
* :mod:`.demo` - the whole pipeline on synthetic slides (``deepsci demo``);
* :mod:`.cli` - the ``deepsci pathology`` commands.
"""
