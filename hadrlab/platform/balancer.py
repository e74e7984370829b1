"""The Service load balancer: an HTTP reverse proxy over the READY endpoints of a Service.

Run as its own process (``python -m hadrlab.platform.balancer``), as kube-proxy or an
ingress controller runs apart from the pods it routes to. It has two ports:

- the service port: every request goes, round robin, to one ready endpoint; with no ready
  endpoint the answer is ``503`` with a body that says so;
- the admin port: the platform pushes the endpoint list there (``POST /endpoints``) each
  time readiness changes, and reads ``/metrics`` (Prometheus text) or ``/stats`` (JSON).

Retry on connection failure (off by default) is modelled on an ingress "next upstream"
retry: a request whose upstream connection failed before any response byte arrived
(connect refused, or reset) is sent once more to the next endpoint. A request is never
retried after its response started. Note that a reset can happen after the upstream read
the request, so a retried POST may run twice: the price of hiding a crash.

Written on plain asyncio streams, with keep-alive connections to clients and a pool of
keep-alive connections to each endpoint, to keep the overhead per request small.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import signal
import sys
import time
from collections import defaultdict
from dataclasses import dataclass

from hadrlab.exposition import CONTENT_TYPE, MetricsText

__all__ = ["Balancer", "main"]

_MAX_HEAD = 64 * 1024


class _UpstreamFailed(Exception):
    """The upstream connection failed before any response byte: safe to try elsewhere."""


@dataclass(frozen=True)
class Endpoint:
    name: str
    host: str
    port: int


def _response(status: int, reason: str, body: str, keep_alive: bool = True) -> bytes:
    data = body.encode()
    conn = "keep-alive" if keep_alive else "close"
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(data)}\r\nconnection: {conn}\r\n\r\n"
    ).encode() + data


def _parse_headers(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return lines[0], headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    """Read a chunked body and return it de-chunked."""
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


class Balancer:
    """Round robin over ready endpoints, with optional retry on connection failure.

    Example:
        >>> balancer = Balancer("model-api", retry_connect_failures=True)
        >>> balancer.set_endpoints([Endpoint("model-api-v1-1", "127.0.0.1", 40211)])
    """

    def __init__(
        self,
        name: str,
        *,
        retry_connect_failures: bool = False,
        connect_timeout_s: float = 1.0,
        upstream_timeout_s: float = 30.0,
    ) -> None:
        self.name = name
        self.retry_connect_failures = retry_connect_failures
        self.connect_timeout_s = connect_timeout_s
        self.upstream_timeout_s = upstream_timeout_s
        self.endpoints: list[Endpoint] = []
        self._counter = itertools.count()
        self._pools: dict[Endpoint, list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = (
            defaultdict(list)
        )
        self.requests_total: dict[str, int] = defaultdict(int)
        self.upstream_errors_total: dict[str, int] = defaultdict(int)
        self.retries_total = 0
        self.no_endpoint_total = 0
        # Answers sent to clients, by status code: the availability SLI a scraper computes.
        # The codes the balancer answers itself start at 0, so that a rate over them counts
        # the first error too (a series born at its first error would hide it).
        self.responses_total: dict[int, int] = {200: 0, 502: 0, 503: 0, 504: 0}
        self.started_at = time.time()

    # ------------------------------------------------------------------ endpoints

    def set_endpoints(self, endpoints: list[Endpoint]) -> None:
        removed = set(self.endpoints) - set(endpoints)
        self.endpoints = list(endpoints)
        for ep in removed:
            for _, writer in self._pools.pop(ep, []):
                writer.close()

    def _pick(self, tried: set[Endpoint]) -> Endpoint | None:
        eps = [e for e in self.endpoints if e not in tried]
        if not eps:
            return None
        return eps[next(self._counter) % len(eps)]

    # ------------------------------------------------------------------ service port

    async def handle_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                request_line, headers = _parse_headers(head)
                parts = request_line.split(" ")
                if len(parts) != 3:
                    writer.write(_response(400, "Bad Request", "malformed request line\n", False))
                    return
                method, _, version = parts
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    body = await _read_chunked(reader)
                    head = self._dechunk_head(head, len(body))
                else:
                    length = int(headers.get("content-length", "0") or 0)
                    body = await reader.readexactly(length) if length else b""
                conn = headers.get("connection", "").lower()
                keep_alive = (version == "HTTP/1.1" and conn != "close") or conn == "keep-alive"
                ok = await self._forward(method, head + body, writer, keep_alive)
                if not ok or not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    def _dechunk_head(head: bytes, length: int) -> bytes:
        lines = [
            ln
            for ln in head.split(b"\r\n")
            if ln and not ln.lower().startswith(b"transfer-encoding:")
        ]
        return b"\r\n".join(lines + [f"content-length: {length}".encode()]) + b"\r\n\r\n"

    async def _forward(
        self, method: str, request: bytes, writer: asyncio.StreamWriter, keep_alive: bool
    ) -> bool:
        """Send one request upstream and relay the answer; False if the client must close."""
        tried: set[Endpoint] = set()
        last_error = ""
        while True:
            ep = self._pick(tried)
            if ep is None:
                if not tried:
                    self.no_endpoint_total += 1
                    self._answered(503)
                    writer.write(
                        _response(
                            503,
                            "Service Unavailable",
                            f"no ready endpoint for service '{self.name}': every replica is "
                            f"unready, terminating or gone\n",
                            keep_alive,
                        )
                    )
                else:
                    self._answered(502)
                    writer.write(
                        _response(
                            502,
                            "Bad Gateway",
                            f"service '{self.name}': upstream failed: {last_error}\n",
                            keep_alive,
                        )
                    )
                await writer.drain()
                return True
            tried.add(ep)
            try:
                return await self._exchange(ep, method, request, writer)
            except _UpstreamFailed as exc:
                self.upstream_errors_total[ep.name] += 1
                last_error = f"{ep.name} ({ep.host}:{ep.port}): {exc}"
                if self.retry_connect_failures and self._pick(tried) is not None:
                    self.retries_total += 1
                    continue
                tried = set(self.endpoints)  # no retry: answer 502 now
            except asyncio.TimeoutError:
                self.upstream_errors_total[ep.name] += 1
                self._answered(504)
                writer.write(
                    _response(
                        504,
                        "Gateway Timeout",
                        f"service '{self.name}': {ep.name} ({ep.host}:{ep.port}) sent no "
                        f"response within {self.upstream_timeout_s:g} s\n",
                        keep_alive,
                    )
                )
                await writer.drain()
                return True

    def _answered(self, status: int) -> None:
        self.responses_total[status] = self.responses_total.get(status, 0) + 1

    async def _connect(self, ep: Endpoint, pooled_ok: bool):
        pool = self._pools[ep]
        while pooled_ok and pool:
            reader, up = pool.pop()
            if not up.is_closing() and not reader.at_eof():
                return reader, up, True
            up.close()
        try:
            reader, up = await asyncio.wait_for(
                asyncio.open_connection(ep.host, ep.port), self.connect_timeout_s
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise _UpstreamFailed(f"connect failed: {exc.__class__.__name__} {exc}") from None
        return reader, up, False

    async def _exchange(
        self, ep: Endpoint, method: str, request: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        pooled_ok = True
        while True:
            reader, up, pooled = await self._connect(ep, pooled_ok)
            try:
                up.write(request)
                await up.drain()
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.upstream_timeout_s)
                break
            except asyncio.TimeoutError:
                up.close()
                raise
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                up.close()
                if pooled:
                    pooled_ok = False  # a stale keep-alive connection: try a fresh one
                    continue
                raise _UpstreamFailed(f"connection reset before any response ({exc.__class__.__name__})") from None
        # From here on the response has started: never retry, relay what comes.
        self.requests_total[ep.name] += 1
        status_line, headers = _parse_headers(head)
        status = int(status_line.split(" ")[1]) if " " in status_line else 502
        idx = head.index(b"\r\n") + 2
        head = head[:idx] + f"x-hadrlab-endpoint: {ep.name}\r\n".encode() + head[idx:]
        reusable = headers.get("connection", "").lower() != "close"
        try:
            length = int(headers.get("content-length", "-1"))
            if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
                writer.write(head)
            elif 0 <= length <= 262144:
                # the common case: one write of head and body, one syscall per response
                writer.write(head + (await reader.readexactly(length) if length else b""))
            elif "content-length" in headers:
                writer.write(head)
                remaining = int(headers["content-length"])
                while remaining:
                    data = await reader.read(min(remaining, 65536))
                    if not data:
                        raise ConnectionError("upstream closed mid-body")
                    writer.write(data)
                    remaining -= len(data)
            elif "chunked" in headers.get("transfer-encoding", "").lower():
                writer.write(head)
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    writer.write(size_line)
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while True:
                            line = await reader.readuntil(b"\r\n")
                            writer.write(line)
                            if line == b"\r\n":
                                break
                        break
                    writer.write(await reader.readexactly(size + 2))
            else:
                writer.write(head)
                while data := await reader.read(65536):
                    writer.write(data)
                reusable = False
                await writer.drain()
                up.close()
                self._answered(status)
                return False  # body ended by close: the client connection must close too
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            self.upstream_errors_total[ep.name] += 1
            self._answered(502)  # the client got a cut-off answer
            up.close()
            return False
        self._answered(status)
        if reusable and ep in self.endpoints:
            self._pools[ep].append((reader, up))
        else:
            up.close()
        return True

    # ------------------------------------------------------------------ admin port

    def stats(self) -> dict:
        return {
            "service": self.name,
            "endpoints": [e.__dict__ for e in self.endpoints],
            "retry_connect_failures": self.retry_connect_failures,
            "requests_total": dict(self.requests_total),
            "upstream_errors_total": dict(self.upstream_errors_total),
            "retries_total": self.retries_total,
            "no_endpoint_total": self.no_endpoint_total,
            "responses_total": {str(code): n for code, n in sorted(self.responses_total.items())},
        }

    def metrics_text(self) -> str:
        text = MetricsText()
        text.family("hadrlab_balancer_requests_total", "counter", "Requests answered by each endpoint.")
        for name, n in sorted(self.requests_total.items()):
            text.sample("hadrlab_balancer_requests_total", n, service=self.name, endpoint=name)
        text.family("hadrlab_balancer_responses_total", "counter", "Answers sent to clients, by status code.")
        for code, n in sorted(self.responses_total.items()):
            text.sample("hadrlab_balancer_responses_total", n, service=self.name, code=code)
        text.family("hadrlab_balancer_upstream_errors_total", "counter",
                    "Failed upstream exchanges per endpoint.")
        for name, n in sorted(self.upstream_errors_total.items()):
            text.sample("hadrlab_balancer_upstream_errors_total", n, service=self.name, endpoint=name)
        text.family("hadrlab_balancer_retries_total", "counter",
                    "Requests sent again to another endpoint after a failed connection.")
        text.sample("hadrlab_balancer_retries_total", self.retries_total, service=self.name)
        text.family("hadrlab_balancer_no_endpoint_total", "counter",
                    "Requests answered 503 because no endpoint was ready.")
        text.sample("hadrlab_balancer_no_endpoint_total", self.no_endpoint_total, service=self.name)
        text.family("hadrlab_balancer_endpoints", "gauge", "Ready endpoints requests are spread over.")
        text.sample("hadrlab_balancer_endpoints", len(self.endpoints), service=self.name)
        return text.render()

    async def handle_admin(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request_line, headers = _parse_headers(head)
                method, path, _ = (request_line.split(" ") + ["", ""])[:3]
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                status, ctype, out = self._admin(method, path, body)
                data = out.encode()
                writer.write(
                    f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
                    f"content-type: {ctype}\r\ncontent-length: {len(data)}\r\n\r\n".encode() + data
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def _admin(self, method: str, path: str, body: bytes) -> tuple[int, str, str]:
        try:
            if method == "GET" and path == "/healthz":
                return 200, "text/plain", "ok\n"
            if method == "GET" and path == "/metrics":
                return 200, CONTENT_TYPE, self.metrics_text()
            if method == "GET" and path in ("/stats", "/endpoints"):
                return 200, "application/json", json.dumps(self.stats())
            if method == "POST" and path == "/endpoints":
                items = json.loads(body)["endpoints"]
                self.set_endpoints(
                    [Endpoint(e["name"], e.get("host", "127.0.0.1"), int(e["port"])) for e in items]
                )
                return 200, "application/json", json.dumps({"endpoints": len(self.endpoints), "t": time.time()})
            if method == "POST" and path == "/config":
                cfg = json.loads(body)
                if "retry_connect_failures" in cfg:
                    self.retry_connect_failures = bool(cfg["retry_connect_failures"])
                if "upstream_timeout_s" in cfg:
                    self.upstream_timeout_s = float(cfg["upstream_timeout_s"])
                return 200, "application/json", json.dumps(self.stats())
        except (ValueError, KeyError, TypeError) as exc:
            return 400, "text/plain", f"bad admin request {method} {path}: {exc}\n"
        return 404, "text/plain", f"no admin route {method} {path}\n"


async def _serve(args: argparse.Namespace) -> None:
    balancer = Balancer(
        args.name,
        retry_connect_failures=args.retry_connect_failures,
        upstream_timeout_s=args.upstream_timeout_s,
    )
    server = await asyncio.start_server(balancer.handle_client, args.host, args.port, backlog=1024)
    admin = await asyncio.start_server(balancer.handle_admin, args.host, args.admin_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"balancer {args.name!r} serving on {args.host}:{args.port}, admin on "
        f"{args.host}:{args.admin_port}, retry_connect_failures={args.retry_connect_failures}",
        flush=True,
    )
    async with server, admin:
        await stop.wait()
    print(f"balancer {args.name!r} stopped: {json.dumps(balancer.stats())}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m hadrlab.platform.balancer --port P --admin-port A``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="service")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--admin-port", type=int, required=True)
    parser.add_argument("--retry-connect-failures", action="store_true")
    parser.add_argument("--upstream-timeout-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
