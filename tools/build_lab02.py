"""Write solutions/02_feature_store_dr.ipynb from the cell texts below (without outputs).

Edit this script and re-run it, then execute the notebook to refresh its outputs:

    .venv/bin/python tools/build_lab02.py
    HADRLAB_HOME=/tmp/lab02home MPLBACKEND=Agg \\
        .venv/bin/python -m hadrlab solutions solutions/02_feature_store_dr.ipynb
"""

from __future__ import annotations

from pathlib import Path

from notebook_builder import NotebookBuilder


ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "solutions" / "02_feature_store_dr.ipynb"

nb = NotebookBuilder("lab02", OUT)
md, code = nb.md, nb.code


# ----------------------------------------------------------------------------- Objectives
md("""
# Lab 02 · Disaster recovery for a real-time feature store

A fraud-detection API scores card transactions with features that a writer updates in Redis
many times a second. Redis runs in **two regions**: the primary in region A, a replica in region B,
three Sentinels deciding about failover. This lab breaks region A in four ways, under load, and
measures what the service and its owners see.

**Objectives.** By the end of this lab (about 60 minutes) you can:

1. **measure** replication lag (bytes and milliseconds) in steady state;
2. **implement** a read-failover policy for a health-checking sidecar (threshold, consecutive
   checks, hysteresis) that moves reads to region B in under a second and does **not** flap on a
   latency spike below its threshold;
3. **choose** Sentinel's `down-after-milliseconds` for a stated write RTO, and verify it;
4. **measure** read RTO, write RTO, stale reads and alerts for a latency spike, a partition and a
   crash of the primary, and the **RPO** (acknowledged writes lost) with asynchronous replication
   versus `WAIT`; **choose** between them for a stated RPO and latency budget;
5. explain split brain, and what `min-replicas-to-write` does about it.
""")

# ----------------------------------------------------------------------------- Concepts
md("""
## Concepts (one screen)

```
            region A                         region B                    witness site
  writer ─▶ redis-a (primary) ──replication──▶ redis-b (replica)
            sentinel-a                       sentinel-b                  sentinel-w
  fraud API ◀── reads from A or B, as the sidecar says ──┘   (the sidecar checks both regions)
```

**Sentinel** watches the primary; when a quorum (2 of 3) agrees it has been silent for
`down-after-milliseconds`, one Sentinel is elected and promotes the replica; clients that ask the
Sentinels (`Sentinel.master_for`) follow. Measured on this topology (the kill drill below measures
it again): **write RTO of a crash ≈ down-after + ~1.5 s**. Writes fail over; **reads** are the sidecar's job: it can move them in a fraction of a
second, to a replica that may be slightly behind (stale).

The sidecar asks the Sentinels which region is the primary, and reads each region's
`INFO replication`, because a PING cannot tell good data from bad: an old primary back from a crash
(empty) or a partition (with old data) answers PINGs perfectly while it is a master nobody elected,
and then while it resyncs. The sidecar reports such a region to the read policy as a **failed**
check, and never sends reads to it.

| option | what it gives | fits when |
| --- | --- | --- |
| **Redis Sentinel** (this lab) | one primary, replicas, automatic failover; async replication | a dataset that fits one node; seconds of write RTO are fine |
| **Redis Cluster** | data sharded over several primaries, each with replicas; failover built in | more data or writes than one node; multi-key operations limited to one slot |
| **Change data capture** (Debezium + Kafka) | the source database's log streamed into another store (e.g. Postgres → Redis in another region) | the truth lives in another database; the feature store is a derived, rebuildable copy |
| **Managed global databases** (DynamoDB global tables, Cosmos DB, Spanner, ElastiCache Global Datastore) | cross-region replication run for you; RPO/RTO stated by the provider | you want the SLA, not the operations; check the conflict rules (last writer wins?) |

**Split brain.** The classic case is *during* a partition: clients on the old primary's side of
the cut keep writing to it while the Sentinels on the other side promote the replica, and every
one of those writes is lost when the partition heals and the old primary rejoins as a replica
(it drops its data and copies the new primary's). The same happens for a few seconds *after* a
partition heals or a crashed primary restarts, while the old primary still believes it is the
primary. `min-replicas-to-write N` with `min-replicas-max-lag S` makes a primary refuse writes
(`NOREPLICAS`) while fewer than N replicas are connected with a replication acknowledgement (sent
about once a second) at most S seconds old. It does not confirm individual writes (that is
`WAIT`): an isolated primary keeps accepting writes until it has not heard from enough replicas
for S seconds, so the loss is bounded to about S seconds of writes, not prevented. The price: a
primary left without enough replicas, such as the lone new primary after a failover, refuses
every write.
""")

