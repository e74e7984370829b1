"""The model registry: versioned, hashed model artifacts behind a small HTTP API.

Run it by hand (a notebook uses :func:`start_registry` instead):

    PORT=8100 REGISTRY_DIR=/tmp/reg REGISTRY_TOKEN=s3cret python -m hadrlab.registry

Configuration (environment variables, as a container's would be):

    PORT             required; the TCP port to listen on (bound on 127.0.0.1)
    REGISTRY_DIR     required; a SQLite database and the artifact files live here, so the
                     registry's state survives a restart
    REGISTRY_TOKEN   required; every read and write carries ``Authorization: Bearer TOKEN``
                     (/healthz and /metrics are open, as probes and scrapers need)
    FAULT_DELAY_MS   default 0; a delay added to every request, to make the registry SLOW
    FAULT_ERROR_RATE default 0; the share of requests answered 503, to make it FAILING

Both faults change at run time through ``POST /admin/faults {"delay_ms": 500,
"error_rate": 0.2}``, so a chaos experiment can degrade the registry without killing it.

API (JSON unless said otherwise):

    POST /models/{name}/versions          {"artifact_b64", "metrics": {}, "params": {}}
                                          -> {"name", "version", "sha256"}
    GET  /models/{name}/versions          -> {"name", "versions": [metadata, ...]}
    GET  /models/{name}/versions/{v}      -> metadata: version, sha256, size_bytes,
                                             metrics, params, stage, created_at
    GET  /models/{name}/versions/{v}/artifact   the bytes; header X-Artifact-SHA256
    POST /models/{name}/versions/{v}/stage      {"stage": "staging"|"production"|"archived"}
                                          one production version at a time: promoting one
                                          archives the previous one
    GET  /models/{name}/production        metadata of the production version (404 if none)
    GET  /healthz, GET /metrics (Prometheus text), GET|POST /admin/faults

The SHA-256 of an artifact is computed when it is uploaded and stored beside it; the
registry never recomputes it on download, so a file corrupted on disk is served with its
ORIGINAL hash, and every consumer (:meth:`RegistryClient.download`) verifies the bytes.

Run ``python -m hadrlab.registry serve`` for the online scoring API that loads its model
from the registry (see :mod:`hadrlab.resilience` and :func:`start_online_api`).

Errors raised by the client (all are :class:`~hadrlab.errors.HadrError`)::

    RegistryError           anything the registry client raises on purpose
     ├── RegistryUnavailable   no answer: refused, timed out, or a 5xx (worth retrying)
     ├── ModelNotFound         unknown model or version, or no production version (404)
     ├── InvalidRequest        refused as malformed (422) or unauthorised (401)
     └── IntegrityError        downloaded bytes do not match the registered SHA-256
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import math
import random
import re
import secrets
import sqlite3
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from hadrlab import apidocs
from hadrlab.apidocs import METRICS, PrometheusText, errors
from hadrlab.errors import HadrError
from hadrlab.exposition import CONTENT_TYPE, MetricsText
from hadrlab.processes import HOST, Child, find_free_port, home_dir, start_process, wait_for_http
from hadrlab.settings import env_number

__all__ = [
    "RegistryError",
    "RegistryUnavailable",
    "ModelNotFound",
    "InvalidRequest",
    "IntegrityError",
    "ModelVersion",
    "RegistryClient",
    "Registry",
    "start_registry",
    "create_registry_app",
    "start_online_api",
    "sha256_of",
]

logger = logging.getLogger("hadrlab.registry")

STAGES = ("none", "staging", "production", "archived")
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NAME_RE = re.compile(_NAME_PATTERN[1:-1])  # used with fullmatch: "$" would let a final newline in
# The largest version SQLite's INTEGER column holds; a larger number cannot name a version.
MAX_VERSION = 2**63 - 1
_NAME_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
_SHA_HEADER = "X-Artifact-SHA256"


def sha256_of(data: bytes) -> str:
    """Return the hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- errors


class RegistryError(HadrError):
    """Anything the registry client raises on purpose."""


class RegistryUnavailable(RegistryError):
    """The registry did not answer usefully: refused, timed out, or answered 5xx."""


class ModelNotFound(RegistryError):
    """The model, the version, or a production version does not exist (HTTP 404)."""


class InvalidRequest(RegistryError):
    """The registry refused the request as malformed (422) or unauthorised (401)."""


class IntegrityError(RegistryError):
    """Downloaded artifact bytes do not match the SHA-256 recorded at upload."""


# --------------------------------------------------------------------------- storage


