"""Write solutions/03_chaos_pipeline.ipynb from the cell texts below (without outputs).

Edit this script and re-run it, then execute the notebook to refresh its outputs:

    .venv/bin/python tools/build_lab03.py
    HADRLAB_HOME=/tmp/lab03home MPLBACKEND=Agg \\
        .venv/bin/python -m hadrlab solutions solutions/03_chaos_pipeline.ipynb
"""

from __future__ import annotations

from pathlib import Path

from notebook_builder import NotebookBuilder


ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "solutions" / "03_chaos_pipeline.ipynb"

nb = NotebookBuilder("lab03", OUT)
md, code = nb.md, nb.code


# ----------------------------------------------------------------------------- Objectives
md("""
# Lab 03 · Chaos engineering on an end-to-end ML pipeline

A fraud model is trained continuously, registered, promoted, scored in batch and served online.
This lab breaks that pipeline on purpose, six ways, with **Chaos Toolkit**, first as it is built,
then with the hardening you add, and measures whether the steady state holds.

**Objectives.** By the end of this lab (about 60 minutes) you can:

1. **state** a steady-state hypothesis with tolerances, and read a Chaos Toolkit journal to tell
   *held*, *deviated* and *not steady* apart (the exit code of `chaos run` cannot: a deviated
   run exits 1, but one not steady at the start exits 0, like one that held);
2. **run** six experiments (kill the trainer, corrupt its data, slow and hang the registry, fail
   the feature store over during a batch job, kill the batch scorer) against the un-hardened pipeline;
3. **harden** it (retries with jitter, a circuit breaker, a cached-model fallback, checkpoints,
   a data contract and a promotion gate, atomic commits, a Sentinel-aware client) and **show**:
   no corrupted-data model reaches production, online serving keeps answering through a registry
   outage, a killed run loses at most one checkpoint interval, a killed batch job ends with zero
   duplicates and zero gaps;
4. **map** these experiments onto Chaos Mesh and Gremlin, the tools of a cluster.
""")

# ----------------------------------------------------------------------------- Concepts
md("""
## Concepts (one screen)

```
  training data ──▶ trainer ──register──▶ model registry ◀──"still production?"── online API ──▶ /predict
   (Redis)        (checkpoints)   promote (gate)  │                (every 0.5 s)      (cache)
                                                  └──model──▶ batch scorer ◀── features (Redis + Sentinel)
```

**Chaos engineering** is an experiment, not an outage: (1) define the **steady state** as a
measurable output of the system (here: training runs on schedule and registers models; batch jobs
score every record exactly once; online p99 and error rate within the SLO); (2) **hypothesise** it
holds through a fault; (3) inject a realistic fault with the smallest **blast radius** that teaches
something (one process, one dependency, a fixed duration, a rollback that always runs); (4) try to
*disprove* the hypothesis. A **game day** is the same exercise done by a team, by appointment,
end to end: detection, paging, runbooks and communication are tested along with the code.

A Chaos Toolkit experiment is JSON: a `steady-state-hypothesis` (probes, each with a tolerance),
a `method` (actions and probes) and `rollbacks`. `chaos run` checks the hypothesis, runs the
method, checks the hypothesis again **while the fault is still in place**, then rolls back.

| this lab (process on a laptop) | Chaos Mesh (Kubernetes CRDs) | Gremlin (agent, SaaS) |
| --- | --- | --- |
| SIGKILL the trainer / batch scorer | `PodChaos` `pod-kill` / `container-kill` | Process Killer, Shutdown |
| freeze the registry (SIGSTOP) | `PodChaos` `pod-failure`, `NetworkChaos` `partition` | Blackhole |
| registry answers 1.5 s late | `NetworkChaos` `delay` | Latency |
| kill the Redis primary | `PodChaos` `pod-kill` on the primary | Shutdown |
| corrupt training data | no infrastructure fault: a job that writes bad data | no equivalent: a data fault |

`infra/k8s/chaos/` holds Chaos Mesh versions of the replica faults of Lab 01 and the region
faults of Lab 02; the same selectors and durations apply to this pipeline's pods.
""")

# ----------------------------------------------------------------------------- Parameters
md("""
## Parameters

The run-time knobs. The whole notebook runs in about two minutes (110 s measured on a 2-core
machine: twelve experiments of 5-15 s, plus starting each pipeline). A grader may override them,
e.g. run only `EXPERIMENTS=["registry-outage"]`: the checks about the experiments left out are
then skipped (SKIP, "not run"), not failed.
""")
code("""
EXPERIMENTS = ["registry-slow", "registry-outage", "kill-trainer", "corrupt-training-data",
               "kill-batch-scorer", "feature-store-failover"]
RUN_TIMEOUT_S = 180   # the most one `chaos run` may take
""", tags=["parameters"])

