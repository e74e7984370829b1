"""Screenshot a notebook as a learner sees it in JupyterLab, optionally after running it.

Usage:
    python tools/screenshot_notebook.py NOTEBOOK.ipynb OUT.png [--run] [--full-page]

It serves the notebook's folder with the course's own command (``python -m hadrlab lab``,
on a free loopback port, with a random token), opens the notebook in headless Chromium
(Debian's ``/usr/bin/chromium``, driven by the ``playwright`` package; no browser is
downloaded), runs every cell with ``--run``, waits until the kernel is idle, writes the
screenshot and stops everything it started.

The notebook file is left as it was: the server runs with its own JupyterLab settings, in
which autosave is off (as are update checks and news, which would reach the internet).

The helpers here (serve_lab, launch_chromium, open_notebook, run_all_cells, ...) are also
what the browser tests in ``tests/browser/`` use, so the tool and the tests cannot drift.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without an install
    sys.path.insert(0, str(ROOT))

from hadrlab.processes import (  # noqa: E402
    Child,
    find_free_port,
    home_dir,
    http_status,
    start_process,
    wait_until,
)

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "LabServer",
    "launch_chromium",
    "kernel_state",
    "open_notebook",
    "run_all_cells",
    "serve_lab",
    "stop_lab",
    "take_screenshot",
    "wait_for_idle_kernel",
]

CHROMIUM = Path("/usr/bin/chromium")
# Headless Chromium in a container or CI: no sandbox (often root), no GPU, and none of the
# background traffic (updates, sync, QUIC probes) that would leave 127.0.0.1.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
# JupyterLab user settings for every server started here. Autosave off keeps the served
# notebook unchanged; update checks and news would send requests to the internet; windowing
# "none" attaches every cell, so a full-page screenshot shows them all.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {
        "checkForUpdates": False,
        "fetchNews": "false",
    },
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}
IDLE = '.jp-Notebook-ExecutionIndicator[data-status="idle"]'
BUSY_PROMPT = ".jp-InputArea-prompt:text-is('[*]:')"


@dataclass
class LabServer:
    """A running JupyterLab started by :func:`serve_lab`."""

    base_url: str
    token: str
    root: Path
    child: Child = field(repr=False)

    def notebook_url(self, notebook: str) -> str:
        """Return the URL that opens ``notebook`` (relative to the root) with the token."""
        return f"{self.base_url}/lab/tree/{quote(notebook)}?token={self.token}"


def _write_lab_settings(settings_dir: Path) -> None:
    for plugin, values in LAB_SETTINGS.items():
        path = settings_dir / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values, indent=2))


def start_lab(root: Path, state_dir: Path, *, timeout_s: float = 120.0) -> LabServer:
    """Start ``python -m hadrlab lab`` on ``root`` and wait until /api/status answers.

    Args:
        root: the folder JupyterLab serves.
        state_dir: a scratch folder for this server's settings, workspaces and run home.
        timeout_s: how long to wait for the server (a busy machine takes 10-30 s).

    Returns:
        The running :class:`LabServer`; stop it with :func:`stop_lab`.
    """
    port = find_free_port()
    token = secrets.token_hex(16)
    settings_dir = state_dir / "lab-settings"
    _write_lab_settings(settings_dir)
    (state_dir / "workspaces").mkdir(parents=True, exist_ok=True)
    # The lab command stops every process registered in its HADRLAB_HOME when it exits; a
    # home of its own (below ours, so leftovers are still found) keeps it from stopping
    # processes that belong to whoever started it.
    lab_home = home_dir() / "browser" / f"lab-{port}"
    lab_home.mkdir(parents=True, exist_ok=True)
    env = {
        "HADRLAB_LAB_TOKEN": token,
        "HADRLAB_HOME": str(lab_home),
        "JUPYTERLAB_SETTINGS_DIR": str(settings_dir),
        "JUPYTERLAB_WORKSPACES_DIR": str(state_dir / "workspaces"),
    }
    cmd = [sys.executable, "-m", "hadrlab", "lab", "--no-browser",
           "--port", str(port), "--root", str(root)]
    status_url = f"http://127.0.0.1:{port}/api/status?token={token}"
    child = start_process(
        "jupyterlab-browser",
        cmd,
        port=port,
        env=env,
        cwd=str(ROOT),
        ready=lambda c: wait_until(
            lambda: http_status(status_url) == 200,
            timeout_s=timeout_s,
            interval_s=0.3,
            describe=f"GET http://127.0.0.1:{port}/api/status answering 200",
            child=c,
        ),
    )
    return LabServer(base_url=f"http://127.0.0.1:{port}", token=token, root=root, child=child)


def stop_lab(server: LabServer, *, timeout_s: float = 30.0) -> list[str]:
    """Stop the server (SIGTERM, then SIGKILL after ``timeout_s``) and its kernels.

    Returns:
        A description of every process of the server's tree that was still running after
        the stop and had to be killed: an empty list means a clean stop.
    """
    import psutil

    tree: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        tree = psutil.Process(server.child.pid).children(recursive=True)
    # Kernels run in sessions of their own, so only the server's own shutdown stops them;
    # give it time to do so before anything is killed.
    server.child.stop(timeout_s=timeout_s)
    _, alive = psutil.wait_procs(tree, timeout=10)
    left = []
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            left.append(f"pid {proc.pid}: {' '.join(proc.cmdline())[:120]}")
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    return left


@contextlib.contextmanager
def serve_lab(root: Path, *, timeout_s: float = 120.0) -> Iterator[LabServer]:
    """Serve ``root`` with JupyterLab for the duration of a ``with`` block."""
    with tempfile.TemporaryDirectory(prefix="hadrlab-lab-") as state:
        server = start_lab(Path(root).resolve(), Path(state), timeout_s=timeout_s)
        try:
            yield server
        finally:
            left = stop_lab(server)
            if left:
                print("Killed processes JupyterLab left running:\n  " + "\n  ".join(left),
                      file=sys.stderr)


def chromium_missing_reason() -> str | None:
    """Return why the browser cannot run here, or None when it can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found: install chromium (apt-get install chromium); .ci/run does"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is missing: .venv/bin/pip install -e '.[dev]'"
    return None


