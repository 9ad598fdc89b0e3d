"""Learned agglomeration on a region adjacency graph (RAG) of over-segmented pieces.

After Nunez-Iglesias et al. (2013, GALA) and Parag et al. (2015, NeuroProof):
every pair of touching segments is an edge carrying additive statistics of
its contact (voxel faces, boundary-map sum, sum of squares, faces above 0.5)
and the sizes of both sides; optionally the two directed FFN recoveries of
:func:`~deepsci.apps.connectomics.agglomerate.pair_scores` on the initial
pieces (computed by the caller: this module runs no network). A random forest (GALA's choice; or a logistic regression) trained on pairs of a labelled volume turns
the features into a join probability, and the pair with the highest one is
merged first; the merged node's edges are recomputed from the summed
statistics (FFN recoveries of merged edges: contact-weighted means), until
no pair reaches the threshold.

Training examples come from the initial pieces *and* from an oracle-guided
agglomeration of the training volume (only joins the ground truth agrees
with), so the classifier also sees the larger segments it meets later.
"""
from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepsci.core.errors import ConfigError, InputError
from deepsci.core.io import atomic_path

from .labels import face_pairs, join_segments

__all__ = ["FEATURES", "RagStats", "rag_stats", "PairClassifier", "fit_pair_classifier", "rag_agglomerate",
           "training_examples"]

#: Boundary-map levels whose share of contact faces at or above them are features (an additive histogram).
LEVELS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
#: Feature names, in the order of the classifier's weights.
FEATURES = ("log_contact", "bmap_mean", "bmap_std", *(f"bmap_ge_{t}" for t in LEVELS), "log_size_min",
            "log_size_max", "ffn_min", "ffn_max")


@dataclass
class RagStats:
    """Additive node and edge statistics of a segmentation.

    Attributes
    ----------
    size : ndarray of float, shape (N + 1,)
        Voxels per segment id (index 0 unused).
    edges : dict
        ``(a, b)`` with ``a < b`` → float array ``[faces, bsum, bsq, ffn_ab*faces, ffn_ba*faces, ffn_faces,
        faces >= each of LEVELS]``.
    gt : ndarray of float, shape (N + 1, G), optional
        Voxel overlap of every segment with every ground-truth object (training only).
    """

    size: np.ndarray
    edges: dict = field(default_factory=dict)
    gt: np.ndarray | None = None


def _faces(labels: np.ndarray, bmap: np.ndarray):
    """Face-adjacent voxel pairs of different segments: keys ``a << 32 | b`` and mean boundary value."""
    keys, vals = [], []
    for lo, hi, m, key in face_pairs(labels):
        keys.append(key)
        vals.append(0.5 * (bmap[lo][m] + bmap[hi][m]))
    return np.concatenate(keys), np.concatenate(vals).astype(np.float64)


def rag_stats(labels: np.ndarray, bmap: np.ndarray, *, ffn_pairs: list[dict] | None = None,
              gt: np.ndarray | None = None) -> RagStats:
    """Statistics of every touching pair of ``labels``.

    Parameters
    ----------
    labels : ndarray of int, shape (Z, Y, X)
        Segments 1..N; 0 touches nothing.
    bmap : ndarray of float, shape (Z, Y, X)
        Boundary map in [0, 1].
    ffn_pairs : list of dict, optional
        :func:`~deepsci.apps.connectomics.agglomerate.pair_scores` of the same labels.
    gt : ndarray of int, shape (Z, Y, X), optional
        Ground truth (0 ignored), for training examples.
    """
    if labels.shape != bmap.shape:
        raise InputError(f"expected labels and boundary map of one shape, found {labels.shape} and {bmap.shape}")
    n = int(labels.max())
    size = np.bincount(labels.ravel().astype(np.int64), minlength=n + 1).astype(np.float64)
    keys, vals = _faces(labels, bmap)
    uniq, inv = np.unique(keys, return_inverse=True)
    cols = [np.bincount(inv, w, len(uniq)) for w in (None, vals, vals ** 2)] + [np.zeros(len(uniq))] * 3
    cols += [np.bincount(inv, (vals >= t).astype(float), len(uniq)) for t in LEVELS]
    stats = np.stack(cols, 1)
    edges = {(int(k >> 32), int(k & 0xFFFFFFFF)): stats[i] for i, k in enumerate(uniq)}
    for p in ffn_pairs or ():
        e = edges.get((p["a"], p["b"]))
        if e is not None:
            e[3:6] = (p["a_to_b"] * e[0], p["b_to_a"] * e[0], e[0])
    over = None
    if gt is not None:
        keep = gt.ravel() != 0
        _, gi = np.unique(gt.ravel()[keep], return_inverse=True)
        ng = int(gi.max()) + 1 if gi.size else 1
        flat = labels.ravel()[keep].astype(np.int64) * ng + gi
        over = np.bincount(flat, minlength=(n + 1) * ng).reshape(n + 1, ng).astype(np.float64)
    return RagStats(size=size, edges=edges, gt=over)


