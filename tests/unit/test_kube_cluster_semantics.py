"""What a real cluster does that a lenient fake would hide: Chaos Mesh refusing a spec change and
keeping a deleted object until its fault is undone, the Job controller's interim conditions, a
refused exec's status hidden in a websocket error, and the objects a lab must not leave behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kube_fake import NS, FakeKube, RedisCluster, api_error
from kubernetes.client.exceptions import ApiException

from hadrlab.errors import HadrError
from hadrlab.platform.kube import KubeApi, KubePlatform, exec_handshake_error
from hadrlab.platform.kube_featurestore import start_kube_feature_store

CHAOS = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{NS}/networkchaos"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"


class ChaosMeshFake(FakeKube):
    """Chaos Mesh's rules: a chaos spec cannot change, and a deleted chaos object stays (being
    deleted) for ``linger`` reads, as its finalizer keeps it until the fault is undone."""

    def __init__(self, linger: int = 2) -> None:
        super().__init__()
        self.chaos_mesh = True
        self.linger = linger
        self.dying: dict[str, int] = {}
        self.log: list[str] = []

    def request(self, method, path, *, query=(), body=None, content_type=None, timeout_s=10.0):
        if path.startswith(CHAOS + "/"):
            name = path.rsplit("/", 1)[1]
            if method == "get" and path in self.dying:
                self.dying[path] -= 1
                if self.dying[path] <= 0:
                    del self.dying[path]
                    self.objects.pop(path, None)
                    self.log.append(f"gone {name}")
                    raise api_error(404, f"{path} not found")
            if method == "delete" and path in self.objects:
                self.objects[path]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
                self.dying[path] = self.linger
                self.log.append(f"delete {name}")
                return {"kind": "Status", "status": "Success"}
            if method == "patch" and path in self.objects:
                if path in self.dying:
                    raise AssertionError(f"applied onto {name} while it is being deleted: the new spec would be lost")
                if self.objects[path]["spec"] != body["spec"]:
                    raise api_error(403, 'admission webhook "vnetworkchaos.kb.io" denied the request: '
                                         "Cannot update chaos spec")
            if method == "patch":
                self.log.append(f"apply {name}")
        return super().request(method, path, query=query, body=body, content_type=content_type, timeout_s=timeout_s)


@pytest.fixture
def chaos_fake() -> ChaosMeshFake:
    return ChaosMeshFake()


@pytest.fixture
def platform(chaos_fake: ChaosMeshFake):
    plat = KubePlatform(api=chaos_fake, namespace=NS, quiet=True, watch=False)
    yield plat
    plat.close()


def test_a_new_latency_on_a_delayed_region_replaces_the_chaos_object_once_the_old_one_is_gone(
        platform: KubePlatform, chaos_fake: ChaosMeshFake) -> None:
    platform.delay_region("region-a", 5)
    platform.delay_region("region-a", 150)  # a spec change: refused by the webhook if patched
    assert chaos_fake.objects[f"{CHAOS}/delay-region-a"]["spec"]["delay"]["latency"] == "150ms"
    assert chaos_fake.log == ["apply delay-region-a", "delete delay-region-a", "gone delay-region-a",
                              "apply delay-region-a"]
    platform.delay_region("region-a", 150)  # the same fault again: left in place
    assert chaos_fake.log[-1] == "apply delay-region-a"


def test_clear_faults_returns_once_chaos_mesh_has_let_the_objects_go(
        platform: KubePlatform, chaos_fake: ChaosMeshFake) -> None:
    platform.delay_region("region-a", 5)
    platform.partition_region("region-b", "region-a")
    assert platform.clear_faults() == 3  # the delay, the partition from region A and from the witness
    assert not [p for p in chaos_fake.objects if p.startswith(CHAOS + "/")]


def test_a_chaos_object_that_never_goes_is_an_error_that_says_why(
        platform: KubePlatform, chaos_fake: ChaosMeshFake) -> None:
    platform.delay_region("region-a", 5)
    chaos_fake.linger = 10_000  # no chaos-daemon to undo the fault
    with pytest.raises(HadrError, match="delay-region-a still exist.*chaos-daemon"):
        platform.clear_faults(timeout_s=1)


def test_heal_and_stop_of_a_store_with_a_cross_region_latency_on_chaos_mesh(chaos_fake: ChaosMeshFake) -> None:
    RedisCluster(chaos_fake)
    platform = KubePlatform(api=chaos_fake, namespace=NS, quiet=True, watch=False)
    try:
        fs = start_kube_feature_store(platform, cross_region_latency_ms=5, timeout_s=10)
        fs.delay_region("a", 150)
        fs.heal()
        latencies = {o["metadata"]["name"]: o["spec"]["delay"]["latency"]
                     for p, o in chaos_fake.objects.items() if p.startswith(CHAOS + "/")}
        assert latencies == {"delay-region-a": "5ms", "delay-region-b": "5ms"}
        fs.stop()  # nothing may stay delayed after the lab
        assert not [p for p in chaos_fake.objects if p.startswith(CHAOS + "/")]
    finally:
        platform.close()


def test_the_sentinels_are_applied_only_after_the_redis_pods_rolled_out() -> None:
    fake = FakeKube()
    RedisCluster(fake)
    platform = KubePlatform(api=fake, namespace=NS, quiet=True, watch=False)
    try:
        start_kube_feature_store(platform, timeout_s=10)
    finally:
        platform.close()
    sts = "/apis/apps/v1/namespaces/hadrlab/statefulsets/"
    steps = [(m, p[len(sts):]) for m, p, *_ in fake.calls if p.startswith(sts) and "/" not in p[len(sts):]]
    first_sentinel = next(i for i, (m, n) in enumerate(steps) if m == "patch" and n.startswith("sentinel"))
    for redis in ("redis-a", "redis-b"):
        applied = steps.index(("patch", redis))
        assert ("get", redis) in steps[applied + 1:first_sentinel], f"{redis} not waited for before the Sentinels: {steps}"


def test_interim_job_conditions_are_not_the_end_of_the_job(platform: KubePlatform, chaos_fake: ChaosMeshFake) -> None:
    """From Kubernetes 1.31 FailureTarget / SuccessCriteriaMet come while the pods still terminate."""
    def job(name: str, status: dict) -> None:
        chaos_fake.put(f"{JOBS}/{name}", {"metadata": {"name": name}, "spec": {}, "status": status})

    job("j1", {"failed": 1, "terminating": 1, "conditions": [{"type": "FailureTarget", "status": "True"}]})
    assert platform.job_state("j1") == "running"
    job("j2", {"failed": 1, "conditions": [{"type": "FailureTarget", "status": "True"},
                                           {"type": "Failed", "status": "True"}]})
    assert platform.job_state("j2") == "failed"
    job("j3", {"succeeded": 1, "terminating": 1, "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}]})
    assert platform.job_state("j3") == "running"
    job("j4", {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    assert platform.job_state("j4") == "succeeded"


def test_a_foreground_job_deletion_asks_the_server_to_delete_the_pods_first(
        platform: KubePlatform, chaos_fake: ChaosMeshFake) -> None:
    chaos_fake.put(f"{JOBS}/trainer", {"metadata": {"name": "trainer"}, "spec": {}})
    platform.delete_job("trainer", foreground=True)
    platform.delete_job("trainer", foreground=True)  # gone: not an error
    deletes = [q for m, p, q, *_ in chaos_fake.calls if m == "delete" and p == f"{JOBS}/trainer"]
    assert deletes[0] == {"propagationPolicy": "Foreground"}


def test_a_refused_exec_carries_the_http_status_the_websocket_handshake_hid(monkeypatch) -> None:
    status = {"kind": "Status", "message": 'pods "registry-0" not found', "code": 404}
    hidden = ApiException(status=0, reason="Handshake status 404 Not Found -+-+- {'audit-id': 'x'} -+-+- b'"
                                           + json.dumps(status) + "'")
    refused = exec_handshake_error(hidden)
    assert refused.status == 404 and json.loads(refused.body)["message"] == 'pods "registry-0" not found'
    other = ApiException(status=0, reason="[Errno 111] Connection refused")
    assert exec_handshake_error(other) is other

    from kubernetes import client, stream

    def refuse(*args, **kwargs):
        raise ApiException(status=0, reason="Handshake status 400 Bad Request -+-+- {} -+-+- b''")

    monkeypatch.setattr(stream, "stream", refuse)
    api = object.__new__(KubeApi)
    api._client = client.ApiClient()
    with pytest.raises(ApiException) as caught:
        api.exec(NS, "trainer-x", "trainer", ["cat", "/x"])
    assert caught.value.status == 400


def test_a_policy_configmap_of_an_earlier_start_does_not_outlive_a_start_without_policy(monkeypatch) -> None:
    import hadrlab
    from hadrlab import processes
    from hadrlab.platform.kube_fraud import start_kube_fraud_services
    import importlib.util

    # The fraud tests' fakes (a Deployment rolls out at once, the seed Job succeeds).
    spec = importlib.util.spec_from_file_location("kube_fraud_fakes", Path(__file__).with_name("test_kube_fraud.py"))
    fakes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fakes)
    ForwardingPlatform, ServicesFake = fakes.ForwardingPlatform, fakes.ServicesFake

    fake = ServicesFake()
    leftover = f"/api/v1/namespaces/{NS}/configmaps/fraud-policy"
    fake.put(leftover, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fraud-policy"},
                        "data": {"my_policy.py": "class P: pass\n"}})
    platform = ForwardingPlatform(api=fake, namespace=NS, quiet=True, watch=False,
                                  host_ports={30081: 18080, 30083: 19093})
    monkeypatch.setattr(processes, "http_status", lambda url, timeout_s=1.0: 200)
    store = type("Store", (), {"platform": platform})()
    services = start_kube_fraud_services(store, transactions=hadrlab.generate_transactions(20, seed=2, n_cards=5),
                                         n_cards=5, timeout_s=10)
    assert leftover not in fake.objects
    fake.put(leftover, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fraud-policy"}, "data": {}})
    services.stop(delete=True)
    assert leftover not in fake.objects


def test_a_probe_job_whose_image_is_not_in_the_cluster_fails_at_once(platform: KubePlatform,
                                                                     chaos_fake: ChaosMeshFake) -> None:
    from hadrlab.platform.kube_featurestore import KubeFeatureStore

    fs = KubeFeatureStore(platform)
    job = fs._start_probe("write-probe", [], region="b")
    pods = f"/api/v1/namespaces/{NS}/pods"
    chaos_fake.put(f"{pods}/{job}-x", {"metadata": {"name": f"{job}-x", "labels": {"job-name": job}}, "status": {
        "phase": "Pending", "containerStatuses": [{"name": "main", "state": {"waiting": {
            "reason": "ErrImageNeverPull", "message": 'Container image "hadrlab/course:v1" is not present'}}}]}})
    with pytest.raises(HadrError, match="cannot start its pod.*ErrImageNeverPull.*kind up"):
        fs._wait_rows(job, lambda rows: False, timeout_s=60, what="its first write")
    fs.stop()
    assert f"{JOBS}/{job}" not in chaos_fake.objects
