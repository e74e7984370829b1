"""One configurable HTTP request, sent in a loop by every simulated user.

Run by locust in its own process (see :func:`hadrlab.load.run_load`); never import it in a
notebook. Configured through environment variables, so that one file serves every lab:

    LOAD_PATH        request path                     (default /predict)
    LOAD_METHOD      HTTP method                      (default POST)
    LOAD_BODY_FILE   file whose bytes are the body; sent as JSON when it parses as JSON
    LOAD_WAIT_MS     pause of each user between two requests, in ms   (default 0)
    LOAD_TIMEOUT_S   connect and read timeout of one request, in s    (default 2)
    LOAD_TIMELINE    CSV file that receives one row per request       (required)
    LOAD_META        JSON file that receives the test start/stop times (optional)

Timeline columns: t_start, t_end (epoch seconds), latency_ms, ok (1/0), status (0 when
no HTTP answer came back), error (short text, empty when ok), replica (the X-Replica
response header, when the server sends one).
"""

from __future__ import annotations

import csv
import json
import os
import time

import gevent
from locust import FastHttpUser, constant, events, task

# Heavy imports leave gevent's cached clock behind real time, so `-t 20s` would stop early.
gevent.get_hub().loop.update_now()

PATH = os.environ.get("LOAD_PATH", "/predict")
METHOD = os.environ.get("LOAD_METHOD", "POST").upper()
WAIT_S = float(os.environ.get("LOAD_WAIT_MS", "0")) / 1000.0
TIMEOUT_S = float(os.environ.get("LOAD_TIMEOUT_S", "2"))
TIMELINE = os.environ["LOAD_TIMELINE"]
META = os.environ.get("LOAD_META")
COLUMNS = ["t_start", "t_end", "latency_ms", "ok", "status", "error", "replica"]
# Flush often enough that the notebook's progress bar can count rows while the test runs.
FLUSH_EVERY_S = 0.25
ERROR_CHARS = 80


def _read_body() -> tuple[bytes | None, dict]:
    path = os.environ.get("LOAD_BODY_FILE")
    if not path:
        return None, {}
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        json.loads(raw)
    except ValueError:
        return raw, {}
    return raw, {"Content-Type": "application/json", "Accept": "application/json"}


BODY, HEADERS = _read_body()

_file = open(TIMELINE, "w", newline="", buffering=1 << 16)
_writer = csv.writer(_file)
_writer.writerow(COLUMNS)
_file.flush()
_last_flush = time.monotonic()


def _short_error(exception: BaseException) -> str:
    """A one-line error text such as 'ConnectionRefusedError: [Errno 111] ...'."""
    text = str(exception) or type(exception).__name__
    if type(exception).__name__ not in text:
        text = f"{type(exception).__name__}: {text}"
    return " ".join(text.split())[:ERROR_CHARS]


@events.request.add_listener
def _record(request_type, name, response_time, response_length, response=None,
            exception=None, start_time=None, **kwargs):
    global _last_flush
    status = getattr(response, "status_code", 0) or 0
    ok = exception is None and status < 500
    if ok:
        error = ""
    elif status >= 400 or exception is None:
        error = f"HTTP {status}"  # the server answered: its status says it all
    else:
        error = _short_error(exception)
    replica = ""
    headers = getattr(response, "headers", None)
    if headers:
        replica = headers.get("X-Replica") or ""
    t_start = start_time if start_time is not None else time.time() - response_time / 1000.0
    _writer.writerow([
        f"{t_start:.6f}", f"{t_start + response_time / 1000.0:.6f}", f"{response_time:.3f}",
        int(ok), status, error, replica,
    ])
    now = time.monotonic()
    if now - _last_flush >= FLUSH_EVERY_S:
        _file.flush()
        _last_flush = now


def _write_meta(**fields) -> None:
    if not META:
        return
    try:
        with open(META) as fh:
            meta = json.load(fh)
    except (OSError, ValueError):
        meta = {}
    meta.update(fields)
    tmp = f"{META}.tmp"
    with open(tmp, "w") as fh:
        json.dump(meta, fh)
    os.replace(tmp, META)


@events.test_start.add_listener
def _on_start(environment, **kwargs):
    _write_meta(test_start=time.time())


@events.test_stop.add_listener
def _on_stop(environment, **kwargs):
    _file.flush()
    _write_meta(test_stop=time.time())


@events.quitting.add_listener
def _on_quit(environment, **kwargs):
    _file.flush()


class ApiUser(FastHttpUser):
    """Sends the configured request, waits LOAD_WAIT_MS, and again."""

    wait_time = constant(WAIT_S)
    network_timeout = TIMEOUT_S
    connection_timeout = TIMEOUT_S
    max_retries = 0

    @task
    def call(self) -> None:
        self.client.request(METHOD, PATH, data=BODY, headers=HEADERS, name=PATH)
