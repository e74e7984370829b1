"""Lab 02, the whole solution notebook, on the cluster code path (HADRLAB_BACKEND=kube), end to end.

No cluster runs where the course is tested, so the kernel's cluster is the loopback one
(tests/kube_fraud_loopback.py): a fake API server whose Redis and Sentinel pods are a local
feature store's processes, whose fraud.yaml pods and probe Jobs are real local processes, and
whose Chaos Mesh objects act on the local store's fault proxies. A cell that THIS TEST prepends
to a copy of the notebook (the notebook itself is untouched) makes every KubePlatform the
notebook creates talk to it; every other cell runs as written, with the kube branch of the
Start cell and of ``rpo_trial``. A cell the test appends stops the loopback and reports what
ran on it. The assertions are what a learner sees: no cell failed, the scoreboard, the drills'
tables, the RPO trials; plus the loopback's record that the cluster path was the one taken.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import nbformat
import pytest

from hadrlab.notebooks import inject_parameters, read_notebook, run_cells, write_notebook
from hadrlab.processes import list_registered, record_alive

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
NOTEBOOK = ROOT / "solutions" / "02_feature_store_dr.ipynb"
# The grader's --param mechanism (inject_parameters); empty: the notebook's own values.
PARAMS: dict = {}
CELL_TIMEOUT_S = 300

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SETUP = '''\
# Test set-up, not part of the lab: every KubePlatform this kernel creates talks to the loopback cluster.
import os as _os
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, {tests!r})
import hadrlab.platform.kube as _kube
from hadrlab.featurestore import start_feature_store as _start_local_store
from kube_fraud_loopback import NS as _NS, FraudLoopback as _FraudLoopback, LoopbackPlatform as _LoopbackPlatform

# The "cluster's" Redis pair and Sentinels: a local store; the notebook's redis.yaml settings reach it on apply.
_LOOPBACK_FS = _start_local_store(timeout_s=60)
_LOOPBACK = _FraudLoopback(_LOOPBACK_FS, _Path({pods!r}))
_LOOPBACK.chaos_mesh = True
_PLATFORMS = []
_WATCH_ASKED = []


class _LoopbackCluster(_LoopbackPlatform):
    """KubePlatform() as the notebook calls it, on the loopback API server (no event watches)."""

    def __init__(self, api=None, **options):
        _WATCH_ASKED.append(options.get("watch", True))
        options.update(namespace=_NS, host_ports=_LOOPBACK.host_ports, watch=False)
        super().__init__(api=_LOOPBACK if api is None else api, **options)
        _PLATFORMS.append(self)


_kube.KubePlatform = _LoopbackCluster

# Each cell's run time, for the test's report of where the time goes.
import time as _time

_CELL_S = []
get_ipython().events.register("pre_run_cell", lambda info: _CELL_S.append(
    [_time.monotonic(), (info.raw_cell.strip().splitlines() or [""])[0][:60]]))
get_ipython().events.register("post_run_cell", lambda result: _CELL_S[-1].__setitem__(
    0, round(_time.monotonic() - _CELL_S[-1][0], 1)))
print("kernel pid", _os.getpid(), "| HADRLAB_BACKEND", _os.environ.get("HADRLAB_BACKEND"))
'''

TEARDOWN = '''\
# Test tear-down, not part of the lab: what ran on the loopback cluster, then stop it (whatever failed before).
import json as _json

try:
    _ran = {{
        "platforms": len(_PLATFORMS),
        "watches_asked": _WATCH_ASKED,
        "backend": hadrlab.backend_name(),
        "store": type(fs).__name__,
        "services": type(services).__name__ if "services" in globals() else None,
        "sidecar_pod": getattr(sidecar, "pod", None),
        "containers": sorted({{f"{{pod.rsplit('-', 2)[0]}}/{{c}}" for pod, c, env in _LOOPBACK.started}}),
        "jobs": sorted({{name.rsplit("-", 1)[0] for name in _LOOPBACK.jobs}}),
        "chaos": sorted({{c[1].rsplit("/", 1)[1] for c in _LOOPBACK.calls
                         if c[0] == "patch" and "/networkchaos/" in c[1]}}),
        "exec_pods": sorted({{pod for pod, _, _ in _LOOPBACK.exec_calls}}),
        "drills": {{d.name: [len(d.reads), len(d.writes), len(d.load.timeline)]
                   for d in (steady, slow_a, very_slow_a, cut, crash)}},
        "rpo": [type(r).__name__ + " " + r.lag_fault for r in (rpo_async, rpo_wait)],
        "slowest_cells_s": sorted(_CELL_S[:-1], reverse=True)[:8],
    }}
    print("LOOPBACK " + _json.dumps(_ran))
finally:
    if "_LOOPBACK" in globals():
        _LOOPBACK.stop_jobs()  # (joins the threads that bring crashed servers back)
        _LOOPBACK.stop_pods()
        for _p in _PLATFORMS:
            _p.close()
        _LOOPBACK_FS.stop()
    import hadrlab as _hadrlab

    _hadrlab.stop_children()
'''


def _text(cell) -> str:
    """Everything a cell showed, as text (stream, text/plain, and error tracebacks)."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") in ("execute_result", "display_data"):
            parts.append(out.get("data", {}).get("text/plain", ""))
        elif out.get("output_type") == "error":
            parts.append(f"{out.get('ename')}: {out.get('evalue')}\n" + "\n".join(out.get("traceback", [])[-3:]))
    return re.sub(r"\x1b\[[0-9;]*m", "", "".join(parts))  # IPython colours its tracebacks


