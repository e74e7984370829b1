"""The kube backend: the labs' Platform on a real Kubernetes cluster, through the official client.

The same verbs as the local backend (:mod:`hadrlab.platform.local`), done the way a cluster
does them:

- ``apply`` is a server-side apply (field manager ``hadrlab``, conflicts forced): applying an
  edited copy of a manifest removes the fields the copy dropped, as ``kubectl apply
  --server-side`` does;
- ``kill_replica`` SIGKILLs the container's main process through the exec API, so the
  container crashes and restarts in place (restart count +1), like the local backend's kill.
  Linux ignores SIGKILL and SIGSTOP sent to PID 1 from inside its own PID namespace
  (pid_namespaces(7)), so the image runs ``tini`` as PID 1 and the server as its child, and
  the signal goes to the children of PID 1. An image without that layout, or a cluster that
  forbids exec, gets a forced pod deletion instead (a new pod, not a restart in place);
- ``hang_replica`` / ``resume_replica`` send SIGSTOP / SIGCONT the same way;
- ``delete_replica`` is a graceful pod deletion; ``scale`` patches the scale subresource;
  ``rollout`` patches the pod template; ``wait_for_rollout`` watches the Deployment's status;
- ``service_url`` reaches a Service through a NodePort that the kind cluster maps to a host
  port on 127.0.0.1 (``infra/kind/cluster.yaml``), or else through a ``kubectl
  port-forward`` child (which pins ONE pod: fine to reach a service, wrong for measuring a
  replica kill);
- ``events()`` comes from watches on pods, EndpointSlices and Kubernetes Events in
  background threads: started, ready, unready, killed, restarted, liveness-failed,
  terminating, exited, endpoint-added, endpoint-removed, with epoch-second timestamps taken
  when the change was observed.

Network faults (delay or partition a region) need Chaos Mesh; :meth:`KubePlatform.has_chaos_mesh`
says whether its CRDs are installed. Pod faults use plain API calls either way.

The cluster is any kubeconfig context: ``KUBECONFIG`` picks the file, ``HADRLAB_KUBE_CONTEXT``
the context (default: the current one), ``HADRLAB_KUBE_NAMESPACE`` the namespace
(default ``hadrlab``, created if missing).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from hadrlab.errors import HadrError, ManifestError, ServiceNotReady
from hadrlab.platform.base import AppliedObject, ApplyResult, Platform, Replica

__all__ = [
    "KubeApi",
    "KubePlatform",
    "FIELD_MANAGER",
    "COURSE_IMAGE",
    "exec_exit_code",
    "exec_handshake_error",
    "SIGNAL_SCRIPT",
    "resource_path",
    "pod_transitions",
    "slice_transitions",
    "kind_host_ports",
]

FIELD_MANAGER = "hadrlab"
DEFAULT_NAMESPACE = "hadrlab"
KIND_CLUSTER = "hadrlab"
RETRY_ANNOTATION = "hadrlab.io/retry-connect-failures"
# A NodePort Service carrying this annotation gives host access to the named Service
# (infra/k8s/kind/model-api-service.yaml): the lab's own Service stays ClusterIP, so
# applying the lab's edited manifest never undoes the host mapping.
HOST_ACCESS_ANNOTATION = "hadrlab.io/host-access-for"
CHAOS_GROUP = "chaos-mesh.org/v1alpha1"
# The course image (infra/docker/Dockerfile), which `python -m hadrlab.kind up` loads into
# the nodes; Jobs that measure from inside the cluster run it.
COURSE_IMAGE = "hadrlab/course:v1"

# Run inside the container through the exec API: send a signal to every child of PID 1 (the
# server under tini). The exec'd process itself has no parent inside the namespace, so it
# never signals itself. Exit code 3 when PID 1 has no child: the server IS PID 1, and the
# kernel would silently drop SIGKILL/SIGSTOP sent to it from inside the namespace.
SIGNAL_SCRIPT = """\
import os, sys
sig, me, hit = int(sys.argv[1]), os.getpid(), []
for p in os.listdir('/proc'):
    if not p.isdigit() or int(p) == me:
        continue
    try:
        fields = open('/proc/%s/stat' % p).read().rsplit(')', 1)[1].split()
    except OSError:
        continue
    if fields[1] == '1':
        os.kill(int(p), sig)
        hit.append(p)
