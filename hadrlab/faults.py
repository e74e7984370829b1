"""Faults injected on purpose: a fault-injecting TCP proxy, and process faults.

The proxy sits between a client and one upstream server, both on 127.0.0.1, and runs as its
own process (``python -m hadrlab.faults proxy ...``), as a router or a cross-region link
runs apart from the services that use it. Its faults change while traffic flows, through a
small JSON admin API that :class:`FaultProxy` drives:

    latency and jitter   each chunk waits ``latency_ms +/- jitter_ms`` before it is sent on,
                         per direction ("up": client to upstream, "down": back). A chunk
                         never overtakes the one before it: TCP delivers bytes in order.
                         Data keeps streaming: a pipelined transfer is delayed, not slowed.
    bandwidth            a token bucket limits each direction to so many bytes per second,
                         shared by all the connections of the proxy (one link).
    blackhole            a network partition: connections are accepted and read, but nothing
                         is delivered either way, so clients see timeouts, not refusals.
                         What was sent meanwhile is held and delivered, in order, when the
                         partition heals, as TCP retransmission would.
    refuse               every new connection is reset at once (the service looks dead).
    reset                every open connection gets a TCP RST; bytes still in flight are
                         lost. Together with a kill, that is how a whole region dies.

Admin API (JSON, on its own port): ``GET /health``, ``GET /stats``, ``GET /faults``,
``POST /faults`` (a partial update such as ``{"latency_up_ms": 50, "blackhole": true}``),
``POST /clear``, ``POST /reset``. Up to 8 MB per direction of a connection may wait in the
proxy: at 100 ms of latency that still lets ~80 MB/s through.

Example::

    redis = start_redis("region-a")
    with start_proxy("a-to-b", redis.port) as link:      # clients use link.port
        link.set_latency(50)                              # 50 ms each way: +100 ms a round trip
        link.blackhole()                                  # partition
        link.clear()                                      # heal
        link.stats()["bytes_down"]

:class:`Injector` records every fault it injects (processes or proxies) with wall-clock
times, so a lab can mark them on its plots::

    chaos = Injector()
    with chaos.paused(redis.child, seconds=3):           # SIGSTOP for 3 s, then SIGCONT
        ...
    chaos.latency(link, 100)                              # lasts until ended or rolled back
    chaos.timeline()                                      # DataFrame: t, t_end, kind, target, detail
    chaos.rollback()                                      # end every fault still active
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import signal
import socket
import struct
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from hadrlab.errors import HadrError, ProcessExited, ServiceNotReady
from hadrlab.processes import (
    HOST,
    Child,
    check_port_free,
    find_free_port,
    start_process,
    wait_for_http,
)

__all__ = [
    "FaultSettings",
    "DelayScheduler",
    "TokenBucket",
    "ProxyServer",
    "FaultProxy",
    "start_proxy",
    "FaultRecord",
    "ActiveFault",
    "Injector",
    "main",
]

DIRECTIONS = ("up", "down")
_CHUNK_BYTES = 64 * 1024
# Bytes read but not yet delivered, per direction of a connection, before the proxy stops
# reading (back-pressure, as a full TCP window). 8 MB keeps 80 MB/s flowing at 100 ms.
_MAX_PENDING_BYTES = 8 * 1024 * 1024


# --------------------------------------------------------------------------- fault settings


@dataclass
class FaultSettings:
    """The faults a proxy applies right now. All zero/off means a transparent proxy."""

    latency_up_ms: float = 0.0
    latency_down_ms: float = 0.0
    jitter_up_ms: float = 0.0
    jitter_down_ms: float = 0.0
    bandwidth_bytes_per_s: float | None = None
    blackhole: bool = False
    refuse: bool = False

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply a partial update; raise ValueError (nothing changed) on a bad key or value."""
        known = {f.name for f in fields(self)}
        new = asdict(self)
        for key, value in changes.items():
            if key not in known:
                raise ValueError(
                    f"Unknown fault setting {key!r}. Known settings: {', '.join(sorted(known))}."
                )
            if key in ("blackhole", "refuse"):
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false; got {value!r}.")
            elif key == "bandwidth_bytes_per_s" and value is None:
                pass
            else:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                    raise ValueError(
                        f"{key} must be a number >= 0; got {value!r}."
                        + (" Use null (None) for no bandwidth limit." if key.startswith("band") else "")
                    )
                if key == "bandwidth_bytes_per_s" and value == 0:
                    raise ValueError(
                        "bandwidth_bytes_per_s must be > 0; use null (None) for no limit, "
                        "or blackhole for no traffic at all."
                    )
                value = float(value)
            new[key] = value
        for key, value in new.items():
            setattr(self, key, value)

    def latency_ms(self, direction: str) -> tuple[float, float]:
        """Return ``(latency_ms, jitter_ms)`` for ``"up"`` or ``"down"``."""
        if direction == "up":
            return self.latency_up_ms, self.jitter_up_ms
        return self.latency_down_ms, self.jitter_down_ms

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return describe_faults(self.as_dict())