class _Store:
    """The registry's state: one SQLite table of versions, one file per artifact."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.artifacts = root / "artifacts"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        # One connection shared by the server's threads, serialised by a lock: the
        # registry is small and this keeps promotions (two updates) atomic.
        self.db = sqlite3.connect(root / "registry.db", check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.lock = threading.Lock()
        with self.lock, self.db:
            self.db.execute(
                """CREATE TABLE IF NOT EXISTS versions (
                       name TEXT NOT NULL, version INTEGER NOT NULL, sha256 TEXT NOT NULL,
                       size_bytes INTEGER NOT NULL, metrics TEXT NOT NULL, params TEXT NOT NULL,
                       stage TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
                       PRIMARY KEY (name, version))"""
            )

    def artifact_path(self, name: str, version: int) -> Path:
        return self.artifacts / name / f"v{version}.bin"

    @staticmethod
    def _meta(row: sqlite3.Row) -> dict:
        return {
            "name": row["name"], "version": row["version"], "sha256": row["sha256"],
            "size_bytes": row["size_bytes"], "metrics": json.loads(row["metrics"]),
            "params": json.loads(row["params"]), "stage": row["stage"],
            "created_at": row["created_at"], "updated_at": row["updated_at"],
        }

    def register(self, name: str, data: bytes, metrics: dict, params: dict) -> dict:
        sha = sha256_of(data)
        now = time.time()
        with self.lock, self.db:
            (last,) = self.db.execute(
                "SELECT COALESCE(MAX(version), 0) FROM versions WHERE name = ?", (name,)
            ).fetchone()
            version = last + 1
            path = self.artifact_path(name, version)
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename: a crash mid-write never leaves a half artifact under the
            # final name, and the row is committed only after the file is in place.
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
            self.db.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, 'none', ?, ?)",
                (name, version, sha, len(data), json.dumps(metrics), json.dumps(params), now, now),
            )
        return {"name": name, "version": version, "sha256": sha}

    def versions(self, name: str) -> list[dict]:
        with self.lock:
            rows = self.db.execute(
                "SELECT * FROM versions WHERE name = ? ORDER BY version", (name,)
            ).fetchall()
        return [self._meta(r) for r in rows]

    def get(self, name: str, version: int) -> dict | None:
        with self.lock:
            row = self.db.execute(
                "SELECT * FROM versions WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
        return self._meta(row) if row else None

    def production(self, name: str) -> dict | None:
        with self.lock:
            row = self.db.execute(
                "SELECT * FROM versions WHERE name = ? AND stage = 'production'", (name,)
            ).fetchone()
        return self._meta(row) if row else None

    def set_stage(self, name: str, version: int, stage: str) -> dict:
        now = time.time()
        with self.lock, self.db:
            if stage == "production":
                # One production version at a time, changed in one transaction so a reader
                # never sees two, or none, while a promotion happens.
                self.db.execute(
                    "UPDATE versions SET stage = 'archived', updated_at = ? "
                    "WHERE name = ? AND stage = 'production' AND version != ?",
                    (now, name, version),
                )
            self.db.execute(
                "UPDATE versions SET stage = ?, updated_at = ? WHERE name = ? AND version = ?",
                (stage, now, name, version),
            )
            row = self.db.execute(
                "SELECT * FROM versions WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
        return self._meta(row)

    def counts(self) -> tuple[int, int]:
        with self.lock:
            models, versions = self.db.execute(
                "SELECT COUNT(DISTINCT name), COUNT(*) FROM versions"
            ).fetchone()
        return models, versions


# --------------------------------------------------------------------------- server


@dataclass
class _Faults:
    delay_ms: float = 0.0
    error_rate: float = 0.0


class _RegistryMetrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.latency_sum_s: Counter[str] = Counter()
        self.injected_errors = 0
        self.started_at = time.time()

    def render(self, store: _Store, faults: _Faults) -> str:
        text = MetricsText()
        text.family("registry_requests_total", "counter", "HTTP requests answered, by route and status.")
        for (method, route, status), n in sorted(self.requests.items()):
            text.sample("registry_requests_total", n, method=method, route=route, status=status)
        text.family("registry_request_seconds_sum", "counter", "Total time spent answering, by route.")
        for route, s in sorted(self.latency_sum_s.items()):
            text.sample("registry_request_seconds_sum", f"{s:.6f}", route=route)
        text.family("registry_injected_errors_total", "counter", "Requests failed on purpose (503).")
        text.sample("registry_injected_errors_total", self.injected_errors)
        models, versions = store.counts()
        text.family("registry_models", "gauge", "Models with at least one version.")
        text.sample("registry_models", models)
        text.family("registry_versions", "gauge", "Model versions stored.")
        text.sample("registry_versions", versions)
        text.family("registry_fault_delay_ms", "gauge", "Delay injected into every request.")
        text.sample("registry_fault_delay_ms", f"{faults.delay_ms:g}")
        text.family("registry_fault_error_rate", "gauge", "Share of requests failed on purpose.")
        text.sample("registry_fault_error_rate", f"{faults.error_rate:g}")
        text.family("registry_start_time_seconds", "gauge", "Process start, epoch seconds.")
        text.sample("registry_start_time_seconds", f"{self.started_at:.3f}")
        return text.render()


def _check_faults(body: Any) -> _Faults:
    if not isinstance(body, dict) or not body or set(body) - {"delay_ms", "error_rate"}:
        raise ValueError(
            'Send a JSON object with "delay_ms" (>= 0) and/or "error_rate" (0 to 1), '
            'e.g. {"delay_ms": 500, "error_rate": 0.1}; '
            f"got {json.dumps(body)[:200]}."
        )
    out = _Faults()
    for key, low, high in (("delay_ms", 0, 600_000), ("error_rate", 0, 1)):
        if key in body:
            value = body[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                low <= value <= high
            ):
                raise ValueError(f"{key} must be a number between {low} and {high}; got {value!r}.")
            setattr(out, key, float(value))
    return out


_NAME_DOC = {"pattern": _NAME_PATTERN, "minLength": 1, "maxLength": 64}
_VERSION_DOC = {"type": "integer", "minimum": 1, "maximum": MAX_VERSION}
# Path parameters read by check_name and parse_version (their messages say what to send),
# documented as what those accept. Module-level: the annotations are resolved by name.
ModelName = Annotated[str, PathParam(description=f"The model's name: {_NAME_RULE}.",
                                     json_schema_extra=_NAME_DOC)]
VersionNumber = Annotated[str, PathParam(description="A version number, as returned by "
                                                     "POST /models/{name}/versions.",
                                         json_schema_extra=_VERSION_DOC)]
_BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


class RegisterRequest(BaseModel):
    """POST /models/{name}/versions: a new version of a model."""

    artifact_b64: str = Field(min_length=4, pattern=_BASE64_PATTERN,
                              description="The artifact bytes (a serialised model), base64; not empty.")
    metrics: dict[str, float] = Field(default_factory=dict,
                                      description='Numbers measured on it, e.g. {"accuracy": 0.97}.')
    params: dict[str, Any] = Field(default_factory=dict, description="How it was trained (any JSON object).")


class Registered(BaseModel):
    name: str
    version: int = Field(ge=1)
    sha256: str = Field(description="Hex SHA-256 of the bytes, computed at upload.")


class VersionMeta(BaseModel):
    """One model version, as the registry stores it."""

    name: str
    version: int = Field(ge=1)
    sha256: str
    size_bytes: int = Field(ge=1)
    metrics: dict[str, float]
    params: dict[str, Any]
    stage: Literal["none", "staging", "production", "archived"]
    created_at: float = Field(description="Epoch seconds.")
    updated_at: float = Field(description="Epoch seconds of the last stage change.")


class VersionList(BaseModel):
    name: str
    versions: list[VersionMeta] = Field(min_length=1, description="Oldest first.")


class StageRequest(BaseModel):
    stage: Literal["staging", "production", "archived"] = Field(
        description="Promoting a version to production archives the previous one.")


class FaultsRequest(BaseModel):
    """POST /admin/faults: change one or both injected faults."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})
    delay_ms: float = Field(None, ge=0, le=600_000, description="Delay added to every request, ms.")
    error_rate: float = Field(None, ge=0, le=1, description="Share of requests answered 503.")


