"""`make lab` serves JupyterLab on 127.0.0.1 with a token, and stops cleanly."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from hadrlab.processes import find_free_port

ROOT = Path(__file__).resolve().parents[2]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except OSError:
        return 0, b""


@pytest.mark.slow
def test_make_lab_serves_jupyterlab_on_loopback_with_a_token(tmp_path):
    port = find_free_port()
    token = "t0k3n-for-test"
    log = open(tmp_path / "lab.log", "wb")
    make = subprocess.Popen(
        ["make", "--no-print-directory", "lab", f"LAB_ARGS=--no-browser --port {port}"],
        cwd=ROOT,
        env={**os.environ, "HADRLAB_LAB_TOKEN": token},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        status = 0
        while time.monotonic() < deadline and make.poll() is None:
            status, _ = _get(f"{base}/api/status?token={token}")
            if status == 200:
                break
            time.sleep(0.5)
        output = (tmp_path / "lab.log").read_text(errors="replace")
        assert status == 200, f"JupyterLab did not answer on {base}:\n{output[-2000:]}"
        assert f"{base}/lab?token={token}" in output
        # Without the token the API refuses; with it, the learner notebooks are listed.
        assert _get(f"{base}/api/contents")[0] == 403
        code, body = _get(f"{base}/api/contents?token={token}")
        assert code == 200
        names = {item["name"] for item in json.loads(body)["content"]}
        assert any(name.endswith(".ipynb") for name in names) or names == set()
        # It listens on loopback only.
        listening = {
            c.laddr.ip
            for c in psutil.net_connections("tcp")
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
        }
        assert listening == {"127.0.0.1"}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(make.pid, signal.SIGTERM)
        try:
            make.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
        log.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _get(f"http://127.0.0.1:{port}/api/status")[0]:
        time.sleep(0.3)
    assert _get(f"http://127.0.0.1:{port}/api/status")[0] == 0, "the server outlived `make lab`"


def test_make_lab_on_a_taken_port_says_who_holds_it_and_what_to_do(capsys):
    import socket

    from hadrlab.jupyter import main_lab

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert main_lab(["--no-browser", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"Port {port} on 127.0.0.1 is already in use by pid {os.getpid()}" in err
    assert "Leave out --port" in err


def test_lab_with_the_kube_backend_and_no_cluster_warns_before_starting(monkeypatch, capsys, tmp_path):
    from hadrlab.jupyter import _check_cluster

    monkeypatch.setenv("HADRLAB_BACKEND", "kube")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    _check_cluster()
    err = capsys.readouterr().err
    assert err.startswith("Warning: HADRLAB_BACKEND=kube, but") and "kind up" in err
