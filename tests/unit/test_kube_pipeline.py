"""Lab 03's pipeline on the kube backend (hadrlab.platform.kube_pipeline) against the fake API server:
what is applied, the hardening's substitution, each fault's API calls, and the errors."""

from __future__ import annotations

import inspect
import json

import pytest
from kubernetes.client.exceptions import ApiException
from kube_fake import NS, POD_PATH, FakeKube

import hadrlab
from hadrlab import chaos
from hadrlab.errors import HadrError
from hadrlab.platform import kube_pipeline as kp
from hadrlab.platform.kube import SIGNAL_SCRIPT, KubePlatform

JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
STS = f"/apis/apps/v1/namespaces/{NS}/statefulsets/registry"


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def _doc(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_manifests_carry_the_hardening_and_the_local_sizes() -> None:
    docs = kp.pipeline_manifests(hadrlab.UNHARDENED, name="baseline", run="r1")
    online = _env(_doc(docs, "Deployment", "online-api")["spec"]["template"]["spec"]["containers"][0])
    assert (online["RETRIES"], online["BREAKER"], online["CACHE_FALLBACK"]) == ("0", "0", "0")
    assert (online["RELOAD_INTERVAL_S"], online["REGISTRY_TIMEOUT_S"]) == ("0.5", "0.5")
    trainer = _doc(docs, "Job", "trainer")
    spec = trainer["spec"]["template"]["spec"]
    env = _env(spec["containers"][0])
    assert (env["CHECKPOINT_EVERY"], env["CONTRACT"], env["GATE"], env["MAX_RUNS"]) == ("0", "0", "0", "0")
    assert env["STEPS_PER_RUN"] == "60" and env["MODEL_NAME"] == "fraud-baseline"
    assert env["CHECKPOINT_DIR"] == "/var/lib/trainer/baseline-r1"
    assert _env(spec["initContainers"][0])["TRAINING_KEY"] == env["TRAINING_KEY"] == "training:fraud:baseline:r1"
    assert trainer["spec"]["activeDeadlineSeconds"] == 3600
    assert not any(d["kind"] == "Job" and d["metadata"]["name"] == "batch-score" for d in docs)
    hard = kp.pipeline_manifests(hadrlab.HARDENED, name="hardened", run="r2")
    env = _env(_doc(hard, "Job", "trainer")["spec"]["template"]["spec"]["containers"][0])
    assert (env["CHECKPOINT_EVERY"], env["CONTRACT"], env["GATE"]) == ("10", "1", "1")
    KubePlatform._load(docs + hard)  # strict Kubernetes schema: the edits stay valid
    # In memory only: the file still says what it says.
    again = kp._load_docs()
    assert _env(_doc(again, "Job", "trainer")["spec"]["template"]["spec"]["containers"][0])["MAX_RUNS"] == "3"


def test_a_variable_missing_from_the_manifest_is_an_error_not_a_silent_addition() -> None:
    with pytest.raises(HadrError, match="has no variable NOPE.*git checkout infra/k8s/pipeline.yaml"):
        kp._set_env({"name": "trainer", "env": []}, "NOPE", 1)
    with pytest.raises(ValueError, match="lower-case"):
        kp.pipeline_manifests(name="Base Line")


def _state(**changes) -> dict:
    state = {"backend": "kube", "name": "p", "run": "r1", "context": "kind-fake", "namespace": NS, "api": None,
             "hardening": vars(hadrlab.HARDENED).copy(), "sizes": vars(chaos.PipelineSizes()).copy(),
             "registry": {"statefulset": "registry", "pod": "registry-0", "container": "registry"},
             "online": {"url": "http://127.0.0.1:1", "deployment": "online-api"},
             "trainer": {"job": "trainer", "container": "trainer", "checkpoint_dir": "/var/lib/trainer/p-r1",
                         "model": "fraud-p"},
             "training_data": {"rows": 3000, "seed": 0, "key": "training:fraud:p:r1"},
             "batch": {"template": "batch-score", "dir": "/var/lib/batch", "input": "/var/lib/batch/input.csv"}}
    state.update(changes)
    return state


@pytest.mark.parametrize("sentinel", [True, False])
def test_batch_job_follows_commit_mode_redis_and_retries(sentinel: bool) -> None:
    state = _state(hardening={**vars(hadrlab.UNHARDENED), "sentinel": sentinel})
    job = kp.batch_job_manifest(state, job="batch-p-1", output="/var/lib/batch/x.csv", redis="feature_store", retries=2)
    env = _env(job["spec"]["template"]["spec"]["containers"][0])
    assert job["spec"]["backoffLimit"] == 2 and env["COMMIT_MODE"] == "naive" and env["OUTPUT"] == "/var/lib/batch/x.csv"
    assert env["MODEL_NAME"] == "fraud-p"
    if sentinel:
        assert "sentinel-w-0.sentinel:26379" in env["SENTINELS"] and "REDIS_HOST" not in env
    else:
        assert env["REDIS_HOST"] == "redis-a-0.redis-a" and env["REDIS_PATIENCE_S"] == "1" and "SENTINELS" not in env
    KubePlatform._load([job])


@pytest.fixture
def fake(monkeypatch):
    api = FakeKube()
    platform = KubePlatform(api=api, namespace=NS, quiet=True, watch=False)
    monkeypatch.setattr(kp, "platform_of", lambda state: platform)
    yield api, platform
    platform.close()


def _trainer_pod(api: FakeKube, name: str = "trainer-abc", phase: str = "Running") -> None:
    api.put(f"{POD_PATH}/{name}", {"metadata": {"name": name, "labels": {"job-name": "trainer"},
                                                "creationTimestamp": "2026-01-01T00:00:00Z"},
                                   "spec": {"containers": [{"name": "trainer"}]}, "status": {"phase": phase}})


def test_registry_outage_through_chaos_scales_the_statefulset_to_zero(fake, tmp_path) -> None:
    api, platform = fake
    api.put(STS, {"metadata": {"name": "registry", "generation": 1}, "spec": {"replicas": 1}})
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(_state()))
    out = chaos.action_registry_outage(str(path))  # the experiment's entry point dispatches on "backend"
    assert out["replicas"] == 0
    scale = [c for c in api.calls if c[0] == "patch" and c[1] == STS + "/scale"]
    assert scale and scale[0][3] == {"spec": {"replicas": 0}}
    assert api.objects[STS]["spec"]["replicas"] == 0


