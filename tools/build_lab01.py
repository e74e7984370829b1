"""Write solutions/01_stateless_replicas.ipynb from the cell texts below (without outputs).

Edit this script and re-run it, then execute the notebook to refresh its outputs:

    .venv/bin/python tools/build_lab01.py
    cd solutions && HADRLAB_HOME=/tmp/lab01home MPLBACKEND=Agg \\
        ../.venv/bin/python -m hadrlab solutions 01_stateless_replicas.ipynb
"""

from __future__ import annotations

from pathlib import Path

from notebook_builder import NotebookBuilder


ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "solutions" / "01_stateless_replicas.ipynb"

nb = NotebookBuilder("lab01", OUT)
md, code = nb.md, nb.code


# ----------------------------------------------------------------------------- Objectives
md("""
# Lab 01 · Stateless model replicas: probes, graceful shutdown, rolling updates

**Objectives.** By the end of this lab (about 45 minutes) you can:

1. measure a replica's model-load time and **choose probe timings from it** (Experiment 0);
2. **measure** what clients see when one replica of a model API is killed under load, in four
   configurations (Experiments 1-4): one replica; two replicas without probes; two replicas with
   readiness and liveness probes; and with graceful shutdown and the retry of failed
   connections added. The hardened configuration keeps availability **≥ 99.9%** through a kill;
3. predict, then measure, how long a **hung** replica (`SIGSTOP`) takes to be replaced with and
   without a liveness probe (Experiment 5, two runs);
4. run a **rolling update under load**, with the default settings and hardened (Experiment 6, two
   runs), and show that a preStop sleep longer than the endpoint lag, a graceful drain and a
   grace period that covers both make it lose no request. With two replicas the 25% default
   already rounds to `maxSurge: 1` / `maxUnavailable: 0`; setting `maxUnavailable: 0` explicitly
   is what keeps capacity during the rollout of a larger Deployment;
5. compare the eight runs of Experiments 1-6 in one table, and explain why the load balancer
   itself is the next single point of failure.

Everything is real: each replica is a `python -m hadrlab.serving` process (a digits classifier
behind FastAPI), the load balancer is a separate proxy process, the load comes from locust, and
the manifests are Kubernetes manifests that also run on a kind cluster.
""")

# ----------------------------------------------------------------------------- Concepts
md("""
## Concepts

### 1 · Replicas and load balancing

```
 clients ──▶ Service (load balancer) ──round robin──▶ replica 1  (ready ✔)
                  │                   └────────────▶ replica 2  (ready ✔)
                  └── sends only to READY endpoints; an unready or dead replica is skipped
```

A **stateless** replica keeps nothing a client needs between two requests, so any replica can
answer any request and a dead one can be replaced by a fresh copy. Two replicas survive one
failure *if* the load balancer stops sending to the failed one quickly: that is the job of the
probes below. With one replica, every failure is an outage.
""")
md("""
### 2 · Liveness, readiness and startup probes

| probe | question | when it fails | our endpoint |
| --- | --- | --- | --- |
| **readiness** | should this replica get traffic *now*? | removed from the Service's endpoints; nothing else | `/readyz`: 200 once the model is loaded and warm, 503 while loading or draining |
| **liveness** | is this process beyond saving? | the container is killed and restarted | `/healthz`: 200 as soon as the server runs |
| **startup** | has it finished starting? | (until it passes, liveness and readiness wait) | `/healthz` |

Each probe runs every `periodSeconds`, waits `timeoutSeconds` for an answer and acts after
`failureThreshold` failures in a row: a hang is noticed after about
`periodSeconds × failureThreshold + timeoutSeconds`. Liveness must never depend on the model or on
a downstream service: a replica that is alive but not ready must be *left alone*, not killed.
""")
md("""
### 3 · Graceful shutdown

```
delete pod ─▶ unready, endpoint removal starts ─▶ preStop (sleep 2) ─▶ SIGTERM ─▶ drain (serve 2 s, /readyz 503) ─▶ exit 0
             └──────────────────────────── terminationGracePeriodSeconds (10 s) ─────────────────────────────▶ SIGKILL
```

Endpoint removal reaches every load balancer *asynchronously* (about a second in a cluster). A
server that closes its listener on SIGTERM refuses the requests still routed to it. The
**preStop** sleep and the **drain** keep it serving until the load balancers have caught up;
**terminationGracePeriodSeconds** must exceed preStop + drain + the slowest request, or the
kubelet's SIGKILL cuts requests in flight. A crash (SIGKILL) gets none of this: only a **retry**
of the failed connection on another replica, at the load balancer, hides it.
""")
md("""
### 4 · Rolling updates and PodDisruptionBudgets

A rolling update replaces replicas a few at a time. `maxSurge` = how many *extra* replicas may
start; `maxUnavailable` = how many may be missing. The defaults are 25% / 25%, **rounded**: surge
up, unavailable down. `maxUnavailable: 0` means a new replica must be ready before an old one
goes: capacity never drops. A rollout still deletes every old replica, so it is only as
lossless as the graceful shutdown of section 3.

A **PodDisruptionBudget** (`minAvailable: 1`) limits *voluntary* disruptions (node drains,
cluster upgrades) to what the service can afford: `kubectl drain` waits rather than evict the
last ready replica. It does not protect against crashes, and a Deployment's own rollout is
governed by its strategy, not by the budget.
""")
md("""
### 5 · One service, two views: the image and the manifest

The **Dockerfile** says *what runs* (the package, a non-root user, `python -m hadrlab.serving`);
the **manifest** says *how the platform runs it*: how many, how it is probed, how it stops, how it
is updated. The local backend of this lab reads the very same manifest and runs each replica as a
process; the kind backend runs the image. Both files, without their comments:
""")
code("""
import hadrlab

def show(path, start="", stop=None, skip=("#",)):
    lines = hadrlab.course_file(path).read_text().splitlines()
    begin = next(i for i, line in enumerate(lines) if start in line)
    for line in lines[begin:]:
        if stop and stop in line:
            break
        if line.strip() and not line.strip().startswith(skip):
            print(line)

show("infra/docker/Dockerfile", start="---- runtime")
""")
code("""
show("infra/k8s/model-api.yaml", start="containers:", stop="---", skip=("#", "- name: OMP", "- name: OPENBLAS", 'value: "1"'))
""")
md("""
### 6 · The next single point of failure

Two replicas remove the replica as a single point of failure, and move it one step up: every
request in this lab crosses **one** load-balancer process. Kill it and availability is 0%,
however many replicas are ready. In production whatever sits in front of the replicas must itself
be replicated. Inside a cluster, a ClusterIP Service has no proxy process in the data path:
kube-proxy, on every node, programs iptables or IPVS rules that the node's own kernel applies, so
there is no single box to lose. Traffic from outside enters through an ingress controller (a
Deployment with its own replicas) behind a cloud load balancer or an anycast address, or through
DNS with health checks; each of these is the next single point of failure unless it is
replicated, and so is whatever *that* depends on: a zone, a region (Lab 04). Availability is
decided by the weakest part in series (Lab 00).
""")

