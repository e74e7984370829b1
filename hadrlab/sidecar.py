"""The health-checking sidecar of Lab 02: which region should serve feature reads, and alerts.

Three parts:

- **Read-failover policies**: small strategy classes, in the style of redis-py's back-off
  classes. Each has one method, ``decide(read_region, check, secondary) -> region``, called
  after every round of health checks with the check of the primary region and that of the
  other one. :class:`ThresholdPolicy` moves reads to the secondary when the primary is slow
  or unreachable N checks in a row, and back only after M healthy checks in a row
  (hysteresis, so a flapping primary does not flap the reads).
- **The sidecar** (``python -m hadrlab.sidecar``): every CHECK_INTERVAL_MS it asks a
  Sentinel which master is elected (that region is the *primary*), PINGs both regions,
  reads their ``INFO replication`` to judge whether their data can be trusted
  (:class:`DataTrust`), asks the policy, and serves the answer:

      GET /state     {"read_region": "a"|"b", "since", "primary": {...}, "secondary": {...},
                      "decisions": [last switches], "policy", "elected": {...},
                      "primary_moves": [...],
                      "policy_errors": {"count", "last", "recent"}}
      GET /history   the check log: [{"t", "region", "ok", "latency_ms", "error", "read_region",
                     "primary", "policy_error"}] (?since=<epoch s> returns only newer checks;
                     "policy_error" is "" unless the policy raised or answered no region)
      GET /metrics   Prometheus text
      GET /docs      the OpenAPI document (/openapi.json) as a page where requests can be tried

  It POSTs Alertmanager-style alerts to ALERT_URL when reads switch region (ReadFailover
  firing / resolved), when a region goes down or comes back (RegionDown), and when the
  Sentinels elect another primary (PrimaryMoved).

  Why ask Sentinel: after a failover the old primary comes back (after a crash, empty; after
  a partition, with old data) as a master that answers PINGs perfectly well for seconds
  before Sentinel demotes it and it resyncs. A sidecar that judged by PING alone would send
  reads to it. A region that is a master the Sentinels did not elect, or a replica that is
  not in sync, is reported to the policy as a FAILED check (``ok=False`` with the reason in
  ``error``), so every policy treats it as bad; and the sidecar never lets reads go to such
  a region while the other one is fit, whatever the policy answers.
- **The alert receiver** (``python -m hadrlab.sidecar alerts``): a webhook that stores what
  it receives and lists it at GET /alerts, each alert with its receive time ``t``.

Both are FastAPI apps served by uvicorn (:func:`create_sidecar_app`, :func:`create_receiver_app`).

Environment of the sidecar::

    PORT                     required
    REDIS_A, REDIS_B         "127.0.0.1:port" of each region: the addresses the Sentinels
                             announce (the feature store's proxies)
    SENTINELS                optional "host:port,host:port,..."; with SENTINEL_MASTER (the
                             master's name), the primary is the region the Sentinels elect.
                             Without them region A is the primary, always, and only a
                             replica's link is judged (a second master cannot be told apart)
    REDIS_PASSWORD           for the Redis servers and the Sentinels
    CHECK_INTERVAL_MS        default 200
    LATENCY_THRESHOLD_MS     default 50; CONSECUTIVE default 3; RECOVER_CONSECUTIVE default 5
    CHECK_TIMEOUT_MS         default 2 x LATENCY_THRESHOLD_MS (at least 50): a PING slower
                             than this counts as a failed connection
    POLICY_CLASS             default "hadrlab.sidecar:ThresholdPolicy"; any importable
                             "module:Class" (see write_policy_module for notebook classes)
    POLICY_ARGS              JSON of keyword arguments for POLICY_CLASS (default: the three
                             variables above, for ThresholdPolicy)
    ALERT_URL                optional; "http://127.0.0.1:port/alerts"

Your own policy, from a notebook::

    source = '''
    class MyPolicy:
        def __init__(self, bad_after=2):
            self.bad_after, self.bad = bad_after, 0
        def decide(self, read_region, check, secondary):
            # check: the primary's (check.region), secondary: the other region's
            self.bad = 0 if check.ok else self.bad + 1
            return secondary.region if self.bad >= self.bad_after else check.region
    '''
    policy = write_policy_module(source)            # 'learner_policy:MyPolicy'
    sidecar = start_sidecar(fs.connection_env(), policy=policy, policy_args={"bad_after": 2})
"""

from __future__ import annotations

import ast
import datetime as dt
import importlib
import json
import logging
import math
import os
import queue
import re
import sys
import threading
import time
import urllib.request
from collections import Counter, deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from hadrlab import apidocs
from hadrlab.apidocs import METRICS, PrometheusText

from hadrlab.exposition import CONTENT_TYPE, MetricsText
from hadrlab.processes import HOST, Child, find_free_port, home_dir, start_process, wait_for_http
from hadrlab.settings import env_number, parse_address

__all__ = [
    "Check",
    "DataTrust",
    "PrimaryOnlyPolicy",
    "ThresholdPolicy",
    "load_policy",
    "write_policy_module",
    "alert",
    "start_sidecar",
    "start_alert_receiver",
    "fetch_alerts",
    "create_sidecar_app",
    "create_receiver_app",
]

logger = logging.getLogger("hadrlab.sidecar")

DEFAULT_POLICY = "hadrlab.sidecar:ThresholdPolicy"


# --------------------------------------------------------------------------- policies


@dataclass(frozen=True)
class Check:
    """The result of one health check (a PING) of one region."""

    region: str
    ok: bool  # the PING was answered (however slowly)
    latency_ms: float | None = None
    t: float = 0.0  # epoch seconds
    error: str = ""


class PrimaryOnlyPolicy:
    """Never move reads off the primary: the baseline to compare a failover policy with.

    The primary is the region of ``check`` (the sidecar passes the check of the region the
    Sentinels elected), so reads follow a Sentinel failover but never a slow region.
    """

    def __init__(self, primary: str = "a", secondary: str = "b") -> None:
        self.primary, self.secondary = primary, secondary

    def decide(self, read_region: str, check: Check, secondary: Check | None = None) -> str:
        self.primary = check.region or self.primary
        return self.primary

    def __repr__(self) -> str:
        return f"PrimaryOnlyPolicy(primary={self.primary!r})"


