"""The FFN's canvas values and face-max movement policy (shared by training and inference).

Januszewski et al. (2018): the object mask starts at logit(0.05) with
logit(0.95) at the seed; after each FFN step the FOV may move to a face of the
current FOV whose probability reaches a threshold, best face first.
"""
from __future__ import annotations

import numpy as np

__all__ = ["SEED_IN", "SEED_OUT", "logit", "face_moves"]

SEED_IN, SEED_OUT = 0.95, 0.05


def logit(p: float) -> float:
    """log(p / (1 - p))."""
    return float(np.log(p / (1.0 - p)))


def face_moves(prob: np.ndarray, deltas, threshold: float) -> list[tuple[float, tuple[int, int, int]]]:
    """Scored moves of the face-max policy on one FOV probability map.

    For each of the six faces at ``centre ± delta`` the maximum probability
    within ``± delta`` of the centre line is found; when it reaches
    ``threshold`` the FOV may move so that its centre lands on that voxel.

    Parameters
    ----------
    prob : ndarray, shape (Z, Y, X)
        Object probability (or logits, with a logit threshold) over one FOV.
    deltas : sequence of 3 int
    threshold : float

    Returns
    -------
    list of (score, offset)
        ``offset`` is the (z, y, x) move relative to the FOV centre; best first.
    """
    centre = np.asarray(prob.shape) // 2
    d = np.asarray(deltas, int)
    box = [slice(c - dd, c + dd + 1) for c, dd in zip(centre, d, strict=True)]
    out = []
    for axis in range(3):
        for sign in (-1, 1):
            sel = list(box)
            sel[axis] = centre[axis] + sign * d[axis]
            face = prob[tuple(sel)]
            k = np.unravel_index(int(np.argmax(face)), face.shape)
            score = float(face[k])
            if score < threshold:
                continue
            rel = [int(v) - int(dd) for v, dd in zip(k, np.delete(d, axis), strict=True)]
            rel.insert(axis, int(sign * d[axis]))
            out.append((score, tuple(rel)))
    out.sort(key=lambda t: -t[0])
    return out
