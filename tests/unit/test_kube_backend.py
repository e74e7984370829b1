"""The kube backend's logic, against a fake of the Kubernetes API surface it uses.

The fake (tests/kube_fake.py) answers the way an API server does, so every code path runs
without a cluster. What only a real cluster can prove is listed in infra/kind/README.md.
"""

from __future__ import annotations

import copy
import threading
import time

import pytest

from hadrlab.errors import HadrError, ManifestError, ServiceNotReady
from hadrlab.platform.base import Replica
from hadrlab.platform.kube import KubePlatform, kind_host_ports, pod_transitions, resource_path, slice_transitions
from hadrlab.platform.manifests import load_manifest
from kube_fake import DEP_PATH, EVENT_PATH, NS, POD_PATH, SLICE_PATH, SVC_PATH, FakeKube, RedisCluster, api_error, pod


@pytest.fixture
def fake() -> FakeKube:
    return FakeKube()


@pytest.fixture
def platform(fake: FakeKube):
    plat = KubePlatform(api=fake, namespace=NS, host_ports={30080: 30080}, quiet=True, watch=False)
    yield plat
    plat.close()


@pytest.fixture
def applied(platform: KubePlatform, fake: FakeKube) -> KubePlatform:
    platform.apply("infra/k8s/model-api.yaml")
    for i, name in enumerate(("model-api-5d8f7-aaaaa", "model-api-5d8f7-bbbbb")):
        fake.put(f"{POD_PATH}/{name}", pod(name, created=f"2025-01-01T00:00:0{i}Z"))
    return platform


# ------------------------------------------------------------------ connection and set-up


def test_unreachable_cluster_is_refused_with_context_server_and_what_to_do(fake: FakeKube) -> None:
    fake.down = True
    with pytest.raises(HadrError) as info:
        KubePlatform(api=fake, watch=False)
    message = str(info.value)
    assert "kind-fake" in message and "https://127.0.0.1:6443" in message
    assert "python -m hadrlab.kind up" in message and "MaxRetryError" in message


def test_refused_credentials_say_how_to_refresh_the_kubeconfig(fake: FakeKube) -> None:
    fake.refuse["/version"] = (401, "Unauthorized")
    with pytest.raises(HadrError, match="kind export kubeconfig"):
        KubePlatform(api=fake, watch=False)


def test_the_namespace_is_created_by_server_side_apply(platform: KubePlatform, fake: FakeKube) -> None:
    assert fake.objects[f"/api/v1/namespaces/{NS}"]["kind"] == "Namespace"


def test_a_lost_connection_later_is_the_same_clear_error(platform: KubePlatform, fake: FakeKube) -> None:
    fake.down = True
    with pytest.raises(HadrError, match="Could not reach the Kubernetes API server"):
        platform.replicas("model-api")


# ------------------------------------------------------------------ apply / delete


def test_apply_creates_then_reports_unchanged_then_configured(platform: KubePlatform, fake: FakeKube) -> None:
    first = platform.apply("infra/k8s/model-api.yaml")
    assert [(o.kind, o.action) for o in first] == [
        ("Deployment", "created"), ("Service", "created"), ("PodDisruptionBudget", "created")]
    assert fake.objects[f"{DEP_PATH}/model-api"]["metadata"]["namespace"] == NS
    assert [o.action for o in platform.apply("infra/k8s/model-api.yaml")] == ["unchanged"] * 3
    docs = load_manifest("infra/k8s/model-api.yaml")
    docs[0]["spec"]["template"]["spec"]["containers"][0].pop("livenessProbe")
    again = platform.apply(docs)
    assert again[0].action == "configured"
    live = fake.objects[f"{DEP_PATH}/model-api"]["spec"]["template"]["spec"]["containers"][0]
    assert "livenessProbe" not in live  # server-side apply: the dropped field is gone
    assert "rollout-started" in set(platform.events()["kind"])


def test_apply_notes_that_a_cluster_service_does_not_retry(platform: KubePlatform) -> None:
    result = platform.apply("infra/k8s/model-api.yaml")
    assert any("local backend only" in note for note in result[1].notes)


