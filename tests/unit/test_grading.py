"""Graded checks: pass/fail, tolerances, unfinished exercises, the grade file, the summary."""

from __future__ import annotations

import json

import pytest

from hadrlab.grading import (
    GRADE_FILE_ENV,
    CheckResult,
    NotebookGrade,
    NotRun,
    Scoreboard,
    executed_copy_paths,
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
    assert result.reason == "43.2 is 21.6 min away from 21.6"
    assert repr(result).startswith("FAIL  budget  measured 43.2 min, expected 21.6 ± 0.1 min")
    assert repr(result).endswith("-> 43.2 is 21.6 min away from 21.6; hint: re-check the calculation")


def test_an_exact_expectation_reads_without_a_tolerance():
    assert Scoreboard("03").check_close("availability", 0.0, 0, tol=0).expected == "0"
    assert Scoreboard("03").check_close("availability", 0.0, 0, tol=1e-9).expected == "0"
    assert Scoreboard("03").check_close("rto", 2.0, 2.0, tol=0.5, unit="s").expected == "2 ± 0.5 s"


@pytest.mark.parametrize("measured", ["21.6", None, True, float("nan")])
def test_check_close_fails_on_values_that_are_not_finite_numbers(measured):
    result = Scoreboard("00").check_close("budget", measured, 21.6, tol=0.1)
    assert not result.passed
    assert result.reason and result.advice


def test_authored_hint_is_shown_after_the_specific_reason():
    result = Scoreboard("00").check_close("budget", 1.0, 21.6, tol=0.1, hint="use downtime_budget()")
    assert result.hint == "use downtime_budget()"
    assert result.advice == "1 is 20.6 away from 21.6; hint: use downtime_budget()"


def test_unfinished_exercise_fails_with_its_reason_and_the_authored_hint():
    def unfinished():
        raise NotImplementedError("compute the monthly budget in minutes")

    result = Scoreboard("00").check_close("budget", unfinished, 21.6, tol=0.1, unit="min",
                                          hint="30 days of minutes times (1 - SLO)")
    assert not result.passed
    assert result.reason == (
        "finish the exercise cell above "
        "(it raised NotImplementedError: compute the monthly budget in minutes)"
    )
    assert result.hint == "30 days of minutes times (1 - SLO)"
    assert "not measured" in repr(result)
    assert repr(result).endswith("; hint: 30 days of minutes times (1 - SLO)")


def test_a_variable_never_defined_names_it_without_blaming_an_exercise_and_keeps_the_hint():
    result = Scoreboard("03").check_true(
        "hardened outcome", lambda: hardened_results_never_set, bool, "held",  # noqa: F821
        hint="turn on the data contract",
    )
    assert not result.passed
    assert result.reason.startswith("name 'hardened_results_never_set' is not defined: the cell that sets it")
    assert "exercise" not in result.reason
    assert result.advice.endswith("; hint: turn on the data contract")


def test_any_other_exception_names_its_type_and_message():
    result = Scoreboard("00").check_equal("policy", lambda: {}["policy"], "allkeys-lru")
    assert not result.passed
    assert "KeyError" in result.reason and "'policy'" in result.reason


def test_not_run_skips_the_check_and_leaves_it_out_of_the_score(capsys):
    def availability():
        raise NotRun("not run (registry-slow is not in EXPERIMENTS)")

    board = Scoreboard("03")
    board.check_true("slow registry", availability, lambda a: a >= 0.99, ">= 0.99", hint="add a fallback")
    board.skip("outage", "not run (registry-outage is not in EXPERIMENTS)")
    board.check_equal("gaps", 0, 0)
    skipped = board.results[0]
    assert (skipped.status, skipped.passed, skipped.skipped) == ("SKIP", False, True)
    assert repr(skipped) == "SKIP  slow registry  not run (registry-slow is not in EXPERIMENTS)"
    assert (board.passed, board.total, board.skipped) == (1, 1, 2)
    board.summary()
    assert capsys.readouterr().out == "SKIP slow registry\nSKIP outage\nPASS gaps\nScore: 1/1 (2 not run)\n"
    assert "1/1 (2 not run)" in board._repr_html_()


def test_tuples_and_lists_read_naturally_in_the_notebook_and_after_the_grade_file(tmp_path, monkeypatch):
    grade_file = tmp_path / "grades.jsonl"
    monkeypatch.setenv(GRADE_FILE_ENV, str(grade_file))
    board = Scoreboard("01")
    board.check_true("grace", (19, 0), lambda v: v[1] == 0, "no drain left")
    board.check_equal("switches off", [], [])
    board.check_equal("pair", ("a", 1.5), ("a", 1.5))
    assert [r.measured_text for r in board.results] == ["(19, 0)", "[]", "('a', 1.5)"]
    collected = read_grade_file(grade_file)
    assert [c.measured_text for c in collected] == ["(19, 0)", "[]", "('a', 1.5)"]
    assert [c.expected for c in collected][1:] == ["[]", "('a', 1.5)"]
    assert json.loads(grade_file.read_text().splitlines()[0])["measured"] == [19, 0]


def test_check_true_uses_the_condition_and_shows_the_expectation_in_words():
    board = Scoreboard("02")
    ok = board.check_true("rpo-writes-lost", 0, lambda n: n == 0, "0 writes lost with WAIT")
    bad = board.check_true("wait-latency", 0.4, lambda ms: ms > 1.0, "> 1.0 ms")
    assert ok.passed and not bad.passed
    assert bad.expected == "> 1.0 ms"
    assert bad.reason == bad.advice == "0.4 does not meet > 1.0 ms"


def test_check_true_fails_when_the_condition_cannot_be_evaluated():
    result = Scoreboard("02").check_true("wait-latency", None, lambda ms: ms > 1.0, "> 1.0 ms")
    assert not result.passed
    assert "TypeError" in result.reason and "TypeError" in result.advice


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
        "lab": "00", "name": "budget", "status": "PASS", "passed": True, "skipped": False,
        "measured": 21.6, "measured_text": "21.6", "expected": "21.6 ± 0.1 min", "reason": "",
        "hint": "", "unit": "min", "error": "",
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


def test_report_names_the_first_failed_cell_as_the_likely_root_cause(tmp_path):
    from hadrlab.notebooks import CellError

    grade = NotebookGrade(
        tmp_path / "lab03.ipynb",
        checks=[CheckResult("hardened", False, None, "held", hint="turn on the contract",
                            error="NameError", reason="name 'hardened_results' is not defined: ...")],
        errors=[CellError(7, "NotImplementedError", "build my_hardening", "# TODO: build my_hardening"),
                CellError(9, "NameError", "name 'my_hardening' is not defined", "hardened = ...")],
    )
    text = grade.report()
    assert ("Likely root cause: cell 7 raised NotImplementedError (build my_hardening): finish it first; "
            "later failures follow from it.") in text
    assert "name 'hardened_results' is not defined: ...; hint: turn on the contract" in text
    assert grade.to_dict()["root_cause"].startswith("cell 7 raised NotImplementedError")
    other = NotebookGrade(tmp_path / "x.ipynb", errors=[CellError(3, "KeyError", "'p99_ms'", "x")])
    assert other.root_cause.startswith("cell 3 raised KeyError ('p99_ms'): fix it first")
    assert NotebookGrade(tmp_path / "ok.ipynb").root_cause == ""


def test_notebook_score_leaves_skipped_checks_out(tmp_path):
    grade = NotebookGrade(
        tmp_path / "lab03.ipynb",
        checks=[CheckResult(f"p{i}", True, 1, "1") for i in range(6)]
        + [CheckResult(f"s{i}", False, None, "", reason="not run (x is not in EXPERIMENTS)", skipped=True)
           for i in range(5)],
    )
    assert (grade.passed, grade.total, grade.skipped, grade.score) == (6, 6, 5, 1.0)
    text = grade.report()
    assert text.endswith("Score 6/6 (5 not run)")
    assert "SKIP    not run  " in text and "not run (x is not in EXPERIMENTS)" in text
    data = grade.to_dict()
    assert (data["passed"], data["total"], data["skipped"], data["score_text"]) == (6, 6, 5, "6/6 (5 not run)")


def test_executed_copies_are_named_after_submissions_and_never_overwrite_one(tmp_path):
    subs = [tmp_path / "alice" / "lab03.ipynb", tmp_path / "bob" / "lab03.ipynb", tmp_path / "carol" / "lab00.ipynb"]
    out = tmp_path / "graded"
    assert executed_copy_paths(subs, out) == [out / "alice-lab03.ipynb", out / "bob-lab03.ipynb", out / "lab00.ipynb"]
    # The output folder is the submissions' own folder: the copy takes another name.
    (same,) = executed_copy_paths([tmp_path / "alice" / "lab03.ipynb"], tmp_path / "alice")
    assert same != tmp_path / "alice" / "lab03.ipynb" and same.parent == tmp_path / "alice"


def test_ungraded_notebook_report_says_why(tmp_path):
    grade = NotebookGrade(tmp_path / "x.ipynb", problem="x.ipynb was not found.", graded=False)
    assert "NOT GRADED: x.ipynb was not found." in grade.report()
    assert grade.to_dict()["graded"] is False


def test_check_true_shows_the_unit_of_the_measured_value():
    result = Scoreboard("00").check_true("wait-latency", 0.4, lambda ms: ms > 1.0, "> 1.0 ms", unit="ms")
    assert repr(result).startswith("FAIL  wait-latency  measured 0.4 ms, expected > 1.0 ms")
    assert result.advice == "0.4 ms does not meet > 1.0 ms"


def _fake_grades(monkeypatch, scores):
    """Make the grader return fixed grades instead of running kernels."""
    import hadrlab.grading as grading

    def fake(path, timeout_s=300, kernel_name=None, params=None, executed_path=None):
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
                           "--csv", str(out_csv), "--output-dir", str(tmp_path / label), *extra])
        assert code == 0
        # The executed copy is kept, outputs included, even though the kernel died.
        executed = json.loads((tmp_path / label / "lab98.ipynb").read_text())
        assert [o["ename"] for o in executed["cells"][3]["outputs"] if o["output_type"] == "error"] == ["ValueError"]
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
        assert row["reason"].startswith("cell 3 raised ValueError (N is")
        assert f"executed copy: {tmp_path / label / 'lab98.ipynb'}" in text
