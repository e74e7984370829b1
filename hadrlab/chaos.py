"""Chaos experiments on the ML pipeline, written for and run by Chaos Toolkit.

Three parts, in the order a lab uses them:

1. **The system under experiment** (:func:`start_pipeline`): a Redis holding the training
   data, the model registry, the continuous trainer, the online scoring API and the
   inputs of the batch scorer, all started with one :class:`Hardening` (retries, breaker,
   cached-model fallback, checkpoints, data contract, promotion gate, atomic commits,
   a Sentinel-aware feature-store client). A small supervisor restarts the trainer when it
   dies, as a Kubernetes Deployment would restart its pod. Everything a probe or an action
   needs to reach the pipeline is written to one JSON file, ``pipeline.json``.

2. **Activities**: plain Python functions (``probe_*``, ``action_*``, and tolerance
   functions) that ``chaos run`` imports from this module. Each takes the path of
   ``pipeline.json`` and a few knobs; each returns JSON-friendly values that end up in the
   journal. They run in the ``chaos`` process, not in the notebook: a batch job started by
   an action is that process's child, and lives only as long as the experiment.

3. **Running and judging** (:func:`write_experiment`, :func:`run_experiment`): an
   experiment template from ``experiments/`` gets its configuration and is written into
   a run folder; ``chaos run`` runs there as a child process, with its log and
   ``journal.json`` in that folder. ``chaos run`` exits 0 even when the steady state did
   not hold before the method, so the verdict is read from the JOURNAL:
   ``steady_states.before/after.steady_state_met``, ``deviated`` and ``status``.

Example::

    pipe = start_pipeline(UNHARDENED, name="baseline")
    result = run_experiment(write_experiment("registry-outage", pipe))
    result            # ExperimentResult(registry-outage [baseline]: DEVIATED, before met, after NOT met)
    pipe.stop()
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html
import json
import logging
import os
import pickle
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hadrlab.processes import Child, home_dir, start_process, wait_until

__all__ = [
    "Hardening",
    "UNHARDENED",
    "HARDENED",
    "PipelineSizes",
    "Pipeline",
    "start_pipeline",
    "EXPERIMENTS",
    "list_experiments",
    "load_experiment",
    "write_experiment",
    "ExperimentResult",
    "read_journal",
    "run_experiment",
    "toy_experiment",
]

logger = logging.getLogger("hadrlab.chaos")

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS_DIR = ROOT / "experiments"
EXPERIMENTS = ("kill-trainer", "corrupt-training-data", "registry-slow", "registry-outage",
               "feature-store-failover", "kill-batch-scorer")
ONLINE_MODEL = "fraud-online"
TRAINED_MODEL = "fraud"


# =========================================================================== the pipeline


@dataclass(frozen=True)
class Hardening:
    """The switches a learner turns on, one pattern each.

    Args:
        retries: retry registry calls with exponential back-off and full jitter (tenacity).
        breaker: a circuit breaker around registry calls (pybreaker).
        cache_fallback: serve the last good model when the registry cannot be asked.
        checkpoint_every: training steps between checkpoints (0: never).
        contract: refuse training data that breaks the data contract.
        gate: promote a model only if it beats production on a trusted hold-out set.
        commit_mode: "atomic" (results and progress in one transaction) or "naive".
        sentinel: batch jobs reach the feature store through Sentinel and wait out a
            failover with back-off; off, they talk to region A's primary directly.
    """

    retries: bool = True
    breaker: bool = True
    cache_fallback: bool = True
    checkpoint_every: int = 10
    contract: bool = True
    gate: bool = True
    commit_mode: str = "atomic"
    sentinel: bool = True

    def __post_init__(self) -> None:
        if self.commit_mode not in ("atomic", "naive"):
            raise ValueError(f"commit_mode must be 'atomic' or 'naive'; got {self.commit_mode!r}.")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0 steps; got {self.checkpoint_every}.")

    def describe(self) -> str:
        """One line: which patterns are on."""
        on = [name for name in ("retries", "breaker", "cache_fallback", "contract", "gate", "sentinel")
              if getattr(self, name)]
        ckpt = f"checkpoint every {self.checkpoint_every}" if self.checkpoint_every else "no checkpoints"
        return f"{', '.join(on) or 'no patterns'}; {ckpt}; {self.commit_mode} commits"


UNHARDENED = Hardening(retries=False, breaker=False, cache_fallback=False, checkpoint_every=0,
                       contract=False, gate=False, commit_mode="naive", sentinel=False)
HARDENED = Hardening()


@dataclass
class PipelineSizes:
    """How big and how fast the pipeline runs: small, so a lab runs in minutes."""

    training_rows: int = 3000
    steps_per_run: int = 60
    step_delay_ms: float = 25
    schedule_s: float = 1.0
    batch_records: int = 1000
    batch_chunk_size: int = 100
    batch_chunk_delay_ms: float = 100
    reload_interval_s: float = 0.5
    registry_timeout_s: float = 0.5


class _Supervisor(threading.Thread):
    """Restarts the trainer when it dies, as a Deployment's restart policy would."""

    def __init__(self, pipeline: Pipeline, interval_s: float = 0.2) -> None:
        super().__init__(name=f"supervisor-{pipeline.name}", daemon=True)
        self.pipeline = pipeline
        self.interval_s = interval_s
        self.stopping = threading.Event()
        self.events: list[dict] = []

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            trainer = self.pipeline.trainer
            if trainer is None or trainer.alive():
                continue
            t_dead = time.time()
            try:
                self.pipeline._start_trainer()
                self.events.append({"t": t_dead, "event": "trainer restarted",
                                    "restart_s": round(time.time() - t_dead, 3)})
            except Exception as exc:  # keep watching: the next round tries again
                self.events.append({"t": t_dead, "event": "trainer restart failed", "detail": str(exc)[:300]})


