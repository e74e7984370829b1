"""Continuous training of the fraud model, with checkpoints, a data contract and a gate.

The worker (``python -m hadrlab.training``) runs one training run every SCHEDULE_S
seconds. A run:

1. reads the training data from Redis (key TRAINING_KEY, written by
   :func:`write_training_data`), through Sentinel when SENTINELS is set;
2. with CONTRACT=1, checks it against the data contract (:mod:`hadrlab.contracts`) and
   refuses to train on a batch that breaks it: the run is recorded as skipped, with why;
3. trains a logistic model incrementally, ``SGDClassifier.partial_fit`` on one mini-batch
   per *step*, so a run has real progress to lose;
4. every CHECKPOINT_EVERY steps writes a checkpoint atomically (temp file, fsync, rename,
   fsync of the folder): the model, the step and the data cursor;
5. evaluates the model on a trusted hold-out set that the worker generates itself;
6. registers it in the model registry, then promotes it to production: always with
   GATE=0, only if :func:`hadrlab.contracts.gate` agrees with GATE=1.

Killed (SIGKILL) and restarted with the same CHECKPOINT_DIR, the worker resumes from the
last checkpoint: it loses at most CHECKPOINT_EVERY steps, and reports how many it lost.

Environment::

    REDIS_URL | REDIS_HOST, REDIS_PORT, REDIS_PASSWORD | SENTINELS, SENTINEL_MASTER
    TRAINING_KEY       default "training:fraud"
    REGISTRY_URL, REGISTRY_TOKEN, MODEL_NAME (default "fraud")
    CHECKPOINT_DIR     required; the status file is CHECKPOINT_DIR/status.json (STATUS_FILE)
    CHECKPOINT_EVERY   steps between checkpoints, default 10 (0: never)
    STEPS_PER_RUN      default 100; BATCH_SIZE rows per step, default 64
    STEP_DELAY_MS      extra time per step, default 20 (stands in for a bigger model)
    SCHEDULE_S         seconds between runs, default 10; MAX_RUNS stops after that many (0: never)
    CONTRACT, GATE     0/1, default 1; GATE_MIN_IMPROVEMENT (0.0), GATE_MIN_AUC (0.7)

Example::

    node = start_redis("training-data")
    write_training_data(node.client(), make_training_data(3000, seed=0))
    trainer = start_trainer(redis=node, registry=reg, checkpoint_dir="ckpt", max_runs=1)
    trainer_status(trainer)         # TrainerStatus(run-0001 training, step 40/100, ...)
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import contextlib
import hashlib
import html
import json
import logging
import pickle
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hadrlab.contracts import FEATURES, ID, LABEL, DataContract, gate
from hadrlab.processes import Child, home_dir, start_process, wait_until

__all__ = [
    "make_training_data",
    "write_training_data",
    "read_training_data",
    "connect_redis",
    "redis_env",
    "load_model_artifact",
    "save_model_file",
    "TrainerStatus",
    "start_trainer",
    "trainer_status",
    "run_trainer",
]

logger = logging.getLogger("hadrlab.training")

DEFAULT_KEY = "training:fraud"
ARTIFACT_FORMAT = "hadrlab-fraud-sgd/1"
CHECKPOINT_NAME = "checkpoint.pkl"
STATUS_NAME = "status.json"


# --------------------------------------------------------------------------- the data


def make_training_data(n: int = 3000, seed: int = 0):
    """Return ``n`` labelled training rows built from the fraud lab's transactions.

    Args:
        n: how many transactions (rows).
        seed: the generator's seed (see :func:`hadrlab.fraud.generate_transactions`).

    Returns:
        A DataFrame: txn_id, the model's eight input features, is_fraud.
    """
    import numpy as np
    import pandas as pd

    from hadrlab.fraud import labelled_inputs

    X, y = labelled_inputs(n, seed)
    frame = pd.DataFrame(X, columns=list(FEATURES))
    frame.insert(0, ID, np.arange(1, n + 1, dtype="int64"))  # generate_transactions numbers from 1
    frame[LABEL] = y.astype("int64")
    return frame


def write_training_data(client: Any, frame: Any, *, key: str = DEFAULT_KEY, chunk_rows: int = 1000) -> int:
    """Replace the training data in Redis with ``frame``, atomically (MULTI/EXEC).

    The rows go into a list of JSON chunks at ``key``; the column order into ``key:meta``.
    A reader never sees half of an old and half of a new dataset.

    Args:
        client: a redis-py client (``node.client()``, ``fs.master_for()``).
        frame: the rows, e.g. from :func:`make_training_data` or :func:`hadrlab.contracts.corrupt`.
        key: the Redis key.
        chunk_rows: rows per list element.

    Returns:
        The number of rows written.
    """
    columns = [str(c) for c in frame.columns]
    records = frame.astype(object).where(frame.notna(), None).values.tolist()
    pipe = client.pipeline(transaction=True)
    pipe.delete(key, key + ":meta")
    for start in range(0, len(records), chunk_rows):
        pipe.rpush(key, json.dumps(records[start:start + chunk_rows], default=_json_default))
    pipe.hset(key + ":meta", mapping={"columns": json.dumps(columns), "rows": len(records),
                                      "written_at": time.time()})
    pipe.execute()
    return len(records)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"Cannot store a {type(value).__name__} in the training data.")


def read_training_data(client: Any, *, key: str = DEFAULT_KEY):
    """Read the training data written by :func:`write_training_data` back into a DataFrame.

    Raises:
        LookupError: there is no training data at ``key``.
    """
    import pandas as pd

    pipe = client.pipeline(transaction=True)
    pipe.hget(key + ":meta", "columns")
    pipe.lrange(key, 0, -1)
    columns_json, chunks = pipe.execute()
    if columns_json is None:
        raise LookupError(f"There is no training data at Redis key {key!r}; write some with "
                          f"hadrlab.training.write_training_data(client, make_training_data()).")
    rows: list = []
    for chunk in chunks:
        rows.extend(json.loads(chunk))
    return pd.DataFrame.from_records(rows, columns=json.loads(columns_json))


def redis_env(redis: Any) -> dict[str, str]:
    """Return the environment variables that tell a worker how to reach ``redis``.

    Args:
        redis: a RedisNode (``start_redis``), a FeatureStore (``start_feature_store``:
            through Sentinel), a ``redis://`` URL, or a ready dict of variables.
    """
    if redis is None:
        return {}
    if isinstance(redis, Mapping):
        return {k: str(v) for k, v in redis.items()}
    if isinstance(redis, str):
        return {"REDIS_URL": redis}
    if hasattr(redis, "connection_env"):
        return dict(redis.connection_env())
    if hasattr(redis, "port") and hasattr(redis, "password"):
        return {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis.port), "REDIS_PASSWORD": redis.password}
    raise TypeError(f"Cannot tell how to reach Redis from a {type(redis).__name__}; pass a RedisNode, "
                    f"a FeatureStore, a redis:// URL or a dict of REDIS_* variables.")


def connect_redis(env: Mapping[str, str]):
    """Return a redis-py client from REDIS_URL, REDIS_HOST/PORT/PASSWORD or SENTINELS.

    With SENTINELS, the client is ``Sentinel.master_for(SENTINEL_MASTER)``: it asks the
    Sentinels where the primary is on every new connection, so after a failover the next
    retry reaches the new primary. Returns None when no variable is set.
    """
    import redis
    from redis.backoff import ExponentialBackoff, NoBackoff
    from redis.retry import Retry
    from redis.sentinel import Sentinel

    password = env.get("REDIS_PASSWORD") or None
    options: dict[str, Any] = dict(socket_connect_timeout=1.0, socket_timeout=2.0, decode_responses=True,
                                   retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
                                   retry_on_error=[redis.ConnectionError, redis.TimeoutError])
    sentinels = [s.strip() for s in env.get("SENTINELS", "").split(",") if s.strip()]
    if sentinels:
        addresses = []
        for item in sentinels:
            host, _, port = item.rpartition(":")
            addresses.append((host or "127.0.0.1", int(port)))
        sentinel = Sentinel(addresses, sentinel_kwargs={"password": password, "socket_timeout": 0.5,
                                                        "socket_connect_timeout": 0.5,
                                                        "retry": Retry(NoBackoff(), 0)},
                            password=password, **options)
        return sentinel.master_for(env.get("SENTINEL_MASTER") or "features", password=password, **options)
    if env.get("REDIS_URL"):
        return redis.Redis.from_url(env["REDIS_URL"], **options)
    if env.get("REDIS_PORT"):
        return redis.Redis(host=env.get("REDIS_HOST") or "127.0.0.1", port=int(env["REDIS_PORT"]),
                           password=password, **options)
    return None


def _retry_redis(action: Callable[[], Any], *, what: str, patience_s: float,
                 on_wait: Callable[[str], None] | None = None) -> Any:
    """Run ``action``, retrying connection errors with back-off for up to ``patience_s``.

    A Sentinel failover takes a few seconds (down-after + ~1.25 s): a worker that gives up
    on the first ConnectionError fails a whole run for a fault the platform heals alone.
    """
    import redis

    deadline = time.monotonic() + patience_s
    delay = 0.1
    while True:
        try:
            return action()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise
            if on_wait:
                on_wait(f"{what}: {type(exc).__name__}: {exc}")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


# --------------------------------------------------------------------------- artifacts


def _artifact(pipeline: Any, run_id: str, metrics: Mapping) -> bytes:
    return pickle.dumps({"format": ARTIFACT_FORMAT, "model": pipeline, "features": list(FEATURES),
                         "run_id": run_id, "metrics": dict(metrics), "trained_at": time.time()})


def load_model_artifact(data: bytes) -> tuple[Any, dict]:
    """Unpack a model artifact made by the trainer: (estimator with predict_proba, metadata).

    Only load artifacts you trust (pickle runs code): the registry's SHA-256 check tells
    you the bytes are the ones that were registered.
    """
    payload = pickle.loads(data)
    if isinstance(payload, dict) and payload.get("format") == ARTIFACT_FORMAT:
        meta = {k: v for k, v in payload.items() if k != "model"}
        return payload["model"], meta
    if hasattr(payload, "predict_proba"):
        return payload, {"format": "estimator"}
    raise ValueError(f"This artifact is not a model the trainer made (format "
                     f"{payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r}).")


def save_model_file(path: str | os.PathLike, *, n: int = 2000, seed: int = 0) -> Path:
    """Train a small model in-process (well under a second) and save it as an artifact file.

    For a batch job that scores with MODEL=<file> instead of the registry's production model.
    """
    import numpy as np
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from hadrlab.fraud import labelled_inputs

    X, y = labelled_inputs(n, seed)
    model = make_pipeline(StandardScaler(), SGDClassifier(loss="log_loss", alpha=1e-4, random_state=seed))
    model.fit(X, y)
    X_held, y_held = labelled_inputs(1000, seed + 1000)
    auc = float(roc_auc_score(y_held, model.predict_proba(np.asarray(X_held))[:, 1]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, _artifact(model, "local", {"auc": auc}))
    return path


# --------------------------------------------------------------------------- files


def _write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, whole.

    Temp file in the same folder, fsync, rename over the old file, fsync of the folder
    (the rename itself must reach the disk, or a power cut can bring the old name back).
    """
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if durable:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- status


