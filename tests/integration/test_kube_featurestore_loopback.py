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

import time

import pandas as pd
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


# --------------------------------------------------------------------------- the drills' verbs
#
# The same lines on both backends: each test below runs the notebook's calls on the local
# store AND on the cluster's store (whose pods are the same local servers).


def _latency_ms(region) -> tuple[float, float, bool]:
    faults = region.proxy.stats()["faults"]
    return faults.get("latency_up_ms", 0), faults.get("latency_down_ms", 0), bool(faults.get("blackhole"))


def test_delay_region_and_heal_return_to_the_start_latency_on_both_backends(loopback) -> None:
    api, platform = loopback
    local = api.fs
    api.chaos_mesh = True
    store = start_kube_feature_store(platform, down_after_ms=800, cross_region_latency_ms=15, timeout_s=30)
    # The cluster's baseline is a NetworkChaos delay per region: here, the local proxies.
    assert _latency_ms(local.region_a) == _latency_ms(local.region_b) == (15, 15, False)
    store.delay_region("a", 60)
    assert _latency_ms(local.region_a) == (60, 60, False) and _latency_ms(local.region_b) == (15, 15, False)
    store.partition_region("b")  # the replica's region: no failover
    assert _latency_ms(local.region_b)[2] and "b" in local._paused_sentinels
    store.heal()
    assert _latency_ms(local.region_a) == _latency_ms(local.region_b) == (15, 15, False)
    assert not local._paused_sentinels and store.current_primary() == "a"


def test_the_local_store_heals_to_its_start_latency_too() -> None:
    fs = start_feature_store(down_after_ms=800, cross_region_latency_ms=15, timeout_s=30)
    try:
        fs.delay_region("a", 60)
        assert _latency_ms(fs.region_a) == (60, 60, False) and _latency_ms(fs.region_b) == (15, 15, False)
        fs.partition_region("b")
        fs.heal()
        assert _latency_ms(fs.region_a) == _latency_ms(fs.region_b) == (15, 15, False)
        assert fs.region_b.sentinel.child.alive() and not fs._paused_sentinels
    finally:
        fs.stop()


def test_the_drills_lag_sampler_reads_a_lag_probe_job_and_sees_the_cross_region_latency(loopback) -> None:
    from hadrlab.drills import _LagSampler

    api, platform = loopback
    api.fs.region_a.proxy.set_latency(25)  # the replication link A -> B crosses proxy A
    stores = {"local": api.fs, "kube": KubeFeatureStore(platform, down_after_ms=800)}
    samplers = {name: _LagSampler(fs, 0.1) for name, fs in stores.items()}
    for sampler in samplers.values():
        sampler.start()
    time.sleep(4)
    for sampler in samplers.values():
        sampler.stop_event.set()
        sampler.join(timeout=10)
    for name, sampler in samplers.items():
        lag = pd.DataFrame(sampler.rows, columns=["t", "lag_bytes", "lag_ms"])
        assert len(lag) >= 5 and not sampler.error, (name, sampler.error, lag)
        # A write shows on B one crossing of A's link later (25 ms), give or take the polling.
        assert 15 < lag["lag_ms"].median() < 1000, (name, lag)
        assert (lag["lag_bytes"] >= 0).all()
    assert not any(j["child"].alive() for j in api.jobs.values()), "the lag-probe Job is deleted afterwards"
    assert any(j["child"].cmd[3] == "lag-probe" for j in api.jobs.values())


def test_fail_back_asks_the_witness_pod_and_waits_for_both_roles(loopback) -> None:
    from hadrlab.drills import fail_back

    api, platform = loopback
    store = KubeFeatureStore(platform, down_after_ms=800)
    took_s = fail_back(store, "b", timeout_s=45)
    assert store.current_primary() == "b" and store.is_linked_replica("a") and not store.is_linked_replica("b")
    assert 0 < took_s < 45
    assert any(pod == "sentinel-w-0" and command[-3:] == ["SENTINEL", "FAILOVER", "features"]
               for pod, _, command in api.exec_calls)
    assert "failback" in set(store.events()["kind"])


def test_cards_behind_reads_the_cards_from_the_primary_pod(loopback) -> None:
    import hadrlab
    from hadrlab.drills import cards_behind

    api, platform = loopback
    store = KubeFeatureStore(platform, down_after_ms=800)
    writer = hadrlab.start_feature_writer(api.fs.connection_env(), rate_tps=50, n_cards=5, name="kube-behind-writer")
    try:
        time.sleep(1.5)
    finally:
        writer.stop()
    assert len(cards_behind(store, "kube-behind-writer", settle_s=0.5)) == 0
    # Lose the newest write of one card, as a failover that took it on the old primary would.
    store.redis_cli("a", "HSET", "features:card:card-00001", "seq", 1)
    behind = cards_behind(store, "kube-behind-writer", settle_s=0.5)
    assert list(behind["card_id"]) == ["card-00001"], behind
    assert behind["stored_seq"].iloc[0] == 1 and behind["acked_seq"].iloc[0] > 1
    assert any(pod == "redis-a-0" and command[4] == "EVAL" for pod, _, command in api.exec_calls)


def test_restart_old_primary_times_the_crashed_primarys_return_from_its_log(loopback) -> None:
    api, platform = loopback
    store = KubeFeatureStore(platform, down_after_ms=800)
    assert store.kill_primary() == "a"
    t_kill = store._killed[0]
    store.wait_for_failover(timeout_s=20)
    back = store.restart_old_primary(timeout_s=45, probe_interval_ms=100)
    print(back)
    assert back.region == "a" and len(back.timeline) >= 1
    assert t_kill < back.started_at <= back.converted_at <= back.linked_at, back
    assert back.seconds_as_master is not None and back.seconds_as_master >= 0
    assert store.role("a") == "slave" and store.current_primary() == "b"
    # A client still pointed at A's address had its writes taken by the empty master, then refused.
    assert back.writes_accepted > 0 and set(back.timeline["write"]) >= {"accepted"}, back.timeline
    assert 0 <= back.master_for_saw_empty <= len(back.timeline)
    assert {"restart", "converted"} <= set(store.events(since=t_kill)["kind"])
