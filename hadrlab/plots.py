"""Figures of request timelines and of configurations side by side.

matplotlib is imported inside each function, so ``import hadrlab`` stays light. Every
function returns its Figure after closing it in pyplot: a notebook shows the returned
figure once, and it never leaks into a later cell. Every timeline marks the fault.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hadrlab.metrics import compare, per_window

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["plot_timeline", "plot_comparison"]

_FAULT_COLOR = "#d62728"
_EVENT_COLOR = "#7f7f7f"
# Beyond this many distinct replicas, one line each is noise rather than information.
_MAX_REPLICA_LINES = 6
_MAX_EVENT_LABELS = 12


def _faults(fault_t: Any) -> list[tuple[str, float]]:
    """Normalise fault_t (a time, a list of times, or {label: time}) to (label, t) pairs."""
    if fault_t is None:
        return []
    if isinstance(fault_t, Mapping):
        return [(str(k), float(v)) for k, v in fault_t.items()]
    if isinstance(fault_t, Sequence) and not isinstance(fault_t, str):
        return [("fault", float(t)) for t in fault_t]
    return [("fault", float(fault_t))]


def _step(ax: Any, x: Any, y: Any, **style: Any) -> None:
    """Draw per-window values as steps, the last one held to the end of its window."""
    import numpy as np

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(x):
        width = x[1] - x[0] if len(x) > 1 else 1.0
        x = np.append(x, x[-1] + width)
        y = np.append(y, y[-1])
    ax.step(x, y, where="post", **style)


def plot_timeline(
    result_or_timeline: Any,
    *,
    fault_t: Any = None,
    events: pd.DataFrame | None = None,
    window_s: float = 0.5,
    title: str | None = None,
    slo_latency_ms: float | None = None,
) -> Figure:
    """Plot throughput, errors and latency of a load run over time, the fault marked.

    Args:
        result_or_timeline: a LoadResult or a request timeline DataFrame.
        fault_t: epoch seconds of the fault; also a list of times, or ``{label: time}``
            for several (e.g. ``{"kill": t1, "restart": t2}``).
        events: platform events, a DataFrame with ``t`` (epoch s), ``kind``, ``detail``;
            drawn as dotted lines, labelled on the top panel.
        window_s: width of the aggregation windows in seconds.
        title: figure title; a default names the request and the users.
        slo_latency_ms: draw this latency objective on the latency panel.

    Returns:
        A matplotlib Figure with three panels sharing the time axis (seconds since load
        start): throughput (req/s), errors (% of requests), latency p50/p99 (ms).
    """
    import matplotlib.pyplot as plt
    import numpy as np

    timeline = getattr(result_or_timeline, "timeline", result_or_timeline)
    started = getattr(result_or_timeline, "started_at", None)
    ended = getattr(result_or_timeline, "ended_at", None)
    if started is None:
        started = float(timeline["t_start"].min()) if len(timeline) else 0.0
    windows = per_window(timeline, window_s, start=started, end=ended)
    if ended is not None and len(windows) > 1:
        # A last window that the run barely covers would show a false drop in throughput.
        covered = windows[windows["t"] + 0.75 * window_s <= ended].reset_index(drop=True)
        windows = covered if len(covered) else windows
    x = windows["t"].to_numpy() - started

    if title is None:
        what = ""
        if hasattr(result_or_timeline, "path"):
            r = result_or_timeline
            what = f": {r.method} {r.path}, {r.users} users"
        title = f"Requests over time{what}"

    fig, (ax_rps, ax_err, ax_lat) = plt.subplots(
        3, 1, sharex=True, figsize=(11, 7.5), gridspec_kw={"height_ratios": [1.2, 1, 1.2]}
    )
    fig.suptitle(title)

    # Throughput, and each replica's share when the server says who answered.
    _step(ax_rps, x, windows["rps"], color="#1f77b4", label="all requests")
    ok_rps = (windows["requests"] - windows["failures"]) / window_s
    _step(ax_rps, x, ok_rps, color="#2ca02c", linestyle="--", label="successful")
    replicas: list[str] = []
    if "replica" in timeline.columns and len(timeline):
        replicas = sorted(r for r in timeline["replica"].unique() if isinstance(r, str) and r)
    if 1 < len(replicas) <= _MAX_REPLICA_LINES:
        sent = timeline[(timeline["t_start"] >= started) & (timeline["t_start"] < started + len(x) * window_s)]
        slot = np.floor((sent["t_start"].to_numpy() - started) / window_s).astype(int)
        for replica in replicas:
            counts = np.bincount(slot[(sent["replica"] == replica).to_numpy()], minlength=len(x))
            _step(ax_rps, x, counts[: len(x)] / window_s, linewidth=0.9, alpha=0.8,
                        label=f"answered by {replica}")
    ax_rps.set_ylabel("throughput (req/s)")
    ax_rps.set_ylim(bottom=0)

    # Errors as a share of requests: it stays readable when throughput collapses.
    error_pct = 100.0 * windows["failures"] / windows["requests"].where(windows["requests"] > 0)
    ax_err.fill_between(np.append(x, x[-1] + window_s) if len(x) else x,
                        np.append(error_pct.fillna(0.0), error_pct.fillna(0.0).iloc[-1]) if len(x) else [],
                        step="post", color=_FAULT_COLOR, alpha=0.35)
    _step(ax_err, x, error_pct, color=_FAULT_COLOR, label="failed requests")
    ax_err.set_ylabel("errors (% of requests)")
    ax_err.set_ylim(0, 105)

    # Latency: a log scale when a timeout dwarfs the healthy latency.
    _step(ax_lat, x, windows["p50_ms"], color="#9467bd", label="p50")
    _step(ax_lat, x, windows["p99_ms"], color="#ff7f0e", label="p99")
    if slo_latency_ms is not None:
        ax_lat.axhline(slo_latency_ms, color="#555555", linestyle=":", linewidth=1,
                       label=f"SLO {slo_latency_ms:g} ms")
    p50 = windows["p50_ms"].dropna()
    p99 = windows["p99_ms"].dropna()
    if len(p50) and len(p99) and p50.median() > 0 and p99.max() / p50.median() > 30:
        ax_lat.set_yscale("log")
    else:
        ax_lat.set_ylim(bottom=0)
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_xlabel("time since load start (s)")

    axes = (ax_rps, ax_err, ax_lat)
    if events is not None and len(events):
        shown = events.sort_values("t")
        # Labels of events close in time go side by side, each at least label_gap_pt right of
        # the previous one, instead of printing over each other.
        xs = [float(t) - started for t in shown["t"]]
        span_s = max([1.0] + ([float(x[-1]) + window_s] if len(x) else []) + xs)
        pt_per_s = fig.get_size_inches()[0] * 72 * ax_rps.get_position().width / span_s
        label_gap_pt, last_pt = 9.0, float("-inf")
        for i, ((_, event), ex) in enumerate(zip(shown.iterrows(), xs)):
            for ax in axes:
                ax.axvline(ex, color=_EVENT_COLOR, linestyle=":", linewidth=1)
            if i < _MAX_EVENT_LABELS:
                at_pt = max(ex * pt_per_s + 2, last_pt + label_gap_pt)
                last_pt = at_pt
                ax_rps.annotate(
                    str(event.get("kind", "")), xy=(ex, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(at_pt - ex * pt_per_s, -2), textcoords="offset points", rotation=90, va="top",
                    fontsize=7, color="#444444",
                )
    for label, t in _faults(fault_t):
        fx = t - started
        for ax in axes:
            ax.axvline(fx, color=_FAULT_COLOR, linestyle="--", linewidth=1.6, label=label)
        ax_err.annotate(label, xy=(fx, 0.97), xycoords=("data", "axes fraction"),
                        xytext=(3, -3), textcoords="offset points", va="top",
                        fontsize=8, color=_FAULT_COLOR)
    for ax in axes:
        ax.grid(True, alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            unique = dict(zip(labels, handles))  # one legend entry per fault label
            # Outside the panel, so the legend never hides the data it explains.
            ax.legend(unique.values(), unique.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      fontsize=8, borderaxespad=0)
    span = float(x[-1]) + window_s if len(x) else 1.0
    fault_xs = [t - started for _, t in _faults(fault_t)]
    ax_lat.set_xlim(min([0.0, *fault_xs]), max([span, *fault_xs]))
    if np.isnan(error_pct).all():
        ax_err.text(0.5, 0.5, "no requests", transform=ax_err.transAxes, ha="center")
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_comparison(summaries: Any, *, title: str | None = None) -> Figure:
    """Bar charts of availability and recovery time, one bar per configuration.

    Args:
        summaries: a list of RunSummary, or the DataFrame :func:`hadrlab.metrics.compare`
            returns.
        title: figure title.

    Returns:
        A matplotlib Figure with two panels: availability (%) and recovery time (s).
        A configuration without a recovery time is marked "not recovered" if it had
        failures, "n/a" otherwise (no fault given).
    """
    import matplotlib.pyplot as plt

    table = summaries if hasattr(summaries, "columns") else compare(list(summaries))
    if table.empty:
        raise ValueError("plot_comparison needs at least one configuration; got none.")
    labels = [str(i) for i in table.index]
    positions = list(range(len(labels)))
    avail = table["availability_pct"].astype(float)
    recovery = table["recovery_s"].astype(float)

    fig, (ax_a, ax_r) = plt.subplots(1, 2, figsize=(max(8, 2.2 * len(labels) + 4), 4.5))
    fig.suptitle(title or "Availability and recovery time by configuration")

    ax_a.bar(positions, avail, color="#1f77b4")
    # Availabilities differ in the last digits: zoom the axis so the bars can be told apart.
    gap = max(100.0 - float(avail.min()), 0.1)
    bottom = 100.0 - 1.6 * gap
    if bottom < 50.0:
        bottom = 0.0
    else:
        step = 10.0 ** math.floor(math.log10(1.6 * gap))
        bottom = math.floor(bottom / step) * step
    ax_a.set_ylim(bottom, 100.0 + 0.08 * (100.0 - bottom))
    for p, v in zip(positions, avail):
        ax_a.annotate(f"{v:.2f} %", xy=(p, v), xytext=(0, 3), textcoords="offset points",
                      ha="center", fontsize=9)
    ax_a.set_ylabel("availability (%)" if bottom == 0 else f"availability (%, axis from {bottom:g})")
    ax_a.set_title("availability (higher is better)", fontsize=10)

    heights = [0.0 if math.isnan(v) else v for v in recovery]
    ax_r.bar(positions, heights, color="#ff7f0e")
    top = max(heights + [1.0])
    ax_r.set_ylim(0, top * 1.2)
    failures = table["failures"] if "failures" in table else [0] * len(labels)
    for p, v, failed in zip(positions, recovery, failures):
        # No recovery time: either it never recovered (it failed) or there was no fault.
        text = f"{v:.1f} s" if not math.isnan(v) else ("not recovered" if failed else "n/a")
        ax_r.annotate(text, xy=(p, 0.0 if math.isnan(v) else v), xytext=(0, 3),
                      textcoords="offset points", ha="center", fontsize=9)
    ax_r.set_ylabel("recovery time (s)")
    ax_r.set_title("time to recover (lower is better)", fontsize=10)

    for ax in (ax_a, ax_r):
        ax.set_xticks(positions)
        ax.set_xticklabels(labels, rotation=15 if len(labels) > 2 else 0, ha="right" if len(labels) > 2 else "center")
        ax.set_xlabel("configuration")
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    plt.close(fig)
    return fig
