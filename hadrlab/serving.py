"""The model API that the labs replicate, kill and hang: a digits classifier behind FastAPI.

Run one replica by hand (a notebook uses :func:`start_model_api` instead):

    PORT=8000 MODEL_LOAD_DELAY_S=2 python -m hadrlab.serving

Configuration comes from environment variables, as a container's would:

    PORT                 required; the TCP port to listen on
    HOST                 default 127.0.0.1
    MODEL_VERSION        default v1 (v2 is a different classifier, for rolling updates)
    MODEL_LOAD_DELAY_S   default 0; a sleep that stands in for loading a large model
    SHUTDOWN_DRAIN_S     default 0; after SIGTERM, keep serving this long while /readyz
                         answers 503, so load balancers stop sending before the listener closes
    MAX_BATCH            default 256; the most images one /predict request may carry
    REPLICA_NAME         default <hostname>-<pid>; sent back as header X-Replica and in JSON
    PREDICT_DELAY_MS     default 0; a testing aid: an async sleep inside /predict

Endpoints:

    POST /predict   {"image": IMAGE} or {"images": [IMAGE, ...]}, IMAGE = 64 numbers or
                    8 rows of 8 numbers, each 0-16 -> {"predictions", "model_version", "replica"}
    GET  /healthz   liveness: 200 as soon as the process serves
    GET  /readyz    readiness: 200 once the model is loaded and warm, 503 before that and
                    from the moment a SIGTERM arrives
    GET  /metrics   Prometheus text: requests, errors, predict latency, readiness, in-flight
    GET  /docs      the OpenAPI document (/openapi.json) as a page where requests can be tried

Life of a replica: the server binds its port and answers /healthz at once; the model loads
in a background task (delay, then train-or-load, then one warm-up prediction), and only
then does /readyz answer 200. On SIGTERM the replica reports unready at once, keeps serving
for SHUTDOWN_DRAIN_S, then closes its listener, finishes the requests in flight and exits 0.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # Before numpy loads: one BLAS thread per replica. With several replicas on a small
    # machine, BLAS thread pools fight over the cores and training takes seconds, not
    # a fraction of one.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import asyncio
import json
import logging
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, create_model

from hadrlab import apidocs
from hadrlab.apidocs import METRICS, ErrorBody, PrometheusText, errors

from hadrlab.exposition import CONTENT_TYPE, Histogram, MetricsText, parse_metrics
from hadrlab.processes import HOST, Child, find_free_port, start_process, wait_for_http
from hadrlab.settings import env_number

if TYPE_CHECKING:
    from hadrlab.model import TrainedModel

__all__ = [
    "ServingSettings",
    "ReplicaState",
    "Metrics",
    "create_app",
    "DrainingServer",
    "start_model_api",
    "predict_payload",
    "parse_metrics",  # from hadrlab.exposition, still importable from here
]

logger = logging.getLogger("hadrlab.serving")

# After the drain, how long in-flight requests may take before they are cancelled. Long
# enough for any /predict; short enough that a stuck request cannot block shutdown forever.
SHUTDOWN_TIMEOUT_S = 30
PATHS = ("/predict", "/healthz", "/readyz", "/metrics")
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
NOT_LOADED = "model not loaded yet"


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class ServingSettings:
    """The configuration of one replica, read from environment variables."""

    port: int
    host: str = HOST
    model_version: str = "v1"
    load_delay_s: float = 0.0
    drain_s: float = 0.0
    max_batch: int = 256
    replica: str = ""
    predict_delay_ms: float = 0.0

    @classmethod
    def from_env(cls, environ: dict | None = None) -> ServingSettings:
        """Read the settings from ``environ`` (default ``os.environ``); ValueError if invalid."""
        env = dict(os.environ if environ is None else environ)
        if not env.get("PORT", "").strip():
            raise ValueError(
                "PORT is not set: the model API needs the TCP port to listen on, "
                "e.g. `PORT=8000 python -m hadrlab.serving`."
            )
        port = env_number("PORT", 0, env=env, minimum=0, integer=True)
        if not 0 < port < 65536:
            raise ValueError(f"PORT must be between 1 and 65535; got {port}.")
        max_batch = env_number("MAX_BATCH", 256, env=env, minimum=0, integer=True)
        if max_batch < 1:
            raise ValueError(f"MAX_BATCH must be at least 1; got {max_batch}.")
        return cls(
            port=port,
            host=env.get("HOST") or HOST,
            model_version=env.get("MODEL_VERSION") or "v1",
            load_delay_s=env_number("MODEL_LOAD_DELAY_S", 0.0, env=env, minimum=0),
            drain_s=env_number("SHUTDOWN_DRAIN_S", 0.0, env=env, minimum=0),
            max_batch=max_batch,
            replica=env.get("REPLICA_NAME") or f"{socket.gethostname()}-{os.getpid()}",
            predict_delay_ms=env_number("PREDICT_DELAY_MS", 0.0, env=env, minimum=0),
        )


# --------------------------------------------------------------------------- metrics


class Metrics:
    """Request counters, a /predict latency histogram and gauges, in Prometheus text format.

    Everything is updated from the event loop's one thread, so plain integers suffice.
    """

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.errors: Counter[tuple[str, str]] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.predictions = 0
        self.latency = Histogram(LATENCY_BUCKETS_S)

    def observe(self, path: str, status: int, seconds: float) -> None:
        """Record one answered request."""
        self.requests[(path, status)] += 1
        if status >= 400:
            self.errors[(path, f"{status // 100}xx")] += 1
        if path == "/predict":
            self.latency.observe(seconds)

    def render(self, state: ReplicaState) -> str:
        """Return every metric in the Prometheus text exposition format (version 0.0.4)."""
        text = MetricsText()
        text.family("model_api_requests_total", "counter", "HTTP requests answered, by path and status.")
        for (path, status), n in sorted(self.requests.items()):
            text.sample("model_api_requests_total", n, path=path, status=status)
        text.family("model_api_errors_total", "counter", "HTTP answers with status 4xx or 5xx.")
        for (path, cls), n in sorted(self.errors.items()):
            text.sample("model_api_errors_total", n, path=path, **{"class": cls})
        text.family("model_api_predictions_total", "counter", "Images classified.")
        text.sample("model_api_predictions_total", self.predictions)
        text.histogram("model_api_predict_latency_seconds",
                       "Time to answer POST /predict, whatever the status.", self.latency)
        text.family("model_api_in_flight_requests", "gauge", "Requests being answered right now.")
        for path in (*PATHS, "other"):
            text.sample("model_api_in_flight_requests", self.in_flight[path], path=path)
        text.family("model_api_model_info", "gauge", "The model this replica serves (1 once loaded).")
        model = state.model
        text.sample("model_api_model_info", 1 if model else 0, version=state.settings.model_version,
                    sha256=model.sha256 if model else "", replica=state.settings.replica)
        text.family("model_api_ready", "gauge", "1 when /readyz answers 200, else 0.")
        text.sample("model_api_ready", 1 if state.ready else 0)
        text.family("model_api_shutting_down", "gauge", "1 from the moment a SIGTERM arrives.")
        text.sample("model_api_shutting_down", 1 if state.shutting_down else 0)
        text.family("model_api_start_time_seconds", "gauge", "Process start, epoch seconds.")
        text.sample("model_api_start_time_seconds", f"{state.started_at:.3f}")
        return text.render()


# --------------------------------------------------------------------------- the replica


class ReplicaState:
    """What one replica knows about itself: its model, readiness, shutdown and metrics."""

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.model: TrainedModel | None = None
        self.load_error: str | None = None
        self.shutting_down = False
        self.started_at = time.time()
        self.ready_at: float | None = None
        self.shutdown_at: float | None = None

    @property
    def ready(self) -> bool:
        """True when the model is loaded and warm and no SIGTERM has arrived."""
        return self.model is not None and not self.shutting_down

    def begin_shutdown(self) -> None:
        """Report unready from now on (called from the SIGTERM handler: flags only)."""
        if not self.shutting_down:
            self.shutting_down = True
            self.shutdown_at = time.time()

    async def load(self) -> None:
        """Load the model in the background: the delay, train or load, one warm-up prediction."""
        s = self.settings
        try:
            if s.load_delay_s > 0:
                logger.info("Loading model %s: waiting %.1f s (MODEL_LOAD_DELAY_S) to stand in "
                            "for a large model.", s.model_version, s.load_delay_s)
                await asyncio.sleep(s.load_delay_s)
            # In a thread: importing scikit-learn and training take CPU time that would
            # otherwise stall /healthz and /metrics.
            model = await asyncio.to_thread(_load_and_warm_up, s.model_version)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            logger.exception("Model %s failed to load; /readyz will answer 503.", s.model_version)
            return
        self.model = model
        self.ready_at = time.time()
        logger.info(
            "Model %s %s in %.2f s (sha256 %s..., held-out accuracy %.3f); ready %.2f s after "
            "start.", model.version, "loaded from cache" if model.from_cache else "trained",
            model.load_s, model.sha256[:12], model.holdout_accuracy,
            self.ready_at - self.started_at,
        )


def _load_and_warm_up(version: str) -> TrainedModel:
    import numpy as np

    from hadrlab.model import IMAGE_PIXELS, load_model

    model = load_model(version)
    model.predict(np.zeros((1, IMAGE_PIXELS)))  # the first call pays one-off costs
    return model


class _Instrumentation:
    """ASGI middleware: counts requests, times /predict, adds the X-Replica header."""

    def __init__(self, app: Any, state: ReplicaState) -> None:
        self.app = app
        self.state = state
        self.replica_header = (b"x-replica", state.settings.replica.encode("latin-1", "replace"))

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Unknown paths share one label so a scanner cannot grow the metrics without bound.
        path = scope["path"] if scope["path"] in PATHS else "other"
        metrics = self.state.metrics
        status = 500  # what the client sees if the app fails before answering

        async def send_with_header(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), self.replica_header]}
            await send(message)

        start = time.perf_counter()
        metrics.in_flight[path] += 1
        try:
            await self.app(scope, receive, send_with_header)
        finally:
            metrics.in_flight[path] -= 1
            metrics.observe(path, status, time.perf_counter() - start)


Pixel = Annotated[float, Field(ge=0, le=16, description="A pixel intensity, 0-16.")]
FlatImage = Annotated[list[Pixel], Field(min_length=64, max_length=64, description="64 numbers.")]
GridImage = Annotated[list[Annotated[list[Pixel], Field(min_length=8, max_length=8)]],
                      Field(min_length=8, max_length=8, description="8 rows of 8 numbers.")]
Image = Union[FlatImage, GridImage]


class OneImage(BaseModel):
    """One image: ``{"image": IMAGE}`` (other fields are ignored)."""

    # Either "image" or "images", never both: parse_images refuses a body with both.
    model_config = ConfigDict(json_schema_extra={"not": {"required": ["images"]}})
    image: Image


class Health(BaseModel):
    status: Literal["alive"]
    replica: str
    uptime_s: float


class Ready(BaseModel):
    status: Literal["ready"]
    model_version: str
    replica: str


class Unready(BaseModel):
    status: Literal["unready"]
    detail: str = Field(description="Loading, failed to load (with the error), or draining after SIGTERM.")


class Prediction(BaseModel):
    predictions: list[int] = Field(description="One digit (0-9) per image, in order.")
    model_version: str
    replica: str


def predict_request(max_batch: int) -> Any:
    """The /predict body, one image or a batch of at most ``max_batch``, as a pydantic type."""
    many = create_model(
        "ManyImages",
        __config__=ConfigDict(json_schema_extra={"not": {"required": ["image"]}}),
        images=(Annotated[list[Image], Field(min_length=1, max_length=max_batch)],
                Field(description=f"1 to {max_batch} images (MAX_BATCH); more answer 413.")),
    )
    return Union[OneImage, many]


def create_app(state: ReplicaState) -> FastAPI:
    """Build the FastAPI app of one replica around ``state`` (the model is loaded elsewhere)."""
    from hadrlab.model import InvalidInput, parse_images

    settings = state.settings
    app = FastAPI(title="hadrlab model API", version="1",
                  description="A digits classifier: POST 8x8 images (pixels 0-16), get digits back. "
                              "Every answer carries the header X-Replica.")
    unready_doc = {503: {"model": Unready, "description": "Not ready: loading, failed, or draining."}}

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Response:
        """Liveness: 200 as soon as the process serves, before the model is loaded."""
        return JSONResponse(
            {"status": "alive", "replica": settings.replica,
             "uptime_s": round(time.time() - state.started_at, 3)}
        )

    @app.get("/readyz", response_model=Ready, responses=unready_doc)
    async def readyz() -> Response:
        """Readiness: 200 once the model is loaded and warm; 503 before, and after SIGTERM."""
        if state.ready:
            return JSONResponse(
                {"status": "ready", "model_version": settings.model_version,
                 "replica": settings.replica}
            )
        if state.shutting_down:
            detail = "shutting down: draining before exit"
        elif state.load_error:
            detail = f"model failed to load: {state.load_error}"
        else:
            detail = NOT_LOADED
        return JSONResponse({"status": "unready", "detail": detail}, status_code=503)

    @app.get("/metrics", response_class=PrometheusText, responses=METRICS)
    async def metrics() -> Response:
        """Requests, errors, predict latency, in-flight requests, readiness, the model."""
        return PrometheusText(
            state.metrics.render(state), media_type=CONTENT_TYPE
        )

    @app.post("/predict", response_model=Prediction,
              responses={**errors(413, 422), 503: {"model": ErrorBody, "description": NOT_LOADED}},
              openapi_extra=apidocs.json_body(predict_request(settings.max_batch),
                                              example={"image": [0] * 64}))
    async def predict(request: Request) -> Response:
        """Classify one image ({"image": ...}) or a batch ({"images": [...]})."""
        model = state.model
        if model is None:
            return JSONResponse({"detail": NOT_LOADED}, status_code=503)
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return JSONResponse(
                {"detail": f"The request body is not valid JSON ({exc}). Send a JSON object "
                           'such as {"image": [64 numbers, each 0-16]}.'},
                status_code=422,
            )
        try:
            images = parse_images(body, max_batch=settings.max_batch)
        except InvalidInput as exc:
            return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)
        if settings.predict_delay_ms > 0:
            await asyncio.sleep(settings.predict_delay_ms / 1000)
        predictions = model.predict(images)
        state.metrics.predictions += len(predictions)
        return JSONResponse(
            {"predictions": predictions, "model_version": model.version,
             "replica": settings.replica}
        )

    app.add_middleware(_Instrumentation, state=state)
    apidocs.allow_header(app)
    return app


class DrainingServer(uvicorn.Server):
    """A uvicorn server that drains on SIGTERM instead of closing its listener at once.

    uvicorn's own handler closes the listener on the first SIGTERM, then re-raises the
    signal once done, so the process ends "killed by SIGTERM" rather than exiting 0.
    Here the first SIGTERM (or Ctrl+C) only marks the replica unready; it goes on serving
    for ``drain_s`` seconds, then uvicorn's normal shutdown closes the listener and waits
    for the requests in flight. A second signal ends the drain early.
    """

    def __init__(self, config: uvicorn.Config, state: ReplicaState) -> None:
        super().__init__(config)
        self.state = state
        self._exit_at: float | None = None
        self._drain_logged = False
        self._load_task: asyncio.Task | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            # Only now, with the port open, does loading begin: liveness answers while
            # the model loads, and the two probes can be told apart.
            self._load_task = asyncio.create_task(self.state.load())

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: set flags only; on_tick does the logging.
        if self.state.shutting_down:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True  # a third Ctrl+C: stop waiting for requests in flight
            self.should_exit = True
            return
        self.state.begin_shutdown()
        self._exit_at = time.monotonic() + self.state.settings.drain_s

    async def on_tick(self, counter: int) -> bool:
        if self._exit_at is not None:
            if not self._drain_logged:
                self._drain_logged = True
                logger.info("Shutdown requested: /readyz now answers 503; serving for %.1f s "
                            "more (SHUTDOWN_DRAIN_S) before closing the listener.",
                            self.state.settings.drain_s)
            if time.monotonic() >= self._exit_at:
                self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        in_flight = sum(self.state.metrics.in_flight.values())
        logger.info("Closing the listener; finishing %d request(s) in flight.", in_flight)
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        await super().shutdown(sockets=sockets)


def serve(settings: ServingSettings) -> None:
    """Run one replica in this process until it is told to stop."""
    state = ReplicaState(settings)
    config = uvicorn.Config(
        create_app(state),
        host=settings.host,
        port=settings.port,
        workers=1,
        access_log=False,
        log_config=None,  # our logging set-up below formats uvicorn's lines too
        log_level="info",
        lifespan="off",
        timeout_graceful_shutdown=SHUTDOWN_TIMEOUT_S,
    )
    logger.info(
        "Replica %s: model %s, load delay %.1f s, drain %.1f s, max batch %d, on %s:%d.",
        settings.replica, settings.model_version, settings.load_delay_s, settings.drain_s,
        settings.max_batch, settings.host, settings.port,
    )
    DrainingServer(config, state).run()


def main() -> int:
    """Entry point of ``python -m hadrlab.serving``; returns the exit code."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
    )
    try:
        settings = ServingSettings.from_env()
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    serve(settings)
    return 0