@dataclass
class TrainerStatus:
    """What the training worker reports in its status file (rewritten after every step).

    ``steps_lost_last_restart`` is the step the worker had reached when it died minus the
    step of the checkpoint it resumed from; ``lost_work_ratio`` divides it by the
    checkpoint interval (<= 1 when checkpoints work).
    """

    pid: int = 0
    phase: str = "starting"
    run_id: str = ""
    step: int = 0
    steps_per_run: int = 0
    checkpoint_every: int = 0
    last_checkpoint_step: int = 0
    checkpoints_written: int = 0
    restarts: int = 0
    resumed_from_step: int | None = None
    steps_lost_last_restart: int = 0
    steps_lost_total: int = 0
    runs_started: int = 0
    runs_completed: int = 0
    runs_skipped: int = 0
    runs_failed: int = 0
    models_registered: int = 0
    models_promoted: int = 0
    last_version: Any = None
    last_auc: float | None = None
    last_gate: str = ""
    last_error: str = ""
    skipped: list = field(default_factory=list)
    runs: list = field(default_factory=list)
    started_at: float = 0.0
    updated_at: float = 0.0

    @property
    def lost_work_ratio(self) -> float:
        """Steps lost at the last restart divided by the checkpoint interval."""
        return self.steps_lost_last_restart / self.checkpoint_every if self.checkpoint_every else float("nan")

    def __repr__(self) -> str:
        return (f"TrainerStatus({self.run_id or '-'} {self.phase}, step {self.step}/{self.steps_per_run}, "
                f"checkpoint at {self.last_checkpoint_step}, restarts {self.restarts}, lost "
                f"{self.steps_lost_last_restart} steps at the last one; runs completed "
                f"{self.runs_completed}, skipped {self.runs_skipped}, failed {self.runs_failed}; "
                f"registered {self.models_registered}, promoted {self.models_promoted})")

    def _repr_html_(self) -> str:
        rows = [("run", f"{self.run_id or '-'} ({self.phase})"),
                ("step", f"{self.step} / {self.steps_per_run}"),
                ("last checkpoint step", self.last_checkpoint_step),
                ("restarts / steps lost at the last", f"{self.restarts} / {self.steps_lost_last_restart}"),
                ("runs completed / skipped / failed",
                 f"{self.runs_completed} / {self.runs_skipped} / {self.runs_failed}"),
                ("models registered / promoted", f"{self.models_registered} / {self.models_promoted}"),
                ("last skip", self.skipped[-1]["reason"] if self.skipped else "-")]
        body = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
                       f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>" for k, v in rows)
        return f"<table>{body}</table>"


