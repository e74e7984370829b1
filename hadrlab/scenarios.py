"""Scenarios: one configuration, one load, one fault, measured; and small manifest edits.

A *scenario* is the unit of Lab 01's comparisons. :func:`run_scenario` runs the same four
steps for every configuration, so that only the manifest differs between two rows of the
comparison table:

1. steady state: apply the manifests on a fresh platform and wait until every replica is
   ready; the load's first seconds, before the fault, must be served;
2. inject: start the load, and ``fault_at_s`` seconds into it inject the fault (kill, hang,
   delete a replica, or roll out a new version);
3. observe: wait for the load to end; keep its per-request timeline and the platform's
   events (started, ready, killed, endpoint-removed ...);
4. restore: close the platform, which stops every replica and load balancer it started,
   hung ones included.

    >>> docs = load_manifest("infra/k8s/model-api.yaml")
    >>> result = run_scenario(docs, "kill", label="hardened", users=6, duration_s=10)
    >>> result.summary                  # availability, error window, recovery, latency
    >>> result.plot()                   # the timeline, the fault and the events marked

The manifest helpers (:func:`deployment_of`, :func:`container_of`, :func:`service_of`,
:func:`set_env`, :func:`get_env`) find the part of a loaded manifest list to edit, so that
a notebook reads ``container_of(docs)["readinessProbe"] = {...}`` rather than a path of
indexes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hadrlab.errors import HadrError, ManifestError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from hadrlab.load import LoadResult
    from hadrlab.metrics import RunSummary
    from hadrlab.platform.base import Platform

__all__ = [
    "FAULTS",
    "ScenarioResult",
    "run_scenario",
    "ProbeTimings",
    "probe_timings",
    "deployment_of",
    "container_of",
    "service_of",
    "set_env",
    "get_env",
]

# The faults run_scenario knows by name: what each does to the Deployment.
FAULTS = {
    "kill": "SIGKILL one ready replica (a crash); it restarts in place",
    "hang": "SIGSTOP one ready replica (a hang): alive, holding its port, answering nothing",
    "delete": "delete one ready replica gracefully (kubectl delete pod); a new one replaces it",
    "rollout": "roll out model version v2 (a new pod template), replica by replica",
}

# Platform events worth drawing on a timeline; the others (scaled, rollout bookkeeping
# of the set-up) would only clutter it.
_PLOTTED_EVENTS = (
    "killed", "hung", "restarted", "ready", "unready", "liveness-failed", "terminating",
    "endpoint-removed", "endpoint-added",
)
# The platform event that each named fault records (drawn as the fault line instead).
_FAULT_EVENT = {"kill": "killed", "hang": "hung", "delete": "terminating", "rollout": "rollout-started"}
_EVENT_CLUSTER_S = 0.3


# --------------------------------------------------------------------------- manifest helpers


def _find(manifests: Sequence[Mapping], kind: str, name: str | None) -> dict:
    found = [
        d for d in manifests
        if isinstance(d, Mapping) and d.get("kind") == kind
        and (name is None or (d.get("metadata") or {}).get("name") == name)
    ]
    if not found:
        have = [f"{d.get('kind')}/{(d.get('metadata') or {}).get('name')}" for d in manifests if isinstance(d, Mapping)]
        wanted = f"{kind}/{name}" if name else f"a {kind}"
        raise ManifestError(
            f"The manifests hold no {wanted} (they hold {have or 'nothing'}). Load the lab's "
            f"manifest with load_manifest('../infra/k8s/model-api.yaml') and edit that list."
        )
    return found[0]  # type: ignore[return-value]


def deployment_of(manifests: Sequence[Mapping], name: str | None = None) -> dict:
    """Return the Deployment dict in a list of manifests (the first one, or the one named).

    Args:
        manifests: the list :func:`hadrlab.load_manifest` returns (edited in place).
        name: the Deployment's ``metadata.name``; None for the first Deployment.

    Returns:
        The Deployment itself (not a copy): edits change the manifest list.
    """
    return _find(manifests, "Deployment", name)


def container_of(manifests: Sequence[Mapping], name: str | None = None) -> dict:
    """Return the first container of a Deployment's pod template (not a copy).

    Args:
        manifests: the list :func:`hadrlab.load_manifest` returns.
        name: the Deployment's name; None for the first Deployment.

    Returns:
        The container dict, where ``readinessProbe``, ``env``, ``lifecycle`` ... live.
    """
    return deployment_of(manifests, name)["spec"]["template"]["spec"]["containers"][0]


def service_of(manifests: Sequence[Mapping], name: str | None = None) -> dict:
    """Return the Service dict in a list of manifests (not a copy).

    Args:
        manifests: the list :func:`hadrlab.load_manifest` returns.
        name: the Service's name; None for the first Service.

    Returns:
        The Service itself; its ``metadata.annotations`` configure the local load balancer.
    """
    return _find(manifests, "Service", name)


def set_env(container: dict, name: str, value: Any) -> dict:
    """Set an environment variable of a container (added if missing); return the container.

    Args:
        container: a container dict, e.g. ``container_of(docs)``.
        name: the variable, e.g. ``"SHUTDOWN_DRAIN_S"``.
        value: its value; Kubernetes wants strings, so it is converted with ``str()``.
    """
    items = container.setdefault("env", [])
    for item in items:
        if item.get("name") == name:
            item.pop("valueFrom", None)
            item["value"] = str(value)
            return container
    items.append({"name": name, "value": str(value)})
    return container


def get_env(container: Mapping, name: str, default: str | None = None) -> str | None:
    """Return the value of a container's environment variable, or ``default``."""
    for item in container.get("env") or []:
        if item.get("name") == name and "value" in item:
            return str(item["value"])
    return default


