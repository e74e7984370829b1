"""Lab 02's cluster feature store (hadrlab.platform.kube_featurestore) against REAL Redis and
Sentinel, through a fake API server that maps pods to local processes.

No cluster runs here, so this is the closest real thing: every exec the store makes runs
the real ``redis-cli`` against the local feature store's servers (the pod name picks the
server), every probe Job runs the real ``python -m hadrlab.featurestore`` probe as a local
process, and pod logs are those processes' logs. It proves the store's parsing of real
redis-cli and Sentinel output, the probe programs, and the measurements' logic end to end;
what it cannot prove (scheduling, DNS names, the image) is listed in infra/kind/README.md.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import pytest
from kube_fake import NS, POD_PATH, FakeKube

from hadrlab.featurestore import start_feature_store
from hadrlab.platform.kube import KubePlatform
from hadrlab.platform.kube_featurestore import KubeFeatureStore, start_kube_feature_store
from hadrlab.processes import start_process

pytestmark = pytest.mark.timeout(120)

JOB_PATH = f"/apis/batch/v1/namespaces/{NS}/jobs/"


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
                self.fs.restart_old_primary(timeout_s=20)

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
        if "--redis" in args:
            target = args[args.index("--redis") + 1]
            args[args.index("--redis") + 1] = self.redis[target.split(".")[0]].address
        child = start_process(f"job-{name}", [sys.executable, "-m", "hadrlab.featurestore", *args], env=env)
        pod_name = f"{name}-pod"
        self.jobs[name] = {"child": child, "pod": pod_name}
        self.put(f"{POD_PATH}/{pod_name}", {"metadata": {"name": pod_name, "labels": {"job-name": name}},
                                             "status": {"phase": "Running"}})

    def request(self, method, path, *, query=(), body=None, content_type=None, timeout_s=10.0):
        name = path[len(JOB_PATH):] if path.startswith(JOB_PATH) else None
        if name in self.jobs:
            child = self.jobs[name]["child"]
            if method == "delete":
                child.stop(timeout_s=2)
            elif method == "get" and path in self.objects and child.popen.poll() is not None:
                self.objects[path]["status"] = {"succeeded": 1} if child.popen.returncode == 0 else {"failed": 1}
        return super().request(method, path, query=query, body=body, content_type=content_type, timeout_s=timeout_s)

    def stop_jobs(self) -> None:
        for job in self.jobs.values():
            job["child"].stop(timeout_s=2)
        for restart in self.restarts:
            restart.join(timeout=30)


def _with_rfc3339(line: str) -> str:
    """A redis-server log line, prefixed with the kubelet's timestamp (from the line's own)."""
    try:
        stamp = " ".join(line.split()[1:5])  # "27 Nov 2026 23:40:01.123"
        local = datetime.strptime(stamp, "%d %b %Y %H:%M:%S.%f").astimezone()
    except (ValueError, IndexError):
        return ""
    utc = local.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}000Z {line}\n"


@pytest.fixture
def loopback():
    fs = start_feature_store(down_after_ms=800, timeout_s=30)
    api = LoopbackKube(fs)
    platform = KubePlatform(api=api, namespace=NS, quiet=True, watch=False)
    try:
        yield api, platform
    finally:
        api.stop_jobs()
        platform.close()
        fs.stop()


def test_start_reads_the_real_primary_replication_and_sentinel_discovery(loopback) -> None:
    api, platform = loopback
    store = start_kube_feature_store(platform, down_after_ms=800, timeout_s=30)
    assert store.current_primary() == "a"
    assert store.role("a") == "master" and store.role("b") == "slave"
    assert store.info("b")["master_link_status"] == "up"
    assert store.replication_lag_bytes() >= 0 and store._discovered()
    assert store.startup_s is not None and store.startup_s < 30


def test_write_rto_through_a_probe_job_follows_the_real_failover(loopback) -> None:
    api, platform = loopback
    store = KubeFeatureStore(platform, down_after_ms=800)
    result = store.measure_write_rto(kill="primary", steady_s=0.5, timeout_s=20, start_timeout_s=20)
    print(result)
    assert (result.old_primary, result.new_primary) == ("a", "b"), result
    # Sentinel: down-after 0.8 s + ~1.25 s; generous bounds on a shared machine.
    assert 1.0 < result.rto_s < 10, result
    assert result.failed_writes > 0
    kinds = set(result.events["kind"])
    assert {"kill", "+sdown", "+switch-master"} <= kinds, kinds
    switch = result.events[result.events["kind"] == "+switch-master"]["t"].iloc[0]
    assert result.t_fault < switch < result.t_fault + result.rto_s + 1
    assert not any(j["child"].alive() for j in api.jobs.values()), "the probe Job is deleted afterwards"


@pytest.mark.parametrize("mode", ["wait", "async"])
def test_rpo_of_a_crash_while_the_replica_is_frozen(loopback, mode: str) -> None:
    api, platform = loopback
    store = KubeFeatureStore(platform, down_after_ms=800)
    result = store.measure_rpo(mode=mode, writes_per_s=200, duration_s=1.5, lag_fault="pause", pause_s=0.5,
                               start_timeout_s=20, failover_timeout_s=20)
    print(result)
    assert result.acknowledged > 50 and store.current_primary() == "b", result
    if mode == "wait":
        # WAIT could not confirm the writes made while the replica slept: none was acknowledged, none lost.
        assert result.lost_acknowledged == 0 and result.unconfirmed >= 1, result
    else:
        # ~0.5 s of 64 KiB writes were acknowledged while the replica slept; what the primary
        # could not send yet died with it.
        assert result.lost_acknowledged > 10 and result.lag_ms_at_kill > 200, result


def test_after_a_crash_the_restarted_server_rejoins_and_the_next_trial_runs(loopback) -> None:
    """The notebook's order: a write RTO trial, then RPO trials on the same store."""
    api, platform = loopback
    store = KubeFeatureStore(platform, down_after_ms=800)
    first = store.measure_write_rto(kill="primary", steady_s=0.5, timeout_s=20, start_timeout_s=20)
    assert first.new_primary == "b", first
    store.wait_until_linked(timeout_s=60)  # region a is back, as b's replica
    assert store.role("a") == "slave" and store.info("a")["master_link_status"] == "up"
    second = store.measure_rpo(mode="wait", writes_per_s=200, duration_s=1.0, start_timeout_s=20,
                               failover_timeout_s=20)
    assert second.acknowledged > 20 and second.lost_acknowledged == 0 and store.current_primary() == "a", second
