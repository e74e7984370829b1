"""A fake of the Kubernetes API surface the kube backend uses (hadrlab.platform.kube.KubeApi).

``FakeKube`` keeps objects by REST path and answers the way an API server does (server-side
apply, 404 for a missing object, 409/422 refusals, watch events, exec, logs), and can pretend
the server is gone (urllib3's MaxRetryError), so every code path of the backend runs without
a cluster. ``RedisCluster`` adds the Redis side of Lab 02 (Sentinel answers, crashes, probe
Jobs that print rows). What only a real cluster can prove is listed in infra/kind/README.md.
"""

from __future__ import annotations

import copy
import json
import queue
import threading
import time

import urllib3
from kubernetes.client.exceptions import ApiException

from hadrlab.platform.kube import FIELD_MANAGER

NS = "hadrlab"
DEP_PATH = f"/apis/apps/v1/namespaces/{NS}/deployments"
POD_PATH = f"/api/v1/namespaces/{NS}/pods"
SVC_PATH = f"/api/v1/namespaces/{NS}/services"
SLICE_PATH = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
EVENT_PATH = f"/api/v1/namespaces/{NS}/events"


def api_error(status: int, message: str) -> ApiException:
    return ApiException(status=status, reason={404: "Not Found", 409: "Conflict", 422: "Unprocessable Entity",
                                               403: "Forbidden"}.get(status, "Error"),
                        body=json.dumps({"kind": "Status", "message": message, "code": status}))