def describe_faults(faults: Mapping[str, Any]) -> str:
    """One line for people: ``"latency 50 ms +/- 5 ms both ways; blackhole"`` or ``"none"``."""
    parts = []

    def lat(direction: str) -> str:
        ms = faults.get(f"latency_{direction}_ms", 0) or 0
        jitter = faults.get(f"jitter_{direction}_ms", 0) or 0
        return f"{ms:g} ms" + (f" +/- {jitter:g} ms" if jitter else "")

    up, down = lat("up"), lat("down")
    if up == down and up != "0 ms":
        parts.append(f"latency {up} both ways")
    else:
        if up != "0 ms":
            parts.append(f"latency up {up}")
        if down != "0 ms":
            parts.append(f"latency down {down}")
    if faults.get("bandwidth_bytes_per_s"):
        parts.append(f"bandwidth {faults['bandwidth_bytes_per_s']:,.0f} B/s")
    if faults.get("blackhole"):
        parts.append("blackhole")
    if faults.get("refuse"):
        parts.append("refusing connections")
    return "; ".join(parts) or "none"


# --------------------------------------------------------------------------- delay and rate


class DelayScheduler:
    """Release times for the chunks of one byte stream: each delayed, none overtaking.

    Each chunk draws its own delay, ``latency_ms`` plus a uniform jitter in
    ``[-jitter_ms, +jitter_ms]`` (never below zero). A chunk that would be released before
    the previous one waits for it instead, so release times never decrease and the bytes
    keep their order, as on a TCP connection.

    Example:
        >>> s = DelayScheduler(random.Random(1))
        >>> s.release_at(now_s=0.0, latency_ms=100)
        0.1
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._last_s = -math.inf

    def delay_s(self, latency_ms: float, jitter_ms: float = 0.0) -> float:
        """Draw one chunk's own delay, in seconds."""
        jitter = self._rng.uniform(-jitter_ms, jitter_ms) if jitter_ms > 0 else 0.0
        return max(0.0, latency_ms + jitter) / 1000.0

    def release_at(self, now_s: float, latency_ms: float, jitter_ms: float = 0.0) -> float:
        """Return when a chunk read at ``now_s`` may be sent on (same clock as ``now_s``)."""
        release = now_s + self.delay_s(latency_ms, jitter_ms)
        self._last_s = max(self._last_s, release)
        return self._last_s


class TokenBucket:
    """A rate limit: ``rate_bytes_per_s`` on average, with bursts up to ``burst_bytes``.

    Tokens (bytes) refill at the rate, up to the burst size. Sending takes tokens; when
    there are not enough, the sender waits for them. The bucket may go into debt, so that
    several senders sharing it (all connections of one link) are limited together.

    Example:
        >>> b = TokenBucket(1000, burst_bytes=100, now_s=0.0)
        >>> b.reserve(600, now_s=0.0)       # seconds to wait before sending 600 bytes
        0.5
    """

    def __init__(
        self, rate_bytes_per_s: float, burst_bytes: float | None = None, now_s: float = 0.0
    ) -> None:
        if not rate_bytes_per_s > 0:
            raise ValueError(f"rate_bytes_per_s must be > 0; got {rate_bytes_per_s!r}.")
        self.rate_bytes_per_s = float(rate_bytes_per_s)
        # 50 ms worth of bytes by default: smooth, yet not one wake-up per tiny slice.
        self.burst_bytes = float(burst_bytes if burst_bytes is not None else max(1024.0, rate_bytes_per_s / 20))
        self._tokens = self.burst_bytes
        self._at_s = now_s

    @property
    def slice_bytes(self) -> int:
        """The largest piece worth sending at once: one burst."""
        return max(1, int(self.burst_bytes))

    def reserve(self, nbytes: int, now_s: float) -> float:
        """Take ``nbytes`` tokens; return the seconds to wait before sending them (>= 0)."""
        if now_s > self._at_s:
            self._tokens = min(self.burst_bytes, self._tokens + (now_s - self._at_s) * self.rate_bytes_per_s)
            self._at_s = now_s
        self._tokens -= nbytes
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate_bytes_per_s


