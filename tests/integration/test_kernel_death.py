"""A learner's kernel dies mid-experiment: nothing the lab started may outlive it.

Each test runs a lab's own cells, from the solution notebook with short parameters, in a real
Jupyter kernel, up to a cell that keeps servers and load busy; that cell is started and the
kernel is killed with SIGKILL while it runs. What was running is counted from the kernel's
process tree, snapshotted just before the kill: a census that does not rely on the
environment variables the course tags its children with (Redis and Sentinel can make those
unreadable by rewriting their process title).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from hadrlab.notebooks import _kernel_env, inject_parameters, read_notebook

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(600)


@dataclass(frozen=True)
class Lab:
    notebook: str
    params: dict
    # The first code cell not run to its end: it is started, and the kernel is killed while it runs.
    killed_in: str
    # The least time the busy cell runs before the census; then the census waits for ``expect``
    # (for Lab 03, a registry outage whose whole ``chaos run`` takes about 4 s: look at once).
    after_s: float
    # Names that must be in the census: the test must have caught those servers running.
    expect: tuple[str, ...]


LABS = {
    "00": Lab("00_foundations", {"WRITES": 200000, "LAG_SAMPLES": 50},
              "async_result = hadrlab.measure_write_latency", 1.0, ("redis-server",)),
    "01": Lab("01_stateless_replicas", {"LOAD_S": 20, "USERS": 2},
              "run = hadrlab.start_load(", 4.0, ("locust", "hadrlab.serving", "balancer", "prometheus", "alertmanager")),
    "02": Lab("02_feature_store_dr", {},
              "steady = run_drill(", 3.0, ("redis-server", "--sentinel")),
    "03": Lab("03_chaos_pipeline", {"EXPERIMENTS": ["registry-outage"]},
              "def run_all(", 0.5, ("redis-server", "chaos")),
}


@dataclass(frozen=True)
class Proc:
    pid: int
    create_time: float
    cmd: str

    def alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            return proc.status() != psutil.STATUS_ZOMBIE and abs(proc.create_time() - self.create_time) < 0.05
        except psutil.Error:
            return False


def _census(pid: int) -> list[Proc]:
    """Every live descendant of ``pid``, by the process tree alone."""
    found = []
    for proc in psutil.Process(pid).children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(Proc(proc.pid, proc.create_time(), " ".join(proc.cmdline())))
        except psutil.Error:
            pass
    return found


def _survivors(census: list[Proc], timeout_s: float) -> list[Proc]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = [p for p in census if p.alive()]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


class Kernel:
    """A real ipykernel in ``home`` (its own run registry), driven cell by cell."""

    def __init__(self, home: Path):
        from jupyter_client import KernelManager

        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(env=_kernel_env({"HADRLAB_HOME": str(home)}), cwd=str(ROOT / "solutions"))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.pid = int(self.run("import os; print(os.getpid())").strip())

    def run(self, code: str, timeout_s: float = 300) -> str:
        out: list[str] = []

        def hook(msg: dict) -> None:
            if msg["header"]["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["header"]["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        reply = self.client.execute_interactive(code, timeout=timeout_s, output_hook=hook, allow_stdin=False)
        assert reply["content"]["status"] == "ok", f"cell failed:\n{code[:300]}\n{''.join(out)[-3000:]}"
        return "".join(out)

    def start(self, code: str) -> None:
        self.client.execute(code, allow_stdin=False)

    def output_so_far(self) -> str:
        """What the cell started by :meth:`start` printed so far (streams and tracebacks)."""
        out = []
        while True:
            try:
                msg = self.client.get_iopub_msg(timeout=0.2)
            except Exception:  # queue.Empty: nothing more for now
                return "".join(out)
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                out.append(msg["content"]["text"])
            elif kind == "error":
                out.append("\n".join(msg["content"]["traceback"]))

    def close(self) -> None:
        self.client.stop_channels()
        if self.manager.has_kernel:
            self.manager.shutdown_kernel(now=True)


def _run_until_busy(lab: Lab, home: Path) -> tuple[Kernel, list[Proc]]:
    """Run ``lab`` in a fresh kernel up to its busy cell; start that cell; return the census."""
    nb = read_notebook(ROOT / "solutions" / f"{lab.notebook}.ipynb")
    inject_parameters(nb, lab.params, source=lab.notebook)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    busy = next(i for i, c in enumerate(cells) if c.source.lstrip().startswith(lab.killed_in))
    kernel = Kernel(home)
    try:
        kernel.run("%matplotlib agg")
        for cell in cells[:busy]:
            kernel.run(cell.source.replace("%matplotlib inline", "%matplotlib agg"))
        kernel.start(cells[busy].source)
        time.sleep(lab.after_s)
        # On a loaded machine the busy cell may take longer to start every server: wait for them,
        # so the kill always lands while all of them run.
        deadline = time.monotonic() + 90
        while True:
            census = _census(kernel.pid)
            text = "\n".join(p.cmd for p in census)
            missing = [name for name in lab.expect if name not in text]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not missing, (f"the lab was not running {missing} when the kernel was to be killed:\n{text}\n"
                             f"the busy cell printed:\n{kernel.output_so_far()[-3000:]}")
    except BaseException:
        kernel.close()
        raise
    return kernel, census


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hadrlab", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HADRLAB_HOME": str(home)})


@pytest.mark.parametrize("lab", sorted(LABS))
def test_a_killed_kernel_leaves_nothing_running(lab: str, hadrlab_home: Path) -> None:
    home = hadrlab_home / "kernel-death" / lab
    kernel, census = _run_until_busy(LABS[lab], home)
    try:
        os.kill(kernel.pid, signal.SIGKILL)
        left = _survivors(census, timeout_s=10)
    finally:
        kernel.close()
    assert not left, "still running 10 s after the kernel died:\n" + "\n".join(f"  {p.pid} {p.cmd}" for p in left)
    assert _cli(home, "leftovers").returncode == 0


def test_with_the_watchdog_killed_too_make_stop_finds_every_survivor(hadrlab_home: Path) -> None:
    """Lab 02 (Redis and three Sentinels): nothing stops the servers now but ``make stop``."""
    home = hadrlab_home / "kernel-death" / "02-no-watchdog"
    kernel, census = _run_until_busy(LABS["02"], home)
    try:
        watchdogs = [p for p in census if "hadrlab._watchdog" in p.cmd]
        assert watchdogs, "the kernel started no watchdog"
        for proc in watchdogs:
            os.kill(proc.pid, signal.SIGKILL)
        os.kill(kernel.pid, signal.SIGKILL)
        time.sleep(1)
        survivors = [p for p in census if p.alive()]
        redis = [p for p in survivors if "redis-server" in p.cmd]
        assert len(redis) >= 5, f"expected Redis x2 and Sentinel x3 to survive without the watchdog: {survivors}"

        report = _cli(home, "leftovers")
        assert report.returncode == 1, report.stdout + report.stderr
        for proc in redis:
            assert str(proc.pid) in report.stdout, f"leftovers did not report {proc.cmd}:\n{report.stdout}"

        stop = _cli(home, "stop")
        assert stop.returncode == 0, stop.stdout + stop.stderr
        left = _survivors(census, timeout_s=10)
    finally:
        for proc in census:
            if proc.alive():
                os.kill(proc.pid, signal.SIGKILL)
        kernel.close()
    assert not left, "`hadrlab stop` left running:\n" + "\n".join(f"  {p.pid} {p.cmd}" for p in left)
    assert _cli(home, "leftovers").returncode == 0
