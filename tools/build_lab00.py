"""Write solutions/00_foundations.ipynb from the cell texts below (without outputs).

The notebook is the source of truth once written: edit it directly, or edit this script and
re-run it, then execute the notebook to refresh its outputs:

    .venv/bin/python tools/build_lab00.py
    cd solutions && HADRLAB_HOME=/tmp/lab00home MPLBACKEND=Agg \
        ../.venv/bin/jupyter nbconvert --to notebook --execute --inplace 00_foundations.ipynb
"""

from __future__ import annotations

import sys
from pathlib import Path

from notebook_builder import NotebookBuilder


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hadrlab.reliability import WINDOWS_S, downtime_budget, format_duration  # noqa: E402

OUT = ROOT / "solutions" / "00_foundations.ipynb"


def nines_table() -> str:
    """The nines and their downtime budgets, computed rather than typed."""
    lines = ["| SLO | per month (30 d) | per quarter (91 d) | per year (365 d) |", "| --- | --- | --- | --- |"]
    for slo in (0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999):
        cells = [format_duration(downtime_budget(slo, w)) for w in ("month", "quarter", "year")]
        lines.append(f"| {slo * 100:g}% | " + " | ".join(cells) + " |")
    assert WINDOWS_S["month"] == 30 * 86400
    return "\n".join(lines)


nb = NotebookBuilder("lab00", OUT)
md, code = nb.md, nb.code


# ----------------------------------------------------------------------------- Objectives
md("""
# Lab 00 · Foundations: nines, budgets, and what replication costs

**Objectives.** By the end of this lab (about 30 minutes) you can:

1. compute the downtime budget of an SLO for a month, a quarter and a year, and the error
   budget for a number of requests (99.95% of a 30-day month = **21.6 min**);
2. compute the availability of a serving path with parts in series and replicas in parallel,
   and the number of replicas a target needs;
3. compute a burn rate and how long the error budget lasts at that rate;
4. **measure**, on two real `redis-server` processes, the write latency (p50, p99) and
   throughput of asynchronous replication against `WAIT`-acknowledged writes, and the
   replication lag;
5. choose a replication mode for a stated RPO and latency budget, and say why.

Every exercise has a graded check; the **Checks** section sums them up.
""")

# ----------------------------------------------------------------------------- Concepts
md(r"""
## Concepts (one screen)

```
            last copy that                  disaster           service back
            reached safety                     │                    │
  ─────────────●───────────────────────────────✖────────────────────●──────▶ time
               │◀──────── RPO: data lost ─────▶│◀── RTO: downtime ─▶│
```

- **RTO** (recovery time objective): how long the service may be down after a disaster.
  **RPO** (recovery point objective): how much recent data may be lost, as a window of time.
- **SLI** = what you measure (share of `/predict` calls answering 2xx in < 300 ms);
  **SLO** = the target for it (99.95% over 30 days); **SLA** = the contract and its penalty.
- **Error budget** = 1 − SLO: 0.05% of a month is 21.6 min, or 500 failures per million requests.
  **Burn rate** = error rate ÷ (1 − SLO): 1.0 spends exactly the budget; 14.4 empties a month in ~2 days.
- **MTBF/MTTR**: availability = MTBF ÷ (MTBF + MTTR); halving repair time buys as much as doubling uptime.
- **Series** (all parts needed): A = a₁·a₂·…·aₙ, below the weakest part.
  **Parallel** (one of n replicas is enough): A = 1 − (1 − a)ⁿ, assuming independent failures.
- **Active-active**: every copy serves traffic; a failure only removes capacity.
  **Active-passive**: a standby takes over after detection and promotion (RTO > 0).
- **Synchronous** replication acknowledges a write once a replica has it (RPO ≈ 0, slower writes);
  **asynchronous** acknowledges first and ships later (fast; RPO = the lag at the moment of failure).
  Redis is asynchronous; `WAIT n timeout_ms` lets a client wait for n replicas, per write.
- **Business impact analysis**: for each service, what an hour of downtime and a minute of lost
  data cost (money, users, regulators). It sets RTO and RPO per service, and therefore how much
  redundancy is worth paying for: a fraud model that misses transactions is not a batch report.

""" + nines_table())

# ----------------------------------------------------------------------------- Parameters
md("""
## Parameters

The run-time knobs of this lab. Keep them small: the whole notebook runs in under a minute.
A grader may override them, so the code below always reads them, never assumes their values.
""")
code("""
WRITES = 2000          # timed writes per replication mode
VALUE_BYTES = 1024     # size of each written value, bytes
WAIT_TIMEOUT_MS = 100  # the most one WAIT may block, ms
LAG_SAMPLES = 200      # writes timed for replication lag
""", tags=["parameters"])

