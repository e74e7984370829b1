"""Prometheus text exposition: the /metrics body every hadrlab service writes, and its parser.

The services of the labs (model API, registry, fraud API, sidecar, online API, balancer)
each answer GET /metrics in the Prometheus text format, version 0.0.4. They build the body
with :class:`MetricsText`, keep latencies in a :class:`Histogram`, and serve it with
:data:`CONTENT_TYPE`; notebooks and tests read it back with :func:`parse_metrics`.

    text = MetricsText()
    text.family("api_requests_total", "counter", "HTTP requests answered, by path and status.")
    text.sample("api_requests_total", 12, path="/predict", status=200)
    body = text.render()   # '# HELP api_requests_total ...\\n# TYPE ...\\napi_requests_total{...} 12\\n'

The format is small enough to write by hand, which keeps the services free of a client
library and lets a learner read every line of what a scraper sees.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["CONTENT_TYPE", "Histogram", "MetricsText", "parse_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: object) -> str:
    # The three characters the format reserves inside a label value.
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Histogram:
    """Cumulative bucket counts, a sum and a count: what a Prometheus histogram exposes.

    Example:
        >>> latency = Histogram((0.01, 0.1, 1.0))
        >>> latency.observe(0.05)
        >>> latency.counts, latency.count
        ([0, 1, 1], 1)
    """

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation in every bucket whose upper bound it does not exceed."""
        self.sum += value
        self.count += 1
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1


class MetricsText:
    """A /metrics body, built family by family, sample by sample.

    Example:
        >>> text = MetricsText()
        >>> text.family("up", "gauge", "1 while the service answers.").sample("up", 1).render()
        '# HELP up 1 while the service answers.\\n# TYPE up gauge\\nup 1\\n'
    """

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> MetricsText:
        """Start a metric family: its HELP and TYPE lines.

        Args:
            name: the metric name, e.g. ``model_api_requests_total``.
            kind: ``counter``, ``gauge`` or ``histogram``.
            help_text: one sentence saying what is counted or measured.

        Returns:
            This builder, so calls can be chained.
        """
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        return self

    def sample(self, name: str, value: object, **labels: object) -> MetricsText:
        """Add one sample line: ``name{label="value",...} value``.

        Args:
            name: the sample name (a histogram's carries its ``_bucket``/``_sum`` suffix).
            value: written as ``str(value)``; pass a formatted string for a fixed precision.
            labels: label names and values, in the order they should appear (a name that is
                a Python keyword goes through a dict: ``**{"class": "5xx"}``).

        Returns:
            This builder, so calls can be chained.
        """
        if labels:
            pairs = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
            name = f"{name}{{{pairs}}}"
        self.lines.append(f"{name} {value}")
        return self

    def histogram(self, name: str, help_text: str, histogram: Histogram) -> MetricsText:
        """Add a histogram family: one ``_bucket`` line per bound and ``+Inf``, ``_sum``, ``_count``.

        Args:
            name: the family name, e.g. ``model_api_predict_latency_seconds``.
            help_text: one sentence saying what is measured.
            histogram: the observations.

        Returns:
            This builder, so calls can be chained.
        """
        self.family(name, "histogram", help_text)
        for bound, n in zip(histogram.bounds, histogram.counts):
            self.sample(f"{name}_bucket", n, le=f"{bound:g}")
        self.sample(f"{name}_bucket", histogram.count, le="+Inf")
        self.sample(f"{name}_sum", f"{histogram.sum:.6f}")
        return self.sample(f"{name}_count", histogram.count)

    def render(self) -> str:
        """Return the body: every line so far, each ending with a newline."""
        return "\n".join(self.lines) + "\n"


def parse_metrics(text: str) -> dict[str, float]:
    """Parse Prometheus text into ``{'name{labels}': value}``, e.g. ``'model_api_ready': 1.0``.

    Args:
        text: the body of a GET /metrics answer.

    Returns:
        One entry per sample line; comments are skipped.
    """
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        samples[key] = float(value)
    return samples
