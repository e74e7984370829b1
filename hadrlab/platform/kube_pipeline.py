"""Lab 03's ML pipeline on a Kubernetes cluster: infra/k8s/pipeline.yaml, started and broken.

The local :class:`hadrlab.chaos.Pipeline` runs the registry, the trainer and the online API as
processes; :class:`KubePipeline` is its cluster twin with the same verbs (``write_state``,
``configuration``, ``trainer_status``, ``start_feature_store``, ``stop``), so that
``hadrlab.write_experiment(name, pipe)`` and ``hadrlab.run_experiment`` work on both.

The experiments' activities (``hadrlab.chaos.probe_*`` / ``action_*``) read the state file;
when it says ``"backend": "kube"`` they call the functions of this module, which do the
cluster's version of each fault and measure on the cluster:

==========================  ==========================================================
registry outage             the registry StatefulSet scaled to 0 (its pod deleted), then 1
registry slow               the registry's own fault setting (POST /admin/faults, exec'd
                            inside its pod)
kill the trainer            SIGKILL of the worker inside its pod (exec), so the pod FAILS
                            and the Job's podFailurePolicy and backoffLimit start a new pod
                            that resumes from the checkpoint on the volume
corrupt training data       a script exec'd in the trainer pod rewrites the training data
                            in the feature store (through Sentinel, with the pod's secret)
kill the batch scorer       SIGKILL of the scorer inside its Job's pod
fail over the feature store :meth:`KubeFeatureStore.kill_primary`
online SLO                  paced HTTP requests through the online API's Service URL (on
                            kind, pipeline.yaml's NodePort 30084: every ready replica)
exactly-once audit          a Job on the batch volume that counts duplicates and gaps, once
                            the batch Job has its Complete or Failed condition
==========================  ==========================================================

Why SIGKILL and not a pod deletion for the trainer: deleting a pod sends SIGTERM first, and
the worker then stops at a step boundary and exits 0, so the pod ends Succeeded and the Job
Complete, with no crash to recover from. SIGKILL is what a crash, an OOM kill or a lost node
does. The image runs ``tini`` as PID 1 (infra/docker/Dockerfile), which is what lets a signal
sent from inside the container reach the worker.

Example::

    pipe = start_kube_pipeline(hadrlab.UNHARDENED, name="baseline")
    hadrlab.run_experiment(hadrlab.write_experiment("registry-outage", pipe))
    pipe.stop()
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hadrlab.errors import HadrError, ServiceNotReady

__all__ = [
    "KubePipeline",
    "start_kube_pipeline",
    "pipeline_manifests",
    "batch_job_manifest",
]

REGISTRY = "registry"            # StatefulSet, headless Service
REGISTRY_POD = "registry-0"
ONLINE = "online-api"            # Deployment and Service
SEED_JOB = "online-model-seed"
TRAINER_JOB = "trainer"
BATCH_TEMPLATE = "batch-score"   # the Job in pipeline.yaml that batch jobs are made from
TRAINER_DIR = "/var/lib/trainer"
BATCH_DIR = "/var/lib/batch"
BATCH_CLAIM = "batch-data"
ONLINE_MODEL = "fraud-online"
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,28}[a-z0-9])?$")

# Run inside the registry pod: set (or read) its injected faults on its own port, with the
# token the pod already has. Prints the faults now set, as JSON.
REGISTRY_FAULTS_SCRIPT = """\
import json, os, sys
from hadrlab.registry import RegistryClient
url = "http://127.0.0.1:%s" % os.environ.get("PORT", "8100")
with RegistryClient(url, os.environ["REGISTRY_TOKEN"], timeout_s=10) as client:
    print(json.dumps(client.set_faults(delay_ms=float(sys.argv[1]), error_rate=float(sys.argv[2]))))
"""

# Run inside the registry pod: every version of a model, with the data digest it was trained on.
REGISTRY_VERSIONS_SCRIPT = """\
import json, os, sys
from hadrlab.registry import ModelNotFound, RegistryClient
url = "http://127.0.0.1:%s" % os.environ.get("PORT", "8100")
with RegistryClient(url, os.environ["REGISTRY_TOKEN"], timeout_s=10) as client:
    try:
        versions = client.list_versions(sys.argv[1])
    except ModelNotFound:
        versions = []
print(json.dumps([{"version": v.version, "stage": v.stage, "data_sha256": v.params.get("data_sha256")}
                  for v in versions]))
"""

# Run inside the trainer pod: write the training data (clean, or corrupted one way) to the
# pod's TRAINING_KEY through its own Redis settings; print the rows and the data's digest,
# the digest the trainer records as data_sha256.
TRAINING_DATA_SCRIPT = """\
import hashlib, json, os, sys
import pandas as pd
from hadrlab.contracts import corrupt
from hadrlab.training import connect_redis, make_training_data, read_training_data, write_training_data
kind, fraction, rows, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
key = os.environ.get("TRAINING_KEY") or "training:fraud"
client = connect_redis(os.environ)
data = make_training_data(rows, seed=seed)
if kind != "clean":
    data = corrupt(data, kind=kind, fraction=fraction, seed=1)
written = write_training_data(client, data, key=key)
frame = read_training_data(client, key=key)
digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).values.tobytes()).hexdigest()
print(json.dumps({"rows": written, "sha256": digest, "key": key}))
"""

# Run by the audit Job, which mounts the batch volume: count duplicates and gaps from the output.
BATCH_AUDIT_SCRIPT = """\
import json, sys
from hadrlab.batch import audit_batch, batch_status
audit = audit_batch(sys.argv[1], sys.argv[2])
print("AUDIT " + json.dumps({"expected": audit.expected, "scored": audit.scored, "duplicates": audit.duplicates,
                             "gaps": audit.gaps + audit.torn_rows, "status": batch_status(sys.argv[1])}))