# ----------------------------------------------------------------------------- Setup
md("""
## Setup

`hadrlab.start_pipeline(hardening)` starts the whole pipeline as real processes: a Redis with the
training data, the model registry, the continuous trainer (one run of 60 steps every second, and a
supervisor that restarts it when it dies, as a Deployment would), and the online scoring API.
Everything a probe needs to reach it is in one file, `pipeline.json`.

With `HADRLAB_BACKEND=kube` the same experiments run on the cluster of `make kind-up`:
`hadrlab.start_kube_pipeline` applies `infra/k8s/pipeline.yaml` (the registry as a StatefulSet
with a volume, the trainer as a Job that resumes from its checkpoints, the online API as a
Deployment behind a Service), `pipeline.json` says `"backend": "kube"`, and every probe and action
does the cluster's version of the same thing: a killed trainer is a SIGKILL in its pod, a registry
outage scales its StatefulSet to 0, the online SLO is measured through the Service. Only the next
cell differs between the backends.
""")
code("""
%matplotlib inline
import json
from pathlib import Path
import pandas as pd
import hadrlab

# Backend-specific (HADRLAB_BACKEND): local processes (the default), or the kind cluster.
start_pipeline = hadrlab.start_kube_pipeline if hadrlab.backend_name() == "kube" else hadrlab.start_pipeline
board = hadrlab.Scoreboard("03")
print(f"backend {hadrlab.backend_name()}:", hadrlab.UNHARDENED.describe())
""")

# ----------------------------------------------------------------------------- Steady state
md("""
## Experiment 1 · The steady state, written down

Every experiment is a template in `experiments/`. Here is the registry outage: its hypothesis is
one probe, `probe_online_slo` (20 requests/s for 2 s), judged by a tolerance function: at least
99% answered, p99 under 500 ms. The method freezes the registry; the rollback unfreezes it (on a
cluster: scales its StatefulSet to 0, then back to 1).
""")
code("""
outage_template = hadrlab.load_experiment("registry-outage")
print(outage_template["steady-state-hypothesis"]["title"])
for phase in ("steady-state-hypothesis", "method", "rollbacks"):
    items = outage_template[phase]["probes"] if phase.startswith("steady") else outage_template[phase]
    print(f"{phase:24s}", [(a["type"], a["provider"]["func"]) for a in items])
print("tolerance:", outage_template["steady-state-hypothesis"]["probes"][0]["tolerance"]["provider"])
""")
md("""
The probes and actions are plain Python functions in `hadrlab/chaos.py`, imported by `chaos run`
in its own process. Each experiment's hypothesis:
""")
code("""
pd.DataFrame([{"experiment": n, "hypothesis": hadrlab.load_experiment(n)["steady-state-hypothesis"]["title"]}
              for n in EXPERIMENTS]).set_index("experiment")
""")

# ----------------------------------------------------------------------------- Baseline
md("""
## Experiment 2 · Break the pipeline as it is built

Start the un-hardened pipeline: no retries, no breaker, the online API **fail-closed** (it serves
a model only while the registry confirms it), no checkpoints, no contract, no gate, a batch job
that appends results and saves its progress separately, and talks to the Redis primary directly.
""")
code("""
baseline = start_pipeline(hadrlab.UNHARDENED, name="baseline")
baseline
""")
md("""
The registry and the online API document themselves: `baseline.registry.url + "/docs"` (press
"Authorize" and paste `baseline.registry.token`: every registry request needs that bearer token)
and `baseline.online.url + "/docs"`, to read and try their requests while the lab runs.
""")
md("""
One function runs every experiment against a pipeline: it writes each template with the
pipeline's configuration into a run folder, and runs `chaos run` there (log and `journal.json`
stay in that folder). The feature store (two Redis regions and three Sentinels) starts only for
the experiment that needs it.
""")
code("""
def run_all(pipe, names=EXPERIMENTS):
    results = []
    for name in names:
        if name == "feature-store-failover":
            pipe.start_feature_store()
        results.append(hadrlab.run_experiment(hadrlab.write_experiment(name, pipe), timeout_s=RUN_TIMEOUT_S))
    return results

def run_of(results, name):
    # The run of experiment `name`; a check about one left out of EXPERIMENTS is skipped.
    for result in results:
        if result.name == name:
            return result
    raise hadrlab.NotRun(f"not run ({name} is not in EXPERIMENTS)")

baseline_results = run_all(baseline)
pd.DataFrame([{"experiment": r.name, "verdict": r.verdict, "status": r.status} for r in baseline_results])
""")
md("""
`status` is `completed` for every run: it says the run went to its end, not that the hypothesis
held. `chaos run`'s exit code does not settle it either: a deviated run exits 1, but a run whose
steady state was not met *before* the method exits 0 (the method is not even run), just like a
run that held. So the verdict comes from the journal: `steady_states.before` and `.after`
(`steady_state_met`), `deviated` and `status`. One run in detail, every activity with its output
(`outage` is None if `registry-outage` was left out of `EXPERIMENTS`: Exercise 1 is then skipped):
""")
code("""
outage = next((r for r in baseline_results if r.name == "registry-outage"), None)
outage
""")

