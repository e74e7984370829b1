"""Batch scoring that survives a kill: every record scored exactly once.

``python -m hadrlab.batch`` scores a dataset (INPUT, made by :func:`make_batch_input`)
chunk by chunk with the fraud model and writes one result per record. The job can be
killed at any moment and started again with the same environment; how it commits decides
what the output then holds.

- ``COMMIT_MODE=atomic`` (default): OUTPUT is a SQLite database. Each chunk's results and
  the progress marker are committed in ONE transaction, and results are plain ``INSERT``s
  into a table whose primary key is the record id. A kill before the commit rolls the whole
  chunk back; a kill after it leaves chunk and marker together. The restarted job resumes
  at the marker: no duplicate, no gap. (A duplicate would not even be possible silently:
  the INSERT would fail on the primary key.)
- ``COMMIT_MODE=naive``: OUTPUT is a CSV file. Results are appended record by record as they
  are scored, and the progress marker (OUTPUT.progress) is saved separately after the chunk.
  A kill in the middle of a chunk leaves part of it in the CSV but not in the marker: the
  restarted job scores those records again, and the CSV holds them twice.

:func:`audit_batch` counts duplicates and gaps from the output itself, not from the marker.

Environment::

    INPUT            required; a CSV (or Parquet, if pyarrow is installed) from make_batch_input
    OUTPUT           required; SQLite database (atomic) or CSV file (naive)
    COMMIT_MODE      "atomic" (default) or "naive"
    MODEL            "registry" (default when REGISTRY_URL is set): the production version of
                     MODEL_NAME; or the path of a model file (hadrlab.training.save_model_file)
    REGISTRY_URL, REGISTRY_TOKEN, MODEL_NAME (default "fraud")
    CHUNK_SIZE       records per chunk, default 100
    CHUNK_DELAY_MS   scoring time per chunk, default 50 (stands in for a bigger model)
    REDIS_URL | REDIS_HOST, REDIS_PORT, REDIS_PASSWORD | SENTINELS, SENTINEL_MASTER
                     optional: read each card's features from the feature store (through
                     Sentinel, riding over a failover) instead of the precomputed columns
    KILL_AFTER_CHUNK FOR TESTS AND DEMOS ONLY: the job SIGKILLs itself once, after writing the
                     results of that chunk (0-based) and before saving its progress marker:
                     the worst moment for the naive mode, and a deterministic kill point.

Example::

    make_batch_input(2000, seed=1, path="in.csv")
    job = start_batch_job("in.csv", "out.db", model="model.pkl")
    job.kill(); start_batch_job("in.csv", "out.db", model="model.pkl")   # resume
    audit_batch("out.db", "in.csv")      # BatchAudit(expected=2000, scored=2000, duplicates=0, gaps=0)
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import contextlib
import csv
import hashlib
import html
import json
import logging
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hadrlab.contracts import FEATURES
from hadrlab.processes import Child, start_process, wait_until

__all__ = [
    "make_batch_input",
    "BatchAudit",
    "count_audit",
    "audit_batch",
    "BatchResult",
    "batch_status",
    "start_batch_job",
    "run_batch_job",
    "run_batch",
]

logger = logging.getLogger("hadrlab.batch")

COMMIT_MODES = ("atomic", "naive")
RESULT_COLUMNS = ("record_id", "score", "decision", "model", "chunk", "scored_at")
_SQLITE_MAGIC = b"SQLite format 3\x00"


# --------------------------------------------------------------------------- the input


def make_batch_input(n: int = 2000, seed: int = 0, path: str | os.PathLike = "batch-input.csv") -> Path:
    """Write a dataset of ``n`` transactions to score, one row per record, with unique ids.

    Each row carries the transaction (card_id, t, amount, merchant_category) and the model
    inputs computed from the card's history, so the job can score it without a feature
    store; with REDIS/SENTINELS set, the job reads the card's features from Redis instead.

    Args:
        n: how many records.
        seed: the generator's seed.
        path: where to write it: ``.parquet`` (needs pyarrow) or anything else for CSV.

    Returns:
        The path written.
    """
    import numpy as np
    import pandas as pd

    from hadrlab.fraud import FeatureTracker, generate_transactions, model_inputs

    frame = generate_transactions(n, seed=seed)
    tracker, stored, inputs = FeatureTracker(), {}, []
    for txn in frame.to_dict("records"):
        inputs.append(model_inputs(stored.get(txn["card_id"]), txn["amount"], txn["merchant_category"], txn["t"]))
        stored[txn["card_id"]] = tracker.update(txn, updated_at=0.0)
    out = pd.DataFrame({"record_id": frame["txn_id"].astype("int64"), "card_id": frame["card_id"],
                        "t": frame["t"], "amount": frame["amount"],
                        "merchant_category": frame["merchant_category"]})
    features = pd.DataFrame(np.asarray(inputs, dtype=float).reshape(len(frame), len(FEATURES)),
                            columns=list(FEATURES))
    out = pd.concat([out, features.round(6)], axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        out.to_parquet(path, index=False)
    else:
        out.to_csv(path, index=False)
    return path


def _read_input(path: str | os.PathLike):
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"The batch input {path} does not exist; make one with "
                                f"hadrlab.batch.make_batch_input(n, seed, path).")
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def _file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- audit


@dataclass
class BatchAudit:
    """What the output of a batch job holds, counted from the output itself.

    ``duplicates`` is the number of extra rows (a record written 3 times adds 2);
    ``gaps`` the number of input records with no result; ``unexpected`` results whose id is
    not in the input; ``torn_rows`` lines of a CSV that a kill cut in half.
    """

    expected: int
    scored: int
    duplicates: int
    gaps: int
    unexpected: int = 0
    torn_rows: int = 0
    duplicated_ids: list = field(default_factory=list, repr=False)
    missing_ids: list = field(default_factory=list, repr=False)

    @property
    def exactly_once(self) -> bool:
        """True when every input record has exactly one result and nothing else is there."""
        return self.duplicates == 0 and self.gaps == 0 and self.unexpected == 0 and self.torn_rows == 0

    def __repr__(self) -> str:
        extra = f", unexpected={self.unexpected}" if self.unexpected else ""
        extra += f", torn_rows={self.torn_rows}" if self.torn_rows else ""
        return (f"BatchAudit(expected={self.expected}, scored={self.scored}, duplicates={self.duplicates}, "
                f"gaps={self.gaps}{extra}, exactly_once={self.exactly_once})")

    def _repr_html_(self) -> str:
        colour = "#2e7d32" if self.exactly_once else "#c62828"
        cells = [("expected", self.expected), ("scored", self.scored), ("duplicates", self.duplicates),
                 ("gaps", self.gaps), ("unexpected", self.unexpected), ("torn rows", self.torn_rows)]
        head = "".join(f"<th>{k}</th>" for k, _ in cells)
        body = "".join(f"<td>{v}</td>" for _, v in cells)
        verdict = "exactly once" if self.exactly_once else "NOT exactly once"
        return (f"<p><b style='color:{colour}'>{verdict}</b></p>"
                f"<table><tr>{head}</tr><tr>{body}</tr></table>")


def count_audit(expected_ids: Iterable, scored_ids: Iterable, *, torn_rows: int = 0) -> BatchAudit:
    """Count duplicates and gaps of a list of result ids against the expected ids.

    Args:
        expected_ids: the ids of the input records (each once).
        scored_ids: the id of every result row, repeats included.
        torn_rows: result rows that could not be read at all.

    Returns:
        A :class:`BatchAudit`.
    """
    expected = {int(i) for i in expected_ids}
    counts = Counter(int(i) for i in scored_ids)
    present = set(counts)
    duplicated = sorted(i for i, c in counts.items() if c > 1)
    missing = sorted(expected - present)
    return BatchAudit(
        expected=len(expected),
        scored=len(present & expected),
        duplicates=sum(c - 1 for c in counts.values()),
        gaps=len(missing),
        unexpected=len(present - expected),
        torn_rows=torn_rows,
        duplicated_ids=duplicated[:1000],
        missing_ids=missing[:1000],
    )


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(16) == _SQLITE_MAGIC
    except OSError:
        return False


def _result_ids(output: Path) -> tuple[list[int], int]:
    """Every result row's record id in ``output`` (SQLite or CSV), and the unreadable rows."""
    if not output.exists():
        return [], 0
    if _is_sqlite(output):
        with contextlib.closing(sqlite3.connect(f"file:{output}?mode=ro", uri=True)) as conn:
            try:
                return [row[0] for row in conn.execute("SELECT record_id FROM results")], 0
            except sqlite3.OperationalError:  # the job died before creating its table
                return [], 0
    ids, torn = [], 0
    with open(output, newline="") as fh:
        for row in csv.reader(fh):
            if not row or row[0] == "record_id":
                continue
            try:
                if len(row) != len(RESULT_COLUMNS):
                    raise ValueError(row)
                float(row[1])
                ids.append(int(row[0]))
            except ValueError:
                torn += 1
    return ids, torn


