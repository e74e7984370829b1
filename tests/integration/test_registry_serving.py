"""The online scoring API through a registry outage, with and without the cached-model fallback."""

from __future__ import annotations

import pickle
import threading
import time

import httpx
import pytest

from hadrlab.processes import http_status, wait_until
from hadrlab.registry import start_online_api, start_registry


def _train_bytes() -> tuple[bytes, list[list[float]]]:
    from sklearn.datasets import load_digits
    from sklearn.tree import DecisionTreeClassifier

    X, y = load_digits(return_X_y=True)
    model = DecisionTreeClassifier(max_depth=8, random_state=0).fit(X[:1200], y[:1200])
    return pickle.dumps(model), X[1200:1210].tolist()


@pytest.fixture
def registry(tmp_path):
    reg = start_registry("registry-serving", data_dir=tmp_path / "registry")
    artifact, rows = _train_bytes()
    client = reg.client()
    version = client.register("digits", artifact, {"accuracy": 0.85}, {"max_depth": 8})
    client.promote("digits", version, "production")
    reg.rows = rows
    yield reg
    reg.stop()


def _hammer(url: str, rows, seconds: float, threads: int = 3) -> tuple[int, int]:
    """Send /predict from ``threads`` threads for ``seconds``; return (ok, total)."""
    counts = [0, 0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker() -> None:
        with httpx.Client(timeout=2) as http:
            while time.monotonic() < stop_at:
                try:
                    ok = http.post(f"{url}/predict", json={"features": rows[:2]}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    counts[0] += ok
                    counts[1] += 1

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return counts[0], counts[1]


def _readyz(api) -> dict:
    return httpx.get(f"{api.url}/readyz", timeout=5).json()


def test_with_cache_fallback_serving_survives_a_registry_outage_and_a_restart_during_it(
    registry, tmp_path
):
    options = dict(registry=registry, cache_dir=tmp_path / "cache", reload_interval_s=0.2,
                   registry_timeout_s=0.5, cache_fallback=True)
    api = start_online_api("online-fallback", **options)
    try:
        assert _readyz(api)["source"] == "registry"
        body = httpx.post(f"{api.url}/predict", json={"features": registry.rows}, timeout=5).json()
        assert len(body["predictions"]) == len(registry.rows)
        killer = threading.Timer(0.5, registry.kill)
        killer.start()
        ok, total = _hammer(api.url, registry.rows, seconds=3.0)
        killer.join()
        assert total > 100
        assert ok / total >= 0.999, f"{ok}/{total} answered during the registry outage"
        assert _readyz(api)["source"] == "cache"
        status = httpx.get(f"{api.url}/status", timeout=5).json()
        assert status["breaker_state"] == "open"
        assert status["breaker_timeline"][0]["to"] == "open"
        # A restart while the registry is still down comes back from the disk cache.
        api.stop()
        api = start_online_api("online-fallback-2", **options)
        assert _readyz(api) == {"status": "ready", "model": "digits", "version": 1,
                                "source": "cache"}
        assert httpx.post(f"{api.url}/predict", json={"features": registry.rows[:1]},
                          timeout=5).headers["x-model-source"] == "cache"
        registry.restart()
        # The breaker (reset after 5 s by default) lets a trial call through, which succeeds.
        wait_until(lambda: _readyz(api)["source"] == "registry", timeout_s=20,
                   describe="the online API confirming its model with the registry again")
    finally:
        api.stop()


def test_without_cache_fallback_a_registry_outage_makes_serving_unready(registry, tmp_path):
    options = dict(registry=registry, cache_dir=tmp_path / "cache", reload_interval_s=0.2,
                   registry_timeout_s=0.5, cache_fallback=False)
    api = start_online_api("online-no-fallback", **options)
    try:
        registry.kill()
        wait_until(lambda: http_status(f"{api.url}/readyz") == 503, timeout_s=10,
                   describe="the online API reporting unready")
        api.stop()
        api = start_online_api("online-no-fallback-2", wait="live", **options)
        time.sleep(1.5)  # several reload attempts, all failing
        response = httpx.get(f"{api.url}/readyz", timeout=5)
        assert response.status_code == 503
        assert "cache fallback off" in response.json()["detail"]
        predict = httpx.post(f"{api.url}/predict", json={"features": registry.rows[:1]}, timeout=5)
        assert predict.status_code == 503
    finally:
        api.stop()


def test_features_beyond_float32_or_not_finite_get_422_not_500(registry, tmp_path):
    # The tree computes in float32: 1e39 overflowed inside predict() and answered 500.
    api = start_online_api("online-float32", registry=registry, cache_dir=tmp_path / "cache")
    try:
        row = list(registry.rows[0])
        for bad, raw in ((1e39, None), (-1e39, None), (None, b"1e999"), (None, b"NaN")):
            if raw is None:
                answer = httpx.post(f"{api.url}/predict", json={"features": [row[:-1] + [bad]]}, timeout=5)
            else:
                body = b'{"features": [[' + b", ".join([b"0"] * 63 + [raw]) + b"]]}"
                answer = httpx.post(f"{api.url}/predict", content=body, timeout=5,
                                    headers={"Content-Type": "application/json"})
            assert answer.status_code == 422, (bad, raw, answer.text)
            assert "Row 0, feature 63" in answer.json()["detail"]
            assert "finite number between" in answer.json()["detail"]
        ok = httpx.post(f"{api.url}/predict", json={"features": [row[:-1] + [3.4e38]]}, timeout=5)
        assert ok.status_code == 200, ok.text
    finally:
        api.stop()