class ThresholdPolicy:
    """Move reads to the secondary after N bad checks of the primary; back after M good ones.

    A check is *bad* when the PING failed or took longer than ``latency_ms``. One slow
    PING is noise; ``consecutive`` bad ones in a row are an incident. Coming back needs
    ``recover_consecutive`` good checks in a row (hysteresis): a primary that answers
    every other check keeps reads where they are instead of bouncing them.

    The primary is whichever region ``check`` is about: the sidecar passes the check of the
    region the Sentinels elected, so after a Sentinel failover region B is the primary and
    the streaks start again from zero. ``primary``/``secondary`` are only the defaults for
    a call without a ``secondary`` check.

    Example:
        >>> policy = ThresholdPolicy(latency_ms=50, consecutive=3, recover_consecutive=5)
        >>> region = "a"
        >>> for check in checks_of_region_a:
        ...     region = policy.decide(region, check)
    """

    def __init__(self, latency_ms: float = 50, consecutive: int = 3, recover_consecutive: int = 5,
                 primary: str = "a", secondary: str = "b") -> None:
        if consecutive < 1 or recover_consecutive < 1:
            raise ValueError("consecutive and recover_consecutive must be at least 1; got "
                             f"{consecutive} and {recover_consecutive}.")
        self.latency_ms = latency_ms
        self.consecutive = consecutive
        self.recover_consecutive = recover_consecutive
        self.primary, self.secondary = primary, secondary
        self.bad_streak = 0
        self.good_streak = 0

    def is_bad(self, check: Check) -> bool:
        return not check.ok or check.latency_ms is None or check.latency_ms > self.latency_ms

    def decide(self, read_region: str, check: Check, secondary: Check | None = None) -> str:
        """Return the region that should serve reads after ``check`` of the primary.

        Args:
            read_region: where reads go now.
            check: the latest check of the primary region (the one the Sentinels elected).
            secondary: the latest check of the secondary, if known: reads never move to
                a secondary that is itself unreachable.
        """
        if check.region and check.region != self.primary:
            # Sentinel elected another primary: the streaks counted checks of the old one.
            self.primary, self.bad_streak, self.good_streak = check.region, 0, 0
        if secondary is not None and secondary.region:
            self.secondary = secondary.region
        elif self.secondary == self.primary:
            self.secondary = "b" if self.primary == "a" else "a"
        if self.is_bad(check):
            self.bad_streak, self.good_streak = self.bad_streak + 1, 0
        else:
            self.bad_streak, self.good_streak = 0, self.good_streak + 1
        if read_region == self.primary and self.bad_streak >= self.consecutive:
            if secondary is None or secondary.ok:
                return self.secondary
        if read_region != self.primary and self.good_streak >= self.recover_consecutive:
            return self.primary
        return read_region

    def __repr__(self) -> str:
        return (f"ThresholdPolicy(latency_ms={self.latency_ms:g}, consecutive={self.consecutive}, "
                f"recover_consecutive={self.recover_consecutive})")


class DataTrust:
    """Whether a region's data can be trusted to serve reads, from its ``INFO replication``.

    A PING says a server answers, not that its data is right. A region is *fit* to serve
    reads when it is

    - the master the Sentinels elected (``elected``), or any master when there is no
      Sentinel to ask, or a replica seen in sync that is being promoted (its previous
      replication ID is the one it had as a replica: the Sentinels name it a moment later);
    - a replica of the elected master whose link is up and which is not in a full sync;
    - a replica whose link went down (its primary died or is cut off) that the sidecar saw
      linked before, with the same replication ID: it still holds the data it had, only
      older. That is what read failover is for.

    It is *unfit* when it is a master the Sentinels did not elect (an old primary back from a
    crash, empty, or from a partition, with old data: split brain), a replica in a full sync
    (its dataset is being replaced), a replica of another master, or a replica whose link is
    down and that the sidecar never saw in sync since it was a master or restarted (a new
    replication ID).

    Example::

        trust = DataTrust()
        trust.judge("a", "127.0.0.1:7001", {"role": "master"}, elected="127.0.0.1:7002")
        # -> "region a (127.0.0.1:7001) is a master the Sentinels did not elect (...)"
    """

    def __init__(self) -> None:
        # region -> (role, replication id) of the last time the region was fit
        self.vouched: dict[str, tuple[str, str]] = {}

    def judge(self, region: str, address: str, info: Mapping[str, Any], elected: str | None) -> str:
        """Return why ``region`` must not serve reads, or "" when it may.

        Args:
            region: "a" or "b".
            address: the region's "host:port" (as in REDIS_A / REDIS_B).
            info: its ``INFO replication`` as a dict (redis-py's parsing).
            elected: "host:port" of the master the Sentinels elected; None when unknown.
        """
        role = str(info.get("role", ""))
        replid = str(info.get("master_replid", ""))
        if role == "master":
            if elected is not None and elected != address:
                if self.vouched.get(region) == ("replica", str(info.get("master_replid2", ""))):
                    # A replica seen in sync, just promoted (its old replication ID moved to
                    # replid2); the Sentinels announce the switch a moment later.
                    return ""
                self.vouched.pop(region, None)
                return (f"region {region} ({address}) is a master the Sentinels did not elect (an old "
                        f"primary back after a crash or a partition, empty or with old data: split "
                        f"brain): not serving reads; the Sentinels' primary is {elected}")
            self.vouched[region] = ("master", replid)
            return ""
        if role != "slave":
            return ""  # not a Redis we can judge (a test double): PING decides alone
        follows = f"{info.get('master_host', '')}:{info.get('master_port', '')}"
        if str(info.get("master_sync_in_progress", 0)) not in ("0", ""):
            self.vouched.pop(region, None)
            return (f"region {region} ({address}) is a replica in a full sync from {follows}: its "
                    f"dataset is being replaced; not serving reads until the sync is done")
        if elected is not None and follows != elected:
            self.vouched.pop(region, None)
            return (f"region {region} ({address}) replicates from {follows}, not from the Sentinels' "
                    f"primary {elected}: not serving reads")
        if info.get("master_link_status") == "up":
            self.vouched[region] = ("replica", replid)
            return ""
        if self.vouched.get(region) == ("replica", replid):
            return ""  # it lost its primary, not its data: stale by the time the link is down
        return (f"region {region} ({address}) is a replica whose link to {follows} is down, not seen "
                f"in sync since it restarted or stopped being a master: not serving reads until it "
                f"is linked")


