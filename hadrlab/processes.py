"""Child processes on loopback ports, readiness checks, a run registry and clean-up.

Every service a lab starts (Redis, a model replica, a load balancer, locust) is a child
process started here. Each one:

- binds to 127.0.0.1 on a free port (or a port you name, refused clearly if taken);
- writes its output to a log file under ``.hadrlab/logs/`` (never into the notebook);
- is recorded in the run registry under ``.hadrlab/run/`` so that ``make stop`` finds it;
- is stopped when the Python process that started it exits normally (atexit), and, by a
  small watchdog process, when that parent dies without warning (kernel restart, SIGKILL).

No child may outlive the lab, test or command that started it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hadrlab.errors import PortInUseError, ProcessExited, ServiceNotReady

__all__ = [
    "Child",
    "home_dir",
    "find_free_port",
    "check_port_free",
    "start_process",
    "wait_for_tcp",
    "wait_for_http",
    "wait_until",
    "stop_children",
    "stop_registered",
    "list_registered",
    "list_leftovers",
]

HOST = "127.0.0.1"
_ENV_HOME = "HADRLAB_HOME"
# Every child carries these variables, so leftovers (and their own children) can be found,
# and a watchdog finds the children of a dead parent even before they were registered.
_ENV_TAG = "HADRLAB_RUN_HOME"
_ENV_OWNER = "HADRLAB_OWNER"


def home_dir() -> Path:
    """Return the ``.hadrlab`` folder for run state: logs, registry, per-run configs.

    ``$HADRLAB_HOME`` wins; else the checkout the package was installed from (an editable
    install); else ``~/.hadrlab``.
    """
    env = os.environ.get(_ENV_HOME)
    if env:
        path = Path(env).expanduser().resolve()
    else:
        checkout = Path(__file__).resolve().parents[1]
        if (checkout / "pyproject.toml").exists() and (checkout / "hadrlab").is_dir():
            path = checkout / ".hadrlab"
        else:
            path = Path.home() / ".hadrlab"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run_dir() -> Path:
    path = home_dir() / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _log_dir() -> Path:
    path = home_dir() / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------- ports


def find_free_port(host: str = HOST) -> int:
    """Return a TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_holder(port: int) -> str:
    """Describe the process listening on ``port``, if the OS lets us see it."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                if conn.pid:
                    proc = psutil.Process(conn.pid)
                    command = " ".join(" ".join(proc.cmdline()[:3]).split())  # one line
                    return f"pid {conn.pid} ({command[:80]})"
                return "another process"
    except Exception:  # permissions differ by OS; the hint is optional
        pass
    return "another process"


def check_port_free(port: int, host: str = HOST) -> None:
    """Raise PortInUseError if ``port`` on ``host`` cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do: a port whose last owner just died (TIME_WAIT) is free to reuse;
        # one with a live listener still is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise PortInUseError(
                f"Port {port} on {host} is already in use by {port_holder(port)}. "
                f"Stop that process (`make stop` stops everything a lab left running), "
                f"or pass port=None to let hadrlab pick a free port."
            ) from None


# --------------------------------------------------------------------------- children


@dataclass(eq=False)
class Child:
    """A child process started by :func:`start_process`.

    Example:
        >>> redis = start_process("redis-a", ["redis-server", "--port", "0"])
        >>> redis.last_log_line()
        >>> redis.stop()
    """

    name: str
    cmd: list[str]
    port: int | None
    log_path: Path
    popen: subprocess.Popen = field(repr=False)
    started_at: float = field(default_factory=time.time)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str | None:
        return f"http://{HOST}:{self.port}" if self.port else None

    def alive(self) -> bool:
        """True while the process has not exited (a paused process is alive)."""
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def tail(self, lines: int = 20) -> list[str]:
        """Return the last ``lines`` lines of the child's log."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 16384))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return []
        return [ln for ln in text.splitlines() if ln.strip()][-lines:]

    def last_log_line(self) -> str:
        tail = self.tail(1)
        return tail[0] if tail else "(no output yet)"

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the child's whole process group."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): it holds its sockets but answers nothing."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze a paused process (SIGCONT)."""
        self.signal(signal.SIGCONT)

    def kill(self) -> None:
        """Kill the process at once (SIGKILL), as a crash would. It is not restarted here."""
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        _unregister(self.pid)

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """Stop gracefully: SIGTERM, wait up to ``timeout_s``, then SIGKILL. Idempotent."""
        if self.alive():
            self.signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=5)
        _kill_group_members(self.pid)  # anything the child started and left behind
        _unregister(self.pid)
        with _lock:
            _children.discard(self)
        return self.popen.poll()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _kill_group_members(pgid: int) -> None:
    """SIGKILL what is left in process group ``pgid``, if it carries our tag (pids get reused)."""
    import psutil

    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == pgid and proc.environ().get(_ENV_TAG) == str(home_dir()):
                proc.kill()


_lock = threading.Lock()
_children: set[Child] = set()
_watchdog: subprocess.Popen | None = None
_watchdog_owner: int | None = None


