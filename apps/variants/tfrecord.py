"""Write ``tf.train.Example`` records to GZIP TFRecord files without importing TensorFlow.

make-examples runs in worker processes that only need to *write* examples; importing
TensorFlow there costs seconds per process, more than the work of a typical shard. The
protobuf wire format of ``tf.train.Example`` (bytes and int64 lists only) and the TFRecord
framing (length, masked CRC-32C of the length, payload, masked CRC-32C of the payload) are
small and stable, so they are written here directly; TensorFlow reads the files as usual.
"""
from __future__ import annotations

import gzip
import os
import struct

import google_crc32c

__all__ = ["encode_example", "TFRecordWriter", "masked_crc32c"]

_MASK_DELTA = 0xA282EAD8
_U64 = (1 << 64) - 1


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C of ``data`` (rotate right by 15, add a constant)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _varint(v: int) -> bytes:
    v &= _U64                    # negative int64 values are 10-byte two's complement
    out = bytearray()
    while v > 0x7F:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _feature(value: list[bytes] | list[int]) -> bytes:
    if value and isinstance(value[0], bytes):
        # Feature.bytes_list (1) -> BytesList.value (1), one field per element.
        return _field(1, b"".join(_field(1, v) for v in value))
    # Feature.int64_list (3) -> Int64List.value (1), packed varints.
    return _field(3, _field(1, b"".join(_varint(int(v)) for v in value)))


def encode_example(features: dict[str, list[bytes] | list[int]]) -> bytes:
    """Serialise a ``tf.train.Example`` whose features are bytes or int64 lists.

    Parameters
    ----------
    features : dict
        Feature name -> list of ``bytes`` (a ``BytesList``) or of ``int`` (an
        ``Int64List``). An empty list becomes an empty ``Int64List``.

    Returns
    -------
    bytes
        Identical in meaning to ``tf.train.Example(...).SerializeToString()``.
    """
    entries = b"".join(
        _field(1, _field(1, name.encode()) + _field(2, _feature(value)))
        for name, value in features.items())
    return _field(1, entries)           # Example.features (1) -> Features.feature map (1)


class TFRecordWriter:
    """GZIP-compressed TFRecord writer (``tf.data.TFRecordDataset(..., "GZIP")`` reads it).

    Use as a context manager; ``compresslevel`` trades file size for speed (pileups are
    highly redundant, so level 1 is already small).
    """

    def __init__(self, path: str | os.PathLike, *, compresslevel: int = 1):
        self._f = gzip.open(path, "wb", compresslevel=compresslevel)

    def write(self, record: bytes) -> None:
        """Append one record (usually from :func:`encode_example`)."""
        head = struct.pack("<Q", len(record))
        self._f.write(head + struct.pack("<I", masked_crc32c(head)) + record
                      + struct.pack("<I", masked_crc32c(record)))

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
