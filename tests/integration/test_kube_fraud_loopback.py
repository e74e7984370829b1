"""Lab 02's scoring services on the cluster (hadrlab.platform.kube_fraud), run for real on a loopback cluster.

tests/kube_fraud_loopback.py's FraudLoopback: the fake API server whose pods (two fraud-api
pods with their sidecars, the alert receiver, the feature writer, the seed Job) are the REAL
local processes their container commands name, started with the containers' own
environment; only in-cluster names, ports and mounted ConfigMaps are translated.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kube_fraud_loopback import CM_PATH, NS, FraudLoopback, LoopbackPlatform

from hadrlab.drills import run_drill
from hadrlab.featurestore import start_feature_store
from hadrlab.fraud import KEY_PREFIX, FeatureTracker, generate_transactions, writer_timeline
from hadrlab.platform.kube_featurestore import KubeFeatureStore
from hadrlab.platform.kube_fraud import RUN_ANNOTATION, _seed, start_kube_fraud_services
from hadrlab.sidecar import fetch_alerts, write_policy_module

pytestmark = pytest.mark.timeout(120)

POLICY = '''
from hadrlab.sidecar import ThresholdPolicy


class DrillPolicy(ThresholdPolicy):
    """ThresholdPolicy under a learner's name: proves the module reached the sidecar pods."""

    def __repr__(self):
        return "DrillPolicy(" + super().__repr__() + ")"
'''


@pytest.fixture
def loopback(tmp_path):
    fs = start_feature_store(down_after_ms=800, timeout_s=30)
    api = FraudLoopback(fs, tmp_path)
    platform = LoopbackPlatform(api=api, namespace=NS, quiet=True, watch=False, host_ports=api.host_ports)
    try:
        yield fs, api, platform
    finally:
        api.stop_pods()
        api.stop_jobs()
        platform.close()
        fs.stop()


def test_the_seed_job_writes_the_features_the_local_cell_writes(loopback) -> None:
    fs, api, platform = loopback
    txns = generate_transactions(200, seed=2, n_cards=15)
    assert _seed(platform, txns, timeout_s=30) == 200
    tracker, expected = FeatureTracker(), {}
    for row in txns.to_dict("records"):
        expected[row["card_id"]] = tracker.update(row)
    with fs.master_for() as client:
        for card, features in expected.items():
            stored = client.hgetall(KEY_PREFIX + card)
            # Times move to "now" (as locally); every feature computed from the transactions is equal.
            for key in ("updated_at", "last_t"):
                stored.pop(key), features.pop(key)
            assert stored == {k: str(v) for k, v in features.items()}, card
    assert not any(path.startswith(CM_PATH + "/seed-features") for path in api.objects), "the seed's ConfigMap is deleted"


def test_a_kill_drill_runs_end_to_end_on_the_cluster_services(loopback) -> None:
    fs, api, platform = loopback
    store = KubeFeatureStore(platform, down_after_ms=800)
    txns = generate_transactions(300, seed=2, n_cards=20)
    spec = write_policy_module(POLICY, module="drill_policy")
    services = start_kube_fraud_services(
        store, transactions=txns, check_interval_ms=100, latency_threshold_ms=50, consecutive=3,
        recover_consecutive=5, policy=spec, policy_args={"latency_ms": 50, "consecutive": 3, "recover_consecutive": 5},
        rate_tps=40, n_cards=20, timeout_s=60)
    try:
        print(services)
        # The sidecar read is the region-B pod's, and the learner's policy runs there from the ConfigMap.
        assert platform.pod_region(services.sidecar.pod) == "region-b"
        sidecars = [env for pod, c, env in api.started if c == "sidecar"]
        assert len(sidecars) == 2 and all(env["POLICY_CLASS"] == "drill_policy:DrillPolicy" for env in sidecars)
        assert all(Path(env["PYTHONPATH"], "drill_policy.py").read_text() == POLICY for env in sidecars)
        writers = [env for pod, c, env in api.started if c == "feature-writer"]
        assert writers[-1]["WRITE_RATE_TPS"] == "40" and writers[-1]["WRITER_LOG"] == "-"

        drill = run_drill("kill", fs=store, api=services.api, sidecar=services.sidecar, receiver=services.receiver,
                          writer=services.writer, fault=store.kill_primary, duration_s=8, fault_at_s=1.5,
                          transactions=txns, users=1)
        print(drill, drill.events.to_dict("records"), sep="\n")
        assert (drill.old_primary, drill.new_primary) == ("a", "b"), drill
        # Reads moved to region B; writes resumed there after Sentinel's failover.
        assert drill.reads_on_secondary > 0, drill
        assert drill.write_rto_s is not None and 0.8 < drill.write_rto_s < 15, drill
        assert {"+sdown", "+switch-master"} <= set(drill.events["kind"]), drill.events
        assert set(drill.writes["region"][drill.writes["ok"] == 1]) == {"a", "b"}
        assert drill.decisions and drill.decisions[0]["to"] == "b", drill.decisions
        assert any(a["alertname"] == "PrimaryMoved" for a in fetch_alerts(services.receiver))
        # The timeline read from the pod's log is the writer's own log, row for row.
        assert len(writer_timeline(services.writer)) >= len(drill.writes) > 100
    finally:
        services.stop()
    assert not any(info["deployment"] == "feature-writer" for info in api.pods.values()), "stop() stops the writer"
    assert api.objects[f"/apis/apps/v1/namespaces/{NS}/deployments/feature-writer"]["spec"]["template"][
        "metadata"]["annotations"][RUN_ANNOTATION]
