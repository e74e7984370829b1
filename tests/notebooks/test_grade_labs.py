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
    assert all(c.hint for c in failed), learner.report()
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
