"""Interactive calculators for Lab 00: downtime budgets and the availability of a serving path.

Each widget is a thin skin over a pure function that tests (and curious learners) can call:

    downtime_calculator()  ->  downtime_table(slo)
    path_calculator()      ->  build_path(...), plot_path(path)

ipywidgets and matplotlib are imported inside the functions, so importing this module is
cheap and has no side effects.
"""

from __future__ import annotations

import re
from typing import Any

from hadrlab.reliability import (
    WINDOWS_S,
    Component,
    ServingPath,
    downtime_budget,
    format_duration,
    nines,
)

__all__ = [
    "parse_slo",
    "downtime_table",
    "downtime_calculator",
    "build_path",
    "plot_path",
    "path_calculator",
]

# The objectives people actually sign: two to five nines and the halves between.
COMMON_SLOS = (0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99995, 0.99999)


def parse_slo(text: str | float) -> float:
    """Turn what a learner types into an SLO fraction: '99.95', '99.95%' or '0.9995'.

    A number above 1 (or with a % sign) is read as a percent. Raises ValueError, with the
    reason, for anything that is not an SLO strictly between 0% and 100%.
    """
    if isinstance(text, (int, float)):
        value, percent = float(text), float(text) > 1
    else:
        cleaned = str(text).strip().replace(",", ".")
        percent = cleaned.endswith("%")
        cleaned = cleaned.rstrip("%").strip()
        if not re.fullmatch(r"[0-9]*\.?[0-9]+(e-?[0-9]+)?", cleaned, flags=re.IGNORECASE):
            raise ValueError(f"{text!r} is not a number; type an SLO such as 99.95 or 99.95%.")
        value = float(cleaned)
        percent = percent or value > 1
    fraction = round(value / 100, 12) if percent else value  # 99.9 / 100 -> 0.999, not 0.99900...01
    if not 0 < fraction < 1:
        raise ValueError(f"An SLO must be strictly between 0% and 100%, got {text!r}.")
    return fraction


def downtime_table(slo: float):
    """Return the downtime budget of ``slo`` per day, week, month, quarter and year.

    Args:
        slo: the objective as a fraction (0.9995).

    Returns:
        A pandas DataFrame indexed by window, with ``downtime_s`` and a readable
        ``downtime`` column (month = 30 d, quarter = 91 d, year = 365 d).
    """
    import pandas as pd

    rows = []
    for window in WINDOWS_S:
        seconds = downtime_budget(slo, window)
        rows.append({"window": window, "downtime_s": round(seconds, 1), "downtime": format_duration(seconds)})
    return pd.DataFrame(rows).set_index("window")


def downtime_calculator():
    """Show a downtime-budget calculator: pick or type an SLO, read its budget per window.

    Returns:
        An ipywidgets VBox; display it (last expression of a cell) to use it.
    """
    import ipywidgets as w

    options = [(f"{s * 100:g}% ({nines(s):.1f} nines)", s) for s in COMMON_SLOS]
    picker = w.Dropdown(options=options, value=0.9995, description="SLO")
    typed = w.Text(value="", placeholder="or type one: 99.95 or 99.95%", description="custom")
    result = w.HTML()

    def render(slo: float, note: str = "") -> None:
        table = downtime_table(slo)[["downtime"]].to_html()
        result.value = f"<b>{slo * 100:g}%</b> allows (about {nines(slo):.2f} nines):{table}{note}"

    def on_pick(change: dict) -> None:
        typed.value = ""
        render(change["new"])

    def on_type(change: dict) -> None:
        text = change["new"].strip()
        if not text:
            render(picker.value)
            return
        try:
            render(parse_slo(text))
        except ValueError as exc:
            result.value = f"<span style='color:#b00'>{exc}</span>"

    picker.observe(on_pick, names="value")
    typed.observe(on_type, names="value")
    render(picker.value)
    return w.VBox([w.HBox([picker, typed]), result])


