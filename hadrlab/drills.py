"""DR drills of Lab 02: one fault on the feature store, under load, seen from every side.

A drill runs for ``duration_s`` seconds and records, on one wall-clock time axis:

- locust's load against the scoring API's ``POST /score`` (the request timeline);
- a *read probe*: a thread that scores real transactions every few ms and keeps, for each
  answer, the region that served the features (``features_region``), whether it met the
  latency budget, and the sequence number of the features it saw;
- the feature writer's log (every write, acknowledged or not, and the region it landed in);
- Sentinel's events, the sidecar's decisions, the alerts the receiver got;
- optionally the replication lag, in bytes and in milliseconds, sampled a few times a second.

From these, :class:`DrillResult` derives the DR numbers of the drill: read RTO, write RTO,
stale reads on the secondary, alerts. Example::

    drill = run_drill("kill", fs=fs, api=api, sidecar=sidecar, receiver=receiver,
                      fault=fs.kill_primary, duration_s=9, fault_at_s=2)
    drill.read_rto_s, drill.write_rto_s, drill.stale_read_pct
    hadrlab.plot_timeline(drill.reads, fault_t=drill.fault_t, events=drill.events)

Also :func:`write_policy_class`, which hands a read-failover policy class written in a
notebook cell to the sidecar process.
"""

from __future__ import annotations

import ast
import contextlib
import html
import inspect
import json
import linecache
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hadrlab.featurestore import sample_lag

__all__ = [
    "cards_behind",
    "read_switch_times",
    "wait_for_steady_state",
    "DrillResult",
    "run_drill",
    "mark_stale_reads",
    "sample_lag",
    "write_policy_class",
    "sidecar_decisions",
    "fail_back",
    "summary_table",
    "plot_lag",
    "plot_reads",
    "plot_dr_summary",
]

READ_COLUMNS = ["t_start", "t_end", "latency_ms", "ok", "status", "error", "replica",
                "card_id", "seq", "within_budget", "feature_age_s"]
# Sentinel events worth a line on a timeline; the others are steps of the same failover.
KEY_EVENTS = ("+sdown", "+odown", "+switch-master", "+convert-to-slave", "-sdown")
FAULT_KINDS = ("kill", "partition", "heal", "restart", "converted", "failback")


# --------------------------------------------------------------------------- result