@dataclass(eq=False)
class Pipeline:
    """A running ML pipeline for chaos experiments; made by :func:`start_pipeline`.

    ``pipe.state_path`` is the JSON file every activity reads; ``pipe.configuration()``
    is the configuration block written into an experiment.
    """

    name: str
    hardening: Hardening
    sizes: PipelineSizes
    run_dir: Path
    redis: Any = field(repr=False, default=None)
    registry: Any = field(repr=False, default=None)
    trainer: Child | None = field(repr=False, default=None)
    online: Child | None = field(repr=False, default=None)
    feature_store: Any = field(repr=False, default=None)
    supervisor: _Supervisor | None = field(repr=False, default=None)
    state: dict = field(repr=False, default_factory=dict)

    @property
    def state_path(self) -> Path:
        return self.run_dir / "pipeline.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "trainer"

    def _start_trainer(self) -> Child:
        from hadrlab.training import start_trainer

        h, s = self.hardening, self.sizes
        self.trainer = start_trainer(
            redis=self.redis, registry=self.registry, checkpoint_dir=self.checkpoint_dir,
            checkpoint_every=h.checkpoint_every, steps_per_run=s.steps_per_run,
            step_delay_ms=s.step_delay_ms, schedule_s=s.schedule_s, contract=h.contract, gate=h.gate,
            model_name=TRAINED_MODEL, name=f"trainer-{self.name}",
            # A short patience keeps a stuck run from blocking the schedule for minutes.
            env={"REGISTRY_PATIENCE_S": "20"},
        )
        return self.trainer

    def write_state(self) -> Path:
        """Write ``pipeline.json``: every address, path and switch an activity needs.

        It holds the registry's token and the Redis password, so only this user may read it.
        """
        self.state_path.touch(mode=0o600, exist_ok=True)
        self.state_path.write_text(json.dumps(self.state, indent=2, default=str))
        return self.state_path

    def configuration(self, **extra: Any) -> dict:
        """The experiment configuration for this pipeline: its state file, name and switches."""
        return {"pipeline": str(self.state_path), "label": self.name, **extra}

    def start_feature_store(self, **kwargs: Any) -> Any:
        """Start (or restart, fresh) the two-region feature store and record it in the state."""
        from hadrlab.featurestore import start_feature_store

        self.stop_feature_store()
        fs = start_feature_store(**kwargs)
        self.feature_store = fs
        self.state["feature_store"] = {
            "env": fs.connection_env(),
            "regions": {n: {"address": r.address, "pid": r.redis.child.pid} for n, r in fs.regions.items()},
            "primary_direct": {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(fs.region_a.port),
                               "REDIS_PASSWORD": fs.password},
        }
        self.write_state()
        return fs

    def stop_feature_store(self) -> None:
        if self.feature_store is not None:
            self.feature_store.stop()
            self.feature_store = None
            self.state.pop("feature_store", None)
            self.write_state()

    def trainer_status(self):
        """The trainer's :class:`~hadrlab.training.TrainerStatus`."""
        from hadrlab.training import trainer_status

        return trainer_status(self.checkpoint_dir)

    def stop(self) -> None:
        """Stop every part. Idempotent."""
        if self.supervisor is not None:
            self.supervisor.stopping.set()
            self.supervisor.join(timeout=10)
        for part in (self.trainer, self.online):
            if part is not None:
                part.stop()
        self.stop_feature_store()
        for part in (self.registry, self.redis):
            if part is not None:
                part.stop()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        parts = {"registry": self.registry, "trainer": self.trainer, "online API": self.online}
        alive = ", ".join(f"{k} {'up' if v is not None and v.alive() else 'down'}" for k, v in parts.items())
        return f"Pipeline({self.name!r}: {alive}; {self.hardening.describe()})"


