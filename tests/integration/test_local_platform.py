"""The local backend with real processes: readiness, liveness, back-off, drain, rollouts."""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path

import psutil
import pytest

from hadrlab.platform import LocalPlatform
from hadrlab.processes import wait_until

# A stand-in replica: stdlib only, starts in ~0.1 s. /readyz answers 200 after
# MODEL_LOAD_DELAY_S and 503 from SIGTERM on (or after POST /unready); it keeps serving
# SHUTDOWN_DRAIN_S after SIGTERM, then exits 0. CRASH_AT_START makes it exit at once.
STANDIN = r'''
import json, os, signal, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

if os.environ.get("CRASH_AT_START"):
    sys.exit(3)
PORT = int(os.environ["PORT"])
DELAY = float(os.environ.get("MODEL_LOAD_DELAY_S", "0"))
DRAIN = float(os.environ.get("SHUTDOWN_DRAIN_S", "0"))
NAME = os.environ.get("REPLICA_NAME", "?")
VERSION = os.environ.get("MODEL_VERSION", "v1")
START = time.monotonic()
state = {"term": False, "unready": False}

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 65536  # one write per response: no Nagle/delayed-ACK stalls
    def log_message(self, *args):
        pass
    def _send(self, code, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if self.path == "/healthz":
            return self._send(200, "ok")
        if self.path == "/readyz":
            ok = time.monotonic() - START >= DELAY and not state["term"] and not state["unready"]
            return self._send(200 if ok else 503, "ready" if ok else "not ready")
        return self._send(200, json.dumps({"replica": NAME, "version": VERSION}))
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/unready":
            state["unready"] = True
        return self.do_GET()

server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
server.daemon_threads = True

def on_term(*_):
    state["term"] = True
    def later():
        time.sleep(DRAIN)
        server.shutdown()
    threading.Thread(target=later, daemon=True).start()

signal.signal(signal.SIGTERM, on_term)
print(f"stand-in {NAME} on {PORT}", flush=True)
server.serve_forever()
'''


@pytest.fixture
def standin(tmp_path: Path) -> str:
    path = tmp_path / "standin.py"
    path.write_text(STANDIN)
    return str(path)


@pytest.fixture
def platform():
    plat = LocalPlatform(restart_backoff_s=0.5, quiet=True)
    yield plat
    plat.close()


def manifests(
    script: str,
    *,
    replicas: int = 2,
    env: dict | None = None,
    readiness: dict | None = None,
    liveness: dict | None = None,
    pre_stop_s: float | None = None,
    grace_s: int = 5,
    max_surge: int | str = 1,
    max_unavailable: int | str = 0,
) -> list[dict]:
    container = {
        "name": "app",
        "image": "standin:v1",
        "command": ["python", script],
        "ports": [{"name": "http", "containerPort": 8000}],
        "env": [{"name": k, "value": str(v)} for k, v in (env or {}).items()]
        + [{"name": "REPLICA_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
    }
    if readiness is not None:
        container["readinessProbe"] = {"httpGet": {"path": "/readyz", "port": "http"}, **readiness}
    if liveness is not None:
        container["livenessProbe"] = {"httpGet": {"path": "/healthz", "port": 8000}, **liveness}
    if pre_stop_s is not None:
        container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(pre_stop_s)]}}}
    labels = {"app": "standin"}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "app"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": max_surge, "maxUnavailable": max_unavailable},
                },
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"terminationGracePeriodSeconds": grace_s, "containers": [container]},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "app"},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    ]





def _get(port: int, path: str = "/predict", method: str = "GET") -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("x-hadrlab-endpoint", ""), resp.read().decode()
    finally:
        conn.close()


class Traffic:
    """Steady requests through the Service from a few threads with keep-alive connections."""

    def __init__(self, url: str, threads: int = 2) -> None:
        self.port = int(url.rsplit(":", 1)[1])
        self.results: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/predict")
                resp = conn.getresponse()
                body = resp.read().decode()
                self.results.append((time.time(), resp.status, body))
            except (OSError, http.client.HTTPException) as exc:
                self.results.append((time.time(), 0, repr(exc)))
                conn = None
            time.sleep(0.005)

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    @property
    def failures(self) -> list:
        return [r for r in self.results if r[1] != 200]