def audit_batch(output: str | os.PathLike, input: str | os.PathLike) -> BatchAudit:
    """Audit a batch job's output against its input: expected, scored, duplicates, gaps.

    It reads the results themselves (the SQLite ``results`` table or the naive CSV), never
    the job's progress marker, so a marker that lies cannot hide a gap.

    Args:
        output: the job's OUTPUT (SQLite database or CSV file).
        input: the job's INPUT.

    Returns:
        A :class:`BatchAudit`.
    """
    ids, torn = _result_ids(Path(output))
    return count_audit(_read_input(input)["record_id"], ids, torn_rows=torn)


# --------------------------------------------------------------------------- status


def _status_path(output: str | os.PathLike) -> Path:
    return Path(str(output) + ".status.json")


def batch_status(output: str | os.PathLike) -> dict:
    """Return the job's status (phase, chunks_done, records_done, restarts, redis_retries...).

    The status is a progress report, rewritten after each chunk; the truth about what was
    committed is in the output (see :func:`audit_batch`).
    """
    try:
        return json.loads(_status_path(output).read_text())
    except (OSError, ValueError):
        return {}


def _write_status(output: Path, status: dict) -> None:
    status["updated_at"] = time.time()
    path = _status_path(output)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(status, default=str))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the job


@dataclass
class _JobConfig:
    env: dict
    input: Path
    output: Path
    mode: str
    model: str
    model_name: str
    chunk_size: int
    chunk_delay_s: float
    kill_after_chunk: int | None
    redis_patience_s: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> _JobConfig:
        missing = [k for k in ("INPUT", "OUTPUT") if not env.get(k)]
        if missing:
            raise ValueError(f"{' and '.join(missing)} not set: the batch job needs an INPUT dataset "
                             f"and an OUTPUT to write to.")
        mode = (env.get("COMMIT_MODE") or "atomic").strip().lower()
        if mode not in COMMIT_MODES:
            raise ValueError(f"COMMIT_MODE must be 'atomic' or 'naive'; got {mode!r}.")
        model = env.get("MODEL") or ("registry" if env.get("REGISTRY_URL") else "")
        if not model:
            raise ValueError("Neither MODEL nor REGISTRY_URL is set: the batch job has no model to score "
                             "with. Set MODEL to a model file, or REGISTRY_URL (and REGISTRY_TOKEN).")
        kill = (env.get("KILL_AFTER_CHUNK") or "").strip()
        return cls(env=dict(env), input=Path(env["INPUT"]), output=Path(env["OUTPUT"]), mode=mode,
                   model=model, model_name=env.get("MODEL_NAME") or "fraud",
                   chunk_size=max(1, int(env.get("CHUNK_SIZE") or 100)),
                   chunk_delay_s=float(env.get("CHUNK_DELAY_MS") or 50) / 1000,
                   kill_after_chunk=int(kill) if kill else None,
                   redis_patience_s=float(env.get("REDIS_PATIENCE_S") or 60))


