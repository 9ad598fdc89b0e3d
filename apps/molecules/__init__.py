"""deepsci molecules: quantum-chemical properties of small organic molecules.

Gilmer et al.'s enn-s2s message-passing network (``deepsci.core.models.mpnn``)
trained on QM9 predicts the 12 QM9 targets from a 3-D molecule; PySCF labels
new molecules at QM9's level of theory. Modules, each importing only those
before it: ``targets`` (units), ``featurize`` (RDKit graphs), ``io`` (formats,
one module per format), ``synth``, ``graphs`` (disjoint-union batches),
``model`` (MPNN builder), ``predict`` (all inference), ``evaluate`` (metrics and
reports), ``train``, ``label`` (DFT), ``demo``, ``cli``.
"""
