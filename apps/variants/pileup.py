"""Pileup images: reads around a candidate encoded as a (100, 221, 7) uint8 tensor.

Layout follows DeepVariant (Poplin et al. 2018): the candidate sits at the centre column,
the top ``REF_ROWS`` rows show the reference, the remaining rows show up to 95 reads
(down-sampled with a fixed seed, sorted by alignment start). Channels:

====  =====================  =====================================================
 0    read base              A=250, G=180, T=100, C=30, other/gap/insertion anchor=0
 1    base quality           min(Q, 40) / 40 * 254
 2    mapping quality        min(MAPQ, 60) / 60 * 254
 3    strand                 forward=70, reverse=240
 4    read supports the alt  this alt 254, another alt of the site 76, neither 152
 5    base differs from ref  differs 254, matches 50 (1.0 and 0.2 of 254)
 6    insert size            min(|TLEN|, 1000) / 1000 * 254; 0 when unpaired
====  =====================  =====================================================

Deleted reference positions are drawn with base 0, base quality 0 and "differs" 254;
an insertion marks its anchor base with base 0 ("*" in DeepVariant), the lowest quality of
the inserted bases and "differs" 254. Soft-clipped bases are not drawn. Empty pixels are 0.
"""
from __future__ import annotations

import numpy as np

from .candidates import Candidate, ReadInfo

__all__ = ["HEIGHT", "WIDTH", "CHANNELS", "REF_ROWS", "CHANNEL_NAMES", "encode_pileup",
           "encode_read", "base_color", "alt_sets", "STRAND_CHANNEL", "SUPPORT_CHANNEL",
           "SUPPORTS"]

HEIGHT, WIDTH, CHANNELS, REF_ROWS = 100, 221, 7, 5
CHANNEL_NAMES = ("read_base", "base_quality", "mapping_quality", "strand",
                 "read_supports_variant", "base_differs_from_ref", "insert_size")
MAX_PIXEL = 254.0
BASE_QUALITY_CAP, MAPQ_CAP, INSERT_CAP = 40, 60, 1000
POS_STRAND, NEG_STRAND = 70, 240
SUPPORTS, SUPPORTS_OTHER, NOT_SUPPORTS = 254, int(0.3 * MAX_PIXEL), int(0.6 * MAX_PIXEL)
DIFFERS, MATCHES = 254, int(0.2 * MAX_PIXEL)
STRAND_CHANNEL, SUPPORT_CHANNEL = 3, 4

_LUT = np.zeros(256, np.uint8)
for _b, _v in zip(b"AGTC", (250, 180, 100, 30), strict=True):
    _LUT[_b] = _v
    _LUT[_b + 32] = _v          # lower case too

_QLUT = np.minimum(np.arange(256), BASE_QUALITY_CAP) * MAX_PIXEL / BASE_QUALITY_CAP
_QLUT = _QLUT.astype(np.uint8)


def base_color(bases: np.ndarray) -> np.ndarray:
    """Channel-0 values of ASCII base codes (any shape)."""
    return _LUT[bases]


def alt_sets(n_alts: int) -> list[tuple[int, ...]]:
    """Which alt alleles each image shows: every single alt, then every pair (DeepVariant)."""
    sets = [(i,) for i in range(n_alts)]
    sets += [(i, j) for i in range(n_alts) for j in range(i + 1, n_alts)]
    return sets