def edge_features(e: np.ndarray, size_a: float, size_b: float) -> np.ndarray:
    """The :data:`FEATURES` of one edge's statistics (FFN columns 0.5 when it was not scored)."""
    faces = max(e[0], 1.0)
    mean = e[1] / faces
    std = np.sqrt(max(e[2] / faces - mean ** 2, 0.0))
    if e[5] > 0:
        ab, ba = e[3] / e[5], e[4] / e[5]
    else:
        ab = ba = 0.5
    return np.array([np.log1p(e[0]), mean, std, *(e[6:] / faces), np.log1p(min(size_a, size_b)),
                     np.log1p(max(size_a, size_b)), min(ab, ba), max(ab, ba)])


@dataclass
class PairClassifier:
    """Join probability of a pair from its :data:`FEATURES` (stored as JSON, no pickle).

    Attributes
    ----------
    features : list of str
        Names of the features used (a subset of :data:`FEATURES`).
    kind : {"forest", "logistic"}
        ``forest``: random forest, ``trees`` hold each tree's arrays (``left``,
        ``right``, ``feature``, ``threshold``, ``p`` = share of joins at the node);
        ``logistic``: ``mean``, ``scale``, ``weights`` and ``bias`` on standardised features.
    params : dict
        The model's arrays, see ``kind``.
    """

    features: list
    kind: str
    params: dict

    def proba(self, x: np.ndarray) -> np.ndarray:
        """Join probability, shape (M,), of full feature rows ``x`` of shape (M, len(FEATURES))."""
        x = np.atleast_2d(x)[:, [FEATURES.index(f) for f in self.features]]
        if self.kind == "logistic":
            z = (x - np.asarray(self.params["mean"])) / np.asarray(self.params["scale"])
            return 1.0 / (1.0 + np.exp(-(z @ np.asarray(self.params["weights"]) + self.params["bias"])))
        rows = np.arange(len(x))
        out = np.zeros(len(x))
        for t in self._trees():
            node = np.zeros(len(x), np.int64)
            while True:
                inner = t["left"][node] >= 0
                if not inner.any():
                    break
                go_left = x[rows, t["feature"][node]] <= t["threshold"][node]
                node = np.where(inner, np.where(go_left, t["left"][node], t["right"][node]), node)
            out += t["p"][node]
        return out / len(self.params["trees"])

    def _trees(self) -> list[dict]:
        if not hasattr(self, "_arrays"):
            types = {"left": np.int64, "right": np.int64, "feature": np.int64, "threshold": float, "p": float}
            self._arrays = [{k: np.asarray(t[k], dt) for k, dt in types.items()} for t in self.params["trees"]]
        return self._arrays

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps({"features": self.features, "kind": self.kind, "params": self.params}))

    @classmethod
    def load(cls, path: str | Path) -> PairClassifier:
        """Read and check a classifier written by :meth:`save`; any other file is one InputError."""
        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise InputError("expected a pair-classifier JSON file, found no file", path) from None
        except (OSError, ValueError) as err:
            raise InputError(f"expected a pair-classifier JSON file, found {type(err).__name__}: "
                             f"{str(err).splitlines()[0][:120] if str(err) else ''}", path) from None
        if not isinstance(d, dict) or not {"features", "kind", "params"} <= set(d):
            found = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise InputError(f"expected a pair-classifier JSON object with features, kind and params, found {found}",
                             path)
        clf = cls(d["features"], d["kind"], d["params"])
        problem = _classifier_problem(clf)
        if problem:
            raise InputError(f"expected a pair classifier from train-agglo, found {problem}", path)
        return clf


