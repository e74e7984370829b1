"""Retries, the circuit breaker and the model loader's fallback, with fakes and no processes."""

from __future__ import annotations

import json
import pickle
import time

import pybreaker
import pytest

from hadrlab.registry import IntegrityError, ModelNotFound, ModelVersion, RegistryUnavailable, sha256_of
from hadrlab.resilience import ModelLoader, ModelUnavailable, registry_breaker, retrying


class Flaky:
    """A callable that fails ``failures`` times with ``error``, then returns "ok"."""

    def __init__(self, failures: int, error: type[Exception] = RegistryUnavailable) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"failure {self.calls}")
        return "ok"


def test_retrying_makes_the_stated_number_of_attempts_then_reraises_the_last_error():
    waits: list[float] = []
    call = Flaky(failures=100)
    with pytest.raises(RegistryUnavailable, match="failure 4"):
        retrying(4, initial_wait_s=0.1, max_wait_s=0.3, sleep=waits.append)(call)
    assert call.calls == 4
    assert len(waits) == 3
    # full jitter: the n-th wait is somewhere in [0, min(max, initial * 2**(n-1))]
    for n, wait_s in enumerate(waits, start=1):
        assert 0 <= wait_s <= min(0.3, 0.1 * 2 ** (n - 1)) + 1e-9


def test_retrying_returns_once_a_later_attempt_succeeds():
    call = Flaky(failures=2)
    assert retrying(5, sleep=lambda s: None)(call) == "ok"
    assert call.calls == 3


def test_retrying_does_not_retry_an_answer_such_as_not_found():
    call = Flaky(failures=100, error=ModelNotFound)
    with pytest.raises(ModelNotFound):
        retrying(5, sleep=lambda s: None)(call)
    assert call.calls == 1


def test_retry_waits_are_jittered_not_fixed():
    waits: list[float] = []
    for _ in range(10):
        with pytest.raises(RegistryUnavailable):
            retrying(2, initial_wait_s=1.0, max_wait_s=1.0, sleep=waits.append)(Flaky(9))
    assert len(waits) == 10
    assert len(set(waits)) > 5  # random waits, so clients do not retry in lock-step


def test_retrying_stops_after_the_time_limit_even_with_attempts_left():
    call = Flaky(failures=100)
    start = time.monotonic()
    with pytest.raises(RegistryUnavailable):
        retrying(1000, stop_after_s=0.3, initial_wait_s=0.05, max_wait_s=0.05)(call)
    assert time.monotonic() - start < 2.0
    assert 2 <= call.calls < 1000


def test_breaker_opens_after_fail_max_failures_and_half_opens_after_the_reset_timeout():
    breaker = registry_breaker(fail_max=3, reset_timeout_s=0.3, name="test")
    failing = Flaky(failures=3)
    for _ in range(3):
        with pytest.raises(RegistryUnavailable):
            breaker.call(failing)
    assert breaker.current_state == "open"
    opened_t = breaker.timeline.events[-1]["t"]
    # While open, calls fail at once and never reach the registry.
    with pytest.raises(pybreaker.CircuitBreakerError):
        breaker.call(failing)
    assert failing.calls == 3
    time.sleep(0.35)
    assert breaker.call(failing) == "ok"  # the trial call, half-open, succeeds
    assert breaker.current_state == "closed"
    states = [e["to"] for e in breaker.timeline.events]
    assert states == ["open", "half-open", "closed"]
    half_open_t = breaker.timeline.events[1]["t"]
    assert half_open_t - opened_t >= 0.3
    assert list(breaker.timeline.frame().columns) == ["t", "breaker", "from", "to", "failures"]


def test_a_failed_trial_call_opens_the_breaker_again():
    breaker = registry_breaker(fail_max=2, reset_timeout_s=0.2)
    failing = Flaky(failures=100)
    for _ in range(2):
        with pytest.raises(RegistryUnavailable):
            breaker.call(failing)
    time.sleep(0.25)
    with pytest.raises((RegistryUnavailable, pybreaker.CircuitBreakerError)):
        breaker.call(failing)
    assert failing.calls == 3
    assert [e["to"] for e in breaker.timeline.events] == ["open", "half-open", "open"]


def test_breaker_does_not_count_answers_such_as_not_found():
    breaker = registry_breaker(fail_max=2, reset_timeout_s=10)
    for _ in range(5):
        with pytest.raises(ModelNotFound):
            breaker.call(Flaky(failures=1, error=ModelNotFound))
    assert breaker.current_state == "closed"


# --------------------------------------------------------------------------- loader


class Model:
    """A picklable stand-in for an estimator."""

    n_features_in_ = 2

    def __init__(self, label: int) -> None:
        self.label = label

    def predict(self, rows):
        import numpy as np

        return np.full(len(rows), self.label)


