"""deepsci molecules: quantum-chemical properties of small organic molecules.

Gilmer et al.'s enn-s2s message-passing network (``deepsci.core.models.mpnn``)
trained on QM9 predicts the 12 QM9 targets from a 3-D molecule; PySCF labels
new molecules at QM9's level of theory. Modules: ``io`` (formats), ``featurize``
(RDKit graphs), ``graphs`` (disjoint-union batches), ``train``, ``evaluate``,
``predict``, ``label``, ``synth``, ``demo``, ``cli``; units in ``targets``.
"""