# ----------------------------------------------------------------------------- Setup
md("""
## Parameters

The run-time knobs of this lab. The whole notebook runs in about three to four minutes with these
values on a 2-core laptop. A grader may change them: the code below always reads them.
""")
code("""
USERS = 6                 # concurrent simulated users
THINK_MS = 10             # pause of each user between two requests, ms
LOAD_S = 10               # seconds of load per kill or hang experiment
FAULT_AT_S = 3            # seconds into the load at which the fault is injected
ROLLOUT_MAX_S = 30        # longest load of a rolling update (it stops 1 s after the rollout ends)
MODEL_LOAD_DELAY_S = 2    # stand-in for loading a large model, s
ENDPOINT_LAG_S = 1.0      # delay before endpoint changes reach the load balancer (Experiment 6), s
MIN_KILL_AVAILABILITY_PCT = 99.9   # objective of the hardened configuration during a replica kill
MAX_ROLLOUT_FAILURES = 2           # failed requests allowed during a hardened rolling update
REPLACE_SLACK_S = 10      # slack on top of the time a hung replica should take to be replaced, s
PREDICTION_TOL_S = 5      # how close your prediction of that time must be, s
""", tags=["parameters"])
md("""
## Setup

`hadrlab` does the plumbing (processes on free loopback ports, locust in its own process, the
platform). `board` records your graded checks. Every request carries the same body: eight real
digit images from the held-out part of the dataset.
""")
code("""
%matplotlib inline
import copy
import math
import time

import httpx
import pandas as pd
import hadrlab
from hadrlab import container_of, deployment_of, service_of, set_env, probe_timings, run_scenario

board = hadrlab.Scoreboard("01")
BODY = hadrlab.predict_payload(8, seed=0)
print("hadrlab", hadrlab.__version__, "| images per request:", len(BODY["images"]))
""")
md("""
> **Note: two settings of the local platform.** `restart_backoff_s=1.0`: the kubelet waits 10 s,
> 20 s, 40 s ... (CrashLoopBackOff) before restarting a container that keeps failing; the first
> restart is immediate either way. A 1-second base keeps a lab that kills replicas on purpose
> from waiting minutes, and changes nothing else. `endpoint_lag_s`: in a cluster, an endpoint
> change reaches kube-proxy and ingress controllers about a second after a pod's readiness
> changes. Experiments 1-5 use no lag, so that they measure the probes and the retry alone;
> Experiment 6 uses `ENDPOINT_LAG_S`, which is what graceful shutdown exists for.

The options every experiment shares, so that only the manifest differs from one row of the
comparison to the next. One of them is a real Prometheus and Alertmanager (Experiment 4b
reads them): every `run_scenario` below has Prometheus scrape its Service's load balancer, so
each run is counted twice, by the clients and by the servers' own counters.
""")
code("""
monitoring_off = hadrlab.monitoring_available()
receiver = None if monitoring_off else hadrlab.start_alert_receiver()
mon = None if monitoring_off else hadrlab.start_monitoring(receiver_url=receiver.url + "/alerts")
print(mon if mon else f"SKIP monitoring: {monitoring_off}")
LOAD = dict(users=USERS, duration_s=LOAD_S, fault_at_s=FAULT_AT_S, wait_ms=THINK_MS, body=BODY,
            restart_backoff_s=1.0, endpoint_lag_s=0.0, monitoring=mon)
{k: v for k, v in LOAD.items() if k not in ("body", "monitoring")}
""")

