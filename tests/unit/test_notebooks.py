"""Learner notebooks generated from solutions: markers, clean files, sync and leak checks."""

from __future__ import annotations

import json

import nbformat
import pytest
from nbformat import v4

from hadrlab.errors import GradingError
from hadrlab.notebooks import (
    ANSWER_PLACEHOLDER,
    MarkerError,
    check_labs,
    generate_lab,
    generate_labs,
    main_labs,
    read_notebook,
    strip_solutions,
)

BUDGET_CELL = (
    "slo = 0.9995\n"
    "# BEGIN SOLUTION compute the monthly budget in minutes\n"
    "budget_min = 30 * 24 * 60 * (1 - slo)\n"
    "# END SOLUTION\n"
    "budget_min"
)


def _solution_notebook(path, *cells):
    nb = v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.2"}
    nb.metadata["widgets"] = {"state": {}}
    nb.cells = list(cells)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _executed(source, tags=None):
    cell = v4.new_code_cell(source)
    cell.execution_count = 3
    cell.outputs = [v4.new_output("stream", name="stdout", text="21.6\n")]
    cell.metadata = {"tags": tags or [], "collapsed": True, "execution": {"iopub.execute_input": "x"}}
    return cell


def test_code_region_becomes_todo_and_raise_with_its_text():
    assert strip_solutions(BUDGET_CELL, "code") == (
        "slo = 0.9995\n"
        "# TODO: compute the monthly budget in minutes\n"
        'raise NotImplementedError("compute the monthly budget in minutes")\n'
        "budget_min"
    )


def test_region_keeps_its_indentation_and_gets_a_default_text():
    source = (
        "def availability(up_s, total_s):\n"
        "    # BEGIN SOLUTION\n"
        "    ratio = up_s / total_s\n"
        "    return ratio\n"
        "    # END SOLUTION\n"
    )
    assert strip_solutions(source, "code") == (
        "def availability(up_s, total_s):\n"
        "    # TODO: write your solution here\n"
        '    raise NotImplementedError("write your solution here")\n'
    )


def test_quotes_in_the_region_text_stay_valid_python():
    stripped = strip_solutions('# BEGIN SOLUTION use "WAIT 1 100"\nx = 1\n# END SOLUTION', "code")
    compile(stripped, "cell", "exec")
    with pytest.raises(NotImplementedError, match='use "WAIT 1 100"'):
        exec(stripped, {})


def test_several_regions_in_one_cell_are_all_replaced():
    source = "# BEGIN SOLUTION a\nx = 1\n# END SOLUTION\ny = 2\n# BEGIN SOLUTION b\nz = 3\n# END SOLUTION"
    stripped = strip_solutions(source, "code")
    assert stripped.count("raise NotImplementedError") == 2
    assert "y = 2" in stripped and "x = 1" not in stripped and "z = 3" not in stripped


def test_markdown_region_becomes_the_answer_placeholder():
    source = (
        "Why does `WAIT` cost latency?\n\n"
        "<!-- BEGIN SOLUTION -->\nIt waits for the replica to acknowledge.\n<!-- END SOLUTION -->\n\nNext."
    )
    assert strip_solutions(source, "markdown") == (
        f"Why does `WAIT` cost latency?\n\n{ANSWER_PLACEHOLDER}\n\nNext."
    )


@pytest.mark.parametrize(
    ("source", "cell_type", "message"),
    [
        ("x = 1\n# BEGIN SOLUTION\ny = 2", "code", "line 2: '# BEGIN SOLUTION' is never closed"),
        ("x = 1\n# END SOLUTION", "code", "line 2: '# END SOLUTION' without a '# BEGIN SOLUTION'"),
        (
            "# BEGIN SOLUTION\nx = 1\n  # BEGIN SOLUTION\n# END SOLUTION",
            "code",
            "line 3: '# BEGIN SOLUTION' inside the solution region opened at line 1",
        ),
        ("a\n<!-- BEGIN SOLUTION -->\nb", "markdown", "line 2: '<!-- BEGIN SOLUTION -->' is never closed"),
        ("a\n<!-- END SOLUTION -->", "markdown", "line 2: '<!-- END SOLUTION -->' without"),
        (
            "<!-- BEGIN SOLUTION -->\n<!-- BEGIN SOLUTION -->\n<!-- END SOLUTION -->",
            "markdown",
            "line 2: '<!-- BEGIN SOLUTION -->' inside the solution region opened at line 1",
        ),
    ],
)
def test_unbalanced_or_nested_markers_are_refused_with_their_line(source, cell_type, message):
    with pytest.raises(MarkerError) as info:
        strip_solutions(source, cell_type, where="solutions/lab00.ipynb cell 7")
    assert str(info.value).startswith("solutions/lab00.ipynb cell 7 " + message)