def load_policy(spec: str, args: Mapping[str, Any] | None = None) -> Any:
    """Import ``"package.module:ClassName"`` and build it with ``args``.

    Raises:
        ValueError: the spec is malformed, the module or class cannot be found, or the
            class has no ``decide`` method.
    """
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise ValueError(f'POLICY_CLASS must look like "package.module:ClassName"; got {spec!r}.')
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"Cannot load the read policy {spec!r}: {type(exc).__name__}: {exc}. The module must "
            f"be importable by the sidecar process: write it with write_policy_module(), or put "
            f"its folder on PYTHONPATH."
        ) from exc
    policy = cls(**dict(args or {}))
    if not callable(getattr(policy, "decide", None)):
        raise ValueError(f"The read policy {spec!r} has no decide(read_region, check, secondary) method.")
    return policy


def write_policy_module(source: str, *, module: str = "learner_policy", class_name: str | None = None) -> str:
    """Save a policy class's source as a module the sidecar process can import.

    A class defined in a notebook lives only in the kernel; the sidecar is another process.
    This writes ``source`` to ``home_dir()/policies/<module>.py`` (that folder is on the
    sidecar's PYTHONPATH when :func:`start_sidecar` starts it).

    Args:
        source: Python source defining the class (imports included).
        module: the module name to write.
        class_name: the class to use; default the last class defined in ``source``.

    Returns:
        The ``"module:ClassName"`` spec to pass as ``policy=`` to :func:`start_sidecar`.
    """
    import textwrap

    source = textwrap.dedent(source)
    tree = ast.parse(source)  # a syntax error shows here, in the notebook, not in a child's log
    classes = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
    if class_name is None:
        if not classes:
            raise ValueError("The source defines no class; write a class with a decide() method.")
        class_name = classes[-1]
    elif class_name not in classes:
        raise ValueError(f"The source defines no class named {class_name!r}; it defines {classes}.")
    folder = _policy_dir()
    (folder / f"{module}.py").write_text(source)
    sys.modules.pop(module, None)  # so an import in this kernel sees the new version
    return f"{module}:{class_name}"


def _policy_dir() -> Path:
    folder = home_dir() / "policies"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --------------------------------------------------------------------------- alerts


def _rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# The sidecar reports causes as events (severity "info"): the ticket for a region down is
# Prometheus's RegionDown, from the sidecar's sidecar_region_up gauge, routed by Alertmanager;
# whether anyone is paged is the scoring API's SLO's business (its burn-rate alerts in
# hadrlab.alert_rules): a failover the sidecar healed pages no one.
SEVERITY = {"RegionDown": "info", "ReadFailover": "info", "PrimaryMoved": "info"}


def alert(status: str, alertname: str, region: str, summary: str, starts_at: float,
          ends_at: float | None = None) -> dict:
    """Build one alert the way Alertmanager's webhook describes alerts (severity from :data:`SEVERITY`)."""
    return {
        "status": status,
        "labels": {"alertname": alertname, "region": region, "severity": SEVERITY.get(alertname, "info"),
                   "kind": "cause", "service": "feature-store"},
        "annotations": {"summary": summary},
        "startsAt": _rfc3339(starts_at),
        # Alertmanager's "not ended yet" is the zero time.
        "endsAt": _rfc3339(ends_at) if ends_at is not None else "0001-01-01T00:00:00Z",
    }


