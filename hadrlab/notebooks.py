"""Learner notebooks generated from solution notebooks, and headless notebook execution.

``solutions/`` holds the notebooks the course is written in, with their answers and outputs.
``labs/`` holds what a learner opens: the same notebooks with every answer cut out. The labs
are GENERATED, never edited by hand, so the two can never drift apart.

In a solution code cell, the lines between two markers are the answer::

    budget_min = 30 * 24 * 60
    # BEGIN SOLUTION compute the monthly budget in minutes
    allowed_min = budget_min * (1 - slo)
    # END SOLUTION

and the learner sees, at the same indentation::

    budget_min = 30 * 24 * 60
    # TODO: compute the monthly budget in minutes
    raise NotImplementedError("compute the monthly budget in minutes")

In a markdown cell, ``<!-- BEGIN SOLUTION -->`` ... ``<!-- END SOLUTION -->`` becomes
``*Write your answer here.*``. Generated notebooks carry no outputs, no execution counts and
almost no metadata, and their cell ids come from the solution's, so that regenerating them
gives byte-identical files (a clean ``git diff``).

Commands (through ``python -m hadrlab``): ``labs`` regenerates ``labs/`` (``--check`` fails if
it is out of date), ``solutions`` re-executes solution notebooks to refresh their outputs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hadrlab.errors import GradingError

__all__ = [
    "CellError",
    "ExecutionResult",
    "MarkerError",
    "strip_solutions",
    "generate_lab",
    "generate_labs",
    "check_labs",
    "read_notebook",
    "write_notebook",
    "execute_notebook",
    "main_labs",
    "main_solutions",
]

DEFAULT_TODO = "write your solution here"
ANSWER_PLACEHOLDER = "*Write your answer here.*"

_CODE_BEGIN = re.compile(r"^(?P<indent>[ \t]*)#\s*BEGIN SOLUTION(?:[ \t]+(?P<text>.*?))?[ \t]*$")
_CODE_END = re.compile(r"^[ \t]*#\s*END SOLUTION[ \t]*$")
_MD_MARKER = re.compile(r"<!--\s*(?P<kind>BEGIN|END) SOLUTION\s*-->")

# A leaked line must be long enough not to match by chance (``return x``, ``else:``).
_LEAK_MIN_CHARS = 12


class MarkerError(GradingError):
    """Solution markers in a notebook are unbalanced or nested, so no lab can be made from it."""


@dataclass(frozen=True)
class CellError:
    """An exception a notebook cell raised while the notebook was executed headless.

    Attributes:
        cell_index: position of the cell in the notebook, counted from 0 (as nbval does).
        ename: the exception's class name, e.g. ``"NotImplementedError"``.
        evalue: the exception's message.
        source_line: the first non-blank line of the cell, to recognise it.
    """

    cell_index: int
    ename: str
    evalue: str
    source_line: str = ""

    def __str__(self) -> str:
        where = f"cell {self.cell_index}"
        if self.source_line:
            where += f" ({_shorten(self.source_line, 50)})"
        return f"{where}: {self.ename}: {_shorten(self.evalue, 160)}"

    __repr__ = __str__

    def to_dict(self) -> dict[str, Any]:
        return {
            "cell_index": self.cell_index,
            "ename": self.ename,
            "evalue": self.evalue,
            "source_line": self.source_line,
        }


def _shorten(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


# --------------------------------------------------------------------------- reading, writing


def read_notebook(path: str | os.PathLike) -> Any:
    """Read a notebook as nbformat v4, or raise a :class:`GradingError` that says why not.

    Args:
        path: the ``.ipynb`` file.

    Returns:
        The notebook (an ``nbformat.NotebookNode``).
    """
    import nbformat

    path = Path(path)
    if not path.exists():
        raise GradingError(f"{path} was not found: check the path (is the file name spelt right?).")
    if path.is_dir():
        raise GradingError(f"{path} is a folder, not a notebook: pass the .ipynb files inside it.")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise GradingError(
            f"{path} is not a notebook: it could not be read as JSON ({exc}). "
            f"Was it saved from Jupyter as .ipynb (not exported as .py or .html)?"
        ) from None
    if not isinstance(data, dict) or not ("cells" in data or "worksheets" in data):
        raise GradingError(
            f"{path} is not a notebook: it is JSON but has no cells. "
            f"Was it saved from Jupyter as .ipynb?"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nb = nbformat.reads(text, as_version=4)
    except Exception as exc:  # nbformat raises several unrelated types on bad input
        raise GradingError(f"{path} is not a valid notebook: {exc}") from None
    raw_cells = data.get("cells") or []
    if len(raw_cells) == len(nb.cells):
        for index, (raw, cell) in enumerate(zip(raw_cells, nb.cells)):
            if not (isinstance(raw, dict) and isinstance(raw.get("id"), str)):
                # nbformat invents a random id for a cell saved without one; derive a
                # stable one instead, so that generating a lab twice gives the same file.
                cell["id"] = hashlib.sha1(f"{path.name}:{index}".encode()).hexdigest()[:8]
    return nb


def _notebook_text(nb: Any) -> str:
    """Serialise like Jupyter does (nbformat, indent 1, sorted keys) with a final newline."""
    import nbformat

    text = nbformat.writes(nb, version=4)
    return text if text.endswith("\n") else text + "\n"


def write_notebook(nb: Any, path: str | os.PathLike) -> Path:
    """Save a notebook, outputs included, as Jupyter would (its folder is created if needed).

    Args:
        nb: the notebook (e.g. one the grader just executed).
        path: the ``.ipynb`` file to write.

    Returns:
        The path written.
    """
    path = Path(path)
    # Saved widget state is large and only replays old widgets; the outputs stay.
    nb.metadata.pop("widgets", None)
    _write_if_changed(path, _notebook_text(nb))
    return path


def _write_if_changed(path: Path, text: str) -> bool:
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return True


# --------------------------------------------------------------------------- markers


@dataclass(frozen=True)
class _Region:
    """The lines of one solution region (without its markers), for leak detection."""

    cell_index: int
    lines: tuple[str, ...]


def _strip_code(source: str, where: str) -> tuple[str, list[tuple[str, ...]]]:
    out: list[str] = []
    regions: list[tuple[str, ...]] = []
    open_at: int | None = None
    inside: list[str] = []
    for lineno, line in enumerate(source.split("\n"), start=1):
        begin = _CODE_BEGIN.match(line)
        if begin:
            if open_at is not None:
                raise MarkerError(
                    f"{where} line {lineno}: '# BEGIN SOLUTION' inside the solution region "
                    f"opened at line {open_at}; regions cannot be nested. Close the first one "
                    f"with '# END SOLUTION' before opening another."
                )
            open_at = lineno
            inside = []
            text = (begin.group("text") or "").strip() or DEFAULT_TODO
            indent = begin.group("indent")
            out.append(f"{indent}# TODO: {text}")
            out.append(f"{indent}raise NotImplementedError({json.dumps(text, ensure_ascii=False)})")
        elif _CODE_END.match(line):
            if open_at is None:
                raise MarkerError(
                    f"{where} line {lineno}: '# END SOLUTION' without a '# BEGIN SOLUTION' "
                    f"before it. Add the missing BEGIN marker or delete this line."
                )
            regions.append(tuple(inside))
            open_at = None
        elif open_at is not None:
            inside.append(line)
        else:
            out.append(line)
    if open_at is not None:
        raise MarkerError(
            f"{where} line {open_at}: '# BEGIN SOLUTION' is never closed. "
            f"Add '# END SOLUTION' after the answer, in the same cell."
        )
    return "\n".join(out), regions


def _strip_markdown(source: str, where: str) -> tuple[str, list[tuple[str, ...]]]:
    out: list[str] = []
    regions: list[tuple[str, ...]] = []
    pos = 0
    open_match: re.Match[str] | None = None
    for match in _MD_MARKER.finditer(source):
        lineno = source.count("\n", 0, match.start()) + 1
        if match.group("kind") == "BEGIN":
            if open_match is not None:
                first = source.count("\n", 0, open_match.start()) + 1
                raise MarkerError(
                    f"{where} line {lineno}: '<!-- BEGIN SOLUTION -->' inside the solution "
                    f"region opened at line {first}; regions cannot be nested."
                )
            out.append(source[pos : match.start()])
            open_match = match
        else:
            if open_match is None:
                raise MarkerError(
                    f"{where} line {lineno}: '<!-- END SOLUTION -->' without a "
                    f"'<!-- BEGIN SOLUTION -->' before it."
                )
            out.append(ANSWER_PLACEHOLDER)
            regions.append(tuple(source[open_match.end() : match.start()].split("\n")))
            pos = match.end()
            open_match = None
    if open_match is not None:
        first = source.count("\n", 0, open_match.start()) + 1
        raise MarkerError(
            f"{where} line {first}: '<!-- BEGIN SOLUTION -->' is never closed. "
            f"Add '<!-- END SOLUTION -->' after the answer, in the same cell."
        )
    out.append(source[pos:])
    return "".join(out), regions


def strip_solutions(source: str, cell_type: str, where: str = "cell") -> str:
    """Return a cell's source with every solution region replaced by the learner's prompt.

    Args:
        source: the cell's source text.
        cell_type: ``"code"`` or ``"markdown"`` (other cell types are returned unchanged).
        where: how to name the cell in an error message, e.g. ``"solutions/lab00.ipynb cell 4"``.

    Returns:
        The learner's version of the source.

    Raises:
        MarkerError: a region is not closed, closed twice, or nested in another.
    """
    if cell_type == "code":
        return _strip_code(source, where)[0]
    if cell_type == "markdown":
        return _strip_markdown(source, where)[0]
    return source


def _solution_regions(nb: Any, name: str) -> list[_Region]:
    regions = []
    for index, cell in enumerate(nb.cells):
        where = f"{name} cell {index}"
        if cell.cell_type == "code":
            found = _strip_code(cell.source, where)[1]
        elif cell.cell_type == "markdown":
            found = _strip_markdown(cell.source, where)[1]
        else:
            found = []
        regions.extend(_Region(index, lines) for lines in found)
    return regions


def _cell_id(src_name: str, index: int, cell: Any, taken: set[str]) -> str:
    cell_id = cell.get("id")
    if not (isinstance(cell_id, str) and re.fullmatch(r"[a-zA-Z0-9-_]{1,64}", cell_id)):
        cell_id = hashlib.sha1(f"{Path(src_name).name}:{index}".encode()).hexdigest()[:8]
    base, n = cell_id, 1
    while cell_id in taken:
        n += 1
        cell_id = f"{base[:60]}-{n}"
    taken.add(cell_id)
    return cell_id


def _build_lab(nb: Any, name: str) -> Any:
    """The learner's notebook for solution notebook ``nb`` (read from file ``name``)."""
    import nbformat

    v4 = nbformat.v4
    lab = v4.new_notebook()
    kernelspec = nb.metadata.get("kernelspec") or {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    lab.metadata = nbformat.from_dict(
        {
            "kernelspec": dict(kernelspec),
            "language_info": {"name": (nb.metadata.get("language_info") or {}).get("name", "python")},
        }
    )
    taken: set[str] = set()
    for index, cell in enumerate(nb.cells):
        where = f"{name} cell {index}"
        source = strip_solutions(cell.source, cell.cell_type, where)
        if cell.cell_type == "code":
            new = v4.new_code_cell(source)
        elif cell.cell_type == "markdown":
            new = v4.new_markdown_cell(source)
            if cell.get("attachments"):
                new.attachments = cell.attachments
        else:
            new = v4.new_raw_cell(source)
        new.id = _cell_id(name, index, cell, taken)
        tags = cell.get("metadata", {}).get("tags")
        new.metadata = nbformat.from_dict({"tags": list(tags)} if tags else {})
        lab.cells.append(new)
    nbformat.validate(lab)
    return lab


def _lab_text(src: Path) -> str:
    return _notebook_text(_build_lab(read_notebook(src), _display(src)))


def _display(path: Path) -> str:
    """A path as a person types it: relative to the working folder when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def generate_lab(src: str | os.PathLike, dst: str | os.PathLike) -> bool:
    """Write the learner's notebook ``dst`` generated from the solution notebook ``src``.

    Args:
        src: the solution notebook.
        dst: where to write the lab (its folder is created if needed).

    Returns:
        True if ``dst`` was created or changed, False if it was already up to date.

    Raises:
        GradingError: ``src`` is missing or not a notebook.
        MarkerError: its solution markers are unbalanced or nested.
    """
    return _write_if_changed(Path(dst), _lab_text(Path(src)))


def _solution_files(solutions_dir: Path) -> list[Path]:
    if not solutions_dir.is_dir():
        return []
    return sorted(p for p in solutions_dir.glob("*.ipynb") if not p.name.startswith("."))


def generate_labs(solutions_dir: str | os.PathLike, labs_dir: str | os.PathLike) -> list[Path]:
    """Generate one lab in ``labs_dir`` for every notebook in ``solutions_dir``.

    Every solution is processed even if one of them is broken; the problems are raised
    together at the end.

    Args:
        solutions_dir: folder of solution notebooks (``solutions/``).
        labs_dir: folder of learner notebooks (``labs/``).

    Returns:
        The paths of the labs that were created or changed (empty when all were up to date).

    Raises:
        MarkerError: some solutions have unbalanced or nested markers (the others were written).
    """
    changed: list[Path] = []
    problems: list[str] = []
    for src in _solution_files(Path(solutions_dir)):
        dst = Path(labs_dir) / src.name
        try:
            if generate_lab(src, dst):
                changed.append(dst)
        except GradingError as exc:
            problems.append(str(exc))
    if problems:
        raise MarkerError("\n".join(problems))
    return changed


def _leaks(regions: list[_Region], lab: Any, src_name: str, lab_name: str) -> list[str]:
    found = []
    reported: set[str] = set()
    for region in regions:
        for line in region.lines:
            text = line.strip()
            if len(text) < _LEAK_MIN_CHARS or text.startswith("#") or text.startswith("<!--"):
                continue
            if text in reported:
                continue
            for index, cell in enumerate(lab.cells):
                if text in cell.source:
                    reported.add(text)
                    found.append(
                        f"{lab_name} cell {index} gives away the solution: it contains "
                        f"{_shorten(text, 70)!r} from the solution region of {src_name} cell "
                        f"{region.cell_index}. Reword that cell in the solution notebook "
                        f"(or move the line inside the markers), then run `make labs`."
                    )
                    break
    return found


def check_labs(solutions_dir: str | os.PathLike, labs_dir: str | os.PathLike) -> list[str]:
    """List what is wrong between ``solutions_dir`` and the generated ``labs_dir``.

    Problems found: a lab missing, out of date or without a solution; unbalanced or nested
    markers (with file, cell index and line); a line of a solution that appears in a lab.

    Args:
        solutions_dir: folder of solution notebooks.
        labs_dir: folder of learner notebooks.

    Returns:
        One full-sentence message per problem; empty when the labs are in sync.
    """
    solutions_dir, labs_dir = Path(solutions_dir), Path(labs_dir)
    problems: list[str] = []
    sources = _solution_files(solutions_dir)
    for src in sources:
        src_name, dst = _display(src), labs_dir / src.name
        dst_name = _display(dst)
        try:
            nb = read_notebook(src)
            regions = _solution_regions(nb, src_name)
            expected = _notebook_text(_build_lab(nb, src_name))
        except GradingError as exc:
            problems.append(str(exc))
            continue
        if not dst.exists():
            problems.append(f"{dst_name} is missing: it is generated from {src_name}.")
            continue
        try:
            actual_text = dst.read_text(encoding="utf-8")
            actual = read_notebook(dst)
        except (OSError, UnicodeDecodeError, GradingError) as exc:
            problems.append(f"{dst_name} cannot be read ({exc}).")
            continue
        if actual_text != expected:
            problems.append(
                f"{dst_name} is out of date: it differs from what {src_name} generates "
                f"(edited by hand, or the solution changed since the last `make labs`)."
            )
        problems.extend(_leaks(regions, actual, src_name, dst_name))
    names = {p.name for p in sources}
    if labs_dir.is_dir():
        for lab in sorted(labs_dir.glob("*.ipynb")):
            if lab.name not in names and not lab.name.startswith("."):
                problems.append(
                    f"{_display(lab)} has no solution notebook {_display(solutions_dir / lab.name)}: "
                    f"labs are generated, so write the solution first (or delete the stray lab)."
                )
    return problems


# --------------------------------------------------------------------------- execution


def _kernel_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The kernel's environment: the caller's (Jupyter/IPython/matplotlib folders included)."""
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")  # no display when run headless
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # silences a debugger warning
    env.update(extra or {})
    return env


@dataclass
class ExecutionResult:
    """What executing a notebook headless gave.

    Attributes:
        errors: the cells that raised, in order.
        problem: why the run could not finish (kernel did not start, or died); else ``""``.
        started: False when the kernel never started, so nothing ran.
    """

    errors: list[CellError]
    problem: str = ""
    started: bool = True


def parse_parameters(pairs: list[str]) -> dict[str, Any]:
    """Turn ``["LOAD_S=4", "LABEL='quick'"]`` into ``{"LOAD_S": 4, "LABEL": "quick"}``.

    Values are Python literals; anything else is taken as a string.
    """
    import ast

    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise GradingError(
                f"Cannot read the parameter {pair!r}: write NAME=VALUE, e.g. LOAD_S=4 or USERS=2."
            )
        try:
            params[name] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            params[name] = raw.strip()
    return params


def inject_parameters(nb: Any, params: dict[str, Any], *, source: str = "the notebook") -> None:
    """Override a lab's parameters: append the new values to the cell tagged ``parameters``.

    As with papermill, the lab's own assignments keep their defaults and the new values are
    assigned right after them; unlike papermill, they go in the same cell (then also tagged
    ``injected-parameters``) rather than a cell of their own, so that no cell moves and every
    cell number the grader reports is the one in the learner's file.

    Raises:
        GradingError: the notebook has no ``parameters`` cell, or a name is not one of its
            parameters (the message lists them).
    """
    import ast

    if not params:
        return
    index = next(
        (i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])),
        None,
    )
    if index is None:
        raise GradingError(f"{source} has no cell tagged 'parameters', so it takes no parameters.")
    defaults: dict[str, Any] = {}
    try:
        tree = ast.parse(nb.cells[index].source)
    except SyntaxError as exc:
        raise GradingError(
            f"The parameters cell (cell {index}) of {source} is not valid Python ({exc.msg}, line "
            f"{exc.lineno} of the cell), so parameters cannot be given to it. Fix that cell, or grade "
            f"without --param."
        ) from None
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    try:
                        defaults[target.id] = ast.literal_eval(node.value)
                    except ValueError:
                        defaults[target.id] = None  # an expression: any value goes
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise GradingError(
            f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a parameter of "
            f"{source}; its parameters are: {', '.join(defaults)}."
        )
    for name, value in params.items():
        default = defaults[name]
        if default is None:
            continue
        numeric = (int, float)
        same_kind = (
            isinstance(value, numeric) and not isinstance(value, bool)
            if isinstance(default, numeric) and not isinstance(default, bool)
            else isinstance(value, type(default))
        )
        if not same_kind:
            raise GradingError(
                f"The parameter {name} of {source} is {type(default).__name__} (default "
                f"{default!r}); {value!r} is not. Give, e.g., {name}={default!r}."
            )
    cell = nb.cells[index]
    cell.source = (
        cell.source.rstrip("\n")
        + "\n\n# Parameters given to the grader\n"
        + "\n".join(f"{name} = {value!r}" for name, value in params.items())
    )
    tags = list(cell.metadata.get("tags", []))
    cell.metadata["tags"] = tags + [t for t in ["injected-parameters"] if t not in tags]


