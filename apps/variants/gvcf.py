"""The gVCF reference model: per-base confidence in hom-ref, merged into ``<*>`` blocks.

At each base with ``n`` reads of which ``k`` disagree with the reference, the genotype
likelihoods are binomial: ``P(k | 0/0) = B(k; n, e)``, ``P(k | 0/1) = B(k; n, 1/2)``,
``P(k | 1/1) = B(k; n, 1 - e)`` with error rate ``e``. With a flat prior the hom-ref GQ is
``-10 log10(1 - P(0/0 | k, n))``, capped at 99. Consecutive bases whose GQ falls into the
same band are merged into one block whose GQ is the band's minimum observed GQ and whose
MIN_DP is the lowest depth inside it (the GATK/DeepVariant gVCF convention).
"""
from __future__ import annotations

import numpy as np

__all__ = ["GQ_BANDS", "homref_gq", "reference_blocks"]

GQ_BANDS = (0, 1, 5, 10, 20, 30, 40, 50, 60, 99)
ERROR_RATE = 0.01
MAX_GQ = 99


def _log_binom(k: np.ndarray, n: np.ndarray, p: float) -> np.ndarray:
    # SciPy is imported on first use: the CLI imports this module for its configs, and
    # `deepsci --help` should not pay SciPy's import time.
    from scipy.special import gammaln

    return (gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)
            + k * np.log(p) + (n - k) * np.log1p(-p))


def homref_gq(depth: np.ndarray, nonref: np.ndarray, *, error_rate: float = ERROR_RATE
              ) -> np.ndarray:
    """Hom-ref genotype quality per base, ``(L,)`` int, from depth and non-ref counts.

    Examples
    --------
    >>> homref_gq(np.array([0, 30, 30]), np.array([0, 0, 15])).tolist()
    [0, 99, 0]
    """
    n = np.asarray(depth, np.float64)
    k = np.minimum(np.asarray(nonref, np.float64), n)
    logl = np.stack([_log_binom(k, n, error_rate), _log_binom(k, n, 0.5),
                     _log_binom(k, n, 1.0 - error_rate)])
    from scipy.special import logsumexp

    log_post = logl - logsumexp(logl, axis=0)
    # 1 - P(hom-ref) computed as the sum of the other two posteriors (no cancellation).
    log_wrong = np.logaddexp(log_post[1], log_post[2])
    gq = -10.0 * log_wrong / np.log(10.0)
    gq = np.where(n == 0, 0.0, gq)
    return np.clip(np.floor(gq), 0, MAX_GQ).astype(np.int32)


def reference_blocks(contig: str, start: int, depth: np.ndarray, nonref: np.ndarray,
                     bands=GQ_BANDS) -> list[tuple[str, int, int, int, int]]:
    """Merge bases ``[start, start + L)`` into blocks ``(contig, start, end, GQ, MIN_DP)``.

    ``end`` is exclusive (0-based, half-open). Blocks never cross a GQ band boundary.
    """
    depth = np.asarray(depth)
    if depth.size == 0:
        return []
    gq = homref_gq(depth, nonref)
    band = np.searchsorted(np.asarray(bands), gq, side="right")
    cut = np.flatnonzero(np.diff(band)) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [depth.size]])
    min_gq = np.minimum.reduceat(gq, starts)
    min_dp = np.minimum.reduceat(depth, starts)
    return [(contig, int(start + a), int(start + b), int(g), int(d))
            for a, b, g, d in zip(starts, ends, min_gq, min_dp, strict=True)]