@dataclass(repr=False)
class DrillResult:
    """Everything one drill recorded, and the DR numbers derived from it."""

    name: str
    started_at: float
    ended_at: float
    fault_t: float | None
    restore_t: float | None
    old_primary: str
    new_primary: str
    reads: Any  # DataFrame READ_COLUMNS (+ stale, staleness_s); "replica" is the features region
    writes: Any  # the writer's log: t, seq, card_id, ok, region, latency_ms, error (+ t_ack)
    events: Any  # DataFrame t, kind, detail, source: faults, Sentinel, sidecar decisions
    decisions: list  # the sidecar's read switches during the drill
    alerts: Any  # DataFrame t, status, alertname, region, summary
    lag: Any = None  # DataFrame t, lag_bytes, lag_ms (sample_lag=True)
    load: Any = field(default=None)  # the locust LoadResult
    policy_errors: int = 0  # sidecar rounds in which the read policy raised or answered no region
    policy_error: str = ""  # the last such error, e.g. "NotImplementedError: ..."
    start_state: str = ""  # the steady state the drill verified before its load started
    notes: list = field(default_factory=list)  # what the drill saw that it was not meant to

    # -- reads ----------------------------------------------------------------------

    @property
    def read_rto_s(self) -> float | None:
        """Fault until the first read served from the other region within the latency budget.

        None without a fault, or when reads never moved (they did not need to, or never did).
        """
        if self.fault_t is None or not len(self.reads) or self._reads_moved_before_fault():
            return None
        r = self.reads
        moved = r[(r["t_start"] >= self.fault_t) & r["ok"] & (r["replica"] != self.old_primary)
                  & r["within_budget"]]
        return None if moved.empty else float(moved["t_end"].min() - self.fault_t)

    def _reads_moved_before_fault(self) -> str:
        """The region that served every read answered before the fault, if not the primary; else ""."""
        r = self.reads
        before = r[(r["t_end"] < self.fault_t) & r["ok"]] if len(r) and self.fault_t is not None else r.iloc[0:0]
        if len(before) and (before["replica"] != self.old_primary).all():
            return str(before["replica"].iloc[-1])
        return ""

    @property
    def read_rto_problem(self) -> str:
        """Why :attr:`read_rto_s` is None, with what to change; ``""`` when it is a number."""
        if self.read_rto_s is not None:
            return ""
        if self.fault_t is None:
            return f"drill {self.name!r} injected no fault, so there is no read RTO to measure"
        r = self.reads
        if elsewhere := self._reads_moved_before_fault():
            return (f"reads were already served by region {elsewhere} before the fault, "
                    f"so moving them away from region {self.old_primary} could not be observed")
        after = r[r["t_start"] >= self.fault_t] if len(r) else r
        if not len(after):
            return "the read probe recorded no answer after the fault: the drill ended too soon after it"
        if (after["ok"] & (after["replica"] != self.old_primary)).any():
            return ("reads moved to the other region but none met the latency budget: the other region "
                    "is slow too, or the budget is too tight")
        lasted = (self.restore_t or self.ended_at) - self.fault_t
        what = "the fault lasted" if self.restore_t is not None else "the drill watched after the fault"
        return (f"reads never left region {self.old_primary}: {what} {lasted:.1f} s, which is less than the "
                f"read policy needs to move them (consecutive bad checks x the check round), or the policy "
                f"did not count the checks as bad; lengthen the fault (DRILL_S) or shorten the policy's streak")

    @property
    def reads_on_secondary(self) -> int:
        return int((self.reads["replica"] == "b").sum()) if len(self.reads) else 0

    @property
    def stale_read_pct(self) -> float | None:
        """Share of the successful reads that missed an acknowledged write, in %."""
        served = self.reads[self.reads["ok"]] if len(self.reads) else self.reads
        if not len(served):
            return None
        return round(100.0 * float(served["stale"].mean()), 2)

    @property
    def stale_regions(self) -> str:
        """The regions that served the stale reads, e.g. "a" (empty when none was stale)."""
        if not len(self.reads):
            return ""
        return ",".join(sorted(set(self.reads.loc[self.reads["stale"], "replica"])))

    @property
    def staleness_max_s(self) -> float | None:
        """At the worst stale read: how long the first write it missed had been acknowledged."""
        stale = self.reads[self.reads["stale"]] if len(self.reads) else self.reads
        return round(float(stale["staleness_s"].max()), 3) if len(stale) else None

    @property
    def failed_reads(self) -> int:
        return int((~self.reads["ok"]).sum()) if len(self.reads) else 0

    # -- writes ---------------------------------------------------------------------

    @property
    def write_rto_s(self) -> float | None:
        """Fault until the first write acknowledged by a primary in the other region."""
        if self.fault_t is None or self.new_primary == self.old_primary or not len(self.writes):
            return None
        w = self.writes
        acked = w[(w["t"] >= self.fault_t - 1.0) & (w["ok"] == 1) & (w["region"] == self.new_primary)
                  & (w["t_ack"] >= self.fault_t)]
        return None if acked.empty else float(acked["t_ack"].min() - self.fault_t)

    @property
    def failed_writes(self) -> int:
        return int((self.writes["ok"] == 0).sum()) if len(self.writes) else 0

    # -- views ----------------------------------------------------------------------

    def signals(self):
        """Sentinel's and the sidecar's events only (no fault marks): for ``plot_timeline(events=)``."""
        e = self.events
        return e[(e["source"] != "drill") & ~e["kind"].isin(FAULT_KINDS)].reset_index(drop=True)

    def switches(self) -> int:
        """How many times the sidecar moved reads during the drill."""
        return len(self.decisions)

    def failover_steps(self):
        """Where a failover's time went: Sentinel's steps and the writer's, in seconds from the fault.

        Returns:
            A Series indexed by step: Sentinel's first ``+sdown`` (the primary silent for
            down-after), ``+odown`` (a quorum agrees), ``+switch-master`` (the replica
            promoted and announced); the writer's longest failed write (how long it was stuck
            on the old primary before trying again), the start of its first write that the
            new primary acknowledged, and that write's acknowledgement (the write RTO).
        """
        import pandas as pd

        steps: dict[str, float | None] = {"+sdown": None, "+odown": None, "+switch-master": None,
                                          "writer: longest failed write (s)": None,
                                          "writer: first write to the new primary sent": None,
                                          "writer: ... and acknowledged (write RTO)": None}
        if self.fault_t is None:
            return pd.Series(steps, dtype=object, name=self.name)
        e = self.events
        for kind in ("+sdown", "+odown", "+switch-master"):
            times = e.loc[(e["kind"] == kind) & (e["t"] >= self.fault_t), "t"]
            steps[kind] = None if times.empty else round(float(times.min() - self.fault_t), 2)
        w = self.writes
        if len(w):
            after = w[w["t_ack"] >= self.fault_t]
            failed = after[after["ok"] == 0]
            if len(failed):
                steps["writer: longest failed write (s)"] = round(float(failed["latency_ms"].max()) / 1000, 2)
            acked = after[(after["ok"] == 1) & (after["region"] == self.new_primary)]
            if self.new_primary != self.old_primary and len(acked):
                first = acked.loc[acked["t_ack"].idxmin()]
                steps["writer: first write to the new primary sent"] = round(float(first["t"] - self.fault_t), 2)
                steps["writer: ... and acknowledged (write RTO)"] = round(float(first["t_ack"] - self.fault_t), 2)
        return pd.Series(steps, dtype=object, name=self.name)

    def policy_hint(self, hint: str, *, read_rto: bool = False) -> str:
        """``hint``, preceded by what went wrong in the drill itself, most basic first.

        A policy that raises leaves reads where they are: a drill where reads should stay
        put would then pass without the policy having decided anything; that comes first.
        Then the drill's :attr:`notes` (an unexpected failover, say), and with ``read_rto``
        why no read RTO could be measured.
        """
        if self.policy_errors:
            return (f"the sidecar's read policy failed in {self.policy_errors} check rounds of this drill "
                    f"({self.policy_error}), so reads stayed where they were without any decision: finish "
                    f"ReadFailoverPolicy.decide (Exercise 2), re-run its cells and the cell that starts the "
                    f"sidecar, then this drill")
        first = list(self.notes) + ([self.read_rto_problem] if read_rto and self.read_rto_problem else [])
        return "; ".join(first + [hint])

    def alerts_after_fault(self):
        """The alerts, with the seconds from the fault (or the drill start) to their arrival."""
        table = self.alerts.copy()
        origin = self.fault_t if self.fault_t is not None else self.started_at
        table.insert(0, "after_s", (table["t"] - origin).round(2))
        return table.drop(columns=["t"]).reset_index(drop=True)

    def as_row(self) -> dict:
        def r(v: float | None, n: int = 2) -> float | None:
            return None if v is None else round(v, n)

        lag_ms = None
        if self.lag is not None and len(self.lag):
            lag_ms = r(float(self.lag["lag_ms"].quantile(0.99)), 1)
        return {
            "drill": self.name,
            "read_rto_s": r(self.read_rto_s),
            "write_rto_s": r(self.write_rto_s),
            "read_switches": self.switches(),
            "failed_reads": self.failed_reads,
            "failed_writes": self.failed_writes,
            "reads_on_b": self.reads_on_secondary,
            "stale_reads_pct": self.stale_read_pct,
            "stale_from": self.stale_regions or None,
            "staleness_max_s": self.staleness_max_s,
            "alerts": len(self.alerts),
            "primary": f"{self.old_primary}->{self.new_primary}" if self.new_primary != self.old_primary
            else self.old_primary,
            # Only when there were some: a healthy drill's row stays as it was.
            **({"policy_errors": f"{self.policy_errors} ({self.policy_error})"} if self.policy_errors else {}),
        }

    def __repr__(self) -> str:
        row = self.as_row()
        text = ", ".join(f"{k}={v}" for k, v in row.items() if k != "drill" and v is not None)
        extra = "".join(f"\n  note: {n}" for n in self.notes)
        start = f"\n  started from {self.start_state}" if self.start_state else ""
        return f"DrillResult({self.name!r}: {text}){start}{extra}"

    def _repr_html_(self) -> str:
        row = self.as_row()
        head = "".join(f"<th>{html.escape(k)}</th>" for k in row)
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values())
        lines = ([f"<p>Started from {html.escape(self.start_state)}.</p>"] if self.start_state else [])
        lines += [f"<p><b>Note:</b> {html.escape(n)}</p>" for n in self.notes]
        return f"<table><tr>{head}</tr><tr>{cells}</tr></table>" + "".join(lines)


