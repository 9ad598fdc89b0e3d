"""The TensorFlow-free example writer against TensorFlow's own protobuf and record reader."""
from __future__ import annotations

import numpy as np
import pytest

from deepsci.apps.variants.tfrecord import TFRecordWriter, encode_example, masked_crc32c


def _tf_example(features):
    import tensorflow as tf

    def feat(v):
        if isinstance(v[0], bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=v))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=v))
    return tf.train.Example(features=tf.train.Features(
        feature={k: feat(v) for k, v in features.items()}))


FEATURES = {
    "image/encoded": [np.arange(100 * 221 * 7, dtype=np.int64).astype(np.uint8).tobytes()],
    "label": [-1],                                   # 10-byte two's complement varint
    "variant/pos": [0, 1, 127, 128, 2 ** 40, -(2 ** 63)],
    "variant/alts": [b"A", b"", b"ACGTACGT" * 40],   # a >127-byte element: 2-byte length
}


def test_encoding_matches_tensorflow():
    import tensorflow as tf

    raw = encode_example(FEATURES)
    assert tf.train.Example.FromString(raw) == _tf_example(FEATURES)


def test_masked_crc_known_value():
    # CRC-32C("123456789") = 0xE3069283 (RFC 3720 check value); masked as TFRecord does.
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@pytest.mark.parametrize("level", [1, 6])
def test_records_read_back_by_tensorflow(tmp_path, level):
    import tensorflow as tf

    path = tmp_path / f"x{level}.tfrecord.gz"
    recs = [encode_example({**FEATURES, "label": [k]}) for k in range(3)]
    with TFRecordWriter(path, compresslevel=level) as w:
        for r in recs:
            w.write(r)
    got = [r.numpy() for r in tf.data.TFRecordDataset(str(path), compression_type="GZIP")]
    assert got == recs
    labels = [tf.train.Example.FromString(r).features.feature["label"].int64_list.value[0]
              for r in got]
    assert labels == [0, 1, 2]


def test_corrupt_record_is_detected(tmp_path):
    import gzip

    import tensorflow as tf

    path = tmp_path / "bad.tfrecord.gz"
    with TFRecordWriter(path) as w:
        w.write(encode_example(FEATURES))
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[40] ^= 0xFF                                  # flip bits inside the payload
    path.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(path), compression_type="GZIP"))
