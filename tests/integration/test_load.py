"""Real locust runs against a tiny real HTTP server, each a few seconds long."""

from __future__ import annotations

import sys
import time

import pytest

from hadrlab.errors import ProcessExited
from hadrlab.load import TIMELINE_COLUMNS, _RowCounter, read_timeline, run_load, start_load
from hadrlab.metrics import error_window
from hadrlab.processes import find_free_port, list_leftovers, start_process, wait_for_tcp

SERVER = '''
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"      # keep-alive, like a real model API
    disable_nagle_algorithm = True     # else headers and body wait on each other's ACK

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"label": 7}'
        self.send_response(503 if self.path == "/broken" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Replica", "replica-1")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
'''


@pytest.fixture
def server(tmp_path):
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    port = find_free_port()
    child = start_process("tiny-api", [sys.executable, str(script), "{port}"], port=port,
                          ready=wait_for_tcp)
    yield child
    child.stop()


def locust_processes():
    return [e for e in list_leftovers() if "locust" in e["cmd"]]


def test_run_load_records_one_row_per_request(server, capsys):
    result = run_load(server.url, users=5, duration_s=4, body={"pixels": [0] * 64}, progress=True)
    timeline = result.timeline
    assert list(timeline.columns) == TIMELINE_COLUMNS
    assert len(timeline) == result.total_requests > 0
    assert result.mismatch is None
    assert timeline["ok"].all() and result.failures == 0 and result.availability == 1.0
    assert set(timeline["status"]) == {200}
    assert set(timeline["replica"]) == {"replica-1"}
    assert result.rps > 0
    assert (timeline["t_end"] >= timeline["t_start"]).all()
    assert result.started_at <= timeline["t_start"].min() <= timeline["t_end"].max() <= result.ended_at + 0.5
    assert 3.0 <= result.ended_at - result.started_at <= 10.0
    assert "(done)" in capsys.readouterr().err
    assert "availability=100.000 %" in repr(result) and "<table>" in result._repr_html_()
    assert locust_processes() == []


def test_server_errors_are_failures_with_their_status(server):
    result = run_load(server.url, users=2, duration_s=1, path="/broken", progress=False)
    assert result.failures == result.requests == len(result.timeline) > 0
    assert set(result.timeline["error"]) == {"HTTP 503"}


def test_a_server_killed_mid_run_shows_failures_with_an_error_text(server):
    run = start_load(server.url, users=5, duration_s=4, timeout_s=1.0, name="load-kill")
    time.sleep(1.5)
    killed_at = time.time()
    server.kill()
    result = run.wait(progress=False)
    timeline = result.timeline
    assert len(timeline) == result.total_requests
    assert result.failures > 0 and timeline["ok"].iloc[:10].all()
    failed = timeline[~timeline["ok"]]
    assert failed["error"].str.len().gt(0).all()
    assert failed["error"].str.contains("Connection|refused|reset", case=False).any()
    # No answer at all: status 0; only a response cut off mid-body by the kill keeps the
    # status its headers carried.
    assert (failed["status"] == 0).sum() >= len(failed) - 5, failed["status"].value_counts()
    first, last, _ = error_window(timeline, killed_at)
    assert killed_at <= first <= last <= result.ended_at + 1.0
    assert not run.child.alive() and locust_processes() == []


def test_start_load_reports_a_locust_that_cannot_start(server, monkeypatch, tmp_path):
    broken = tmp_path / "broken_locustfile.py"
    broken.write_text("raise RuntimeError('this locustfile is broken on purpose')\n")
    monkeypatch.setattr("hadrlab.load.locustfile_path", lambda name: broken)
    with pytest.raises(ProcessExited, match="exited with code"):
        start_load(server.url, users=1, duration_s=1)
    assert locust_processes() == []


def test_read_timeline_drops_a_line_cut_short(tmp_path):
    path = tmp_path / "timeline.csv"
    path.write_text(
        "t_start,t_end,latency_ms,ok,status,error,replica\n"
        "10.0,10.005,5.0,1,200,,r1\n"
        '10.1,10.2,100.0,0,0,"ConnectionResetError: [Errno 104] Connection reset, by peer",\n'
        "10.2,10.2"
    )
    timeline = read_timeline(path)
    assert len(timeline) == 2
    assert timeline["ok"].tolist() == [True, False]
    assert timeline.loc[1, "error"].endswith("by peer") and timeline.loc[0, "error"] == ""


def test_row_counter_counts_only_complete_rows(tmp_path):
    path = tmp_path / "timeline.csv"
    counter = _RowCounter(path)
    assert counter.update() == (0, 0)
    path.write_text("t_start,t_end,latency_ms,ok,status,error,replica\n10.0,10.1,1.0,1,200,,\n10.1,10.2")
    assert counter.update() == (1, 0)
    with open(path, "a") as fh:
        fh.write(',1.0,0,0,"refused, sort of",\n')
    assert counter.update() == (2, 1)


def test_stop_ends_a_run_early_with_consistent_totals(server):
    run = start_load(server.url, users=3, duration_s=30, name="load-stop")
    time.sleep(1.0)
    result = run.stop()
    assert result.ended_at - result.started_at < 10
    assert len(result.timeline) == result.total_requests > 0
    assert run.wait() is result
    assert locust_processes() == []