def _status_from_dict(data: Mapping) -> TrainerStatus:
    names = {f.name for f in fields(TrainerStatus)}
    return TrainerStatus(**{k: v for k, v in data.items() if k in names})


def trainer_status(source: Any) -> TrainerStatus:
    """Read a training worker's status.

    Args:
        source: the Child from :func:`start_trainer`, its checkpoint folder, or the
            status file itself.

    Returns:
        A :class:`TrainerStatus` (a fresh, empty one if the worker has written none yet).
    """
    path = _status_path_of(source)
    try:
        return _status_from_dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return TrainerStatus()


def _status_path_of(source: Any) -> Path:
    if isinstance(source, Child):
        return Path(getattr(source, "status_path"))
    path = Path(source)
    return path / STATUS_NAME if path.is_dir() else path


# --------------------------------------------------------------------------- the worker


@dataclass
class _Config:
    env: dict
    key: str
    registry_url: str
    registry_token: str
    model_name: str
    checkpoint_dir: Path
    status_path: Path
    checkpoint_every: int
    steps_per_run: int
    batch_size: int
    step_delay_s: float
    schedule_s: float
    max_runs: int
    contract: bool
    gate: bool
    gate_min_improvement: float
    gate_min_auc: float
    holdout_n: int
    holdout_seed: int
    registry_patience_s: float
    redis_patience_s: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> _Config:
        def num(name: str, default: float) -> float:
            raw = (env.get(name) or "").strip()
            try:
                value = float(raw) if raw else default
            except ValueError:
                raise ValueError(f"{name} must be a number; got {raw!r}.") from None
            if value < 0:
                raise ValueError(f"{name} must be >= 0; got {raw!r}.")
            return value

        def flag(name: str, default: bool) -> bool:
            raw = (env.get(name) or "").strip().lower()
            return default if not raw else raw in ("1", "true", "yes", "on")

        if not env.get("CHECKPOINT_DIR"):
            raise ValueError("CHECKPOINT_DIR is not set: the trainer needs a folder for its checkpoints "
                             "and status file.")
        ckpt = Path(env["CHECKPOINT_DIR"])
        return cls(
            env=dict(env), key=env.get("TRAINING_KEY") or DEFAULT_KEY,
            registry_url=env.get("REGISTRY_URL", ""), registry_token=env.get("REGISTRY_TOKEN", ""),
            model_name=env.get("MODEL_NAME") or "fraud", checkpoint_dir=ckpt,
            status_path=Path(env.get("STATUS_FILE") or ckpt / STATUS_NAME),
            checkpoint_every=int(num("CHECKPOINT_EVERY", 10)), steps_per_run=max(1, int(num("STEPS_PER_RUN", 100))),
            batch_size=max(1, int(num("BATCH_SIZE", 64))), step_delay_s=num("STEP_DELAY_MS", 20) / 1000,
            schedule_s=num("SCHEDULE_S", 10), max_runs=int(num("MAX_RUNS", 0)),
            contract=flag("CONTRACT", True), gate=flag("GATE", True),
            gate_min_improvement=float(env.get("GATE_MIN_IMPROVEMENT") or 0.0),
            gate_min_auc=num("GATE_MIN_AUC", 0.7), holdout_n=int(num("HOLDOUT_N", 2000)),
            holdout_seed=int(num("HOLDOUT_SEED", 1001)),
            registry_patience_s=num("REGISTRY_PATIENCE_S", 120), redis_patience_s=num("REDIS_PATIENCE_S", 60),
        )