class _AlertSender:
    """Posts alerts from a queue in its own thread: a slow receiver never delays a check."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0
        self.failed = 0
        self.queue: queue.Queue = queue.Queue()
        if url:
            threading.Thread(target=self._run, name="alert-sender", daemon=True).start()

    def send(self, item: dict) -> None:
        if self.url:
            self.queue.put(item)

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            body = {"version": "4", "status": item["status"], "receiver": "hadrlab-sidecar",
                    "groupLabels": {"alertname": item["labels"]["alertname"]},
                    "commonLabels": item["labels"], "alerts": [item]}
            request = urllib.request.Request(self.url, data=json.dumps(body).encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=2) as resp:
                    resp.read()
                self.sent += 1
            except Exception as exc:
                self.failed += 1
                logger.warning("Could not POST alert %s to %s: %s", item["labels"], self.url, exc)


# --------------------------------------------------------------------------- the sidecar


class Sidecar:
    """Checks both regions, applies the policy, keeps the state, history and metrics.

    Each round asks a Sentinel which master it elected (when SENTINELS is set), PINGs both
    regions and reads their ``INFO replication``; a region whose data cannot be trusted
    (see :class:`DataTrust`) is reported to the policy as a failed check. The policy is
    called with the elected region's check first.
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.interval_s = env_number("CHECK_INTERVAL_MS", 200, env=env, above=0) / 1000
        threshold_ms = env_number("LATENCY_THRESHOLD_MS", 50, env=env, above=0)
        self.down_after = int(env_number("CONSECUTIVE", 3, env=env, above=0))
        self.up_after = int(env_number("RECOVER_CONSECUTIVE", 5, env=env, above=0))
        timeout_s = env_number("CHECK_TIMEOUT_MS", max(2 * threshold_ms, 50), env=env, above=0) / 1000
        spec = env.get("POLICY_CLASS") or DEFAULT_POLICY
        if env.get("POLICY_ARGS"):
            args = json.loads(env["POLICY_ARGS"])
        elif spec == DEFAULT_POLICY:
            args = {"latency_ms": threshold_ms, "consecutive": self.down_after,
                    "recover_consecutive": self.up_after}
        else:
            args = {}
        self.policy = load_policy(spec, args)
        self.clients: dict[str, Any] = {}
        self.addresses: dict[str, str] = {}
        for region, var in (("a", "REDIS_A"), ("b", "REDIS_B")):
            if not env.get(var):
                raise ValueError(f'{var} is not set: the sidecar checks both regions, e.g. {var}="127.0.0.1:6379".')
            host, port = parse_address(env[var], var)
            self.addresses[region] = f"{host}:{port}"
            # No retries: one PING is one observation; the policy, not the client, decides
            # what several failures mean.
            self.clients[region] = redis.Redis(
                host=host, port=port, password=env.get("REDIS_PASSWORD") or None,
                socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0), health_check_interval=0)
        # Which region is the primary: the one the Sentinels elected, asked every round.
        # Without SENTINELS it is region A, always (a static primary: a region that comes
        # back as a second master cannot be told from the real one).
        self.master_name = env.get("SENTINEL_MASTER") or "mymaster"
        self.sentinels: list[tuple[str, Any]] = []
        for item in (env.get("SENTINELS") or "").split(","):
            if item.strip():
                host, port = parse_address(item, "SENTINELS")
                self.sentinels.append((f"{host}:{port}", redis.Redis(
                    host=host, port=port, password=env.get("REDIS_PASSWORD") or None,
                    socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
                    retry=Retry(NoBackoff(), 0), health_check_interval=0, decode_responses=True)))
        self.elected: dict[str, Any] = {"address": None, "region": None, "sentinel": None, "t": None, "error": ""}
        self.primary_moves: deque = deque(maxlen=50)
        self.trust = DataTrust()
        self.untrusted: dict[str, str] = {}  # region -> why its data cannot be trusted now
        self.roles: dict[str, str] = {}  # region -> "master" / "slave" from its last INFO
        self.followed = False  # a Sentinel has named the primary at least once
        self.primary, self.secondary = "a", "b"
        self.read_region = self.primary
        self.since = time.time()
        self.last: dict[str, Check] = {}
        self.bad = Counter()  # consecutive bad checks per region
        self.good = Counter()
        self.fails = Counter()  # consecutive failed connections per region
        self.down: dict[str, float | None] = {"a": None, "b": None}  # when each went down
        self.decisions: deque = deque(maxlen=50)
        self.history: deque = deque(maxlen=20_000)
        self.checks = Counter()  # (region, ok)
        # A policy that raises (a learner's unfinished decide()) or answers something that is
        # not a region keeps reads where they are; counted and shown, so a drill that saw no
        # switch can tell "the policy chose to stay" from "the policy never answered".
        self.policy_errors = 0
        self.policy_error_log: deque = deque(maxlen=50)
        self.failover_started: float | None = None
        self.lock = threading.Lock()
        self.alerts = _AlertSender(env.get("ALERT_URL", ""))
        self.threshold_ms = threshold_ms
        self.stopped = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=3)

    def ping(self, region: str) -> Check:
        start = time.perf_counter()
        t = time.time()
        try:
            self.clients[region].ping()
            return Check(region, True, round((time.perf_counter() - start) * 1000, 3), t)
        except Exception as exc:
            return Check(region, False, round((time.perf_counter() - start) * 1000, 3), t,
                         f"{type(exc).__name__}: {exc}")

    def inspect(self, region: str) -> tuple[Check, dict | None]:
        """PING a region, then read its ``INFO replication`` (None if the PING failed)."""
        check = self.ping(region)
        if not check.ok:
            return check, None
        try:
            return check, self.clients[region].info("replication")
        except Exception as exc:
            # It answered a PING but not INFO within the timeout: as good as down.
            return Check(region, False, check.latency_ms, check.t,
                         f"INFO replication failed after a PING: {type(exc).__name__}: {exc}"), None

    def ask_sentinels(self) -> tuple[str | None, str, str]:
        """Return (elected master "host:port" or None, the Sentinel that answered, errors).

        The Sentinel that answered last is asked first; on an error, the next one.
        """
        errors = []
        for i, (where, client) in enumerate(self.sentinels):
            try:
                answer = client.sentinel_get_master_addr_by_name(self.master_name)
            except Exception as exc:
                errors.append(f"Sentinel {where}: {type(exc).__name__}: {exc}")
                continue
            if not answer:
                errors.append(f"Sentinel {where} knows no master named {self.master_name!r}")
                continue
            if i:  # remember who answered: ask it first next time
                self.sentinels.insert(0, self.sentinels.pop(i))
            return f"{answer[0]}:{int(answer[1])}", where, "; ".join(errors)
        return None, "", "; ".join(errors)

    def check_once(self) -> None:
        """Ask a Sentinel, check both regions at once, judge their data, apply the policy."""
        asked = self.pool.submit(self.ask_sentinels) if self.sentinels else None
        inspected = dict(zip(("a", "b"), self.pool.map(self.inspect, ("a", "b"))))
        elected = None
        if asked is not None:
            address, where, errors = asked.result()
            elected = self.follow(address, where, errors)
        checks = {r: self.judge(check, info, elected) for r, (check, info) in inspected.items()}
        self.apply(checks[self.primary], checks[self.secondary])

    def judge(self, check: Check, info: Mapping[str, Any] | None, elected: str | None) -> Check:
        """Turn a healthy check of a region whose data cannot be trusted into a failed one."""
        region = check.region
        if info is None:
            self.untrusted.pop(region, None)  # unreachable: the PING's failure says enough
            return check
        self.roles[region] = str(info.get("role", ""))
        problem = self.trust.judge(region, self.addresses[region], info, elected)
        if not problem:
            self.untrusted.pop(region, None)
            return check
        if self.untrusted.get(region) != problem:
            logger.warning("Not reading from region %s: %s.", region, problem)
        self.untrusted[region] = problem
        return Check(region, False, check.latency_ms, check.t, problem)

    def follow(self, address: str | None, sentinel: str, errors: str) -> str | None:
        """Make the region the Sentinels elected the primary; return the elected address.

        Returns None (judge data without it) when no Sentinel answered or the address is
        neither REDIS_A nor REDIS_B; the primary then stays where it was.
        """
        now = time.time()
        with self.lock:
            if address is None:
                if not self.elected["error"]:
                    logger.warning("No Sentinel answered which master is elected (%s); the primary "
                                   "stays region %s.", errors, self.primary)
                self.elected.update(error=errors or "no answer", t=now)
                return None
            region = next((r for r, a in self.addresses.items() if a == address), None)
            self.elected.update(address=address, region=region, sentinel=sentinel, t=now, error="")
            if region is None:
                self.elected["error"] = (f"the elected master {address} is neither REDIS_A "
                                         f"({self.addresses['a']}) nor REDIS_B ({self.addresses['b']})")
                logger.warning("%s; the primary stays region %s.", self.elected["error"], self.primary)
                return None
            if region != self.primary:
                self._move_primary(region, address, sentinel, now)
            self.followed = True
            return address

    def _move_primary(self, region: str, address: str, sentinel: str, now: float) -> None:
        old = self.primary
        self.primary, self.secondary = region, old
        if not self.followed and not self.decisions:
            # The sidecar started after a failover: begin where the primary is, quietly.
            self.read_region, self.since = region, now
            logger.info("The Sentinels name region %s (%s) as primary; reads start there.", region, address)
            return
        self.primary_moves.append({"t": now, "from": old, "to": region, "address": address, "sentinel": sentinel})
        logger.warning("The Sentinels elected region %s (%s) as primary (was region %s).", region, address, old)
        self.alerts.send(alert("firing", "PrimaryMoved", region,
                               f"The Sentinels elected region {region} ({address}) as the primary, "
                               f"instead of region {old}; the sidecar now checks it as the primary "
                               f"read region.", now))
        if self.read_region == region and self.failover_started is not None:
            self.alerts.send(alert("resolved", "ReadFailover", region,
                                   f"Feature reads are on the primary region {region} (elected by the "
                                   f"Sentinels).", self.failover_started, now))
            self.failover_started = None

    def apply(self, primary: Check, secondary: Check) -> None:
        with self.lock:
            for check in (primary, secondary):
                self.last[check.region] = check
                self.checks[(check.region, check.ok)] += 1
                bad = not check.ok or (check.latency_ms or 0) > self.threshold_ms
                self.bad[check.region] = self.bad[check.region] + 1 if bad else 0
                self.good[check.region] = 0 if bad else self.good[check.region] + 1
                self._track_down(check)
            policy_error = ""
            try:
                new = self.policy.decide(self.read_region, primary, secondary)
            except Exception as exc:  # a learner's policy may raise: keep the last decision
                policy_error = f"{type(exc).__name__}: {exc}"
                new = self.read_region
            else:
                if new not in self.clients:
                    policy_error = f"decide() returned {new!r}, not a region ('a' or 'b')"
                    new = self.read_region
            if policy_error:
                self._record_policy_error(policy_error, primary.t)
            reason = None
            other = secondary if new == primary.region else primary
            if new in self.untrusted and other.ok and other.region not in self.untrusted:
                # Whatever the policy says (a learner's may name regions by letter): never
                # serve reads from data known to be wrong while the other region is fit.
                reason = f"the policy chose region {new}, but {self.untrusted[new]}"
                new = other.region
            if new != self.read_region:
                self._switch(new, primary, reason)
            for check in (primary, secondary):
                self.history.append({**asdict(check), "read_region": self.read_region, "primary": self.primary,
                                     "policy_error": policy_error})

    def _record_policy_error(self, error: str, t: float) -> None:
        self.policy_errors += 1
        last = self.policy_error_log[-1]["error"] if self.policy_error_log else None
        self.policy_error_log.append({"t": t or time.time(), "error": error})
        if error != last:  # once per new message: a policy raising every round would flood the log
            logger.warning("The policy %r failed: %s; reads stay on region %s until it answers a region.",
                           self.policy, error, self.read_region)

    def _track_down(self, check: Check) -> None:
        region = check.region
        self.fails[region] = 0 if check.ok else self.fails[region] + 1
        if self.down[region] is None and self.fails[region] >= self.down_after:
            self.down[region] = check.t
            logger.warning("Region %s (%s) is DOWN: %d failed checks in a row; last: %s",
                           region, self.addresses[region], self.fails[region], check.error)
            self.alerts.send(alert("firing", "RegionDown", region,
                                   f"Redis of region {region} ({self.addresses[region]}) failed "
                                   f"{self.fails[region]} health checks in a row: {check.error}", check.t))
        elif self.down[region] is not None and check.ok and self.good[region] >= self.up_after:
            started = self.down[region]
            self.down[region] = None
            logger.info("Region %s (%s) is UP again after %.1f s.", region, self.addresses[region],
                        check.t - started)
            self.alerts.send(alert("resolved", "RegionDown", region,
                                   f"Redis of region {region} answers health checks again "
                                   f"({self.up_after} in a row).", started, check.t))

    def _switch(self, new: str, check: Check, reason: str | None = None) -> None:
        old, now = self.read_region, time.time()
        reason = reason or (f"primary {check.region} check: ok={check.ok}, latency {check.latency_ms} ms"
                            + (f", {check.error}" if check.error else ""))
        self.decisions.append({"t": now, "from": old, "to": new, "reason": reason})
        self.read_region, self.since = new, now
        logger.warning("Reads move from region %s to region %s (%s).", old, new, reason)
        if new != self.primary:
            self.failover_started = now
            self.alerts.send(alert("firing", "ReadFailover", new,
                                   f"Feature reads moved from region {old} to region {new}: {reason}.", now))
        else:
            started = self.failover_started or now
            self.failover_started = None
            self.alerts.send(alert("resolved", "ReadFailover", new,
                                   f"Feature reads are back on the primary region {new}.", started, now))

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stopped.is_set():
            try:
                self.check_once()
            except Exception:
                logger.exception("A check round failed unexpectedly; carrying on.")
            next_at += self.interval_s
            delay = next_at - time.monotonic()
            if delay < 0:  # checks took longer than the interval: start the next one now
                next_at, delay = time.monotonic(), 0
            self.stopped.wait(delay)

    # views ------------------------------------------------------------------------------

    def _region_view(self, region: str) -> dict:
        check = self.last.get(region)
        return {"region": region, "address": self.addresses[region],
                "ok": check.ok if check else None, "latency_ms": check.latency_ms if check else None,
                "error": check.error if check else "", "t": check.t if check else None,
                "role": self.roles.get(region), "untrusted": self.untrusted.get(region, ""),
                "consecutive_bad": self.bad[region], "consecutive_good": self.good[region],
                "down_since": self.down[region]}

    def state(self) -> dict:
        with self.lock:
            return {"read_region": self.read_region, "since": self.since, "t": time.time(),
                    "primary": self._region_view(self.primary),
                    "secondary": self._region_view(self.secondary),
                    "decisions": list(self.decisions)[-20:], "policy": repr(self.policy),
                    "elected": {k: v for k, v in self.elected.items()},
                    "primary_moves": list(self.primary_moves)[-20:],
                    "check_interval_ms": self.interval_s * 1000,
                    "policy_errors": {"count": self.policy_errors,
                                      "last": self.policy_error_log[-1] if self.policy_error_log else None,
                                      "recent": list(self.policy_error_log)[-20:]},
                    "alerts": {"sent": self.alerts.sent, "failed": self.alerts.failed}}

    def history_since(self, since: float) -> list[dict]:
        with self.lock:
            return [h for h in self.history if h["t"] > since]

    def metrics(self) -> str:
        with self.lock:
            text = MetricsText()
            text.family("sidecar_read_region", "gauge", "1 for the region that serves reads.")
            for r in self.clients:
                text.sample("sidecar_read_region", int(r == self.read_region), region=r)
            text.family("sidecar_checks_total", "counter", "Health checks by region and result.")
            for (region, ok), n in sorted(self.checks.items()):
                text.sample("sidecar_checks_total", n, region=region, result="ok" if ok else "fail")
            text.family("sidecar_check_latency_ms", "gauge", "Latency of the last PING.")
            for region, check in sorted(self.last.items()):
                text.sample("sidecar_check_latency_ms", check.latency_ms or 0, region=region)
            text.family("sidecar_region_up", "gauge", "0 while a region is considered down.")
            for r in self.clients:
                text.sample("sidecar_region_up", int(self.down[r] is None), region=r)
            text.family("sidecar_primary_region", "gauge", "1 for the region checked as the primary.")
            for r in self.clients:
                text.sample("sidecar_primary_region", int(r == self.primary), region=r)
            text.family("sidecar_region_untrusted", "gauge", "1 while a region's data cannot be trusted.")
            for r in self.clients:
                text.sample("sidecar_region_untrusted", int(r in self.untrusted), region=r)
            text.family("sidecar_read_switches_total", "counter", "Times reads changed region.")
            text.sample("sidecar_read_switches_total", sum(1 for _ in self.decisions))
            text.family("sidecar_policy_errors_total", "counter",
                        "Rounds in which the policy raised or answered no region (reads stayed put).")
            text.sample("sidecar_policy_errors_total", self.policy_errors)
            text.family("sidecar_alerts_sent_total", "counter", "Alerts delivered to ALERT_URL.")
            text.sample("sidecar_alerts_sent_total", self.alerts.sent)
            text.family("sidecar_alerts_failed_total", "counter", "Alerts that could not be delivered.")
            text.sample("sidecar_alerts_failed_total", self.alerts.failed)
            return text.render()