def start_pipeline(hardening: Hardening = HARDENED, *, name: str = "pipeline",
                   sizes: PipelineSizes | None = None, run_dir: str | os.PathLike | None = None,
                   timeout_s: float = 60.0) -> Pipeline:
    """Start the ML pipeline with the given hardening and wait until it is in steady state.

    Steady state here means: the trainer registered a first model, and the online API
    serves its model from the registry.

    Args:
        hardening: the switches (:data:`UNHARDENED`, :data:`HARDENED` or your own).
        name: names the processes and the run folder (``<home_dir()>/chaos/<name>``, emptied).
        sizes: data sizes and schedules; the defaults keep every experiment under ~15 s.
        run_dir: another run folder.
        timeout_s: how long to wait for the first model.

    Returns:
        A running :class:`Pipeline`; ``stop()`` it when done.
    """
    import shutil

    import numpy as np

    from hadrlab.batch import make_batch_input
    from hadrlab.registry import start_online_api, start_registry
    from hadrlab.replication import start_redis
    from hadrlab.training import load_model_artifact, make_training_data, save_model_file, write_training_data

    sizes = sizes or PipelineSizes()
    root = Path(run_dir) if run_dir is not None else home_dir() / "chaos" / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    pipe = Pipeline(name=name, hardening=hardening, sizes=sizes, run_dir=root)
    try:
        pipe.redis = start_redis(f"training-data-{name}")
        with contextlib.closing(pipe.redis.client()) as client:
            write_training_data(client, make_training_data(sizes.training_rows, seed=0))
        pipe.registry = start_registry(f"registry-{name}", data_dir=root / "registry")
        # The online API serves a small model of its own: the registry dependency is what
        # the experiments exercise, and it does not need the trainer's artifact format.
        model_file = save_model_file(root / "model.pkl", n=2000, seed=0)
        estimator, _ = load_model_artifact(model_file.read_bytes())
        with contextlib.closing(pipe.registry.client()) as client:
            version = client.register(ONLINE_MODEL, pickle.dumps(estimator), {"auc": 0.9}, {})
            client.promote(ONLINE_MODEL, version, "production")
        pipe.online = start_online_api(
            f"online-{name}", registry=pipe.registry, model_name=ONLINE_MODEL, cache_dir=root / "model-cache",
            reload_interval_s=sizes.reload_interval_s, retries=hardening.retries, breaker=hardening.breaker,
            cache_fallback=hardening.cache_fallback, registry_timeout_s=sizes.registry_timeout_s,
            env={"BREAKER_RESET_S": "2"})
        batch_input = make_batch_input(sizes.batch_records, seed=3, path=root / "batch-input.csv")
        sample = np.round(estimator_sample(), 4).tolist()
        pipe.state = {
            "name": name, "hardening": asdict(hardening), "sizes": asdict(sizes), "run_dir": str(root),
            "redis_url": f"redis://:{pipe.redis.password}@127.0.0.1:{pipe.redis.port}/0",
            "registry": {"url": pipe.registry.url, "token": pipe.registry.token, "pid": pipe.registry.child.pid},
            "online": {"url": pipe.online.url, "model": ONLINE_MODEL, "features": sample},
            "trainer": {"checkpoint_dir": str(pipe.checkpoint_dir), "model": TRAINED_MODEL},
            "training_data": {"rows": sizes.training_rows, "seed": 0},
            "batch": {"input": str(batch_input), "model_file": str(model_file)},
        }
        pipe.write_state()
        pipe._start_trainer()
        wait_until(lambda: pipe.trainer_status().models_registered >= 1, timeout_s=timeout_s,
                   describe="the trainer's first registered model", child=pipe.trainer)
        pipe.supervisor = _Supervisor(pipe)
        pipe.supervisor.start()
    except BaseException:
        pipe.stop()
        raise
    return pipe


def estimator_sample():
    """One row of the fraud model's eight inputs, for /predict requests."""
    import numpy as np

    from hadrlab.fraud import labelled_inputs

    X, _ = labelled_inputs(5, 7)
    return np.asarray(X, dtype=float)[:1]


# =========================================================================== activities
# Everything below runs inside `chaos run`. Arguments come from the experiment's JSON;
# return values are written into the journal, so they are plain numbers, strings, dicts.
#
# One experiment file runs on both backends: the state file says which one the pipeline
# runs on. With "backend": "kube" (hadrlab.platform.kube_pipeline.start_kube_pipeline),
# an activity marked @_cluster_twin calls its namesake in hadrlab.platform.kube_pipeline,
# which does the cluster's version of the fault and measures on the cluster.


def _state(pipeline: str) -> dict:
    try:
        return json.loads(Path(pipeline).read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"Cannot read the pipeline state {pipeline} ({exc}); start the pipeline "
                           f"with hadrlab.start_pipeline() (or start_kube_pipeline() on a cluster) and "
                           f"pass its state_path.") from None


def _on_kube(state: dict) -> bool:
    return state.get("backend") == "kube"


def _cluster_twin(kube_name: str):
    """Run ``hadrlab.platform.kube_pipeline.<kube_name>(state, ...)`` when the pipeline is on a cluster.

    The wrapper keeps the local function's signature (Chaos Toolkit checks the experiment's
    arguments against it), so both versions take the same arguments.
    """
    def decorate(func):
        @functools.wraps(func)
        def activity(pipeline: str, *args: Any, **kwargs: Any) -> Any:
            state = _state(pipeline)
            if _on_kube(state):
                from hadrlab.platform import kube_pipeline

                return getattr(kube_pipeline, kube_name)(state, *args, **kwargs)
            return func(pipeline, *args, **kwargs)
        return activity
    return decorate


_marks: dict[str, float] = {}   # wall-clock times of the faults injected in this run
_jobs: dict[str, "_SupervisedJob"] = {}


def probe_online_slo(pipeline: str, duration_s: float = 2.0, rate_rps: float = 20.0,
                     timeout_s: float = 1.0) -> dict:
    """Send paced /predict requests for ``duration_s``; return availability and p99 latency.

    A request counts as served if it answers 200 within ``timeout_s``. The p99 is that of
    the SERVED requests only: a fast error reply is not a fast answer, and folding it in
    would make a dead service look quick.

    Returns:
        {"requests", "failures", "availability", "error_rate", "p99_ms", "from_cache"};
        ``p99_ms`` is None when no request was served.
    """
    import httpx

    online = _state(pipeline)["online"]
    body = {"features": online["features"]}
    latencies, n, failures, cached = [], 0, 0, 0
    interval_s = 1.0 / rate_rps
    end = time.monotonic() + duration_s
    with httpx.Client(base_url=online["url"], timeout=timeout_s) as client:
        next_t = time.monotonic()
        while next_t < end:
            start = time.perf_counter()
            try:
                response = client.post("/predict", json=body)
                ok = response.status_code == 200
                cached += ok and response.headers.get("X-Model-Source") == "cache"
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append((time.perf_counter() - start) * 1000)
            n += 1
            failures += not ok
            next_t += interval_s
            time.sleep(max(0.0, next_t - time.monotonic()))
    latencies.sort()
    served = len(latencies)
    p99 = round(latencies[min(served - 1, int(0.99 * served))], 1) if served else None
    return {"requests": n, "failures": failures, "availability": round(1 - failures / n, 4) if n else 0.0,
            "error_rate": round(failures / n, 4) if n else 1.0, "p99_ms": p99,
            "from_cache": cached}