def build_path(
    *,
    load_balancer: bool = True,
    lb_availability: float = 0.9999,
    model_replicas: int = 3,
    replica_availability: float = 0.995,
    feature_store: bool = True,
    feature_store_availability: float = 0.999,
    feature_store_replica: bool = False,
) -> ServingPath:
    """Build the serving path the path calculator shows.

    Args:
        load_balancer: include a load balancer in front of the replicas.
        lb_availability: its availability (a fraction).
        model_replicas: independent model replicas behind it (>= 1).
        replica_availability: availability of each replica.
        feature_store: include a feature store the model reads on every request.
        feature_store_availability: availability of one feature-store node.
        feature_store_replica: run the feature store as primary + replica (2 nodes, one
            up is enough: this assumes failover is instant, which Lab 02 measures).

    Returns:
        A :class:`~hadrlab.reliability.ServingPath`.
    """
    path = ServingPath()
    if load_balancer:
        path.add(Component("load balancer", lb_availability))
    path.add(Component("model replica", replica_availability, replicas=int(model_replicas)))
    if feature_store:
        path.add(Component("feature store", feature_store_availability, replicas=2 if feature_store_replica else 1))
    return path


def plot_path(path: ServingPath, ax: Any = None):
    """Bar plot of the expected monthly downtime of each part and of the whole path.

    Returns:
        The matplotlib Figure (closed, so it shows once when returned from a cell).
    """
    import matplotlib.pyplot as plt

    rows = path.rows()
    names = [r["part"] + (f" x{r['replicas']}" if (r["replicas"] or 1) > 1 else "") for r in rows]
    minutes = [r["downtime_per_month_s"] / 60 for r in rows]
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 2.6))
    else:
        fig = ax.figure
    colors = ["#4c78a8"] * (len(rows) - 1) + ["#e45756"]
    bars = ax.barh(names, minutes, color=colors)
    for bar, value in zip(bars, minutes):
        ax.annotate(
            format_duration(value * 60),
            (bar.get_width(), bar.get_y() + bar.get_height() / 2),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.invert_yaxis()
    ax.set_xlabel("expected downtime per 30-day month (minutes)")
    ax.set_title(f"Serving path: {path.availability * 100:.4g}% available, {path.nines:.2f} nines")
    ax.set_xlim(0, max(minutes + [1]) * 1.25)
    fig.tight_layout()
    plt.close(fig)
    return fig


def path_calculator():
    """Show a serving-path calculator: add or remove parts and replicas, see availability.

    Returns:
        An ipywidgets VBox; display it (last expression of a cell) to use it.
    """
    import ipywidgets as w
    from IPython.display import display

    style = {"description_width": "150px"}
    pct = dict(min=90.0, max=99.999, step=0.001, style=style)
    lb = w.Checkbox(value=True, description="load balancer", style=style)
    lb_a = w.BoundedFloatText(value=99.99, description="LB availability %", **pct)
    n = w.IntSlider(value=3, min=1, max=8, description="model replicas", style=style)
    rep_a = w.BoundedFloatText(value=99.5, description="each replica %", **pct)
    fs = w.Checkbox(value=True, description="feature store", style=style)
    fs_a = w.BoundedFloatText(value=99.9, description="feature store %", **pct)
    fs_rep = w.Checkbox(value=False, description="with a replica", style=style)
    summary = w.HTML()
    plot = w.Output()

    def update(_: Any = None) -> None:
        path = build_path(
            load_balancer=lb.value,
            lb_availability=lb_a.value / 100,
            model_replicas=n.value,
            replica_availability=rep_a.value / 100,
            feature_store=fs.value,
            feature_store_availability=fs_a.value / 100,
            feature_store_replica=fs_rep.value,
        )
        summary.value = (
            f"<b>{path.availability * 100:.4g}%</b> available, {path.nines:.2f} nines, "
            f"about {format_duration(path.downtime_per_month_s)} of downtime per month; "
            f"weakest part: <b>{path.weakest().name}</b>"
        )
        plot.clear_output(wait=True)
        with plot:
            display(plot_path(path))

    for control in (lb, lb_a, n, rep_a, fs, fs_a, fs_rep):
        control.observe(update, names="value")
    update()
    controls = w.VBox([w.HBox([lb, lb_a]), w.HBox([n, rep_a]), w.HBox([fs, fs_a, fs_rep])])
    return w.VBox([controls, summary, plot])