@dataclass
class ProbeTimings:
    """What a Deployment's probes and shutdown settings imply, in seconds (Kubernetes defaults
    filled in). ``None`` means the mechanism is absent.

    Attributes:
        startup_budget_s: how long a starting container may take before it is killed:
            the startup probe's ``initialDelaySeconds + periodSeconds x failureThreshold``
            (without one, the liveness probe's; without either, None: never killed).
        readiness_removal_s: worst case from "stops answering" to "out of the endpoints":
            ``periodSeconds x failureThreshold + timeoutSeconds`` of the readiness probe.
        liveness_detection_s: the same for the liveness probe: when a hung replica is
            declared dead.
        liveness_grace_s: the grace period of a container killed by its liveness probe (the
            probe's ``terminationGracePeriodSeconds``, else the pod's). A hung process ignores
            SIGTERM, so it lives this long after detection.
        pod_grace_s: ``terminationGracePeriodSeconds`` of the pod (default 30).
        pre_stop_s: the preStop ``sleep``, 0 without one.
        drain_s: ``SHUTDOWN_DRAIN_S`` of the model API, 0 without it.
    """

    startup_budget_s: float | None
    readiness_removal_s: float | None
    liveness_detection_s: float | None
    liveness_grace_s: float | None
    pod_grace_s: float
    pre_stop_s: float
    drain_s: float


