"""Fixtures for browser tests: JupyterLab started by the course's own command, and Chromium.

The server is ``python -m hadrlab lab --no-browser --port P --root DIR`` with
HADRLAB_LAB_TOKEN set, started through hadrlab.processes (its own session, a log file, the
run registry). The browser is Debian's /usr/bin/chromium driven by playwright; nothing is
downloaded. Both are stopped at the end of the module, and the server's teardown fails if
any of its processes (the server, its kernels) had to be killed.

The helpers live in tools/screenshot_notebook.py, the tool the team uses to look at a lab,
so these tests also keep that tool working.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_tool():
    name = "screenshot_notebook"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


browser_tool = _load_tool()


@pytest.fixture(scope="session", name="browser_tool")
def browser_tool_fixture():
    """tools/screenshot_notebook.py as a module: serve_lab, open_notebook, run_all_cells..."""
    return browser_tool


def _descendants_named(word: str) -> list[str]:
    import psutil

    found = []
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if word in proc.name() and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(f"pid {proc.pid}: {' '.join(proc.cmdline())[:120]}")
        except psutil.Error:
            continue
    return found


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    """JupyterLab serving an empty temporary folder, as the tool's LabServer."""
    reason = browser_tool.chromium_missing_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("lab-root")
    state = tmp_path_factory.mktemp("lab-state")
    # A loaded machine needs 10-30 s to start JupyterLab; allow far more.
    server = browser_tool.start_lab(root, state, timeout_s=120)
    try:
        yield server
    finally:
        # SIGTERM to the server's process group, SIGKILL after 30 s; its kernels (in
        # sessions of their own) must have been shut down by the server itself.
        left = browser_tool.stop_lab(server, timeout_s=30)
        assert not left, "JupyterLab left processes running after SIGTERM:\n" + "\n".join(left)
        assert browser_tool.http_status(f"{server.base_url}/api/status") == 0, (
            f"JupyterLab still answers on {server.base_url} after it was stopped"
        )


@pytest.fixture(scope="module")
def lab_server(lab) -> tuple[str, str, Path]:
    """The running JupyterLab as (base_url, token, root)."""
    return lab.base_url, lab.token, lab.root


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory):
    """A headless Chromium context with a throw-away profile (skips without Chromium)."""
    reason = browser_tool.chromium_missing_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = browser_tool.launch_chromium(pw, profile)
        try:
            yield context
        finally:
            context.close()
    left = _descendants_named("chrom")
    assert not left, "Chromium outlived its browser context:\n" + "\n".join(left)