# ----------------------------------------------------------------------------- Parameters
md("""
## Parameters

The run-time knobs of this lab. The whole notebook runs in about two minutes with these values
(110 s measured on a 2-core machine, most of it the drills and the fail back). A grader may change them: the code and the checks below always read them.
""")
code("""
CROSS_REGION_MS = 5        # one-way latency between the regions, ms; 1-50, below LATENCY_MS
WRITE_RATE_TPS = 30        # feature updates per second (the feature writer); 5-200
N_CARDS = 20               # cards the writer updates (each about every N_CARDS / WRITE_RATE_TPS s); 5-200
USERS = 2                  # locust users scoring transactions (a read probe scores too); 1-10
STEADY_S = 6               # seconds of steady state; >= 2
DRILL_S = 8                # seconds of load per latency-spike drill; 5-60, long enough for reads to move AND come back
FAULT_AT_S = 2             # seconds into a drill at which the fault is injected; >= 1
CHECK_INTERVAL_MS = 100    # the sidecar checks both regions this often, ms; 20-1000 (slower: longer drills)
LATENCY_MS = 20            # a latency spike BELOW the read threshold (4 x LATENCY_MS), each way, ms
SPIKE_MS = 150             # a latency spike ABOVE it, each way, ms; >= 3 x LATENCY_MS
WRITE_RTO_TARGET_S = 3.0   # the write RTO the business asks for, s; >= 2 s + max(4 x SPIKE_MS, 1 s) (Exercise 1)
RPO_LATENCY_MS = 50        # cross-region latency during the RPO trials, each way, ms; 5-200
RPO_WRITES_PER_S = 1000    # write rate during the RPO trials; 100-5000
WRITE_BUDGET_MS = 250      # the latency budget of one feature write, ms; above 2 x RPO_LATENCY_MS for 'wait'
READ_RTO_SLACK_S = 1.0     # slack on top of the read RTO your policy settings imply, s; 0.5-5
""", tags=["parameters"])
md("""
Each comment above gives the value's range and what it changes. Values that do not fit together
are refused here, before anything starts, with the value to change (a grader's `--param` values
are appended to the cell above, so they are checked here too). The timing relations: a spike must
last long enough for reads to move **and** come back under the lab's read policy, and the write-RTO
target must leave room for a `down-after` that rides out the `SPIKE_MS` spike (Exercise 1).
""")
code("""
import math

FAILOVER_OVERHEAD_S = 1.5  # measured on this topology: write RTO of a crash ≈ down-after + this
from hadrlab.drills import read_switch_times

# The read policy the lab suggests (Exercise 2): threshold 4 x LATENCY_MS, 3 bad checks to move, 5 good to return.
move_s, back_s = read_switch_times(CHECK_INTERVAL_MS, 4 * LATENCY_MS, 3, 5)
min_drill_s = math.ceil(FAULT_AT_S + 2 * (max(move_s, back_s) + 0.5))
RANGES = {"CROSS_REGION_MS": (1, 50), "WRITE_RATE_TPS": (5, 200), "N_CARDS": (5, 200), "USERS": (1, 10),
          "DRILL_S": (5, 60), "RPO_LATENCY_MS": (5, 200), "RPO_WRITES_PER_S": (100, 5000),
          "READ_RTO_SLACK_S": (0.5, 5), "CHECK_INTERVAL_MS": (20, 1000)}
low_ms = max(4 * SPIKE_MS, 1000)  # Exercise 1: the smallest down-after that rides out the spike
problems = [f"{name} = {globals()[name]}: use {lo}-{hi}" for name, (lo, hi) in RANGES.items()
            if not lo <= globals()[name] <= hi]
problems += [text for bad, text in (
    (FAULT_AT_S < 1, f"FAULT_AT_S = {FAULT_AT_S}: give each drill at least 1 s of load before its fault"),
    (STEADY_S < 2, f"STEADY_S = {STEADY_S}: the steady state needs at least 2 s to show the replication lag"),
    (not CROSS_REGION_MS < LATENCY_MS < SPIKE_MS, f"the latencies must grow: CROSS_REGION_MS ({CROSS_REGION_MS}) "
     f"< LATENCY_MS ({LATENCY_MS}) < SPIKE_MS ({SPIKE_MS})"),
    (SPIKE_MS < 3 * LATENCY_MS, f"SPIKE_MS = {SPIKE_MS} is too close to LATENCY_MS = {LATENCY_MS}: the read "
     f"threshold sits at 4 x LATENCY_MS = {4 * LATENCY_MS} ms, and the spike's round trip (2 x SPIKE_MS) must "
     f"clear it by half: SPIKE_MS >= {3 * LATENCY_MS}"),
    (DRILL_S < min_drill_s, f"DRILL_S = {DRILL_S} is too short: a spike lasts half of the time after the fault, "
     f"and with checks every {CHECK_INTERVAL_MS} ms reads need about {move_s:.1f} s to move and {back_s:.1f} s "
     f"to come back (+ 0.5 s each), so DRILL_S >= {min_drill_s} (or lower CHECK_INTERVAL_MS)"),
    (1000 * (WRITE_RTO_TARGET_S - FAILOVER_OVERHEAD_S) - low_ms < 500,
     f"WRITE_RTO_TARGET_S = {WRITE_RTO_TARGET_S} s leaves less than 0.5 s of window for down-after: it must "
     f"exceed {low_ms} ms (twice the SPIKE_MS spike's round trip, and at least a second: Exercise 1), and a "
     f"failover takes down-after + about {FAILOVER_OVERHEAD_S} s, an average that varies by up to a second; "
     f"raise WRITE_RTO_TARGET_S to at least {FAILOVER_OVERHEAD_S + low_ms / 1000 + 0.5:g} or lower SPIKE_MS"),
) if bad]
if problems:
    raise ValueError("These parameters do not fit together: " + "; ".join(problems)
                     + ". Change them in the Parameters cell (or the grader's --param values).")
print("parameters consistent")
""")

# ----------------------------------------------------------------------------- Setup
md("""
## Setup

`hadrlab` does the plumbing: real `redis-server` and Sentinel processes behind a fault-injecting
proxy per region, the scoring API, the feature writer, the sidecar and an alert receiver, each a
process on a free loopback port (on a cluster, `HADRLAB_BACKEND=kube`, the same parts are pods:
see "Start" below). `board` records your graded checks. `TXNS` are real (generated) card
transactions on the cards the writer updates.
""")
code("""
%matplotlib inline
import time

import pandas as pd
import hadrlab
from hadrlab.drills import (cards_behind, fail_back, plot_dr_summary, plot_lag, plot_reads, read_switch_times, run_drill,
                            summary_table, write_policy_class)
from hadrlab.sidecar import Check

board = hadrlab.Scoreboard("02")


def hint_for(drill, hint, read_rto=False):
    # The hint of a drill check: what went wrong in the drill (policy errors, an unexpected failover,
    # why no read RTO could be measured), then `hint`.
    try:
        return drill().policy_hint(hint, read_rto=read_rto)
    except NameError:  # the drill has not run: the check says so itself
        return hint


TXNS = hadrlab.generate_transactions(600, seed=2, n_cards=N_CARDS)
print("hadrlab", hadrlab.__version__, "|", len(TXNS), "transactions on", TXNS.card_id.nunique(), "cards")
""")

# ----------------------------------------------------------------------------- Exercise 1
md("""
### Exercise 1 · Choose Sentinel's `down-after-milliseconds`

The business asks for a **write RTO of at most `WRITE_RTO_TARGET_S`**. On this topology Sentinel
takes about **down-after + `FAILOVER_OVERHEAD_S`** (1.5 s) from a crash to the promoted replica
acknowledging writes.
But too short a `down-after` turns a slow network into a failover. Sentinel sends each server a
PING about once a second and counts the server down once a PING has waited `down-after` for its
answer. And it does not wait quietly: a link (connected for more than 15 s) whose PING has
waited **half** of `down-after` is closed and opened again (Sentinel suspects the connection, not
the server; see `sentinelCheckSubjectivelyDown` in Redis's `sentinel.c`). The down-after clock
keeps running from the first unanswered PING, while the new connection's handshake and PING cross
the same slow network. During the `SPIKE_MS` spike of Experiment 3 a round trip takes
`2 × SPIKE_MS`, so with a `down-after` below **twice that round trip** (`4 × SPIKE_MS`) the
Sentinels can see the primary down and fail over on a spike that would have passed by itself.
And not below a second either: the false alarm after a promotion, later in this lab, is a risk
of a down-after of a second or less.

Set `down_after_ms` (an int): more than `max(4 × SPIKE_MS, 1000)`, with the RTO target met. Where
in that window? Each edge is a risk, one of a false failover, the other of a missed target.
""")
code("""
# BEGIN SOLUTION set down_after_ms
low_ms = max(4 * SPIKE_MS, 1000)                               # twice the spike's round trip, and >= 1 s
high_ms = 1000 * (WRITE_RTO_TARGET_S - FAILOVER_OVERHEAD_S)    # the RTO target, minus the failover itself
# A third of the way up: the false-failover edge is Sentinel's exact arithmetic, the RTO edge an
# average overhead that varies by up to a second, so that side gets the larger margin.
down_after_ms = int(low_ms + (high_ms - low_ms) / 3)
# END SOLUTION
print(f"down-after {down_after_ms} ms -> expected write RTO about {down_after_ms / 1000 + FAILOVER_OVERHEAD_S:.2f} s "
      f"(target {WRITE_RTO_TARGET_S} s)")
""")
code("""
display(board.check_true("down-after meets the write RTO target", lambda: down_after_ms,
                         lambda ms: max(4 * SPIKE_MS, 1000) < ms and ms / 1000 + FAILOVER_OVERHEAD_S <= WRITE_RTO_TARGET_S,
                         f"> {max(4 * SPIKE_MS, 1000)} ms and + {FAILOVER_OVERHEAD_S} s <= {WRITE_RTO_TARGET_S} s",
                         unit="ms",
                         hint=f"RTO ≈ down_after + {FAILOVER_OVERHEAD_S} s must fit the target; the spike's round "
                              "trip is 2 × SPIKE_MS, and Sentinel reconnects after half of down-after"))
""")

