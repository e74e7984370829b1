"""Test-session set-up shared by every test folder.

Each session gets its own HADRLAB_HOME (run registry, logs) and its own Jupyter, IPython
and matplotlib folders inside the checkout, so that tests never touch the home directory
and never see another session's processes. When the session ends, any process it started
that is still running fails the run.
"""

from __future__ import annotations

import os
import sys
import time
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Shared test helpers that are not tests (tests/kube_fake.py): importable from any folder,
# since tests are imported with --import-mode=importlib, which adds no folder to sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _isolate() -> Path:
    home = ROOT / ".hadrlab" / "tests" / str(os.getpid())
    home.mkdir(parents=True, exist_ok=True)
    os.environ["HADRLAB_HOME"] = str(home)
    state = ROOT / ".hadrlab" / "jupyter"
    for var, sub in {
        "JUPYTER_CONFIG_DIR": "config",
        "JUPYTER_DATA_DIR": "data",
        "JUPYTER_RUNTIME_DIR": "runtime",
        "IPYTHONDIR": "ipython",
        "MPLCONFIGDIR": "matplotlib",
    }.items():
        os.environ.setdefault(var, str(state / sub))
        Path(os.environ[var]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    return home


HOME = _isolate()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration and browser tests run real servers on a shared, often busy machine: one
    that fails is run once more (the summary line counts it as 'rerun'); failing twice fails.
    Unit tests and notebooks are never re-run."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts or "browser" in parts:
            item.add_marker(pytest.mark.flaky(reruns=1, reruns_delay=1))


@pytest.fixture
def hadrlab_home() -> Path:
    """The HADRLAB_HOME of this test session."""
    return HOME


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any process a test started is still running."""
    from hadrlab.processes import _children, list_leftovers, stop_children, stop_registered

    # Children a test started in this process and never stopped are leaks too: name them
    # before stopping them.
    forgotten = [f"  pid {c.pid}: {c.name} ({' '.join(c.cmd)[:100]})" for c in list(_children) if c.alive()]
    stop_children()
    deadline = time.monotonic() + 10
    left = list_leftovers()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = list_leftovers()
    lines = forgotten + [f"  pid {e['pid']}: {e['cmd'][:120]}" for e in left]
    if left:
        stop_registered()
    if lines:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter:
            reporter.write_line(
                "\nLEAK: processes outlived the tests that started them:\n" + "\n".join(lines), red=True
            )
        session.exitstatus = 1


SMALL_BANK = textwrap.dedent("""
    title: A small bank
    questions:
      - id: rto-vs-rpo
        type: single
        prompt: Which is the data loss window?
        options: ["RTO", "RPO", "SLO"]
        answer: b
        explanation: RPO is the data lost, as a window of time.
      - id: budget-minutes
        type: numeric
        prompt: Minutes of outage in a 99.95% month of 30 days?
        answer: 21.6
        tolerance: 0.1
        unit: min
        explanation: 43200 x 0.0005.
      - id: replicated-state
        type: multiple
        prompt: Which hold state?
        options: ["the model server", "the feature store", "the registry"]
        answer: [b, c]
        explanation: The model server is stateless.
      - id: explain
        type: text
        prompt: Explain your failover.
        model_answer: Promote, repoint, verify.
        rubric: ["promote", "repoint"]
        explanation: Two steps.
""")


@pytest.fixture
def small_bank(tmp_path: Path) -> Path:
    """A four-question quiz bank (single, numeric, multiple, text) as ``lab07.yaml``."""
    folder = tmp_path / "banks"
    folder.mkdir()
    path = folder / "lab07.yaml"
    path.write_text(SMALL_BANK, encoding="utf-8")
    return path
