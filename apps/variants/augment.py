"""Allele-fraction augmentation of heterozygous training pileups.

At 30x a true het shows ~Binomial(30, 0.5) alt reads, so one in ~50–100 has an allele
fraction (VAF) of 0.27 or less. A few thousand training examples hold only a handful of such
tails, and the classifier learns to call them hom-ref. :func:`drop_alt_reads` shows it more:
it removes a random share of the rows of reads that support the shown alt allele, never
going below the candidate thresholds (the image would not exist otherwise), and compacts the
remaining rows upwards in their original order, which is the layout make-examples gives a
pileup with fewer reads (rows sorted by alignment start, empty rows at the bottom).

Only het images (label 1) are touched: removing alt reads from a hom-alt image would make
it look het (a label change), and a hom-ref image's alt rows are the errors it is about.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .pileup import REF_ROWS, STRAND_CHANNEL, SUPPORT_CHANNEL, SUPPORTS

__all__ = ["AlleleFractionAugment", "drop_alt_reads", "read_rows"]

HET = 1


@dataclass(frozen=True)
class AlleleFractionAugment:
    """How :func:`drop_alt_reads` is applied during training.

    ``probability`` is the chance that a het example is thinned in a given epoch; the
    target VAF is drawn uniformly between ``min_vaf`` and the image's own VAF. ``alleles``
    is ``"snp"`` (only images whose shown alt alleles are all single-base substitutions) or
    ``"all"``; the count and fraction floors are make-examples' candidate thresholds.
    """

    probability: float = 0.0
    alleles: str = "snp"
    min_count: int = 2
    min_vaf: float = 0.12
    min_vaf_indels: float = 0.06


def read_rows(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of drawn reads and which of them support the shown alt allele.

    Parameters
    ----------
    img : (H, W, C) uint8
        A pileup from :func:`deepsci.apps.variants.pileup.encode_pileup`.

    Returns
    -------
    rows : (R,) int
        Rows below the reference rows with any drawn pixel (strand is never 0 there).
    alt : (R,) bool
        Whether each of those reads is marked "supports this alt" (channel 4 = 254).
    """
    body = img[REF_ROWS:]
    drawn = (body[:, :, STRAND_CHANNEL] > 0).any(axis=1)
    rows = np.flatnonzero(drawn) + REF_ROWS
    alt = (img[rows, :, SUPPORT_CHANNEL] == SUPPORTS).any(axis=1)
    return rows, alt


def drop_alt_reads(img: np.ndarray, rng: np.random.Generator, *, min_count: int = 2,
                   min_vaf: float = 0.12) -> np.ndarray:
    """A copy of a het pileup with a random share of its alt-supporting reads removed.

    The number of alt reads kept, ``k``, gives a VAF ``k / (k + n_other)`` drawn uniformly
    between the floor and the image's own VAF, with ``k >= min_count`` and
    VAF ``>= min_vaf``. Remaining rows move up in their original order; freed rows at the
    bottom become empty (0), as in an image with fewer reads. When no read can be removed
    the image is returned unchanged (a copy).

    Parameters
    ----------
    img : (H, W, C) uint8
    rng : numpy.random.Generator
    min_count : int
        Fewest alt reads to keep (make-examples' ``min_count_*``).
    min_vaf : float
        Lowest allele fraction to reach (make-examples' ``min_fraction_*``).

    Returns
    -------
    (H, W, C) uint8
    """
    out = img.copy()
    rows, alt = read_rows(img)
    n_alt, n_other = int(alt.sum()), int((~alt).sum())
    k_min = _fewest_alt_reads(n_other, min_count, min_vaf)
    if n_alt <= k_min:
        return out
    vaf = rng.uniform(k_min / (k_min + n_other), n_alt / (n_alt + n_other))
    # Solve k / (k + n_other) = vaf for k, then keep it inside [k_min, n_alt].
    k = int(np.clip(round(vaf * n_other / max(1.0 - vaf, 1e-9)), k_min, n_alt))
    if k == n_alt:
        return out
    alt_rows = rows[alt]
    dropped = rng.choice(alt_rows, size=n_alt - k, replace=False)
    kept = rows[~np.isin(rows, dropped)]
    out[REF_ROWS:] = 0
    out[REF_ROWS:REF_ROWS + kept.size] = img[kept]
    return out


def _fewest_alt_reads(n_other: int, min_count: int, min_vaf: float) -> int:
    """Smallest k >= min_count with k / (k + n_other) >= min_vaf."""
    k = max(min_count, int(np.ceil(min_vaf * n_other / max(1.0 - min_vaf, 1e-9))))
    while k / (k + n_other) < min_vaf:       # guards the ceil against float rounding
        k += 1
    return k


def augment_example(img: np.ndarray, label: int, is_snp: bool, cfg: AlleleFractionAugment,
                    rng: np.random.Generator) -> np.ndarray:
    """Apply ``cfg`` to one training example: thin it if het, eligible and drawn.

    Parameters
    ----------
    img : (H, W, C) uint8 or float32
    label : int
        0 hom-ref, 1 het, 2 hom-alt (other labels are left alone).
    is_snp : bool
        Whether every shown alt allele is a single-base substitution.

    Returns
    -------
    array of ``img``'s shape and dtype
    """
    if label != HET or (cfg.alleles == "snp" and not is_snp):
        return img
    if rng.random() >= cfg.probability:
        return img
    floor = cfg.min_vaf if is_snp else cfg.min_vaf_indels
    return drop_alt_reads(img, rng, min_count=cfg.min_count, min_vaf=floor)
