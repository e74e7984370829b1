"""Graded checks for the labs, and the command-line grader for instructors.

In a notebook, a :class:`Scoreboard` compares what the learner measured with the lab's
objectives and says, for every check, PASS or FAIL with a hint::

    board = Scoreboard("00")
    board.check_close("monthly-error-budget", lambda: budget_min, 21.6, tol=0.1, unit="min")
    board.summary()

A check never raises: if the learner has not run or not finished the cell that computes a
value, the check fails, says why (its *reason*) and shows the hint its author wrote. Pass the
value as a ``lambda`` so that a missing variable is caught by the check rather than by Python
before the check runs. A check that does not apply to this run (it is about an experiment the
parameters left out) is *skipped*: raise :class:`NotRun` from the lambda, or call
:meth:`Scoreboard.skip`. Skipped checks count neither for nor against the score, which reads
``Score 6/6 (5 not run)``.

When the environment variable ``HADRLAB_GRADE_FILE`` names a file, every check appends one
JSON line to it. That is how ``python -m hadrlab grade NOTEBOOK...`` collects the results: it
executes each learner notebook headless, in a fresh kernel, and prints a table per notebook.
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import math
import numbers
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hadrlab.errors import GradingError

__all__ = [
    "CheckResult",
    "NotRun",
    "Scoreboard",
    "NotebookGrade",
    "grade_notebooks",
    "executed_copy_paths",
    "main_grade",
    "GRADE_FILE_ENV",
]

GRADE_FILE_ENV = "HADRLAB_GRADE_FILE"

_NOT_MEASURED = "not measured"


# --------------------------------------------------------------------------- formatting


def _plain(value: Any) -> str:
    """A value as a person writes it: numbers short, containers with their items formatted."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.6g}"
    if isinstance(value, tuple) and type(value) is tuple:
        items = ", ".join(_plain(v) for v in value)
        return f"({items},)" if len(value) == 1 else f"({items})"
    if isinstance(value, list) and type(value) is list:
        return "[" + ", ".join(_plain(v) for v in value) + "]"
    return repr(value)