def _events(platform, kind: str, replica: str | None = None):
    ev = platform.events()
    ev = ev[ev.kind == kind]
    return ev if replica is None else ev[ev.replica == replica]


def test_readiness_gates_traffic_and_removal_is_fast(platform, standin):
    """A replica that is up but not ready gets no requests; an unready one leaves at once."""
    platform.apply(manifests(standin, replicas=1, env={"MODEL_LOAD_DELAY_S": 3},
                             readiness={"periodSeconds": 1, "failureThreshold": 1}))
    platform.wait_for_rollout("app", timeout_s=15)
    first = platform.replicas("app")[0].name
    platform.scale("app", 2)
    url_port = int(platform.service_url("app").rsplit(":", 1)[1])
    wait_until(lambda: len(platform.replicas("app")) == 2, timeout_s=10, describe="a second replica")
    slow = [r for r in platform.replicas("app") if r.name != first][0]
    wait_until(lambda: _get(slow.port, "/healthz")[0] == 200, timeout_s=10,
               describe="the second replica serving /healthz")  # it serves, but is not ready
    assert not [r for r in platform.replicas("app") if r.name == slow.name][0].ready
    served = {_get(url_port)[1] for _ in range(30)}
    assert served == {first}
    platform.wait_for_rollout("app", timeout_s=15)
    served = {_get(url_port)[1] for _ in range(10)}
    assert served == {first, slow.name}
    # readiness removal: make one replica unready, time unready -> endpoint removed
    t_flip = time.time()
    _get(slow.port, "/unready", method="POST")
    deadline = time.monotonic() + 5
    while _events(platform, "endpoint-removed", slow.name).empty and time.monotonic() < deadline:
        time.sleep(0.02)
    t_unready = _events(platform, "unready", slow.name).t.iloc[0]
    t_removed = _events(platform, "endpoint-removed", slow.name).t.iloc[0]
    print(f"\nreadiness: flip->unready {t_unready - t_flip:.3f} s, unready->endpoint removed "
          f"{(t_removed - t_unready) * 1000:.1f} ms (period 1 s x failureThreshold 1)")
    assert 0 <= t_removed - t_unready < 3  # generous: `make bench` reports the real figure
    assert {_get(url_port)[1] for _ in range(10)} == {first}


def test_liveness_restarts_a_hung_replica(platform, standin):
    liveness = {"periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 2,
                "terminationGracePeriodSeconds": 1}
    platform.apply(manifests(standin, replicas=1, liveness=liveness, readiness={"periodSeconds": 1}))
    platform.wait_for_rollout("app", timeout_s=15)
    before = platform.replicas("app")[0]
    name = platform.hang_replica("app")
    t_hung = time.time()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        now = platform.replicas("app")[0]
        if now.restarts == 1 and now.ready:
            break
        time.sleep(0.05)
    after = platform.replicas("app")[0]
    assert after.name == name and after.restarts == 1 and after.ready
    assert after.pid != before.pid and after.port == before.port  # restarted in place
    t_failed = _events(platform, "liveness-failed", name).t.iloc[0]
    t_restarted = _events(platform, "restarted", name).t.iloc[0]
    budget = 1 * 2 + 1  # periodSeconds x failureThreshold + timeoutSeconds
    print(f"\nliveness: hung->liveness-failed {t_failed - t_hung:.2f} s (budget {budget} s), "
          f"->restarted {t_restarted - t_hung:.2f} s")
    assert t_failed - t_hung < budget + 1.5