"""


# =========================================================================== manifests


def _set_env(container: dict, name: str, value: Any, *, add: bool = False) -> None:
    from hadrlab.platform.manifests import set_env

    set_env(container, name, value, add=add, source="infra/k8s/pipeline.yaml")


def _flag(on: bool) -> str:
    return "1" if on else "0"


def _load_docs() -> list[dict]:
    from hadrlab.course import course_file
    from hadrlab.platform.manifests import load_manifest

    return load_manifest(course_file("infra/k8s/pipeline.yaml"), validate=False)  # fresh dicts, ours to edit


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"A cluster pipeline's name becomes part of object names: use 1-30 lower-case letters, "
                         f"digits and '-', starting and ending with a letter or digit; got {name!r}.")
    return name


def pipeline_manifests(hardening: Any = None, *, name: str = "pipeline", sizes: Any = None,
                       run: str = "run") -> list[dict]:
    """infra/k8s/pipeline.yaml with a Lab 03 pipeline's hardening and sizes; the batch Job left out.

    The edits (in memory; the file is not changed):

    - online API: RETRIES, BREAKER, CACHE_FALLBACK from the hardening; the reload interval,
      registry timeout and breaker reset of the local pipeline, so the experiments' timings
      hold on both backends;
    - trainer: CHECKPOINT_EVERY, CONTRACT, GATE; the local pipeline's steps, step time and
      schedule; MAX_RUNS 0 (it trains until the pipeline stops) and a 1 h deadline; its
      own checkpoint folder, training-data key and model name per run, so a new pipeline
      starts afresh as the local one does (the volume, Redis and the registry are shared);
    - the batch-score Job is left out: each experiment makes its own
      (:func:`batch_job_manifest`).

    Args:
        hardening: a :class:`hadrlab.chaos.Hardening` (default: HARDENED).
        name: the pipeline's name.
        sizes: a :class:`hadrlab.chaos.PipelineSizes` (default: the local defaults).
        run: a tag unique to this start (folder and key names).

    Returns:
        The manifest's documents, edited copies.
    """
    from hadrlab.chaos import HARDENED, PipelineSizes

    h = hardening or HARDENED
    s = sizes or PipelineSizes()
    _check_name(name)
    out = []
    for doc in _load_docs():
        kind, obj = doc["kind"], doc["metadata"]["name"]
        if kind == "Job" and obj == BATCH_TEMPLATE:
            continue
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        if kind == "Deployment" and obj == ONLINE:
            c = spec["containers"][0]
            for var, value in (("RETRIES", _flag(h.retries)), ("BREAKER", _flag(h.breaker)),
                               ("CACHE_FALLBACK", _flag(h.cache_fallback)),
                               ("RELOAD_INTERVAL_S", f"{s.reload_interval_s:g}"),
                               ("REGISTRY_TIMEOUT_S", f"{s.registry_timeout_s:g}"), ("BREAKER_RESET_S", "2")):
                _set_env(c, var, value)
        if kind == "Job" and obj == TRAINER_JOB:
            # Trains until stop(): the experiments need a trainer that keeps training. The
            # deadline still ends a forgotten pipeline.
            doc["spec"]["activeDeadlineSeconds"] = 3600
            key = f"training:fraud:{name}:{run}"
            for init in spec.get("initContainers") or []:
                _set_env(init, "TRAINING_KEY", key)
            c = spec["containers"][0]
            for var, value in (("CHECKPOINT_DIR", f"{TRAINER_DIR}/{name}-{run}"),
                               ("CHECKPOINT_EVERY", h.checkpoint_every), ("CONTRACT", _flag(h.contract)),
                               ("GATE", _flag(h.gate)), ("STEPS_PER_RUN", s.steps_per_run),
                               ("STEP_DELAY_MS", f"{s.step_delay_ms:g}"), ("SCHEDULE_S", f"{s.schedule_s:g}"),
                               ("MAX_RUNS", 0), ("REGISTRY_PATIENCE_S", 20), ("TRAINING_KEY", key),
                               ("MODEL_NAME", f"fraud-{name}")):
                _set_env(c, var, value)
        out.append(doc)
    return out


def batch_job_manifest(state: dict, *, job: str, output: str, redis: str = "none", retries: int = 2) -> dict:
    """The batch-score Job of pipeline.yaml, made into one experiment's job.

    Args:
        state: the pipeline's state (hardening, sizes, names).
        job: the Job's name.
        output: OUTPUT, a path on the batch volume (one per job: a progress marker binds it).
        redis: ``"none"`` (features from the input) or ``"feature_store"`` (from Redis:
            through the Sentinels with the ``sentinel`` switch on, else straight to region
            A's Redis, giving up after 1 s of errors, as on the local backend).
        retries: the Job's backoffLimit (how many times a failed pod is replaced).
    """
    doc = next(d for d in _load_docs() if d["kind"] == "Job" and d["metadata"]["name"] == BATCH_TEMPLATE)
    hardening, sizes = state["hardening"], state["sizes"]
    doc["metadata"]["name"] = job
    doc["metadata"]["labels"] = {"app": BATCH_TEMPLATE, "hadrlab.io/pipeline": state["name"]}
    doc["spec"]["backoffLimit"] = int(retries)
    doc["spec"]["activeDeadlineSeconds"] = 600
    doc["spec"]["ttlSecondsAfterFinished"] = 600
    spec = doc["spec"]["template"]["spec"]
    doc["spec"]["template"]["metadata"]["labels"] = {"app": BATCH_TEMPLATE, "hadrlab.io/pipeline": state["name"]}
    for init in spec.get("initContainers") or []:
        _set_env(init, "MODEL_NAME", state["trainer"]["model"])
    c = spec["containers"][0]
    for var, value in (("OUTPUT", output), ("COMMIT_MODE", hardening["commit_mode"]),
                       ("MODEL_NAME", state["trainer"]["model"]), ("CHUNK_SIZE", sizes["batch_chunk_size"]),
                       ("CHUNK_DELAY_MS", f"{sizes['batch_chunk_delay_ms']:g}")):
        _set_env(c, var, value)
    if redis == "feature_store":
        if hardening["sentinel"]:
            _set_env(c, "SENTINELS", "sentinel-a-0.sentinel:26379,sentinel-b-0.sentinel:26379,"
                                     "sentinel-w-0.sentinel:26379", add=True)
            _set_env(c, "SENTINEL_MASTER", "features", add=True)
        else:
            _set_env(c, "REDIS_HOST", "redis-a-0.redis-a", add=True)
            _set_env(c, "REDIS_PORT", "6379", add=True)
            _set_env(c, "REDIS_PATIENCE_S", "1", add=True)
        c["env"].append({"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "redis-auth",
                                                                                  "key": "password"}}})
    elif redis != "none":
        raise ValueError(f'redis must be "none" or "feature_store"; got {redis!r}.')
    return doc


# =========================================================================== the pipeline


def _pod_running(pod: dict | None) -> bool:
    return bool(pod) and (pod.get("status") or {}).get("phase") == "Running" and \
        not (pod.get("metadata") or {}).get("deletionTimestamp")


@dataclass(eq=False)
class KubePipeline:
    """Lab 03's pipeline on a cluster; made by :func:`start_kube_pipeline`.

    ``pipe.state_path`` is the JSON file every activity reads (it says ``"backend": "kube"``
    and names the context, namespace and objects; no secret: tokens stay in the cluster);
    ``pipe.configuration()`` is the configuration block written into an experiment.
    """

    name: str
    hardening: Any
    sizes: Any
    run_dir: Path
    platform: Any = field(repr=False, default=None)
    state: dict = field(repr=False, default_factory=dict)
    feature_store: Any = field(repr=False, default=None)
    startup_s: float | None = None
    _own_platform: bool = field(repr=False, default=False)
    _stopped: bool = field(repr=False, default=False)

    backend = "kube"

    @property
    def state_path(self) -> Path:
        return self.run_dir / "pipeline.json"

    @property
    def checkpoint_dir(self) -> str:
        """The trainer's checkpoint folder, inside its pod (on the trainer-checkpoints volume)."""
        return self.state["trainer"]["checkpoint_dir"]

    def write_state(self) -> Path:
        """Write ``pipeline.json``: the cluster, the objects and the switches an activity needs."""
        self.state_path.touch(mode=0o600, exist_ok=True)
        self.state_path.write_text(json.dumps(self.state, indent=2, default=str))
        return self.state_path

    def configuration(self, **extra: Any) -> dict:
        """The experiment configuration for this pipeline: its state file, name and switches."""
        return {"pipeline": str(self.state_path), "label": self.name, **extra}

    def trainer_status(self):
        """The trainer's :class:`~hadrlab.training.TrainerStatus`, read from its pod's volume."""
        return read_trainer_status(self.state, self.platform)

    def start_feature_store(self, **kwargs: Any) -> Any:
        """Apply the cluster's feature store (infra/k8s/redis.yaml) and record it in the state.

        Args:
            **kwargs: ``down_after_ms``, ``min_replicas_to_write``, ``timeout_s`` (see
                :func:`hadrlab.platform.kube_featurestore.start_kube_feature_store`); options of
                the local feature store that a cluster sets in its manifest are refused.
        """
        from hadrlab.platform.kube_featurestore import start_kube_feature_store

        allowed = {"down_after_ms", "min_replicas_to_write", "timeout_s"}
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise HadrError(f"start_feature_store({', '.join(unknown)}=...) is an option of the local feature "
                            f"store; on a cluster the Redis objects come from infra/k8s/redis.yaml, which "
                            f"takes only {sorted(allowed)}.")
        fs = start_kube_feature_store(self.platform, **kwargs)
        self.feature_store = fs
        self.state["feature_store"] = {"down_after_ms": fs.down_after_ms}
        self.write_state()
        return fs

    def stop_feature_store(self) -> None:
        """Forget the feature store (its probe Jobs are deleted; the Redis objects stay: they are the cluster's)."""
        if self.feature_store is not None:
            with contextlib.suppress(Exception):
                self.feature_store.stop()
            self.feature_store = None
        if self.state.pop("feature_store", None) is not None:
            self.write_state()

    def stop(self) -> None:
        """Delete this pipeline's trainer and batch Jobs; keep the registry and online API. Idempotent.

        The trainer trains until stopped (MAX_RUNS 0), so it is deleted; the registry, its
        models and the online API stay for the next pipeline, as a platform's would.
        """
        if self._stopped or self.platform is None:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            self.stop_feature_store()
        with contextlib.suppress(Exception):
            self.platform.delete_job(TRAINER_JOB)
        with contextlib.suppress(Exception):
            for job in _pipeline_batch_jobs(self.platform, self.name):
                self.platform.delete_job(job)
        if self._own_platform:
            self.platform.close()

    def __enter__(self) -> KubePipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _parts(self) -> str:
        def check(what: str, probe: Any) -> str:
            try:
                return f"{what} {'up' if probe() else 'down'}"
            except Exception:
                return f"{what} ?"
        p = self.platform
        return ", ".join([
            check("registry", lambda: int((p._call("get", p._path("apps/v1", "StatefulSet", REGISTRY)).get("status")
                                           or {}).get("readyReplicas", 0)) >= 1),
            check("trainer", lambda: _pod_running(p.job_pod(TRAINER_JOB))),
            check("online API", lambda: any(r.ready for r in p.replicas(ONLINE)))])

    def __repr__(self) -> str:
        where = f"{getattr(self.platform, 'context', '?')}/{getattr(self.platform, 'namespace', '?')}"
        parts = "stopped" if self._stopped else self._parts()
        return f"KubePipeline({self.name!r} on {where}: {parts}; {self.hardening.describe()})"


def _pipeline_batch_jobs(platform: Any, name: str) -> list[str]:
    items = platform._call("get", platform._path("batch/v1", "Job"),
                           query=[("labelSelector", f"hadrlab.io/pipeline={name}")]).get("items") or []
    return [j["metadata"]["name"] for j in items]


def _wait_job_gone(platform: Any, job: str, timeout_s: float) -> None:
    from hadrlab.processes import wait_until

    path = platform._path("batch/v1", "Job", job)
    wait_until(lambda: platform._get_or_none(path) is None, timeout_s=timeout_s, interval_s=0.5,
               describe=f"the old Job {job!r} (and, deleted in the foreground, its pods) to be gone")


def _wait_job_succeeded(platform: Any, job: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        state = platform.job_state(job)
        if state == "succeeded":
            return
        if state == "failed":
            raise HadrError(f"The Job {job!r} failed; its log ends: {platform.job_logs(job)[-400:]!r}. "
                            f"`kubectl -n {platform.namespace} describe job {job}` says why.")
        stuck = platform.job_stuck(job)
        if stuck:
            raise HadrError(f"The Job {job!r} cannot start its pod ({stuck}). Load the course image (`python -m "
                            f"hadrlab.kind up`) and check the Secrets its pod reads (`kubectl -n "
                            f"{platform.namespace} describe job {job}`).")
        if time.monotonic() > deadline:
            raise ServiceNotReady(f"The Job {job!r} did not succeed within {timeout_s:g} s (its pod: "
                                  f"{((platform.job_pod(job) or {}).get('status') or {}).get('phase', 'none yet')}). "
                                  f"Is the course image loaded (`python -m hadrlab.kind up`)?")
        time.sleep(1.0)


def start_kube_pipeline(hardening: Any = None, *, name: str = "pipeline", platform: Any = None, sizes: Any = None,
                        run_dir: str | os.PathLike | None = None, feature_store: bool = True,
                        timeout_s: float = 600.0) -> KubePipeline:
    """Start Lab 03's pipeline on the cluster with the given hardening; wait for its steady state.

    Steady state, as for :func:`hadrlab.start_pipeline`: the trainer registered a first model
    and the online API serves its model from the registry.

    Args:
        hardening: the switches (:data:`hadrlab.UNHARDENED`, :data:`hadrlab.HARDENED`, your own).
        name: names the run folder (``<home_dir()>/chaos/<name>``, emptied) and the trainer's
            model (``fraud-<name>``); lower-case letters, digits and ``-``.
        platform: a :class:`hadrlab.platform.kube.KubePlatform` (default: a new one on the
            configured context, closed by ``stop()``).
        sizes: a :class:`hadrlab.chaos.PipelineSizes` (default: the local pipeline's).
        run_dir: another run folder (on this machine: state file, experiments, journals).
        feature_store: apply infra/k8s/redis.yaml first (the trainer reads its data from it).
        timeout_s: how long images, volumes, the first model and the rollouts may take.

    Returns:
        A running :class:`KubePipeline`; ``stop()`` it when done.
    """
    import numpy as np

    from hadrlab.chaos import HARDENED, PipelineSizes, estimator_sample
    from hadrlab.processes import home_dir, wait_until

    hardening = hardening or HARDENED
    sizes = sizes or PipelineSizes()
    _check_name(name)
    own = platform is None
    if own:
        from hadrlab.platform.kube import KubePlatform

        platform = KubePlatform(quiet=True)
    root = Path(run_dir) if run_dir is not None else home_dir() / "chaos" / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    start = time.monotonic()
    left = lambda: max(1.0, timeout_s - (time.monotonic() - start))  # noqa: E731
    pipe = KubePipeline(name=name, hardening=hardening, sizes=sizes, run_dir=root, platform=platform,
                        _own_platform=own)
    run = f"{int(time.time())}-{secrets.token_hex(2)}"
    try:
        if feature_store:
            pipe.start_feature_store(timeout_s=left())
        # A Job's pod template cannot change in place: the previous pipeline's trainer goes first,
        # pods included (foreground): a terminating old pod still holds the checkpoint volume
        # and the job-name=trainer label that job_pod() selects the new pod by.
        platform.delete_job(TRAINER_JOB, foreground=True)
        _wait_job_gone(platform, TRAINER_JOB, left())
        # A seed Job that failed (the registry never came up in its 6 tries) stays Failed and
        # an unchanged apply does not run it again: give it a fresh start.
        if platform._get_or_none(platform._path("batch/v1", "Job", SEED_JOB)) is not None \
                and platform.job_state(SEED_JOB) == "failed":
            platform.delete_job(SEED_JOB, foreground=True)
            _wait_job_gone(platform, SEED_JOB, left())
        platform.apply(pipeline_manifests(hardening, name=name, sizes=sizes, run=run), quiet=True)
        platform.wait_for_statefulset(REGISTRY, timeout_s=left())
        _wait_job_succeeded(platform, SEED_JOB, left())
        platform.wait_for_rollout(ONLINE, timeout_s=left())
        online_url = platform.service_url(ONLINE)
        pipe.state = {
            "backend": "kube", "name": name, "run": run, "hardening": asdict(hardening), "sizes": asdict(sizes),
            "run_dir": str(root), "context": platform.context, "namespace": platform.namespace,
            # How another process (`chaos run`) reaches the same API: None for a real cluster,
            # where the context says it all; a fake API server names its factory here.
            "api": getattr(platform.api, "activity_api", None),
            "registry": {"statefulset": REGISTRY, "pod": REGISTRY_POD, "container": "registry"},
            "online": {"url": online_url, "deployment": ONLINE, "service": ONLINE, "model": ONLINE_MODEL,
                       "features": np.round(estimator_sample(), 4).tolist()},
            "trainer": {"job": TRAINER_JOB, "container": "trainer", "checkpoint_dir": f"{TRAINER_DIR}/{name}-{run}",
                        "model": f"fraud-{name}"},
            "training_data": {"rows": sizes.training_rows, "seed": 0, "key": f"training:fraud:{name}:{run}"},
            "batch": {"template": BATCH_TEMPLATE, "dir": BATCH_DIR, "input": f"{BATCH_DIR}/input.csv"},
            **({"feature_store": pipe.state["feature_store"]} if "feature_store" in pipe.state else {}),
        }
        pipe.write_state()
        wait_until(lambda: read_trainer_status(pipe.state, platform).models_registered >= 1, timeout_s=left(),
                   interval_s=1.0, describe=f"the trainer's first registered model (Job {TRAINER_JOB!r})")
        pipe.startup_s = round(time.monotonic() - start, 1)
    except BaseException:
        pipe.stop()
        raise
    return pipe


# =========================================================================== activities
# Called by hadrlab.chaos's probes and actions when the state says "backend": "kube". They
# run in the `chaos run` process: the platform is made there, from the state.

_platforms: dict[tuple, Any] = {}
_marks: dict[str, Any] = {}
_jobs: dict[str, dict] = {}


def platform_of(state: dict) -> Any:
    """The :class:`KubePlatform` of a pipeline's state (one per process, no watches)."""
    from hadrlab.platform.kube import KubePlatform

    key = (state.get("context"), state.get("namespace"), json.dumps(state.get("api"), sort_keys=True))
    if key not in _platforms:
        api = None
        spec = state.get("api")
        if spec:
            module, _, func = spec["factory"].partition(":")
            api = getattr(importlib.import_module(module), func)(state, **(spec.get("kwargs") or {}))
        _platforms[key] = KubePlatform(api=api, context=state.get("context"), namespace=state.get("namespace"),
                                       watch=False, quiet=True, host_ports={})
    return _platforms[key]


def _exec(platform: Any, pod: str, command: list[str], *, container: str, what: str,
          timeout_s: float = 30.0) -> tuple[int, str, str]:
    """``platform.exec`` with a missing or not-yet-running pod turned into a HadrError that says what to do."""
    from hadrlab.platform.kube import _status

    try:
        return platform.exec(pod, command, container=container, timeout_s=timeout_s)
    except HadrError:
        raise
    except Exception as exc:
        if _status(exc) not in (400, 404):
            raise
        hint = (f"if a registry-outage experiment was interrupted, bring the registry back with `kubectl -n "
                f"{platform.namespace} scale statefulset {REGISTRY} --replicas=1`" if pod == REGISTRY_POD else
                f"`kubectl -n {platform.namespace} get pods` shows what runs; start the pipeline again "
                f"(start_kube_pipeline) if its parts are gone")
        raise HadrError(f"{what} needs pod {pod!r} (container {container!r}) in namespace {platform.namespace!r}, "
                        f"which is missing or not running (HTTP {_status(exc)}); {hint}.") from None


def _exec_json(platform: Any, pod: str, container: str, command: list[str], what: str,
               timeout_s: float = 30.0) -> Any:
    code, out, err = _exec(platform, pod, command, container=container, what=what, timeout_s=timeout_s)
    lines = [line for line in out.splitlines() if line.strip()]
    if code != 0 or not lines:
        raise HadrError(f"{what} in pod {pod} failed (exit {code}): {(err or out).strip()[-300:] or 'no output'}. "
                        f"`kubectl -n {platform.namespace} logs {pod}` may say why.")
    return json.loads(lines[-1])


def _trainer_pod(state: dict, platform: Any, *, required: bool = True) -> dict | None:
    pod = platform.job_pod(state["trainer"]["job"])
    if _pod_running(pod):
        return pod
    if not required:
        return None
    phase = ((pod or {}).get("status") or {}).get("phase", "no pod")
    job_state = platform.job_state(state["trainer"]["job"])
    raise HadrError(
        f"The trainer Job {state['trainer']['job']!r} has no running pod (newest: {phase}; Job {job_state}), so its "
        f"status cannot be read. A pod that failed is replaced after the Job's back-off (10 s, then 20 s...); a "
        f"Job that failed or completed needs the pipeline started again (start_kube_pipeline). "
        f"`kubectl -n {platform.namespace} describe job {state['trainer']['job']}` says why.")


def read_trainer_status(state: dict, platform: Any = None):
    """The trainer's status.json, read inside its running pod (exec ``cat``)."""
    from hadrlab.training import STATUS_NAME, TrainerStatus, _status_from_dict

    platform = platform or platform_of(state)
    pod = _trainer_pod(state, platform)["metadata"]["name"]
    path = f"{state['trainer']['checkpoint_dir']}/{STATUS_NAME}"
    code, out, err = _exec(platform, pod, ["cat", path], container=state["trainer"]["container"],
                           what="Reading the trainer's status")
    if code != 0:
        if "No such file" in (err + out):
            return TrainerStatus()  # the worker has not written one yet
        raise HadrError(f"Reading {path} in pod {pod} failed (exit {code}): {(err or out).strip()[:300]}.")
    return _status_from_dict(json.loads(out))


def _signal_pod(platform: Any, pod: str, container: str, signum: int, what: str) -> str:
    from hadrlab.platform.kube import SIGNAL_SCRIPT

    code, out, err = _exec(platform, pod, ["python", "-c", SIGNAL_SCRIPT, str(signum)], container=container,
                           what=what[0].upper() + what[1:])
    if code == 0:
        return out.strip()
    why = ("the worker is PID 1 of its container, and Linux drops a SIGKILL sent to PID 1 from inside it; the "
           "course image runs tini as PID 1 (infra/docker/Dockerfile): rebuild it with `python -m hadrlab.kind up`"
           if code == 3 else f"exec exited with code {code}: {(err or out).strip()[:200]}")
    raise HadrError(f"Could not {what} in pod {pod}: {why}. Deleting the pod instead is no substitute: the "
                    f"worker would get SIGTERM, stop cleanly and exit 0, so the Job would count a success, "
                    f"not a crash.")


def kill_trainer(state: dict, at_step: int = 30, timeout_s: float = 30.0) -> dict:
    """SIGKILL the trainer inside its pod once its current run has passed ``at_step``."""
    from hadrlab.processes import wait_until

    platform = platform_of(state)

    def mid_run() -> bool:
        s = read_trainer_status(state, platform)
        return s.phase == "training" and s.step >= at_step
    wait_until(mid_run, timeout_s=timeout_s, interval_s=0.02, describe=f"the trainer passing step {at_step}")
    pod = _trainer_pod(state, platform)["metadata"]["name"]
    status = read_trainer_status(state, platform)
    pids = _signal_pod(platform, pod, state["trainer"]["container"], 9, "SIGKILL the trainer")
    _marks["trainer_killed"] = t = time.time()
    _marks["trainer_pod"] = pod
    return {"pod": pod, "pid": pids, "step": status.step, "t": round(t, 3)}


def trainer_recovery(state: dict, timeout_s: float = 40.0) -> dict:
    """Wait for the Job's next pod to resume and register a model; return the times and the pods."""
    from hadrlab.processes import wait_until

    platform = platform_of(state)
    t0 = _marks.get("trainer_killed", time.time())
    killed = _marks.get("trainer_pod")

    def restarted():
        pod = _trainer_pod(state, platform, required=False)
        if pod is None or pod["metadata"]["name"] == killed:
            return None
        status = read_trainer_status(state, platform)
        return status if status.started_at > t0 else None
    wait_until(lambda: restarted() is not None, timeout_s=timeout_s, interval_s=0.5,
               describe=f"a new pod of Job {state['trainer']['job']!r} running the trainer again")
    restart_s = restarted().started_at - t0

    def registered_at() -> float | None:
        runs = [r for r in read_trainer_status(state, platform).runs
                if r.get("version") is not None and r.get("t_end", 0) > t0]
        return min(r["t_end"] for r in runs) if runs else None
    wait_until(lambda: registered_at() is not None, timeout_s=timeout_s, interval_s=0.5,
               describe="a model registered after the kill")
    job = platform._call("get", platform._path("batch/v1", "Job", state["trainer"]["job"])).get("status") or {}
    return {"restart_s": round(restart_s, 2), "recovery_s": round(registered_at() - t0, 2),
            "failed_pods": int(job.get("failed", 0))}


def registry_outage(state: dict, timeout_s: float = 60.0) -> dict:
    """Scale the registry StatefulSet to 0 and wait until its pod is gone."""
    from hadrlab.processes import wait_until

    platform = platform_of(state)
    reg = state["registry"]
    platform.scale_statefulset(reg["statefulset"], 0)
    t = time.time()
    path = platform._path("v1", "Pod", reg["pod"])
    gone_s = wait_until(lambda: platform._get_or_none(path) is None, timeout_s=timeout_s, interval_s=0.2,
                        describe=f"the registry pod {reg['pod']!r} to be gone")
    _marks["registry_down"] = t
    return {"statefulset": reg["statefulset"], "replicas": 0, "pod_gone_s": round(gone_s, 2), "t": round(t, 3)}


def end_registry_outage(state: dict, timeout_s: float = 180.0) -> dict:
    """Scale the registry back to 1 and wait until its pod is ready (a rollback)."""
    platform = platform_of(state)
    reg = state["registry"]
    platform.scale_statefulset(reg["statefulset"], 1)
    ready_s = platform.wait_for_statefulset(reg["statefulset"], timeout_s=timeout_s)
    return {"statefulset": reg["statefulset"], "replicas": 1, "ready_s": round(ready_s, 2)}


def registry_faults(state: dict, delay_ms: float = 1500, error_rate: float = 0.0) -> dict:
    """Set the registry's injected delay and error rate, from inside its pod."""
    platform = platform_of(state)
    reg = state["registry"]
    return _exec_json(platform, reg["pod"], reg["container"],
                      ["python", "-c", REGISTRY_FAULTS_SCRIPT, f"{delay_ms:g}", f"{error_rate:g}"],
                      "Setting the registry's faults")


def wait_for_online_ready(state: dict, timeout_s: float = 30.0) -> float:
    """Wait until every online API replica is available and the Service answers /readyz 200."""
    from hadrlab.processes import http_status, wait_until

    start = time.monotonic()
    platform = platform_of(state)
    platform.wait_for_rollout(state["online"]["deployment"], timeout_s=timeout_s)
    url = state["online"]["url"]
    wait_until(lambda: http_status(url + "/readyz") == 200, timeout_s=max(1.0, timeout_s - (time.monotonic() - start)),
               describe=f"the online API's Service at {url} to be ready again")
    return round(time.monotonic() - start, 2)


def write_training_data(state: dict, kind: str = "clean", fraction: float = 0.0) -> dict:
    """Rewrite the training data from inside the trainer pod; return rows, digest and key."""
    platform = platform_of(state)
    pod = _trainer_pod(state, platform)["metadata"]["name"]
    data = state["training_data"]
    return _exec_json(platform, pod, state["trainer"]["container"],
                      ["python", "-c", TRAINING_DATA_SCRIPT, kind, f"{fraction:g}", str(data["rows"]),
                       str(data["seed"])], f"Writing {kind} training data", timeout_s=60)


def registry_versions(state: dict) -> list[dict]:
    """Every version of the trainer's model: version, stage, data_sha256 (asked inside the registry pod)."""
    platform = platform_of(state)
    reg = state["registry"]
    return _exec_json(platform, reg["pod"], reg["container"],
                      ["python", "-c", REGISTRY_VERSIONS_SCRIPT, state["trainer"]["model"]],
                      "Listing the registry's versions")


# -- batch jobs


def _batch_output(state: dict, tag: str) -> str:
    suffix = ".db" if state["hardening"]["commit_mode"] == "atomic" else ".csv"
    return f"{state['batch']['dir']}/{state['name']}-{state['run']}-{tag}-{secrets.token_hex(3)}{suffix}"


def _create_batch_job(state: dict, *, redis: str, retries: int, tag: str) -> dict:
    platform = platform_of(state)
    if redis == "feature_store" and not state.get("feature_store"):
        raise HadrError("This experiment reads features from the cluster's feature store, which this pipeline "
                        "did not start: call pipe.start_feature_store() first (or start_kube_pipeline("
                        "feature_store=True)).")
    job = f"batch-{state['name']}-{secrets.token_hex(3)}"
    output = _batch_output(state, tag)
    platform.apply(batch_job_manifest(state, job=job, output=output, redis=redis, retries=retries), quiet=True)
    # Every Job made here is deleted by the rollback (stop_batch_jobs), whichever key holds it.
    _jobs[job] = entry = {"job": job, "output": output, "t": time.time()}
    return entry


def start_batch_job(state: dict, redis: str = "none", retries: int = 2) -> dict:
    """Create this experiment's batch-score Job (the one the kill and the audit act on); return its name and output."""
    entry = _create_batch_job(state, redis=redis, retries=retries, tag="job")
    _jobs["current"] = entry
    return {"job": entry["job"], "output": entry["output"].rsplit("/", 1)[-1],
            "commit_mode": state["hardening"]["commit_mode"], "retries": retries}


def _batch_status(platform: Any, job: str, output: str) -> dict:
    pod = platform.job_pod(job)
    if not _pod_running(pod):
        return {}
    code, out, _ = _exec(platform, pod["metadata"]["name"], ["cat", f"{output}.status.json"], container="batch",
                         what="Reading the batch Job's progress")
    with contextlib.suppress(ValueError):  # a status file caught mid-write: read again next time
        return json.loads(out) if code == 0 and out.strip() else {}
    return {}


def _wait_chunks(platform: Any, current: dict, after_chunks: int, timeout_s: float) -> None:
    from hadrlab.processes import wait_until

    def passed() -> bool:
        if platform.job_state(current["job"]) != "running":
            raise HadrError(f"The batch Job {current['job']!r} ended ({platform.job_state(current['job'])}) before "
                            f"chunk {after_chunks}; its log ends: {platform.job_logs(current['job'])[-300:]!r}.")
        return _batch_status(platform, current["job"], current["output"]).get("chunks_done", 0) >= after_chunks
    wait_until(passed, timeout_s=timeout_s, interval_s=0.05,
               describe=f"the batch Job {current['job']!r} at chunk {after_chunks} (its pod first waits for a "
                        f"production model of the trainer's; `kubectl logs job/{current['job']} -c prepare` says if "
                        f"it still waits)")


def _current_job() -> dict:
    current = _jobs.get("current")
    if current is None:
        raise HadrError("No batch Job was started in this experiment: action_start_batch_job must come first.")
    return current


def kill_batch_job(state: dict, after_chunks: int = 3, timeout_s: float = 120.0) -> dict:
    """SIGKILL the batch scorer inside its pod, in the middle of a chunk."""
    platform = platform_of(state)
    current = _current_job()
    _wait_chunks(platform, current, after_chunks, timeout_s)
    time.sleep(state["sizes"]["batch_chunk_delay_ms"] / 2000)  # into the middle of the next chunk
    pod = platform.job_pod(current["job"])
    if not _pod_running(pod):
        raise HadrError(f"The batch Job {current['job']!r} has no running pod to kill (newest: "
                        f"{((pod or {}).get('status') or {}).get('phase', 'none')}); it finished or failed first. "
                        f"`kubectl -n {platform.namespace} describe job {current['job']}` says why.")
    pod = pod["metadata"]["name"]
    chunks = _batch_status(platform, current["job"], current["output"]).get("chunks_done")
    pids = _signal_pod(platform, pod, "batch", 9, "SIGKILL the batch scorer")
    _marks["batch_killed"] = t = time.time()
    return {"pod": pod, "pid": pids, "chunks_done": chunks, "t": round(t, 3)}


def fail_over_feature_store(state: dict, after_chunks: int = 2, timeout_s: float = 120.0) -> dict:
    """Crash the feature store's primary (KubeFeatureStore.kill_primary) once the batch Job is under way."""
    from hadrlab.platform.kube_featurestore import KubeFeatureStore

    platform = platform_of(state)
    fs_state = state.get("feature_store")
    if not fs_state:
        raise HadrError("This experiment needs the cluster's feature store: call pipe.start_feature_store() first.")
    current = _jobs.get("current")
    if current is not None:
        _wait_chunks(platform, current, after_chunks, timeout_s)
    missing = [pod for pod in ("redis-a-0", "redis-b-0", "sentinel-w-0")
               if platform._get_or_none(platform._path("v1", "Pod", pod)) is None]
    if missing:
        raise HadrError(f"The feature store's pods {', '.join(missing)} are missing from namespace "
                        f"{platform.namespace!r}, so there is no primary to crash. Start it again with "
                        f"pipe.start_feature_store() (it applies infra/k8s/redis.yaml), and look at `kubectl -n "
                        f"{platform.namespace} get pods -l app=redis` if it does not come up.")
    fs = KubeFeatureStore(platform, down_after_ms=fs_state.get("down_after_ms", 1000))
    region = fs.kill_primary()
    _marks["primary_killed"] = t = time.time()
    return {"killed_region": region, "t": round(t, 3)}


def _audit(state: dict, platform: Any, output: str, timeout_s: float) -> dict:
    """Run an audit Job on the batch volume; return what it printed."""
    from hadrlab.platform.kube import COURSE_IMAGE, FIELD_MANAGER

    job = f"audit-{state['name']}-{secrets.token_hex(3)}"
    platform.apply({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job, "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER,
                                             "hadrlab.io/pipeline": state["name"]}},
        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 300, "ttlSecondsAfterFinished": 600,
                 "template": {"spec": {
                     "restartPolicy": "Never", "securityContext": {"fsGroup": 10001},
                     "containers": [{"name": "audit", "image": COURSE_IMAGE, "imagePullPolicy": "IfNotPresent",
                                     "command": ["python", "-c", BATCH_AUDIT_SCRIPT, output, state["batch"]["input"]],
                                     "volumeMounts": [{"name": "data", "mountPath": state["batch"]["dir"]}]}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": BATCH_CLAIM}}]}}},
    }, quiet=True)
    try:
        _wait_job_succeeded(platform, job, timeout_s)
        line = next((ln for ln in platform.job_logs(job).splitlines() if ln.startswith("AUDIT ")), None)
        if line is None:
            raise HadrError(f"The audit Job {job!r} printed no AUDIT line; its log: {platform.job_logs(job)[-300:]!r}.")
        return json.loads(line[len("AUDIT "):])
    finally:
        with contextlib.suppress(Exception):
            platform.delete_job(job)


def batch_exactly_once(state: dict, redis: str = "none", timeout_s: float = 90.0) -> dict:
    """Wait for this experiment's batch Job (or run a fresh one), then audit its output on the volume."""
    platform = platform_of(state)
    t0 = time.time()
    # The steady-state check runs a fresh Job of its own (not the experiment's "current" one),
    # as the local probe does; the rollback deletes it with the others.
    current = _jobs.get("current") or _create_batch_job(state, redis=redis, retries=0, tag="steady")
    deadline = time.monotonic() + timeout_s
    # Until the Job's condition says it ended: a Job whose killed pod is being replaced is still
    # running, and auditing then would count the records its next pod has yet to score.
    while (phase := platform.job_state(current["job"])) == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    pods = platform._call("get", platform._path("v1", "Pod"),
                          query=[("labelSelector", f"job-name={current['job']}")]).get("items") or []
    if phase == "running":
        # Out of time: stop it, as the local probe stops its job, so the audit reads a quiet file:
        # a foreground deletion, so the Job is gone only once its pod has stopped writing.
        platform.delete_job(current["job"], foreground=True)
        _wait_job_gone(platform, current["job"], 60)
    audit = _audit(state, platform, current["output"], timeout_s=120)
    return {"expected": audit["expected"], "scored": audit["scored"], "duplicates": audit["duplicates"],
            "gaps": audit["gaps"], "starts": len(pods), "job": phase,
            "elapsed_s": round(time.time() - min(t0, current.get("t", t0)), 2)}


def stop_batch_jobs(state: dict) -> int:
    """Delete this experiment's batch Jobs (a rollback); return how many there were."""
    platform = platform_of(state)
    jobs = sorted({j["job"] for j in _jobs.values()})
    for job in jobs:
        platform.delete_job(job)
    _jobs.clear()
    return len(jobs)