def probe_timings(manifests: Sequence[Mapping], name: str | None = None) -> ProbeTimings:
    """Read the timings a Deployment's probes and shutdown settings imply.

    Args:
        manifests: the list :func:`hadrlab.load_manifest` returns, edited or not.
        name: the Deployment's name; None for the first Deployment.

    Returns:
        A :class:`ProbeTimings`.
    """
    from hadrlab.platform.manifests import PreStopSpec, ProbeSpec

    dep = deployment_of(manifests, name)
    c = container_of(manifests, name)
    startup = ProbeSpec.from_manifest(c.get("startupProbe"))
    readiness = ProbeSpec.from_manifest(c.get("readinessProbe"))
    liveness = ProbeSpec.from_manifest(c.get("livenessProbe"))
    pod_grace = float(dep["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30))

    def window(p: ProbeSpec | None) -> float | None:
        return None if p is None else p.period_s * p.failure_threshold + p.timeout_s

    gate = startup or liveness
    budget = None if gate is None else gate.initial_delay_s + gate.period_s * gate.failure_threshold
    grace = None
    if liveness is not None:
        grace = liveness.termination_grace_s if liveness.termination_grace_s is not None else pod_grace
    pre_spec = PreStopSpec.from_manifest(c.get("lifecycle"))
    pre_s = float(pre_spec.sleep_s or 0.0) if pre_spec is not None else 0.0
    return ProbeTimings(
        startup_budget_s=budget,
        readiness_removal_s=window(readiness),
        liveness_detection_s=window(liveness),
        liveness_grace_s=grace,
        pod_grace_s=pod_grace,
        pre_stop_s=pre_s,
        drain_s=float(get_env(c, "SHUTDOWN_DRAIN_S", "0") or 0),
    )


# --------------------------------------------------------------------------- results


@dataclass
class ScenarioResult:
    """What one scenario measured: the load's timeline, the platform's events, the summary.

    Attributes:
        label: the configuration's name, as it appears in the comparison table.
        fault: the fault's name (``"kill"``, ``"hang"`` ...) or the callable's name.
        target: the replica the fault hit (None for a rollout).
        fault_t: epoch seconds at which the fault was injected.
        load: the :class:`~hadrlab.load.LoadResult` (``load.timeline``: one row per request).
        events: the platform's timeline: ``t`` (epoch s), ``kind``, ``replica``, ``detail``.
        summary: the :class:`~hadrlab.metrics.RunSummary` (availability, error window,
            recovery, latency).
        steady_availability: the share of requests served before the fault (the steady
            state the fault starts from; it should be 1.0).
        rollout_s: for a rollout, seconds until it finished (None if it did not in time).
        prometheus: with ``monitoring``, the same run counted by Prometheus from the
            Service's load balancer: ``requests``, ``failures``, ``availability``, ``start``,
            ``end`` (the instants compared); else None.
    """

    label: str
    fault: str
    target: str | None
    fault_t: float
    load: LoadResult = field(repr=False)
    events: pd.DataFrame = field(repr=False)
    summary: RunSummary = field(repr=False)
    steady_availability: float = float("nan")
    rollout_s: float | None = None
    prometheus: dict | None = None

    def time_until(self, kind: str, replica: str | None = None, after_kind: str | None = None) -> float | None:
        """Seconds from the fault to the first platform event of ``kind`` after it.

        Args:
            kind: an event kind, e.g. ``"ready"`` or ``"liveness-failed"``.
            replica: only events of this replica (e.g. ``result.target``).
            after_kind: only count ``kind`` events after the first ``after_kind`` event
                that follows the fault (e.g. ``"ready"`` after ``"restarted"``).

        Returns:
            Seconds, or None when no such event happened before the platform was closed.
        """
        ev = self.events[self.events["t"] >= self.fault_t]
        if replica is not None:
            ev = ev[ev["replica"] == replica]
        start = self.fault_t
        if after_kind is not None:
            first = ev[ev["kind"] == after_kind]
            if first.empty:
                return None
            start = float(first["t"].min())
        hits = ev[(ev["kind"] == kind) & (ev["t"] >= start)]
        return float(hits["t"].min()) - self.fault_t if len(hits) else None

    def plot(self, title: str | None = None, **options: Any) -> Figure:
        """The request timeline with the fault and the platform's events marked.

        Args:
            title: the figure's title; by default the label and the fault.
            **options: passed to :func:`hadrlab.plots.plot_timeline` (``window_s`` ...).

        Returns:
            A closed matplotlib Figure (a notebook displays it once).
        """
        from hadrlab.plots import plot_timeline

        ev = self.events.sort_values("t")
        run_end = self.load.ended_at + 0.5
        ev = ev[(ev["t"] >= self.load.started_at) & (ev["t"] <= run_end) & ev["kind"].isin(_PLOTTED_EVENTS)]
        ev = ev[ev["kind"] != _FAULT_EVENT.get(self.fault, self.fault)]  # the fault is the red line
        # Events a few tens of ms apart (exited, restarted, started ...) would print their
        # labels on top of each other: keep the first of each cluster.
        kept, last_t = [], float("-inf")
        for i, t in zip(ev.index, ev["t"]):
            if t - last_t >= _EVENT_CLUSTER_S:
                kept.append(i)
                last_t = t
        ev = ev.loc[kept]
        label = {"kill": "kill (SIGKILL)", "hang": "hang (SIGSTOP)", "delete": "delete pod",
                 "rollout": "rollout v2"}.get(self.fault, self.fault)
        title = title or f"{self.label}: {label} at {self.fault_t - self.load.started_at:.0f} s, {self.load.users} users"
        return plot_timeline(self.load, fault_t={label: self.fault_t}, events=ev, title=title, **options)

    def __repr__(self) -> str:
        return f"ScenarioResult({self.label!r}, fault={self.fault}, target={self.target}: {self.summary!r})"

    def _repr_html_(self) -> str:
        return self.summary._repr_html_()


# --------------------------------------------------------------------------- running


def _served_before(timeline: pd.DataFrame, fault_t: float) -> float:
    """Share of the requests answered before the fault that succeeded (the steady state)."""
    done = timeline[timeline["t_end"] < fault_t]
    return float(done["ok"].astype(bool).mean()) if len(done) else float("nan")


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:40] or "scenario"


def _wait_for_steady_state(platform: Platform, url: str, deployment: str, timeout_s: float) -> None:
    """Wait until the Service answers /readyz 200 several times in a row.

    Without a readiness probe a replica counts as ready the moment it starts, long before
    its model is loaded; asking through the Service, round robin, waits for every replica
    to really serve. Two answers per replica in a row, so each one is asked at least once.
    """
    from hadrlab.errors import ServiceNotReady
    from hadrlab.processes import http_status, wait_until

    import json
    import urllib.request

    count = max(1, len(platform.replicas(deployment)))
    wanted = 2 * count
    recent: list[str] = []

    def answer() -> str | None:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2.0) as resp:
                return str(json.loads(resp.read()).get("replica", "?"))
        except (OSError, ValueError):
            return None

    def steady() -> bool:
        name = answer()
        if name is None:
            recent.clear()
            return False
        recent.append(name)
        # Every replica must be behind the Service (endpoint changes may lag), and ready.
        return len(recent) >= wanted and len(set(recent[-wanted:])) >= count

    try:
        wait_until(steady, timeout_s=timeout_s, interval_s=0.05,
                   describe=f"{wanted} ready answers in a row from {count} replicas at GET {url}/readyz")
    except ServiceNotReady:
        reps = "; ".join(f"{r.name} {r.phase} ready={r.ready}" for r in platform.replicas(deployment))
        raise ServiceNotReady(
            f"The Service in front of Deployment {deployment!r} ({url}) did not answer /readyz "
            f"with 200 from all {count} replicas in a row within {timeout_s:g} s, so there is no steady "
            f"state to start the experiment from. Replicas: {reps}. Check the model load "
            f"time (MODEL_LOAD_DELAY_S) and the probes."
        ) from None


