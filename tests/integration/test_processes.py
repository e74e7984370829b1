"""Child processes: ports, readiness, logs, registry, and no child outliving its parent."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from hadrlab.errors import PortInUseError, ProcessExited, ServiceNotReady
from hadrlab.processes import (
    check_port_free,
    find_free_port,
    list_registered,
    start_process,
    stop_registered,
    wait_for_http,
    wait_for_tcp,
    wait_until,
)

HTTP_SERVER = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port}"]


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_child_serves_on_loopback_and_stops():
    port = find_free_port()
    child = start_process("web", HTTP_SERVER, port=port, ready=lambda c: wait_for_http(c, "/"))
    try:
        assert child.alive()
        assert child.url == f"http://127.0.0.1:{port}"
        assert any(e["pid"] == child.pid for e in list_registered())
    finally:
        child.stop()
    assert not child.alive()
    assert all(e["pid"] != child.pid for e in list_registered())
    child.stop()  # idempotent


def test_port_in_use_is_refused_with_the_port_named():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(PortInUseError, match=str(port)):
            check_port_free(port)
        with pytest.raises(PortInUseError, match="make stop"):
            start_process("web", HTTP_SERVER, port=port)


def test_readiness_timeout_names_process_url_and_last_log_line():
    port = find_free_port()
    script = "import time; print('loading the model, please wait', flush=True); time.sleep(60)"
    with pytest.raises(ServiceNotReady) as err:
        start_process(
            "slow-api",
            [sys.executable, "-c", script],
            port=port,
            ready=lambda c: wait_for_http(c, "/readyz", timeout_s=1.5),
        )
    msg = str(err.value)
    assert "'slow-api'" in msg
    assert f"http://127.0.0.1:{port}/readyz" in msg
    assert "loading the model" in msg
    assert list_registered() == []


def test_child_that_exits_during_start_is_reported_with_its_log():
    with pytest.raises(ProcessExited, match="ModuleNotFoundError"):
        start_process(
            "broken",
            [sys.executable, "-c", "import not_a_module_xyz"],
            port=find_free_port(),
            ready=lambda c: wait_for_tcp(c, timeout_s=10),
        )


def test_missing_program_says_to_run_setup():
    with pytest.raises(ProcessExited, match="make setup"):
        start_process("ghost", ["no-such-binary-hadrlab"])


PARENT = textwrap.dedent(
    """
    import sys, time
    from hadrlab.processes import start_process, wait_for_http
    c = start_process("web", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port}"],
                      port=int(sys.argv[1]), ready=lambda c: wait_for_http(c, "/"))
    print(c.pid, flush=True)
    if sys.argv[2] == "exit":
        sys.exit(0)
    time.sleep(600)
    """
)


@pytest.mark.parametrize("how", ["exit", "sigkill", "sigterm"])
def test_no_child_outlives_its_parent(how):
    """Children stop when the parent exits normally, is killed with SIGKILL, or with SIGTERM."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(find_free_port()), how],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    child_pid = int(parent.stdout.readline())
    assert psutil.pid_exists(child_pid)
    if how == "sigkill":
        os.kill(parent.pid, signal.SIGKILL)
    elif how == "sigterm":
        os.kill(parent.pid, signal.SIGTERM)
    parent.wait(timeout=10)
    assert _gone(child_pid), f"child {child_pid} outlived its parent ({how})"


def test_stop_registered_is_safe_when_nothing_runs():
    stop_registered()  # watchdogs of the tests above may still be finishing
    assert stop_registered() == []
    assert stop_registered() == []


GRANDPARENT = textwrap.dedent(
    """
    import sys, time
    from hadrlab.processes import start_process, wait_until
    from pathlib import Path
    out = Path(sys.argv[1])
    # The child starts a grandchild in a session of its own (out of the child's process group).
    script = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True); "
        f"open({str(out)!r}, 'w').write(str(p.pid)); time.sleep(600)"
    )
    c = start_process("spawner", [sys.executable, "-c", script])
    wait_until(lambda: out.exists() and out.read_text(), timeout_s=20, describe="the grandchild")
    for entry in Path(sys.argv[2]).glob("*.json"):
        entry.unlink()  # as if the parent died before it could register anything
    print(c.pid, flush=True)
    time.sleep(600)
    """
)