# --------------------------------------------------------------------------- stale reads


def mark_stale_reads(reads: Any, writes: Any) -> Any:
    """Add ``stale`` and ``staleness_s`` to a read timeline, from the writer's log.

    A read of card C is *stale* when it returned features with sequence number ``s`` while
    a newer write of C (sequence > ``s``) had already been acknowledged to the writer when
    the read started. ``staleness_s`` is how long that first missed write had been
    acknowledged: how far behind the truth the reader was.

    Args:
        reads: DataFrame with t_start, card_id, seq (the features' sequence number, NaN if
            none), ok.
        writes: the writer's log with t, seq, card_id, ok, latency_ms.

    Returns:
        A copy of ``reads`` with the two columns (False / 0.0 where not stale).
    """
    import numpy as np
    import pandas as pd

    out = reads.copy()
    out["stale"] = False
    out["staleness_s"] = 0.0
    if not len(out) or not len(writes):
        return out
    acked = writes[writes["ok"] == 1][["card_id", "seq", "t", "latency_ms"]].copy()
    acked["t_ack"] = acked["t"] + acked["latency_ms"].astype(float) / 1000
    acked = acked.sort_values("seq")
    seen = out[out["ok"] & out["seq"].notna()][["card_id", "seq", "t_start"]].copy()
    seen["next_seq"] = seen["seq"].astype(float) + 1
    seen = seen.reset_index().sort_values("next_seq")
    acked["next_seq"] = acked["seq"].astype(float)
    # For each read, the first acknowledged write of the same card newer than what it saw.
    first_missed = pd.merge_asof(seen, acked[["card_id", "next_seq", "t_ack"]], on="next_seq",
                                 by="card_id", direction="forward")
    missed = first_missed["t_ack"].notna() & (first_missed["t_ack"] <= first_missed["t_start"])
    idx = first_missed.loc[missed, "index"].to_numpy()
    out.loc[idx, "stale"] = True
    out.loc[idx, "staleness_s"] = np.round((first_missed.loc[missed, "t_start"]
                                            - first_missed.loc[missed, "t_ack"]).to_numpy(), 4)
    return out


# --------------------------------------------------------------------------- samplers


class _ReadProbe(threading.Thread):
    """Scores transactions one after the other, every ``interval_s``, and logs each answer."""

    def __init__(self, url: str, transactions: list[dict], interval_s: float) -> None:
        super().__init__(name="read-probe", daemon=True)
        self.url = url.rstrip("/") + "/score"
        self.transactions = transactions
        self.interval_s = interval_s
        self.rows: list[dict] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        import httpx

        with httpx.Client(timeout=2.0) as http:
            i = 0
            while not self.stop_event.is_set():
                txn = self.transactions[i % len(self.transactions)]
                i += 1
                body = {k: txn[k] for k in ("card_id", "amount", "merchant_category")}
                start = time.time()
                row = {"t_start": start, "card_id": body["card_id"], "ok": False, "status": 0, "error": "",
                       "replica": "", "seq": float("nan"), "within_budget": False, "feature_age_s": None}
                try:
                    answer = http.post(self.url, json=body)
                    row["status"] = answer.status_code
                    data = answer.json()
                    row["ok"] = answer.status_code == 200
                    if row["ok"]:
                        features = data.get("features")
                        row["replica"] = data.get("features_region", "")
                        row["within_budget"] = bool(data.get("within_budget"))
                        row["feature_age_s"] = data.get("feature_age_s")
                        if isinstance(features, dict) and "seq" in features:
                            row["seq"] = float(features["seq"])
                    else:
                        row["error"] = f"HTTP {answer.status_code}"
                except Exception as exc:  # a failed read is data, not a crash of the drill
                    row["error"] = type(exc).__name__
                end = time.time()
                row["t_end"], row["latency_ms"] = end, (end - start) * 1000
                self.rows.append(row)
                self.stop_event.wait(max(0.0, self.interval_s - (end - start)))


class _LagSampler(threading.Thread):
    """Keeps the rows of the store's own lag sampler (``fs.start_lag_sampler``) while a drill runs.

    The store decides how to measure: the local store samples its servers directly; the
    cluster's store runs a probe Job next to the replica and reads its rows from the pod log.
    """

    def __init__(self, fs: Any, interval_s: float) -> None:
        super().__init__(name="lag-sampler", daemon=True)
        self.fs, self.interval_s = fs, interval_s
        self.rows: list[dict] = []
        self.error = ""
        self.stop_event = threading.Event()

    def run(self) -> None:
        try:
            sampler = self.fs.start_lag_sampler(interval_ms=self.interval_s * 1000)
        except Exception as exc:  # no lag rows is data too; the drill itself goes on
            self.error = f"{type(exc).__name__}: {exc}"
            return
        try:
            while not self.stop_event.wait(0.5):
                with contextlib.suppress(Exception):
                    self.rows = sampler.samples()
        finally:
            self.rows = sampler.stop()


