"""The per-worker latency recorder behind readiness' and /metrics' feed timings."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hashwatch.service.state import Latency


@given(st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), max_size=300))
def test_buckets_are_cumulative_counts_and_quantiles_come_from_the_samples(xs):
    lat = Latency(keep=1000)
    for x in xs:
        lat.observe(x)
    lines = lat.prometheus("t_seconds", "test")
    buckets = {ln.split('"')[1]: int(ln.rsplit(" ", 1)[1]) for ln in lines if "_bucket" in ln}
    for le in Latency.BUCKETS:
        assert buckets[str(le)] == sum(1 for x in xs if x <= le)
    assert buckets["+Inf"] == len(xs)
    assert f"t_seconds_count {len(xs)}" in lines
    s = lat.summary()
    assert s["n"] == len(xs)
    if xs:
        assert s["max"] == max(xs)
        assert s["p50"] == sorted(xs)[len(xs) // 2]
        assert sum(1 for x in xs if x <= s["p99"]) >= 0.99 * len(xs)
    else:
        assert s["p50"] is None


def test_only_the_last_samples_are_kept_for_quantiles():
    lat = Latency(keep=10)
    for _ in range(100):
        lat.observe(5.0)
    for _ in range(10):
        lat.observe(0.001)
    assert lat.summary()["max"] == 0.001
    assert lat.n == 110  # the histogram counts everything