class FakeKube:
    """An in-memory API server: objects by path, watch queues by collection, scripted exec."""

    context = "kind-fake"
    server = "https://127.0.0.1:6443"

    def __init__(self) -> None:
        self.objects: dict[str, dict] = {}
        self.calls: list[tuple] = []
        self.watch_queues: dict[str, queue.Queue] = {}
        self.rv = 100
        self.down = False
        self.chaos_mesh = False
        self.refuse: dict = {}  # path or (method, path) -> (status, message)
        self.exec_result: tuple[int, str, str] | Exception = (0, "7", "")
        self.exec_calls: list[tuple] = []
        self.exec_handler = None  # (pod, container, command) -> (code, out, err), when set
        self.pod_logs: dict = {}  # pod -> text, or callable(timestamps) -> text
        self.on_apply: list = []  # callables(path, obj) after a server-side apply
        self.closed = False
        self.lock = threading.Lock()

    # -- helpers for tests
    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def put(self, path: str, obj: dict, event: str | None = "ADDED") -> dict:
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = self._next_rv()
        self.objects[path] = obj
        if event:
            self.emit(path.rsplit("/", 1)[0], event, obj)
        return obj

    def emit(self, collection: str, kind: str, obj: dict) -> None:
        self.watch_queues.setdefault(collection, queue.Queue()).put({"type": kind, "object": copy.deepcopy(obj)})

    # -- the API surface of KubeApi
    def request(self, method, path, *, query=(), body=None, content_type=None, timeout_s=10.0):
        with self.lock:
            self.calls.append((method, path, dict(query), copy.deepcopy(body), content_type))
            if self.down:
                raise urllib3.exceptions.MaxRetryError(None, path, urllib3.exceptions.NewConnectionError(
                    None, "Failed to establish a new connection: [Errno 111] Connection refused"))
            for key in ((method, path), path):
                if key in self.refuse:
                    raise api_error(*self.refuse[key])
            if path == "/version":
                return {"major": "1", "minor": "31", "gitVersion": "v1.31.2"}
            if path == "/apis/chaos-mesh.org/v1alpha1":
                if self.chaos_mesh:
                    return {"kind": "APIResourceList", "resources": [{"name": "podchaos", "kind": "PodChaos", "namespaced": True}]}
                raise api_error(404, "the server could not find the requested resource")
            q = dict(query)
            if method == "get":
                if path in self.objects:
                    return copy.deepcopy(self.objects[path])
                prefix = path + "/"
                items = [copy.deepcopy(o) for p, o in self.objects.items()
                         if p.startswith(prefix) and "/" not in p[len(prefix):]]
                if items or path.endswith(("pods", "services", "endpointslices", "events", "deployments",
                                           "networkchaos", "podchaos")):
                    wanted = dict(kv.split("=") for kv in q["labelSelector"].split(",")) if q.get("labelSelector") else {}
                    items = [o for o in items if all((o["metadata"].get("labels") or {}).get(k) == v
                                                     for k, v in wanted.items())]
                    return {"items": items, "metadata": {"resourceVersion": str(self.rv)}}
                raise api_error(404, f"{path} not found")
            if method == "delete":
                if path not in self.objects:
                    raise api_error(404, f"{path} not found")
                obj = self.objects.pop(path)
                self.emit(path.rsplit("/", 1)[0], "DELETED", obj)
                return {"kind": "Status", "status": "Success"}
            if method == "patch" and content_type == "application/apply-patch+yaml":
                assert q["fieldManager"] == FIELD_MANAGER and q["force"] == "true"
                old = self.objects.get(path)
                new = copy.deepcopy(body)
                if old is not None and {k: v for k, v in old.items() if k not in ("metadata", "status")} == \
                        {k: v for k, v in new.items() if k not in ("metadata", "status")}:
                    return copy.deepcopy(old)
                gen = int(((old or {}).get("metadata") or {}).get("generation", 0)) + 1
                new["metadata"]["generation"] = gen
                if old is not None:
                    new["status"] = old.get("status", {})
                if new.get("kind") == "StatefulSet":
                    # Rolled out at once: every replica ready on the new revision.
                    n = int(new["spec"].get("replicas", 1))
                    new["status"] = {"observedGeneration": gen, "currentRevision": f"r{gen}", "updateRevision": f"r{gen}",
                                     "replicas": n, "updatedReplicas": n, "readyReplicas": n}
                stored = self.put(path, new, "MODIFIED" if old else "ADDED")
                for hook in self.on_apply:
                    hook(path, stored)
                return copy.deepcopy(stored)
            if method == "patch" and path.endswith("/scale"):
                obj = self.objects[path[: -len("/scale")]]
                obj["spec"]["replicas"] = body["spec"]["replicas"]
                obj["metadata"]["generation"] += 1
                return {"spec": body["spec"]}
            if method == "patch" and content_type == "application/strategic-merge-patch+json":
                obj = self.objects[path]
                patch = body["spec"]["template"]["spec"]["containers"][0]
                for c in obj["spec"]["template"]["spec"]["containers"]:
                    if c["name"] == patch["name"]:
                        if "image" in patch:
                            c["image"] = patch["image"]
                        for item in patch.get("env", []):
                            env = c.setdefault("env", [])
                            env[:] = [e for e in env if e["name"] != item["name"]] + [item]
                obj["metadata"]["generation"] += 1
                ann = obj["metadata"].setdefault("annotations", {})
                ann["deployment.kubernetes.io/revision"] = str(int(ann.get("deployment.kubernetes.io/revision", 1)) + 1)
                return copy.deepcopy(obj)
            raise AssertionError(f"the fake does not model {method} {path} {content_type}")

    def watch(self, path, *, query=(), timeout_s=30.0):
        if self.down:
            raise urllib3.exceptions.MaxRetryError(None, path, urllib3.exceptions.ProtocolError("Connection aborted."))
        q = self.watch_queues.setdefault(path, queue.Queue())
        deadline = time.monotonic() + min(timeout_s, 0.3)
        while time.monotonic() < deadline and not self.closed:
            try:
                yield q.get(timeout=0.05)
            except queue.Empty:
                continue

    def exec(self, namespace, pod, container, command, timeout_s=10.0):
        self.exec_calls.append((pod, container, list(command)))
        if self.exec_handler is not None:
            return self.exec_handler(pod, container, list(command))
        if isinstance(self.exec_result, Exception):
            raise self.exec_result
        return self.exec_result

    def logs(self, namespace, pod, container=None, *, timestamps=False, timeout_s=10.0):
        if self.down:
            raise urllib3.exceptions.MaxRetryError(None, pod, urllib3.exceptions.ProtocolError("Connection aborted."))
        if f"{POD_PATH}/{pod}" not in self.objects:
            raise api_error(404, f'pods "{pod}" not found')
        source = self.pod_logs.get(pod, "")
        return source(timestamps) if callable(source) else source

    def close(self) -> None:
        self.closed = True


