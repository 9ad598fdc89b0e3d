"""Volume formats: zarr (v3 native, v2 read), HDF5, N5 and z-slice image folders.

Every volume is addressed by one string, ``PATH[:INNER]``:

- ``vol.zarr`` or ``vol.zarr:group/array`` — zarr v3 or v2 (a group with a single
  array, or with an array named like the expected kind, needs no INNER); an OME-Zarr
  group (NGFF) reads as its level 0, and in an OME-Zarr image ``:labels`` is its first
  label image and ``:image`` the image itself (``segment``/``baseline`` outputs, see
  :mod:`~deepsci.apps.connectomics.omezarr`);
- ``file.h5:dataset`` (also ``.hdf5``, ``.hdf``) — HDF5; ``file.h5:stack@transforms`` maps
  the ids of ``stack`` through an ``(N, 2)`` table of ``[id, body]`` rows (NeuroProof ground truth);
- ``vol.n5:dataset`` — N5 (raw, gzip, zstd or blosc chunks);
- ``slices/`` — a folder of PNG/TIFF z-slices, sorted by name in natural order;
- ``stack.tif`` — one multi-page TIFF (read into memory).

Axis order is always (z, y, x). Voxel size (z, y, x, in nm) is read from the
``voxel_size`` or ``resolution`` attribute when the format has one and carried
into every output written by :func:`write_volume`. Reads are lazy: a
:class:`Volume` reads only the box that is sliced, so volumes larger than
memory can be processed block by block.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepsci.core.errors import InputError
from deepsci.core.io import atomic_dir, reading

__all__ = [
    "Volume",
    "open_volume",
    "check_labels",
    "check_same_shape",
    "write_volume",
    "create_output",
    "write_n5",
    "AXES",
]

AXES = ("z", "y", "x")
_H5 = (".h5", ".hdf5", ".hdf")
_SLICE_EXT = (".png", ".tif", ".tiff")


def _split_spec(spec: str | os.PathLike) -> tuple[Path, str]:
    """``"a.h5:stack"`` -> (Path("a.h5"), "stack"); the last ':' after an existing path wins."""
    text = os.fspath(spec)
    if ":" in text:
        head, inner = text.rsplit(":", 1)
        if head and (Path(head).exists() or Path(head).suffix.lower() in (*_H5, ".zarr", ".n5")):
            return Path(head), inner.strip("/")
    return Path(text), ""


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


class _SliceStack:
    """Lazy (z, y, x) view of a folder of 2-D images; reads only the z-slices asked for."""

    def __init__(self, folder: Path):
        self.files = sorted((p for p in folder.iterdir() if p.suffix.lower() in _SLICE_EXT),
                            key=lambda p: _natural_key(p.name))
        if not self.files:
            raise InputError(f"expected PNG or TIFF z-slices in the folder, found {len(list(folder.iterdir()))} other files", folder)
        first = self._read(0)
        if first.ndim != 2:
            raise InputError(f"expected 2-D grayscale slices, found shape {first.shape}", self.files[0])
        self.shape = (len(self.files), *first.shape)
        self.dtype = first.dtype
        self.attrs = {}

    def _read(self, k: int) -> np.ndarray:
        path = self.files[k]
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as im:
                if im.mode in ("RGB", "RGBA"):
                    im = im.convert("L")
                arr = np.asarray(im)
        else:
            import tifffile

            arr = tifffile.imread(path)
        return arr

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        zs = range(self.shape[0])[key[0]]
        rest = key[1:]
        if isinstance(zs, int):
            return self._read(zs)[rest]
        out = []
        for k in zs:
            sl = self._read(k)
            if sl.shape != self.shape[1:]:
                raise InputError(f"expected every slice to be {self.shape[1:]}, found {sl.shape}", self.files[k])
            out.append(sl[rest])
        return np.stack(out) if out else np.zeros((0, *self.shape[1:]), self.dtype)[(slice(None), *rest)]


class _N5Array:
    """Minimal lazy reader of one N5 dataset (the format stores axes as x, y, z)."""

    def __init__(self, folder: Path):
        meta_path = folder / "attributes.json"
        meta = json.loads(meta_path.read_text())
        if "dimensions" not in meta:
            raise InputError("expected an N5 dataset (attributes.json with 'dimensions'), found a group", folder)
        self.folder = folder
        self.shape = tuple(int(v) for v in meta["dimensions"][::-1])
        self.block = tuple(int(v) for v in meta["blockSize"][::-1])
        self._disk = np.dtype(meta["dataType"]).newbyteorder(">")
        self.dtype = self._disk.newbyteorder("=")
        comp = meta.get("compression", {"type": "raw"})
        self.compression = comp if isinstance(comp, dict) else {"type": comp}
        self.attrs = {k: v for k, v in meta.items() if k not in ("dimensions", "blockSize", "dataType", "compression")}

    def _decode(self, raw: bytes) -> bytes:
        kind = self.compression.get("type", "raw")
        if kind == "raw":
            return raw
        if kind == "gzip":
            return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else zlib.decompress(raw)
        import numcodecs

        codec = {"zstd": numcodecs.Zstd, "blosc": numcodecs.Blosc}.get(kind)
        if codec is None:
            raise InputError(f"expected N5 compression raw, gzip, zstd or blosc, found {kind}", self.folder)
        return bytes(codec().decode(raw))

    def _chunk(self, idx: tuple[int, ...]) -> np.ndarray:
        path = self.folder.joinpath(*(str(i) for i in idx[::-1]))
        full = tuple(min(b, s - i * b) for i, b, s in zip(idx, self.block, self.shape, strict=True))
        if not path.exists():
            return np.zeros(full, self.dtype)
        data = path.read_bytes()
        mode, ndim = np.frombuffer(data[:4], ">u2")
        dims = tuple(int(v) for v in np.frombuffer(data[4:4 + 4 * ndim], ">u4"))[::-1]
        offset = 4 + 4 * ndim + (4 if mode == 1 else 0)
        arr = np.frombuffer(self._decode(data[offset:]), self._disk)[: int(np.prod(dims))]
        return arr.reshape(dims).astype(self.dtype)[tuple(slice(0, f) for f in full)]

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        rngs = [range(s)[k] if isinstance(k, slice) else range(s)[k:k + 1 if k != -1 else None]
                for k, s in zip(key, self.shape, strict=True)]
        if any(isinstance(k, slice) and k.step not in (None, 1) for k in key):
            raise ValueError("N5 reads support unit-step slices only")
        lo = [r.start if len(r) else 0 for r in rngs]
        hi = [r.stop if len(r) else 0 for r in rngs]
        out = np.zeros([h - low for low, h in zip(lo, hi, strict=True)], self.dtype)
        cidx = [range(low // b, (h - 1) // b + 1) if h > low else range(0)
                for low, h, b in zip(lo, hi, self.block, strict=True)]
        for cz in cidx[0]:
            for cy in cidx[1]:
                for cx in cidx[2]:
                    c = (cz, cy, cx)
                    chunk = self._chunk(c)
                    c0 = [i * b for i, b in zip(c, self.block, strict=True)]
                    src, dst = [], []
                    for d in range(3):
                        a, b = max(lo[d], c0[d]), min(hi[d], c0[d] + chunk.shape[d])
                        src.append(slice(a - c0[d], b - c0[d]))
                        dst.append(slice(a - lo[d], b - lo[d]))
                    out[tuple(dst)] = chunk[tuple(src)]
        squeeze = tuple(d for d, k in enumerate(key) if not isinstance(k, slice))
        return out.squeeze(axis=squeeze) if squeeze else out


class _Mapped:
    """Lazy view of an id volume mapped through an ``[id, body]`` table (NeuroProof ``transforms``)."""

    def __init__(self, array, table: np.ndarray):
        self.array = array
        self.shape = array.shape
        self.dtype = np.dtype(np.uint64)
        table = table.astype(np.uint64)
        order = np.argsort(table[:, 0], kind="stable")
        self.keys, self.values = table[order, 0], table[order, 1]

    def __getitem__(self, key):
        ids = np.asarray(self.array[key]).astype(np.uint64)
        pos = np.clip(np.searchsorted(self.keys, ids), 0, max(len(self.keys) - 1, 0))
        hit = (self.keys[pos] == ids) if len(self.keys) else np.zeros(ids.shape, bool)
        # Ids missing from the table keep their own id; 0 stays 0 unless the table maps it.
        return np.where(hit, self.values[pos] if len(self.keys) else ids, ids)


@dataclass
class Volume:
    """A lazily read (z, y, x) volume.

    Attributes
    ----------
    spec : str
        The ``PATH[:INNER]`` it was opened from (used in error messages, and to
        reopen it in another process).
    shape : tuple of int
        ``(Z, Y, X)``.
    dtype : numpy.dtype
    voxel_size : tuple of float
        ``(z, y, x)`` voxel size in nm (1, 1, 1 when the file does not say).
    kind : {"image", "labels"}
        Which array a spec naming a group resolves to (reopened the same way in a worker).
    """

    spec: str
    shape: tuple[int, int, int]
    dtype: np.dtype
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    kind: str = "image"
    _array: object = field(default=None, repr=False)

    def __getitem__(self, key) -> np.ndarray:
        # Chunks are decoded here, lazily: a damaged chunk (truncated zstd, bad PNG) is the user's
        # one-line error naming the volume, wherever the read happens.
        with reading(_split_spec(self.spec)[0], f"a readable {self.kind} volume"):
            if self._array is None:
                self._array = _open_array(self.spec, prefer=self.kind)[0]
            out = np.asarray(self._array[key])
        if self.kind == "labels" and np.issubdtype(out.dtype, np.signedinteger) and out.size and out.min() < 0:
            # Negative ids would silently become huge unsigned ids in the samplers and metrics.
            raise InputError(f"expected non-negative label ids, found negative ids (minimum {int(out.min())})",
                             self.spec)
        return out

    def read(self) -> np.ndarray:
        """The whole volume as an in-memory array ``(Z, Y, X)``."""
        return self[:, :, :]

    def __getstate__(self):
        # Open handles (HDF5 files) do not pickle; workers reopen from the spec.
        return {**self.__dict__, "_array": None}

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


_UNIT_NM = {"nanometer": 1.0, "micrometer": 1e3, "millimeter": 1e6, "angstrom": 0.1, "picometer": 1e-3}


def _ngff_level0(group, prefer: str):
    """Level 0 (array, attrs) of an OME-Zarr image, label or ``labels`` group; None for other groups.

    An image group with a ``labels`` group gives its first label image when ``prefer`` is
    ``"labels"``. Without deepsci's ``voxel_size`` attribute, the voxel size is the level's
    ``scale`` in nm.
    """
    ome = dict(group.attrs).get("ome") or {}
    if ome.get("labels"):
        return _ngff_level0(group[ome["labels"][0]], "labels")
    if "multiscales" not in ome:
        return None
    if prefer == "labels" and "image-label" not in ome and "labels" in group:
        found = _ngff_level0(group["labels"], "labels")
        if found is not None:
            return found
    ms = ome["multiscales"][0]
    ds = ms["datasets"][0]
    arr = group[ds["path"]]
    attrs = dict(arr.attrs)
    if "voxel_size" not in attrs:
        scale = np.ones(len(ms.get("axes", [])) or arr.ndim)
        for t in [*ds.get("coordinateTransformations", []), *ms.get("coordinateTransformations", [])]:
            if t.get("type") == "scale" and "scale" in t:
                scale = scale * np.asarray(t["scale"], np.float64)
        units = [_UNIT_NM.get(str(a.get("unit", "nanometer")), 1.0) if isinstance(a, dict) else 1.0
                 for a in ms.get("axes", [{}] * len(scale))]
        attrs["voxel_size"] = [float(v * u) for v, u in zip(scale, units, strict=False)][-3:]
    return arr, attrs


def _zarr_pick(group, path: Path, prefer: str):
    names = [n for n, a in group.arrays()]
    if len(names) == 1:
        return group[names[0]]
    if prefer in names:
        return group[prefer]
    raise InputError(f"expected PATH:ARRAY naming one of the arrays {sorted(names)} in the zarr group, found no array name", path)


def _open_array(spec: str, prefer: str = "") -> tuple[object, dict]:
    path, inner = _split_spec(spec)
    if not path.exists():
        raise InputError("expected an existing volume (zarr, HDF5 FILE:DATASET, N5, slice folder or TIFF), found no such path", path)
    suffix = path.suffix.lower()
    if suffix in _H5:
        import h5py

        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise InputError(f"expected an HDF5 file, found unreadable data ({e})", path) from None
        if not inner:
            names = [k for k, v in f.items() if isinstance(v, h5py.Dataset)]
            raise InputError(f"expected FILE.h5:DATASET naming one of {names}, found no dataset name", path)
        inner, _, table = inner.partition("@")
        if table:
            if table not in f or not isinstance(f[table], h5py.Dataset) or f[table].ndim != 2 or f[table].shape[1] != 2:
                found = (f"shape {f[table].shape}" if table in f and isinstance(f[table], h5py.Dataset)
                         else "none" if table not in f else "a group")
                raise InputError(f"expected '{table}' as an (N, 2) table of [id, body] rows in the HDF5 file, "
                                 f"found {found}", path)
        if inner not in f or not isinstance(f[inner], h5py.Dataset):
            names = []
            f.visit(lambda n: names.append(n) if isinstance(f[n], h5py.Dataset) else None)
            raise InputError(f"expected dataset '{inner}' in the HDF5 file, found only {names}", path)
        ds = f[inner]
        if table:
            return _Mapped(ds, np.asarray(f[table])), dict(ds.attrs)
        return ds, dict(ds.attrs)
    is_zarr = path.is_dir() and any((path / m).exists() for m in ("zarr.json", ".zarray", ".zgroup"))
    if suffix == ".n5" or (not is_zarr and (path / "attributes.json").exists()):
        target = path / inner if inner else path
        if not (target / "attributes.json").exists():
            raise InputError(f"expected N5 dataset '{inner}' (a folder with attributes.json), found none", path)
        arr = _N5Array(target)
        attrs = dict(arr.attrs)
        if "resolution" in attrs:  # N5 tools store x, y, z
            attrs["resolution"] = list(attrs["resolution"])[::-1]
        return arr, attrs
    if is_zarr:
        import zarr

        node = zarr.open(store=str(path), mode="r")
        if inner == "image" and isinstance(node, zarr.Group) and "image" not in node:
            found = _ngff_level0(node, "image")  # an OME-Zarr image's own image
            if found is not None:
                return found
        try:
            node = node[inner] if inner else node
        except KeyError:
            raise InputError(f"expected array '{inner}' in the zarr store, found none", path) from None
        if isinstance(node, zarr.Group):
            found = _ngff_level0(node, "image" if inner else prefer)
            if found is not None:  # OME-Zarr (segment and baseline outputs): level 0
                return found
            node = _zarr_pick(node, path, prefer)
        return node, dict(node.attrs)
    if path.is_dir():
        return _SliceStack(path), {}
    if suffix in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path), {}
    raise InputError("expected a zarr/N5 store, FILE.h5:DATASET, a folder of z-slices or a TIFF stack, found an unknown file type", path)


@contextmanager
def _metadata_errors(path: Path, what: str):
    """:func:`~deepsci.core.io.reading`, plus the TypeError/AttributeError of JSON metadata of the wrong shape.

    OME-Zarr ``multiscales`` and N5 ``attributes.json`` come from the user's store: a list where a
    dict belongs (or a string where numbers belong) is a damaged file, not a bug.
    """
    with reading(path, what):
        try:
            yield
        except (TypeError, AttributeError) as e:
            raise ValueError(f"malformed metadata ({e})") from None


def open_volume(spec: str | os.PathLike, *, voxel_size=None, kind: str = "image") -> Volume:
    """Open a (z, y, x) volume lazily.

    Parameters
    ----------
    spec : str or path
        ``PATH[:INNER]`` (see the module docstring).
    voxel_size : sequence of 3 float, optional
        Overrides the voxel size stored in the file.
    kind : {"image", "labels"}
        Picks the array of that name in a multi-array zarr group; ``"labels"``
        also checks that the dtype is integer.

    Raises
    ------
    InputError
        Missing path or dataset, not 3-D, empty, or non-integer labels.
    """
    spec = os.fspath(spec)
    path = _split_spec(spec)[0]
    # zarr, h5py, tifffile and PIL raise their own errors on damaged metadata and headers.
    with _metadata_errors(path, f"a readable {kind} volume (zarr, HDF5, N5, z-slices or TIFF)"):
        arr, attrs = _open_array(spec, prefer=kind)
        shape = tuple(int(s) for s in arr.shape)
    if len(shape) != 3:
        raise InputError(f"expected a 3-D (z, y, x) {kind} volume, found {len(shape)}-D shape {shape}", spec)
    if min(shape) == 0:
        raise InputError(f"expected a non-empty {kind} volume, found shape {shape}", spec)
    vs = voxel_size if voxel_size is not None else attrs.get("voxel_size", attrs.get("resolution", (1, 1, 1)))
    try:
        vs = tuple(float(v) for v in vs)
    except (TypeError, ValueError):
        vs = ()
    if len(vs) != 3 or not all(np.isfinite(v) and v > 0 for v in vs):
        raise InputError(f"expected a voxel size of 3 positive numbers (z, y, x), found {vs}", path)
    vol = Volume(spec=spec, shape=shape, dtype=np.dtype(arr.dtype), voxel_size=vs, kind=kind, _array=arr)
    if kind == "labels":
        check_labels(vol)
    return vol


def check_labels(vol: Volume) -> None:
    """Raise :class:`InputError` unless ``vol`` holds integer labels."""
    if not (np.issubdtype(vol.dtype, np.integer) or vol.dtype == bool):
        raise InputError(f"expected an integer label volume, found dtype {vol.dtype}", vol.spec)


def check_same_shape(a: Volume, b: Volume) -> None:
    """Raise :class:`InputError` when two volumes differ in shape."""
    if tuple(a.shape) != tuple(b.shape):
        raise InputError(f"expected the same shape as {a.spec} {tuple(a.shape)}, found {tuple(b.shape)}", b.spec)


def _attrs(voxel_size, extra: dict | None) -> dict:
    return {"axes": list(AXES), "voxel_size": [float(v) for v in voxel_size], **(extra or {})}


def write_volume(path: str | os.PathLike, arrays: dict[str, np.ndarray], *, voxel_size=(1, 1, 1),
                 chunks=(64, 64, 64), attrs: dict | None = None) -> Path:
    """Write arrays atomically into a new zarr v3 group.

    Parameters
    ----------
    path : path
        The ``.zarr`` folder; replaced only when complete.
    arrays : dict of str to ndarray
        Name -> ``(Z, Y, X)`` array, e.g. ``{"labels": ..., "probability": ...}``.
    voxel_size : sequence of 3 float
        Stored as the ``voxel_size`` attribute of the group and every array.
    """
    import zarr

    path = Path(path)
    with atomic_dir(path) as tmp:
        group = zarr.open_group(store=str(tmp), mode="w", zarr_format=3, attributes=_attrs(voxel_size, attrs))
        for name, arr in arrays.items():
            ch = tuple(min(c, s) for c, s in zip(chunks, arr.shape, strict=True))
            a = group.create_array(name, shape=arr.shape, chunks=ch, dtype=arr.dtype, fill_value=0,
                                   attributes=_attrs(voxel_size, attrs))
            a[...] = arr
    return path


def create_output(path: str | os.PathLike, shape, specs: dict[str, np.dtype], *, voxel_size=(1, 1, 1),
                  chunks=(64, 64, 64), attrs: dict | None = None):
    """Create an empty zarr v3 group of arrays to be filled block by block.

    Returns the open group; the caller is responsible for atomicity (write into
    a temporary folder from :func:`deepsci.core.io.atomic_dir`).
    """
    import zarr

    group = zarr.open_group(store=str(path), mode="w", zarr_format=3, attributes=_attrs(voxel_size, attrs))
    ch = tuple(min(c, s) for c, s in zip(chunks, shape, strict=True))
    for name, dtype in specs.items():
        group.create_array(name, shape=tuple(shape), chunks=ch, dtype=dtype, fill_value=0,
                           attributes=_attrs(voxel_size, attrs))
    return group


def write_n5(path: str | os.PathLike, dataset: str, arr: np.ndarray, *, block=(32, 32, 32),
             compression: str = "gzip", resolution=None) -> Path:
    """Write a (z, y, x) array as an N5 dataset (for interchange and tests)."""
    root = Path(path)
    ds = root / dataset
    ds.mkdir(parents=True, exist_ok=True)
    (root / "attributes.json").write_text(json.dumps({"n5": "2.0.0"}))
    meta = {"dimensions": list(arr.shape[::-1]), "blockSize": list(block[::-1]),
            "dataType": arr.dtype.name, "compression": {"type": compression}}
    if resolution is not None:
        meta["resolution"] = list(resolution)[::-1]
    (ds / "attributes.json").write_text(json.dumps(meta))
    big = arr.astype(arr.dtype.newbyteorder(">"))
    for cz in range(0, arr.shape[0], block[0]):
        for cy in range(0, arr.shape[1], block[1]):
            for cx in range(0, arr.shape[2], block[2]):
                chunk = big[cz:cz + block[0], cy:cy + block[1], cx:cx + block[2]]
                header = np.array([0, 3], ">u2").tobytes() + np.array(chunk.shape[::-1], ">u4").tobytes()
                body = chunk.tobytes()
                body = gzip.compress(body) if compression == "gzip" else body
                out = ds / str(cx // block[2]) / str(cy // block[1]) / str(cz // block[0])
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(header + body)
    return root


def read_neuroproof_groundtruth(path: str | os.PathLike, *, box=None) -> np.ndarray:
    """Neuron ("body") labels of a NeuroProof ``groundtruth.h5``.

    The file holds ``stack`` (z, y, x supervoxel ids) and ``transforms``
    (rows ``[supervoxel, body]``); bodies are the supervoxels mapped through
    the table (unmapped ids keep their own id; 0 stays 0).

    Parameters
    ----------
    box : tuple of slice, optional
        Read only this part of the stack.

    Returns
    -------
    ndarray of uint64, shape (Z, Y, X)
    """
    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"expected a NeuroProof HDF5 file, found unreadable data ({e})", path) from None
    with f:
        for name in ("stack", "transforms"):
            if name not in f:
                raise InputError(f"expected datasets 'stack' and 'transforms', found {sorted(f.keys())}", path)
        stack = np.asarray(f["stack"][box if box is not None else ()]).astype(np.uint64)
        table = np.asarray(f["transforms"]).astype(np.uint64).reshape(-1, 2)
    ids, inverse = np.unique(stack, return_inverse=True)
    lut = dict(zip(table[:, 0].tolist(), table[:, 1].tolist(), strict=True))
    mapped = np.array([lut.get(int(i), int(i)) if i else 0 for i in ids], np.uint64)
    return mapped[inverse].reshape(stack.shape)
