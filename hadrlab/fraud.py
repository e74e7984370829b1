"""The fraud-detection service of Lab 02: transactions, real-time features in Redis, a model, an API.

Four parts, each usable alone:

    generate_transactions(n, seed=0)      synthetic card transactions, a few % fraudulent
    write_features(client, transactions)  per-card real-time features into Redis hashes
    load_fraud_model()                    a small scikit-learn model, trained in well under 1 s
    python -m hadrlab.fraud api           the scoring API (FastAPI): POST /score
    python -m hadrlab.fraud writer        the feature writer: a stream of writes through Sentinel

Features live in one Redis hash per card, ``features:card:<card_id>``::

    txn_count_1m, txn_count_5m   transactions of this card in the last 1 and 5 minutes
    amount_sum_5m, amount_mean   spend in the last 5 minutes; mean amount ever
    seconds_since_last           gap between the last two transactions
    merchant_category_novelty    1 if the last transaction was in a category new for the card
    categories, n_txns, last_t, last_amount
    updated_at                   epoch seconds of the write: the API's staleness clock
    seq                          the writer's sequence number, to spot lost writes

and the sliding window itself in a sorted set ``features:card:<card_id>:txns`` (score = t),
so ``ZRANGE ... WITHSCORES`` shows what the counts were computed from.

The scoring API reads features from region A or B (REDIS_A / REDIS_B): it asks the
health-checking sidecar (SIDECAR_URL, see :mod:`hadrlab.sidecar`) which region serves reads,
and when the sidecar does not answer it tries region A, then B. Writes never go through the
API: the writer sends them to the current primary through Sentinel.

Environment of ``python -m hadrlab.fraud api``::

    PORT                 required
    REDIS_A, REDIS_B     "127.0.0.1:port" of each region (REDIS_B optional)
    REDIS_PASSWORD       the password of both
    SIDECAR_URL          optional; "http://127.0.0.1:port" of the sidecar
    LATENCY_BUDGET_MS    default 50; answers report within_budget against it
    REDIS_TIMEOUT_MS     default 200; connect and read timeout of every Redis call
    STALE_AFTER_S        default 5; a read of features older than this counts as stale

Environment of ``python -m hadrlab.fraud writer``::

    SENTINELS            "host:port,host:port,..."; if unset, the writer writes to REDIS_A
                         directly (no failover: a stand-in for tests without Sentinel)
    SENTINEL_MASTER      default "features"
    REDIS_PASSWORD, REDIS_A, REDIS_B   (REDIS_A/B name the region a write landed in)
    WRITE_RATE_TPS       default 50 transactions (feature updates) per second
    N_CARDS              default 200; SEED default 0
    WRITER_STATS         path of the stats JSON (rewritten twice a second)
    WRITER_LOG           path of the per-write CSV: t,seq,card_id,ok,region,latency_ms,error;
                         "-" prints the rows on stdout (a pod's log, on a cluster)
"""


import os

if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import asyncio
import contextlib
import csv
import hashlib
import json
import logging
import math
import pickle
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hadrlab.exposition import CONTENT_TYPE, Histogram, MetricsText
from hadrlab.processes import HOST, Child, find_free_port, home_dir, start_process, wait_for_http, wait_until
from hadrlab.settings import env_number, parse_address

__all__ = [
    "CATEGORIES",
    "FEATURE_NAMES",
    "generate_transactions",
    "iter_transactions",
    "FeatureTracker",
    "model_inputs",
    "write_features",
    "read_features",
    "FraudModel",
    "load_fraud_model",
    "start_fraud_api",
    "start_feature_writer",
    "writer_stats",
    "writer_timeline",
]

logger = logging.getLogger("hadrlab.fraud")

KEY_PREFIX = "features:card:"
CATEGORIES = (
    "grocery", "fuel", "restaurant", "pharmacy", "transport", "clothing", "travel",
    "entertainment", "electronics", "gift_cards", "jewelry", "crypto",
)
# Fraudsters favour goods that resell easily; most cards never buy them.
RISKY_CATEGORIES = ("electronics", "gift_cards", "jewelry", "crypto")
EVERYDAY_CATEGORIES = CATEGORIES[:8]
COUNTRIES = ("FR", "DE", "ES", "IT", "NL", "GB", "US", "BR", "NG", "RU", "CN")
WINDOW_1M_S = 60.0
WINDOW_5M_S = 300.0
# For a card with no history: how far back its "last" transaction is taken to be, and the
# amount its spend is compared with.
NO_HISTORY_GAP_S = 86_400.0
TYPICAL_AMOUNT = 40.0
FIXED_START_T = 1_700_000_000.0  # generated timelines start here unless told otherwise


# --------------------------------------------------------------------------- transactions


