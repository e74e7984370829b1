"""The model API as real processes: probes, predictions, errors, metrics, graceful shutdown."""

from __future__ import annotations

import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from hadrlab.errors import PortInUseError, ProcessExited
from hadrlab.model import split_digits
from hadrlab.processes import http_status, start_process, wait_for_http, wait_until
from hadrlab.serving import parse_metrics, predict_payload, start_model_api


@pytest.fixture(scope="module")
def api():
    """One ready replica shared by the tests that only send requests."""
    child = start_model_api("model-api-test", max_batch=256)
    yield child
    child.stop()


def _metrics(child) -> dict[str, float]:
    return parse_metrics(httpx.get(f"{child.url}/metrics", timeout=5).text)


def test_liveness_answers_before_readiness_while_the_model_loads():
    payload = predict_payload()  # first, it imports scikit-learn: seconds on a busy machine
    start = time.monotonic()
    child = start_model_api("model-api-slow", load_delay_s=2.0, wait="live")
    try:
        live_s = time.monotonic() - start
        assert http_status(f"{child.url}/readyz") == 503
        early = httpx.post(f"{child.url}/predict", json=payload, timeout=5)
        assert early.status_code == 503
        assert early.json() == {"detail": "model not loaded yet"}
        wait_for_http(child, "/readyz", timeout_s=30)
        ready_s = time.monotonic() - start
        assert ready_s >= live_s + 1.9  # the 2 s load delay starts once the port is open
        assert http_status(f"{child.url}/healthz") == 200
    finally:
        child.stop()


def test_predictions_of_held_out_digits_are_accurate(api):
    _, _, X_held, y_held = split_digits()
    images = [[int(v) for v in row] for row in X_held[:200]]
    response = httpx.post(f"{api.url}/predict", json={"images": images}, timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == "v1"
    assert body["replica"] == "model-api-test"
    assert response.headers["x-replica"] == "model-api-test"
    accuracy = np.mean(np.array(body["predictions"]) == y_held[:200])
    assert accuracy > 0.9


def test_one_8x8_image_is_classified(api):
    _, _, X_held, y_held = split_digits()
    hits = 0
    for row, label in zip(X_held[:10], y_held[:10]):
        rows = row.reshape(8, 8).astype(int).tolist()
        response = httpx.post(f"{api.url}/predict", json={"image": rows}, timeout=5)
        assert response.status_code == 200
        hits += response.json()["predictions"] == [int(label)]
    assert hits >= 9


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"image": [1, 2, 3]}, "must be 64 numbers or 8 rows of 8 numbers"),
        ({"image": [0] * 63 + [99]}, '"image"[63] is 99. Rescale the image to 0-16'),
        ({"image": [0] * 63 + ["x"]}, "only numbers between 0 and 16"),
        ({"picture": [0] * 64}, 'must have a field "image"'),
    ],
    ids=["wrong-shape", "out-of-range", "non-numeric", "missing-field"],
)
def test_malformed_input_gets_422_saying_what_was_expected(api, body, expected):
    response = httpx.post(f"{api.url}/predict", json=body, timeout=5)
    assert response.status_code == 422
    assert expected in response.json()["detail"]


def test_a_batch_over_max_batch_gets_413(api):
    response = httpx.post(f"{api.url}/predict", json=predict_payload(n=257), timeout=10)
    assert response.status_code == 413
    assert "limit of 256 (MAX_BATCH)" in response.json()["detail"]


def test_metrics_count_requests_and_grow(api):
    ok = 'model_api_requests_total{path="/predict",status="200"}'
    bad = 'model_api_requests_total{path="/predict",status="422"}'
    before = _metrics(api)
    for _ in range(3):
        httpx.post(f"{api.url}/predict", json=predict_payload(n=2), timeout=5)
    httpx.post(f"{api.url}/predict", json={"image": []}, timeout=5)
    after = _metrics(api)
    assert after[ok] == before.get(ok, 0) + 3
    assert after[bad] == before.get(bad, 0) + 1
    assert after["model_api_predictions_total"] == before["model_api_predictions_total"] + 6
    count = "model_api_predict_latency_seconds_count"
    assert after[count] == before[count] + 4
    assert after["model_api_ready"] == 1
    assert after['model_api_in_flight_requests{path="/predict"}'] == 0
    assert any(k.startswith('model_api_model_info{version="v1",sha256="') for k in after)


def _fire(url: str, n: int) -> tuple[ThreadPoolExecutor, list]:
    """Send n /predict requests at once from n threads; return the pool and the futures."""
    # Bodies and clients are made first and a barrier releases the threads together, so
    # that the n requests overlap even on a busy machine.
    bodies = [{"images": [image]} for image in predict_payload(n=n)["images"]]
    clients = [httpx.Client(timeout=20) for _ in range(n)]
    barrier = threading.Barrier(n)

    def send(client: httpx.Client, body: dict) -> httpx.Response:
        with client:
            barrier.wait(timeout=20)
            return client.post(f"{url}/predict", json=body)

    pool = ThreadPoolExecutor(max_workers=n)
    futures = [pool.submit(send, c, b) for c, b in zip(clients, bodies)]
    return pool, futures


def _wait_in_flight(child, n: int) -> None:
    key = 'model_api_in_flight_requests{path="/predict"}'
    wait_until(lambda: _metrics(child)[key] >= n, timeout_s=10,
               describe=f"{n} requests in flight", child=child)


def test_sigterm_drains_then_finishes_in_flight_requests_and_exits_0():
    child = start_model_api("model-api-drain", drain_s=1.5, predict_delay_ms=500)
    try:
        pool, futures = _fire(child.url, 10)
        _wait_in_flight(child, 10)
        child.signal(signal.SIGTERM)
        sigterm_at = time.monotonic()
        readyz, healthz = http_status(f"{child.url}/readyz"), http_status(f"{child.url}/healthz")
        assert (readyz, healthz) == (503, 200)  # unready but alive, still serving
        late = httpx.post(f"{child.url}/predict", json=predict_payload(), timeout=10)
        assert late.status_code == 200  # a straggler sent during the drain is served
        statuses = [f.result().status_code for f in futures]
        pool.shutdown()
        assert statuses == [200] * 10
        assert child.popen.wait(timeout=20) == 0
        assert time.monotonic() - sigterm_at >= 1.4  # it waited for the drain
        assert http_status(f"{child.url}/healthz") == 0  # the listener is closed
    finally:
        child.stop()


def test_sigterm_without_drain_still_finishes_in_flight_requests():
    child = start_model_api("model-api-nodrain", drain_s=0, predict_delay_ms=1500)
    try:
        pool, futures = _fire(child.url, 10)
        _wait_in_flight(child, 10)
        child.signal(signal.SIGTERM)
        statuses = [f.result().status_code for f in futures]
        pool.shutdown()
        assert statuses == [200] * 10
        assert child.popen.wait(timeout=20) == 0
    finally:
        child.stop()


def test_a_second_replica_cannot_take_a_port_in_use(api):
    with pytest.raises(PortInUseError, match=str(api.port)):
        start_model_api("model-api-clash", port=api.port)
    assert http_status(f"{api.url}/readyz") == 200


def test_without_port_the_server_exits_with_a_message():
    with pytest.raises(ProcessExited) as info:
        start_process(
            "model-api-noport",
            [sys.executable, "-m", "hadrlab.serving"],
            env={"PORT": ""},
            ready=lambda c: wait_until(lambda: False, timeout_s=30, describe="exit", child=c),
        )
    assert "PORT is not set" in str(info.value)
    assert "exited with code 2" in str(info.value)