# --------------------------------------------------------------------------- HTTP

# What GET /state, /history and the alert receiver answer, and what the receiver takes: the
# OpenAPI document of each server (/openapi.json, /docs) is built from these.


class RegionView(BaseModel):
    region: Literal["a", "b"]
    address: str
    ok: bool | None = Field(description="The last check's result; null before the first.")
    latency_ms: float | None
    error: str
    t: float | None
    role: str | None = Field(description='"master" or "slave", from its last INFO replication.')
    untrusted: str = Field(description="Why its data cannot be trusted now; empty if it can.")
    consecutive_bad: int
    consecutive_good: int
    down_since: float | None


class PolicyErrors(BaseModel):
    count: int
    last: dict[str, Any] | None
    recent: list[dict[str, Any]]


class AlertCounts(BaseModel):
    sent: int
    failed: int


class SidecarState(BaseModel):
    read_region: Literal["a", "b"] = Field(description="The region that should serve feature reads.")
    since: float = Field(description="Epoch seconds of the last switch (or the start).")
    t: float
    primary: RegionView
    secondary: RegionView
    decisions: list[dict[str, Any]] = Field(description="The last switches: t, from, to, reason.")
    policy: str
    elected: dict[str, Any] = Field(description="What the Sentinels elected: address, region, sentinel, t, error.")
    primary_moves: list[dict[str, Any]]
    check_interval_ms: float
    policy_errors: PolicyErrors
    alerts: AlertCounts