def iter_transactions(
    *,
    seed: int = 0,
    n_cards: int = 200,
    fraud_rate: float = 0.03,
    start_t: float = FIXED_START_T,
    mean_gap_s: float = 0.5,
) -> Iterator[dict]:
    """Yield synthetic card transactions for ever, the same ones for the same arguments.

    Legitimate spending: each card has a home country, a typical amount and two or three
    everyday categories it mostly buys in, with a transaction every ``n_cards * mean_gap_s``
    seconds on average. Fraud comes in bursts on one card: 3-6 transactions a few seconds
    apart, 3-15 times the card's typical amount, in resellable categories the card has
    rarely used, often abroad. Every transaction of a burst is labelled ``is_fraud=1``.

    Args:
        seed: the random seed; the stream is a pure function of the arguments.
        n_cards: how many cards spend.
        fraud_rate: the share of transactions that are fraudulent (about).
        start_t: the ``t`` (epoch seconds) of the stream's start.
        mean_gap_s: the mean gap between two transactions of the whole stream.

    Yields:
        dicts with txn_id, t, card_id, amount, merchant_category, country, is_fraud.
    """
    import numpy as np

    if not 0 <= fraud_rate < 0.5:
        raise ValueError(f"fraud_rate must be between 0 and 0.5; got {fraud_rate}.")
    if n_cards < 1:
        raise ValueError(f"n_cards must be at least 1; got {n_cards}.")
    rng = np.random.default_rng(seed)
    cards = [f"card-{i:05d}" for i in range(n_cards)]
    home = rng.choice(len(COUNTRIES[:7]), size=n_cards)
    typical = np.exp(rng.normal(math.log(TYPICAL_AMOUNT), 0.6, size=n_cards))
    favourites = [
        list(rng.choice(EVERYDAY_CATEGORIES, size=int(rng.integers(2, 4)), replace=False))
        for _ in range(n_cards)
    ]
    mean_burst = 4.5
    burst_p = fraud_rate / (mean_burst * (1 - fraud_rate)) if fraud_rate else 0.0
    t = start_t
    txn_id = 0

    def txn(card: int, amount: float, category: str, country: str, fraud: int) -> dict:
        nonlocal txn_id
        txn_id += 1
        return {
            "txn_id": txn_id, "t": round(t, 3), "card_id": cards[card],
            "amount": round(float(max(amount, 0.5)), 2), "merchant_category": str(category),
            "country": str(country), "is_fraud": fraud,
        }

    while True:
        t += float(rng.exponential(mean_gap_s))
        card = int(rng.integers(n_cards))
        if rng.random() < burst_p:
            for _ in range(int(rng.integers(3, 7))):
                category = rng.choice(RISKY_CATEGORIES) if rng.random() < 0.8 else rng.choice(CATEGORIES)
                country = rng.choice(COUNTRIES) if rng.random() < 0.5 else COUNTRIES[home[card]]
                yield txn(card, typical[card] * rng.uniform(3, 15), category, country, 1)
                t += float(rng.uniform(1, 15))
            continue
        category = rng.choice(favourites[card]) if rng.random() < 0.9 else rng.choice(CATEGORIES)
        country = COUNTRIES[home[card]] if rng.random() < 0.97 else rng.choice(COUNTRIES)
        yield txn(card, typical[card] * rng.lognormal(0, 0.5), category, country, 0)
        if rng.random() < 0.05:  # people do pay twice in a row sometimes: not every burst is fraud
            t += float(rng.uniform(5, 60))
            yield txn(card, typical[card] * rng.lognormal(0, 0.5), category, country, 0)


def generate_transactions(n: int = 10_000, *, seed: int = 0, **kwargs: Any):
    """Return ``n`` synthetic card transactions as a pandas DataFrame, the same for the same seed.

    Args:
        n: how many transactions.
        seed: the random seed.
        **kwargs: passed to :func:`iter_transactions` (n_cards, fraud_rate, start_t, mean_gap_s).

    Returns:
        A DataFrame with columns txn_id, t, card_id, amount, merchant_category, country,
        is_fraud (1 for fraud), in time order.

    Example:
        >>> df = generate_transactions(5000, seed=1)
        >>> df.is_fraud.mean()      # about 0.03
    """
    import itertools

    import pandas as pd

    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}.")
    rows = list(itertools.islice(iter_transactions(seed=seed, **kwargs), n))
    columns = ["txn_id", "t", "card_id", "amount", "merchant_category", "country", "is_fraud"]
    return pd.DataFrame(rows, columns=columns)


def _records(transactions: Any) -> Iterable[Mapping]:
    if hasattr(transactions, "to_dict"):  # a DataFrame
        return transactions.to_dict("records")
    return transactions


# --------------------------------------------------------------------------- features


@dataclass
class _CardHistory:
    recent: deque = field(default_factory=deque)  # (t, amount) of the last 5 minutes
    n: int = 0
    amount_total: float = 0.0
    categories: set = field(default_factory=set)
    last_t: float | None = None


