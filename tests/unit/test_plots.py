"""Figures are titled, labelled with units, mark the fault, and do not stay open in pyplot."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from hadrlab.load import LoadResult  # noqa: E402
from hadrlab.metrics import compare, summarize  # noqa: E402
from hadrlab.plots import plot_comparison, plot_timeline  # noqa: E402

T0 = 1000.0


def two_replica_timeline(n=400, step_s=0.025, fail_from=3.0, fail_to=4.0, slow=False):
    """Round robin over two replicas; replica r2 'dies' between fail_from and fail_to."""
    rows = []
    for i in range(n):
        off = i * step_s
        replica = "r1" if i % 2 == 0 else "r2"
        failed = replica == "r2" and fail_from <= off <= fail_to
        latency = (2000.0 if slow else 1.0) if failed else 4.0 + (i % 7)
        rows.append({
            "t_start": T0 + off, "t_end": T0 + off + latency / 1000, "latency_ms": latency,
            "ok": not failed, "status": 0 if failed else 200,
            "error": "ConnectionRefusedError" if failed else "", "replica": "" if failed else replica,
        })
    return pd.DataFrame(rows)


def fault_lines(ax):
    return [line for line in ax.get_lines() if line.get_label() == "fault"]


def test_timeline_has_three_labelled_panels_and_a_title():
    fig = plot_timeline(two_replica_timeline(), fault_t=T0 + 3.0)
    axes = fig.get_axes()
    assert len(axes) == 3
    assert fig._suptitle is not None and fig._suptitle.get_text()
    ylabels = [ax.get_ylabel() for ax in axes]
    assert ylabels == ["throughput (req/s)", "errors (% of requests)", "latency (ms)"]
    assert axes[-1].get_xlabel() == "time since load start (s)"


def test_timeline_marks_the_fault_on_every_panel_in_seconds_since_start():
    fig = plot_timeline(two_replica_timeline(), fault_t=T0 + 3.0)
    for ax in fig.get_axes():
        lines = fault_lines(ax)
        assert len(lines) == 1
        assert list(lines[0].get_xdata()) == pytest.approx([3.0, 3.0])


def test_timeline_marks_several_named_faults():
    fig = plot_timeline(two_replica_timeline(), fault_t={"kill": T0 + 3.0, "restart": T0 + 6.0})
    labels = {line.get_label() for line in fig.get_axes()[0].get_lines()}
    assert {"kill", "restart"} <= labels


def test_timeline_draws_one_throughput_line_per_replica():
    fig = plot_timeline(two_replica_timeline())
    labels = [line.get_label() for line in fig.get_axes()[0].get_lines()]
    assert "answered by r1" in labels and "answered by r2" in labels


def test_timeline_shows_platform_events_with_their_kind():
    events = pd.DataFrame({"t": [T0 + 3.0, T0 + 3.4], "kind": ["killed", "endpoint_removed"],
                           "detail": ["model-api-2", "model-api-2"]})
    fig = plot_timeline(two_replica_timeline(), fault_t=T0 + 3.0, events=events)
    texts = [t.get_text() for t in fig.get_axes()[0].texts]
    assert "killed" in texts and "endpoint_removed" in texts


def test_timeline_uses_a_log_scale_when_timeouts_dwarf_latency():
    fig = plot_timeline(two_replica_timeline(slow=True), fault_t=T0 + 3.0)
    assert fig.get_axes()[2].get_yscale() == "log"
    fig = plot_timeline(two_replica_timeline(), fault_t=T0 + 3.0)
    assert fig.get_axes()[2].get_yscale() == "linear"


def test_timeline_of_a_load_result_names_the_request_and_starts_at_the_test_start():
    result = LoadResult(timeline=two_replica_timeline(), url="http://127.0.0.1:1", users=5,
                        started_at=T0 - 1.0, ended_at=T0 + 10.0, path="/predict", method="POST")
    fig = plot_timeline(result, fault_t=T0 + 3.0)
    assert "POST /predict, 5 users" in fig._suptitle.get_text()
    assert list(fault_lines(fig.get_axes()[0])[0].get_xdata()) == pytest.approx([4.0, 4.0])


def test_figures_are_closed_in_pyplot_and_render_to_png(tmp_path):
    before = set(plt.get_fignums())
    fig = plot_timeline(two_replica_timeline(slow=True), fault_t=T0 + 3.0, slo_latency_ms=500)
    assert set(plt.get_fignums()) == before
    path = tmp_path / "timeline.png"
    fig.savefig(path, dpi=80)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def summaries():
    return [
        summarize(two_replica_timeline(), T0 + 3.0, "round robin"),
        summarize(two_replica_timeline(fail_to=3.3), T0 + 3.0, "health-checked proxy"),
        summarize(two_replica_timeline(fail_to=100.0), T0 + 3.0, "no failover"),
    ]


def test_comparison_has_one_bar_per_configuration_with_units():
    fig = plot_comparison(summaries())
    ax_a, ax_r = fig.get_axes()
    assert fig._suptitle.get_text()
    assert ax_a.get_ylabel().startswith("availability (%")
    assert ax_r.get_ylabel() == "recovery time (s)"
    assert [t.get_text() for t in ax_a.get_xticklabels()] == [
        "round robin", "health-checked proxy", "no failover"]
    heights = [p.get_height() for p in ax_a.patches]
    assert heights == pytest.approx(list(compare(summaries())["availability_pct"]))


def test_comparison_marks_a_configuration_that_never_recovered():
    fig = plot_comparison(compare(summaries()))
    ax_r = fig.get_axes()[1]
    assert [t.get_text() for t in ax_r.texts][-1] == "not recovered"


def test_comparison_of_nothing_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        plot_comparison([])


def test_comparison_renders_to_png(tmp_path):
    fig = plot_comparison(summaries())
    path = tmp_path / "comparison.png"
    fig.savefig(path, dpi=80)
    assert path.stat().st_size > 1000