def test_generated_lab_is_clean_and_minimal(tmp_path):
    src = _solution_notebook(
        tmp_path / "solutions" / "lab00.ipynb",
        v4.new_markdown_cell("# Lab 00"),
        _executed(BUDGET_CELL, tags=["nbval-ignore-output"]),
        _executed("print(1)"),
    )
    dst = tmp_path / "labs" / "lab00.ipynb"
    assert generate_lab(src, dst) is True
    raw = json.loads(dst.read_text())
    assert raw["metadata"] == {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    assert (raw["nbformat"], raw["nbformat_minor"]) == (4, 5)
    code = [c for c in raw["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    assert code[0]["metadata"] == {"tags": ["nbval-ignore-output"]}
    assert code[1]["metadata"] == {}
    solution_ids = [c.id for c in read_notebook(src).cells]
    assert [c["id"] for c in raw["cells"]] == solution_ids
    assert dst.read_text().endswith("}\n")
    assert dst.read_text().startswith('{\n "cells": [\n  {\n   "cell_type"')  # indent=1


def test_regenerating_gives_byte_identical_files(tmp_path):
    old = v4.new_code_cell("x = 1")
    del old["id"]  # an nbformat 4.4-style cell without id still gets a stable one
    src = _solution_notebook(tmp_path / "solutions" / "lab01.ipynb", _executed(BUDGET_CELL))
    nb = json.loads(src.read_text())
    nb["cells"].append(dict(old))
    src.write_text(json.dumps(nb))
    first = generate_labs(tmp_path / "solutions", tmp_path / "labs")
    content = (tmp_path / "labs" / "lab01.ipynb").read_bytes()
    assert first == [tmp_path / "labs" / "lab01.ipynb"]
    assert generate_labs(tmp_path / "solutions", tmp_path / "labs") == []
    (tmp_path / "labs" / "lab01.ipynb").unlink()
    generate_labs(tmp_path / "solutions", tmp_path / "labs")
    assert (tmp_path / "labs" / "lab01.ipynb").read_bytes() == content


def test_generate_labs_writes_the_good_ones_and_reports_the_broken(tmp_path):
    _solution_notebook(tmp_path / "solutions" / "lab00.ipynb", v4.new_code_cell(BUDGET_CELL))
    _solution_notebook(tmp_path / "solutions" / "lab01.ipynb", v4.new_code_cell("x\n# END SOLUTION"))
    with pytest.raises(MarkerError, match=r"lab01\.ipynb cell 0 line 2"):
        generate_labs(tmp_path / "solutions", tmp_path / "labs")
    assert (tmp_path / "labs" / "lab00.ipynb").exists()
    assert not (tmp_path / "labs" / "lab01.ipynb").exists()


def test_check_labs_is_empty_when_in_sync(tmp_path):
    _solution_notebook(tmp_path / "solutions" / "lab00.ipynb", _executed(BUDGET_CELL))
    generate_labs(tmp_path / "solutions", tmp_path / "labs")
    assert check_labs(tmp_path / "solutions", tmp_path / "labs") == []


def test_check_labs_reports_missing_extra_and_out_of_date_labs(tmp_path):
    sol, labs = tmp_path / "solutions", tmp_path / "labs"
    _solution_notebook(sol / "lab00.ipynb", v4.new_code_cell(BUDGET_CELL))
    _solution_notebook(sol / "lab01.ipynb", v4.new_code_cell("x = 1"))
    generate_labs(sol, labs)
    (labs / "lab01.ipynb").unlink()
    _solution_notebook(labs / "lab09.ipynb", v4.new_code_cell("y = 2"))
    _solution_notebook(sol / "lab00.ipynb", v4.new_code_cell(BUDGET_CELL + "\nprint(budget_min)"))
    problems = check_labs(sol, labs)
    assert len(problems) == 3
    assert "lab00.ipynb is out of date" in problems[0]
    assert "lab01.ipynb is missing" in problems[1]
    assert "lab09.ipynb has no solution notebook" in problems[2]


def test_check_labs_reports_unbalanced_markers_with_file_cell_and_line(tmp_path):
    _solution_notebook(
        tmp_path / "solutions" / "lab02.ipynb",
        v4.new_markdown_cell("# Lab 02"),
        v4.new_code_cell("a = 1\n\n# BEGIN SOLUTION\nb = 2"),
    )
    problems = check_labs(tmp_path / "solutions", tmp_path / "labs")
    assert len(problems) == 1
    assert "lab02.ipynb cell 1 line 3: '# BEGIN SOLUTION' is never closed" in problems[0]


def test_check_labs_finds_solution_text_leaking_into_the_lab(tmp_path):
    sol, labs = tmp_path / "solutions", tmp_path / "labs"
    _solution_notebook(
        sol / "lab00.ipynb",
        v4.new_code_cell(BUDGET_CELL),
        # The author gave the answer away in a later markdown cell.
        v4.new_markdown_cell("Hint: `budget_min = 30 * 24 * 60 * (1 - slo)`"),
    )
    generate_labs(sol, labs)
    problems = check_labs(sol, labs)
    assert len(problems) == 1
    assert "lab00.ipynb cell 1 gives away the solution" in problems[0]
    assert "budget_min = 30 * 24 * 60 * (1 - slo)" in problems[0]
    assert "solution region of" in problems[0] and "cell 0" in problems[0]


def test_short_lines_and_comments_in_a_region_are_not_leaks(tmp_path):
    sol, labs = tmp_path / "solutions", tmp_path / "labs"
    region = "# BEGIN SOLUTION\n# compute the monthly budget\nreturn x\n# END SOLUTION"
    _solution_notebook(
        sol / "lab00.ipynb",
        v4.new_code_cell("def f(x):\n    " + region.replace("\n", "\n    ")),
        v4.new_markdown_cell("We compute the monthly budget; the function ends with `return x`."),
    )
    generate_labs(sol, labs)
    assert check_labs(sol, labs) == []


def test_a_hand_edited_lab_that_reveals_a_solution_is_flagged(tmp_path):
    sol, labs = tmp_path / "solutions", tmp_path / "labs"
    _solution_notebook(sol / "lab00.ipynb", v4.new_code_cell(BUDGET_CELL))
    generate_labs(sol, labs)
    nb = read_notebook(labs / "lab00.ipynb")
    nb.cells[0].source = BUDGET_CELL
    nbformat.write(nb, labs / "lab00.ipynb")
    problems = check_labs(sol, labs)
    assert any("out of date" in p for p in problems)
    assert any("gives away the solution" in p for p in problems)


def test_read_notebook_explains_missing_and_non_notebook_files(tmp_path):
    with pytest.raises(GradingError, match="was not found"):
        read_notebook(tmp_path / "absent.ipynb")
    (tmp_path / "notes.ipynb").write_text("print('hello')\n")
    with pytest.raises(GradingError, match="is not a notebook: it could not be read as JSON"):
        read_notebook(tmp_path / "notes.ipynb")
    (tmp_path / "data.ipynb").write_text('{"rows": [1, 2]}')
    with pytest.raises(GradingError, match="is JSON but has no cells"):
        read_notebook(tmp_path / "data.ipynb")


def test_main_labs_generates_then_checks(tmp_path, capsys):
    sol, labs = tmp_path / "solutions", tmp_path / "labs"
    _solution_notebook(sol / "lab00.ipynb", v4.new_code_cell(BUDGET_CELL))
    args = ["--solutions", str(sol), "--labs", str(labs)]
    assert main_labs(["--check", *args]) == 1
    assert "run `make labs`" in capsys.readouterr().out.lower()
    assert main_labs(args) == 0
    assert "wrote" in capsys.readouterr().out
    assert main_labs(args) == 0
    assert "unchanged" in capsys.readouterr().out
    assert main_labs(["--check", *args]) == 0
    assert "in sync" in capsys.readouterr().out


def _sanitize(text: str) -> str:
    import re
    from pathlib import Path

    from nbval.plugin import get_sanitize_patterns

    cfg = Path(__file__).resolve().parents[1] / "notebooks" / "sanitize.cfg"
    patterns = get_sanitize_patterns(cfg.read_text())
    assert len(patterns) >= 6
    for regex, replace in patterns:
        text = re.sub(regex, replace, text)
    return text


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("ready at http://127.0.0.1:40211/readyz", "ready at http://127.0.0.1:35007/readyz"),
        ("recovered in 12.3 s, p99 4.5 ms", "recovered in 9.87 s, p99 11 ms"),
        ("stopped pid 4242", "stopped pid 977"),
        ("<Child at 0x7f3a2b9c10>", "<Child at 0x7f00aa01d0>"),
        ("run 3f2a9c1b7d4e5f60 done", "run 0b1c2d3e4f5a6b7c done"),
        ("log /tmp/pytest-of-root/pytest-7/x/redis.log", "log /tmp/tmpab12cd/redis.log"),
        ("see .hadrlab/logs/redis-a-205301-123.log", "see .hadrlab/logs/redis-a-205402-999.log"),
    ],
)
def test_sanitize_cfg_masks_what_changes_between_runs(first, second):
    assert _sanitize(first) == _sanitize(second)


def test_sanitize_cfg_keeps_check_verdicts_and_scores():
    text = "PASS monthly-error-budget\nFAIL wait-latency\nScore: 1/2\nbudget 21.6 min, 3 replicas"
    assert _sanitize(text) == text


def test_parameters_are_injected_at_the_end_of_the_parameters_cell():
    """The overrides follow the defaults in the same cell, so no cell changes its number."""
    from hadrlab.notebooks import inject_parameters, parse_parameters

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import x"), nbformat.v4.new_code_cell("LOAD_S = 10\nUSERS = 5\n")]
    nb.cells[1].metadata["tags"] = ["parameters"]
    nb.cells.append(nbformat.v4.new_code_cell("print(LOAD_S)"))
    inject_parameters(nb, parse_parameters(["LOAD_S=4", "USERS=2"]), source="lab.ipynb")
    assert [c.source for c in nb.cells] == [
        "import x",
        "LOAD_S = 10\nUSERS = 5\n\n# Parameters given to the grader\nLOAD_S = 4\nUSERS = 2",
        "print(LOAD_S)",
    ]
    assert nb.cells[1].metadata["tags"] == ["parameters", "injected-parameters"]


def test_unknown_parameter_names_the_lab_parameters():
    from hadrlab.errors import GradingError
    from hadrlab.notebooks import inject_parameters, parse_parameters

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("LOAD_S = 10\nUSERS = 5")]
    nb.cells[0].metadata["tags"] = ["parameters"]
    with pytest.raises(GradingError, match="LOAD_SECONDS is not a parameter of lab.ipynb; its parameters are: LOAD_S, USERS"):
        inject_parameters(nb, {"LOAD_SECONDS": 4}, source="lab.ipynb")
    with pytest.raises(GradingError, match="NAME=VALUE"):
        parse_parameters(["LOAD_S"])
    bare = nbformat.v4.new_notebook()
    with pytest.raises(GradingError, match="no cell tagged 'parameters'"):
        inject_parameters(bare, {"LOAD_S": 4}, source="lab.ipynb")


