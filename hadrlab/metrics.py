"""Metrics computed from request timelines: availability, error windows, recovery, latency.

Pure functions, no processes. A *timeline* is a DataFrame with one row per request and the
columns ``t_start``, ``t_end`` (epoch seconds), ``latency_ms``, ``ok`` (bool), ``status``,
``error``, ``replica``, as :func:`hadrlab.load.run_load` returns it; every function also
accepts a :class:`~hadrlab.load.LoadResult` in place of its timeline.

Two clocks, chosen on purpose:

- a request *belongs* to the moment it was sent (``t_start``): windows, availability
  between two times, and recovery all use it, so "recovered at T" means "requests sent
  from T on were served within the SLO";
- an error is *seen* when its answer (or its timeout) arrives (``t_end``):
  :func:`error_window` uses it, so it spans the time during which clients saw failures.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "availability",
    "per_window",
    "error_window",
    "time_to_recover",
    "latency_percentiles",
    "budget_burn",
    "RunSummary",
    "summarize",
    "compare",
]

# Default latency objective for recovery: well above a healthy local model API's p99
# (tens of ms), well below the 2 s request timeout that a hung replica produces.
DEFAULT_SLO_LATENCY_MS = 500.0


def _timeline(data: Any) -> pd.DataFrame:
    """Accept a LoadResult or a DataFrame; return the timeline DataFrame."""
    frame = getattr(data, "timeline", data)
    missing = {"t_start", "t_end", "latency_ms", "ok"} - set(getattr(frame, "columns", []))
    if missing:
        raise ValueError(
            f"Expected a request timeline (a DataFrame with t_start, t_end, latency_ms, ok) "
            f"or a LoadResult, but got {type(data).__name__} without {sorted(missing)}."
        )
    return frame


def _between(frame: pd.DataFrame, start: float | None, end: float | None) -> pd.DataFrame:
    """Rows sent in [start, end)."""
    mask = frame["t_start"].notna()
    if start is not None:
        mask &= frame["t_start"] >= start
    if end is not None:
        mask &= frame["t_start"] < end
    return frame[mask]


def availability(timeline: Any, start: float | None = None, end: float | None = None) -> float:
    """Fraction of requests sent in ``[start, end)`` that succeeded.

    Args:
        timeline: a request timeline or a LoadResult.
        start: epoch seconds; None for the beginning of the timeline.
        end: epoch seconds (excluded); None for its end.

    Returns:
        A float in [0, 1], or NaN when no request was sent in that interval.
    """
    rows = _between(_timeline(timeline), start, end)
    if rows.empty:
        return float("nan")
    return float(rows["ok"].astype(bool).mean())


def per_window(
    timeline: Any,
    window_s: float = 1.0,
    *,
    start: float | None = None,
    end: float | None = None,
) -> pd.DataFrame:
    """Group requests into fixed windows by the time they were sent.

    Args:
        timeline: a request timeline or a LoadResult.
        window_s: width of a window in seconds.
        start: epoch seconds of the first window's start; default the first request.
        end: epoch seconds after which requests are ignored; default the last request.

    Returns:
        One row per window, empty windows included: ``t`` (window start, epoch s),
        ``requests``, ``failures``, ``availability`` (NaN when empty), ``rps``
        (requests / window_s), ``p50_ms``, ``p95_ms``, ``p99_ms`` (latency of every
        request in the window, failed ones too: a timeout is slowness a client felt).
    """
    import numpy as np
    import pandas as pd

    if window_s <= 0:
        raise ValueError(f"window_s must be positive, got {window_s!r}.")
    frame = _timeline(timeline)
    columns = ["t", "requests", "failures", "availability", "rps", "p50_ms", "p95_ms", "p99_ms"]
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
    t0 = float(frame["t_start"].min()) if start is None else float(start)
    t1 = float(frame["t_start"].max()) if end is None else float(end)
    rows = frame[(frame["t_start"] >= t0) & (frame["t_start"] <= t1)]
    count = max(1, int(math.floor((t1 - t0) / window_s)) + 1)
    index = np.floor((rows["t_start"].to_numpy() - t0) / window_s).astype(int)
    index = np.minimum(index, count - 1)
    groups = pd.DataFrame(
        {"w": index, "fail": ~rows["ok"].astype(bool).to_numpy(), "lat": rows["latency_ms"].to_numpy()}
    ).groupby("w")
    out = pd.DataFrame(index=pd.RangeIndex(count, name="w"))
    out["requests"] = groups.size().reindex(out.index, fill_value=0).astype(int)
    out["failures"] = groups["fail"].sum().reindex(out.index, fill_value=0).astype(int)
    for q, name in ((0.50, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
        out[name] = groups["lat"].quantile(q).reindex(out.index)
    out["t"] = t0 + out.index.to_numpy() * window_s
    served = out["requests"].where(out["requests"] > 0)  # NaN for empty windows
    out["availability"] = 1.0 - out["failures"] / served
    out["rps"] = out["requests"] / window_s
    return out[columns].reset_index(drop=True)


def error_window(timeline: Any, after_t: float | None = None) -> tuple[float, float, float] | None:
    """When clients saw failures: the first and last failed answer at or after ``after_t``.

    Uses ``t_end`` (when the error or timeout reached the client), so a request in flight
    when a fault hits counts, and a timeout counts when it fires.

    Args:
        timeline: a request timeline or a LoadResult.
        after_t: epoch seconds, usually the fault time; None for the whole timeline.

    Returns:
        ``(first_failure_t, last_failure_t, duration_s)``, or None if nothing failed.
    """
    frame = _timeline(timeline)
    failed = frame[~frame["ok"].astype(bool)]
    if after_t is not None:
        failed = failed[failed["t_end"] >= after_t]
    if failed.empty:
        return None
    first = float(failed["t_end"].min())
    last = float(failed["t_end"].max())
    return first, last, last - first


def time_to_recover(
    timeline: Any,
    fault_t: float,
    *,
    slo_success: float = 0.99,
    slo_latency_ms: float = DEFAULT_SLO_LATENCY_MS,
    sustain_s: float = 2.0,
    window_s: float = 0.5,
) -> float | None:
    """Seconds from the fault until the service is back within its SLO, and stays there.

    Windows of ``window_s`` start at ``fault_t``. A window is healthy when at least
    ``slo_success`` of its requests succeeded and their p99 latency is at most
    ``slo_latency_ms``. Recovery is the start of the first healthy window, after the first
    unhealthy one, from which every window for ``sustain_s`` is healthy (an empty window
    neither breaks nor starts the run). Resolution: ``window_s``. 0.0 means no window after
    the fault was unhealthy: the fault was not felt.

    Args:
        timeline: a request timeline or a LoadResult.
        fault_t: epoch seconds at which the fault was injected.
        slo_success: the success-rate objective, e.g. 0.99.
        slo_latency_ms: the p99 latency objective.
        sustain_s: how long the service must stay within the SLO to count as recovered.
        window_s: width of the evaluation windows.

    Returns:
        Seconds from ``fault_t`` to recovery, or None if the timeline never shows a
        sustained recovery (still failing, or the run ended too soon to tell).
    """
    frame = _timeline(timeline)
    after = frame[frame["t_start"] >= fault_t]
    if after.empty:
        return None
    windows = per_window(after, window_s, start=fault_t)
    needed = max(1, int(math.ceil(sustain_s / window_s - 1e-9)))
    empty = (windows["requests"] == 0).to_numpy()
    healthy = (
        (windows["requests"] > 0)
        & (windows["availability"] >= slo_success)
        & (windows["p99_ms"] <= slo_latency_ms)
    ).to_numpy()
    unhealthy = ~healthy & ~empty
    if not unhealthy.any():
        return 0.0
    # Look for recovery only after the fault is first felt: its effect may start late (a
    # load balancer that notices a dead backend only after a while).
    first_bad = int(unhealthy.argmax())
    for k in range(first_bad + 1, len(windows) - needed + 1):
        if not healthy[k]:
            continue
        span = slice(k, k + needed)
        if all(healthy[span] | empty[span]):
            return float(k * window_s)
    return None


def latency_percentiles(
    timeline: Any, percentiles: tuple[float, ...] = (50, 95, 99), *, ok_only: bool = False
) -> dict[str, float]:
    """Latency percentiles of a timeline, in ms.

    Args:
        timeline: a request timeline or a LoadResult.
        percentiles: which percentiles, e.g. ``(50, 95, 99)``.
        ok_only: only successful requests (by default failed ones count too: a timeout
            is latency a client felt).

    Returns:
        ``{"p50_ms": ..., "p95_ms": ..., "p99_ms": ..., "max_ms": ...}``; NaN values for an
        empty timeline.
    """
    import numpy as np

    frame = _timeline(timeline)
    if ok_only:
        frame = frame[frame["ok"].astype(bool)]
    values = frame["latency_ms"].to_numpy(dtype=float)
    out: dict[str, float] = {}
    for p in percentiles:
        key = f"p{p:g}_ms"
        out[key] = float(np.percentile(values, p)) if values.size else float("nan")
    out["max_ms"] = float(values.max()) if values.size else float("nan")
    return out


def budget_burn(
    timeline: Any, slo: float = 0.999, start: float | None = None, end: float | None = None
) -> float:
    """Fraction of the error budget that the requests in ``[start, end)`` consumed.

    With an SLO of 99.9 %, 1,000 requests may fail 1 time; 2 failures burn 2.0 (200 %).

    Args:
        timeline: a request timeline or a LoadResult.
        slo: the availability objective, e.g. 0.999.
        start: epoch seconds; None for the beginning of the timeline.
        end: epoch seconds (excluded); None for its end.

    Returns:
        failures / (requests x (1 - slo)); 0.0 when no request was sent.
    """
    if not 0.0 < slo < 1.0:
        raise ValueError(f"slo must be between 0 and 1 (e.g. 0.999), got {slo!r}.")
    rows = _between(_timeline(timeline), start, end)
    if rows.empty:
        return 0.0
    failures = int((~rows["ok"].astype(bool)).sum())
    return failures / (len(rows) * (1.0 - slo))


# --------------------------------------------------------------------------- summaries


@dataclass
class RunSummary:
    """The numbers of one load run, for a side-by-side comparison of configurations."""

    label: str
    requests: int
    failures: int
    availability: float
    error_window_s: float
    recovery_s: float | None
    p50_ms: float
    p95_ms: float
    p99_ms: float
    fault_t: float | None = None
    # The same run counted by Prometheus from the load balancer's counters (None: not scraped).
    prometheus_availability: float | None = None

    def __repr__(self) -> str:
        if self.recovery_s is not None:
            recovery = f"{self.recovery_s:.1f} s"
        else:
            recovery = "not recovered" if self.fault_t is not None else "n/a (no fault given)"
        return (
            f"RunSummary({self.label!r}: {self.requests:,} requests, {self.failures:,} failures, "
            f"availability {100 * self.availability:.3f} %, error window {self.error_window_s:.2f} s, "
            f"recovery {recovery}, p50/p95/p99 {self.p50_ms:.1f}/{self.p95_ms:.1f}/{self.p99_ms:.1f} ms)"
        )

    def _repr_html_(self) -> str:
        return compare([self])._repr_html_()


def summarize(
    result: Any,
    fault_t: float | None = None,
    label: str = "",
    *,
    slo_success: float = 0.99,
    slo_latency_ms: float = DEFAULT_SLO_LATENCY_MS,
    sustain_s: float = 2.0,
    window_s: float = 0.5,
) -> RunSummary:
    """Summarize one run: totals, availability, error window, recovery, latency.

    Args:
        result: a LoadResult (its locust totals are used) or a timeline.
        fault_t: epoch seconds of the fault; without it there is no recovery time and the
            error window covers the whole run.
        label: the configuration's name in a comparison, e.g. ``"2 replicas + readiness"``.
        slo_success, slo_latency_ms, sustain_s, window_s: see :func:`time_to_recover`.

    Returns:
        A :class:`RunSummary`.
    """
    frame = _timeline(result)
    requests = getattr(result, "requests", len(frame))
    failures = getattr(result, "failures", int((~frame["ok"].astype(bool)).sum()))
    window = error_window(frame, fault_t)
    recovery = None
    if fault_t is not None:
        recovery = time_to_recover(
            frame, fault_t, slo_success=slo_success, slo_latency_ms=slo_latency_ms,
            sustain_s=sustain_s, window_s=window_s,
        )
    lat = latency_percentiles(frame)
    return RunSummary(
        label=label or getattr(result, "url", "") or "run",
        requests=int(requests),
        failures=int(failures),
        availability=1.0 - failures / requests if requests else float("nan"),
        error_window_s=window[2] if window else 0.0,
        recovery_s=recovery,
        p50_ms=lat["p50_ms"],
        p95_ms=lat["p95_ms"],
        p99_ms=lat["p99_ms"],
        fault_t=fault_t,
    )


def compare(summaries: list[RunSummary]) -> pd.DataFrame:
    """One row per configuration: the side-by-side table of several runs.

    Args:
        summaries: RunSummary objects, e.g. ``[summarize(r1, t1, "1 replica"), ...]``.

    Returns:
        A DataFrame indexed by ``configuration`` with ``requests``, ``failures``,
        ``availability_pct``, ``error_window_s``, ``recovery_s`` (NaN when there was no
        fault or no recovery), ``p50_ms``, ``p95_ms``, ``p99_ms``; and
        ``prometheus_availability_pct`` when any run was also counted by Prometheus.
    """
    import pandas as pd

    rows = []
    for s in summaries:
        row = asdict(s)
        row.pop("fault_t", None)
        rows.append(
            {
                "configuration": row["label"],
                "requests": row["requests"],
                "failures": row["failures"],
                "availability_pct": round(100.0 * row["availability"], 3),
                "error_window_s": round(row["error_window_s"], 2),
                "recovery_s": float("nan") if row["recovery_s"] is None else round(row["recovery_s"], 2),
                "p50_ms": round(row["p50_ms"], 1),
                "p95_ms": round(row["p95_ms"], 1),
                "p99_ms": round(row["p99_ms"], 1),
                "prometheus_availability_pct": float("nan") if row.get("prometheus_availability") is None
                else round(100.0 * row["prometheus_availability"], 3),
            }
        )
    columns = ["configuration", "requests", "failures", "availability_pct", "error_window_s",
               "recovery_s", "p50_ms", "p95_ms", "p99_ms"]
    if any(s.prometheus_availability is not None for s in summaries):
        columns.insert(4, "prometheus_availability_pct")
    return pd.DataFrame(rows, columns=columns).set_index("configuration")
