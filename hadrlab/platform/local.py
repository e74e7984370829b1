"""The local backend: Kubernetes Deployments run as real processes on this machine.

It reads the same manifests as a cluster (see :mod:`hadrlab.platform.manifests` for the
honoured subset) and reproduces the Kubernetes behaviours the labs measure:

- each replica (pod) is a process on its own loopback port; a "kubelet" thread per pod
  starts it, runs its probes (real HTTP GETs with ``timeoutSeconds``) and restarts it;
- readiness gates the Service: only ready replicas are endpoints (``successThreshold`` /
  ``failureThreshold`` honoured); the startup probe gates liveness and readiness;
- a liveness failure kills the container and restarts it in place (restart count +1); a
  process that exits is restarted too (``restartPolicy: Always``). Restarts back off like
  the kubelet's CrashLoopBackOff: the first restart is immediate, then 10 s, 20 s, 40 s ...
  capped at 300 s, and the count resets after a container ran for 10 minutes. The base and
  the cap are settable (``LocalPlatform(restart_backoff_s=1.0)``) so labs and tests run fast;
- a replica keeps its port across container restarts (a pod keeps its IP); a replacement
  replica gets a new port (a new pod gets a new IP);
- graceful deletion (``delete_replica``, scale down, rolling update): the replica is marked
  terminating and removed from the endpoints, preStop runs, then SIGTERM, then SIGKILL once
  ``terminationGracePeriodSeconds`` is over (preStop time counts against it);
- a controller thread keeps each Deployment at its replica count and rolls out a new pod
  template honouring ``maxSurge`` and ``maxUnavailable`` (with ``maxUnavailable: 0`` a new
  replica is ready before an old one terminates);
- each Service is a separate load-balancer process (:mod:`hadrlab.platform.balancer`) that
  the platform pushes the endpoint list to. The annotation
  ``hadrlab.io/retry-connect-failures: "true"`` on a Service turns on its retry of requests
  whose upstream connection failed.

In a cluster, endpoint changes reach kube-proxy and ingress controllers asynchronously
(often ~1 s later); ``endpoint_lag_s`` reproduces that delay (0 by default), which is what
makes a preStop ``sleep`` necessary.
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hadrlab.errors import HadrError, ManifestError, ServiceNotReady
from hadrlab.platform.base import AppliedObject, ApplyResult, Platform, Replica
from hadrlab.platform.manifests import (
    ContainerSpec,
    DeploymentSpec,
    ManifestObject,
    ProbeSpec,
    ServiceSpec,
    resolve_int_or_percent,
    validate_manifests,
)
from hadrlab.processes import Child, find_free_port, http_status, start_process, wait_until

__all__ = ["LocalPlatform", "RestartBackoff", "ProbeTracker", "probe_http"]

HOST = "127.0.0.1"
RETRY_ANNOTATION = "hadrlab.io/retry-connect-failures"
_TICK_S = 0.05


# --------------------------------------------------------------------------- small strategies


class RestartBackoff:
    """The kubelet's restart back-off: immediate, then base, 2 x base, ... capped.

    Example:
        >>> [RestartBackoff(10, 300).compute(n) for n in range(1, 9)]
        [0.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]
    """

    def __init__(self, base_s: float = 10.0, max_s: float = 300.0) -> None:
        self.base_s = base_s
        self.max_s = max_s

    @property
    def reset_after_s(self) -> float:
        """A container that ran this long without failing starts a fresh back-off."""
        return 2 * self.max_s

    def compute(self, failures: int) -> float:
        """Seconds to wait before restarting after the ``failures``-th consecutive failure."""
        if failures <= 1:
            return 0.0
        return float(min(self.base_s * 2 ** (failures - 2), self.max_s))


class ProbeTracker:
    """The result of one probe over time, with success and failure thresholds.

    ``state`` is ``"unknown"`` until a threshold is reached, then ``"passing"`` or
    ``"failing"``. :meth:`record` returns the new state when it changes, else None.
    A readiness or startup probe starts ``"unknown"`` (not ready); a liveness probe
    starts ``"passing"`` (a container is presumed alive).
    """

    def __init__(self, spec: ProbeSpec, initial: str = "unknown") -> None:
        self.spec = spec
        self.state = initial
        self.successes = 0
        self.failures = 0

    def record(self, ok: bool) -> str | None:
        if ok:
            self.successes += 1
            self.failures = 0
            if self.state != "passing" and self.successes >= self.spec.success_threshold:
                self.state = "passing"
                return self.state
        else:
            self.failures += 1
            self.successes = 0
            if self.state != "failing" and self.failures >= self.spec.failure_threshold:
                self.state = "failing"
                return self.state
        return None


def probe_http(port: int, path: str, timeout_s: float) -> tuple[bool, str]:
    """One HTTP probe: success is a 2xx or 3xx answer within ``timeout_s``."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers={"Connection": "close", "User-Agent": "kube-probe/hadrlab"})
        status = conn.getresponse().status
        return 200 <= status < 400, f"HTTP {status}"
    except TimeoutError:
        return False, f"no answer within {timeout_s:g} s"
    except OSError as exc:
        return False, f"{exc.__class__.__name__}: {exc}"
    except http.client.HTTPException as exc:
        return False, f"{exc.__class__.__name__}"
    finally:
        conn.close()