class FeatureTracker:
    """Computes each card's real-time features, one transaction at a time, in memory.

    The writer is the only process that updates features, so it keeps the sliding windows
    here and writes the result; Redis holds a copy that readers see.

    Example:
        >>> tracker = FeatureTracker()
        >>> tracker.update({"card_id": "c1", "t": 0, "amount": 20, "merchant_category": "fuel"})
        {'txn_count_1m': 1, ...}
    """

    def __init__(self) -> None:
        self.cards: dict[str, _CardHistory] = {}
        self.seq = 0

    def update(self, txn: Mapping, updated_at: float | None = None) -> dict:
        """Apply one transaction and return the card's new feature hash (a dict of numbers/str)."""
        t = float(txn["t"])
        amount = float(txn["amount"])
        category = str(txn["merchant_category"])
        card = self.cards.setdefault(str(txn["card_id"]), _CardHistory())
        gap = NO_HISTORY_GAP_S if card.last_t is None else max(0.0, t - card.last_t)
        novelty = int(category not in card.categories)
        card.recent.append((t, amount))
        while card.recent and card.recent[0][0] <= t - WINDOW_5M_S:
            card.recent.popleft()
        card.n += 1
        card.amount_total += amount
        card.categories.add(category)
        card.last_t = t
        self.seq += 1
        return {
            "txn_count_1m": sum(1 for ts, _ in card.recent if ts > t - WINDOW_1M_S),
            "txn_count_5m": len(card.recent),
            "amount_sum_5m": round(sum(a for _, a in card.recent), 2),
            "amount_mean": round(card.amount_total / card.n, 4),
            "seconds_since_last": round(gap, 3),
            "merchant_category_novelty": novelty,
            "categories": ",".join(sorted(card.categories)),
            "n_txns": card.n,
            "last_t": t,
            "last_amount": amount,
            "updated_at": round(time.time() if updated_at is None else updated_at, 6),
            "seq": self.seq,
        }


FEATURE_NAMES = (
    "log_amount", "amount_ratio", "txn_count_1m", "txn_count_5m", "log_amount_sum_5m",
    "log_seconds_since_last", "category_is_new", "log_n_txns",
)


def model_inputs(features: Mapping | None, amount: float, merchant_category: str, t: float) -> list[float]:
    """Turn a card's stored features and a new transaction into the model's input vector.

    The stored features describe the card just after its previous transaction; the vector
    describes the new one against them. The same function serves training and scoring,
    so the model sees at scoring time exactly what it learnt from.

    Args:
        features: the card's hash as read from Redis (strings are fine), or None for a
            card with no features (the transaction alone is then scored).
        amount, merchant_category, t: the new transaction.

    Returns:
        One float per name in :data:`FEATURE_NAMES`.
    """
    if not features:
        mean, c1, c5, sum5, gap, cats, n = TYPICAL_AMOUNT, 0, 0, 0.0, NO_HISTORY_GAP_S, set(), 0
    else:
        last_t = float(features.get("last_t", t))
        gap = min(max(0.0, t - last_t), NO_HISTORY_GAP_S)
        # The stored windows end at last_t; a window that has passed since holds nothing now.
        c1 = float(features.get("txn_count_1m", 0)) if gap < WINDOW_1M_S else 0.0
        c5 = float(features.get("txn_count_5m", 0)) if gap < WINDOW_5M_S else 0.0
        sum5 = float(features.get("amount_sum_5m", 0)) if gap < WINDOW_5M_S else 0.0
        mean = float(features.get("amount_mean", TYPICAL_AMOUNT)) or TYPICAL_AMOUNT
        cats = set(str(features.get("categories", "")).split(","))
        n = float(features.get("n_txns", 0))
    return [
        math.log1p(amount),
        min(amount / mean, 50.0),
        c1,
        c5,
        math.log1p(sum5),
        math.log1p(gap),
        float(merchant_category not in cats),
        math.log1p(n),
    ]


def write_features(client: Any, transactions: Any, *, tracker: FeatureTracker | None = None,
                   shift_to_now: bool = True, batch: int = 200) -> int:
    """Compute features for ``transactions`` and write them to Redis, pipelined.

    For tests and notebooks; the long-running writer (``python -m hadrlab.fraud writer``)
    does the same one transaction at a time, through Sentinel.

    Args:
        client: a ``redis.Redis`` client (e.g. ``node.client()`` or ``fs.master_for()``).
        transactions: a DataFrame from :func:`generate_transactions` or an iterable of dicts
            with card_id, t, amount, merchant_category.
        tracker: keeps the windows between calls; a new one by default.
        shift_to_now: move every ``t`` so that the last transaction happened now, so that
            "seconds since last" means something to a live scorer.
        batch: transactions per pipeline round trip.

    Returns:
        The number of transactions written.
    """
    rows = list(_records(transactions))
    if not rows:
        return 0
    tracker = tracker or FeatureTracker()
    shift = time.time() - max(float(r["t"]) for r in rows) if shift_to_now else 0.0
    pipe = client.pipeline(transaction=False)
    for i, row in enumerate(rows, 1):
        row = {**row, "t": float(row["t"]) + shift}
        _queue_write(pipe, row, tracker.update(row))
        if i % batch == 0:
            pipe.execute()
    pipe.execute()
    return len(rows)


def _queue_write(pipe: Any, txn: Mapping, features: Mapping) -> None:
    key = KEY_PREFIX + str(txn["card_id"])
    t = float(txn["t"])
    pipe.hset(key, mapping=features)
    pipe.zadd(key + ":txns", {f"{features['seq']}:{float(txn['amount']):.2f}": t})
    pipe.zremrangebyscore(key + ":txns", "-inf", t - WINDOW_5M_S)


def read_features(client: Any, card_id: str) -> dict:
    """Return the stored features of ``card_id`` ({} for an unknown card)."""
    return client.hgetall(KEY_PREFIX + card_id)


# --------------------------------------------------------------------------- the model


MODEL_VERSION = "fraud-v1"


