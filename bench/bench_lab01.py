"""Benchmarks of Lab 01 (stateless replicas): the balancer's cost, a replica kill, the probes.

Every figure runs the real parts: ``LocalPlatform`` starts the model API replicas of
``infra/k8s/model-api.yaml`` as processes and the Service's load balancer as another
process; locust sends the load from a third. On a 2-core machine they all share the CPUs,
which is part of what is measured. See ``bench/README.md`` for what each figure means.

    bench_lab01_balancer   lb_overhead_ratio, lb_cpu_ratio
    bench_lab01_kill       replica_kill_availability (+ three configurations without target)
    bench_lab01_probes     liveness_detection_ratio, liveness_failed_s,
                           readiness_detection_s, readiness_removal_s
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from pathlib import Path

from bench.__main__ import Figure

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "infra" / "k8s" / "model-api.yaml"
DEPLOYMENT = "model-api"
RETRY_ANNOTATION = "hadrlab.io/retry-connect-failures"
PROBE_KEYS = ("startupProbe", "readinessProbe", "livenessProbe")

# The kubelet's default 10 s restart back-off would only slow the benchmark down; the
# first restart after a crash is immediate either way, so no figure depends on it.
RESTART_BACKOFF_S = 1.0

# Load shared by every run: enough users to keep one replica busy, one digit per request.
USERS = 10
OVERHEAD_RUN_S = 5
# ABBA then BAAB: a linear drift in machine load cancels out of the ratio, and eight runs
# average over the bursts of other work on a shared machine.
OVERHEAD_ORDER = ("direct", "service", "service", "direct", "service", "direct", "direct", "service")
# Long enough that even a single replica is back and serving for a while before the end.
KILL_RUN_S = 16
KILL_AT_S = 4.0


# --------------------------------------------------------------------------- helpers


def manifests(*, replicas: int = 2, probes: bool = True, retry: bool = True) -> list[dict]:
    """The model API manifests, varied: replica count, probes on or off, balancer retry.

    Args:
        replicas: the Deployment's replica count.
        probes: keep the startup, readiness and liveness probes (False removes all three).
        retry: the Service annotation that makes the balancer retry a failed connection.

    Returns:
        Manifest dicts to pass to ``platform.apply()``.
    """
    from hadrlab.platform import load_manifest

    docs = copy.deepcopy(load_manifest(MANIFEST))
    for doc in docs:
        if doc["kind"] == "Deployment":
            doc["spec"]["replicas"] = replicas
            if not probes:
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    for key in PROBE_KEYS:
                        container.pop(key, None)
        elif doc["kind"] == "Service":
            annotations = doc["metadata"].setdefault("annotations", {})
            annotations[RETRY_ANNOTATION] = "true" if retry else "false"
    return docs


def liveness_budget_s(docs: list[dict]) -> tuple[float, int, int]:
    """``periodSeconds x failureThreshold`` of the liveness probe, with both factors."""
    for doc in docs:
        if doc["kind"] == "Deployment":
            probe = doc["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
            period = int(probe.get("periodSeconds", 10))
            threshold = int(probe.get("failureThreshold", 3))
            return float(period * threshold), period, threshold
    raise ValueError("The manifests hold no Deployment with a liveness probe.")


def first_event_t(events, kind: str, replica: str, after_t: float) -> float | None:
    """Time of the first event of ``kind`` for ``replica`` at or after ``after_t`` (None: none)."""
    rows = events[(events["kind"] == kind) & (events["replica"] == replica) & (events["t"] >= after_t)]
    return float(rows["t"].min()) if len(rows) else None


@contextlib.contextmanager
def running_platform(docs: list[dict], timeout_s: float = 60.0) -> Iterator:
    """A LocalPlatform with ``docs`` applied, every replica serving; closed on exit."""
    from hadrlab.platform import LocalPlatform
    from hadrlab.processes import http_status, wait_until

    platform = LocalPlatform(restart_backoff_s=RESTART_BACKOFF_S, quiet=True)
    try:
        platform.apply(docs)
        platform.wait_for_rollout(DEPLOYMENT, timeout_s=timeout_s)
        # Without a readiness probe a replica counts as ready before its model is loaded:
        # wait for every replica's own /readyz so each run starts from a steady state.
        for replica in platform.replicas(DEPLOYMENT):
            url = f"http://127.0.0.1:{replica.port}/readyz"
            wait_until(lambda u=url: http_status(u) == 200, timeout_s=timeout_s, describe=url)
        yield platform
    finally:
        platform.close()


# --------------------------------------------------------------------------- balancer overhead


def _process_cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by the running processes ``pids``."""
    import psutil

    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def _reaped_children_cpu_s() -> float:
    """CPU seconds of this process's children that have exited and been waited for."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _balancer_pid() -> int:
    import psutil

    for proc in psutil.Process().children(recursive=True):
        if "hadrlab.platform.balancer" in " ".join(proc.cmdline()):
            return proc.pid
    raise RuntimeError("The Service's load balancer process was not found among this process's children.")


def bench_lab01_balancer() -> list[Figure]:
    """Requests/s through the Service's balancer over requests/s straight to the replica.

    Also reports the CPU spent per request on each path (locust + replica, + balancer),
    which other work on a shared machine does not disturb: on an otherwise idle machine
    whose CPUs are the bottleneck, the throughput ratio tends to the CPU ratio.
    """
    from hadrlab.load import start_load
    from hadrlab.serving import predict_payload

    docs = manifests(replicas=1, probes=True, retry=True)
    body = predict_payload(1)
    rps: dict[str, list[float]] = {"direct": [], "service": []}
    cpu_s = {"direct": 0.0, "service": 0.0}
    requests = {"direct": 0, "service": 0}
    failures = 0
    with running_platform(docs) as platform:
        replica = platform.replicas(DEPLOYMENT)[0]
        pids = [replica.pid, _balancer_pid()]
        urls = {"direct": f"http://127.0.0.1:{replica.port}", "service": platform.service_url(DEPLOYMENT)}
        for target in OVERHEAD_ORDER:
            reaped = _reaped_children_cpu_s()
            run = start_load(
                urls[target], users=USERS, duration_s=OVERHEAD_RUN_S, body=body, name=f"bench-{target}"
            )
            # Count locust from the moment load flows: its start-up (imports) is no request's cost.
            before = _process_cpu_s(pids) + _process_cpu_s([run.child.pid])
            result = run.wait(progress=False)
            # locust has exited and been reaped by now: its whole CPU is in RUSAGE_CHILDREN
            cpu_s[target] += _process_cpu_s(pids) + _reaped_children_cpu_s() - reaped - before
            requests[target] += result.requests
            rps[target].append(result.rps)
            failures += result.failures
    direct = sum(rps["direct"]) / len(rps["direct"])
    service = sum(rps["service"]) / len(rps["service"])
    ratio = service / direct if direct else float("nan")
    cpu_ms = {k: 1000 * cpu_s[k] / requests[k] for k in cpu_s}
    cpu_ratio = cpu_ms["direct"] / cpu_ms["service"]
    fmt = lambda xs: "/".join(f"{x:.0f}" for x in xs)  # noqa: E731
    setup = f"1 replica, locust {USERS} users, {len(OVERHEAD_ORDER)} runs of {OVERHEAD_RUN_S} s, ABBA BAAB"
    note = (
        f"{setup}; direct {direct:.0f} req/s ({fmt(rps['direct'])}), through the Service "
        f"{service:.0f} req/s ({fmt(rps['service'])}); {failures} failed requests"
    )
    if ratio < 0.8:
        note += (
            f"; below target: the balancer is a third Python process on the same 2 cores as "
            f"locust and the replica, so its CPU per request is taken from them (CPU ratio "
            f"{cpu_ratio:.2f}), and other work on the machine made single runs vary"
        )
    return [
        Figure("lb_overhead_ratio", ratio, "", 0.8, ">=", note),
        Figure(
            "lb_cpu_ratio", cpu_ratio, "", None, ">=",
            f"CPU per request direct (locust + replica) {cpu_ms['direct']:.2f} ms over through "
            f"the Service (locust + replica + balancer) {cpu_ms['service']:.2f} ms; {setup}",
        ),
    ]


# --------------------------------------------------------------------------- replica kill


KILL_CONFIGS = {
    # name suffix: (manifest options, has a target)
    "": (dict(replicas=2, probes=True, retry=True), True),
    "_probes_no_retry": (dict(replicas=2, probes=True, retry=False), False),
    "_no_probes": (dict(replicas=2, probes=False, retry=False), False),
    "_one_replica": (dict(replicas=1, probes=True, retry=True), False),
}


def _kill_under_load(docs: list[dict], label: str):
    from hadrlab.load import start_load
    from hadrlab.metrics import summarize
    from hadrlab.serving import predict_payload

    with running_platform(docs) as platform:
        run = start_load(
            platform.service_url(DEPLOYMENT), users=USERS, duration_s=KILL_RUN_S,
            body=predict_payload(1), name=f"bench-kill{label}",
        )
        try:
            time.sleep(max(0.0, run.started_at + KILL_AT_S - time.time()))
            fault_t = time.time()
            platform.kill_replica(DEPLOYMENT)
            result = run.wait(progress=False)
        finally:
            run.child.stop(timeout_s=5)  # idempotent: a no-op once locust has exited
        retries = platform.service_stats(DEPLOYMENT).get("retries_total", 0)
    return summarize(result, fault_t, label or "hardened"), retries


def bench_lab01_kill() -> list[Figure]:
    """Availability while one replica is SIGKILLed under load, for four configurations."""
    figures = []
    for suffix, (options, targeted) in KILL_CONFIGS.items():
        summary, retries = _kill_under_load(manifests(**options), suffix)
        recovery = "not within the run" if summary.recovery_s is None else f"{summary.recovery_s:.1f} s"
        note = (
            f"{options['replicas']} replica(s), probes {'on' if options['probes'] else 'off'}, "
            f"retry {'on' if options['retry'] else 'off'}; {USERS} users for {KILL_RUN_S} s, "
            f"SIGKILL at {KILL_AT_S:g} s; {summary.failures} failed of {summary.requests} "
            f"requests, error window {summary.error_window_s:.2f} s, recovery {recovery}, "
            f"{retries} balancer retries"
        )
        figures.append(
            Figure(
                f"replica_kill_availability{suffix}", summary.availability, "",
                0.999 if targeted else None, ">=", note,
            )
        )
    return figures


# --------------------------------------------------------------------------- probes


def bench_lab01_probes() -> list[Figure]:
    """Freeze one replica (SIGSTOP) and time what the probes do about it, from the events."""
    from hadrlab.processes import wait_until

    docs = manifests()
    budget_s, period_s, threshold = liveness_budget_s(docs)
    with running_platform(docs) as platform:
        name = platform.hang_replica(DEPLOYMENT)
        hung_t = first_event_t(platform.events(), "hung", name, 0.0)
        wait_until(
            lambda: first_event_t(platform.events(), "ready", name, hung_t) is not None,
            timeout_s=60, describe=f"replica {name} restarted and ready again after its hang",
        )
        events = platform.events()
    unready_t = first_event_t(events, "unready", name, hung_t)
    removed_t = first_event_t(events, "endpoint-removed", name, unready_t)
    failed_t = first_event_t(events, "liveness-failed", name, hung_t)
    restarted_t = first_event_t(events, "restarted", name, failed_t)
    ready_t = first_event_t(events, "ready", name, restarted_t)
    detection_s = failed_t - hung_t
    restart_s = restarted_t - hung_t
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"][0]
    grace = container["livenessProbe"].get("terminationGracePeriodSeconds", "the pod's")
    return [
        Figure(
            "liveness_detection_ratio", restart_s / budget_s, "", 1.5, "<=",
            f"hang -> restarted {restart_s:.2f} s over periodSeconds {period_s} x "
            f"failureThreshold {threshold} = {budget_s:g} s: detection (hang -> liveness-failed) "
            f"{detection_s:.2f} s, then the liveness kill's grace period ({grace} s: a frozen "
            f"process cannot act on SIGTERM) and the restart; ready again "
            f"{ready_t - hung_t:.1f} s after the hang; no load",
        ),
        Figure(
            "liveness_failed_s", detection_s, "s", None, "<=",
            "hang -> liveness-failed: periodSeconds x failureThreshold, plus up to one period",
        ),
        Figure(
            "readiness_detection_s", unready_t - hung_t, "s", None, "<=",
            "hang -> unready: readiness periodSeconds 1, timeoutSeconds 1, failureThreshold 2",
        ),
        Figure(
            "readiness_removal_s", removed_t - unready_t, "s", None, "<=",
            "unready -> endpoint-removed: the platform pushes the new endpoint list to the "
            "balancer (endpoint_lag_s 0)",
        ),
    ]