# --------------------------------------------------------------------------- state


@dataclass(eq=False)
class _Instance:
    """One run of a pod's container (a pod's container restarts in place)."""

    child: Child
    started_at: float
    stopped: threading.Event = field(default_factory=threading.Event)
    kill_reason: str | None = None


@dataclass(eq=False)
class _Pod:
    name: str
    deployment: str
    revision: int
    spec: DeploymentSpec
    port: int
    labels: dict[str, str]
    phase: str = "Pending"
    ready: bool = False
    restarts: int = 0
    instance: _Instance | None = None
    deleting: bool = False
    finished: bool = False
    hung: bool = False
    eligible: bool = False
    eligible_changed_at: float = 0.0
    wake: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def container(self) -> ContainerSpec:
        return self.spec.container


@dataclass(eq=False)
class _Deployment:
    spec: DeploymentSpec
    revision: int = 1
    pods: list[_Pod] = field(default_factory=list)
    rolling: bool = False


@dataclass(eq=False)
class _Service:
    spec: ServiceSpec
    child: Child
    admin_port: int
    retry: bool
    pushed: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- the platform


class LocalPlatform(Platform):
    """Run Kubernetes Deployments and Services as processes on this machine.

    Example:
        >>> with LocalPlatform(restart_backoff_s=1.0) as platform:
        ...     platform.apply(load_manifest("infra/k8s/model-api.yaml"))
        ...     platform.wait_for_rollout("model-api")
        ...     platform.kill_replica("model-api")

    Args:
        restart_backoff_s: the base restart back-off (Kubernetes: 10 s).
        restart_backoff_max_s: its cap (Kubernetes: 300 s).
        endpoint_lag_s: delay before an endpoint change reaches the load balancer
            (0 here; ~1 s is typical of a real cluster).
        quiet: do not print what apply() did.
    """

    backend = "local"

    def __init__(
        self,
        *,
        restart_backoff_s: float = 10.0,
        restart_backoff_max_s: float = 300.0,
        endpoint_lag_s: float = 0.0,
        quiet: bool = False,
    ) -> None:
        self.backoff = RestartBackoff(restart_backoff_s, restart_backoff_max_s)
        self.endpoint_lag_s = endpoint_lag_s
        self.quiet = quiet
        self._lock = threading.RLock()
        self._sync_lock = threading.Lock()
        self._deployments: dict[str, _Deployment] = {}
        self._services: dict[str, _Service] = {}
        self._budgets: dict[str, dict] = {}
        self._events: list[dict] = []
        self._seq = itertools.count(1)
        self._closing = threading.Event()
        self._controller: threading.Thread | None = None

    # ------------------------------------------------------------------ events

    def _record(self, kind: str, replica: str = "", detail: str = "", obj: str = "") -> None:
        with self._lock:
            self._events.append(
                {"t": time.time(), "kind": kind, "replica": replica, "detail": detail, "object": obj}
            )

    def events(self):
        """The timeline as a DataFrame: t (epoch s), kind, replica, detail, object."""
        import pandas as pd

        with self._lock:
            rows = list(self._events)
        return pd.DataFrame(rows, columns=["t", "kind", "replica", "detail", "object"])

    # ------------------------------------------------------------------ apply / delete

    def apply(
        self, manifests: str | os.PathLike | Mapping | Sequence[Mapping], *, quiet: bool | None = None
    ) -> ApplyResult:
        """Create or update the objects in ``manifests``; print what was not honoured.

        Args:
            manifests: a YAML file path, one manifest dict, or a list of them.
            quiet: do not print the kubectl-style summary (default: the platform's setting).

        Returns:
            An :class:`ApplyResult`: one :class:`AppliedObject` per document, each listing
            the fields the local backend does not honour.
        """
        if self._closing.is_set():
            raise HadrError("This LocalPlatform was closed; create a new one with get_platform().")
        objects = validate_manifests(manifests)
        result = ApplyResult()
        with self._lock:
            self._check_service_ports(objects)  # before anything changes: refuse whole
            for obj in objects:
                action = self._apply_one(obj)
                result.append(AppliedObject(obj.kind, obj.name, action, obj.not_honoured, obj.notes))
        self._ensure_controller()
        self._sync_endpoints()
        if not (self.quiet if quiet is None else quiet):
            for obj in result:
                print("\n".join(obj.lines()))
        return result

    def _apply_one(self, obj: ManifestObject) -> str:
        if obj.kind == "Deployment":
            spec: DeploymentSpec = obj.spec
            dep = self._deployments.get(obj.name)
            if dep is None:
                self._deployments[obj.name] = _Deployment(spec=spec)
                self._record("scaled", "", f"{obj.name}: 0 -> {spec.replicas} (created)", obj.name)
                return "created"
            old = dep.spec
            changed = False
            if old.replicas != spec.replicas:
                self._record("scaled", "", f"{obj.name}: {old.replicas} -> {spec.replicas}", obj.name)
                changed = True
            old_template = old.manifest["spec"]["template"]
            dep.spec = spec
            if spec.manifest["spec"]["template"] != old_template:
                dep.revision += 1
                dep.rolling = True
                self._record("rollout-started", "", f"{obj.name}: revision {dep.revision}", obj.name)
                changed = True
            elif old.manifest != spec.manifest:
                changed = True
            return "configured" if changed else "unchanged"
        if obj.kind == "Service":
            spec: ServiceSpec = obj.spec
            retry = str((obj.manifest["metadata"].get("annotations") or {}).get(RETRY_ANNOTATION, "")).lower() in (
                "true", "1", "yes", "on",
            )
            svc = self._services.get(obj.name)
            if svc is None:
                self._services[obj.name] = self._start_balancer(spec, retry)
                return "created"
            changed = svc.spec.manifest != spec.manifest
            svc.spec = spec
            if retry != svc.retry:
                self.configure_service(obj.name, retry_connect_failures=retry)
            return "configured" if changed else "unchanged"
        if obj.kind == "PodDisruptionBudget":
            existed = obj.name in self._budgets
            self._budgets[obj.name] = obj.manifest
            return "configured" if existed else "created"
        return "skipped"

    def _check_service_ports(self, incoming: Sequence[ManifestObject] = ()) -> None:
        """Refuse a Service whose targetPort the pods it selects do not declare, checking
        what is running together with what is being applied."""
        services = {name: svc.spec for name, svc in self._services.items()}
        deployments = {name: dep.spec for name, dep in self._deployments.items()}
        for obj in incoming:
            if obj.kind == "Service":
                services[obj.name] = obj.spec
            elif obj.kind == "Deployment":
                deployments[obj.name] = obj.spec
        for svc_spec in services.values():
            for dep_spec in deployments.values():
                if not _selects(svc_spec.selector, dep_spec.labels):
                    continue
                c = dep_spec.container
                if svc_spec.target_port not in (c.port, c.port_name):
                    raise ManifestError(
                        f"Service {svc_spec.name!r} targets port {svc_spec.target_port!r}, but the "
                        f"pods of Deployment {dep_spec.name!r} declare containerPort {c.port!r}"
                        f"{f' named {c.port_name!r}' if c.port_name else ''}. Set targetPort to "
                        f"the container port's number or name."
                    )

    def delete(self, manifests: Any = None) -> None:
        """Delete objects: ``None`` (everything), ``"deployment/NAME"``, ``"service/NAME"``,
        a YAML path or manifest dicts. Deleting what does not exist is not an error."""
        if manifests is None:
            targets = [("Deployment", n) for n in list(self._deployments)]
            targets += [("Service", n) for n in list(self._services)]
            targets += [("PodDisruptionBudget", n) for n in list(self._budgets)]
        elif isinstance(manifests, str) and "/" in manifests and not os.path.exists(manifests):
            kind, _, name = manifests.partition("/")
            kinds = {"deployment": "Deployment", "service": "Service", "svc": "Service",
                     "poddisruptionbudget": "PodDisruptionBudget", "pdb": "PodDisruptionBudget"}
            targets = [(kinds.get(kind.lower(), kind), name)]
        else:
            targets = [(o.kind, o.name) for o in validate_manifests(manifests)]
        for kind, name in targets:
            if kind == "Deployment":
                with self._lock:
                    dep = self._deployments.pop(name, None)
                if dep is not None:
                    self._stop_pods(dep.pods)
                    self._record("scaled", "", f"{name}: deleted", name)
            elif kind == "Service":
                with self._lock:
                    svc = self._services.pop(name, None)
                if svc is not None:
                    svc.child.stop(timeout_s=2)
            else:
                self._budgets.pop(name, None)

    def close(self) -> None:
        """Stop every replica and load balancer this platform started. Idempotent."""
        self._closing.set()
        self.delete(None)
        if self._controller is not None:
            self._controller.join(timeout=5)

    def _stop_pods(self, pods: list[_Pod], timeout_s: float = 3.0) -> None:
        """Fast teardown: SIGTERM everything at once, then SIGKILL what is left."""
        for pod in pods:
            pod.deleting = True
            pod.wake.set()
            inst = pod.instance
            if inst is not None:
                inst.kill_reason = inst.kill_reason or "teardown"
                inst.child.signal(signal.SIGCONT)
                inst.child.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for pod in pods:
            if pod.thread is not None:
                pod.thread.join(timeout=max(0.1, deadline - time.monotonic()))
        for pod in pods:
            if pod.instance is not None:
                pod.instance.child.stop(timeout_s=0.5)
            if pod.thread is not None:
                pod.thread.join(timeout=5)

    # ------------------------------------------------------------------ services

    def _start_balancer(self, spec: ServiceSpec, retry: bool) -> _Service:
        port = find_free_port()
        admin_port = find_free_port()
        cmd = [
            sys.executable, "-m", "hadrlab.platform.balancer", "--name", spec.name,
            "--port", "{port}", "--admin-port", str(admin_port),
        ]
        if retry:
            cmd.append("--retry-connect-failures")
        admin_url = f"http://{HOST}:{admin_port}/healthz"
        child = start_process(
            f"svc-{spec.name}",
            cmd,
            port=port,
            ready=lambda c: wait_until(
                lambda: http_status(admin_url) == 200,
                timeout_s=15,
                describe=f"the load balancer's admin API at {admin_url}",
                child=c,
            ),
        )
        return _Service(spec=spec, child=child, admin_port=admin_port, retry=retry)

    def _admin(self, service: str, method: str, path: str, body: dict | None = None) -> dict:
        svc = self._service(service)
        conn = http.client.HTTPConnection(HOST, svc.admin_port, timeout=5)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            text = resp.read().decode()
        except OSError as exc:
            raise HadrError(
                f"The load balancer of Service {service!r} (admin port {svc.admin_port}) did not "
                f"answer {method} {path}: {exc}. Its last log line: {svc.child.last_log_line()!r}."
            ) from None
        finally:
            conn.close()
        return json.loads(text) if text.startswith("{") else {"text": text}

    def configure_service(
        self, service: str, *, retry_connect_failures: bool | None = None, upstream_timeout_s: float | None = None
    ) -> dict:
        """Change a Service's load balancer at run time (retry on connect failure, timeout)."""
        body: dict[str, Any] = {}
        if retry_connect_failures is not None:
            body["retry_connect_failures"] = retry_connect_failures
            self._service(service).retry = retry_connect_failures
        if upstream_timeout_s is not None:
            body["upstream_timeout_s"] = upstream_timeout_s
        return self._admin(service, "POST", "/config", body)

    def service_stats(self, service: str) -> dict:
        """The load balancer's counters: requests and upstream errors per endpoint, retries."""
        return self._admin(service, "GET", "/stats")

    def metrics_urls(self, service: str) -> list[str]:
        """The Service's load balancer: its admin port answers ``/metrics`` (every answer it
        sent, by status code), as an ingress controller's metrics endpoint would."""
        svc = self._services.get(service)
        if svc is None:
            raise ManifestError(f"No Service {service!r} has been applied; apply the manifests first.")
        return [f"http://{HOST}:{svc.admin_port}"]

    def service_url(self, service: str) -> str:
        """``http://127.0.0.1:PORT`` of the Service's load balancer."""
        return f"http://{HOST}:{self._service(service).child.port}"

    def _service(self, name: str) -> _Service:
        svc = self._services.get(name)
        if svc is None:
            raise HadrError(
                f"There is no Service {name!r} on this platform (services: "
                f"{sorted(self._services) or 'none'}). Apply a manifest that defines it first."
            )
        return svc

    def _sync_endpoints(self) -> None:
        """Push each Service's ready endpoints to its load balancer when they changed."""
        with self._sync_lock:
            now = time.time()
            with self._lock:
                pods = [p for d in self._deployments.values() for p in d.pods]
                services = list(self._services.values())
            for svc in services:
                wanted = {
                    p.name: p.port
                    for p in pods
                    if _selects(svc.spec.selector, p.labels) and self._in_endpoints(p, now)
                }
                if wanted == svc.pushed or not svc.child.alive():
                    continue
                body = {"endpoints": [{"name": n, "host": HOST, "port": port} for n, port in wanted.items()]}
                try:
                    self._admin(svc.spec.name, "POST", "/endpoints", body)
                except HadrError:
                    continue  # the balancer is gone (teardown); nothing to route
                for name in wanted.keys() - svc.pushed.keys():
                    self._record("endpoint-added", name, f"port {wanted[name]}", svc.spec.name)
                for name in svc.pushed.keys() - wanted.keys():
                    self._record("endpoint-removed", name, f"port {svc.pushed[name]}", svc.spec.name)
                svc.pushed = wanted

    def _in_endpoints(self, pod: _Pod, now: float) -> bool:
        if now - pod.eligible_changed_at >= self.endpoint_lag_s:
            return pod.eligible
        return not pod.eligible

    def _set_ready(self, pod: _Pod, ready: bool, detail: str, inst: _Instance | None = None) -> None:
        with self._lock:
            if ready and inst is not None and (inst is not pod.instance or inst.stopped.is_set()):
                return  # the container this probe watched has exited meanwhile: not ready
            if pod.ready != ready:
                pod.ready = ready
                self._record("ready" if ready else "unready", pod.name, detail, pod.deployment)
            eligible = ready and not pod.deleting
            if eligible != pod.eligible:
                pod.eligible = eligible
                pod.eligible_changed_at = time.time()
        self._sync_endpoints()

    # ------------------------------------------------------------------ controller

    def _ensure_controller(self) -> None:
        if self._controller is None or not self._controller.is_alive():
            self._controller = threading.Thread(target=self._control_loop, name="hadrlab-controller", daemon=True)
            self._controller.start()

    def _control_loop(self) -> None:
        while not self._closing.is_set():
            try:
                with self._lock:
                    for dep in list(self._deployments.values()):
                        self._reconcile(dep)
                self._sync_endpoints()
            except Exception as exc:  # keep the controller alive; the timeline tells
                self._record("exited", "", f"controller error: {exc!r}", "controller")
            self._closing.wait(_TICK_S)

    def _reconcile(self, dep: _Deployment) -> None:
        dep.pods = [p for p in dep.pods if not p.finished]
        spec = dep.spec
        want = spec.replicas
        live = [p for p in dep.pods if not p.deleting]
        new = [p for p in live if p.revision == dep.revision]
        old = [p for p in live if p.revision != dep.revision]
        if spec.strategy == "Recreate":
            if old:
                for p in old:
                    self._begin_delete(p, "Recreate: old revision")
                return
            if any(p.deleting for p in dep.pods):
                return  # Recreate waits until every old pod is gone
            surge, unavailable = 0, want
        else:
            surge = resolve_int_or_percent(spec.max_surge, want, round_up=True)
            unavailable = resolve_int_or_percent(spec.max_unavailable, want, round_up=False)
            if surge == 0 and unavailable == 0:
                unavailable = 1  # Kubernetes refuses both at 0; behave as if 1
        # scale up the current revision within the surge budget
        room = want + (surge if old else 0) - len(live)
        for _ in range(max(0, min(room, want - len(new)))):
            self._create_pod(dep)
        live = [p for p in dep.pods if not p.deleting]
        new = [p for p in live if p.revision == dep.revision]
        # too many of the current revision (scale down): remove unready, then newest
        if len(new) > want:
            for p in sorted(new, key=lambda p: (p.ready, -_seq_of(p)))[: len(new) - want]:
                self._begin_delete(p, f"scaled down to {want}")
        if old:
            min_available = want - unavailable
            ready_count = sum(1 for p in live if p.ready)
            # unready old pods first: removing them costs no availability
            for p in sorted(old, key=lambda p: (p.ready, _seq_of(p))):
                if not p.ready:
                    self._begin_delete(p, "rolling update: old revision, not ready")
                elif ready_count - 1 >= min_available:
                    self._begin_delete(p, "rolling update: old revision")
                    ready_count -= 1
                    live.remove(p)
        if dep.rolling and not old and len(new) == want and all(p.ready for p in new):
            dep.rolling = False
            self._record("rollout-finished", "", f"{spec.name}: revision {dep.revision}", spec.name)

    def _create_pod(self, dep: _Deployment) -> _Pod:
        name = f"{dep.spec.name}-v{dep.revision}-{next(self._seq)}"
        pod = _Pod(
            name=name,
            deployment=dep.spec.name,
            revision=dep.revision,
            spec=dep.spec,
            port=find_free_port(),
            labels=dict(dep.spec.labels),
        )
        dep.pods.append(pod)
        pod.thread = threading.Thread(target=self._run_pod, args=(pod,), name=f"kubelet-{name}", daemon=True)
        pod.thread.start()
        return pod

    def _begin_delete(self, pod: _Pod, reason: str) -> None:
        if pod.deleting:
            return
        pod.deleting = True
        pod.phase = "Terminating"
        self._record("terminating", pod.name, reason, pod.deployment)
        pod.wake.set()

    # ------------------------------------------------------------------ the kubelet of a pod

    def _container_env(self, pod: _Pod) -> dict[str, str]:
        c = pod.container
        env = dict(c.env)
        values = {"metadata.name": pod.name, "metadata.namespace": "default", "status.podIP": HOST}
        for key, path in c.field_env.items():
            if path in values:
                env[key] = values[path]
        env["PORT"] = str(pod.port)
        env["HOST"] = HOST  # replicas listen on loopback only, whatever the manifest says
        env["HOSTNAME"] = pod.name
        return env

    def _run_pod(self, pod: _Pod) -> None:
        failures = 0
        try:
            while not (pod.deleting or self._closing.is_set()):
                inst = self._start_container(pod)
                if inst is None:
                    reason = "could not start"
                else:
                    reason = self._watch_container(pod, inst)
                if pod.deleting or self._closing.is_set():
                    break
                ran_s = time.time() - inst.started_at if inst else 0.0
                failures = 1 if ran_s >= self.backoff.reset_after_s else failures + 1
                delay = self.backoff.compute(failures)
                if delay > 0:
                    pod.phase = "CrashLoopBackOff"
                    pod.wake.clear()
                    deadline = time.monotonic() + delay
                    while not (pod.deleting or self._closing.is_set()) and time.monotonic() < deadline:
                        pod.wake.wait(min(0.1, max(0.0, deadline - time.monotonic())))
                    if pod.deleting or self._closing.is_set():
                        break
                pod.restarts += 1
                self._record("restarted", pod.name, f"restart {pod.restarts} after {reason}; back-off {delay:g} s", pod.deployment)
            inst = pod.instance
            if inst is not None and inst.child.alive() and inst.kill_reason != "teardown":
                self._terminate(pod, inst, pod.spec.grace_s, deleting=True)
        finally:
            if pod.instance is not None and pod.instance.child.alive():
                pod.instance.child.stop(timeout_s=0.5)
            self._set_ready(pod, False, "deleted")
            pod.phase = "Terminated"
            pod.finished = True

    def _start_container(self, pod: _Pod) -> _Instance | None:
        c = pod.container
        try:
            child = start_process(pod.name, c.argv, env=self._container_env(pod))
        except HadrError as exc:
            self._record("exited", pod.name, f"could not start: {exc}", pod.deployment)
            return None
        inst = _Instance(child=child, started_at=time.time())
        pod.instance = inst
        pod.hung = False
        pod.phase = "Running"
        self._record("started", pod.name, f"pid {child.pid} port {pod.port} version {c.version}", pod.deployment)
        if c.startup is not None:
            self._start_probe(pod, inst, "startup", c.startup, "unknown")
        else:
            self._start_main_probes(pod, inst)
        return inst

    def _start_main_probes(self, pod: _Pod, inst: _Instance) -> None:
        c = pod.container
        if c.liveness is not None:
            self._start_probe(pod, inst, "liveness", c.liveness, "passing")
        if c.readiness is not None:
            self._start_probe(pod, inst, "readiness", c.readiness, "unknown")
        else:
            # Kubernetes: without a readiness probe a container is ready once it started.
            self._set_ready(pod, True, "no readiness probe: ready as soon as started")

    def _start_probe(self, pod: _Pod, inst: _Instance, kind: str, spec: ProbeSpec, initial: str) -> None:
        threading.Thread(
            target=self._probe_loop, args=(pod, inst, kind, spec, initial), name=f"{kind}-{pod.name}", daemon=True
        ).start()

    def _probe_loop(self, pod: _Pod, inst: _Instance, kind: str, spec: ProbeSpec, initial: str) -> None:
        tracker = ProbeTracker(spec, initial)
        if inst.stopped.wait(spec.initial_delay_s):
            return
        while not inst.stopped.is_set():
            started = time.monotonic()
            ok, detail = probe_http(pod.port, spec.path, spec.timeout_s)
            if inst.stopped.is_set():
                return
            change = tracker.record(ok)
            if change is not None:
                self._on_probe(pod, inst, kind, change, detail, tracker)
                if kind == "startup" and change == "passing":
                    return
            inst.stopped.wait(max(0.0, spec.period_s - (time.monotonic() - started)))

    def _on_probe(self, pod: _Pod, inst: _Instance, kind: str, change: str, detail: str, tracker: ProbeTracker) -> None:
        if kind == "readiness":
            if change == "passing":
                self._set_ready(pod, True, f"readiness probe passed {tracker.successes}x ({detail})", inst)
            else:
                self._set_ready(pod, False, f"readiness probe failed {tracker.failures}x ({detail})")
        elif kind == "startup" and change == "passing":
            self._start_main_probes(pod, inst)
        elif change == "failing":  # liveness or startup failed: kill and restart in place
            self._record(
                "liveness-failed", pod.name,
                f"{kind} probe failed {tracker.failures}x ({detail})", pod.deployment,
            )
            inst.kill_reason = f"{kind} probe failure"
            pod.wake.set()

    def _watch_container(self, pod: _Pod, inst: _Instance) -> str:
        """Wait until the container exits, fails liveness or the pod is deleted."""
        child = inst.child
        while True:
            if not child.alive():
                code = child.returncode
                inst.stopped.set()
                self._set_ready(pod, False, f"container exited with code {code}")
                self._record("exited", pod.name, f"exit code {code}", pod.deployment)
                child.stop(timeout_s=0.1)  # unregister
                return f"exit code {code}"
            if pod.deleting or self._closing.is_set():
                return "deleted"
            if inst.kill_reason is not None:
                reason = inst.kill_reason
                probe = pod.container.liveness if "liveness" in reason else pod.container.startup
                grace = probe.termination_grace_s if probe and probe.termination_grace_s is not None else pod.spec.grace_s
                self._terminate(pod, inst, grace, deleting=False)
                return reason
            pod.wake.wait(_TICK_S)
            pod.wake.clear()

    def _terminate(self, pod: _Pod, inst: _Instance, grace_s: float, *, deleting: bool) -> None:
        """Graceful stop: leave the endpoints, preStop, SIGTERM, SIGKILL after the grace period."""
        inst.stopped.set()
        self._set_ready(pod, False, "terminating" if deleting else "being killed")
        deadline = time.monotonic() + grace_s
        child = inst.child
        pre = pod.container.pre_stop
        if pre is not None and child.alive():
            self._run_pre_stop(pod, pre, deadline)
        if child.alive():
            child.signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        how = "SIGTERM"
        if child.alive():
            how = f"SIGKILL after the {grace_s:g} s grace period"
            child.signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(timeout=5)
        child.stop(timeout_s=0.1)  # unregister
        self._record("exited", pod.name, f"exit code {child.returncode} ({how})", pod.deployment)

    def _run_pre_stop(self, pod: _Pod, pre, deadline: float) -> None:
        left = max(0.0, deadline - time.monotonic())
        if pre.sleep_s is not None:
            time.sleep(min(pre.sleep_s, left))
        elif pre.http_path is not None:
            probe_http(pod.port, pre.http_path, timeout_s=max(0.1, left))
        elif pre.command:
            hook = start_process(f"{pod.name}-prestop", pre.command, env=self._container_env(pod))
            with contextlib.suppress(subprocess.TimeoutExpired):
                hook.popen.wait(timeout=left)
            hook.stop(timeout_s=0.5)

    # ------------------------------------------------------------------ verbs on replicas

    def _pods(self, deployment: str) -> list[_Pod]:
        dep = self._deployments.get(deployment)
        if dep is None:
            raise HadrError(
                f"There is no Deployment {deployment!r} on this platform (deployments: "
                f"{sorted(self._deployments) or 'none'}). Apply its manifest first."
            )
        return list(dep.pods)

    def _pick(self, deployment: str, name: str | None, verb: str) -> _Pod:
        with self._lock:
            pods = [p for p in self._pods(deployment) if not p.finished]
        if name is not None:
            for p in pods:
                if p.name == name:
                    return p
            raise HadrError(
                f"Cannot {verb} replica {name!r}: Deployment {deployment!r} has "
                f"{[p.name for p in pods]}. Use platform.replicas({deployment!r}) to see them."
            )
        candidates = [p for p in pods if not p.deleting and p.ready] or [p for p in pods if not p.deleting]
        if not candidates:
            raise HadrError(f"Cannot {verb} a replica of {deployment!r}: it has no running replica.")
        return candidates[0]

    def replicas(self, deployment: str) -> list[Replica]:
        """The replicas of ``deployment``, oldest first, terminating ones included."""
        with self._lock:
            pods = [p for p in self._pods(deployment) if not p.finished]
        out = []
        for p in pods:
            inst = p.instance
            alive = inst is not None and inst.child.alive()
            out.append(
                Replica(
                    name=p.name,
                    deployment=p.deployment,
                    pid=inst.child.pid if alive else None,
                    port=p.port,
                    phase=p.phase,
                    ready=p.ready,
                    restarts=p.restarts,
                    version=p.container.version,
                    started_at=inst.started_at if inst else None,
                )
            )
        return out

    def _running(self, pod: _Pod, verb: str) -> _Instance:
        inst = pod.instance
        if inst is None or not inst.child.alive():
            raise HadrError(
                f"Cannot {verb} replica {pod.name!r}: its container is not running now "
                f"(phase {pod.phase}). Wait for it to restart, or pick another replica."
            )
        return inst

    def kill_replica(self, deployment: str, name: str | None = None) -> str:
        """SIGKILL a replica's process, as a crash would; it restarts in place with back-off."""
        pod = self._pick(deployment, name, "kill")
        inst = self._running(pod, "kill")
        self._record("killed", pod.name, f"SIGKILL pid {inst.child.pid}", pod.deployment)
        inst.child.signal(signal.SIGKILL)
        pod.wake.set()
        return pod.name

    def hang_replica(self, deployment: str, name: str | None = None) -> str:
        """Freeze a replica (SIGSTOP): alive, holding its port, answering nothing."""
        pod = self._pick(deployment, name, "hang")
        inst = self._running(pod, "hang")
        inst.child.pause()
        pod.hung = True
        self._record("hung", pod.name, f"SIGSTOP pid {inst.child.pid}", pod.deployment)
        return pod.name

    def resume_replica(self, deployment: str, name: str | None = None) -> str:
        """Unfreeze a hung replica (SIGCONT). Without a name, the first hung replica."""
        if name is None:
            hung = [p for p in self._pods(deployment) if p.hung]
            if hung:
                name = hung[0].name
        pod = self._pick(deployment, name, "resume")
        inst = self._running(pod, "resume")
        inst.child.resume()
        pod.hung = False
        self._record("resumed", pod.name, f"SIGCONT pid {inst.child.pid}", pod.deployment)
        return pod.name

    def delete_replica(self, deployment: str, name: str | None = None, *, wait: bool = False) -> str:
        """Delete a replica gracefully (``kubectl delete pod``); the Deployment replaces it.

        Args:
            deployment: the Deployment's name.
            name: the replica; None picks the first ready one.
            wait: block until its process has exited.
        """
        pod = self._pick(deployment, name, "delete")
        with self._lock:
            self._begin_delete(pod, "deleted by request (kubectl delete pod)")
        if wait and pod.thread is not None:
            pod.thread.join(timeout=pod.spec.grace_s + 10)
        return pod.name

    # ------------------------------------------------------------------ scale / rollout

    def scale(self, deployment: str, replicas: int) -> None:
        """Set the replica count; new replicas start, extra ones terminate gracefully."""
        with self._lock:
            self._pods(deployment)
            dep = self._deployments[deployment]
            self._record("scaled", "", f"{deployment}: {dep.spec.replicas} -> {replicas}", deployment)
            dep.spec.replicas = int(replicas)
            dep.spec.manifest["spec"]["replicas"] = int(replicas)

    def rollout(
        self,
        deployment: str,
        env: Mapping[str, str] | None = None,
        image: str | None = None,
        version: str | None = None,
    ) -> int:
        """Roll out a new pod template: changed env, image, or version.

        Args:
            deployment: the Deployment's name.
            env: variables to set in the (first) container.
            image: a new image; on the local backend it is recorded as the version.
            version: shorthand: sets env ``MODEL_VERSION`` and the image tag.

        Returns:
            The new revision number.
        """
        with self._lock:
            self._pods(deployment)
            manifest = copy.deepcopy(self._deployments[deployment].spec.manifest)
        container = manifest["spec"]["template"]["spec"]["containers"][0]
        changes = dict(env or {})
        if version is not None:
            changes["MODEL_VERSION"] = str(version)
            base = container.get("image", deployment)
            repo = base.rsplit(":", 1)[0] if ":" in base.rsplit("/", 1)[-1] else base
            container["image"] = f"{repo}:{version}"
        if image is not None:
            container["image"] = image
        items = container.setdefault("env", [])
        for key, value in changes.items():
            for item in items:
                if item.get("name") == key:
                    item.pop("valueFrom", None)
                    item["value"] = str(value)
                    break
            else:
                items.append({"name": key, "value": str(value)})
        self.apply([manifest], quiet=True)
        return self._deployments[deployment].revision

    def _rollout_state(self, deployment: str) -> tuple[bool, str]:
        with self._lock:
            dep = self._deployments.get(deployment)
            if dep is None:
                return False, f"no Deployment {deployment!r}"
            live = [p for p in dep.pods if not p.deleting and not p.finished]
            new = [p for p in live if p.revision == dep.revision]
            ready = [p for p in new if p.ready]
            done = len(ready) == dep.spec.replicas and len(live) == len(new) == dep.spec.replicas
            return done, (
                f"{len(ready)}/{dep.spec.replicas} replicas of revision {dep.revision} ready, "
                f"{len(live) - len(new)} old replica(s) left"
            )

    def wait_for_rollout(self, deployment: str | None = None, timeout_s: float = 60.0) -> float:
        """Wait until every replica runs the current template and is ready.

        Args:
            deployment: the Deployment; None waits for all of them.
            timeout_s: give up after this long (ServiceNotReady says what is missing).

        Returns:
            The seconds waited.
        """
        names = [deployment] if deployment else list(self._deployments)
        start = time.monotonic()
        for name in names:
            self._pods(name)
            try:
                wait_until(
                    lambda n=name: self._rollout_state(n)[0],
                    timeout_s=max(0.1, timeout_s - (time.monotonic() - start)),
                    describe=f"the rollout of Deployment {name!r}",
                )
            except ServiceNotReady:
                state = self._rollout_state(name)[1]
                reps = "; ".join(f"{r.name} {r.phase} ready={r.ready} restarts={r.restarts}" for r in self.replicas(name))
                logs = [p.instance.child.last_log_line() for p in self._pods(name) if p.instance]
                raise ServiceNotReady(
                    f"The rollout of Deployment {name!r} did not finish within {timeout_s:g} s: "
                    f"{state}. Replicas: {reps or 'none'}. Last log line of a replica: "
                    f"{logs[-1] if logs else '(none)'!r}. Check the probes and the command."
                ) from None
        return time.monotonic() - start

    def __repr__(self) -> str:
        deps = ", ".join(f"{n}({len(d.pods)})" for n, d in self._deployments.items())
        return f"LocalPlatform(deployments=[{deps}], services={sorted(self._services)})"


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _seq_of(pod: _Pod) -> int:
    return int(pod.name.rsplit("-", 1)[-1])