# --------------------------------------------------------------------------- helpers


def start_model_api(
    name: str = "model-api",
    *,
    port: int | None = None,
    version: str = "v1",
    load_delay_s: float = 0.0,
    drain_s: float = 0.0,
    predict_delay_ms: float = 0,
    max_batch: int = 256,
    wait: Literal["ready", "live"] | None = "ready",
    timeout_s: float = 30.0,
    env: dict[str, str] | None = None,
) -> Child:
    """Start one model API replica as a child process on a loopback port.

    Args:
        name: the child's name; also its REPLICA_NAME (header X-Replica).
        port: the port to listen on; default a free one. A taken port raises PortInUseError.
        version: MODEL_VERSION, e.g. ``"v1"`` or ``"v2"``.
        load_delay_s: MODEL_LOAD_DELAY_S, the stand-in for a large model's load time.
        drain_s: SHUTDOWN_DRAIN_S, how long to serve while unready after SIGTERM.
        predict_delay_ms: PREDICT_DELAY_MS, a sleep in every /predict (for tests and labs).
        max_batch: MAX_BATCH, the most images per request.
        wait: ``"ready"`` waits for /readyz, ``"live"`` for /healthz, None returns at once.
        timeout_s: how long to wait, on top of ``load_delay_s``.
        env: more environment variables for the child (they win over the ones above).

    Returns:
        The running :class:`~hadrlab.processes.Child`; ``child.url`` is its base URL.

    Example:
        >>> api = start_model_api("model-api-1", load_delay_s=2)
        >>> httpx.post(api.url + "/predict", json=predict_payload()).json()
        >>> api.stop()
    """
    if wait not in ("ready", "live", None):
        raise ValueError(f'wait must be "ready", "live" or None; got {wait!r}.')
    port = port or find_free_port()
    package_root = str(Path(__file__).resolve().parents[1])
    child_env = {
        "PORT": str(port),
        "HOST": HOST,
        "MODEL_VERSION": version,
        "MODEL_LOAD_DELAY_S": str(load_delay_s),
        "SHUTDOWN_DRAIN_S": str(drain_s),
        "PREDICT_DELAY_MS": str(predict_delay_ms),
        "MAX_BATCH": str(max_batch),
        "REPLICA_NAME": name,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        # So the child finds hadrlab even when it runs from a checkout that is not installed.
        "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p),
        **(env or {}),
    }
    probe = {"ready": "/readyz", "live": "/healthz", None: None}[wait]

    def check(child: Child) -> None:
        if probe is not None:
            wait_for_http(child, probe, timeout_s=timeout_s + load_delay_s)

    return start_process(
        name, [sys.executable, "-m", "hadrlab.serving"], port=port, env=child_env, ready=check
    )


def predict_payload(n: int = 1, seed: int = 0) -> dict:
    """Return a /predict body of ``n`` real digit images from the held-out part of the dataset.

    Args:
        n: how many images (1 or more).
        seed: picks which images; the same seed gives the same body.

    Returns:
        ``{"images": [[64 ints 0-16], ...]}``.
    """
    import numpy as np

    from hadrlab.model import split_digits

    if n < 1:
        raise ValueError(f"n must be at least 1; got {n}.")
    _, _, images, _ = split_digits()
    picks = np.random.default_rng(seed).choice(len(images), size=n, replace=n > len(images))
    return {"images": [[int(v) for v in images[i]] for i in picks]}


if __name__ == "__main__":
    sys.exit(main())
