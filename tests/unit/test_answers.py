"""Quiz answer sheets and written answers: what a learner leaves in the notebook for the grader."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from hadrlab.answers import QUIZ_MIME, answer_sheet, read_answer_sheets, written_answers
from hadrlab.errors import QuizError
from hadrlab.notebooks import ANSWER_PLACEHOLDER



@pytest.fixture
def bank(small_bank: Path) -> str:
    return str(small_bank)


def test_each_answer_gets_its_own_verdict_and_the_right_ones_score(bank: str) -> None:
    sheet = answer_sheet(bank, {"rto-vs-rpo": "b", "budget-minutes": 30, "replicated-state": ["c", "b"],
                                "explain": "I promote the replica and repoint the clients."})
    assert sheet.verdicts == {"rto-vs-rpo": "correct", "budget-minutes": "incorrect",
                              "replicated-state": "correct", "explain": "written"}
    assert (sheet.points, sheet.scored, sheet.unanswered) == (2, 3, [])
    assert sheet.summary.startswith("quiz ") and "2/3 right" in sheet.summary


def test_a_bad_answer_is_refused_with_why_and_loses_none_of_the_others(bank: str) -> None:
    sheet = answer_sheet(bank, {"rto_vs": "b", "budget-minutes": "twenty", "rto-vs-rpo": "b"})
    assert sheet.verdicts["rto-vs-rpo"] == "correct"
    assert sheet.verdicts["rto_vs"].startswith("refused: no question 'rto_vs'")
    assert "did you mean 'rto-vs-rpo'" in sheet.verdicts["rto_vs"]
    assert sheet.verdicts["budget-minutes"].startswith("refused:") and "number" in sheet.verdicts["budget-minutes"]
    assert sheet.points == 1
    assert "2 refused" in sheet.summary
    assert set(sheet.unanswered) == {"replicated-state", "explain"}


def test_answers_that_are_not_a_dict_get_an_example_of_the_right_form(bank: str) -> None:
    with pytest.raises(QuizError, match=r"dict of question id -> answer.*got list"):
        answer_sheet(bank, ["b", 21.6])


def test_an_empty_sheet_lists_the_question_ids_to_answer(bank: str) -> None:
    sheet = answer_sheet(bank, {})
    assert "no answers yet" in repr(sheet)
    assert "rto-vs-rpo" in repr(sheet) and "budget-minutes" in sheet._repr_html_()


def _notebook(*outputs: dict) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("hadrlab.answer_sheet(...)")
    cell.outputs = [nbformat.v4.new_output("display_data", data=data) for data in outputs]
    nb.cells.append(cell)
    return nb


def test_the_grader_scores_the_raw_answers_again_and_ignores_a_claimed_score(bank: str) -> None:
    honest = answer_sheet(bank, {"rto-vs-rpo": "a"})
    forged = {**honest.record(), "points": 3, "verdicts": {"rto-vs-rpo": "correct"}}
    assert QUIZ_MIME in honest._repr_mimebundle_()
    [sheet] = read_answer_sheets(_notebook({QUIZ_MIME: forged, "text/plain": "3/3"}))
    assert sheet.points == 0 and sheet.verdicts == {"rto-vs-rpo": "incorrect"}


def test_the_last_sheet_of_a_bank_counts(bank: str) -> None:
    first = answer_sheet(bank, {"rto-vs-rpo": "a"}).record()
    last = answer_sheet(bank, {"rto-vs-rpo": "b"}).record()
    [sheet] = read_answer_sheets(_notebook({QUIZ_MIME: first}, {QUIZ_MIME: last}))
    assert sheet.points == 1


def test_written_answers_are_read_from_the_course_answer_cells_only() -> None:
    course = nbformat.v4.new_notebook()
    question = "**Question.** What does `WAIT` buy?\n\n"
    course.cells = [nbformat.v4.new_markdown_cell("Some text.", id="lab02-a"),
                    nbformat.v4.new_markdown_cell(question + ANSWER_PLACEHOLDER, id="lab02-b"),
                    nbformat.v4.new_markdown_cell("**Question.** And RPO?\n\n" + ANSWER_PLACEHOLDER, id="lab02-c")]
    mine = nbformat.v4.new_notebook()
    mine.cells = [nbformat.v4.new_markdown_cell("I rewrote this.", id="lab02-a"),
                  nbformat.v4.new_markdown_cell(question + "It bounds the loss to what the replica acked.",
                                                id="lab02-b"),
                  nbformat.v4.new_markdown_cell(course.cells[2].source, id="lab02-c")]
    answers = written_answers(mine, course)
    assert [(a["cell"], a["answered"]) for a in answers] == [("lab02-b", True), ("lab02-c", False)]
    assert answers[0]["text"] == "It bounds the loss to what the replica acked."
    assert answers[1]["text"] == ""