@pytest.mark.parametrize("status", [409, 422])
def test_apply_refused_by_the_server_names_the_object_and_the_reason(platform: KubePlatform, fake: FakeKube, status: int) -> None:
    fake.refuse[("patch", f"{DEP_PATH}/model-api")] = (status, "spec.template.spec.containers[0].image: Required value")
    with pytest.raises(ManifestError, match=rf"Deployment 'model-api' \(HTTP {status}\).*Required value"):
        platform.apply("infra/k8s/model-api.yaml")


def test_apply_validates_strictly_before_calling_the_server(platform: KubePlatform, fake: FakeKube) -> None:
    docs = load_manifest("infra/k8s/model-api.yaml")
    docs[0]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 1
    calls = len(fake.calls)
    with pytest.raises(ManifestError, match="periodSecond"):
        platform.apply(docs)
    assert len(fake.calls) == calls


def test_delete_everything_is_idempotent(applied: KubePlatform, fake: FakeKube) -> None:
    applied.delete()
    assert f"{DEP_PATH}/model-api" not in fake.objects and f"{SVC_PATH}/model-api" not in fake.objects
    applied.delete("deployment/model-api")  # already gone: not an error
    applied.delete("infra/k8s/model-api.yaml")


def test_unknown_kind_without_a_served_api_is_a_clear_error(platform: KubePlatform, fake: FakeKube) -> None:
    fake.refuse["/apis/example.com/v1"] = (404, "not found")
    with pytest.raises(ManifestError, match="example.com/v1"):
        platform._path("example.com/v1", "Widget", "w")


# ------------------------------------------------------------------ replicas and faults


def test_replicas_read_ready_restarts_phase_and_version_from_pods(applied: KubePlatform, fake: FakeKube) -> None:
    fake.put(f"{POD_PATH}/model-api-5d8f7-ccccc", pod("model-api-5d8f7-ccccc", ready=False, restarts=3, running=False,
                                                       created="2025-01-01T00:00:05Z", version="v2"))
    fake.put(f"{POD_PATH}/other", {**pod("other"), "metadata": {**pod("other")["metadata"], "labels": {"app": "x"}}})
    reps = applied.replicas("model-api")
    assert [r.name for r in reps] == ["model-api-5d8f7-aaaaa", "model-api-5d8f7-bbbbb", "model-api-5d8f7-ccccc"]
    assert isinstance(reps[0], Replica) and reps[0].ready and reps[0].port == 8000 and reps[0].phase == "Running"
    assert (reps[2].phase, reps[2].ready, reps[2].restarts, reps[2].version) == ("CrashLoopBackOff", False, 3, "v2")


def test_missing_deployment_is_a_clear_error(platform: KubePlatform) -> None:
    with pytest.raises(HadrError, match="no Deployment 'nope'.*Apply its manifest"):
        platform.replicas("nope")


def test_kill_sends_sigkill_to_the_child_of_pid_1_through_exec(applied: KubePlatform, fake: FakeKube) -> None:
    name = applied.kill_replica("model-api")
    assert name == "model-api-5d8f7-aaaaa"
    pod_name, container, command = fake.exec_calls[-1]
    assert (pod_name, container, command[:2], command[-1]) == (name, "model-api", ["python", "-c"], "9")
    assert f"{POD_PATH}/{name}" in fake.objects  # a crash, not a deletion: restarts in place
    assert platform_event(applied, "killed")["detail"].startswith("SIGKILL pid 7")


def test_kill_falls_back_to_a_forced_delete_when_the_server_is_pid_1(applied: KubePlatform, fake: FakeKube) -> None:
    fake.exec_result = (3, "", "")
    name = applied.kill_replica("model-api")
    assert f"{POD_PATH}/{name}" not in fake.objects
    delete = [c for c in fake.calls if c[0] == "delete" and c[1].endswith(name)][-1]
    assert delete[2] == {"gracePeriodSeconds": 0}
    assert "PID 1" in platform_event(applied, "killed")["detail"]


