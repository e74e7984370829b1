"""Quiz banks: load and validate them, score answers, show them in a notebook or a terminal.

A bank is a YAML file in ``quizzes/`` (the schema is in ``quizzes/README.md``): one per lab
(``lab00.yaml`` ... ``lab04.yaml``) plus ``interview.yaml``. Four question types:

    single     one option is right            answer: b
    multiple   several options are right      answer: [a, c]
    numeric    a number within a tolerance    answer: 21.6, tolerance: 0.1, unit: min
    text       free text, self-assessed       model_answer: ..., rubric: [...]

Example:
    >>> quiz = load_quiz("00")                  # quizzes/lab00.yaml
    >>> quiz.answer("downtime-9995", 21.6)      # numbers in the question's unit
    AnswerResult(question_id='downtime-9995', correct=True, score=1)
    >>> quiz.show()                             # the same bank as ipywidgets, in a notebook

In a terminal, ``python -m hadrlab quiz 00`` runs the same bank as a drill (see main_quiz).
"""

from __future__ import annotations

import argparse
import html
import math
import numbers
import os
import random
import re
import string
import sys
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TextIO

import yaml

from hadrlab.errors import QuizError

__all__ = [
    "AnswerResult",
    "Question",
    "Quiz",
    "QuizScore",
    "find_bank",
    "list_banks",
    "load_quiz",
    "main_quiz",
    "main_validate",
]

QUESTION_TYPES = ("single", "multiple", "numeric", "text")
_TYPE_LABELS = {
    "single": "single choice",
    "multiple": "multiple choice",
    "numeric": "numeric",
    "text": "free text",
}
_COMMON_FIELDS = ("id", "type", "prompt", "explanation", "tags")
_REQUIRED_COMMON = ("id", "type", "prompt", "explanation")
_TYPE_FIELDS = {
    "single": ("options", "answer"),
    "multiple": ("options", "answer"),
    "numeric": ("answer", "tolerance", "unit"),
    "text": ("model_answer", "rubric"),
}
_BANK_FIELDS = ("title", "description", "questions")
_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_LETTERS = string.ascii_lowercase
_CHECKOUT = Path(__file__).resolve().parents[1]

# Units a terminal answer may be given in, converted to the question's unit. Only time units
# convert: they are the ones where "0.36 h" and "21.6 min" are honestly the same answer.
_TIME_UNITS_S = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_UNIT_ALIASES = {
    "msec": "ms", "millisecond": "ms", "milliseconds": "ms",
    "sec": "s", "secs": "s", "second": "s", "seconds": "s",
    "mins": "min", "minute": "min", "minutes": "min",
    "hr": "h", "hrs": "h", "hour": "h", "hours": "h",
    "day": "d", "days": "d",
    "percent": "%",
}
_NUMBER_PATTERN = re.compile(
    r"^\s*(?P<number>[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?|[-+]?\.\d+)"
    r"\s*(?P<unit>.*?)\s*$"
)


# ---------------------------------------------------------------------------------------------
# results


def _end_sentence(text: str) -> str:
    """Add a full stop unless the text already ends with punctuation."""
    return text if text.rstrip().endswith((".", "!", "?", ")")) else text + "."


def _format_points(points: float) -> str:
    return f"{points:g}" if points == int(points) else f"{points:.2f}".rstrip("0")


