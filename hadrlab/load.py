"""Load generation: real locust, in its own process, with a per-request timeline.

Locust runs as a child process started by :func:`hadrlab.processes.start_process`, never
inside the notebook kernel: its gevent monkey-patching would hang the kernel for good. The
locustfile (``hadrlab/locustfiles/http_api.py``) writes one CSV row per request, which
this module reads back into a pandas DataFrame: the *timeline* that
:mod:`hadrlab.metrics` and :mod:`hadrlab.plots` analyse.

Two ways to run load:

    result = run_load(url, users=10, duration_s=10)       # blocks, shows progress

    run = start_load(url, users=10, duration_s=10)        # returns once load is flowing
    time.sleep(3)
    platform.kill_replica("model-api", 0)                 # inject a fault meanwhile
    result = run.wait()                                   # blocks, shows progress
"""

from __future__ import annotations

import csv
import json
import math
import numbers
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hadrlab.errors import ProcessExited, ServiceNotReady
from hadrlab.locustfiles import locustfile_path
from hadrlab.processes import Child, home_dir, start_process

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LoadResult", "LoadRun", "run_load", "start_load", "read_timeline", "TIMELINE_COLUMNS"]

TIMELINE_COLUMNS = ["t_start", "t_end", "latency_ms", "ok", "status", "error", "replica"]

# Locust needs a moment to import and spawn users; a busy 2-core machine can take seconds.
_START_TIMEOUT_S = 60.0
# Beyond run time and stop timeout, how long locust may take to write its report and exit.
_EXIT_GRACE_S = 30.0
_PROGRESS_INTERVAL_S = 0.25


# --------------------------------------------------------------------------- results


@dataclass
class LoadResult:
    """What one locust run measured: a per-request timeline and locust's own totals.

    ``requests`` and ``failures`` are locust's totals (from its ``--json-file`` report);
    the timeline has one row per request and should count the same. If it does not,
    ``mismatch`` says by how much (the run is still usable; the metrics use the timeline).

    Example:
        >>> result = run_load("http://127.0.0.1:8000", users=5, duration_s=5)
        >>> result.availability, result.rps
        >>> result.timeline.head()
    """

    timeline: pd.DataFrame = field(repr=False)
    url: str
    users: int
    started_at: float
    ended_at: float
    total_requests: int | None = None
    total_failures: int | None = None
    path: str = "/predict"
    method: str = "POST"
    duration_s: float = 0.0
    mismatch: str | None = None
    log_path: Path | None = field(default=None, repr=False)

    @property
    def requests(self) -> int:
        """Requests sent, as locust counted them (the timeline's rows if locust had no report)."""
        return self.total_requests if self.total_requests is not None else len(self.timeline)

    @property
    def failures(self) -> int:
        """Failed requests: connection errors, timeouts, and HTTP error statuses."""
        if self.total_failures is not None:
            return self.total_failures
        return int((~self.timeline["ok"]).sum()) if len(self.timeline) else 0

    @property
    def availability(self) -> float:
        """Fraction of requests that succeeded (NaN when no request was sent)."""
        return 1.0 - self.failures / self.requests if self.requests else float("nan")

    @property
    def rps(self) -> float:
        """Requests per second over the run."""
        elapsed = self.ended_at - self.started_at
        return self.requests / elapsed if elapsed > 0 else 0.0

    def _rows(self) -> list[tuple[str, str]]:
        rows = [
            ("url", f"{self.method} {self.url}{self.path}"),
            ("users", str(self.users)),
            ("duration", f"{self.ended_at - self.started_at:.1f} s"),
            ("requests", f"{self.requests:,}"),
            ("failures", f"{self.failures:,}"),
            ("availability", f"{100 * self.availability:.3f} %"),
            ("throughput", f"{self.rps:.1f} req/s"),
        ]
        if self.mismatch:
            rows.append(("warning", self.mismatch))
        return rows

    def __repr__(self) -> str:
        text = ", ".join(f"{k}={v}" for k, v in self._rows())
        return f"LoadResult({text})"

    def _repr_html_(self) -> str:
        import html

        cells = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
            f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
            for k, v in self._rows()
        )
        return f"<table><caption>Load result</caption>{cells}</table>"


