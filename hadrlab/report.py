"""The resilience report: every chaos experiment, before and after hardening, in one page.

:func:`write_report` turns a list of :class:`~hadrlab.chaos.ExperimentResult` (each run of
each experiment, labelled by the configuration it ran against, e.g. "baseline" and
"hardened") into a Markdown file with its figures saved as PNG files next to it:

- a table: experiment, hypothesis, verdict and key figure before and after hardening;
- ``scorecard.png``: the same verdicts as a grid, green where the steady state held;
- ``measurements.png``: the numbers behind them (availability during registry faults,
  training steps lost, batch duplicates and gaps, corrupted models in production);
- one section per experiment: fault, hypothesis, hardening, recovery times, lost work, the
  Chaos Mesh / Gremlin equivalent, and the bottleneck it exposed.

Example::

    table = comparison_table(results)          # a DataFrame, one row per experiment
    fig = plot_measurements(results)
    write_report(results, "report/resilience.md")
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from hadrlab.chaos import ExperimentResult

__all__ = ["key_figure", "comparison_table", "plot_scorecard", "plot_measurements", "render_report",
           "write_report"]

_COLOURS = {"held": "#a5d6a7", "deviated": "#ef9a9a", "not steady": "#ffcc80", "failed": "#ce93d8"}


def key_figure(result: ExperimentResult) -> str:
    """The one number that says how the experiment went, as a short phrase."""
    m = result.measurements()
    if "availability" in m:
        # p99 of served requests only (probe_online_slo): none served, no latency to show.
        p99 = m.get("p99_ms")
        latency = f"p99 {p99:.0f} ms" if p99 is not None else "no successful request"
        return f"availability {100 * m['availability']:.1f}%, {latency}"
    if "steps_lost" in m:
        every = m.get("checkpoint_every", 0)
        ckpt = f"checkpoint every {every:.0f} steps" if every else "no checkpoints"
        return f"{m['steps_lost']:.0f} steps lost ({ckpt})"
    if "corrupted-models-in-production" in m:
        return f"{m['corrupted-models-in-production']:.0f} corrupted model(s) reached production"
    if "duplicates" in m:
        return f"{m['duplicates']:.0f} duplicates, {m['gaps']:.0f} gaps"
    return "-"


def _labels(results: Sequence[ExperimentResult]) -> list[str]:
    seen: list[str] = []
    for r in results:
        if r.label not in seen:
            seen.append(r.label)
    return seen


def _experiments(results: Sequence[ExperimentResult]) -> list[str]:
    seen: list[str] = []
    for r in results:
        if r.name not in seen:
            seen.append(r.name)
    return seen


def _find(results: Sequence[ExperimentResult], name: str, label: str) -> ExperimentResult | None:
    found = [r for r in results if r.name == name and r.label == label]
    return found[-1] if found else None


def comparison_table(results: Sequence[ExperimentResult]) -> pd.DataFrame:
    """One row per experiment; per configuration label, the verdict and its key figure.

    Args:
        results: runs of the experiments, labelled by configuration (``result.label``).

    Returns:
        A DataFrame indexed by experiment, with a "hypothesis" column and, for each label,
        "<label>" (verdict) and "<label> figure".
    """
    import pandas as pd

    labels = _labels(results)
    rows = []
    for name in _experiments(results):
        row: dict[str, Any] = {"experiment": name}
        for label in labels:
            r = _find(results, name, label)
            if r is not None and not row.get("hypothesis"):
                row["hypothesis"] = r.hypothesis
            row[label] = r.verdict if r else "not run"
            row[f"{label} figure"] = key_figure(r) if r else ""
        rows.append(row)
    return pd.DataFrame(rows).set_index("experiment")


def plot_scorecard(results: Sequence[ExperimentResult], *, title: str = "Steady state through each fault") -> Figure:
    """A grid of verdicts: one row per experiment, one column per configuration."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    labels, names = _labels(results), _experiments(results)
    fig = Figure(figsize=(2.2 + 3.4 * len(labels), 0.55 * len(names) + 1.3))
    ax = fig.add_subplot()
    for i, name in enumerate(names):
        for j, label in enumerate(labels):
            r = _find(results, name, label)
            verdict = r.verdict if r else "not run"
            ax.add_patch(Rectangle(
                (j, i), 1, 1, facecolor=_COLOURS.get(verdict, "#eeeeee"), edgecolor="white", linewidth=2))
            ax.text(j + 0.5, i + 0.5, f"{verdict}\n{key_figure(r) if r else ''}", ha="center", va="center",
                    fontsize=7.5)
    ax.set_xlim(0, len(labels))
    ax.set_ylim(len(names), 0)
    ax.set_xticks([j + 0.5 for j in range(len(labels))], labels)
    ax.xaxis.tick_top()
    ax.set_yticks([i + 0.5 for i in range(len(names))], names)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, pad=22)
    ax.legend(handles=[Patch(color=c, label=v) for v, c in list(_COLOURS.items())[:2]], loc="upper center",
              bbox_to_anchor=(0.5, -0.02), ncol=2, frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def plot_measurements(results: Sequence[ExperimentResult], *, title: str = "What each fault did, before and after hardening") -> Figure:
    """Four panels of the measured numbers, one bar per configuration.

    Online availability during the registry faults; training steps lost at a kill (with
    the checkpoint interval that bounds it); duplicates + gaps of killed batch jobs;
    corrupted-data models that reached production.
    """
    import numpy as np
    from matplotlib.figure import Figure

    labels = _labels(results)
    panels = [
        ("Online availability during the fault", "availability (%)", "availability", 100.0,
         ["registry-outage", "registry-slow"], 99.0, "SLO 99%"),
        ("Training work lost at a kill", "steps lost", "steps_lost", 1.0, ["kill-trainer"], 10.0,
         "one checkpoint interval"),
        ("Batch records duplicated or missing", "duplicates + gaps", None, 1.0,
         ["kill-batch-scorer", "feature-store-failover"], 0.0, "target 0"),
        ("Corrupted-data models in production", "models", "corrupted-models-in-production", 1.0,
         ["corrupt-training-data"], 0.0, "target 0"),
    ]
    fig = Figure(figsize=(11, 6.4))
    axes = fig.subplots(2, 2)
    width = 0.8 / max(1, len(labels))
    colours = ["#e57373", "#66bb6a", "#64b5f6", "#ffb74d"]
    for ax, (panel, ylabel, key, scale, names, target, target_label) in zip(axes.flat, panels):
        x = np.arange(len(names))
        tallest = 0.0
        for j, label in enumerate(labels):
            values = []
            for name in names:
                r = _find(results, name, label)
                m = r.measurements() if r else {}
                if key is None:
                    v = m.get("duplicates", math.nan) + m.get("gaps", math.nan)
                else:
                    v = m.get(key, math.nan)
                values.append(v * scale)
            bars = ax.bar(x + (j - (len(labels) - 1) / 2) * width, values, width, label=label,
                          color=colours[j % len(colours)])
            for bar, v in zip(bars, values):
                if not math.isnan(v):
                    ax.annotate(f"{v:.0f}" if scale == 1.0 else f"{v:.1f}", (bar.get_x() + bar.get_width() / 2,
                                bar.get_height()), ha="center", va="bottom", fontsize=8)
            tallest = max([tallest] + [v for v in values if not math.isnan(v)])
        ax.axhline(target, color="black", linestyle="--", linewidth=1, label=target_label)
        ax.set_xticks(x, names, fontsize=8)
        ax.set_title(panel, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("experiment")
        # Headroom above the tallest bar, so that its value label and the legend (top right)
        # stay inside the panel instead of running into its title.
        ax.set_ylim(0, _headroom(max(tallest, target)))
        if key == "availability":
            ax.set_yticks(range(0, 101, 25))  # the headroom is for labels: no tick above 100%
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _headroom(tallest: float) -> float:
    """The top of a panel's y axis: 45% above its tallest bar (1 for an all-zero panel)."""
    return 1.45 * tallest if tallest > 0 else 1.0


def _markdown_table(frame: pd.DataFrame) -> str:
    cols = [frame.index.name or ""] + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for idx, row in frame.iterrows():
        cells = [str(idx)] + [str(v).replace("|", "/") for v in row.values]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_report(results: Sequence[ExperimentResult], *, title: str = "Resilience report",
                  figures: Sequence[str] = ("scorecard.png", "measurements.png")) -> str:
    """Return the report's Markdown (figures referenced by file name, next to the report)."""
    labels = _labels(results)
    first, last = (labels[0], labels[-1]) if labels else ("", "")
    out = [f"# {title}", "", f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} from {len(results)} "
           f"Chaos Toolkit runs; configurations: {', '.join(labels)}.", "",
           "Each experiment states a steady-state hypothesis, injects one fault, and checks the hypothesis "
           "again while the fault's effects are still there; rollbacks always run. A verdict is read "
           "from the run's journal: *held* (met before and after), *deviated* (met before, not after), "
           "*not steady* (not met before: the fault was never injected).", "",
           "## Summary", "", _markdown_table(comparison_table(results)), ""]
    out += [f"![{f.rsplit('.', 1)[0]}]({f})" for f in figures] + [""]
    fixed, open_ = [], []
    for name in _experiments(results):
        before, after = _find(results, name, first), _find(results, name, last)
        ref = after or before
        ext = ref.extensions if ref else {}
        out += [f"## {name}", "", f"- **Fault**: {ext.get('fault', ref.title if ref else '')}",
                f"- **Hypothesis**: {ref.hypothesis if ref else ''}",
                f"- **Hardening**: {ext.get('hardening', '-')}"]
        for label in labels:
            r = _find(results, name, label)
            if r is None:
                continue
            m = r.measurements()
            extra = []
            for key, text in (("recovery_s", "recovery {:.1f} s"), ("restart_s", "restart {:.1f} s"),
                              ("elapsed_s", "job took {:.1f} s"), ("starts", "{:.0f} job start(s)")):
                if key in m:
                    extra.append(text.format(m[key]))
            out.append(f"- **{label}**: {r.verdict} — {key_figure(r)}" + (f"; {', '.join(extra)}" if extra else ""))
        out += [f"- **On a cluster**: {ext.get('chaos_mesh', '-')}",
                f"- **Bottleneck**: {ext.get('bottleneck', '-')}", ""]
        if before is not None and before.verdict == "deviated":
            (fixed if after is not None and after.held else open_).append((name, ext.get("bottleneck", "")))
    out += ["## Bottlenecks found", ""]
    out += [f"- {name}: {text} (fixed by: {_find(results, name, last).extensions.get('hardening', '-')})"
            for name, text in fixed] or ["- none: every hypothesis held without hardening"]
    if open_:
        out += ["", "Still open after hardening:", ""] + [f"- {name}: {text}" for name, text in open_]
    return "\n".join(out) + "\n"


def write_report(results: Sequence[ExperimentResult], path: str | Path, *, title: str = "Resilience report") -> Path:
    """Write the resilience report (Markdown) and its PNG figures next to it.

    Args:
        results: the runs of every experiment, each labelled by configuration (e.g.
            "baseline" first, "hardened" last: the report compares the first label with the last).
        path: the Markdown file to write; ``scorecard.png`` and ``measurements.png`` go
            into the same folder.
        title: the report's title.

    Returns:
        The path of the Markdown file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Figure objects (not pyplot): nothing is left open in a notebook.
    plot_scorecard(results).savefig(path.parent / "scorecard.png", dpi=110)
    plot_measurements(results).savefig(path.parent / "measurements.png", dpi=110)
    path.write_text(render_report(results, title=title))
    return path
