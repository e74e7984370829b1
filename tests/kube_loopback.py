"""A fake API server whose pods are backed by local processes (the "loopback" cluster).

No cluster runs where this course is built and tested, so this is the closest real thing:
every exec runs the real ``redis-cli`` against a local feature store's servers (the pod name
picks the server), every probe Job runs the real ``python -m hadrlab.featurestore`` probe as a
local process, and pod logs are those processes' logs (a Redis pod's log is its server's).
Chaos Mesh's NetworkChaos objects (with ``chaos_mesh = True``) act on the local store's fault
proxies: a delay sets the region's proxy latency, a partition cuts the region off as the local
store does, and deleting the object undoes it. Subclass :class:`LoopbackKube` to back more pods
(the scoring services, the pipeline) with local processes.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

from kube_fake import NS, POD_PATH, FakeKube

from hadrlab.processes import start_process, wait_until

__all__ = ["CHAOS_PATH", "JOB_PATH", "NS", "POD_PATH", "LoopbackKube"]

JOB_PATH = f"/apis/batch/v1/namespaces/{NS}/jobs/"
CHAOS_PATH = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{NS}/networkchaos/"


class LoopbackKube(FakeKube):
    """The fake API server, with pods backed by the local feature store's processes."""

    def __init__(self, fs) -> None:
        super().__init__()
        self.fs = fs
        self.redis = {"redis-a-0": fs.region_a, "redis-b-0": fs.region_b}
        self.sentinels = {f"sentinel-{s.site[0]}-0": s for s in fs.sentinels}  # a, b, w(itness)
        self.jobs: dict = {}
        self.restarts: list[threading.Thread] = []
        self.on_apply.append(self._start_job)
        self.on_apply.append(self._network_chaos)
        for name in [*self.redis, *self.sentinels]:
            self.put(f"{POD_PATH}/{name}", {"metadata": {"name": name},
                                             "status": {"conditions": [{"type": "Ready", "status": "True"}]}})

    # -- what a pod name means here
    def _hostname(self, port: int) -> str:
        for pod, region in self.redis.items():
            if region.port == port:
                return f"{pod}.redis-{region.name}"
        return "127.0.0.1"

    def _cli(self, port: int, args: list[str]) -> tuple[int, str, str]:
        done = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=30,
                              env={"REDISCLI_AUTH": self.fs.password, "PATH": "/usr/bin:/bin"})
        return done.returncode, done.stdout, done.stderr

    def exec(self, namespace, pod, container, command, timeout_s=10.0):
        self.exec_calls.append((pod, container, list(command)))
        if pod in self.sentinels:
            assert command[:2] == ["sh", "-c"] and command[3:6] == ["redis-cli", "-p", "26379"], command
            code, out, err = self._cli(self.sentinels[pod].port, command[6:])
            if command[6:8] == ["SENTINEL", "GET-MASTER-ADDR-BY-NAME"] and code == 0:
                host, port = out.split()
                out = f"{self._hostname(int(port))}\n6379\n"
            return code, out, err
        region = self.redis[pod]
        assert command[:2] == ["sh", "-c"] and command[3] == "redis-cli", command
        args = command[4:]
        if args == ["DEBUG", "SEGFAULT"]:
            # The local servers run without enable-debug-command: crash the server the way
            # the local backend does (SIGKILL, the region's link reset), which is what
            # DEBUG SEGFAULT does to the pod's server. Then, as the kubelet restarts a
            # crashed container in place and the manifest's wrapper keeps a restart down
            # until Sentinel has failed over, bring it back (empty) on its address.
            assert self.fs.current_primary() == region.name, "the store crashes the primary only"
            self.fs.kill_primary()

            def come_back() -> None:
                self.fs.wait_for_failover(timeout_s=20)
                restart_like_the_kubelet(self.fs, region)

            restart = threading.Thread(target=come_back, daemon=True)
            restart.start()
            self.restarts.append(restart)
            return 1, "", "Error: Server closed the connection\n"
        if args[:2] == ["DEBUG", "SLEEP"]:
            region.redis.child.pause()
            time.sleep(float(args[2]))
            region.redis.child.resume()
            return 0, "OK\n", ""
        return self._cli(region.port, args)

    def logs(self, namespace, pod, container=None, *, timestamps=False, timeout_s=10.0):
        if pod in self.sentinels:
            return "".join(_with_rfc3339(line) for line in self.sentinels[pod].child.log_path.read_text().splitlines())
        if pod in self.redis:
            return "".join(_with_rfc3339(line) for line in self.redis[pod].redis.child.log_path.read_text().splitlines())
        for job in self.jobs.values():
            if job["pod"] == pod:
                return job["child"].log_path.read_text()
        return super().logs(namespace, pod, container, timestamps=timestamps)

    # -- Jobs as local processes
    def _start_job(self, path: str, obj: dict) -> None:
        if not path.startswith(JOB_PATH):
            return
        name = obj["metadata"]["name"]
        command = obj["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command[:3] == ["python", "-m", "hadrlab.featurestore"], command
        args, env = list(command[3:]), {"REDIS_PASSWORD": self.fs.password, "SENTINEL_PASSWORD": self.fs.password}
        if "--sentinels" in args:
            args[args.index("--sentinels") + 1] = ",".join(f"{h}:{p}" for h, p in self.fs.sentinel_addresses)
            args += ["--regions", f"a=127.0.0.1:{self.fs.region_a.port},b=127.0.0.1:{self.fs.region_b.port}"]
        for option in ("--redis", "--primary", "--replica"):
            if option in args:
                target = args[args.index(option) + 1]
                args[args.index(option) + 1] = self.redis[target.split(".")[0]].address
        child = start_process(f"job-{name}", [sys.executable, "-m", "hadrlab.featurestore", *args], env=env)
        pod_name = f"{name}-pod"
        self.jobs[name] = {"child": child, "pod": pod_name}
        self.put(f"{POD_PATH}/{pod_name}", {"metadata": {"name": pod_name, "labels": {"job-name": name}},
                                             "status": {"phase": "Running"}})

    # -- NetworkChaos as the local store's proxy faults
    def _chaos_region(self, obj: dict):
        selector = obj["spec"]["selector"]["nodeSelectors"]["topology.kubernetes.io/region"]
        return self.fs.region(selector.removeprefix("region-"))

    @staticmethod
    def _witness_part(obj: dict) -> bool:
        """The witness half of a partition: the local partition of the region covers it already."""
        nodes = ((obj["spec"].get("target") or {}).get("selector") or {}).get("nodeSelectors") or {}
        return "node-role.kubernetes.io/control-plane" in nodes

    def _network_chaos(self, path: str, obj: dict) -> None:
        if not path.startswith(CHAOS_PATH) or self._witness_part(obj):
            return
        region = self._chaos_region(obj)
        if obj["spec"]["action"] == "delay":
            region.proxy.set_latency(float(obj["spec"]["delay"]["latency"].removesuffix("ms")))
        elif obj["spec"]["action"] == "partition":
            self.fs.partition_region(region.name)  # blackholes its proxy, freezes its Sentinel

    def _undo_network_chaos(self, obj: dict) -> None:
        if self._witness_part(obj):
            return
        region = self._chaos_region(obj)
        if obj["spec"]["action"] == "delay":
            region.proxy.set_latency(0)
        elif obj["spec"]["action"] == "partition":
            region.proxy.blackhole(False)
            if region.sentinel is not None and region.sentinel.site in self.fs._paused_sentinels:
                region.sentinel.child.resume()
                self.fs._paused_sentinels.discard(region.sentinel.site)

    def request(self, method, path, *, query=(), body=None, content_type=None, timeout_s=10.0):
        if method == "delete" and path.startswith(CHAOS_PATH) and path in self.objects and not self.down:
            self._undo_network_chaos(self.objects[path])
        name = path[len(JOB_PATH):] if path.startswith(JOB_PATH) else None
        if name in self.jobs:
            child = self.jobs[name]["child"]
            if method == "delete":
                child.stop(timeout_s=2)
            elif method == "get" and path in self.objects and child.popen.poll() is not None:
                self.objects[path]["status"] = (  # as the Job controller reports an ended Job
                    {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
                    if child.popen.returncode == 0 else
                    {"failed": 1, "conditions": [{"type": "Failed", "status": "True"}]})
        return super().request(method, path, query=query, body=body, content_type=content_type, timeout_s=timeout_s)

    def stop_jobs(self) -> None:
        for job in self.jobs.values():
            job["child"].stop(timeout_s=2)
        for restart in self.restarts:
            restart.join(timeout=30)


def restart_like_the_kubelet(fs, region) -> None:
    """Bring a crashed server back on its port, empty, as the kubelet restarts its container.

    Only once the Sentinels have settled on the new primary: RESTART_DELAY_S keeps the
    crashed server down that long on a cluster (one back sooner can be promoted, empty, by
    a spurious second failover). No probing of the returned server: that is the lab's job
    (the cluster store's ``restart_old_primary`` reads it from the pod).
    """
    # (a frozen Sentinel does not answer: then skipped)
    with contextlib.suppress(Exception):
        wait_until(lambda: all(_names(s, fs.master_name) != region.port for s in fs.sentinels),
                   timeout_s=10, interval_s=0.1, describe="every Sentinel naming the new primary")
    with contextlib.suppress(Exception):
        fs.wait_until_settled(timeout_s=10)
    region.redis = fs._restart_on_port(region.name, region.redis.port, port_wait_s=65)
    fs._record("restart", f"redis-{region.name} back on {region.redis.address}, empty (kubelet)")


def _names(sentinel, master_name: str):
    """The primary's port as ``sentinel`` names it (None if it does not answer)."""
    try:
        client = sentinel.client(socket_timeout=0.5)
        try:
            return int(client.sentinel_get_master_addr_by_name(master_name)[1])
        finally:
            client.close()
    except Exception:
        return None


def _with_rfc3339(line: str) -> str:
    """A redis-server log line, prefixed with the kubelet's timestamp (from the line's own)."""
    try:
        stamp = " ".join(line.split()[1:5])  # "27 Nov 2026 23:40:01.123"
        local = datetime.strptime(stamp, "%d %b %Y %H:%M:%S.%f").astimezone()
    except (ValueError, IndexError):
        return ""
    utc = local.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}000Z {line}\n"