def _format_value(value: Any, width: int = 60) -> str:
    text = " ".join(_plain(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _json_safe(value: Any, depth: int = 0) -> Any:
    """The value itself when JSON can hold it exactly (tuples as lists), else its shortened repr."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else repr(number)
    if type(value) in (list, tuple) and len(value) <= 50 and depth < 3:
        return [_json_safe(v, depth + 1) for v in value]
    return _format_value(value, width=200)


def _with_unit(text: str, unit: str) -> str:
    return f"{text} {unit}" if unit else text


# --------------------------------------------------------------------------- one check


@dataclass(repr=False)
class CheckResult:
    """The outcome of one graded check: PASS, FAIL or SKIP, what was measured, what was expected.

    Attributes:
        name: the check's short name, e.g. ``"monthly-error-budget"``.
        passed: True when the measurement meets the objective.
        measured: the learner's value (None when it could not be evaluated).
        expected: the objective as shown to the learner, e.g. ``"21.6 ± 0.1 min"``.
        hint: what to do when the check fails, as the check's author wrote it (or a
            general one when the author wrote none); empty when it passed.
        unit: the unit of ``measured``, shown after it.
        lab: the lab the check belongs to, e.g. ``"00"``.
        error: the exception raised while evaluating ``measured``, if any.
        reason: why this check failed or was skipped, specifically (``"name 'cut' is not
            defined: ..."``, ``"43.2 is 21.6 min away from 21.6"``); empty when it passed.
        skipped: True when the check does not apply to this run; it is left out of the score.
        shown: the measured value as text, when it was formatted elsewhere (the grader
            reads it from the grade file, so a tuple still reads ``(19, 0)``).

    Example:
        >>> CheckResult("monthly-error-budget", True, 21.6, "21.6 ± 0.1 min", unit="min")
        PASS  monthly-error-budget  measured 21.6 min, expected 21.6 ± 0.1 min
    """

    name: str
    passed: bool
    measured: Any
    expected: str
    hint: str = ""
    unit: str = ""
    lab: str = ""
    error: str = ""
    reason: str = ""
    skipped: bool = False
    shown: str = ""

    @property
    def status(self) -> str:
        return "PASS" if self.passed else ("SKIP" if self.skipped else "FAIL")

    @property
    def measured_text(self) -> str:
        if self.skipped:
            return "not run"
        if self.error:
            return _NOT_MEASURED
        return _with_unit(self.shown or _format_value(self.measured), self.unit)

    @property
    def advice(self) -> str:
        """What the learner reads under a failed or skipped check: the reason, then the hint."""
        if self.passed:
            return ""
        if self.skipped:
            return self.reason
        parts = [p for p in (self.reason, f"hint: {self.hint}" if self.reason and self.hint else self.hint) if p]
        return "; ".join(parts)

    def __repr__(self) -> str:
        if self.skipped:
            return f"{self.status}  {self.name}  {self.reason or 'not run'}"
        measured = _NOT_MEASURED if self.error else f"measured {self.measured_text}"
        line = f"{self.status}  {self.name}  {measured}, expected {self.expected}"
        if self.advice:
            line += f"  -> {self.advice}"
        return line

    __str__ = __repr__

    def _html_row(self) -> str:
        colour = "#1a7f37" if self.passed else ("#6e7781" if self.skipped else "#cf222e")
        mark = "✔" if self.passed else ("–" if self.skipped else "✘")
        cells = [
            f'<td style="color:{colour};font-weight:bold">{mark} {self.status}</td>',
            f"<td><code>{html.escape(self.name)}</code></td>",
            f"<td>{html.escape(self.measured_text)}</td>",
            f"<td>{html.escape(self.expected)}</td>",
            f"<td>{html.escape(self.advice)}</td>",
        ]
        return f"<tr>{''.join(cells)}</tr>"

    def _repr_html_(self) -> str:
        return f"<table>{_HTML_HEAD}{self._html_row()}</table>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        # The record rides along with what the learner sees: the grader reads it from the
        # outputs of the course's own check cells (see hadrlab.checkcells).
        from hadrlab.checkcells import CHECK_MIME

        return {"text/plain": repr(self), "text/html": self._repr_html_(), CHECK_MIME: self.to_dict()}

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe record the grader collects (one line of the grade file)."""
        return {
            "lab": self.lab,
            "name": self.name,
            "status": self.status,
            "passed": bool(self.passed),
            "skipped": bool(self.skipped),
            "measured": None if self.error or self.skipped else _json_safe(self.measured),
            "measured_text": "" if self.error or self.skipped else (self.shown or _format_value(self.measured)),
            "expected": self.expected,
            "reason": self.reason,
            "hint": self.hint,
            "unit": self.unit,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        return cls(
            name=str(data.get("name", "")),
            passed=bool(data.get("passed")),
            measured=data.get("measured"),
            expected=str(data.get("expected", "")),
            hint=str(data.get("hint", "")),
            unit=str(data.get("unit", "")),
            lab=str(data.get("lab", "")),
            error=str(data.get("error") or ""),
            reason=str(data.get("reason") or ""),
            skipped=bool(data.get("skipped")),
            shown=str(data.get("measured_text") or ""),
        )


_HTML_HEAD = (
    "<tr><th style='text-align:left'>result</th><th style='text-align:left'>check</th>"
    "<th style='text-align:left'>measured</th><th style='text-align:left'>expected</th>"
    "<th style='text-align:left'>why, and hint</th></tr>"
)


class NotRun(Exception):
    """Raise it from a check's value to skip the check: it does not apply to this run.

    A skipped check is shown as SKIP with the message as its reason, and is left out of the
    score. Use it when the lab's parameters left out what the check is about.

    Example:
        >>> def availability(name):
        ...     if name not in EXPERIMENTS:
        ...         raise NotRun(f"not run ({name} is not in EXPERIMENTS)")
        ...     return measured[name]
    """


class _Unmeasured(Exception):
    """Evaluating the learner's value raised; carries the reason it could not be measured."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(reason)
        self.reason, self.error = reason, error


class _Skipped(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reason_for(exc: BaseException) -> str:
    message = str(exc).strip()
    if isinstance(exc, NotImplementedError):
        detail = f"NotImplementedError: {message}" if message else "NotImplementedError"
        return f"finish the exercise cell above (it raised {detail})"
    if isinstance(exc, NameError):
        # The cell that sets the name may be an exercise, or an experiment cell that stopped
        # because of an earlier error: only the grader's first cell error tells which.
        return (f"{message}: the cell that sets it has not run, or stopped at an error "
                f"(perhaps one raised by an unfinished cell before it)")
    return f"the code that computes this value raised {type(exc).__name__}: {message}"


def _evaluate(measured: Any) -> Any:
    if not callable(measured):
        return measured
    try:
        return measured()
    except NotRun as exc:
        raise _Skipped(str(exc).strip() or "not run") from None
    except Exception as exc:  # any failure of learner code becomes a failed check
        raise _Unmeasured(_reason_for(exc), f"{type(exc).__name__}: {exc}") from None


# --------------------------------------------------------------------------- the scoreboard


class Scoreboard:
    """The graded checks of one lab notebook, with a running score.

    Re-running a check with the same name replaces its earlier result, so re-running a
    cell never counts a check twice. Skipped checks (see :class:`NotRun`) are listed but
    left out of the score.

    Args:
        lab: the lab's id, ``"00"`` to ``"04"``.

    Example:
        >>> board = Scoreboard("00")
        >>> board.check_close("monthly-error-budget", lambda: 21.6, 21.6, tol=0.1, unit="min")
        PASS  monthly-error-budget  measured 21.6 min, expected 21.6 ± 0.1 min
        >>> board.summary()
        PASS monthly-error-budget
        Score: 1/1
    """

    def __init__(self, lab: str | int) -> None:
        self.lab = f"{lab:02d}" if isinstance(lab, int) else str(lab)
        self._results: dict[str, CheckResult] = {}

    @property
    def results(self) -> list[CheckResult]:
        """Every check so far, in the order they were first run."""
        return list(self._results.values())

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self._results.values())

    @property
    def skipped(self) -> int:
        """Checks that did not apply to this run."""
        return sum(r.skipped for r in self._results.values())

    @property
    def total(self) -> int:
        """Checks that count towards the score (skipped ones do not)."""
        return len(self._results) - self.skipped

    @property
    def score_text(self) -> str:
        """``"6/6"``, or ``"6/6 (5 not run)"`` when checks were skipped."""
        return _score_text(self.passed, self.total, self.skipped)

    def _record(self, result: CheckResult) -> CheckResult:
        result.lab = self.lab
        self._results[result.name] = result
        _append_grade_line(result)
        return result

    def skip(self, name: str, reason: str = "not run", expected: str = "") -> CheckResult:
        """Record check ``name`` as skipped: it does not apply to this run.

        Args:
            name: the check's short name, as it reads when it runs.
            reason: why, e.g. ``"not run (registry-outage is not in EXPERIMENTS)"``.
            expected: the objective, for the record.

        Returns:
            The skipped :class:`CheckResult`.
        """
        return self._record(CheckResult(name, False, None, expected, reason=reason, skipped=True))

    def _measure(self, name: str, measured: Any, expected: str, unit: str, hint: str) -> tuple[Any, CheckResult | None]:
        """Evaluate the learner's value; on failure or skip, the recorded result instead."""
        try:
            return _evaluate(measured), None
        except _Skipped as exc:
            return None, self.skip(name, exc.reason, expected)
        except _Unmeasured as exc:
            return None, self._record(
                CheckResult(name, False, None, expected, hint, unit, error=exc.error, reason=exc.reason)
            )

    def _judged(self, name: str, ok: bool, value: Any, expected: str, unit: str, reason: str,
                hint: str, default_hint: str) -> CheckResult:
        if ok:
            return self._record(CheckResult(name, True, value, expected, "", unit))
        return self._record(CheckResult(name, False, value, expected, hint or default_hint, unit, reason=reason))

    def check_close(
        self, name: str, measured: Any, expected: float, tol: float, unit: str = "", hint: str = ""
    ) -> CheckResult:
        """Check that a number is within ``tol`` of ``expected``.

        Args:
            name: the check's short name.
            measured: the learner's number, or a zero-argument callable returning it.
            expected: the objective.
            tol: the allowed absolute difference, in the same unit (0 for an exact value;
                floating-point rounding is always allowed).
            unit: the unit, for display (``"min"``, ``"ms"``).
            hint: what to tell the learner if the check fails.

        Returns:
            The :class:`CheckResult` (a notebook cell displays it).
        """
        # A little slack for binary floating point: 0.1 * 3 must match 0.3 ± 0.
        slack = 1e-9 * max(1.0, abs(float(expected)))
        exact = float(tol) <= slack
        expected_text = _with_unit(
            _format_value(expected) if exact else f"{_format_value(expected)} ± {_format_value(tol)}", unit
        )
        value, failed = self._measure(name, measured, expected_text, unit, hint)
        if failed is not None:
            return failed
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return self._judged(name, False, value, expected_text, unit,
                                f"expected a number, got {type(value).__name__} {_format_value(value, 40)}",
                                hint, "")
        number = float(value)
        ok = math.isfinite(number) and abs(number - float(expected)) <= float(tol) + slack
        if math.isfinite(number):
            off = _with_unit(_format_value(abs(number - float(expected))), unit)
            reason = f"{_format_value(number)} is {off} away from {_format_value(expected)}"
        else:
            reason = f"the value is {number}"
        return self._judged(name, ok, value, expected_text, unit, reason, hint, "re-check the calculation")

    def check_true(
        self,
        name: str,
        measured: Any,
        condition: Callable[[Any], bool],
        expected: str,
        hint: str = "",
        unit: str = "",
    ) -> CheckResult:
        """Check that ``condition(measured)`` holds.

        Args:
            name: the check's short name.
            measured: the learner's value, or a zero-argument callable returning it.
            condition: a predicate on the value, e.g. ``lambda ms: ms > 1.0``.
            expected: the condition in words shown to the learner, e.g. ``"> 1.0 ms"``.
            hint: what to tell the learner if the check fails.
            unit: the unit of the measured value, for display.

        Returns:
            The :class:`CheckResult`.
        """
        value, failed = self._measure(name, measured, expected, unit, hint)
        if failed is not None:
            return failed
        try:
            ok = bool(condition(value))
        except Exception as exc:  # a value of the wrong kind, e.g. None > 1.0
            return self._judged(
                name, False, value, expected, unit,
                f"the value {_format_value(value, 40)} could not be tested ({type(exc).__name__}: {exc})",
                hint, "is it the right kind of value?",
            )
        reason = f"{_with_unit(_format_value(value, 40), unit)} does not meet {expected}"
        return self._judged(name, ok, value, expected, unit, reason, hint, "")

    def check_equal(self, name: str, measured: Any, expected: Any, hint: str = "") -> CheckResult:
        """Check that a value equals ``expected``; strings compare ignoring case and spacing.

        Args:
            name: the check's short name.
            measured: the learner's value, or a zero-argument callable returning it.
            expected: the expected value.
            hint: what to tell the learner if the check fails.

        Returns:
            The :class:`CheckResult`.
        """
        expected_text = _format_value(expected)
        value, failed = self._measure(name, measured, expected_text, "", hint)
        if failed is not None:
            return failed
        if isinstance(value, str) and isinstance(expected, str):
            ok = " ".join(value.split()).casefold() == " ".join(expected.split()).casefold()
        else:
            try:
                ok = bool(value == expected)
            except Exception:  # e.g. an array compared with a list
                ok = False
        reason = f"expected {expected_text}, got {_format_value(value, 40)}"
        return self._judged(name, ok, value, expected_text, "", reason, hint, "")

    def summary(self) -> None:
        """Print one line per check and the score; only deterministic text (nbval compares it)."""
        for result in self._results.values():
            print(f"{result.status} {result.name}")
        print(f"Score: {self.score_text}")

    def __repr__(self) -> str:
        lines = [repr(r) for r in self._results.values()]
        lines.append(f"Score: {self.score_text}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(r._html_row() for r in self._results.values())
        return (
            f"<table>{_HTML_HEAD}{rows}</table>"
            f"<p><b>Lab {html.escape(self.lab)} score: {html.escape(self.score_text)}</b></p>"
        )


def _score_text(passed: int, total: int, skipped: int) -> str:
    return f"{passed}/{total}" + (f" ({skipped} not run)" if skipped else "")


def _append_grade_line(result: CheckResult) -> None:
    path = os.environ.get(GRADE_FILE_ENV)
    if not path:
        return
    line = json.dumps(result.to_dict(), ensure_ascii=False) + "\n"
    try:
        # One write per line, in append mode, so lines from re-run cells never interleave.
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line)
    except OSError as exc:
        warnings.warn(
            f"Could not record check {result.name!r} in {path} ({exc}); the grader will not see it.",
            stacklevel=3,
        )


def read_grade_file(path: str | os.PathLike) -> list[CheckResult]:
    """Read the checks a notebook recorded; a check run twice keeps its last result.

    Args:
        path: the file named by ``HADRLAB_GRADE_FILE`` during the run.

    Returns:
        The checks, in the order they were first run. Malformed lines are skipped.
    """
    results: dict[tuple[str, str], CheckResult] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return []
    for line in text.splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("name"):
            result = CheckResult.from_dict(data)
            results[(result.lab, result.name)] = result
    return list(results.values())


# --------------------------------------------------------------------------- the grader


@dataclass(repr=False)
class NotebookGrade:
    """The grade of one learner notebook.

    Attributes:
        path: the notebook graded.
        checks: every check its cells ran.
        errors: the cells that raised, in order (an unfinished exercise raises
            NotImplementedError).
        problem: why the notebook could not be graded, or not fully (missing file, not a
            notebook, the kernel died); empty when all went well.
        graded: False when nothing could be run at all.
        duration_s: how long the execution took.
        executed_path: where the executed copy (with its outputs) was saved, if it was.
        notes: what the instructor should know that is not a check: check cells the learner
            edited or deleted (graded with the course's copy), a notebook graded as written.
        quiz: the quiz answer sheets the notebook displayed, scored again against the
            course's banks (:mod:`hadrlab.answers`).
        written: the learner's written answers, one per answer cell of the course's lab.
    """

    path: Path
    checks: list[CheckResult] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)
    problem: str = ""
    graded: bool = True
    duration_s: float = 0.0
    executed_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    quiz: list[Any] = field(default_factory=list)
    written: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.checks)

    @property
    def skipped(self) -> int:
        """Checks that did not apply to this run (left out of the score)."""
        return sum(c.skipped for c in self.checks)

    @property
    def total(self) -> int:
        """Checks that count: every check run, less the skipped ones."""
        return len(self.checks) - self.skipped

    @property
    def score(self) -> float:
        """Passed checks as a fraction of the checks that count (0.0 when none did)."""
        return self.passed / self.total if self.total else 0.0

    @property
    def score_text(self) -> str:
        """``"6/6"``, or ``"6/6 (5 not run)"`` when checks were skipped."""
        return _score_text(self.passed, self.total, self.skipped)

    @property
    def root_cause(self) -> str:
        """The first cell that raised, as the likely cause of the failures after it; or ``""``."""
        if not self.errors:
            return ""
        first = self.errors[0]
        index, ename = getattr(first, "cell_index", "?"), getattr(first, "ename", "an error")
        action = "finish it first" if ename == "NotImplementedError" else "fix it first"
        evalue = " ".join(str(getattr(first, "evalue", "")).split())
        detail = f" ({evalue[:80] + ('…' if len(evalue) > 80 else '')})" if evalue else ""
        return (f"cell {index} raised {ename}{detail}: {action}; later failures follow from it")

    def report(self, max_errors: int = 3) -> str:
        """A plain-text table of the checks, the first cell errors and the score."""
        lines = [f"== {self.path}"]
        if not self.graded:
            lines.append(f"NOT GRADED: {self.problem}")
            return "\n".join(lines)
        if self.checks:
            rows = [("check", "result", "measured", "expected", "why, and hint")]
            rows += [(c.name, c.status, c.measured_text, c.expected, c.advice) for c in self.checks]
            widths = [max(len(r[i]) for r in rows) for i in range(4)]
            for row in rows:
                cells = [row[i].ljust(widths[i]) for i in range(4)]
                lines.append(("  ".join(cells) + "  " + row[4]).rstrip())
        else:
            lines.append("No checks ran: the notebook has no check cells, or they were deleted.")
        if self.errors:
            lines.append(f"Likely root cause: {self.root_cause}.")
            shown = self.errors[:max_errors]
            more = f" (first {len(shown)} of {len(self.errors)})" if len(self.errors) > len(shown) else ""
            lines.append(f"cell errors{more}:")
            lines.extend(f"  {e}" for e in shown)
        if self.problem:
            lines.append(f"problem: {self.problem}")
        lines.extend(f"note: {n}" for n in self.notes)
        lines.extend(sheet.summary for sheet in self.quiz)
        if self.written:
            done = [w for w in self.written if w["answered"]]
            lines.append(f"written answers: {len(done)} of {len(self.written)}")
            for w in done:
                text = " ".join(w["text"].split())
                lines.append(f"  {w['cell']}: {text[:300] + ('…' if len(text) > 300 else '')}")
        if self.executed_path is not None:
            lines.append(f"executed copy: {self.executed_path}")
        lines.append(f"Score {self.score_text}")
        return "\n".join(lines)

    __str__ = report

    def __repr__(self) -> str:
        state = f"score {self.score_text}" if self.graded else "not graded"
        return f"NotebookGrade({str(self.path)!r}, {state}, {len(self.errors)} cell errors)"

    def _repr_html_(self) -> str:
        rows = "".join(c._html_row() for c in self.checks)
        errors = "".join(f"<li>{html.escape(str(e))}</li>" for e in self.errors[:5])
        parts = [f"<p><b>{html.escape(str(self.path))}</b></p>"]
        if not self.graded:
            parts.append(f"<p>Not graded: {html.escape(self.problem)}</p>")
            return "".join(parts)
        parts.append(f"<table>{_HTML_HEAD}{rows}</table>")
        if errors:
            parts.append(f"<p>Likely root cause: {html.escape(self.root_cause)}.</p>"
                         f"<p>Cell errors:</p><ul>{errors}</ul>")
        if self.problem:
            parts.append(f"<p>Problem: {html.escape(self.problem)}</p>")
        parts.extend(f"<p>Note: {html.escape(n)}</p>" for n in self.notes)
        parts.append(f"<p><b>Score {html.escape(self.score_text)}</b></p>")
        return "".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "graded": self.graded,
            "problem": self.problem,
            "passed": self.passed,
            "total": self.total,
            "skipped": self.skipped,
            "score": round(self.score, 4),
            "score_text": self.score_text,
            "root_cause": self.root_cause,
            "executed_path": None if self.executed_path is None else str(self.executed_path),
            "notes": list(self.notes),
            "quiz": [sheet.to_dict() for sheet in self.quiz],
            "written": [dict(w) for w in self.written],
            "duration_s": round(self.duration_s, 2),
            "errors": [e.to_dict() for e in self.errors],
            "checks": [c.to_dict() for c in self.checks],
        }


