"""The old primary comes back empty after a failover: the scoring API must never read from it.

A killed primary restarts with no data and its original config, so for several seconds it is
a healthy-looking, writable, EMPTY master; then Sentinel makes it a replica of the new primary
and it does a full sync. Throughout, /score for known cards must be answered from region B,
with features, and the sidecar must name region B as the primary.
"""

import threading
import time

import httpx
import pytest

from hadrlab.featurestore import start_feature_store
from hadrlab.fraud import generate_transactions, start_fraud_api, write_features
from hadrlab.processes import wait_until
from hadrlab.sidecar import start_sidecar

UNKNOWN = "none — unknown card"


@pytest.fixture
def store():
    fs = start_feature_store(down_after_ms=1000)
    yield fs
    fs.stop()


def _state(sidecar):
    return httpx.get(f"{sidecar.url}/state", timeout=2).json()


class _Scorer(threading.Thread):
    """Scores known cards in turn, as fast as the API answers, recording each answer."""

    def __init__(self, url, cards):
        super().__init__(daemon=True)
        self.url, self.cards = url, cards
        self.rows = []
        self.stop_event = threading.Event()

    def run(self):
        with httpx.Client(timeout=3) as http:
            i = 0
            while not self.stop_event.is_set():
                body = {"card_id": self.cards[i % len(self.cards)], "amount": 20, "merchant_category": "grocery"}
                t = time.time()
                try:
                    resp = http.post(f"{self.url}/score", json=body)
                    answer = resp.json()
                    self.rows.append({"t": t, "status": resp.status_code,
                                      "region": answer.get("features_region"),
                                      "known": answer.get("features") not in (None, UNKNOWN)})
                except httpx.HTTPError as exc:
                    self.rows.append({"t": t, "status": type(exc).__name__, "region": None, "known": False})
                i += 1
                time.sleep(0.01)


def test_the_returning_empty_primary_serves_no_read_until_it_is_a_linked_replica(store):
    txns = generate_transactions(200, seed=5, n_cards=40)
    with store.master_for() as client:
        write_features(client, txns)
    cards = sorted(txns.card_id.unique())
    env = store.connection_env()
    sidecar = start_sidecar(env, name="sidecar-return", check_interval_ms=100, consecutive=3, recover_consecutive=5)
    api = start_fraud_api(env, name="fraud-api-return", sidecar_url=sidecar.url)
    scorer = _Scorer(api.url, cards)
    try:
        state = _state(sidecar)
        assert state["primary"]["region"] == "a" and state["read_region"] == "a"

        assert store.kill_primary() == "a"
        store.wait_for_failover(timeout_s=15)
        wait_until(lambda: _state(sidecar)["primary"]["region"] == "b", timeout_s=5, child=sidecar,
                   describe="the sidecar following the Sentinels to region B")
        wait_until(lambda: _state(sidecar)["read_region"] == "b", timeout_s=5, child=sidecar)
        time.sleep(0.3)  # the API refreshes the sidecar's answer every 100 ms

        scorer.start()
        returned = store.restart_old_primary(timeout_s=30)  # returns once A is a linked replica
        time.sleep(1.0)  # and a little longer: reads may now stay on B or not, but never empty
        scorer.stop_event.set()
        scorer.join(timeout=5)
        state = _state(sidecar)
        history = httpx.get(f"{sidecar.url}/history", params={"since": returned.started_at}, timeout=2).json()
    finally:
        scorer.stop_event.set()
        api.stop()
        sidecar.stop()

    # The hazard really happened: A was an empty master for a while, and we scored meanwhile.
    assert returned.promoted_at is None and returned.linked_at is not None, returned
    assert returned.seconds_as_master is not None and returned.seconds_as_master > 1.0, returned
    during = [r for r in scorer.rows if returned.started_at <= r["t"] <= returned.linked_at]
    assert len(during) > 50, f"only {len(during)} requests while region A was coming back"
    # ... and the sidecar judged A by its data, not its PING.
    refused = [h for h in history if h["region"] == "a" and not h["ok"] and "did not elect" in h["error"]]
    assert refused, "the sidecar never reported region A as a master the Sentinels did not elect"

    # Not one answer came from empty or stale data, and none from A before it was linked.
    assert all(r["status"] == 200 for r in scorer.rows), [r for r in scorer.rows if r["status"] != 200][:5]
    assert not [r for r in scorer.rows if not r["known"]], "some reads found no features"
    early_a = [r for r in scorer.rows if r["region"] == "a" and r["t"] < returned.linked_at]
    assert not early_a, f"{len(early_a)} reads served by region A before it was a linked replica"
    assert state["primary"]["region"] == "b" and state["read_region"] == "b"
    assert [(m["from"], m["to"]) for m in state["primary_moves"]] == [("a", "b")]
