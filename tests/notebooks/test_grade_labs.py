"""The grader on the real labs: the solution scores full marks; the untouched learner
notebook fails its checks with hints and never crashes the grader."""

from __future__ import annotations

from pathlib import Path

import pytest

from hadrlab.grading import grade_notebooks

ROOT = Path(__file__).resolve().parents[2]
# Labs cheap enough to run twice more in the suite (solution and learner twin).
GRADED = ["00_foundations.ipynb"]


@pytest.mark.parametrize("name", GRADED)
def test_solution_scores_full_marks_and_learner_twin_fails_with_hints(name):
    solution, learner = grade_notebooks(
        [ROOT / "solutions" / name, ROOT / "labs" / name], timeout_s=300
    )
    assert solution.total >= 5 and solution.passed == solution.total, solution.report()
    assert not solution.errors, solution.report()

    assert learner.total == solution.total, learner.report()
    failed = [c for c in learner.checks if not c.passed]
    assert len(failed) >= solution.total // 2, learner.report()
    assert all(c.reason and c.advice for c in failed), learner.report()
    # Unfinished exercises are reported as such, not as crashes of the grader.
    assert any(e.ename == "NotImplementedError" for e in learner.errors), learner.report()


def test_checks_follow_the_parameters_an_instructor_gives():
    """A shorter run (fewer writes) still scores full marks: no check assumes the defaults."""
    (grade,) = grade_notebooks(
        [ROOT / "solutions" / "00_foundations.ipynb"], timeout_s=300,
        params={"WRITES": 300, "LAG_SAMPLES": 50},
    )
    assert grade.passed == grade.total >= 5, grade.report()
    measured = {c.name: c for c in grade.checks}["measured with this notebook's parameters"]
    assert "300" in str(measured.measured), measured


def test_lab01_solution_scores_full_marks_with_fewer_users_and_shorter_runs():
    params = {"USERS": 4, "LOAD_S": 8, "FAULT_AT_S": 2, "MODEL_LOAD_DELAY_S": 1}
    (grade,) = grade_notebooks([ROOT / "solutions" / "01_stateless_replicas.ipynb"], timeout_s=300, params=params)
    assert not grade.errors, grade.report()
    assert grade.passed == grade.total >= 15, grade.report()
    measured = {c.name: c for c in grade.checks}["measured with this notebook's parameters"]
    assert "(4, True)" in str(measured.measured), measured


# Lab 02 under other valid parameters: every drill's timing and every bound follows them.
LAB02_SWEEP = {
    "slower checks, a larger spike": {"CHECK_INTERVAL_MS": 250, "SPIKE_MS": 300, "WRITE_RTO_TARGET_S": 4.0},
    "faster checks, closer regions": {"CHECK_INTERVAL_MS": 50, "CROSS_REGION_MS": 2, "LATENCY_MS": 10,
                                      "STEADY_S": 3, "DRILL_S": 6},
}


@pytest.mark.parametrize("params", LAB02_SWEEP.values(), ids=LAB02_SWEEP.keys())
def test_lab02_solution_scores_full_marks_under_other_valid_parameters(params, tmp_path):
    (grade,) = grade_notebooks([ROOT / "solutions" / "02_feature_store_dr.ipynb"], timeout_s=300, params=params,
                               output_dir=tmp_path)
    assert not grade.errors, grade.report()
    # 9 checks; the monitoring one reads SKIP (and does not count) only where Prometheus is missing.
    from hadrlab.monitoring import monitoring_available

    assert grade.passed == grade.total and grade.total + grade.skipped == 9, grade.report()
    assert grade.skipped == (1 if monitoring_available() else 0), grade.report()
    # Each drill verified its steady state first, and none saw what it was not meant to.
    text = grade.executed_path.read_text()
    assert text.count("started from a steady state: region a primary") >= 4, grade.report()
    assert "note: " not in text