# ----------------------------------------------------------------------------- Exercise 1
md("""
## Experiment 0 · How long does a replica take to load its model?

Probe timings are chosen from *measurements*, not guessed. Start one replica on its own and
measure the time between the moment it is **alive** (`GET /healthz` answers 200) and the moment it
is **ready** (`GET /readyz` answers 200).

### Exercise 1 · Measure the model-load time

Compute `model_load_s`. `hadrlab.wait_for_http(replica, path, timeout_s=...)` polls a path of
the replica every 50 ms until it answers 200.
""")
code("""
replica = hadrlab.start_model_api("load-timer", load_delay_s=MODEL_LOAD_DELAY_S, wait=None)
# BEGIN SOLUTION measure model_load_s: the seconds between /healthz and /readyz first answering 200
hadrlab.wait_for_http(replica, "/healthz", timeout_s=30)
alive_t = time.time()
hadrlab.wait_for_http(replica, "/readyz", timeout_s=60)
model_load_s = time.time() - alive_t
# END SOLUTION
print(f"alive to ready: {model_load_s:.2f} s (MODEL_LOAD_DELAY_S = {MODEL_LOAD_DELAY_S} s)")
""")
code("""
replica.stop()
display(board.check_true("model load time measured", lambda: model_load_s,
                         lambda s: MODEL_LOAD_DELAY_S <= s < MODEL_LOAD_DELAY_S + 30,
                         f"between {MODEL_LOAD_DELAY_S} s and {MODEL_LOAD_DELAY_S + 30} s", unit="s",
                         hint="wait for /healthz, note the time, wait for /readyz, subtract"))
""")

# ----------------------------------------------------------------------------- Manifests
md("""
## The manifests

`infra/k8s/model-api.yaml` is the hardened configuration, with a comment on every choice.
Load it as a list of plain dicts (validated strictly against the Kubernetes schema), then make
the **bare** variant that every experiment starts from: no probes, no preStop, no drain, no
retry, default rollout strategy and grace period.
""")
code("""
docs = hadrlab.load_manifest(hadrlab.course_file("infra/k8s/model-api.yaml"))

def without_hardening(docs, replicas=2):
    bare = copy.deepcopy(docs)
    spec = deployment_of(bare)["spec"]
    spec["replicas"] = replicas
    spec.pop("strategy", None)                                    # defaults: 25% / 25%
    spec["template"]["spec"].pop("terminationGracePeriodSeconds", None)   # default: 30 s
    c = container_of(bare)
    for key in ("startupProbe", "readinessProbe", "livenessProbe", "lifecycle"):
        c.pop(key, None)                                          # no probes, no preStop
    set_env(c, "SHUTDOWN_DRAIN_S", 0)                             # close at once on SIGTERM
    set_env(c, "MODEL_LOAD_DELAY_S", MODEL_LOAD_DELAY_S)
    service_of(bare)["metadata"]["annotations"]["hadrlab.io/retry-connect-failures"] = "false"
    return bare

bare = without_hardening(docs)
[f"{d['kind']}/{d['metadata']['name']}" for d in bare]
""")
md("""
`probe_timings` reads what a manifest's settings imply, in seconds (Kubernetes defaults filled
in; empty where the mechanism is missing):
""")
code("""
pd.DataFrame({"lab manifest": vars(probe_timings(docs)), "bare": vars(probe_timings(bare))})
""")