# --------------------------------------------------------------------------- the proxy process

_EOF = object()  # the source closed its side: half-close the destination
_RESET = object()  # the source failed: reset the whole connection


def _reset_transport(writer: asyncio.StreamWriter) -> None:
    """Close a connection with a TCP RST (SO_LINGER 0), not a polite FIN."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _Pipe:
    """One direction of one connection: read chunks, hold each until its release time,
    respect the blackhole and the bandwidth, write them in order.

    Reading and writing are two tasks joined by a queue, so a slow release never stops
    reading: pipelined data stays pipelined under latency.
    """

    def __init__(self, conn: _Connection, direction: str, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        self.conn = conn
        self.server = conn.server
        self.direction = direction
        self.src = src
        self.dst = dst
        self.scheduler = DelayScheduler(self.server.rng)
        self.items: deque[tuple[float, Any]] = deque()
        self.pending_bytes = 0
        self.has_items = asyncio.Event()
        self.has_room = asyncio.Event()
        self.has_room.set()

    async def run(self) -> None:
        reader = asyncio.create_task(self._read())
        try:
            await self._write()
        finally:
            reader.cancel()

    def _put(self, item: Any) -> None:
        latency_ms, jitter_ms = self.server.settings.latency_ms(self.direction)
        release = self.scheduler.release_at(asyncio.get_running_loop().time(), latency_ms, jitter_ms)
        self.items.append((release, item))
        if isinstance(item, bytes):
            self.pending_bytes += len(item)
        self.has_items.set()

    async def _read(self) -> None:
        while True:
            while self.pending_bytes >= _MAX_PENDING_BYTES:
                self.has_room.clear()
                await self.has_room.wait()
            try:
                data = await self.src.read(_CHUNK_BYTES)
            except (ConnectionError, OSError):
                self._put(_RESET)
                return
            if not data:
                self._put(_EOF)
                return
            self._put(data)

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.items:
                self.has_items.clear()
                await self.has_items.wait()
            release, item = self.items[0]
            wait_s = release - loop.time()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            await self.server.flowing.wait()  # a blackhole holds everything, in order
            self.items.popleft()
            if item is _EOF:
                with contextlib.suppress(OSError, RuntimeError):
                    if self.dst.can_write_eof():
                        self.dst.write_eof()
                return
            if item is _RESET:
                self.conn.reset()
                return
            self.pending_bytes -= len(item)
            if self.pending_bytes < _MAX_PENDING_BYTES:
                self.has_room.set()
            try:
                await self._send(item)
            except (ConnectionError, OSError, RuntimeError):
                self.conn.reset()  # the far side died: the near side learns by a reset too
                return

    async def _send(self, data: bytes) -> None:
        bucket = self.server.buckets.get(self.direction)
        if bucket is None:
            self.dst.write(data)
            self.server.count(self.direction, len(data))
            await self.dst.drain()
            return
        loop = asyncio.get_running_loop()
        step = bucket.slice_bytes
        for i in range(0, len(data), step):
            part = data[i : i + step]
            wait_s = bucket.reserve(len(part), loop.time())
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            self.dst.write(part)
            self.server.count(self.direction, len(part))
            await self.dst.drain()


class _Connection:
    """A client connection and its upstream connection, joined by two pipes."""

    def __init__(self, server: ProxyServer, client: tuple, upstream: tuple) -> None:
        self.server = server
        self.client_reader, self.client_writer = client
        self.upstream_reader, self.upstream_writer = upstream
        self.task: asyncio.Task | None = None
        self.was_reset = False

    async def run(self) -> None:
        self.task = asyncio.current_task()
        up = _Pipe(self, "up", self.client_reader, self.upstream_writer)
        down = _Pipe(self, "down", self.upstream_reader, self.client_writer)
        pipes = [asyncio.create_task(up.run()), asyncio.create_task(down.run())]
        try:
            await asyncio.gather(*pipes)
        except asyncio.CancelledError:
            pass
        finally:
            for task in pipes:
                task.cancel()
            if not self.was_reset:
                for writer in (self.client_writer, self.upstream_writer):
                    with contextlib.suppress(Exception):
                        writer.close()
            self.server.connections.discard(self)

    def reset(self) -> None:
        """RST both sides at once; whatever was still queued is lost."""
        if self.was_reset:
            return
        self.was_reset = True
        for writer in (self.client_writer, self.upstream_writer):
            with contextlib.suppress(Exception):
                _reset_transport(writer)
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
        elif self.task is not None:
            # Called from inside one of the pipes: cancel the pipes through the runner.
            asyncio.get_running_loop().call_soon(self.task.cancel)


class ProxyServer:
    """The proxy itself, as it runs inside its own process (see :func:`main`).

    Args:
        name: shown in logs.
        listen_port: where clients connect, on 127.0.0.1.
        upstream_port: the server the proxy forwards to, on 127.0.0.1.
        admin_port: the JSON admin API, on 127.0.0.1.
        seed: seeds the jitter, for repeatable runs.
    """

    def __init__(self, name: str, listen_port: int, upstream_port: int, admin_port: int, seed: int | None = None) -> None:
        self.name = name
        self.listen_port = listen_port
        self.upstream_port = upstream_port
        self.admin_port = admin_port
        self.rng = random.Random(seed)
        self.settings = FaultSettings()
        self.buckets: dict[str, TokenBucket | None] = {"up": None, "down": None}
        self.connections: set[_Connection] = set()
        self.counters = {
            "connections_total": 0,
            "connections_refused": 0,
            "connections_reset": 0,
            "upstream_errors": 0,
            "bytes_up": 0,
            "bytes_down": 0,
        }
        self.started_at = time.time()
        self.flowing: asyncio.Event  # made in run(), inside the loop
        self._stop: asyncio.Event

    def count(self, direction: str, nbytes: int) -> None:
        self.counters[f"bytes_{direction}"] += nbytes

    # ------------------------------------------------------------------ faults

    def apply(self, changes: Mapping[str, Any]) -> None:
        old = self.settings.as_dict()
        self.settings.update(changes)
        new = self.settings.as_dict()
        if new["bandwidth_bytes_per_s"] != old["bandwidth_bytes_per_s"]:
            rate = new["bandwidth_bytes_per_s"]
            now = asyncio.get_running_loop().time()
            self.buckets = {d: (TokenBucket(rate, now_s=now) if rate else None) for d in DIRECTIONS}
        if new["blackhole"]:
            self.flowing.clear()
        else:
            self.flowing.set()
        if new != old:
            print(f"{_stamp()} faults: {self.settings.describe()}", flush=True)

    def reset_all(self) -> int:
        conns = list(self.connections)
        for conn in conns:
            conn.reset()
        self.counters["connections_reset"] += len(conns)
        print(f"{_stamp()} reset {len(conns)} connection(s)", flush=True)
        return len(conns)

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen_port": self.listen_port,
            "upstream_port": self.upstream_port,
            "connections_open": len(self.connections),
            **self.counters,
            "uptime_s": round(time.time() - self.started_at, 3),
            "faults": self.settings.as_dict(),
        }

    # ------------------------------------------------------------------ traffic

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters["connections_total"] += 1
        if self.settings.refuse:
            self.counters["connections_refused"] += 1
            _reset_transport(writer)
            return
        try:
            upstream = await asyncio.wait_for(asyncio.open_connection(HOST, self.upstream_port), timeout=5)
        except (OSError, asyncio.TimeoutError) as exc:
            self.counters["upstream_errors"] += 1
            print(f"{_stamp()} upstream {HOST}:{self.upstream_port} unreachable ({exc!r}); client reset", flush=True)
            _reset_transport(writer)
            return
        conn = _Connection(self, (reader, writer), upstream)
        self.connections.add(conn)
        await conn.run()

    # ------------------------------------------------------------------ admin API

    def _route(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if method == "GET" and path == "/health":
            return 200, {"ok": True, "name": self.name}
        if method == "GET" and path == "/stats":
            return 200, self.stats()
        if method == "GET" and path == "/faults":
            return 200, self.settings.as_dict()
        if method in ("POST", "PUT") and path == "/faults":
            try:
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("the body must be a JSON object of settings.")
                self.apply(changes)
            except ValueError as exc:
                return 400, {"error": str(exc)}
            return 200, self.settings.as_dict()
        if method == "POST" and path == "/clear":
            self.apply(FaultSettings().as_dict())
            return 200, self.settings.as_dict()
        if method == "POST" and path == "/reset":
            return 200, {"reset": self.reset_all()}
        return 404, {
            "error": f"No route {method} {path}. Routes: GET /health, GET /stats, GET /faults, "
            f"POST /faults, POST /clear, POST /reset."
        }

    async def _on_admin(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            lines = head.decode("latin-1").split("\r\n")
            method, target = lines[0].split(" ")[:2]
            length = 0
            for line in lines[1:]:
                key, _, value = line.partition(":")
                if key.strip().lower() == "content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
            status, payload = self._route(method.upper(), target.split("?")[0], body)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ValueError) as exc:
            status, payload = 400, {"error": f"Bad request: {exc}"}
        data = json.dumps(payload).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\nconnection: close\r\n\r\n".encode() + data
        )
        with contextlib.suppress(Exception):
            await writer.drain()
            writer.close()

    # ------------------------------------------------------------------ lifetime

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT."""
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        proxy = await asyncio.start_server(self._on_client, HOST, self.listen_port)
        admin = await asyncio.start_server(self._on_admin, HOST, self.admin_port)
        print(
            f"{_stamp()} fault proxy {self.name!r}: {HOST}:{self.listen_port} -> "
            f"{HOST}:{self.upstream_port}, admin API on {HOST}:{self.admin_port}",
            flush=True,
        )
        async with proxy, admin:
            await self._stop.wait()
            proxy.close()
            admin.close()
            for conn in list(self.connections):
                conn.reset()
        print(f"{_stamp()} stopped", flush=True)