def test_scaling_a_missing_statefulset_says_what_to_apply(fake) -> None:
    api, platform = fake
    with pytest.raises(HadrError, match="no StatefulSet 'registry'.*Apply its manifest"):
        platform.scale_statefulset("registry", 0)


def test_registry_slow_runs_the_fault_script_inside_the_registry_pod(fake, tmp_path) -> None:
    api, platform = fake
    api.exec_result = (0, '{"delay_ms": 1500, "error_rate": 0}\n', "")
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(_state()))
    assert chaos.action_registry_slow(str(path), delay_ms=1500) == {"delay_ms": 1500, "error_rate": 0}
    pod, container, command = api.exec_calls[-1]
    assert (pod, container) == ("registry-0", "registry")
    assert command == ["python", "-c", kp.REGISTRY_FAULTS_SCRIPT, "1500", "0"]
    api.exec_result = (1, "", "Traceback ... ConnectError")
    with pytest.raises(HadrError, match="Setting the registry's faults in pod registry-0 failed \\(exit 1\\)"):
        chaos.action_registry_clear_faults(str(path))


def test_trainer_status_is_read_in_its_running_pod(fake) -> None:
    api, platform = fake
    _trainer_pod(api)
    api.exec_result = (0, json.dumps({"pid": 7, "phase": "training", "step": 12, "models_registered": 2}), "")
    status = kp.read_trainer_status(_state())
    assert (status.step, status.models_registered) == (12, 2)
    assert api.exec_calls[-1] == ("trainer-abc", "trainer", ["cat", "/var/lib/trainer/p-r1/status.json"])


def test_no_running_trainer_pod_is_an_error_that_says_why_and_what_to_do(fake) -> None:
    api, platform = fake
    _trainer_pod(api, phase="Failed")
    api.put(f"{JOBS}/trainer", {"metadata": {"name": "trainer"}, "status": {"failed": 5, "conditions": [{"type": "Failed", "status": "True"}]}})
    with pytest.raises(HadrError, match="no running pod \\(newest: Failed; Job failed\\).*start_kube_pipeline"):
        kp.read_trainer_status(_state())


