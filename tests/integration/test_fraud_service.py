"""The scoring API and the feature writer against real Redis servers (a primary and its replica).

Without Sentinel (hadrlab.featurestore) the writer writes to REDIS_A directly.
"""

import time

import httpx
import pytest

from hadrlab.fraud import generate_transactions, read_features, start_feature_writer, start_fraud_api, write_features, writer_stats, writer_timeline
from hadrlab.processes import find_free_port, wait_until
from hadrlab.replication import start_redis_pair

KNOWN = {"card_id": "card-00003", "amount": 30.0, "merchant_category": "grocery"}


def _env(pair):
    return {"REDIS_A": pair.primary.address, "REDIS_B": pair.replica.address, "REDIS_PASSWORD": pair.password}


@pytest.fixture(scope="module")
def pair():
    pair = start_redis_pair(name_prefix="fraud-redis")
    write_features(pair.primary.client(), generate_transactions(1000, seed=3))
    yield pair
    pair.stop()


@pytest.fixture(scope="module")
def api(pair):
    child = start_fraud_api(_env(pair), name="fraud-api-test")
    yield child
    child.stop()


def _score(api, body):
    return httpx.post(f"{api.url}/score", json=body, timeout=5)


def test_a_known_card_is_scored_with_its_region_and_feature_age(api):
    answer = _score(api, KNOWN)
    assert answer.status_code == 200
    body = answer.json()
    assert body["features_region"] == "a"  # no sidecar: region A first
    assert 0 <= body["feature_age_s"] < 120
    assert 0 <= body["fraud_score"] <= 1 and body["decision"] in {"approve", "review", "decline"}
    assert body["features"]["txn_count_5m"].isdigit()
    assert body["latency_budget_ms"] == 50 and body["within_budget"] == (body["latency_ms"] <= 50)


def test_feature_age_grows_while_nothing_is_written(api, pair):
    client = pair.primary.client()
    write_features(client, [{"card_id": "card-fresh", "t": 0, "amount": 20, "merchant_category": "fuel"}])
    first = _score(api, {**KNOWN, "card_id": "card-fresh"}).json()["feature_age_s"]
    time.sleep(1.0)
    second = _score(api, {**KNOWN, "card_id": "card-fresh"}).json()["feature_age_s"]
    assert second - first >= 0.9


def test_an_unknown_card_gets_a_clear_answer_not_an_error(api):
    answer = _score(api, {"card_id": "never-seen", "amount": 2500, "merchant_category": "crypto"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["features"] == "none — unknown card"
    assert body["feature_age_s"] is None and 0 <= body["fraud_score"] <= 1


@pytest.mark.parametrize("body, field", [
    ({"card_id": "c", "amount": -3, "merchant_category": "fuel"}, "amount"),
    ({"card_id": "c", "amount": 3}, "merchant_category"),
    ({"amount": 3, "merchant_category": "fuel"}, "card_id"),
    ({"card_id": "c", "amount": "lots", "merchant_category": "fuel"}, "amount"),
])
def test_a_malformed_transaction_is_a_422_naming_the_field(api, body, field):
    answer = _score(api, body)
    assert answer.status_code == 422
    assert f"field '{field}'" in answer.json()["detail"]


def test_metrics_count_answers_by_region_and_status(api):
    _score(api, KNOWN)
    text = httpx.get(f"{api.url}/metrics", timeout=5).text
    assert 'fraud_api_requests_total{region="a",status="200"}' in text
    assert "fraud_api_score_latency_seconds_bucket" in text


def test_reads_fall_back_to_region_b_when_a_hangs_and_the_sidecar_is_unreachable(pair):
    dead_sidecar = f"http://127.0.0.1:{find_free_port()}"
    api = start_fraud_api(_env(pair), name="fraud-api-fallback", sidecar_url=dead_sidecar)
    try:
        pair.primary.child.pause()
        answer = _score(api, KNOWN)
        assert answer.status_code == 200
        assert answer.json()["features_region"] == "b"
        assert answer.json()["region_source"].startswith("fallback")
        assert answer.json()["features"] != "none — unknown card"  # the replica has the features
    finally:
        pair.primary.child.resume()
        api.stop()


def test_both_regions_down_is_a_fast_503_with_the_reason():
    pair = start_redis_pair(name_prefix="fraud-down")
    api = start_fraud_api(_env(pair), name="fraud-api-down", redis_timeout_ms=200)
    try:
        assert _score(api, KNOWN).status_code == 200
        pair.primary.child.pause()
        pair.replica.child.pause()  # hung servers: each read costs a full timeout
        start = time.perf_counter()
        hung = _score(api, KNOWN)
        hung_s = time.perf_counter() - start
        pair.stop()  # gone: connections refused at once
        start = time.perf_counter()
        gone = _score(api, KNOWN)
        gone_s = time.perf_counter() - start
    finally:
        api.stop()
        pair.stop()
    for answer, took in ((hung, hung_s), (gone, gone_s)):
        assert answer.status_code == 503
        assert took < 2.5  # fast, not a hang: two 200 ms timeouts plus a busy machine
        assert "region a" in answer.json()["detail"] and "region b" in answer.json()["detail"]
    assert "Timeout" in hung.json()["detail"]


def test_the_writer_keeps_features_fresh_and_records_its_writes(pair):
    writer = start_feature_writer(_env(pair), name="writer-test", rate_tps=100)
    try:
        wait_until(lambda: writer_stats("writer-test")["writes"] >= 50, timeout_s=15, child=writer)
    finally:
        writer.stop()
    stats = writer_stats("writer-test")
    assert stats["errors"] == 0 and stats["by_region"] == {"a": stats["writes"]}
    assert "SENTINELS unset" in stats["mode"]
    timeline = writer_timeline("writer-test")
    assert len(timeline) >= stats["writes"] and set(timeline.region) == {"a"} and timeline.ok.all()
    # The replica (region B) received the writer's features too.
    last = timeline.iloc[-1]
    replica = pair.replica.client()
    wait_until(lambda: int(read_features(replica, last.card_id).get("seq", 0)) >= last.seq, timeout_s=5)
    assert abs(float(read_features(replica, last.card_id)["updated_at"]) - time.time()) < 30


def test_the_writer_follows_a_sentinel_failover_to_region_b():
    from hadrlab.featurestore import start_feature_store

    fs = start_feature_store()
    writer = None
    try:
        writer = start_feature_writer(fs.connection_env(), name="writer-sentinel", rate_tps=50)
        assert "through Sentinel" in writer_stats("writer-sentinel")["mode"]
        wait_until(lambda: writer_stats("writer-sentinel")["by_region"].get("a", 0) >= 20, timeout_s=10)
        assert fs.kill_primary() == "a"
        # Sentinel's down-after (1 s) plus its failover steps: seconds, not minutes.
        wait_until(lambda: writer_stats("writer-sentinel")["by_region"].get("b", 0) >= 20, timeout_s=30, child=writer)
    finally:
        if writer is not None:
            writer.stop()
        fs.stop()
    timeline = writer_timeline("writer-sentinel")
    assert set(timeline.region[timeline.ok == 1]) <= {"a", "b"}
    first_b = timeline[(timeline.region == "b") & (timeline.ok == 1)].t.min()
    assert (timeline[timeline.t > first_b].ok == 1).mean() > 0.9  # writes flow again once on b