# ----------------------------------------------------------------------------- Setup
md("""
## Setup

`hadrlab` does the plumbing: it starts real servers on free loopback ports, with passwords,
and stops them when you are done. `board` records your graded checks.
""")
code("""
%matplotlib inline
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import hadrlab

board = hadrlab.Scoreboard("00")
print("hadrlab", hadrlab.__version__)
""")

# ----------------------------------------------------------------------------- Experiment 1
md("""
## Experiment 1 · The nines, in time

Pick an SLO, or type one (`99.95`, `99.95%` or `0.9995`), and read how much downtime it allows.
Try 99.9% and 99.99%: one more nine divides the budget by ten.
""")
code("""
hadrlab.downtime_calculator()
""")
md("""
The arithmetic behind it is one line: the allowed downtime is (1 − SLO) × window. In code, with
fractions, never percents:
""")
code("""
MONTH_S = 30 * 24 * 3600  # this course uses a 30-day month, a 91-day quarter, a 365-day year

def downtime_minutes(slo, window_s=MONTH_S):
    return (1 - slo) * window_s / 60

print(f"99.9% -> {downtime_minutes(0.999):.1f} min/month;  99.99% -> {downtime_minutes(0.9999):.2f} min/month")
print(f"the package agrees: {hadrlab.downtime_budget(0.999, 'month') / 60:.1f} min")
""")

# ----------------------------------------------------------------------------- Exercise 1
md("""
### Exercise 1 · An error budget

Your model API has an SLO of **99.95%** over a 30-day month.
Compute `budget_minutes`, the monthly downtime budget in minutes, and `allowed_failures`,
how many of **10 million** requests in that month may fail.
""")
code("""
# BEGIN SOLUTION compute budget_minutes and allowed_failures
budget_minutes = (1 - 0.9995) * MONTH_S / 60
allowed_failures = (1 - 0.9995) * 10_000_000
# END SOLUTION
print(f"{budget_minutes:.1f} min per month, {allowed_failures:,.0f} failed requests allowed")
""")
code("""
display(board.check_close("monthly budget of 99.95%", lambda: budget_minutes, 21.6, tol=0.05, unit="min",
                          hint="(1 - SLO) x 30 days, in minutes; use 0.9995, not 99.95"))
display(board.check_close("allowed failures of 10M requests", lambda: allowed_failures, 5000, tol=1,
                          hint="(1 - SLO) x number of requests"))
""")

# ----------------------------------------------------------------------------- Exercise 2
md("""
### Exercise 2 · Burn rate

An SLO of 99.9% over 30 days. In the last hour, **0.5%** of requests failed. Compute `burn`,
the burn rate, and `days_left`, how many days a full monthly budget would last at that rate.
""")
code("""
# BEGIN SOLUTION compute burn (error rate / error budget) and days_left
burn = 0.005 / (1 - 0.999)
days_left = 30 / burn
# END SOLUTION
print(f"burn rate {burn:.1f}: a full budget lasts {days_left:.1f} days")
""")
code("""
display(board.check_close("burn rate at 0.5% errors", lambda: burn, 5.0, tol=0.01,
                          hint="burn rate = error rate / (1 - SLO) = 0.005 / 0.001"))
display(board.check_close("days until the budget is gone", lambda: days_left, 6.0, tol=0.01, unit="days",
                          hint="a 30-day budget spent 5 times too fast lasts 30 / 5 days"))
""")

# ----------------------------------------------------------------------------- Experiment 2
md("""
## Experiment 2 · A serving path, part by part

A request crosses a load balancer, then any one of the model replicas, then the feature store.
Change the parts: add replicas, give the feature store a replica, drop the load balancer.
Which part limits the whole path? Does a fourth model replica help?
""")
code("""
hadrlab.path_calculator()
""")

# ----------------------------------------------------------------------------- Exercise 3
md("""
### Exercise 3 · Series and parallel

1. Compute `path_availability` for the default path above (load balancer 99.99%, **3** model
   replicas of 99.5% each, feature store 99.9%) with the two formulas, not with `hadrlab`.
2. Another team runs replicas of **97%** each behind a 99.99% load balancer and a 99.95% feature
   store. Compute `replicas_for_999`, the fewest replicas for the path to reach **99.9%**, and
   `can_reach_9999`: can *any* number of replicas bring this path to 99.99%? (`True`/`False`)
""")
code("""
# BEGIN SOLUTION compute path_availability, replicas_for_999 and can_reach_9999
path_availability = 0.9999 * (1 - (1 - 0.995) ** 3) * 0.999
replicas_for_999 = next(n for n in range(1, 20) if 0.9999 * (1 - 0.03 ** n) * 0.9995 >= 0.999)
can_reach_9999 = 0.9999 * 0.9995 >= 0.9999  # the serial parts alone cap the path
# END SOLUTION
print(f"{path_availability:.4%}, {replicas_for_999} replicas, 99.99% reachable: {can_reach_9999}")
""")
code("""
display(board.check_close("availability of the serving path", lambda: path_availability, 0.998900, tol=1e-6,
                          hint="series: multiply; 3 replicas in parallel: 1 - (1 - 0.995)**3"))
display(board.check_equal("replicas of 97% for a 99.9% path", lambda: replicas_for_999, 3,
                          hint="try n = 1, 2, 3 ... with 0.9999 * (1 - 0.03**n) * 0.9995"))
display(board.check_equal("can replicas reach 99.99%?", lambda: can_reach_9999, False,
                          hint="replicas only improve one part; the others are in series"))
""")

