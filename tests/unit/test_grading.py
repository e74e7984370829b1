"""Graded checks: pass/fail, tolerances, unfinished exercises, the grade file, the summary."""

from __future__ import annotations

import json

import pytest

from hadrlab.grading import (
    GRADE_FILE_ENV,
    CheckResult,
    NotebookGrade,
    Scoreboard,
    read_grade_file,
)


@pytest.fixture(autouse=True)
def _no_grade_file(monkeypatch):
    monkeypatch.delenv(GRADE_FILE_ENV, raising=False)


def test_check_close_passes_within_tolerance_and_reads_as_one_line():
    board = Scoreboard("00")
    result = board.check_close("monthly-error-budget", 21.6, 21.6, tol=0.1, unit="min")
    assert result.passed
    assert repr(result) == "PASS  monthly-error-budget  measured 21.6 min, expected 21.6 ± 0.1 min"
    assert str(result) == repr(result)


@pytest.mark.parametrize(("measured", "passed"), [(21.69, True), (21.51, True), (21.75, False), (20.0, False)])
def test_check_close_tolerance_is_absolute_and_inclusive(measured, passed):
    result = Scoreboard("00").check_close("budget", measured, 21.6, tol=0.1, unit="min")
    assert result.passed is passed


def test_check_close_accepts_float_rounding_at_the_edge():
    assert Scoreboard("00").check_close("sum", 0.1 * 3, 0.3, tol=0).passed


def test_failed_check_close_says_how_far_off_it_is():
    result = Scoreboard("00").check_close("budget", 43.2, 21.6, tol=0.1, unit="min")
    assert not result.passed
    assert "21.6 min away from 21.6" in result.hint
    assert repr(result).startswith("FAIL  budget  measured 43.2 min, expected 21.6 ± 0.1 min")


@pytest.mark.parametrize("measured", ["21.6", None, True, float("nan")])
def test_check_close_fails_on_values_that_are_not_finite_numbers(measured):
    result = Scoreboard("00").check_close("budget", measured, 21.6, tol=0.1)
    assert not result.passed
    assert result.hint


def test_learner_hint_replaces_the_default_hint():
    result = Scoreboard("00").check_close("budget", 1.0, 21.6, tol=0.1, hint="use downtime_budget()")
    assert result.hint == "use downtime_budget()"


def test_unfinished_exercise_fails_with_a_hint_instead_of_raising():
    def unfinished():
        raise NotImplementedError("compute the monthly budget in minutes")

    result = Scoreboard("00").check_close("budget", unfinished, 21.6, tol=0.1, unit="min")
    assert not result.passed
    assert result.hint == (
        "finish the exercise cell above "
        "(it raised NotImplementedError: compute the monthly budget in minutes)"
    )
    assert "not measured" in repr(result)


def test_a_variable_never_defined_fails_with_run_the_cells_above():
    result = Scoreboard("00").check_true(
        "wait-costs-latency", lambda: never_defined_latency_ms, lambda ms: ms > 1.0, "> 1.0 ms"  # noqa: F821
    )
    assert not result.passed
    assert result.hint.startswith("name 'never_defined_latency_ms' is not defined: finish the exercise cell above")


def test_any_other_exception_names_its_type_and_message():
    result = Scoreboard("00").check_equal("policy", lambda: {}["policy"], "allkeys-lru")
    assert not result.passed
    assert "KeyError" in result.hint and "'policy'" in result.hint


def test_check_true_uses_the_condition_and_shows_the_expectation_in_words():
    board = Scoreboard("02")
    ok = board.check_true("rpo-writes-lost", 0, lambda n: n == 0, "0 writes lost with WAIT")
    bad = board.check_true("wait-latency", 0.4, lambda ms: ms > 1.0, "> 1.0 ms")
    assert ok.passed and not bad.passed
    assert bad.expected == "> 1.0 ms"
    assert bad.hint == "0.4 does not meet > 1.0 ms"


def test_check_true_fails_when_the_condition_cannot_be_evaluated():
    result = Scoreboard("02").check_true("wait-latency", None, lambda ms: ms > 1.0, "> 1.0 ms")
    assert not result.passed
    assert "TypeError" in result.hint


