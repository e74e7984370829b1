"""The grader runs the course's own check cells: editing a check, deleting one, appending to the
grade file or displaying a forged record does not change a grade. Real kernels, a small course."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat import v4

from hadrlab.checkcells import CHECK_MIME, CHECK_TAG
from hadrlab.grading import grade_notebooks

SETUP = "from hadrlab.grading import Scoreboard\nboard = Scoreboard('07')"
CHECK_ANSWER = "display(board.check_equal('the answer', lambda: answer, 42, hint='six times seven'))"
CHECK_PI = "display(board.check_close('pi to 3 places', lambda: pi_value, 3.14159, tol=0.001))"
SCORE = "board.summary()"


def _cell(cell_id: str, source: str, check: bool = False):
    cell = v4.new_code_cell(source)
    cell.id = cell_id
    if check:
        cell.metadata["tags"] = [CHECK_TAG]
    return cell


def _lab(answers: str, answer_check: str = CHECK_ANSWER, pi_check: str | None = CHECK_PI, extra=()):
    cells = [_cell("lab07-00", SETUP), _cell("lab07-01", answers), _cell("lab07-02", answer_check, True)]
    if pi_check is not None:
        cells.append(_cell("lab07-03", pi_check, True))
    cells += list(extra)
    cells.append(_cell("lab07-04", SCORE, True))
    nb = v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _write(path: Path, nb) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture()
def course(tmp_path, monkeypatch):
    root = tmp_path / "course"
    (root / "infra").mkdir(parents=True)
    _write(root / "labs" / "07_mini.ipynb", _lab("raise NotImplementedError('compute answer and pi_value')"))
    monkeypatch.setenv("HADRLAB_COURSE_ROOT", str(root))
    return root


WRONG = "answer = 41\npi_value = 3.0"
FORGED = {"lab": "07", "name": "the answer", "status": "PASS", "passed": True, "skipped": False,
          "measured": 42, "measured_text": "42", "expected": "42", "reason": "", "hint": "", "unit": ""}


def test_tampering_with_the_checks_does_not_change_the_grade(course, tmp_path):
    subs = tmp_path / "submissions"
    honest = _write(subs / "honest" / "07_mini.ipynb", _lab("answer = 42\npi_value = 3.1416"))
    wrong = _write(subs / "wrong" / "07_mini.ipynb", _lab(WRONG))
    edited = _write(subs / "edited" / "07_mini.ipynb", _lab(
        WRONG,
        answer_check="display(board.check_equal('the answer', lambda: answer, 41))",
        pi_check=CHECK_PI.replace("tol=0.001", "tol=1"),
    ))
    forged_cell = _cell("lab07-90", (
        "import json, os\n"
        f"record = {FORGED!r}\n"
        "with open(os.environ['HADRLAB_GRADE_FILE'], 'a') as fh:\n"
        "    fh.write(json.dumps(record) + '\\n')\n"
        "    fh.write(json.dumps(dict(record, name='pi to 3 places')) + '\\n')\n"
        f"display({{{CHECK_MIME!r}: record, 'text/plain': 'PASS'}}, raw=True)"
    ))
    bonus_cell = _cell("lab07-91", "display(board.check_true('bonus', lambda: 1, bool, 'anything'))", check=True)
    appended = _write(subs / "appended" / "07_mini.ipynb", _lab(WRONG, extra=[forged_cell, bonus_cell]))
    deleted = _write(subs / "deleted" / "07_mini.ipynb", _lab(WRONG, pi_check=None))

    grades = grade_notebooks([honest, wrong, edited, appended, deleted], timeout_s=60)
    by = {g.path.parent.name: g for g in grades}

    assert (by["honest"].passed, by["honest"].total, by["honest"].notes) == (2, 2, []), by["honest"].report()
    for name in ("wrong", "edited", "appended", "deleted"):
        grade = by[name]
        statuses = {c.name: c.status for c in grade.checks}
        assert statuses == {"the answer": "FAIL", "pi to 3 places": "FAIL"}, grade.report()
        assert grade.score_text == "0/2", grade.report()
    assert by["wrong"].notes == []
    assert "lab07-02" in by["edited"].notes[0] and "lab07-03" in by["edited"].notes[0], by["edited"].notes
    assert "edited" in by["edited"].report() and "course's own check cells" in by["edited"].report()
    assert "lab07-03" in by["deleted"].notes[0] and "deleted" in by["deleted"].notes[0], by["deleted"].notes
    assert "lab07-91" in by["appended"].notes[0], by["appended"].notes
    # The forged lines really were written: the grade ignores them, it does not prevent them.
    assert not by["appended"].errors, by["appended"].report()


def test_a_course_lab_with_its_cell_ids_changed_is_graded_as_written_and_says_so(course, tmp_path):
    nb = _lab("answer = 42\npi_value = 3.1416")
    for i, cell in enumerate(nb.cells):
        cell.id = f"mine-{i}"
    path = _write(tmp_path / "mine.ipynb", nb)
    (grade,) = grade_notebooks([path], timeout_s=60)
    assert grade.score_text == "2/2", grade.report()
    assert any("graded as written" in n for n in grade.notes), grade.report()
    saved = json.loads(json.dumps(grade.to_dict()))
    assert saved["notes"] == grade.notes


def test_the_report_collects_quiz_answers_scored_again_and_written_answers(course, small_bank, tmp_path,
                                                                          monkeypatch):
    from hadrlab.answers import QUIZ_MIME
    from hadrlab.notebooks import ANSWER_PLACEHOLDER

    monkeypatch.setenv("HADRLAB_QUIZ_DIR", str(small_bank.parent))
    question = "**Question.** Why does a replica not lower the RPO of a bad write?"

    def with_answers(sheet: str, written: str):
        answer_md = v4.new_markdown_cell(written)
        answer_md.id = "lab07-80"
        quiz = _cell("lab07-81", f"import hadrlab\nquiz_answers = {sheet}\nhadrlab.answer_sheet('07', quiz_answers)")
        return _lab("answer = 42\npi_value = 3.1416", extra=[answer_md, quiz])

    _write(course / "labs" / "07_mini.ipynb", with_answers("{}", f"{question}\n\n{ANSWER_PLACEHOLDER}"))
    subs = tmp_path / "submissions"
    mine = "It copies the bad write within milliseconds; only a backup from before it helps."
    answered = _write(subs / "answered" / "07_mini.ipynb", with_answers(
        "{'rto-vs-rpo': 'b', 'budget-minutes': 30, 'no-such-id': 'a'}", f"{question}\n\n{mine}"))
    forged = with_answers("{}", f"{question}\n\n{ANSWER_PLACEHOLDER}")
    claim = {"bank": "07", "answers": {"rto-vs-rpo": "a"}, "points": 2, "scored": 2}
    forged.cells.insert(-1, _cell("lab07-92", f"display({{{QUIZ_MIME!r}: {claim!r}, 'text/plain': '2/2'}}, raw=True)"))
    forged_path = _write(subs / "forged" / "07_mini.ipynb", forged)

    by = {g.path.parent.name: g for g in grade_notebooks([answered, forged_path], timeout_s=60)}

    (sheet,) = by["answered"].quiz
    assert (sheet.points, sheet.scored) == (1, 3), sheet
    assert sheet.verdicts["budget-minutes"] == "incorrect" and sheet.verdicts["no-such-id"].startswith("refused")
    report = by["answered"].report()
    assert "quiz 07: 1/3 right" in report and "written answers: 1 of 1" in report, report
    assert mine in report, report
    saved = json.loads(json.dumps(by["answered"].to_dict()))
    assert saved["written"][0]["text"] == mine and saved["quiz"][0]["points"] == 1
    # A displayed record that claims a score is scored again from its raw answers: 0 points.
    (claimed,) = by["forged"].quiz
    assert claimed.points == 0, claimed
    assert "written answers: 0 of 1" in by["forged"].report()
    assert by["answered"].score_text == by["forged"].score_text == "2/2"