class CheckRecord(BaseModel):
    t: float
    region: Literal["a", "b"]
    ok: bool
    latency_ms: float | None
    error: str
    read_region: Literal["a", "b"]
    primary: Literal["a", "b"]
    policy_error: str = Field(description="Empty unless the policy raised or answered no region.")


class Alive(BaseModel):
    status: Literal["alive"]


class Alert(BaseModel):
    """One alert, as Alertmanager describes it (other fields are kept out of the listing)."""

    # Not "alerts": an object with that field is a webhook body.
    model_config = ConfigDict(extra="allow", json_schema_extra={"not": {"required": ["alerts"]}})
    status: str = Field(None, description='"firing" or "resolved".')
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    startsAt: str = Field(None, description="RFC 3339.")
    endsAt: str = Field(None, description='RFC 3339; "0001-01-01T00:00:00Z" while firing.')


class Webhook(BaseModel):
    """Alertmanager's webhook body: the alerts of one group, and the route (receiver)."""

    model_config = ConfigDict(extra="allow")
    alerts: list[Alert]
    receiver: str = Field(None, description='The route that delivered it: "page", "ticket", ...')
    status: str = Field(None)


AlertsBody = Union[Webhook, list[Alert], Alert]


class ReceivedAlert(BaseModel):
    t: float = Field(description="Epoch seconds when the receiver got it.")
    status: str
    receiver: str
    alertname: str
    region: str
    summary: str
    startsAt: str
    endsAt: str
    labels: dict[str, str]


class Received(BaseModel):
    received: int = Field(description="How many alerts the body carried.")


class Cleared(BaseModel):
    cleared: int


_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
Since = Annotated[str, Query(description="Only checks newer than this, epoch seconds.",
                             json_schema_extra={"type": "number", "default": 0})]


def _since(raw: str) -> float:
    if _NUMBER.fullmatch(raw) and math.isfinite(value := float(raw)):
        return value
    raise ValueError(f"since must be a number of epoch seconds, e.g. ?since={time.time():.1f} "
                     f"(or left out for every check); got {raw!r}.")