# ----------------------------------------------------------------------------- Exercise 2
md("""
### Exercise 2 · A read-failover policy

Every `CHECK_INTERVAL_MS` the sidecar asks the Sentinels which region is the primary (A at first,
B after a failover), checks both regions, and calls `policy.decide(read_region, check, secondary)`:
`check` is the latest check of the **primary**, `secondary` that of the other region (each a `Check`
with `.region`, `.ok` and `.latency_ms`; a region whose data cannot be trusted arrives as a failed
check). It returns the region that should serve reads, `check.region` or `secondary.region`.
Complete `decide`:

- a check is **bad** if it failed (`not check.ok`) or took longer than `latency_ms`;
- move reads to the secondary after `consecutive` bad checks of the primary **in a row**, if the
  secondary itself is ok;
- come back to the primary only after `recover_consecutive` good checks in a row (**hysteresis**);
- otherwise keep `read_region`.

The class runs in the sidecar's process, not here: keep it self-contained.
""")
code("""
class ReadFailoverPolicy:
    \"\"\"Reads to the secondary after `consecutive` bad checks of the primary; back after `recover_consecutive` good ones.\"\"\"

    def __init__(self, latency_ms=80, consecutive=3, recover_consecutive=5):
        self.latency_ms = latency_ms
        self.consecutive = consecutive
        self.recover_consecutive = recover_consecutive
        self.bad = 0   # bad checks of the primary in a row
        self.good = 0  # good checks of the primary in a row

    def decide(self, read_region, check, secondary):
        # BEGIN SOLUTION count bad/good checks in a row, then return check.region or secondary.region
        primary, other = check.region, secondary.region
        bad = not check.ok or check.latency_ms is None or check.latency_ms > self.latency_ms
        self.bad, self.good = (self.bad + 1, 0) if bad else (0, self.good + 1)
        if read_region == primary and self.bad >= self.consecutive and secondary.ok:
            return other
        if read_region != primary and self.good >= self.recover_consecutive:
            return primary
        return read_region
        # END SOLUTION
""")
md("""
Try it on a made-up series of checks of A before any process uses it (latency in ms; `None` is a
failed check): one slow check is noise, three in a row move reads, and one good check among bad
ones does not bring them back.
""")
code("""
def replay(policy, latencies):
    region, out = "a", ""
    for ms in latencies:
        region = policy.decide(region, Check("a", ms is not None, ms), Check("b", True, 5.0))
        out += region
    return out

SERIES = [10, 200, 10, 200, 200, None, None, 10, 10, 10, 10, 200, 10, 10, 10, 10, 10]
print(" ".join(f"{'x' if ms is None else ms:>3}" for ms in SERIES))
print(" ".join(f"{r:>3}" for r in replay(ReadFailoverPolicy(80, 3, 5), SERIES)))
""")
code("""
display(board.check_equal("policy: threshold, consecutive, hysteresis",
                          lambda: replay(ReadFailoverPolicy(80, 3, 5), SERIES), "aaaaabbbbbbbbbbba",
                          hint="3 bad checks in a row move reads to b; 5 good ones in a row bring them back"))
""")
md("""
The settings the sidecar will run your policy with. The threshold must sit above the latency of a
healthy check during the `LATENCY_MS` spike (a round trip, so about `2 × LATENCY_MS`) and below that
of the `SPIKE_MS` spike: here `4 × LATENCY_MS`, twice the harmless round trip, which the Parameters
cell keeps below `2 × SPIKE_MS`. Change them if you like: the checks follow.

How fast can reads move? Not in `CHECK_INTERVAL_MS × consecutive`: a check of a slow or silent
region lasts until its answer or the sidecar's **check timeout** (`2 × latency_ms`), so during a
spike or a partition a round of checks takes `max(CHECK_INTERVAL_MS, 2 × latency_ms)`, not
`CHECK_INTERVAL_MS`. Add the round already under way when the fault hits and the scoring API's
poll of the sidecar (every 100 ms): reads move after about
`(consecutive + 1) × max(CHECK_INTERVAL_MS, 2 × latency_ms) + 100 ms`, and come back after about
`recover_consecutive × CHECK_INTERVAL_MS` plus the slow round under way when the fault ends and the
poll (`read_switch_times` computes both). The read-RTO check allows
`READ_RTO_SLACK_S` on top, because on a busy 2-core machine (locust, the API, five Redis and
Sentinel processes, the sidecar) rounds and polls start late.
""")
code("""
policy_args = dict(latency_ms=4 * LATENCY_MS, consecutive=3, recover_consecutive=5)  # threshold: 2 x the harmless round trip
policy_spec = write_policy_class(ReadFailoverPolicy)   # saved as a module the sidecar imports
expected_read_rto_s, back_s = read_switch_times(CHECK_INTERVAL_MS, **policy_args)
print(policy_spec, policy_args, f"-> reads move about {expected_read_rto_s:.2f} s after a fault, "
      f"and come back about {back_s:.2f} s after it ends")
""")
md("""
The drills' schedule, from the parameters and your settings: a latency spike lasts half of the
time after the fault (reads must move, then come back); a partition heals only after the
failover it causes; a failover drill lasts until writes have moved, whatever `DRILL_S` says.
""")
code("""
SPIKE_END_S = FAULT_AT_S + (DRILL_S - FAULT_AT_S) / 2
if SPIKE_END_S - FAULT_AT_S < max(expected_read_rto_s, back_s) + 0.5:
    raise ValueError(f"A spike of {SPIKE_END_S - FAULT_AT_S:.1f} s (half of DRILL_S - FAULT_AT_S) is too short for "
                     f"reads to move ({expected_read_rto_s:.2f} s) or come back ({back_s:.2f} s) with "
                     f"{policy_args}, plus 0.5 s: raise DRILL_S or shorten the policy's streaks.")
failover_s = math.ceil(max(WRITE_RTO_TARGET_S, down_after_ms / 1000 + FAILOVER_OVERHEAD_S))
HEAL_AT_S = FAULT_AT_S + failover_s + 2          # + 2 s: the writer's timeouts on the silent region
PARTITION_S = HEAL_AT_S + 3                      # then watch region A come back as a replica
KILL_S = max(DRILL_S, FAULT_AT_S + failover_s + 2)
print(f"spikes: {DRILL_S} s, fault {FAULT_AT_S}-{SPIKE_END_S:g} s; partition: {PARTITION_S} s, heal at "
      f"{HEAL_AT_S} s; kill: {KILL_S} s")
""")