def _empty_timeline() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        {
            "t_start": pd.Series(dtype="float64"),
            "t_end": pd.Series(dtype="float64"),
            "latency_ms": pd.Series(dtype="float64"),
            "ok": pd.Series(dtype="bool"),
            "status": pd.Series(dtype="int64"),
            "error": pd.Series(dtype="object"),
            "replica": pd.Series(dtype="object"),
        }
    )


def read_timeline(path: str | os.PathLike) -> pd.DataFrame:
    """Read a timeline CSV written by the locustfile into a DataFrame, sorted by t_start.

    A last line cut short (locust killed mid-write) is dropped.
    """
    import pandas as pd

    try:
        frame = pd.read_csv(
            path,
            dtype={"error": str, "replica": str},
            keep_default_na=False,
            na_values={"t_start": [""], "t_end": [""], "latency_ms": [""], "ok": [""], "status": [""]},
            on_bad_lines="skip",
        )
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return _empty_timeline()
    if list(frame.columns) != TIMELINE_COLUMNS:
        raise ValueError(
            f"The timeline file {path} has columns {list(frame.columns)}, expected "
            f"{TIMELINE_COLUMNS}. Was it written by hadrlab's locustfile?"
        )
    frame = frame.dropna(subset=["t_start", "t_end", "latency_ms", "ok", "status"])
    if frame.empty:
        return _empty_timeline()
    frame = frame.astype({"t_start": float, "t_end": float, "latency_ms": float, "status": int})
    frame["ok"] = frame["ok"].astype(int).astype(bool)
    return frame.sort_values("t_start", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- progress


class _RowCounter:
    """Counts timeline rows and failures as locust appends them, reading only new bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.rows = 0
        self.failures = 0
        self.header_seen = False

    def update(self) -> tuple[int, int]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return self.rows, self.failures
        self.offset += len(chunk)
        data = self.partial + chunk
        lines = data.split(b"\n")
        self.partial = lines.pop()  # incomplete until its newline arrives
        if not self.header_seen and lines:
            lines.pop(0)
            self.header_seen = True
        text = [ln.decode("utf-8", "replace") for ln in lines if ln.strip()]
        for row in csv.reader(text):
            self.rows += 1
            if len(row) > 3 and row[3] == "0":
                self.failures += 1
        return self.rows, self.failures


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")
    if ipython is None:  # never import IPython just to ask
        return False
    shell = ipython.get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class _Progress:
    """A progress bar in a notebook, one updating line in a terminal, or nothing."""

    def __init__(self, name: str, duration_s: float, enabled: bool) -> None:
        self.name = name
        self.duration_s = duration_s
        self.mode = "off"
        if not enabled:
            return
        if _in_notebook():
            try:
                import ipywidgets as widgets
                from IPython.display import display

                # The first state shown is deterministic, so a tested notebook's output is.
                self.bar = widgets.FloatProgress(value=0.0, min=0.0, max=float(duration_s))
                self.label = widgets.HTML(value=f"{name}: starting")
                display(widgets.HBox([self.bar, self.label]))
                self.mode = "widget"
                return
            except Exception:  # no widgets: fall back to a text line, which Jupyter also updates
                self.stream = sys.stdout
                self.mode = "line"
                return
        self.stream = sys.stderr
        self.mode = "line" if sys.stderr.isatty() else "final"

    def _text(self, elapsed_s: float, rows: int, failures: int) -> str:
        return (
            f"{self.name}: {min(elapsed_s, self.duration_s):4.1f}/{self.duration_s:g} s, "
            f"{rows:,} requests, {failures:,} failures"
        )

    def update(self, elapsed_s: float, rows: int, failures: int) -> None:
        if self.mode == "widget":
            self.bar.value = min(float(elapsed_s), self.duration_s)
            self.label.value = self._text(elapsed_s, rows, failures)
        elif self.mode == "line":
            self.stream.write("\r" + self._text(elapsed_s, rows, failures) + "   ")
            self.stream.flush()

    def finish(self, elapsed_s: float, rows: int, failures: int) -> None:
        if self.mode == "widget":
            self.bar.value = self.duration_s
            self.bar.bar_style = "warning" if failures else "success"
            self.label.value = self._text(elapsed_s, rows, failures) + " (done)"
        elif self.mode in ("line", "final"):
            prefix = "\r" if self.mode == "line" else ""
            self.stream.write(prefix + self._text(elapsed_s, rows, failures) + " (done)\n")
            self.stream.flush()


# --------------------------------------------------------------------------- running


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class LoadRun:
    """A locust run in progress. Call :meth:`wait` for its :class:`LoadResult`.

    Example:
        >>> run = start_load(url, users=10, duration_s=10)
        >>> time.sleep(3); replica.kill()
        >>> result = run.wait()
    """

    def __init__(
        self,
        child: Child,
        *,
        run_dir: Path,
        url: str,
        users: int,
        duration_s: int,
        stop_timeout_s: int,
        path: str,
        method: str,
        name: str,
    ) -> None:
        self.child = child
        self.run_dir = run_dir
        self.url = url
        self.users = users
        self.duration_s = duration_s
        self.stop_timeout_s = stop_timeout_s
        self.path = path
        self.method = method
        self.name = name
        self.timeline_path = run_dir / "timeline.csv"
        self.meta_path = run_dir / "meta.json"
        self.stats_path = run_dir / "stats.json"  # locust appends ".json" to --json-file
        self.launched_at = time.time()
        self._counter = _RowCounter(self.timeline_path)
        self._result: LoadResult | None = None

    def __repr__(self) -> str:
        state = "done" if self._result is not None else ("running" if self.child.alive() else "exited")
        return f"LoadRun({self.name!r}, {self.method} {self.url}{self.path}, {self.users} users, {state})"

    @property
    def started_at(self) -> float | None:
        """Epoch seconds at which locust started the test (None before it has)."""
        meta = _read_json(self.meta_path) or {}
        return meta.get("test_start")

    def done(self) -> bool:
        """True once locust has exited."""
        return not self.child.alive()

    def counts(self) -> tuple[int, int]:
        """Requests and failures recorded so far (the timeline is flushed every ~0.25 s)."""
        return self._counter.update()

    def wait_started(self, timeout_s: float = _START_TIMEOUT_S) -> float:
        """Block until locust has started sending load; return its start time (epoch s)."""
        deadline = time.monotonic() + timeout_s
        while True:
            started = self.started_at
            if started is not None:
                return started
            if not self.child.alive():
                raise ProcessExited(
                    f"locust ('{self.child.name}') exited with code {self.child.returncode} "
                    f"before sending any load to {self.url}; last log line: "
                    f"{self.child.last_log_line()!r} (full log: {self.child.log_path})."
                )
            if time.monotonic() > deadline:
                self.child.stop(timeout_s=2)
                raise ServiceNotReady(
                    f"locust ('{self.child.name}') did not start its test within {timeout_s:g} s; "
                    f"last log line: {self.child.last_log_line()!r}. The machine may be "
                    f"overloaded: stop other labs (`make stop`) and try again."
                )
            time.sleep(0.05)

    def wait(self, *, progress: bool = True, timeout_s: float | None = None) -> LoadResult:
        """Block until the run ends; show progress; return the :class:`LoadResult`.

        Args:
            progress: show a progress bar (notebook) or an updating line (terminal).
            timeout_s: give up after this many seconds and stop locust; by default the
                run time plus the stop timeout plus 30 s.

        Returns:
            The result; calling wait() again returns the same object.
        """
        if self._result is not None:
            return self._result
        start = self.started_at or self.launched_at
        if timeout_s is None:
            timeout_s = self.duration_s + self.stop_timeout_s + _EXIT_GRACE_S
        deadline = time.monotonic() + max(0.0, timeout_s - (time.time() - start))
        bar = _Progress(self.name, float(self.duration_s), progress)
        forced = False
        try:
            while self.child.alive():
                if time.monotonic() > deadline:
                    forced = True
                    break
                rows, failures = self.counts()
                bar.update(time.time() - (self.started_at or start), rows, failures)
                time.sleep(_PROGRESS_INTERVAL_S)
        except KeyboardInterrupt:
            self.child.stop(timeout_s=5)
            raise
        if forced:
            self.child.stop(timeout_s=5)
        else:
            self.child.stop(timeout_s=1)  # already gone: this just tidies the registry
        rows, failures = self.counts()
        result = self._collect(forced=forced)
        bar.finish(result.ended_at - result.started_at, rows, failures)
        self._result = result
        return result

    def stop(self) -> LoadResult:
        """End the run now (locust writes its report as it stops) and return the result."""
        if self._result is None and self.child.alive():
            self.child.stop(timeout_s=self.stop_timeout_s + 5)
        return self.wait(progress=False)

    def _collect(self, *, forced: bool) -> LoadResult:
        timeline = read_timeline(self.timeline_path)
        stats = _read_json(self.stats_path)
        meta = _read_json(self.meta_path) or {}
        code = self.child.returncode
        if stats is None and not forced and code not in (0, None):
            raise ProcessExited(
                f"locust ('{self.child.name}') exited with code {code} and wrote no report; "
                f"last log line: {self.child.last_log_line()!r} (full log: {self.child.log_path})."
            )
        total_requests = total_failures = None
        if isinstance(stats, list):
            total_requests = sum(int(e.get("num_requests", 0)) for e in stats)
            total_failures = sum(int(e.get("num_failures", 0)) for e in stats)
        notes = []
        if forced:
            notes.append(f"locust did not finish in time and was stopped (log: {self.child.log_path})")
        if total_requests is None:
            notes.append("locust wrote no report; totals come from the timeline")
        elif total_requests != len(timeline):
            notes.append(
                f"the timeline has {len(timeline):,} rows but locust counted "
                f"{total_requests:,} requests"
            )
        started = meta.get("test_start")
        if started is None:
            started = float(timeline["t_start"].min()) if len(timeline) else self.launched_at
        ended = meta.get("test_stop")
        if ended is None:
            ended = float(timeline["t_end"].max()) if len(timeline) else time.time()
        return LoadResult(
            timeline=timeline,
            url=self.url,
            users=self.users,
            started_at=float(started),
            ended_at=float(ended),
            total_requests=total_requests,
            total_failures=total_failures,
            path=self.path,
            method=self.method,
            duration_s=float(self.duration_s),
            mismatch="; ".join(notes) or None,
            log_path=self.child.log_path,
        )


def _body_bytes(body: Any) -> bytes | None:
    if body is None:
        return None
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("utf-8")


def _require_number(name: str, value: Any, *, minimum: float, integer: bool = False) -> None:
    """Refuse a load setting that is not a number of the right size, saying what to pass."""
    kind = "a whole number" if integer else "a number"
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value
    if ok and integer:
        ok = float(value).is_integer()
    if not ok or value < minimum:
        raise ValueError(f"{name} must be {kind} >= {minimum:g}; got {value!r}.")


def start_load(
    url: str,
    *,
    users: int = 10,
    spawn_rate: float | None = None,
    duration_s: float = 10,
    path: str = "/predict",
    method: str = "POST",
    body: Any = None,
    wait_ms: float = 0,
    timeout_s: float = 2.0,
    name: str = "load",
) -> LoadRun:
    """Start locust against ``url`` and return as soon as load is flowing.

    Use it to inject a fault while load runs; :meth:`LoadRun.wait` gives the result.

    Args:
        url: base URL of the service, e.g. ``"http://127.0.0.1:8000"``.
        users: concurrent simulated users; each sends one request at a time.
        spawn_rate: users started per second; by default all start within ~0.1 s.
        duration_s: run time in whole seconds (locust's resolution); rounded, at least 1.
        path: request path, e.g. ``"/predict"``.
        method: HTTP method.
        body: request body: a dict or list (sent as JSON), a str or bytes, or None.
        wait_ms: pause of each user between two requests.
        timeout_s: connect and read timeout of one request; a request that takes longer
            fails with a timeout error.
        name: a short name for the locust process, its log and its files.

    Returns:
        A :class:`LoadRun`; its ``started_at`` is when locust started the test.
    """
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"url must start with http:// or https://, got {url!r}.")
    _require_number("users", users, minimum=1, integer=True)
    _require_number("duration_s", duration_s, minimum=0.5)
    _require_number("timeout_s", timeout_s, minimum=0.001)
    _require_number("wait_ms", wait_ms, minimum=0)
    if spawn_rate is not None:
        _require_number("spawn_rate", spawn_rate, minimum=0.001)
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/', got {path!r}.")
    users = int(users)
    duration = max(1, int(round(duration_s)))
    rate = spawn_rate if spawn_rate is not None else min(users * 10, 100)
    stop_timeout = int(math.ceil(timeout_s)) + 1  # let in-flight requests finish and be counted

    run_dir = home_dir() / "load" / f"{name}-{time.strftime('%H%M%S')}-{time.time_ns() % 10**6}"
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "LOAD_PATH": path,
        "LOAD_METHOD": method.upper(),
        "LOAD_WAIT_MS": str(float(wait_ms)),
        "LOAD_TIMEOUT_S": str(float(timeout_s)),
        "LOAD_TIMELINE": str(run_dir / "timeline.csv"),
        "LOAD_META": str(run_dir / "meta.json"),
        "LOAD_BODY_FILE": "",
    }
    data = _body_bytes(body)
    if data is not None:
        (run_dir / "body.bin").write_bytes(data)
        env["LOAD_BODY_FILE"] = str(run_dir / "body.bin")
    cmd = [
        sys.executable, "-m", "locust",
        "-f", str(locustfile_path("http_api")),
        "--headless",
        "-u", str(users),
        "-r", f"{rate:g}",
        "-t", f"{duration}s",
        "--host", url.rstrip("/"),
        "--json-file", str(run_dir / "stats"),
        "--only-summary",
        "--stop-timeout", str(stop_timeout),
        # Failed requests are the point of these labs, not an error of the run.
        "--exit-code-on-error", "0",
    ]
    child = start_process(name, cmd, env=env, cwd=run_dir)
    try:
        run = LoadRun(
            child,
            run_dir=run_dir,
            url=url.rstrip("/"),
            users=users,
            duration_s=duration,
            stop_timeout_s=stop_timeout,
            path=path,
            method=method.upper(),
            name=name,
        )
        run.wait_started()
    except BaseException:  # interrupted, or locust never started: leave nothing running
        child.stop(timeout_s=2)
        raise
    return run


def run_load(
    url: str,
    *,
    users: int = 10,
    spawn_rate: float | None = None,
    duration_s: float = 10,
    path: str = "/predict",
    method: str = "POST",
    body: Any = None,
    wait_ms: float = 0,
    timeout_s: float = 2.0,
    progress: bool = True,
    name: str = "load",
) -> LoadResult:
    """Send load to ``url`` with locust for ``duration_s`` seconds; return the timeline.

    Blocks while the load runs and shows progress (a bar in a notebook, one updating line
    in a terminal; ``progress=False`` for none). The arguments are those of
    :func:`start_load`.

    Returns:
        A :class:`LoadResult` with one timeline row per request.
    """
    run = start_load(
        url,
        users=users,
        spawn_rate=spawn_rate,
        duration_s=duration_s,
        path=path,
        method=method,
        body=body,
        wait_ms=wait_ms,
        timeout_s=timeout_s,
        name=name,
    )
    return run.wait(progress=progress)