# --------------------------------------------------------------------------- sidecar


def _get_json(url: str, timeout_s: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return json.loads(resp.read())


def _policy_errors(sidecar: Any) -> tuple[int, str]:
    """(policy errors so far, the last one) from the sidecar's /state; (0, "") if it cannot say."""
    with contextlib.suppress(Exception):
        errors = _get_json(f"{sidecar.url.rstrip('/')}/state").get("policy_errors") or {}
        return int(errors.get("count", 0)), str((errors.get("last") or {}).get("error", ""))
    return 0, ""


def sidecar_decisions(sidecar: Any, since: float = 0.0) -> list[dict]:
    """The sidecar's read switches after ``since``: ``[{"t", "from", "to", "reason"}]``."""
    base = sidecar if isinstance(sidecar, str) else sidecar.url
    return [d for d in _get_json(f"{base.rstrip('/')}/state").get("decisions", []) if d["t"] >= since]


def write_policy_class(cls: type, *, module: str = "learner_policy") -> str:
    """Hand a policy class written in a notebook cell to the sidecar process.

    The sidecar is another process: it imports the class from a module. This finds the
    class's source (in a notebook, from the cell that defined it) and saves it with
    :func:`hadrlab.sidecar.write_policy_module`. The class must be self-contained: import
    what it needs inside the class's module source, not elsewhere in the notebook.

    Args:
        cls: the class, e.g. ``ReadFailoverPolicy``.
        module: the module name to write.

    Returns:
        The ``"module:ClassName"`` spec for ``start_sidecar(policy=...)``.

    Raises:
        ValueError: the class's source cannot be found (define it in a cell of its own).
    """
    from hadrlab.sidecar import write_policy_module

    source = None
    with contextlib.suppress(OSError, TypeError):
        source = inspect.getsource(cls)
    if source is None:
        # In a notebook, the class's module has no file; its methods' code still names the
        # cell, whose text IPython keeps in linecache.
        for member in vars(cls).values():
            code = getattr(member, "__code__", None)
            if code is None:
                continue
            text = "".join(linecache.getlines(code.co_filename))
            with contextlib.suppress(SyntaxError):
                for node in ast.walk(ast.parse(text)):
                    if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
                        source = ast.get_source_segment(text, node)
            if source:
                break
    if not source:
        raise ValueError(
            f"The source of class {cls.__name__} cannot be found. Define it in a notebook cell of its "
            f"own (with at least one method), run that cell, then call write_policy_class again."
        )
    return write_policy_module(source, module=module, class_name=cls.__name__)


# --------------------------------------------------------------------------- the drill


def _records(transactions: Any) -> list[dict]:
    return transactions.to_dict("records") if hasattr(transactions, "to_dict") else list(transactions)


def run_drill(
    name: str,
    *,
    fs: Any,
    api: Any,
    sidecar: Any = None,
    receiver: Any = None,
    fault: Callable[[], Any] | None = None,
    restore: Callable[[], Any] | None = None,
    duration_s: float = 9,
    fault_at_s: float = 2,
    restore_at_s: float | None = None,
    transactions: Any = None,
    users: int = 2,
    wait_ms: float = 20,
    probe_interval_ms: float = 20,
    sample_lag_ms: float | None = None,
    writer: str = "feature-writer",
    expect_primary: str | None = None,
    failover_expected: bool | None = None,
    steady_timeout_s: float = 20.0,
) -> DrillResult:
    """Run load against the scoring API, inject ``fault`` at ``fault_at_s``, record everything.

    Args:
        name: the drill's name, in tables and plots.
        fs: the running FeatureStore.
        api: the scoring API's Child (``start_fraud_api``).
        sidecar, receiver: the sidecar's and the alert receiver's Child, if running.
        fault: a zero-argument callable that injects the fault (e.g. ``fs.kill_primary``);
            None for a steady-state run.
        restore: a zero-argument callable run at ``restore_at_s`` (e.g. ``fs.heal``).
        duration_s: how long the load runs (whole seconds).
        fault_at_s, restore_at_s: seconds after the load started.
        transactions: real transactions (DataFrame or dicts with card_id, amount,
            merchant_category) the probe scores in turn; locust sends the first one.
        users, wait_ms: locust's users and their pause between requests.
        probe_interval_ms: the read probe's period.
        sample_lag_ms: sample the replication lag this often (None: do not).
        writer: the feature writer's name (for its log).
        expect_primary: the region that must be the primary when the drill starts ("a");
            None: whichever the Sentinels name.
        failover_expected: whether the fault is meant to make Sentinel promote the other
            region (a kill, a partition: True; a latency spike: False); a drill that saw
            otherwise says so in its :attr:`DrillResult.notes`. None: no expectation.
        steady_timeout_s: how long to wait for the steady state before the load starts.

    Before the load starts, the drill waits for a steady state: the expected primary, the
    other region a linked replica within :data:`STEADY_LAG_BYTES` of it, and the sidecar
    serving reads from the primary. What it verified is :attr:`DrillResult.start_state`.

    Raises:
        DrillNotReady: no steady state within ``steady_timeout_s``; the message says what
            was off and what to do.

    Returns:
        A :class:`DrillResult`.
    """
    import pandas as pd

    from hadrlab.fraud import generate_transactions, writer_timeline
    from hadrlab.load import start_load
    from hadrlab.sidecar import fetch_alerts

    txns = _records(transactions if transactions is not None else generate_transactions(200, seed=7, n_cards=20))
    body = {k: txns[0][k] for k in ("card_id", "amount", "merchant_category")}
    start_state = wait_for_steady_state(fs, sidecar, name=name, expect_primary=expect_primary,
                                        timeout_s=steady_timeout_s)
    old = fs.current_primary()
    errors_before = _policy_errors(sidecar)[0] if sidecar is not None else 0
    run = start_load(api.url, users=users, wait_ms=wait_ms, duration_s=duration_s, path="/score",
                     body=body, timeout_s=2.0, name=f"load-{name}")
    started = run.started_at or time.time()
    probe = _ReadProbe(api.url, txns, probe_interval_ms / 1000)
    probe.start()
    lag = _LagSampler(fs, sample_lag_ms / 1000) if sample_lag_ms else None
    if lag is not None:
        lag.start()
    fault_t = restore_t = None
    try:
        if fault is not None:
            time.sleep(max(0.0, started + fault_at_s - time.time()))
            fault_t = time.time()
            fault()
        if restore is not None and restore_at_s is not None:
            time.sleep(max(0.0, started + restore_at_s - time.time()))
            restore_t = time.time()
            restore()
        load = run.wait(progress=False)
    finally:
        probe.stop_event.set()
        if lag is not None:
            lag.stop_event.set()
        if not run.done():
            run.stop()
        probe.join(timeout=5)
        if lag is not None:
            lag.join(timeout=5)
    ended = time.time()
    new = old
    with contextlib.suppress(Exception):
        new = fs.current_primary()

    writes = writer_timeline(writer)
    if len(writes):
        writes = writes[(writes["t"] >= started - 1) & (writes["t"] <= ended)].copy()
        writes["t_ack"] = writes["t"] + writes["latency_ms"].astype(float) / 1000
    reads = pd.DataFrame(probe.rows, columns=READ_COLUMNS)
    reads["ok"] = reads["ok"].astype(bool)
    reads["within_budget"] = reads["within_budget"].astype(bool)
    # Stale means: missed a write acknowledged during this drill. A write lost by an earlier
    # step (a forced fail back, say) leaves its card behind until it is written again; that
    # is the earlier step's loss, measured there (cards_behind), not this fault's.
    reads = mark_stale_reads(reads, writes[writes["t"] >= started] if len(writes) else writes)

    events = fs.events(since=started)
    events = events[events["kind"].isin(KEY_EVENTS + FAULT_KINDS)]
    decisions = sidecar_decisions(sidecar, since=started) if sidecar is not None else []
    errors_after, last_error = _policy_errors(sidecar) if sidecar is not None else (0, "")
    rows = [{"t": d["t"], "kind": f"reads->{d['to']}", "detail": d["reason"], "source": "sidecar"}
            for d in decisions]
    if fault_t is not None and not (events["t"].sub(fault_t).abs() < 0.05).any():
        rows.append({"t": fault_t, "kind": name, "detail": "fault injected", "source": "drill"})
    if restore_t is not None and not (events["t"].sub(restore_t).abs() < 0.05).any():
        rows.append({"t": restore_t, "kind": "restore", "detail": "fault removed", "source": "drill"})
    if rows:
        extra = pd.DataFrame(rows, columns=events.columns)
        # (concatenating an empty frame is deprecated in pandas: keep whichever has rows)
        events = pd.concat([events, extra], ignore_index=True) if len(events) else extra
    events = events.sort_values("t", ignore_index=True)
    # Only the first of each kind: a flapping signal would otherwise bury the timeline.
    events = events.drop_duplicates(subset=["kind"], keep="first").reset_index(drop=True)

    alerts = pd.DataFrame(columns=["t", "status", "alertname", "region", "receiver", "summary"])
    if receiver is not None:
        # Alerts are sent from a queue in the sidecar: give the last one a moment to arrive.
        time.sleep(0.3)
        frame = fetch_alerts(receiver, as_frame=True)
        alerts = frame[(frame["t"] >= started) & (frame["t"] <= time.time())][list(alerts.columns)]
    notes = []
    if failover_expected is False and new != old:
        notes.append(f"Sentinel failed over during this drill (primary {old} -> {new}) although its fault "
                     f"was not meant to cause one. A latency spike can do that when its round trip exceeds half "
                     f"of down-after-milliseconds: Sentinel closes a link (older than 15 s) whose PING has "
                     f"waited that long, and the down-after clock keeps running while the new connection's PING "
                     f"crosses the same slow network, so a quorum of Sentinels can see the primary down. Raise "
                     f"down_after_ms above 2 x the spike's round trip, or lower the spike")
    if failover_expected and new == old and fault_t is not None:
        notes.append(f"no failover was seen: region {old} was still the primary {ended - fault_t:.1f} s after the "
                     f"fault; the drill ended before Sentinel promoted the replica (down-after + the election): "
                     f"lengthen the drill or lower down_after_ms")
    return DrillResult(
        name=name, started_at=started, ended_at=ended, fault_t=fault_t, restore_t=restore_t,
        old_primary=old, new_primary=new, reads=reads, writes=writes, events=events,
        decisions=decisions, alerts=alerts.reset_index(drop=True),
        lag=pd.DataFrame(lag.rows, columns=["t", "lag_bytes", "lag_ms"]) if lag is not None else None,
        load=load, policy_errors=max(0, errors_after - errors_before),
        policy_error=last_error if errors_after > errors_before else "",
        start_state=start_state, notes=notes,
    )


# Replication is "caught up" within this many bytes: a few writes in flight, not a backlog.
STEADY_LAG_BYTES = 64 * 1024


def wait_for_steady_state(fs: Any, sidecar: Any = None, *, name: str = "drill", expect_primary: str | None = None,
                          timeout_s: float = 20.0) -> str:
    """Wait until the store is in a steady state; return what was verified, as a sentence.

    Steady: the Sentinels name ``expect_primary`` (or any region) as the primary, the other
    region is a replica whose link is up and that is within :data:`STEADY_LAG_BYTES` of the
    primary, and the sidecar (when given) serves reads from the primary.

    Raises:
        DrillNotReady: not steady within ``timeout_s``; says what was off and what to do.
    """
    from hadrlab.errors import DrillNotReady

    if expect_primary is not None:
        expect_primary = _region_name(expect_primary)
    began = time.monotonic()
    seen = {"problem": "", "text": ""}

    def steady() -> bool:
        try:
            primary = fs.current_primary()
        except Exception as exc:
            seen["problem"] = f"no Sentinel named a primary ({exc})"
            return False
        other = "b" if primary == "a" else "a"
        if expect_primary is not None and primary != expect_primary:
            seen["problem"] = (f"the Sentinels name region {primary} the primary, not region {expect_primary}: an "
                               f"earlier step failed over and nothing failed back (fail_back(fs, "
                               f"{expect_primary!r}) does)")
            return False
        if not fs.is_linked_replica(other):
            seen["problem"] = f"region {other} is not (yet) a replica with its link to region {primary} up"
            return False
        lag = fs.replication_lag_bytes()
        if lag > STEADY_LAG_BYTES:
            seen["problem"] = f"region {other} is {lag:,} bytes behind the primary"
            return False
        reads = primary
        if sidecar is not None:
            state = _get_json(f"{sidecar.url.rstrip('/')}/state")
            reads = state.get("read_region")
            down = [v.get("region") for v in (state.get("primary") or {}, state.get("secondary") or {})
                    if v.get("down_since") is not None]
            if down:
                seen["problem"] = (f"the sidecar still counts region {', '.join(map(str, down))} as down "
                                   f"(an earlier fault's RegionDown has not resolved)")
                return False
            if reads != primary:
                seen["problem"] = (f"the sidecar serves reads from region {reads}, not from the primary "
                                   f"{primary} (its policy has not brought them back yet)")
                return False
        seen["text"] = (f"a steady state: region {primary} primary, region {other} a linked replica {lag:,} bytes "
                        f"behind" + (f", reads on region {reads}" if sidecar is not None else ""))
        return True

    while not steady():
        if time.monotonic() - began > timeout_s:
            raise DrillNotReady(
                f"Drill {name!r} cannot start from a steady state: after {timeout_s:g} s, {seen['problem']}. "
                f"Wait and run the drill's cell again, or restart the lab from its Start cell.")
        time.sleep(0.2)
    waited = time.monotonic() - began
    return seen["text"] + (f" (after waiting {waited:.1f} s)" if waited >= 0.5 else "")


def read_switch_times(check_interval_ms: float, latency_ms: float, consecutive: int, recover_consecutive: int,
                      *, poll_ms: float = 100) -> tuple[float, float]:
    """Seconds a read policy needs to move reads after a fault begins, and to bring them back after it ends.

    A check of a slow or silent region lasts until its answer or the sidecar's check timeout
    (``2 x latency_ms``), so during a fault a round of checks takes
    ``max(check_interval_ms, 2 x latency_ms)``. Moving needs ``consecutive`` bad rounds plus
    the round already under way when the fault begins; coming back needs
    ``recover_consecutive`` good rounds at ``check_interval_ms`` plus the slow round under way
    when the fault ends. The scoring API polls the sidecar every ``poll_ms`` on top of both.
    """
    round_ms = max(check_interval_ms, 2 * latency_ms)
    move_s = ((consecutive + 1) * round_ms + poll_ms) / 1000
    back_s = (recover_consecutive * check_interval_ms + poll_ms + round_ms) / 1000
    return move_s, back_s


# --------------------------------------------------------------------------- fail back


def _region_name(region: str) -> str:
    key = str(region).strip().lower().removeprefix("region-")
    if key not in ("a", "b"):
        raise ValueError(f"There is no region {region!r}; the feature store has regions 'a' and 'b'.")
    return key


def fail_back(fs: Any, region: str = "a", *, timeout_s: float = 40.0) -> float:
    """Make ``region`` the primary again with a planned failover; return the seconds it took.

    Waits until ``region`` is a replica in sync with the primary, asks the witness Sentinel
    for ``SENTINEL FAILOVER`` (a forced failover: no agreement of the other Sentinels and
    no pause of writes, so writes acknowledged in its last moments can be lost; Redis's own
    ``FAILOVER`` command is the switchover that pauses writes first), then waits until the
    other region is a linked replica again. Works with the local store and the cluster's
    (``fs.is_linked_replica``, ``fs.request_failover``).

    Raises:
        ServiceNotReady: a step did not happen within ``timeout_s``.
    """
    from hadrlab.processes import wait_until

    started = time.monotonic()
    target = _region_name(region)
    other = "b" if target == "a" else "a"
    left = lambda: max(1.0, timeout_s - (time.monotonic() - started))  # noqa: E731
    if fs.current_primary() != target:
        wait_until(lambda: fs.is_linked_replica(target), timeout_s=left(), interval_s=0.1,
                   describe=f"region {target} linked as a replica")
        # Refused while the Sentinels still consider the replica unfit (-NOGOODSLAVE):
        # their view of it refreshes about once a second.
        wait_until(fs.request_failover, timeout_s=left(), interval_s=0.5, describe="SENTINEL FAILOVER accepted")
        fs._record("failback", f"SENTINEL FAILOVER towards region {target}")
        wait_until(lambda: fs.current_primary() == target, timeout_s=left(), interval_s=0.1,
                   describe=f"the Sentinels naming region {target} primary")
    wait_until(lambda: fs.is_linked_replica(other), timeout_s=left(), interval_s=0.1,
               describe=f"region {other} linked as a replica")
    return time.monotonic() - started


def cards_behind(fs: Any, writer: str = "feature-writer", *, settle_s: float = 1.0):
    """Cards whose newest acknowledged write is missing from the primary, right now.

    Reads every card's stored sequence number from the current primary at time ``T`` (the
    primary's clock; ``fs.read_hash_field``, on either backend), then
    (after ``settle_s``, so that the writer's log has caught up) compares it with the
    newest write the writer was told was acknowledged before ``T``. A card behind lost
    that write (and every acknowledged write of it since the stored one): what a failover
    that did not pause writes cost.

    Returns:
        A DataFrame, one row per card behind: card_id, stored_seq, acked_seq, acked_at
        (epoch s of the newest acknowledged write); empty when nothing was lost.
    """
    import pandas as pd

    from hadrlab.fraud import KEY_PREFIX, writer_timeline

    # One server-side pass on the primary (through the pod's redis-cli on a cluster); the
    # primary's own clock says when.
    t_read, seqs = fs.read_hash_field(KEY_PREFIX + "*", "seq")
    stored = {key[len(KEY_PREFIX):]: int(float(seq)) for key, seq in seqs.items() if not key.endswith(":txns")}
    time.sleep(settle_s)
    writes = writer_timeline(writer)
    columns = ["card_id", "stored_seq", "acked_seq", "acked_at"]
    if not len(writes):
        return pd.DataFrame(columns=columns)
    acked = writes[writes["ok"] == 1].copy()
    acked["t_ack"] = acked["t"] + acked["latency_ms"].astype(float) / 1000
    acked = acked[acked["t_ack"] < t_read - 0.05].sort_values("seq").groupby("card_id").last()
    rows = [{"card_id": card, "stored_seq": stored.get(str(card), -1), "acked_seq": int(row["seq"]),
             "acked_at": float(row["t_ack"])}
            for card, row in acked.iterrows() if stored.get(str(card), -1) < int(row["seq"])]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------- the table


def summary_table(drills: list, rpo: list):
    """One table, one row per fault: read and write RTO, writes lost, stale reads, alerts.

    Args:
        drills: :class:`DrillResult` of the fault drills (under load, with the sidecar).
        rpo: :class:`~hadrlab.featurestore.RpoResult` of the RPO trials (a kill while the
            replica lags, one row per replication mode).

    Returns:
        A DataFrame indexed by fault. "—" where a drill does not measure a column.
    """
    import pandas as pd

    rows = []
    for d in drills:
        origin = d.fault_t if d.fault_t is not None else d.started_at
        firing = d.alerts[d.alerts["status"] == "firing"] if len(d.alerts) else d.alerts
        alerts = "; ".join(f"{a.alertname} {a.region} +{a.t - origin:.1f} s" for a in firing.itertuples())
        rows.append({"fault": d.name, "read_rto_s": d.read_rto_s, "write_rto_s": d.write_rto_s,
                     "acked_writes_lost": "—", "stale_reads_pct": d.stale_read_pct,
                     "staleness_max_s": d.staleness_max_s, "alerts (firing, after fault)": alerts or "none"})
    for r in rpo:
        rows.append({"fault": f"kill, lag {r.lag_fault.removeprefix('latency ')}, {r.mode}", "read_rto_s": "—",
                     "write_rto_s": None if r.failover_s is None else round(r.failover_s, 2),
                     "acked_writes_lost": f"{r.lost_acknowledged} of {r.acknowledged}",
                     "stale_reads_pct": "—", "staleness_max_s": "—", "alerts (firing, after fault)": "—"})
    def cell(v: Any) -> Any:
        if isinstance(v, str):
            return v
        return "—" if v is None or v != v else round(float(v), 2)  # v != v: NaN

    table = pd.DataFrame(rows, dtype=object).set_index("fault")
    for column in ("read_rto_s", "write_rto_s", "stale_reads_pct", "staleness_max_s"):
        table[column] = [cell(v) for v in table[column]]
    return table


# --------------------------------------------------------------------------- figures


def plot_lag(lag: Any, *, one_way_ms: float | None = None, title: str = "Replication lag, region A to region B"):
    """Two panels over time: bytes the replica is behind, and ms until a write shows on it.

    Args:
        lag: the DataFrame of :attr:`DrillResult.lag` (t, lag_bytes, lag_ms).
        one_way_ms: the one-way latency between the regions, drawn for reference.
        title: the figure's title.
    """
    import matplotlib.pyplot as plt

    fig, (ax_b, ax_ms) = plt.subplots(1, 2, figsize=(11, 3.2))
    x = lag["t"] - lag["t"].min()
    ax_b.plot(x, lag["lag_bytes"], marker=".", color="#1f77b4")
    ax_b.set_ylabel("replica behind (bytes)")
    ax_ms.plot(x, lag["lag_ms"], marker=".", color="#ff7f0e")
    ax_ms.set_ylabel("write visible on B after (ms)")
    if one_way_ms:
        ax_ms.axhline(one_way_ms, color="#555555", linestyle=":", label=f"one-way latency {one_way_ms:g} ms")
        ax_ms.legend(fontsize=8, loc="upper right")
    for ax in (ax_b, ax_ms):
        ax.set_xlabel("time since start (s)")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_dr_summary(drills: list, rpo: list, *, title: str = "Feature-store DR, measured",
                    write_rto_target_s: float | None = None):
    """Read and write RTO per fault (bars), and acknowledged writes lost, async vs WAIT.

    Args:
        drills: the fault drills (:class:`DrillResult`).
        rpo: the RPO trials (:class:`~hadrlab.featurestore.RpoResult`).
        title: the figure's title.
        write_rto_target_s: drawn as a dashed line on the RTO panel, when given.
    """
    import math

    import matplotlib.pyplot as plt

    fig, (ax_rto, ax_rpo) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1.6, 1]})
    names = [d.name for d in drills]
    for offset, label, color, values in (
        (-0.2, "read RTO", "#1f77b4", [d.read_rto_s for d in drills]),
        (0.2, "write RTO", "#ff7f0e", [d.write_rto_s for d in drills]),
    ):
        heights = [0.0 if v is None or math.isnan(v) else v for v in values]
        bars = ax_rto.bar([i + offset for i in range(len(names))], heights, width=0.4, color=color, label=label)
        for bar, v in zip(bars, values):
            text = "none" if v is None else f"{v:.2f} s"
            ax_rto.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), xytext=(0, 2),
                            textcoords="offset points", ha="center", fontsize=8)
    if write_rto_target_s is not None:
        ax_rto.axhline(write_rto_target_s, color="#d62728", linestyle="--", linewidth=1.2,
                       label=f"write RTO target {write_rto_target_s:g} s")
    ax_rto.set_xticks(range(len(names)))
    ax_rto.set_xticklabels(names)
    ax_rto.set_ylabel("seconds from the fault")
    ax_rto.set_title("recovery time (none: not needed / did not move)", fontsize=10)
    ax_rto.legend(fontsize=8, loc="upper left")
    ax_rto.set_ylim(0, max([1.0, write_rto_target_s or 0] + [d.write_rto_s or 0 for d in drills]
                           + [d.read_rto_s or 0 for d in drills]) * 1.3)
    labels = [f"{r.mode}\n({r.acknowledged} acked)" for r in rpo]
    lost = [r.lost_acknowledged for r in rpo]
    bars = ax_rpo.bar(range(len(rpo)), lost, color=["#d62728" if n else "#2ca02c" for n in lost])
    for bar, r in zip(bars, rpo):
        ax_rpo.annotate(f"{r.lost_acknowledged} lost\n(lag {r.lag_bytes_at_kill or 0:,} B)",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()), xytext=(0, 2),
                        textcoords="offset points", ha="center", fontsize=8)
    ax_rpo.set_xticks(range(len(rpo)))
    ax_rpo.set_xticklabels(labels)
    ax_rpo.set_ylabel("acknowledged writes lost")
    ax_rpo.set_ylim(0, max([1] + lost) * 1.35)
    ax_rpo.set_title("RPO when the primary dies", fontsize=10)
    for ax in (ax_rto, ax_rpo):
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)
    return fig