def test_kill_falls_back_when_exec_is_forbidden(applied: KubePlatform, fake: FakeKube) -> None:
    fake.exec_result = api_error(403, 'pods "x" is forbidden: cannot create resource "pods/exec"')
    name = applied.kill_replica("model-api")
    assert f"{POD_PATH}/{name}" not in fake.objects
    assert "403" in platform_event(applied, "killed")["detail"]


def test_hang_and_resume_send_sigstop_and_sigcont(applied: KubePlatform, fake: FakeKube) -> None:
    name = applied.hang_replica("model-api", "model-api-5d8f7-bbbbb")
    assert fake.exec_calls[-1][2][-1] == "19"
    assert applied.resume_replica("model-api") == name  # the hung one, without naming it
    assert fake.exec_calls[-1][2][-1] == "18"
    assert list(applied.events()["kind"])[-2:] == ["hung", "resumed"]


def test_hang_refuses_when_the_signal_cannot_reach_the_server(applied: KubePlatform, fake: FakeKube) -> None:
    fake.exec_result = (3, "", "")
    with pytest.raises(HadrError, match="tini"):
        applied.hang_replica("model-api")


def test_verbs_pick_a_ready_pod_and_name_the_choices_when_asked_for_a_missing_one(applied: KubePlatform, fake: FakeKube) -> None:
    fake.put(f"{POD_PATH}/model-api-5d8f7-aaaaa", pod("model-api-5d8f7-aaaaa", ready=False))
    assert applied.kill_replica("model-api") == "model-api-5d8f7-bbbbb"
    with pytest.raises(HadrError, match="model-api-5d8f7-aaaaa"):
        applied.kill_replica("model-api", "model-api-zzz")


def test_delete_replica_is_graceful_and_can_wait(applied: KubePlatform, fake: FakeKube) -> None:
    name = applied.delete_replica("model-api", wait=True)
    delete = [c for c in fake.calls if c[0] == "delete"][-1]
    assert delete[1].endswith(name) and delete[2] == {}  # default grace period
    assert f"{POD_PATH}/{name}" not in fake.objects


# ------------------------------------------------------------------ scale and rollout


def test_scale_patches_the_scale_subresource(applied: KubePlatform, fake: FakeKube) -> None:
    applied.scale("model-api", 3)
    call = [c for c in fake.calls if c[1].endswith("/scale")][-1]
    assert call[3] == {"spec": {"replicas": 3}} and call[4] == "application/merge-patch+json"
    assert fake.objects[f"{DEP_PATH}/model-api"]["spec"]["replicas"] == 3


