"""Graded checks for the labs, and the command-line grader for instructors.

In a notebook, a :class:`Scoreboard` compares what the learner measured with the lab's
objectives and says, for every check, PASS or FAIL with a hint::

    board = Scoreboard("00")
    board.check_close("monthly-error-budget", lambda: budget_min, 21.6, tol=0.1, unit="min")
    board.summary()

A check never raises: if the learner has not run or not finished the cell that computes a
value, the check fails and its hint says so. Pass the value as a ``lambda`` so that a missing
variable is caught by the check rather than by Python before the check runs.

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
    "Scoreboard",
    "NotebookGrade",
    "grade_notebooks",
    "main_grade",
    "GRADE_FILE_ENV",
]

GRADE_FILE_ENV = "HADRLAB_GRADE_FILE"

_NOT_MEASURED = "not measured"


# --------------------------------------------------------------------------- formatting


def _format_value(value: Any, width: int = 60) -> str:
    if isinstance(value, bool) or value is None:
        text = str(value)
    elif isinstance(value, numbers.Integral):
        text = str(int(value))
    elif isinstance(value, numbers.Real):
        text = f"{float(value):.6g}"
    elif isinstance(value, str):
        text = repr(value)
    else:
        text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _json_safe(value: Any) -> Any:
    """The value itself when JSON can hold it exactly, else its (shortened) repr."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else repr(number)
    return _format_value(value, width=200)


def _with_unit(text: str, unit: str) -> str:
    return f"{text} {unit}" if unit else text


# --------------------------------------------------------------------------- one check


@dataclass(repr=False)
class CheckResult:
    """The outcome of one graded check: PASS or FAIL, what was measured, what was expected.

    Attributes:
        name: the check's short name, e.g. ``"monthly-error-budget"``.
        passed: True when the measurement meets the objective.
        measured: the learner's value (None when it could not be evaluated).
        expected: the objective as shown to the learner, e.g. ``"21.6 ± 0.1 min"``.
        hint: what to do when the check fails; empty when it passed.
        unit: the unit of ``measured``, shown after it.
        lab: the lab the check belongs to, e.g. ``"00"``.
        error: the exception raised while evaluating ``measured``, if any.

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

    @property
    def status(self) -> str:
        return "PASS" if self.passed else "FAIL"

    @property
    def measured_text(self) -> str:
        if self.error:
            return _NOT_MEASURED
        return _with_unit(_format_value(self.measured), self.unit)

    def __repr__(self) -> str:
        measured = _NOT_MEASURED if self.error else f"measured {self.measured_text}"
        line = f"{self.status}  {self.name}  {measured}, expected {self.expected}"
        if not self.passed and self.hint:
            line += f"  -> {self.hint}"
        return line

    __str__ = __repr__

    def _html_row(self) -> str:
        colour = "#1a7f37" if self.passed else "#cf222e"
        mark = "✔" if self.passed else "✘"
        cells = [
            f'<td style="color:{colour};font-weight:bold">{mark} {self.status}</td>',
            f"<td><code>{html.escape(self.name)}</code></td>",
            f"<td>{html.escape(self.measured_text)}</td>",
            f"<td>{html.escape(self.expected)}</td>",
            f"<td>{html.escape(self.hint if not self.passed else '')}</td>",
        ]
        return f"<tr>{''.join(cells)}</tr>"

    def _repr_html_(self) -> str:
        return f"<table>{_HTML_HEAD}{self._html_row()}</table>"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe record the grader collects (one line of the grade file)."""
        return {
            "lab": self.lab,
            "name": self.name,
            "passed": bool(self.passed),
            "measured": None if self.error else _json_safe(self.measured),
            "expected": self.expected,
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
        )


_HTML_HEAD = (
    "<tr><th style='text-align:left'>result</th><th style='text-align:left'>check</th>"
    "<th style='text-align:left'>measured</th><th style='text-align:left'>expected</th>"
    "<th style='text-align:left'>hint</th></tr>"
)


class _Unmeasured(Exception):
    """Evaluating the learner's value raised; carries the hint that says what to do."""

    def __init__(self, hint: str, error: str) -> None:
        super().__init__(hint)
        self.hint, self.error = hint, error


def _hint_for(exc: BaseException) -> str:
    message = str(exc).strip()
    if isinstance(exc, NotImplementedError):
        detail = f"NotImplementedError: {message}" if message else "NotImplementedError"
        return f"finish the exercise cell above (it raised {detail})"
    if isinstance(exc, NameError):
        return (f"{message}: finish the exercise cell above that sets it (an unfinished one "
                f"raises NotImplementedError before it gets there), or run the cells above it")
    return (
        f"the code that computes this value raised {type(exc).__name__}: {message}; "
        f"fix the cell above and run it again"
    )


def _evaluate(measured: Any) -> Any:
    if not callable(measured):
        return measured
    try:
        return measured()
    except Exception as exc:  # any failure of learner code becomes a failed check
        raise _Unmeasured(_hint_for(exc), f"{type(exc).__name__}: {exc}") from None