class Faults(BaseModel):
    delay_ms: float = Field(ge=0, le=600_000)
    error_rate: float = Field(ge=0, le=1)


class RegistryHealth(BaseModel):
    status: Literal["alive"]
    uptime_s: float


def create_registry_app(root: Path, token: str, faults: _Faults | None = None):
    """Build the registry's FastAPI app over the state in folder ``root``.

    Args:
        root: REGISTRY_DIR: the SQLite database and artifact files.
        token: the bearer token every read and write must carry.
        faults: the initial injected faults (delay, error rate).

    Returns:
        The FastAPI application; its OpenAPI document is at /openapi.json, browsable at /docs.
    """
    store = _Store(root)
    faults = faults or _Faults()
    metrics = _RegistryMetrics()
    app = FastAPI(
        title="hadrlab model registry", version="1",
        description="Versioned, hashed model artifacts. Every route but /healthz, /metrics and "
                    "the docs needs `Authorization: Bearer <REGISTRY_TOKEN>`. Faults injected "
                    "with POST /admin/faults slow or fail (503) every other route.",
    )
    app.state.faults = faults
    # Documents the bearer token in /docs ("Authorize"); the guard below enforces it.
    bearer = [Depends(HTTPBearer(auto_error=False, description="REGISTRY_TOKEN"))]
    guarded = errors(401, 503, s503="An injected error (POST /admin/faults).")

    def problem(status: int, detail: str) -> Response:
        return JSONResponse({"detail": detail}, status_code=status)

    def check_name(name: str) -> Response | None:
        if not _NAME_RE.fullmatch(name):
            return problem(422, f"Model name {name!r} is not valid: use {_NAME_RULE}.")
        return None

    def parse_version(name: str, raw: str) -> int | Response:
        # ASCII digits only: str.isdigit() also accepts "²" or "٣", which int() refuses.
        if not re.fullmatch(r"[0-9]+", raw) or int(raw) < 1:
            return problem(
                422, f"Version {raw!r} of model {name!r} is not valid: versions are whole "
                     "numbers from 1, as returned by POST /models/{name}/versions.",
            )
        if int(raw) > MAX_VERSION:
            return problem(
                422, f"Version {raw} of model {name!r} is not valid: versions are whole "
                     f"numbers from 1 to {MAX_VERSION}.",
            )
        return int(raw)

    def missing_version(name: str, version: int) -> Response:
        known = [v["version"] for v in store.versions(name)]
        if not known:
            return problem(404, f"Model {name!r} is not in the registry: register a version "
                                f"first with POST /models/{name}/versions.")
        return problem(404, f"Model {name!r} has no version {version}; its versions are "
                            f"{known}.")

    async def json_body(request: Request) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"The request body is not valid JSON ({exc}).") from None

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        route = _route_of(path)
        start = time.perf_counter()
        response: Response
        if route not in ("/admin/faults", "/metrics", "docs"):
            # Faults first, before authentication, as a slow network or an overloaded
            # server would delay or fail any request.
            if faults.delay_ms > 0:
                await asyncio.sleep(faults.delay_ms / 1000)
            if faults.error_rate > 0 and random.random() < faults.error_rate:
                metrics.injected_errors += 1
                response = problem(503, "The registry failed this request on purpose "
                                        f"(injected error rate {faults.error_rate:g}).")
                metrics.requests[(request.method, route, 503)] += 1
                return response
        if route not in ("/healthz", "/metrics", "docs"):
            if request.headers.get("authorization", "") != f"Bearer {token}":
                response = problem(401, "Missing or wrong bearer token: send the header "
                                        "'Authorization: Bearer <REGISTRY_TOKEN>'.")
                metrics.requests[(request.method, route, 401)] += 1
                return response
        response = await call_next(request)
        metrics.requests[(request.method, route, response.status_code)] += 1
        metrics.latency_sum_s[route] += time.perf_counter() - start
        return response

    @app.get("/healthz", response_model=RegistryHealth,
             responses=errors(503, s503="An injected error (POST /admin/faults)."))
    async def healthz() -> Response:
        """Liveness: 200 while the process serves (injected faults apply here too)."""
        return JSONResponse({"status": "alive", "uptime_s": round(time.time() - metrics.started_at, 3)})

    @app.get("/metrics", response_class=PrometheusText, responses=METRICS)
    async def prometheus() -> Response:
        """Requests by route and status, models and versions stored, the injected faults."""
        return PrometheusText(metrics.render(store, faults), media_type=CONTENT_TYPE)

    @app.get("/admin/faults", response_model=Faults, dependencies=bearer, responses=errors(401))
    async def get_faults() -> Response:
        """The faults injected now (never applied to /admin/faults itself, nor /metrics)."""
        return JSONResponse({"delay_ms": faults.delay_ms, "error_rate": faults.error_rate})

    @app.post("/admin/faults", response_model=Faults, dependencies=bearer, responses=errors(401, 422),
              openapi_extra=apidocs.json_body(FaultsRequest, example={"delay_ms": 500, "error_rate": 0.1}))
    async def set_faults(request: Request) -> Response:
        """Make the registry slow (delay_ms) or failing (error_rate) from now on; 0 undoes it."""
        try:
            new = _check_faults(await json_body(request))
        except ValueError as exc:
            return problem(422, str(exc))
        body = json.loads(await request.body())
        if "delay_ms" in body:
            faults.delay_ms = new.delay_ms
        if "error_rate" in body:
            faults.error_rate = new.error_rate
        logger.info("Faults now: delay %g ms, error rate %g.", faults.delay_ms, faults.error_rate)
        return JSONResponse({"delay_ms": faults.delay_ms, "error_rate": faults.error_rate})

    @app.post("/models/{name}/versions", status_code=201, response_model=Registered,
              dependencies=bearer, responses={**guarded, **errors(422)},
              openapi_extra=apidocs.json_body(
                  RegisterRequest, example={"artifact_b64": "bW9kZWwgYnl0ZXM=",
                                            "metrics": {"accuracy": 0.97}, "params": {"C": 1.0}}))
    async def register(name: ModelName, request: Request) -> Response:
        """Upload a new version of model `name`; its version number is the next one (1, 2, ...)."""
        if (bad := check_name(name)) is not None:
            return bad
        try:
            body = await json_body(request)
        except ValueError as exc:
            return problem(422, f"{exc} Send {{\"artifact_b64\": ..., \"metrics\": {{}}, "
                                "\"params\": {}}.")
        if not isinstance(body, dict) or "artifact_b64" not in body:
            return problem(422, 'The body must be a JSON object with "artifact_b64" (the '
                                'artifact bytes, base64), and optionally "metrics" and "params" '
                                "(objects).")
        try:
            data = base64.b64decode(body["artifact_b64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            return problem(422, '"artifact_b64" is not valid base64 text.')
        if not data:
            return problem(422, "The artifact is empty: upload the serialised model bytes.")
        metrics_in, params_in = body.get("metrics", {}), body.get("params", {})
        for key, value in (("metrics", metrics_in), ("params", params_in)):
            if not isinstance(value, dict):
                return problem(422, f'"{key}" must be a JSON object; got {type(value).__name__}.')
        for key, value in metrics_in.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return problem(422, f"Metric {key!r} must be a number; got {value!r}.")
            if not math.isfinite(value):
                return problem(422, f"Metric {key!r} must be a finite number; got {value!r}.")
        result = await asyncio.to_thread(store.register, name, data, metrics_in, params_in)
        logger.info("Registered %s v%d (%d bytes, sha256 %s...).", name, result["version"],
                    len(data), result["sha256"][:12])
        return JSONResponse(result, status_code=201)

    @app.get("/models/{name}/versions", response_model=VersionList, dependencies=bearer,
             responses={**guarded, **errors(404, 422)})
    async def list_versions(name: ModelName) -> Response:
        """Every version of model `name`, oldest first; 404 if it has none."""
        if (bad := check_name(name)) is not None:
            return bad
        versions = store.versions(name)
        if not versions:
            return problem(404, f"Model {name!r} is not in the registry: register a version "
                                f"first with POST /models/{name}/versions.")
        return JSONResponse({"name": name, "versions": versions})

    @app.get("/models/{name}/versions/{version}", response_model=VersionMeta, dependencies=bearer,
             responses={**guarded, **errors(404, 422)})
    async def get_version(name: ModelName, version: VersionNumber) -> Response:
        """The metadata of one version: sha256, size, metrics, params, stage, times."""
        if (bad := check_name(name)) is not None:
            return bad
        number = parse_version(name, version)
        if isinstance(number, Response):
            return number
        meta = store.get(name, number)
        return JSONResponse(meta) if meta else missing_version(name, number)

    @app.get("/models/{name}/versions/{version}/artifact", dependencies=bearer,
             response_class=Response,
             responses={200: {"description": "The artifact bytes, as uploaded (or as the disk "
                                             "holds them now: verify them against the header).",
                              "content": {"application/octet-stream":
                                          {"schema": {"type": "string", "format": "binary"}}},
                              "headers": {_SHA_HEADER: {"description": "The SHA-256 recorded at upload.",
                                                        "schema": {"type": "string"}}}},
                        **guarded, **errors(404, 422, 500)})
    async def get_artifact(name: ModelName, version: VersionNumber) -> Response:
        """Download one version's bytes; check them against the header X-Artifact-SHA256."""
        if (bad := check_name(name)) is not None:
            return bad
        number = parse_version(name, version)
        if isinstance(number, Response):
            return number
        meta = store.get(name, number)
        if meta is None:
            return missing_version(name, number)
        path = store.artifact_path(name, number)
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            return problem(500, f"The artifact file of {name!r} v{number} cannot be read "
                                f"({exc}); the registry's storage at {path} is damaged.")
        # The hash recorded at upload, not one computed now: the consumer must be able to
        # tell that the stored bytes changed.
        return Response(data, media_type="application/octet-stream",
                        headers={_SHA_HEADER: meta["sha256"]})

    @app.post("/models/{name}/versions/{version}/stage", response_model=VersionMeta,
              dependencies=bearer, responses={**guarded, **errors(404, 422)},
              openapi_extra=apidocs.json_body(StageRequest, example={"stage": "production"}))
    async def set_stage(name: ModelName, version: VersionNumber, request: Request) -> Response:
        """Move a version to a stage; one production version at a time."""
        if (bad := check_name(name)) is not None:
            return bad
        number = parse_version(name, version)
        if isinstance(number, Response):
            return number
        try:
            body = await json_body(request)
        except ValueError as exc:
            return problem(422, f'{exc} Send {{"stage": "production"}}.')
        stage = body.get("stage") if isinstance(body, dict) else None
        if stage not in STAGES[1:]:
            return problem(422, f'"stage" must be one of {list(STAGES[1:])}; got {stage!r}.')
        if store.get(name, number) is None:
            return missing_version(name, number)
        meta = store.set_stage(name, number, stage)
        logger.info("%s v%d is now %s.", name, number, stage)
        return JSONResponse(meta)

    @app.get("/models/{name}/production", response_model=VersionMeta, dependencies=bearer,
             responses={**guarded, **errors(404, 422)})
    async def production(name: ModelName) -> Response:
        """The metadata of the production version; 404 if none is promoted."""
        if (bad := check_name(name)) is not None:
            return bad
        meta = store.production(name)
        if meta is not None:
            return JSONResponse(meta)
        if not store.versions(name):
            return problem(404, f"Model {name!r} is not in the registry: register a version "
                                f"and promote it to production first.")
        return problem(404, f"Model {name!r} has no production version: promote one with "
                            f'POST /models/{name}/versions/{{v}}/stage {{"stage": "production"}}.')

    apidocs.allow_header(app)
    return app


def _route_of(path: str) -> str:
    """Collapse a path into a route template, so metrics labels stay few."""
    parts = path.strip("/").split("/")
    if parts[0] == "models" and len(parts) >= 3:
        parts[1] = "{name}"
        if len(parts) >= 4 and parts[2] == "versions":
            parts[3] = "{v}"
        return "/" + "/".join(parts)
    if path in ("/healthz", "/metrics", "/admin/faults"):
        return path
    if path in ("/docs", "/openapi.json", "/docs/oauth2-redirect"):
        return "docs"
    return "other"


def run_registry() -> int:
    """Entry point of ``python -m hadrlab.registry``: serve the registry until stopped."""
    import uvicorn

    try:
        port = int(os.environ.get("PORT", "") or 0)
        root = os.environ.get("REGISTRY_DIR", "").strip()
        token = os.environ.get("REGISTRY_TOKEN", "").strip()
        if not port or not root or not token:
            raise ValueError(
                "PORT, REGISTRY_DIR and REGISTRY_TOKEN must all be set, e.g. `PORT=8100 "
                "REGISTRY_DIR=/tmp/registry REGISTRY_TOKEN=s3cret python -m hadrlab.registry`."
            )
        faults = _check_faults({"delay_ms": env_number("FAULT_DELAY_MS", 0),
                                "error_rate": env_number("FAULT_ERROR_RATE", 0)})
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    app = create_registry_app(Path(root), token, faults)
    logger.info("Registry on %s:%d, state in %s, faults: delay %g ms, error rate %g.",
                HOST, port, root, faults.delay_ms, faults.error_rate)
    uvicorn.run(app, host=os.environ.get("HOST") or HOST, port=port, access_log=False,
                log_config=None, log_level="info")
    return 0


# --------------------------------------------------------------------------- client


@dataclass(frozen=True)
class ModelVersion:
    """One registered model version, as the registry describes it."""

    name: str
    version: int
    sha256: str
    stage: str
    metrics: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    size_bytes: int = 0
    created_at: float = 0.0

    @classmethod
    def from_json(cls, body: dict) -> ModelVersion:
        return cls(name=body["name"], version=int(body["version"]), sha256=body["sha256"],
                   stage=body["stage"], metrics=body.get("metrics", {}),
                   params=body.get("params", {}), size_bytes=body.get("size_bytes", 0),
                   created_at=body.get("created_at", 0.0))

    def __repr__(self) -> str:
        return (f"ModelVersion({self.name!r} v{self.version}, stage={self.stage}, "
                f"sha256={self.sha256[:12]}..., metrics={self.metrics})")


class RegistryClient:
    """A small, synchronous client of the registry's HTTP API.

    Every call raises a :class:`RegistryError` subclass on failure:
    :class:`RegistryUnavailable` when the registry does not answer within ``timeout_s``,
    refuses the connection or answers 5xx (the failures worth retrying, and the ones a
    circuit breaker counts), :class:`ModelNotFound` on 404, :class:`InvalidRequest` on
    401/422, and :class:`IntegrityError` when a download does not match its SHA-256.

    Example:
        >>> client = RegistryClient(reg.url, reg.token, timeout_s=2)
        >>> v = client.register("digits", pickle.dumps(model), {"accuracy": 0.97}, {})
        >>> client.promote("digits", v, "production")
        >>> model = pickle.loads(client.download("digits", v))
    """

    def __init__(self, url: str, token: str, timeout_s: float = 5.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self._http = httpx.Client(
            base_url=self.url, timeout=timeout_s,
            headers={"Authorization": f"Bearer {token}"},
        )

    def __repr__(self) -> str:
        return f"RegistryClient({self.url!r}, timeout_s={self.timeout_s:g})"

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any):
        import httpx

        what = f"{method} {self.url}{path}"
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise RegistryUnavailable(
                f"The registry did not answer {what} within {self.timeout_s:g} s (timeout_s). "
                "It may be overloaded or slowed by an injected delay (GET /admin/faults); "
                "retry later or pass a longer timeout_s."
            ) from None
        except httpx.TransportError as exc:
            raise RegistryUnavailable(
                f"Could not reach the registry for {what} ({type(exc).__name__}: {exc}). "
                "Is it running? Start it with start_registry(), or check the URL and port."
            ) from None
        if response.status_code >= 500:
            raise RegistryUnavailable(
                f"The registry answered {response.status_code} to {what}: "
                f"{_detail(response)}. This is a server-side failure; retry later."
            )
        if response.status_code == 404:
            raise ModelNotFound(f"{_detail(response)} ({what})")
        if response.status_code == 401:
            raise InvalidRequest(
                f"The registry refused {what} as unauthorised: {_detail(response)} "
                "Pass the registry's token to RegistryClient(url, token)."
            )
        if response.status_code >= 400:
            raise InvalidRequest(
                f"The registry refused {what} ({response.status_code}): {_detail(response)}"
            )
        return response

    def register(self, name: str, artifact_bytes: bytes, metrics: dict | None = None,
                 params: dict | None = None) -> int:
        """Upload a new version of model ``name``; return its version number.

        Args:
            name: the model's name, e.g. ``"digits"``.
            artifact_bytes: the serialised model (a pickled estimator, for the labs).
            metrics: numbers measured on it, e.g. ``{"accuracy": 0.97}``.
            params: how it was trained (any JSON object).

        Returns:
            The new version number (1, 2, ...).
        """
        body = {"artifact_b64": base64.b64encode(artifact_bytes).decode("ascii"),
                "metrics": metrics or {}, "params": params or {}}
        result = self._request("POST", f"/models/{name}/versions", json=body).json()
        if result["sha256"] != sha256_of(artifact_bytes):
            raise IntegrityError(
                f"The registry recorded sha256 {result['sha256'][:12]}... for {name!r} "
                f"v{result['version']}, but the bytes sent hash to "
                f"{sha256_of(artifact_bytes)[:12]}...: the upload was altered in transit."
            )
        return int(result["version"])

    def list_versions(self, name: str) -> list[ModelVersion]:
        """Return every version of model ``name``, oldest first."""
        body = self._request("GET", f"/models/{name}/versions").json()
        return [ModelVersion.from_json(v) for v in body["versions"]]

    def get(self, name: str, version: int) -> ModelVersion:
        """Return the metadata of one version (sha256, metrics, stage, created_at)."""
        return ModelVersion.from_json(self._request("GET", f"/models/{name}/versions/{version}").json())

    def download(self, name: str, version: int) -> bytes:
        """Download one version's artifact and verify its SHA-256; return the bytes.

        Raises:
            IntegrityError: the bytes do not hash to the SHA-256 recorded at upload.
        """
        response = self._request("GET", f"/models/{name}/versions/{version}/artifact")
        expected = response.headers.get(_SHA_HEADER, "")
        actual = sha256_of(response.content)
        if actual != expected:
            raise IntegrityError(
                f"The artifact of {name!r} v{version} from {self.url} is corrupt: it hashes "
                f"to sha256 {actual[:12]}... but was registered as {expected[:12] or '(none)'}... "
                f"The file was changed or damaged in the registry's storage. Do not load it; "
                f"register the model again, or promote another version."
            )
        return response.content

    def promote(self, name: str, version: int, stage: str = "production") -> ModelVersion:
        """Move a version to ``stage`` ("staging", "production" or "archived").

        Promoting to production archives the previous production version.
        """
        return ModelVersion.from_json(
            self._request("POST", f"/models/{name}/versions/{version}/stage",
                          json={"stage": stage}).json()
        )

    def production(self, name: str) -> ModelVersion:
        """Return the current production version of ``name``; ModelNotFound if there is none."""
        return ModelVersion.from_json(self._request("GET", f"/models/{name}/production").json())

    def set_faults(self, delay_ms: float | None = None, error_rate: float | None = None) -> dict:
        """Change the registry's injected faults at run time; return the faults now set."""
        body = {k: v for k, v in (("delay_ms", delay_ms), ("error_rate", error_rate)) if v is not None}
        return self._request("POST", "/admin/faults", json=body).json()

    def healthy(self) -> bool:
        """True if GET /healthz answers 200 within ``timeout_s``."""
        try:
            return self._request("GET", "/healthz").status_code == 200
        except RegistryError:
            return False


def _detail(response) -> str:
    try:
        return str(response.json()["detail"])
    except Exception:
        return response.text[:200] or "(empty answer)"


# --------------------------------------------------------------------------- the child


@dataclass(eq=False)
class Registry:
    """A registry running as a child process, with what a client needs to reach it.

    Example:
        >>> reg = start_registry()
        >>> client = reg.client()
        >>> reg.kill(); reg.restart()     # an outage; the state is kept on disk
        >>> reg.stop()
    """

    name: str
    port: int
    token: str
    data_dir: Path
    child: Child | None = field(repr=False, default=None)
    delay_ms: float = 0.0
    ready_timeout_s: float = 30.0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def client(self, timeout_s: float = 5.0) -> RegistryClient:
        """Return a new :class:`RegistryClient` for this registry."""
        return RegistryClient(self.url, self.token, timeout_s=timeout_s)

    def alive(self) -> bool:
        return self.child is not None and self.child.alive()

    def start(self) -> Registry:
        """Start the registry process (on the same port and data) if it is not running."""
        if self.alive():
            return self
        env = {
            "PORT": str(self.port), "REGISTRY_DIR": str(self.data_dir),
            "REGISTRY_TOKEN": self.token, "FAULT_DELAY_MS": str(self.delay_ms),
            "PYTHONPATH": _pythonpath(),
        }
        timeout_s = self.ready_timeout_s + self.delay_ms / 1000
        self.child = start_process(
            self.name, [sys.executable, "-m", "hadrlab.registry"], port=self.port, env=env,
            ready=lambda c: wait_for_http(c, "/healthz", timeout_s=timeout_s),
        )
        return self

    def stop(self) -> None:
        """Stop the registry gracefully. Idempotent."""
        if self.child is not None:
            self.child.stop()

    def kill(self) -> None:
        """Kill the registry at once (SIGKILL): an outage. :meth:`restart` brings it back."""
        if self.child is not None:
            self.child.kill()

    def restart(self) -> Registry:
        """Stop (if running) and start again on the same port, with the same state."""
        self.stop()
        return self.start()

    def set_faults(self, delay_ms: float | None = None, error_rate: float | None = None) -> dict:
        """Make the running registry slow (``delay_ms``) or failing (``error_rate``)."""
        with self.client() as client:
            return client.set_faults(delay_ms=delay_ms, error_rate=error_rate)

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pythonpath() -> str:
    root = str(Path(__file__).resolve().parents[1])
    return os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)


def start_registry(name: str = "registry", *, data_dir: str | os.PathLike | None = None,
                   token: str | None = None, port: int | None = None,
                   delay_ms: float = 0.0, timeout_s: float = 30.0) -> Registry:
    """Start a model registry as a child process on a loopback port.

    Args:
        name: the child's name in logs and the run registry.
        data_dir: REGISTRY_DIR; default ``<home_dir()>/registry/<name>``. Reuse it to keep
            the models of an earlier run.
        token: the bearer token; default a new random one (``reg.token``).
        port: the port; default a free one.
        delay_ms: FAULT_DELAY_MS, a delay injected into every request from the start.
        timeout_s: how long to wait for /healthz.

    Returns:
        A running :class:`Registry`; ``reg.client()`` talks to it, ``reg.child`` is the process.
    """
    root = Path(data_dir) if data_dir is not None else home_dir() / "registry" / name
    root.mkdir(parents=True, exist_ok=True)
    registry = Registry(name=name, port=port or find_free_port(), token=token or secrets.token_urlsafe(16),
                        data_dir=root, delay_ms=delay_ms, ready_timeout_s=timeout_s)
    return registry.start()


# --------------------------------------------------------------------------- online API


def start_online_api(
    name: str = "online-api",
    *,
    registry: Registry,
    model_name: str = "digits",
    cache_dir: str | os.PathLike | None = None,
    port: int | None = None,
    reload_interval_s: float = 1.0,
    retries: bool = True,
    breaker: bool = True,
    cache_fallback: bool = True,
    registry_timeout_s: float = 1.0,
    wait: str | None = "ready",
    timeout_s: float = 30.0,
    env: dict[str, str] | None = None,
) -> Child:
    """Start the online scoring API (``python -m hadrlab.registry serve``) as a child.

    It loads the production model of ``model_name`` from ``registry`` through a
    :class:`~hadrlab.resilience.ModelLoader` and re-checks the registry every
    ``reload_interval_s``.

    Args:
        name: the child's name.
        registry: the registry it loads from (its url and token are passed on).
        model_name: which model to serve.
        cache_dir: MODEL_CACHE_DIR, where the last good model is kept; default
            ``<home_dir()>/model-cache/<name>``. Keep it across restarts for the fallback.
        port: default a free one.
        reload_interval_s: RELOAD_INTERVAL_S.
        retries, breaker, cache_fallback: the hardening switches (RETRIES, BREAKER,
            CACHE_FALLBACK).
        registry_timeout_s: REGISTRY_TIMEOUT_S, the timeout of each registry call.
        wait: ``"ready"`` waits for /readyz, ``"live"`` for /healthz, None returns at once.
        timeout_s: how long to wait.
        env: more environment variables (they win).

    Returns:
        The running :class:`~hadrlab.processes.Child`.
    """
    port = port or find_free_port()
    cache = Path(cache_dir) if cache_dir is not None else home_dir() / "model-cache" / name
    child_env = {
        "PORT": str(port), "REGISTRY_URL": registry.url, "REGISTRY_TOKEN": registry.token,
        "MODEL_NAME": model_name, "MODEL_CACHE_DIR": str(cache),
        "RELOAD_INTERVAL_S": str(reload_interval_s), "REGISTRY_TIMEOUT_S": str(registry_timeout_s),
        "RETRIES": str(int(retries)), "BREAKER": str(int(breaker)),
        "CACHE_FALLBACK": str(int(cache_fallback)), "REPLICA_NAME": name,
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": _pythonpath(),
        **(env or {}),
    }
    probe = {"ready": "/readyz", "live": "/healthz", None: None}[wait]

    def check(child: Child) -> None:
        if probe is not None:
            wait_for_http(child, probe, timeout_s=timeout_s)

    return start_process(name, [sys.executable, "-m", "hadrlab.registry", "serve"],
                         port=port, env=child_env, ready=check)


def main(argv: list[str] | None = None) -> int:
    """``python -m hadrlab.registry`` runs the registry; ``... serve`` the online API."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S", stream=sys.stdout,
    )
    args = sys.argv[1:] if argv is None else argv
    if not args:
        return run_registry()
    if args == ["serve"]:
        from hadrlab.resilience import run_online_api

        return run_online_api()
    logger.error("Unknown arguments %s: run `python -m hadrlab.registry` for the registry, "
                 "or `python -m hadrlab.registry serve` for the online scoring API.", args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
