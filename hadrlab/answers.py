"""The learner's own answers, saved with the notebook and collected by the grader.

Two kinds of answer live in a lab besides its graded checks:

- **Quiz answers.** The quiz widgets give instant feedback but their state is not saved with
  the notebook. The answers a learner settles on go in a dict in a code cell, which
  :func:`answer_sheet` checks against the bank::

      quiz_answers = {"rto-vs-rpo": "b", "error-budget-minutes": 43.2}
      hadrlab.answer_sheet("00", quiz_answers)

  The sheet displays the verdicts, and a record of the raw answers under :data:`QUIZ_MIME`.
  The grader scores those raw answers again against the course's bank: a record that claims
  a score counts for nothing, only the answers do.
- **Written answers.** Markdown cells that the course ships with the placeholder
  ``*Write your answer here.*``; :func:`written_answers` reads what the learner put there.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from hadrlab.errors import QuizError

__all__ = ["QUIZ_MIME", "AnswerSheet", "answer_sheet", "read_answer_sheets", "written_answers"]

QUIZ_MIME = "application/vnd.hadrlab.quiz+json"


@dataclass(repr=False)
class AnswerSheet:
    """One bank's answers, checked.

    Attributes:
        bank: the bank's name as given (``"00"``, ``"interview"``).
        title: the bank's title.
        answers: the raw answers, by question id, as the learner wrote them.
        verdicts: per answered question id: ``"correct"``, ``"incorrect"``, ``"written"``
            (free text, not scored here) or ``"refused: <why>"``.
        points: right choice and numeric answers.
        scored: choice and numeric questions in the bank (the most ``points`` can be).
        unanswered: question ids of the bank with no answer.
    """

    bank: str
    title: str
    answers: dict[str, Any] = field(default_factory=dict)
    verdicts: dict[str, str] = field(default_factory=dict)
    points: int = 0
    scored: int = 0
    unanswered: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        refused = sum(v.startswith("refused") for v in self.verdicts.values())
        text = f"quiz {self.bank}: {self.points}/{self.scored} right"
        text += f", {len(self.answers)} answered, {len(self.unanswered)} unanswered"
        return text + (f", {refused} refused (see why)" if refused else "")

    def __repr__(self) -> str:
        lines = [self.summary]
        lines += [f"  {qid}: {self.verdicts[qid]}" for qid in self.verdicts]
        if not self.answers:
            lines.append(f"  no answers yet: write them as {{question id: answer}}; the ids are "
                         f"{', '.join(self.unanswered)}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td><code>{html.escape(q)}</code></td><td>{html.escape(repr(self.answers[q]))}</td>"
            f"<td>{html.escape(v)}</td></tr>"
            for q, v in self.verdicts.items()
        )
        empty = "" if self.answers else (
            f"<p>No answers yet. Write them in the dict above as <code>{{question id: answer}}</code>; "
            f"the ids are {', '.join(f'<code>{html.escape(q)}</code>' for q in self.unanswered)}.</p>")
        return (f"<p><b>{html.escape(self.title)}</b>: {html.escape(self.summary)}</p>{empty}"
                f"<table><tr><th>question</th><th>your answer</th><th>verdict</th></tr>{rows}</table>")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {"text/plain": repr(self), "text/html": self._repr_html_(), QUIZ_MIME: self.record()}

    def record(self) -> dict[str, Any]:
        """What the notebook saves and the grader reads back: the bank and the raw answers."""
        return {"bank": self.bank, "answers": {q: _json_answer(a) for q, a in self.answers.items()}}

    def to_dict(self) -> dict[str, Any]:
        return {"bank": self.bank, "title": self.title, "points": self.points, "scored": self.scored,
                "answers": self.record()["answers"], "verdicts": dict(self.verdicts),
                "unanswered": list(self.unanswered)}


def _json_answer(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_answer(v) for v in value]
    return repr(value)


def answer_sheet(bank: str, answers: Any) -> AnswerSheet:
    """Check the learner's quiz answers against a bank; never loses an answer to a bad one.

    Args:
        bank: a lab id (``"00"``) or a bank name.
        answers: ``{question id: answer}``: a letter or option index for single choice, a
            list of letters for multiple choice, a number in the question's unit for numeric,
            a string for free text.

    Returns:
        The :class:`AnswerSheet`. An unknown question id or an answer of the wrong type is
        listed as refused, with why, and the other answers are still checked.

    Raises:
        QuizError: ``answers`` is not a dict, or the bank cannot be loaded.
    """
    from hadrlab.quiz import load_quiz

    if not isinstance(answers, dict):
        raise QuizError(
            f"quiz answers are a dict of question id -> answer, e.g. {{'rto-vs-rpo': 'b'}}; got "
            f"{type(answers).__name__}. Write them as quiz_answers = {{...}}."
        )
    quiz = load_quiz(bank)
    ids = list(quiz.ids)
    sheet = AnswerSheet(bank=str(bank), title=quiz.title, answers=dict(answers))
    for qid, given in answers.items():
        if qid not in ids:
            close = [i for i in ids if str(qid).lower().replace("_", "-") in i]
            sheet.verdicts[str(qid)] = (f"refused: no question {qid!r} in this bank"
                                        + (f" (did you mean {close[0]!r}?)" if close else ""))
            continue
        try:
            result = quiz.answer(qid, given)
        except QuizError as exc:
            sheet.verdicts[qid] = f"refused: {exc}"
            continue
        if result.correct is None:
            sheet.verdicts[qid] = "written"
        else:
            sheet.verdicts[qid] = "correct" if result.correct else "incorrect"
            sheet.points += int(result.correct)
    sheet.scored = sum(q.type in ("single", "multiple", "numeric") for q in quiz)
    sheet.unanswered = [i for i in ids if i not in answers]
    return sheet


def read_answer_sheets(nb: Any) -> list[AnswerSheet]:
    """Score again, against the course's banks, every answer sheet an executed notebook displayed.

    The last sheet of each bank counts. A sheet whose bank cannot be loaded is skipped.
    """
    records: dict[str, dict[str, Any]] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            record = output.get("data", {}).get(QUIZ_MIME) if "data" in output else None
            if isinstance(record, dict) and isinstance(record.get("answers"), dict) and record.get("bank"):
                records[str(record["bank"])] = record
    sheets = []
    for bank, record in records.items():
        try:
            sheets.append(answer_sheet(bank, record["answers"]))
        except QuizError:
            continue
    return sheets


def written_answers(nb: Any, course: Any) -> list[dict[str, Any]]:
    """The learner's text in each markdown cell the course ships with the answer placeholder.

    Args:
        nb: the learner's notebook.
        course: the course's learner copy of the same lab.

    Returns:
        One ``{"cell", "question", "text", "answered"}`` per answer cell, in course order;
        ``answered`` is False when the cell is unchanged or missing.
    """
    from hadrlab.notebooks import ANSWER_PLACEHOLDER

    theirs = {c.get("id"): c for c in nb.cells}
    out = []
    for cell in course.cells:
        if cell.get("cell_type") != "markdown" or ANSWER_PLACEHOLDER not in cell.source:
            continue
        question = cell.source.split(ANSWER_PLACEHOLDER)[0].strip()
        mine = theirs.get(cell.id)
        text = mine.source if mine is not None else ""
        answered = mine is not None and text.strip() != cell.source.strip()
        if answered and text.startswith(question):
            text = text[len(question):].strip()
        out.append({"cell": cell.id, "question": question, "text": text if answered else "", "answered": answered})
    return out
