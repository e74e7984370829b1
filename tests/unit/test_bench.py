"""The benchmark runner's target logic and table, and the pure helpers of the benchmarks.

Fake figures only: nothing here starts a process.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import bench.__main__ as runner  # noqa: E402
from bench import bench_lab01  # noqa: E402
from bench.__main__ import Figure  # noqa: E402


# --------------------------------------------------------------------------- targets


@pytest.mark.parametrize(
    ("value", "target", "op", "met"),
    [
        (0.85, 0.8, ">=", True),
        (0.8, 0.8, ">=", True),
        (0.79, 0.8, ">=", False),
        (1.2, 1.5, "<=", True),
        (1.6, 1.5, "<=", False),
        (3.0, 3.0, "==", True),
        (3.1, 3.0, "==", False),
        (0.5, None, ">=", None),
    ],
)
def test_a_figure_is_met_when_its_value_satisfies_the_target(value, target, op, met):
    assert Figure("x", value, "", target, op).met is met


# --------------------------------------------------------------------------- the table


def _entry(fig: Figure) -> dict:
    return {**fig.__dict__, "met": fig.met, "measured_at": "2026-01-02 03:04", "machine": "m"}


def test_the_table_shows_target_verdict_value_with_unit_and_note():
    results = {
        "b_ratio": _entry(Figure("b_ratio", 0.7512345, "", 0.8, ">=", "direct 800 req/s")),
        "a_seconds": _entry(Figure("a_seconds", 1.25, "s", None, "<=", "reported only")),
        "c_ratio": _entry(Figure("c_ratio", 0.99, "", 1.5, "<=", "")),
    }
    text = runner._render(results)
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == ["a_seconds", "b_ratio", "c_ratio"]  # sorted
    assert rows[0] == "| `a_seconds` | 1.25 s |  |  | 2026-01-02 03:04 | reported only |"
    assert rows[1] == "| `b_ratio` | 0.7512 | >= 0.8 | **no** | 2026-01-02 03:04 | direct 800 req/s |"
    assert "| <= 1.5 | yes |" in rows[2]
    assert text.startswith("# Benchmark results\n")


# --------------------------------------------------------------------------- main()


@pytest.fixture()
def fake_bench_dir(tmp_path, monkeypatch):
    """The runner writing into a temporary folder, with two fake benchmarks."""
    calls = []

    def bench_fast():
        calls.append("fast")
        return [Figure("fast_ratio", 0.9, "", 0.8, ">="), Figure("fast_s", 2.0, "s")]

    def bench_slow():
        calls.append("slow")
        return [Figure("slow_ratio", 2.0, "", 1.5, "<=", "too slow")]

    monkeypatch.setattr(runner, "HERE", tmp_path)
    monkeypatch.setattr(runner, "_discover", lambda: {"fast": bench_fast, "slow": bench_slow})
    return tmp_path, calls


def test_main_writes_every_figure_and_names_the_missed_targets(fake_bench_dir, capsys):
    folder, calls = fake_bench_dir
    assert runner.main([]) == 0
    assert calls == ["fast", "slow"]
    results = json.loads((folder / "results.json").read_text())
    assert set(results) == {"fast_ratio", "fast_s", "slow_ratio"}
    assert results["fast_ratio"]["met"] is True
    assert results["slow_ratio"]["met"] is False
    assert results["fast_s"]["met"] is None
    assert "`slow_ratio` | 2 | <= 1.5 | **no**" in (folder / "results.md").read_text()
    out = capsys.readouterr().out
    assert re.search(r"slow_ratio = 2\s+\(target <= 1.5\) NOT MET", out)
    assert "Targets not met: slow_ratio" in out


def test_running_one_benchmark_keeps_the_others_previous_figures(fake_bench_dir):
    folder, calls = fake_bench_dir
    old = _entry(Figure("slow_ratio", 1.0, "", 1.5, "<="))
    (folder / "results.json").write_text(json.dumps({"slow_ratio": old}))
    assert runner.main(["--only", "fast"]) == 0
    assert calls == ["fast"]
    results = json.loads((folder / "results.json").read_text())
    assert results["slow_ratio"] == old
    assert set(results) == {"fast_ratio", "fast_s", "slow_ratio"}


def test_an_unknown_benchmark_name_is_refused_without_writing(fake_bench_dir, capsys):
    folder, calls = fake_bench_dir
    assert runner.main(["--only", "nope"]) == 2
    assert calls == []
    assert not (folder / "results.json").exists()
    assert "Unknown benchmark(s) ['nope']" in capsys.readouterr().err


def test_the_real_benchmarks_are_discovered():
    names = set(runner._discover())
    assert {"lab00", "lab01_balancer", "lab01_kill", "lab01_probes"} <= names


# --------------------------------------------------------------------------- Lab 01 helpers


def _deployment(docs):
    return next(d for d in docs if d["kind"] == "Deployment")


def _service(docs):
    return next(d for d in docs if d["kind"] == "Service")


def test_the_hardened_variant_keeps_the_probes_and_turns_retry_on():
    docs = bench_lab01.manifests()
    container = _deployment(docs)["spec"]["template"]["spec"]["containers"][0]
    assert set(bench_lab01.PROBE_KEYS) <= set(container)
    assert _deployment(docs)["spec"]["replicas"] == 2
    assert _service(docs)["metadata"]["annotations"][bench_lab01.RETRY_ANNOTATION] == "true"


def test_the_variants_drop_probes_retry_or_a_replica():
    docs = bench_lab01.manifests(replicas=1, probes=False, retry=False)
    container = _deployment(docs)["spec"]["template"]["spec"]["containers"][0]
    assert not set(bench_lab01.PROBE_KEYS) & set(container)
    assert _deployment(docs)["spec"]["replicas"] == 1
    assert _service(docs)["metadata"]["annotations"][bench_lab01.RETRY_ANNOTATION] == "false"


def test_the_liveness_budget_is_period_times_failure_threshold():
    docs = bench_lab01.manifests()
    probe = _deployment(docs)["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    probe["periodSeconds"], probe["failureThreshold"] = 4, 5
    assert bench_lab01.liveness_budget_s(docs) == (20.0, 4, 5)


def test_first_event_picks_the_replica_and_the_kind_after_a_time():
    events = pd.DataFrame(
        [
            {"t": 10.0, "kind": "unready", "replica": "a"},
            {"t": 11.0, "kind": "unready", "replica": "b"},
            {"t": 12.0, "kind": "ready", "replica": "a"},
            {"t": 13.0, "kind": "unready", "replica": "a"},
            {"t": 14.0, "kind": "unready", "replica": "a"},
        ]
    )
    assert bench_lab01.first_event_t(events, "unready", "a", 10.5) == 13.0
    assert bench_lab01.first_event_t(events, "unready", "b", 0.0) == 11.0
    assert bench_lab01.first_event_t(events, "restarted", "a", 0.0) is None