def grade_notebook(
    path: str | os.PathLike,
    timeout_s: float = 300,
    kernel_name: str | None = None,
    params: dict[str, Any] | None = None,
    executed_path: str | os.PathLike | None = None,
) -> NotebookGrade:
    """Execute one learner notebook headless and collect its checks; never raises.

    Args:
        path: the learner's notebook. It is read, never written.
        timeout_s: how long one cell may run before it is interrupted.
        kernel_name: the Jupyter kernel; default ``python3`` (this Python's ipykernel).
        params: values that override the lab's ``parameters`` cell (a shorter run, say).
        executed_path: where to save the executed copy, with every output and the learner's
            written answers, for an instructor to read; None saves nothing.

    Returns:
        The :class:`NotebookGrade`.
    """
    from hadrlab.notebooks import inject_parameters, read_notebook, run_cells, write_notebook

    from hadrlab.answers import read_answer_sheets, written_answers
    from hadrlab.checkcells import course_lab_numbers, find_course_twin, lock_check_cells, read_check_outputs

    path = Path(path)
    started = time.monotonic()
    try:
        nb = read_notebook(path)  # an in-memory copy: the learner's file stays untouched
        course = find_course_twin(nb, path)
        lock = lock_check_cells(nb, course) if course is not None else None
        if lock is not None and not lock.course_cells:
            lock = None  # a course lab whose checks carry no tag yet: graded as written
        inject_parameters(nb, params or {}, source=str(path))
    except GradingError as exc:
        return NotebookGrade(path, problem=str(exc), graded=False)
    fd, grade_file = tempfile.mkstemp(prefix="hadrlab-grade-", suffix=".jsonl")
    os.close(fd)
    try:
        run = run_cells(
            nb,
            cwd=path.resolve().parent,
            timeout_s=timeout_s,
            kernel_name=kernel_name,
            allow_errors=True,
            env={GRADE_FILE_ENV: grade_file},
        )
        # A course lab is graded from its own check cells' outputs; the grade file serves the
        # notebooks an instructor writes, which the course has no copy of.
        if lock is not None:
            checks = [CheckResult.from_dict(r) for r in read_check_outputs(nb)]
        else:
            checks = read_grade_file(grade_file)
    finally:
        Path(grade_file).unlink(missing_ok=True)
    saved, problem = None, run.problem
    notes: list[str] = []
    if lock is not None and lock.note:
        notes.append(lock.note)
    if lock is None and {c.lab for c in checks} & course_lab_numbers():
        notes.append("its cells do not carry the ids of the course's lab, so its checks were graded as "
                     "written in it; grade a copy of the course's labs/ notebook instead")
    if executed_path is not None and run.started:
        try:
            saved = write_notebook(nb, executed_path)
        except OSError as exc:
            note = (f"the executed copy could not be saved to {executed_path} ({exc}); check that "
                    f"the folder is writable")
            problem = f"{problem}; {note}" if problem else note
    return NotebookGrade(
        path,
        checks=checks,
        errors=run.errors,
        problem=problem,
        graded=run.started,
        duration_s=time.monotonic() - started,
        executed_path=saved,
        notes=notes,
        quiz=read_answer_sheets(nb) if run.started else [],
        written=written_answers(nb, course) if course is not None else [],
    )