def within_slo(value: dict | None = None, min_availability: float = 0.99, max_p99_ms: float = 500.0) -> bool:
    """Tolerance: the online API met its SLO (availability, and p99 latency of served requests)."""
    return (bool(value) and value["availability"] >= min_availability and value["p99_ms"] is not None
            and value["p99_ms"] <= max_p99_ms)


def _trainer_status(pipeline: str):
    state = _state(pipeline)
    if _on_kube(state):
        from hadrlab.platform.kube_pipeline import read_trainer_status

        return read_trainer_status(state)
    from hadrlab.training import trainer_status

    return trainer_status(state["trainer"]["checkpoint_dir"])


def probe_seconds_since_last_model(pipeline: str) -> float:
    """Seconds since the trainer last registered a model (a large number if never)."""
    status = _trainer_status(pipeline)
    ends = [r["t_end"] for r in status.runs if r.get("version") is not None and r.get("t_end")]
    return round(time.time() - max(ends), 2) if ends else 1e9


def probe_trainer_steps_lost(pipeline: str) -> dict:
    """Training steps lost at the trainer's last restart, and the checkpoint interval."""
    status = _trainer_status(pipeline)
    return {"steps_lost": status.steps_lost_last_restart, "checkpoint_every": status.checkpoint_every,
            "restarts": status.restarts}


def lost_at_most(value: dict | None = None, max_steps: int = 10) -> bool:
    """Tolerance: a restart lost at most ``max_steps`` steps of training."""
    return bool(value) and value["steps_lost"] <= max_steps


@_cluster_twin("kill_trainer")
def action_kill_trainer(pipeline: str, at_step: int = 30, timeout_s: float = 30.0) -> dict:
    """SIGKILL the training worker once its current run has passed ``at_step``.

    Returns:
        {"pid", "step", "t"}: which process died, at which step, when.
    """
    ckpt = _state(pipeline)["trainer"]["checkpoint_dir"]
    from hadrlab.training import trainer_status

    def mid_run() -> bool:
        s = trainer_status(ckpt)
        return s.phase == "training" and s.step >= at_step
    wait_until(mid_run, timeout_s=timeout_s, interval_s=0.01, describe=f"the trainer passing step {at_step}")
    status = trainer_status(ckpt)
    os.kill(status.pid, signal.SIGKILL)
    _marks["trainer_killed"] = t = time.time()
    return {"pid": status.pid, "step": status.step, "t": round(t, 3)}


@_cluster_twin("trainer_recovery")
def probe_trainer_recovery(pipeline: str, timeout_s: float = 40.0) -> dict:
    """Wait for the restarted trainer to register a model; return the recovery times.

    Returns:
        {"restart_s": kill to a new worker, "recovery_s": kill to the next registered model}
    """
    ckpt = _state(pipeline)["trainer"]["checkpoint_dir"]
    from hadrlab.training import trainer_status

    t0 = _marks.get("trainer_killed", time.time())
    before = trainer_status(ckpt).pid
    wait_until(lambda: trainer_status(ckpt).pid not in (0, before) or trainer_status(ckpt).started_at > t0,
               timeout_s=timeout_s, describe="a restarted trainer")
    restart_s = trainer_status(ckpt).started_at - t0

    def registered() -> bool:
        return any(r.get("version") is not None and r.get("t_end", 0) > t0 for r in trainer_status(ckpt).runs)
    wait_until(registered, timeout_s=timeout_s, describe="a model registered after the kill")
    t_end = min(r["t_end"] for r in trainer_status(ckpt).runs if r.get("version") is not None and r["t_end"] > t0)
    return {"restart_s": round(restart_s, 2), "recovery_s": round(t_end - t0, 2)}


def _training_digest(frame) -> str:
    # The same digest the trainer records as data_sha256 for the data it trained on.
    import pandas as pd

    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).values.tobytes()).hexdigest()


def _corrupted_file(state: dict) -> Path:
    return Path(state["run_dir"]) / "corrupted-data.json"


def action_corrupt_training_data(pipeline: str, kind: str = "missing", fraction: float = 0.2) -> dict:
    """Replace the training data in Redis with a corrupted copy (see hadrlab.contracts.corrupt).

    The digest of each corrupted dataset is kept, so a probe can tell which registered
    models were trained on it.
    """
    from hadrlab.contracts import corrupt
    from hadrlab.training import connect_redis, make_training_data, read_training_data, write_training_data

    state = _state(pipeline)
    if _on_kube(state):
        from hadrlab.platform.kube_pipeline import write_training_data as write_in_cluster

        digest = write_in_cluster(state, kind=kind, fraction=fraction)["sha256"]
    else:
        client = connect_redis({"REDIS_URL": state["redis_url"]})
        clean = make_training_data(state["training_data"]["rows"], seed=state["training_data"]["seed"])
        write_training_data(client, corrupt(clean, kind=kind, fraction=fraction, seed=1))
        digest = _training_digest(read_training_data(client))
        client.close()
    path = _corrupted_file(state)
    known = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps(known + [{"kind": kind, "sha256": digest, "t": time.time()}]))
    _marks["data_corrupted"] = time.time()
    return {"kind": kind, "fraction": fraction, "sha256": digest[:12]}


def action_restore_training_data(pipeline: str) -> dict:
    """Write the clean training data back (a rollback)."""
    from hadrlab.training import connect_redis, make_training_data, write_training_data

    state = _state(pipeline)
    if _on_kube(state):
        from hadrlab.platform.kube_pipeline import write_training_data as write_in_cluster

        return {"rows": write_in_cluster(state, kind="clean")["rows"]}
    client = connect_redis({"REDIS_URL": state["redis_url"]})
    rows = write_training_data(client, make_training_data(state["training_data"]["rows"],
                                                          seed=state["training_data"]["seed"]))
    client.close()
    return {"rows": rows}


