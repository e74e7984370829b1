"""The online SLO probe against a real HTTP service that fails fast half the time."""

import json
import sys

from hadrlab.chaos import probe_online_slo, within_slo
from hadrlab.processes import find_free_port, start_process, wait_for_tcp

# Every other request: a 503 after 300 ms; the others: a 200 at once.
SERVER = r"""
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    count = 0
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Handler.count += 1
        fail = Handler.count % 2 == 0 or MODE == "down"
        if fail and MODE == "flaky":
            time.sleep(0.3)
        self.send_response(503 if fail else 200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
    def log_message(self, *args):
        pass

MODE = sys.argv[2]
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def _state(tmp_path, url):
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps({"online": {"url": url, "features": [[0.0] * 8]}}))
    return str(path)


def _probe(tmp_path, mode, duration_s):
    """Probe a server that answers in ``mode`` ("flaky" or "down") for ``duration_s``."""
    child = start_process(f"flaky-{mode}", [sys.executable, "-c", SERVER, "{port}", mode],
                          port=find_free_port(), ready=wait_for_tcp)
    try:
        return probe_online_slo(_state(tmp_path, child.url), duration_s=duration_s, rate_rps=20)
    finally:
        child.stop()


def test_p99_is_the_latency_of_served_requests_not_of_fast_errors(tmp_path):
    out = _probe(tmp_path, "flaky", 1.0)
    assert out["requests"] >= 10
    assert 0.3 <= out["availability"] <= 0.7
    # The slow replies are the errors: counted in, they would make the p99 ~300 ms.
    assert out["p99_ms"] is not None and out["p99_ms"] < 200


def test_no_served_request_means_no_p99_and_the_slo_is_missed(tmp_path):
    out = _probe(tmp_path, "down", 0.5)
    assert out["availability"] == 0.0 and out["failures"] == out["requests"] > 0
    assert out["p99_ms"] is None
    assert within_slo(out) is False