def executed_copy_paths(paths: Sequence[str | os.PathLike], output_dir: str | os.PathLike) -> list[Path]:
    """Where ``--output-dir`` saves each executed notebook: its own file name, made unique.

    Two submissions with the same file name (``alice/lab03.ipynb``, ``bob/lab03.ipynb``) get
    their folder's name in front (``alice-lab03.ipynb``), then a number if still taken; a copy
    never takes the path of a submission, so grading never overwrites one.

    Args:
        paths: the submissions, in grading order.
        output_dir: the folder for the executed copies.

    Returns:
        One path in ``output_dir`` per submission, in order.
    """
    output_dir = Path(output_dir)
    names = [Path(p).name for p in paths]
    inputs = {Path(p).resolve() for p in paths}
    taken: set[Path] = set()
    out = []
    for path, name in zip(paths, names):
        path = Path(path)
        candidates = [name] if names.count(name) == 1 else []
        parent = path.resolve().parent.name
        candidates.append(f"{parent}-{name}" if parent else name)
        stem, suffix = Path(candidates[-1]).stem, Path(candidates[-1]).suffix or ".ipynb"
        candidates += [f"{stem}.graded{suffix}"] + [f"{stem}-{n}.graded{suffix}" for n in range(2, 1000)]
        for candidate in candidates:
            target = output_dir / candidate
            if target not in taken and target.resolve() not in inputs:
                break
        taken.add(target)
        out.append(target)
    return out