def test_rollout_to_a_version_patches_image_and_env(applied: KubePlatform, fake: FakeKube) -> None:
    revision = applied.rollout("model-api", version="v2", env={"SHUTDOWN_DRAIN_S": 0})
    container = fake.objects[f"{DEP_PATH}/model-api"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["image"] == "hadrlab/model-api:v2" and env["MODEL_VERSION"] == "v2" and env["SHUTDOWN_DRAIN_S"] == "0"
    assert revision == 2


def test_wait_for_rollout_follows_the_deployment_watch_until_done(applied: KubePlatform, fake: FakeKube) -> None:
    path = f"{DEP_PATH}/model-api"
    dep = fake.objects[path]
    dep["status"] = {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 1, "readyReplicas": 2, "availableReplicas": 2}
    applied._rolling.add("model-api")

    def progress() -> None:
        time.sleep(0.1)
        done = copy.deepcopy(dep)
        done["status"] = {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}
        fake.put(path, done, event="MODIFIED")

    threading.Thread(target=progress).start()
    assert applied.wait_for_rollout("model-api", timeout_s=10) < 5
    assert platform_event(applied, "rollout-finished")["object"] == "model-api"


def test_wait_for_rollout_times_out_with_the_state_and_pods(applied: KubePlatform, fake: FakeKube) -> None:
    fake.objects[f"{DEP_PATH}/model-api"]["status"] = {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                                                        "readyReplicas": 1, "availableReplicas": 1}
    with pytest.raises(ServiceNotReady, match=r"2/2 updated, 1 ready.*model-api-5d8f7-aaaaa"):
        applied.wait_for_rollout("model-api", timeout_s=0.5)


# ------------------------------------------------------------------ service_url


def test_service_url_uses_the_kind_host_port_of_the_nodeport_overlay(applied: KubePlatform, fake: FakeKube) -> None:
    applied.apply("infra/k8s/kind/model-api-service.yaml")
    overlay = fake.objects[f"{SVC_PATH}/model-api-nodeport"]
    assert overlay["spec"]["ports"][0]["nodePort"] == 30080
    assert applied.service_url("model-api") == "http://127.0.0.1:30080"


def test_service_url_without_a_mapping_needs_kubectl_for_a_port_forward(applied: KubePlatform, monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(HadrError, match="kubectl.*not on PATH"):
        applied.service_url("model-api")


def test_service_url_of_a_missing_service_says_apply_first(platform: KubePlatform) -> None:
    with pytest.raises(HadrError, match="no Service 'nope'"):
        platform.service_url("nope")


def test_kind_host_ports_reads_the_cluster_config() -> None:
    assert kind_host_ports()[30080] == 30080


# ------------------------------------------------------------------ chaos mesh


def test_network_faults_need_chaos_mesh_and_say_so(platform: KubePlatform) -> None:
    assert platform.has_chaos_mesh() is False
    with pytest.raises(HadrError, match="needs Chaos Mesh"):
        platform.delay_region("region-a", 100)


def test_network_delay_applies_a_networkchaos_on_the_region(fake: FakeKube) -> None:
    fake.chaos_mesh = True
    plat = KubePlatform(api=fake, namespace=NS, quiet=True, watch=False)
    try:
        plat.delay_region("region-a", 100)
        chaos = fake.objects[f"/apis/chaos-mesh.org/v1alpha1/namespaces/{NS}/networkchaos/delay-region-a"]
        assert chaos["spec"]["delay"]["latency"] == "100ms"
        assert chaos["spec"]["selector"]["nodeSelectors"] == {"topology.kubernetes.io/region": "region-a"}
        plat.partition_region("region-a")
        cut = lambda name: fake.objects[f"/apis/chaos-mesh.org/v1alpha1/namespaces/{NS}/networkchaos/{name}"][  # noqa: E731
            "spec"]["target"]["selector"]["nodeSelectors"]
        # Cut off from the other region AND from the witness's node: a partition the witness
        # could see through would leave two Sentinels of three calling region A healthy.
        assert cut("partition-region-a") == {"topology.kubernetes.io/region": "region-b"}
        assert cut("partition-region-a-witness") == {"node-role.kubernetes.io/control-plane": ""}
        assert plat.clear_faults() == 3
    finally:
        plat.close()


# ------------------------------------------------------------------ events


def test_pod_transitions_cover_start_ready_crash_and_deletion() -> None:
    started = pod("p", ready=False)
    assert pod_transitions(None, started) == [("started", "container running on node hadrlab-worker")]
    state = {"ready": False, "running": True, "restarts": 0, "deleting": False}
    assert pod_transitions(state, pod("p")) == [("ready", "Ready condition True")]
    ready = {**state, "ready": True}
    crashed = pod_transitions(ready, pod("p", ready=False, restarts=1, last_exit=137))
    assert [k for k, _ in crashed] == ["exited", "restarted", "unready"]
    assert "exit code 137" in crashed[1][1]
    assert [k for k, _ in pod_transitions(ready, pod("p", deleting=True, ready=False))] == ["terminating", "unready"]
    assert pod_transitions(ready, None, deleted=True) == [("unready", "pod deleted"), ("exited", "pod deleted")]


def test_slice_transitions_follow_ready_endpoints() -> None:
    def slice_(**ready):
        return {"endpoints": [{"addresses": ["10.0.0.1"], "targetRef": {"name": n}, "conditions": {"ready": r}}
                              for n, r in ready.items()]}
    assert slice_transitions(None, slice_(a=True, b=False)) == [("endpoint-added", "a")]
    assert slice_transitions(slice_(a=True, b=False), slice_(a=False, b=True)) == [
        ("endpoint-added", "b"), ("endpoint-removed", "a")]
    assert slice_transitions(slice_(a=True), None) == [("endpoint-removed", "a")]


def test_watches_turn_pod_slice_and_kubelet_events_into_the_timeline(fake: FakeKube) -> None:
    name = "model-api-5d8f7-aaaaa"
    fake.put(f"{POD_PATH}/{name}", pod(name), event=None)  # exists before the platform: seeded, no event
    plat = KubePlatform(api=fake, namespace=NS, quiet=True, watch=True)
    try:
        time.sleep(0.2)
        before = time.time()
        fake.put(f"{POD_PATH}/{name}", pod(name, ready=False, restarts=1, last_exit=137), event="MODIFIED")
        fake.emit(SLICE_PATH, "ADDED", {"metadata": {"name": "model-api-x", "labels": {"kubernetes.io/service-name": "model-api"}},
                                        "endpoints": [{"targetRef": {"name": name}, "conditions": {"ready": True}}]})
        fake.emit(SLICE_PATH, "MODIFIED", {"metadata": {"name": "model-api-x", "labels": {"kubernetes.io/service-name": "model-api"}},
                                           "endpoints": [{"targetRef": {"name": name}, "conditions": {"ready": False}}]})
        fake.emit(EVENT_PATH, "ADDED", {"metadata": {"name": "ev1"}, "reason": "Killing", "involvedObject": {"name": name},
                                        "message": "Container model-api failed liveness probe, will be restarted"})
        fake.emit(POD_PATH, "DELETED", pod(name))
        deadline = time.monotonic() + 5
        wanted = {"exited", "restarted", "unready", "endpoint-added", "endpoint-removed", "liveness-failed"}
        while time.monotonic() < deadline and not wanted <= set(plat.events()["kind"]):
            time.sleep(0.05)
        events = plat.events()
        assert wanted <= set(events["kind"]), list(events["kind"])
        assert list(events.columns) == ["t", "kind", "replica", "detail", "object"]
        assert (events["t"] >= before).all() and events["t"].is_monotonic_increasing
        row = events[events["kind"] == "restarted"].iloc[0]
        assert (row["replica"], row["object"]) == (name, "model-api")
        assert events[events["kind"] == "endpoint-removed"].iloc[0]["object"] == "model-api"
        assert "started" not in set(events["kind"])
    finally:
        plat.close()
    assert all(not t.is_alive() for t in plat._threads)


def test_close_is_idempotent_and_refuses_later_applies(platform: KubePlatform) -> None:
    platform.close()
    platform.close()
    with pytest.raises(HadrError, match="closed"):
        platform.apply("infra/k8s/model-api.yaml")


def test_resource_paths_of_namespaced_and_cluster_objects() -> None:
    assert resource_path("apps/v1", "Deployment", "ns", "d") == "/apis/apps/v1/namespaces/ns/deployments/d"
    assert resource_path("v1", "Namespace", None, "ns") == "/api/v1/namespaces/ns"
    with pytest.raises(ManifestError, match="does not know"):
        resource_path("example.com/v1", "Widget", "ns")


def platform_event(platform: KubePlatform, kind: str) -> dict:
    rows = platform.events()
    return rows[rows["kind"] == kind].iloc[-1].to_dict()


# ------------------------------------------------------------------ the real transport, no server


def _kubeconfig(tmp_path, server: str = "https://127.0.0.1:1") -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- cluster: {{server: "{server}", insecure-skip-tls-verify: true}}
  name: nowhere
contexts:
- context: {{cluster: nowhere, user: learner}}
  name: kind-nowhere
current-context: kind-nowhere
users:
- name: learner
  user: {{token: not-a-secret}}
""")
    return str(path)


def test_real_client_on_a_context_with_no_server_fails_fast_and_clearly(tmp_path) -> None:
    started = time.monotonic()
    with pytest.raises(HadrError) as info:
        KubePlatform(kubeconfig=_kubeconfig(tmp_path), watch=False)
    assert time.monotonic() - started < 20
    assert "https://127.0.0.1:1" in str(info.value) and "'kind-nowhere'" in str(info.value)


def test_real_client_names_the_contexts_when_the_asked_one_is_missing(tmp_path) -> None:
    with pytest.raises(HadrError, match=r"no context 'kind-hadrlab'.*kind-nowhere"):
        KubePlatform(kubeconfig=_kubeconfig(tmp_path), context="kind-hadrlab", watch=False)


def test_get_platform_kube_without_any_kubeconfig_says_how_to_make_one(tmp_path, monkeypatch) -> None:
    from hadrlab.platform import get_platform

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("HADRLAB_KUBE_CONTEXT", raising=False)
    with pytest.raises(HadrError, match="python -m hadrlab.kind up"):
        get_platform("kube")


# ------------------------------------------------------------------ Jobs, logs and Lab 02's feature store


def test_start_job_applies_a_one_shot_job_of_the_course_image_with_secret_env(platform: KubePlatform, fake: FakeKube) -> None:
    platform.start_job("probe-1", ["python", "-m", "hadrlab.featurestore", "write-probe"], env={"A": "1"},
                       secret_env={"REDIS_PASSWORD": ("redis-auth", "password")})
    job = fake.objects[f"/apis/batch/v1/namespaces/{NS}/jobs/probe-1"]
    pod_spec = job["spec"]["template"]["spec"]
    assert job["spec"]["backoffLimit"] == 0 and pod_spec["restartPolicy"] == "Never"
    container = pod_spec["containers"][0]
    assert container["image"] == "hadrlab/course:v1" and container["command"][:3] == ["python", "-m", "hadrlab.featurestore"]
    assert {"name": "A", "value": "1"} in container["env"]
    assert {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "password"}}} in container["env"]
    assert platform.job_pod("probe-1") is None and platform.job_logs("probe-1") == ""
    assert platform.job_state("probe-1") == "running"
    fake.put(f"{POD_PATH}/probe-1-x", {"metadata": {"name": "probe-1-x", "labels": {"job-name": "probe-1"}}})
    fake.pod_logs["probe-1-x"] = "t,ok,region,error\n"
    assert platform.job_logs("probe-1") == "t,ok,region,error\n"
    fake.objects[f"/apis/batch/v1/namespaces/{NS}/jobs/probe-1"]["status"] = {
        "failed": 1, "conditions": [{"type": "Failed", "status": "True"}]}
    assert platform.job_state("probe-1") == "failed"
    platform.delete_job("probe-1")
    platform.delete_job("probe-1")  # gone already: not an error
    assert f"/apis/batch/v1/namespaces/{NS}/jobs/probe-1" not in fake.objects


def test_pod_logs_of_a_pod_not_there_yet_is_empty_and_a_lost_server_is_the_clear_error(platform: KubePlatform, fake: FakeKube) -> None:
    assert platform.pod_logs("nope") == ""
    fake.down = True
    with pytest.raises(HadrError, match="Could not reach the Kubernetes API server"):
        platform.pod_logs("nope")


@pytest.fixture
def cluster(fake: FakeKube) -> RedisCluster:
    return RedisCluster(fake)


def test_redis_manifests_set_down_after_and_min_replicas_and_keep_the_rest() -> None:
    from hadrlab.platform.kube_featurestore import redis_manifests

    plain, tuned = redis_manifests(), redis_manifests(down_after_ms=450, min_replicas_to_write=1)
    script = lambda docs: next(d for d in docs if d["metadata"]["name"] == "sentinel-w" and d["kind"] == "StatefulSet")[  # noqa: E731
        "spec"]["template"]["spec"]["initContainers"][0]["command"][-1]
    assert "down-after-milliseconds features 1000" in script(plain)
    assert "down-after-milliseconds features 450" in script(tuned) and "features 1000" not in script(tuned)
    args = lambda docs, name: next(d for d in docs if d["metadata"]["name"] == name and d["kind"] == "StatefulSet")["spec"]["template"]["spec"][  # noqa: E731
        "containers"][0]["args"]
    assert "--min-replicas-to-write" not in args(plain, "redis-a")
    assert args(tuned, "redis-a")[-4:] == ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "10"]
    assert "--enable-debug-command" in args(plain, "redis-b")
    env = lambda docs, name: {e["name"]: e.get("value") for e in next(  # noqa: E731
        d for d in docs if d["metadata"]["name"] == name and d["kind"] == "StatefulSet")["spec"]["template"]["spec"][
        "containers"][0]["env"]}
    assert env(plain, "redis-a")["RESTART_DELAY_S"] == "8"  # as the manifest says, for down-after 1 s
    assert env(redis_manifests(down_after_ms=5000), "redis-b")["RESTART_DELAY_S"] == "11"
    from hadrlab.platform.manifests import validate_schema

    for doc in tuned:
        validate_schema(doc, source="redis_manifests()")


def test_a_changed_store_setting_rolls_every_redis_and_sentinel_statefulset_together() -> None:
    from hadrlab.platform.kube_featurestore import SETTINGS_ANNOTATION, redis_manifests

    def stamps(docs):
        return {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"][SETTINGS_ANNOTATION]
                for d in docs if d["kind"] == "StatefulSet"}

    plain, again, tuned = stamps(redis_manifests()), stamps(redis_manifests()), stamps(redis_manifests(min_replicas_to_write=1))
    assert set(plain) == {"redis-a", "redis-b", "sentinel-a", "sentinel-b", "sentinel-w"}
    assert plain == again, "the same settings must not roll anything"
    assert all(tuned[name] != plain[name] for name in plain), "min-replicas alone must roll the Sentinels too"


def test_kube_store_starts_reads_the_primary_and_crashes_it_from_inside_the_pod(platform: KubePlatform, fake: FakeKube, cluster: RedisCluster) -> None:
    from hadrlab.platform.kube_featurestore import start_kube_feature_store

    fs = start_kube_feature_store(platform, down_after_ms=700, timeout_s=10)
    assert fs.startup_s is not None and fs.current_primary() == "a"
    assert fs.replication_lag_bytes() == 1000
    assert all(fake.objects[f"/apis/apps/v1/namespaces/{NS}/statefulsets/sentinel-{site}"] for site in "abw")
    assert fs.kill_primary() == "a"
    assert fake.exec_calls[-1][:2] == ("redis-a-0", "redis")
    took = fs.wait_for_failover(timeout_s=5)
    assert 0.5 < took < 3 and fs.current_primary() == "b"
    events = fs.events()
    assert {"kill", "+switch-master"} <= set(events["kind"])
    switch = events[events["kind"] == "+switch-master"].iloc[0]
    assert switch["source"].startswith("sentinel-") and abs(switch["t"] - (cluster.crashed_at + 0.6)) < 0.01


def test_kill_refused_by_redis_says_how_to_restore_the_manifest_and_touches_nothing(platform: KubePlatform, fake: FakeKube) -> None:
    from hadrlab.platform.kube_featurestore import KubeFeatureStore

    RedisCluster(fake, debug_allowed=False)
    fs = KubeFeatureStore(platform)
    with pytest.raises(HadrError, match="enable-debug-command local.*git checkout infra/k8s/redis.yaml"):
        fs.kill_primary()
    assert f"{POD_PATH}/redis-a-0" in fake.objects and fs._last_fault is None
    assert not any(c[0] == "delete" for c in fake.calls)


def test_exec_exit_codes_come_from_the_status_channel() -> None:
    from hadrlab.platform.kube import exec_exit_code

    assert exec_exit_code('{"metadata":{},"status":"Success"}') == 0
    assert exec_exit_code('{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":'
                          '[{"reason":"ExitCode","message":"137"}]}}') == 137
    # a runtime error instead of a code, no status at all (the command cut the connection)
    assert exec_exit_code('{"status":"Failure","message":"OCI runtime exec failed"}') == -1
    assert exec_exit_code("") == -1 and exec_exit_code("not json") == -1


def test_probe_jobs_run_in_the_region_a_partition_leaves_them_in(platform: KubePlatform, fake: FakeKube, cluster: RedisCluster) -> None:
    from hadrlab.platform.kube_featurestore import KubeFeatureStore

    KubeFeatureStore(platform).measure_write_rto(steady_s=0.2, timeout_s=5, start_timeout_s=5)
    applied = [c[3] for c in fake.calls if c[0] == "patch" and "/jobs/" in c[1]]
    assert applied[0]["spec"]["template"]["spec"]["nodeSelector"] == {"topology.kubernetes.io/region": "region-b"}
    env = {e["name"] for e in applied[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"REDIS_PASSWORD", "SENTINEL_PASSWORD"} <= env


def test_kube_write_rto_is_read_from_the_probe_jobs_rows(platform: KubePlatform, fake: FakeKube, cluster: RedisCluster) -> None:
    from hadrlab.platform.kube_featurestore import KubeFeatureStore

    fs = KubeFeatureStore(platform, down_after_ms=500)
    result = fs.measure_write_rto(steady_s=0.3, timeout_s=5, start_timeout_s=5)
    assert (result.old_primary, result.new_primary) == ("a", "b")
    assert 0.55 < result.rto_s < 0.7, result  # the fake fails over 0.6 s after the crash
    assert result.failed_writes > 0 and set(result.errors) == {"ConnectionError"}
    assert result.ops["ok"].iloc[-1] and result.ops["region"].iloc[-1] == "b"
    assert not any("/jobs/" in path for path in fake.objects), "the probe Job is deleted afterwards"


@pytest.mark.parametrize("mode", ["async", "wait"])
def test_kube_rpo_counts_acknowledged_writes_missing_on_the_new_primary(platform: KubePlatform, fake: FakeKube,
                                                                       cluster: RedisCluster, mode: str) -> None:
    from hadrlab.platform.kube_featurestore import KubeFeatureStore

    fs = KubeFeatureStore(platform)
    result = fs.measure_rpo(mode=mode, duration_s=0.4, start_timeout_s=5, failover_timeout_s=5)
    assert result.acknowledged > 5 and result.unconfirmed == 1 and result.attempted == result.acknowledged + 1
    assert result.lost_acknowledged == (5 if mode == "async" else 0)
    assert result.lag_bytes_at_kill == 1000 and result.failover_s is not None
    assert not any("/jobs/" in path for path in fake.objects)


def test_a_probe_job_that_fails_is_an_error_with_its_log(platform: KubePlatform, fake: FakeKube, cluster: RedisCluster) -> None:
    from hadrlab.platform.kube_featurestore import KubeFeatureStore

    def broken(path: str, obj: dict) -> None:
        if "/jobs/" in path:
            fake.pod_logs[f"{obj['metadata']['name']}-pod"] = "ModuleNotFoundError: No module named 'hadrlab'\n"
            obj["status"] = {"failed": 1, "conditions": [{"type": "Failed", "status": "True"}]}  # backoffLimit 0: ended
    fake.on_apply.append(broken)
    with pytest.raises(HadrError, match="failed before its first write.*No module named"):
        KubeFeatureStore(platform).measure_write_rto(start_timeout_s=5)


def test_sentinel_log_lines_become_timed_events() -> None:
    from hadrlab.platform.kube_featurestore import parse_sentinel_log

    text = ("2026-11-27T23:40:01.250000000Z 1:X 27 Nov 2026 23:40:01.250 # +sdown master features redis-a-0.redis-a 6379\n"
            "2026-11-27T23:40:01.300000000Z 1:X 27 Nov 2026 23:40:01.300 * Sentinel new configuration saved on disk\n"
            "not a log line\n")
    rows = parse_sentinel_log(text, "sentinel-1")
    assert len(rows) == 1 and rows[0]["kind"] == "+sdown" and rows[0]["source"] == "sentinel-1"
    assert rows[0]["detail"] == "master features redis-a-0.redis-a 6379"
    assert abs(rows[0]["t"] - 1795822801.25) < 1e-6
