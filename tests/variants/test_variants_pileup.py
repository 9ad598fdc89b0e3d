"""Pileup encoding of hand-built reads: every channel, indels, soft clips, strands."""
from __future__ import annotations

import numpy as np
import pytest

from deepsci.apps.variants import pileup as P
from deepsci.apps.variants.candidates import (
    Candidate,
    CandidateConfig,
    ReadInfo,
    keep_read,
    left_align_event,
    parse_read,
)

# A reference with no repeats around the indels below, so their events do not shift.
REF = ("TGCATCAGTCCGATAGCTTGACCTAGGCATCGTAACGGTACTCAGTTCGAGCATGCAACTGGTCAGTACCGATG"
       "CTAGCGTCAATGCCTAGATCGGTACAGCTTACGGACTGATCCGTAGCTAGCAGTCTGACGATCGTTACGCATGGAC"
       "TACGTTAGCATCGACTGCATGCGATTCAGGCTACGATCCAGTAGTGACATCGATGGCTAACGTTCGAG")
REF_ARR = np.frombuffer(REF.encode(), np.uint8)


@pytest.fixture
def header():
    import pysam
    return pysam.AlignmentHeader.from_dict({"SQ": [{"SN": "c1", "LN": len(REF)}]})


@pytest.fixture
def make_read(vt):
    return vt.make_read


def _mut(base: str) -> str:
    return {"A": "C", "C": "G", "G": "T", "T": "A"}[base]


def test_match_and_mismatch_channels(make_read, header):
    seq = list(REF[100:110])
    seq[3] = _mut(seq[3])
    r = make_read(header, "r1", 100, "10M", "".join(seq), qual=30, mapq=60, tlen=300)
    row = np.zeros((40, 7), np.uint8)
    P.encode_read(row, r, REF_ARR, 0, 90, P.SUPPORTS)
    cols = slice(10, 20)
    assert row[:10].sum() == 0 and row[20:].sum() == 0          # nothing outside the read
    expect_base = [{"A": 250, "G": 180, "T": 100, "C": 30}[b] for b in seq]
    assert row[cols, 0].tolist() == expect_base
    assert set(row[cols, 1].tolist()) == {int(30 / 40 * 254)}    # base quality 30 of cap 40
    assert set(row[cols, 2].tolist()) == {254}                   # MAPQ 60 = cap
    assert set(row[cols, 3].tolist()) == {70}                    # forward strand
    assert set(row[cols, 4].tolist()) == {254}                   # supports the alt
    differs = [254 if i == 3 else int(0.2 * 254) for i in range(10)]
    assert row[cols, 5].tolist() == differs
    assert set(row[cols, 6].tolist()) == {int(300 / 1000 * 254)}  # insert size 300

    events, mism = parse_read(r, REF.encode(), REF_ARR, 0, 10)
    assert events == {("X", 103, seq[3])}
    assert mism.tolist() == [103]


def test_indels_softclip_reverse(make_read, header):
    # 2S 5M 2I 5M 3D 5M starting at 95: soft clip not drawn, insertion anchored at 99,
    # deletion of 105..107.
    ins = "GG" if REF[99] != "G" else "TT"
    seq = "AA" + REF[95:100] + ins + REF[100:105] + REF[108:113]
    quals = [25] * 7 + [12, 15] + [25] * 10
    r = make_read(header, "r2", 95, "2S5M2I5M3D5M", seq, qual=quals, mapq=20, reverse=True)
    row = np.zeros((40, 7), np.uint8)
    P.encode_read(row, r, REF_ARR, 0, 90, P.NOT_SUPPORTS)
    assert row[:5].sum() == 0                                     # soft clip not drawn
    assert row[9, 0] == 0 and row[9, 5] == 254                    # insertion anchor
    assert row[9, 1] == int(12 / 40 * 254)                        # lowest inserted quality
    assert row[15:18, 0].tolist() == [0, 0, 0]                    # deleted bases
    assert row[15:18, 1].tolist() == [0, 0, 0]
    assert row[15:18, 5].tolist() == [254, 254, 254]
    assert set(row[5:23, 3].tolist()) == {240}                    # reverse strand
    assert set(row[5:23, 2].tolist()) == {int(20 / 60 * 254)}
    assert set(row[5:23, 4].tolist()) == {P.NOT_SUPPORTS}
    assert set(row[5:23, 6].tolist()) == {0}                      # unpaired
    assert row[23:].sum() == 0
    # Matched bases after the indels line up with the reference again.
    assert row[10:15, 5].tolist() == [int(0.2 * 254)] * 5
    assert row[18:23, 0].tolist() == P.base_color(REF_ARR[108:113]).tolist()

    events, _ = parse_read(r, REF.encode(), REF_ARR, 0, 10)
    assert ("I", 99, ins) in events
    assert ("D", 104, 3) in events