def _load_model(cfg: _JobConfig, pinned: str | None) -> tuple[Any, str]:
    """Return (estimator, reference). A resumed job reuses the version it started with."""
    from hadrlab.training import load_model_artifact

    if cfg.model != "registry":
        estimator, _ = load_model_artifact(Path(cfg.model).read_bytes())
        return estimator, f"file:{Path(cfg.model).name}"
    from hadrlab.registry import RegistryClient, RegistryUnavailable

    client = RegistryClient(cfg.env.get("REGISTRY_URL", ""), cfg.env.get("REGISTRY_TOKEN", ""), timeout_s=5.0)
    deadline = time.monotonic() + float(cfg.env.get("REGISTRY_PATIENCE_S") or 60)
    while True:
        try:
            if pinned and pinned.startswith(f"{cfg.model_name}:v"):
                version = int(pinned.rsplit(":v", 1)[1])
            else:
                version = client.production(cfg.model_name).version
            estimator, _ = load_model_artifact(client.download(cfg.model_name, version))
            return estimator, f"{cfg.model_name}:v{version}"
        except RegistryUnavailable as exc:
            if time.monotonic() > deadline:
                raise
            logger.warning("Registry unavailable (%s); retrying.", exc)
            time.sleep(1.0)


def _decide(score: float) -> str:
    return "approve" if score < 0.5 else "review" if score < 0.8 else "decline"


