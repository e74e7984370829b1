"""Every course API against its own OpenAPI document: schemathesis, all checks, real services.

Each service is started the way the labs start it (the ``start_*`` helpers; real Redis
servers where it needs them), and ``st run`` generates requests from its /openapi.json:
valid ones that must be accepted and answered as documented, invalid ones that must be
refused with a documented 4xx, unsupported methods, missing or wrong authentication. A
failure names the operation, the check and a curl line that reproduces it.

Bounded: at most MAX_EXAMPLES cases per operation and phase, deterministic generation (the
same cases on every run), one worker, and a time budget per service. Each test prints the
number of generated cases and the time taken.
"""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

MAX_EXAMPLES = 25
BUDGET_S = 60  # per schemathesis run; most take well under 30 s
CONFIG = Path(__file__).with_name("schemathesis.toml")
ST = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG)]

pytestmark = pytest.mark.slow


def run_schemathesis(url: str, tmp_path: Path, *args: str, label: str = "") -> dict:
    """Run ``st run`` against ``url``/openapi.json with every check; fail on any finding.

    Returns ``{"cases": generated test cases, "seconds": wall time}``.
    """
    command = [
        *ST, "run", f"{url}/openapi.json", "--checks", "all",
        "--max-examples", str(MAX_EXAMPLES), "--generation-deterministic",
        "--workers", "1", "--request-timeout", "5", "--no-color", *args,
    ]
    start = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=BUDGET_S, cwd=tmp_path)
    except subprocess.TimeoutExpired as exc:
        so_far = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
        pytest.fail(f"schemathesis against {url} ({label}) took more than {BUDGET_S} s, the "
                    f"budget per service. Output so far:\n{so_far or ''}")
    seconds = time.perf_counter() - start
    out = result.stdout + result.stderr
    assert result.returncode == 0, f"schemathesis found problems in {label} ({url}):\n{out[-12000:]}"
    found = re.search(r"(\d+) generated", out)
    assert found, f"no test-case count in schemathesis' output:\n{out[-3000:]}"
    cases = int(found.group(1))
    assert cases > 0, f"schemathesis generated no test case for {label}:\n{out[-3000:]}"
    print(f"\nschemathesis {label}: {cases} generated cases in {seconds:.1f} s")
    return {"cases": cases, "seconds": seconds}


def openapi(url: str) -> dict:
    answer = httpx.get(f"{url}/openapi.json", timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()


# --------------------------------------------------------------------------- the registry


def test_registry_keeps_its_openapi_contract(tmp_path):
    from hadrlab.registry import sha256_of, start_registry

    registry = start_registry("registry-contract", data_dir=tmp_path / "registry")
    try:
        client = registry.client()
        # Something to find: a model with two versions, one in production.
        client.register("digits", b"model one", {"accuracy": 0.9}, {"C": 1})
        client.promote("digits", client.register("digits", b"model two", {}, {}), "production")
        auth = ("-H", f"Authorization: Bearer {registry.token}")
        doc = openapi(registry.url)
        assert doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"] == {
            "text/plain; version=0.0.4": {"schema": {"type": "string"}}}
        # Every route but the faults: a generated delay_ms (up to 600 s) or error_rate would
        # slow or fail everything after it, by design. The faults routes alone, after: the
        # registry never applies the faults to them.
        run_schemathesis(registry.url, tmp_path, *auth, "--exclude-path", "/admin/faults",
                         label="registry")
        run_schemathesis(registry.url, tmp_path, *auth, "--include-path", "/admin/faults",
                         label="registry /admin/faults")
        registry.set_faults(delay_ms=0, error_rate=0)
        assert client.get("digits", 1).sha256 == sha256_of(b"model one")  # still serving
    finally:
        registry.stop()


# --------------------------------------------------------------------------- the online API