def _wait_for_recovery(platform: Platform, deployment: str, deadline: float) -> bool:
    """Wait until a rollout is done and no replica is terminating, or until ``deadline``."""
    from hadrlab.processes import wait_until

    def recovered() -> bool:
        reps = platform.replicas(deployment)
        return all(r.ready and r.phase == "Running" for r in reps) and len(
            {r.version for r in reps}) == 1

    with contextlib.suppress(HadrError):
        platform.wait_for_rollout(deployment, timeout_s=max(0.1, deadline - time.time()))
        wait_until(recovered, timeout_s=max(0.1, deadline - time.time()), interval_s=0.1,
                   describe=f"every replica of {deployment!r} ready and none terminating")
        return True
    return False


def _inject(platform: Platform, fault: str | Callable[[Platform], Any], deployment: str) -> str | None:
    if callable(fault):
        out = fault(platform)
        return out if isinstance(out, str) else None
    if fault == "kill":
        return platform.kill_replica(deployment)
    if fault == "hang":
        return platform.hang_replica(deployment)
    if fault == "delete":
        return platform.delete_replica(deployment)
    if fault == "rollout":
        platform.rollout(deployment, version="v2")
        return None
    raise ValueError(f"Unknown fault {fault!r}: use one of {sorted(FAULTS)} or a callable(platform).")