class _Scorer:
    """Scores chunks; reads features from Redis when configured, riding over failovers."""

    def __init__(self, cfg: _JobConfig, estimator: Any, status: dict, output: Path) -> None:
        from hadrlab.training import connect_redis

        self.cfg, self.estimator, self.status, self.output = cfg, estimator, status, output
        self.redis = connect_redis(cfg.env)
        status["features_from"] = "input" if self.redis is None else (
            "redis via sentinel" if cfg.env.get("SENTINELS") else "redis")

    def features(self, chunk) -> Any:
        import numpy as np

        if self.redis is None:
            return chunk[list(FEATURES)].to_numpy(float)
        from hadrlab.fraud import KEY_PREFIX, model_inputs
        from hadrlab.training import _retry_redis

        def read() -> list:
            pipe = self.redis.pipeline(transaction=False)
            for card in chunk["card_id"]:
                pipe.hgetall(KEY_PREFIX + str(card))
            return pipe.execute()

        def waiting(message: str) -> None:
            self.status["redis_retries"] = self.status.get("redis_retries", 0) + 1
            self.status["last_error"] = message[:300]
            _write_status(self.output, self.status)

        stored = _retry_redis(read, what="read features", patience_s=self.cfg.redis_patience_s, on_wait=waiting)
        rows = chunk.to_dict("records")
        return np.asarray([model_inputs(f or None, r["amount"], r["merchant_category"], r["t"])
                           for f, r in zip(stored, rows)], dtype=float)

    def score(self, chunk) -> list[float]:
        return [float(p) for p in self.estimator.predict_proba(self.features(chunk))[:, 1]]


def _kill_point(cfg: _JobConfig, chunk_index: int) -> None:
    """KILL_AFTER_CHUNK: die once, between writing a chunk's results and saving its marker."""
    if cfg.kill_after_chunk is None or chunk_index != cfg.kill_after_chunk:
        return
    flag = Path(str(cfg.output) + ".killed")
    if flag.exists():
        return
    flag.write_text(f"killed after chunk {chunk_index} at {time.time()}\n")
    logger.warning("KILL_AFTER_CHUNK=%d: killing myself now, before the progress marker is saved.", chunk_index)
    os.kill(os.getpid(), signal.SIGKILL)


def run_batch(env: Mapping[str, str] | None = None) -> dict:
    """Run the batch job in this process until the input is scored; return its final status.

    Note: with KILL_AFTER_CHUNK this kills the calling process: use :func:`start_batch_job`.
    """
    cfg = _JobConfig.from_env(dict(os.environ if env is None else env))
    frame = _read_input(cfg.input)
    input_sha = _file_sha256(cfg.input)
    previous = batch_status(cfg.output)
    status = {"pid": os.getpid(), "phase": "starting", "mode": cfg.mode, "input": str(cfg.input),
              "records": len(frame), "chunk_size": cfg.chunk_size, "chunks_done": 0, "records_done": 0,
              "restarts": previous.get("restarts", -1) + 1 if previous else 0,
              "redis_retries": previous.get("redis_retries", 0), "last_error": "",
              "started_at": time.time(), "first_started_at": previous.get("first_started_at", time.time())}
    _write_status(cfg.output, status)
    if cfg.mode == "atomic":
        _run_atomic(cfg, frame, input_sha, status)
    else:
        _run_naive(cfg, frame, input_sha, status)
    status.update(phase="done", finished_at=time.time())
    _write_status(cfg.output, status)
    logger.info("Batch job done: %d records in %d chunks (%s mode).", status["records_done"],
                status["chunks_done"], cfg.mode)
    return status