class _Stop(Exception):
    """SIGTERM arrived: leave at the next step boundary."""


class _Worker:
    def __init__(self, cfg: _Config) -> None:
        self.cfg = cfg
        cfg.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_path = cfg.checkpoint_dir / CHECKPOINT_NAME
        previous = trainer_status(cfg.status_path) if cfg.status_path.exists() else None
        # A copy: ``previous`` must keep what the dead worker reported (its phase and step).
        self.status = _status_from_dict(asdict(previous)) if previous else TrainerStatus()
        self.status.pid = os.getpid()
        self.status.phase = "starting"
        self.status.steps_per_run = cfg.steps_per_run
        self.status.checkpoint_every = cfg.checkpoint_every
        self.status.started_at = time.time()
        self.status.last_error = ""
        self.previous = previous
        self.stopping = False
        self.redis = None
        self.registry = None
        self.holdout = None

    # -- plumbing

    def save_status(self, **changes: Any) -> None:
        for k, v in changes.items():
            setattr(self.status, k, v)
        self.status.updated_at = time.time()
        # The status is a progress report, not a recovery record: no fsync, so writing it
        # after every step costs microseconds. The rename still keeps it whole.
        _write_atomic(self.cfg.status_path, json.dumps(asdict(self.status), default=str).encode(),
                      durable=False)

    def save_checkpoint(self, state: dict) -> None:
        _write_atomic(self.ckpt_path, pickle.dumps(state))
        self.status.checkpoints_written += 1
        self.status.last_checkpoint_step = state["step"]

    def load_checkpoint(self) -> dict | None:
        try:
            return pickle.loads(self.ckpt_path.read_bytes())
        except FileNotFoundError:
            return None
        except Exception as exc:  # a torn file cannot happen with rename, but say so if it does
            logger.warning("Checkpoint %s is unreadable (%s); starting the run over.", self.ckpt_path, exc)
            return None

    def note_wait(self, message: str) -> None:
        self.save_status(last_error=message)

    def client(self):
        if self.registry is None:
            if not self.cfg.registry_url:
                raise ValueError("REGISTRY_URL is not set: the trainer has nowhere to register models.")
            from hadrlab.registry import RegistryClient

            self.registry = RegistryClient(self.cfg.registry_url, self.cfg.registry_token, timeout_s=5.0)
        return self.registry

    def call_registry(self, what: str, action: Callable[[], Any]) -> Any:
        """Call the registry, retrying for REGISTRY_PATIENCE_S: an outage delays, not loses, a model.

        Only RegistryUnavailable (no answer, timeout, 5xx) is retried, with exponential
        back-off and full jitter (:func:`hadrlab.resilience.retrying`); a refused request
        (bad token, malformed) would fail the same way every time.
        """
        from hadrlab.registry import RegistryUnavailable
        from hadrlab.resilience import retrying

        phase = self.status.phase
        # Bounded by time, not by tries: the patience is what the operator sets.
        for attempt in retrying(1_000_000, stop_after_s=self.cfg.registry_patience_s, initial_wait_s=0.2,
                                max_wait_s=2.0, name=f"registry {what}"):
            with attempt:
                self.check_stop()
                try:
                    result = action()
                except RegistryUnavailable as exc:
                    self.save_status(phase="waiting_for_registry", last_error=f"{what}: {exc}"[:500])
                    raise
        if self.status.phase == "waiting_for_registry":
            self.save_status(phase=phase)
        return result

    def check_stop(self) -> None:
        if self.stopping:
            raise _Stop()

    # -- the loop

    def account_restart(self, ckpt: dict | None) -> None:
        prev = self.previous
        if prev is None or prev.pid == 0:
            return
        self.status.restarts += 1
        crashed_mid_run = prev.phase in ("training", "reading", "validating", "evaluating")
        if ckpt is not None and ckpt.get("run_id") == prev.run_id:
            lost = max(0, prev.step - ckpt["step"])
            self.status.resumed_from_step = ckpt["step"]
        elif crashed_mid_run and prev.run_id:
            lost = prev.step  # no checkpoint of that run: all its steps are gone
            self.status.resumed_from_step = 0
        else:
            lost = 0
            self.status.resumed_from_step = None
        self.status.steps_lost_last_restart = lost
        self.status.steps_lost_total += lost
        logger.info("Restart %d: the last worker reached step %d of %s; resuming from step %s, %d steps lost.",
                    self.status.restarts, prev.step, prev.run_id or "-", self.status.resumed_from_step, lost)

    def run_forever(self) -> int:
        import numpy as np

        from hadrlab.fraud import labelled_inputs

        ckpt = self.load_checkpoint()
        self.account_restart(ckpt)
        self.save_status()
        self.holdout = labelled_inputs(self.cfg.holdout_n, self.cfg.holdout_seed)
        self.holdout = (np.asarray(self.holdout[0]), np.asarray(self.holdout[1]))
        self.redis = connect_redis(self.cfg.env)
        if self.redis is None:
            raise ValueError("None of REDIS_URL, REDIS_PORT or SENTINELS is set: the trainer cannot read "
                             "its training data.")
        while True:
            try:
                self.run_once(ckpt)
                ckpt = None
            except _Stop:
                self.save_status(phase="stopped")
                return 0
            except Exception as exc:
                # A failed run (registry down past our patience, Redis gone) keeps its
                # checkpoint: the next run resumes it instead of starting over.
                logger.exception("Run %s failed; its checkpoint is kept for the next run.", self.status.run_id)
                self.status.runs_failed += 1
                self.status.runs = (self.status.runs + [{"run_id": self.status.run_id, "outcome": "failed",
                                                         "reason": f"{type(exc).__name__}: {exc}"[:300],
                                                         "t_end": time.time()}])[-50:]
                self.save_status(last_error=f"{type(exc).__name__}: {exc}"[:500])
                ckpt = self.load_checkpoint()
            done = self.status.runs_completed + self.status.runs_skipped + self.status.runs_failed
            if self.cfg.max_runs and done >= self.cfg.max_runs:
                self.save_status(phase="done")
                return 0
            self.save_status(phase="sleeping")
            end = time.monotonic() + self.cfg.schedule_s
            while time.monotonic() < end:
                if self.stopping:
                    self.save_status(phase="stopped")
                    return 0
                time.sleep(min(0.1, self.cfg.schedule_s))

    def finish_run(self, record: dict) -> None:
        record["t_end"] = time.time()
        record["duration_s"] = round(record["t_end"] - record["t_start"], 3)
        self.status.runs = (self.status.runs + [record])[-50:]
        with contextlib.suppress(FileNotFoundError):
            self.ckpt_path.unlink()
        self.save_status()

    def run_once(self, ckpt: dict | None) -> None:
        cfg = self.cfg
        if ckpt is not None:
            state = ckpt
            logger.info("Resuming %s at step %d (phase %s).", state["run_id"], state["step"], state["phase"])
        else:
            self.status.runs_started += 1
            state = {"run_id": f"run-{self.status.runs_started:04d}", "phase": "training", "step": 0,
                     "t_start": time.time()}
        run_id = state["run_id"]
        record = {"run_id": run_id, "t_start": state["t_start"], "outcome": "", "version": None,
                  "auc": None, "promoted": False, "reason": "", "resumed_at_step": state["step"] if ckpt else None}
        self.save_status(run_id=run_id, step=state["step"], phase="reading",
                         last_checkpoint_step=state["step"] if ckpt else 0)

        if state["phase"] == "training":
            trained = self.train(state, record)
            if trained is None:
                return
            pipeline, metrics = trained
            self.save_status(phase="registering")
            version = self.call_registry("register", lambda: self.client().register(
                cfg.model_name, _artifact(pipeline, run_id, metrics), metrics,
                {"run_id": run_id, "steps": cfg.steps_per_run, "batch_size": cfg.batch_size,
                 "checkpoint_every": cfg.checkpoint_every, "contract": "v1" if cfg.contract else "off",
                 "data_rows": state.get("rows"), "data_sha256": state.get("data_sha256")}))
            version = _version_of(version)
            self.status.models_registered += 1
            state.update(phase="registered", version=version, metrics=metrics)
            # Remember the registration, so a crash now does not register the model twice.
            self.save_checkpoint({k: v for k, v in state.items() if k not in ("model", "scaler")})
        version, metrics = state["version"], state["metrics"]
        record.update(version=version, auc=metrics.get("auc"))
        self.save_status(phase="promoting", last_version=version, last_auc=metrics.get("auc"))
        if cfg.gate:
            production = self.call_registry("production", lambda: _production_or_none(self.client(), cfg.model_name))
            prod_metrics = (production or {}).get("metrics")
            decision = gate(metrics, prod_metrics, metric="auc", min_improvement=cfg.gate_min_improvement,
                            min_value=cfg.gate_min_auc)
            promote, reason = decision.promote, decision.reason
        else:
            promote, reason = True, "GATE=0: every model is promoted"
        if promote:
            self.call_registry("promote", lambda: self.client().promote(cfg.model_name, version, "production"))
            self.status.models_promoted += 1
        logger.info("%s: version %s auc %.4f %s (%s).", run_id, version, metrics.get("auc", float("nan")),
                    "promoted" if promote else "not promoted", reason)
        self.status.runs_completed += 1
        record.update(outcome="completed", promoted=promote, reason=reason)
        self.status.last_gate = reason
        self.save_status(phase="completed")
        self.finish_run(record)

    def train(self, state: dict, record: dict):
        """Steps of one run, from the checkpoint in ``state``; None if the run was skipped."""
        import numpy as np
        import pandas as pd
        from sklearn.linear_model import SGDClassifier
        from sklearn.metrics import accuracy_score, roc_auc_score
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        cfg = self.cfg
        frame = _retry_redis(lambda: read_training_data(self.redis, key=cfg.key), what="read training data",
                             patience_s=cfg.redis_patience_s, on_wait=self.note_wait)
        digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).values.tobytes()).hexdigest()
        if state.get("data_sha256") not in (None, digest):
            # The data changed while we were down; the cursor would point into other rows.
            logger.info("Training data changed since the checkpoint; %s starts over.", state["run_id"])
            state.update(step=0, model=None, scaler=None)
            self.status.resumed_from_step = 0
        state.update(data_sha256=digest, rows=len(frame))
        if cfg.contract:
            self.save_status(phase="validating")
            result = DataContract().validate(frame)
            if not result.passed:
                reason = f"data contract {result.schema_version} violated: {result.reason}"
                logger.warning("%s skipped: %s", state["run_id"], reason)
                self.status.runs_skipped += 1
                self.status.skipped = (self.status.skipped + [{"run_id": state["run_id"], "reason": reason,
                                                                "t": time.time()}])[-50:]
                record.update(outcome="skipped", reason=reason)
                self.finish_run(record)
                return None
        # Without a contract the trainer takes whatever arrives: every column but the id and
        # the label, by position, numbers coerced, nulls filled with 0. That is how a renamed,
        # rescaled or half-empty column slips silently into a model.
        inputs = [c for c in frame.columns if c not in (ID, LABEL)]
        X = frame[inputs].apply(pd.to_numeric, errors="coerce").fillna(0.0).to_numpy(float)
        y = pd.to_numeric(frame[LABEL], errors="coerce").fillna(0).astype(int).clip(0, 1).to_numpy()
        if len(X) == 0:
            raise ValueError("The training data is empty.")
        seed = int(state["run_id"][-4:])  # the same order after a restart: the cursor stays valid
        order = np.random.default_rng(seed).permutation(len(X))
        if state.get("model") is None:
            state["scaler"] = StandardScaler().fit(X)
            state["model"] = SGDClassifier(loss="log_loss", alpha=1e-4, learning_rate="optimal",
                                           random_state=seed)
        scaler, model = state["scaler"], state["model"]
        Xs = scaler.transform(X)
        self.save_status(phase="training", step=state["step"])
        while state["step"] < cfg.steps_per_run:
            self.check_stop()
            start = (state["step"] * cfg.batch_size) % len(X)  # the data cursor
            idx = order[np.arange(start, start + cfg.batch_size) % len(X)]
            model.partial_fit(Xs[idx], y[idx], classes=np.array([0, 1]))
            if cfg.step_delay_s:
                time.sleep(cfg.step_delay_s)
            state["step"] += 1
            state["cursor"] = (start + cfg.batch_size) % len(X)
            if cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0:
                self.save_checkpoint(state)
            self.save_status(step=state["step"])
        self.save_status(phase="evaluating")
        pipeline = make_pipeline(scaler, model)
        X_held, y_held = self.holdout
        proba = pipeline.predict_proba(X_held)[:, 1]
        metrics = {"auc": round(float(roc_auc_score(y_held, proba)), 5),
                   "accuracy": round(float(accuracy_score(y_held, proba >= 0.5)), 5),
                   "train_rows": int(len(X)), "holdout_rows": int(len(y_held))}
        return pipeline, metrics


