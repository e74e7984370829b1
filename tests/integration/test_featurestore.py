"""The two-region feature store with real redis-server processes, proxies and Sentinels."""

from __future__ import annotations

import time

import psutil
import pytest
import redis

from hadrlab.featurestore import measure_rpo, measure_write_rto, start_feature_store
from hadrlab.processes import wait_until

pytestmark = pytest.mark.timeout(90)

DOWN_AFTER_MS = 1000


def _gone(pids: list[int], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def fs():
    store = start_feature_store(down_after_ms=DOWN_AFTER_MS, timeout_s=30)
    yield store
    store.stop()


def _pids(store) -> list[int]:
    pids = [s.child.pid for s in store.sentinels]
    for region in (store.region_a, store.region_b):
        pids += [region.redis.child.pid, region.proxy.child.pid]
    return pids


def test_start_up_links_the_replica_and_the_sentinels_find_each_other(fs):
    assert fs.startup_s is not None and fs.startup_s < 30
    assert fs.current_primary() == "a"
    assert fs.region_b.role() == "slave"
    for sentinel in fs.sentinels:
        state = sentinel.master_state()
        assert state["num-other-sentinels"] == 2
        assert state["num-slaves"] >= 1
        assert state["quorum"] == 2
        # Sentinel knows the primary by region A's proxy address, not the server's port.
        assert state["port"] == fs.region_a.port
    # The replica announces its proxy address, so Sentinel lists region B's proxy.
    with fs.sentinels[0].client() as client:
        replicas = client.sentinel_slaves(fs.master_name)
    assert [r["port"] for r in replicas] == [fs.region_b.port]
    env = fs.connection_env()
    assert env["REDIS_A"] == f"127.0.0.1:{fs.region_a.port}"
    assert env["SENTINELS"].count(",") == 2 and env["SENTINEL_MASTER"] == "features"
    # Sentinels and servers require the password.
    anonymous = redis.Redis(host="127.0.0.1", port=fs.sentinels[0].port, socket_timeout=1)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    client = fs.master_for()
    client.set("feature:user:1", "0.5")
    assert client.wait(1, 1000) == 1
    client.close()
    assert fs.region_b.client().get("feature:user:1") == "0.5"


def test_stop_ends_every_process_and_is_idempotent():
    store = start_feature_store(down_after_ms=DOWN_AFTER_MS)
    pids = _pids(store)
    store.stop()
    store.stop()
    assert _gone(pids)


def test_sentinel_promotes_the_replica_and_a_master_for_client_follows(fs):
    result = measure_write_rto(fs, kill="primary", write_interval_ms=10, timeout_s=20)
    assert result.new_primary == "b", result
    assert result.rto_s is not None and result.rto_s < DOWN_AFTER_MS / 1000 + 3, result
    assert result.failed_writes > 0  # the client did see the outage
    assert "+switch-master" in set(result.events["kind"])
    assert fs.current_primary() == "b"


def test_wait_mode_loses_no_acknowledged_write_over_a_kill_with_lag():
    """Two trials, each on a fresh store: every write WAIT confirmed survives the failover."""
    for trial in range(2):
        store = start_feature_store(down_after_ms=DOWN_AFTER_MS)
        try:
            result = measure_rpo(store, mode="wait", lag_fault="latency", latency_ms=50, duration_s=2)
        finally:
            store.stop()
        assert result.acknowledged > 5, (trial, result)
        assert result.lost_acknowledged == 0, (trial, result)


def test_async_mode_with_lag_loses_only_the_newest_acknowledged_writes():
    store = start_feature_store(down_after_ms=DOWN_AFTER_MS)
    try:
        result = measure_rpo(store, mode="async", lag_fault="latency", latency_ms=150, duration_s=2)
    finally:
        store.stop()
    assert result.acknowledged > 100, result
    assert result.lag_bytes_at_kill is not None and result.lag_bytes_at_kill > 0, result  # the lag was real
    # The replica was behind when the primary died, so acknowledged writes were lost ...
    assert 0 < result.lost_acknowledged < result.acknowledged, result
    # ... and, replication being one ordered stream, exactly the newest ones, with no gap
    # (async writes are acknowledged in order 0, 1, 2, ...).
    first = min(result.lost_seqs)
    assert result.lost_seqs == list(range(first, result.acknowledged)), result.lost_seqs[:5]


def test_partition_of_region_a_fails_over_to_b_and_clients_do_not_hang(fs):
    result = measure_write_rto(fs, kill="partition", write_interval_ms=10, timeout_s=20)
    assert result.new_primary == "b", result
    assert result.rto_s is not None and result.rto_s < DOWN_AFTER_MS / 1000 + 4, result
    # No operation blocked for long: the client's timeouts bound every attempt.
    gaps = result.ops["t"].diff().dropna()
    assert gaps.max() < 2.5, gaps.max()
    fs.heal()
    # The old primary, reachable again, is turned into a replica of B by Sentinel.
    deadline = time.monotonic() + 25
    while fs.region_a.role() != "slave" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert fs.region_a.role() == "slave"
    assert fs.current_primary() == "b"


def test_returning_empty_primary_becomes_a_replica_and_is_never_served(fs):
    client = fs.master_for()
    client.set("feature:user:7", "0.9")
    client.close()
    fs.kill_primary()
    fs.wait_for_failover(timeout_s=15)
    back = fs.restart_old_primary(timeout_s=30)
    assert back.promoted_at is None, back
    assert back.converted_at is not None and back.linked_at is not None, back
    assert back.master_for_saw_empty == 0, back
    assert fs.current_primary() == "b"
    assert fs.region_a.role() == "slave"
    assert fs.region_a.client().get("feature:user:7") == "0.9"  # it copied B's data


def test_min_replicas_to_write_makes_the_returning_empty_primary_refuse_writes():
    store = start_feature_store(down_after_ms=DOWN_AFTER_MS, min_replicas_to_write=1, min_replicas_max_lag_s=10)
    try:
        store.kill_primary()
        store.wait_for_failover(timeout_s=15)
        back = store.restart_old_primary(timeout_s=30)
    finally:
        store.stop()
    assert back.promoted_at is None, back
    assert back.converted_at is not None, back
    assert back.writes_accepted == 0, back
    assert back.refusals.get("NOREPLICAS", 0) > 0, back


def test_events_include_the_actions_of_a_regional_sentinel():
    """A failover led by region B's Sentinel: only the leader announces its steps, yet fs.events() has them."""
    store = start_feature_store(down_after_ms=DOWN_AFTER_MS)
    try:
        sentinel_b = next(s for s in store.sentinels if s.site == "b")

        def ask_b() -> bool:
            try:
                with sentinel_b.client() as client:
                    return bool(client.execute_command("SENTINEL", "FAILOVER", store.master_name))
            except redis.RedisError:
                return False  # NOGOODSLAVE until the Sentinel's view of the replica is fresh

        wait_until(ask_b, timeout_s=10, interval_s=0.5, describe="SENTINEL FAILOVER accepted by sentinel-b")
        wait_until(lambda: store.current_primary() == "b", timeout_s=15, describe="region b promoted")
        promoted = lambda: store.events().query("kind == '+promoted-slave'")  # noqa: E731
        wait_until(lambda: len(promoted()) > 0, timeout_s=5, describe="+promoted-slave in fs.events()")
        assert set(promoted()["source"]) == {"sentinel-b"}
    finally:
        store.stop()


def test_after_a_kill_the_settled_sentinels_no_longer_mark_the_new_primary_down():
    """With down-after under ~1 s the Sentinels mark the new primary down once, ~down-after after the
    switch (their link to it is still reconnecting); wait_until_settled() returns only after that."""
    store = start_feature_store(down_after_ms=900)
    try:
        store.kill_primary()
        store.wait_for_failover(timeout_s=15)
        new_port = store.region_b.port
        store.wait_until_settled(timeout_s=15)
        settled_at = time.time()
        time.sleep(2.0)
        downs = store.events(since=settled_at).query("kind == '+sdown' or kind == '+odown'")
        assert not [d for d in downs["detail"] if d.startswith("master ") and d.endswith(f" {new_port}")], downs
        assert store.current_primary() == "b"
    finally:
        store.stop()