@dataclass(repr=False)
class FraudModel:
    """A logistic regression on :data:`FEATURE_NAMES`, with its held-out quality."""

    estimator: Any
    holdout_auc: float
    train_s: float
    trained_on: int
    version: str = MODEL_VERSION
    from_cache: bool = False

    def score(self, inputs: list[float]) -> float:
        """Return the probability of fraud for one input vector from :func:`model_inputs`."""
        import numpy as np

        return float(self.estimator.predict_proba(np.asarray([inputs], dtype=float))[0, 1])

    def __repr__(self) -> str:
        source = "from cache" if self.from_cache else f"trained in {self.train_s:.2f} s"
        return (f"FraudModel({self.version}, {self.trained_on} transactions, {source}, "
                f"held-out AUC {self.holdout_auc:.3f})")


def labelled_inputs(n: int, seed: int):
    """Return (X, y): model inputs and fraud labels for ``n`` generated transactions."""
    import numpy as np

    tracker = FeatureTracker()
    stored: dict[str, dict] = {}
    X, y = [], []
    for txn in _records(generate_transactions(n, seed=seed)):
        X.append(model_inputs(stored.get(txn["card_id"]), txn["amount"], txn["merchant_category"], txn["t"]))
        y.append(txn["is_fraud"])
        stored[txn["card_id"]] = tracker.update(txn, updated_at=0.0)
    return np.asarray(X, dtype=float), np.asarray(y, dtype=int)