def _version_of(answer: Any) -> Any:
    if isinstance(answer, Mapping):
        return answer.get("version", answer)
    return getattr(answer, "version", answer)


def _production_or_none(client: Any, name: str) -> dict | None:
    """The production model's metadata as a dict, or None when there is none yet."""
    from hadrlab.registry import ModelNotFound

    try:
        meta = client.production(name)
    except ModelNotFound:
        return None
    if meta is None or isinstance(meta, Mapping):
        return meta
    return {"version": meta.version, "metrics": dict(meta.metrics), "stage": meta.stage}


def run_trainer(env: Mapping[str, str] | None = None) -> int:
    """Run the training worker in this process until MAX_RUNS runs or SIGTERM; return an exit code."""
    cfg = _Config.from_env(dict(os.environ if env is None else env))
    worker = _Worker(cfg)

    def on_term(signum: int, frame: Any) -> None:
        worker.stopping = True

    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
    logger.info("Trainer pid %d: %d steps/run, checkpoint every %d, contract %s, gate %s, status %s.",
                os.getpid(), cfg.steps_per_run, cfg.checkpoint_every, cfg.contract, cfg.gate, cfg.status_path)
    try:
        return worker.run_forever()
    except Exception as exc:
        worker.save_status(phase="crashed", last_error=f"{type(exc).__name__}: {exc}"[:500])
        raise


