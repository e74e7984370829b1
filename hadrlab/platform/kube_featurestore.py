"""Lab 02's feature store on a Kubernetes cluster: infra/k8s/redis.yaml, driven and measured.

The local backend's :class:`hadrlab.featurestore.FeatureStore` runs the primary, the replica
and three Sentinels as processes the notebook can reach. On a cluster, Sentinel hands out
in-cluster names (``redis-a-0.redis-a``) that the notebook's machine cannot resolve, so this
class splits the work in two:

- **commands** go through the API server: ``redis-cli`` exec'd inside the Redis and Sentinel
  pods reads roles, offsets and the current primary, and injects faults from inside the
  pod (``DEBUG SEGFAULT`` crashes the server, ``DEBUG SLEEP`` freezes it: Linux ignores
  SIGKILL and SIGSTOP sent to PID 1 from inside its own container, and redis-server is
  PID 1 in the Redis image). Network faults are Chaos Mesh NetworkChaos (see
  :class:`hadrlab.platform.kube.KubePlatform`);
- **measurements** run inside the cluster as one-pod Jobs of the course image
  (``python -m hadrlab.featurestore write-probe|seq-probe``, the very loops the local
  measurements use); each prints one CSV row per write, which the notebook reads from the
  pod's log while the Job runs. Timestamps are epoch seconds from the pod's clock, which on
  kind is the host's.

Sentinel's events come from the Sentinel pods' logs (``+sdown``, ``+odown``,
``+switch-master``, ...), timed by the kubelet's log timestamps.

Example::

    from hadrlab.platform.kube import KubePlatform
    from hadrlab.platform.kube_featurestore import start_kube_feature_store

    platform = KubePlatform()
    fs = start_kube_feature_store(platform, down_after_ms=1000)
    fs.current_primary()                      # 'a'
    fs.measure_write_rto(kill="primary")      # WriteRtoResult(kill of region a ...)
    fs.measure_rpo(mode="wait")               # RpoResult(wait ...: 0 of them LOST)
"""

from __future__ import annotations

import contextlib
import math
import re
import secrets
import threading
import time
from collections import Counter
from datetime import datetime
from typing import Any

from hadrlab.errors import HadrError, ServiceNotReady
from hadrlab.featurestore import (
    MASTER_NAME,
    READ_HASH_FIELD_SCRIPT,
    ReturnResult,
    RpoResult,
    WriteRtoResult,
    _region_of_host,
    parse_hash_field_reply,
    rpo_options,
)

__all__ = ["KubeFeatureStore", "KubeLagSampler", "redis_manifests", "restart_delay_s", "start_kube_feature_store",
           "parse_sentinel_log", "parse_redis_log"]

REDIS_PODS = {"a": "redis-a-0", "b": "redis-b-0"}
# One Sentinel per site (infra/k8s/redis.yaml): region A, region B, the witness.
SENTINEL_PODS = ("sentinel-a-0", "sentinel-b-0", "sentinel-w-0")
STATEFULSETS = ("redis-a", "redis-b", "sentinel-a", "sentinel-b", "sentinel-w")
SENTINELS_IN_CLUSTER = ",".join(f"{p}.sentinel:26379" for p in SENTINEL_PODS)
PASSWORD_SECRET = ("redis-auth", "password")
REGION_LABEL = "topology.kubernetes.io/region"
# The Sentinel events worth a line on a timeline (others, e.g. +slave-reconf-sent, are steps).
SENTINEL_EVENTS = ("+sdown", "-sdown", "+odown", "-odown", "+try-failover", "+elected-leader",
                   "+selected-slave", "+promoted-slave", "+switch-master", "+convert-to-slave", "+slave",
                   "+failover-end", "-failover-abort-no-good-slave")
# redis-cli with the password the container already has in its environment: the password
# never travels through the notebook or the exec call's arguments.
# The password reaches redis-cli through its environment (REDISCLI_AUTH), never its
# arguments, which anyone who can run `ps` in the pod would read.
_REDIS_CLI = ["sh", "-c", 'REDISCLI_AUTH="$REDIS_PASSWORD" exec redis-cli "$@"', "redis-cli"]
_SENTINEL_CLI = [*_REDIS_CLI, "-p", "26379"]


SETTINGS_ANNOTATION = "hadrlab.io/store-settings"


def redis_manifests(*, down_after_ms: int = 1000, min_replicas_to_write: int = 0,
                    failover_timeout_ms: int = 2000) -> list[dict]:
    """infra/k8s/redis.yaml with Lab 02's settings: Sentinel's down-after, and min-replicas-to-write.

    Args:
        down_after_ms: Sentinel's ``down-after-milliseconds`` (the manifest says 1000).
        min_replicas_to_write: when > 0, each Redis refuses writes unless that many replicas
            are linked and less than 10 s behind (what keeps a returning empty primary from
            taking writes).
        failover_timeout_ms: Sentinel's ``failover-timeout``.

    Returns:
        The manifest's documents, edited copies.
    """
    from hadrlab.course import course_file
    from hadrlab.platform.manifests import load_manifest

    docs = load_manifest(course_file("infra/k8s/redis.yaml"), validate=False)  # fresh dicts, ours to edit
    # Every StatefulSet carries the settings on its pod template, so that a change rolls ALL
    # of them: a fresh store, region A the primary by the manifest and the Sentinels watching
    # it from scratch, as the local backend starts a fresh store per setting. Rolling the
    # Redis pods alone would restart them by the manifest's roles while the Sentinels still
    # remember whichever region they last promoted.
    settings = f"down-after={int(down_after_ms)},min-replicas={int(min_replicas_to_write)},failover-timeout={int(failover_timeout_ms)}"
    for doc in docs:
        if doc.get("kind") != "StatefulSet":
            continue
        template = doc["spec"]["template"]
        template.setdefault("metadata", {}).setdefault("annotations", {})[SETTINGS_ANNOTATION] = settings
        spec = template["spec"]
        if doc["metadata"]["name"].startswith("sentinel-"):
            init = spec["initContainers"][0]
            script = init["command"][-1]
            for key, value in (("down-after-milliseconds", down_after_ms), ("failover-timeout", failover_timeout_ms)):
                script, n = re.subn(rf"(sentinel {key} {MASTER_NAME}) \d+", rf"\g<1> {int(value)}", script)
                if n != 1:
                    raise HadrError(f"infra/k8s/redis.yaml: the Sentinel config script has no line "
                                    f"'sentinel {key} {MASTER_NAME} N' to set; restore it from git.")
            init["command"][-1] = script
        else:
            container = spec["containers"][0]
            # A crashed server stays down until Sentinel can have failed over (see the manifest).
            for item in container["env"]:
                if item["name"] == "RESTART_DELAY_S":
                    item["value"] = str(restart_delay_s(down_after_ms))
            if min_replicas_to_write > 0:
                container["args"] = [*container["args"], "--min-replicas-to-write", str(int(min_replicas_to_write)),
                                     "--min-replicas-max-lag", "10"]
    return docs