def _run_atomic(cfg: _JobConfig, frame, input_sha: str, status: dict) -> None:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so the transaction's bounds
    # are exactly the ones written here. WAL + synchronous=FULL: a commit is on disk
    # before COMMIT returns.
    conn = sqlite3.connect(cfg.output, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS results (record_id INTEGER PRIMARY KEY, score REAL NOT NULL, "
                     "decision TEXT NOT NULL, model TEXT NOT NULL, chunk INTEGER NOT NULL, scored_at REAL NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS progress (job TEXT PRIMARY KEY, next_row INTEGER NOT NULL, "
                     "chunks_done INTEGER NOT NULL, input_sha256 TEXT NOT NULL, model TEXT, updated_at REAL)")
        row = conn.execute("SELECT next_row, chunks_done, input_sha256, model FROM progress WHERE job='batch'").fetchone()
        if row is not None and row[2] != input_sha:
            raise ValueError(f"The output {cfg.output} belongs to another input (sha256 {row[2][:12]}...), not "
                             f"{cfg.input}. Use a new OUTPUT, or delete the old one to start over.")
        next_row, chunks_done, pinned = (row[0], row[1], row[3]) if row else (0, 0, None)
        estimator, model_ref = _load_model(cfg, pinned)
        if row is None:
            conn.execute("INSERT INTO progress VALUES ('batch', 0, 0, ?, ?, ?)", (input_sha, model_ref, time.time()))
        scorer = _Scorer(cfg, estimator, status, cfg.output)
        status.update(phase="scoring", model=model_ref, resumed_at_row=next_row, chunks_done=chunks_done,
                      records_done=next_row)
        _write_status(cfg.output, status)
        while next_row < len(frame):
            chunk = frame.iloc[next_row:next_row + cfg.chunk_size]
            scores = scorer.score(chunk)
            time.sleep(cfg.chunk_delay_s)
            now = time.time()
            rows = [(int(rid), s, _decide(s), model_ref, chunks_done, now)
                    for rid, s in zip(chunk["record_id"], scores)]
            conn.execute("BEGIN IMMEDIATE")
            try:
                # INSERT, not INSERT OR REPLACE: scoring a record twice must fail loudly.
                conn.executemany("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?)", rows)
                _kill_point(cfg, chunks_done)
                conn.execute("UPDATE progress SET next_row=?, chunks_done=?, updated_at=? WHERE job='batch'",
                             (next_row + len(chunk), chunks_done + 1, now))
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            next_row += len(chunk)
            chunks_done += 1
            status.update(chunks_done=chunks_done, records_done=next_row)
            _write_status(cfg.output, status)
    finally:
        conn.close()


def _run_naive(cfg: _JobConfig, frame, input_sha: str, status: dict) -> None:
    progress = Path(str(cfg.output) + ".progress")
    try:
        next_row, chunks_done = (int(x) for x in progress.read_text().split())
    except (OSError, ValueError):
        next_row, chunks_done = 0, 0
    estimator, model_ref = _load_model(cfg, None)
    scorer = _Scorer(cfg, estimator, status, cfg.output)
    status.update(phase="scoring", model=model_ref, resumed_at_row=next_row, chunks_done=chunks_done,
                  records_done=next_row)
    _write_status(cfg.output, status)
    new_file = not cfg.output.exists()
    with open(cfg.output, "a", newline="") as fh:
        writer = csv.writer(fh)
        if new_file:
            writer.writerow(RESULT_COLUMNS)
        while next_row < len(frame):
            chunk = frame.iloc[next_row:next_row + cfg.chunk_size]
            scores = scorer.score(chunk)
            per_record_s = cfg.chunk_delay_s / max(1, len(chunk))
            # The naive job streams each result out as soon as it is scored...
            for rid, s in zip(chunk["record_id"], scores):
                time.sleep(per_record_s)
                writer.writerow([int(rid), f"{s:.6f}", _decide(s), model_ref, chunks_done, f"{time.time():.3f}"])
                fh.flush()
            _kill_point(cfg, chunks_done)
            # ...and only then, separately, notes how far it got.
            next_row += len(chunk)
            chunks_done += 1
            progress.write_text(f"{next_row} {chunks_done}\n")
            status.update(chunks_done=chunks_done, records_done=next_row)
            _write_status(cfg.output, status)


# --------------------------------------------------------------------------- helpers


@dataclass
class BatchResult:
    """A finished batch job: how it went, how long it took, and the audit of its output."""

    output: Path
    mode: str
    exit_code: int | None
    elapsed_s: float
    audit: BatchAudit
    status: dict = field(repr=False, default_factory=dict)

    def __repr__(self) -> str:
        return (f"BatchResult({self.mode}, exit {self.exit_code}, {self.elapsed_s:.1f} s, "
                f"chunks {self.status.get('chunks_done')}, restarts {self.status.get('restarts')}, {self.audit!r})")

    def _repr_html_(self) -> str:
        return (f"<p>{html.escape(self.mode)} batch job: exit {self.exit_code}, {self.elapsed_s:.1f} s, "
                f"restarts {self.status.get('restarts')}</p>" + self.audit._repr_html_())


def start_batch_job(
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    registry: Any = None,
    model_name: str = "fraud",
    commit_mode: str = "atomic",
    chunk_size: int = 100,
    chunk_delay_ms: float = 50,
    redis: Any = None,
    kill_after_chunk: int | None = None,
    name: str = "batch-job",
    env: Mapping[str, str] | None = None,
) -> Child:
    """Start the batch job as a child process (it exits when the input is scored).

    Start it again with the same arguments after a kill: it resumes from its marker.

    Args:
        input: the dataset (:func:`make_batch_input`).
        output: SQLite database (atomic) or CSV file (naive).
        model: a model file; None scores with the registry's production model.
        registry: the registry (anything with ``url`` and ``token``), when model is None.
        model_name: the registry's model name.
        commit_mode: "atomic" or "naive".
        chunk_size, chunk_delay_ms: CHUNK_SIZE and CHUNK_DELAY_MS.
        redis: read features from this RedisNode / FeatureStore (Sentinel) / URL / env dict.
        kill_after_chunk: KILL_AFTER_CHUNK, a deterministic self-kill for tests and demos.
        name: the child's name.
        env: more environment variables (they win).

    Returns:
        The running Child, with ``input`` and ``output`` attributes.
    """
    from hadrlab.training import redis_env

    if commit_mode not in COMMIT_MODES:
        raise ValueError(f"commit_mode must be 'atomic' or 'naive'; got {commit_mode!r}.")
    if model is None and registry is None:
        raise ValueError("Pass model=<file> or registry=<the registry> so the job has a model to score with.")
    package_root = str(Path(__file__).resolve().parents[1])
    child_env = {
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p),
        "INPUT": str(Path(input).resolve()), "OUTPUT": str(Path(output).resolve()),
        "COMMIT_MODE": commit_mode, "MODEL": str(Path(model).resolve()) if model is not None else "registry",
        "MODEL_NAME": model_name, "CHUNK_SIZE": str(chunk_size), "CHUNK_DELAY_MS": str(chunk_delay_ms),
        **redis_env(redis),
    }
    if registry is not None:
        child_env["REGISTRY_URL"] = str(getattr(registry, "url", registry))
        child_env["REGISTRY_TOKEN"] = str(getattr(registry, "token", ""))
    if kill_after_chunk is not None:
        child_env["KILL_AFTER_CHUNK"] = str(kill_after_chunk)
    child_env.update({k: str(v) for k, v in (env or {}).items()})
    child = start_process(name, [sys.executable, "-m", "hadrlab.batch"], env=child_env)
    child.input = Path(input)
    child.output = Path(output)
    return child


def run_batch_job(input: str | os.PathLike, output: str | os.PathLike, *, timeout_s: float = 300.0,
                  **kwargs: Any) -> BatchResult:
    """Run the batch job as a child process, wait for it to exit, and audit its output.

    Same arguments as :func:`start_batch_job`. If the job is killed (KILL_AFTER_CHUNK), the
    result says so by its exit code (-9); run it again to resume.

    Returns:
        A :class:`BatchResult`.
    """
    start = time.monotonic()
    child = start_batch_job(input, output, **kwargs)
    try:
        wait_until(lambda: not child.alive(), timeout_s=timeout_s, interval_s=0.1,
                   describe=f"the batch job scoring {input} to finish")
    finally:
        child.stop()
    return BatchResult(output=Path(output), mode=kwargs.get("commit_mode", "atomic"), exit_code=child.returncode,
                       elapsed_s=time.monotonic() - start, audit=audit_batch(output, input),
                       status=batch_status(output))


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, datefmt="%H:%M:%S",
                        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s")
    try:
        run_batch()
    except (ValueError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
