"""Lab 03's experiments on the kube backend, end to end through ``chaos run``, against REAL processes.

The pipeline is started with :func:`start_kube_pipeline` on a fake API server whose pods are a
local pipeline's processes (tests/kube_pipeline_loopback.py): the experiments' activities take
the kube path (scale the registry StatefulSet, exec scripts in its pod, read the trainer's
status in its pod, SIGKILL it there), and the verdicts come from real HTTP requests to the real
online API. What only a real cluster can prove (DNS, volumes, the Job controller's back-off,
the image) is listed in infra/kind/README.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from kube_pipeline_loopback import ONLINE_NODE_PORT, PipelineLoopbackKube

import hadrlab
from hadrlab.platform.kube import KubePlatform
from hadrlab.platform.kube_pipeline import KubePipeline, start_kube_pipeline
from hadrlab.processes import http_status
from hadrlab.training import connect_redis, read_training_data

pytestmark = pytest.mark.timeout(120)
TESTS = Path(__file__).resolve().parents[1]


def _param(request) -> tuple:
    """(hardening, with a feature store): a test's parameter is a Hardening or such a pair."""
    return request.param if isinstance(request.param, tuple) else (request.param, False)


@pytest.fixture
def kube_pipeline(request, monkeypatch, tmp_path):
    """(kube pipeline, loopback API, local pipeline) with the hardening of the test's parameter.

    With a feature store, the local pipeline starts one first, and the kube pipeline applies
    redis.yaml onto it (start_kube_pipeline(feature_store=True)).
    """
    hardening, with_store = _param(request)
    # `chaos run` imports the loopback's factory (state["api"]) from tests/.
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    local = hadrlab.start_pipeline(hardening, name="loop-local", run_dir=tmp_path / "local")
    api = platform = pipe = None
    try:
        if with_store:
            local.start_feature_store(down_after_ms=1000)
        api = PipelineLoopbackKube(local.state_path, fs=local.feature_store)
        # pipeline.yaml's own host-access NodePort, mapped to the local online API.
        platform = KubePlatform(api=api, namespace="hadrlab", quiet=True, watch=False,
                                host_ports={ONLINE_NODE_PORT: local.online.port})
        pipe = start_kube_pipeline(hardening, name="loop", platform=platform, feature_store=with_store,
                                   run_dir=tmp_path / "kube", timeout_s=60)
        yield pipe, api, local
    finally:
        if api is not None:
            api.resume_registry()
            api.stop_volume_jobs()
            api.stop_jobs()
        if pipe is not None:
            pipe.stop()
        if platform is not None:
            platform.close()
        local.stop()


@pytest.mark.parametrize("kube_pipeline", [hadrlab.UNHARDENED, hadrlab.HARDENED], indirect=True,
                         ids=["unhardened", "hardened"])
def test_registry_outage_runs_through_chaos_on_the_kube_path(kube_pipeline) -> None:
    pipe, api, local = kube_pipeline
    assert isinstance(pipe, KubePipeline) and "registry up" in repr(pipe) and "online API up" in repr(pipe)
    result = hadrlab.run_experiment(hadrlab.write_experiment("registry-outage", pipe), timeout_s=90)
    print(result, result.frame().to_string())
    outage = result.output("registry-outage", "method")
    assert outage["replicas"] == 0 and outage["pod_gone_s"] >= 0, outage
    assert result.output("end-registry-outage", "rollback")["replicas"] == 1
    during = result.output("online-slo", "after")
    assert during["requests"] >= 30, during
    if pipe.hardening == hadrlab.UNHARDENED:
        # Fail-closed: the API drops its model when the registry cannot be asked.
        assert result.verdict == "deviated", result
        assert during["availability"] < 0.99, during
    else:
        # The cached model keeps serving while the registry is gone.
        assert result.verdict == "held", result
        assert during["availability"] >= 0.99, during
    # The rollback brought the registry back: it answers again.
    assert http_status(local.state["registry"]["url"] + "/healthz") == 200


@pytest.mark.parametrize("kube_pipeline", [hadrlab.UNHARDENED], indirect=True, ids=["unhardened"])
def test_registry_slow_sets_the_delay_inside_the_registry_pod(kube_pipeline) -> None:
    pipe, api, local = kube_pipeline
    result = hadrlab.run_experiment(hadrlab.write_experiment("registry-slow", pipe), timeout_s=90)
    print(result, result.frame().to_string())
    # The registry answered the script exec'd in its pod with the faults it now has.
    assert result.output("registry-slow", "method")["delay_ms"] == 1500
    assert result.output("registry-clear-faults", "rollback")["delay_ms"] == 0
    assert result.verdict == "deviated", result
    # ...and the registry itself says the delay is gone.
    faults = httpx.get(local.state["registry"]["url"] + "/admin/faults", timeout=5,
                       headers={"Authorization": f"Bearer {local.state['registry']['token']}"}).json()
    assert faults["delay_ms"] == 0, faults