# ----------------------------------------------------------------------------- Start
md("""
## Start the feature store and the service

Two regions with `CROSS_REGION_MS` of latency each way on their network entrance, three
Sentinels with your `down_after_ms`. Then the first features, written through Sentinel, and the
services: the alert receiver, the sidecar running your policy, the scoring API and the feature
writer.

This is the one cell that differs between the backends. With `HADRLAB_BACKEND=kube` the store is
`infra/k8s/redis.yaml` on the cluster of `make kind-up` (Redis in two regions, one Sentinel per
site, the cross-region latency a Chaos Mesh delay), and the services are `infra/k8s/fraud.yaml`:
your policy travels to the sidecars in a ConfigMap, the first features are written by a Job, and
the writer's timeline is its pod's log. This cell and the RPO trial of Experiment 6 are the only
cells that differ between the backends (the monitoring cells, which need a local Prometheus, are
skipped on the cluster backend and say so).
""")
code("""
# Backend-specific (HADRLAB_BACKEND): local processes (the default), or the kind cluster.
if hadrlab.backend_name() == "kube":
    fs = hadrlab.start_kube_feature_store(down_after_ms=down_after_ms, cross_region_latency_ms=CROSS_REGION_MS)
    services = hadrlab.start_kube_fraud_services(
        fs, transactions=TXNS, check_interval_ms=CHECK_INTERVAL_MS, latency_threshold_ms=policy_args["latency_ms"],
        consecutive=policy_args["consecutive"], recover_consecutive=policy_args["recover_consecutive"],
        policy=policy_spec, policy_args=policy_args, rate_tps=WRITE_RATE_TPS, n_cards=N_CARDS)
    api, sidecar, receiver, writer = services.api, services.sidecar, services.receiver, services.writer
    print(services)  # which pod's sidecar this notebook reads, and where each service is reached
else:
    fs = hadrlab.start_feature_store(down_after_ms=down_after_ms, cross_region_latency_ms=CROSS_REGION_MS)
    with fs.master_for() as client:
        hadrlab.write_features(client, TXNS)
    env = fs.connection_env()
    receiver = hadrlab.start_alert_receiver()
    sidecar = hadrlab.start_sidecar(env, alert_url=receiver.url + "/alerts", check_interval_ms=CHECK_INTERVAL_MS,
                                    latency_threshold_ms=policy_args["latency_ms"],
                                    consecutive=policy_args["consecutive"],
                                    recover_consecutive=policy_args["recover_consecutive"],
                                    policy=policy_spec, policy_args=policy_args)
    api = hadrlab.start_fraud_api(env, sidecar_url=sidecar.url)
    writer = hadrlab.start_feature_writer(env, rate_tps=WRITE_RATE_TPS, n_cards=N_CARDS)
print(f"feature store up in {fs.startup_s:.1f} s, primary region {fs.current_primary()}; "
      "sidecar, alert receiver, scoring API and feature writer running")
""")
md("""
**Monitoring.** A real Prometheus scrapes the scoring API's and the sidecar's `/metrics` every
second, and a real Alertmanager routes what Prometheus's rules fire to the same alert receiver: pages on
the scoring API's SLO (burn-rate alerts, as in Lab 01), tickets for causes such as a region
down. Where Prometheus is not installed, or on the cluster backend, this says why and the cells
that need it are skipped.
""")
code("""
if globals().get("mon"):  # this cell run again: stop the pair it started before
    mon.stop()
monitoring_off = hadrlab.monitoring_available()  # "" when Prometheus and Alertmanager can run here
mon = None if monitoring_off else hadrlab.start_monitoring(receiver_url=receiver.url + "/alerts")
if mon:
    mon.watch("fraud-api", [api.url])
    mon.watch("sidecar", [sidecar.url])
    mon.wait_for_targets()
print(mon if mon else f"SKIP monitoring: {monitoring_off}")
""")
md("""
One transaction scored by hand: the answer says which region served the features, and how old
they were.
""")
code("""
import httpx

txn = TXNS.iloc[-1][["card_id", "amount", "merchant_category"]].to_dict()
answer = httpx.post(api.url + "/score", json=txn, timeout=5).json()
{k: answer[k] for k in ("card_id", "decision", "features_region", "region_source", "feature_age_s")}
""")
md("""
Each of these services documents itself: open `api.url + "/docs"`, `sidecar.url + "/docs"` or
`receiver.url + "/docs"` in a browser to read and try their requests (`POST /score` with its field
limits, the sidecar's `/state` and `/history`, the receiver's `/alerts`).
""")

