"""The fault-injecting proxy with real processes: an echo server, and a real redis-server."""

from __future__ import annotations

import socket
import statistics
import sys
import threading
import time

import pytest

from hadrlab.errors import ProcessExited
from hadrlab.faults import Injector, start_proxy
from hadrlab.processes import HOST, find_free_port, start_process, wait_for_tcp, wait_until

ECHO_SERVER = '''\
import asyncio, sys

async def echo(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(echo, "127.0.0.1", int(sys.argv[1]))
    print("echo server listening", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
'''


def _start_echo(tmp_path_factory, name: str = "echo"):
    script = tmp_path_factory.mktemp("echo") / "echo_server.py"
    script.write_text(ECHO_SERVER)
    port = find_free_port()
    return start_process(name, [sys.executable, str(script), str(port)], port=port, ready=wait_for_tcp)


@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    child = _start_echo(tmp_path_factory)
    yield child
    child.stop()


@pytest.fixture(scope="module")
def proxy(echo):
    proxy = start_proxy("echo-link", echo.port)
    yield proxy
    proxy.stop()


@pytest.fixture(autouse=True)
def _no_faults_left(request):
    yield
    if "proxy" in request.fixturenames:
        request.getfixturevalue("proxy").clear()


def _connect(proxy, timeout_s: float = 5.0) -> socket.socket:
    sock = socket.create_connection((HOST, proxy.port), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(min(65536, n - len(data)))
        if not chunk:
            raise EOFError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


def _rtt_ms(sock: socket.socket, payload: bytes = b"ping") -> float:
    start = time.perf_counter()
    sock.sendall(payload)
    assert _recv_exactly(sock, len(payload)) == payload
    return (time.perf_counter() - start) * 1000


def _median_rtt_ms(sock: socket.socket, n: int = 5) -> float:
    return statistics.median(_rtt_ms(sock) for _ in range(n))


def _echo_transfer_s(sock: socket.socket, nbytes: int) -> float:
    """Send nbytes from a thread while reading the echo back; return the seconds it took."""
    payload = bytes(range(256)) * (nbytes // 256)
    start = time.perf_counter()
    sender = threading.Thread(target=sock.sendall, args=(payload,))
    sender.start()
    received = _recv_exactly(sock, len(payload))
    elapsed = time.perf_counter() - start
    sender.join()
    assert received == payload
    return elapsed


def test_bytes_pass_through_both_ways_and_are_counted(proxy):
    before = proxy.stats()
    with _connect(proxy) as sock:
        sock.sendall(b"hello through the proxy")
        assert _recv_exactly(sock, 23) == b"hello through the proxy"
    after = proxy.stats()
    assert after["bytes_up"] - before["bytes_up"] == 23
    assert after["bytes_down"] - before["bytes_down"] == 23
    assert after["connections_total"] == before["connections_total"] + 1


def test_latency_is_added_in_the_direction_asked(proxy):
    with _connect(proxy) as sock:
        base = _median_rtt_ms(sock)
        proxy.set_latency(100, direction="up")
        up = _median_rtt_ms(sock) - base
        proxy.set_latency(0, direction="up")
        proxy.set_latency(100, direction="down")
        down = _median_rtt_ms(sock) - base
        proxy.set_latency(100, direction="both")
        both = _median_rtt_ms(sock) - base
    assert 90 <= up <= 600, up  # generous upper bounds: a busy machine adds delay, never removes it
    assert 90 <= down <= 600, down
    assert 190 <= both <= 900, both


def test_jitter_varies_round_trips_but_keeps_a_stream_in_order(proxy):
    proxy.set_latency(30, jitter_ms=25)
    with _connect(proxy) as sock:
        rtts = [_rtt_ms(sock) for _ in range(10)]
        lines = [f"{i}\n".encode() for i in range(300)]
        for line in lines:  # separate small writes: separate chunks, each with its own delay
            sock.sendall(line)
            time.sleep(0.0005)
        echoed = _recv_exactly(sock, sum(map(len, lines)))
    assert max(rtts) - min(rtts) > 5, rtts
    assert echoed.split(b"\n")[:-1] == [str(i).encode() for i in range(300)]


def test_latency_delays_a_pipelined_transfer_without_serialising_it(proxy):
    """2 MB under 100 ms each way: about one round trip more, not one per chunk."""
    with _connect(proxy) as sock:
        proxy.set_latency(100)
        elapsed = _echo_transfer_s(sock, 2_000_000)
    # chunk by chunk it would be >= 30 chunks x 200 ms = 6 s
    assert 0.2 <= elapsed < 3.0, elapsed


def test_bandwidth_of_100_kb_per_s_makes_200_kb_take_about_2_s(proxy):
    proxy.set_bandwidth(100_000)
    with _connect(proxy) as sock:
        elapsed = _echo_transfer_s(sock, 200_000)
    assert 1.5 <= elapsed <= 4.0, elapsed


def test_blackhole_times_out_reads_keeps_the_connection_and_clear_restores_it(proxy):
    with _connect(proxy) as sock:
        assert _rtt_ms(sock) < 1000
        proxy.blackhole()
        sock.settimeout(0.5)
        sock.sendall(b"lost?")
        with pytest.raises(socket.timeout):
            sock.recv(10)
        # new connections are accepted (no refusal) and time out too
        with _connect(proxy) as other:
            other.settimeout(0.3)
            other.sendall(b"x")
            with pytest.raises(socket.timeout):
                other.recv(10)
        assert proxy.stats()["connections_open"] >= 2
        proxy.clear()
        sock.settimeout(5)
        # held, not dropped: the bytes sent during the partition arrive, in order
        assert _recv_exactly(sock, 5) == b"lost?"
        assert _rtt_ms(sock, b"back") < 1000


def test_refuse_closes_new_connections_and_spares_open_ones(proxy):
    with _connect(proxy) as open_before:
        proxy.refuse()
        # A refused connection is reset: at connect() when the reset wins the race with the
        # handshake's return, else at the first read. Either way no byte comes back.
        try:
            with _connect(proxy) as sock:
                sock.sendall(b"hi")
                data = sock.recv(10)
        except (ConnectionResetError, ConnectionRefusedError, BrokenPipeError):
            data = b""
        assert data == b""
        assert _rtt_ms(open_before) < 1000
        proxy.refuse(False)
        with _connect(proxy) as sock:
            assert _rtt_ms(sock) < 1000
    assert proxy.stats()["connections_refused"] >= 1


def test_reset_connections_makes_an_open_client_see_a_reset(proxy):
    with _connect(proxy) as sock:
        assert _rtt_ms(sock) < 1000
        assert proxy.reset_connections() >= 1
        time.sleep(0.1)
        with pytest.raises(ConnectionResetError):
            sock.sendall(b"after")
            sock.recv(10)


def test_an_unreachable_upstream_resets_the_client():
    dead_port = find_free_port()
    with start_proxy("dead-link", dead_port) as proxy:
        # The proxy accepts, fails to reach the upstream and resets: on a loaded machine the
        # reset can arrive before connect() has returned, or at the first read.
        try:
            with _connect(proxy) as sock:
                try:
                    data = sock.recv(10)
                except ConnectionResetError:
                    data = b""
        except ConnectionResetError:
            data = b""
        assert data == b""
        wait_until(lambda: proxy.stats()["upstream_errors"] == 1, timeout_s=5,
                   describe="the proxy to count the failed upstream connection")
    assert not proxy.alive()
    proxy.stop()  # idempotent
    with pytest.raises(ProcessExited, match="not running"):
        proxy.stats()


def test_redis_through_the_proxy_pays_the_latency_each_way():
    from hadrlab.replication import start_redis

    redis_node = start_redis("redis-behind-proxy")
    try:
        with start_proxy("redis-link", redis_node.port) as proxy:
            client = redis_node.client(port=proxy.port)
            assert client.ping() is True
            client.set("feature:user:1", "0.42")
            proxy.set_latency(50)
            start = time.perf_counter()
            assert client.get("feature:user:1") == "0.42"
            elapsed = time.perf_counter() - start
            assert 0.100 <= elapsed < 1.0, elapsed
            assert "latency 50 ms both ways" in repr(proxy)
            client.close()
    finally:
        redis_node.stop()


def test_injector_pauses_and_kills_a_real_process(tmp_path_factory):
    child = _start_echo(tmp_path_factory, "echo-victim")
    try:
        chaos = Injector()
        with socket.create_connection((HOST, child.port), timeout=5) as sock:
            with chaos.paused(child, seconds=0.3):
                sock.settimeout(0.2)
                sock.sendall(b"frozen")
                with pytest.raises(socket.timeout):
                    sock.recv(10)
            sock.settimeout(5)
            assert _recv_exactly(sock, 6) == b"frozen"  # answered once resumed
        chaos.kill(child)
        assert not child.alive()
        frame = chaos.timeline()
        assert frame["kind"].tolist() == ["pause", "kill"]
        assert frame["t_end"].iloc[0] - frame["t"].iloc[0] >= 0.3
    finally:
        child.stop()


def test_a_bad_fault_is_refused_with_a_message_and_changes_nothing(proxy):
    proxy.set_latency(20)
    with pytest.raises(ValueError, match="latency_up_ms must be a number >= 0"):
        proxy.set_latency(-5)
    with pytest.raises(ValueError, match='direction must be "up", "down" or "both"'):
        proxy.set_latency(5, direction="sideways")
    assert proxy.stats()["faults"]["latency_up_ms"] == 20
