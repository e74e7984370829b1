"""The instructor's grader and the solutions runner, run for real in fresh Jupyter kernels.

Kernels are few on purpose (each start costs 1-2 s): one grader run grades a solution-like
notebook and its generated learner twin together.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from nbformat import v4

from hadrlab.notebooks import generate_lab, main_solutions, read_notebook
from hadrlab.processes import start_process

pytestmark = pytest.mark.slow

CELLS = [
    v4.new_markdown_cell("# Lab 07: error budgets\n<!-- BEGIN SOLUTION -->\nThe budget is 21.6 min.\n<!-- END SOLUTION -->"),
    v4.new_code_cell("from hadrlab.grading import Scoreboard\nboard = Scoreboard('07')"),
    # A relative path: the grader must run the notebook in the notebook's own folder.
    v4.new_code_cell("slo = float(open('slo.txt').read())"),
    v4.new_code_cell(
        "# BEGIN SOLUTION compute the monthly budget in minutes\n"
        "budget_min = 30 * 24 * 60 * (1 - slo)\n"
        "# END SOLUTION"
    ),
    v4.new_code_cell(
        "def composed(a, b):\n"
        "    # BEGIN SOLUTION multiply the availabilities of parts in series\n"
        "    return a * b\n"
        "    # END SOLUTION"
    ),
    # A service started and never stopped: the grader must not leave it running.
    v4.new_code_cell(
        "import sys\n"
        "from hadrlab.processes import start_process, find_free_port, wait_for_tcp\n"
        "web = start_process('web', [sys.executable, '-m', 'http.server', '--bind', '127.0.0.1', '{port}'],\n"
        "                    port=find_free_port(), ready=wait_for_tcp)"
    ),
    v4.new_code_cell("board.check_close('monthly-error-budget', lambda: budget_min, 21.6, tol=0.1, unit='min')"),
    v4.new_code_cell("board.check_close('serial-availability', lambda: composed(0.999, 0.999), 0.998, tol=0.0001)"),
    v4.new_code_cell("board.check_true('service-up', lambda: web.alive(), bool, 'the web service runs')"),
    v4.new_code_cell("board.summary()"),
]


def _write_notebook(path: Path, cells) -> Path:
    nb = v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.from_dict(dict(c)) for c in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    (path.parent / "slo.txt").write_text("0.9995\n")
    return path


def _run_grader(args: list[str], cwd: Path, timeout_s: float = 180) -> tuple[int, str]:
    child = start_process("grader", [sys.executable, "-m", "hadrlab", "grade", *args], cwd=cwd)
    try:
        code = child.popen.wait(timeout=timeout_s)
    finally:
        child.stop()
    return code, child.log_path.read_text(encoding="utf-8", errors="replace")


def _processes_running_in(folder: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and Path(proc.cwd()).is_relative_to(folder):
                found.append(f"{proc.pid}: {' '.join(proc.info['cmdline'] or [])}")
        except (psutil.Error, OSError):
            continue
    return found


def _none_left_in(folder: Path, timeout_s: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout_s
    left = _processes_running_in(folder)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _processes_running_in(folder)
    return left


def test_grader_scores_the_solution_and_gives_hints_for_the_unfinished_lab(tmp_path):
    solution = _write_notebook(tmp_path / "solution" / "lab07.ipynb", CELLS)
    learner = tmp_path / "learner" / "lab07.ipynb"
    generate_lab(solution, learner)
    (learner.parent / "slo.txt").write_text("0.9995\n")
    learner_bytes = learner.read_bytes()

    code, out = _run_grader(
        [str(solution), str(learner), "--json", "grades.json", "--csv", "grades.csv", "--timeout", "60"],
        cwd=tmp_path,
    )

    assert code == 0, out
    sol_report, lab_report = out.split("== ")[1:3]
    assert "Score 3/3" in sol_report and "cell errors" not in sol_report
    assert "monthly-error-budget  PASS    21.6 min" in sol_report
    assert "Score 1/3" in lab_report  # the service check needs no exercise
    assert "name 'budget_min' is not defined: the cell that sets it has not run" in lab_report
    assert (
        "finish the exercise cell above (it raised NotImplementedError: "
        "multiply the availabilities of parts in series)" in lab_report
    )
    assert "cell 3 (# TODO: compute the monthly budget in minutes): NotImplementedError" in lab_report
    assert "Graded 2 of 2 notebooks." in out

    grades = json.loads((tmp_path / "grades.json").read_text())
    assert [(g["passed"], g["total"], g["graded"]) for g in grades] == [(3, 3, True), (1, 3, True)]
    assert grades[0]["checks"][0]["measured"] == pytest.approx(21.6)
    assert grades[1]["errors"][0]["ename"] == "NotImplementedError"
    rows = list(csv.DictReader((tmp_path / "grades.csv").open()))
    assert len(rows) == 6
    assert {r["check"] for r in rows} == {"monthly-error-budget", "serial-availability", "service-up"}
    assert [r["passed"] for r in rows if r["notebook"] == str(learner)] == ["0", "0", "1"]

    assert learner.read_bytes() == learner_bytes  # graded on a copy
    assert _none_left_in(tmp_path) == []  # kernels and the services they started are gone


def test_missing_and_non_notebook_files_are_reported_clearly(tmp_path):
    (tmp_path / "answers.ipynb").write_text("budget_min = 21.6\n")
    code, out = _run_grader(["absent.ipynb", "answers.ipynb", "--json", "grades.json"], cwd=tmp_path)
    assert code == 2, out
    assert "absent.ipynb was not found" in out
    assert "answers.ipynb is not a notebook" in out
    assert "Traceback" not in out
    assert "Graded 0 of 2 notebooks." in out
    grades = json.loads((tmp_path / "grades.json").read_text())
    assert [g["graded"] for g in grades] == [False, False]


def test_solutions_runner_refreshes_outputs_and_stops_at_the_first_error(tmp_path, monkeypatch, capsys):
    good = _write_notebook(tmp_path / "solutions" / "lab00.ipynb", [v4.new_code_cell("print(6 * 7)")])
    bad = _write_notebook(
        tmp_path / "solutions" / "lab01.ipynb",
        [v4.new_code_cell("x = 1"), v4.new_code_cell("1 / 0"), v4.new_code_cell("print('never')")],
    )
    bad_bytes = bad.read_bytes()
    monkeypatch.chdir(tmp_path)

    assert main_solutions([str(good), str(bad), "--timeout", "60"]) == 1

    outputs = read_notebook(good).cells[0].outputs
    assert [o.get("text") for o in outputs] == ["42\n"]
    assert bad.read_bytes() == bad_bytes  # a failed run never replaces good outputs
    err = capsys.readouterr().err
    assert "cell 1 (1 / 0): ZeroDivisionError: division by zero" in err