# --------------------------------------------------------------------------- the scoreboard


class Scoreboard:
    """The graded checks of one lab notebook, with a running score.

    Re-running a check with the same name replaces its earlier result, so re-running a
    cell never counts a check twice.

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
    def total(self) -> int:
        return len(self._results)

    def _record(self, result: CheckResult) -> CheckResult:
        result.lab = self.lab
        self._results[result.name] = result
        _append_grade_line(result)
        return result

    def _failed_to_measure(self, name: str, expected: str, unit: str, exc: _Unmeasured) -> CheckResult:
        return self._record(CheckResult(name, False, None, expected, exc.hint, unit, error=exc.error))

    def check_close(
        self, name: str, measured: Any, expected: float, tol: float, unit: str = "", hint: str = ""
    ) -> CheckResult:
        """Check that a number is within ``tol`` of ``expected``.

        Args:
            name: the check's short name.
            measured: the learner's number, or a zero-argument callable returning it.
            expected: the objective.
            tol: the allowed absolute difference, in the same unit.
            unit: the unit, for display (``"min"``, ``"ms"``).
            hint: what to tell the learner if the check fails.

        Returns:
            The :class:`CheckResult` (a notebook cell displays it).
        """
        expected_text = _with_unit(f"{_format_value(expected)} ± {_format_value(tol)}", unit)
        try:
            value = _evaluate(measured)
        except _Unmeasured as exc:
            return self._failed_to_measure(name, expected_text, unit, exc)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return self._record(
                CheckResult(
                    name, False, value, expected_text,
                    hint or f"expected a number, got {type(value).__name__} {_format_value(value, 40)}",
                    unit,
                )
            )
        number = float(value)
        # A little slack for binary floating point: 0.1 * 3 must match 0.3 ± 0.
        slack = 1e-9 * max(1.0, abs(float(expected)))
        ok = math.isfinite(number) and abs(number - float(expected)) <= float(tol) + slack
        if not ok and not hint:
            if math.isfinite(number):
                off = _with_unit(_format_value(abs(number - float(expected))), unit)
                hint = (
                    f"{_format_value(number)} is {off} away from {_format_value(expected)}; "
                    f"re-check the calculation"
                )
            else:
                hint = f"the value is {number}; re-check the calculation"
        return self._record(CheckResult(name, ok, value, expected_text, "" if ok else hint, unit))

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
        try:
            value = _evaluate(measured)
        except _Unmeasured as exc:
            return self._failed_to_measure(name, expected, unit, exc)
        try:
            ok = bool(condition(value))
        except Exception as exc:  # a value of the wrong kind, e.g. None > 1.0
            return self._record(
                CheckResult(
                    name, False, value, expected,
                    hint or f"the value {_format_value(value, 40)} could not be tested "
                    f"({type(exc).__name__}: {exc}); is it the right kind of value?",
                    unit,
                )
            )
        if not ok and not hint:
            hint = f"{_with_unit(_format_value(value, 40), unit)} does not meet {expected}"
        return self._record(CheckResult(name, ok, value, expected, "" if ok else hint, unit))

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
        try:
            value = _evaluate(measured)
        except _Unmeasured as exc:
            return self._failed_to_measure(name, expected_text, "", exc)
        if isinstance(value, str) and isinstance(expected, str):
            ok = " ".join(value.split()).casefold() == " ".join(expected.split()).casefold()
        else:
            try:
                ok = bool(value == expected)
            except Exception:  # e.g. an array compared with a list
                ok = False
        if not ok and not hint:
            hint = f"expected {expected_text}, got {_format_value(value, 40)}"
        return self._record(CheckResult(name, ok, value, expected_text, "" if ok else hint))

    def summary(self) -> None:
        """Print one line per check and the score; only deterministic text (nbval compares it)."""
        for result in self._results.values():
            print(f"{result.status} {result.name}")
        print(f"Score: {self.passed}/{self.total}")

    def __repr__(self) -> str:
        lines = [repr(r) for r in self._results.values()]
        lines.append(f"Score: {self.passed}/{self.total}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(r._html_row() for r in self._results.values())
        return (
            f"<table>{_HTML_HEAD}{rows}</table>"
            f"<p><b>Lab {html.escape(self.lab)} score: {self.passed}/{self.total}</b></p>"
        )


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
    """

    path: Path
    checks: list[CheckResult] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)
    problem: str = ""
    graded: bool = True
    duration_s: float = 0.0

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.checks)

    @property
    def total(self) -> int:
        return len(self.checks)

    @property
    def score(self) -> float:
        """Passed checks as a fraction of the checks run (0.0 when none ran)."""
        return self.passed / self.total if self.total else 0.0

    def report(self, max_errors: int = 3) -> str:
        """A plain-text table of the checks, the first cell errors and the score."""
        lines = [f"== {self.path}"]
        if not self.graded:
            lines.append(f"NOT GRADED: {self.problem}")
            return "\n".join(lines)
        if self.checks:
            rows = [("check", "result", "measured", "expected", "hint")]
            rows += [(c.name, c.status, c.measured_text, c.expected, c.hint) for c in self.checks]
            widths = [max(len(r[i]) for r in rows) for i in range(4)]
            for row in rows:
                cells = [row[i].ljust(widths[i]) for i in range(4)]
                lines.append(("  ".join(cells) + "  " + row[4]).rstrip())
        else:
            lines.append("No checks ran: the notebook has no check cells, or they were deleted.")
        if self.errors:
            shown = self.errors[:max_errors]
            more = f" (first {len(shown)} of {len(self.errors)})" if len(self.errors) > len(shown) else ""
            lines.append(f"cell errors{more}:")
            lines.extend(f"  {e}" for e in shown)
        if self.problem:
            lines.append(f"problem: {self.problem}")
        lines.append(f"Score {self.passed}/{self.total}")
        return "\n".join(lines)

    __str__ = report

    def __repr__(self) -> str:
        state = f"score {self.passed}/{self.total}" if self.graded else "not graded"
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
            parts.append(f"<p>Cell errors:</p><ul>{errors}</ul>")
        if self.problem:
            parts.append(f"<p>Problem: {html.escape(self.problem)}</p>")
        parts.append(f"<p><b>Score {self.passed}/{self.total}</b></p>")
        return "".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "graded": self.graded,
            "problem": self.problem,
            "passed": self.passed,
            "total": self.total,
            "score": round(self.score, 4),
            "duration_s": round(self.duration_s, 2),
            "errors": [e.to_dict() for e in self.errors],
            "checks": [c.to_dict() for c in self.checks],
        }