def _stamp() -> str:
    return time.strftime("%H:%M:%S")


# --------------------------------------------------------------------------- the Python side


@dataclass(eq=False)
class FaultProxy:
    """A running fault-injecting proxy, controlled from Python. Made by :func:`start_proxy`.

    Point clients at ``proxy.port`` instead of the upstream's port. Every method changes
    the faults at once, for open connections too.

    Example::

        with start_proxy("region-link", redis.port) as link:
            link.set_latency(50, jitter_ms=10)      # each way
            link.set_bandwidth(100_000)             # bytes per second, each way
            link.blackhole()                        # partition: timeouts, not refusals
            link.clear()
    """

    name: str
    port: int
    upstream_port: int
    admin_port: int
    child: Child = field(repr=False)
    _faults: dict = field(default_factory=lambda: FaultSettings().as_dict(), repr=False)

    @property
    def faults(self) -> dict[str, Any]:
        """The faults in force (as of the last change made through this object)."""
        return dict(self._faults)

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        url = f"http://{HOST}:{self.admin_port}{path}"
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            with contextlib.suppress(ValueError):
                detail = json.loads(detail).get("error", detail)
            raise ValueError(f"Fault proxy {self.name!r} rejected {method} {path}: {detail}") from None
        except OSError as exc:
            if not self.child.alive():
                raise ProcessExited(
                    f"Fault proxy {self.name!r} is not running (exit code {self.child.returncode}); "
                    f"last log line: {self.child.last_log_line()!r}. Start a new one with start_proxy()."
                ) from None
            raise ServiceNotReady(
                f"Fault proxy {self.name!r} did not answer {method} {url} ({exc}). It may be paused "
                f"or the machine overloaded; its log is {self.child.log_path}."
            ) from None

    def _set(self, **changes: Any) -> dict[str, Any]:
        self._faults = self._request("POST", "/faults", changes)
        return self.faults

    def set_latency(self, latency_ms: float, jitter_ms: float = 0, direction: str = "both") -> dict[str, Any]:
        """Delay every chunk by ``latency_ms`` +/- ``jitter_ms`` (uniform), one way.

        A round trip through the proxy gains about ``2 * latency_ms`` with direction "both".

        Args:
            latency_ms: the one-way delay; 0 removes it.
            jitter_ms: each chunk's delay varies uniformly within +/- this much; bytes stay
                in order (a chunk waits for the one before it).
            direction: "up" (client to upstream), "down" (upstream to client) or "both".

        Returns:
            The faults now in force.
        """
        if direction not in ("up", "down", "both"):
            raise ValueError(f'direction must be "up", "down" or "both"; got {direction!r}.')
        dirs = DIRECTIONS if direction == "both" else (direction,)
        changes: dict[str, Any] = {}
        for d in dirs:
            changes[f"latency_{d}_ms"] = latency_ms
            changes[f"jitter_{d}_ms"] = jitter_ms
        return self._set(**changes)

    def set_bandwidth(self, bytes_per_s: float | None) -> dict[str, Any]:
        """Limit each direction to ``bytes_per_s`` (all connections together); None: no limit."""
        return self._set(bandwidth_bytes_per_s=bytes_per_s)

    def blackhole(self, on: bool = True) -> dict[str, Any]:
        """Partition the link: nothing is delivered either way until ``blackhole(False)``.

        Clients stay connected and their reads time out. Bytes sent meanwhile are held and
        delivered in order when the partition heals.
        """
        return self._set(blackhole=bool(on))

    def refuse(self, on: bool = True) -> dict[str, Any]:
        """Reset every NEW connection at once, as a dead service would; open ones go on."""
        return self._set(refuse=bool(on))

    def reset_connections(self) -> int:
        """Send a TCP RST on every open connection, both sides; return how many were reset."""
        return int(self._request("POST", "/reset")["reset"])

    def clear(self) -> dict[str, Any]:
        """Remove every fault: a transparent proxy again (open connections go on)."""
        self._faults = self._request("POST", "/clear")
        return self.faults

    def stats(self) -> dict[str, Any]:
        """Connections open/total, bytes each way (``bytes_up``, ``bytes_down``), and faults."""
        stats = self._request("GET", "/stats")
        self._faults = dict(stats["faults"])
        return stats

    def alive(self) -> bool:
        return self.child.alive()

    def stop(self) -> None:
        """Stop the proxy process; its connections close. Idempotent."""
        self.child.stop()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.child.alive() else "stopped"
        return (
            f"FaultProxy({self.name!r}, {HOST}:{self.port} -> {HOST}:{self.upstream_port}, "
            f"faults: {describe_faults(self._faults)}, {state})"
        )