md("""
### Exercise 1 · Read the journal yourself

Open `outage.journal_path` (JSON) and extract `before_met` and `after_met` (the two
`steady_state_met` values), and `outage_availability`: the availability that the probe of the
**after** hypothesis measured while the registry was frozen.
""")
code("""
if outage is not None:
    # BEGIN SOLUTION read before_met, after_met and outage_availability from the journal
    journal = json.loads(Path(outage.journal_path).read_text())
    before_met = journal["steady_states"]["before"]["steady_state_met"]
    after_met = journal["steady_states"]["after"]["steady_state_met"]
    outage_availability = journal["steady_states"]["after"]["probes"][0]["output"]["availability"]
    # END SOLUTION
    print(before_met, after_met, outage_availability)
""")
code("""
if outage is None:
    for name in ("steady state met before the outage", "steady state met during the outage (fail-closed)",
                 "availability during the outage"):
        display(board.skip(name, "not run (registry-outage is not in EXPERIMENTS)"))
else:
    display(board.check_equal("steady state met before the outage", lambda: before_met, True,
                              hint='journal["steady_states"]["before"]["steady_state_met"]'))
    display(board.check_equal("steady state met during the outage (fail-closed)", lambda: after_met, False,
                              hint='journal["steady_states"]["after"]["steady_state_met"]'))
    display(board.check_close("availability during the outage", lambda: outage_availability,
                              outage.output("online-slo", "after")["availability"], tol=0,
                              hint='the "output" of the after probe: a dict with "availability"'))
""")

md("""
**Fail-closed is a choice, not a bug.** An online API that serves a model only while the registry
confirms it is production honours a **revocation** at once: pull a model that discriminates or
leaks, and every replica stops serving it within one re-check. The price is that the registry
becomes a serial dependency: its outage *is* a serving outage (0% above). A cached-model fallback
(fail-open) keeps answering with the last good model, verified by its SHA-256, at the price that a
model revoked *during* an outage keeps serving until the registry is back. Many teams choose
fail-open for availability and add a separate, highly available kill switch for revocation.
""")
code("""
baseline.stop()
""")

# ----------------------------------------------------------------------------- Hardening
md("""
## Experiment 3 · Harden, then break it again

### Exercise 2 · Choose the hardening

Build `my_hardening`, a `hadrlab.Hardening(...)` with every pattern on: `retries`, `breaker`,
`cache_fallback`, `contract`, `gate`, `sentinel` set to `True` and `commit_mode="atomic"`; and a
`checkpoint_every` (steps) such that a crash loses **at most 0.25 s** of training: one step takes
25 ms here. Fewer steps between checkpoints cost more writes: pick the largest interval that meets
the bound.
""")
code("""
# BEGIN SOLUTION build my_hardening
my_hardening = hadrlab.Hardening(retries=True, breaker=True, cache_fallback=True, checkpoint_every=10,
                                 contract=True, gate=True, commit_mode="atomic", sentinel=True)
# END SOLUTION
print(my_hardening.describe())
""")
code("""
display(board.check_true("every pattern switched on", lambda: [k for k, v in vars(my_hardening).items() if v is False],
                         lambda off: off == [], "no switch left False",
                         hint="retries, breaker, cache_fallback, contract, gate, sentinel must all be True"))
display(board.check_equal("checkpoint interval for 0.25 s of lost work", lambda: my_hardening.checkpoint_every, 10,
                          hint="0.25 s / 25 ms per step"))
""")
code("""
hardened = start_pipeline(my_hardening, name="hardened")
hardened_results = run_all(hardened)
pd.DataFrame([{"experiment": r.name, "verdict": r.verdict, "status": r.status} for r in hardened_results])
""")
code("""
hardened.stop()
""")