# ----------------------------------------------------------------------------- Experiments
md("""
## Experiment 1 · Steady state

`run_drill` runs locust against `POST /score` (`USERS` users) and, alongside, a *read probe* that
scores the transactions in turn and records the region of each answer; it also reads the feature
writer's log, Sentinel's events, the sidecar's decisions and the alerts. Here with no fault, and a
replication-lag sample five times a second: bytes the replica is behind (replication offsets), and
how long a fresh write takes to show on B.

Every drill of this lab first waits for a **steady state**: region A the primary, B a linked
replica within 64 KiB of it, and the sidecar serving reads from A. A drill that starts elsewhere
measures something else (reads already on B cannot fail over to B), so a drill that cannot reach
that state within 20 s stops with what is off instead of measuring it; each result says what it
verified (`started from ...`) and notes what it saw but was not meant to, such as a failover
during a latency spike.
""")
code("""
steady = run_drill("steady", fs=fs, api=api, sidecar=sidecar, receiver=receiver, writer=writer, duration_s=STEADY_S,
                   expect_primary="a", transactions=TXNS, users=USERS, sample_lag_ms=200)
print(steady.start_state)
hadrlab.summarize(steady.load, label="steady state, POST /score")
""")
code("""
plot_lag(steady.lag, one_way_ms=CROSS_REGION_MS, title="Replication lag in steady state, region A to region B")
""")
code("""
lag = steady.lag
print(f"lag: p50 {lag.lag_ms.median():.1f} ms, p99 {lag.lag_ms.quantile(0.99):.1f} ms; "
      f"behind by up to {lag.lag_bytes.max():,} bytes; writer: {steady.writes.ok.mean():.1%} of writes acknowledged")
""")
md("""
The lag in milliseconds is the cross-region latency plus a little; the bytes behind are the writes
of that instant. With asynchronous replication, **those writes are the RPO** if region A dies now.

## Experiment 2 · A latency spike below the threshold

Region A's network gets slower (`LATENCY_MS` each way) from `FAULT_AT_S` to `SPIKE_END_S`. Every request to A is
slower, but a healthy policy keeps reads on A: no switch, no alert.
""")
code("""
slow_a = run_drill("spike below", fs=fs, api=api, sidecar=sidecar, receiver=receiver, writer=writer, duration_s=DRILL_S,
                   fault=lambda: fs.delay_region("a", LATENCY_MS), restore=fs.heal, expect_primary="a",
                   failover_expected=False, fault_at_s=FAULT_AT_S, restore_at_s=SPIKE_END_S, transactions=TXNS,
                   users=USERS)
slow_a
""")
code("""
display(board.check_true("no flapping under a spike below the threshold",
                         lambda: (slow_a.switches(), slow_a.policy_errors),
                         lambda n: n == (0, 0), "(0 read switches, 0 policy errors)",
                         hint=hint_for(lambda: slow_a, "a check is bad only above latency_ms; is the threshold "
                                                 "above 2 x LATENCY_MS?")))
""")
md("""
## Experiment 3 · A latency spike above the threshold

Now `SPIKE_MS` each way: a PING of A takes longer than the threshold. Reads should move to B after
`consecutive` checks and come back, once, after `recover_consecutive` good checks. The alert
receiver's table shows what reached it, when, and from whom: the sidecar's own events (route
`hadrlab-sidecar`, severity `info`: a region down, reads moved) and, where Prometheus runs,
Alertmanager's `RegionDown` ticket (route `ticket`), a couple of seconds later because its rule
reads the sidecar's gauge once a second. Whether anyone should have been woken up is a different
question, answered after the drills by the scoring API's own SLO.
""")
code("""
very_slow_a = run_drill("spike above", fs=fs, api=api, sidecar=sidecar, receiver=receiver, writer=writer,
                        duration_s=DRILL_S, fault=lambda: fs.delay_region("a", SPIKE_MS), restore=fs.heal,
                        expect_primary="a", failover_expected=False, fault_at_s=FAULT_AT_S, restore_at_s=SPIKE_END_S,
                        transactions=TXNS, users=USERS)
very_slow_a
""")
code("""
very_slow_a.alerts_after_fault()[["after_s", "status", "alertname", "region", "receiver"]]
""")
code("""
display(board.check_true("reads move on a spike above the threshold, and come back once",
                         lambda: [(d["from"], d["to"]) for d in very_slow_a.decisions],
                         lambda moves: moves == [("a", "b"), ("b", "a")] and not very_slow_a.policy_errors,
                         "[('a', 'b'), ('b', 'a')]",
                         hint=hint_for(lambda: very_slow_a, "a spike above latency_ms must move reads to b; hysteresis "
                                                      "brings them back once")))
""")
md("""
## Experiment 4 · Region A partitioned from region B

Region A's proxy drops everything (a *blackhole*: no refusal, just silence) and its Sentinel is
frozen. Clients time out on A; Sentinel B and the witness agree A is down and promote B. At
`HEAL_AT_S` (after the failover) the partition heals. (On a cluster: two Chaos Mesh NetworkChaos
objects cut region A's pods off from region B and from the witness's node.)
""")
code("""
cut = run_drill("partition", fs=fs, api=api, sidecar=sidecar, receiver=receiver, writer=writer, duration_s=PARTITION_S,
                fault=lambda: fs.partition_region("a"), restore=fs.heal, expect_primary="a", failover_expected=True,
                fault_at_s=FAULT_AT_S, restore_at_s=HEAL_AT_S, transactions=TXNS, users=USERS)
cut
""")
code("""
plot_reads(cut, title="Partition of region A, then heal: each read of POST /score, by the region that served it")
""")
md("""
How to read it: the reads that hit A after the partition wait for the API's Redis timeout
(200 ms) before it tries B; once the sidecar has seen `consecutive` bad checks, reads go straight to B.
Writes stop until `+switch-master`; from then on the sidecar treats B as the primary, because the
Sentinels elected it (`PrimaryMoved` among the alerts). After the heal A answers PINGs again, but
for a few seconds **A is still the old primary**, a master nobody elected, with the data of before
the partition; then Sentinel turns it into a replica of B and it resyncs. The sidecar reports A as
a failed check all that time, so reads stay on B and `stale_reads_pct` above is about 0. A sidecar
that judged regions by PING alone would send reads back to A after the heal, to old or missing data
(this run does not measure that; in an earlier measurement on this topology about 30 % of the
drill's reads were then stale). Health is not freshness.
""")
code("""
read_bound_s = expected_read_rto_s + READ_RTO_SLACK_S
display(board.check_true("read RTO of a partition within your policy's bound", lambda: cut.read_rto_s,
                         lambda s: s is not None and s <= read_bound_s and not cut.policy_errors,
                         f"<= {read_bound_s:.2f} s", unit="s",
                         hint=hint_for(lambda: cut, f"reads must move to b within about {expected_read_rto_s:.2f} s "
                                              f"(see the policy settings) + READ_RTO_SLACK_S", read_rto=True)))
""")
md("""
Where did the partition's write RTO go? Sentinel's steps and the feature writer's, in seconds from
the fault (the kill drill below fills in the same table for a crash):
""")
code("""
cut.failover_steps().to_frame()
""")
md("""
### Fail back

Region B is the primary now. `fail_back` makes A the primary again: it waits until A is a linked
replica of B, then asks a Sentinel for `SENTINEL FAILOVER`. That command *forces* a failover, as
if the primary were unreachable, without asking the other Sentinels to agree and without pausing
writes: whatever B acknowledges until it is demoted, and whatever A had not received yet, is lost.
And B is demoted late. Sentinel promotes A at once, but converts B into A's replica only after B
has gone on claiming to be a master for a while (Sentinel waits, so as not to flap on a stale
report): about ten seconds here, between `+switch-master` and `+convert-to-slave` below. All that
time B accepts writes, and a client whose connection to B stays open keeps writing there
(redis-py's `master_for` asks the Sentinels again only when it opens a new connection): a split
brain of your own making, and every write it takes is lost when B is demoted.
The coordinated switchover that loses no acknowledged write is Redis's own `FAILOVER` command
(Redis 6.2+, sent to the primary): it pauses writes on the primary until the replica has caught
up, then swaps their roles. This lab does not use it: here the Sentinels own the roles.

Right after the switch, `cards_behind` compares every card's features on the new primary with
the newest write the writer was told was acknowledged: a card behind lost that write. Readers see
such a loss only until the card's next transaction, because the writer rewrites a card's whole
feature hash each time; the drills below therefore count as stale only reads that missed a write
acknowledged *during* the drill.
""")
code("""
began = time.time()
took_s = fail_back(fs, "a")
print(f"region {fs.current_primary()} is the primary again, {took_s:.1f} s later")
behind = cards_behind(fs, writer)  # reads the new primary now, then waits 1 s for the writer's log
events = fs.events(since=began)
promoted = events.loc[events["kind"] == "+switch-master", "t"].min()
demoted = events.loc[(events["kind"] == "+convert-to-slave") & (events["t"] > promoted), "t"].min()
print(f"B was demoted {demoted - promoted:.1f} s after A was promoted, and took writes until then"
      if pd.notna(promoted) and pd.notna(demoted) else "no +convert-to-slave of B seen after +switch-master")
print(f"{len(behind)} of {N_CARDS} cards lost their newest acknowledged write in the switch"
      + (f" (up to {int((behind.acked_seq - behind.stored_seq).max())} writes behind)" if len(behind) else ""))
""")
md("""
## Experiment 5 · The primary is killed

`SIGKILL` of region A's Redis, with every connection through its proxy reset, as when a machine
dies. Connections to A are now *refused*, which the API notices at once, long before Sentinel
does. The write RTO is measured by the feature writer: the first write acknowledged by the new
primary after the kill. (On a cluster: `DEBUG SEGFAULT` inside the pod, a real crash; the
kubelet restarts the container, empty, after the manifest's `RESTART_DELAY_S`.)
""")
code("""
crash = run_drill("kill", fs=fs, api=api, sidecar=sidecar, receiver=receiver, writer=writer, duration_s=KILL_S,
                  fault=fs.kill_primary, expect_primary="a", failover_expected=True, fault_at_s=FAULT_AT_S,
                  transactions=TXNS, users=USERS)
crash
""")
code("""
hadrlab.plot_timeline(crash.load, fault_t={"kill": crash.fault_t}, events=crash.signals(),
                      title=f"Primary killed: locust's {USERS} users on POST /score; Sentinel and sidecar events dotted")
""")
md("""
The scoring API barely notices: reads fail over per request (a refused connection costs
nothing) and then by the sidecar's decision. Writes are another story: the writer's
`failed_writes` above all fall between the kill and `+switch-master`.
""")
code("""
display(board.check_true("write RTO of a kill within the target", lambda: crash.write_rto_s,
                         lambda s: s is not None and s <= WRITE_RTO_TARGET_S, f"<= {WRITE_RTO_TARGET_S} s",
                         unit="s", hint=f"writes fail over when Sentinel promotes B, about down_after + "
                                        f"{FAILOVER_OVERHEAD_S} s: choose a smaller down_after_ms in Exercise 1"))
print(f"measured: write RTO of the kill = down-after + {crash.write_rto_s - down_after_ms / 1000:.2f} s")
""")
md("""
A crash and a partition side by side; compare the rows. Both wait `down-after` for `+sdown`, but
a silent server is declared down only once a PING has gone unanswered for `down-after`, and
Sentinel sends its PINGs about once a second: after a cut, the count can start up to a second late
(compare the `+sdown` rows). From `+sdown` to `+odown` the witness Sentinel asks the others (about once a second) whether they
see A down too: an answer that arrives one round late adds up to a second, in either drill (in a
partition only Sentinel B can answer, Sentinel A being cut off). What a partition adds every time
is the writer's wait. After a crash a connection to A is *refused* at once, so the writer asks the
Sentinels again and again and finds B moments after `+switch-master`. In a partition A is *silent*:
each attempt waits for the writer's socket timeout (0.5 s, and redis-py tries 4 times), so its
first write after the fault fails only after about 2.3 s (the longest failed write), and the write
that reaches B was often sent before `+switch-master` and first waited on A.
""")
code("""
steps = pd.concat([cut.failover_steps(), crash.failover_steps()], axis=1)
steps.loc["write RTO target"] = WRITE_RTO_TARGET_S
steps
""")
md("""
So `down-after + FAILOVER_OVERHEAD_S` is the write RTO of a crash. A partition adds the clients'
timeouts and can miss the target that a crash meets, as it may have in your run: to meet the target
in a partition too, choose a smaller `down-after` or a shorter client timeout (each has its price:
false failovers, failed writes on a slow network). The chart at the end draws the target.
""")
md("""
### A false alarm right after the promotion

What did the Sentinels do in the second after they promoted B? This run's events:
""")
code("""
after_kill = fs.events(since=crash.fault_t)
switched = after_kill.loc[after_kill["kind"] == "+switch-master", "t"].min()
new_down = after_kill[(after_kill["kind"] == "+sdown") & after_kill["detail"].str.startswith("master")
                      & (after_kill["t"] > switched)]
if len(new_down):
    print(f"+sdown of the NEW primary {new_down['t'].min() - switched:.2f} s after +switch-master "
          f"(down-after {down_after_ms} ms); then (+odown: a quorum of Sentinels agreed):")
    print(after_kill[after_kill["t"] >= new_down["t"].min()].drop_duplicates("kind")[["kind", "source"]]
          .head(6).to_string(index=False))
else:
    print(f"no +sdown of the new primary after +switch-master in this run (down-after {down_after_ms} ms)")
""")
md("""
If your run shows a `+sdown` of the new primary, the Sentinels briefly believed the primary they had
just elected was down. It was not: right after a switch each Sentinel reconnects to the new
primary, at most once a second, while its down-after timer for it is already running. With a
down-after of a second or less the timer can win. Usually the failover that follows finds no
replica fit to promote and gives up (`-failover-abort-no-good-slave`). But if the old primary has
come back by then, empty and already counted as a replica, the Sentinels can promote **it**, and
the real primary resyncs from an empty server: every key gone. (Measured while this lab was
built, not in this run: one trial in five of the RPO scenario below ended that way, with a
down-after of 900 ms.) So the restart below first waits until
every Sentinel names one primary, connected, with no flag but `master`
(`fs.wait_until_settled()`, on the local backend); on a cluster the manifest's restart delay does
the same. In
production: a down-after comfortably above a second, and persistence, so that a restarted server
is never empty.
""")
md("""
### The old primary returns: split brain

Restart A's Redis as a crashed machine would come back: **empty**, with its original config, so a
*master*. Until a Sentinel notices and sends `REPLICAOF`, a client that still writes to A's
address (a stale DNS entry, a hard-coded config) has its writes accepted, and lost. (On a
cluster the kubelet has already restarted it; this cell watches it, and reads the times from
the server's log and Sentinel's events.)
""")
code("""
returned = fs.restart_old_primary()
returned
""")
md("""
Meanwhile the scoring API read nothing from A: the sidecar follows the Sentinels (region B is its
primary now) and judged A by its `INFO replication`, not by its PING. Its verdicts on A's checks
since the restart:
""")
code("""
def verdict(check):
    if check["ok"]:
        return "fit: a linked replica of B"
    for words, label in (("did not elect", "a master nobody elected"), ("full sync", "a replica in a full sync"),
                         ("link", "a replica not linked yet")):
        if words in check["error"]:
            return "unfit: " + label
    return "unreachable"

seen = httpx.get(sidecar.url + "/history", params={"since": returned.started_at}, timeout=5).json()
state = httpx.get(sidecar.url + "/state", timeout=5).json()
print(f"sidecar: primary region {state['primary']['region']}, reads on region {state['read_region']}")
pd.Series([verdict(h) for h in seen if h["region"] == "a"], dtype=object).value_counts()
""")

