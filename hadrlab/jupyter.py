"""Open JupyterLab on the learner notebooks: ``make lab`` / ``python -m hadrlab lab``.

The server listens on 127.0.0.1 only, on port 8888 when it is free (else a free port),
with a random token; the URL with the token is printed. When the server stops (Ctrl-C),
every process the labs started is stopped too.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from hadrlab.errors import PortInUseError
from hadrlab.processes import HOST, check_port_free, find_free_port, port_holder, stop_registered

__all__ = ["lab_command", "main_lab"]

ROOT = Path(__file__).resolve().parents[1]


def _choose_port(port: int | None) -> int:
    if port:
        check_port_free(port)
        return port
    try:
        check_port_free(8888)
        return 8888
    except PortInUseError:
        return find_free_port()


def lab_command(
    root_dir: Path, port: int, token: str, *, open_browser: bool = True
) -> list[str]:
    """Return the command line that serves JupyterLab on ``root_dir``."""
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        f"--ServerApp.ip={HOST}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root_dir}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.open_browser={open_browser}",
        # No calls home: the labs work offline, and a workshop room's network may be slow.
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.news_url=None",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI machines run as root
    return cmd


def _check_cluster() -> None:
    """With HADRLAB_BACKEND=kube, say now (not in the middle of a lab) if no cluster answers."""
    from hadrlab.errors import HadrError
    from hadrlab.platform import get_platform

    try:
        get_platform("kube").close()
        print("HADRLAB_BACKEND=kube: the cluster answers. Lab 01's platform runs on it; Labs 02 and 03 "
              "still start their services as local processes (infra/kind/README.md says what runs where).",
              flush=True)
    except HadrError as exc:
        print(f"Warning: HADRLAB_BACKEND=kube, but {exc}", file=sys.stderr, flush=True)


def main_lab(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hadrlab lab", description=__doc__)
    parser.add_argument("--port", type=int, default=None, help="default: 8888 if free")
    parser.add_argument("--root", default=str(ROOT / "labs"), help="folder to open")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    args = parser.parse_args(argv)

    root = Path(args.root).resolve()
    if not root.is_dir():
        print(f"No folder {root}: run `make labs` to generate the learner notebooks.")
        return 2
    try:
        port = _choose_port(args.port)
    except PortInUseError:
        print(
            f"Port {args.port} on {HOST} is already in use by {port_holder(args.port)}. Leave "
            f"out --port (`make lab` takes 8888 when free, else any free port), or pick another: "
            f'make lab LAB_ARGS="--port 9999".',
            file=sys.stderr,
        )
        return 2
    if os.environ.get("HADRLAB_BACKEND", "local").strip().lower() == "kube":
        _check_cluster()
    token = os.environ.get("HADRLAB_LAB_TOKEN") or secrets.token_hex(16)
    url = f"http://{HOST}:{port}/lab?token={token}"
    print(f"JupyterLab is starting on {root}", flush=True)
    print(f"Open {url}", flush=True)
    print("Stop it with Ctrl-C; every process the labs started is stopped with it.", flush=True)
    env = {**os.environ, "HADRLAB_BACKEND": os.environ.get("HADRLAB_BACKEND", "local")}
    server = subprocess.Popen(
        lab_command(root, port, token, open_browser=not args.no_browser), env=env
    )

    def forward(signum: int, _frame: object) -> None:
        server.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    try:
        server.wait()
    except KeyboardInterrupt:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        stopped = stop_registered()
        if stopped:
            print(f"Stopped {len(stopped)} process(es) the labs left running.")
    return 0