# ----------------------------------------------------------------------------- Compare
md("""
## Compare

One table and one figure: each experiment's verdict and key number, before and after hardening.
""")
code("""
all_results = baseline_results + hardened_results   # each labelled by its pipeline's name
hadrlab.comparison_table(all_results).drop(columns="hypothesis")
""")
code("""
hadrlab.plot_measurements(all_results)
""")
md("""
The report: Markdown with the same table, both figures as PNG files next to it, one section per
experiment (hypothesis, recovery times, lost work, the Chaos Mesh equivalent) and the bottlenecks
found.
""")
code("""
from hadrlab.processes import home_dir
report = hadrlab.write_report(all_results, home_dir() / "reports" / "lab03" / "resilience.md")
print("\\n".join(report.read_text().splitlines()[-5:]))
""")

# ----------------------------------------------------------------------------- Checks
md("""
### The graded outcomes (nothing to write: your hardening is what is graded)

These checks read the hardened runs' journals: each one passes if the hardening you chose in
Exercise 2 kept that experiment's steady state. A check about an experiment left out of
`EXPERIMENTS` is skipped, not failed.
""")
code("""
def after(name, key):
    return run_of(hardened_results, name).measurements()[key]

display(board.check_equal("no corrupted-data model reaches production",
                          lambda: after("corrupt-training-data", "corrupted-models-in-production"), 0,
                          hint="turn on the data contract and the promotion gate"))
display(board.check_true("online serving answers through a registry outage",
                         lambda: after("registry-outage", "availability"), lambda a: a >= 0.99, ">= 0.99",
                         hint="the cached-model fallback keeps the last good model serving"))
display(board.check_true("online serving answers while the registry is slow",
                         lambda: after("registry-slow", "availability"), lambda a: a >= 0.99, ">= 0.99",
                         hint="retries and the breaker bound the wait; the fallback serves meanwhile"))
display(board.check_true("a killed run loses at most one checkpoint interval",
                         lambda: after("kill-trainer", "steps_lost"), lambda s: s <= 10, "<= 10 steps",
                         hint="checkpoint_every=10 bounds the work lost to 10 steps"))
display(board.check_equal("killed batch job: duplicates + gaps",
                          lambda: after("kill-batch-scorer", "duplicates") + after("kill-batch-scorer", "gaps"), 0,
                          hint="commit the results and the progress marker in one transaction (atomic)"))
display(board.check_equal("feature-store failover during a batch job: gaps",
                          lambda: after("feature-store-failover", "gaps"), 0,
                          hint="reach Redis through Sentinel and wait out the failover with back-off"))
""")
md("""
## Checks

Your score for this lab. Every line says PASS, FAIL or SKIP (not run with these parameters); a
FAIL's reason and hint are in the check's own cell above.
""")
code("""
# NBVAL_CHECK_OUTPUT
board.summary()
""")

# ----------------------------------------------------------------------------- Reflection
md("""
## Reflection

A short quiz (immediate feedback, with explanations).
""")
nb.quiz("03")
md("""
**Question.** Every hypothesis held after hardening. Name two faults this lab did **not** inject
that could still break the steady state, and the experiment you would write for each (fault,
hypothesis, blast radius, rollback).

<!-- BEGIN SOLUTION -->
*Model answer.* (1) A registry that answers **wrong** rather than not at all, e.g. it promotes an
old version after a restore from backup: the cache fallback does not help, the API loads it. Fault:
promote an archived version; hypothesis: the served model's AUC on a trusted hold-out stays above
the floor; blast radius: one replica in a canary; rollback: promote the previous version. (2) A
**slow feature store** rather than a failed one: Sentinel sees no failure, the batch job's chunks
get slower until the job misses its deadline. Fault: 200 ms latency on region A's proxy;
hypothesis: the job finishes within its window; rollback: clear the proxy's faults. Others: the
checkpoint disk full, clock skew on the scheduler, a poisoned cache file, the breaker never closing.
<!-- END SOLUTION -->
""")

# ----------------------------------------------------------------------------- Cleanup
md("""
## Cleanup

Stop anything this notebook started that is still running.
""")
code("""
print("processes still running:", hadrlab.stop_children())
""")


if __name__ == "__main__":
    nb.write()