# ----------------------------------------------------------------------------- Experiment 1
md("""
## Experiment 1 · One replica, killed under load

This first experiment is written out step by step; the later ones call `run_scenario`, which runs
the same four steps.

*Steady state.* Start a platform, apply the bare manifest with **one** replica, and wait until the
Service answers. Without a readiness probe, `wait_for_rollout` returns as soon as the process
starts, long before the model is loaded: ask the Service itself.
""")
code("""
platform = hadrlab.get_platform(restart_backoff_s=1.0)  # HADRLAB_BACKEND: local (default) or kube
platform.apply(without_hardening(docs, replicas=1))
platform.wait_for_rollout("model-api")
url = platform.service_url("model-api")
hadrlab.wait_until(lambda: httpx.get(url + "/readyz").status_code == 200, timeout_s=60,
                   describe="the Service answering /readyz")
answer = httpx.post(url + "/predict", json=hadrlab.predict_payload(3, seed=1)).json()
print("steady state: predictions", answer["predictions"], "from", answer["replica"])
""")
md("""
To send a request by hand, open `url + "/docs"` in a browser (`print(url)` shows the address): the
model API's own OpenAPI page, reached through the Service, with the body `POST /predict` takes and
every answer it can give (200, 413, 422, 503).
""")
md("""
*Inject.* Start the load, and `FAULT_AT_S` seconds into it kill the replica (SIGKILL, as a crash
or an out-of-memory kill would).
""")
code("""
run = hadrlab.start_load(url, users=USERS, duration_s=LOAD_S, body=BODY, wait_ms=THINK_MS, name="one-replica")
time.sleep(max(0.0, run.started_at + FAULT_AT_S - time.time()))
fault_t = time.time()
victim = platform.kill_replica("model-api")
print(f"killed {victim} {fault_t - run.started_at:.1f} s into the load")
""")
md("""
*Observe.* Wait for the load to end, then summarize it: availability, the error window (first to
last failed answer after the fault), and the time until the service was back within its SLO
(≥ 99% success and p99 ≤ 500 ms, for 2 s in a row).
""")
code("""
result = run.wait()
one_replica = hadrlab.summarize(result, fault_t, label="kill: 1 replica")
one_replica
""")
code("""
events = platform.events()
shown = events[(events["t"] > fault_t) & events["kind"].isin(["exited", "restarted", "endpoint-removed", "endpoint-added"])]
hadrlab.plot_timeline(result, fault_t={"kill (SIGKILL)": fault_t}, events=shown,
                      title=f"Experiment 1: one replica killed at {FAULT_AT_S} s, {USERS} users")
""")
md("""
The process restarted at once, yet errors went on for seconds: the restarted replica was in the
Service from its first instant (no readiness probe) and answered `503` until its model was
loaded. With one replica, there was nowhere else to send the traffic.

*Restore.* The platform restarted the replica by itself (restart count 1). Close this platform.
""")
code("""
platform.wait_for_rollout("model-api", timeout_s=60)
print([(r.name, r.phase, f"restarts={r.restarts}") for r in platform.replicas("model-api")])
platform.close()
""")

# ----------------------------------------------------------------------------- Experiment 2
md("""
## Experiment 2 · Two replicas, no probes, one killed

`run_scenario(manifests, fault, label=..., **LOAD)` does the four steps: a fresh platform, the
steady state (every replica answering through the Service), the load with the fault at
`FAULT_AT_S`, and the result with the platform's events; then it closes the platform.
""")
code("""
no_probes = run_scenario(bare, "kill", label="kill: 2 replicas, no probes", **LOAD)
no_probes
""")
code("""
no_probes.plot(title=f"Experiment 2: two replicas without probes, one killed at {FAULT_AT_S} s")
""")
md("""
Two phases, told apart by the status codes: `502` = the load balancer could not reach the dead
process (the crash itself, until its endpoint went away); `503` = the **restarted** replica, back
in the Service before its model was loaded, answering "not ready". The second phase is the
longer one, and traffic makes it longer still: a replica busy refusing requests loads its model
more slowly than an idle one (compare with Experiment 0).
""")
code("""
failed = no_probes.load.timeline.query("not ok")
failed.groupby("status").size().rename("failed requests")
""")

