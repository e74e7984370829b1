"""A fake API server whose pipeline pods are the real processes of a LOCAL Lab 03 pipeline.

``PipelineLoopbackKube`` extends :class:`kube_loopback.LoopbackKube` for infra/k8s/pipeline.yaml:

- ``registry-0`` is the local registry: a script exec'd in it runs as a local Python process
  with the pod's variables (PORT, REGISTRY_TOKEN) pointing at the local registry; scaling the
  StatefulSet to 0 freezes the registry process (SIGSTOP: it answers nothing, as a pod that is
  gone; the process belongs to the test, so it cannot be removed and brought back from
  another process) and deletes the pod object; scaling back to 1 resumes it and reports the
  pod ready once GET /healthz answers 200;
- the online API is reached through pipeline.yaml's own annotated NodePort Service
  (``ONLINE_NODE_PORT``, 30084), which the test maps to the local online API's port;
- the trainer Job's pod is the local trainer: ``cat .../status.json`` reads its status file,
  SIGSTOP/SIGKILL through the kube backend's signal script hit its pid, and when the local
  supervisor has started a new worker, a NEW pod of the Job appears (a killed pod is Failed);
  scripts exec'd in it run locally with the local Redis as their feature store;
- a Job that mounts the ``batch-data`` claim (a batch-score Job, an audit Job) runs its init
  containers then its container as ONE local process per pod (``sh -c 'init && exec main'``),
  with the claim a folder of the local run (``/var/lib/batch`` mapped to it), the registry's
  address and token, and the feature store's addresses (Sentinels, or region A's) of the
  local pipeline; the Job controller's part is a thread: a pod that exits non-zero is Failed
  and replaced by a new pod (after 0.5 s, where a cluster waits 10 s) until backoffLimit,
  and the Job gets its Complete or Failed condition only at the end, as on a cluster;
- with a local feature store (``local.start_feature_store()`` before this is made), its
  Redis and Sentinel pods are the store's servers (:class:`kube_loopback.LoopbackKube`), so
  ``start_kube_pipeline(feature_store=True)`` applies redis.yaml and waits on the real
  replication link; in a ``chaos run`` process, which does not own the store, DEBUG SEGFAULT
  in the primary's pod SIGKILLs its server (as the local experiment does) and the crashed
  server is NOT restarted (a cluster's kubelet restarts it, empty, after the failover).

Model names: the kube pipeline's trainer registers ``fraud-<name>``; the local trainer behind
it registers ``fraud``, so a batch Job's MODEL_NAME and a script's model argument ``fraud-*``
(except the online API's ``fraud-online``) are mapped to ``fraud``.

Experiments run in a ``chaos run`` child process, which builds its own API object from the
state file: :func:`activity_api` is that factory (``state["api"]``); it applies the same
manifests to a fresh fake, so both processes see the same objects.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import yaml
from kube_loopback import JOB_PATH, NS, POD_PATH, LoopbackKube

from hadrlab.platform.kube import FIELD_MANAGER, HOST_ACCESS_ANNOTATION, SIGNAL_SCRIPT, resource_path
from hadrlab.platform.kube_pipeline import BATCH_CLAIM, BATCH_DIR
from hadrlab.processes import start_process

__all__ = ["ONLINE_NODE_PORT", "PipelineLoopbackKube", "activity_api"]

ROOT = Path(__file__).resolve().parents[1]
# The NodePort of pipeline.yaml's Service annotated as host access for online-api.
ONLINE_NODE_PORT = next(
    port["nodePort"] for doc in yaml.safe_load_all((ROOT / "infra" / "k8s" / "pipeline.yaml").read_text())
    if doc and doc["kind"] == "Service"
    and (doc["metadata"].get("annotations") or {}).get(HOST_ACCESS_ANNOTATION) == "online-api"
    for port in doc["spec"]["ports"])
LOCAL_MODEL = "fraud"
STS_PATH = f"/apis/apps/v1/namespaces/{NS}/statefulsets/registry"
_PVC_DISCOVERY = {"kind": "APIResourceList", "resources": [
    {"name": "persistentvolumeclaims", "kind": "PersistentVolumeClaim", "namespaced": True}]}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z"


class PipelineLoopbackKube(LoopbackKube):
    """The fake API server, with the pipeline's pods backed by a local pipeline's processes."""

    def __init__(self, local_state_path: str | os.PathLike, fs=None) -> None:
        self.local_state_path = str(local_state_path)
        self.local = json.loads(Path(local_state_path).read_text())
        # The feature store: the local store itself (the test's process owns it), a view of
        # it from the state file (a `chaos run` process), or none. The trainer's data is in
        # the local pipeline's own Redis either way.
        self.fs_view = fs is None and "feature_store" in self.local
        if fs is None:
            fs = _store_view(self.local["feature_store"]) if self.fs_view else \
                SimpleNamespace(region_a=None, region_b=None, sentinels=[], password="")
        super().__init__(fs)
        if fs.region_a is None:
            for name in ("redis-a-0", "redis-b-0"):
                self.objects.pop(f"{POD_PATH}/{name}", None)
        self.volume = Path(self.local["run_dir"]) / "volumes" / BATCH_CLAIM
        self.volume.mkdir(parents=True, exist_ok=True)
        self.volume_jobs: dict[str, dict] = {}   # Jobs on the batch claim: {"stop", "thread", "child"}
        self.volume_pods: dict[str, object] = {}  # pod -> its local process
        self.activity_api = {"factory": "kube_pipeline_loopback:activity_api",
                             "kwargs": {"local_state": self.local_state_path}}
        self.put("/api/v1", _PVC_DISCOVERY, event=None)
        self.trainer_pods: list[dict] = []   # {"name", "pid"}
        self.killed_pids: set[int] = set()

    # -- the local processes
    def _trainer_pid(self) -> int:
        status = Path(self.local["trainer"]["checkpoint_dir"]) / "status.json"
        with contextlib.suppress(OSError, ValueError):
            return int(json.loads(status.read_text()).get("pid", 0))
        return 0

    def _registry_port(self) -> str:
        return self.local["registry"]["url"].rsplit(":", 1)[1]

    def _python(self, script: str, args: list[str], env: dict) -> tuple[int, str, str]:
        done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env})
        return done.returncode, done.stdout, done.stderr

    # -- pods
    def _put_pod(self, name: str, labels: dict, phase: str = "Running", ready: bool = True) -> None:
        self.put(f"{POD_PATH}/{name}", {
            "metadata": {"name": name, "namespace": NS, "labels": labels, "creationTimestamp": _now()},
            "spec": {"containers": [{"name": labels.get("container", "main")}]},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}})

    def _new_trainer_pod(self) -> None:
        name = f"trainer-{len(self.trainer_pods) + 1:05d}"
        self.trainer_pods.append({"name": name, "pid": self._trainer_pid()})
        self._put_pod(name, {"job-name": "trainer", "app": "trainer", "container": "trainer"})
        time.sleep(0.002)  # distinct creation timestamps

    def _refresh_trainer(self) -> None:
        """A new worker of the local supervisor is a new pod of the Job; a killed one's pod Failed."""
        if not self.trainer_pods:
            return
        newest = self.trainer_pods[-1]
        pid = self._trainer_pid()
        if newest["pid"] in self.killed_pids and pid and pid not in self.killed_pids:
            self._new_trainer_pod()

    def _start_job(self, path: str, obj: dict) -> None:  # an on_apply hook (LoopbackKube registers it)
        name, kind = obj["metadata"]["name"], obj.get("kind")
        if kind == "StatefulSet" and name == "registry":
            self._put_pod("registry-0", {"app": "registry", "container": "registry"})
        elif kind == "Deployment" and name == "online-api":
            n = int(obj["spec"]["replicas"])
            obj["status"] = {"observedGeneration": obj["metadata"]["generation"], "replicas": n, "updatedReplicas": n,
                             "readyReplicas": n, "availableReplicas": n}
            for i in range(n):
                self._put_pod(f"online-api-loop-{i}", {"app": "online-api", "container": "online-api"})
        elif path.startswith(JOB_PATH) and name == "online-model-seed":
            obj["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        elif path.startswith(JOB_PATH) and name == "trainer":
            self._new_trainer_pod()
        elif path.startswith(JOB_PATH) and any((v.get("persistentVolumeClaim") or {}).get("claimName") == BATCH_CLAIM
                                               for v in obj["spec"]["template"]["spec"].get("volumes") or []):
            # Started outside this hook, which runs under the fake's lock.
            job = self.volume_jobs[name] = {"stop": threading.Event(), "child": None}
            job["thread"] = threading.Thread(target=self._run_volume_job, args=(name, json.loads(json.dumps(obj))),
                                             daemon=True)
            job["thread"].start()
        elif path.startswith(JOB_PATH) and obj["spec"]["template"]["spec"]["containers"][0]["command"][2:3] == \
                ["hadrlab.featurestore"]:
            super()._start_job(path, obj)

    # -- Jobs on the batch claim, as local processes
    def _vol(self, value: str) -> str:
        return str(self.volume) + value[len(BATCH_DIR):] if str(value).startswith(BATCH_DIR) else value

    @staticmethod
    def _model(name: str) -> str:
        return LOCAL_MODEL if name.startswith("fraud-") and name != "fraud-online" else name

    def _pod_env(self, containers: list[dict]) -> dict:
        """The containers' variables, with the cluster's addresses and secrets made the local pipeline's."""
        local = json.loads(Path(self.local_state_path).read_text())
        fs = local.get("feature_store") or {}
        env = {}
        for c in containers:
            for item in c.get("env") or []:
                if "value" in item:
                    env[item["name"]] = item["value"]
                    continue
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = {"registry-auth": local["registry"]["token"],
                                     "redis-auth": (fs.get("env") or {}).get("REDIS_PASSWORD", "")}[ref["name"]]
        for var in ("INPUT", "OUTPUT"):
            if var in env:
                env[var] = self._vol(env[var])
        if "REGISTRY_URL" in env:
            env["REGISTRY_URL"] = local["registry"]["url"]
        if "MODEL_NAME" in env:
            env["MODEL_NAME"] = self._model(env["MODEL_NAME"])
        if "SENTINELS" in env:
            env["SENTINELS"] = fs["env"]["SENTINELS"]
        if "REDIS_HOST" in env:
            env["REDIS_HOST"], env["REDIS_PORT"] = fs["regions"]["a"]["address"].rsplit(":", 1)
        return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

    def _pod_command(self, containers: list[dict]) -> list[str]:
        """``sh -c 'init1 && ... && exec main'``: the pod's pid is the main container's process."""
        parts = []
        for c in containers:
            command = [self._vol(a) for a in [*c["command"], *(c.get("args") or [])]]
            if command[0] == "python":
                command[0] = sys.executable
            parts.append(shlex.join(command))
        return ["/bin/sh", "-c", " && ".join(parts[:-1] + ["exec " + parts[-1]])]

    def _set_job_status(self, name: str, **status) -> None:
        with self.lock:
            obj = self.objects.get(JOB_PATH + name)
            if obj is not None:
                obj["status"] = status
                obj["metadata"]["resourceVersion"] = self._next_rv()

    def _run_volume_job(self, name: str, obj: dict) -> None:
        """The Job controller for one Job: a pod at a time, replaced when it fails, up to backoffLimit."""
        spec = obj["spec"]["template"]["spec"]
        containers = [*(spec.get("initContainers") or []), *spec["containers"]]
        main = spec["containers"][0]["name"]
        limit = int(obj["spec"].get("backoffLimit", 6))
        job, failed = self.volume_jobs[name], 0
        while not job["stop"].is_set():
            pod = f"{name}-{secrets.token_hex(3)[:5]}"
            child = start_process(f"pod-{pod}", self._pod_command(containers), env=self._pod_env(containers))
            with self.lock:
                job["child"] = self.volume_pods[pod] = child
                self._put_pod(pod, {"job-name": name, "batch.kubernetes.io/job-name": name, "container": main})
            self._set_job_status(name, active=1, failed=failed, startTime=_now())
            while child.alive() and not job["stop"].is_set():
                time.sleep(0.05)
            if job["stop"].is_set():
                return
            code = child.returncode
            with self.lock, contextlib.suppress(KeyError):
                self.objects[f"{POD_PATH}/{pod}"]["status"] = {
                    "phase": "Succeeded" if code == 0 else "Failed",
                    "conditions": [{"type": "Ready", "status": "False"}]}
            if code == 0:
                self._set_job_status(name, succeeded=1, failed=failed, conditions=[
                    {"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}])
                return
            failed += 1
            if failed > limit:
                self._set_job_status(name, failed=failed, conditions=[
                    {"type": "FailureTarget", "status": "True"},
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])
                return
            self._set_job_status(name, failed=failed)  # no pod active during the back-off
            job["stop"].wait(0.5)

    def _stop_volume_job(self, name: str) -> None:
        job = self.volume_jobs.pop(name, None)
        if job is None:
            return
        job["stop"].set()
        job["thread"].join(timeout=10)
        if job["child"] is not None:
            job["child"].stop(timeout_s=2)
        with self.lock:  # a Job deleted with propagationPolicy Background takes its pods along
            for path in [p for p, o in self.objects.items() if p.startswith(POD_PATH + "/")
                         and (o["metadata"].get("labels") or {}).get("job-name") == name]:
                self.objects.pop(path)

    def stop_volume_jobs(self) -> None:
        """Teardown: stop every Job's process still running."""
        for name in list(self.volume_jobs):
            self._stop_volume_job(name)

    def apply_docs(self, docs: list[dict]) -> None:
        """Apply manifests straight to this fake (what the pipeline applied, in another process)."""
        for doc in docs:
            doc = json.loads(json.dumps(doc))
            doc["metadata"]["namespace"] = NS
            if doc["kind"] == "PersistentVolumeClaim":
                path = f"/api/v1/namespaces/{NS}/persistentvolumeclaims/{doc['metadata']['name']}"
            else:
                path = resource_path(doc["apiVersion"], doc["kind"], NS, doc["metadata"]["name"])
            self.request("patch", path, body=doc, content_type="application/apply-patch+yaml",
                         query=[("fieldManager", FIELD_MANAGER), ("force", "true")])

    # -- the API surface
    def request(self, method, path, *, query=(), body=None, content_type=None, timeout_s=10.0):
        if method == "get" and path == POD_PATH:
            self._refresh_trainer()
        if method == "delete" and path.startswith(JOB_PATH) and path[len(JOB_PATH):] in self.volume_jobs:
            self._stop_volume_job(path[len(JOB_PATH):])
        answer = super().request(method, path, query=query, body=body, content_type=content_type, timeout_s=timeout_s)
        if method == "patch" and path == STS_PATH + "/scale":
            self._scale_registry(int(body["spec"]["replicas"]))
        return answer

    def _scale_registry(self, replicas: int) -> None:
        from hadrlab.processes import http_status, wait_until

        pid = int(self.local["registry"]["pid"])
        sts = self.objects[STS_PATH]
        if replicas == 0:
            os.kill(pid, signal.SIGSTOP)
            with self.lock:
                self.objects.pop(f"{POD_PATH}/registry-0", None)
        else:
            os.kill(pid, signal.SIGCONT)
            wait_until(lambda: http_status(self.local["registry"]["url"] + "/healthz") == 200, timeout_s=20,
                       describe="the local registry to answer again")
            self._put_pod("registry-0", {"app": "registry", "container": "registry"})
        gen = sts["metadata"]["generation"]
        sts["status"] = {"observedGeneration": gen, "currentRevision": "r1", "updateRevision": "r1",
                         "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas}

    def exec(self, namespace, pod, container, command, timeout_s=10.0):
        self.exec_calls.append((pod, container, list(command)))
        if pod in self.volume_pods:
            return self._exec_volume_pod(pod, command)
        if self.fs_view and pod in self.redis and command[4:] == ["DEBUG", "SEGFAULT"]:
            # The store belongs to the test's process: crash the server as the local
            # experiment does (SIGKILL); nothing here restarts it.
            assert self.fs.current_primary() == pod.split("-")[1], "the store crashes the primary only"
            os.kill(self.fs.pids[pod], signal.SIGKILL)
            return 1, "", "Error: Server closed the connection\n"
        if pod in self.redis or pod in self.sentinels:
            return super().exec(namespace, pod, container, command, timeout_s)
        if command[0] == "cat":
            if pod.startswith("trainer-") and command[1].startswith("/var/lib/trainer/") \
                    and command[1].endswith("/status.json"):
                path = Path(self.local["trainer"]["checkpoint_dir"]) / "status.json"
                if path.exists():
                    return 0, path.read_text(), ""
            return 1, "", f"cat: {command[1]}: No such file or directory\n"
        assert command[:2] == ["python", "-c"], command
        script, args = command[2], command[3:]
        if pod == "registry-0":
            args = [self._model(a) for a in args]
            return self._python(script, args, {"PORT": self._registry_port(), "REGISTRY_TOKEN": self.local["registry"]["token"]})
        if pod.startswith("trainer-"):
            if script == SIGNAL_SCRIPT:
                pid = self._trainer_pid()
                os.kill(pid, int(args[0]))
                if int(args[0]) == signal.SIGKILL:
                    self.killed_pids.add(pid)
                    self.objects[f"{POD_PATH}/{pod}"]["status"] = {"phase": "Failed", "conditions": [
                        {"type": "Ready", "status": "False"}]}
                return 0, f"{pid}\n", ""
            return self._python(script, args, {"REDIS_URL": self.local["redis_url"], "TRAINING_KEY": "training:fraud"})
        raise AssertionError(f"the pipeline loopback does not model exec in {pod}: {command[:3]}")

    def _exec_volume_pod(self, pod: str, command: list[str]) -> tuple[int, str, str]:
        child = self.volume_pods[pod]
        if command[0] == "cat":
            path = Path(self._vol(command[1]))
            if path.exists():
                return 0, path.read_text(), ""
            return 1, "", f"cat: {command[1]}: No such file or directory\n"
        assert command[:3] == ["python", "-c", SIGNAL_SCRIPT], command
        if not child.alive():
            return 3, "", ""
        os.kill(child.pid, int(command[3]))
        return 0, f"{child.pid}\n", ""

    def logs(self, namespace, pod, container=None, *, timestamps=False, timeout_s=10.0):
        if pod in self.volume_pods:
            return self.volume_pods[pod].log_path.read_text()
        return super().logs(namespace, pod, container, timestamps=timestamps, timeout_s=timeout_s)

    def resume_registry(self) -> None:
        """Teardown: never leave the local registry frozen."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(self.local["registry"]["pid"]), signal.SIGCONT)


def _store_view(fs: dict) -> SimpleNamespace:
    """What a ``chaos run`` process knows of the test's local feature store: addresses, pids, password."""
    regions = {name: SimpleNamespace(name=name, address=r["address"], port=int(r["address"].rsplit(":", 1)[1]),
                                     pid=r["pid"]) for name, r in fs["regions"].items()}
    sentinels = [SimpleNamespace(site=site, port=int(address.rsplit(":", 1)[1]))
                 for site, address in zip(("a", "b", "witness"), fs["env"]["SENTINELS"].split(","))]
    view = SimpleNamespace(region_a=regions["a"], region_b=regions["b"], sentinels=sentinels,
                           password=fs["env"]["REDIS_PASSWORD"],
                           pids={f"redis-{n}-0": r.pid for n, r in regions.items()})

    def current_primary() -> str:
        import redis

        for s in reversed(sentinels):  # the witness first, as the local store asks
            with contextlib.suppress(redis.RedisError):
                client = redis.Redis(port=s.port, password=view.password, socket_timeout=1)
                host, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", fs["env"]["SENTINEL_MASTER"])
                client.close()
                return next(n for n, r in regions.items() if r.port == int(port))
        raise AssertionError("no Sentinel of the local store answered")
    view.current_primary = current_primary
    return view


def activity_api(state: dict, local_state: str) -> PipelineLoopbackKube:
    """The API object of a ``chaos run`` process: the same fake cluster, rebuilt from the state."""
    from hadrlab.chaos import Hardening, PipelineSizes
    from hadrlab.platform.kube_pipeline import pipeline_manifests

    api = PipelineLoopbackKube(local_state)
    api.apply_docs(pipeline_manifests(Hardening(**state["hardening"]), name=state["name"],
                                      sizes=PipelineSizes(**state["sizes"]), run=state["run"]))
    return api
