"""The interleaved peak: each timed call divided by the peak measured around it."""
import itertools

import pytest

from deepsci.core.bench import interleaved


def _fake(peaks, seconds):
    p, t = iter(peaks), itertools.count()
    times = iter(seconds)
    now = [0.0]

    def clock():
        return now[0]

    def work():
        now[0] += next(times)

    return (lambda: next(p)), clock, work, t


def test_share_of_peak_uses_the_bracketing_peaks_and_flags_a_moving_peak():
    # peak measured: 100 before, then after each of 3 calls: 100, 50, 100
    peak, clock, work, _ = _fake([100.0, 100.0, 50.0, 100.0], [1.0, 2.0, 1.0])
    got = interleaved({"w": (work, 50e9)}, rounds=3, peak=peak, clock=clock, warmup=0)
    w = got["work"]["w"]
    # 50 GFLOP/s against mean(100,100) = 50 %; 25 against mean(100,50) = 33.3 %; 50 against 75 = 66.7 %
    assert w["pct_min"] == pytest.approx(100 / 3)
    assert w["pct_max"] == pytest.approx(200 / 3)
    assert w["pct_of_peak"] == pytest.approx(50.0)
    assert w["seconds"] == 1.0 and w["gflops"] == pytest.approx(50.0)
    assert got["peak"] == {"median": 100.0, "min": 50.0, "max": 100.0, "moved": True}


def test_a_steady_peak_is_not_flagged():
    peak, clock, work, _ = _fake([100.0, 105.0, 98.0], [1.0, 1.0])
    got = interleaved({"w": (work, 10e9)}, rounds=2, peak=peak, clock=clock, warmup=0)
    assert got["peak"]["moved"] is False
    assert got["work"]["w"]["pct_of_peak"] == pytest.approx((10 / 102.5 + 10 / 101.5) / 2 * 100)