# ----------------------------------------------------------------------------- Exercise 2
md("""
### Exercise 2 · Add the probes

Edit `probed` (a copy of `bare`) with plain dict edits on `container_of(probed)`:

1. a `readinessProbe` on `/readyz` that removes a replica within about 2-3 s;
2. a `livenessProbe` on `/healthz` (never `/readyz`: a loading replica must not be killed);
   give it its own `terminationGracePeriodSeconds` of a few seconds: a hung process ignores
   SIGTERM, and without it the kubelet waits the pod's whole grace period before SIGKILL;
3. a `startupProbe` on `/healthz` whose budget (`initialDelaySeconds + periodSeconds ×
   failureThreshold`) is **at least twice the `model_load_s` you measured**. Our server answers
   `/healthz` while it loads, but many model servers load before they listen, and a busy node
   loads slower: the budget must cover the whole start.

Probes name the container port `"http"`. The cell validates your manifest strictly: a misspelt
field is refused with its path.
""")
code("""
probed = copy.deepcopy(bare)
c = container_of(probed)
# BEGIN SOLUTION add readinessProbe (/readyz), livenessProbe (/healthz) and a startupProbe covering 2 x model_load_s
c["readinessProbe"] = {"httpGet": {"path": "/readyz", "port": "http"},
                       "periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 2}
c["livenessProbe"] = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 2,
                      "timeoutSeconds": 1, "failureThreshold": 3, "terminationGracePeriodSeconds": 2}
startup_budget_s = max(10, 3 * model_load_s)   # 3x the measured load: slow disks, busy nodes
c["startupProbe"] = {"httpGet": {"path": "/healthz", "port": "http"},
                     "periodSeconds": 1, "failureThreshold": math.ceil(startup_budget_s)}
# END SOLUTION
hadrlab.validate_manifests(probed)
probe_timings(probed)
""")
code("""
display(board.check_equal("readiness probe on /readyz",
                          lambda: container_of(probed)["readinessProbe"]["httpGet"]["path"], "/readyz",
                          hint="readiness = 'model loaded': the /readyz endpoint"))
display(board.check_equal("liveness probe on /healthz",
                          lambda: container_of(probed)["livenessProbe"]["httpGet"]["path"], "/healthz",
                          hint="liveness must not depend on the model: /healthz"))
display(board.check_true("startup budget covers 2x the measured load",
                         lambda: probe_timings(probed).startup_budget_s / model_load_s,
                         lambda ratio: ratio >= 2, ">= 2 x model_load_s",
                         hint="initialDelaySeconds + periodSeconds x failureThreshold of the startupProbe"))
""")

# ----------------------------------------------------------------------------- Experiment 3
md("""
## Experiment 3 · Two replicas with probes, one killed

Predict first: which of the two phases of Experiment 2 do the probes remove?
""")
code("""
probes = run_scenario(probed, "kill", label="kill: 2 + probes", **LOAD)
probes
""")
code("""
probes.plot(title=f"Experiment 3: two replicas with probes, one killed at {FAULT_AT_S} s")
""")
md("""
The restarted replica now stays out of the Service until `/readyz` passes: the long `503` phase
is gone. What is left are the requests that were *in flight* on the replica when it died, or
sent to it before its endpoint was removed: a crash gives no warning, so no probe can save them.
""")

# ----------------------------------------------------------------------------- Exercise 3
md("""
### Exercise 3 · Graceful shutdown and retries

Edit `hardened` (a copy of `probed`):

1. a `preStop` hook that sleeps 2 s (`lifecycle.preStop.exec.command`);
2. `SHUTDOWN_DRAIN_S` = 2 in the container's env (`set_env`);
3. the pod's `terminationGracePeriodSeconds`, larger than preStop + drain + a margin;
4. the rollout strategy `maxSurge: 1`, `maxUnavailable: 0`;
5. the Service annotation `hadrlab.io/retry-connect-failures: "true"`: the load balancer
   retries, once, on another replica, a request whose connection failed before any answer.
""")
code("""
hardened = copy.deepcopy(probed)
# BEGIN SOLUTION add preStop, drain, grace period, maxSurge 1 / maxUnavailable 0, and the retry annotation
c = container_of(hardened)
c["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", "2"]}}}
set_env(c, "SHUTDOWN_DRAIN_S", 2)
deployment_of(hardened)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 10
deployment_of(hardened)["spec"]["strategy"] = {
    "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
service_of(hardened)["metadata"]["annotations"]["hadrlab.io/retry-connect-failures"] = "true"
# END SOLUTION
hadrlab.validate_manifests(hardened)
probe_timings(hardened)
""")
code("""
t = lambda: probe_timings(hardened)
display(board.check_true("preStop and drain set", lambda: (t().pre_stop_s, t().drain_s),
                         lambda v: v[0] > 0 and v[1] > 0, "preStop sleep > 0 s and SHUTDOWN_DRAIN_S > 0 s"))
display(board.check_true("grace period covers preStop + drain",
                         lambda: t().pod_grace_s - t().pre_stop_s - t().drain_s if t().pre_stop_s > 0 else None,
                         lambda margin: margin >= 1, ">= 1 s of margin after a preStop sleep and the drain", unit="s",
                         hint="terminationGracePeriodSeconds counts preStop, drain and the last requests"))
display(board.check_equal("maxUnavailable", lambda: deployment_of(hardened)["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0))
display(board.check_equal("retry of failed connections",
                          lambda: service_of(hardened)["metadata"]["annotations"]["hadrlab.io/retry-connect-failures"], "true"))
""")