def test_check_equal_ignores_case_and_spacing_of_strings_only():
    board = Scoreboard("04")
    assert board.check_equal("tier", "  Warm   STANDBY ", "warm standby").passed
    assert not board.check_equal("tier", "pilot light", "warm standby").passed
    assert board.check_equal("replicas", 3, 3).passed
    assert not board.check_equal("replicas", "3", 3).passed


def test_rerunning_a_check_replaces_its_result_and_keeps_its_place():
    board = Scoreboard("00")
    board.check_close("a", 1.0, 2.0, tol=0.1)
    board.check_close("b", 1.0, 1.0, tol=0.1)
    board.check_close("a", 2.0, 2.0, tol=0.1)
    assert [r.name for r in board.results] == ["a", "b"]
    assert all(r.passed for r in board.results)
    assert (board.passed, board.total) == (2, 2)


def test_summary_prints_only_names_verdicts_and_score(capsys):
    board = Scoreboard("00")
    board.check_close("monthly-error-budget", 21.63, 21.6, tol=0.1, unit="min")
    board.check_true("wait-latency", lambda: missing_name, bool, "> 1.0 ms")  # noqa: F821
    assert board.summary() is None
    assert capsys.readouterr().out == "PASS monthly-error-budget\nFAIL wait-latency\nScore: 1/2\n"


def test_html_shows_every_check_escaped_with_the_score():
    board = Scoreboard("01")
    board.check_equal("<policy>", "a&b", "a&b")
    board.check_close("rto", 9.0, 2.0, tol=1.0, unit="s")
    page = board._repr_html_()
    assert page.count("<tr>") == 3  # header + two checks
    assert "&lt;policy&gt;" in page and "a&amp;b" in page
    assert "score: 1/2" in page
    assert "FAIL" in board.results[1]._repr_html_()


def test_every_check_appends_one_json_line_to_the_grade_file(tmp_path, monkeypatch):
    grade_file = tmp_path / "grades.jsonl"
    monkeypatch.setenv(GRADE_FILE_ENV, str(grade_file))
    board = Scoreboard("00")
    board.check_close("budget", 21.6, 21.6, tol=0.1, unit="min")
    board.check_equal("obj", lambda: object(), "x")

    def unfinished():
        raise NotImplementedError("later")

    board.check_close("budget", unfinished, 21.6, tol=0.1, unit="min")
    lines = [json.loads(line) for line in grade_file.read_text().splitlines()]
    assert len(lines) == 3
    assert lines[0] == {
        "lab": "00", "name": "budget", "passed": True, "measured": 21.6,
        "expected": "21.6 ± 0.1 min", "hint": "", "unit": "min", "error": "",
    }
    assert lines[1]["measured"].startswith("<object object at")  # json-safe repr
    assert lines[2]["passed"] is False and lines[2]["measured"] is None
    # The grader keeps the last result of a check that ran twice, in first-run order.
    collected = read_grade_file(grade_file)
    assert [(c.name, c.passed) for c in collected] == [("budget", False), ("obj", False)]


def test_read_grade_file_skips_malformed_lines(tmp_path):
    path = tmp_path / "grades.jsonl"
    good = CheckResult("budget", True, 21.6, "21.6 ± 0.1 min", unit="min", lab="00").to_dict()
    path.write_text("not json\n" + json.dumps(good) + "\n{\"truncated\": \n")
    assert [c.name for c in read_grade_file(path)] == ["budget"]
    assert read_grade_file(tmp_path / "absent.jsonl") == []


def test_notebook_grade_report_lists_checks_errors_and_score(tmp_path):
    from hadrlab.notebooks import CellError

    grade = NotebookGrade(
        tmp_path / "lab00.ipynb",
        checks=[
            CheckResult("budget", True, 21.6, "21.6 ± 0.1 min", unit="min"),
            CheckResult("wait", False, None, "> 1.0 ms", hint="run the cells above first", error="NameError"),
        ],
        errors=[CellError(4, "NotImplementedError", "compute it", "budget_min = ...")],
    )
    text = grade.report()
    assert "budget  PASS    21.6 min" in text
    assert "not measured" in text and "run the cells above first" in text
    assert "cell 4 (budget_min = ...): NotImplementedError: compute it" in text
    assert text.endswith("Score 1/2")
    assert grade.score == 0.5


