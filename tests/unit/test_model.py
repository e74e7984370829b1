"""The digits classifier and the model API's logic, without starting any process."""

from __future__ import annotations

import asyncio
import hashlib
import math
import os

import httpx
import numpy as np
import pytest

from hadrlab.model import (
    BatchTooLarge,
    InvalidInput,
    load_model,
    parse_images,
    split_digits,
)
from hadrlab.serving import (
    NOT_LOADED,
    ReplicaState,
    ServingSettings,
    create_app,
    parse_metrics,
    predict_payload,
)

FLAT = [float(v) for v in range(16)] * 4  # 64 numbers, all within 0-16
ROWS = [FLAT[r * 8 : r * 8 + 8] for r in range(8)]


# --------------------------------------------------------------------------- input checks


def test_one_flat_image_becomes_one_row_of_64():
    X = parse_images({"image": FLAT})
    assert X.shape == (1, 64)
    assert X[0].tolist() == FLAT


def test_an_8x8_image_is_flattened_row_by_row():
    X = parse_images({"image": ROWS})
    assert X.shape == (1, 64)
    assert X[0].tolist() == FLAT


def test_a_batch_may_mix_flat_and_8x8_images():
    X = parse_images({"images": [FLAT, ROWS, [0] * 64]})
    assert X.shape == (3, 64)
    assert X[2].sum() == 0


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"image": FLAT[:63]}, "got a list of 63 items"),
        ({"image": [FLAT]}, "got a list of 1 item"),
        ({"image": ROWS[:7] + [ROWS[7][:7]]}, "row 7 has 7 values"),
        ({"images": [FLAT, FLAT[:10]]}, '"images"[1] must be 64 numbers or 8 rows of 8 numbers'),
        ({"image": "a digit"}, "got the string 'a digit'"),
    ],
)
def test_a_wrong_shape_says_64_or_8x8_and_what_came(body, expected):
    with pytest.raises(InvalidInput) as info:
        parse_images(body)
    message = str(info.value)
    assert "64 numbers or 8 rows of 8 numbers" in message
    assert expected in message
    assert info.value.status_code == 422


@pytest.mark.parametrize(
    "bad, shown",
    [(17, "is 17"), (-1, "is -1"), (255.0, "is 255.0"), (math.nan, "is nan"), (math.inf, "is inf")],
)
def test_a_value_out_of_0_to_16_is_named_with_its_position(bad, shown):
    image = list(FLAT)
    image[5] = bad
    with pytest.raises(InvalidInput) as info:
        parse_images({"image": image})
    message = str(info.value)
    assert "between 0 and 16" in message
    assert f'"image"[5] {shown}' in message


@pytest.mark.parametrize(
    "bad, shown",
    [("3", "the string '3'"), (True, "the boolean true"), (None, "null"), ({}, "an object")],
)
def test_a_value_that_is_not_a_number_is_refused(bad, shown):
    rows = [list(r) for r in ROWS]
    rows[2][4] = bad
    with pytest.raises(InvalidInput) as info:
        parse_images({"images": [FLAT, rows]})
    message = str(info.value)
    assert "only numbers between 0 and 16" in message
    assert f'"images"[1][2][4] is {shown}' in message


@pytest.mark.parametrize(
    "body, expected",
    [
        ({}, "got fields: none"),
        ({"img": FLAT}, "got fields: img"),
        ([FLAT], "must be a JSON object"),
        ({"image": FLAT, "images": [FLAT]}, "not both"),
        ({"images": []}, "non-empty list"),
        ({"images": FLAT[0]}, "non-empty list"),
    ],
)
def test_a_missing_or_misplaced_field_says_image_or_images(body, expected):
    with pytest.raises(InvalidInput) as info:
        parse_images(body)
    assert expected in str(info.value)


def test_an_oversized_batch_is_refused_before_its_images_are_read():
    with pytest.raises(BatchTooLarge) as info:
        parse_images({"images": [["junk"]] * 5}, max_batch=4)
    assert info.value.status_code == 413
    assert "batch of 5 images" in str(info.value)
    assert "limit of 4" in str(info.value)
    assert parse_images({"images": [FLAT] * 4}, max_batch=4).shape == (4, 64)


# --------------------------------------------------------------------------- training and cache


def test_the_holdout_split_is_fixed_and_disjoint_from_training():
    X_train, y_train, X_held, y_held = split_digits()
    again = split_digits()
    assert len(X_held) == 360 and len(X_train) + len(X_held) == 1797
    assert np.array_equal(X_held, again[2])
    train_rows = {row.tobytes() for row in X_train}
    unseen = sum(row.tobytes() not in train_rows for row in X_held)
    assert unseen > 300  # a few digits are exact duplicates in the dataset itself


def test_first_load_trains_then_the_cache_is_used(tmp_path):
    first = load_model("v1", cache_dir=tmp_path)
    assert not first.from_cache
    assert first.holdout_accuracy > 0.9
    assert first.load_s < 10  # about 0.1 s on one core; generous for a busy machine
    pkl = tmp_path / "v1.pkl"
    assert (tmp_path / "v1.sha256").read_text().split()[0] == first.sha256
    assert hashlib.sha256(pkl.read_bytes()).hexdigest() == first.sha256

    second = load_model("v1", cache_dir=tmp_path)
    assert second.from_cache
    assert second.sha256 == first.sha256
    _, _, X_held, y_held = split_digits()
    assert np.mean(np.array(second.predict(X_held)) == y_held) > 0.9