def encode_read(row: np.ndarray, read, ref_arr: np.ndarray, off: int, win_start: int,
                support: int) -> None:
    """Draw one read into ``row`` (WIDTH, CHANNELS) for the window starting at ``win_start``.

    ``ref_arr`` is the upper-case reference (uint8 ASCII) starting at 0-based ``off``.
    """
    width = row.shape[0]
    seq = np.frombuffer(read.query_sequence.encode(), np.uint8)
    qual = np.asarray(read.query_qualities, dtype=np.uint8)
    mq = int(min(read.mapping_quality, MAPQ_CAP) * MAX_PIXEL / MAPQ_CAP)
    strand = NEG_STRAND if read.is_reverse else POS_STRAND
    tlen = abs(read.template_length) if read.is_paired else 0
    ins_px = int(min(tlen, INSERT_CAP) * MAX_PIXEL / INSERT_CAP)
    rpos, qpos = read.reference_start, 0
    for op, n in read.cigartuples:
        if op in (0, 7, 8):
            a, b = max(rpos, win_start), min(rpos + n, win_start + width)
            if a < b:
                cols = slice(a - win_start, b - win_start)
                qs = slice(qpos + a - rpos, qpos + b - rpos)
                bases = seq[qs]
                row[cols, 0] = _LUT[bases]
                row[cols, 1] = _QLUT[qual[qs]]
                row[cols, 5] = np.where(bases != ref_arr[a - off:b - off], DIFFERS, MATCHES)
                row[cols, 2], row[cols, 3], row[cols, 4], row[cols, 6] = mq, strand, support, ins_px
            rpos += n
            qpos += n
        elif op == 2 or op == 3:
            a, b = max(rpos, win_start), min(rpos + n, win_start + width)
            if a < b and op == 2:
                cols = slice(a - win_start, b - win_start)
                row[cols, 0], row[cols, 1], row[cols, 5] = 0, 0, DIFFERS
                row[cols, 2], row[cols, 3], row[cols, 4], row[cols, 6] = mq, strand, support, ins_px
            rpos += n
        elif op == 1:
            c = rpos - 1 - win_start
            if 0 <= c < width:
                row[c, 0], row[c, 5] = 0, DIFFERS
                row[c, 1] = _QLUT[int(qual[qpos:qpos + n].min())] if n else 0
            qpos += n
        elif op == 4:
            qpos += n


def _reference_rows(img: np.ndarray, ref_arr: np.ndarray, off: int, win_start: int) -> None:
    width = img.shape[1]
    a, b = max(win_start, off), min(win_start + width, off + ref_arr.size)
    cols = slice(a - win_start, b - win_start)
    img[:REF_ROWS, cols, 0] = _LUT[ref_arr[a - off:b - off]]
    img[:REF_ROWS, cols, 1] = MAX_PIXEL
    img[:REF_ROWS, cols, 2] = MAX_PIXEL
    img[:REF_ROWS, cols, 3] = POS_STRAND
    img[:REF_ROWS, cols, 4] = 0
    img[:REF_ROWS, cols, 5] = 0
    img[:REF_ROWS, cols, 6] = 0


def _support(ri: ReadInfo, shown: set, others: set) -> int:
    if ri.events & shown:
        return SUPPORTS
    if ri.events & others:
        return SUPPORTS_OTHER
    return NOT_SUPPORTS


def encode_pileup(cand: Candidate, alt_idx: tuple[int, ...], reads: list[ReadInfo],
                  ref_arr: np.ndarray, off: int, *, seed: int = 0,
                  height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """The pileup image of candidate ``cand`` showing the alt alleles ``alt_idx``.

    Parameters
    ----------
    cand : Candidate
    alt_idx : tuple of int
        Indices into ``cand.alts`` whose supporting reads are marked in channel 4.
    reads : list of ReadInfo
        Reads overlapping the candidate (already filtered).
    ref_arr : (L,) uint8
        Upper-case reference bases starting at 0-based ``off``.
    seed : int
        Down-sampling seed (combined with the position so images are reproducible).

    Returns
    -------
    (height, width, 7) uint8
    """
    img = np.zeros((height, width, CHANNELS), np.uint8)
    win_start = cand.pos - width // 2
    _reference_rows(img, ref_arr, off, win_start)
    shown = {cand.events[i] for i in alt_idx}
    others = set(cand.events) - shown
    rows = [ri for ri in reads if ri.start <= cand.pos < ri.end or
            (ri.start < cand.end and ri.end > cand.pos)]
    cap = height - REF_ROWS
    if len(rows) > cap:
        rng = np.random.default_rng([seed, cand.pos])
        keep = np.sort(rng.choice(len(rows), size=cap, replace=False))
        rows = [rows[i] for i in keep]
    rows.sort(key=lambda ri: (ri.start, ri.read.query_name))
    for k, ri in enumerate(rows):
        encode_read(img[REF_ROWS + k], ri.read, ref_arr, off, win_start,
                    _support(ri, shown, others))
    return img
