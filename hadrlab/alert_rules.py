"""SLIs as Prometheus recording rules, and SLO burn-rate alerts, scaled to lab time.

The alerts follow the multiwindow, multi-burn-rate form of the SRE workbook (chapter 5,
"Alerting on SLOs"), for a 30-day SLO:

    severity  long window  short window  burn rate  budget spent when it fires
    page      1h           5m            14.4       2% in 1 h
    page      6h           30m           6          5% in 6 h
    ticket    1d           2h            3          10% in 1 d   (not in the workbook's table: a
                                                                  step between its two rows)
    ticket    3d           6h            1          10% in 3 d

In a lab, a window longer than Prometheus has been running covers only the time since it
started (at scale 75, the 6 h, 1 d and 3 d windows are 288 s, 1152 s and 3456 s).

An alert fires when the error ratio over BOTH windows of a pair exceeds burn rate x the
error budget (1 - SLO): the long window makes it significant, the short one makes it stop
soon after the errors stop. A lab cannot wait an hour, so every window is divided by one
number, ``time_scale`` (lab seconds stand for ``time_scale`` production seconds); burn rates
and the SLO are unchanged. The rule file says, next to each window, what it stands for.
``render_rules(time_scale=1)`` is the production file (infra/prometheus/rules/slo.yml).

Cause alerts (a region down, a region slow) are tickets: the sidecar already moves reads,
and the page, if any, comes from the symptom (the scoring API burning its budget).
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

__all__ = ["BURN_WINDOWS", "LATENCY_HISTOGRAMS", "SLIS", "Sli", "default_time_scale", "render_rules", "window"]

# (severity, long window s, short window s, burn rate): the SRE workbook's table above.
BURN_WINDOWS: tuple[tuple[str, int, int, float], ...] = (
    ("page", 3600, 300, 14.4),
    ("page", 6 * 3600, 1800, 6.0),
    ("ticket", 24 * 3600, 2 * 3600, 3.0),
    ("ticket", 3 * 24 * 3600, 6 * 3600, 1.0),
)


@dataclass(frozen=True)
class Sli:
    """An availability SLI: the share of a service's answers that are not server errors."""

    service: str  # the value of the `service` label on the recorded series
    total: str  # a counter of every answer
    errors: str  # the same counter restricted to failed answers
    lab: str


SLIS: tuple[Sli, ...] = (
    # Lab 01: the model API as its clients see it, through the Service's balancer.
    Sli("model-api", 'hadrlab_balancer_responses_total{service="model-api"}',
        'hadrlab_balancer_responses_total{service="model-api",code=~"5.."}', "01"),
    # Lab 02: POST /score of the fraud-scoring API.
    Sli("fraud-api", "fraud_api_requests_total", 'fraud_api_requests_total{status=~"5.."}', "02"),
    # Lab 03: online predictions, and the registry the pipeline depends on.
    Sli("online-api", 'online_api_requests_total{path="/predict"}',
        'online_api_requests_total{path="/predict",status=~"5.."}', "03"),
    Sli("registry", "registry_requests_total", 'registry_requests_total{status=~"5.."}', "03"),
)


# Latency SLIs: (service label, the histogram a server exports). Recorded as the 99th
# percentile over the short page window (5 min in production), what a latency SLO is judged on.
LATENCY_HISTOGRAMS: tuple[tuple[str, str], ...] = (
    ("model-api", "model_api_predict_latency_seconds"),  # Lab 01: each replica's POST /predict
    ("fraud-api", "fraud_api_score_latency_seconds"),  # Lab 02: POST /score
)
LATENCY_WINDOW_S = 300


def default_time_scale(scrape_interval_s: float) -> float:
    """The smallest scale at which the shortest window (5 min) still spans 4 scrapes."""
    shortest = min(short for _, _, short, _ in BURN_WINDOWS)
    return max(1.0, shortest / (4 * scrape_interval_s))


def window(seconds: float, time_scale: float) -> str:
    """A production window in lab time, as a PromQL duration: ``window(3600, 75) == '48s'``."""
    lab = max(1, round(seconds / time_scale))
    return f"{lab}s"


def _human(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _ratio(sli: Sli, span: str) -> str:
    # `or vector(0)`: no error series yet means no errors, not "no data".
    return f"(sum(rate({sli.errors}[{span}])) or vector(0)) / sum(rate({sli.total}[{span}]))"


def render_rules(*, slo: float = 0.999, time_scale: float = 1.0) -> str:
    """The rule file: one error-ratio series per SLI and window, then the burn-rate alerts."""
    if not 0 < slo < 1:
        raise ValueError(f"slo is a fraction between 0 and 1, e.g. 0.999; {slo!r} is not.")
    if time_scale < 1:
        raise ValueError(f"time_scale is how many production seconds one lab second stands for, >= 1; "
                         f"{time_scale!r} is not.")
    budget = 1 - slo
    spans = sorted({s for _, long, short, _ in BURN_WINDOWS for s in (long, short)})
    records, alerts = [], []
    for sli in SLIS:
        for span in spans:
            lab = window(span, time_scale)
            records.append({
                "record": f"service:error_ratio:rate{_human(span)}",
                "expr": _ratio(sli, lab),
                "labels": {"service": sli.service},
            })
        latency = dict(LATENCY_HISTOGRAMS).get(sli.service)
        if latency:
            records.append({
                "record": f"service:latency_seconds:p99_rate{_human(LATENCY_WINDOW_S)}",
                "expr": f"histogram_quantile(0.99, sum by (le) (rate({latency}_bucket[{window(LATENCY_WINDOW_S, time_scale)}])))",
                "labels": {"service": sli.service},
            })
        conditions = []
        for severity, long, short, burn in BURN_WINDOWS:
            threshold = f"{burn:g} * {budget:.6g}"
            conditions.append((severity, f"(service:error_ratio:rate{_human(long)}{{service=\"{sli.service}\"}} > {threshold}"
                                         f" and service:error_ratio:rate{_human(short)}{{service=\"{sli.service}\"}} > {threshold})"))
        for severity, name in (("page", "ErrorBudgetBurnFast"), ("ticket", "ErrorBudgetBurnSlow")):
            expr = "\n  or\n".join(c for s, c in conditions if s == severity)
            alerts.append({
                "alert": name,
                "expr": expr,
                "labels": {"severity": severity, "kind": "symptom", "service": sli.service},
                "annotations": {
                    "summary": f"{sli.service} is spending its error budget ({slo:.4g} SLO) too fast",
                    "description": f"Both windows of a {severity} pair are above their burn rate; see "
                                   f"service:error_ratio:* for service {sli.service}.",
                },
            })
    causes = [
        {"alert": "RegionDown", "expr": "max by (region) (1 - sidecar_region_up) == 1",
         "for": window(30, time_scale),
         "labels": {"severity": "ticket", "kind": "cause"},
         "annotations": {"summary": "The sidecar counts region {{ $labels.region }} as down; reads moved away."}},
    ]
    header = [
        "# Generated by hadrlab.alert_rules.render_rules: do not edit by hand.",
        f"# SLO {slo:g} (error budget {budget:.4g}); time scale {time_scale:g}: one second here stands for "
        f"{time_scale:g} s of production time.",
        "# Windows: " + ", ".join(f"{_human(s)} -> {window(s, time_scale)}" for s in spans) + ".",
    ]
    groups = {"groups": [
        {"name": "sli", "rules": records},
        {"name": "slo-burn", "rules": alerts},
        {"name": "causes", "rules": causes},
    ]}
    return "\n".join(header) + "\n" + yaml.safe_dump(groups, sort_keys=False, width=200)