def test_ungraded_notebook_report_says_why(tmp_path):
    grade = NotebookGrade(tmp_path / "x.ipynb", problem="x.ipynb was not found.", graded=False)
    assert "NOT GRADED: x.ipynb was not found." in grade.report()
    assert grade.to_dict()["graded"] is False


def test_check_true_shows_the_unit_of_the_measured_value():
    result = Scoreboard("00").check_true("wait-latency", 0.4, lambda ms: ms > 1.0, "> 1.0 ms", unit="ms")
    assert repr(result).startswith("FAIL  wait-latency  measured 0.4 ms, expected > 1.0 ms")
    assert result.hint == "0.4 ms does not meet > 1.0 ms"


def _fake_grades(monkeypatch, scores):
    """Make the grader return fixed grades instead of running kernels."""
    import hadrlab.grading as grading

    def fake(path, timeout_s=300, kernel_name=None, params=None):
        passed, total = scores[str(path)]
        checks = [CheckResult(f"c{i}", i < passed, 1, "1") for i in range(total)]
        return NotebookGrade(grading.Path(path), checks=checks)

    monkeypatch.setattr(grading, "grade_notebook", fake)


def test_grader_exits_zero_with_failing_checks_and_one_below_fail_under(monkeypatch, capsys):
    from hadrlab.grading import main_grade

    _fake_grades(monkeypatch, {"a.ipynb": (4, 4), "b.ipynb": (1, 4)})
    assert main_grade(["a.ipynb", "b.ipynb"]) == 0
    assert main_grade(["a.ipynb", "b.ipynb", "--fail-under", "0.25"]) == 0
    assert main_grade(["a.ipynb", "b.ipynb", "--fail-under", "0.5"]) == 1
    out = capsys.readouterr().out
    assert "Score 4/4" in out and "Score 1/4" in out


def _write_broken_notebook(path):
    """A notebook whose cell 3 raises and whose cell 4 ends the kernel; it has no checks."""
    import nbformat
    from nbformat import v4

    nb = v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        v4.new_markdown_cell("# Lab 98: a broken notebook"),
        v4.new_code_cell("N = 1"),
        v4.new_code_cell("doubled = 2 * N"),
        v4.new_code_cell("raise ValueError(f'N is {N}')"),
        v4.new_code_cell("import os\nos._exit(1)"),
    ]
    nb.cells[1].metadata["tags"] = ["parameters"]
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_grader_cell_numbers_are_the_learners_with_or_without_param(tmp_path, capsys):
    """--param must not shift the cell numbers in the text, JSON and CSV reports."""
    import csv

    from hadrlab.grading import main_grade

    notebook = _write_broken_notebook(tmp_path / "lab98.ipynb")
    reports = {}
    for label, extra in (("plain", []), ("param", ["--param", "N=2"])):
        out_json, out_csv = tmp_path / f"{label}.json", tmp_path / f"{label}.csv"
        code = main_grade([str(notebook), "--timeout", "60", "--json", str(out_json),
                           "--csv", str(out_csv), *extra])
        assert code == 0
        (grade,) = json.loads(out_json.read_text())
        with open(out_csv, newline="") as fh:
            (row,) = list(csv.DictReader(fh))
        reports[label] = (capsys.readouterr().out, grade, row)
    for label, n in (("plain", 1), ("param", 2)):
        text, grade, row = reports[label]
        assert f"cell 3 (raise ValueError(f'N is {{N}}')): ValueError: N is {n}" in text
        assert "the kernel died while running cell 4" in text
        assert [(e["cell_index"], e["evalue"]) for e in grade["errors"]] == [(3, f"N is {n}")]
        assert "the kernel died while running cell 4" in grade["problem"]
        assert "the kernel died while running cell 4" in row["hint"]