def train_fraud_model(n: int = 10_000, seed: int = 0) -> FraudModel:
    """Train the model on ``n`` generated transactions; AUC measured on another seed's."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    X, y = labelled_inputs(n, seed)
    estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    estimator.fit(X, y)
    train_s = time.perf_counter() - start
    X_held, y_held = labelled_inputs(max(2000, n // 4), seed + 1)
    auc = float(roc_auc_score(y_held, estimator.predict_proba(X_held)[:, 1]))
    return FraudModel(estimator=estimator, holdout_auc=auc, train_s=train_s, trained_on=n)


def load_fraud_model(*, retrain: bool = False) -> FraudModel:
    """Return the fraud model, from ``home_dir()/models`` if cached there, else trained now.

    The cache file's name carries the scikit-learn version and a hash of this module, so
    a changed generator or feature set retrains instead of loading a stale model.
    """
    import sklearn

    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    path = home_dir() / "models" / f"{MODEL_VERSION}-{sklearn.__version__}-{digest}.pkl"
    if path.exists() and not retrain:
        with contextlib.suppress(Exception):
            model = pickle.loads(path.read_bytes())
            model.from_cache = True
            return model
    model = train_fraud_model()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(pickle.dumps(model))
    tmp.replace(path)  # atomic: two processes training at once both end with a whole file
    return model


def decide(score: float) -> str:
    """Map a fraud score to a decision: approve below 0.5, review below 0.8, else decline."""
    return "approve" if score < 0.5 else "review" if score < 0.8 else "decline"


# --------------------------------------------------------------------------- shared env


def _child_env(env: Mapping[str, str] | None, extra: Mapping[str, str]) -> dict[str, str]:
    package_root = str(Path(__file__).resolve().parents[1])
    return {
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        # So the child finds hadrlab even from a checkout that is not installed.
        "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p),
        **{k: str(v) for k, v in (env or {}).items()},
        **{k: str(v) for k, v in extra.items()},
    }


# --------------------------------------------------------------------------- the scoring API


LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class _ApiMetrics:
    """Counters and a latency histogram for /score, rendered as Prometheus text."""

    def __init__(self) -> None:
        # (region, status). The series an SLI divides by start at 0, so that Prometheus sees the
        # first server error as an increase (a series born at 1 has no rate until its second sample).
        self.requests: Counter[tuple[str, int]] = Counter({("a", 200): 0, ("b", 200): 0, ("none", 503): 0})
        self.latency = Histogram(LATENCY_BUCKETS_S)
        self.stale_reads = 0
        self.fallbacks = 0
        self.sidecar_ok = 0

    def observe(self, region: str, status: int, seconds: float) -> None:
        self.requests[(region, status)] += 1
        self.latency.observe(seconds)

    def render(self) -> str:
        text = MetricsText()
        text.family("fraud_api_requests_total", "counter", "POST /score answers by features region and status.")
        for (region, status), n in sorted(self.requests.items()):
            text.sample("fraud_api_requests_total", n, region=region, status=status)
        text.histogram("fraud_api_score_latency_seconds", "Time to answer POST /score.", self.latency)
        text.family("fraud_api_stale_reads_total", "counter", "Feature reads older than STALE_AFTER_S.")
        text.sample("fraud_api_stale_reads_total", self.stale_reads)
        text.family("fraud_api_read_fallbacks_total", "counter", "Reads answered by the second region tried.")
        text.sample("fraud_api_read_fallbacks_total", self.fallbacks)
        text.family("fraud_api_sidecar_reachable", "gauge", "1 if the sidecar answered in the last second.")
        text.sample("fraud_api_sidecar_reachable", self.sidecar_ok)
        return text.render()


class _RegionsDown(Exception):
    """Every region failed; the message lists why, region by region."""


def create_api(env: Mapping[str, str] | None = None):
    """Build the scoring API's FastAPI app from ``env`` (default ``os.environ``)."""
    import httpx
    import redis.asyncio as aioredis
    from typing import Literal, Union

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field

    from hadrlab import apidocs
    from hadrlab.apidocs import METRICS, PrometheusText
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    env = dict(os.environ if env is None else env)
    budget_ms = env_number("LATENCY_BUDGET_MS", 50.0, env=env, above=0)
    timeout_s = env_number("REDIS_TIMEOUT_MS", 200.0, env=env, above=0) / 1000
    stale_after_s = env_number("STALE_AFTER_S", 5.0, env=env, above=0)
    sidecar_url = env.get("SIDECAR_URL", "").rstrip("/")
    password = env.get("REDIS_PASSWORD") or None
    regions: dict[str, Any] = {}
    addresses: dict[str, str] = {}
    for region, var in (("a", "REDIS_A"), ("b", "REDIS_B")):
        if env.get(var, "").strip():
            host, port = parse_address(env[var], var)
            addresses[region] = f"{host}:{port}"
            # Short timeouts, and no retry after a timeout: a dead region must cost one
            # timeout, not redis-py's default retries with back-off, so that the fallback to
            # the other region (or a clear 503) comes fast. One immediate retry after a
            # connection ERROR, though: a failover resets pooled connections of regions that
            # are alive, and a fresh connection answers at once.
            regions[region] = aioredis.Redis(
                host=host, port=port, password=password, decode_responses=True,
                socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
                health_check_interval=0,
            )
    if not regions:
        raise ValueError("REDIS_A is not set: the scoring API needs at least one region to read "
                         'features from, e.g. REDIS_A="127.0.0.1:6379".')

    metrics = _ApiMetrics()
    state: dict[str, Any] = {"model": None, "sidecar": None, "sidecar_at": 0.0, "sidecar_error": ""}

    async def load_model() -> None:
        state["model"] = await asyncio.to_thread(load_fraud_model)
        logger.info("Model ready: %r", state["model"])

    async def poll_sidecar() -> None:
        # A background poll every 100 ms keeps the answer cached <= 100 ms old without
        # putting an HTTP call on the scoring path.
        async with httpx.AsyncClient(timeout=0.25) as http:
            while True:
                try:
                    answer = (await http.get(f"{sidecar_url}/state")).json()
                    if answer.get("read_region") in regions:
                        state["sidecar"], state["sidecar_at"] = answer["read_region"], time.monotonic()
                except Exception as exc:  # the sidecar is optional: note why, keep scoring
                    state["sidecar_error"] = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(0.1)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Any):
        tasks = [asyncio.create_task(load_model())]
        if sidecar_url:
            tasks.append(asyncio.create_task(poll_sidecar()))
        yield
        for task in tasks:
            task.cancel()
        for client in regions.values():
            with contextlib.suppress(Exception):
                await client.aclose()

    app = FastAPI(title="hadrlab fraud scoring API", version="1", lifespan=lifespan,
                  description="Scores card transactions with features read from feature-store "
                              "region A or B, as the health-checking sidecar says.")

    class Transaction(BaseModel):
        # Strict: "12.5" is not an amount, nor 5 a card id; what the document says is what passes.
        model_config = ConfigDict(strict=True, json_schema_extra={
            "example": {"card_id": "card-00001", "amount": 12.5, "merchant_category": "grocery"}})
        card_id: str = Field(min_length=1, max_length=64)
        amount: float = Field(gt=0, le=1_000_000)
        merchant_category: str = Field(min_length=1, max_length=64)
        country: str | None = None
        t: float | None = Field(None, description="Epoch seconds of the transaction; default now.")

    class Score(BaseModel):
        card_id: str
        fraud_score: float = Field(ge=0, le=1)
        decision: Literal["approve", "review", "decline"]
        features_region: str = Field(description="The region the features were read from.")
        region_source: str = Field(description="Who chose the region: the sidecar, or the fallback order.")
        feature_age_s: float | None = Field(description="Age of the features; null for an unknown card.")
        features: Union[dict[str, str], str] = Field(description="The card's feature hash, as read.")
        latency_ms: float
        latency_budget_ms: float
        within_budget: bool
        model_version: str

    class InvalidTransaction(BaseModel):
        detail: str = Field(description="Every problem, then an example of a valid transaction.")
        errors: list[str] = Field(description="One entry per invalid field.")

    class RegionsDown(BaseModel):
        detail: str = Field(description="Why each region failed.")
        latency_ms: float

    class Alive(BaseModel):
        status: Literal["alive"]

    class Ready(BaseModel):
        status: Literal["ready"]
        read_order: list[str] = Field(description="The regions /score tries, in order.")
        region_source: str

    class Unready(BaseModel):
        status: Literal["unready"]
        detail: str

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"field '{where}': {err.get('msg')}")
        detail = ("The transaction is not valid: " + "; ".join(problems) + ". Send "
                  '{"card_id": "card-00001", "amount": 12.5, "merchant_category": "grocery"}.')
        metrics.observe("none", 422, 0.0)
        return JSONResponse({"detail": detail, "errors": problems}, status_code=422)

    def read_order() -> tuple[list[str], str]:
        fresh = state["sidecar"] is not None and time.monotonic() - state["sidecar_at"] < 1.0
        metrics.sidecar_ok = int(fresh)
        if fresh:
            first = state["sidecar"]
            return [first] + [r for r in regions if r != first], "sidecar"
        return sorted(regions), "fallback (sidecar unreachable)" if sidecar_url else "no sidecar"

    async def read(card_id: str) -> tuple[str, dict, int]:
        order, _ = read_order()
        reasons = []
        for i, region in enumerate(order):
            try:
                features = await regions[region].hgetall(KEY_PREFIX + card_id)
                return region, features, i
            except Exception as exc:  # timeouts and refused connections alike: try the next region
                reasons.append(f"region {region} ({addresses[region]}): {type(exc).__name__}: {exc}")
        raise _RegionsDown("; ".join(reasons))

    @app.post("/score", response_model=Score, responses={
        **apidocs.errors(400),
        422: {"model": InvalidTransaction, "description": "The transaction is not valid."},
        503: {"model": RegionsDown, "description": "No feature-store region answered: no score "
                                                   "without features."}})
    async def score(txn: Transaction) -> JSONResponse:
        """Score one transaction: fraud score, decision, and where the features came from."""
        start = time.perf_counter()
        now = time.time()
        t = txn.t if txn.t is not None else now
        try:
            region, features, tried = await read(txn.card_id)
        except _RegionsDown as exc:
            latency = time.perf_counter() - start
            metrics.observe("none", 503, latency)
            return JSONResponse(
                {"detail": f"No region could serve features for card {txn.card_id!r}: {exc}. "
                           "Both feature-store regions are down or unreachable; scoring without "
                           "features would approve fraud, so the service refuses. Check the Redis "
                           "servers (or their proxies) and the sidecar's /state.",
                 "latency_ms": round(latency * 1000, 3)},
                status_code=503,
            )
        if tried:
            metrics.fallbacks += 1
        model = state["model"]
        if model is None:
            model = state["model"] = await asyncio.to_thread(load_fraud_model)
        fraud_score = model.score(model_inputs(features or None, txn.amount, txn.merchant_category, t))
        age = round(now - float(features["updated_at"]), 3) if features.get("updated_at") else None
        if age is not None and age > stale_after_s:
            metrics.stale_reads += 1
        latency = time.perf_counter() - start
        metrics.observe(region, 200, latency)
        latency_ms = round(latency * 1000, 3)
        return JSONResponse({
            "card_id": txn.card_id,
            "fraud_score": round(fraud_score, 4),
            "decision": decide(fraud_score),
            "features_region": region,
            "region_source": read_order()[1],
            "feature_age_s": age,
            "features": features if features else "none — unknown card",
            "latency_ms": latency_ms,
            "latency_budget_ms": budget_ms,
            "within_budget": latency_ms <= budget_ms,
            "model_version": model.version,
        })

    @app.get("/healthz", response_model=Alive)
    async def healthz() -> JSONResponse:
        """Liveness: 200 while the process serves."""
        return JSONResponse({"status": "alive"})

    @app.get("/readyz", response_model=Ready,
             responses={503: {"model": Unready, "description": "The model is not loaded yet."}})
    async def readyz() -> JSONResponse:
        """Readiness: the model is loaded (Redis is not part of it: /score answers 503 then)."""
        # Ready means "this process can score": the model is loaded. Redis is NOT part of
        # readiness: if it were, a feature-store outage would take every replica out of the
        # load balancer and turn clear 503s into connection errors.
        if state["model"] is None:
            return JSONResponse({"status": "unready", "detail": "model not loaded yet"}, status_code=503)
        order, source = read_order()
        return JSONResponse({"status": "ready", "read_order": order, "region_source": source})

    @app.get("/metrics", response_class=PrometheusText, responses=METRICS)
    async def metrics_text() -> PrometheusText:
        """/score answers by region and status, latency, stale reads, fallbacks, the sidecar."""
        read_order()
        return PrometheusText(metrics.render(), media_type=CONTENT_TYPE)

    apidocs.allow_header(app)
    return app


