"""Hardening a model's serving path against its registry: retries, a circuit breaker, a cache.

The online scoring API needs its model from the registry at start, and asks it every few
seconds whether production changed. Three patterns, each a switch, keep that dependency
from becoming an outage of the API:

- **Retries** (:func:`retrying`, built on tenacity): a call that failed for a passing reason
  (a refused connection, a timeout, a 5xx) is tried again after an exponentially growing,
  random wait ("full jitter"), so many clients do not retry in lock-step. It gives up after
  ``attempts`` tries or ``stop_after_s`` seconds and re-raises the LAST error, unchanged.
- **A circuit breaker** (:func:`registry_breaker`, built on pybreaker): after ``fail_max``
  failures in a row the breaker OPENS and every call fails at once with
  ``pybreaker.CircuitBreakerError``, without touching the registry: no waiting on timeouts,
  no load on a registry trying to recover. After ``reset_timeout_s`` the next call is let
  through (HALF-OPEN): success closes the breaker, failure opens it again. Every change of
  state is recorded with its wall-clock time ``t``.
- **A cached-model fallback** (:class:`ModelLoader`): each model that loads from the registry,
  SHA-256 verified, is also written to a local cache folder. When the registry cannot be
  asked (outage, too slow, breaker open), the loader keeps serving the last good model, from
  memory or from that cache after a restart, and says so: ``source == "cache"``.

Without the fallback the loader is *fail-closed*: a model is served only while the registry
confirms it is production, so a failed re-check makes the API unready (503) and a restart
during a registry outage cannot become ready at all. That is the serial dependency the
fallback removes.

Run ``python -m hadrlab.registry serve`` (or :func:`hadrlab.registry.start_online_api`) for
the online API; its switches come from the environment: RETRIES, BREAKER, CACHE_FALLBACK.

Example:
    >>> loader = ModelLoader(reg.client(timeout_s=1), "digits", "cache/", breaker=True)
    >>> model = loader.load()          # LoadedModel(source='registry', version=3, ...)
    >>> reg.kill()
    >>> loader.refresh().source        # 'cache': the last good model, still serving
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import pybreaker
import tenacity

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from hadrlab import apidocs
from hadrlab.apidocs import METRICS, PrometheusText, errors
from hadrlab.errors import HadrError
from hadrlab.exposition import CONTENT_TYPE, MetricsText
from hadrlab.registry import (
    IntegrityError,
    InvalidRequest,
    ModelNotFound,
    RegistryClient,
    RegistryError,
    RegistryUnavailable,
    sha256_of,
)
from hadrlab.settings import env_flag, env_number

__all__ = [
    "retrying",
    "registry_breaker",
    "BreakerTimeline",
    "ModelUnavailable",
    "LoadedModel",
    "ModelLoader",
    "run_online_api",
]

logger = logging.getLogger("hadrlab.resilience")


class ModelUnavailable(HadrError):
    """No model can be served: the registry cannot be asked and no fallback is allowed or cached."""


# --------------------------------------------------------------------------- retries


def retrying(
    attempts: int = 3,
    *,
    stop_after_s: float | None = None,
    initial_wait_s: float = 0.1,
    max_wait_s: float = 2.0,
    retry_on: tuple[type[BaseException], ...] = (RegistryUnavailable,),
    name: str = "registry call",
    sleep: Callable[[float], None] | None = None,
) -> tenacity.Retrying:
    """Build a tenacity ``Retrying`` with exponential back-off, full jitter and a stop.

    The n-th wait is random between 0 and ``min(max_wait_s, initial_wait_s * 2**(n-1))``
    (tenacity's ``wait_random_exponential``). Only ``retry_on`` errors are retried; any other
    error, and the last one when attempts run out, is re-raised unchanged. Each failed
    attempt is logged with the wait before the next.

    Args:
        attempts: the most tries in all (1 means no retry).
        stop_after_s: also stop once this many seconds have passed since the first try.
        initial_wait_s: the scale of the first wait.
        max_wait_s: the cap on any one wait.
        retry_on: the exception types worth retrying (passing failures).
        name: what is being called, for the log lines.
        sleep: the sleep function (tests pass a fake one that records the waits).

    Returns:
        A ``tenacity.Retrying``: ``r(fn, *args)`` or ``for attempt in r: with attempt: ...``.

    Example:
        >>> retrying(attempts=4, max_wait_s=1)(client.production, "digits")
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1; got {attempts}.")
    stop = tenacity.stop_after_attempt(attempts)
    if stop_after_s is not None:
        stop = stop | tenacity.stop_after_delay(stop_after_s)

    def log_attempt(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait_s = state.next_action.sleep if state.next_action else 0.0
        logger.warning("%s: attempt %d of %d failed (%s); retrying in %.3f s.", name,
                       state.attempt_number, attempts, _short(exc), wait_s)

    kwargs: dict[str, Any] = {}
    if sleep is not None:
        kwargs["sleep"] = sleep
    return tenacity.Retrying(
        stop=stop,
        wait=tenacity.wait_random_exponential(multiplier=initial_wait_s, max=max_wait_s),
        retry=tenacity.retry_if_exception_type(retry_on),
        before_sleep=log_attempt,
        reraise=True,  # the caller sees the registry's own error, not a RetryError
        **kwargs,
    )


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return "no error"
    text = str(exc)
    return f"{type(exc).__name__}: {text[:160]}{'...' if len(text) > 160 else ''}"


# --------------------------------------------------------------------------- breaker


class BreakerTimeline(pybreaker.CircuitBreakerListener):
    """Records a circuit breaker's state changes and failures with wall-clock times ``t``."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.failures = 0
        self.lock = threading.Lock()

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        old = old_state.name if old_state is not None else None
        with self.lock:
            self.events.append({"t": time.time(), "breaker": cb.name, "from": old,
                                "to": new_state.name, "failures": self.failures})
        logger.warning("Circuit breaker %r: %s -> %s.", cb.name, old, new_state.name)

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        with self.lock:
            self.failures += 1

    def frame(self):
        """Return the state changes as a pandas DataFrame: t, breaker, from, to, failures."""
        import pandas as pd

        with self.lock:
            return pd.DataFrame(self.events, columns=["t", "breaker", "from", "to", "failures"])

    def __repr__(self) -> str:
        path = " -> ".join(e["to"] for e in self.events) or "no changes"
        return f"BreakerTimeline({path}; {self.failures} failures counted)"


def registry_breaker(
    fail_max: int = 3,
    reset_timeout_s: float = 5.0,
    *,
    name: str = "registry",
) -> pybreaker.CircuitBreaker:
    """Build a pybreaker circuit breaker for registry calls, with a state-change timeline.

    Only failures that say the registry is unavailable count; a 404, a refused request or a
    corrupt artifact is an answer, not an outage, and passes through without counting.

    Args:
        fail_max: failures in a row that open the breaker.
        reset_timeout_s: how long it stays open before letting one trial call through.
        name: the breaker's name in logs and the timeline.

    Returns:
        A ``pybreaker.CircuitBreaker``; ``breaker.timeline`` is its :class:`BreakerTimeline`
        and ``breaker.current_state`` is "closed", "open" or "half-open".

    Example:
        >>> breaker = registry_breaker(fail_max=3, reset_timeout_s=2)
        >>> breaker.call(client.production, "digits")
    """
    timeline = BreakerTimeline()
    breaker = pybreaker.CircuitBreaker(
        fail_max=fail_max,
        reset_timeout=reset_timeout_s,
        exclude=[ModelNotFound, InvalidRequest, IntegrityError],
        listeners=[timeline],
        name=name,
        # The call that trips the breaker raises the registry's own error (more useful in
        # a log than "breaker open"); the calls after it raise CircuitBreakerError.
        throw_new_error_on_trip=False,
    )
    breaker.timeline = timeline
    return breaker


# --------------------------------------------------------------------------- loader


@dataclass
class LoadedModel:
    """A model ready to predict, with where it came from.

    ``source`` is "registry" when the registry confirmed it on the last check, "cache" when
    the registry could not be asked and the last good model is served instead.
    """

    estimator: Any = field(repr=False)
    name: str
    version: int
    sha256: str
    source: str
    loaded_at: float
    metrics: dict = field(default_factory=dict)

    def predict(self, rows: Any) -> list:
        return self.estimator.predict(rows).tolist()

    def __repr__(self) -> str:
        return (f"LoadedModel({self.name!r} v{self.version}, source={self.source}, "
                f"sha256={self.sha256[:12]}...)")


class ModelLoader:
    """Loads the production model from the registry, with switchable hardening.

    Each check asks the registry for the production version and downloads it if it
    changed, verifying its SHA-256, then keeps a copy in ``cache_dir`` (``model.bin`` and
    ``model.json``). Registry calls go through retries and a breaker when those are on.
    When a check fails and ``cache_fallback`` is on, the last good model keeps serving
    (``source == "cache"``); when it is off, the loader drops its model and raises
    :class:`ModelUnavailable` (fail-closed).

    Args:
        client: a :class:`~hadrlab.registry.RegistryClient`; its ``timeout_s`` bounds each call.
        model_name: the model to serve.
        cache_dir: the folder for the last good model; keep it across restarts.
        retries: retry passing failures (``retry_attempts`` tries, jittered back-off).
        breaker: guard calls with a circuit breaker (``breaker_fail_max``, ``breaker_reset_s``).
        cache_fallback: serve the last good model when the registry cannot be asked.

    Example:
        >>> loader = ModelLoader(client, "digits", "/tmp/cache", retries=False)
        >>> loader.load().predict([[0] * 64])
    """

    def __init__(
        self,
        client: RegistryClient,
        model_name: str,
        cache_dir: str | os.PathLike,
        *,
        retries: bool = True,
        breaker: bool = True,
        cache_fallback: bool = True,
        retry_attempts: int = 3,
        retry_max_wait_s: float = 0.5,
        breaker_fail_max: int = 3,
        breaker_reset_s: float = 5.0,
    ) -> None:
        self.client = client
        self.model_name = model_name
        self.cache_dir = Path(cache_dir)
        self.retries = retries
        self.cache_fallback = cache_fallback
        self.retry_attempts = retry_attempts
        self.retry_max_wait_s = retry_max_wait_s
        self.breaker = registry_breaker(breaker_fail_max, breaker_reset_s,
                                        name=f"registry:{model_name}") if breaker else None
        self.current: LoadedModel | None = None
        self.events: list[dict] = []
        self.last_error: str | None = None
        self.checks = Counter()  # "ok", "failed"
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        switches = (f"retries={'on' if self.retries else 'off'}, "
                    f"breaker={'on' if self.breaker else 'off'}, "
                    f"cache_fallback={'on' if self.cache_fallback else 'off'}")
        return f"ModelLoader({self.model_name!r}, {switches}, current={self.current!r})"

    # -- registry calls, hardened as switched
    def _call(self, fn: Callable, *args: Any) -> Any:
        guarded = (lambda *a: self.breaker.call(fn, *a)) if self.breaker else fn
        if not self.retries:
            return guarded(*args)
        return retrying(self.retry_attempts, max_wait_s=self.retry_max_wait_s,
                        name=f"{fn.__name__}({self.model_name!r})")(guarded, *args)

    def _record(self, event: str, detail: str = "") -> None:
        model = self.current
        self.events.append({"t": time.time(), "event": event,
                            "source": model.source if model else None,
                            "version": model.version if model else None, "detail": detail})
        del self.events[:-500]  # a long-running API keeps the recent history only

    # -- the cache
    def _write_cache(self, data: bytes, meta: dict) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # The bytes first, then the metadata that vouches for them, each by rename: a crash
        # between the two leaves a mismatch that the SHA-256 check refuses, never a torn file.
        for fname, content in (("model.bin", data), ("model.json", json.dumps(meta).encode())):
            tmp = self.cache_dir / f".{fname}.tmp"
            tmp.write_bytes(content)
            tmp.replace(self.cache_dir / fname)

    def read_cache(self) -> LoadedModel | None:
        """Return the cached model if there is one and its SHA-256 checks; else None."""
        try:
            meta = json.loads((self.cache_dir / "model.json").read_text())
            data = (self.cache_dir / "model.bin").read_bytes()
        except (OSError, ValueError):
            return None
        if meta.get("name") != self.model_name or sha256_of(data) != meta.get("sha256"):
            logger.error("The cached model in %s does not match its recorded SHA-256 (or is "
                         "another model's); it will not be served.", self.cache_dir)
            return None
        return LoadedModel(pickle.loads(data), self.model_name, int(meta["version"]),
                           meta["sha256"], "cache", time.time(), meta.get("metrics", {}))

    # -- the checks
    def load(self) -> LoadedModel:
        """Load (or confirm) the production model; see :meth:`refresh`. Raises if none."""
        model = self.refresh()
        if model is None:
            raise ModelUnavailable(f"No model {self.model_name!r} can be served: {self.last_error}")
        return model

    def refresh(self) -> LoadedModel | None:
        """Ask the registry for production once; return the model to serve now (or None).

        A new production version is downloaded, verified and cached; the same version is
        only confirmed. On failure the fallback (when on) keeps the last good model.
        """
        with self._lock:
            try:
                meta = self._call(self.client.production, self.model_name)
                current = self.current
                if current is not None and current.sha256 == meta.sha256:
                    if current.source != "registry":
                        self.current = replace(current, source="registry")
                        self._record("confirmed", "the registry answers again")
                else:
                    data = self._call(self.client.download, self.model_name, meta.version)
                    estimator = pickle.loads(data)  # trusted: the hash matched the registry's
                    self._write_cache(data, {"name": meta.name, "version": meta.version,
                                             "sha256": meta.sha256, "metrics": meta.metrics,
                                             "saved_at": time.time()})
                    self.current = LoadedModel(estimator, meta.name, meta.version, meta.sha256,
                                               "registry", time.time(), meta.metrics)
                    self._record("loaded", f"v{meta.version} from the registry")
                self.checks["ok"] += 1
                self.last_error = None
                return self.current
            except (RegistryError, pybreaker.CircuitBreakerError) as exc:
                self.checks["failed"] += 1
                return self._fall_back(exc)

    def _fall_back(self, exc: BaseException) -> LoadedModel | None:
        if isinstance(exc, pybreaker.CircuitBreakerError):
            reason = "the circuit breaker is open (the registry failed repeatedly)"
        else:
            reason = _short(exc)
        self.last_error = reason
        if not self.cache_fallback:
            if self.current is not None:
                logger.error("Registry check failed (%s); cache fallback is off, so model "
                             "%r is no longer served.", reason, self.model_name)
            self.current = None
            self._record("unavailable", reason)
            return None
        if self.current is not None:
            if self.current.source != "cache":
                self.current = replace(self.current, source="cache")
                logger.warning("Registry check failed (%s); serving the last good model "
                               "%r v%d from cache.", reason, self.model_name, self.current.version)
                self._record("fallback", reason)
            return self.current
        cached = self.read_cache()
        if cached is None:
            self._record("unavailable", f"{reason}; no usable cached model in {self.cache_dir}")
            self.last_error = f"{reason}; and there is no usable cached model in {self.cache_dir}"
            return None
        self.current = cached
        logger.warning("Registry unavailable (%s); serving cached model %r v%d from %s.",
                       reason, self.model_name, cached.version, self.cache_dir)
        self._record("fallback", f"{reason}; loaded v{cached.version} from {self.cache_dir}")
        return cached

    def status(self) -> dict:
        """Return what the loader serves and why, for /status and notebooks."""
        model = self.current
        return {
            "model": self.model_name,
            "version": model.version if model else None,
            "sha256": model.sha256 if model else None,
            "source": model.source if model else None,
            "last_error": self.last_error,
            "checks_ok": self.checks["ok"],
            "checks_failed": self.checks["failed"],
            "switches": {"retries": self.retries, "breaker": self.breaker is not None,
                         "cache_fallback": self.cache_fallback},
            "breaker_state": self.breaker.current_state if self.breaker else None,
            "breaker_timeline": list(self.breaker.timeline.events) if self.breaker else [],
            "events": list(self.events[-50:]),
        }


# --------------------------------------------------------------------------- online API

# The largest float32: models (scikit-learn trees among them) compute in float32, and a
# larger value overflows to infinity inside predict().
FLOAT32_MAX = 3.4028234663852886e38


def _parse_features(body: Any, width: int | None) -> list[list[float]]:
    rows = body.get("features") if isinstance(body, dict) else None
    if rows is None:
        raise ValueError('Send a JSON object {"features": [[numbers], ...]} (or one row of '
                         "numbers) to POST /predict.")
    if isinstance(rows, list) and rows and not isinstance(rows[0], list):
        rows = [rows]
    if not isinstance(rows, list) or not rows:
        raise ValueError('"features" must be a non-empty list of rows of numbers.')
    for i, row in enumerate(rows):
        if not isinstance(row, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in row
        ):
            raise ValueError(f"Row {i} of \"features\" must be a list of numbers.")
        if width is not None and len(row) != width:
            raise ValueError(f"Row {i} has {len(row)} features; the model expects {width}.")
        if not row:
            raise ValueError(f"Row {i} of \"features\" is empty; send the model's features.")
        for j, v in enumerate(row):
            # Also false for NaN and the infinities a JSON parser makes of 1e999.
            if not -FLOAT32_MAX <= v <= FLOAT32_MAX:
                raise ValueError(
                    f"Row {i}, feature {j} is {v!r}: every feature must be a finite number "
                    f"between -{FLOAT32_MAX:.7g} and {FLOAT32_MAX:.7g} (float32, the precision "
                    "the model computes in).")
    return rows


def _features_request(width: int | None) -> Any:
    """The /predict body as a pydantic model, for ``width`` features per row (None: any)."""
    from pydantic import Field, create_model

    value = Annotated[float, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
    if width is None:
        row = Annotated[list[value], Field(min_length=1)]
    else:
        row = Annotated[list[value], Field(min_length=width, max_length=width,
                                           description=f"{width} numbers: one example.")]
    return create_model(
        "PredictRequest",
        features=(Union[Annotated[list[row], Field(min_length=1)], row],
                  Field(description="Rows of features (or one row), as many per row as the "
                                    "served model has inputs.")),
    )


class OnlineHealth(BaseModel):
    status: Literal["alive"]
    uptime_s: float


class OnlineReady(BaseModel):
    status: Literal["ready"]
    model: str
    version: int
    source: Literal["registry", "cache"] = Field(
        description='"cache" when the registry could not be asked and the last good model serves.')


class OnlineUnready(BaseModel):
    status: Literal["unready"]
    detail: str = Field(description="Why no model is served, and whether the cache fallback is on.")


class OnlinePrediction(BaseModel):
    predictions: list[Union[int, float, str]] = Field(description="One per row, in order.")
    model_version: int
    source: Literal["registry", "cache"]


class LoaderStatus(BaseModel):
    model: str
    version: int | None
    sha256: str | None
    source: Literal["registry", "cache"] | None
    last_error: str | None
    checks_ok: int
    checks_failed: int
    switches: dict[str, bool]
    breaker_state: str | None = Field(description='"closed", "open" or "half-open"; null without a breaker.')
    breaker_timeline: list[dict[str, Any]]
    events: list[dict[str, Any]]


def create_online_app(loader: ModelLoader, replica: str = "online-api"):
    """Build the online scoring API around ``loader`` (the reload loop runs elsewhere)."""
    app = FastAPI(title="hadrlab online scoring API", version="1",
                  description="Serves the registry's production model, with retries, a circuit "
                              "breaker and a cached-model fallback between it and the registry.")
    requests: Counter[tuple[str, int]] = Counter()
    started_at = time.time()
    unready_doc = {503: {"model": OnlineUnready, "description": "No model is served (yet, or any more)."}}

    def unready() -> Response:
        detail = (f"No model is being served: {loader.last_error or 'still loading'}. "
                  f"(cache fallback {'on' if loader.cache_fallback else 'off'})")
        return JSONResponse({"status": "unready", "detail": detail}, status_code=503)

    def width() -> int | None:
        model = loader.current
        return getattr(model.estimator, "n_features_in_", None) if model else None

    @app.middleware("http")
    async def count(request: Request, call_next):
        response = await call_next(request)
        path = request.url.path
        path = path if path in ("/predict", "/healthz", "/readyz", "/metrics", "/status") else "other"
        requests[(path, response.status_code)] += 1
        response.headers["X-Replica"] = replica
        return response

    @app.get("/healthz", response_model=OnlineHealth)
    async def healthz() -> Response:
        """Liveness: 200 as soon as the process serves, model or not."""
        return JSONResponse({"status": "alive", "uptime_s": round(time.time() - started_at, 3)})

    @app.get("/readyz", response_model=OnlineReady, responses=unready_doc)
    async def readyz() -> Response:
        """Readiness: 200 while a model is served (from the registry or the cache)."""
        model = loader.current
        if model is None:
            return unready()
        return JSONResponse({"status": "ready", "model": model.name, "version": model.version,
                             "source": model.source})

    @app.get("/status", response_model=LoaderStatus)
    async def status() -> Response:
        """What the loader serves and why: switches, breaker state and its timeline, events."""
        return JSONResponse(loader.status())

    @app.post("/predict", response_model=OnlinePrediction,
              responses={200: {"headers": {"X-Model-Source": {
                  "description": '"registry" or "cache".', "schema": {"type": "string"}}}},
                  **errors(422), **unready_doc},
              openapi_extra=apidocs.json_body(_features_request(None)))
    async def predict(request: Request) -> Response:
        """Predict one row or a batch of rows with the served model."""
        model = loader.current
        if model is None:
            return unready()
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            return JSONResponse({"detail": f"The request body is not valid JSON ({exc}). Send "
                                           '{"features": [[numbers], ...]}.'}, status_code=422)
        try:
            rows = _parse_features(body, getattr(model.estimator, "n_features_in_", None))
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        return JSONResponse({"predictions": model.predict(rows), "model_version": model.version,
                             "source": model.source}, headers={"X-Model-Source": model.source})

    @app.get("/metrics", response_class=PrometheusText, responses=METRICS)
    async def metrics() -> Response:
        """Requests by path and status, readiness, the served version, registry checks, breaker."""
        model = loader.current
        text = MetricsText()
        text.family("online_api_requests_total", "counter", "HTTP requests answered, by path and status.")
        for (path, status_code), n in sorted(requests.items()):
            text.sample("online_api_requests_total", n, path=path, status=status_code)
        text.family("online_api_ready", "gauge", "1 when a model is served, else 0.")
        text.sample("online_api_ready", int(model is not None))
        text.family("online_api_model_from_cache", "gauge", "1 when the served model is the cached fallback.")
        text.sample("online_api_model_from_cache", int(bool(model) and model.source == "cache"))
        text.family("online_api_model_version", "gauge", "The version served (0 if none).")
        text.sample("online_api_model_version", model.version if model else 0)
        text.family("online_api_registry_checks_total", "counter", "Registry checks, by outcome.")
        for outcome in ("ok", "failed"):
            text.sample("online_api_registry_checks_total", loader.checks[outcome], outcome=outcome)
        if loader.breaker is not None:
            text.family("online_api_breaker_open", "gauge", "1 while the registry breaker is open.")
            text.sample("online_api_breaker_open", int(loader.breaker.current_state == "open"))
        return PrometheusText(text.render(), media_type=CONTENT_TYPE)

    # The /predict body depends on the served model (its number of inputs): the document is
    # rebuilt when that changes.
    generate = app.openapi
    documented: dict[str, Any] = {}

    def openapi() -> dict:
        features = width()
        if documented.get("width", -1) != features:
            app.openapi_schema = None
            doc = generate()
            doc["paths"]["/predict"]["post"].update(apidocs.json_body(
                _features_request(features), example={"features": [[0.0] * (features or 1)]}))
            documented["width"] = features
        return app.openapi_schema

    app.openapi = openapi
    apidocs.allow_header(app)
    return app


def _reload_loop(loader: ModelLoader, interval_s: float, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            loader.refresh()
        except Exception:  # a bug in one check must not end the loop that keeps serving
            logger.exception("Model check failed unexpectedly; trying again in %.1f s.", interval_s)
        stop.wait(interval_s)


def run_online_api() -> int:
    """Entry point of ``python -m hadrlab.registry serve``: the online scoring API.

    Environment: PORT, REGISTRY_URL, REGISTRY_TOKEN, MODEL_NAME (default digits),
    MODEL_CACHE_DIR, RELOAD_INTERVAL_S (default 5), REGISTRY_TIMEOUT_S (default 1),
    RETRIES, BREAKER, CACHE_FALLBACK (0/1, default 1), BREAKER_FAIL_MAX (default 3),
    BREAKER_RESET_S (default 5), REPLICA_NAME.
    """
    import uvicorn

    try:
        port = int(os.environ.get("PORT", "") or 0)
        url = os.environ.get("REGISTRY_URL", "").strip()
        token = os.environ.get("REGISTRY_TOKEN", "").strip()
        cache_dir = os.environ.get("MODEL_CACHE_DIR", "").strip()
        if not (port and url and token and cache_dir):
            raise ValueError("PORT, REGISTRY_URL, REGISTRY_TOKEN and MODEL_CACHE_DIR must be set "
                             "for `python -m hadrlab.registry serve`.")
        interval_s = env_number("RELOAD_INTERVAL_S", 5.0, minimum=0)
        client = RegistryClient(url, token, timeout_s=env_number("REGISTRY_TIMEOUT_S", 1.0, minimum=0))
        loader = ModelLoader(
            client, os.environ.get("MODEL_NAME") or "digits", cache_dir,
            retries=env_flag("RETRIES", True), breaker=env_flag("BREAKER", True),
            cache_fallback=env_flag("CACHE_FALLBACK", True),
            breaker_fail_max=int(env_number("BREAKER_FAIL_MAX", 3, minimum=0)),
            breaker_reset_s=env_number("BREAKER_RESET_S", 5.0, minimum=0),
        )
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    replica = os.environ.get("REPLICA_NAME") or f"online-api-{os.getpid()}"
    logger.info("Online API %s on port %d: %r, registry %s, reload every %.1f s.",
                replica, port, loader, url, interval_s)
    stop = threading.Event()
    # The first load runs in the loop's thread once the process is up, so /healthz answers
    # while the model loads and liveness and readiness can be told apart.
    worker = threading.Thread(target=_reload_loop, args=(loader, interval_s, stop), daemon=True)
    worker.start()
    try:
        uvicorn.run(create_online_app(loader, replica), host=os.environ.get("HOST") or "127.0.0.1",
                    port=port, access_log=False, log_config=None, log_level="info")
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(run_online_api())
