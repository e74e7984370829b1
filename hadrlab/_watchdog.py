"""Stops a parent's children when the parent dies, however it dies.

Run as ``python -m hadrlab._watchdog PARENT_PID RUN_DIR`` with stdin a pipe that only the
parent holds. A read returns EOF the moment the parent exits (normally, by SIGKILL, by a
kernel restart); then every process the parent started is stopped: SIGTERM, a short grace
period, then SIGKILL.

The children are found by the environment they carry (``HADRLAB_RUN_HOME`` = this home and
``HADRLAB_OWNER`` = the parent's pid), not only by the registry in RUN_DIR: that finds a
child started a moment before the parent died (not yet registered) and what the children
started themselves, and never signals a process that merely reuses a recorded pid. The
registry adds what the environment cannot show: a server that rewrote its process title
(Redis, Sentinel) reads as having no environment, and is found by its recorded pid and start
time instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import psutil

from hadrlab.processes import record_alive

TAG, OWNER = "HADRLAB_RUN_HOME", "HADRLAB_OWNER"


def _children_of(owner: int, home: str) -> list[psutil.Process]:
    me = os.getpid()
    found = []
    for proc in psutil.process_iter():
        if proc.pid in (me, owner):
            continue
        with contextlib.suppress(psutil.Error):
            env = proc.environ()
            if env.get(TAG) == home and env.get(OWNER) == str(owner):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
    return found


def _registered_children(owner: int, run_dir: Path) -> list[psutil.Process]:
    """The live processes the registry records as started by ``owner``.

    This finds a server whose environment reads as empty because it rewrote its process
    title (Redis and Sentinel do), which the environment search above cannot see.
    """
    found = []
    for path in run_dir.glob("*.json"):
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            entry = json.loads(path.read_text())
            if entry.get("owner") == owner and record_alive(entry):
                found.append(psutil.Process(entry["pid"]))
    return found


def reap(owner: int, run_dir: Path, grace_s: float = 3.0) -> int:
    """Stop every process ``owner`` started (and what they started). Returns how many."""
    procs = {p.pid: p for p in _children_of(owner, str(run_dir.parent)) + _registered_children(owner, run_dir)}
    procs = list(procs.values())
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=2)
    for path in run_dir.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            entry = json.loads(path.read_text())
            # A record goes only with its process: one that still runs stays findable.
            if entry.get("owner") == owner and not record_alive(entry):
                path.unlink()
    return len(procs)


def main() -> None:
    owner, run_dir = int(sys.argv[1]), Path(sys.argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is for the parent
    while sys.stdin.buffer.read(4096):
        pass  # the parent never writes; EOF means it is gone
    n = reap(owner, run_dir)
    if n:
        print(f"{time.strftime('%H:%M:%S')} parent {owner} died; stopped {n} processes", flush=True)


if __name__ == "__main__":
    main()