print(' '.join(hit))
sys.exit(0 if hit else 3)
"""

# apiVersion, kind -> (API prefix, plural, namespaced). Anything else is discovered.
_RESOURCES: dict[tuple[str, str], tuple[str, str, bool]] = {
    ("v1", "Namespace"): ("/api/v1", "namespaces", False),
    ("v1", "Service"): ("/api/v1", "services", True),
    ("v1", "Secret"): ("/api/v1", "secrets", True),
    ("v1", "ConfigMap"): ("/api/v1", "configmaps", True),
    ("v1", "Pod"): ("/api/v1", "pods", True),
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts", True),
    ("v1", "Event"): ("/api/v1", "events", True),
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments", True),
    ("apps/v1", "StatefulSet"): ("/apis/apps/v1", "statefulsets", True),
    ("apps/v1", "DaemonSet"): ("/apis/apps/v1", "daemonsets", True),
    ("apps/v1", "ReplicaSet"): ("/apis/apps/v1", "replicasets", True),
    ("batch/v1", "Job"): ("/apis/batch/v1", "jobs", True),
    ("policy/v1", "PodDisruptionBudget"): ("/apis/policy/v1", "poddisruptionbudgets", True),
    ("discovery.k8s.io/v1", "EndpointSlice"): ("/apis/discovery.k8s.io/v1", "endpointslices", True),
    (CHAOS_GROUP, "PodChaos"): (f"/apis/{CHAOS_GROUP}", "podchaos", True),
    (CHAOS_GROUP, "NetworkChaos"): (f"/apis/{CHAOS_GROUP}", "networkchaos", True),
}
_KIND_ALIASES = {"deployment": "Deployment", "deploy": "Deployment", "service": "Service", "svc": "Service",
                 "poddisruptionbudget": "PodDisruptionBudget", "pdb": "PodDisruptionBudget",
                 "statefulset": "StatefulSet", "sts": "StatefulSet", "secret": "Secret", "pod": "Pod",
                 "configmap": "ConfigMap", "job": "Job"}
_API_VERSION_OF = {kind: av for (av, kind) in _RESOURCES}


def resource_path(api_version: str, kind: str, namespace: str | None, name: str | None = None,
                  *, resources: Mapping[tuple[str, str], tuple[str, str, bool]] | None = None) -> str:
    """The REST path of an object (or of its collection when ``name`` is None)."""
    table = resources or _RESOURCES
    try:
        prefix, plural, namespaced = table[(api_version, kind)]
    except KeyError:
        raise ManifestError(
            f"The kube backend does not know the REST path of {api_version} {kind}. Use one of "
            f"{sorted({k for _, k in table})}, or install the CRD that defines it."
        ) from None
    path = prefix + (f"/namespaces/{namespace}" if namespaced and namespace else "") + f"/{plural}"
    return path + (f"/{name}" if name else "")


def kind_host_ports(config_path: str | os.PathLike | None = None) -> dict[int, int]:
    """``{nodePort: hostPort}`` from the kind cluster's ``extraPortMappings`` (empty if none).

    Args:
        config_path: the kind config; default ``infra/kind/cluster.yaml`` of this checkout.
    """
    import yaml

    path = Path(config_path) if config_path else Path(__file__).resolve().parents[2] / "infra" / "kind" / "cluster.yaml"
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except OSError:
        return {}
    out = {}
    for node in config.get("nodes") or []:
        for mapping in node.get("extraPortMappings") or []:
            if mapping.get("listenAddress", "0.0.0.0") in ("127.0.0.1", "0.0.0.0"):
                out[int(mapping["containerPort"])] = int(mapping.get("hostPort", mapping["containerPort"]))
    return out


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# --------------------------------------------------------------------------- transport


KUBE_METRICS_NOTE = (
    "On a cluster no load balancer of the course's stands in front of a Service: kube-proxy forwards "
    "connections in the kernel and counts nothing. The answers are counted by the Ingress controller "
    "(ingress-nginx's /metrics) and by the pods' own /metrics (scrape annotations in infra/k8s/), which "
    "an in-cluster Prometheus scrapes (infra/grafana/README.md). The monitoring cells run on the "
    "local backend."
)

class KubeApi:
    """The small part of the Kubernetes API this backend uses, on the official client.

    Four calls: ``request`` (REST, JSON in and out), ``watch`` (a stream of watch events),
    ``exec`` (a command in a container) and ``logs`` (a container's log). Unit tests replace
    this class with a fake of the same four calls.

    Args:
        context: the kubeconfig context (default: env ``HADRLAB_KUBE_CONTEXT``, else current).
        kubeconfig: the kubeconfig file (default: env ``KUBECONFIG``, else ``~/.kube/config``).
    """

    def __init__(self, context: str | None = None, kubeconfig: str | None = None) -> None:
        from kubernetes import config
        from kubernetes.dynamic import DynamicClient

        context = context or os.environ.get("HADRLAB_KUBE_CONTEXT") or None
        kubeconfig = kubeconfig or (os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None)
        where = kubeconfig or "~/.kube/config"
        try:
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
            chosen = next((c for c in contexts if c["name"] == context), None) if context else active
            if chosen is None:
                raise HadrError(
                    f"The kubeconfig {where} has no context {context!r} (it has "
                    f"{[c['name'] for c in contexts]}). Set HADRLAB_KUBE_CONTEXT to one of them, "
                    f"or run `python -m hadrlab.kind up` to create the course's kind cluster."
                )
            self._client = config.new_client_from_config(config_file=kubeconfig, context=chosen["name"])
        except (config.ConfigException, OSError) as exc:
            raise HadrError(
                f"Could not load a Kubernetes configuration from {where}: {str(exc).rstrip('.')}. Create the "
                f"course's cluster with `python -m hadrlab.kind up` (it writes the context "
                f"kind-{KIND_CLUSTER}), or point KUBECONFIG at a cluster's kubeconfig."
            ) from None
        self.context: str = chosen["name"]
        self.server: str = self._client.configuration.host
        self.default_namespace: str | None = (chosen.get("context") or {}).get("namespace")

        class _Rest(DynamicClient):
            # DynamicClient's request() handles auth and errors in every client version;
            # its constructor would run API discovery, which this backend does not need.
            def __init__(self, client: Any) -> None:
                self.client = client
                self.configuration = client.configuration

        self._rest = _Rest(self._client)
        self._open: set[Any] = set()
        self._lock = threading.Lock()

    def request(self, method: str, path: str, *, query: Sequence[tuple[str, Any]] = (),
                body: Any = None, content_type: str | None = None, timeout_s: float = 10.0) -> dict:
        """One REST call; returns the JSON answer. Raises the client's error (``.status``)."""
        resp = self._rest.request(method, path, body=body, query_params=list(query),
                                  content_type=content_type, serialize=False, _request_timeout=timeout_s)
        data = resp.data
        return json.loads(data) if data else {}

    def watch(self, path: str, *, query: Sequence[tuple[str, Any]] = (), timeout_s: float = 30.0) -> Iterator[dict]:
        """Watch events (``{"type", "object"}``) of a collection, for at most ``timeout_s``."""
        from kubernetes.watch.watch import iter_resp_lines

        q = [*query, ("watch", "true"), ("allowWatchBookmarks", "true"), ("timeoutSeconds", int(timeout_s))]
        resp = self._rest.request("get", path, query_params=q, serialize=False,
                                  _request_timeout=(5, timeout_s + 5))
        with self._lock:
            self._open.add(resp)
        try:
            for line in iter_resp_lines(resp):
                if line:
                    yield json.loads(line)
        finally:
            with self._lock:
                self._open.discard(resp)
            with contextlib.suppress(Exception):
                resp.release_conn()

    def exec(self, namespace: str, pod: str, container: str, command: Sequence[str],
             timeout_s: float = 10.0) -> tuple[int, str, str]:
        """Run ``command`` in a container; return (exit code, stdout, stderr)."""
        from kubernetes import client
        from kubernetes.stream import stream

        core = client.CoreV1Api(self._client)
        try:
            ws = stream(core.connect_get_namespaced_pod_exec, pod, namespace, container=container,
                        command=list(command), stderr=True, stdin=False, stdout=True, tty=False,
                        _preload_content=False)
        except Exception as exc:
            raise exec_handshake_error(exc) from None
        try:
            ws.run_forever(timeout=timeout_s)
            out, err = ws.read_channel(1), ws.read_channel(2)
            status = ws.read_channel(3)
        finally:
            ws.close()
        return exec_exit_code(status), out, err

    def logs(self, namespace: str, pod: str, container: str | None = None, *, timestamps: bool = False,
             timeout_s: float = 10.0) -> str:
        """A container's log so far, as text (``timestamps``: each line prefixed by RFC 3339 time)."""
        from kubernetes import client

        core = client.CoreV1Api(self._client)
        kwargs: dict[str, Any] = {"timestamps": timestamps, "_request_timeout": timeout_s}
        if container:
            kwargs["container"] = container
        return core.read_namespaced_pod_log(pod, namespace, **kwargs) or ""

    def close(self) -> None:
        """Close open watch streams (unblocks watch threads) and the connection pool."""
        with self._lock:
            opened = list(self._open)
        for resp in opened:
            with contextlib.suppress(Exception):
                resp.shutdown() if hasattr(resp, "shutdown") else resp.close()
        with contextlib.suppress(Exception):
            self._client.close()


def exec_handshake_error(exc: BaseException) -> BaseException:
    """The HTTP status of a refused exec, put back on the client's error.

    The client opens an exec as a websocket and wraps any failure of the handshake in an
    ``ApiException`` with ``status=0`` and the text ``"Handshake status 404 Not Found ..."``
    as its reason: a missing pod (404) or a container that is not running (400) would
    otherwise look like neither. Anything else is returned unchanged.
    """
    import re

    reason = str(getattr(exc, "reason", "") or "")
    found = re.search(r"Handshake status (\d{3})", reason)
    if getattr(exc, "status", None) not in (0, None) or not found:
        return exc
    from kubernetes.client.exceptions import ApiException

    head, *rest = reason.split("-+-+-")
    refused = ApiException(status=int(found.group(1)), reason=head.strip()[:200])
    body = rest[-1].strip() if rest else ""
    if body[:2] in ("b'", 'b"'):
        body = body[2:-1]
    if body.startswith("{"):
        refused.body = body  # the API server's Status: its message says why
    return refused


def exec_exit_code(status: str) -> int:
    """The exit code from an exec's status channel (a JSON ``Status``); -1 when there is none.

    ``{"status": "Success"}`` is 0; a failed command's code is the ``ExitCode`` cause. The
    client's own ``returncode`` assumes a cause is always there, and raises when a command
    kills its own connection (``DEBUG SEGFAULT``) or the runtime reports another error.
    """
    if not status:
        return -1
    try:
        data = json.loads(status)
    except ValueError:
        return -1
    if data.get("status") == "Success":
        return 0
    for cause in (data.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode" and str(cause.get("message", "")).isdigit():
            return int(cause["message"])
    return -1


# --------------------------------------------------------------------------- event logic


def _owner_name(pod: Mapping) -> str:
    """The workload a pod belongs to: the Deployment (from its ReplicaSet) or StatefulSet."""
    meta = pod.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "ReplicaSet":
            rs = ref.get("name", "")
            template_hash = (meta.get("labels") or {}).get("pod-template-hash")
            if template_hash and rs.endswith("-" + template_hash):
                return rs[: -len(template_hash) - 1]
            return rs.rsplit("-", 1)[0]
        return ref.get("name", "")
    return ""


def _pod_state(pod: Mapping) -> dict:
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    running = any("running" in (c.get("state") or {}) for c in statuses)
    last = next((c.get("lastState", {}).get("terminated") for c in statuses
                 if (c.get("lastState") or {}).get("terminated")), None)
    return {
        "ready": ready,
        "running": running,
        "restarts": sum(int(c.get("restartCount", 0)) for c in statuses),
        "deleting": bool((pod.get("metadata") or {}).get("deletionTimestamp")),
        "last_exit": (f"exit code {last.get('exitCode')} ({last.get('reason', '?')})" if last else ""),
    }


def pod_transitions(old: Mapping | None, pod: Mapping | None, deleted: bool = False) -> list[tuple[str, str]]:
    """The timeline events between two observations of a pod: ``[(kind, detail), ...]``.

    Args:
        old: the pod's previous state (from :func:`_pod_state`), None if first seen.
        pod: the pod object now.
        deleted: the pod is gone (a DELETED watch event).
    """
    new = _pod_state(pod) if pod is not None else None
    out: list[tuple[str, str]] = []
    if deleted:
        if old and old.get("ready"):
            out.append(("unready", "pod deleted"))
        out.append(("exited", "pod deleted"))
        return out
    before = old or {"ready": False, "running": False, "restarts": 0, "deleting": False}
    if new["deleting"] and not before["deleting"]:
        out.append(("terminating", "deletion requested"))
    if new["restarts"] > before["restarts"]:
        out.append(("exited", new["last_exit"] or "container terminated"))
        out.append(("restarted", f"restart {new['restarts']} ({new['last_exit'] or 'container terminated'})"))
    elif new["running"] and not before["running"] and new["restarts"] == 0:
        node = (pod.get("spec") or {}).get("nodeName", "?")
        out.append(("started", f"container running on node {node}"))
    if new["ready"] != before["ready"]:
        out.append(("ready" if new["ready"] else "unready", "Ready condition " + str(new["ready"])))
    return out


def _slice_endpoints(endpoint_slice: Mapping | None) -> dict[str, bool]:
    out = {}
    for ep in (endpoint_slice or {}).get("endpoints") or []:
        ref = ep.get("targetRef") or {}
        name = ref.get("name") or ",".join(ep.get("addresses") or [])
        cond = ep.get("conditions") or {}
        # "ready" is what a Service routes on (a terminating endpoint is never ready).
        out[name] = cond.get("ready") is not False
    return out


def slice_transitions(old: Mapping | None, new: Mapping | None) -> list[tuple[str, str]]:
    """``[(kind, replica), ...]``: endpoints that became ready (added) or left (removed)."""
    before, after = _slice_endpoints(old), _slice_endpoints(new)
    was = {n for n, ok in before.items() if ok}
    now = {n for n, ok in after.items() if ok}
    return [("endpoint-added", n) for n in sorted(now - was)] + [("endpoint-removed", n) for n in sorted(was - now)]


# --------------------------------------------------------------------------- the platform


class KubePlatform(Platform):
    """The labs' platform on a Kubernetes cluster (kind by default, any kubeconfig context).

    Example:
        >>> with KubePlatform() as platform:                     # doctest: +SKIP
        ...     platform.apply("infra/k8s/model-api.yaml")
        ...     platform.wait_for_rollout("model-api")
        ...     url = platform.service_url("model-api")
        ...     platform.kill_replica("model-api")

    Args:
        api: the transport (default: a :class:`KubeApi` on ``context``); tests pass a fake.
        context: the kubeconfig context (default env ``HADRLAB_KUBE_CONTEXT``, else current).
        namespace: where the labs' objects live (default env ``HADRLAB_KUBE_NAMESPACE``,
            else ``hadrlab``); created when missing.
        host_ports: ``{nodePort: hostPort}`` reachable on 127.0.0.1 (default: read from
            ``infra/kind/cluster.yaml`` when the context is the course's kind cluster).
        watch: start the event watches (pods, EndpointSlices, Events).
        quiet: do not print what apply() did.
        **_ignored: options meant for the local backend (``restart_backoff_s``,
            ``endpoint_lag_s``) are accepted and ignored: a cluster has its own timings.
    """

    backend = "kube"

    def __init__(self, api: Any = None, *, context: str | None = None, namespace: str | None = None,
                 host_ports: Mapping[int, int] | None = None, watch: bool = True, quiet: bool = False,
                 kubeconfig: str | None = None, watch_timeout_s: float = 30.0, **_ignored: Any) -> None:
        self.api = api if api is not None else KubeApi(context=context, kubeconfig=kubeconfig)
        self.context = getattr(self.api, "context", context or "?")
        self.server = getattr(self.api, "server", "?")
        self.namespace = (namespace or os.environ.get("HADRLAB_KUBE_NAMESPACE")
                          or DEFAULT_NAMESPACE)
        if host_ports is None:
            host_ports = kind_host_ports() if self.context == f"kind-{KIND_CLUSTER}" else {}
        self.host_ports = dict(host_ports)
        self.quiet = quiet
        self.watch_timeout_s = watch_timeout_s
        self._lock = threading.RLock()
        self._events: list[dict] = []
        self._applied: list[tuple[str, str, str]] = []
        self._hung: dict[str, set[str]] = {}
        self._rolling: set[str] = set()
        self._forwards: dict[str, Any] = {}
        self._resources = dict(_RESOURCES)
        self._chaos: bool | None = None
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._check_reachable()
        self._ensure_namespace()
        if watch:
            self._start_watches()

    # ------------------------------------------------------------------ calls and errors

    def _call(self, method: str, path: str, **kwargs: Any) -> dict:
        """One API call, with connection failures turned into a message that says what to do."""
        try:
            return self.api.request(method, path, **kwargs)
        except Exception as exc:
            if _is_connection_error(exc):
                raise self._unreachable(exc) from None
            raise

    def _unreachable(self, exc: BaseException) -> HadrError:
        reason = getattr(exc, "reason", None) or exc
        return HadrError(
            f"Could not reach the Kubernetes API server {self.server} of context "
            f"{self.context!r} ({exc.__class__.__name__}: {reason}). The cluster is not running "
            f"or the context points elsewhere. For the course's cluster run `python -m "
            f"hadrlab.kind up` (or `make kind-up`); for another cluster, set KUBECONFIG and "
            f"HADRLAB_KUBE_CONTEXT to a context that `kubectl --context <name> get nodes` reaches; "
            f"or use the local backend (unset HADRLAB_BACKEND)."
        )

    def _check_reachable(self) -> None:
        try:
            self._call("get", "/version", timeout_s=5)
        except HadrError:
            raise
        except Exception as exc:
            if _status(exc) in (401, 403):
                raise HadrError(
                    f"The API server {self.server} of context {self.context!r} refused our "
                    f"credentials (HTTP {_status(exc)}). Refresh the kubeconfig (for kind: "
                    f"`kind export kubeconfig --name {KIND_CLUSTER}`)."
                ) from None
            raise

    def _ensure_namespace(self) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}
        self._call("patch", f"/api/v1/namespaces/{self.namespace}", body=body,
                   query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                   content_type="application/apply-patch+yaml")

    def _record(self, kind: str, replica: str = "", detail: str = "", obj: str = "", t: float | None = None) -> None:
        with self._lock:
            self._events.append({"t": time.time() if t is None else t, "kind": kind, "replica": replica,
                                 "detail": detail, "object": obj})

    def events(self):
        """The timeline as a DataFrame: t (epoch s), kind, replica, detail, object."""
        import pandas as pd

        with self._lock:
            rows = sorted(self._events, key=lambda r: r["t"])
        return pd.DataFrame(rows, columns=["t", "kind", "replica", "detail", "object"])

    # ------------------------------------------------------------------ resources

    def _path(self, api_version: str, kind: str, name: str | None = None, namespace: str | None = None) -> str:
        if (api_version, kind) not in self._resources:
            self._discover(api_version, kind)
        _, _, namespaced = self._resources[(api_version, kind)]
        return resource_path(api_version, kind, (namespace or self.namespace) if namespaced else None, name,
                             resources=self._resources)

    def _discover(self, api_version: str, kind: str) -> None:
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            listing = self._call("get", prefix)
        except Exception as exc:
            if _status(exc) == 404:
                raise ManifestError(
                    f"The cluster (context {self.context!r}) does not serve {api_version}: is the "
                    f"CRD or add-on that defines {kind} installed?"
                ) from None
            raise
        for res in listing.get("resources") or []:
            if res.get("kind") == kind and "/" not in res.get("name", ""):
                self._resources[(api_version, kind)] = (prefix, res["name"], bool(res.get("namespaced")))
                return
        raise ManifestError(f"The cluster serves {api_version} but has no kind {kind} in it.")

    def has_chaos_mesh(self) -> bool:
        """True when Chaos Mesh's CRDs are installed (network faults need them)."""
        if self._chaos is None:
            try:
                self._call("get", f"/apis/{CHAOS_GROUP}")
                self._chaos = True
            except Exception as exc:
                if _status(exc) is None:
                    raise
                self._chaos = False
        return self._chaos

    # ------------------------------------------------------------------ apply / delete

    @staticmethod
    def _load(manifests: Any) -> list[dict]:
        from hadrlab.platform.manifests import load_manifest, validate_schema

        if isinstance(manifests, (str, os.PathLike)):
            docs, source = load_manifest(manifests, validate=False), str(manifests)
        elif isinstance(manifests, Mapping):
            docs, source = [manifests], "<dicts>"
        else:
            docs, source = list(manifests), getattr(manifests, "source", None) or "<dicts>"
        out = []
        for doc in docs:
            doc = copy.deepcopy(dict(doc))
            # Custom resources (Chaos Mesh) have no bundled schema; the API server checks them.
            if not str(doc.get("apiVersion", "")).startswith("chaos-mesh.org/"):
                validate_schema(doc, source=source)
            out.append(doc)
        return out

    def apply(self, manifests: Any, *, quiet: bool | None = None) -> ApplyResult:
        """Server-side apply the objects in ``manifests`` (a YAML path, a dict or a list).

        Args:
            manifests: a YAML file path, one manifest dict, or a list of them.
            quiet: do not print the kubectl-style summary (default: the platform's setting).

        Returns:
            An :class:`ApplyResult`: created, configured or unchanged per object.
        """
        self._check_open()
        result = ApplyResult()
        for doc in self._load(manifests):
            api_version, kind, name = doc["apiVersion"], doc["kind"], doc["metadata"]["name"]
            path = self._path(api_version, kind, name, doc["metadata"].get("namespace"))
            if self._resources[(api_version, kind)][2]:
                doc["metadata"].setdefault("namespace", self.namespace)
            before = self._get_or_none(path)
            try:
                after = self._call("patch", path, body=doc, content_type="application/apply-patch+yaml",
                                   query=[("fieldManager", FIELD_MANAGER), ("force", "true")])
            except Exception as exc:
                if _status(exc) in (400, 409, 422):
                    raise ManifestError(
                        f"The API server refused {kind} {name!r} (HTTP {_status(exc)}): "
                        f"{_message(exc)}. Fix the manifest and apply again."
                    ) from None
                raise
            action = self._action(before, after)
            notes = []
            if kind == "Service" and RETRY_ANNOTATION in ((doc["metadata"].get("annotations")) or {}):
                notes.append(f"{RETRY_ANNOTATION} is read by the local backend only; a cluster Service "
                             f"does not retry failed connections")
            if kind == "Deployment":
                self._note_rollout(name, before, after)
            with self._lock:
                if (api_version, kind, name) not in self._applied:
                    self._applied.append((api_version, kind, name))
            result.append(AppliedObject(kind, name, action, [], notes))
        if not (self.quiet if quiet is None else quiet):
            print(repr(result))
        return result

    def _get_or_none(self, path: str) -> dict | None:
        try:
            return self._call("get", path)
        except Exception as exc:
            if _status(exc) == 404:
                return None
            raise

    @staticmethod
    def _action(before: Mapping | None, after: Mapping) -> str:
        if before is None:
            return "created"
        rv = lambda o: (o.get("metadata") or {}).get("resourceVersion")  # noqa: E731
        return "unchanged" if rv(before) == rv(after) else "configured"

    def _note_rollout(self, name: str, before: Mapping | None, after: Mapping) -> None:
        spec = lambda o: (o.get("spec") or {})  # noqa: E731
        if before is None:
            self._record("scaled", "", f"{name}: 0 -> {spec(after).get('replicas')} (created)", name)
            return
        if spec(before).get("replicas") != spec(after).get("replicas"):
            self._record("scaled", "", f"{name}: {spec(before).get('replicas')} -> {spec(after).get('replicas')}", name)
        if spec(before).get("template") != spec(after).get("template"):
            self._record("rollout-started", "", f"{name}: generation {after['metadata'].get('generation')}", name)
            with self._lock:
                self._rolling.add(name)

    def delete(self, manifests: Any = None) -> None:
        """Delete objects: None (everything this platform applied), ``"deployment/NAME"``,
        a YAML path or manifest dicts. Deleting what does not exist is not an error."""
        if manifests is None:
            with self._lock:
                targets = list(reversed(self._applied))
        elif isinstance(manifests, str) and "/" in manifests and not os.path.exists(manifests):
            kind_word, _, name = manifests.partition("/")
            kind = _KIND_ALIASES.get(kind_word.lower(), kind_word)
            if kind not in _API_VERSION_OF:
                raise HadrError(f"Cannot delete {manifests!r}: unknown kind {kind_word!r}; use e.g. deployment/NAME.")
            targets = [(_API_VERSION_OF[kind], kind, name)]
        else:
            targets = [(d["apiVersion"], d["kind"], d["metadata"]["name"]) for d in self._load(manifests)]
        for api_version, kind, name in targets:
            try:
                self._call("delete", self._path(api_version, kind, name),
                           query=[("propagationPolicy", "Background")])
            except Exception as exc:
                if _status(exc) != 404:
                    raise
            with self._lock:
                if (api_version, kind, name) in self._applied:
                    self._applied.remove((api_version, kind, name))
            if kind == "Service":
                self._stop_forward(name)

    # ------------------------------------------------------------------ replicas

    def _deployment(self, deployment: str) -> dict:
        try:
            return self._call("get", self._path("apps/v1", "Deployment", deployment))
        except Exception as exc:
            if _status(exc) == 404:
                raise HadrError(
                    f"There is no Deployment {deployment!r} in namespace {self.namespace!r} of "
                    f"context {self.context!r}. Apply its manifest first."
                ) from None
            raise

    def _pods(self, deployment: str) -> list[dict]:
        dep = self._deployment(deployment)
        labels = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        pods = self._call("get", self._path("v1", "Pod"), query=[("labelSelector", selector)]).get("items") or []
        return sorted(pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))

    @staticmethod
    def _replica(pod: Mapping, deployment: str) -> Replica:
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        state = _pod_state(pod)
        phase = status.get("phase", "Pending")
        waiting = [(c.get("state") or {}).get("waiting", {}).get("reason") for c in status.get("containerStatuses") or []]
        if state["deleting"]:
            phase = "Terminating"
        elif "CrashLoopBackOff" in waiting:
            phase = "CrashLoopBackOff"
        elif phase in ("Succeeded", "Failed"):
            phase = "Terminated"
        container = (spec.get("containers") or [{}])[0]
        env = {e.get("name"): e.get("value") for e in container.get("env") or [] if "value" in e}
        image = container.get("image", "")
        version = env.get("MODEL_VERSION") or (image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else image)
        ports = container.get("ports") or []
        return Replica(
            name=meta["name"], deployment=deployment, pid=None,
            port=int(ports[0]["containerPort"]) if ports else None,
            phase=phase, ready=state["ready"], restarts=state["restarts"], version=version,
            started_at=_parse_time(status.get("startTime")),
        )

    def replicas(self, deployment: str) -> list[Replica]:
        """The pods of ``deployment``, oldest first, terminating ones included."""
        return [self._replica(p, deployment) for p in self._pods(deployment)]

    def _pick(self, deployment: str, name: str | None, verb: str) -> dict:
        pods = self._pods(deployment)
        if name is not None:
            for pod in pods:
                if pod["metadata"]["name"] == name:
                    return pod
            raise HadrError(
                f"Cannot {verb} replica {name!r}: Deployment {deployment!r} has "
                f"{[p['metadata']['name'] for p in pods]}. Use platform.replicas({deployment!r}) to see them."
            )
        live = [p for p in pods if not _pod_state(p)["deleting"]]
        candidates = [p for p in live if _pod_state(p)["ready"]] or [p for p in live if _pod_state(p)["running"]]
        if not candidates:
            raise HadrError(f"Cannot {verb} a replica of {deployment!r}: it has no running pod.")
        return candidates[0]

    def _signal(self, pod: Mapping, signum: int) -> tuple[bool, str]:
        """Send ``signum`` to the server process in the pod's first container via exec."""
        container = pod["spec"]["containers"][0]["name"]
        try:
            code, out, err = self.api.exec(self.namespace, pod["metadata"]["name"], container,
                                           ["python", "-c", SIGNAL_SCRIPT, str(signum)])
        except Exception as exc:
            if _is_connection_error(exc) and not isinstance(exc, OSError):
                raise self._unreachable(exc) from None
            if _status(exc) is None and not isinstance(exc, (OSError, ValueError)):
                raise
            return False, f"exec failed ({_status(exc) or exc.__class__.__name__}: {_message(exc)})"
        if code == 0:
            return True, f"pid {out.strip()} in container {container}"
        if code == 3:
            return False, ("the server is PID 1 of its container, and Linux drops SIGKILL/SIGSTOP sent "
                           "to PID 1 from inside the container; build the image with tini as PID 1 "
                           "(infra/docker/Dockerfile)")
        return False, f"exec exited with code {code}: {(err or out).strip()[:200]}"

    def kill_replica(self, deployment: str, name: str | None = None) -> str:
        """SIGKILL a replica's server process, as a crash would; it restarts in place.

        Falls back to a forced pod deletion (grace 0: a new pod replaces it) when the
        signal cannot be delivered; the event's detail says which happened.
        """
        pod = self._pick(deployment, name, "kill")
        pod_name = pod["metadata"]["name"]
        ok, detail = self._signal(pod, 9)
        if ok:
            self._record("killed", pod_name, f"SIGKILL {detail}", deployment)
            return pod_name
        self._call("delete", self._path("v1", "Pod", pod_name), query=[("gracePeriodSeconds", 0)])
        self._record("killed", pod_name, f"pod force-deleted (grace 0) because {detail}", deployment)
        return pod_name

    def hang_replica(self, deployment: str, name: str | None = None) -> str:
        """Freeze a replica's server (SIGSTOP): its pod stays Running; only probes notice."""
        pod = self._pick(deployment, name, "hang")
        pod_name = pod["metadata"]["name"]
        ok, detail = self._signal(pod, 19)
        if not ok:
            raise HadrError(f"Could not hang replica {pod_name!r}: {detail}.")
        with self._lock:
            self._hung.setdefault(deployment, set()).add(pod_name)
        self._record("hung", pod_name, f"SIGSTOP {detail}", deployment)
        return pod_name

    def resume_replica(self, deployment: str, name: str | None = None) -> str:
        """Unfreeze a hung replica (SIGCONT). Without a name, the first hung replica."""
        with self._lock:
            hung = sorted(self._hung.get(deployment, set()))
        pod = self._pick(deployment, name or (hung[0] if hung else None), "resume")
        pod_name = pod["metadata"]["name"]
        ok, detail = self._signal(pod, 18)
        if not ok:
            raise HadrError(f"Could not resume replica {pod_name!r}: {detail}.")
        with self._lock:
            self._hung.get(deployment, set()).discard(pod_name)
        self._record("resumed", pod_name, f"SIGCONT {detail}", deployment)
        return pod_name

    def delete_replica(self, deployment: str, name: str | None = None, *, wait: bool = False) -> str:
        """Delete a pod gracefully (``kubectl delete pod``); the Deployment replaces it.

        Args:
            deployment: the Deployment's name.
            name: the pod; None picks the first ready one.
            wait: block until the pod is gone (its grace period plus 10 s at most).
        """
        pod = self._pick(deployment, name, "delete")
        pod_name = pod["metadata"]["name"]
        path = self._path("v1", "Pod", pod_name)
        try:
            self._call("delete", path)
        except Exception as exc:
            if _status(exc) != 404:
                raise
        self._record("terminating", pod_name, "deleted by request (kubectl delete pod)", deployment)
        if wait:
            from hadrlab.processes import wait_until

            grace = float((pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            wait_until(lambda: self._get_or_none(path) is None, timeout_s=grace + 10,
                       describe=f"pod {pod_name!r} to be gone")
        return pod_name

    # ------------------------------------------------------------------ scale / rollout

    def scale(self, deployment: str, replicas: int) -> None:
        """Set the replica count through the Deployment's scale subresource."""
        before = self._deployment(deployment)
        self._call("patch", self._path("apps/v1", "Deployment", deployment) + "/scale",
                   body={"spec": {"replicas": int(replicas)}}, content_type="application/merge-patch+json",
                   query=[("fieldManager", FIELD_MANAGER)])
        self._record("scaled", "", f"{deployment}: {before['spec'].get('replicas')} -> {int(replicas)}", deployment)

    def scale_statefulset(self, name: str, replicas: int) -> int:
        """Set a StatefulSet's replica count through its scale subresource; return the count before.

        Scaling the course's one-replica registry to 0 and back is a registry outage: the
        pod is deleted (gracefully), its volume stays (``whenScaled: Retain``).
        """
        path = self._path("apps/v1", "StatefulSet", name)
        sts = self._get_or_none(path)
        if sts is None:
            raise HadrError(f"There is no StatefulSet {name!r} in namespace {self.namespace!r} of context "
                            f"{self.context!r}. Apply its manifest first.")
        before = int((sts.get("spec") or {}).get("replicas", 1))
        self._call("patch", path + "/scale", body={"spec": {"replicas": int(replicas)}},
                   content_type="application/merge-patch+json", query=[("fieldManager", FIELD_MANAGER)])
        self._record("scaled", "", f"{name}: {before} -> {int(replicas)}", name)
        return before

    def rollout(self, deployment: str, env: Mapping[str, str] | None = None, image: str | None = None,
                version: str | None = None) -> int:
        """Roll out a new pod template: changed env, image, or version.

        Args:
            deployment: the Deployment's name.
            env: variables to set in the first container.
            image: a new image (it must be in the cluster: ``kind load docker-image``).
            version: shorthand: sets env ``MODEL_VERSION`` and the image tag.

        Returns:
            The new revision (the Deployment's ``deployment.kubernetes.io/revision``).
        """
        dep = self._deployment(deployment)
        container = dep["spec"]["template"]["spec"]["containers"][0]
        changes = {k: str(v) for k, v in (env or {}).items()}
        patch: dict[str, Any] = {"name": container["name"]}
        if version is not None:
            changes["MODEL_VERSION"] = str(version)
            base = container.get("image", deployment)
            repo = base.rsplit(":", 1)[0] if ":" in base.rsplit("/", 1)[-1] else base
            patch["image"] = f"{repo}:{version}"
        if image is not None:
            patch["image"] = image
        if changes:
            # A strategic merge patch merges env by name; $retainKeys drops a valueFrom.
            patch["env"] = [{"name": k, "value": v} for k, v in changes.items()]
        old_revision = int((dep["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", 0))
        self._call("patch", self._path("apps/v1", "Deployment", deployment),
                   body={"spec": {"template": {"spec": {"containers": [patch]}}}},
                   content_type="application/strategic-merge-patch+json", query=[("fieldManager", FIELD_MANAGER)])
        self._record("rollout-started", "", f"{deployment}: {patch}", deployment)
        with self._lock:
            self._rolling.add(deployment)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            rev = int((self._deployment(deployment)["metadata"].get("annotations") or {}).get(
                "deployment.kubernetes.io/revision", 0))
            if rev > old_revision:
                return rev
            time.sleep(0.1)
        return old_revision + 1

    @staticmethod
    def _rollout_state(dep: Mapping) -> tuple[bool, str]:
        meta, spec, status = dep.get("metadata") or {}, dep.get("spec") or {}, dep.get("status") or {}
        want = int(spec.get("replicas", 1))
        observed = int(status.get("observedGeneration", 0)) >= int(meta.get("generation", 0))
        updated, ready = int(status.get("updatedReplicas", 0)), int(status.get("readyReplicas", 0))
        available, total = int(status.get("availableReplicas", 0)), int(status.get("replicas", 0))
        done = observed and updated == available == ready == total == want
        return done, (f"{updated}/{want} updated, {ready} ready, {available} available, {total} pods in "
                      f"total{'' if observed else ', the controller has not seen the latest spec yet'}")

    def wait_for_rollout(self, deployment: str | None = None, timeout_s: float = 60.0) -> float:
        """Watch Deployments until every replica runs the current template and is available.

        Args:
            deployment: the Deployment; None waits for every one this platform applied.
            timeout_s: give up after this long (ServiceNotReady says what is missing).

        Returns:
            The seconds waited.
        """
        start = time.monotonic()
        with self._lock:
            names = [deployment] if deployment else [n for av, k, n in self._applied if k == "Deployment"]
        for name in names:
            path = self._path("apps/v1", "Deployment")
            dep = self._deployment(name)
            done, state = self._rollout_state(dep)
            while not done:
                left = timeout_s - (time.monotonic() - start)
                if left <= 0:
                    reps = "; ".join(f"{r.name} {r.phase} ready={r.ready} restarts={r.restarts}"
                                     for r in self.replicas(name))
                    raise ServiceNotReady(
                        f"The rollout of Deployment {name!r} (context {self.context!r}) did not finish "
                        f"within {timeout_s:g} s: {state}. Pods: {reps or 'none'}. Look at `kubectl -n "
                        f"{self.namespace} describe pod` for image pull errors and probe failures."
                    )
                rv = dep["metadata"].get("resourceVersion")
                try:
                    for event in self.api.watch(path, query=[("fieldSelector", f"metadata.name={name}"),
                                                             ("resourceVersion", rv)],
                                                timeout_s=max(1, min(left, 30))):
                        if event.get("type") in ("ADDED", "MODIFIED"):
                            dep = event["object"]
                            done, state = self._rollout_state(dep)
                            if done:
                                break
                        if event.get("type") == "ERROR" or time.monotonic() - start > timeout_s:
                            break
                except Exception as exc:
                    if _is_connection_error(exc):
                        raise self._unreachable(exc) from None
                    if _status(exc) is None:
                        raise
                if not done:
                    dep = self._deployment(name)
                    done, state = self._rollout_state(dep)
            with self._lock:
                was_rolling = name in self._rolling
                self._rolling.discard(name)
            if was_rolling:
                self._record("rollout-finished", "", f"{name}: {state}", name)
        return time.monotonic() - start

    def wait_for_statefulset(self, name: str, timeout_s: float = 180.0) -> float:
        """Wait until a StatefulSet's rollout is complete and every pod is ready; return the seconds.

        Complete means the controller has seen the latest spec (``observedGeneration``),
        every replica runs it (``currentRevision == updateRevision``) and is ready. Ready
        pods alone are not enough: right after an apply that changes the template, the old
        pods are all still ready, and the controller replaces them one at a time.
        """
        from hadrlab.processes import wait_until

        path = self._path("apps/v1", "StatefulSet", name)
        start = time.monotonic()
        state = {"sts": {}}

        def done() -> bool:
            sts = state["sts"] = self._call("get", path)
            want = int((sts.get("spec") or {}).get("replicas", 1))
            status = sts.get("status") or {}
            return (int(status.get("observedGeneration", 0)) >= int(sts["metadata"].get("generation", 1))
                    and status.get("currentRevision") == status.get("updateRevision")
                    and int(status.get("updatedReplicas", 0)) >= want
                    and int(status.get("readyReplicas", 0)) >= want)

        try:
            wait_until(done, timeout_s=max(1.0, timeout_s), interval_s=1.0, describe=f"StatefulSet {name!r} rolled out")
        except ServiceNotReady:
            status = state["sts"].get("status") or {}
            raise ServiceNotReady(
                f"StatefulSet {name!r} (context {self.context!r}) did not finish its rollout within "
                f"{timeout_s:.0f} s: ready {status.get('readyReplicas', 0)}, updated "
                f"{status.get('updatedReplicas', 0)} of {(state['sts'].get('spec') or {}).get('replicas', '?')}. "
                f"Look at `kubectl -n {self.namespace} describe pod {name}-0` and its events (image pull, "
                f"scheduling, probes)."
            ) from None
        return time.monotonic() - start

    # ------------------------------------------------------------------ services

    def metrics_urls(self, service: str) -> list[str]:
        from hadrlab.errors import MonitoringError

        raise MonitoringError(f"{service!r}: {KUBE_METRICS_NOTE}")

    def service_url(self, service: str) -> str:
        """``http://127.0.0.1:PORT`` reaching ``service``: a kind host port, else a port-forward.

        A NodePort (the Service's own, or a Service annotated
        ``hadrlab.io/host-access-for: <service>``) that the cluster maps to a host port
        load-balances over every ready pod. A ``kubectl port-forward`` pins one pod: it
        reaches the service but cannot show a replica kill being absorbed.
        """
        svc = self._get_or_none(self._path("v1", "Service", service))
        if svc is None:
            raise HadrError(f"There is no Service {service!r} in namespace {self.namespace!r}; apply its manifest first.")
        candidates = [svc] + [
            s for s in self._call("get", self._path("v1", "Service")).get("items") or []
            if ((s["metadata"].get("annotations") or {}).get(HOST_ACCESS_ANNOTATION) == service)
        ]
        for s in candidates:
            for port in (s.get("spec") or {}).get("ports") or []:
                host = self.host_ports.get(int(port.get("nodePort", 0) or 0))
                if host:
                    return f"http://127.0.0.1:{host}"
        return self._forward(service, int(svc["spec"]["ports"][0]["port"]))

    def _forward(self, service: str, port: int) -> str:
        return self._port_forward(f"service/{service}", port, key=service,
                                  missing=f"Service {service!r} has no NodePort mapped to this machine")

    def _port_forward(self, target: str, port: int, *, key: str, missing: str) -> str:
        """Start (or reuse) ``kubectl port-forward TARGET LOCAL:PORT`` on 127.0.0.1; its URL."""
        import shutil

        from hadrlab.processes import find_free_port, start_process, wait_for_tcp

        with self._lock:
            child = self._forwards.get(key)
        if child is not None and child.alive():
            return child.url
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise HadrError(
                f"{missing}, and kubectl (needed for a port-forward) is not on PATH. Install kubectl "
                f"(infra/kind/README.md lists the tools), or use the course's kind cluster "
                f"(`python -m hadrlab.kind up`) whose NodePorts are mapped to 127.0.0.1."
            )
        local = find_free_port()
        child = start_process(
            f"port-forward-{target.replace('/', '-')}-{int(port)}",
            [kubectl, "--context", self.context, "-n", self.namespace, "port-forward",
             "--address", "127.0.0.1", target, f"{local}:{int(port)}"],
            port=local, ready=lambda c: wait_for_tcp(c, timeout_s=20),
        )
        with self._lock:
            self._forwards[key] = child
        if not self.quiet and target.startswith("service/"):
            print(f"note: {target} reached through `kubectl port-forward` on 127.0.0.1:{local}; "
                  f"it pins one pod, so a replica kill is not load-balanced away")
        return child.url or f"http://127.0.0.1:{local}"

    def _stop_forward(self, key: str) -> None:
        with self._lock:
            child = self._forwards.pop(key, None)
        if child is not None:
            child.stop(timeout_s=2)

    def forward_pod(self, pod: str, port: int) -> str:
        """``http://127.0.0.1:PORT`` reaching ``port`` of ONE pod, through ``kubectl port-forward pod/NAME``.

        For what belongs to one pod (a sidecar's own view), where a Service would answer
        from any pod. The forward goes through the API server, not the pod network, so a
        network fault on the pod's region does not cut it; it ends with the pod.
        """
        return self._port_forward(f"pod/{pod}", port, key=f"pod/{pod}:{int(port)}",
                                  missing=f"Reaching port {port} of pod {pod!r} needs a port-forward")

    def stop_forward_pod(self, pod: str, port: int) -> None:
        """Stop the port-forward of :meth:`forward_pod` (none running is fine)."""
        self._stop_forward(f"pod/{pod}:{int(port)}")

    def pod_region(self, pod: str) -> str | None:
        """The ``topology.kubernetes.io/region`` label of the node ``pod`` runs on (None if unknown).

        None while the pod is not scheduled, or when the node cannot be read (RBAC may
        forbid reading nodes).
        """
        node = (self._call("get", self._path("v1", "Pod", pod)).get("spec") or {}).get("nodeName")
        if not node:
            return None
        try:
            labels = (self._call("get", f"/api/v1/nodes/{node}").get("metadata") or {}).get("labels") or {}
        except HadrError:
            raise
        except Exception as exc:
            if _status(exc) in (403, 404):
                return None
            raise
        return labels.get("topology.kubernetes.io/region")

    # ------------------------------------------------------------------ network faults (Chaos Mesh)

    def _require_chaos(self, what: str) -> None:
        if not self.has_chaos_mesh():
            raise HadrError(
                f"{what} needs Chaos Mesh, whose CRDs are not installed in context {self.context!r}. "
                f"Install it (`make kind-up` with helm on PATH; infra/kind/README.md, 'Chaos Mesh'), or run this experiment on "
                f"the local backend, whose fault proxy injects the same fault."
            )

    def delay_region(self, region: str = "region-a", latency_ms: float = 100, jitter_ms: float = 0) -> str:
        """Delay every packet from the pods of ``region`` by ``latency_ms`` (Chaos Mesh NetworkChaos)."""
        self._require_chaos("Delaying a region")
        name = f"delay-{region}"
        self._put_chaos({"apiVersion": CHAOS_GROUP, "kind": "NetworkChaos", "metadata": {"name": name},
                         "spec": {"action": "delay", "mode": "all",
                                  "selector": {"namespaces": [self.namespace],
                                               "nodeSelectors": {"topology.kubernetes.io/region": region}},
                                  "delay": {"latency": f"{latency_ms:g}ms", "jitter": f"{jitter_ms:g}ms"}}})
        self._record("hung", "", f"network delay {latency_ms:g} ms on {region}", name)
        return name

    def partition_region(self, region: str = "region-a", other: str = "region-b", *, witness: bool = True) -> str:
        """Cut the network between the pods of ``region`` and ``other`` (both directions).

        With ``witness`` (the default) the region is also cut off from the control-plane node,
        the third site where the witness Sentinel runs: a region partitioned from the other
        region only would still be seen by the witness, and two Sentinels out of three
        (its own and the witness) would go on calling its primary healthy. The local
        backend's partition isolates the region from every other site in the same way.
        """
        self._require_chaos("Partitioning a region")
        name = f"partition-{region}"
        targets = {name: {"topology.kubernetes.io/region": other}}
        if witness:
            targets[f"{name}-witness"] = {"node-role.kubernetes.io/control-plane": ""}
        for chaos, nodes in targets.items():
            self._put_chaos({"apiVersion": CHAOS_GROUP, "kind": "NetworkChaos", "metadata": {"name": chaos},
                             "spec": {"action": "partition", "mode": "all", "direction": "both",
                                      "selector": {"namespaces": [self.namespace],
                                                   "nodeSelectors": {"topology.kubernetes.io/region": region}},
                                      "target": {"mode": "all", "selector": {"namespaces": [self.namespace],
                                                                             "nodeSelectors": nodes}}}})
        self._record("hung", "", f"network partition {region} <-> {other}" + (" and the witness" if witness else ""),
                     name)
        return name

    def clear_faults(self, timeout_s: float = 60.0) -> int:
        """Delete every NetworkChaos and PodChaos in the namespace, and wait until they are gone; return how many.

        Chaos Mesh keeps a deleted chaos object (a finalizer) until its daemon has undone
        the fault on every pod: gone means the network is back.
        """
        if not self.has_chaos_mesh():
            return 0
        deleted = []
        for kind in ("NetworkChaos", "PodChaos"):
            for item in self._call("get", self._path(CHAOS_GROUP, kind)).get("items") or []:
                self._delete_chaos(kind, item)
                deleted.append((kind, item["metadata"]["name"]))
        self._wait_chaos_gone(deleted, timeout_s)
        return len(deleted)

    def _put_chaos(self, doc: dict, timeout_s: float = 60.0) -> None:
        """Create a chaos object; one of the same name with another spec is deleted (and gone) first.

        Chaos Mesh's admission webhook refuses any change to a chaos object's spec ("Cannot
        update chaos spec"), and a deleted one lingers until its fault is undone; applying
        onto it would be refused, or lost when the deletion completes.
        """
        kind, name = doc["kind"], doc["metadata"]["name"]
        old = self._get_or_none(self._path(CHAOS_GROUP, kind, name))
        if old is not None:
            if not (old.get("metadata") or {}).get("deletionTimestamp") and _contains(old.get("spec") or {}, doc["spec"]):
                return  # this very fault is in place already
            self._delete_chaos(kind, old)
            self._wait_chaos_gone([(kind, name)], timeout_s)
        self.apply(doc, quiet=True)

    def _wait_chaos_gone(self, objects: Sequence[tuple[str, str]], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        left = list(objects)
        while left:
            left = [(k, n) for k, n in left if self._get_or_none(self._path(CHAOS_GROUP, k, n)) is not None]
            if not left:
                return
            if time.monotonic() > deadline:
                names = ", ".join(f"{k} {n}" for k, n in left)
                raise HadrError(
                    f"{names} still exist(s) {timeout_s:g} s after deletion: Chaos Mesh removes a chaos object "
                    f"only once its daemon has undone the fault on every pod, so the fault may still be in "
                    f"place. Look at `kubectl -n {self.namespace} describe networkchaos` and at the "
                    f"chaos-daemon pods (`kubectl -n chaos-mesh get pods`); once the daemons run, it goes."
                )
            time.sleep(0.5)

    def _delete_chaos(self, kind: str, item: Mapping) -> None:
        name = item["metadata"]["name"]
        with contextlib.suppress(Exception):
            self._call("delete", self._path(CHAOS_GROUP, kind, name))
        self._record("resumed", "", f"{kind} {name} removed", name)

    # ------------------------------------------------------------------ exec, logs and Jobs

    def exec(self, pod: str, command: Sequence[str], *, container: str | None = None,
             timeout_s: float = 10.0) -> tuple[int, str, str]:
        """Run ``command`` in a pod's container (default: its first); return (code, stdout, stderr)."""
        if container is None:
            spec = (self._call("get", self._path("v1", "Pod", pod)).get("spec") or {})
            container = (spec.get("containers") or [{}])[0].get("name", "")
        try:
            return self.api.exec(self.namespace, pod, container, list(command), timeout_s=timeout_s)
        except Exception as exc:
            if _is_connection_error(exc) and not isinstance(exc, OSError):
                raise self._unreachable(exc) from None
            raise

    def pod_logs(self, pod: str, container: str | None = None, *, timestamps: bool = False) -> str:
        """The log of ``pod`` (its first container unless ``container``) so far, as text."""
        try:
            return self.api.logs(self.namespace, pod, container, timestamps=timestamps)
        except Exception as exc:
            if _is_connection_error(exc):
                raise self._unreachable(exc) from None
            if _status(exc) in (400, 404):
                # 400: the container is still being created; 404: no such pod (yet).
                return ""
            raise

    def start_job(self, name: str, command: Sequence[str], *, env: Mapping[str, str] | None = None,
                  secret_env: Mapping[str, tuple[str, str]] | None = None, image: str = COURSE_IMAGE,
                  deadline_s: int = 600, node_selector: Mapping[str, str] | None = None) -> str:
        """Start a one-pod Job from the course image; return its name.

        The pod runs once (no retries: a measurement that failed is reported, not redone),
        is deleted with the Job, and the Job removes itself 10 minutes after it ends.

        Args:
            name: the Job's name (unique in the namespace).
            command: the container's command, e.g. ``["python", "-m", "hadrlab.featurestore", ...]``.
            env: plain environment variables.
            secret_env: ``{VAR: (secret, key)}`` read from Secrets by the kubelet.
            image: the image (default: the course image).
            deadline_s: the Job is stopped after this long.
            node_selector: node labels the pod must run on, e.g.
                ``{"topology.kubernetes.io/region": "region-b"}``: where a client runs
                decides which side of a network partition it is on.
        """
        variables = [{"name": k, "value": str(v)} for k, v in (env or {}).items()]
        variables += [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
                      for k, (secret, key) in (secret_env or {}).items()]
        self.apply({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER}},
            "spec": {
                "backoffLimit": 0, "activeDeadlineSeconds": int(deadline_s), "ttlSecondsAfterFinished": 600,
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER}},
                    "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                             **({"nodeSelector": dict(node_selector)} if node_selector else {}),
                             "containers": [{"name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                                             "command": list(command), "env": variables}]},
                },
            },
        }, quiet=True)
        self._record("job-started", name, " ".join(command), name)
        return name

    def job_pod(self, job: str) -> dict | None:
        """The pod of ``job`` (the newest, if several), or None while there is none."""
        items = self._call("get", self._path("v1", "Pod"), query=[("labelSelector", f"job-name={job}")]).get("items") or []
        items.sort(key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
        return items[-1] if items else None

    def job_state(self, job: str) -> str:
        """``"running"`` (or pending), ``"succeeded"`` or ``"failed"``, from the Job's conditions.

        A Job whose pod failed and is being replaced has ``status.failed`` > 0 and no Failed
        condition: it is still running (the next pod resumes the work). Only the Job
        controller's terminal Complete/Failed condition (or every completion done, no pod
        active or terminating) ends it. The interim FailureTarget and SuccessCriteriaMet
        conditions do not: from Kubernetes 1.31 they come first, while the Job's pods are
        still being terminated (and may still write), and Failed/Complete follow once
        those pods are gone.
        """
        status = self._call("get", self._path("batch/v1", "Job", job)).get("status") or {}
        for condition in status.get("conditions") or []:
            if condition.get("status") == "True" and condition.get("type") == "Complete":
                return "succeeded"
            if condition.get("status") == "True" and condition.get("type") == "Failed":
                return "failed"
        done = int(status.get("succeeded") or 0) >= 1 and not status.get("active") and not status.get("terminating")
        return "succeeded" if done else "running"

    def job_stuck(self, job: str) -> str | None:
        """Why ``job``'s pod cannot start, when the reason will not pass by waiting; else None.

        An image that is not in the cluster (``ErrImageNeverPull``, ``ErrImagePull``,
        ``ImagePullBackOff``) or a missing Secret or key (``CreateContainerConfigError``)
        keeps the pod Pending until the Job's deadline: a caller can stop at once and say so.
        """
        pod = self.job_pod(job)
        status = (pod or {}).get("status") or {}
        for c in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            waiting = (c.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in _STUCK_REASONS:
                return f"container {c.get('name')}: {waiting['reason']}: {str(waiting.get('message', ''))[:200]}"
        return None

    def job_logs(self, job: str) -> str:
        """The log so far of ``job``'s pod ("" while the pod is not running yet)."""
        pod = self.job_pod(job)
        return self.pod_logs(pod["metadata"]["name"]) if pod else ""

    def delete_job(self, job: str, *, foreground: bool = False) -> None:
        """Delete a Job and its pod (a missing Job is not an error).

        Args:
            job: the Job's name.
            foreground: the Job object stays (being deleted) until its pods are gone, so
                that waiting for the Job to vanish also waits for them. By default
                (background) the Job vanishes at once while its pods still terminate:
                they may still write to a shared volume, and keep the ``job-name`` label
                a new Job of the same name selects its pods by.
        """
        if not foreground:
            self.delete(f"job/{job}")
            return
        try:
            self._call("delete", self._path("batch/v1", "Job", job), query=[("propagationPolicy", "Foreground")])
        except Exception as exc:
            if _status(exc) != 404:
                raise
        with self._lock:
            if ("batch/v1", "Job", job) in self._applied:
                self._applied.remove(("batch/v1", "Job", job))

    # ------------------------------------------------------------------ watches

    def _start_watches(self) -> None:
        for name, target in (("pods", self._watch_pods), ("endpointslices", self._watch_slices),
                             ("events", self._watch_k8s_events)):
            thread = threading.Thread(target=self._watch_loop, args=(name, target), daemon=True,
                                      name=f"kube-watch-{name}")
            self._threads.append(thread)
            thread.start()

    def _watch_loop(self, name: str, target: Any) -> None:
        failures = 0
        while not self._closing.is_set():
            try:
                target()
                failures = 0
            except Exception as exc:  # a dropped stream or 410 Gone: list again and resume
                failures += 1
                if self._closing.is_set():
                    return
                if failures == 5:
                    self._record("unready", "", f"the {name} watch keeps failing: {exc.__class__.__name__}: "
                                                f"{_message(exc)}", "platform")
                self._closing.wait(min(5.0, 0.2 * failures))

    def _list_then_watch(self, path: str, on_list: Any, on_event: Any, query: Sequence[tuple[str, Any]] = ()) -> None:
        listing = self.api.request("get", path, query=list(query))
        on_list(listing.get("items") or [])
        rv = (listing.get("metadata") or {}).get("resourceVersion")
        while not self._closing.is_set():
            for event in self.api.watch(path, query=[*query, ("resourceVersion", rv)], timeout_s=self.watch_timeout_s):
                if self._closing.is_set():
                    return
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise HadrError(f"watch of {path} ended: {obj.get('message', obj)}")
                rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    on_event(kind, obj)

    def _watch_pods(self) -> None:
        states: dict[str, dict] = {}

        def on_list(items: list[dict]) -> None:
            # A re-list after a dropped watch reports what changed meanwhile, not everything.
            seen = set()
            for pod in items:
                seen.add(pod["metadata"]["name"])
                on_event("MODIFIED" if pod["metadata"]["name"] in states else "SEED", pod)
            for gone in set(states) - seen:
                on_event("DELETED", {"metadata": {"name": gone}})

        def on_event(kind: str, pod: dict) -> None:
            name = pod["metadata"]["name"]
            if kind == "SEED":
                states[name] = {**_pod_state(pod), "owner": _owner_name(pod)}
                return
            old = states.get(name)
            owner = _owner_name(pod) or (old or {}).get("owner", "")
            if kind == "DELETED":
                if old is not None:
                    for k, detail in pod_transitions(old, None, deleted=True):
                        self._record(k, name, detail, owner)
                    states.pop(name, None)
                return
            for k, detail in pod_transitions(old, pod):
                self._record(k, name, detail, owner)
            states[name] = {**_pod_state(pod), "owner": owner}

        self._list_then_watch(self._path("v1", "Pod"), on_list, on_event)

    def _watch_slices(self) -> None:
        slices: dict[str, dict] = {}

        def service_of(obj: Mapping) -> str:
            return ((obj.get("metadata") or {}).get("labels") or {}).get("kubernetes.io/service-name", "")

        def on_list(items: list[dict]) -> None:
            fresh = {s["metadata"]["name"]: s for s in items}
            if slices:
                for name in set(slices) | set(fresh):
                    on_event("MODIFIED", fresh.get(name) or {"metadata": slices[name]["metadata"], "endpoints": []})
            slices.clear()
            slices.update(fresh)

        def on_event(kind: str, obj: dict) -> None:
            name = obj["metadata"]["name"]
            old = slices.get(name)
            new = None if kind == "DELETED" else obj
            for k, replica in slice_transitions(old, new):
                self._record(k, replica, f"EndpointSlice {name}", service_of(obj) or service_of(old or {}))
            if new is None:
                slices.pop(name, None)
            else:
                slices[name] = new

        self._list_then_watch(self._path("discovery.k8s.io/v1", "EndpointSlice"), on_list, on_event)

    def _watch_k8s_events(self) -> None:
        seen: set[str] = set()

        def on_list(items: list[dict]) -> None:
            seen.update(e["metadata"]["name"] for e in items)

        def on_event(kind: str, ev: dict) -> None:
            # The kubelet's "Killing" event says a liveness (or startup) probe condemned a
            # container: the moment the local backend records as liveness-failed.
            name = ev["metadata"]["name"]
            message = ev.get("message") or ""
            if kind != "ADDED" or name in seen or ev.get("reason") != "Killing" or "probe" not in message:
                return
            seen.add(name)
            pod = (ev.get("involvedObject") or {}).get("name", "")
            self._record("liveness-failed", pod, message, pod.rsplit("-", 2)[0] if pod.count("-") >= 2 else pod)

        self._list_then_watch(self._path("v1", "Event"), on_list, on_event)

    # ------------------------------------------------------------------ close

    def _check_open(self) -> None:
        if self._closing.is_set():
            raise HadrError("This KubePlatform was closed; create a new one with get_platform('kube').")

    def close(self) -> None:
        """Stop the watches and port-forwards. The cluster and its objects stay. Idempotent."""
        if self._closing.is_set():
            return
        self._closing.set()
        for service in list(self._forwards):
            self._stop_forward(service)
        closer = getattr(self.api, "close", None)
        if closer is not None:
            closer()
        for thread in self._threads:
            thread.join(timeout=2)

    def __repr__(self) -> str:
        return f"KubePlatform(context={self.context!r}, server={self.server!r}, namespace={self.namespace!r})"


def _is_connection_error(exc: BaseException) -> bool:
    """A failure to talk to the API server at all (no answer), as opposed to an HTTP error."""
    import urllib3

    return _status(exc) is None and isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


# A pod's waiting reasons that waiting will not cure (the image is absent, a Secret is missing).
_STUCK_REASONS = ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
                  "CreateContainerConfigError")


def _contains(have: Any, want: Any) -> bool:
    """True when ``have`` has every field of ``want`` with the same value (defaults added to ``have`` are fine)."""
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(k in have and _contains(have[k], v) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(have) == len(want) and all(map(_contains, have, want))
    return have == want


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return int(status) if isinstance(status, int) or (isinstance(status, str) and status.isdigit()) else None


def _message(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if body:
        try:
            return json.loads(body).get("message") or str(body)[:300]
        except (ValueError, TypeError, AttributeError):
            return str(body)[:300]
    return str(getattr(exc, "reason", None) or exc)[:300]
