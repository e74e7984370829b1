"""The cluster feature store's drill verbs against the fake API server: network faults and their
baseline, the lag sampler's rows, fail-back's Sentinel call, the features read in one pass, and
the times of a crashed primary's return read from logs."""

from __future__ import annotations

import pytest
from kube_fake import NS, FakeKube, RedisCluster

from hadrlab.errors import HadrError
from hadrlab.platform.kube import KubePlatform
from hadrlab.platform.kube_featurestore import (
    KubeFeatureStore,
    parse_lag_rows,
    parse_redis_log,
    return_times,
    start_kube_feature_store,
)

CHAOS = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{NS}/networkchaos"


@pytest.fixture
def fake() -> FakeKube:
    return FakeKube()


@pytest.fixture
def platform(fake: FakeKube):
    plat = KubePlatform(api=fake, namespace=NS, quiet=True, watch=False)
    yield plat
    plat.close()


@pytest.fixture
def cluster(fake: FakeKube) -> RedisCluster:
    return RedisCluster(fake)


def _chaos(fake: FakeKube) -> dict[str, str]:
    """NetworkChaos objects by name: ``"delay 5ms"`` or ``"partition"``."""
    out = {}
    for path, obj in fake.objects.items():
        if path.startswith(CHAOS + "/"):
            spec = obj["spec"]
            out[obj["metadata"]["name"]] = (f"delay {spec['delay']['latency']}" if spec["action"] == "delay"
                                            else spec["action"])
    return out


def test_a_cross_region_latency_without_chaos_mesh_is_refused_before_anything_is_applied(
        platform: KubePlatform, fake: FakeKube, cluster: RedisCluster) -> None:
    with pytest.raises(HadrError, match="Chaos Mesh.*cross_region_latency_ms=0"):
        start_kube_feature_store(platform, cross_region_latency_ms=5, timeout_s=10)
    assert not any("statefulsets" in path for path in fake.objects)
    # With no latency asked for, no Chaos Mesh is needed.
    assert start_kube_feature_store(platform, timeout_s=10).current_primary() == "a"


def test_heal_returns_to_the_start_latency_after_a_spike_and_a_partition(
        platform: KubePlatform, fake: FakeKube, cluster: RedisCluster) -> None:
    fake.chaos_mesh = True
    fake.put(f"{CHAOS}/partition-region-a", {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": "NetworkChaos",
                                              "metadata": {"name": "partition-region-a"},
                                              "spec": {"action": "partition"}})  # left by an earlier run
    fs = start_kube_feature_store(platform, cross_region_latency_ms=5, timeout_s=10)
    assert _chaos(fake) == {"delay-region-a": "delay 5ms", "delay-region-b": "delay 5ms"}
    fs.delay_region("a", 150)
    assert _chaos(fake) == {"delay-region-a": "delay 150ms", "delay-region-b": "delay 5ms"}
    fs.partition_region("b")
    assert _chaos(fake)["partition-region-b"] == "partition"
    fs.heal()
    assert _chaos(fake) == {"delay-region-a": "delay 5ms", "delay-region-b": "delay 5ms"}
    assert "5 ms cross-region latency back" in fs.events()["detail"].iloc[-1]


def test_heal_of_a_store_started_without_latency_leaves_no_chaos(platform: KubePlatform, fake: FakeKube,
                                                                 cluster: RedisCluster) -> None:
    fake.chaos_mesh = True
    fs = KubeFeatureStore(platform)
    fs.delay_region("region-a", 20)
    fs.heal()
    assert _chaos(fake) == {}


def test_lag_rows_skip_the_header_and_a_line_cut_by_the_log_read() -> None:
    rows = parse_lag_rows("t,lag_bytes,lag_ms\n1700000000.5,120,5.250\n1700000000.7,0,nan\n1700000000.9,1")
    assert [r["lag_bytes"] for r in rows] == [120, 0] and rows[0] == {"t": 1700000000.5, "lag_bytes": 120, "lag_ms": 5.25}


def test_the_lag_sampler_runs_a_probe_job_in_the_replica_region_and_reads_its_log(
        platform: KubePlatform, fake: FakeKube, cluster: RedisCluster) -> None:
    fs = KubeFeatureStore(platform)
    sampler = fs.start_lag_sampler(interval_ms=100)
    job = fake.objects[f"/apis/batch/v1/namespaces/{NS}/jobs/{sampler.job}"]
    spec = job["spec"]["template"]["spec"]
    command = spec["containers"][0]["command"]
    assert command[3] == "lag-probe" and spec["nodeSelector"] == {"topology.kubernetes.io/region": "region-b"}
    assert command[command.index("--primary") + 1] == "redis-a-0.redis-a:6379"
    assert command[command.index("--replica") + 1] == "redis-b-0.redis-b:6379"
    fake.pod_logs[f"{sampler.job}-pod"] = "t,lag_bytes,lag_ms\n1700000000.5,64,7.5\n"
    assert sampler.samples() == [{"t": 1700000000.5, "lag_bytes": 64, "lag_ms": 7.5}]
    assert sampler.stop() == sampler.stop() and len(sampler.stop()) == 1
    assert f"/apis/batch/v1/namespaces/{NS}/jobs/{sampler.job}" not in fake.objects


