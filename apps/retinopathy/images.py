"""Decoding fundus photographs: one line naming the file for anything unreadable.

:func:`load_image` refuses missing, empty, damaged and oversized files
(decompression bombs, checked before decoding) with an
:class:`~deepsci.core.errors.InputError`; :func:`is_synthetic` recognises the
photographs ``retinopathy synth`` writes.
"""
from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from deepsci.core.errors import InputError

#: Default cap on decoded pixels; large fundus cameras give ~20 MP, so 100 MP
#: leaves room while stopping decompression bombs before they allocate.
MAX_PIXELS = 100_000_000
#: What PIL's decoders raise on damaged bytes (besides its own errors).
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError,
                ZeroDivisionError, RuntimeError, struct.error, zlib.error, MemoryError)


def load_image(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS,
               min_side: int | None = None) -> np.ndarray:
    """Decode a fundus photograph to RGB.

    Parameters
    ----------
    path : path-like
        JPEG/PNG/TIFF file.
    max_pixels : int
        Refuse images with more pixels than this (decompression bombs) before
        decoding them.
    min_side : int, optional
        Allow JPEG decoding at a reduced scale (1/2, 1/4, 1/8) as long as the
        shorter side stays at least this long.

    Returns
    -------
    numpy.ndarray of uint8, shape (H, W, 3)

    Raises
    ------
    InputError
        Missing, unreadable, truncated or oversized image.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("expected an image file, found " + ("a folder" if path.is_dir()
                                                             else "no file"), path)
    if path.stat().st_size == 0:
        raise InputError("expected an image file, found an empty file", path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise InputError(f"expected at most {max_pixels} pixels, found {w}x{h} "
                                 "(possible decompression bomb)", path)
            if min_side and im.format == "JPEG" and min(w, h) > 2 * min_side:
                s = min_side / min(w, h)
                im.draft("RGB", (int(np.ceil(w * s)), int(np.ceil(h * s))))
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im.load()
            rgb = np.asarray(im.convert("RGB"))
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputError(f"expected a normal-sized image, found a decompression bomb ({e})",
                         path) from None
    except UnidentifiedImageError:
        raise InputError("expected a JPEG, PNG or TIFF photograph, found a file that is not "
                         "an image", path) from None
    except IMAGE_ERRORS as e:
        # Decoders raise anything from OSError to struct.error on damaged bytes.
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise InputError(f"expected a readable image, found a corrupt or truncated file ({first})",
                         path) from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
        raise InputError(f"expected an RGB photograph, found an array of shape {rgb.shape}", path)
    return rgb


#: The JPEG comment ``retinopathy synth`` writes into every photograph: how a
#: photograph is recognised as deepsci-synthetic (the only kind the shipped
#: demo model was trained on).
SYNTH_MARKER = b"deepsci-synthetic retinopathy"


def is_synthetic(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a photograph written by ``retinopathy synth`` (its JPEG comment
    starts with :data:`SYNTH_MARKER`); unreadable files and every other image are not."""
    try:
        with Image.open(path) as im:
            comment = im.info.get("comment", b"")
    except IMAGE_ERRORS:
        return False
    if isinstance(comment, str):
        comment = comment.encode("latin-1", "replace")
    return comment.startswith(SYNTH_MARKER)
