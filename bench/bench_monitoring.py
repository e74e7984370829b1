"""Prometheus against the clients, the burn-rate page's delay, and what scraping costs.

- ``prom_vs_locust_availability_delta``: a replica killed under load (2 replicas without
  probes, so that requests fail), counted by locust and by Prometheus from the load balancer's
  counters; the largest |difference| over the runs, target <= 0.002.
- ``burn_alert_fire_delay_ratio``: the only replica killed (no probes): seconds from the
  first failed request to ErrorBudgetBurnFast firing, over what the rule implies: the time the
  1 h window (48 s at lab scale) needs to cross 14.4 x budget at the measured error ratio, plus
  one scrape and one rule evaluation for the errors to be seen; target <= 1.5.
- ``prometheus_cpu_s_per_min``: Prometheus' own CPU seconds per minute over the runs above,
  scraping once a second; reported.
"""

from __future__ import annotations

import time

import psutil

from bench.__main__ import Figure
from bench.bench_lab01 import RESTART_BACKOFF_S, manifests

USERS = 6
RUN_S = 12
KILL_AT_S = 4.0
DELTA_RUNS = 3


def _cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def bench_monitoring() -> list[Figure]:
    from hadrlab.alert_rules import BURN_WINDOWS
    from hadrlab.monitoring import start_monitoring
    from hadrlab.scenarios import run_scenario

    figures = []
    with start_monitoring() as mon:
        cpu_before, wall_before = _cpu_s(mon.prometheus.pid), time.monotonic()
        deltas, notes = [], []
        for i in range(DELTA_RUNS):
            run = run_scenario(manifests(replicas=2, probes=False, retry=False), "kill", label=f"delta-{i}",
                               users=USERS, duration_s=RUN_S, fault_at_s=KILL_AT_S,
                               restart_backoff_s=RESTART_BACKOFF_S, endpoint_lag_s=0.0, monitoring=mon)
            deltas.append(abs(run.prometheus["availability"] - run.summary.availability))
            notes.append(f"{run.summary.failures}/{run.summary.requests} locust, "
                         f"{run.prometheus['failures']:.0f}/{run.prometheus['requests']:.0f} Prometheus")
        figures.append(Figure("prom_vs_locust_availability_delta", max(deltas), "", 0.002, "<=",
                              f"{DELTA_RUNS} kills of 1 of 2 replicas without probes, {USERS} users, "
                              f"{RUN_S} s each; failed/answers: " + "; ".join(notes)))

        cpu = _cpu_s(mon.prometheus.pid) - cpu_before
        minutes = (time.monotonic() - wall_before) / 60
        figures.append(Figure("prometheus_cpu_s_per_min", cpu / minutes, "CPU s/min", None, "<=",
                              f"{cpu:.1f} CPU s over {minutes * 60:.0f} s, scraping every "
                              f"{mon.scrape_interval_s:g} s, {sum(len(r['rules']) for r in _groups(mon))} rules"))

    # A fresh Prometheus for the page, so that no alert of the runs above is still active.
    with start_monitoring() as mon:
        # The only replica killed: every request fails until the kubelet restarts it.
        fired: dict[str, float] = {}
        run = run_scenario(manifests(replicas=1, probes=False, retry=False), "kill", label="burn",
                           users=USERS, duration_s=RUN_S, fault_at_s=KILL_AT_S,
                           restart_backoff_s=RESTART_BACKOFF_S, endpoint_lag_s=0.0, monitoring=mon)
        # ALERTS holds one sample per rule evaluation while the alert fires (no `for:` on the page).
        firing = mon.query_range('ALERTS{alertname="ErrorBudgetBurnFast",alertstate="firing",service="model-api"}',
                                 run.fault_t - 2, time.time(), step_s=0.1).dropna(how="all")
        if len(firing):
            fired["t"] = float(firing.index.min())
        timeline = run.load.timeline
        failed = timeline[~timeline["ok"].astype(bool)]
        first_error = float(failed["t_end"].min()) if len(failed) else None  # when the balancer answered it
        _, long_s, short_s, burn = BURN_WINDOWS[0]
        lab_long = long_s / 75
        error_ratio = len(failed) / max(1, len(timeline[timeline["t_start"] >= run.fault_t]))
        implied = burn * 0.001 * lab_long / max(error_ratio, 1e-9) + 2 * mon.scrape_interval_s
        if first_error is not None and "t" in fired:
            delay = fired["t"] - first_error
            figures.append(Figure("burn_alert_fire_delay_ratio", delay / implied, "", 1.5, "<=",
                                  f"page fired {delay:.2f} s after the first failed request; the rule implies "
                                  f"{implied:.2f} s ({burn:g} x budget over {lab_long:.0f} s at an error ratio "
                                  f"of {error_ratio:.2f} after the kill, + 1 scrape + 1 evaluation); "
                                  f"{len(failed)} of {len(timeline)} requests failed"))
        else:
            figures.append(Figure("burn_alert_fire_delay_ratio", float("nan"), "", 1.5, "<=",
                                  f"no page fired ({len(failed)} failed requests)"))
    return figures


def _groups(mon) -> list[dict]:
    import yaml

    return yaml.safe_load(mon.rules_path.read_text())["groups"]

