"""The fraud service's logic without processes: generator, feature maths, model, fake writes."""

import math

import pytest

from hadrlab.fraud import (
    FEATURE_NAMES,
    NO_HISTORY_GAP_S,
    FeatureTracker,
    decide,
    generate_transactions,
    model_inputs,
    train_fraud_model,
    write_features,
)


def test_the_same_seed_gives_the_same_transactions_and_another_seed_does_not():
    a = generate_transactions(3000, seed=7)
    b = generate_transactions(3000, seed=7)
    c = generate_transactions(3000, seed=8)
    assert a.equals(b)
    assert not a.equals(c)
    assert list(a.columns) == ["txn_id", "t", "card_id", "amount", "merchant_category", "country", "is_fraud"]


def test_a_few_percent_of_transactions_are_fraud_and_they_look_like_fraud():
    df = generate_transactions(20_000, seed=1)
    assert 0.015 < df.is_fraud.mean() < 0.06
    assert df.t.is_monotonic_increasing
    fraud, legit = df[df.is_fraud == 1], df[df.is_fraud == 0]
    assert fraud.amount.median() > 2 * legit.amount.median()
    risky = {"electronics", "gift_cards", "jewelry", "crypto"}
    assert fraud.merchant_category.isin(risky).mean() > 0.6 > legit.merchant_category.isin(risky).mean()
    # Bursts: a fraudulent transaction usually follows the same card's previous one within seconds.
    gaps = df.groupby("card_id").t.diff()
    assert gaps[df.is_fraud == 1].median() < 30 < gaps[df.is_fraud == 0].median()


def test_fraud_rate_outside_its_range_is_refused_with_the_value():
    with pytest.raises(ValueError, match="fraud_rate must be between 0 and 0.5; got 0.7"):
        generate_transactions(10, fraud_rate=0.7)


def _txn(t, amount, category="grocery", card="c1"):
    return {"card_id": card, "t": t, "amount": amount, "merchant_category": category}


def test_sliding_windows_count_and_sum_only_recent_transactions():
    tracker = FeatureTracker()
    tracker.update(_txn(0, 10))
    tracker.update(_txn(100, 20))
    tracker.update(_txn(250, 30, "fuel"))
    f = tracker.update(_txn(300, 40))
    assert f["txn_count_1m"] == 2  # t=250 and t=300
    assert f["txn_count_5m"] == 3  # t=0 fell out of the 5-minute window
    assert f["amount_sum_5m"] == 90
    assert f["amount_mean"] == 25
    assert f["seconds_since_last"] == 50
    assert f["merchant_category_novelty"] == 0
    assert f["categories"] == "fuel,grocery"
    assert f["n_txns"] == 4 and f["seq"] == 4


def test_a_new_category_and_a_first_transaction_are_flagged():
    tracker = FeatureTracker()
    first = tracker.update(_txn(0, 10), updated_at=123.0)
    assert first["merchant_category_novelty"] == 1
    assert first["seconds_since_last"] == NO_HISTORY_GAP_S
    assert first["updated_at"] == 123.0
    assert tracker.update(_txn(5, 10, "crypto"))["merchant_category_novelty"] == 1
    assert tracker.update(_txn(9, 10, "crypto"))["merchant_category_novelty"] == 0
    assert tracker.update(_txn(9, 10, "crypto", card="c2"))["n_txns"] == 1  # cards are separate


def test_model_inputs_of_an_unknown_card_use_the_transaction_alone():
    inputs = model_inputs(None, 80.0, "crypto", 1000.0)
    assert len(inputs) == len(FEATURE_NAMES)
    named = dict(zip(FEATURE_NAMES, inputs))
    assert named["amount_ratio"] == pytest.approx(2.0)  # against the typical 40
    assert named["category_is_new"] == 1 and named["txn_count_1m"] == 0 and named["log_n_txns"] == 0