def _serve_api() -> int:
    import uvicorn

    raw_port = os.environ.get("PORT", "").strip()
    if not raw_port.isdigit():
        logger.error("PORT is not set or not a number (got %r): the scoring API needs a port, e.g. "
                     "`PORT=8000 REDIS_A=127.0.0.1:6379 python -m hadrlab.fraud api`.", raw_port)
        return 2
    port = int(raw_port)
    try:
        app = create_api()
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    logger.info("Fraud API on %s:%d: REDIS_A=%s REDIS_B=%s SIDECAR_URL=%s budget %s ms.",
                HOST, port, os.environ.get("REDIS_A"), os.environ.get("REDIS_B"),
                os.environ.get("SIDECAR_URL") or "(none)", os.environ.get("LATENCY_BUDGET_MS", "50"))
    uvicorn.Server(uvicorn.Config(app, host=os.environ.get("HOST") or HOST, port=port,
                                  access_log=False, log_config=None, log_level="warning")).run()
    return 0


# --------------------------------------------------------------------------- the writer


def _region_of(address: tuple[str, int] | None, env: Mapping[str, str]) -> str:
    if address is None:
        return "?"
    known = {region: parse_address(env[var], var) for region, var in (("a", "REDIS_A"), ("b", "REDIS_B"))
             if env.get(var)}
    # Host and port first: on a cluster both regions listen on 6379 under different names.
    for region, (host, port) in known.items():
        if (host, port) == (address[0], int(address[1])):
            return region
    by_port = [region for region, (_, port) in known.items() if port == int(address[1])]
    return by_port[0] if len(by_port) == 1 else f"{address[0]}:{address[1]}"