md("""
### Who gets paged? The scoring API's SLO, from Prometheus

Four faults in a row, and the sidecar reported every one of them: a region down, reads moved, a
new primary. Should someone have been paged for them? A page is for a **symptom** users feel
and that needs a human now; the users of this service are the callers of `POST /score`. Its SLI
is the share of answers that are not `5xx`, recorded by Prometheus from the API's own counter
(`fraud_api_requests_total`), and the page is the SRE workbook's burn-rate alert on a 99.9 %
SLO: both the 1 h and the 5 min windows (48 s and 4 s at this lab's time scale) spending the
budget more than 14.4 times too fast (the dashed line), or both the 6 h and 30 min windows more
than 6 times. The causes still reach someone, as a **ticket** (`RegionDown`, a Prometheus rule on
the sidecar's `sidecar_region_up` gauge), to be looked at in working hours. This SLI counts
failed reads only: the writes the fail back lost, and stale features, need SLIs of their own
(freshness, acknowledged writes), which this lab measures in its drills instead.
""")
code("""
import matplotlib.pyplot as plt

if mon:
    drills = [slow_a, very_slow_a, cut, crash]
    first, last = drills[0].started_at, drills[-1].ended_at
    sli = mon.availability("fraud-api", first, last)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 5.6), sharex=True, height_ratios=[3, 2])
    faults = {d.name: d.fault_t for d in drills}
    mon.plot({"5 min window (4 s here)": 'service:error_ratio:rate5m{service="fraud-api"}',
              "1 h window (48 s here)": 'service:error_ratio:rate1h{service="fraud-api"}'},
             first, last, ax=top, percent=True, ylabel="5xx ratio", marks=faults,
             title=f"POST /score through four faults: {int(sli['requests'])} answers, {int(sli['failures'])} 5xx "
                   f"(Prometheus; windows in lab time)")
    page_line = 100 * 14.4 * 0.001
    top.axhline(page_line, color="red", linewidth=1, linestyle="--")
    top.annotate("page: both windows above 14.4 x budget", (0.55, page_line), xycoords=("axes fraction", "data"),
                 va="bottom", fontsize=8, color="red")
    top.set_ylim(0, max(top.get_ylim()[1], 1.5 * page_line))
    top.set_xlabel("")
    mon.plot({"region A up": 'sidecar_region_up{region="a"}', "reads on region B": 'sidecar_read_region{region="b"}'},
             first, last, ax=bottom, ylabel="0 or 1",
             title="The causes, as the sidecar's gauges saw them (scraped once a second: steps up to ~2 s late)")
    for t in faults.values():
        bottom.axvline(t - first, color="grey", linestyle=":", linewidth=1)
    bottom.set_ylim(-0.1, 1.1)
    fig.tight_layout()
else:
    print(f"SKIP: {monitoring_off}")
""")
code("""
if mon:
    time.sleep(2)  # Alertmanager's group_wait: let the last notification arrive
    rows = [{"at_s": round(a["t"] - first, 1), "status": a["status"], "alert": a["alertname"],
             "severity": (a.get("labels") or {}).get("severity", ""),
             "from": f"Alertmanager, route {a['receiver']}" if a["receiver"] in ("page", "ticket")
             else "the sidecar, directly"}
            for a in hadrlab.fetch_alerts(receiver) if first <= a["t"] <= last + 5]
    pages = [r for r in rows if r["from"] == "Alertmanager, route page" and r["status"] == "firing"]
    tickets = [r for r in rows if r["from"] == "Alertmanager, route ticket" and r["status"] == "firing"]
    print(f"{len(rows)} notifications during the four drills; {len(pages)} pages, {len(tickets)} tickets; "
          f"POST /score availability "
          f"{100 * sli['availability']:.3f} % over {int(sli['requests'])} answers (Prometheus)")
    if rows:  # one line per kind of notification: how many, and when the first arrived
        display(pd.DataFrame(rows).groupby(["from", "severity", "alert", "status"])
                .agg(notifications=("at_s", "size"), first_at_s=("at_s", "min")))
    else:
        print("no notification")
""")
code("""
if not monitoring_off:  # not `if mon:`: a check whose cells stopped at an error must still read FAIL
    display(board.check_true("no page for faults the sidecar healed, a ticket for their cause",
                             lambda: (len(pages), len(tickets), int(sli["requests"])),
                             lambda m: m[0] == 0 and m[1] > 0 and m[2] > 0,
                             "(0 pages, >= 1 ticket through Alertmanager, > 0 answers counted by Prometheus)",
                             hint="the scoring API kept its SLO, so its burn-rate alert should stay quiet, while "
                                  "RegionDown reaches the ticket route; a page means POST /score answered 5xx "
                                  "(look at the drills' failed_reads), no ticket that Alertmanager delivered "
                                  "nothing (look at mon.alerts())"))
else:
    display(board.skip("no page for faults the sidecar healed, a ticket for their cause", monitoring_off))
""")
md("""
How to read it: the sidecar's gauges (bottom) record every cause, and the tickets name them, but
the SLI (top) stayed under the dashed line, flat at 0 % in most runs: reads found a healthy
region each time (the scoring API also tries the other region for a read that times out), so the
error budget was not spent and nobody was woken up. That is the point of symptom-based alerting.
A page per failover would have woken someone for each of these faults, all healed within
seconds, and on-call engineers learn to ignore pages that never need them. The day reads cannot
find a healthy region, the 5xx ratio crosses the line and the page fires: within seconds at
this lab's time scale (Lab 01 measured it: `burn_alert_fire_delay_ratio` in `bench/`), within
about a minute in production, where the 1 h window needs that long to reach 14.4 times the
budget even when every request fails.
""")