def test_stored_windows_expire_with_time_since_the_last_write():
    stored = {k: str(v) for k, v in FeatureTracker().update(_txn(1000, 50)).items()}  # Redis gives strings
    soon = dict(zip(FEATURE_NAMES, model_inputs(stored, 50, "grocery", 1030)))
    later = dict(zip(FEATURE_NAMES, model_inputs(stored, 50, "grocery", 1400)))
    assert soon["txn_count_1m"] == 1 and soon["txn_count_5m"] == 1
    assert later["txn_count_1m"] == 0 and later["txn_count_5m"] == 0
    assert soon["log_seconds_since_last"] == pytest.approx(math.log1p(30))
    assert soon["category_is_new"] == 0 and soon["amount_ratio"] == pytest.approx(1.0)


def test_the_model_separates_fraud_on_held_out_transactions():
    model = train_fraud_model(n=8000, seed=0)
    assert model.holdout_auc > 0.8
    assert model.train_s < 10  # well under 1 s on an idle machine; generous for a busy one
    burst = {"txn_count_1m": "3", "txn_count_5m": "3", "amount_sum_5m": "900", "amount_mean": "150",
             "categories": "electronics,grocery", "n_txns": "20", "last_t": "995"}
    calm = {"txn_count_1m": "1", "txn_count_5m": "1", "amount_sum_5m": "30", "amount_mean": "35",
            "categories": "grocery", "n_txns": "20", "last_t": "0"}
    assert model.score(model_inputs(burst, 400, "crypto", 1000)) > model.score(model_inputs(calm, 30, "grocery", 90_000))
    assert "AUC" in repr(model)


def test_decisions_follow_the_score_thresholds():
    assert [decide(s) for s in (0.1, 0.5, 0.79, 0.8, 0.99)] == ["approve", "review", "review", "decline", "decline"]


class _FakePipeline:
    def __init__(self, store):
        self.store, self.queued = store, []

    def hset(self, key, mapping):
        self.queued.append(("hset", key, dict(mapping)))

    def zadd(self, key, members):
        self.queued.append(("zadd", key, members))

    def zremrangebyscore(self, key, low, high):
        self.queued.append(("zrem", key, high))

    def execute(self):
        self.store.executes += 1
        for op, key, value in self.queued:
            if op == "hset":
                self.store.hashes.setdefault(key, {}).update(value)
        self.queued = []


class _FakeRedis:
    def __init__(self):
        self.hashes, self.executes = {}, 0

    def pipeline(self, transaction=True):
        return _FakePipeline(self)


def test_write_features_pipelines_one_hash_per_card_shifted_to_now():
    import time

    fake = _FakeRedis()
    df = generate_transactions(500, seed=2)
    assert write_features(fake, df, batch=100) == 500
    assert fake.executes == 6  # 5 full batches + the final flush
    assert len(fake.hashes) == df.card_id.nunique()
    last = df.iloc[-1]
    stored = fake.hashes[f"features:card:{last.card_id}"]
    assert abs(stored["last_t"] - time.time()) < 5  # the last transaction happened "now"
    assert stored["seq"] == 500


@pytest.mark.parametrize("field, value", [("amount", "12.5"), ("amount", True), ("card_id", 5)])
def test_the_scoring_api_takes_the_types_its_document_declares_and_no_lookalikes(field, value):
    from fastapi.testclient import TestClient

    from hadrlab.fraud import create_api

    # No lifespan (no `with`): validation answers before any Redis call or model load.
    http = TestClient(create_api({"REDIS_A": "127.0.0.1:1"}))
    body = {"card_id": "card-00001", "amount": 12.5, "merchant_category": "grocery", field: value}
    answer = http.post("/score", json=body)
    assert answer.status_code == 422, answer.text
    assert f"field '{field}'" in answer.json()["detail"]
    unreadable = http.post("/score", content=b"\xff\xfe{", headers={"Content-Type": "application/json"})
    assert unreadable.status_code == 400
    assert "send JSON text, UTF-8 encoded" in unreadable.json()["detail"]


def test_the_error_series_of_the_scoring_sli_exists_before_the_first_error():
    """rate() needs two samples: a 503 series born at 1 would hide the first outage's first errors."""
    from hadrlab.fraud import _ApiMetrics

    text = _ApiMetrics().render()
    assert 'fraud_api_requests_total{region="none",status="503"} 0' in text
    assert 'fraud_api_requests_total{region="a",status="200"} 0' in text