def pod(name: str, *, ready: bool = True, restarts: int = 0, deleting: bool = False, created: str = "2025-01-01T00:00:00Z",
        version: str = "v1", last_exit: int | None = None, running: bool = True) -> dict:
    status = {"phase": "Running", "startTime": created,
              "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
              "containerStatuses": [{"name": "model-api", "restartCount": restarts,
                                     "state": {"running": {"startedAt": created}} if running else {"waiting": {"reason": "CrashLoopBackOff"}},
                                     **({"lastState": {"terminated": {"exitCode": last_exit, "reason": "Error"}}}
                                        if last_exit is not None else {})}]}
    meta = {"name": name, "namespace": NS, "creationTimestamp": created,
            "labels": {"app": "model-api", "pod-template-hash": "5d8f7"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "model-api-5d8f7"}]}
    if deleting:
        meta["deletionTimestamp"] = "2025-01-01T00:01:00Z"
    return {"metadata": meta, "status": status,
            "spec": {"nodeName": "hadrlab-worker", "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "model-api", "image": f"hadrlab/model-api:{version}",
                                     "ports": [{"name": "http", "containerPort": 8000}],
                                     "env": [{"name": "MODEL_VERSION", "value": version}]}]}}



class RedisCluster:
    """The Redis side of the fake: two regions, three Sentinels, probe Jobs that write rows.

    A crash (DEBUG SEGFAULT) of the primary makes the Sentinels name the other region
    ``failover_s`` later; probe pods' logs are generated from the clock, as a real probe
    would print them: acknowledged writes on the primary, errors during the failover,
    then writes on the new primary. The replica misses the last ``lag_writes`` writes
    acknowledged before the crash unless they were confirmed with WAIT.
    """

    def __init__(self, fake: FakeKube, failover_s: float = 0.6, lag_writes: int = 5, debug_allowed: bool = True) -> None:
        self.fake, self.failover_s, self.lag_writes, self.debug_allowed = fake, failover_s, lag_writes, debug_allowed
        self.primary, self.crashed_at = "a", None
        self.jobs: dict[str, dict] = {}
        fake.exec_handler = self.exec
        fake.on_apply.append(self.applied)
        for name in ("redis-a-0", "redis-b-0", "sentinel-a-0", "sentinel-b-0", "sentinel-w-0"):
            fake.put(f"{POD_PATH}/{name}", {"metadata": {"name": name}, "status": {
                "conditions": [{"type": "Ready", "status": "True"}]}})
            if name.startswith("sentinel"):
                fake.pod_logs[name] = self.sentinel_log

    def now_primary(self) -> str:
        if self.crashed_at is not None and time.time() >= self.crashed_at + self.failover_s:
            return "b" if self.primary == "a" else "a"
        return self.primary

    def sentinel_log(self, timestamps: bool) -> str:
        line = "2026-11-27T23:00:00.000000000Z 1:X 27 Nov 2026 23:00:00.000 # +monitor master features redis-a-0.redis-a 6379 quorum 2\n"
        if self.crashed_at is not None and time.time() >= self.crashed_at + self.failover_s:
            t = self.crashed_at + self.failover_s
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e9):09d}Z"
            line += f"{stamp} 1:X 27 Nov 2026 23:00:01.000 # +switch-master features redis-a-0.redis-a 6379 redis-b-0.redis-b 6379\n"
        return line

    def exec(self, pod: str, container: str, command: list[str]):
        if pod.startswith("sentinel"):
            assert command[4:6] == ["-p", "26379"], command
            args = command[6:]
            if args[:2] == ["SENTINEL", "GET-MASTER-ADDR-BY-NAME"]:
                p = self.now_primary()
                return 0, f"redis-{p}-0.redis-{p}\n6379\n", ""
            if args[:2] == ["SENTINEL", "MASTER"]:
                return 0, "name\nfeatures\nnum-slaves\n1\nnum-other-sentinels\n2\n", ""
        assert command[:3] == ["sh", "-c", 'REDISCLI_AUTH="$REDIS_PASSWORD" exec redis-cli "$@"'], command
        assert "REDIS_PASSWORD" not in " ".join(command[4:])  # the password is never an argument
        args, region = command[4:], pod.split("-")[1]
        if args == ["INFO", "replication"]:
            if region == self.now_primary():
                return 0, "# Replication\r\nrole:master\r\nmaster_repl_offset:5000\r\nsecond_repl_offset:4001\r\n", ""
            return 0, "# Replication\r\nrole:slave\r\nmaster_link_status:up\r\nslave_repl_offset:4000\r\n", ""
        if args == ["DEBUG", "SEGFAULT"]:
            if not self.debug_allowed:
                # redis-cli prints an error reply on stdout and exits 0.
                return 0, "ERR DEBUG command not allowed. If the enable-debug-command option is set to \"local\"...\n", ""
            self.crashed_at = time.time()
            return 1, "", "Error: Server closed the connection"
        if args[0] == "--scan":
            run = args[2].split(":")[1]
            job = next(j for j in self.jobs.values() if j["run"] == run)
            kept = [n for n in job["acked"] if job["mode"] == "wait" or n < len(job["acked"]) - self.lag_writes]
            return 0, "".join(f"rpo:{run}:{n}\n" for n in kept), ""
        raise AssertionError(f"the fake does not model {args}")

    def applied(self, path: str, obj: dict) -> None:
        if "/jobs/" not in path:
            return
        name = obj["metadata"]["name"]
        command = obj["spec"]["template"]["spec"]["containers"][0]["command"]
        opts = dict(zip(command[4::2], command[5::2]))
        job = {"kind": command[3], "started": time.time() + 0.1, "run": opts.get("--run"), "mode": opts.get("--mode"),
               "acked": []}
        self.jobs[name] = job
        self.fake.put(f"{POD_PATH}/{name}-pod", {"metadata": {"name": f"{name}-pod", "labels": {"job-name": name}}})
        self.fake.pod_logs[f"{name}-pod"] = lambda timestamps, job=job: self.probe_log(job)

    def probe_log(self, job: dict) -> str:
        now, t = time.time(), job["started"]
        if now < t:
            return ""
        lines = ["t,ok,region,error"] if job["kind"] == "write-probe" else []
        n = 0
        while t <= now:
            crashed = self.crashed_at is not None and t >= self.crashed_at
            if job["kind"] == "write-probe":
                if not crashed:
                    lines.append(f"{t:.6f},1,{self.primary},")
                elif t < self.crashed_at + self.failover_s:
                    lines.append(f"{t:.6f},0,,ConnectionError")
                else:
                    lines.append(f"{t:.6f},1,{self.now_primary()},")
            else:
                if crashed:
                    lines += [f"unconfirmed,{n},{t:.6f}", f"attempted,{n + 1},{t:.6f}"]
                    break
                lines.append(f"ack,{n},{t:.6f}")
                if n not in job["acked"]:
                    job["acked"].append(n)
                n += 1
            t += 0.02
        return "\n".join(lines) + "\n"