def _classifier_problem(clf: PairClassifier) -> str | None:
    """What is wrong with a loaded classifier's JSON (``None``: nothing), so :meth:`proba` cannot fail."""
    if (not isinstance(clf.features, list) or not clf.features
            or not all(isinstance(f, str) and f in FEATURES for f in clf.features)):
        return f"features {clf.features!r} (expected names among {FEATURES})"
    if clf.kind not in ("forest", "logistic") or not isinstance(clf.params, dict):
        return f"kind {clf.kind!r} (expected forest or logistic with a params object)"
    n = len(clf.features)
    p = clf.params
    try:
        if clf.kind == "logistic":
            arrays = [np.asarray(p[k], float) for k in ("mean", "scale", "weights")]
            if any(a.shape != (n,) for a in arrays) or np.any(arrays[1] == 0):
                return f"logistic mean, scale and weights that are not {n} numbers (scale nonzero)"
            if not all(np.all(np.isfinite(a)) for a in arrays) or not np.isfinite(float(p["bias"])):
                return "logistic parameters that are not finite numbers"
            return None
        trees = p["trees"]
        if not isinstance(trees, list) or not trees:
            return "no trees"
        for i, t in enumerate(trees):
            a = {k: np.asarray(t[k], float) for k in ("left", "right", "feature", "threshold", "p")}
            m = len(a["left"])
            if m == 0 or any(v.shape != (m,) for v in a.values()):
                return f"tree {i} whose node arrays differ in length"
            inner = a["left"] >= 0
            kids = np.concatenate([a["left"][inner], a["right"][inner]])
            # Children after their parent (the forest is stored in preorder) keep the descent finite.
            order = np.concatenate([np.flatnonzero(inner)] * 2)
            if (np.any(kids != np.round(kids)) or np.any(kids >= m) or np.any(kids <= order)
                    or np.any((a["feature"][inner] < 0) | (a["feature"][inner] >= n))
                    or np.any(a["feature"] != np.round(a["feature"])) or not np.all(np.isfinite(a["p"]))):
                return f"tree {i} with nodes that point outside it"
    except (KeyError, TypeError, ValueError) as err:
        return f"malformed params ({type(err).__name__}: {err})"
    return None


def fit_pair_classifier(x: np.ndarray, y: np.ndarray, features=FEATURES, *, kind: str = "forest",
                        trees: int = 100, min_leaf: int = 5, seed: int = 0) -> PairClassifier:
    """Fit a class-balanced random forest (default) or logistic regression.

    Parameters
    ----------
    x : ndarray, shape (M, len(FEATURES))
    y : ndarray of bool, shape (M,)
        True: both sides belong to one object.
    """
    y = np.asarray(y, bool)
    if y.all() or not y.any():
        raise ConfigError(f"expected join and no-join examples, found {int(y.sum())} of {len(y)} joins")
    if kind not in ("forest", "logistic"):
        raise ConfigError(f"expected kind 'forest' or 'logistic', found {kind!r}")
    xs = x[:, [FEATURES.index(f) for f in features]]
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression

        mean, scale = xs.mean(0), xs.std(0) + 1e-6
        lr = LogisticRegression(class_weight="balanced", max_iter=2000).fit((xs - mean) / scale, y)
        return PairClassifier(list(features), kind, {"mean": mean.tolist(), "scale": scale.tolist(),
                                                     "weights": lr.coef_[0].tolist(),
                                                     "bias": float(lr.intercept_[0])})
    from sklearn.ensemble import RandomForestClassifier

    rf = RandomForestClassifier(n_estimators=trees, min_samples_leaf=min_leaf, class_weight="balanced",
                                random_state=seed, n_jobs=1).fit(xs, y)
    out = []
    for est in rf.estimators_:
        t = est.tree_
        v = t.value[:, 0, :]
        p = v[:, list(rf.classes_).index(True)] / np.maximum(v.sum(1), 1e-12)
        out.append({"left": t.children_left.tolist(), "right": t.children_right.tolist(),
                    "feature": t.feature.tolist(), "threshold": t.threshold.tolist(), "p": p.tolist()})
    return PairClassifier(list(features), kind, {"trees": out})


