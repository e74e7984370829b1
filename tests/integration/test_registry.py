"""The model registry as a real process: versions, stages, persistence, hashes, errors, faults."""

from __future__ import annotations

import time

import httpx
import pytest

from hadrlab.registry import (
    IntegrityError,
    InvalidRequest,
    ModelNotFound,
    RegistryUnavailable,
    sha256_of,
    start_registry,
)


@pytest.fixture
def registry(tmp_path):
    reg = start_registry("registry-test", data_dir=tmp_path / "registry")
    yield reg
    reg.stop()


def test_register_list_promote_and_production_round_trip(registry):
    client = registry.client()
    v1 = client.register("digits", b"model-one", {"accuracy": 0.91}, {"C": 1.0})
    v2 = client.register("digits", b"model-two", {"accuracy": 0.95}, {"C": 10.0})
    assert (v1, v2) == (1, 2)
    versions = client.list_versions("digits")
    assert [(v.version, v.stage) for v in versions] == [(1, "none"), (2, "none")]
    assert versions[1].sha256 == sha256_of(b"model-two")
    assert versions[1].metrics == {"accuracy": 0.95} and versions[1].params == {"C": 10.0}
    client.promote("digits", v1, "production")
    assert client.production("digits").version == 1
    client.promote("digits", v2, "production")
    assert client.production("digits").version == 2
    assert client.get("digits", v1).stage == "archived"  # one production at a time
    assert client.download("digits", v2) == b"model-two"


def test_state_survives_a_registry_restart(registry):
    client = registry.client()
    version = client.register("digits", b"weights", {"accuracy": 0.9}, {})
    client.promote("digits", version, "production")
    registry.kill()
    with pytest.raises(RegistryUnavailable, match="Could not reach the registry"):
        client.production("digits")
    registry.restart()
    meta = client.production("digits")
    assert (meta.version, meta.sha256) == (version, sha256_of(b"weights"))
    assert client.download("digits", version) == b"weights"


def test_an_artifact_corrupted_on_disk_is_refused_by_the_client(registry):
    client = registry.client()
    version = client.register("digits", b"good bytes", {}, {})
    path = registry.data_dir / "artifacts" / "digits" / f"v{version}.bin"
    path.write_bytes(b"evil bytes")
    with pytest.raises(IntegrityError, match="is corrupt"):
        client.download("digits", version)


def test_unknown_models_and_versions_answer_404_with_a_clear_message(registry):
    client = registry.client()
    with pytest.raises(ModelNotFound, match="'nope' is not in the registry"):
        client.production("nope")
    client.register("digits", b"x", {}, {})
    with pytest.raises(ModelNotFound, match="no version 7; its versions are \\[1\\]"):
        client.get("digits", 7)
    with pytest.raises(ModelNotFound, match="has no production version: promote one"):
        client.production("digits")


def test_malformed_requests_answer_422_with_a_clear_message(registry):
    headers = {"Authorization": f"Bearer {registry.token}"}
    base = f"{registry.url}/models"
    cases = [
        ("POST", "/digits/versions", {"metrics": {}}, "artifact_b64"),
        ("POST", "/digits/versions", {"artifact_b64": "%%%"}, "not valid base64"),
        ("POST", "/digits/versions", {"artifact_b64": "eA==", "metrics": {"acc": "high"}},
         "must be a number"),
        ("POST", "/bad name/versions", {"artifact_b64": "eA=="}, "is not valid"),
        ("GET", "/digits/versions/zero", None, "whole numbers"),
    ]
    for method, path, body, phrase in cases:
        response = httpx.request(method, base + path, json=body, headers=headers, timeout=5)
        assert response.status_code == 422, (path, response.text)
        assert phrase in response.json()["detail"]
    registry.client().register("digits", b"x", {}, {})
    with pytest.raises(InvalidRequest, match="must be one of"):
        registry.client().promote("digits", 1, "prod")


def test_reads_and_writes_need_the_token(registry):
    assert httpx.get(f"{registry.url}/models/digits/production", timeout=5).status_code == 401
    assert httpx.get(f"{registry.url}/healthz", timeout=5).status_code == 200
    with pytest.raises(InvalidRequest, match="unauthorised"):
        type(registry.client())(registry.url, "wrong-token").list_versions("digits")


def test_an_injected_delay_slows_calls_and_the_client_timeout_fires(registry):
    client = registry.client()
    client.register("digits", b"x", {}, {})
    registry.set_faults(delay_ms=400)
    start = time.perf_counter()
    client.list_versions("digits")
    assert time.perf_counter() - start >= 0.4
    impatient = registry.client(timeout_s=0.1)
    with pytest.raises(RegistryUnavailable, match="did not answer .* within 0.1 s"):
        impatient.list_versions("digits")
    registry.set_faults(delay_ms=0)
    assert impatient.list_versions("digits")[0].version == 1


def test_an_injected_error_rate_fails_requests_with_503(registry):
    registry.set_faults(error_rate=1.0)
    with pytest.raises(RegistryUnavailable, match="503"):
        registry.client().list_versions("digits")
    registry.set_faults(error_rate=0)
    metrics = httpx.get(f"{registry.url}/metrics", timeout=5).text
    assert "registry_injected_errors_total 1" in metrics