def test_a_parameters_cell_that_is_not_python_is_a_grading_error_naming_the_cell():
    from hadrlab.errors import GradingError
    from hadrlab.notebooks import inject_parameters

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import x"), nbformat.v4.new_code_cell("LOAD_S = = 10")]
    nb.cells[1].metadata["tags"] = ["parameters"]
    with pytest.raises(GradingError, match=r"parameters cell \(cell 1\) of lab.ipynb is not valid Python .*line 1"):
        inject_parameters(nb, {"LOAD_S": 4}, source="lab.ipynb")
    assert nb.cells[1].source == "LOAD_S = = 10"


def test_a_parameter_of_the_wrong_type_is_refused_with_its_type():
    from hadrlab.errors import GradingError
    from hadrlab.notebooks import inject_parameters, parse_parameters

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("WRITES = 2000\nLABEL = 'x'\nRATE = 0.5")]
    nb.cells[0].metadata["tags"] = ["parameters"]
    with pytest.raises(GradingError, match=r"WRITES of lab.ipynb is int \(default 2000\); 'abc' is not"):
        inject_parameters(nb, parse_parameters(["WRITES=abc"]), source="lab.ipynb")
    inject_parameters(nb, parse_parameters(["RATE=2", "WRITES=300"]), source="lab.ipynb")  # int for float is fine
    assert nb.cells[0].source.endswith("RATE = 2\nWRITES = 300")