def _merge_edges(st: RagStats, adj: dict, u: int, v: int) -> None:
    """Merge node ``v`` into ``u`` in place: sizes, overlaps and edge statistics add."""
    st.size[u] += st.size[v]
    if st.gt is not None:
        st.gt[u] += st.gt[v]
    for w in adj.pop(v):
        e = st.edges.pop((min(v, w), max(v, w)))
        adj[w].discard(v)
        if w == u:
            continue
        # FFN recoveries are directional; keep them with respect to (min, max) order.
        if (v < w) != (u < w):
            e = e.copy()
            e[3], e[4] = e[4], e[3]
        key = (min(u, w), max(u, w))
        st.edges[key] = st.edges[key] + e if key in st.edges else e
        adj[u].add(w)
        adj[w].add(u)
    adj[u].discard(v)


def _same(st: RagStats, a: int, b: int) -> bool:
    return bool(st.gt is not None and st.gt[a].any() and st.gt[b].any()
                and np.argmax(st.gt[a]) == np.argmax(st.gt[b]))


def rag_agglomerate(labels: np.ndarray, st: RagStats, clf: PairClassifier | None, threshold: float, *,
                    oracle: bool = False, record: list | None = None) -> tuple[np.ndarray, int]:
    """Greedy agglomeration: merge the most probable pair while its probability reaches ``threshold``.

    Parameters
    ----------
    st : RagStats
        Of ``labels``; modified in place.
    clf : PairClassifier or None
        ``None`` scores every edge by ``1 - mean boundary`` (the mean-boundary agglomeration).
    oracle : bool
        Only merge pairs the ground truth (``st.gt``) agrees with (training trajectories).
    record : list, optional
        Receives ``(features, same_object)`` of every edge scored (training examples).

    Returns
    -------
    labels : ndarray of uint32, shape of ``labels``
        Relabelled 1..n.
    merged : int
    """
    adj: dict[int, set] = {i: set() for i in range(1, len(st.size))}
    for a, b in st.edges:
        adj[a].add(b)
        adj[b].add(a)
    version = np.zeros(len(st.size), int)
    heap: list = []

    def push(keys):
        # One classifier call per merge (all edges of the grown node), not one per edge.
        if not keys:
            return
        x = np.stack([edge_features(st.edges[k], st.size[k[0]], st.size[k[1]]) for k in keys])
        p = clf.proba(x) if clf is not None else 1.0 - x[:, 1]
        for (a, b), pk, xk in zip(keys, p, x, strict=True):
            if record is not None:
                record.append((xk, _same(st, a, b)))
            heapq.heappush(heap, (-float(pk), a, b, version[a], version[b]))

    push(list(st.edges))
    joins: list[tuple[int, int]] = []
    while heap:
        p, a, b, va, vb = heapq.heappop(heap)
        if -p < threshold:
            break
        if va != version[a] or vb != version[b] or (a, b) not in st.edges:
            continue
        if oracle and not _same(st, a, b):
            continue
        _merge_edges(st, adj, a, b)
        joins.append((a, b))
        version[a] += 1
        version[b] += 1
        push([(min(a, w), max(a, w)) for w in adj[a]])
    return join_segments(labels, joins).astype(np.uint32), len(joins)


def training_examples(labels: np.ndarray, bmap: np.ndarray, gt: np.ndarray, *,
                      ffn_pairs: list[dict] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Features and same-object flags of the initial edges and of an oracle mean-boundary agglomeration.

    Returns
    -------
    x : ndarray, shape (M, len(FEATURES))
    y : ndarray of bool, shape (M,)
    """
    record: list = []
    st = rag_stats(labels, bmap, ffn_pairs=ffn_pairs, gt=gt)
    rag_agglomerate(labels, st, None, 0.0, oracle=True, record=record)
    if not record:
        raise InputError("expected touching segments to learn from, found none")
    x = np.stack([r[0] for r in record])
    y = np.array([r[1] for r in record])
    return x, y