def test_left_alignment_of_events(make_read, header):
    ref = "ACGTTTTTGCA" + "ACGT" * 5
    arr = np.frombuffer(ref.encode(), np.uint8)
    # Delete one T at the right end of the run: it must move to the run's left.
    assert left_align_event(("D", 6, 1), ref.encode(), 0) == ("D", 2, 1)
    # Insert a T after the run: same.
    assert left_align_event(("I", 7, "T"), ref.encode(), 0) == ("I", 2, "T")
    # A read whose aligner put the gap at the end of the run gives the left-aligned event.
    seq = ref[0:7] + ref[8:20]
    r = make_read(header, "r3", 0, "7M1D12M", seq)
    events, _ = parse_read(r, ref.encode(), arr, 0, 10)
    assert events == {("D", 2, 1)}


def test_low_quality_mismatch_is_not_an_event(make_read, header):
    seq = list(REF[50:60])
    seq[5] = _mut(seq[5])
    quals = [30] * 10
    quals[5] = 9
    r = make_read(header, "r4", 50, "10M", "".join(seq), qual=quals)
    events, mism = parse_read(r, REF.encode(), REF_ARR, 0, 10)
    assert events == set() and mism.tolist() == [55]


@pytest.mark.parametrize("flag,mapq,keep", [(0, 60, True), (1024, 60, False), (256, 60, False),
                                            (2048, 60, False), (512, 60, False), (0, 4, False),
                                            (0, 5, True), (4, 60, False)])
def test_read_filters(make_read, header, flag, mapq, keep):
    r = make_read(header, "f", 10, "10M", REF[10:20], mapq=mapq, flag_extra=flag)
    assert keep_read(r, CandidateConfig()) is keep


def test_full_image_layout(make_read, header):
    reads = []
    for i in range(120):                 # more reads than rows: down-sampled to 95
        start = 60 + (i % 40)
        r = make_read(header, f"q{i}", start, "50M", REF[start:start + 50], reverse=i % 2 == 1)
        ev, _ = parse_read(r, REF.encode(), REF_ARR, 0, 10)
        reads.append(ReadInfo(r, start, start + 50, ev))
    cand = Candidate("c1", 105, REF[105], [_mut(REF[105])], [("X", 105, _mut(REF[105]))], 120,
                     [120, 0])
    img = P.encode_pileup(cand, (0,), reads, REF_ARR, 0, seed=1)
    again = P.encode_pileup(cand, (0,), reads, REF_ARR, 0, seed=1)
    assert img.shape == (100, 221, 7) and img.dtype == np.uint8
    assert np.array_equal(img, again)                                # fixed-seed down-sampling
    # Reference rows: the reference bases centred on the candidate.
    centre = 110
    assert img[0, centre, 0] == P.base_color(REF_ARR[105:106])[0]
    assert (img[:5, :, 1][img[:5, :, 0] > 0] == 254).all()
    # All 95 read rows are used; reads are sorted by start.
    assert (img[5:, centre, 0] > 0).all()
    starts = [np.flatnonzero(img[k, :, 0])[0] for k in range(5, 100)]
    assert starts == sorted(starts)
    # No read supports the alt.
    assert set(img[5:, centre, 4].tolist()) == {P.NOT_SUPPORTS}


def test_alt_sets():
    assert P.alt_sets(1) == [(0,)]
    assert P.alt_sets(3) == [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2)]