def start_proxy(
    name: str, upstream_port: int, *, listen_port: int | None = None, timeout_s: float = 10
) -> FaultProxy:
    """Start a fault-injecting TCP proxy in front of ``127.0.0.1:upstream_port``.

    Args:
        name: a short name for logs and timelines, e.g. ``"region-a-to-b"``.
        upstream_port: the port of the server to forward to, on 127.0.0.1.
        listen_port: where clients connect; None picks a free port. A taken port raises
            PortInUseError.
        timeout_s: how long to wait for the proxy to answer its admin API.

    Returns:
        A running :class:`FaultProxy` with no faults; stop it when done (or use ``with``).
    """
    if isinstance(upstream_port, bool) or not isinstance(upstream_port, int):
        raise TypeError(
            f"upstream_port must be a port number (int); got {upstream_port!r}. "
            f"For a Redis node, pass node.port."
        )
    if listen_port is not None:
        check_port_free(listen_port)
    else:
        listen_port = find_free_port()
    admin_port = find_free_port()
    cmd = [
        sys.executable, "-m", "hadrlab.faults", "proxy", "--name", name,
        "--listen-port", str(listen_port), "--upstream-port", str(upstream_port),
        "--admin-port", str(admin_port),
    ]  # fmt: skip
    child = start_process(
        name, cmd, port=admin_port, ready=lambda c: wait_for_http(c, "/health", timeout_s=timeout_s)
    )
    return FaultProxy(name=name, port=listen_port, upstream_port=upstream_port, admin_port=admin_port, child=child)