def _ensure_cleanup() -> None:
    """Arrange clean-up for this process: atexit, plus a watchdog for sudden death."""
    global _watchdog, _watchdog_owner
    with _lock:
        if _watchdog_owner == os.getpid() and _watchdog and _watchdog.poll() is None:
            return
        if _watchdog_owner is None:
            atexit.register(stop_children)
        # The watchdog reads its stdin, which only this process holds open. When this
        # process dies for any reason the read returns EOF and the watchdog stops our
        # children. It runs in its own session so a runner that kills our process
        # group does not kill it before it has done its job.
        with open(_log_dir() / "watchdog.log", "ab") as log:
            _watchdog = subprocess.Popen(
                [sys.executable, "-m", "hadrlab._watchdog", str(os.getpid()), str(_run_dir())],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
                env={**os.environ, _ENV_TAG: str(home_dir())},
            )
        _watchdog_owner = os.getpid()


def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _register(child: Child) -> None:
    # The pid AND its start time identify the process: a recycled pid has another start
    # time. The environment cannot: a server that rewrites its process title (Redis and
    # Sentinel do, unless told `set-proc-title no`) overwrites the memory /proc reads it from.
    entry = {
        "name": child.name,
        "pid": child.pid,
        "create_time": _create_time(child.pid),
        "owner": os.getpid(),
        "port": child.port,
        "cmd": child.cmd,
        "log": str(child.log_path),
        "started_at": child.started_at,
    }
    path = _run_dir() / f"{child.pid}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entry))
    tmp.replace(path)


def _unregister(pid: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        (_run_dir() / f"{pid}.json").unlink()


def start_process(
    name: str,
    cmd: Sequence[str],
    *,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    ready: Callable[[Child], None] | None = None,
) -> Child:
    """Start ``cmd`` as a recorded child process, and wait until ``ready`` passes.

    Args:
        name: a short name for messages and the log file, e.g. ``"model-api-1"``.
        cmd: the command line. ``{port}`` in any argument is replaced by ``port``.
        port: the port the child will listen on; it must be free. Use
            :func:`find_free_port` to choose one.
        env: extra environment variables for the child.
        cwd: working directory of the child.
        ready: a readiness check called with the child, e.g.
            ``lambda c: wait_for_http(c, "/readyz")``. It raises on timeout.

    Returns:
        The running :class:`Child`.
    """
    if port is not None:
        check_port_free(port)
    argv = [str(a).replace("{port}", str(port)) if port is not None else str(a) for a in cmd]
    _ensure_cleanup()
    log_path = _log_dir() / f"{name}-{time.strftime('%H%M%S')}-{time.time_ns() % 10**6}.log"
    child_env = {**os.environ, **(env or {}), _ENV_TAG: str(home_dir()), _ENV_OWNER: str(os.getpid())}
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    with open(log_path, "ab") as log:
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=child_env,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise ProcessExited(
                f"Could not start '{name}': the program {argv[0]!r} was not found ({exc}). "
                f"Run `make setup`, or install it and make sure it is on PATH."
            ) from None
    child = Child(name=name, cmd=argv, port=port, log_path=log_path, popen=popen)
    with _lock:
        _children.add(child)
    _register(child)
    if ready is not None:
        try:
            ready(child)
        except BaseException:
            child.stop(timeout_s=2)
            raise
    return child


def stop_children(timeout_s: float = 5.0) -> int:
    """Stop every child this Python process started. Returns how many were running."""
    with _lock:
        children = list(_children)
    running = sum(1 for c in children if c.alive())
    for child in children:
        child.stop(timeout_s=timeout_s)
    return running


# --------------------------------------------------------------------------- readiness


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout_s: float,
    interval_s: float = 0.05,
    describe: str = "condition",
    child: Child | None = None,
) -> float:
    """Poll ``predicate`` until it returns true; return the seconds it took.

    Raises ProcessExited if ``child`` exits meanwhile, ServiceNotReady on timeout.
    """
    start = time.monotonic()
    last_error = ""
    while True:
        # Whether the child had exited is read BEFORE the predicate runs: a child that wrote
        # what the predicate waits for and then exited (a probe that finished) still counts.
        exited = child is not None and not child.alive()
        try:
            if predicate():
                return time.monotonic() - start
        except Exception as exc:  # not ready yet (refused, timed out...): remember why
            last_error = f"{type(exc).__name__}: {exc}"
        if exited:
            raise ProcessExited(
                f"'{child.name}' exited with code {child.returncode} while waiting for "
                f"{describe}; last log line: {child.last_log_line()!r} "
                f"(full log: {child.log_path})."
            )
        if time.monotonic() - start > timeout_s:
            who = f"'{child.name}' " if child is not None else ""
            last = f"; last log line: {child.last_log_line()!r}" if child is not None else ""
            if last_error:
                last += f"; the last check raised {last_error}"
            raise ServiceNotReady(
                f"{who}did not satisfy {describe} within {timeout_s:g} s{last}. "
                f"Check the log{f' at {child.log_path}' if child else ''}; "
                f"if the machine is busy, pass a longer timeout_s."
            )
        time.sleep(interval_s)