def run_cells(
    nb: Any,
    *,
    cwd: str | os.PathLike,
    timeout_s: float,
    kernel_name: str | None = None,
    allow_errors: bool,
    env: dict[str, str] | None = None,
) -> ExecutionResult:
    """Execute every code cell of ``nb`` (in memory) in a fresh kernel, which is then shut down.

    Args:
        nb: the notebook; its outputs are replaced by the new ones.
        cwd: the kernel's working folder (the notebook's own folder, so relative paths work).
        timeout_s: how long one cell may run; a cell that takes longer is interrupted and
            recorded as a ``CellTimeoutError``.
        kernel_name: the Jupyter kernel; default ``python3``, this Python's own ipykernel.
        allow_errors: keep going after a cell raises (grading) or stop there (solutions).
        env: extra environment variables for the kernel.

    Returns:
        An :class:`ExecutionResult`. Cells tagged ``raises-exception`` are expected to raise
        and are left out of its errors.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, DeadKernelError

    errors: list[CellError] = []
    current = {"index": -1}

    def first_line(cell: Any) -> str:
        return next((ln.strip() for ln in cell.source.splitlines() if ln.strip()), "")

    def on_cell_start(cell: Any, cell_index: int) -> None:
        current["index"] = cell_index

    def on_cell_error(cell: Any, cell_index: int, execute_reply: dict) -> None:
        if "raises-exception" in cell.get("metadata", {}).get("tags", []):
            return
        content = execute_reply.get("content", {})
        errors.append(
            CellError(
                cell_index,
                str(content.get("ename", "Error")),
                str(content.get("evalue", "")),
                first_line(cell),
            )
        )

    client = NotebookClient(
        nb,
        timeout=int(max(1, timeout_s)),
        kernel_name=kernel_name or "python3",
        # Quiet start-up warnings (plain-TCP loopback transport) that would bury the report.
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
        allow_errors=allow_errors,
        interrupt_on_timeout=True,
        error_on_timeout={
            "ename": "CellTimeoutError",
            "evalue": f"the cell was still running after {timeout_s:g} s and was interrupted",
            "traceback": [],
        },
        record_timing=False,
        shutdown_kernel="graceful",
        resources={"metadata": {"path": str(cwd)}},
        on_cell_start=on_cell_start,
        on_cell_error=on_cell_error,
    )
    try:
        client.execute(env=_kernel_env(env), cwd=str(cwd))
    except CellExecutionError:
        pass  # recorded by on_cell_error; execution stopped there as asked
    except Exception as exc:  # the kernel died, or never started (NoSuchKernel, start-up timeout)
        if current["index"] < 0:
            return ExecutionResult(errors, (
                f"the kernel {kernel_name or 'python3'!r} could not be started "
                f"({type(exc).__name__}: {exc}). Leave out --kernel to use this Python's own "
                f"kernel, or list the kernels installed with `jupyter kernelspec list`."
            ), started=False)
        if isinstance(exc, DeadKernelError):
            return ExecutionResult(errors, (
                f"the kernel died while running cell {current['index']} (out of memory, or the "
                f"code ended the process); the cells after it were not run."
            ))
        return ExecutionResult(
            errors, f"execution stopped at cell {current['index']}: {type(exc).__name__}: {exc}"
        )
    return ExecutionResult(errors)


def execute_notebook(
    path: str | os.PathLike, timeout_s: float = 600, cwd: str | os.PathLike | None = None
) -> list[CellError]:
    """Re-execute a notebook in place, stopping at the first error (``make solutions``).

    The file is rewritten with fresh outputs only when every cell ran; after an error it is
    left as it was, so a broken run never replaces good outputs.

    Args:
        path: the notebook, e.g. ``solutions/lab00.ipynb``.
        timeout_s: how long one cell may run.
        cwd: the kernel's working folder; default the notebook's folder.

    Returns:
        The cell errors: empty on success, else the first one.

    Raises:
        GradingError: the file is missing or not a notebook.
    """
    path = Path(path)
    nb = read_notebook(path)
    run = run_cells(nb, cwd=cwd or path.resolve().parent, timeout_s=timeout_s, allow_errors=False)
    if run.problem:
        return run.errors or [CellError(-1, "KernelError", run.problem)]
    if not run.errors:
        # Saved widget state is hundreds of KB per run and only replays old widgets.
        nb.metadata.pop("widgets", None)
        _write_if_changed(path, _notebook_text(nb))
    return run.errors


# --------------------------------------------------------------------------- commands


def main_labs(argv: list[str] | None = None) -> int:
    """``python -m hadrlab labs [--check] [--solutions DIR] [--labs DIR]``."""
    parser = argparse.ArgumentParser(
        prog="python -m hadrlab labs",
        description="Generate the learner notebooks in labs/ from the solution notebooks.",
    )
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if labs/ is out of date")
    parser.add_argument("--solutions", default="solutions", help="solution notebooks (default: solutions)")
    parser.add_argument("--labs", default="labs", help="learner notebooks (default: labs)")
    args = parser.parse_args(argv)
    solutions_dir, labs_dir = Path(args.solutions), Path(args.labs)
    sources = _solution_files(solutions_dir)
    if not sources:
        print(f"No solution notebooks in {solutions_dir}/: nothing to generate.")
        return 0 if args.check else 1
    if args.check:
        problems = check_labs(solutions_dir, labs_dir)
        if not problems:
            count = f"{len(sources)} lab" + ("s are" if len(sources) != 1 else " is")
            print(f"{count} in sync with {solutions_dir}/ ({labs_dir}/).")
            return 0
        for problem in problems:
            print(f"- {problem}")
        print("Run `make labs` to regenerate labs/ from solutions/, then commit both.")
        return 1
    failed = 0
    for src in sources:
        dst = labs_dir / src.name
        try:
            changed = generate_lab(src, dst)
        except GradingError as exc:
            failed += 1
            print(f"- {exc}")
            continue
        print(f"{'wrote    ' if changed else 'unchanged'} {_display(dst)}")
    names = {p.name for p in sources}
    for lab in sorted(labs_dir.glob("*.ipynb")):
        if lab.name not in names:
            print(f"note: {_display(lab)} has no solution notebook; delete it if it is obsolete.")
    return 1 if failed else 0


def main_solutions(argv: list[str] | None = None) -> int:
    """``python -m hadrlab solutions [NOTEBOOK...]``: refresh solution outputs in place."""
    parser = argparse.ArgumentParser(
        prog="python -m hadrlab solutions",
        description="Re-execute solution notebooks in place so that their outputs are fresh.",
    )
    parser.add_argument("notebooks", nargs="*", help="default: every solutions/*.ipynb")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one cell may run (default 600)")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.notebooks] or _solution_files(Path("solutions"))
    if not paths:
        print("No solution notebooks found in solutions/.")
        return 1
    for path in paths:
        started = time.monotonic()
        try:
            errors = execute_notebook(path, timeout_s=args.timeout)
        except GradingError as exc:
            print(exc, file=sys.stderr)
            return 1
        if errors:
            err = errors[0]
            print(
                f"{_display(path)} failed at {err}\nIts outputs were left as they were. "
                f"Fix that cell and run `make solutions` again.",
                file=sys.stderr,
            )
            return 1
        print(f"ran {_display(path)} in {time.monotonic() - started:.1f} s; outputs refreshed")
    return 0


if __name__ == "__main__":
    sys.exit(main_labs(sys.argv[1:]))