# --------------------------------------------------------------------------- the injector


@dataclass
class FaultRecord:
    """One injected fault on the timeline: wall-clock epoch seconds, ``t_end`` None while active."""

    t_start: float
    t_end: float | None
    kind: str
    target: str
    detail: str = ""

    @property
    def active(self) -> bool:
        return self.t_end is None

    @property
    def duration_s(self) -> float | None:
        return None if self.t_end is None else self.t_end - self.t_start

    def __repr__(self) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(self.t_start))
        span = "active" if self.t_end is None else f"{self.t_end - self.t_start:.2f} s"
        detail = f" ({self.detail})" if self.detail else ""
        return f"FaultRecord({self.kind} {self.target}{detail} at {when}, {span})"


class ActiveFault:
    """A fault that lasts until :meth:`end` is called or its ``with`` block exits."""

    def __init__(self, record: FaultRecord, undo: Callable[[], None]) -> None:
        self.record = record
        self._undo = undo

    @property
    def active(self) -> bool:
        return self.record.t_end is None

    def end(self) -> FaultRecord:
        """Undo the fault (if its target still runs) and close its record. Idempotent."""
        if self.record.t_end is None:
            try:
                self._undo()
            finally:
                self.record.t_end = time.time()
        return self.record

    def __enter__(self) -> ActiveFault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()

    def __repr__(self) -> str:
        return f"ActiveFault({self.record!r})"


