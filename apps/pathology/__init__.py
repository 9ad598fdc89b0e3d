"""Metastasis detection in whole-slide images, Camelyon16-style (Liu et al. 2017).

Stages, each a plain function over a config dataclass (and a ``deepsci pathology`` command):

* :mod:`.io` - OpenSlide slides with levels chosen by magnification, ASAP XML / GeoJSON
  annotations and masks, pyramidal TIFF writing, Camelyon16 submission CSVs;
* :mod:`.synth` - synthetic H&E slides with metastases (``synth``);
* :mod:`.tissue` - Otsu-on-saturation tissue detection (``tissue``);
* :mod:`.patches` - balanced patch sampling, multi-scale patches, augmentation, tf.data;
* :mod:`.train` - the core Inception (single scale or multi-tower) on the core loop (``train``);
* :mod:`.heatmap` - sliding-window heatmaps over tissue, slides in parallel (``heatmap``);
* :mod:`.cluster` - the Dask cluster of a heatmap run, or a running one reused across runs;
* :mod:`.inference` - an inference-only copy of the model with BatchNorm folded into the convolutions;
* :mod:`.detect` - slide scores and lesion NMS (``detect``);
* :mod:`.evaluate` - the official Camelyon16 FROC and slide AUC (``evaluate``);
* :mod:`.demo` - the whole pipeline on synthetic slides (``deepsci demo``).
"""