# ----------------------------------------------------------------------------- RPO
md("""
## Experiment 6 · RPO: acknowledged writes lost, async vs `WAIT`

The drills are over: stop their store and services first, so that the trials have the machine to
themselves. Then a fresh store per trial, `RPO_LATENCY_MS` each way on A's link (so the replica really lags), a
writer in region A writing sequence-numbered keys at `RPO_WRITES_PER_S`; then region A dies.
(On a cluster the replica is also frozen, so that it really falls behind, and the writer is a
Job in the primary's region, whichever it is by then: the async trial reuses the drills' store,
whose settings it does not change.) Every acknowledged sequence number missing on the promoted
replica is a lost write. With `WAIT 1`,
a write is acknowledged only once the replica has it. The `WAIT` store also runs with
`min-replicas-to-write 1`: watch what its old primary does when it comes back.
""")
code("""
fs.stop()
for child in (writer, api, sidecar, receiver):
    child.stop()
if mon:
    mon.stop()
print("drill store, services and monitoring stopped")
""")
code("""
def rpo_trial(mode, **store_options):
    # Backend-specific: on a cluster the replica lags because it is frozen (DEBUG SLEEP) on top of
    # the delay: a delayed node's kernel still delivers what it queued (infra/kind/README.md).
    if hadrlab.backend_name() == "kube":
        store = hadrlab.start_kube_feature_store(down_after_ms=down_after_ms, cross_region_latency_ms=RPO_LATENCY_MS,
                                                 **store_options)
        trial = lambda: store.measure_rpo(mode=mode, writes_per_s=RPO_WRITES_PER_S, duration_s=2, lag_fault="pause")
    else:
        store = hadrlab.start_feature_store(down_after_ms=down_after_ms, **store_options)
        trial = lambda: hadrlab.measure_rpo(store, mode=mode, writes_per_s=RPO_WRITES_PER_S, duration_s=2,
                                            lag_fault="latency", latency_ms=RPO_LATENCY_MS)
    try:
        result = trial()
        back = store.restart_old_primary() if store_options else None
    finally:
        store.stop()
    return result, back

rpo_async, _ = rpo_trial("async")
rpo_async
""")
code("""
rpo_wait, guarded_return = rpo_trial("wait", min_replicas_to_write=1)
display(rpo_wait)
guarded_return
""")
code("""
display(board.check_true("zero acknowledged writes lost with WAIT", lambda: (rpo_wait.acknowledged, rpo_wait.lost_acknowledged),
                         lambda r: r[0] > 0 and r[1] == 0, "(> 0 acknowledged, 0 lost)",
                         hint="measure_rpo(store, mode='wait', ...): WAIT confirms each write reached the replica"))
""")
md("""
### Exercise 3 · Async or `WAIT`?

The fraud team's requirement: **no acknowledged feature write may be lost** in a regional failover,
and one write may take at most **`WRITE_BUDGET_MS`**. From the trials above, compute
`wait_write_ms`, the mean time of one write with `WAIT` (the trial wrote for 2 s; `rpo_wait.attempted`
writes were sent one after the other), and set `replication_mode` to `"wait"` or `"async"`:
`"wait"` if it meets both requirements, `"async"` if the budget rules it out (and say so to the
fraud team).
""")
code("""
# BEGIN SOLUTION compute wait_write_ms and set replication_mode
wait_write_ms = 2000 / max(1, rpo_wait.attempted)
meets_rpo = rpo_wait.lost_acknowledged == 0
replication_mode = "wait" if meets_rpo and wait_write_ms <= WRITE_BUDGET_MS else "async"
# END SOLUTION
print(f"WAIT: {wait_write_ms:.0f} ms per write (budget {WRITE_BUDGET_MS} ms), "
      f"{rpo_wait.lost_acknowledged} lost; async: {rpo_async.lost_acknowledged} lost -> {replication_mode}")
""")
code("""
expected_mode = lambda: "wait" if 2000 / max(1, rpo_wait.attempted) <= WRITE_BUDGET_MS else "async"
display(board.check_true("replication mode for RPO 0 within the budget", lambda: replication_mode,
                         lambda mode: mode == expected_mode(), "'wait' if a WAIT write fits the budget, else 'async'",
                         hint="only WAIT loses no acknowledged write; it fits if one write takes <= WRITE_BUDGET_MS"))
""")

