"""Metrics on synthetic request timelines whose answers are known by construction."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from hadrlab.load import LoadResult
from hadrlab.metrics import (
    RunSummary,
    availability,
    budget_burn,
    compare,
    error_window,
    latency_percentiles,
    per_window,
    summarize,
    time_to_recover,
)

T0 = 1000.0  # offsets i/10 added to it are exact in binary, so window edges are exact


def make_timeline(n=100, step_s=0.1, latency_ms=5.0, fail=lambda off: False, slow=lambda off: False):
    """n requests sent every step_s from T0; `fail`/`slow` pick requests by offset (s)."""
    rows = []
    for i in range(n):
        off = i / round(1 / step_s)
        lat = 1000.0 if slow(off) else latency_ms
        ok = not fail(off)
        rows.append(
            {
                "t_start": T0 + off,
                "t_end": T0 + off + lat / 1000.0,
                "latency_ms": lat,
                "ok": ok,
                "status": 200 if ok else 0,
                "error": "" if ok else "ConnectionRefusedError: [Errno 111] Connection refused",
                "replica": "r1",
            }
        )
    return pd.DataFrame(rows)


def fails_3_to_4(off):
    return 3.0 <= off <= 4.0


def test_availability_counts_failed_requests_exactly():
    tl = make_timeline(fail=fails_3_to_4)  # offsets 3.0 .. 4.0: 11 of 100 fail
    assert availability(tl) == pytest.approx(0.89)


def test_availability_between_two_times_uses_send_time():
    tl = make_timeline(fail=fails_3_to_4)
    assert availability(tl, start=T0 + 3.0, end=T0 + 4.0) == 0.0  # 3.0 .. 3.9 all failed
    assert availability(tl, start=T0 + 5.0) == 1.0
    assert availability(tl, start=T0 + 3.5, end=T0 + 4.5) == pytest.approx(0.4)  # 6 of 10 failed


def test_availability_of_an_empty_interval_is_nan():
    assert math.isnan(availability(make_timeline(), start=T0 + 50))


def test_error_window_spans_first_to_last_failure():
    tl = make_timeline(fail=fails_3_to_4)
    first, last, duration = error_window(tl, after_t=T0)
    assert first == pytest.approx(T0 + 3.005)
    assert last == pytest.approx(T0 + 4.005)
    assert duration == pytest.approx(1.0)


def test_error_window_is_none_without_failures_after_the_fault():
    assert error_window(make_timeline()) is None
    assert error_window(make_timeline(fail=fails_3_to_4), after_t=T0 + 5) is None


def test_error_window_counts_a_timeout_when_it_fires():
    """A request sent before the fault that times out after it is in the window."""
    tl = make_timeline(n=10)
    tl.loc[2, ["ok", "t_end", "latency_ms"]] = [False, T0 + 2.2, 2000.0]  # sent at 0.2
    first, last, duration = error_window(tl, after_t=T0 + 1.0)
    assert first == last == pytest.approx(T0 + 2.2)
    assert duration == 0.0


def test_per_window_counts_requests_failures_and_rates():
    tl = make_timeline(fail=fails_3_to_4)
    windows = per_window(tl, window_s=1.0)
    assert list(windows["requests"]) == [10] * 10
    assert list(windows["failures"]) == [0, 0, 0, 10, 1, 0, 0, 0, 0, 0]
    assert list(windows["t"]) == [T0 + k for k in range(10)]
    assert windows.loc[4, "availability"] == pytest.approx(0.9)
    assert list(windows["rps"]) == [10.0] * 10
    assert windows["p99_ms"].tolist() == pytest.approx([5.0] * 10)


def test_per_window_keeps_empty_windows_with_nan_availability():
    tl = make_timeline(n=30)
    tl = tl[(tl["t_start"] < T0 + 1.0) | (tl["t_start"] >= T0 + 2.0)]  # nothing sent in [1, 2)
    windows = per_window(tl, window_s=1.0)
    assert list(windows["requests"]) == [10, 0, 10]
    assert math.isnan(windows.loc[1, "availability"])
    assert windows.loc[1, "rps"] == 0.0


def test_per_window_latency_percentiles_per_window():
    tl = make_timeline(slow=lambda off: 2.0 <= off < 3.0)
    windows = per_window(tl, window_s=1.0)
    assert windows.loc[2, "p50_ms"] == 1000.0
    assert windows.loc[1, "p99_ms"] == 5.0


def test_per_window_rejects_a_non_positive_window():
    with pytest.raises(ValueError, match="window_s"):
        per_window(make_timeline(), window_s=0)


def test_time_to_recover_is_the_start_of_the_first_sustained_healthy_window():
    tl = make_timeline(fail=fails_3_to_4)
    # windows from the fault at 3.0: [3, 3.5) and [3.5, 4) all fail, [4, 4.5) has one
    # failure in five, [4.5, 5) is the first healthy one.
    assert time_to_recover(tl, T0 + 3.0, window_s=0.5) == pytest.approx(1.5)


def test_time_to_recover_waits_for_latency_too():
    tl = make_timeline(slow=lambda off: 3.0 <= off < 5.0)  # nothing fails, but 1 s answers
    assert time_to_recover(tl, T0 + 3.0, slo_latency_ms=500) == pytest.approx(2.0)
    assert time_to_recover(tl, T0 + 3.0, slo_latency_ms=1500) == 0.0


def test_time_to_recover_is_zero_when_the_fault_was_not_felt():
    assert time_to_recover(make_timeline(), T0 + 3.0) == 0.0


def test_time_to_recover_is_none_if_it_never_recovers():
    tl = make_timeline(fail=lambda off: off >= 3.0)
    assert time_to_recover(tl, T0 + 3.0) is None


def test_time_to_recover_is_none_if_the_run_ends_before_recovery_is_sustained():
    tl = make_timeline(fail=lambda off: 3.0 <= off <= 8.5)  # healthy only for 9.0 .. 9.9
    assert time_to_recover(tl, T0 + 3.0, sustain_s=2.0) is None
    assert time_to_recover(tl, T0 + 3.0, sustain_s=1.0) == pytest.approx(6.0)


def test_time_to_recover_ignores_a_gap_with_no_requests():
    tl = make_timeline(fail=fails_3_to_4)
    tl = tl[(tl["t_start"] < T0 + 5.0) | (tl["t_start"] >= T0 + 6.0)]
    assert time_to_recover(tl, T0 + 3.0) == pytest.approx(1.5)


def test_time_to_recover_tolerates_failures_within_the_success_objective():
    tl = make_timeline(n=1000, step_s=0.01, fail=lambda off: off == 5.0)  # 1 in 50 in its window
    assert time_to_recover(tl, T0 + 3.0, slo_success=0.95) == 0.0


def test_time_to_recover_counts_from_the_fault_even_when_its_effect_starts_late():
    tl = make_timeline(n=1000, step_s=0.01, fail=lambda off: off == 5.0)
    # healthy for 2 s after the fault, then one window below 99 %: recovered at 5.5 s.
    assert time_to_recover(tl, T0 + 3.0, slo_success=0.99) == pytest.approx(2.5)


def test_latency_percentiles_match_numpy_linear_interpolation():
    tl = make_timeline(n=100)
    tl["latency_ms"] = [float(v) for v in range(1, 101)]
    p = latency_percentiles(tl)
    assert p["p50_ms"] == pytest.approx(50.5)
    assert p["p95_ms"] == pytest.approx(95.05)
    assert p["p99_ms"] == pytest.approx(99.01)
    assert p["max_ms"] == 100.0


def test_latency_percentiles_of_successes_only():
    tl = make_timeline(n=10)
    tl.loc[9, ["ok", "latency_ms"]] = [False, 2000.0]
    assert latency_percentiles(tl)["max_ms"] == 2000.0
    assert latency_percentiles(tl, ok_only=True)["max_ms"] == 5.0


def test_budget_burn_is_failures_over_allowed_failures():
    tl = make_timeline(n=1000, step_s=0.01, fail=lambda off: off in (1.0, 2.0))
    assert budget_burn(tl, slo=0.999) == pytest.approx(2.0)
    assert budget_burn(tl, slo=0.99) == pytest.approx(0.2)
    assert budget_burn(tl, slo=0.999, start=T0 + 3.0) == 0.0
    with pytest.raises(ValueError, match="between 0 and 1"):
        budget_burn(tl, slo=99.9)


def test_summarize_a_timeline_with_a_fault():
    summary = summarize(make_timeline(fail=fails_3_to_4), fault_t=T0 + 3.0, label="1 replica")
    assert isinstance(summary, RunSummary)
    assert (summary.label, summary.requests, summary.failures) == ("1 replica", 100, 11)
    assert summary.availability == pytest.approx(0.89)
    assert summary.error_window_s == pytest.approx(1.0)
    assert summary.recovery_s == pytest.approx(1.5)
    assert summary.p99_ms == pytest.approx(5.0)
    assert "1 replica" in repr(summary) and "89.000 %" in repr(summary)


def test_summarize_uses_locust_totals_of_a_load_result():
    tl = make_timeline(fail=fails_3_to_4)
    result = LoadResult(timeline=tl, url="http://127.0.0.1:1", users=5, started_at=T0,
                        ended_at=T0 + 10, total_requests=100, total_failures=11)
    summary = summarize(result)
    assert (summary.requests, summary.failures) == (100, 11)
    assert summary.recovery_s is None
    assert result.availability == pytest.approx(0.89)
    assert result.rps == pytest.approx(10.0)


def test_compare_puts_one_configuration_per_row():
    a = summarize(make_timeline(fail=fails_3_to_4), fault_t=T0 + 3.0, label="1 replica")
    b = summarize(make_timeline(), fault_t=T0 + 3.0, label="2 replicas")
    c = summarize(make_timeline(fail=lambda off: off >= 3.0), fault_t=T0 + 3.0, label="broken")
    table = compare([a, b, c])
    assert list(table.index) == ["1 replica", "2 replicas", "broken"]
    assert table.loc["1 replica", "availability_pct"] == pytest.approx(89.0)
    assert table.loc["2 replicas", "failures"] == 0
    assert table.loc["2 replicas", "recovery_s"] == 0.0
    assert math.isnan(table.loc["broken", "recovery_s"])


def test_compare_shows_the_prometheus_count_only_when_a_run_has_one():
    import dataclasses

    a = summarize(make_timeline(fail=fails_3_to_4), fault_t=T0 + 3.0, label="scraped")
    b = summarize(make_timeline(), fault_t=T0 + 3.0, label="not scraped")
    assert "prometheus_availability_pct" not in compare([a, b]).columns
    table = compare([dataclasses.replace(a, prometheus_availability=0.8912), b])
    assert list(table.columns[2:4]) == ["availability_pct", "prometheus_availability_pct"]
    assert table.loc["scraped", "prometheus_availability_pct"] == pytest.approx(89.12)
    assert math.isnan(table.loc["not scraped", "prometheus_availability_pct"])


def test_metrics_reject_something_that_is_not_a_timeline():
    with pytest.raises(ValueError, match="request timeline"):
        availability(pd.DataFrame({"t": [1.0]}))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"users": 0}, "users must be a whole number >= 1"),
        ({"users": 2.5}, "users must be a whole number >= 1"),
        ({"users": "ten"}, "users must be a whole number >= 1; got 'ten'"),
        ({"duration_s": 0}, "duration_s must be a number >= 0.5"),
        ({"timeout_s": -1}, "timeout_s must be a number"),
        ({"wait_ms": -5}, "wait_ms must be a number >= 0"),
    ],
)
def test_bad_load_settings_are_refused_before_anything_starts(kwargs, message):
    from hadrlab.load import start_load

    with pytest.raises(ValueError, match=message):
        start_load("http://127.0.0.1:9", **kwargs)
