"""Stops a parent's children when the parent dies, however it dies.

Run as ``python -m hadrlab._watchdog PARENT_PID RUN_DIR`` with stdin a pipe that only the
parent holds. A read returns EOF the moment the parent exits (normally, by SIGKILL, by a
kernel restart); then every child the parent recorded in RUN_DIR is stopped: SIGTERM to its
process group, a short grace period, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path


def _groups_of(owner: int, run_dir: Path) -> list[tuple[int, Path]]:
    groups = []
    for path in run_dir.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            entry = json.loads(path.read_text())
            if entry.get("owner") == owner:
                groups.append((int(entry["pid"]), path))
    return groups


def _alive(pgid: int) -> bool:
    """True while the group's leader runs (a zombie, waiting to be reaped, counts as gone)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        import psutil

        return psutil.Process(pgid).status() != psutil.STATUS_ZOMBIE
    except Exception:
        return False


def reap(owner: int, run_dir: Path, grace_s: float = 3.0) -> int:
    """Stop every process group recorded for ``owner``. Returns how many there were."""
    groups = _groups_of(owner, run_dir)
    for pgid, _ in groups:
        for sig in (signal.SIGCONT, signal.SIGTERM):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p, _ in groups):
        time.sleep(0.05)
    for pgid, path in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return len(groups)


def main() -> None:
    owner, run_dir = int(sys.argv[1]), Path(sys.argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is for the parent
    while sys.stdin.buffer.read(4096):
        pass  # the parent never writes; EOF means it is gone
    n = reap(owner, run_dir)
    if n:
        print(f"{time.strftime('%H:%M:%S')} parent {owner} died; stopped {n} children", flush=True)


if __name__ == "__main__":
    main()