def start_trainer(
    *,
    redis: Any,
    registry: Any = None,
    registry_url: str | None = None,
    registry_token: str | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 10,
    steps_per_run: int = 100,
    step_delay_ms: float = 20,
    schedule_s: float = 10,
    max_runs: int = 0,
    contract: bool = True,
    gate: bool = True,
    model_name: str = "fraud",
    name: str = "trainer",
    env: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> Child:
    """Start the continuous-training worker as a child process.

    Start it again with the same ``checkpoint_dir`` after a kill: it resumes from the
    last checkpoint and reports the steps it lost (:func:`trainer_status`).

    Args:
        redis: where the training data is: a RedisNode, a FeatureStore, a URL or a dict of env.
        registry: the registry (anything with ``url`` and ``token``), or use registry_url/token.
        checkpoint_dir: the folder for the checkpoint and status.json; default under home_dir().
        checkpoint_every: CHECKPOINT_EVERY, steps between checkpoints (0: never).
        steps_per_run, step_delay_ms, schedule_s, max_runs: see the module docstring.
        contract, gate: CONTRACT and GATE.
        model_name: the registry's model name.
        name: the child's name.
        env: more environment variables (they win).
        timeout_s: how long to wait for the worker's first status.

    Returns:
        The running Child, with ``status_path`` and ``checkpoint_dir`` attributes.
    """
    url = registry_url or getattr(registry, "url", None) or (registry if isinstance(registry, str) else "")
    token = registry_token if registry_token is not None else getattr(registry, "token", "") or ""
    ckpt = Path(checkpoint_dir) if checkpoint_dir else home_dir() / "training" / name
    ckpt.mkdir(parents=True, exist_ok=True)
    status_path = ckpt / STATUS_NAME
    before = trainer_status(status_path).started_at
    package_root = str(Path(__file__).resolve().parents[1])
    child_env = {
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p),
        **redis_env(redis),
        "REGISTRY_URL": str(url or ""), "REGISTRY_TOKEN": str(token), "MODEL_NAME": model_name,
        "CHECKPOINT_DIR": str(ckpt), "CHECKPOINT_EVERY": str(checkpoint_every),
        "STEPS_PER_RUN": str(steps_per_run), "STEP_DELAY_MS": str(step_delay_ms),
        "SCHEDULE_S": str(schedule_s), "MAX_RUNS": str(max_runs),
        "CONTRACT": "1" if contract else "0", "GATE": "1" if gate else "0",
        **{k: str(v) for k, v in (env or {}).items()},
    }

    def ready(child: Child) -> None:
        wait_until(lambda: trainer_status(status_path).pid == child.pid
                   and trainer_status(status_path).started_at != before,
                   timeout_s=timeout_s, describe=f"a first status from the trainer in {status_path}", child=child)

    child = start_process(name, [sys.executable, "-m", "hadrlab.training"], env=child_env, ready=ready)
    child.status_path = status_path
    child.checkpoint_dir = ckpt
    return child


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, datefmt="%H:%M:%S",
                        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s")
    try:
        return run_trainer()
    except ValueError as exc:
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
