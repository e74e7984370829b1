"""The sidecar's and the alert receiver's HTTP APIs in process: refusals that say what to send."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from hadrlab.sidecar import Sidecar, create_receiver_app, create_sidecar_app


@pytest.fixture
def sidecar_http():
    # Never checked: the Redis clients connect on first use, and no check round runs here.
    return TestClient(create_sidecar_app(Sidecar({"REDIS_A": "127.0.0.1:1", "REDIS_B": "127.0.0.1:2"})))


@pytest.mark.parametrize("since", ["abc", "", "nan", "inf", "1_000", "0x10"])
def test_history_since_a_non_number_is_422_saying_what_to_send(sidecar_http, since):
    # The old server called float() on it unguarded: "abc" broke the connection.
    answer = sidecar_http.get("/history", params={"since": since})
    assert answer.status_code == 422, answer.text
    assert "since must be a number of epoch seconds, e.g. ?since=" in answer.json()["detail"]
    assert repr(since) in answer.json()["detail"]


@pytest.mark.parametrize("since", ["0", "1700000000.25", "-1", "1e9", ".5"])
def test_history_since_a_number_is_answered(sidecar_http, since):
    answer = sidecar_http.get("/history", params={"since": since})
    assert answer.status_code == 200 and answer.json() == []


def test_an_unknown_path_lists_the_paths_there_are(sidecar_http):
    answer = sidecar_http.get("/nope")
    assert answer.status_code == 404
    assert answer.json()["detail"].startswith("No GET /nope here; try [")
    assert "'/state'" in answer.json()["detail"]


@pytest.mark.parametrize("body", [{"alerts": 5}, {"alerts": [{"labels": "x"}]}, [{"status": 1}], 7, None],
                         ids=["alerts-not-a-list", "labels-not-an-object", "status-not-a-string",
                              "a-number", "null"])
def test_the_receiver_refuses_a_body_that_is_not_alerts_with_422(body):
    # {"alerts": 5} and {"labels": "x"} used to raise inside the handler (no answer at all).
    http = TestClient(create_receiver_app())
    answer = http.post("/alerts", json=body)
    assert answer.status_code == 422, answer.text
    assert "Send Alertmanager webhook JSON" in answer.json()["detail"]
    assert http.get("/alerts").json() == []


def test_the_receiver_keeps_a_webhook_and_a_bare_alert():
    http = TestClient(create_receiver_app())
    webhook = {"receiver": "page", "status": "firing",
               "alerts": [{"labels": {"alertname": "RegionDown", "region": "a"}}]}
    assert http.post("/alerts", json=webhook).json() == {"received": 1}
    assert http.post("/api/v2/alerts", json=[{"status": "resolved", "labels": {"alertname": "X"}}]).json() == {"received": 1}
    rows = http.get("/alerts").json()
    assert [(r["status"], r["receiver"], r["alertname"], r["region"]) for r in rows] == [
        ("firing", "page", "RegionDown", "a"), ("resolved", "", "X", "")]
    assert http.delete("/alerts").json() == {"cleared": 2}