# ----------------------------------------------------------------------------- Results
md("""
## Results side by side

One row per fault. RTOs count from the fault: *read* until a read served by region B within the
API's latency budget, *write* until the first write acknowledged by the new primary (for the RPO
trials: Sentinel's failover). *Stale reads* missed a write already acknowledged to the writer.
""")
code("""
table = summary_table([slow_a, very_slow_a, cut, crash], [rpo_async, rpo_wait])
table
""")
code("""
plot_dr_summary([very_slow_a, cut, crash], [rpo_async, rpo_wait], write_rto_target_s=WRITE_RTO_TARGET_S,
                title=f"Feature-store DR: down-after {down_after_ms} ms, sidecar every {CHECK_INTERVAL_MS} ms")
""")

# ----------------------------------------------------------------------------- Checks
md("""
## Checks

Your score for this lab. Every line says PASS or FAIL; a FAIL's hint is in the check's own cell above.
""")
code("""
# NBVAL_CHECK_OUTPUT
board.summary()
""")

# ----------------------------------------------------------------------------- Reflection
md("""
## Reflection

A short quiz on replication, `WAIT`, Sentinel and managed alternatives (immediate feedback).
""")
nb.quiz("02")
md("""
**Question.** Explain the trade-off you made in Exercise 3 to the fraud team, with your numbers:
what does `WAIT` buy, what does it cost, and what does it still not guarantee? What would you
change if the regions were 80 ms apart?

<!-- BEGIN SOLUTION -->
*Model answer.* With asynchronous replication a write is acknowledged as soon as region A has it;
everything written in the last *lag* (here about the cross-region latency) is lost if A dies: the
async trial lost the newest few dozen acknowledged writes, exactly those the replica had not
received. `WAIT 1` makes the client wait until the replica has the write, so a failover to B loses
no *acknowledged* write (0 in the trial); a write whose `WAIT` timed out is reported as unconfirmed,
so the writer knows to retry it. The cost is a cross-region round trip per write (about
2 × latency) and the throughput that goes with it; it fits a `WRITE_BUDGET_MS` budget here. It is
not strong consistency: `WAIT` does not roll back a write the replica never got, reads from B can
still be stale, and a returning old primary can take writes unless `min-replicas-to-write` stops
it. At 80 ms apart a write costs 160 ms or more: pipeline writes (`SET`s then one `WAIT`), batch
per card, keep `WAIT` for the features that decide money and async for the rest, or move the
writer next to a nearer replica.
<!-- END SOLUTION -->
""")

# ----------------------------------------------------------------------------- Cleanup
md("""
## Cleanup

Stop everything this notebook started (feature stores, services), whatever cells ran.
""")
code("""
print("processes stopped:", hadrlab.stop_children())
""")


if __name__ == "__main__":
    nb.write()