def restart_delay_s(down_after_ms: int) -> int:
    """How long a crashed Redis stays down before it restarts: past Sentinel's failover.

    down-after, plus the failover itself (about 1.5 s), plus a margin; at least the 8 s the
    manifest says. Shorter, and a crashed primary could be back, empty, before Sentinel
    noticed, and its replica would resync from it and lose every key.
    """
    return max(8, math.ceil(down_after_ms / 1000 + 1.5 + 4))


def parse_sentinel_log(text: str, source: str) -> list[dict]:
    """Sentinel's events from a log read with timestamps (``kubectl logs --timestamps``).

    A line looks like ``2026-11-27T23:40:01.123456789Z 1:X 27 Nov 2026 23:40:01.123 #
    +switch-master features redis-a-0.redis-a 6379 redis-b-0.redis-b 6379``; the kubelet's
    RFC 3339 prefix gives the time (the server's own stamp has no time zone).

    Returns:
        ``{"t", "kind", "detail", "source"}`` dicts, for the events in :data:`SENTINEL_EVENTS`.
    """
    rows = []
    for line in text.splitlines():
        stamp, _, rest = line.partition(" ")
        words = rest.split()
        kind = next((w for w in words if w in SENTINEL_EVENTS), None)
        if kind is None:
            continue
        t = _rfc3339(stamp)
        if t is None:
            continue
        detail = rest.split(kind, 1)[1].strip()
        rows.append({"t": t, "kind": kind, "detail": detail, "source": source})
    return rows


def _rfc3339(stamp: str) -> float | None:
    """``2026-11-27T23:40:01.123456789Z`` -> epoch seconds (nanoseconds cut to microseconds)."""
    if not stamp.endswith("Z") or "T" not in stamp:
        return None
    head, _, frac = stamp[:-1].partition(".")
    try:
        base = datetime.fromisoformat(head + "+00:00").timestamp()
    except ValueError:
        return None
    return base + (float("0." + frac[:6]) if frac.isdigit() else 0.0)


def parse_redis_log(text: str) -> list[dict]:
    """A Redis server's own log, read with timestamps: its role over time, line by line.

    A line looks like ``2026-11-27T23:40:01.123456789Z 1:S 27 Nov 2026 23:40:01.123 *
    Connecting to MASTER redis-b-0.redis-b:6379``: the letter after the pid is the role the
    server had when it wrote the line (``M`` master, ``S`` replica, ``C`` a child process).

    Returns:
        ``{"t", "role", "message"}`` dicts (role ``"master"``, ``"slave"``, or ``""`` for a
        line that is not the server's own, e.g. the manifest's wrapper's).
    """
    roles = {"M": "master", "S": "slave"}
    rows = []
    for line in text.splitlines():
        stamp, _, rest = line.partition(" ")
        t = _rfc3339(stamp)
        if t is None:
            continue
        head, _, tail = rest.partition(" ")
        pid, sep, letter = head.partition(":")
        if sep and pid.isdigit() and len(letter) == 1:
            # "27 Nov 2026 23:40:01.123 * message": skip the server's own stamp and level.
            words = tail.split(" ", 5)
            rows.append({"t": t, "role": roles.get(letter, ""), "message": words[5] if len(words) > 5 else tail})
        else:
            rows.append({"t": t, "role": "", "message": rest})
    return rows


def return_times(log_rows: list[dict], sentinel_events: list[dict], *, host: str,
                 since: float) -> tuple[float | None, float | None, float | None]:
    """When a crashed Redis came back, became a replica, and finished its sync, after ``since``.

    From its own log (:func:`parse_redis_log`): back = its last "Ready to accept connections"
    (the restarted server); replica = its first line as a replica after that, or Sentinel's
    ``+convert-to-slave`` naming ``host``, whichever came first; synced = "sync: Finished
    with success" or a successful partial resynchronization.

    Returns:
        ``(started_at, converted_at, linked_at)``, epoch seconds, None where not (yet) seen.
    """
    rows = [r for r in log_rows if r["t"] >= since]
    ready = [r["t"] for r in rows if "Ready to accept connections" in r["message"]]
    started = max(ready) if ready else None
    if started is None:
        return None, None, None
    after = [r for r in rows if r["t"] >= started]
    candidates = [r["t"] for r in after if r["role"] == "slave"]
    # "+convert-to-slave slave HOST:6379 HOST 6379 @ features NEW-PRIMARY 6379": before the "@".
    candidates += [e["t"] for e in sentinel_events if e["kind"] == "+convert-to-slave" and e["t"] >= started
                   and host in str(e["detail"]).split("@")[0]]
    converted = min(candidates) if candidates else None
    linked = None
    if converted is not None:
        synced = [r["t"] for r in after if r["t"] >= converted and (
            "sync: Finished with success" in r["message"] or "Successful partial resynchronization" in r["message"])]
        linked = min(synced) if synced else None
    return started, converted, linked


