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

import pytest
from kube_loopback import NS, LoopbackKube

from hadrlab.featurestore import start_feature_store
from hadrlab.platform.kube import KubePlatform
from hadrlab.platform.kube_featurestore import KubeFeatureStore, start_kube_feature_store

pytestmark = pytest.mark.timeout(120)


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