def _tcp_open(port: int, host: str = HOST) -> bool:
    with socket.create_connection((host, port), timeout=0.5):
        return True


def wait_for_tcp(child: Child, timeout_s: float = 10.0) -> float:
    """Wait until ``child`` accepts TCP connections on its port."""
    port = child.port
    return wait_until(
        lambda: _tcp_open(port),
        timeout_s=timeout_s,
        describe=f"a TCP connect to {HOST}:{port}",
        child=child,
    )


def http_status(url: str, timeout_s: float = 1.0) -> int:
    """Return the HTTP status of GET ``url`` (0 if no answer)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return 0


def wait_for_http(
    child: Child, path: str = "/", timeout_s: float = 10.0, statuses: Iterable[int] = (200,)
) -> float:
    """Wait until GET ``http://127.0.0.1:PORT/path`` on ``child`` answers an OK status."""
    url = f"{child.url}{path}"
    ok = set(statuses)
    return wait_until(
        lambda: http_status(url) in ok,
        timeout_s=timeout_s,
        interval_s=0.05,
        describe=f"GET {url} answering {sorted(ok)}",
        child=child,
    )


# --------------------------------------------------------------------------- registry


def list_registered() -> list[dict]:
    """Return the registry entries of children that are still running.

    A record is dropped only when its process is gone (or its pid now belongs to another
    process), never while the process it names is alive.
    """
    entries = []
    for path in sorted(_run_dir().glob("*.json")):
        entry = _read_record(path)
        if entry is None:
            continue
        if record_alive(entry):
            entries.append(entry)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return entries


def _read_record(path: Path) -> dict | None:
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) and isinstance(entry.get("pid"), int) else None


def record_alive(entry: Mapping) -> bool:
    """True if the process a registry record names still runs (and is that process).

    Identity is the pid plus the start time recorded at registration: a pid the system
    has given to another program never matches, and a process whose environment cannot be
    read (it rewrote its process title) still does. A record without a start time falls
    back to the environment tag.
    """
    import psutil

    try:
        proc = psutil.Process(int(entry["pid"]))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        created = entry.get("create_time")
        if created is not None:
            return abs(proc.create_time() - float(created)) < 0.05
        return proc.environ().get(_ENV_TAG) == str(home_dir())
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def _record_paths(all_homes: bool) -> list[Path]:
    """This home's registry records; with ``all_homes``, those of the homes inside it too."""
    paths = list(_run_dir().glob("*.json"))
    if all_homes:
        for run in home_dir().glob("*/**/run"):
            paths.extend(run.glob("*.json"))
    return paths


def list_leftovers(all_homes: bool = False) -> list[dict]:
    """Every running process tagged with this home (registered or not), but this one.

    The tag is inherited, so a grandchild that escaped its parent is found too. With
    ``all_homes``, processes tagged with any home inside this one (test sessions keep
    their own homes below ``.hadrlab/tests/``) count too.
    """
    import psutil

    home = str(home_dir())

    def ours(tag: str | None) -> bool:
        return tag == home or (all_homes and tag is not None and tag.startswith(home + os.sep))

    me = os.getpid()
    mine = {me, *(p.pid for p in psutil.Process(me).parents())}
    if _watchdog is not None and _watchdog_owner == me:
        mine.add(_watchdog.pid)  # our own watchdog is not a leftover while we live
    found: dict[int, dict] = {}
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        if proc.pid in mine:
            continue
        with contextlib.suppress(psutil.Error):
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if ours(proc.environ().get(_ENV_TAG)):
                found[proc.pid] = {"pid": proc.pid, "cmd": " ".join(proc.info["cmdline"] or [])}
    # A registered child whose environment reads as empty (a server that retitled itself)
    # is found by its record instead.
    for path in _record_paths(all_homes):
        entry = _read_record(path)
        if entry is None or entry["pid"] in mine or entry["pid"] in found or not record_alive(entry):
            continue
        row = {"pid": entry["pid"], "cmd": " ".join(entry.get("cmd") or []), "name": entry.get("name")}
        owner = entry.get("owner")
        if isinstance(owner, int) and not psutil.pid_exists(owner):
            row["owner_gone"] = owner
        found[entry["pid"]] = row
    return list(found.values())


def _terminate_pids(pids: Iterable[int], timeout_s: float = 5.0) -> None:
    import psutil

    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            with contextlib.suppress(psutil.Error):
                proc.resume()
            proc.terminate()
            procs.append(proc)
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=2)


def stop_registered(timeout_s: float = 5.0) -> list[dict]:
    """Stop every process a lab, test or command left behind (``make stop``).

    Safe when nothing runs. Returns what was stopped.
    """
    stopped = list_registered()
    _terminate_pids([e["pid"] for e in stopped], timeout_s)
    done = {e["pid"] for e in stopped}
    leftovers = [e for e in list_leftovers() if e["pid"] not in done]
    _terminate_pids([e["pid"] for e in leftovers], timeout_s)
    list_registered()  # drops the records of what stopped, keeps any that still run
    return stopped + leftovers