def create_sidecar_app(sidecar: Sidecar) -> Any:
    """The sidecar's HTTP API around a running :class:`Sidecar`: /state, /history, /metrics."""
    app = FastAPI(title="hadrlab health-checking sidecar", version="1",
                  description="Which feature-store region should serve reads, and why: the "
                              "checks of both regions, the policy's decisions, the Sentinels' choice.")

    # Plain functions: FastAPI runs them in its thread pool, so waiting for the checker's
    # lock never stalls the event loop.
    @app.get("/state", response_model=SidecarState)
    def state() -> Response:
        """The read region now, both regions' last checks, recent decisions and policy errors."""
        return JSONResponse(sidecar.state())

    @app.get("/healthz", response_model=Alive)
    def healthz() -> Response:
        """Liveness: 200 while the process serves."""
        return JSONResponse({"status": "alive"})

    @app.get("/history", response_model=list[CheckRecord], responses=apidocs.errors(422))
    def history(since: Since = "0") -> Response:
        """The check log, oldest first: one record per region and round."""
        try:
            after = _since(since)
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        return JSONResponse(sidecar.history_since(after))

    @app.get("/metrics", response_class=PrometheusText, responses=METRICS)
    def metrics() -> Response:
        """Read region, checks, latencies, regions up and trusted, switches, policy errors, alerts."""
        return PrometheusText(sidecar.metrics(), media_type=CONTENT_TYPE)

    apidocs.allow_header(app)
    return app


def _alerts_of(body: Any) -> tuple[list[dict], dict]:
    """The alerts of a webhook body, a list of alerts or one alert, and the envelope."""
    example = ('Send Alertmanager webhook JSON {"receiver": "page", "alerts": [{"status": "firing", '
               '"labels": {"alertname": "RegionDown"}}]}, a list of alerts, or one alert')
    if isinstance(body, dict) and "alerts" in body:
        envelope, alerts = body, body["alerts"]
        if not isinstance(alerts, list):
            raise ValueError(f'"alerts" must be a list of alert objects. {example}.')
        for key in ("receiver", "status"):
            if key in envelope and not isinstance(envelope[key], str):
                raise ValueError(f'"{key}" must be a string. {example}.')
    elif isinstance(body, list):
        envelope, alerts = {}, body
    elif isinstance(body, dict):
        envelope, alerts = {}, [body]
    else:
        raise ValueError(f"{example}; got {type(body).__name__}.")
    for i, item in enumerate(alerts):
        if not isinstance(item, dict):
            raise ValueError(f"Alert {i} must be an object; got {type(item).__name__}. {example}.")
        if "alerts" in item:
            raise ValueError(f'Alert {i} has a field "alerts": send one webhook body, not a list '
                             f"of them. {example}.")
        for key in ("status", "startsAt", "endsAt"):
            if key in item and not isinstance(item[key], str):
                raise ValueError(f'Alert {i}: "{key}" must be a string. {example}.')
        for key in ("labels", "annotations"):
            value = item.get(key)
            if value is not None and not (isinstance(value, dict)
                                          and all(isinstance(v, str) for v in value.values())):
                raise ValueError(f'Alert {i}: "{key}" must be an object of strings. {example}.')
    return alerts, envelope


def create_receiver_app() -> Any:
    """The alert receiver: a webhook that keeps what it gets and lists it at GET /alerts."""
    app = FastAPI(title="hadrlab alert receiver", version="1",
                  description="Receives Alertmanager-style webhooks (from Alertmanager or the "
                              "sidecar) and lists every alert with the time it arrived.")
    received: list[dict] = []
    lock = threading.Lock()
    doc = {"response_model": Received, "responses": apidocs.errors(400, 422),
           "openapi_extra": apidocs.json_body(AlertsBody, example={
               "receiver": "page", "status": "firing",
               "alerts": [{"status": "firing", "labels": {"alertname": "RegionDown", "region": "a"},
                           "annotations": {"summary": "Region a is down."}}]})}

    async def post(request: Request) -> Response:
        """Store the alerts of a webhook body, a list of alerts, or one alert."""
        raw = await request.body()
        try:
            body = json.loads(raw or b"null")
        except ValueError as exc:
            return JSONResponse({"detail": f"The body is not JSON ({exc}); send Alertmanager webhook JSON."},
                                status_code=400)
        try:
            alerts, envelope = _alerts_of(body)
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        t = time.time()
        rows = []
        for item in alerts:
            labels, notes = item.get("labels") or {}, item.get("annotations") or {}
            rows.append({"t": t, "status": item.get("status", envelope.get("status", "")),
                         # Alertmanager's webhook names the route that delivered it: "page", "ticket".
                         "receiver": envelope.get("receiver", ""),
                         "alertname": labels.get("alertname", ""), "region": labels.get("region", ""),
                         "summary": notes.get("summary", ""), "startsAt": item.get("startsAt", ""),
                         "endsAt": item.get("endsAt", ""), "labels": labels})
        with lock:
            received.extend(rows)
        for row in rows:
            logger.info("Alert %s %s region=%s: %s", row["status"], row["alertname"], row["region"], row["summary"])
        return JSONResponse({"received": len(rows)})

    for path in ("/alerts", "/", "/api/v2/alerts"):
        app.post(path, **doc)(post)

    @app.get("/alerts", response_model=list[ReceivedAlert])
    def listing() -> Response:
        """Every alert received, oldest first."""
        with lock:
            return JSONResponse(list(received))

    @app.delete("/alerts", response_model=Cleared)
    def clear() -> Response:
        """Forget every alert received; say how many there were."""
        with lock:
            n = len(received)
            received.clear()
        return JSONResponse({"cleared": n})

    @app.get("/healthz", response_model=Alive)
    def healthz() -> Response:
        """Liveness: 200 while the process serves."""
        return JSONResponse({"status": "alive"})

    apidocs.allow_header(app)
    return app


def _serve(app: Any, port: int, stop: threading.Event | None = None) -> None:
    import uvicorn

    # uvicorn's handlers turn SIGTERM and Ctrl+C into a graceful shutdown.
    uvicorn.Server(uvicorn.Config(app, host=os.environ.get("HOST") or HOST, port=port, access_log=False,
                                  log_config=None, log_level="warning", lifespan="off")).run()
    if stop is not None:
        stop.set()