# ----------------------------------------------------------------------------- Experiment 4
md("""
## Experiment 4 · The hardened configuration, one replica killed
""")
code("""
hardened_kill = run_scenario(hardened, "kill", label="kill: hardened", **LOAD)
hardened_kill
""")
code("""
hardened_kill.plot(title=f"Experiment 4: hardened, one replica killed at {FAULT_AT_S} s")
""")
code("""
display(board.check_true("availability through a kill, hardened",
                         lambda: 100 * hardened_kill.summary.availability,
                         lambda pct: pct >= MIN_KILL_AVAILABILITY_PCT, f">= {MIN_KILL_AVAILABILITY_PCT} %", unit="%",
                         hint="readiness keeps the restarted replica out; the retry hides the crash"))
""")

# ----------------------------------------------------------------------------- Monitoring
md("""
## Experiment 4b · The same kills, seen by Prometheus

Locust counts what clients saw. In production nobody runs locust against the live service: the
availability SLI comes from the servers' own counters, scraped by **Prometheus**. The
Prometheus started in Setup scraped each experiment's load balancer every **second** (a lab
setting: production scrapes every 15-60 s), the way an in-cluster Prometheus scrapes an Ingress
controller's `/metrics`; `mon.url` opens its UI (user and password in `mon`).

The SLI is a recording rule: the share of answers that are not `5xx`, over each window of the
SRE workbook's multiwindow, multi-burn-rate alerts for a 99.9% SLO over 30 days. **Page** when
the 1 h and the 5 min windows both burn the budget more than 14.4 times too fast (or 6 h and
30 min, 6 times); **ticket** for 1 d and 2 h at 3 times, 3 d and 6 h at once. A lab cannot wait
an hour, so every window is divided by one time scale, printed below; the burn rates and the
SLO are the production ones (`infra/prometheus/rules/slo.yml` holds the same rules at scale 1).

The two counts cannot agree exactly: Prometheus reads the counters once a second, so requests in
flight at either edge of the run can fall on the other side; and a request a client gave up on
(its 2 s timeout) may still be answered `200` by the server. For a kill they should agree within
0.2 percentage points plus two requests in flight per user.
""")
code("""
if mon:
    print(*mon.rules_path.read_text().splitlines()[1:3], sep="\\n")
    kills = [no_probes, probes, hardened_kill]
    display(pd.DataFrame([{
        "configuration": r.label,
        "requests (locust)": r.summary.requests, "requests (Prometheus)": int(r.prometheus["requests"]),
        "failed (locust)": r.summary.failures, "5xx (Prometheus)": int(r.prometheus["failures"]),
        "availability % (locust)": round(100 * r.summary.availability, 3),
        "availability % (Prometheus)": round(100 * r.prometheus["availability"], 3),
    } for r in kills]).set_index("configuration"))
""")
code("""
if mon:
    first, last = kills[0].prometheus["start"], kills[-1].prometheus["end"]
    ax = mon.plot({"5 min window": 'service:error_ratio:rate5m{service="model-api"}',
                   "1 h window": 'service:error_ratio:rate1h{service="model-api"}'},
                  first - 2, last, percent=True, ylabel="error ratio",
                  marks={f"kill: {r.label.split(': ', 1)[1]}": r.fault_t for r in kills},
                  title="Experiments 2-4: the SLI's error ratio from PromQL (windows in lab time)")
    ax.axhline(100 * 14.4 * 0.001, color="red", linewidth=1, linestyle="--")
    ax.annotate("page: both windows above 14.4 x budget", (0.01, 100 * 14.4 * 0.001),
                xycoords=("axes fraction", "data"), va="bottom", fontsize=8, color="red")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylim(0, 150)
    ax.figure.tight_layout()
""")
md("""
How to read it: a page needs **both** windows of a pair above the dashed line. The short window
follows the errors within seconds; the long one remembers them for as long as it spans (48 s
here, an hour in production), so it makes the alert significant and the short one makes it
resolve soon after the errors stop. Errors before the first kill, if the plot shows any, are
the set-up's own requests: the bare configuration has no readiness probe, so its balancer sends
them to replicas still loading their model, which answer `503`. The notifications below are
what Alertmanager delivered, each by the route its severity chose.
""")
code("""
if mon:
    rows = [{"at_s": round(a["t"] - first, 1), "status": a["status"], "alert": a["alertname"],
             "service": (a.get("labels") or {}).get("service", ""), "route": a["receiver"]}
            for a in hadrlab.fetch_alerts(receiver)]
    print(f"{len(rows)} notifications reached the alert receiver; "
          f"{sum(r['route'] == 'page' and r['status'] == 'firing' for r in rows)} of them pages")
    display(pd.DataFrame(rows) if rows else "no alert fired")
""")
code("""
if mon:
    gaps = {r.label: abs(r.prometheus["availability"] - r.summary.availability) for r in kills}
    allowed = {r.label: 0.002 + 2 * USERS / max(r.summary.requests, 1) for r in kills}
    display(board.check_true("Prometheus agrees with locust on every kill",
                             lambda: {k: round(100 * g, 3) for k, g in gaps.items()},
                             lambda _: all(gaps[k] <= allowed[k] for k in gaps),
                             "within 0.2 points + 2 requests per user of each run", unit="points",
                             hint="both count the same answers; a larger gap means a scrape was missed"))
else:
    display(board.skip("Prometheus agrees with locust on every kill", monitoring_off))
""")