def test_kill_trainer_sends_sigkill_in_the_pod_and_refuses_a_pid1_worker(fake) -> None:
    api, platform = fake
    _trainer_pod(api)

    def handler(pod, container, command):
        if command[0] == "cat":
            return 0, json.dumps({"pid": 7, "phase": "training", "step": 40}), ""
        return handler.signal_result
    handler.signal_result = (0, "7\n", "")
    api.exec_handler = handler
    out = kp.kill_trainer(_state(), at_step=35, timeout_s=2)
    assert (out["pod"], out["step"]) == ("trainer-abc", 40)
    assert api.exec_calls[-1] == ("trainer-abc", "trainer", ["python", "-c", SIGNAL_SCRIPT, "9"])
    handler.signal_result = (3, "", "")
    with pytest.raises(HadrError, match="PID 1.*tini.*no substitute.*exit 0"):
        kp.kill_trainer(_state(), at_step=35, timeout_s=2)


def test_the_cluster_twins_keep_the_local_signatures() -> None:
    """Chaos Toolkit checks an experiment's arguments against these signatures."""
    assert list(inspect.signature(chaos.action_kill_trainer).parameters) == ["pipeline", "at_step", "timeout_s"]
    assert list(inspect.signature(chaos.action_registry_slow).parameters) == ["pipeline", "delay_ms", "error_rate"]
    for name, twin in (("action_kill_trainer", kp.kill_trainer), ("probe_trainer_recovery", kp.trainer_recovery),
                       ("action_registry_slow", kp.registry_faults), ("action_kill_batch_job", kp.kill_batch_job),
                       ("probe_batch_exactly_once", kp.batch_exactly_once),
                       ("action_start_batch_job", kp.start_batch_job),
                       ("action_fail_over_feature_store", kp.fail_over_feature_store)):
        local = list(inspect.signature(getattr(chaos, name)).parameters)[1:]
        assert list(inspect.signature(twin).parameters)[1:len(local) + 1] == local, name


def _ready_on_apply(api: FakeKube):
    def hook(path: str, obj: dict) -> None:
        kind, name = obj.get("kind"), obj["metadata"]["name"]
        if kind == "Deployment":
            n = obj["spec"]["replicas"]
            obj["status"] = {"observedGeneration": obj["metadata"]["generation"], "replicas": n,
                             "updatedReplicas": n, "readyReplicas": n, "availableReplicas": n}
        elif kind == "Service" and name == "online-api":
            obj["spec"]["ports"][0]["nodePort"] = 30999
        elif kind == "Job" and name == "online-model-seed":
            obj["status"] = {"succeeded": 1}
        elif kind == "Job" and name == "trainer":
            _trainer_pod(api)
    return hook


def test_start_applies_the_pipeline_and_writes_a_kube_state_without_secrets(tmp_path) -> None:
    api = FakeKube()
    api.put("/api/v1", {"resources": [{"name": "persistentvolumeclaims", "kind": "PersistentVolumeClaim",
                                       "namespaced": True}]}, event=None)
    api.put(f"{JOBS}/trainer", {"metadata": {"name": "trainer"}})  # the previous pipeline's
    api.on_apply.append(_ready_on_apply(api))
    api.exec_result = (0, json.dumps({"pid": 7, "phase": "sleeping", "models_registered": 1}), "")
    platform = KubePlatform(api=api, namespace=NS, quiet=True, watch=False, host_ports={30999: 41000})
    try:
        pipe = kp.start_kube_pipeline(hadrlab.UNHARDENED, name="baseline", platform=platform, feature_store=False,
                                      run_dir=tmp_path, timeout_s=10)
        state = json.loads(pipe.state_path.read_text())
        assert state["backend"] == "kube" and state["online"]["url"] == "http://127.0.0.1:41000"
        assert state["hardening"]["retries"] is False and state["trainer"]["model"] == "fraud-baseline"
        assert "token" not in json.dumps(state).lower()
        assert pipe.configuration() == {"pipeline": str(pipe.state_path), "label": "baseline"}
        calls = [(c[0], c[1].rsplit("/", 2)[-2:]) for c in api.calls if c[0] in ("patch", "delete")]
        assert calls.index(("delete", ["jobs", "trainer"])) < calls.index(("patch", ["jobs", "trainer"]))
        applied = {tuple(c[1].rsplit("/", 2)[-2:]) for c in api.calls if c[4] == "application/apply-patch+yaml"}
        assert {("statefulsets", "registry"), ("deployments", "online-api"), ("jobs", "trainer"),
                ("persistentvolumeclaims", "trainer-checkpoints")} <= applied
        assert ("jobs", "batch-score") not in applied
        # The repr asks the cluster: this fake has no online-api pod, so none is up.
        assert "KubePipeline('baseline'" in repr(pipe) and "trainer up, online API down" in repr(pipe)
        pipe.stop()
        pipe.stop()  # idempotent
        assert f"{JOBS}/trainer" not in api.objects and "stopped" in repr(pipe)
    finally:
        platform.close()


