"""Read simulation: homopolymer slippage errors (the realistic source of false indels)."""
from __future__ import annotations

import re

import numpy as np

from deepsci.apps.variants.synth import _slip, homopolymers, simulate_pairs


def test_homopolymer_runs():
    starts, lens = homopolymers(b"ACAAAAGTTTTTTTCG")
    assert starts.tolist() == [2, 7] and lens.tolist() == [4, 7]
    assert homopolymers(b"ACGT")[0].size == 0 and homopolymers(b"")[0].size == 0


def test_slip_changes_only_homopolymers_by_one():
    seq = b"ACGTAAAAAAAAAAAACGTACGTTTTTTTTTTTTGCA"       # two 12-bp runs
    hp = homopolymers(seq)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(400):
        out = _slip(rng, seq, 0, hp, 0.5)                # p capped at 0.2 per run
        a, t = out.count(b"A" * 11), out.count(b"T" * 11)
        assert abs(len(out) - len(seq)) <= 2 and a == 1 and t == 1
        # Everything outside the runs is untouched.
        assert out.startswith(b"ACGT") and out.endswith(b"GCA") and b"CGTACG" in out
        seen.add(len(out) - len(seq))
    assert {-1, 0, 1} <= seen
    # A run that only partly lies in the segment is never touched.
    assert _slip(rng, seq[:10], 0, hp, 1.0) == seq[:10]


def test_slip_rate_grows_with_run_length():
    rng = np.random.default_rng(1)
    short, long_ = b"CG" + b"A" * 5 + b"CG", b"CG" + b"A" * 11 + b"CG"
    n = 5_000
    rate = [np.mean([_slip(rng, s, 0, homopolymers(s), 1e-3) != s for _ in range(n)])
            for s in (short, long_)]
    assert rate[0] < 0.004 and 0.075 < rate[1] < 0.105      # 1.9e-3 and 8.9e-2 expected


def test_reads_keep_their_length_and_pairing():
    rng = np.random.default_rng(2)
    # Flanks without T: the only T run in read 1 (A run in read 2) is the 14-bp one.
    flank = [rng.choice(list("ACG"), 3000) for _ in range(2)]
    hap = "".join(flank[0]) + "T" * 14 + "".join(flank[1])
    pairs = simulate_pairs([hap], coverage=100, read_length=100, fragment_mean=300,
                           fragment_sd=30, indel_error_rate=0.0, homopolymer_slip=0.05, seed=0)
    assert all(len(p[1]) == len(p[3]) == 100 == len(p[2]) == len(p[4]) for p in pairs)
    # Read 1 shows the run as T, read 2 (reverse complement) as A; runs wholly inside reads
    # are 13-15 bp (12 is a run cut by a read end): it slips both ways.
    runs = [len(m) for p in pairs for m in re.findall("T{12,}", p[1]) + re.findall("A{12,}", p[3])]
    assert {13, 14, 15} <= set(runs)