def grade_notebooks(
    paths: Iterable[str | os.PathLike],
    timeout_s: float = 300,
    kernel_name: str | None = None,
    params: dict[str, Any] | None = None,
    output_dir: str | os.PathLike | None = None,
) -> list[NotebookGrade]:
    """Grade learner notebooks one after another, each in a fresh kernel; never raises.

    Each notebook is executed on an in-memory copy with its own folder as working folder,
    every cell is run even after errors, each cell may run ``timeout_s``, and the kernel is
    shut down at the end (stopping what the notebook started). A path that is missing or not
    a notebook gives a grade with ``graded=False`` and a message saying why.

    Args:
        paths: the notebooks.
        timeout_s: how long one cell may run before it is interrupted.
        kernel_name: the Jupyter kernel; default ``python3``.
        params: values that override each lab's ``parameters`` cell.
        output_dir: save each executed notebook there (see :func:`executed_copy_paths`).

    Returns:
        One :class:`NotebookGrade` per path, in order.
    """
    paths = list(paths)
    copies = executed_copy_paths(paths, output_dir) if output_dir is not None else [None] * len(paths)
    return [
        grade_notebook(p, timeout_s=timeout_s, kernel_name=kernel_name, params=params, executed_path=c)
        for p, c in zip(paths, copies)
    ]


