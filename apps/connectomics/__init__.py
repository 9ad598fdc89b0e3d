"""Connectomics: neuron segmentation of 3-D electron microscopy with flood-filling networks.

Modules (one stage each, plain functions over dataclass configs):

- :mod:`.io` — volumes as ``PATH[:INNER]`` (zarr v3/v2, HDF5, N5, z-slice folders, TIFF), (z, y, x), voxel size;
- :mod:`.synth` — synthetic EM-like volumes with ground truth;
- :mod:`.train` — partitions, balanced coordinates, FOV movement with feedback, :func:`.train.train_ffn`;
- :mod:`.inference` — seeds, the flood-fill canvas with the face-max policy, split consensus;
- :mod:`.agglomerate` — FFN agglomeration: touching segments joined when FFN runs from both sides agree;
- :mod:`.rag` — learned agglomeration of supervoxels: region adjacency graph, random-forest pair classifier
  (boundary, size and FFN pair-recovery features), greedy merging, :func:`.rag.run_train_agglo`;
- :mod:`.segment` — blockwise inference on Dask with stitching and resume, :func:`.segment.segment_volume`;
- :mod:`.baseline` — boundary map -> seeded watershed;
- :mod:`.evaluate` — VI split/merge, adapted Rand error, ERL, merge/split counts, :func:`.evaluate.run_evaluation`;
- :mod:`.figures` — orthogonal slices with a segmentation overlaid;
- :mod:`.cli` — ``deepsci connectomics synth|train|segment|train-agglo|baseline|evaluate``; :mod:`.demo` — the demo hook.

The network itself is :mod:`deepsci.core.models.ffn`.
"""