def _job(api: FakeKube, name: str, status: dict) -> None:
    api.put(f"{JOBS}/{name}", {"metadata": {"name": name}, "spec": {}, "status": status})


def test_a_job_replacing_a_failed_pod_is_still_running_until_its_condition_says_otherwise(fake) -> None:
    """A killed pod makes status.failed 1 while the next pod works: only a condition ends the Job."""
    api, platform = fake
    _job(api, "b1", {"active": 1, "failed": 1})
    assert platform.job_state("b1") == "running"
    _job(api, "b2", {"failed": 1})  # between two pods (the controller's back-off)
    assert platform.job_state("b2") == "running"
    _job(api, "b3", {"succeeded": 1, "failed": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    assert platform.job_state("b3") == "succeeded"
    _job(api, "b4", {"failed": 3, "conditions": [{"type": "Failed", "status": "True"}]})
    assert platform.job_state("b4") == "failed"


def test_exec_in_a_missing_registry_pod_says_how_to_bring_it_back(fake) -> None:
    api, platform = fake
    api.exec_result = ApiException(status=404, reason="Not Found")
    with pytest.raises(HadrError, match=r"registry-0.*missing or not running.*scale statefulset registry --replicas=1"):
        kp.registry_faults(_state(), delay_ms=100)


def test_killing_a_batch_job_that_has_no_running_pod_is_a_clear_error(fake, monkeypatch) -> None:
    api, platform = fake
    _job(api, "batch-p-1", {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    monkeypatch.setitem(kp._jobs, "current", {"job": "batch-p-1", "output": "/var/lib/batch/x.db", "t": 0.0})
    with pytest.raises(HadrError, match="'batch-p-1' ended \\(succeeded\\) before chunk 3"):
        kp.kill_batch_job(_state(), after_chunks=3, timeout_s=2)


def test_a_feature_store_experiment_without_the_store_says_to_start_it(fake) -> None:
    with pytest.raises(HadrError, match="start_feature_store"):
        kp.start_batch_job(_state(), redis="feature_store")
    api, platform = fake
    with pytest.raises(HadrError, match="redis-a-0, redis-b-0, sentinel-w-0 are missing.*start_feature_store"):
        kp.fail_over_feature_store(_state(feature_store={"down_after_ms": 1000}))


def test_the_steady_state_audit_runs_its_own_job_which_the_rollback_deletes(fake, monkeypatch) -> None:
    api, platform = fake
    audited = []
    monkeypatch.setattr(kp, "_audit", lambda state, platform, output, timeout_s: audited.append(output) or
                        {"expected": 10, "scored": 10, "duplicates": 0, "gaps": 0})

    def finish(path, obj):  # the Job controller: the job's pod ran and succeeded
        if path.startswith(JOBS + "/"):
            obj["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    api.on_apply.append(finish)
    kp._jobs.clear()
    out = kp.batch_exactly_once(_state(), timeout_s=5)
    assert out["job"] == "succeeded" and "-steady-" in audited[0]
    assert "current" not in kp._jobs  # a later kill or audit does not act on the steady-state job
    assert kp.stop_batch_jobs(_state()) == 1
    assert not [p for p in api.objects if p.startswith(JOBS + "/")]