def grade_notebook(
    path: str | os.PathLike,
    timeout_s: float = 300,
    kernel_name: str | None = None,
    params: dict[str, Any] | None = None,
) -> NotebookGrade:
    """Execute one learner notebook headless and collect its checks; never raises.

    Args:
        path: the learner's notebook. It is read, never written.
        timeout_s: how long one cell may run before it is interrupted.
        kernel_name: the Jupyter kernel; default ``python3`` (this Python's ipykernel).
        params: values that override the lab's ``parameters`` cell (a shorter run, say).

    Returns:
        The :class:`NotebookGrade`.
    """
    from hadrlab.notebooks import inject_parameters, read_notebook, run_cells

    path = Path(path)
    started = time.monotonic()
    try:
        nb = read_notebook(path)  # an in-memory copy: the learner's file stays untouched
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
        checks = read_grade_file(grade_file)
    finally:
        Path(grade_file).unlink(missing_ok=True)
    return NotebookGrade(
        path,
        checks=checks,
        errors=run.errors,
        problem=run.problem,
        graded=run.started,
        duration_s=time.monotonic() - started,
    )


def grade_notebooks(
    paths: Iterable[str | os.PathLike],
    timeout_s: float = 300,
    kernel_name: str | None = None,
    params: dict[str, Any] | None = None,
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

    Returns:
        One :class:`NotebookGrade` per path, in order.
    """
    return [
        grade_notebook(p, timeout_s=timeout_s, kernel_name=kernel_name, params=params)
        for p in paths
    ]


def _write_json(grades: Sequence[NotebookGrade], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps([g.to_dict() for g in grades], indent=1, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def _write_csv(grades: Sequence[NotebookGrade], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["notebook", "lab", "check", "passed", "measured", "unit", "expected", "hint"])
        for grade in grades:
            if not grade.checks:
                writer.writerow([str(grade.path), "", "", "", "", "", "", grade.problem or "no checks ran"])
            for c in grade.checks:
                measured = c.to_dict()["measured"]
                writer.writerow([
                    str(grade.path), c.lab, c.name, int(c.passed),
                    "" if measured is None else measured, c.unit, c.expected, c.hint,
                ])


def main_grade(argv: list[str] | None = None) -> int:
    """``python -m hadrlab grade NOTEBOOK... [--json OUT] [--csv OUT] [--timeout S] [--fail-under F]``.

    Returns:
        0 when every notebook was graded (failing checks included); 1 when ``--fail-under``
        is given and a notebook scored below it; 2 when a path could not be graded at all.
    """
    parser = argparse.ArgumentParser(
        prog="python -m hadrlab grade",
        description="Execute learner notebooks headless and report every graded check.",
        epilog="Exit status: 0 graded (even with failing checks), 1 a score below --fail-under, "
        "2 a file that could not be graded (missing, not a notebook, kernel did not start).",
    )
    parser.add_argument("notebooks", nargs="+", metavar="NOTEBOOK", help="learner notebooks (.ipynb)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the grades as JSON")
    parser.add_argument("--csv", type=Path, metavar="OUT", help="also write one CSV row per check")
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

    grades = []
    for path in args.notebooks:
        grade = grade_notebook(path, timeout_s=args.timeout, kernel_name=args.kernel, params=params)
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