@pytest.mark.parametrize("kube_pipeline", [hadrlab.HARDENED], indirect=True, ids=["hardened"])
def test_kill_trainer_sigkills_in_the_pod_and_measures_the_resumed_run(kube_pipeline) -> None:
    pipe, api, local = kube_pipeline
    result = hadrlab.run_experiment(hadrlab.write_experiment("kill-trainer", pipe), timeout_s=100)
    print(result, result.frame().to_string())
    kill = result.output("kill-trainer", "method")
    assert kill["step"] >= 35 and kill["pod"].startswith("trainer-"), kill
    recovery = result.output("trainer-recovery", "method")
    assert 0 < recovery["restart_s"] < recovery["recovery_s"] < 40, recovery
    lost = result.output("trainer-steps-lost", "after")
    assert lost["restarts"] >= 1 and lost["steps_lost"] <= 10, lost
    assert result.verdict == "held", result


@pytest.mark.parametrize("kube_pipeline", [hadrlab.UNHARDENED, hadrlab.HARDENED], indirect=True,
                         ids=["unhardened", "hardened"])
def test_kill_batch_scorer_sigkills_the_jobs_pod_and_the_next_pod_resumes(kube_pipeline) -> None:
    """The batch Job's pod is SIGKILLed mid-chunk; the Job's next pod resumes; an audit Job counts the rows."""
    pipe, api, local = kube_pipeline
    result = hadrlab.run_experiment(hadrlab.write_experiment("kill-batch-scorer", pipe), timeout_s=100)
    print(result, result.frame().to_string())
    started = result.output("start-batch-job", "method")
    kill = result.output("kill-batch-job", "method")
    assert kill["pod"].startswith(started["job"]) and kill["chunks_done"] >= 3, (started, kill)
    audit = result.output("batch-exactly-once", "after")
    # Two pods of the one Job: the killed one, and the one that finished the input.
    assert audit["starts"] == 2 and audit["job"] == "succeeded", audit
    assert audit["expected"] == 2000, audit  # pipeline.yaml's input, written by the Job's init container
    assert result.output("stop-batch-jobs", "rollback") >= 1
    if pipe.hardening == hadrlab.UNHARDENED:
        # Naive commits: the chunk whose results were written before its marker is scored twice.
        assert result.verdict == "deviated", result
        assert audit["duplicates"] > 0 and audit["gaps"] == 0, audit
    else:
        assert result.verdict == "held", result
        assert audit["duplicates"] == audit["gaps"] == 0 and audit["scored"] == audit["expected"], audit


@pytest.mark.parametrize("kube_pipeline", [(hadrlab.HARDENED, True)], indirect=True, ids=["hardened-with-store"])
def test_feature_store_failover_crashes_the_primary_pod_and_the_batch_job_follows_sentinel(kube_pipeline) -> None:
    """start_kube_pipeline(feature_store=True) applies redis.yaml on a live store; its primary is crashed mid-job."""
    pipe, api, local = kube_pipeline
    assert pipe.feature_store is not None and pipe.state["feature_store"]["down_after_ms"] == 1000
    assert {"redis-a", "sentinel-w"} <= {path.rsplit("/", 1)[1] for path in api.objects if "/statefulsets/" in path}
    assert pipe.feature_store.current_primary() == "a"
    result = hadrlab.run_experiment(hadrlab.write_experiment("feature-store-failover", pipe), timeout_s=100)
    print(result, result.frame().to_string())
    assert result.output("fail-over-feature-store", "method")["killed_region"] == "a"
    audit = result.output("batch-exactly-once", "after")
    assert audit["duplicates"] == audit["gaps"] == 0 and audit["scored"] == audit["expected"] == 2000, audit
    assert result.verdict == "held", result
    # The Sentinels really failed over: region B's server is the primary now.
    assert local.feature_store.current_primary() == "b"
    # The Job read its features through the Sentinels and waited the failover out.
    volume = Path(local.state["run_dir"]) / "volumes" / "batch-data"
    reports = "".join(path.read_text() for path in volume.glob("*.status.json"))
    assert "redis via sentinel" in reports, reports[:300]


@pytest.mark.parametrize("kube_pipeline", [hadrlab.HARDENED], indirect=True, ids=["hardened"])
def test_corrupt_training_data_is_written_from_the_trainer_pod_and_stopped_by_the_contract(kube_pipeline) -> None:
    pipe, api, local = kube_pipeline
    result = hadrlab.run_experiment(hadrlab.write_experiment("corrupt-training-data", pipe), timeout_s=120)
    print(result, result.frame().to_string())
    assert result.verdict == "held", result
    assert result.output("corrupted-models-in-production", "after") == 0
    for kind in ("missing", "flipped-labels", "schema-change"):
        run = result.output(f"training-run-on-{kind}", "method")
        assert not run["promoted"], (kind, run)
    # Three corrupted datasets were written (their digests, as the script in the trainer's
    # pod measured them, all differ), and the rollback wrote the clean data back.
    corrupted = json.loads((pipe.run_dir / "corrupted-data.json").read_text())
    assert [c["kind"] for c in corrupted] == ["missing", "flipped_labels", "schema_change"]
    assert len({c["sha256"] for c in corrupted}) == 3
    assert result.output("restore-training-data", "rollback")["rows"] == pipe.sizes.training_rows
    client = connect_redis({"REDIS_URL": local.state["redis_url"]})
    try:
        data = read_training_data(client)
    finally:
        client.close()
    assert len(data) == pipe.sizes.training_rows and not data.isna().any().any()