@dataclass(frozen=True)
class AnswerResult:
    """The verdict on one answer: correct or not (None for self-assessed free text).

    ``score`` is between 0 and 1: 1 for a right choice or number, the fraction of rubric
    points the learner says they covered for free text.
    """

    correct: bool | None
    score: float
    explanation: str
    question_id: str = ""
    expected: str = ""
    given: str = ""
    model_answer: str = ""
    rubric: tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        """'Correct.', 'Incorrect.' or 'Self-assessed: ...' as shown to the learner."""
        if self.correct is None:
            return f"Self-assessed: {_format_points(self.score * len(self.rubric))} of {len(self.rubric)} rubric points."
        return "Correct." if self.correct else "Incorrect."

    def __repr__(self) -> str:
        return (
            f"AnswerResult(question_id={self.question_id!r}, correct={self.correct!r}, "
            f"score={_format_points(self.score)})"
        )

    def __str__(self) -> str:
        lines = [self.verdict]
        if self.correct is False and self.expected:
            lines.append(_end_sentence(f"The answer is {self.expected}"))
        if self.model_answer:
            lines.append(f"Model answer: {self.model_answer}")
        if self.rubric:
            lines.append("Rubric:")
            lines += [f"  {n}. {point}" for n, point in enumerate(self.rubric, 1)]
        lines.append(f"Why: {self.explanation}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return _feedback_html(self)


_QUIZ_CSS = """<style>
.hadrlab-quiz .widget-radio-box label { display: flex; height: auto; line-height: 1.4;
  white-space: normal; align-items: flex-start; margin: 2px 0; }
.hadrlab-quiz .widget-radio-box label input { float: none; order: -1; height: auto;
  margin: .25em .6em 0 1px; flex-shrink: 0; }
.hadrlab-quiz .widget-checkbox { height: auto; }
.hadrlab-quiz .widget-checkbox label, .hadrlab-quiz .widget-checkbox label span {
  white-space: normal; overflow: visible; text-overflow: clip; height: auto; line-height: 1.4; }
.hadrlab-quiz .widget-html-content { line-height: 1.45; }
</style>"""


@dataclass(frozen=True)
class QuizScore:
    """Points earned so far out of the number of questions (each question is worth 1)."""

    points: float
    total: int
    answered: int

    @property
    def percent(self) -> float:
        """The score as a percentage of the questions in the quiz."""
        return 100.0 * self.points / self.total if self.total else 0.0

    def __str__(self) -> str:
        return (
            f"Score: {_format_points(self.points)}/{self.total} "
            f"({self.answered} of {self.total} answered)"
        )


# ---------------------------------------------------------------------------------------------
# questions


def _describe(value: Any) -> str:
    """A short, quoted rendering of a value for error messages."""
    if value is None:
        return "nothing (the value is empty)"
    if isinstance(value, str):
        text = repr(value)
    else:
        text = f"{type(value).__name__} {value!r}"
    return text if len(text) <= 60 else text[:57] + "..."


def _describe_answer(value: Any) -> str:
    """Like _describe, but always names the type: answers go wrong by type."""
    text = f"{type(value).__name__} {value!r}"
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Question:
    """One validated question of a bank.

    For choice questions ``answer`` holds option indices (an int for single choice, a
    frozenset for multiple choice); in the YAML bank they are written as letters.
    """

    id: str
    type: str
    prompt: str
    explanation: str
    options: tuple[str, ...] = ()
    answer: Any = None
    tolerance: float = 0.0
    unit: str = ""
    model_answer: str = ""
    rubric: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The type as a learner reads it: 'single choice', 'numeric', ..."""
        return _TYPE_LABELS[self.type]

    def format_option(self, index: int) -> str:
        """Return option ``index`` as 'b) text'."""
        return f"{_LETTERS[index]}) {self.options[index]}"

    def expected_text(self) -> str:
        """The right answer in words, as feedback shows it."""
        if self.type == "single":
            return self.format_option(self.answer)
        if self.type == "multiple":
            return "; ".join(self.format_option(i) for i in sorted(self.answer))
        if self.type == "numeric":
            unit = "" if self.unit in ("", "%") else " "
            unit += self.unit
            if not self.tolerance:
                return f"{self.answer:g}{unit}"
            return f"{self.answer:g}{unit}, give or take {self.tolerance:g}{unit}"
        return "see the model answer"

    def check(self, answer: Any) -> AnswerResult:
        """Score ``answer`` without recording it (Quiz.answer records it).

        Args:
            answer: single choice: an option index (0-based int), a letter or the option text;
                multiple choice: a list of those; numeric: an int or float in ``self.unit``;
                free text: a string.

        Returns:
            The AnswerResult; free text gets ``correct=None`` and score 0 until self-assessed.

        Raises:
            QuizError: the answer has the wrong type or names an option that does not exist.
        """
        common = {"explanation": self.explanation, "question_id": self.id}
        if self.type == "single":
            index = self._choice_index(answer)
            right = index == self.answer
            return AnswerResult(right, float(right), expected=self.expected_text(),
                                given=self.format_option(index), **common)
        if self.type == "multiple":
            chosen = self._choice_set(answer)
            right = chosen == self.answer
            given = "; ".join(self.format_option(i) for i in sorted(chosen)) or "nothing"
            return AnswerResult(right, float(right), expected=self.expected_text(),
                                given=given, **common)
        if self.type == "numeric":
            value = self._number(answer)
            # a hair of slack so that 0.1 + 0.2 style rounding never fails a right answer
            slack = 1e-9 * max(1.0, abs(self.answer))
            right = abs(value - self.answer) <= self.tolerance + slack
            unit = "" if self.unit in ("", "%") else " "
            unit += self.unit
            return AnswerResult(right, float(right), expected=self.expected_text(),
                                given=f"{value:g}{unit}", **common)
        if not isinstance(answer, str):
            raise QuizError(
                f"Question '{self.id}' is a free-text question: the answer must be a string, "
                f"got {_describe_answer(answer)}."
            )
        return AnswerResult(None, 0.0, given=answer, model_answer=self.model_answer,
                            rubric=self.rubric, **common)

    def assess(self, points_met: Any) -> AnswerResult:
        """Record a self-assessment of a free-text answer: how many rubric points it covered."""
        if self.type != "text":
            raise QuizError(
                f"Question '{self.id}' is a {self.label} question and is scored automatically; "
                f"self-assessment is only for free-text questions."
            )
        n = len(self.rubric)
        if isinstance(points_met, bool) or not isinstance(points_met, numbers.Integral):
            raise QuizError(
                f"Question '{self.id}': the self-assessment must be a whole number of rubric "
                f"points from 0 to {n}, got {_describe_answer(points_met)}."
            )
        if not 0 <= points_met <= n:
            raise QuizError(
                f"Question '{self.id}' has {n} rubric points: the self-assessment must be from "
                f"0 to {n}, got {points_met}."
            )
        return AnswerResult(None, int(points_met) / n, self.explanation, question_id=self.id,
                            model_answer=self.model_answer, rubric=self.rubric)

    def shuffled(self, rng: random.Random) -> Question:
        """Return a copy with the options in a random order (answers follow their options)."""
        if self.type not in ("single", "multiple"):
            return self
        order = list(range(len(self.options)))
        rng.shuffle(order)
        new_index = {old: new for new, old in enumerate(order)}
        options = tuple(self.options[old] for old in order)
        if self.type == "single":
            answer: Any = new_index[self.answer]
        else:
            answer = frozenset(new_index[i] for i in self.answer)
        return replace(self, options=options, answer=answer)

    # -- answer parsing ------------------------------------------------------------------------

    def _letter_range(self) -> str:
        return f"a to {_LETTERS[len(self.options) - 1]}"

    def _choice_index(self, value: Any) -> int:
        n = len(self.options)
        if isinstance(value, bool) or not isinstance(value, (numbers.Integral, str)):
            kind = "list" if isinstance(value, (list, tuple, set, frozenset)) else "value"
            extra = " Only one option is right here: pass a single one." if kind == "list" else ""
            raise QuizError(
                f"Question '{self.id}' is a single-choice question: the answer must be one "
                f"option index (0 to {n - 1}), letter ({self._letter_range()}) or option text, "
                f"got {_describe_answer(value)}.{extra}"
            )
        if isinstance(value, numbers.Integral):
            if not 0 <= value < n:
                raise QuizError(
                    f"Question '{self.id}' has {n} options: an option index must be from 0 to "
                    f"{n - 1} (indices start at 0; letters {self._letter_range()} work too), "
                    f"got {value}."
                )
            return int(value)
        text = value.strip()
        letter = text.lower().rstrip(")").strip()
        if len(letter) == 1 and letter in _LETTERS[:n]:
            return _LETTERS.index(letter)
        for index, option in enumerate(self.options):
            if text.casefold() == option.strip().casefold():
                return index
        raise QuizError(
            f"Question '{self.id}': {_describe(value)} is not one of its options; answer with a "
            f"letter ({self._letter_range()}), an index (0 to {n - 1}) or the exact option text."
        )

    def _choice_set(self, value: Any) -> frozenset[int]:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset)):
            raise QuizError(
                f"Question '{self.id}' is a multiple-choice question: the answer must be a list "
                f"of options, such as ['a', 'c'] or [0, 2], got {_describe_answer(value)}."
            )
        indices = [self._choice_index(item) for item in value]
        return frozenset(indices)

    def _number(self, value: Any) -> float:
        unit = f" in {self.unit}" if self.unit else ""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise QuizError(
                f"Question '{self.id}' is a numeric question: the answer must be a number (int "
                f"or float){unit}, got {_describe_answer(value)}. Pass the number alone, for example "
                f"quiz.answer('{self.id}', 12.5)."
            )
        number = float(value)
        if not math.isfinite(number):
            raise QuizError(
                f"Question '{self.id}': the answer must be a finite number{unit}, got {number}."
            )
        return number

    def parse_typed(self, text: str) -> Any:
        """Turn what a learner typed in a terminal into an answer for check().

        Choices are letters or 1-based numbers ("b", "2", "a,c", "1 3"); numbers may carry
        a unit ("21.6 min", "1296 s", "99.9%"), converted when it is a time unit.

        Raises:
            QuizError: the text is not a valid answer; the message says what is expected.
        """
        text = text.strip()
        if self.type == "single":
            return self._typed_choice(text)
        if self.type == "multiple":
            tokens = [t for t in re.split(r"[\s,;]+", text) if t]
            if len(tokens) == 1 and tokens[0].isalpha() and len(tokens[0]) > 1:
                tokens = list(tokens[0])  # "ac" means a and c
            if not tokens:
                raise QuizError(
                    f"Type the letters of every right option ({self._letter_range()}), "
                    f"separated by commas or spaces, for example 'a,c'."
                )
            return [self._typed_choice(token) for token in tokens]
        if self.type == "numeric":
            return self._typed_number(text)
        return text

    def _typed_choice(self, token: str) -> int:
        n = len(self.options)
        clean = token.lower().rstrip(").").strip()
        if clean.isdigit() and 1 <= int(clean) <= n:
            return int(clean) - 1
        if len(clean) == 1 and clean in _LETTERS[:n]:
            return _LETTERS.index(clean)
        raise QuizError(
            f"'{token}' is not an option: type a letter ({self._letter_range()}) or a number "
            f"(1 to {n})."
        )

    def _typed_number(self, text: str) -> float:
        unit_hint = f" in {self.unit}" if self.unit else ""
        example = f"'12.5' or '12.5 {self.unit}'" if self.unit else "'12.5'"
        match = _NUMBER_PATTERN.match(text)
        if not match:
            raise QuizError(f"'{text}' is not a number: type a number{unit_hint}, such as {example}.")
        number = float(match["number"].replace(",", ""))
        given = match["unit"]
        if not given:
            return number
        given = _UNIT_ALIASES.get(given.lower(), given)
        if given.lower() == self.unit.lower():
            return number
        if given in _TIME_UNITS_S and self.unit in _TIME_UNITS_S:
            return number * _TIME_UNITS_S[given] / _TIME_UNITS_S[self.unit]
        raise QuizError(
            f"'{text}' has the unit '{given}', but this question expects a number{unit_hint}: "
            f"type it as {example}."
        )


# ---------------------------------------------------------------------------------------------
# the quiz


class Quiz:
    """A loaded bank: its questions, the answers given so far, and the score.

    Example:
        >>> quiz = load_quiz("01")
        >>> quiz.answer("readiness-vs-liveness", "b")
        AnswerResult(question_id='readiness-vs-liveness', correct=True, score=1)
        >>> quiz.score()
        QuizScore(points=1.0, total=9, answered=1)
    """

    def __init__(self, title: str, questions: Sequence[Question], path: Path | None = None,
                 description: str = "") -> None:
        self.title = title
        self.questions = list(questions)
        self.path = path
        self.description = description
        self.results: dict[str, AnswerResult] = {}

    def __len__(self) -> int:
        return len(self.questions)

    def __iter__(self):
        return iter(self.questions)

    def __repr__(self) -> str:
        where = f" from {_display_path(self.path)}" if self.path else ""
        return f"Quiz({self.title!r}, {len(self.questions)} questions{where}, {self.score()})"

    @property
    def ids(self) -> list[str]:
        """The question ids, in order."""
        return [q.id for q in self.questions]

    def question(self, question_id: str) -> Question:
        """Return the question with this id; QuizError (listing the ids) if there is none."""
        for q in self.questions:
            if q.id == question_id:
                return q
        where = f" in {_display_path(self.path)}" if self.path else ""
        raise QuizError(
            f"There is no question '{question_id}'{where}; its questions are: "
            f"{', '.join(self.ids)}."
        )

    def answer(self, question_id: str, answer: Any) -> AnswerResult:
        """Score an answer and record it (a later answer to the same question replaces it).

        Args:
            question_id: the question's id, as in the bank.
            answer: see Question.check for what each question type accepts.

        Returns:
            AnswerResult(correct, score, explanation, ...).

        Raises:
            QuizError: unknown question id, or an answer of the wrong type.
        """
        result = self.question(question_id).check(answer)
        self.results[question_id] = result
        return result

    def self_assess(self, question_id: str, points_met: int) -> AnswerResult:
        """Record how many rubric points a free-text answer covered; score = points / rubric size.

        Args:
            question_id: a free-text question's id.
            points_met: how many of its rubric points the answer covered (0 to len(rubric)).

        Returns:
            AnswerResult with ``correct=None`` and the self-assessed score.
        """
        result = self.question(question_id).assess(points_met)
        previous = self.results.get(question_id)
        if previous is not None:
            result = replace(result, given=previous.given)
        self.results[question_id] = result
        return result

    def score(self) -> QuizScore:
        """Points so far: each question is worth 1, free text by self-assessment."""
        points = sum(r.score for r in self.results.values())
        return QuizScore(points=points, total=len(self.questions), answered=len(self.results))

    def reset(self) -> None:
        """Forget every answer given so far."""
        self.results.clear()

    def select(self, ids: Iterable[str]) -> Quiz:
        """Return a new quiz with only these questions, in the order given."""
        chosen = [self.question(i) for i in ids]
        return Quiz(self.title, chosen, self.path, self.description)

    def shuffled(self, seed: int | None = None) -> Quiz:
        """Return a new quiz with questions and choice options in a seeded random order."""
        rng = random.Random(seed)
        questions = [q.shuffled(rng) for q in self.questions]
        rng.shuffle(questions)
        return Quiz(self.title, questions, self.path, self.description)

    # -- notebook ------------------------------------------------------------------------------

    def show(self) -> None:
        """Display the quiz as ipywidgets in a notebook: check buttons, feedback, score."""
        from IPython.display import display

        display(self.build_widget())

    def build_widget(self) -> Any:
        """Build the widget tree show() displays (an ipywidgets.VBox), for tests and layouts."""
        import ipywidgets as widgets

        score = widgets.HTML(value=self._score_html())
        score.add_class("hadrlab-quiz-score")

        def refresh() -> None:
            score.value = self._score_html()

        # Long options must wrap inside their row, not draw over the next one or end in "...".
        header = _QUIZ_CSS + f"<h3>{html.escape(self.title)}</h3>"
        if self.description:
            header += f"<p>{_html_text(self.description)}</p>"
        boxes = [
            _question_widget(self, number, q, refresh)
            for number, q in enumerate(self.questions, 1)
        ]
        root = widgets.VBox([widgets.HTML(value=header), *boxes, score])
        root.add_class("hadrlab-quiz")
        return root

    def _score_html(self) -> str:
        s = self.score()
        return (
            f"<b>Score: {_format_points(s.points)}/{s.total}</b> "
            f"({s.answered} of {s.total} answered)"
        )

    # -- terminal ------------------------------------------------------------------------------

    def run_terminal(self, stdin: TextIO | None = None, stdout: TextIO | None = None) -> QuizScore:
        """Ask every question on a terminal, print feedback, and return the final score.

        End of input (Ctrl-D, or a closed pipe) stops the drill and prints the score so far;
        a question not finished by then (free text not yet self-assessed) is not answered.

        Args:
            stdin: where answers are read from (default sys.stdin).
            stdout: where questions and feedback go (default sys.stdout).

        Returns:
            The QuizScore at the end.
        """
        drill = _TerminalDrill(self, stdin or sys.stdin, stdout or sys.stdout)
        return drill.run()


# ---------------------------------------------------------------------------------------------
# terminal drill


def _paragraphs(text: str) -> list[str]:
    """Split text into paragraphs and list items, each joined onto one line."""
    blocks: list[str] = []
    current: list[str] = []
    for raw in text.strip().splitlines():
        line = raw.strip()
        item = bool(re.match(r"^([-*\u2022]|\d+[.)])\s", line))
        if not line or item:
            if current:
                blocks.append(" ".join(current))
            current = [line] if line else []
        else:
            current.append(line)
    if current:
        blocks.append(" ".join(current))
    return blocks


class _TerminalDrill:
    """Reads answers line by line and prints feedback; one instance per run."""

    def __init__(self, quiz: Quiz, stdin: TextIO, stdout: TextIO) -> None:
        self.quiz = quiz
        self.stdin = stdin
        self.stdout = stdout
        try:
            self.echo = not stdin.isatty()
        except (AttributeError, ValueError):
            self.echo = True

    def say(self, text: str = "") -> None:
        print(text, file=self.stdout, flush=True)

    def say_wrapped(self, text: str, indent: str = "", hanging: str | None = None) -> None:
        """Print text wrapped at 88 columns; ``hanging`` indents continuation lines."""
        later = indent if hanging is None else hanging
        # Reflow each paragraph (a bank's YAML may break lines anywhere); keep list items
        # on lines of their own.
        for block in _paragraphs(text):
            self.say(textwrap.fill(block, 88, initial_indent=indent, subsequent_indent=later))

    def read(self, prompt: str) -> str:
        """One line of input; EOFError at the end of input."""
        self.stdout.write(prompt)
        self.stdout.flush()
        line = self.stdin.readline()
        if line == "":
            if self.echo:
                self.stdout.write("\n")
            raise EOFError
        if self.echo:
            # piped answers: echo them so the transcript reads like a session
            self.stdout.write(line if line.endswith("\n") else line + "\n")
        return line.rstrip("\r\n")

    def run(self) -> QuizScore:
        n = len(self.quiz)
        self.say(f"{self.quiz.title}: {n} question{'s' if n != 1 else ''}.")
        self.say("Choices: type a letter or a number. End of input (Ctrl-D) stops with the score so far.")
        try:
            for number, q in enumerate(self.quiz.questions, 1):
                self.say()
                self.say(f"[{number}/{n}] {q.id} ({q.label})")
                self.say_wrapped(q.prompt)
                if q.type == "text":
                    self.ask_text(q)
                else:
                    self.ask_scored(q)
        except EOFError:
            self.say()
            self.say("Input ended: stopping the drill here.")
        except KeyboardInterrupt:
            self.say()
            self.say("Interrupted: stopping the drill here.")
        score = self.quiz.score()
        unanswered = [q.id for q in self.quiz.questions if q.id not in self.quiz.results]
        self.say()
        if unanswered:
            # Named, not scored: a question the input never reached is not a wrong answer.
            text = f"Not answered ({len(unanswered)}): {', '.join(unanswered)}."
            self.say(textwrap.fill(text, 88, subsequent_indent="  ", break_on_hyphens=False,
                                   break_long_words=False))
        self.say(str(score))
        return score

    def ask_scored(self, q: Question) -> None:
        if q.type in ("single", "multiple"):
            for index in range(len(q.options)):
                self.say_wrapped(q.format_option(index), indent="  ", hanging="     ")
        if q.type == "single":
            prompt = f"Your answer ({q._letter_range()}): "
        elif q.type == "multiple":
            prompt = "Your answer (every right option, e.g. a,c): "
        else:
            prompt = f"Your answer{f' in {q.unit}' if q.unit else ''}: "
        while True:
            typed = self.read(prompt)
            try:
                result = self.quiz.answer(q.id, q.parse_typed(typed))
                break
            except QuizError as exc:
                self.say(f"  {exc}")
        if result.correct:
            self.say(result.verdict)
        else:
            self.say_wrapped(_end_sentence(f"{result.verdict} The answer is {result.expected}"))
        self.say_wrapped(f"Why: {result.explanation}")

    def ask_text(self, q: Question) -> None:
        self.say("Type your answer; an empty line ends it (an empty answer shows the model answer).")
        lines: list[str] = []
        while True:
            line = self.read("> ")
            if not line.strip():
                break
            lines.append(line)
        answer = "\n".join(lines)
        # Recorded only once self-assessed: input that ends before then leaves the question
        # unanswered rather than answered with 0 points.
        q.check(answer)
        self.say("Model answer:")
        self.say_wrapped(q.model_answer, indent="  ")
        self.say("Rubric:")
        for number, point in enumerate(q.rubric, 1):
            self.say_wrapped(f"{number}. {point}", indent="  ", hanging="     ")
        self.say_wrapped(f"Why: {q.explanation}")
        n = len(q.rubric)
        while True:
            typed = self.read(f"How many rubric points did your answer cover (0-{n})? ").strip()
            if typed.isdigit() and 0 <= int(typed) <= n:
                self.quiz.answer(q.id, answer)
                result = self.quiz.self_assess(q.id, int(typed))
                break
            self.say(f"  Type a whole number from 0 to {n}.")
        self.say(result.verdict)


# ---------------------------------------------------------------------------------------------
# widgets


def _html_text(text: str) -> str:
    """Escape text for HTML; `code` becomes <code>, blank lines separate paragraphs."""
    escaped = html.escape(text.strip())
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    paragraphs = [p.replace("\n", "<br>") for p in re.split(r"\n\s*\n", escaped)]
    return "".join(f"<p>{p}</p>" for p in paragraphs) if len(paragraphs) > 1 else paragraphs[0]


def _feedback_html(result: AnswerResult) -> str:
    if result.correct is None:
        color, head = "#0b5cad", result.verdict
    elif result.correct:
        color, head = "#1a7f37", "&#10004; Correct."
    else:
        color, head = "#b42318", "&#10008; Incorrect."
    parts = [f'<div class="hadrlab-quiz-verdict" style="color:{color}"><b>{head}</b>']
    if result.correct is False and result.expected:
        parts.append(" " + html.escape(_end_sentence(f"The answer is {result.expected}")))
    parts.append("</div>")
    if result.model_answer:
        parts.append(f"<p><b>Model answer.</b> {_html_text(result.model_answer)}</p>")
        items = "".join(f"<li>{_html_text(point)}</li>" for point in result.rubric)
        parts.append(f"<p><b>Rubric</b> (tick the points your answer covered):</p><ol>{items}</ol>")
    parts.append(f"<p><b>Why.</b> {_html_text(result.explanation)}</p>")
    return "".join(parts)


def _question_widget(quiz: Quiz, number: int, q: Question, refresh: Callable[[], None]) -> Any:
    import ipywidgets as widgets

    # The id is shown so that the answer sheet below the quiz can name the question.
    prompt = widgets.HTML(value=f"<b>{number}. </b>{_html_text(q.prompt)} "
                                f'<code style="color:#666">{html.escape(q.id)}</code>')
    feedback = widgets.HTML(value="")
    feedback.add_class("hadrlab-quiz-feedback")
    button = widgets.Button(description="Check" if q.type != "text" else "Show model answer",
                            button_style="primary")
    button.add_class("hadrlab-quiz-check")
    extra: list[Any] = []

    if q.type == "single":
        entry = widgets.RadioButtons(
            options=[(q.format_option(i), i) for i in range(len(q.options))],
            value=None, layout=widgets.Layout(width="auto"),
        )

        def read() -> Any:
            if entry.value is None:
                raise QuizError("Choose an option, then press Check.")
            return entry.value
    elif q.type == "multiple":
        boxes = [
            widgets.Checkbox(value=False, description=q.format_option(i), indent=False,
                             layout=widgets.Layout(width="auto"))
            for i in range(len(q.options))
        ]
        entry = widgets.VBox(boxes)

        def read() -> Any:
            return [i for i, box in enumerate(boxes) if box.value]
    elif q.type == "numeric":
        # A text box, not FloatText: FloatText starts at 0, so an untouched box would be
        # scored as the answer 0. An empty box asks for a number; a typed "0" is an answer.
        # Typed text is read as in the terminal, so "1296 s" works for a question in min.
        number_box = widgets.Text(value="", placeholder="a number",
                                  layout=widgets.Layout(width="10em"))
        entry = widgets.HBox([number_box, widgets.HTML(value=html.escape(q.unit))])

        def read() -> Any:
            typed = number_box.value.strip()
            if not typed:
                unit = f" in {q.unit}" if q.unit else ""
                raise QuizError(f"Type a number{unit}, then press Check.")
            return q.parse_typed(typed)
    else:
        entry = widgets.Textarea(
            placeholder="Write your answer, then compare it with the model answer.",
            layout=widgets.Layout(width="95%", height="8em"),
        )
        rubric_boxes = [
            widgets.Checkbox(value=False, description=point, indent=False,
                             layout=widgets.Layout(width="auto"))
            for point in q.rubric
        ]
        assessment = widgets.VBox(rubric_boxes, layout=widgets.Layout(display="none"))
        assessment.add_class("hadrlab-quiz-rubric")
        extra.append(assessment)

        def read() -> Any:
            return entry.value

        def on_tick(_change: Any) -> None:
            result = quiz.self_assess(q.id, sum(box.value for box in rubric_boxes))
            feedback.value = _feedback_html(result)
            refresh()

        for box in rubric_boxes:
            box.observe(on_tick, names="value")

    def on_check(_button: Any) -> None:
        try:
            result = quiz.answer(q.id, read())
        except QuizError as exc:
            feedback.value = f'<div class="hadrlab-quiz-verdict">{html.escape(str(exc))}</div>'
            return
        if q.type == "text":
            assessment.layout.display = ""
            ticked = sum(box.value for box in rubric_boxes)
            if ticked:
                result = quiz.self_assess(q.id, ticked)
        feedback.value = _feedback_html(result)
        refresh()

    button.on_click(on_check)
    box = widgets.VBox([prompt, entry, button, feedback, *extra],
                       layout=widgets.Layout(margin="0 0 1.5em 0"))
    box.add_class("hadrlab-quiz-question")
    return box


# ---------------------------------------------------------------------------------------------
# loading and validation


def _display_path(path: Path | None) -> str:
    """The bank's path as error messages show it: relative to the checkout when inside it."""
    if path is None:
        return "<quiz>"
    resolved = Path(path).resolve()
    for base in (_CHECKOUT, Path.cwd()):
        try:
            return resolved.relative_to(base).as_posix()
        except ValueError:
            continue
    return str(path)


def _bank_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("HADRLAB_QUIZ_DIR")
    if env:
        dirs.append(Path(env).expanduser())
    cwd = Path.cwd()
    # the checkout first; then the working folder and its parent, for a notebook in labs/
    dirs += [_CHECKOUT / "quizzes", cwd / "quizzes", cwd.parent / "quizzes"]
    unique: list[Path] = []
    for d in dirs:
        if d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def list_banks() -> list[Path]:
    """Return the YAML banks of the first quizzes/ folder found (see find_bank)."""
    for folder in _bank_dirs():
        banks = sorted(folder.glob("*.yaml"))
        if banks:
            return banks
    return []


def find_bank(bank: str | os.PathLike[str]) -> Path:
    """Return the file of a bank named by lab id ("00"), name ("interview") or path.

    Banks are looked up in $HADRLAB_QUIZ_DIR, then the checkout's quizzes/, then quizzes/ in
    the working folder or its parent.

    Raises:
        QuizError: no such bank; the message lists where it looked and what exists.
    """
    text = os.fspath(bank)
    path = Path(text).expanduser()
    if path.suffix in (".yaml", ".yml") or "/" in text or os.sep in text:
        if path.is_file():
            return path
        raise QuizError(
            f"The quiz bank file '{text}' does not exist. Pass a lab id such as '00', a bank "
            f"name such as 'interview', or the path of an existing YAML file."
        )
    name = text.strip().lower()
    if re.fullmatch(r"\d{1,2}", name):
        name = f"lab{int(name):02d}"
    dirs = _bank_dirs()
    for folder in dirs:
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    known = ", ".join(p.stem for p in list_banks()) or "none found"
    looked = ", ".join(str(d) for d in dirs)
    raise QuizError(
        f"There is no quiz bank '{text}': looked for {name}.yaml in {looked}. Known banks: "
        f"{known}. Pass a lab id such as '00', a bank name such as 'interview', or a path."
    )


def load_quiz(bank: str | os.PathLike[str]) -> Quiz:
    """Load and validate a quiz bank.

    Args:
        bank: a lab id ("00" finds quizzes/lab00.yaml), a bank name ("interview") or a path.

    Returns:
        The Quiz, with no answers yet.

    Raises:
        QuizError: the bank is missing or malformed; each problem names the file, the question
            id and the field. ``exc.problems`` lists them one by one.
    """
    return _parse_bank(find_bank(bank))


def _parse_bank(path: Path) -> Quiz:
    shown = _display_path(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise QuizError(f"{shown}: the quiz bank cannot be read ({exc.strerror}).") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise QuizError(
            f"{shown}: the file is not valid YAML{where} ({problem}). Check the indentation "
            f"and quote values that start with '%', '@', '`' or contain ': '."
        ) from exc
    if not isinstance(data, dict):
        raise QuizError(
            f"{shown}: a quiz bank must be a mapping with the fields "
            f"{', '.join(_BANK_FIELDS)}; got {_describe(data)}."
        )
    problems: list[str] = []
    for key in data:
        if key not in _BANK_FIELDS:
            problems.append(
                f"{shown}: unknown top-level field '{key}'; allowed fields: "
                f"{', '.join(_BANK_FIELDS)}."
            )
    title = data.get("title")
    if not isinstance(title, str) or not title.strip():
        problems.append(f"{shown}: field 'title' must be a non-empty string, got {_describe(title)}.")
        title = Path(path).stem
    description = data.get("description", "")
    if not isinstance(description, str):
        problems.append(f"{shown}: field 'description' must be a string, got {_describe(description)}.")
        description = ""
    raw_questions = data.get("questions")
    questions: list[Question] = []
    if not isinstance(raw_questions, list) or not raw_questions:
        problems.append(
            f"{shown}: field 'questions' must be a non-empty list of questions, got "
            f"{_describe(raw_questions)}."
        )
        raw_questions = []
    first_seen: dict[str, int] = {}
    for position, raw in enumerate(raw_questions, 1):
        parser = _QuestionParser(shown, position, raw, first_seen)
        question = parser.parse()
        problems += parser.problems
        if question is not None:
            questions.append(question)
    if problems:
        if len(problems) == 1:
            message = problems[0]
        else:
            message = f"{shown} has {len(problems)} problems:\n" + "\n".join(
                f"  - {p}" for p in problems
            )
        error = QuizError(message)
        error.problems = problems  # type: ignore[attr-defined]
        raise error
    return Quiz(title.strip(), questions, Path(path), description.strip())


class _QuestionParser:
    """Validates one raw question mapping, collecting every problem rather than the first."""

    def __init__(self, shown: str, position: int, raw: Any, first_seen: dict[str, int]) -> None:
        self.shown = shown
        self.position = position
        self.raw = raw
        self.first_seen = first_seen
        self.where = f"{shown}, question #{position}"
        self.problems: list[str] = []

    def problem(self, name: str, text: str) -> None:
        self.problems.append(f"{self.where}: field '{name}' {text}.")

    def parse(self) -> Question | None:
        raw = self.raw
        if not isinstance(raw, dict):
            self.problems.append(
                f"{self.where}: a question must be a mapping of fields (id, type, prompt, "
                f"explanation, ...), got {_describe(raw)}."
            )
            return None
        qid = raw.get("id")
        if isinstance(qid, str) and _ID_PATTERN.match(qid):
            self.where = f"{self.shown}, question '{qid}'"
            if qid in self.first_seen:
                self.problem("id", f"duplicates the id of question #{self.first_seen[qid]}; "
                                   f"every id must be unique in the bank")
            else:
                self.first_seen[qid] = self.position
        elif qid is None:
            self.problem("id", "is missing")
        else:
            self.problem("id", f"must use lower-case letters, digits and dashes (like "
                               f"'rto-vs-rpo'), got {_describe(qid)}")
        qtype = raw.get("type")
        if qtype not in QUESTION_TYPES:
            verb = "is missing" if qtype is None else f"is {_describe(qtype)}"
            self.problem("type", f"{verb}; it must be one of {', '.join(QUESTION_TYPES)}")
            allowed = _COMMON_FIELDS + tuple(dict.fromkeys(f for fs in _TYPE_FIELDS.values() for f in fs))
        else:
            allowed = _COMMON_FIELDS + _TYPE_FIELDS[qtype]
        for key in raw:
            if key not in allowed:
                kind = f"a {_TYPE_LABELS[qtype].replace(' ', '-')}" if qtype in _TYPE_LABELS else "any"
                self.problems.append(
                    f"{self.where}: unknown field '{key}'; allowed fields for {kind} question: "
                    f"{', '.join(allowed)}."
                )
        required = _REQUIRED_COMMON + _TYPE_FIELDS.get(qtype, ())
        for name in required:
            if name not in raw and name not in ("id", "type"):
                self.problem(name, "is missing")
        prompt = self.text_field("prompt")
        explanation = self.text_field("explanation")
        tags = self.string_list("tags", minimum=0) if "tags" in raw else ()
        if qtype not in QUESTION_TYPES:
            return None
        fields: dict[str, Any] = {}
        if qtype in ("single", "multiple"):
            options = self.string_list("options", minimum=2)
            if len(options) > len(_LETTERS):
                self.problem("options", f"has {len(options)} options; at most 26 are allowed")
            if len(set(options)) != len(options):
                self.problem("options", "has the same option twice; options must differ")
            fields["options"] = options
            if "answer" in raw and options:
                fields["answer"] = self.choice_answer(qtype, raw["answer"], len(options))
        elif qtype == "numeric":
            fields["answer"] = self.number("answer")
            tolerance = self.number("tolerance")
            if tolerance is not None and tolerance < 0:
                self.problem("tolerance", f"must be zero or positive, got {tolerance:g}")
            fields["tolerance"] = tolerance
            unit = raw.get("unit")
            if "unit" in raw and not isinstance(unit, str):
                self.problem("unit", f"must be a string (use \"\" for a plain number), got {_describe(unit)}")
            fields["unit"] = unit.strip() if isinstance(unit, str) else ""
        else:
            fields["model_answer"] = self.text_field("model_answer")
            fields["rubric"] = self.string_list("rubric", minimum=1)
        if self.problems:
            return None
        return Question(id=qid, type=qtype, prompt=prompt, explanation=explanation,
                        tags=tags, **fields)

    def text_field(self, name: str) -> str:
        value = self.raw.get(name)
        if name in self.raw and (not isinstance(value, str) or not value.strip()):
            self.problem(name, f"must be a non-empty string, got {_describe(value)}")
            return ""
        return value.strip() if isinstance(value, str) else ""

    def string_list(self, name: str, minimum: int) -> tuple[str, ...]:
        value = self.raw.get(name)
        if name not in self.raw:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            self.problem(name, f"must be a list of non-empty strings, got {_describe(value)}")
            return ()
        if len(value) < minimum:
            self.problem(name, f"must have at least {minimum} entries, got {len(value)}")
        return tuple(v.strip() for v in value)

    def number(self, name: str) -> float | None:
        value = self.raw.get(name)
        if name not in self.raw:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.problem(name, f"must be a number, got {_describe(value)}")
            return None
        return float(value)

    def choice_answer(self, qtype: str, value: Any, n: int) -> Any:
        letters = f"a to {_LETTERS[n - 1]}"

        def index(item: Any) -> int | None:
            if isinstance(item, str) and len(item.strip()) == 1 and item.strip().lower() in _LETTERS[:n]:
                return _LETTERS.index(item.strip().lower())
            if isinstance(item, str) and len(item.strip()) == 1 and item.strip().lower() in _LETTERS:
                self.problem("answer", f"is {item!r}, which is not among the options ({letters})")
            else:
                self.problem("answer", f"must name options by letter ({letters}), got {_describe(item)}")
            return None

        if qtype == "single":
            if isinstance(value, list):
                self.problem("answer", f"must be one letter ({letters}) for a single-choice "
                                       f"question, got a list; use type: multiple for several")
                return None
            return index(value)
        if not isinstance(value, list) or not value:
            self.problem("answer", f"must be a non-empty list of letters ({letters}) for a "
                                   f"multiple-choice question, got {_describe(value)}")
            return None
        indices = [index(item) for item in value]
        if len(set(indices)) != len(indices):
            self.problem("answer", "names the same option twice")
        return frozenset(i for i in indices if i is not None)


# ---------------------------------------------------------------------------------------------
# command line


def main_quiz(argv: list[str]) -> int:
    """Run a bank as a terminal drill: ``python -m hadrlab quiz BANK [--ids a,b] [--shuffle]``.

    Args:
        argv: the arguments after ``quiz``.

    Returns:
        0 after the drill, also when input ends early: ending with Ctrl-D is how a learner
        stops, and the summary says how many questions were answered and names the others.
        2 for a bad bank or bad arguments, 130 when interrupted.
    """
    parser = argparse.ArgumentParser(
        prog="python -m hadrlab quiz",
        description="Drill a quiz bank in the terminal: answers are read from standard input.",
        epilog="Exit status: 0 the drill ran (also when input ended early; the summary says "
        "how many questions were answered), 2 a bad bank or bad arguments, 130 interrupted.",
    )
    parser.add_argument("bank", help="a lab id (00..04), a bank name (interview) or a YAML path")
    parser.add_argument("--ids", help="comma-separated question ids to ask, in this order")
    parser.add_argument("--shuffle", action="store_true",
                        help="ask the questions, and the options of each, in a random order")
    parser.add_argument("--seed", type=int, help="seed for --shuffle, to repeat an order")
    parser.add_argument("--list", action="store_true", help="print the question ids and exit")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.seed is not None and not args.shuffle:
        print("error: --seed only applies with --shuffle; add --shuffle or drop --seed.",
              file=sys.stderr)
        return 2
    try:
        quiz = load_quiz(args.bank)
        if args.list:
            for q in quiz.questions:
                print(f"{q.id}  ({q.label})")
            return 0
        if args.ids:
            quiz = quiz.select([i.strip() for i in args.ids.split(",") if i.strip()])
    except QuizError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.shuffle:
        seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
        print(f"Shuffled with --seed {seed}.")
        quiz = quiz.shuffled(seed)
    try:
        quiz.run_terminal()
    except KeyboardInterrupt:
        return 130
    return 0


def main_validate(argv: list[str]) -> int:
    """Validate quiz banks and print one status line per bank (then its problems, if any).

    Args:
        argv: bank files, ids or names; none means every bank in quizzes/.

    Returns:
        0 when every bank is valid, 1 otherwise.
    """
    parser = argparse.ArgumentParser(prog="python -m hadrlab quizzes",
                                     description="Validate quiz banks.")
    parser.add_argument("banks", nargs="*", help="bank files, lab ids or names (default: all)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    targets: list[str | Path] = list(args.banks) or list(list_banks())
    if not targets:
        print("FAIL no quiz banks found: expected YAML files in quizzes/.")
        return 1
    failed = 0
    for target in targets:
        try:
            quiz = _parse_bank(find_bank(target))
        except QuizError as exc:
            failed += 1
            problems = getattr(exc, "problems", None) or [str(exc)]
            print(f"FAIL {target}: {len(problems)} problem{'s' if len(problems) != 1 else ''}")
            for p in problems:
                print(f"     {p}")
            continue
        counts: dict[str, int] = {}
        for q in quiz.questions:
            counts[q.type] = counts.get(q.type, 0) + 1
        kinds = ", ".join(f"{counts[t]} {t}" for t in QUESTION_TYPES if t in counts)
        print(f"OK   {_display_path(quiz.path)}: {len(quiz)} questions ({kinds})")
    return 1 if failed else 0
