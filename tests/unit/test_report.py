"""The resilience report, built from journals written by hand (no processes)."""

import json

import matplotlib
import pytest

from hadrlab.chaos import read_journal
from hadrlab.report import comparison_table, key_figure, render_report, write_report


def journal(tmp_path, name, label, *, before=True, after=True, outputs=None):
    """A minimal Chaos Toolkit journal: one probe before and after, one action."""
    outputs = outputs or {}
    probe = lambda out, met: {"activity": {"type": "probe", "name": "p"}, "status": "succeeded", "output": out,
                              "tolerance_met": met, "duration": 0.1}
    data = {
        "experiment": {"title": name, "configuration": {"label": label},
                       "steady-state-hypothesis": {"title": f"{name} holds"},
                       "extensions": [{"name": "hadrlab", "short_name": name, "fault": "a fault",
                                       "hardening": "a pattern", "bottleneck": f"{name} bottleneck"}]},
        "status": "completed", "deviated": before and not after, "duration": 3.0,
        "steady_states": {"before": {"steady_state_met": before, "probes": [probe(outputs.get("before"), before)]},
                          "after": {"steady_state_met": after, "probes": [probe(outputs.get("after"), after)]}
                          if before else None},
        "run": [{"activity": {"type": "action", "name": "fault"}, "status": "succeeded",
                 "output": outputs.get("method"), "duration": 1.0}],
        "rollbacks": [],
    }
    path = tmp_path / f"{name}-{label}.json"
    path.write_text(json.dumps(data))
    return read_journal(path)


@pytest.fixture
def results(tmp_path):
    return [
        journal(tmp_path, "registry-outage", "baseline", after=False,
                outputs={"after": {"availability": 0.0, "p99_ms": 7.0}}),
        journal(tmp_path, "kill-trainer", "baseline", after=False,
                outputs={"method": {"recovery_s": 4.3}, "after": {"steps_lost": 35, "checkpoint_every": 0}}),
        journal(tmp_path, "registry-outage", "hardened", outputs={"after": {"availability": 1.0, "p99_ms": 8.0}}),
        journal(tmp_path, "kill-trainer", "hardened",
                outputs={"method": {"recovery_s": 3.3}, "after": {"steps_lost": 5, "checkpoint_every": 10}}),
    ]


def test_verdicts_come_from_the_steady_states(tmp_path):
    assert journal(tmp_path, "a", "x").verdict == "held"
    assert journal(tmp_path, "b", "x", after=False).verdict == "deviated"
    assert journal(tmp_path, "c", "x", before=False).verdict == "not steady"


def test_comparison_table_has_one_row_per_experiment_and_a_column_per_label(results):
    table = comparison_table(results)
    assert list(table.index) == ["registry-outage", "kill-trainer"]
    assert table.loc["kill-trainer", "baseline"] == "deviated"
    assert table.loc["kill-trainer", "hardened"] == "held"
    assert table.loc["kill-trainer", "baseline figure"].startswith("35 steps lost")
    assert key_figure(results[0]).startswith("availability 0.0%")


def test_report_lists_bottlenecks_fixed_by_hardening_and_recovery_times(results):
    text = render_report(results)
    assert "## Bottlenecks found" in text
    assert "kill-trainer: kill-trainer bottleneck (fixed by: a pattern)" in text
    assert "recovery 4.3 s" in text and "recovery 3.3 s" in text
    assert "![scorecard](scorecard.png)" in text


def test_write_report_saves_markdown_and_figures_next_to_it(results, tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    path = write_report(results, tmp_path / "report" / "resilience.md")
    assert path.read_text().startswith("# Resilience report")
    for name in ("scorecard.png", "measurements.png"):
        png = path.parent / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert plt.get_fignums() == before  # no pyplot figure left open


def test_latency_is_of_served_requests_and_absent_when_none_was_served(tmp_path):
    """The before probe served requests; the after probe none: its p99 must not be the before's."""
    down = journal(tmp_path, "registry-slow", "baseline", after=False,
                   outputs={"before": {"availability": 1.0, "p99_ms": 9.0},
                            "after": {"availability": 0.0, "p99_ms": None}})
    assert "p99_ms" not in down.measurements()
    assert key_figure(down) == "availability 0.0%, no successful request"
    up = journal(tmp_path, "registry-outage", "hardened", outputs={"after": {"availability": 1.0, "p99_ms": 8.0}})
    assert key_figure(up) == "availability 100.0%, p99 8 ms"


def test_steps_lost_says_no_checkpoints_rather_than_every_zero(results):
    assert key_figure(results[1]) == "35 steps lost (no checkpoints)"
    assert key_figure(results[3]) == "5 steps lost (checkpoint every 10 steps)"


def test_measurement_value_labels_stay_inside_their_panels(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from hadrlab.report import plot_measurements

    runs = [
        journal(tmp_path, "kill-trainer", "baseline", after=False, outputs={"after": {"steps_lost": 35}}),
        journal(tmp_path, "kill-trainer", "hardened", outputs={"after": {"steps_lost": 5}}),
        journal(tmp_path, "kill-batch-scorer", "baseline", after=False,
                outputs={"after": {"duplicates": 0, "gaps": 700}}),
        journal(tmp_path, "kill-batch-scorer", "hardened", outputs={"after": {"duplicates": 0, "gaps": 0}}),
        journal(tmp_path, "registry-outage", "hardened", outputs={"after": {"availability": 1.0, "p99_ms": 8.0}}),
    ]
    fig = plot_measurements(runs)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.canvas.draw()
    labels = 0
    for ax in fig.axes:
        box = ax.get_window_extent(renderer)
        for text in ax.texts:
            if not text.get_text():
                continue
            labels += 1
            extent = text.get_window_extent(renderer)
            assert extent.y1 <= box.y1 - 2, f"{text.get_text()!r} runs into the top of {ax.get_title()!r}"
    assert labels >= 5  # 35, 5, 700, 0, 100.0