def launch_chromium(playwright, profile_dir: Path, *, width: int = 1280, height: int = 900):
    """Launch headless Chromium with a throw-away profile; return the browser context."""
    return playwright.chromium.launch_persistent_context(
        str(profile_dir),
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": width, "height": height},
    )


def kernel_state(server: LabServer, notebook: str) -> str | None:
    """Return the server's view of the notebook's kernel ("starting", "idle", "busy"...)."""
    url = f"{server.base_url}/api/sessions?token={server.token}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        sessions = json.load(resp)
    for session in sessions:
        if session.get("path") == notebook and session.get("kernel"):
            return session["kernel"].get("execution_state")
    return None


def open_notebook(page, server: LabServer, notebook: str, *, timeout_s: float = 90.0) -> None:
    """Open ``notebook`` (relative to the server's root) and wait until its kernel is idle."""
    page.goto(server.notebook_url(notebook), timeout=timeout_s * 1000)
    # The page shows "idle" for a moment before any kernel exists (a Run All then asks
    # which kernel to start), so wait for the server to report the kernel idle as well.
    # A notebook without kernel metadata asks which kernel to start: take the default.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _accept_dialog(page)
        with contextlib.suppress(OSError, ValueError):
            if kernel_state(server, notebook) == "idle" and page.locator(IDLE).count():
                break
        page.wait_for_timeout(300)
    else:
        raise TimeoutError(
            f"The kernel of {notebook} was not idle within {timeout_s:g} s "
            f"(server at {server.base_url}, log {server.child.log_path})."
        )
    wait_for_idle_kernel(page, timeout_s=max(1.0, deadline - time.monotonic()))


def _accept_dialog(page) -> None:
    accept = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    if accept.count():
        accept.first.click()