def run_scenario(
    manifests: str | Sequence[Mapping],
    fault: str | Callable[[Platform], Any] = "kill",
    *,
    label: str = "",
    users: int = 6,
    duration_s: float = 10,
    fault_at_s: float = 3,
    body: Any = None,
    deployment: str = "model-api",
    service: str = "model-api",
    restart_backoff_s: float = 1.0,
    endpoint_lag_s: float = 1.0,
    wait_ms: float = 0,
    timeout_s: float = 2.0,
    ready_timeout_s: float = 60.0,
    recover_timeout_s: float = 0.0,
    stop_when_recovered: bool = False,
    settle_s: float = 1.0,
    platform: Platform | None = None,
    monitoring: Any = None,
) -> ScenarioResult:
    """Run one configuration under load, inject one fault, and measure what clients saw.

    Args:
        manifests: a YAML path or the edited list of manifest dicts (copied, never changed).
        fault: ``"kill"``, ``"hang"``, ``"delete"``, ``"rollout"`` (see :data:`FAULTS`), or
            a callable that receives the platform and may return the replica it hit.
        label: the configuration's name in tables and figures.
        users: concurrent simulated users.
        duration_s: length of the load in seconds.
        fault_at_s: seconds after the load starts at which the fault is injected.
        body: the request body; default eight real digit images (``predict_payload(8)``).
        deployment: the Deployment the fault targets.
        service: the Service the load goes through.
        restart_backoff_s: the platform's restart back-off base (Kubernetes: 10 s).
        endpoint_lag_s: delay before endpoint changes reach the load balancer (~1 s in a
            cluster).
        wait_ms: each user's pause between two requests (0: as fast as answers come).
        timeout_s: the clients' request timeout; a hung replica fails requests after it.
        ready_timeout_s: how long the set-up may take before it counts as failed.
        recover_timeout_s: after the load, wait up to this long for every replica to be
            ready again (a hung replica restarted by its liveness probe, a rollout that
            finishes), so that the events tell when it happened; 0 does not wait.
        stop_when_recovered: end the load ``settle_s`` after every replica is ready on
            the current template and none is terminating (a rollout done), instead of
            after ``duration_s``, which becomes the longest the load may run.
        settle_s: see ``stop_when_recovered``.
        platform: an existing platform to use (left running); by default a fresh local
            one, closed at the end.
        monitoring: a running :class:`~hadrlab.monitoring.Monitoring`: it scrapes the
            Service's load balancer during the run, and the result's ``prometheus`` holds
            the run as Prometheus counted it.

    Returns:
        A :class:`ScenarioResult`.

    Raises:
        ServiceNotReady: the configuration never became ready (its replicas and their last
            log line are named).
    """
    from hadrlab.load import start_load
    from hadrlab.metrics import summarize
    from hadrlab.platform.base import get_platform
    from hadrlab.serving import predict_payload

    if not 0 < fault_at_s < duration_s:
        raise ValueError(f"fault_at_s must be between 0 and duration_s ({duration_s:g}); got {fault_at_s!r}.")
    docs = manifests if isinstance(manifests, str) else copy.deepcopy(list(manifests))
    label = label or (fault if isinstance(fault, str) else getattr(fault, "__name__", "fault"))
    body = predict_payload(8, seed=0) if body is None else body
    own = platform is None
    if own:
        platform = get_platform(restart_backoff_s=restart_backoff_s,
                                endpoint_lag_s=endpoint_lag_s, quiet=True)
    try:
        platform.apply(docs, quiet=True)
        platform.wait_for_rollout(deployment, timeout_s=ready_timeout_s)
        url = platform.service_url(service)
        if monitoring is not None:
            monitoring.watch(service, platform.metrics_urls(service))
            monitoring.wait_for_targets()
        _wait_for_steady_state(platform, url, deployment, ready_timeout_s)
        run = start_load(url, users=users, duration_s=duration_s, body=body,
                         wait_ms=wait_ms, timeout_s=timeout_s, name=_slug(label))
        time.sleep(max(0.0, run.started_at + fault_at_s - time.time()))
        fault_t = time.time()
        target = _inject(platform, fault, deployment)
        if stop_when_recovered:
            _wait_for_recovery(platform, deployment, run.started_at + duration_s - settle_s)
            time.sleep(settle_s)
            result = run.stop() if not run.done() else run.wait(progress=False)
        else:
            result = run.wait(progress=False)
        if recover_timeout_s > 0:
            with contextlib.suppress(HadrError):  # not recovering is a result, not an error
                platform.wait_for_rollout(deployment, timeout_s=recover_timeout_s)
        events = platform.events()
        counted = None
        if monitoring is not None:
            # The instants compared: the last scrape before the load, the first after its last answer.
            start, end = result.started_at, result.ended_at + 2 * monitoring.scrape_interval_s
            time.sleep(max(0.0, end + 0.2 - time.time()))
            counted = {**monitoring.availability(service, start, end), "start": start, "end": end}
    finally:
        if own:
            platform.close()
    rollout_s = None
    if fault == "rollout":
        done = events[(events["kind"] == "rollout-finished") & (events["t"] >= fault_t)]
        rollout_s = float(done["t"].min()) - fault_t if len(done) else None
    name = fault if isinstance(fault, str) else getattr(fault, "__name__", "fault")
    return ScenarioResult(
        label=label,
        fault=name,
        target=target,
        fault_t=fault_t,
        load=result,
        events=events,
        summary=dataclasses.replace(summarize(result, fault_t, label),
                                    prometheus_availability=counted["availability"] if counted else None),
        steady_availability=_served_before(result.timeline, fault_t),
        rollout_s=rollout_s,
        prometheus=counted,
    )
