"""Suite-wide settings: quiet TensorFlow, no progress bars, two logical CPUs.

The CPU is split before TensorFlow initialises its devices so that
multi-replica code (MirroredStrategy) is exercised on a CPU-only machine.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("DEEPSCI_PROGRESS", "0")
os.environ.setdefault("DEEPSCI_NOTEBOOK_QUICK", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

from deepsci.core.accelerator import split_cpu  # noqa: E402

split_cpu(2)