# ----------------------------------------------------------------------------- Experiment 5
md("""
## Experiment 5 · A hung replica

A hang is worse than a crash: the process keeps its port, accepts connections and answers
nothing, so connections do not fail; requests wait until the client's timeout (2 s here), and no
retry of failed connections helps. Only the probes notice.

### Exercise 4 · Predict, then measure

From your `hardened` manifest and your `model_load_s`, predict `predicted_replace_s`: the
seconds from the hang (`SIGSTOP`) until the replica is **ready again**. Think of the steps: the
liveness probe must fail `failureThreshold` times; the kill then waits the liveness grace period
(the process ignores SIGTERM); the new process starts and loads its model.
""")
code("""
timings = probe_timings(hardened)
# BEGIN SOLUTION predict predicted_replace_s from timings and model_load_s
predicted_replace_s = timings.liveness_detection_s + timings.liveness_grace_s + 1 + model_load_s  # +1: process start
# END SOLUTION
print(f"predicted: ready again {predicted_replace_s:.1f} s after the hang")
""")
md("""
First without a liveness probe (readiness only), then with the hardened manifest. After the load
ends, the scenario waits up to 30 s for the replica to be ready again, so the events tell when.
""")
code("""
readiness_only = copy.deepcopy(hardened)
container_of(readiness_only).pop("livenessProbe")
hang_readiness = run_scenario(readiness_only, "hang", label="hang: readiness only", **LOAD, recover_timeout_s=0)
hang_liveness = run_scenario(hardened, "hang", label="hang: + liveness", **LOAD, recover_timeout_s=30)
""")
code("""
hang_liveness.plot(title=f"Experiment 5: hardened, one replica hung (SIGSTOP) at {FAULT_AT_S} s")
""")
code("""
def hang_story(r):
    return {kind: r.time_until(kind, r.target) for kind in ("unready", "liveness-failed", "restarted")} | {
        "ready again": r.time_until("ready", r.target, after_kind="restarted")}

pd.DataFrame({r.label: hang_story(r) for r in (hang_readiness, hang_liveness)}).T.round(1)
""")
md("""
Seconds after the hang (empty: it never happened). Readiness takes the frozen replica out of the
Service within seconds in both runs, so clients see about the same: a few timeouts, then normal
service. The difference is **capacity**: without liveness, the replica stays frozen and the
service runs on one replica until a person notices. With liveness, it is back by itself.
""")
code("""
replaced_s = lambda: hang_liveness.time_until("ready", hang_liveness.target, after_kind="restarted")
bound_s = lambda: (probe_timings(hardened).liveness_detection_s + probe_timings(hardened).liveness_grace_s
                   + model_load_s + REPLACE_SLACK_S)
display(board.check_true("hung replica replaced in time", lambda: (replaced_s(), bound_s()),
                         lambda v: v[0] is not None and v[0] <= v[1],
                         "(measured, bound): detection + grace + load + slack", unit="s",
                         hint="give the liveness probe a short terminationGracePeriodSeconds"))
display(board.check_true("prediction of the replacement time", lambda: replaced_s() - predicted_replace_s,
                         lambda d: abs(d) <= PREDICTION_TOL_S, f"within ± {PREDICTION_TOL_S} s of the measurement", unit="s",
                         hint="detection (period x failures + timeout) + grace + process start + model load"))
display(board.check_true("without liveness, never replaced", lambda: hang_story(hang_readiness)["ready again"],
                         lambda v: v is None, "None (the replica stays frozen)"))
""")