def _writer_paths(name: str) -> tuple[Path, Path]:
    folder = home_dir() / "fraud"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}-stats.json", folder / f"{name}-writes.csv"


def run_writer(env: Mapping[str, str] | None = None, *, max_writes: int | None = None) -> dict:
    """Write features at WRITE_RATE_TPS until SIGTERM (or ``max_writes``); return the stats.

    Through Sentinel when SENTINELS is set: ``Sentinel.master_for`` finds the current
    primary and, after a failover, the new one; redis-py's ``Retry`` with exponential
    back-off rides over the few hundred ms of a switch. Without SENTINELS it writes to
    REDIS_A directly and does not survive that region's loss.
    """
    import redis
    from redis.backoff import ExponentialBackoff, NoBackoff
    from redis.retry import Retry
    from redis.sentinel import Sentinel

    env = dict(os.environ if env is None else env)
    rate = env_number("WRITE_RATE_TPS", 50.0, env=env, above=0)
    seed = int(env.get("SEED") or 0)
    n_cards = int(env.get("N_CARDS") or 200)
    name = env.get("WRITER_NAME") or "feature-writer"
    default_stats, default_log = _writer_paths(name)
    stats_path = Path(env.get("WRITER_STATS") or default_stats)
    log_path = Path(env.get("WRITER_LOG") or default_log)
    password = env.get("REDIS_PASSWORD") or None
    options = dict(password=password, socket_connect_timeout=0.5, socket_timeout=0.5,
                   retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), 3),
                   retry_on_error=[redis.ConnectionError, redis.TimeoutError])
    sentinels = [s for s in env.get("SENTINELS", "").split(",") if s.strip()]
    master_name = env.get("SENTINEL_MASTER") or "features"
    if sentinels:
        # The Sentinels share the Redis password. No retries when asking them: Sentinel
        # itself moves on to the next Sentinel, and the master client's Retry covers the rest.
        sentinel = Sentinel([parse_address(s, "SENTINELS") for s in sentinels],
                            sentinel_kwargs={"password": password, "socket_timeout": 0.5,
                                             "socket_connect_timeout": 0.5, "retry": Retry(NoBackoff(), 0)},
                            **options)
        client = sentinel.master_for(master_name, **options)

        def where() -> str:
            # The address the pool last connected to: where the writes actually went
            # (asking the Sentinels again could name a primary we have not used yet).
            return _region_of(getattr(client.connection_pool, "master_address", None), env)
        mode = f"through Sentinel {','.join(sentinels)} (master {master_name!r})"
    else:
        if not env.get("REDIS_A"):
            raise ValueError("Neither SENTINELS nor REDIS_A is set: the writer has nowhere to write.")
        host, port = parse_address(env["REDIS_A"], "REDIS_A")
        client = redis.Redis(host=host, port=port, **options)

        def where() -> str:
            return "a"
        mode = f"directly to REDIS_A {host}:{port} (SENTINELS unset: no failover)"
    logger.info("Feature writer %s: %g writes/s, %d cards, seed %d, %s.", name, rate, n_cards, seed, mode)

    stop = {"now": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["now"] = True

    if max_writes is None:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    stats: dict[str, Any] = {"name": name, "mode": mode, "rate_tps": rate, "writes": 0, "errors": 0,
                             "by_region": {}, "last_region": None, "last_error": "", "last_seq": 0,
                             "started_at": time.time(), "updated_at": time.time()}
    tracker = FeatureTracker()
    stream = iter_transactions(seed=seed, n_cards=n_cards)
    start = time.monotonic()
    next_stats = 0.0
    # "-": the rows go to stdout, which a cluster keeps as the pod's log.
    with (contextlib.nullcontext(sys.stdout) if str(log_path) == "-" else open(log_path, "w", newline="")) as fh:
        out = csv.writer(fh)
        out.writerow(["t", "seq", "card_id", "ok", "region", "latency_ms", "error"])
        i = 0
        while not stop["now"] and (max_writes is None or i < max_writes):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            i += 1
            txn = {**next(stream), "t": time.time()}
            features = tracker.update(txn)
            t0 = time.perf_counter()
            error = ""
            try:
                pipe = client.pipeline(transaction=False)
                _queue_write(pipe, txn, features)
                pipe.execute()
            except Exception as exc:  # keep writing: an outage is what the lab measures
                error = f"{type(exc).__name__}: {exc}"
            latency_ms = (time.perf_counter() - t0) * 1000
            region = where()
            if error:
                stats["errors"] += 1
                if error != stats["last_error"]:
                    logger.warning("Write seq %d failed (region %s): %s", features["seq"], region, error)
                stats["last_error"] = error
            else:
                stats["writes"] += 1
                stats["by_region"][region] = stats["by_region"].get(region, 0) + 1
                if region != stats["last_region"]:
                    logger.info("Writing to region %s (seq %d).", region, features["seq"])
                stats["last_region"] = region
                stats["last_seq"] = features["seq"]
            out.writerow([f"{txn['t']:.6f}", features["seq"], txn["card_id"], int(not error), region,
                          f"{latency_ms:.3f}", error])
            if time.monotonic() >= next_stats:
                fh.flush()
                _write_json(stats_path, {**stats, "updated_at": time.time()})
                next_stats = time.monotonic() + 0.5
    stats["updated_at"] = time.time()
    _write_json(stats_path, stats)
    logger.info("Feature writer stopped: %d writes, %d errors, by region %s.",
                stats["writes"], stats["errors"], stats["by_region"])
    return stats


def _write_json(path: Path, data: Mapping) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def writer_stats(name: str = "feature-writer") -> dict:
    """Return the latest stats of the writer called ``name``: writes, errors, by_region, ..."""
    path = _writer_paths(name)[0]
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"name": name, "writes": 0, "errors": 0, "by_region": {}, "detail": f"no stats yet at {path}"}