def test_a_corrupted_cache_file_is_retrained(tmp_path):
    load_model("v1", cache_dir=tmp_path)
    pkl = tmp_path / "v1.pkl"
    pkl.write_bytes(pkl.read_bytes()[:-10] + b"corrupted!")
    again = load_model("v1", cache_dir=tmp_path)
    assert not again.from_cache
    assert hashlib.sha256(pkl.read_bytes()).hexdigest() == again.sha256
    assert load_model("v1", cache_dir=tmp_path).from_cache


def test_v2_is_a_different_more_accurate_classifier(tmp_path):
    v1 = load_model("v1", cache_dir=tmp_path)
    v2 = load_model("v2", cache_dir=tmp_path)
    assert v2.sha256 != v1.sha256
    assert type(v2.estimator).__name__ == "SVC"
    assert v2.holdout_accuracy > 0.95


@pytest.mark.parametrize("version", ["../v1", "", "v 1", "a/b"])
def test_a_version_that_is_not_a_file_name_is_refused(tmp_path, version):
    with pytest.raises(ValueError, match="not a valid name"):
        load_model(version, cache_dir=tmp_path)


def test_predict_payload_gives_real_held_out_digits():
    payload = predict_payload(n=5, seed=3)
    assert payload == predict_payload(n=5, seed=3)
    assert parse_images(payload).shape == (5, 64)
    _, _, X_held, _ = split_digits()
    held = {tuple(int(v) for v in row) for row in X_held}
    assert all(tuple(img) in held for img in payload["images"])


# --------------------------------------------------------------------------- settings


def test_settings_need_a_port_and_have_defaults():
    with pytest.raises(ValueError, match="PORT is not set"):
        ServingSettings.from_env({})
    s = ServingSettings.from_env({"PORT": "8123"})
    assert (s.port, s.host, s.model_version, s.load_delay_s, s.drain_s, s.max_batch) == (
        8123, "127.0.0.1", "v1", 0.0, 0.0, 256,
    )
    assert s.replica.endswith(f"-{os.getpid()}")


@pytest.mark.parametrize(
    "env, message",
    [
        ({"PORT": "http"}, "PORT must be a whole number"),
        ({"PORT": "70000"}, "between 1 and 65535"),
        ({"PORT": "1", "MODEL_LOAD_DELAY_S": "soon"}, "MODEL_LOAD_DELAY_S must be a number"),
        ({"PORT": "1", "SHUTDOWN_DRAIN_S": "-2"}, "SHUTDOWN_DRAIN_S must be a number >= 0"),
        ({"PORT": "1", "MAX_BATCH": "0"}, "MAX_BATCH must be at least 1"),
    ],
)
def test_bad_settings_are_named(env, message):
    with pytest.raises(ValueError, match=message):
        ServingSettings.from_env(env)


# --------------------------------------------------------------------------- metrics and the app


def test_metrics_render_counters_histogram_and_gauges():
    state = ReplicaState(ServingSettings(port=1, replica="r1"))
    metrics = state.metrics
    metrics.observe("/predict", 200, 0.003)
    metrics.observe("/predict", 200, 0.2)
    metrics.observe("/predict", 422, 0.0005)
    samples = parse_metrics(metrics.render(state))
    assert samples['model_api_requests_total{path="/predict",status="200"}'] == 2
    assert samples['model_api_errors_total{path="/predict",class="4xx"}'] == 1
    assert samples['model_api_predict_latency_seconds_bucket{le="0.001"}'] == 1
    assert samples['model_api_predict_latency_seconds_bucket{le="0.005"}'] == 2
    assert samples['model_api_predict_latency_seconds_bucket{le="+Inf"}'] == 3
    assert samples["model_api_predict_latency_seconds_count"] == 3
    assert samples["model_api_ready"] == 0
    assert samples['model_api_model_info{version="v1",sha256="",replica="r1"}'] == 0


def _ask(state: ReplicaState, method: str, path: str, **kwargs) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(state))
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def test_the_app_refuses_predictions_until_the_model_is_loaded(tmp_path):
    state = ReplicaState(ServingSettings(port=1, replica="r1"))
    response = _ask(state, "POST", "/predict", json={"image": FLAT})
    assert response.status_code == 503
    assert response.json() == {"detail": NOT_LOADED}
    assert response.headers["x-replica"] == "r1"
    assert _ask(state, "GET", "/readyz").status_code == 503
    assert _ask(state, "GET", "/healthz").status_code == 200

    state.model = load_model("v1", cache_dir=tmp_path)
    assert _ask(state, "GET", "/readyz").status_code == 200
    response = _ask(state, "POST", "/predict", json={"images": [FLAT, ROWS]})
    assert response.status_code == 200
    body = response.json()
    assert len(body["predictions"]) == 2 and body["replica"] == "r1"

    state.begin_shutdown()
    assert _ask(state, "GET", "/readyz").json()["detail"].startswith("shutting down")
    assert _ask(state, "POST", "/predict", json={"image": FLAT}).status_code == 200
    samples = parse_metrics(_ask(state, "GET", "/metrics").text)
    assert samples['model_api_requests_total{path="/predict",status="503"}'] == 1
    assert samples['model_api_requests_total{path="/predict",status="200"}'] == 2
    assert samples["model_api_predictions_total"] == 3
    assert samples["model_api_shutting_down"] == 1


def test_the_app_answers_bad_json_with_422(tmp_path):
    state = ReplicaState(ServingSettings(port=1, replica="r1"))
    state.model = load_model("v1", cache_dir=tmp_path)
    response = _ask(state, "POST", "/predict", content=b"{not json")
    assert response.status_code == 422
    assert "not valid JSON" in response.json()["detail"]