def _info(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and not key.startswith("#"):
            out[key] = value
    return out


def _csv_rows(text: str) -> list[list[str]]:
    return [line.split(",") for line in text.splitlines() if line.count(",") >= 2]


class KubeFeatureStore:
    """The cluster's feature store (infra/k8s/redis.yaml); made by :func:`start_kube_feature_store`.

    The same verbs as the local :class:`hadrlab.featurestore.FeatureStore` that a cluster can
    do: ``current_primary``, ``kill_primary``, ``partition_region`` / ``delay_region`` /
    ``heal``, ``wait_for_failover``, ``wait_until_linked``, ``restart_old_primary``,
    ``events``, ``replication_lag_bytes``, ``start_lag_sampler``, the drills' helpers
    ``is_linked_replica``, ``request_failover`` and ``read_hash_field``, and the
    measurements ``measure_write_rto`` and ``measure_rpo``.
    """

    backend = "kube"

    def __init__(self, platform: Any, *, down_after_ms: int = 1000, min_replicas_to_write: int = 0,
                 cross_region_latency_ms: float = 0) -> None:
        self.platform = platform
        # The network the store was started with, which heal() returns to.
        self.cross_region_latency_ms = float(cross_region_latency_ms)
        self._killed: tuple[float, str] | None = None  # (t, region) of the last crash
        self.master_name = MASTER_NAME
        self.down_after_ms = int(down_after_ms)
        self.min_replicas_to_write = int(min_replicas_to_write)
        self.startup_s: float | None = None
        self._events: list[dict] = []
        self._lock = threading.Lock()
        self._last_fault: tuple[float, str] | None = None
        self._jobs: set[str] = set()
        self._chaos_made = False  # this store made NetworkChaos objects: stop() removes them

    def __repr__(self) -> str:
        return (f"KubeFeatureStore(context={self.platform.context!r}, namespace={self.platform.namespace!r}, "
                f"down-after {self.down_after_ms} ms)")

    # ------------------------------------------------------------------ redis-cli in the pods

    def redis_cli(self, region: str, *args: Any, timeout_s: float = 10.0) -> str:
        """Run ``redis-cli ARGS`` inside region ``region``'s Redis pod; return its output.

        Raises:
            HadrError: redis-cli failed (its message is included).
        """
        pod = REDIS_PODS[self._region(region)]
        code, out, err = self.platform.exec(pod, [*_REDIS_CLI, *map(str, args)], container="redis", timeout_s=timeout_s)
        if code != 0 or out.startswith(("ERR", "NOAUTH", "WRONGPASS")):
            raise HadrError(f"`redis-cli {' '.join(map(str, args))}` in pod {pod} failed (exit {code}): "
                            f"{(err or out).strip()[:300]}")
        return out

    def sentinel_cli(self, pod: str, *args: Any, timeout_s: float = 5.0) -> str:
        """Run ``redis-cli -p 26379 ARGS`` inside a Sentinel pod; return its output."""
        code, out, err = self.platform.exec(pod, [*_SENTINEL_CLI, *map(str, args)], container="sentinel",
                                            timeout_s=timeout_s)
        if code != 0:
            raise HadrError(f"`redis-cli -p 26379 {' '.join(map(str, args))}` in pod {pod} failed (exit {code}): "
                            f"{(err or out).strip()[:300]}")
        return out

    @staticmethod
    def _region(name: str) -> str:
        key = str(name).strip().lower().removeprefix("region-")
        if key not in REDIS_PODS:
            raise ValueError(f"There is no region {name!r}; the feature store has regions 'a' and 'b'.")
        return key

    def info(self, region: str) -> dict[str, str]:
        """``INFO replication`` of region ``region``'s Redis, as a dict."""
        return _info(self.redis_cli(region, "INFO", "replication"))

    def info_sections(self, region: str, *sections: str) -> dict[str, str]:
        """``INFO SECTION...`` of region ``region``'s Redis (several sections need Redis 7), as a dict."""
        return _info(self.redis_cli(region, "INFO", *sections))

    def role(self, region: str) -> str:
        """``"master"`` or ``"slave"``, as region ``region``'s Redis says."""
        return self.info(region).get("role", "?")

    # ------------------------------------------------------------------ state

    def current_primary(self) -> str:
        """The region the Sentinels name as primary, ``"a"`` or ``"b"``.

        The witness is asked first (a regional fault leaves it reachable), then B, then A.
        """
        errors = []
        for pod in reversed(SENTINEL_PODS):
            try:
                lines = self.sentinel_cli(pod, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name).split()
                if len(lines) >= 2 and lines[1].isdigit():
                    return _region_of_host((lines[0], int(lines[1])))
                errors.append(f"{pod}: {' '.join(lines) or 'no answer'}")
            except Exception as exc:
                errors.append(f"{pod}: {exc}")
        raise ServiceNotReady(
            f"No Sentinel pod answered SENTINEL GET-MASTER-ADDR-BY-NAME {self.master_name}: "
            + "; ".join(errors)
            + f". Look at `kubectl -n {self.platform.namespace} get pods -l app=sentinel`."
        )

    def replica_region(self) -> str:
        return "b" if self.current_primary() == "a" else "a"

    def replication_lag_bytes(self) -> int:
        """Bytes of the replication stream the replica has not processed, from each server's INFO."""
        primary = self.current_primary()
        p_off = int(self.info(primary).get("master_repl_offset", 0))
        r_off = int(self.info("b" if primary == "a" else "a").get("slave_repl_offset", 0))
        return max(0, p_off - r_off)

    def is_linked_replica(self, name: str) -> bool:
        """True when region ``name``'s Redis is a replica whose link to its primary is up."""
        with contextlib.suppress(Exception):
            info = self.info(name)
            return info.get("role") == "slave" and info.get("master_link_status") == "up"
        return False

    def request_failover(self) -> bool:
        """Ask the witness Sentinel (``redis-cli`` in its pod) for ``SENTINEL FAILOVER``; True if accepted.

        Refused (False) while the Sentinels consider the replica unfit (``-NOGOODSLAVE``).
        """
        with contextlib.suppress(Exception):
            return self.sentinel_cli(SENTINEL_PODS[-1], "SENTINEL", "FAILOVER", self.master_name).strip() == "OK"
        return False

    def read_hash_field(self, pattern: str, field: str) -> tuple[float, dict[str, str]]:
        """Read ``field`` of every hash whose key matches ``pattern``, on the primary, in one pass.

        One script run by ``redis-cli`` inside the primary's pod: one instant of the data,
        stamped by the primary's clock.

        Returns:
            ``(t, {key: value})``: the primary's clock at the read (epoch s), and the values.
        """
        out = self.redis_cli(self.current_primary(), "EVAL", READ_HASH_FIELD_SCRIPT, 0, pattern, field, timeout_s=30)
        return parse_hash_field_reply(out)

    def start_lag_sampler(self, interval_ms: float = 200) -> KubeLagSampler:
        """Sample the replication lag from inside the cluster until ``stop()``.

        A Job in the replica's region runs ``lag-probe`` (the local sampler's loop: offsets,
        then a write on the primary timed until the replica shows it) every ``interval_ms``;
        its rows are read from the pod's log. The first row comes once the pod runs (a
        few seconds on kind).

        Returns:
            A :class:`KubeLagSampler`: ``samples()`` so far, ``stop()`` for all of them.
        """
        primary = self.current_primary()
        replica = "b" if primary == "a" else "a"
        job = self._start_probe("lag-probe", ["--primary", f"{REDIS_PODS[primary]}.redis-{primary}:6379",
                                              "--replica", f"{REDIS_PODS[replica]}.redis-{replica}:6379",
                                              "--interval-ms", f"{interval_ms:g}", "--duration-s", "600"],
                                region=replica)
        return KubeLagSampler(self, job)

    def wait_until_linked(self, timeout_s: float = 60.0) -> float:
        """Wait until the replica's link to the primary is up; return the seconds waited."""
        from hadrlab.processes import wait_until

        start = time.monotonic()

        def linked() -> bool:
            with contextlib.suppress(Exception):
                info = self.info(self.replica_region())
                return info.get("role") == "slave" and info.get("master_link_status") == "up"
            return False

        wait_until(linked, timeout_s=timeout_s, interval_s=0.5, describe="the replica to link to the primary")
        return time.monotonic() - start

    def _discovered(self) -> bool:
        with contextlib.suppress(Exception):
            state = self.sentinel_cli(SENTINEL_PODS[0], "SENTINEL", "MASTER", self.master_name).split()
            pairs = dict(zip(state[::2], state[1::2]))
            return int(pairs.get("num-other-sentinels", 0)) >= 2 and int(pairs.get("num-slaves", 0)) >= 1
        return False

    # ------------------------------------------------------------------ events

    def _record(self, kind: str, detail: str, t: float | None = None) -> None:
        with self._lock:
            self._events.append({"t": time.time() if t is None else t, "kind": kind, "detail": detail,
                                 "source": "hadrlab"})

    def events(self, since: float | None = None):
        """Sentinel's events (from the Sentinel pods' logs) and our own faults, as a DataFrame.

        Columns t (epoch s), kind, detail, source (the Sentinel pod, or ``hadrlab``).
        """
        import pandas as pd

        rows: list[dict] = []
        for pod in SENTINEL_PODS:
            with contextlib.suppress(HadrError):
                rows += parse_sentinel_log(self.platform.pod_logs(pod, "sentinel", timestamps=True), pod)
        with self._lock:
            rows += [dict(e) for e in self._events]
        rows = [r for r in rows if since is None or r["t"] >= since]
        return pd.DataFrame(rows, columns=["t", "kind", "detail", "source"]).sort_values("t", ignore_index=True)

    # ------------------------------------------------------------------ faults

    def kill_primary(self) -> str:
        """Crash the primary's redis-server (``DEBUG SEGFAULT``); return its region.

        The container restarts in place, with the same pod IP, empty (no persistence),
        after staying down :func:`restart_delay_s` (so that Sentinel fails over first, as
        a real outage would let it). (Deleting the pod instead would give the new one another
        IP, which Sentinel, having resolved the name once, would not follow.)

        Raises:
            HadrError: DEBUG was refused: the manifest lost ``enable-debug-command local``.
        """
        name = self.current_primary()
        pod = REDIS_PODS[name]
        t = time.time()
        try:
            code, out, err = self.platform.exec(pod, [*_REDIS_CLI, "DEBUG", "SEGFAULT"], container="redis")
        except HadrError:
            raise
        except Exception as exc:  # the command kills the very connection exec reads from
            code, out, err = -1, "", f"{exc.__class__.__name__}: {exc}"
        text = (out + err).strip()
        if "not allowed" in text or "unknown command" in text.lower():
            raise HadrError(
                f"Redis in pod {pod} refused DEBUG SEGFAULT ({text[:160]}). The lab crashes the primary "
                f"from inside its pod, which needs `--enable-debug-command local` in infra/k8s/redis.yaml; "
                f"restore it (`git checkout infra/k8s/redis.yaml`) and run start_kube_feature_store() again."
            )
        self._last_fault = self._killed = (t, name)
        self._record("kill", f"redis-server in pod {pod} crashed (DEBUG SEGFAULT; exec said: {text[:80] or code})", t=t)
        return name

    def freeze(self, region: str, seconds: float) -> threading.Thread:
        """Freeze region ``region``'s Redis for ``seconds`` (``DEBUG SLEEP``), in the background."""
        region = self._region(region)

        def sleep() -> None:
            with contextlib.suppress(Exception):
                self.redis_cli(region, "DEBUG", "SLEEP", f"{seconds:g}", timeout_s=seconds + 10)

        thread = threading.Thread(target=sleep, name=f"freeze-{region}", daemon=True)
        thread.start()
        self._record("pause", f"redis-{region} frozen for {seconds:g} s (DEBUG SLEEP)")
        return thread

    def partition_region(self, name: str) -> None:
        """Cut region ``name`` off from the other region (Chaos Mesh NetworkChaos, both ways)."""
        region = self._region(name)
        was_primary = self.current_primary()
        self._chaos_made = True
        self.platform.partition_region(f"region-{region}", f"region-{'b' if region == 'a' else 'a'}")
        t = time.time()
        self._last_fault = (t, was_primary)
        self._record("partition", f"region {region}: NetworkChaos partition", t=t)

    def delay_region(self, name: str, latency_ms: float) -> None:
        """Delay every packet leaving region ``name``'s pods by ``latency_ms`` (Chaos Mesh).

        It replaces the region's delay (the cross-region latency the store started with
        included); :meth:`heal` puts the start's latency back.
        """
        region = self._region(name)
        self._chaos_made = True
        self.platform.delay_region(f"region-{region}", latency_ms)
        self._record("latency", f"{latency_ms:g} ms on region {region} (NetworkChaos)")

    def heal(self) -> None:
        """Return every region's network to how the store started it.

        Removes every chaos object of the namespace (NetworkChaos, PodChaos), then puts back
        the cross-region latency the store was started with (one NetworkChaos delay per
        region, as :meth:`delay_region` makes).
        """
        n = self._restore_network()
        baseline = f", {self.cross_region_latency_ms:g} ms cross-region latency back" if self.cross_region_latency_ms else ""
        self._record("heal", f"{n} chaos object(s) removed{baseline}")

    def _restore_network(self) -> int:
        n = self.platform.clear_faults()
        if self.cross_region_latency_ms:
            self._chaos_made = True
            for region in REDIS_PODS:
                self.platform.delay_region(f"region-{region}", self.cross_region_latency_ms)
        return n

    def wait_for_failover(self, timeout_s: float = 30.0) -> float:
        """Wait until the Sentinels name a new primary; return seconds since the last fault."""
        if self._last_fault is None:
            raise HadrError("wait_for_failover() measures from the last fault, but none was injected through "
                            "this store. Call fs.kill_primary() or fs.partition_region('a') first.")
        t0, old = self._last_fault
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if self.current_primary() != old:
                    seen = time.time()
                    switched = [e["t"] for e in self.events(since=t0).to_dict("records") if e["kind"] == "+switch-master"]
                    return (min([seen, *switched])) - t0
            time.sleep(0.2)
        raise ServiceNotReady(
            f"The Sentinels still name region {old} as primary {timeout_s:g} s after the fault (down-after "
            f"{self.down_after_ms} ms). Recent events: {self.events(since=t0).tail(5).to_dict('records')}. "
            f"Look at `kubectl -n {self.platform.namespace} logs sentinel-w-0`."
        )

    def restart_old_primary(self, *, timeout_s: float = 60.0, probe_interval_ms: int = 200) -> ReturnResult:
        """Watch the crashed primary come back, EMPTY, and Sentinel turn it into a replica.

        On a cluster nobody restarts it by hand: the kubelet restarts the crashed container
        in place, and the manifest's wrapper keeps it down ``RESTART_DELAY_S`` first. From
        then on it is a master nobody elected, with no data, until a Sentinel sends
        ``REPLICAOF``. This watches it until it is a linked replica, every
        ``probe_interval_ms``, with ``redis-cli`` in its pod: its role and key count, a
        direct write (a client that still points at its address), and a read of a marker
        key from whichever server the Sentinels name (what ``master_for`` would read). The
        times come from the server's own log (the role it logged each line with, timed by
        the kubelet) and Sentinel's ``+convert-to-slave``, so a call made after the return
        still reports it.

        Returns:
            A :class:`~hadrlab.featurestore.ReturnResult`; ``timeline`` has one row per probe.

        Raises:
            HadrError: no primary was crashed through this store, or no failover happened yet.
            ServiceNotReady: it was not a linked replica within ``timeout_s``.
        """
        import pandas as pd

        if self._killed is None:
            raise HadrError("restart_old_primary() watches the primary crashed by fs.kill_primary() come back, but "
                            "none was crashed through this store. Call fs.kill_primary() first.")
        t_kill, name = self._killed
        pod = REDIS_PODS[name]
        if self.current_primary() == name:
            raise HadrError(f"The Sentinels still name region {name} (the crashed one) as primary: no failover "
                            f"happened yet. Call fs.wait_for_failover() first.")
        run = secrets.token_hex(3)
        marker: str | None = f"returning:{run}"
        with contextlib.suppress(HadrError):
            # With min-replicas-to-write the lone new primary refuses writes (NOREPLICAS):
            # then "empty" is judged by the key count instead of a marker key.
            if self.redis_cli(self.current_primary(), "SET", marker, "kept").strip() != "OK":
                marker = None
        rows: list[dict] = []
        accepted = refused = empty_reads = 0
        refusals: Counter = Counter()
        deadline = time.monotonic() + timeout_s
        linked_seen = False
        i = 0
        while time.monotonic() < deadline:
            t = time.time()
            info: dict[str, str] = {}
            with contextlib.suppress(Exception):
                info = self.info_sections(name, "replication", "keyspace")
            role = info.get("role", "down")
            dbsize = None if not info else sum(int(v.split(",")[0].split("=")[1]) for k, v in info.items()
                                                 if k.startswith("db") and v.startswith("keys="))
            write = "-"
            if role != "down":
                code, out, err = self.platform.exec(pod, [*_REDIS_CLI, "SET", f"stale-write:{run}:{i}", str(i)],
                                                    container="redis", timeout_s=5)
                answer = (out or err).strip()
                if code == 0 and answer == "OK":
                    write, accepted = "accepted", accepted + 1
                elif answer.split(" ")[0].isupper():
                    # NOREPLICAS (min-replicas-to-write), READONLY (a replica now).
                    code_word = answer.split(" ")[0]
                    write, refused = f"refused {code_word}", refused + 1
                    refusals[code_word] += 1
                else:
                    write = answer[:40] or f"exit {code}"
            with contextlib.suppress(Exception):
                serving = self.current_primary()
                if marker:
                    empty = self.redis_cli(serving, "GET", marker).strip() == ""
                else:
                    empty = self.redis_cli(serving, "DBSIZE").strip() == "0"
                empty_reads += int(empty)
            rows.append({"t": t, "role": role, "dbsize": dbsize, "write": write})
            if role == "slave" and info.get("master_link_status") == "up":
                linked_seen = True
                break
            i += 1
            time.sleep(probe_interval_ms / 1000)
        log_rows = parse_redis_log(self.platform.pod_logs(pod, "redis", timestamps=True))
        events = self.events(since=t_kill).to_dict("records")
        started, converted, linked = return_times(log_rows, events, host=f"{pod}.redis-{name}", since=t_kill)
        # Where a log line is missing, what the probes saw (at their resolution).
        seen_master = [r["t"] for r in rows if r["role"] == "master"]
        seen_slave = [r["t"] for r in rows if r["role"] == "slave"]
        if started is None and (seen_master or seen_slave):
            started = min(seen_master + seen_slave)
        converted = converted if converted is not None else (min(seen_slave) if seen_slave else None)
        if linked is None and linked_seen:
            linked = rows[-1]["t"]
        if not linked_seen and linked is None:
            raise ServiceNotReady(
                f"Region {name}'s Redis (pod {pod}) was not a linked replica {timeout_s:g} s after this call; its "
                f"last probe said role {rows[-1]['role'] if rows else 'none'}. It stays down RESTART_DELAY_S after "
                f"a crash: `kubectl -n {self.platform.namespace} logs {pod}` says where it is.")
        if started is not None:
            self._record("restart", f"redis-{name} back in pod {pod}, empty (restarted by the kubelet)", t=started)
        if converted is not None:
            self._record("converted", f"redis-{name} is now a replica", t=converted)
        return ReturnResult(
            region=name, started_at=started if started is not None else rows[0]["t"], converted_at=converted,
            linked_at=linked, writes_accepted=accepted, writes_refused=refused, refusals=dict(refusals),
            master_for_saw_empty=empty_reads, timeline=pd.DataFrame(rows, columns=["t", "role", "dbsize", "write"]),
        )

    # ------------------------------------------------------------------ probes (Jobs)

    def _start_probe(self, kind: str, args: list[str], *, region: str) -> str:
        """Start a probe Job in ``region``: which side of a partition a client is on decides what it sees."""
        job = f"{kind}-{secrets.token_hex(3)}"
        self.platform.start_job(job, ["python", "-m", "hadrlab.featurestore", kind, *args],
                                secret_env={"REDIS_PASSWORD": PASSWORD_SECRET, "SENTINEL_PASSWORD": PASSWORD_SECRET},
                                node_selector={REGION_LABEL: f"region-{region}"})
        with self._lock:
            self._jobs.add(job)
        return job

    def _rows(self, job: str) -> list[list[str]]:
        return _csv_rows(self.platform.job_logs(job))

    def _wait_rows(self, job: str, done: Any, timeout_s: float, what: str) -> list[list[str]]:
        """Read the probe's rows until ``done(rows)``; a failed Job is an error with its log."""
        deadline = time.monotonic() + timeout_s
        while True:
            rows = self._rows(job)
            if done(rows):
                return rows
            state = self.platform.job_state(job)
            if state != "running":
                rows = self._rows(job)  # what it printed between the read above and its end
                if done(rows):
                    return rows
                raise HadrError(f"The probe Job {job!r} {state} before {what}. Its log ends: "
                                f"{self.platform.job_logs(job)[-400:]!r}. Is the course image loaded "
                                f"(`python -m hadrlab.kind up`)?")
            stuck = self.platform.job_stuck(job)
            if stuck:
                raise HadrError(f"The probe Job {job!r} cannot start its pod ({stuck}). Load the course image "
                                f"(`python -m hadrlab.kind up`) and apply infra/k8s/redis.yaml (its Secret "
                                f"redis-auth), then run this again.")
            if time.monotonic() > deadline:
                pod = self.platform.job_pod(job)
                phase = ((pod or {}).get("status") or {}).get("phase", "no pod yet")
                raise ServiceNotReady(f"The probe Job {job!r} did not reach {what} within {timeout_s:g} s "
                                      f"(its pod: {phase}). `kubectl -n {self.platform.namespace} describe "
                                      f"job {job}` says why.")
            time.sleep(0.25)

    def _end_probe(self, job: str) -> None:
        with contextlib.suppress(Exception):
            self.platform.delete_job(job)
        with self._lock:
            self._jobs.discard(job)

    def measure_write_rto(self, *, kill: str = "primary", write_interval_ms: float = 10, timeout_s: float = 30,
                          steady_s: float = 1.0, start_timeout_s: float = 120) -> WriteRtoResult:
        """Write through Sentinel from inside the cluster while the primary fails.

        A Job runs ``write-probe`` (SET then GET of a counter every ``write_interval_ms``,
        through ``Sentinel.master_for``). After ``steady_s`` of its rows the fault is
        injected; the write RTO is the first acknowledged write on the other region minus
        the fault time.

        Args:
            kill: ``"primary"`` (crash the primary's server) or ``"partition"`` (cut its
                region off; call ``fs.heal()`` afterwards).
            write_interval_ms, timeout_s, steady_s: as for the local measurement.
            start_timeout_s: how long the Job's pod may take to start writing.
        """
        import pandas as pd

        if kill not in ("primary", "partition"):
            raise ValueError(f'kill must be "primary" or "partition"; got {kill!r}.')
        old = self.current_primary()
        # The probe runs in the other region: the clients that a failover is for.
        job = self._start_probe("write-probe", ["--sentinels", SENTINELS_IN_CLUSTER, "--master", self.master_name,
                                                "--interval-ms", f"{write_interval_ms:g}",
                                                "--duration-s", f"{steady_s + timeout_s + start_timeout_s:g}"],
                                region="b" if old == "a" else "a")
        try:
            rows = self._wait_rows(job, lambda r: len(r) > 1, start_timeout_s, "its first write")
            first_t = float(rows[1][0])
            time.sleep(max(0.0, first_t + steady_s - time.time()))
            if kill == "primary":
                self.kill_primary()
            else:
                self.partition_region(old)
            t_fault = self._last_fault[0]

            def recovered(rows: list[list[str]]) -> bool:
                return any(r[1] == "1" and r[2] != old and float(r[0]) >= t_fault for r in rows[1:]) or \
                    time.time() - t_fault > timeout_s

            rows = self._wait_rows(job, recovered, timeout_s + 10, "a write on the new primary")
        finally:
            self._end_probe(job)
        ops = pd.DataFrame([{"t": float(t), "ok": ok == "1", "region": region, "error": error}
                            for t, ok, region, error in (r[:4] for r in rows[1:])],
                           columns=["t", "ok", "region", "error"])
        after = ops[ops["t"] >= t_fault]
        won = after[after["ok"] & (after["region"] != old)]
        first_new = won.iloc[0] if len(won) else None
        # Count errors up to the first write on the new primary, as the local loop does.
        failed = after[~after["ok"]]
        if first_new is not None:
            failed = failed[failed["t"] <= first_new["t"]]
            ops = ops[ops["t"] <= first_new["t"]]
        return WriteRtoResult(
            fault="kill" if kill == "primary" else "partition", down_after_ms=self.down_after_ms, t_fault=t_fault,
            rto_s=None if first_new is None else float(first_new["t"]) - t_fault, old_primary=old,
            new_primary=None if first_new is None else str(first_new["region"]),
            errors=dict(Counter(failed["error"])), ops=ops.reset_index(drop=True),
            events=self.events(since=t_fault - steady_s),
        )

    def measure_rpo(self, *, mode: str = "async", writes_per_s: float = 300, duration_s: float = 2.0,
                    lag_fault: str = "none", latency_ms: float = 150, pause_s: float = 1.5,
                    wait_timeout_ms: int | None = None, value_bytes: int | None = None,
                    failover_timeout_s: float = 30, start_timeout_s: float = 120) -> RpoResult:
        """Count acknowledged writes lost when the primary crashes while the replica lags.

        A Job runs ``seq-probe`` against the primary (writes ``rpo:<run>:<N>``; ``ack`` when
        the primary said OK, and in ``"wait"`` mode when ``WAIT 1`` confirmed the replica
        has it). After ``duration_s`` the primary crashes; once Sentinel has promoted the
        replica, every acknowledged N missing there is lost.

        Args:
            mode: ``"async"`` or ``"wait"``.
            writes_per_s, duration_s, value sizes: as for the local measurement.
            lag_fault: ``"none"``; ``"latency"`` (Chaos Mesh delays the primary's region by
                ``latency_ms``); or ``"pause"`` (the replica is frozen with ``DEBUG SLEEP`` for
                the last ``pause_s`` before the crash).
            wait_timeout_ms: WAIT's timeout (default 4x the latency + 100).
            value_bytes: size of each value; default 256, and 64 KiB with ``"pause"``. A
                frozen replica's kernel still receives the stream into its socket buffer,
                and TCP delivers that buffer after the crash: only what the primary could
                not send yet (its socket buffers full, the rest in Redis' own output
                buffer) dies with it. Small writes never fill megabytes of buffers in a
                second, so a pause alone loses nothing; large ones do.
            failover_timeout_s: how long Sentinel may take.
            start_timeout_s: how long the Job's pod may take to start writing.
        """
        mode, wait_timeout_ms = rpo_options(mode, lag_fault, latency_ms, wait_timeout_ms)
        if value_bytes is None:
            value_bytes = 65536 if lag_fault == "pause" else 256
        primary = self.current_primary()
        replica = "b" if primary == "a" else "a"
        run = secrets.token_hex(3)
        frozen = None
        delayed = False
        job = None
        try:
            if lag_fault == "latency":
                self.delay_region(primary, latency_ms)
                delayed = True
            job = self._start_probe("seq-probe", ["--redis", f"{REDIS_PODS[primary]}.redis-{primary}:6379",
                                                  "--run", run, "--mode", mode, "--writes-per-s", f"{writes_per_s:g}",
                                                  "--duration-s", f"{duration_s + start_timeout_s + 30:g}",
                                                  "--wait-timeout-ms", str(int(wait_timeout_ms)),
                                                  "--value-bytes", str(int(value_bytes))],
                                    region=primary)  # a writer next to its primary, as on the local backend
            rows = self._wait_rows(job, lambda r: len(r) > 0, start_timeout_s, "its first write")
            began = float(rows[0][2])
            if lag_fault == "pause":
                time.sleep(max(0.0, began + duration_s - pause_s - time.time()))
                frozen = self.freeze(replica, pause_s + 1.0)
            time.sleep(max(0.0, began + duration_s - time.time()))
            primary_offset = int(self.info(primary).get("master_repl_offset", 0))
            replica_offset = None
            if frozen is None:
                with contextlib.suppress(Exception):
                    replica_offset = int(self.info(replica).get("slave_repl_offset", 0))
            self.kill_primary()
            t_kill = self._last_fault[0]
            rows = self._wait_rows(job, lambda r: any(x[0] == "attempted" for x in r), 30, "the end of its writes")
            failover_s = self.wait_for_failover(timeout_s=failover_timeout_s)
            info = self.info(replica)
            if replica_offset is None:
                second = int(info.get("second_repl_offset", 0))
                replica_offset = second - 1 if second > 0 else None
            present = {int(key.rsplit(":", 1)[1]) for key in
                       self.redis_cli(replica, "--scan", "--pattern", f"rpo:{run}:*", timeout_s=30).split()
                       if key.rsplit(":", 1)[-1].isdigit()}
        finally:
            if job is not None:
                self._end_probe(job)
            if delayed:
                with contextlib.suppress(Exception):
                    self.heal()
            if frozen is not None:
                frozen.join(timeout=pause_s + 15)
        acked_at = {int(n): float(t) for outcome, n, t in (r[:3] for r in rows) if outcome == "ack"}
        unconfirmed = sum(1 for r in rows if r[0] == "unconfirmed")
        attempted = int(next(r[1] for r in rows if r[0] == "attempted"))
        acked = sorted(acked_at)
        lost = [n for n in acked if n not in present]
        kept = [n for n in acked if n in present]
        return RpoResult(
            mode=mode, lag_fault=lag_fault if lag_fault != "latency" else f"latency {latency_ms:g} ms",
            attempted=attempted, acknowledged=len(acked), unconfirmed=unconfirmed, lost_acknowledged=len(lost),
            lost_seqs=lost,
            lag_bytes_at_kill=None if replica_offset is None else max(0, primary_offset - replica_offset),
            # (an ack can be stamped a moment after the kill was sent: never below 0)
            lag_ms_at_kill=max(0.0, (t_kill - acked_at[max(kept)]) * 1000) if kept else None,
            failover_s=failover_s, t_kill=t_kill, events=self.events(since=t_kill - duration_s),
        )

    # ------------------------------------------------------------------ end

    def stop(self, *, delete: bool = False) -> None:
        """Delete the probe Jobs still running and the network faults (and cross-region latency)
        this store made; with ``delete``, also the Redis objects.

        The store belongs to the cluster: by default it keeps running for the next lab, with
        an undisturbed network (a NetworkChaos left behind would delay or cut it until deleted).
        """
        with self._lock:
            jobs = list(self._jobs)
        for job in jobs:
            self._end_probe(job)
        if self._chaos_made:
            self.platform.clear_faults()
            self._chaos_made = False
        if delete:
            self.platform.delete(redis_manifests())


class KubeLagSampler:
    """The rows of a running ``lag-probe`` Job; made by :meth:`KubeFeatureStore.start_lag_sampler`.

    The same two methods as the local :class:`hadrlab.featurestore.LagSampler`.
    """

    def __init__(self, store: KubeFeatureStore, job: str) -> None:
        self.store, self.job = store, job
        self._rows: list[dict] = []
        self._stopped = False

    def __repr__(self) -> str:
        return f"KubeLagSampler(job {self.job!r}, {len(self._rows)} samples{', stopped' if self._stopped else ''})"

    def samples(self) -> list[dict]:
        """The samples so far, from the probe pod's log: ``{"t", "lag_bytes", "lag_ms"}`` dicts."""
        if not self._stopped:
            with contextlib.suppress(HadrError):
                self._rows = parse_lag_rows(self.store.platform.job_logs(self.job))
        return list(self._rows)

    def stop(self) -> list[dict]:
        """Read the last rows, delete the Job; return every sample. Safe to call twice."""
        rows = self.samples()
        if not self._stopped:
            self._stopped = True
            self.store._end_probe(self.job)
        return rows


def parse_lag_rows(text: str) -> list[dict]:
    """``lag-probe``'s log (``t,lag_bytes,lag_ms`` lines) -> ``{"t", "lag_bytes", "lag_ms"}`` dicts."""
    rows = []
    for t, lag_bytes, lag_ms in (r[:3] for r in _csv_rows(text)):
        with contextlib.suppress(ValueError):  # the header, or a line cut by the log read
            rows.append({"t": float(t), "lag_bytes": int(lag_bytes), "lag_ms": float(lag_ms)})
    return rows


def start_kube_feature_store(platform: Any = None, *, down_after_ms: int = 1000, min_replicas_to_write: int = 0,
                             cross_region_latency_ms: float = 0, timeout_s: float = 180.0) -> KubeFeatureStore:
    """Apply infra/k8s/redis.yaml with these settings, and wait until replication and Sentinel are up.

    Args:
        platform: a :class:`hadrlab.platform.kube.KubePlatform` (default: a new one on the
            configured context, without event watches).
        down_after_ms: Sentinel's down-after.
        min_replicas_to_write: see :func:`redis_manifests`.
        cross_region_latency_ms: one-way latency added to every packet leaving each
            region's pods (a Chaos Mesh NetworkChaos delay per region), kept until
            ``stop()``; ``heal()`` puts it back after a fault. Needs Chaos Mesh.
        timeout_s: how long the pods, the replication link and Sentinel's discovery may take
            (a changed setting rolls the pods).

    Returns:
        A :class:`KubeFeatureStore`; ``startup_s`` says how long it took.
    """
    from hadrlab.processes import wait_until

    if platform is None:
        from hadrlab.platform.kube import KubePlatform

        # No event watches: the store times Sentinel from its pods' logs, not the platform's
        # timeline, and Lab 02 starts a store per RPO trial without closing it; each watching
        # platform would keep three watch threads and connections for the kernel's lifetime.
        platform = KubePlatform(quiet=True, watch=False)
    if cross_region_latency_ms and not platform.has_chaos_mesh():
        raise HadrError(
            f"start_kube_feature_store(cross_region_latency_ms={cross_region_latency_ms:g}) delays the regions' "
            f"network with Chaos Mesh, whose CRDs are not installed in context {platform.context!r}. Install it "
            f"(`make kind-up` with helm on PATH; infra/kind/README.md, 'Chaos Mesh'), or start the store with cross_region_latency_ms=0."
        )
    start = time.monotonic()
    fs = KubeFeatureStore(platform, down_after_ms=down_after_ms, min_replicas_to_write=min_replicas_to_write,
                          cross_region_latency_ms=cross_region_latency_ms)
    docs = redis_manifests(down_after_ms=down_after_ms, min_replicas_to_write=min_replicas_to_write)
    left = lambda: max(1.0, timeout_s - (time.monotonic() - start))  # noqa: E731

    # Redis first, the Sentinels once the Redis pods run. A changed setting replaces every
    # pod, and a Sentinel resolves the primary's name ONCE, when it starts: started while
    # the old redis-a-0 is still terminating (a headless Service with
    # publishNotReadyAddresses keeps a terminating pod's address in DNS), it would monitor
    # that dead address for good, and no replica would ever be found.
    sentinels = [d for d in docs if d["metadata"]["name"].startswith("sentinel")]
    platform.apply([d for d in docs if not d["metadata"]["name"].startswith("sentinel")], quiet=True)
    for name in STATEFULSETS:
        if name.startswith("redis"):
            platform.wait_for_statefulset(name, timeout_s=left())
    platform.apply(sentinels, quiet=True)
    for name in STATEFULSETS:
        if name.startswith("sentinel"):
            platform.wait_for_statefulset(name, timeout_s=left())
    if platform.has_chaos_mesh():
        # The network as this store starts it: no fault left by an earlier run, its latency.
        fs._restore_network()
    fs.wait_until_linked(timeout_s=left())
    wait_until(fs._discovered, timeout_s=left(), interval_s=0.5,
               describe="the Sentinels to find each other and the replica")
    fs.startup_s = time.monotonic() - start
    return fs