def test_a_dead_parents_unregistered_children_and_grandchildren_are_stopped(tmp_path, hadrlab_home):
    """The watchdog finds children by the owner they carry, not only by the registry."""
    out = tmp_path / "grandchild.pid"
    parent = subprocess.Popen(
        [sys.executable, "-c", GRANDPARENT, str(out), str(hadrlab_home / "run")],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    child_pid = int(parent.stdout.readline())
    grandchild_pid = int(out.read_text())
    assert psutil.pid_exists(child_pid) and psutil.pid_exists(grandchild_pid)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=10)
    assert _gone(child_pid), "an unregistered child outlived its parent"
    assert _gone(grandchild_pid), "a grandchild outlived the parent of its parent"


def test_waiting_for_output_a_child_wrote_just_before_exiting_succeeds():
    # A probe that prints its last line and exits: the wait must see the line, not the exit.
    child = start_process("says-done", [sys.executable, "-c", "print('done', flush=True)"])
    try:
        child.popen.wait(timeout=10)
        took = wait_until(lambda: "done" in child.log_path.read_text(), timeout_s=5,
                          describe="the last line", child=child)
        assert took < 5
        with pytest.raises(ProcessExited, match="never"):
            wait_until(lambda: False, timeout_s=5, describe="something it never wrote", child=child)
    finally:
        child.stop()


RETITLED = textwrap.dedent(
    """
    import sys, time
    from hadrlab import processes
    from hadrlab.replication import start_redis
    # A server that rewrites its process title: /proc then shows no environment for it.
    node = start_redis("retitled", extra_config={"set-proc-title": "yes"})
    print(node.child.pid, processes._watchdog.pid, flush=True)
    time.sleep(600)
    """
)


def _retitled_redis(home):
    parent = subprocess.Popen(
        [sys.executable, "-c", RETITLED], stdout=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "HADRLAB_HOME": str(home)},
    )
    redis_pid, watchdog_pid = map(int, parent.stdout.readline().split())
    assert psutil.Process(redis_pid).environ() == {}, "the server kept its environment readable"
    return parent, redis_pid, watchdog_pid


def test_a_server_whose_environment_cannot_be_read_is_stopped_when_its_parent_dies(hadrlab_home):
    parent, redis_pid, _ = _retitled_redis(hadrlab_home / "retitled-watchdog")
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=10)
    assert _gone(redis_pid), "a Redis server that rewrote its title outlived its parent"


def test_make_stop_finds_a_retitled_server_whose_parent_and_watchdog_died(hadrlab_home):
    home = hadrlab_home / "retitled-stop"
    parent, redis_pid, watchdog_pid = _retitled_redis(home)
    try:
        os.kill(watchdog_pid, signal.SIGKILL)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        assert not _gone(redis_pid, timeout_s=1)

        env = {**os.environ, "HADRLAB_HOME": str(home)}
        left = subprocess.run([sys.executable, "-m", "hadrlab", "leftovers"], capture_output=True, text=True, env=env)
        assert left.returncode == 1 and str(redis_pid) in left.stdout, left.stdout + left.stderr
        assert "retitled" in left.stdout and "owner" in left.stdout, left.stdout
        stop = subprocess.run([sys.executable, "-m", "hadrlab", "stop"], capture_output=True, text=True, env=env)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert _gone(redis_pid), "`hadrlab stop` did not stop the retitled Redis server"
        assert not list((home / "run").glob("*.json")), "a record of a stopped process was kept"
    finally:
        with contextlib.suppress(psutil.Error):
            psutil.Process(redis_pid).kill()