class FakeRegistry:
    """The parts of RegistryClient that ModelLoader uses, with an outage switch."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0
        self.artifacts: dict[int, bytes] = {}
        self.production_version = 0

    def publish(self, label: int) -> None:
        version = len(self.artifacts) + 1
        self.artifacts[version] = pickle.dumps(Model(label))
        self.production_version = version

    def production(self, name: str) -> ModelVersion:
        self.calls += 1
        if self.down:
            raise RegistryUnavailable("registry down (fake)")
        v = self.production_version
        return ModelVersion(name, v, sha256_of(self.artifacts[v]), "production")

    def download(self, name: str, version: int) -> bytes:
        self.calls += 1
        if self.down:
            raise RegistryUnavailable("registry down (fake)")
        return self.artifacts[version]


@pytest.fixture
def fake():
    registry = FakeRegistry()
    registry.publish(label=7)
    return registry


def _loader(fake, cache_dir, **switches) -> ModelLoader:
    switches.setdefault("retries", False)
    return ModelLoader(fake, "m", cache_dir, **switches)


def test_loader_serves_from_the_registry_and_keeps_a_verified_copy(fake, tmp_path):
    model = _loader(fake, tmp_path).load()
    assert (model.source, model.version, model.predict([[0, 0]])) == ("registry", 1, [7])
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["sha256"] == sha256_of((tmp_path / "model.bin").read_bytes())


def test_loader_picks_up_a_new_production_version(fake, tmp_path):
    loader = _loader(fake, tmp_path)
    loader.load()
    fake.publish(label=3)
    assert loader.refresh().predict([[1, 1]]) == [3]
    assert loader.current.version == 2


def test_with_fallback_an_outage_keeps_the_last_good_model_and_a_restart_uses_the_cache(fake, tmp_path):
    loader = _loader(fake, tmp_path)
    loader.load()
    fake.down = True
    assert loader.refresh().source == "cache"
    assert "registry down" in loader.status()["last_error"]
    restarted = _loader(fake, tmp_path)  # a new process: nothing in memory
    model = restarted.load()
    assert (model.source, model.version, model.predict([[0, 0]])) == ("cache", 1, [7])
    fake.down = False
    assert restarted.refresh().source == "registry"


def test_without_fallback_an_outage_makes_the_loader_fail_closed(fake, tmp_path):
    loader = _loader(fake, tmp_path, cache_fallback=False)
    loader.load()
    fake.down = True
    assert loader.refresh() is None
    with pytest.raises(ModelUnavailable, match="registry down"):
        _loader(fake, tmp_path, cache_fallback=False).load()


def test_a_corrupt_cache_is_not_served(fake, tmp_path):
    _loader(fake, tmp_path).load()
    (tmp_path / "model.bin").write_bytes(pickle.dumps(Model(666)))
    fake.down = True
    with pytest.raises(ModelUnavailable, match="no usable cached model"):
        _loader(fake, tmp_path).load()


def test_an_integrity_error_falls_back_to_the_last_good_model(fake, tmp_path):
    loader = _loader(fake, tmp_path)
    loader.load()
    fake.publish(label=5)

    def corrupt(name, version):
        raise IntegrityError("hash mismatch (fake)")

    fake.download = corrupt
    model = loader.refresh()
    assert (model.source, model.version) == ("cache", 1)


def test_with_the_breaker_on_an_outage_stops_calling_the_registry(fake, tmp_path):
    loader = _loader(fake, tmp_path, breaker=True, breaker_fail_max=3, breaker_reset_s=60)
    loader.load()
    fake.down = True
    calls_before = fake.calls
    for _ in range(10):
        assert loader.refresh().source == "cache"
    assert fake.calls - calls_before == 3  # then the breaker answers for the registry
    assert loader.status()["breaker_state"] == "open"


def test_with_retries_on_each_check_tries_the_stated_number_of_times(fake, tmp_path):
    loader = _loader(fake, tmp_path, retries=True, retry_attempts=3, retry_max_wait_s=0.01,
                     breaker=False)
    loader.load()
    fake.down = True
    calls_before = fake.calls
    loader.refresh()
    assert fake.calls - calls_before == 3


@pytest.mark.parametrize("value", [1e39, -1e39, float("inf"), float("nan")])
def test_online_features_outside_float32_are_refused_with_the_range(value):
    from hadrlab.resilience import FLOAT32_MAX, _parse_features

    with pytest.raises(ValueError, match=r"Row 1, feature 2 is .*finite number between"):
        _parse_features({"features": [[0, 0, 0], [0, 0, value]]}, 3)
    assert _parse_features({"features": [0, 0, FLOAT32_MAX]}, 3) == [[0, 0, FLOAT32_MAX]]