def wait_for_idle_kernel(page, *, timeout_s: float = 90.0) -> None:
    """Wait until the kernel is idle and no cell is queued or running (``[*]``)."""
    page.wait_for_selector(IDLE, timeout=timeout_s * 1000)
    page.wait_for_function(
        """() => ![...document.querySelectorAll('.jp-InputArea-prompt')]
                  .some(p => p.textContent.trim() === '[*]:')""",
        timeout=timeout_s * 1000,
    )
    page.wait_for_selector(IDLE, timeout=timeout_s * 1000)


def run_all_cells(page, *, timeout_s: float = 120.0) -> None:
    """Run every cell through the Run menu, then wait until the kernel is idle again."""
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.locator('li[data-command="runmenu:run-all"]').click()
    # The first cell shows [*] (or a number) once the run has started.
    page.wait_for_function(
        """() => [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
                  .some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))""",
        timeout=timeout_s * 1000,
    )
    wait_for_idle_kernel(page, timeout_s=timeout_s)


def take_screenshot(page, out: Path, *, full_page: bool = False) -> Path:
    """Write a PNG of the page; with ``full_page`` the window grows to fit every cell."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if full_page:
        # JupyterLab scrolls inside the notebook panel, not the page: grow the window by
        # the hidden height of that panel so that the whole notebook is on screen. Scroll
        # the panel back to its top first: after Run All it sits at the last cell, and the
        # grown window would show the end of the notebook followed by blank space.
        hidden_px = page.evaluate(
            """() => { const el = document.querySelector(
                         '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer');
                       if (!el) { return 0; }
                       el.scrollTop = 0;
                       return el.scrollHeight - el.clientHeight; }"""
        )
        size = page.viewport_size
        if hidden_px > 0:
            page.set_viewport_size(
                {"width": size["width"], "height": min(size["height"] + hidden_px + 40, 30000)}
            )
            page.wait_for_timeout(800)  # let the layout settle at the new size
            page.evaluate(
                """() => { const el = document.querySelector(
                             '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer');
                           if (el) { el.scrollTop = 0; } }"""
            )
    page.screenshot(path=str(out))
    return out


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="screenshot_notebook", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("notebook", type=Path, help="the .ipynb file to open")
    parser.add_argument("out", type=Path, help="the PNG file to write")
    parser.add_argument("--run", action="store_true", help="run all cells first")
    parser.add_argument("--full-page", action="store_true", help="the whole notebook, not one screen")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for the server and for the run (default 300)")
    args = parser.parse_args(argv)

    notebook = args.notebook.resolve()
    if not notebook.is_file():
        print(f"No notebook {notebook}: give the path of an existing .ipynb file.", file=sys.stderr)
        return 2
    reason = chromium_missing_reason()
    if reason:
        print(f"Cannot take a screenshot: {reason}.", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    before = _digest(notebook)
    # JupyterLab makes a checkpoint when it opens a notebook; remove the folder if we made it.
    checkpoints = notebook.parent / ".ipynb_checkpoints"
    made_checkpoints = not checkpoints.exists()
    started = time.monotonic()
    with serve_lab(notebook.parent, timeout_s=args.timeout) as server, \
            tempfile.TemporaryDirectory(prefix="hadrlab-chromium-") as profile, \
            sync_playwright() as pw:
        context = launch_chromium(pw, Path(profile))
        try:
            page = context.pages[0] if context.pages else context.new_page()
            try:
                open_notebook(page, server, notebook.name, timeout_s=args.timeout)
                if args.run:
                    run_all_cells(page, timeout_s=args.timeout)
            except Exception:
                # What the page showed when it went wrong is the quickest clue.
                failed = args.out.with_name(f"{args.out.stem}-failed.png")
                take_screenshot(page, failed)
                print(f"The notebook did not open or run; the page is in {failed}.",
                      file=sys.stderr)
                raise
            page.wait_for_timeout(500)  # outputs and widgets finish painting
            take_screenshot(page, args.out, full_page=args.full_page)
        finally:
            context.close()
    if made_checkpoints:
        shutil.rmtree(checkpoints, ignore_errors=True)
    if _digest(notebook) != before:
        print(f"Warning: {notebook} changed while it was open.", file=sys.stderr)
    print(f"Wrote {args.out} in {time.monotonic() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