def _digits_tree() -> bytes:
    from sklearn.datasets import load_digits
    from sklearn.tree import DecisionTreeClassifier

    X, y = load_digits(return_X_y=True)
    return pickle.dumps(DecisionTreeClassifier(max_depth=6, random_state=0).fit(X, y))


def test_online_api_keeps_its_openapi_contract(tmp_path):
    from hadrlab.registry import start_online_api, start_registry

    registry = start_registry("registry-for-online-contract", data_dir=tmp_path / "registry")
    api = None
    try:
        client = registry.client()
        client.promote("digits", client.register("digits", _digits_tree(), {}, {}), "production")
        api = start_online_api("online-api-contract", registry=registry, cache_dir=tmp_path / "cache")
        body = openapi(api.url)["paths"]["/predict"]["post"]["requestBody"]
        rows = body["content"]["application/json"]["schema"]["properties"]["features"]["anyOf"]
        assert {r["items"].get("minItems") for r in rows if r["items"].get("type") == "array"} == {64}
        run_schemathesis(api.url, tmp_path, label="online API")
    finally:
        if api is not None:
            api.stop()
        registry.stop()


# --------------------------------------------------------------------------- the model API


def test_model_api_keeps_its_openapi_contract(tmp_path):
    from hadrlab.serving import start_model_api

    # MAX_BATCH 16, not 256: the document follows it, and a batch just over the limit (the
    # 413 case) stays small enough to generate quickly.
    api = start_model_api("model-api-contract", max_batch=16)
    try:
        doc = openapi(api.url)
        predict = doc["paths"]["/predict"]["post"]
        assert {"200", "413", "422", "503"} <= set(predict["responses"])
        assert "16 images" in json.dumps(predict["requestBody"])  # MAX_BATCH, as configured
        run_schemathesis(api.url, tmp_path, label="model API")
    finally:
        api.stop()


# --------------------------------------------------------------------------- the fraud API


@pytest.fixture
def redis_pair():
    from hadrlab.replication import start_redis_pair

    pair = start_redis_pair(name_prefix="contract-redis")
    yield pair
    pair.stop()


def _regions(pair) -> dict:
    return {"REDIS_A": pair.primary.address, "REDIS_B": pair.replica.address,
            "REDIS_PASSWORD": pair.password}


def test_fraud_api_keeps_its_openapi_contract(tmp_path, redis_pair):
    from hadrlab.fraud import generate_transactions, start_fraud_api, write_features

    write_features(redis_pair.primary.client(), generate_transactions(200, seed=1))
    api = start_fraud_api(_regions(redis_pair), name="fraud-api-contract")
    try:
        responses = openapi(api.url)["paths"]["/score"]["post"]["responses"]
        assert {"200", "422", "503"} <= set(responses)
        run_schemathesis(api.url, tmp_path, label="fraud API")
    finally:
        api.stop()


# --------------------------------------------------------------------------- the sidecar and the receiver


def test_sidecar_keeps_its_openapi_contract(tmp_path, redis_pair):
    from hadrlab.sidecar import start_sidecar

    sidecar = start_sidecar(_regions(redis_pair), name="sidecar-contract", check_interval_ms=100)
    try:
        history = openapi(sidecar.url)["paths"]["/history"]["get"]
        assert history["parameters"][0]["schema"]["type"] == "number"
        assert "422" in history["responses"]
        run_schemathesis(sidecar.url, tmp_path, label="sidecar")
    finally:
        sidecar.stop()


def test_alert_receiver_keeps_its_openapi_contract(tmp_path):
    from hadrlab.sidecar import fetch_alerts, start_alert_receiver

    receiver = start_alert_receiver(name="alert-receiver-contract")
    try:
        doc = openapi(receiver.url)
        assert {"/alerts", "/", "/api/v2/alerts"} <= set(doc["paths"])
        run_schemathesis(receiver.url, tmp_path, label="alert receiver")
        assert isinstance(fetch_alerts(receiver), list)
    finally:
        receiver.stop()