# ----------------------------------------------------------------------------- Experiment 6
md("""
## Experiment 6 · A rolling update under load

Roll out model version `v2` while the load runs: first with the **defaults** (`probed`: probes,
but no preStop, no drain, no retry, strategy 25% / 25%), then with `hardened`
(`maxUnavailable: 0`, preStop, drain, retry). Both with `ENDPOINT_LAG_S` of endpoint lag, as in a
cluster; the load stops 1 s after the rollout has finished.

On two replicas, 25% rounds to a surge of 1 and an unavailability of 0, so the defaults already
keep capacity: what differs is only how old replicas stop.

The "lost no request" check below accepts at most `MAX_ROLLOUT_FAILURES` failed requests: a
margin for timing on a busy machine (for instance a request still in flight when an old replica
exits at the end of its drain), not an expected loss; a hardened rollout usually fails none.
""")
code("""
ROLL = dict(LOAD, duration_s=ROLLOUT_MAX_S, endpoint_lag_s=ENDPOINT_LAG_S, stop_when_recovered=True, recover_timeout_s=30)
roll_default = run_scenario(probed, "rollout", label="rollout: defaults", **ROLL)
roll_hardened = run_scenario(hardened, "rollout", label="rollout: hardened", **ROLL)
pd.Series({r.label: r.rollout_s for r in (roll_default, roll_hardened)}, name="rollout took (s)").round(1)
""")
code("""
roll_default.plot(title="Experiment 6: rolling update to v2, default settings (no preStop, no drain)")
""")
code("""
display(board.check_true("hardened rollout finished", lambda: roll_hardened.rollout_s,
                         lambda s: s is not None and s >= MODEL_LOAD_DELAY_S,
                         f">= {MODEL_LOAD_DELAY_S} s (each new replica loads its model first)", unit="s",
                         hint="with a readiness probe, a rollout waits for every new replica's model"))
display(board.check_true("hardened rollout lost no request", lambda: roll_hardened.summary.failures,
                         lambda n: n <= MAX_ROLLOUT_FAILURES, f"<= {MAX_ROLLOUT_FAILURES} failed requests",
                         hint="preStop sleep longer than the endpoint lag, then drain, within the grace period"))
""")

# ----------------------------------------------------------------------------- Comparison
md("""
## All configurations side by side

Same load, same parameters; one row per configuration and fault.
""")
code("""
runs = [no_probes, probes, hardened_kill, hang_readiness, hang_liveness, roll_default, roll_hardened]
comparison = hadrlab.compare([one_replica, *(r.summary for r in runs)])
comparison
""")
code("""
hadrlab.plot_comparison(comparison, title=f"Lab 01: availability and recovery, {USERS} users, fault at {FAULT_AT_S} s")
""")
code("""
display(board.check_true("measured with this notebook's parameters",
                         lambda: {(r.load.users, r.fault_t - r.load.started_at >= FAULT_AT_S) for r in runs},
                         lambda s: s == {(USERS, True)}, f"{USERS} users, fault at >= {FAULT_AT_S} s"))
""")
md("""
How to read it: each mechanism removes one cause of failed requests. A second replica gives the
traffic somewhere to go; readiness stops traffic to a replica that cannot serve yet; the retry
hides the requests a crash cuts; liveness brings capacity back after a hang; preStop and drain
make a planned replacement (a rollout) invisible. Recovery time counts from the fault until
requests are served within the SLO again; "not recovered" means not within the run.
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

A short quiz on probes, shutdown and rollouts (immediate feedback, with explanations).
""")
nb.quiz("01")
md("""
**Question.** Experiments 1-5 ran with no endpoint lag. In a cluster, endpoint changes take about a
second, while a crashed container restarts on the same pod IP in under a second and answers `503`
while its model loads. What would clients of the hardened configuration see after a crash, and
what would you change, and where, to hide it?

<!-- BEGIN SOLUTION -->
*Model answer.* For about a second after the crash the dead replica is still an endpoint: the
connection failures are retried on the other replica (the retry annotation), but once the new
process listens, requests reach it and get a fast `503 model not loaded`. That is not a failed
connection, so it is not retried: clients see a short burst of 503s (try it: pass
`endpoint_lag_s=ENDPOINT_LAG_S` to the hardened kill). Fixes, at the layer that routes: let the
ingress or mesh retry a `503` from an upstream once on another endpoint (Envoy `retry_on:
retriable-status-codes`, NGINX `proxy_next_upstream http_503`), which is safe for an idempotent
prediction; or at the server: listen on the serving port only once the model is loaded and
serve the probes on a separate port. A longer restart back-off does not help: it only delays
capacity.
<!-- END SOLUTION -->
""")

# ----------------------------------------------------------------------------- Cleanup
md("""
## Cleanup

Stop the platform of Experiment 1 (the scenarios closed theirs) and anything else this notebook
started.
""")
code("""
platform.close()
if mon:
    mon.stop()
    receiver.stop()
print("children still running:", hadrlab.stop_children())
""")


if __name__ == "__main__":
    nb.write()
