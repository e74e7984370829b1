"""The loopback cluster for Lab 02's scoring services: fraud.yaml's pods as real local processes.

The fake API server of tests/kube_loopback.py, extended: every pod that infra/k8s/fraud.yaml
asks for (two fraud-api pods with their sidecars, the alert receiver, the feature writer)
is backed by the REAL local process its container command names, started with the
container's own environment. Only what is cluster-specific is translated: in-cluster names
(``redis-a-0.redis-a:6379``, ``sentinel-w-0.sentinel:26379``, ``http://alert-receiver``)
become the local feature store's and services' addresses, ports become free ports, mounted
ConfigMaps become folders. Everything else (the sidecar's settings, the learner's policy,
the writer's rate, ``WRITER_LOG=-``) reaches the process as the manifest says, so a variable
the module does not read, or reads differently, shows here. The seed Job runs ``python -m
hadrlab.platform.kube_fraud seed`` as a local process. The settings that infra/k8s/redis.yaml's
StatefulSets carry (Sentinel's down-after and failover-timeout, Redis' min-replicas-to-write)
reach the local servers when those StatefulSets are applied, and a crashed Redis stays down
their RESTART_DELAY_S, as the manifest's wrapper keeps it. The one thing faked beyond the
API server is ``kubectl port-forward`` to a pod: it returns that pod's sidecar's local address.

Used by tests/integration/test_kube_fraud_loopback.py and by the Lab 02 notebook test
(tests/notebooks/test_lab02_on_the_loopback_cluster.py), whose kernel imports it: it needs
the tests folder on ``sys.path`` and nothing from pytest.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from pathlib import Path

from kube_loopback import JOB_PATH, NS, POD_PATH, LoopbackKube, restart_like_the_kubelet

from hadrlab.platform.kube import KubePlatform
from hadrlab.processes import find_free_port, start_process, wait_for_http

__all__ = ["API_NODEPORT", "CM_PATH", "NODES", "NS", "RECEIVER_NODEPORT", "FraudLoopback", "LoopbackPlatform"]

CM_PATH = f"/api/v1/namespaces/{NS}/configmaps"
STS_PATH = f"/apis/apps/v1/namespaces/{NS}/statefulsets/"
NODES = {"hadrlab-worker": "region-a", "hadrlab-worker2": "region-b"}
API_NODEPORT, RECEIVER_NODEPORT = 30081, 30083


class FraudLoopback(LoopbackKube):
    """The loopback cluster, with fraud.yaml's Deployments and the seed Job as local processes."""

    def __init__(self, fs, tmp_path: Path) -> None:
        super().__init__(fs)
        self.tmp = tmp_path
        self.host_ports = {API_NODEPORT: find_free_port(), RECEIVER_NODEPORT: find_free_port()}
        self.pods: dict[str, dict] = {}  # pod -> {"deployment", "children": {container: Child}, "ports"}
        self.running: dict[str, tuple[str, int]] = {}  # deployment -> (template, replicas) its pods run
        self.started: list[tuple[str, str, dict]] = []  # (pod, container, env the process got)
        self.n = 0
        self.on_apply.append(self._applied)
        self.on_apply.append(self._statefulset_settings)
        for node, region in NODES.items():
            self.put(f"/api/v1/nodes/{node}", {"metadata": {"name": node, "labels": {
                "topology.kubernetes.io/region": region}}}, event=None)

    # -- in-cluster names -> local addresses
    def _addresses(self) -> dict[str, str]:
        out = {f"{pod}.redis-{r.name}:6379": r.address for pod, r in self.redis.items()}
        out.update({f"{pod}.sentinel:26379": f"127.0.0.1:{s.port}" for pod, s in self.sentinels.items()})
        return out

    def _receiver_url(self) -> str:
        return f"http://127.0.0.1:{self.host_ports[RECEIVER_NODEPORT]}"

    def _mounts(self, pod: str, spec: dict, container: dict) -> dict[str, str]:
        """Write each mounted ConfigMap into a folder; return {mountPath: folder}."""
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        out = {}
        for mount in container.get("volumeMounts") or []:
            source = volumes[mount["name"]]["configMap"]["name"]
            folder = self.tmp / pod / mount["name"]
            folder.mkdir(parents=True, exist_ok=True)
            for key, text in self.objects[f"{CM_PATH}/{source}"]["data"].items():
                (folder / key).write_text(text)
            out[mount["mountPath"]] = str(folder)
        return out

    def _env(self, container: dict, *, port: int | None, sidecar_url: str | None, mounts: dict[str, str]) -> dict:
        addresses = self._addresses()
        env = {}
        for item in container.get("env") or []:
            name = item["name"]
            if "valueFrom" in item:
                ref = item["valueFrom"]["secretKeyRef"]
                assert (ref["name"], ref["key"]) == ("redis-auth", "password"), item
                env[name] = self.fs.password
                continue
            value = item["value"]
            if name in ("REDIS_A", "REDIS_B", "SENTINELS"):
                value = ",".join(addresses[a] for a in value.split(","))  # KeyError: a name redis.yaml lacks
            elif name == "PORT":
                assert int(value) in {p["containerPort"] for p in container["ports"]}, container["name"]
                value = str(port)
            elif name == "HOST":
                assert value == "0.0.0.0", "a server on 127.0.0.1 is unreachable from outside its pod"
                value = "127.0.0.1"
            elif name == "SIDECAR_URL":
                assert value == "http://127.0.0.1:8081", "the sidecar shares the pod's network: localhost, its port"
                value = sidecar_url
            elif name == "ALERT_URL":
                assert value.startswith("http://alert-receiver/"), value
                value = self._receiver_url() + value[len("http://alert-receiver"):]
            elif value in mounts:
                value = mounts[value]
            env[name] = value
        return env

    # -- redis.yaml's StatefulSets: their settings reach the local servers
    def _statefulset_settings(self, path: str, obj: dict) -> None:
        """Give the local servers the settings an applied StatefulSet of redis.yaml carries.

        On a cluster a changed StatefulSet rolls its pods, which start with the new settings;
        here the same servers keep running and get them with CONFIG SET / SENTINEL SET (a
        Redis restarted later by a crash gets them from the store's restart config).
        """
        if not path.startswith(STS_PATH):
            return
        name = obj["metadata"]["name"]
        spec = obj["spec"]["template"]["spec"]
        for restart in self.restarts:  # a crashed server coming back: as a rollout, after it
            restart.join(timeout=30)
        if name.startswith("sentinel-"):
            script = spec["initContainers"][0]["command"][-1]
            settings = {key: int(re.search(rf"sentinel {key} {self.fs.master_name} (\d+)", script).group(1))
                        for key in ("down-after-milliseconds", "failover-timeout")}
            sentinel = self.sentinels[f"{name}-0"]
            for key, value in settings.items():
                code, out, err = self._cli(sentinel.port, ["SENTINEL", "SET", self.fs.master_name, key, str(value)])
                assert code == 0 and out.strip() == "OK", (name, key, out, err)
            self.fs.down_after_ms = settings["down-after-milliseconds"]
        elif name in ("redis-a", "redis-b"):
            args = spec["containers"][0]["args"]
            wanted = int(args[args.index("--min-replicas-to-write") + 1]) if "--min-replicas-to-write" in args else 0
            region = self.fs.region(name[-1])
            self.fs._redis_config[region.name]["min-replicas-to-write"] = wanted  # what a restart starts with
            if region.redis.alive():
                code, out, err = self._cli(region.redis.port, ["CONFIG", "SET", "min-replicas-to-write", str(wanted)])
                assert code == 0 and out.strip() == "OK", (name, out, err)

    # -- a crashed Redis comes back as the manifest's wrapper brings it back
    def exec(self, namespace, pod, container, command, timeout_s=10.0):
        if pod in self.redis and list(command[4:]) == ["DEBUG", "SEGFAULT"]:
            self.exec_calls.append((pod, container, list(command)))
            return self._crash(pod)
        return super().exec(namespace, pod, container, command, timeout_s=timeout_s)

    def _restart_delay_s(self, region: str) -> float:
        """RESTART_DELAY_S of the applied StatefulSet redis-REGION (0 if none was applied)."""
        sts = self.objects.get(f"{STS_PATH}redis-{region}")
        if sts is None:
            return 0.0
        env = sts["spec"]["template"]["spec"]["containers"][0].get("env") or []
        return float(next((e["value"] for e in env if e["name"] == "RESTART_DELAY_S"), 0))

    def _crash(self, pod: str) -> tuple[int, str, str]:
        """DEBUG SEGFAULT of the primary: kill the local server; bring it back, empty, later.

        As on a cluster: the kubelet restarts the crashed container at once, and the
        manifest's wrapper keeps redis-server down RESTART_DELAY_S from the crash (when the
        StatefulSet was applied; else until Sentinel has failed over, as LoopbackKube does).
        A server back sooner than that is a candidate for a failover a cluster could not make.
        """
        region = self.redis[pod]
        assert self.fs.current_primary() == region.name, "the store crashes the primary only"
        crashed = time.monotonic()
        delay_s = self._restart_delay_s(region.name)
        self.fs.kill_primary()

        def come_back() -> None:
            self.fs.wait_for_failover(timeout_s=20)
            time.sleep(max(0.0, crashed + delay_s - time.monotonic()))
            restart_like_the_kubelet(self.fs, region)

        restart = threading.Thread(target=come_back, daemon=True, name=f"restart-{pod}")
        restart.start()
        self.restarts.append(restart)
        return 1, "", "Error: Server closed the connection\n"

    # -- Deployments: pods as processes
    def _applied(self, path: str, obj: dict) -> None:
        if "/deployments/" in path:
            self._reconcile(path)

    def request(self, method, path, *, query=(), body=None, content_type=None, timeout_s=10.0):
        answer = super().request(method, path, query=query, body=body, content_type=content_type, timeout_s=timeout_s)
        if method == "patch" and path.endswith("/scale") and "/deployments/" in path:
            self._reconcile(path[: -len("/scale")])
        return answer

    def _reconcile(self, path: str) -> None:
        """Make the processes match the Deployment: a new template or count replaces its pods."""
        dep = self.objects[path]
        name, n = dep["metadata"]["name"], int(dep["spec"].get("replicas", 1))
        template = json.dumps(dep["spec"]["template"], sort_keys=True)
        if self.running.get(name) != (template, n):
            for pod in [p for p, info in self.pods.items() if info["deployment"] == name]:
                self._stop_pod(pod)
            for i in range(n):
                self._start_pod(name, dep["spec"]["template"], i)
            self.running[name] = (template, n)
        dep["status"] = {"observedGeneration": dep["metadata"]["generation"], "replicas": n, "updatedReplicas": n,
                         "readyReplicas": n, "availableReplicas": n}

    def _start_pod(self, deployment: str, template: dict, i: int) -> None:
        self.n += 1
        pod = f"{deployment}-{self.n:05d}-{i}"
        spec = template["spec"]
        node = "hadrlab-worker2" if (deployment == "feature-writer" or i % 2) else "hadrlab-worker"
        ports = {}
        for c in spec["containers"]:
            if c.get("ports"):
                front = deployment == "fraud-api" and c["name"] == "fraud-api" and i == 0
                ports[c["name"]] = (self.host_ports[API_NODEPORT] if front else self.host_ports[RECEIVER_NODEPORT]
                                    if deployment == "alert-receiver" else find_free_port())
        info = {"deployment": deployment, "children": {}, "ports": ports}
        self.pods[pod] = info
        sidecar_port = next((ports[c["name"]] for c in spec["containers"]
                             if any(p["containerPort"] == 8081 for p in c.get("ports") or [])), None)
        for c in spec["containers"]:
            assert c["command"][:2] == ["python", "-m"], c["command"]
            env = self._env(c, port=ports.get(c["name"]), mounts=self._mounts(pod, spec, c),
                            sidecar_url=sidecar_port and f"http://127.0.0.1:{sidecar_port}")
            self.started.append((pod, c["name"], env))
            probe = (c.get("readinessProbe") or {}).get("httpGet")
            info["children"][c["name"]] = start_process(
                f"{pod}-{c['name']}", [sys.executable, *c["command"][1:]], port=ports.get(c["name"]), env=env,
                ready=(lambda child, p=probe["path"]: wait_for_http(child, p, timeout_s=30)) if probe else None)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.put(f"{POD_PATH}/{pod}", {
            "metadata": {"name": pod, "namespace": NS, "creationTimestamp": now,
                         "labels": dict(template["metadata"]["labels"]),
                         "ownerReferences": [{"kind": "ReplicaSet", "name": f"{deployment}-{self.n:05d}"}]},
            "spec": {"nodeName": node, "containers": spec["containers"]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": c["name"], "restartCount": 0, "state": {"running": {}}}
                                             for c in spec["containers"]]}})

    def _stop_pod(self, pod: str) -> None:
        for child in self.pods.pop(pod)["children"].values():
            child.stop(timeout_s=5)
        self.objects.pop(f"{POD_PATH}/{pod}", None)

    def stop_pods(self) -> None:
        for pod in list(self.pods):
            self._stop_pod(pod)

    def logs(self, namespace, pod, container=None, *, timestamps=False, timeout_s=10.0):
        if pod in self.pods:
            children = self.pods[pod]["children"]
            return children[container or next(iter(children))].log_path.read_text()
        return super().logs(namespace, pod, container, timestamps=timestamps, timeout_s=timeout_s)

    # -- the seed Job as a local process
    def _start_job(self, path: str, obj: dict) -> None:
        if not path.startswith(JOB_PATH):
            return
        spec = obj["spec"]["template"]["spec"]
        container = spec["containers"][0]
        if container["command"][:3] != ["python", "-m", "hadrlab.platform.kube_fraud"]:
            super()._start_job(path, obj)
            return
        name = obj["metadata"]["name"]
        mounts = self._mounts(f"job-{name}", spec, container)
        args = [next((a.replace(m, folder) for m, folder in mounts.items() if a.startswith(m + "/")), a)
                for a in container["command"][3:]]
        env = self._env(container, port=None, sidecar_url=None, mounts=mounts)
        child = start_process(f"job-{name}", [sys.executable, "-m", "hadrlab.platform.kube_fraud", *args], env=env)
        self.jobs[name] = {"child": child, "pod": f"{name}-pod"}
        self.put(f"{POD_PATH}/{name}-pod", {"metadata": {"name": f"{name}-pod", "labels": {"job-name": name}},
                                             "status": {"phase": "Running"}})


class LoopbackPlatform(KubePlatform):
    """KubePlatform whose pod port-forward returns the pod's local address (no kubectl here)."""

    def forward_pod(self, pod: str, port: int) -> str:
        info = self.api.pods[pod]
        container = next(c["name"] for c in json.loads(self.api.running[info["deployment"]][0])["spec"]["containers"]
                         if any(p["containerPort"] == port for p in c.get("ports") or []))
        self.forwarded = (pod, port)
        return f"http://127.0.0.1:{info['ports'][container]}"

    def stop_forward_pod(self, pod: str, port: int) -> None:
        self.forwarded = None