def probe_next_training_run(pipeline: str, timeout_s: float = 30.0) -> dict:
    """Wait for a training run that STARTED after the last corruption to end; return its outcome."""
    since = _marks.get("data_corrupted", time.time())

    def run_after() -> dict | None:
        runs = [r for r in _trainer_status(pipeline).runs if r.get("t_start", 0) > since and r.get("outcome")]
        return runs[0] if runs else None
    wait_until(lambda: run_after() is not None, timeout_s=timeout_s, describe="a training run on the new data")
    run = run_after()
    return {"run_id": run["run_id"], "outcome": run["outcome"], "version": run.get("version"),
            "promoted": bool(run.get("promoted")), "reason": str(run.get("reason", ""))[:160]}


def probe_corrupted_models_in_production(pipeline: str) -> int:
    """How many models trained on corrupted data ever reached production (now or archived)."""
    from hadrlab.registry import RegistryClient

    state = _state(pipeline)
    path = _corrupted_file(state)
    bad = {item["sha256"] for item in json.loads(path.read_text())} if path.exists() else set()
    if _on_kube(state):
        from hadrlab.platform.kube_pipeline import registry_versions

        return sum(1 for v in registry_versions(state)
                   if v.get("data_sha256") in bad and v.get("stage") in ("production", "archived"))
    with RegistryClient(state["registry"]["url"], state["registry"]["token"], timeout_s=5) as client:
        versions = client.list_versions(state["trainer"]["model"])
    # Only promotion moves a version out of "none": "archived" means it was production once.
    return sum(1 for v in versions if v.params.get("data_sha256") in bad and v.stage in ("production", "archived"))


@_cluster_twin("registry_outage")
def action_registry_outage(pipeline: str) -> dict:
    """Freeze the registry (SIGSTOP): it holds its port and answers nothing, like a hung host."""
    pid = _state(pipeline)["registry"]["pid"]
    os.kill(pid, signal.SIGSTOP)
    _marks["registry_down"] = t = time.time()
    return {"pid": pid, "t": round(t, 3)}


@_cluster_twin("end_registry_outage")
def action_end_registry_outage(pipeline: str) -> dict:
    """Unfreeze the registry (SIGCONT); a rollback."""
    pid = _state(pipeline)["registry"]["pid"]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
    return {"pid": pid}


@_cluster_twin("wait_for_online_ready")
def action_wait_for_online_ready(pipeline: str, timeout_s: float = 30.0) -> float:
    """Wait until the online API is ready (GET /readyz 200) again; return the seconds waited.

    A rollback step: the next experiment must start from the steady state, not from the
    tail of this one's fault.
    """
    from hadrlab.processes import http_status

    url = _state(pipeline)["online"]["url"]
    return round(wait_until(lambda: http_status(url + "/readyz") == 200, timeout_s=timeout_s,
                            describe=f"the online API at {url} to be ready again"), 2)


@_cluster_twin("registry_faults")
def action_registry_slow(pipeline: str, delay_ms: float = 1500, error_rate: float = 0.0) -> dict:
    """Make the registry slow (and, optionally, failing) through its fault admin endpoint."""
    from hadrlab.registry import RegistryClient

    reg = _state(pipeline)["registry"]
    with RegistryClient(reg["url"], reg["token"], timeout_s=5) as client:
        return client.set_faults(delay_ms=delay_ms, error_rate=error_rate)


def action_registry_clear_faults(pipeline: str) -> dict:
    """Remove the registry's injected delay and errors; a rollback."""
    return action_registry_slow(pipeline, delay_ms=0, error_rate=0.0)


class _SupervisedJob(threading.Thread):
    """A batch job started again after a crash, up to ``retries`` times (a Job's backoffLimit)."""

    def __init__(self, kwargs: dict, retries: int) -> None:
        super().__init__(daemon=True)
        self.kwargs, self.retries = kwargs, retries
        self.child: Child | None = None
        self.starts = 0
        self.exit_codes: list[int | None] = []
        self.finished = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        from hadrlab.batch import start_batch_job

        try:
            while True:
                with self.lock:
                    self.child = start_batch_job(**self.kwargs)
                    self.starts += 1
                while self.child.alive():
                    time.sleep(0.05)
                self.exit_codes.append(self.child.returncode)
                if self.child.returncode == 0 or self.starts > self.retries:
                    return
                time.sleep(0.2)
        finally:
            self.finished.set()


def _batch_kwargs(state: dict, output: Path, redis: str) -> dict:
    sizes, hardening = state["sizes"], state["hardening"]
    kwargs = {"input": state["batch"]["input"], "output": str(output), "model": state["batch"]["model_file"],
              "commit_mode": hardening["commit_mode"], "chunk_size": sizes["batch_chunk_size"],
              "chunk_delay_ms": sizes["batch_chunk_delay_ms"], "name": f"batch-{state['name']}"}
    if redis == "feature_store":
        fs = state.get("feature_store")
        if not fs:
            raise RuntimeError("This experiment needs the feature store: call pipe.start_feature_store() first.")
        if hardening["sentinel"]:
            kwargs["redis"] = fs["env"]
        else:
            # Straight to region A's primary, giving up after 1 s of errors.
            kwargs["redis"] = fs["primary_direct"]
            kwargs["env"] = {"REDIS_PATIENCE_S": "1"}
    return kwargs


def _batch_output(state: dict, tag: str) -> Path:
    suffix = ".db" if state["hardening"]["commit_mode"] == "atomic" else ".csv"
    return Path(state["run_dir"]) / f"batch-{tag}-{time.time_ns() % 10**9}{suffix}"


