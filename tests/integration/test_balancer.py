"""The Service load balancer as its own process: round robin, 503, retries, metrics, speed."""

from __future__ import annotations

import http.client
import json
import sys
import time
import urllib.request

import pytest

from hadrlab.processes import find_free_port, http_status, start_process, wait_for_http, wait_until

BACKEND = [
    sys.executable, "-c",
    "import os, time, http.server as h\n"
    "class H(h.BaseHTTPRequestHandler):\n"
    "    protocol_version = 'HTTP/1.1'\n"
    "    wbufsize = 65536\n"  # one write per response: no Nagle/delayed-ACK stalls
    "    def log_message(self, *a): pass\n"
    "    def do_GET(self):\n"
    "        time.sleep(float(os.environ.get('WORK_S', '0')))\n"
    "        b = os.environ['NAME'].encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(b)))\n"
    "        self.end_headers(); self.wfile.write(b)\n"
    "s = h.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H)\n"
    "s.daemon_threads = True\n"
    "s.serve_forever()\n",
]


@pytest.fixture
def backends():
    children = []
    for name in ("a", "b", "c"):
        port = find_free_port()
        # c does 2 ms of work per request, about what one model replica spends on a predict
        work_s = "0.002" if name == "c" else "0"
        children.append(start_process(f"backend-{name}", BACKEND, port=port,
                                      env={"PORT": str(port), "NAME": name, "WORK_S": work_s},
                                      ready=lambda c: wait_for_http(c, "/")))
    yield children
    for child in children:
        child.stop()


def _start_balancer(retry: bool):
    admin = find_free_port()
    cmd = [sys.executable, "-m", "hadrlab.platform.balancer", "--name", "svc",
           "--port", "{port}", "--admin-port", str(admin)]
    if retry:
        cmd.append("--retry-connect-failures")
    url = f"http://127.0.0.1:{admin}/healthz"
    child = start_process("balancer", cmd, port=find_free_port(),
                          ready=lambda c: wait_until(lambda: http_status(url) == 200, timeout_s=10, child=c))
    return child, admin


@pytest.fixture
def balancer():
    child, admin = _start_balancer(retry=False)
    yield child, admin
    child.stop()


def _admin(admin: int, path: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{admin}{path}", data=data), timeout=5) as r:
        text = r.read().decode()
    return json.loads(text) if text.startswith("{") else text


def _push(admin: int, children) -> None:
    _admin(admin, "/endpoints", {"endpoints": [{"name": c.name, "port": c.port} for c in children]})


def _get(port: int) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def test_no_ready_endpoint_answers_503_with_a_clear_body(balancer):
    child, _ = balancer
    status, body = _get(child.port)
    assert status == 503
    assert "no ready endpoint for service 'svc'" in body


def test_round_robin_over_pushed_endpoints_only(balancer, backends):
    child, admin = balancer
    backends = backends[:2]
    _push(admin, backends)
    assert [_get(child.port)[1] for _ in range(4)] in (["a", "b", "a", "b"], ["b", "a", "b", "a"])
    _push(admin, backends[:1])  # b is no longer ready
    assert {_get(child.port)[1] for _ in range(5)} == {"a"}
    metrics = _admin(admin, "/metrics")
    assert 'hadrlab_balancer_requests_total{service="svc",endpoint="backend-a"}' in metrics


def test_killed_endpoint_fails_requests_without_retry(balancer, backends):
    child, admin = balancer
    backends = backends[:2]
    _push(admin, backends)
    backends[1].kill()  # crashed, but still listed: the platform has not noticed yet
    statuses = [_get(child.port)[0] for _ in range(10)]
    assert statuses.count(502) == 5 and statuses.count(200) == 5
    assert _admin(admin, "/stats")["upstream_errors_total"] == {"backend-b": 5}


def test_retry_on_connect_failure_hides_a_killed_endpoint(backends):
    child, admin = _start_balancer(retry=True)
    backends = backends[:2]
    try:
        _push(admin, backends)
        assert {_get(child.port)[1] for _ in range(4)} == {"a", "b"}  # pooled connections to both
        backends[1].kill()
        results = [_get(child.port) for _ in range(10)]
        assert results == [(200, "a")] * 10
        stats = _admin(admin, "/stats")
        assert stats["retries_total"] >= 1 and stats["upstream_errors_total"]["backend-b"] >= 1
    finally:
        child.stop()


def _rate(port: int, seconds: float = 1.5) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        conn.request("GET", "/")
        conn.getresponse().read()
        n += 1
    conn.close()
    return n / seconds


def test_overhead_through_the_balancer_is_small(balancer, backends):
    """Generous bound only; the benchmark reports the real ratio."""
    child, admin = balancer
    _push(admin, backends[2:])
    direct = _rate(backends[2].port)
    through = _rate(child.port)
    print(f"\nrequests/s direct {direct:.0f}, through the balancer {through:.0f} "
          f"(ratio {through / direct:.2f}, 2 ms of work per request)")
    assert through >= 0.3 * direct