def _process_of(target: Any) -> tuple[Any, str]:
    """Return (something with kill/pause/resume, name) for a Child or an object holding one."""
    inner = getattr(target, "child", None)
    if isinstance(target, Child):
        return target, target.name
    if isinstance(inner, Child):
        return inner, str(getattr(target, "name", inner.name))
    if all(callable(getattr(target, m, None)) for m in ("kill", "pause", "resume")):
        return target, str(getattr(target, "name", target))
    raise TypeError(
        f"Cannot inject a process fault into {target!r}: pass a hadrlab Child (from "
        f"start_process), or an object with a .child such as a RedisNode or a FaultProxy."
    )


class Injector:
    """Injects faults and records each one (a timeline for plots and reports).

    Process faults work on a hadrlab Child or anything holding one (``RedisNode``,
    ``FaultProxy``); network faults on a :class:`FaultProxy`. Lasting faults return an
    :class:`ActiveFault`: end it, use it in a ``with`` block, or call :meth:`rollback`,
    which ends every fault still active (use ``with Injector() as chaos:`` to be sure).

    Example::

        chaos = Injector()
        chaos.kill(replica_1)                       # SIGKILL, an instant on the timeline
        with chaos.paused(redis.child, seconds=3):  # SIGSTOP ... SIGCONT
            run_some_load()
        with chaos.latency(link, 100):              # 100 ms each way while the block runs
            run_some_load()
        chaos.timeline()                            # t, t_end, kind, target, detail
    """

    def __init__(self) -> None:
        self._faults: list[ActiveFault] = []

    # ---------------------------------------------------------------- bookkeeping

    def _begin(self, kind: str, target: str, detail: str, undo: Callable[[], None]) -> ActiveFault:
        fault = ActiveFault(FaultRecord(time.time(), None, kind, target, detail), undo)
        self._faults.append(fault)
        return fault

    def _instant(self, kind: str, target: str, detail: str, act: Callable[[], Any]) -> FaultRecord:
        record = FaultRecord(time.time(), None, kind, target, detail)
        try:
            act()
        finally:
            record.t_end = time.time()
            self._faults.append(ActiveFault(record, lambda: None))
        return record

    @property
    def records(self) -> list[FaultRecord]:
        """Every fault injected so far, in order."""
        return [f.record for f in self._faults]

    def active(self) -> list[ActiveFault]:
        """The faults still in force."""
        return [f for f in self._faults if f.active]

    def timeline(self):
        """Return the faults as a pandas DataFrame: t, t_end, kind, target, detail.

        ``t`` and ``t_end`` are epoch seconds (``t_end`` NaN while a fault is active), the
        same clock as load and platform timelines.
        """
        import pandas as pd

        rows = [
            {"t": r.t_start, "t_end": r.t_end if r.t_end is not None else float("nan"),
             "kind": r.kind, "target": r.target, "detail": r.detail}
            for r in self.records
        ]  # fmt: skip
        return pd.DataFrame(rows, columns=["t", "t_end", "kind", "target", "detail"])

    def rollback(self) -> list[FaultRecord]:
        """End every active fault, newest first; return their records."""
        ended = []
        errors = []
        for fault in reversed(self.active()):
            try:
                ended.append(fault.end())
            except HadrError as exc:  # a target that stopped answering; keep rolling back
                errors.append(exc)
        if errors:
            raise errors[0]
        return ended

    def __enter__(self) -> Injector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.rollback()

    def __repr__(self) -> str:
        return f"Injector({len(self._faults)} fault(s) recorded, {len(self.active())} active)"

    # ---------------------------------------------------------------- processes

    def kill(self, target: Any) -> FaultRecord:
        """SIGKILL a process, as a crash would (nothing restarts it here)."""
        proc, name = _process_of(target)
        return self._instant("kill", name, "SIGKILL", proc.kill)

    def pause(self, target: Any) -> ActiveFault:
        """SIGSTOP a process: it keeps its sockets but answers nothing, as a hang or GC stall."""
        proc, name = _process_of(target)

        def undo() -> None:
            if getattr(proc, "alive", lambda: True)():
                proc.resume()

        proc.pause()
        return self._begin("pause", name, "SIGSTOP", undo)

    def resume(self, target: Any) -> None:
        """SIGCONT a paused process and close its pause records."""
        proc, name = _process_of(target)
        matched = [f for f in self.active() if f.record.kind == "pause" and f.record.target == name]
        for fault in matched:
            fault.end()
        if not matched:
            proc.resume()

    @contextlib.contextmanager
    def paused(self, target: Any, seconds: float | None = None) -> Iterator[ActiveFault]:
        """Pause a process for the ``with`` block, and at least ``seconds`` if given.

        On an exception in the block, the process is resumed at once.
        """
        fault = self.pause(target)
        try:
            yield fault
            if seconds is not None:
                remaining = seconds - (time.time() - fault.record.t_start)
                if remaining > 0:
                    time.sleep(remaining)
        finally:
            fault.end()

    # ---------------------------------------------------------------- network (a FaultProxy)

    @staticmethod
    def _undo_on(proxy: FaultProxy, action: Callable[[], Any]) -> Callable[[], None]:
        def undo() -> None:
            if proxy.alive():
                action()

        return undo

    def latency(self, proxy: FaultProxy, latency_ms: float, jitter_ms: float = 0, direction: str = "both") -> ActiveFault:
        """Add one-way latency on a proxy (see :meth:`FaultProxy.set_latency`) until ended."""
        proxy.set_latency(latency_ms, jitter_ms, direction)
        detail = f"{latency_ms:g} ms" + (f" +/- {jitter_ms:g} ms" if jitter_ms else "") + f" {direction}"
        return self._begin(
            "latency", proxy.name, detail, self._undo_on(proxy, lambda: proxy.set_latency(0, 0, direction))
        )

    def bandwidth(self, proxy: FaultProxy, bytes_per_s: float) -> ActiveFault:
        """Limit a proxy's bandwidth, each way, until ended."""
        proxy.set_bandwidth(bytes_per_s)
        return self._begin(
            "bandwidth", proxy.name, f"{bytes_per_s:,.0f} B/s", self._undo_on(proxy, lambda: proxy.set_bandwidth(None))
        )

    def blackhole(self, proxy: FaultProxy) -> ActiveFault:
        """Partition a proxy's link (timeouts, not refusals) until ended."""
        proxy.blackhole(True)
        return self._begin("blackhole", proxy.name, "", self._undo_on(proxy, lambda: proxy.blackhole(False)))

    partition = blackhole

    def refuse(self, proxy: FaultProxy) -> ActiveFault:
        """Reset every new connection through a proxy until ended."""
        proxy.refuse(True)
        return self._begin("refuse", proxy.name, "", self._undo_on(proxy, lambda: proxy.refuse(False)))

    def reset(self, proxy: FaultProxy) -> FaultRecord:
        """RST every open connection through a proxy (an instant on the timeline)."""
        count: list[int] = []
        record = self._instant("reset", proxy.name, "", lambda: count.append(proxy.reset_connections()))
        record.detail = f"{count[0] if count else 0} connection(s)"
        return record

    def clear(self, proxy: FaultProxy) -> None:
        """Remove every fault of a proxy, and close their records."""
        proxy.clear()
        now = time.time()
        for fault in self.active():
            if fault.record.target == proxy.name and fault.record.kind in (
                "latency", "bandwidth", "blackhole", "refuse"
            ):  # fmt: skip
                fault.record.t_end = now


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """``python -m hadrlab.faults proxy --listen-port P --upstream-port U --admin-port A``."""
    parser = argparse.ArgumentParser(prog="python -m hadrlab.faults", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    proxy = sub.add_parser("proxy", help="run a fault-injecting TCP proxy on 127.0.0.1")
    proxy.add_argument("--name", default="fault-proxy", help="a name for the log")
    proxy.add_argument("--listen-port", type=int, required=True, help="where clients connect")
    proxy.add_argument("--upstream-port", type=int, required=True, help="the server to forward to")
    proxy.add_argument("--admin-port", type=int, required=True, help="the JSON admin API")
    proxy.add_argument("--seed", type=int, default=None, help="seed of the jitter")
    args = parser.parse_args(argv)
    server = ProxyServer(args.name, args.listen_port, args.upstream_port, args.admin_port, seed=args.seed)
    asyncio.run(server.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