@_cluster_twin("start_batch_job")
def action_start_batch_job(pipeline: str, redis: str = "none", retries: int = 2) -> dict:
    """Start the batch scorer on the pipeline's input, restarted up to ``retries`` times if it dies.

    Args:
        redis: "none" scores from the input's own features; "feature_store" reads them
            from the feature store (through Sentinel or not, as the hardening says).
    """
    state = _state(pipeline)
    output = _batch_output(state, "job")
    job = _SupervisedJob(_batch_kwargs(state, output, redis), retries)
    _jobs["current"] = job
    job.start()
    wait_until(lambda: job.child is not None, timeout_s=30, describe="the batch job to start")
    return {"output": output.name, "commit_mode": state["hardening"]["commit_mode"], "retries": retries}


@_cluster_twin("kill_batch_job")
def action_kill_batch_job(pipeline: str, after_chunks: int = 3, timeout_s: float = 60.0) -> dict:
    """SIGKILL the running batch job once it has committed ``after_chunks`` chunks, mid-chunk."""
    from hadrlab.batch import batch_status

    job = _jobs.get("current")
    if job is None:
        raise RuntimeError("No batch job is running in this experiment: call action_start_batch_job first.")
    output = job.kwargs["output"]
    wait_until(lambda: batch_status(output).get("chunks_done", 0) >= after_chunks, timeout_s=timeout_s,
               interval_s=0.01, describe=f"the batch job's chunk {after_chunks}")
    state = _state(pipeline)
    time.sleep(state["sizes"]["batch_chunk_delay_ms"] / 2000)  # into the middle of the next chunk
    with job.lock:
        pid = job.child.pid
        job.child.kill()
    _marks["batch_killed"] = t = time.time()
    return {"pid": pid, "chunks_done": batch_status(output).get("chunks_done"), "t": round(t, 3)}


@_cluster_twin("fail_over_feature_store")
def action_fail_over_feature_store(pipeline: str, after_chunks: int = 2, timeout_s: float = 60.0) -> dict:
    """Kill the feature store's primary Redis (Sentinel then fails over), once the batch job is under way."""
    from hadrlab.batch import batch_status
    from hadrlab.training import connect_redis

    state = _state(pipeline)
    job = _jobs.get("current")
    if job is not None:
        output = job.kwargs["output"]
        wait_until(lambda: batch_status(output).get("chunks_done", 0) >= after_chunks, timeout_s=timeout_s,
                   interval_s=0.01, describe=f"the batch job's chunk {after_chunks}")
    fs = state["feature_store"]
    env = fs["env"]
    sentinel = connect_redis({**env, "SENTINEL_MASTER": env["SENTINEL_MASTER"]})
    host, port = sentinel.connection_pool.get_master_address()
    primary = next(n for n, r in fs["regions"].items() if r["address"].endswith(f":{port}"))
    os.kill(fs["regions"][primary]["pid"], signal.SIGKILL)
    _marks["primary_killed"] = t = time.time()
    return {"killed_region": primary, "t": round(t, 3)}


@_cluster_twin("batch_exactly_once")
def probe_batch_exactly_once(pipeline: str, redis: str = "none", timeout_s: float = 90.0) -> dict:
    """Audit a batch job: the one this experiment started, or else a fresh one run to the end.

    Returns:
        {"expected", "scored", "duplicates", "gaps", "starts", "elapsed_s"}
    """
    from hadrlab.batch import audit_batch, run_batch_job

    state = _state(pipeline)
    job = _jobs.get("current")
    t0 = time.time()
    if job is not None:
        job.finished.wait(timeout_s)
        output, starts = job.kwargs["output"], job.starts
        if not job.finished.is_set():
            with job.lock:
                job.child.stop()
        t0 = job.child.started_at if starts == 1 else t0
    else:
        output = _batch_output(state, "steady")
        run_batch_job(timeout_s=timeout_s, **_batch_kwargs(state, output, redis))
        starts = 1
    audit = audit_batch(output, state["batch"]["input"])
    return {"expected": audit.expected, "scored": audit.scored, "duplicates": audit.duplicates,
            "gaps": audit.gaps + audit.torn_rows, "starts": starts, "elapsed_s": round(time.time() - t0, 2)}


def exactly_once(value: dict | None = None) -> bool:
    """Tolerance: every record scored, none twice."""
    return bool(value) and value["duplicates"] == 0 and value["gaps"] == 0


@_cluster_twin("stop_batch_jobs")
def action_stop_batch_jobs(pipeline: str) -> int:
    """Stop any batch job this experiment started (a rollback). Returns how many ran."""
    running = 0
    for job in list(_jobs.values()):
        job.retries = 0
        with job.lock:
            if job.child is not None and job.child.alive():
                running += 1
                job.child.stop()
    _jobs.clear()
    return running


# =========================================================================== experiments


def list_experiments() -> list[str]:
    """The experiment templates in ``experiments/``."""
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.json"))


def load_experiment(name: str) -> dict:
    """Read the template of experiment ``name`` (a Chaos Toolkit experiment, as a dict)."""
    path = EXPERIMENTS_DIR / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"There is no experiment {name!r} in {EXPERIMENTS_DIR}; "
                                f"the experiments are: {', '.join(list_experiments())}.")
    return json.loads(path.read_text())