# ----------------------------------------------------------------------------- Experiment 3
md("""
## Experiment 3 · What replication costs, measured on real Redis

A feature store keeps a copy of every feature in a second region. Here both "regions" are
`redis-server` processes on this machine: a **primary** and a **replica** that follows it.

*Steady state*: start the pair and check that the replica is linked.
""")
code("""
pair = hadrlab.start_redis_pair()
link = pair.replica.info("replication")["master_link_status"]
print(f"replica link: {link}; replicas seen by the primary: "
      f"{pair.primary.info('replication')['connected_slaves']}")
""")
md("""
One write by hand. `SET` returns as soon as the **primary** has the value: that is asynchronous
replication. `WAIT 1 <timeout_ms>` then blocks until **one replica** confirms it has everything
written so far, and returns how many replicas did (0 after the timeout).
""")
code("""
primary, replica = pair.primary.client(), pair.replica.client()
primary.set("feature:user:42:avg_amount", "37.20")
acked_by = primary.wait(1, WAIT_TIMEOUT_MS)
print("WAIT returned", acked_by, "| the replica reads:", replica.get("feature:user:42:avg_amount"))
""")
md("""
Now time `WRITES` writes of `VALUE_BYTES` bytes each, one client, one write at a time: first
`SET` alone, then `SET` followed by `WAIT 1`.
""")
code("""
async_result = hadrlab.measure_write_latency(pair, writes=WRITES, value_bytes=VALUE_BYTES, mode="async")
async_result
""")
code("""
wait_result = hadrlab.measure_write_latency(pair, writes=WRITES, value_bytes=VALUE_BYTES, mode="wait",
                                            wait_replicas=1, wait_timeout_ms=WAIT_TIMEOUT_MS)
wait_result
""")
code("""
table = pd.DataFrame([r.as_row() for r in (async_result, wait_result)]).set_index("mode")
table
""")
md("""
The whole distribution, not just two numbers. A cumulative distribution (CDF) shows, for each
latency on the x axis, the share of writes that were at least that fast; the dotted lines
mark the medians.
""")
code("""
def plot_latency_cdf(results):
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for r in results:
        xs = np.sort(r.latencies_ms)
        line, = ax.plot(xs, np.arange(1, len(xs) + 1) / len(xs), label=f"{r.label}: p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms")
        ax.axvline(r.p50_ms, color=line.get_color(), linestyle=":", linewidth=1)  # the median
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(lambda x, _: f"{x:g}")  # 0.1, 1, 10 rather than 10^-1
    ax.set_xlabel("write latency (ms, log scale)")
    ax.set_ylabel("share of writes at most this slow")
    ax.set_title(f"Redis write latency, {results[0].writes} writes of {results[0].value_bytes} B, one client")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    plt.close(fig)  # shown once, as this cell's result, and never again
    return fig

plot_latency_cdf([async_result, wait_result])
""")
md("""
*Replication lag*: write a timestamped key on the primary, then read the replica until it
appears. How long after the primary acknowledged a write could the replica serve it?
""")
code("""
lag = hadrlab.measure_replication_lag(pair, samples=LAG_SAMPLES)
lag
""")
md("""
**What it means for RPO.** With asynchronous replication the writes at risk when the primary
dies are those acknowledged but not yet on the replica: roughly *lag × write rate*.
""")
code("""
at_risk = lag.p99_ms / 1000 * async_result.ops_per_s
print(f"p99 lag {lag.p99_ms:.2f} ms x {async_result.ops_per_s:,.0f} writes/s = about {at_risk:.1f} writes at risk")
print(f"WAIT mode: {wait_result.unacknowledged} of {wait_result.writes} writes not confirmed by a replica")
""")
md("""
On loopback the median lag is a fraction of a millisecond (a busy CPU stretches the tail), and
even that overstates the loss: measured on a 2-core Linux machine with this same set-up, killing
the primary lost **no** acknowledged writes, because bytes already sent sit in the kernel's TCP buffers and still reach the replica.
Loss appeared only when the replica fell further behind than those buffers: freezing it for ~3 s
under heavy writes lost ~60% of that window's acknowledged writes with asynchronous replication,
and **none** with `WAIT 1 100` (the client was told exactly which writes were not replicated).
Real regions are tens of milliseconds apart; **Lab 02 makes the lag real** by injecting it.
`WAIT` is the price of RPO = 0: every write pays one replica round trip.
""")

