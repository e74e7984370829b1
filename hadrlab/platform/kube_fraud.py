"""Lab 02's scoring services on a Kubernetes cluster: infra/k8s/fraud.yaml, started and read.

On the local backend the Start cells write the first features of the lab's transactions,
then start four processes: the alert receiver, the sidecar, the scoring API and the feature
writer. Here the same four run on the cluster, and :func:`start_kube_fraud_services` does
the same steps there:

1. the writer of a previous run is stopped (scaled to 0), so that nothing writes while the
   first features are written, as on a fresh local run;
2. a one-pod Job of the course image (``python -m hadrlab.platform.kube_fraud seed FILE``)
   writes the features of the lab's transactions through Sentinel with
   :func:`hadrlab.fraud.write_features`: the very function the local cell calls. The
   transactions reach it in a ConfigMap mounted as a file;
3. infra/k8s/fraud.yaml is applied with the lab's settings (the sidecar's check interval and
   policy, the writer's rate and cards) and every Deployment's rollout waited for. A
   learner's read policy travels as its module's source in a ConfigMap mounted on the
   sidecar's PYTHONPATH;
4. the writer's first acknowledged write is awaited in its pod's log, where it prints one
   CSV row per write: that log is the write timeline a drill reads.

Every service is then reachable from this machine: the API and the alert receiver through
their Services (a kind host port, else a port-forward), and ONE pod's sidecar through a
pod port-forward: the fraud-api pod in region B when there is one (the side that outlives a
fault of region A, where the primary starts), else the oldest ready pod. ``services.sidecar.pod``
names it.

Example::

    fs = hadrlab.start_kube_feature_store(down_after_ms=1000)
    services = hadrlab.start_kube_fraud_services(fs, transactions=TXNS, check_interval_ms=100,
                                                 latency_threshold_ms=50, consecutive=3,
                                                 recover_consecutive=5, rate_tps=50, n_cards=40)
    api, sidecar, receiver, writer = services.api, services.sidecar, services.receiver, services.writer
    drill = run_drill("kill", fs=fs, api=api, sidecar=sidecar, receiver=receiver, writer=writer,
                      fault=fs.kill_primary)

This module's top level imports the standard library only: the seed Job runs it in the
course image, which has neither PyYAML nor the Kubernetes client.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import hashlib
import json
import secrets
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hadrlab.errors import HadrError, ServiceNotReady

__all__ = [
    "KubeFraudServices",
    "KubeService",
    "KubeFeatureWriter",
    "fraud_manifests",
    "seed_manifests",
    "policy_source",
    "parse_writer_log",
    "seed_features",
    "start_kube_fraud_services",
]

MANIFEST = "infra/k8s/fraud.yaml"
DEPLOYMENTS = ("alert-receiver", "fraud-api", "feature-writer")
WRITER = "feature-writer"
POLICY_CONFIGMAP = "fraud-policy"
POLICY_MOUNT = "/etc/hadrlab/policy"
SEED_MOUNT = "/etc/hadrlab/seed"
SEED_FILE = "transactions.json"
# A changed value restarts the pods of a Deployment (its pod template changed).
RUN_ANNOTATION = "hadrlab.io/run"
POLICY_ANNOTATION = "hadrlab.io/policy-sha256"
REGION_PREFERRED = "region-b"
WRITER_COLUMNS = ["t", "seq", "card_id", "ok", "region", "latency_ms", "error"]
# The seed's transactions travel in a ConfigMap, whose limit is 1 MiB; keep a margin.
SEED_MAX_BYTES = 900_000


# --------------------------------------------------------------------------- manifests


def _deployment(docs: list[dict], name: str) -> dict:
    for doc in docs:
        if doc.get("kind") == "Deployment" and doc["metadata"]["name"] == name:
            return doc
    raise HadrError(f"{MANIFEST} has no Deployment {name!r}; restore the file from git.")


def _container(deployment: dict, name: str) -> dict:
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        if container["name"] == name:
            return container
    raise HadrError(f"{MANIFEST}: Deployment {deployment['metadata']['name']!r} has no container {name!r}; "
                    f"restore the file from git.")


def _set_env(container: dict, name: str, value: Any, *, add: bool = False) -> None:
    from hadrlab.platform.manifests import set_env

    set_env(container, name, value, add=add, source=MANIFEST)


def _env_item(container: Mapping, name: str) -> dict:
    return dict(next(e for e in container.get("env") or [] if e["name"] == name))


def policy_source(policy: Any) -> tuple[str, dict[str, str]]:
    """The ``"module:Class"`` spec of a read policy and the module files the sidecar needs.

    A policy class of the package (``hadrlab.sidecar:PrimaryOnlyPolicy``) is in the course
    image already: no file. A learner's module (written by
    :func:`hadrlab.drills.write_policy_class` or :func:`hadrlab.sidecar.write_policy_module`,
    or any single-file module this kernel can import) is shipped as ``{"module.py": source}``.

    Args:
        policy: a class, or ``"module:Class"``, as :func:`hadrlab.sidecar.start_sidecar` accepts.

    Raises:
        ValueError: a class defined in the notebook itself, a malformed spec, or a module
            without that class.
        HadrError: the module's source cannot be found, or it is a package.
    """
    import importlib.util

    from hadrlab.sidecar import _policy_dir

    if isinstance(policy, type):
        if policy.__module__ in ("__main__", "builtins"):
            raise ValueError(
                f"The class {policy.__name__} is defined in the notebook, which the sidecar pods cannot "
                "import. Pass it to write_policy_class() and give the 'module:Class' string it returns.")
        policy = f"{policy.__module__}:{policy.__qualname__}"
    module, sep, class_name = str(policy).partition(":")
    if not sep or not module or not class_name:
        raise ValueError(f'A policy must be a class or "package.module:ClassName"; got {policy!r}.')
    spec = f"{module}:{class_name}"
    if module == "hadrlab" or module.startswith("hadrlab."):
        return spec, {}  # part of the package, in the course image
    path = _policy_dir() / f"{module}.py"
    if not path.exists():
        found = None
        with contextlib.suppress(ImportError, ValueError):
            found = importlib.util.find_spec(module)
        origin = getattr(found, "origin", None)
        if found is None or not origin or not str(origin).endswith(".py"):
            raise HadrError(f"The policy module {module!r} was not found in {_policy_dir()} nor on this "
                            f"kernel's path. Write it with write_policy_class(YourClass) first.")
        if found.submodule_search_locations is not None or "." in module:
            raise HadrError(f"The policy module {module!r} is a package or inside one; the sidecar pods get "
                            f"one module file. Put the class in a module of its own (write_policy_class does).")
        path = Path(origin)
    source = path.read_text()
    classes = [n.name for n in ast.parse(source).body if isinstance(n, ast.ClassDef)]
    if class_name not in classes:
        raise ValueError(f"The policy module {path} defines no class {class_name!r} (it defines {classes}).")
    return spec, {f"{module}.py": source}


def fraud_manifests(*, check_interval_ms: float = 200, latency_threshold_ms: float = 50, consecutive: int = 3,
                    recover_consecutive: int = 5, policy: Any = None, policy_args: Mapping[str, Any] | None = None,
                    rate_tps: float = 50, n_cards: int = 200, seed: int = 0, run: str | None = None) -> list[dict]:
    """infra/k8s/fraud.yaml with Lab 02's settings, as edited copies of its documents.

    Args:
        check_interval_ms, latency_threshold_ms, consecutive, recover_consecutive: the
            sidecar's check cadence and its default policy's parameters (its variables).
        policy, policy_args: another read policy (see :func:`policy_source`) and its keyword
            arguments: POLICY_CLASS and POLICY_ARGS of the sidecar, plus a ConfigMap
            ``fraud-policy`` with the module, mounted on the sidecar's PYTHONPATH.
        rate_tps, n_cards, seed: the feature writer's WRITE_RATE_TPS, N_CARDS and SEED.
        run: a token written on the writer's pod template: a new token restarts the writer
            (a fresh stream and a fresh log, as a new local writer process).

    Returns:
        The documents, ready for ``platform.apply``.
    """
    from hadrlab.course import course_file
    from hadrlab.platform.manifests import load_manifest

    docs = load_manifest(course_file(MANIFEST), validate=False)  # fresh dicts, ours to edit
    api = _deployment(docs, "fraud-api")
    sidecar = _container(api, "sidecar")
    for name, value in (("CHECK_INTERVAL_MS", check_interval_ms), ("LATENCY_THRESHOLD_MS", latency_threshold_ms),
                        ("CONSECUTIVE", int(consecutive)), ("RECOVER_CONSECUTIVE", int(recover_consecutive))):
        _set_env(sidecar, name, f"{value:g}" if isinstance(value, float) else value)
    if policy is not None:
        spec, files = policy_source(policy)
        _set_env(sidecar, "POLICY_CLASS", spec, add=True)
        _set_env(sidecar, "POLICY_ARGS", json.dumps(dict(policy_args or {}), sort_keys=True), add=True)
        if files:
            _set_env(sidecar, "PYTHONPATH", POLICY_MOUNT, add=True)
            sidecar.setdefault("volumeMounts", []).append({"name": "policy", "mountPath": POLICY_MOUNT,
                                                            "readOnly": True})
            pod = api["spec"]["template"]["spec"]
            pod.setdefault("volumes", []).append({"name": "policy", "configMap": {"name": POLICY_CONFIGMAP}})
            # The sidecar imports the module once, at start: a changed source must restart it.
            digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
            api["spec"]["template"]["metadata"].setdefault("annotations", {})[POLICY_ANNOTATION] = digest
            docs.insert(0, {"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": POLICY_CONFIGMAP, "labels": {"app": "fraud-api"}},
                            "data": dict(files)})
    _deployment(docs, WRITER)["spec"]["replicas"] = 1  # the manifest keeps it at 0 until a lab runs it
    writer = _container(_deployment(docs, WRITER), WRITER)
    for name, value in (("WRITE_RATE_TPS", f"{float(rate_tps):g}"), ("N_CARDS", int(n_cards)), ("SEED", int(seed))):
        _set_env(writer, name, value)
    if run:
        template = _deployment(docs, WRITER)["spec"]["template"]["metadata"]
        template.setdefault("annotations", {})[RUN_ANNOTATION] = str(run)
    return docs


def seed_manifests(transactions: Any, job: str) -> list[dict]:
    """A ConfigMap with ``transactions`` and the Job that writes their features through Sentinel.

    The Job's connection variables (SENTINELS, SENTINEL_MASTER, REDIS_PASSWORD) are the
    feature writer's in infra/k8s/fraud.yaml: the seed writes where the writer will.

    Args:
        transactions: a DataFrame or dicts with card_id, t, amount, merchant_category.
        job: the name of the Job and of its ConfigMap.

    Raises:
        HadrError: too many transactions for a ConfigMap (1 MiB).
    """
    from hadrlab.course import course_file
    from hadrlab.fraud import _records
    from hadrlab.platform.kube import COURSE_IMAGE, FIELD_MANAGER
    from hadrlab.platform.manifests import load_manifest

    rows = [{"card_id": str(r["card_id"]), "t": float(r["t"]), "amount": float(r["amount"]),
             "merchant_category": str(r["merchant_category"])} for r in _records(transactions)]
    if not rows:
        raise ValueError("There are no transactions to write features for; pass transactions=TXNS.")
    data = json.dumps(rows, separators=(",", ":"))
    if len(data) > SEED_MAX_BYTES:
        raise HadrError(f"{len(rows)} transactions make {len(data):,} bytes of JSON, more than a ConfigMap can "
                        f"carry ({SEED_MAX_BYTES:,} here, 1 MiB in Kubernetes). Seed fewer transactions "
                        f"(the lab uses a few hundred).")
    writer = _container(_deployment(load_manifest(course_file(MANIFEST), validate=False), WRITER), WRITER)
    env = [_env_item(writer, name) for name in ("SENTINELS", "SENTINEL_MASTER", "REDIS_PASSWORD")]
    labels = {"app.kubernetes.io/managed-by": FIELD_MANAGER, "app": "seed-features"}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": job, "labels": labels},
         "data": {SEED_FILE: data}},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job, "labels": labels},
         "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 300, "ttlSecondsAfterFinished": 600,
                  "template": {"metadata": {"labels": labels},
                               "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                                        "containers": [{
                                            "name": "main", "image": COURSE_IMAGE, "imagePullPolicy": "IfNotPresent",
                                            "command": ["python", "-m", "hadrlab.platform.kube_fraud", "seed",
                                                        f"{SEED_MOUNT}/{SEED_FILE}"],
                                            "env": env,
                                            "volumeMounts": [{"name": "seed", "mountPath": SEED_MOUNT,
                                                              "readOnly": True}]}],
                                        "volumes": [{"name": "seed", "configMap": {"name": job}}]}}}},
    ]


# --------------------------------------------------------------------------- the seed (in the Job)


def seed_features(path: str | Path, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """Write the features of the transactions in ``path`` (JSON) to the primary, through Sentinel.

    What runs inside the seed Job; the local Start cell does the same with
    ``fs.master_for()``. Returns (transactions written, the primary's "host:port").
    """
    import os

    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry
    from redis.sentinel import Sentinel

    from hadrlab.fraud import write_features
    from hadrlab.settings import parse_address

    env = dict(os.environ if env is None else env)
    sentinels = [parse_address(s, "SENTINELS") for s in env.get("SENTINELS", "").split(",") if s.strip()]
    if not sentinels:
        raise ValueError('SENTINELS is not set: the seed writes through Sentinel, e.g. SENTINELS="host:26379,...".')
    password = env.get("REDIS_PASSWORD") or None
    rows = json.loads(Path(path).read_text())
    sentinel = Sentinel(sentinels, sentinel_kwargs={"password": password, "socket_timeout": 1.0,
                                                    "socket_connect_timeout": 1.0},
                        password=password, socket_timeout=2.0, socket_connect_timeout=2.0)
    # Retries ride over a failover still settling when the Job starts.
    client = sentinel.master_for(env.get("SENTINEL_MASTER") or "features",
                                 retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 8),
                                 retry_on_error=[redis.ConnectionError, redis.TimeoutError])
    with contextlib.closing(client):
        n = write_features(client, rows)
        host, port = sentinel.discover_master(env.get("SENTINEL_MASTER") or "features")
    return n, f"{host}:{port}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m hadrlab.platform.kube_fraud seed FILE`` (the seed Job)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "seed":
        print("usage: python -m hadrlab.platform.kube_fraud seed TRANSACTIONS.json   (SENTINELS, "
              "SENTINEL_MASTER and REDIS_PASSWORD in the environment)", file=sys.stderr)
        return 2
    try:
        n, where = seed_features(argv[1])
    except (ValueError, OSError) as exc:
        print(f"seed failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(f"seeded the features of {n} transactions into the primary at {where}", flush=True)
    return 0


# --------------------------------------------------------------------------- the services


def parse_writer_log(text: str) -> list[list[str]]:
    """The writer's per-write CSV rows in a pod log (its own log lines and the header skipped)."""
    rows = []
    for line in text.splitlines():
        if not line[:1].isdigit() or line.count(",") < 6:
            continue
        with contextlib.suppress(csv.Error):
            row = next(csv.reader([line]))
            if len(row) == 7 and row[1].isdigit() and row[3] in ("0", "1"):
                with contextlib.suppress(ValueError):
                    float(row[0])
                    float(row[5])
                    rows.append(row)
    return rows


class KubeService:
    """One service of Lab 02 on the cluster, reached from this machine at ``url``.

    ``stop()`` stops it as stopping the local process would: its Deployment is scaled to 0
    (the sidecar, which lives in the fraud-api pods, only closes its port-forward).
    Stopping twice is fine.
    """

    def __init__(self, platform: Any, name: str, deployment: str | None, url: str | None = None, *,
                 pod: str | None = None, port: int | None = None) -> None:
        self.platform, self.name, self.deployment, self.url = platform, name, deployment, url
        self.pod, self.port = pod, port

    def stop(self, timeout_s: float | None = None) -> None:
        """Scale the Deployment to 0 (and close a pod port-forward); idempotent."""
        if self.pod is not None and self.port is not None:
            self.platform.stop_forward_pod(self.pod, self.port)
        if self.deployment is not None:
            with contextlib.suppress(HadrError):
                self.platform.scale(self.deployment, 0)

    def __repr__(self) -> str:
        where = f" pod {self.pod}" if self.pod else f" Deployment {self.deployment}" if self.deployment else ""
        return f"KubeService({self.name!r}{where}, url={self.url!r})"


class KubeFeatureWriter(KubeService):
    """The feature writer on the cluster: its write timeline comes from its pod's log."""

    def __init__(self, platform: Any) -> None:
        super().__init__(platform, WRITER, WRITER)

    def timeline(self):
        """The writes so far as a DataFrame: t, seq, card_id, ok, region, latency_ms, error.

        The same columns and types as :func:`hadrlab.fraud.writer_timeline` of a local
        writer; timestamps are epoch seconds from the pod's clock (on kind, the host's).
        """
        import pandas as pd

        rows: list[list[str]] = []
        for replica in self.platform.replicas(WRITER):
            rows += parse_writer_log(self.platform.pod_logs(replica.name))
        frame = pd.DataFrame(rows, columns=WRITER_COLUMNS)
        frame = frame.astype({"t": float, "seq": int, "ok": int, "latency_ms": float})
        return frame.sort_values("t", ignore_index=True)

    def stats(self) -> dict:
        """Writes, errors and writes by region so far, from the timeline (as ``writer_stats``)."""
        t = self.timeline()
        ok = t[t["ok"] == 1]
        return {"name": WRITER, "writes": len(ok), "errors": int((t["ok"] == 0).sum()),
                "by_region": {str(k): int(v) for k, v in ok["region"].value_counts().items()},
                "last_region": str(ok["region"].iloc[-1]) if len(ok) else None,
                "last_seq": int(ok["seq"].iloc[-1]) if len(ok) else 0}


class KubeFraudServices:
    """The scoring services of Lab 02 on the cluster, made by :func:`start_kube_fraud_services`.

    Attributes:
        api, receiver: the scoring API and the alert receiver (``.url``, ``.stop()``).
        sidecar: ONE fraud-api pod's sidecar (``.pod`` names it), through a pod port-forward.
        writer: the feature writer (``.timeline()``, ``.stop()``).
        seeded: how many transactions' features the seed Job wrote.
        startup_s: how long the start took.
    """

    def __init__(self, platform: Any, *, api: KubeService, sidecar: KubeService, receiver: KubeService,
                 writer: KubeFeatureWriter, seeded: int, startup_s: float) -> None:
        self.platform, self.api, self.sidecar, self.receiver, self.writer = platform, api, sidecar, receiver, writer
        self.seeded, self.startup_s = seeded, startup_s

    def stop(self, *, delete: bool = False) -> None:
        """Stop the writer, the API, the sidecar's forward and the receiver; ``delete``: remove the objects."""
        for service in (self.writer, self.api, self.sidecar, self.receiver):
            service.stop()
        if delete:
            self.platform.delete(fraud_manifests())
            self.platform.delete(f"configmap/{POLICY_CONFIGMAP}")  # a learner's policy, if one was run

    def __repr__(self) -> str:
        return (f"KubeFraudServices(context={self.platform.context!r}, api={self.api.url}, sidecar of pod "
                f"{self.sidecar.pod} at {self.sidecar.url}, receiver={self.receiver.url}, {self.seeded} "
                f"transactions seeded, started in {self.startup_s:.1f} s)")


def _pick_sidecar_pod(platform: Any) -> str:
    """The fraud-api pod whose sidecar the lab reads: the ready one in region B, else the oldest ready one."""
    ready = [r.name for r in platform.replicas("fraud-api") if r.ready and r.phase == "Running"]
    if not ready:
        raise ServiceNotReady(f"Deployment fraud-api has no ready pod after its rollout. Look at `kubectl -n "
                              f"{platform.namespace} get pods -l app=fraud-api`.")
    for name in ready:
        if platform.pod_region(name) == REGION_PREFERRED:
            return name
    return ready[0]


def _stop_writer(platform: Any, timeout_s: float) -> None:
    """Scale a running writer to 0 and wait until its pod is gone (no Deployment yet: nothing to do)."""
    from hadrlab.processes import wait_until

    try:
        platform.scale(WRITER, 0)
    except HadrError:
        return  # not applied yet
    wait_until(lambda: not platform.replicas(WRITER), timeout_s=timeout_s, interval_s=0.5,
               describe="the previous feature writer's pod to be gone")


def _seed(platform: Any, transactions: Any, timeout_s: float) -> int:
    """Run the seed Job to its end; return how many transactions it wrote."""
    import re

    job = f"seed-features-{secrets.token_hex(3)}"
    docs = seed_manifests(transactions, job)
    platform.apply(docs, quiet=True)
    try:
        deadline = time.monotonic() + timeout_s
        while (state := platform.job_state(job)) == "running":
            stuck = platform.job_stuck(job)
            if stuck:
                raise HadrError(f"The seed Job {job!r} cannot start its pod ({stuck}). Load the course image "
                                f"(`python -m hadrlab.kind up`) and apply infra/k8s/redis.yaml (its Secret "
                                f"redis-auth), then start the services again.")
            if time.monotonic() > deadline:
                pod = platform.job_pod(job)
                phase = ((pod or {}).get("status") or {}).get("phase", "no pod yet")
                raise ServiceNotReady(f"The seed Job {job!r} did not finish within {timeout_s:.0f} s (its pod: "
                                      f"{phase}). `kubectl -n {platform.namespace} describe job {job}` says why; "
                                      f"is the course image loaded (`python -m hadrlab.kind up`)?")
            time.sleep(0.5)
        log = platform.job_logs(job)
        found = re.search(r"seeded the features of (\d+) transactions", log)
        if state != "succeeded" or not found:
            raise HadrError(f"The seed Job {job!r} {state} without writing the features; its log ends: "
                            f"{log[-400:]!r}.")
        return int(found.group(1))
    finally:
        with contextlib.suppress(Exception):
            platform.delete(docs)


def _wait_http(url: str, path: str, what: str, timeout_s: float) -> None:
    from hadrlab.processes import http_status, wait_until

    wait_until(lambda: http_status(url.rstrip("/") + path) == 200, timeout_s=timeout_s, interval_s=0.25,
               describe=f"{what} to answer GET {url.rstrip('/')}{path} with 200")


def start_kube_fraud_services(
    fs: Any,
    *,
    transactions: Any,
    check_interval_ms: float = 200,
    latency_threshold_ms: float = 50,
    consecutive: int = 3,
    recover_consecutive: int = 5,
    policy: Any = None,
    policy_args: Mapping[str, Any] | None = None,
    rate_tps: float = 50,
    n_cards: int = 200,
    timeout_s: float = 180,
) -> KubeFraudServices:
    """Seed the first features, then run Lab 02's services on the cluster and wait until they serve.

    Args:
        fs: the cluster's feature store (:func:`hadrlab.start_kube_feature_store`); its
            platform is used.
        transactions: the transactions whose features are written first (the lab's ``TXNS``).
        check_interval_ms, latency_threshold_ms, consecutive, recover_consecutive: the
            sidecar's settings, as for :func:`hadrlab.start_sidecar`.
        policy, policy_args: a read policy (a class or ``"module:Class"``) and its arguments.
        rate_tps, n_cards: the feature writer's rate and cards.
        timeout_s: for the whole start (the seed Job, the rollouts, the first write).

    Returns:
        A :class:`KubeFraudServices`, with ``api``, ``sidecar``, ``receiver`` and ``writer``
        to pass to :func:`hadrlab.drills.run_drill`.
    """
    platform = fs.platform
    start = time.monotonic()
    left = lambda: max(1.0, timeout_s - (time.monotonic() - start))  # noqa: E731
    # Built first: a bad policy fails here, before anything on the cluster changes.
    docs = fraud_manifests(check_interval_ms=check_interval_ms, latency_threshold_ms=latency_threshold_ms,
                           consecutive=consecutive, recover_consecutive=recover_consecutive, policy=policy,
                           policy_args=policy_args, rate_tps=rate_tps, n_cards=n_cards, run=secrets.token_hex(4))
    _stop_writer(platform, min(30.0, left()))
    seeded = _seed(platform, transactions, left())
    platform.apply(docs, quiet=True)
    for name in DEPLOYMENTS:
        platform.wait_for_rollout(name, timeout_s=left())
    if not any(d["kind"] == "ConfigMap" and d["metadata"]["name"] == POLICY_CONFIGMAP for d in docs):
        # The policy module of an earlier start: no pod mounts it any more (the apply above
        # dropped the volume, and the rollout replaced the pods that had it).
        platform.delete(f"configmap/{POLICY_CONFIGMAP}")
    pod = _pick_sidecar_pod(platform)
    port = int(next(p["containerPort"] for p in _container(_deployment(docs, "fraud-api"), "sidecar")["ports"]))
    sidecar = KubeService(platform, "sidecar", None, platform.forward_pod(pod, port), pod=pod, port=port)
    try:
        api = KubeService(platform, "fraud-api", "fraud-api", platform.service_url("fraud-api"))
        receiver = KubeService(platform, "alert-receiver", "alert-receiver", platform.service_url("alert-receiver"))
        writer = KubeFeatureWriter(platform)
        _wait_http(api.url, "/readyz", "the scoring API", left())
        _wait_http(sidecar.url, "/state", f"the sidecar of pod {pod}", left())
        _wait_http(receiver.url, "/healthz", "the alert receiver", left())
        from hadrlab.processes import wait_until

        wait_until(lambda: (writer.timeline()["ok"] == 1).any(), timeout_s=left(), interval_s=0.5,
                   describe="the feature writer's first acknowledged write in its pod's log")
    except BaseException:
        sidecar.stop()
        raise
    return KubeFraudServices(platform, api=api, sidecar=sidecar, receiver=receiver, writer=writer,
                             seeded=seeded, startup_s=time.monotonic() - start)


if __name__ == "__main__":
    sys.exit(main())