def writer_timeline(name: Any = "feature-writer"):
    """Return the writer's per-write log as a DataFrame: t, seq, card_id, ok, region, latency_ms, error.

    Args:
        name: the local writer's name or its Child, or an object with ``.timeline()`` (the
            cluster's writer, whose rows are in its pod's log): ``writer=writer`` is then the
            same notebook line on both backends.
    """
    import pandas as pd

    if callable(getattr(name, "timeline", None)):
        return name.timeline()
    name = getattr(name, "name", name)
    return pd.read_csv(_writer_paths(name)[1], keep_default_na=False)


# --------------------------------------------------------------------------- helpers


def start_fraud_api(
    env: Mapping[str, str],
    *,
    name: str = "fraud-api",
    port: int | None = None,
    sidecar_url: str | None = None,
    latency_budget_ms: float = 50,
    redis_timeout_ms: float = 200,
    timeout_s: float = 30.0,
) -> Child:
    """Start the scoring API as a child process and wait until it is ready (model loaded).

    Args:
        env: the connection variables, e.g. ``fs.connection_env()`` (REDIS_A, REDIS_B,
            REDIS_PASSWORD, ...); anything else in it reaches the child too.
        name: the child's name in logs and the registry.
        port: the port; a free one by default.
        sidecar_url: SIDECAR_URL, e.g. ``sidecar.url``; None reads without a sidecar
            (region A first, then B).
        latency_budget_ms: LATENCY_BUDGET_MS.
        redis_timeout_ms: REDIS_TIMEOUT_MS, the connect and read timeout of each Redis call.
        timeout_s: how long to wait for /readyz.

    Returns:
        The running :class:`~hadrlab.processes.Child`; POST ``child.url + "/score"``.

    Example:
        >>> api = start_fraud_api(fs.connection_env(), sidecar_url=sidecar.url)
        >>> httpx.post(api.url + "/score", json={"card_id": "card-00001", "amount": 30,
        ...            "merchant_category": "grocery"}).json()
    """
    port = port or find_free_port()
    extra = {"PORT": port, "LATENCY_BUDGET_MS": latency_budget_ms, "REDIS_TIMEOUT_MS": redis_timeout_ms}
    if sidecar_url:
        extra["SIDECAR_URL"] = sidecar_url
    child_env = _child_env(env, extra)
    return start_process(name, [sys.executable, "-m", "hadrlab.fraud", "api"], port=port, env=child_env,
                         ready=lambda child: wait_for_http(child, "/readyz", timeout_s=timeout_s))


def start_feature_writer(
    env: Mapping[str, str],
    *,
    name: str = "feature-writer",
    rate_tps: float = 50,
    n_cards: int = 200,
    seed: int = 0,
    timeout_s: float = 20.0,
) -> Child:
    """Start the feature writer as a child process and wait for its first successful write.

    Args:
        env: the connection variables, e.g. ``fs.connection_env()``: with SENTINELS it
            writes through Sentinel; without, directly to REDIS_A.
        name: the child's name; also names its stats (:func:`writer_stats`) and per-write
            log (:func:`writer_timeline`).
        rate_tps: WRITE_RATE_TPS, feature updates per second.
        n_cards: how many cards the generated stream spends on.
        seed: the generator's seed.
        timeout_s: how long to wait for the first write.

    Returns:
        The running :class:`~hadrlab.processes.Child`.
    """
    stats_path, log_path = _writer_paths(name)
    for path in (stats_path, log_path):
        path.unlink(missing_ok=True)
    child_env = _child_env(env, {"WRITE_RATE_TPS": rate_tps, "N_CARDS": n_cards, "SEED": seed,
                                 "WRITER_NAME": name, "WRITER_STATS": stats_path, "WRITER_LOG": log_path})

    def ready(child: Child) -> None:
        wait_until(lambda: writer_stats(name).get("writes", 0) > 0, timeout_s=timeout_s,
                   describe=f"a first successful write recorded in {stats_path}", child=child)

    return start_process(name, [sys.executable, "-m", "hadrlab.fraud", "writer"], env=child_env, ready=ready)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m hadrlab.fraud api|writer``."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, datefmt="%H:%M:%S",
                        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s")
    if argv[:1] == ["api"]:
        return _serve_api()
    if argv[:1] == ["writer"]:
        try:
            run_writer()
        except ValueError as exc:
            logger.error("%s", exc)
            return 2
        return 0
    print("usage: python -m hadrlab.fraud api|writer   (configuration in environment variables; "
          "see the module docstring)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