def _cell(nb, start: str):
    """The one code cell whose source starts with ``start`` (after blank lines)."""
    found = [c for c in nb.cells if c.cell_type == "code" and c.source.lstrip().startswith(start)]
    assert len(found) == 1, f"{len(found)} code cells start with {start!r}: has the notebook changed?"
    return found[0]


def _kernel_children(kernel_pid: int) -> list[dict]:
    return [e for e in list_registered() if e.get("owner") == kernel_pid and record_alive(e)]


def test_the_whole_lab02_notebook_runs_on_the_cluster_code_path(tmp_path: Path) -> None:
    nb = read_notebook(NOTEBOOK)
    inject_parameters(nb, PARAMS, source=str(NOTEBOOK.name))
    nb.cells.insert(0, nbformat.v4.new_code_cell(SETUP.format(tests=str(TESTS), pods=str(tmp_path / "pods"))))
    nb.cells.append(nbformat.v4.new_code_cell(TEARDOWN.format()))
    started = time.monotonic()
    run = run_cells(nb, cwd=tmp_path, timeout_s=CELL_TIMEOUT_S, allow_errors=True, env={"HADRLAB_BACKEND": "kube"})
    took_s = time.monotonic() - started
    executed = write_notebook(nb, tmp_path / "02_on_the_loopback_cluster.ipynb")  # to read after a failure
    setup_out = _text(nb.cells[0])
    kernel_pid = int(setup_out.split("kernel pid ", 1)[1].split()[0]) if "kernel pid " in setup_out else -1
    deadline = time.monotonic() + 15
    while _kernel_children(kernel_pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _kernel_children(kernel_pid)
    print(f"ran in {took_s:.0f} s; executed copy: {executed}")
    board = _text(_cell(nb, "# NBVAL_CHECK_OUTPUT\nboard.summary()"))
    print(board)
    report = _text(nb.cells[-1])
    ran = json.loads(report.split("LOOPBACK ", 1)[1]) if "LOOPBACK " in report else {}
    print(ran)

    # Every cell ran, the test's own included.
    failed = "\n".join(f"cell {e.cell_index}: {e}\n{_text(nb.cells[e.cell_index])[-1500:]}" for e in run.errors)
    assert not run.problem and not run.errors, f"{run.problem}\n{failed}"
    assert "HADRLAB_BACKEND kube" in setup_out, setup_out

    # The scoreboard, as the learner reads it in the Checks cell.
    assert "Score: 8/8" in board, board

    # The Start cell took the kube branch and reported the store and the services up.
    start = _text(_cell(nb, "# Backend-specific"))
    assert "primary region a" in start and "feature writer running" in start, start
    assert "KubeFraudServices(context=" in start and "sidecar of pod fraud-api-" in start, start
    assert ran["backend"] == "kube" and ran["store"] == "KubeFeatureStore" and ran["services"] == "KubeFraudServices", ran
    # The Start cell's store, and one per RPO trial, none closed: none may leave event watches running.
    assert ran["platforms"] == 3 and ran["watches_asked"] == [False] * 3, ran
    assert {"fraud-api/fraud-api", "fraud-api/sidecar", "alert-receiver/alert-receiver",
            "feature-writer/feature-writer"} <= set(ran["containers"]), ran
    assert ran["sidecar_pod"] and ran["sidecar_pod"].startswith("fraud-api-"), ran
    # The seed Job, the steady state's lag probe, and one seq-probe per RPO trial.
    assert {"seed-features", "lag-probe", "seq-probe"} <= set(ran["jobs"]), ran
    # Latency spikes and the partition were Chaos Mesh objects; redis-cli ran in both Redis pods and the witness.
    assert {"delay-region-a", "partition-region-a"} <= set(ran["chaos"]), ran
    assert {"redis-a-0", "redis-b-0", "sentinel-w-0"} <= set(ran["exec_pods"]), ran

    # The drills' tables have rows: reads, writes and load, for the steady state and every fault.
    assert set(ran["drills"]) == {"steady", "spike below", "spike above", "partition", "kill"}, ran
    assert all(min(counts) > 0 for counts in ran["drills"].values()), ran
    table = _text(_cell(nb, "table = summary_table("))
    assert all(name in table for name in ("spike below", "spike above", "partition", "kill")), table
    assert _text(_cell(nb, "steps = pd.concat(")).count("\n") >= 3

    # The RPO trials ran with the cluster's measure_rpo: a frozen replica ("pause"), not the local proxy delay.
    assert ran["rpo"] == ["RpoResult pause", "RpoResult pause"], ran
    assert "lag from pause" in _text(_cell(nb, "def rpo_trial(")), _text(_cell(nb, "def rpo_trial("))

    assert not left, f"processes the notebook's kernel started outlived it: {left}"
