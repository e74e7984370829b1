"""The sidecar and the alert receiver against real Redis servers: failover, return, alerts."""

import time

import httpx
import pytest

from hadrlab.fraud import generate_transactions, start_fraud_api, write_features
from hadrlab.processes import start_process, wait_until
from hadrlab.replication import find_redis_server, start_redis_pair
from hadrlab.sidecar import fetch_alerts, start_alert_receiver, start_sidecar, write_policy_module

INTERVAL_MS, CONSECUTIVE, RECOVER = 100, 3, 5


def _env(pair):
    return {"REDIS_A": pair.primary.address, "REDIS_B": pair.replica.address, "REDIS_PASSWORD": pair.password}


def _state(sidecar):
    return httpx.get(f"{sidecar.url}/state", timeout=2).json()


@pytest.fixture
def pair():
    pair = start_redis_pair(name_prefix="sidecar-redis")
    yield pair
    pair.stop()


@pytest.fixture
def receiver():
    child = start_alert_receiver(name="alerts-test")
    yield child
    child.stop()


def _restart(node):
    """Start a killed Redis again on its port, from its own config file.

    Not through start_redis(port=...): its free-port check binds without SO_REUSEADDR and
    fails while the killed server's connections sit in TIME_WAIT; redis-server itself can.
    """
    import redis

    def ready(child):
        client = redis.Redis(port=node.port, password=node.password, socket_timeout=0.5)
        wait_until(client.ping, timeout_s=10, child=child)

    return start_process(node.name + "-restarted", [find_redis_server(), str(node.conf_path)], ready=ready)


def _alerts(receiver):
    return [(a["status"], a["alertname"], a["region"]) for a in fetch_alerts(receiver)]


def test_reads_move_to_b_when_a_is_killed_and_come_back_with_hysteresis(pair, receiver):
    sidecar = start_sidecar(_env(pair), name="sidecar-kill", alert_url=f"{receiver.url}/alerts",
                            check_interval_ms=INTERVAL_MS, consecutive=CONSECUTIVE, recover_consecutive=RECOVER)
    try:
        assert _state(sidecar)["read_region"] == "a"
        killed_at = time.time()
        pair.primary.child.kill()
        wait_until(lambda: _state(sidecar)["read_region"] == "b", timeout_s=10, child=sidecar)
        state = _state(sidecar)
        failover_s = state["since"] - killed_at
        # CONSECUTIVE checks, each at most one interval apart, plus slack for a busy machine.
        assert failover_s < CONSECUTIVE * INTERVAL_MS / 1000 + 2.0
        assert state["primary"]["ok"] is False and state["decisions"][-1]["to"] == "b"

        restarted = _restart(pair.primary)
        try:
            back_at = time.time()
            wait_until(lambda: _state(sidecar)["read_region"] == "a", timeout_s=10, child=sidecar)
            since = _state(sidecar)["since"]
            history = httpx.get(f"{sidecar.url}/history", params={"since": back_at - 1}, timeout=2).json()
            ok_before_return = [h for h in history if h["region"] == "a" and h["ok"] and h["t"] <= since]
            assert len(ok_before_return) >= RECOVER  # not on the first healthy check: hysteresis
            wait_until(lambda: len(_alerts(receiver)) >= 4, timeout_s=5)
        finally:
            restarted.stop()
    finally:
        sidecar.stop()
    alerts = _alerts(receiver)
    assert ("firing", "ReadFailover", "b") in alerts and ("resolved", "ReadFailover", "a") in alerts
    assert ("firing", "RegionDown", "a") in alerts and ("resolved", "RegionDown", "a") in alerts
    assert all(a["t"] >= killed_at for a in fetch_alerts(receiver))