def test_request_failover_asks_the_witness_pod_and_reads_a_refusal(platform: KubePlatform, fake: FakeKube) -> None:
    fs = KubeFeatureStore(platform)
    answers = iter([(0, "NOGOODSLAVE No suitable replica to promote\n", ""), (0, "OK\n", "")])
    fake.exec_handler = lambda pod, container, command: next(answers)
    assert fs.request_failover() is False
    assert fs.request_failover() is True
    pod, container, command = fake.exec_calls[-1]
    assert (pod, container) == ("sentinel-w-0", "sentinel") and command[-3:] == ["SENTINEL", "FAILOVER", "features"]


def test_features_are_read_from_the_primary_pod_in_one_script_with_its_clock(platform: KubePlatform,
                                                                          fake: FakeKube) -> None:
    fs = KubeFeatureStore(platform)

    def handler(pod, container, command):
        if pod.startswith("sentinel"):
            return 0, "redis-b-0.redis-b\n6379\n", ""
        return 0, "1795833128\n250000\nfeatures:card:c1\n5\nfeatures:card:c2\n7\n", ""

    fake.exec_handler = handler
    t, values = fs.read_hash_field("features:card:*", "seq")
    assert t == 1795833128.25 and values == {"features:card:c1": "5", "features:card:c2": "7"}
    pod, _, command = fake.exec_calls[-1]
    assert pod == "redis-b-0" and command[4] == "EVAL" and command[-3:] == ["0", "features:card:*", "seq"]


LOG = """\
2026-11-27T23:40:00.000000000Z 1:M 27 Nov 2026 23:40:00.000 * Ready to accept connections tcp
2026-11-27T23:40:05.000000000Z restart: staying down 8 s so that Sentinel sees the crash
2026-11-27T23:40:13.100000000Z 1:C 27 Nov 2026 23:40:13.100 # Redis version=7.2.5
2026-11-27T23:40:13.200000000Z 1:M 27 Nov 2026 23:40:13.200 * Ready to accept connections tcp
2026-11-27T23:40:22.500000000Z 1:S 27 Nov 2026 23:40:22.500 * Before turning into a replica, using my own master parameters
2026-11-27T23:40:22.510000000Z 1:S 27 Nov 2026 23:40:22.510 * Connecting to MASTER redis-b-0.redis-b:6379
2026-11-27T23:40:23.000000000Z 1:S 27 Nov 2026 23:40:23.000 * MASTER <-> REPLICA sync: Finished with success
"""


def test_the_return_is_timed_from_the_servers_own_log_and_sentinels_events() -> None:
    rows = parse_redis_log(LOG)
    assert [r["role"] for r in rows] == ["master", "", "", "master", "slave", "slave", "slave"]
    assert rows[4]["message"].startswith("Before turning into a replica")
    t0 = rows[0]["t"]
    kill = t0 + 4.0
    started, converted, linked = return_times(rows, [], host="redis-a-0.redis-a", since=kill)
    assert (round(started - t0, 2), round(converted - t0, 2), round(linked - t0, 2)) == (13.2, 22.5, 23.0)
    # Sentinel's +convert-to-slave of THIS server, sent before it logged, is the earlier time;
    # one naming it only as the new primary (after the "@") is another server's.
    events = [{"t": t0 + 22.3, "kind": "+convert-to-slave",
               "detail": "slave redis-b-0.redis-b:6379 redis-b-0.redis-b 6379 @ features redis-a-0.redis-a 6379"},
              {"t": t0 + 22.4, "kind": "+convert-to-slave",
               "detail": "slave redis-a-0.redis-a:6379 redis-a-0.redis-a 6379 @ features redis-b-0.redis-b 6379"}]
    assert round(return_times(rows, events, host="redis-a-0.redis-a", since=kill)[1] - t0, 2) == 22.4
    # Not back yet: nothing to report.
    assert return_times(rows[:3], events, host="redis-a-0.redis-a", since=kill) == (None, None, None)


def test_restart_old_primary_without_a_crash_says_what_to_do_first(platform: KubePlatform, fake: FakeKube,
                                                                   cluster: RedisCluster) -> None:
    fs = KubeFeatureStore(platform)
    with pytest.raises(HadrError, match=r"Call fs.kill_primary\(\) first"):
        fs.restart_old_primary()
    fs.kill_primary()
    with pytest.raises(HadrError, match="no failover happened yet"):
        fs.restart_old_primary()  # the fake's Sentinels switch 0.6 s after the crash