def _write_json(grades: Sequence[NotebookGrade], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps([g.to_dict() for g in grades], indent=1, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def _write_csv(grades: Sequence[NotebookGrade], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        # One row per check; "status" is PASS, FAIL or SKIP, and "passed" is empty for a
        # skipped check, so that summing the column counts only checks that count.
        writer.writerow(["notebook", "lab", "check", "status", "passed", "measured", "unit", "expected",
                         "reason", "hint", "score", "notes"])
        for grade in grades:
            if not grade.checks:
                writer.writerow([str(grade.path), "", "", "", "", "", "", "", grade.root_cause,
                                 grade.problem or "no checks ran", grade.score_text if grade.graded else "",
                                 "; ".join(grade.notes)])
            for c in grade.checks:
                writer.writerow([
                    str(grade.path), c.lab, c.name, c.status, "" if c.skipped else int(c.passed),
                    c.to_dict()["measured_text"], c.unit, c.expected, c.reason, c.hint, grade.score_text,
                    "; ".join(grade.notes),
                ])


def main_grade(argv: list[str] | None = None) -> int:
    """``python -m hadrlab grade NOTEBOOK... [--json OUT] [--csv OUT] [--output-dir DIR] [--timeout S]
    [--fail-under F] [--param NAME=VALUE]``.

    Returns:
        0 when every notebook was graded (failing checks included); 1 when ``--fail-under``
        is given and a notebook scored below it; 2 when a path could not be graded at all.
    """
    parser = argparse.ArgumentParser(
        prog="python -m hadrlab grade",
        description="Execute learner notebooks headless and report every graded check. Each "
        "notebook runs on an in-memory copy: the submission is never changed. A check that does "
        "not apply to the run (e.g. an experiment left out with --param) is reported SKIP and left "
        "out of the score, which then reads 'Score 6/6 (5 not run)'.",
        epilog="Example: python -m hadrlab grade submissions/*.ipynb --output-dir graded/ --csv grades.csv. "
        "Exit status: 0 graded (even with failing checks), 1 a score below --fail-under, "
        "2 a file that could not be graded (missing, not a notebook, kernel did not start).",
    )
    parser.add_argument("notebooks", nargs="+", metavar="NOTEBOOK", help="learner notebooks (.ipynb)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the grades as JSON")
    parser.add_argument("--csv", type=Path, metavar="OUT", help="also write one CSV row per check")
    parser.add_argument(
        "--output-dir", type=Path, metavar="DIR",
        help="save each executed notebook in DIR (created if needed), with all its outputs and the "
        "learner's written answers, named after the submission (alice/lab03.ipynb -> DIR/lab03.ipynb; "
        "two submissions with the same name -> DIR/alice-lab03.ipynb, DIR/bob-lab03.ipynb)",
    )
    parser.add_argument(
        "--timeout", type=float, default=300, metavar="S", help="seconds one cell may run (default 300)"
    )
    parser.add_argument("--kernel", default=None, help="Jupyter kernel name (default python3)")
    parser.add_argument("--fail-under", type=float, default=None, metavar="SCORE",
                        help="exit 1 if a notebook scores below this fraction (0-1)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a value of the lab's parameters cell, e.g. --param LOAD_S=4 "
                        "(repeatable)")
    args = parser.parse_args(argv)
    from hadrlab.notebooks import parse_parameters

    try:
        params = parse_parameters(args.param)
    except GradingError as exc:
        parser.error(str(exc))
    if args.fail_under is not None and not 0 <= args.fail_under <= 1:
        parser.error(f"--fail-under takes a fraction between 0 and 1, not {args.fail_under:g}")

    copies: list[Path | None] = [None] * len(args.notebooks)
    if args.output_dir is not None:
        if args.output_dir.exists() and not args.output_dir.is_dir():
            parser.error(f"--output-dir {args.output_dir} is a file, not a folder: give a folder for "
                         f"the executed notebooks.")
        copies = list(executed_copy_paths(args.notebooks, args.output_dir))
    grades = []
    for path, copy in zip(args.notebooks, copies):
        grade = grade_notebook(path, timeout_s=args.timeout, kernel_name=args.kernel, params=params,
                               executed_path=copy)
        grades.append(grade)
        print(grade.report(), flush=True)
        print(flush=True)
    if args.json:
        _write_json(grades, args.json)
        print(f"wrote {args.json}")
    if args.csv:
        _write_csv(grades, args.csv)
        print(f"wrote {args.csv}")
    graded = [g for g in grades if g.graded]
    print(f"Graded {len(graded)} of {len(grades)} notebooks.")
    if len(graded) < len(grades):
        return 2
    if args.fail_under is not None and any(g.score < args.fail_under for g in graded):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main_grade(sys.argv[1:]))
