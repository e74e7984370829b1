"""The registry's app in process: inputs that once answered 500 now get a 422 that says why."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from hadrlab.registry import MAX_VERSION, create_registry_app

TOKEN = "s3cret"


@pytest.fixture
def client(tmp_path):
    with TestClient(create_registry_app(tmp_path, TOKEN), raise_server_exceptions=False) as http:
        http.headers["Authorization"] = f"Bearer {TOKEN}"
        assert http.post("/models/digits/versions", json={"artifact_b64": "eA=="}).status_code == 201
        yield http


@pytest.mark.parametrize("version", ["²", "٣", "１"], ids=["superscript", "arabic-indic", "fullwidth"])
def test_a_version_in_non_ascii_digits_is_422_not_500(client, version):
    # str.isdigit() is true for these, and int() refused them: a 500.
    for path in (f"/models/digits/versions/{version}", f"/models/digits/versions/{version}/artifact"):
        answer = client.get(path)
        assert answer.status_code == 422, answer.text
        assert "versions are whole numbers from 1" in answer.json()["detail"]


def test_a_version_too_large_for_the_store_is_422_not_500(client):
    # SQLite's INTEGER holds 64 bits: a larger number overflowed inside the query.
    answer = client.get(f"/models/digits/versions/{MAX_VERSION + 1}")
    assert answer.status_code == 422, answer.text
    assert f"from 1 to {MAX_VERSION}" in answer.json()["detail"]
    assert client.get(f"/models/digits/versions/{MAX_VERSION}").status_code == 404


@pytest.mark.parametrize("name", ["digits%0A", "digits%0D%0A"], ids=["newline", "crlf"])
def test_a_model_name_ending_in_a_newline_is_422(client, name):
    # re.match with "$" let a final newline through: "digits\n" was a valid, other model.
    answer = client.post(f"/models/{name}/versions", json={"artifact_b64": "eA=="})
    assert answer.status_code == 422, answer.text
    assert "is not valid: use 1-64 letters" in answer.json()["detail"]
    assert [v["name"] for v in client.get("/models/digits/versions").json()["versions"]] == ["digits"]


def test_a_metric_that_is_not_finite_is_422(client):
    # JSON parsers read 1e999 as infinity, which the JSON answers could not carry back.
    answer = client.post("/models/digits/versions", content=b'{"artifact_b64": "eA==", "metrics": {"a": 1e999}}',
                         headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert "must be a finite number" in answer.json()["detail"]


def test_a_405_lists_every_method_of_the_path(client):
    answer = client.delete("/models/digits/versions")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET, POST"
    assert "use GET, POST" in answer.json()["detail"]