def test_killed_replica_restarts_and_crash_loops_back_off(platform, standin):
    platform.apply(manifests(standin, replicas=1, env={"CRASH_AT_START": 1}))
    deadline = time.monotonic() + 15
    phases = set()
    while time.monotonic() < deadline and len(_events(platform, "restarted")) < 4:
        phases.add(platform.replicas("app")[0].phase)
        time.sleep(0.02)
    ev = platform.events()
    exits = ev[ev.kind == "exited"].t.tolist()
    restarts = ev[ev.kind == "restarted"].t.tolist()
    waits = [r - e for e, r in zip(exits, restarts)][:4]
    print(f"\nback-off waits: {[round(w, 2) for w in waits]} (expected 0, 0.5, 1, 2)")
    assert len(waits) == 4
    for got, want in zip(waits, [0.0, 0.5, 1.0, 2.0]):
        assert want - 0.05 <= got <= want + 1.5  # each wait at least the back-off
    assert waits[3] > waits[1]  # and growing
    assert "CrashLoopBackOff" in phases
    assert platform.replicas("app")[0].restarts >= 4


def test_kill_replica_restarts_in_place(platform, standin):
    platform.apply(manifests(standin, replicas=1, readiness={"periodSeconds": 1}))
    platform.wait_for_rollout("app", timeout_s=15)
    before = platform.replicas("app")[0]
    platform.kill_replica("app")
    wait_until(lambda: (r := platform.replicas("app")[0]).restarts == 1 and r.ready, timeout_s=20,
               describe="the killed replica restarted and ready")
    after = platform.replicas("app")[0]
    assert (after.name, after.port, after.restarts) == (before.name, before.port, 1)
    assert not psutil.pid_exists(before.pid) or psutil.Process(before.pid).status() == psutil.STATUS_ZOMBIE
    kinds = platform.events().kind.tolist()
    assert kinds.index("killed") < kinds.index("exited") < kinds.index("restarted")


def test_graceful_delete_loses_no_request(platform, standin):
    platform.apply(manifests(standin, env={"SHUTDOWN_DRAIN_S": 0.5}, pre_stop_s=0.5,
                             readiness={"periodSeconds": 1}))
    platform.wait_for_rollout("app", timeout_s=15)
    with Traffic(platform.service_url("app")) as traffic:
        time.sleep(0.5)
        name = platform.delete_replica("app", wait=True)
        platform.wait_for_rollout("app", timeout_s=10)
        time.sleep(0.3)
    assert len(traffic.results) > 50
    assert traffic.failures == []
    assert name not in {r.name for r in platform.replicas("app")}
    assert "exit code 0" in _events(platform, "exited", name).detail.iloc[0]


def test_rolling_update_with_max_unavailable_0_loses_no_request(platform, standin):
    platform.apply(manifests(standin, env={"MODEL_LOAD_DELAY_S": 0.5, "SHUTDOWN_DRAIN_S": 0.3,
                                           "MODEL_VERSION": "v1"},
                             pre_stop_s=0.3, readiness={"periodSeconds": 1}))
    platform.wait_for_rollout("app", timeout_s=15)
    t_start = time.time()
    with Traffic(platform.service_url("app")) as traffic:
        time.sleep(0.3)
        revision = platform.rollout("app", version="v2")
        platform.wait_for_rollout("app", timeout_s=20)
        time.sleep(0.3)
    assert revision == 2
    assert traffic.failures == []
    assert {r.version for r in platform.replicas("app") if r.phase == "Running"} == {"v2"}
    assert '"version": "v2"' in traffic.results[-1][2]
    # capacity never dropped: at least 2 endpoints at every moment of the rollout
    ev = platform.events()
    ev = ev[(ev.t >= t_start) & ev.kind.isin(["endpoint-added", "endpoint-removed"])]
    count, low = 2, 2
    for kind in ev.kind:
        count += 1 if kind == "endpoint-added" else -1
        low = min(low, count)
    assert low >= 2
    assert not _events(platform, "rollout-finished").empty


def test_close_leaves_no_process(standin):
    platform = LocalPlatform(restart_backoff_s=0.5, quiet=True)
    platform.apply(manifests(standin, readiness={"periodSeconds": 1}))
    platform.wait_for_rollout("app", timeout_s=15)
    balancer_pid = platform._services["app"].child.pid
    pids = [r.pid for r in platform.replicas("app")] + [balancer_pid]
    with platform:
        pass  # the context manager closes it
    platform.close()  # idempotent
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