def write_experiment(name: str, pipeline: Pipeline | None = None, *, run_dir: str | os.PathLike | None = None,
                     configuration: dict | None = None) -> Path:
    """Write experiment ``name``, configured for ``pipeline``, into its own run folder.

    Args:
        name: a template in ``experiments/`` (see :func:`list_experiments`).
        pipeline: the pipeline to run it against (fills the configuration).
        run_dir: the folder; default ``<pipeline run dir>/experiments/<name>``.
        configuration: more (or overriding) configuration values.

    Returns:
        The path of ``experiment.json``; pass it to :func:`run_experiment`.
    """
    experiment = load_experiment(name)
    config = dict(experiment.get("configuration", {}))
    if pipeline is not None:
        config.update(pipeline.configuration())
    config.update(configuration or {})
    experiment["configuration"] = config
    if run_dir is None:
        base = pipeline.run_dir if pipeline is not None else home_dir() / "chaos"
        run_dir = Path(base) / "experiments" / name
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "experiment.json"
    path.write_text(json.dumps(experiment, indent=2))
    return path


@dataclass
class ActivityResult:
    """One probe or action as the journal recorded it."""

    phase: str       # "before", "method", "after", "rollback"
    name: str
    type: str
    status: str
    output: Any
    duration_s: float
    tolerance_met: bool | None = None
    error: str = ""


def _short(value: Any, width: int = 70) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass
class ExperimentResult:
    """What one ``chaos run`` found, read from its journal.

    ``verdict`` is "held" (steady state met before and after), "deviated" (met before,
    not after), "not steady" (not met before: the method never ran) or "failed" (the run
    itself broke: see ``log_path``).
    """

    name: str
    title: str
    label: str
    status: str
    deviated: bool
    before_met: bool | None
    after_met: bool | None
    activities: list[ActivityResult] = field(default_factory=list, repr=False)
    duration_s: float = 0.0
    started_at: float = 0.0
    exit_code: int | None = None
    journal_path: Path | None = field(default=None, repr=False)
    log_path: Path | None = field(default=None, repr=False)
    hypothesis: str = field(default="", repr=False)
    extensions: dict = field(default_factory=dict, repr=False)

    @property
    def verdict(self) -> str:
        if self.before_met is False:
            return "not steady"
        if self.before_met and self.after_met:
            return "held"
        if self.before_met and (self.deviated or self.after_met is False):
            return "deviated"
        return "failed"

    @property
    def held(self) -> bool:
        return self.verdict == "held"

    def output(self, name: str, phase: str | None = None) -> Any:
        """The output of the last activity called ``name`` (in ``phase``, if given)."""
        for a in reversed(self.activities):
            if a.name == name and (phase is None or a.phase == phase):
                return a.output
        raise KeyError(f"No activity {name!r}{f' in phase {phase}' if phase else ''} in {self.name}; "
                       f"activities: {sorted({a.name for a in self.activities})}.")

    def measurements(self) -> dict:
        """Every number the activities returned, flattened ("recovery_s", "steps_lost"...).

        Later activities win, so the after-hypothesis values override the before ones; a
        later None (e.g. no p99 when no request was served) removes the earlier number.
        """
        found: dict = {}
        for a in self.activities:
            if a.phase == "rollback":
                continue
            if isinstance(a.output, dict):
                for k in [k for k, v in a.output.items() if v is None]:
                    found.pop(k, None)
                found.update({k: v for k, v in a.output.items() if isinstance(v, (int, float))
                              and not isinstance(v, bool) and k not in ("t", "pid")})
            elif isinstance(a.output, (int, float)) and not isinstance(a.output, bool):
                found[a.name] = a.output
        return found

    def frame(self):
        """The activities as a DataFrame: phase, name, type, status, tolerance_met, output."""
        import pandas as pd

        return pd.DataFrame([{**asdict(a), "output": _short(a.output, 90)} for a in self.activities])

    def __repr__(self) -> str:
        def met(v: bool | None) -> str:
            return "met" if v else ("NOT met" if v is False else "not checked")
        return (f"ExperimentResult({self.name} [{self.label}]: {self.verdict.upper()}; steady state before "
                f"{met(self.before_met)}, after {met(self.after_met)}; status {self.status}, "
                f"{self.duration_s:.1f} s)")

    def _repr_html_(self) -> str:
        colour = {"held": "#2e7d32", "deviated": "#c62828", "not steady": "#ef6c00"}.get(self.verdict, "#6a1b9a")
        rows = "".join(
            f"<tr><td>{a.phase}</td><td>{html.escape(a.name)}</td><td>{a.status}"
            f"{'' if a.tolerance_met is None else (' ✔' if a.tolerance_met else ' ✘')}</td>"
            f"<td><code>{html.escape(_short(a.output))}</code></td></tr>"
            for a in self.activities)
        return (f"<p><b>{html.escape(self.name)}</b> [{html.escape(self.label)}]: "
                f"<b style='color:{colour}'>{self.verdict.upper()}</b> (status {self.status}, "
                f"{self.duration_s:.1f} s)</p><table><tr><th>phase</th><th>activity</th><th>status</th>"
                f"<th>output</th></tr>{rows}</table>")


def _hadrlab_extension(experiment: dict) -> dict:
    for ext in experiment.get("extensions", []) or []:
        if ext.get("name") == "hadrlab":
            return ext
    return {}


