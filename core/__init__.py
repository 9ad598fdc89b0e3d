"""deepsci.core — the shared ground of every deepsci app.

Accelerators (:mod:`~deepsci.core.accelerator`), the distributed training
loop (:mod:`~deepsci.core.training`), models (:mod:`~deepsci.core.models`),
sharded parallel work (:mod:`~deepsci.core.parallel`), errors, atomic outputs,
progress and reports. Importing this package does not import TensorFlow.
"""
from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("deepsci")
except _metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