def _label_offsets_pt(xs: list[float], span_s: float, fig: Any, ax: Any, gap_pt: float = 9.0) -> list[float]:
    """Horizontal offsets (points) of vertical labels at ``xs``, so that labels of events close in time
    sit side by side instead of on top of each other (each at least ``gap_pt`` from the previous one)."""
    width_pt = fig.get_size_inches()[0] * 72 * ax.get_position().width
    per_s = width_pt / max(span_s, 1e-9)
    offsets, last = [], float("-inf")
    for x in xs:  # xs are in time order (signals() is sorted)
        at = max(x * per_s + 2, last + gap_pt)
        offsets.append(at - x * per_s)
        last = at
    return offsets


def plot_reads(drill: Any, *, title: str | None = None):
    """Every read of a drill as a dot: when, how long, which region served it, stale or failed.

    Faults are dashed red lines (the restore dashed green); Sentinel's and the sidecar's
    events dotted grey, labelled at the top.
    """
    import matplotlib.pyplot as plt

    r, t0 = drill.reads, drill.started_at
    fig, ax = plt.subplots(figsize=(11, 3.8))
    fresh = r["ok"] & ~r["stale"]
    for region, color in (("a", "#1f77b4"), ("b", "#ff7f0e")):
        sel = r[fresh & (r["replica"] == region)]
        ax.scatter(sel["t_start"] - t0, sel["latency_ms"], s=9, color=color, label=f"served by region {region}")
    stale = r[r["ok"] & r["stale"]]
    ax.scatter(stale["t_start"] - t0, stale["latency_ms"], s=22, facecolors="none", edgecolors="#9467bd",
               label="stale: missed an acknowledged write")
    failed = r[~r["ok"]]
    ax.scatter(failed["t_start"] - t0, failed["latency_ms"], s=30, marker="x", color="#d62728", label="failed")
    ax.set_yscale("log")
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, ScalarFormatter

    # Headroom above the slowest read (the API's 200 ms Redis timeout, then region B), room
    # for the event labels, and round-number ticks: a log axis alone labels only 10 and 100.
    latencies = r["latency_ms"].dropna()
    top = max(300.0, float(latencies.max()) * 3) if len(latencies) else 1000.0
    bottom = min(1.0, float(latencies.min()) * 0.7) if len(latencies) else 1.0
    ax.set_ylim(bottom, top)
    ax.yaxis.set_major_locator(FixedLocator([v for v in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
                                             if bottom <= v <= top]))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_formatter(NullFormatter())
    signals = drill.signals()
    xs = [float(t) - t0 for t in signals["t"]]
    span_s = max([1.0, float(r["t_end"].max() - t0) if len(r) else 1.0] + xs)
    for (_, event), x, dx in zip(signals.iterrows(), xs, _label_offsets_pt(xs, span_s, fig, ax)):
        ax.axvline(x, color="#7f7f7f", linestyle=":", linewidth=1)
        ax.annotate(event["kind"], xy=(x, 1.0), xycoords=("data", "axes fraction"), xytext=(dx, -2),
                    textcoords="offset points", rotation=90, va="top", fontsize=7, color="#444444")
    if drill.fault_t is not None:
        ax.axvline(drill.fault_t - t0, color="#d62728", linestyle="--", linewidth=1.6, label=f"fault: {drill.name}")
    if drill.restore_t is not None:
        ax.axvline(drill.restore_t - t0, color="#2ca02c", linestyle="--", linewidth=1.6, label="fault removed")
    ax.set_xlabel("time since load start (s)")
    ax.set_ylabel("POST /score latency (ms, log)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_title(title or f"Reads during the {drill.name} drill, by the region that served the features")
    fig.tight_layout()
    plt.close(fig)
    return fig