def read_journal(path: str | os.PathLike, *, name: str = "", label: str = "") -> ExperimentResult:
    """Read a Chaos Toolkit journal into an :class:`ExperimentResult`.

    Args:
        path: the ``journal.json`` that ``chaos run --journal-path`` wrote.
        name, label: the experiment's short name and the configuration's label (taken
            from the journal's experiment when not given).
    """
    journal = json.loads(Path(path).read_text())
    experiment = journal.get("experiment", {})
    config = experiment.get("configuration", {}) or {}
    states = journal.get("steady_states") or {}
    activities: list[ActivityResult] = []

    def add(phase: str, runs: list | None) -> None:
        for run in runs or []:
            act = run.get("activity", {})
            activities.append(ActivityResult(
                phase=phase, name=act.get("name", "?"), type=act.get("type", "?"), status=run.get("status", "?"),
                output=run.get("output"), duration_s=round(float(run.get("duration") or 0), 3),
                tolerance_met=run.get("tolerance_met"), error=str(run.get("exception") or "")[:500]))

    before, after = states.get("before"), states.get("after")
    add("before", (before or {}).get("probes"))
    add("method", journal.get("run"))
    add("after", (after or {}).get("probes"))
    add("rollback", journal.get("rollbacks"))
    ext = _hadrlab_extension(experiment)
    return ExperimentResult(
        name=name or ext.get("short_name") or experiment.get("title", "experiment"),
        title=experiment.get("title", ""), label=label or str(config.get("label", "")),
        status=journal.get("status", "?"), deviated=bool(journal.get("deviated")),
        before_met=None if before is None else bool(before.get("steady_state_met")),
        after_met=None if after is None else bool(after.get("steady_state_met")),
        activities=activities, duration_s=float(journal.get("duration") or 0),
        journal_path=Path(path), hypothesis=(experiment.get("steady-state-hypothesis") or {}).get("title", ""),
        extensions=ext)


def run_experiment(path: str | os.PathLike, *, timeout_s: float = 300.0, name: str = "",
                   env: dict[str, str] | None = None) -> ExperimentResult:
    """Run a Chaos Toolkit experiment with ``chaos run`` in a child process; judge it from its journal.

    The log (``chaostoolkit.log``), the console output and ``journal.json`` are written in
    the experiment's folder. Rollbacks always run (``--rollback-strategy always``), so a
    fault never outlives its experiment, even when the hypothesis failed.

    Args:
        path: an experiment file (from :func:`write_experiment`, or your own).
        timeout_s: the most the run may take; it is stopped after that.
        name: a short name for the result (default: from the experiment).
        env: more environment variables for the run.

    Returns:
        An :class:`ExperimentResult`.

    Raises:
        HadrError: ``chaos`` could not run, or wrote no journal (the log's tail says why).
    """
    from hadrlab.errors import HadrError

    path = Path(path).resolve()
    run_dir = path.parent
    journal = run_dir / "journal.json"
    log = run_dir / "chaostoolkit.log"
    for old in (journal, log):
        old.unlink(missing_ok=True)
    chaos = Path(sys.executable).with_name("chaos")
    cmd = [str(chaos) if chaos.exists() else "chaos", "--no-version-check", "--log-file", str(log),
           "--settings", str(run_dir / "settings.yaml"),
           "run", "--journal-path", str(journal), "--rollback-strategy", "always", str(path)]
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    child_env = {"PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                 **(env or {})}
    started = time.time()
    child = start_process(f"chaos-{path.parent.name}", cmd, env=child_env, cwd=run_dir)
    try:
        wait_until(lambda: not child.alive(), timeout_s=timeout_s, interval_s=0.1,
                   describe=f"`chaos run {path.name}` to finish")
    finally:
        child.stop()
    if not journal.exists():
        raise HadrError(f"`chaos run {path}` exited with code {child.returncode} and wrote no journal; "
                        f"last log line: {child.last_log_line()!r}. Full output: {child.log_path}; "
                        f"Chaos Toolkit log: {log}.")
    result = read_journal(journal, name=name)
    result.exit_code = child.returncode
    result.log_path = log
    result.started_at = started
    return result


# =========================================================================== a toy system
# Two activities with no pipeline behind them: a number in a file. They make the smallest
# experiment there is, to learn the format (and to test the runner) in a second.


def probe_read_number(path: str) -> float:
    """Read the number stored in ``path`` (a missing file reads as 0)."""
    try:
        return float(Path(path).read_text().strip() or 0)
    except FileNotFoundError:
        return 0.0


def action_write_number(path: str, value: float) -> float:
    """Store ``value`` in ``path``; return it."""
    Path(path).write_text(f"{value}\n")
    return value


def toy_experiment(path: str | os.PathLike, *, number_file: str | os.PathLike, inject: float,
                   tolerance: tuple[float, float] = (0, 10), restore: float | None = None,
                   title: str = "A number stays within its tolerance") -> Path:
    """Write the smallest Chaos Toolkit experiment: a number in a file, a fault that changes it.

    Args:
        path: where to write the experiment JSON.
        number_file: the file holding the number (the "system").
        inject: the value the method writes (the fault).
        tolerance: the steady state's inclusive range.
        restore: a value the rollback writes back (None: no rollback).
        title: the experiment's title.

    Returns:
        ``path``.
    """
    def activity(kind: str, name: str, func: str, **args: Any) -> dict:
        return {"type": kind, "name": name, "provider": {"type": "python", "module": __name__, "func": func,
                                                         "arguments": {"path": "${number_file}", **args}}}
    probe = activity("probe", "read-number", "probe_read_number")
    probe["tolerance"] = {"type": "range", "range": list(tolerance)}
    experiment = {
        "version": "1.0.0", "title": title, "description": "A toy experiment on a number in a file.",
        "configuration": {"number_file": str(Path(number_file).resolve()), "label": "toy"},
        "extensions": [{"name": "hadrlab", "short_name": Path(path).parent.name or "toy"}],
        "steady-state-hypothesis": {"title": f"the number stays in {list(tolerance)}", "probes": [probe]},
        "method": [activity("action", "inject", "action_write_number", value=inject)],
        "rollbacks": [] if restore is None else [activity("action", "restore", "action_write_number", value=restore)],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(experiment, indent=2))
    return path