def test_the_api_reads_from_the_region_the_sidecar_names(pair):
    write_features(pair.primary.client(), generate_transactions(300, seed=4))
    card = generate_transactions(300, seed=4).card_id.iloc[-1]
    sidecar = start_sidecar(_env(pair), name="sidecar-api", check_interval_ms=INTERVAL_MS,
                            consecutive=CONSECUTIVE, recover_consecutive=RECOVER)
    api = start_fraud_api(_env(pair), name="fraud-api-sidecar", sidecar_url=sidecar.url)
    body = {"card_id": card, "amount": 20, "merchant_category": "grocery"}
    try:
        first = httpx.post(f"{api.url}/score", json=body, timeout=5).json()
        assert (first["features_region"], first["region_source"]) == ("a", "sidecar")
        pair.primary.child.pause()  # a hung primary: PINGs time out
        wait_until(lambda: _state(sidecar)["read_region"] == "b", timeout_s=10, child=sidecar)
        time.sleep(0.3)  # the API refreshes the sidecar's answer every 100 ms
        during = httpx.post(f"{api.url}/score", json=body, timeout=5).json()
        assert (during["features_region"], during["region_source"]) == ("b", "sidecar")
        assert during["features"] != "none — unknown card"
    finally:
        pair.primary.child.resume()
        api.stop()
        sidecar.stop()


def test_a_policy_written_in_a_notebook_drives_the_sidecar(pair):
    spec = write_policy_module("""
        class AlwaysB:
            def __init__(self, region="b"):
                self.region = region
            def decide(self, read_region, check, secondary=None):
                return self.region
    """, module="integration_policy")
    sidecar = start_sidecar(_env(pair), name="sidecar-policy", policy=spec, policy_args={"region": "b"},
                            check_interval_ms=INTERVAL_MS)
    try:
        state = _state(sidecar)
        assert state["read_region"] == "b" and "AlwaysB" in state["policy"]
    finally:
        sidecar.stop()


def test_a_policy_that_raises_is_reported_over_http(pair):
    spec = write_policy_module("""
        class Unfinished:
            def decide(self, read_region, check, secondary=None):
                raise NotImplementedError("not written yet")
    """, module="integration_unfinished_policy")
    sidecar = start_sidecar(_env(pair), name="sidecar-unfinished", policy=spec, check_interval_ms=INTERVAL_MS)
    try:
        wait_until(lambda: _state(sidecar)["policy_errors"]["count"] >= 3, timeout_s=10, child=sidecar)
        state = _state(sidecar)
        assert state["read_region"] == "a" and state["decisions"] == []
        assert state["policy_errors"]["last"]["error"] == "NotImplementedError: not written yet"
        history = httpx.get(f"{sidecar.url}/history", timeout=2).json()
        assert history and all(h["policy_error"] == "NotImplementedError: not written yet" for h in history)
        assert "sidecar_policy_errors_total" in httpx.get(f"{sidecar.url}/metrics", timeout=2).text
    finally:
        sidecar.stop()


def test_a_bad_policy_spec_stops_the_sidecar_with_a_clear_log_line(pair):
    from hadrlab.errors import ProcessExited

    with pytest.raises(ProcessExited, match="Cannot load the read policy"):
        start_sidecar(_env(pair), name="sidecar-bad-policy", policy="nowhere_module:Nothing")


@pytest.fixture
def store():
    from hadrlab.featurestore import start_feature_store

    fs = start_feature_store()
    yield fs
    fs.stop()


def test_injected_latency_above_the_threshold_moves_reads_and_below_does_not(store):
    """Latency on region A's proxy: 10 ms each way stays under a 60 ms threshold; 80 ms does not."""
    sidecar = start_sidecar(store.connection_env(), name="sidecar-latency", check_interval_ms=INTERVAL_MS,
                            latency_threshold_ms=60, consecutive=CONSECUTIVE, recover_consecutive=RECOVER)
    try:
        store.region_a.proxy.set_latency(10)
        time.sleep(15 * INTERVAL_MS / 1000)
        state = _state(sidecar)
        assert state["read_region"] == "a" and state["decisions"] == []
        assert state["primary"]["latency_ms"] >= 15  # the latency is really there

        store.region_a.proxy.set_latency(80)
        wait_until(lambda: _state(sidecar)["read_region"] == "b", timeout_s=10, child=sidecar)
        assert "latency" in _state(sidecar)["decisions"][-1]["reason"]

        store.region_a.proxy.clear()
        wait_until(lambda: _state(sidecar)["read_region"] == "a", timeout_s=10, child=sidecar)
    finally:
        store.region_a.proxy.clear()
        sidecar.stop()
