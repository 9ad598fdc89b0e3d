"""Connectomics: neuron segmentation of 3-D electron microscopy with flood-filling networks.

Modules, bottom-up (each imports only modules above it in this list):

- :mod:`.io` — volumes as ``PATH[:INNER]`` (zarr v3/v2, HDF5, N5, z-slice folders, TIFF), (z, y, x), voxel size;
- :mod:`.omezarr` — segmentation stores in OME-Zarr (NGFF 0.5): image and label pyramids, colours;
- :mod:`.evaluate` — metrics only: VI split/merge, adapted Rand error, ERL, merge/split counts;
- :mod:`.synth` — synthetic EM-like volumes with ground truth; :mod:`.figures` — orthogonal slices;
- :mod:`.labels` — sequential relabelling, the one union-find, face contacts, split consensus;
- :mod:`.policy` — canvas values and the face-max movement policy (training and inference);
- :mod:`.predict` — the FFN runner (:class:`~.predict.FloodFiller`), loaded once per process;
- :mod:`.config` — every stage's options and the ``segment --preset`` pipelines;
- :mod:`.fill` — seeds and the flood fill of one block;
- :mod:`.baseline` — boundary map -> seeded watershed, supervoxels, the tuned baseline;
- :mod:`.rag` — region adjacency graph, random-forest pair classifier, greedy merging;
- :mod:`.agglomerate` — FFN pair recoveries, the threshold rule and the learned agglomeration;
- :mod:`.segment` — one block's pipeline, blockwise inference on Dask with stitching and resume;
- :mod:`.train_agglo` — fits the pair classifier (``train-agglo``); :mod:`.train` — FFN training;
- :mod:`.scoring` — the ``evaluate`` stage (scores beside the baseline, per-segment CSV, figure);
- :mod:`.cli` — ``deepsci connectomics synth|train|segment|train-agglo|baseline|evaluate``; :mod:`.demo`.

The network itself is :mod:`deepsci.core.models.ffn`.
"""