# ----------------------------------------------------------------------------- Exercise 4
md("""
### Exercise 4 · Read your own measurements

From `async_result.latencies_ms` and `wait_result.latencies_ms` (numpy arrays, one value per
write, in ms), compute `async_p50_ms`, `wait_p50_ms`, and `wait_cost_ratio` = how many times
slower the median `WAIT` write was. Use the numbers of *this* run.
""")
code("""
# BEGIN SOLUTION compute async_p50_ms, wait_p50_ms and wait_cost_ratio from the latencies
async_p50_ms = float(np.percentile(async_result.latencies_ms, 50))
wait_p50_ms = float(np.percentile(wait_result.latencies_ms, 50))
wait_cost_ratio = wait_p50_ms / async_p50_ms
# END SOLUTION
print(f"async p50 {async_p50_ms:.3f} ms, WAIT p50 {wait_p50_ms:.3f} ms: x{wait_cost_ratio:.1f}")
""")
code("""
display(board.check_close("async p50 from this run", lambda: async_p50_ms, async_result.p50_ms, tol=1e-6, unit="ms",
                          hint="np.percentile(async_result.latencies_ms, 50)"))
display(board.check_true("WAIT p50 above async p50", lambda: wait_p50_ms - async_p50_ms, lambda d: d > 0, "> 0 ms",
                         hint="WAIT adds a round trip to the replica on every write"))
display(board.check_true("measured with this notebook's parameters",
                         lambda: {(r.writes, r.value_bytes) for r in (async_result, wait_result)},
                         lambda s: s == {(WRITES, VALUE_BYTES)}, f"{WRITES} writes of {VALUE_BYTES} B",
                         hint="pass writes=WRITES and value_bytes=VALUE_BYTES"))
""")

# ----------------------------------------------------------------------------- Exercise 5
md("""
### Exercise 5 · Pick a replication mode

Answer `"async"` or `"wait"` for each service, given your measurements above.

1. `mode_for_payments`: a fraud model's feature store records each card payment. The business
   impact analysis says: **no acknowledged write may be lost** if the primary dies (RPO = 0
   acknowledged writes); the write path may spend up to 5 ms.
2. `mode_for_clicks`: a click-stream counter for recommendations. Losing the last second of
   clicks is harmless; its write budget is **tighter than one round trip to the other region**.
""")
code("""
# BEGIN SOLUTION set mode_for_payments and mode_for_clicks to "async" or "wait"
mode_for_payments = "wait"
mode_for_clicks = "async"
# END SOLUTION
""")
code("""
display(board.check_equal("mode for RPO = 0 acknowledged writes", lambda: mode_for_payments, "wait",
                          hint="only WAIT tells the client that a replica has the write"))
display(board.check_equal("mode for a tight latency budget", lambda: mode_for_clicks, "async",
                          hint="WAIT costs one replica round trip on every write"))
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

A short quiz on the vocabulary and the arithmetic (immediate feedback, with explanations).
""")
nb.quiz("00")
md("""
**Question.** In production the replica lives in another region, **40 ms** round trip away.
What happens to the p50 and the throughput of `WAIT 1` writes from one client, and what would
you do for the payment feature store of Exercise 5?

<!-- BEGIN SOLUTION -->
*Model answer.* Every `WAIT` now costs at least one 40 ms round trip, so the p50 write latency
rises from a fraction of a millisecond to ~40 ms and one client doing one write at a time falls
to ~25 writes/s: the write budget of 5 ms cannot be met with a synchronous cross-region copy.
Options: keep the synchronous replica close (another zone of the same region, ~1 ms) and
replicate asynchronously to the far region, accepting a small cross-region RPO; pipeline many
writes and `WAIT` once per batch to pay the round trip once; use `min-replicas-to-write` /
`min-replicas-max-lag` so the primary refuses writes when no replica is recent. Whatever the
choice, the client must treat `WAIT` returning 0 as a failed write (retry or report it), or the
guarantee is only on paper.
<!-- END SOLUTION -->
""")

# ----------------------------------------------------------------------------- Cleanup
md("""
## Cleanup

Stop the two Redis servers (and anything else this notebook started).
""")
code("""
primary.close(); replica.close()
pair.stop()
print("children still running:", hadrlab.stop_children())
""")


if __name__ == "__main__":
    nb.write()