def _run_sidecar() -> int:
    try:
        port = int(os.environ.get("PORT", ""))
    except ValueError:
        logger.error("PORT is not set or not a number: the sidecar needs a port, e.g. "
                     "`PORT=8100 REDIS_A=127.0.0.1:6379 REDIS_B=127.0.0.1:6380 python -m hadrlab.sidecar`.")
        return 2
    try:
        sidecar = Sidecar(os.environ)
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    logger.info("Sidecar on %s:%d: checking A=%s and B=%s every %g ms with %r; alerts to %s.",
                HOST, port, sidecar.addresses["a"], sidecar.addresses["b"], sidecar.interval_s * 1000,
                sidecar.policy, os.environ.get("ALERT_URL") or "(nowhere)")
    sidecar.check_once()  # /state has real checks from the first answer on
    threading.Thread(target=sidecar.run, name="checker", daemon=True).start()
    _serve(create_sidecar_app(sidecar), port, sidecar.stopped)
    return 0


def _run_receiver() -> int:
    try:
        port = int(os.environ.get("PORT", ""))
    except ValueError:
        logger.error("PORT is not set or not a number, e.g. `PORT=9093 python -m hadrlab.sidecar alerts`.")
        return 2
    logger.info("Alert receiver on %s:%d: POST alerts to /alerts, list them at GET /alerts.", HOST, port)
    _serve(create_receiver_app(), port)
    return 0


# --------------------------------------------------------------------------- helpers


def _child_env(env: Mapping[str, str] | None, extra: Mapping[str, Any]) -> dict[str, str]:
    package_root = str(Path(__file__).resolve().parents[1])
    # The package, the notebook's folder and the policies folder, so that a learner's
    # policy module is importable by the sidecar process.
    paths = [package_root, str(_policy_dir()), os.getcwd(), os.environ.get("PYTHONPATH")]
    return {"PYTHONPATH": os.pathsep.join(p for p in paths if p),
            **{k: str(v) for k, v in (env or {}).items()},
            **{k: str(v) for k, v in extra.items()}}


def start_sidecar(
    env: Mapping[str, str],
    *,
    name: str = "sidecar",
    port: int | None = None,
    alert_url: str | None = None,
    check_interval_ms: float = 200,
    latency_threshold_ms: float = 50,
    consecutive: int = 3,
    recover_consecutive: int = 5,
    check_timeout_ms: float | None = None,
    policy: str | type | None = None,
    policy_args: Mapping[str, Any] | None = None,
    timeout_s: float = 15.0,
) -> Child:
    """Start the health-checking sidecar as a child process and wait until /state answers.

    Args:
        env: the connection variables, e.g. ``fs.connection_env()`` (REDIS_A, REDIS_B,
            REDIS_PASSWORD, and SENTINELS/SENTINEL_MASTER to follow the elected primary).
        name: the child's name.
        port: the port; a free one by default.
        alert_url: ALERT_URL, e.g. ``receiver.url + "/alerts"``; None sends no alerts.
        check_interval_ms, latency_threshold_ms, consecutive, recover_consecutive: the
            check cadence and the default :class:`ThresholdPolicy`'s parameters.
        check_timeout_ms: CHECK_TIMEOUT_MS; default twice the latency threshold.
        policy: another policy: ``"module:Class"`` (see :func:`write_policy_module`) or a
            class defined in an importable module (not in the notebook itself).
        policy_args: keyword arguments for ``policy``.
        timeout_s: how long to wait for /state.

    Returns:
        The running :class:`~hadrlab.processes.Child`; GET ``child.url + "/state"``.
    """
    if isinstance(policy, type):
        if policy.__module__ in ("__main__", "builtins"):
            raise ValueError(
                f"The class {policy.__name__} is defined in the notebook, which the sidecar process "
                "cannot import. Pass its source to write_policy_module() and give start_sidecar the "
                "'module:Class' string it returns.")
        policy = f"{policy.__module__}:{policy.__qualname__}"
    port = port or find_free_port()
    extra: dict[str, Any] = {"PORT": port, "CHECK_INTERVAL_MS": check_interval_ms,
                             "LATENCY_THRESHOLD_MS": latency_threshold_ms, "CONSECUTIVE": consecutive,
                             "RECOVER_CONSECUTIVE": recover_consecutive}
    if check_timeout_ms:
        extra["CHECK_TIMEOUT_MS"] = check_timeout_ms
    if alert_url:
        extra["ALERT_URL"] = alert_url
    if policy:
        extra["POLICY_CLASS"] = policy
        extra["POLICY_ARGS"] = json.dumps(dict(policy_args or {}))
    return start_process(name, [sys.executable, "-m", "hadrlab.sidecar"], port=port,
                         env=_child_env(env, extra),
                         ready=lambda child: wait_for_http(child, "/state", timeout_s=timeout_s))


def start_alert_receiver(*, name: str = "alert-receiver", port: int | None = None,
                         timeout_s: float = 10.0) -> Child:
    """Start the alert webhook receiver; alerts go to ``child.url + "/alerts"``.

    Returns:
        The running :class:`~hadrlab.processes.Child`. ``fetch_alerts(child)`` lists what
        it received.
    """
    port = port or find_free_port()
    return start_process(name, [sys.executable, "-m", "hadrlab.sidecar", "alerts"], port=port,
                         env=_child_env(None, {"PORT": port}),
                         ready=lambda child: wait_for_http(child, "/healthz", timeout_s=timeout_s))


def fetch_alerts(receiver: Child | str, *, as_frame: bool = False) -> Any:
    """Return the alerts a receiver got (a list of dicts, or a DataFrame with ``as_frame``)."""
    base = receiver if isinstance(receiver, str) else receiver.url
    with urllib.request.urlopen(f"{base.rstrip('/')}/alerts", timeout=5) as resp:
        rows = json.loads(resp.read())
    if as_frame:
        import pandas as pd

        columns = ["t", "status", "alertname", "region", "receiver", "summary", "startsAt", "endsAt"]
        return pd.DataFrame(rows, columns=columns + ["labels"])[columns]
    return rows


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m hadrlab.sidecar [alerts]``."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, datefmt="%H:%M:%S",
                        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s")
    if argv[:1] == ["alerts"]:
        return _run_receiver()
    if not argv:
        return _run_sidecar()
    print("usage: python -m hadrlab.sidecar [alerts]   (configuration in environment variables)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