def _parameters_check(**overrides):
    """Run Lab 02's Parameters cell with ``overrides``, then the cell that checks them."""
    from hadrlab.notebooks import read_notebook

    cells = [c for c in read_notebook(ROOT / "solutions" / "02_feature_store_dr.ipynb").cells if c.cell_type == "code"]
    first = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    scope: dict = {}
    exec(cells[first].source, scope)
    scope.update(overrides)
    exec(cells[first + 1].source, scope)
    return scope


def test_lab02_refuses_parameters_whose_drills_could_not_work_and_names_the_value_to_change():
    assert _parameters_check()["min_drill_s"] <= 8  # the defaults fit
    # The case seen: a spike whose round trip leaves no down-after between it and the RTO target.
    with pytest.raises(ValueError, match=r"must exceed 1600 ms.*raise WRITE_RTO_TARGET_S to at least 3.6 or lower "
                                         r"SPIKE_MS"):
        _parameters_check(CHECK_INTERVAL_MS=250, SPIKE_MS=400)
    # Slow checks: a spike of (DRILL_S - FAULT_AT_S) / 2 is too short for reads to move and come back.
    with pytest.raises(ValueError, match=r"DRILL_S = 8 is too short.*so DRILL_S >= 10 \(or lower CHECK_INTERVAL_MS\)"):
        _parameters_check(CHECK_INTERVAL_MS=500)
    with pytest.raises(ValueError, match=r"SPIKE_MS >= 60"):
        _parameters_check(SPIKE_MS=50)
    with pytest.raises(ValueError, match=r"CHECK_INTERVAL_MS = 5: use 20-1000"):
        _parameters_check(CHECK_INTERVAL_MS=5)
    with pytest.raises(ValueError, match=r"USERS = 50: use 1-10"):
        _parameters_check(USERS=50)


def test_lab03_with_one_experiment_skips_the_others_and_explains_unfinished_cells(tmp_path):
    """Checks about experiments left out are skipped; in the learner's twin every failing check
    says why and shows its authored hint, and the report names the first unfinished cell."""
    solution, learner = grade_notebooks(
        [ROOT / "solutions" / "03_chaos_pipeline.ipynb", ROOT / "labs" / "03_chaos_pipeline.ipynb"],
        timeout_s=300, params={"EXPERIMENTS": ["registry-outage"]}, output_dir=tmp_path / "graded",
    )
    assert not solution.errors, solution.report()
    assert (solution.passed, solution.total, solution.skipped) == (6, 6, 5), solution.report()
    assert solution.report().endswith("Score 6/6 (5 not run)")
    skipped = [c for c in solution.checks if c.skipped]
    assert all(c.reason.startswith("not run (") and "not in EXPERIMENTS" in c.reason for c in skipped)
    assert "StopIteration" not in solution.report()

    first = learner.errors[0]
    assert first.ename == "NotImplementedError", learner.report()
    assert learner.root_cause.startswith(f"cell {first.cell_index} raised NotImplementedError")
    assert f"Likely root cause: cell {first.cell_index} raised NotImplementedError" in learner.report()
    failed = [c for c in learner.checks if not c.passed and not c.skipped]
    assert failed and all(c.reason and c.hint and c.hint in c.advice for c in failed), learner.report()
    contract = {c.name: c for c in learner.checks}["online serving answers through a registry outage"]
    assert "hardened_results" in contract.reason and "exercise" not in contract.reason
    assert "cached-model fallback" in contract.advice

    # The executed copies keep every output, for the instructor to read.
    copies = sorted(p.name for p in (tmp_path / "graded").iterdir())
    assert copies == ["labs-03_chaos_pipeline.ipynb", "solutions-03_chaos_pipeline.ipynb"]
    assert solution.executed_path == tmp_path / "graded" / "solutions-03_chaos_pipeline.ipynb"
    text = solution.executed_path.read_text()
    assert "Score: 6/6 (5 not run)" in text  # the summary cell's output, not in any source
