"""The course's own check cells: the grader runs them, whatever the learner's copy says.

Every lab marks the cells that judge the learner's work with the tag ``graded-check``: the
cells that call ``board.check_*`` or ``board.skip``, and the score cell. A learner may edit
anything in their notebook, these cells included (to loosen a tolerance, change an
``expected`` value, delete a check that fails). The grader therefore

1. finds the course's copy of the same lab (``labs/NN_*.ipynb`` in the course checkout, matched
   by the cell ids every lab's cells carry, ``lab02-17``, or by the file name);
2. puts the course's source in place of every graded-check cell, restores the ones the learner
   deleted at their place, and drops the tag from learner cells the course does not tag;
3. after the run, reads the checks from the OUTPUTS of those cells only: every
   :class:`~hadrlab.grading.CheckResult` displays a record of itself under the MIME type
   :data:`CHECK_MIME`. Lines a learner's code appends to the grade file, or records it displays
   from its own cells, count for nothing.

What this does not do: a learner's code runs in the same kernel as the checks, so code written
to fool them (replacing ``board`` or the grading module) is not stopped here; an instructor who
reads the executed copy sees it. The grader defends against edits of the checks, not against a
sandbox escape.

Example:
    >>> course = find_course_twin(learner_nb, "submissions/alice/02_feature_store_dr.ipynb")
    >>> restored = lock_check_cells(learner_nb, course)
    >>> ... execute learner_nb ...
    >>> checks = read_check_outputs(learner_nb)
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CHECK_TAG",
    "CHECK_MIME",
    "LockReport",
    "course_lab_numbers",
    "find_course_twin",
    "lock_check_cells",
    "read_check_outputs",
]

CHECK_TAG = "graded-check"
CHECK_MIME = "application/vnd.hadrlab.check+json"

_LAB_ID = re.compile(r"^lab(?P<lab>\d\d)-")
_LAB_FILE = re.compile(r"^(?P<lab>\d\d)_")


def _tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []) or [])


def _is_check(cell: Any) -> bool:
    return cell.get("cell_type") == "code" and CHECK_TAG in _tags(cell)


def _lab_of_ids(nb: Any) -> str | None:
    """The lab the notebook's cell ids name (``lab02-17`` -> ``"02"``), by majority."""
    counts: dict[str, int] = {}
    for cell in nb.cells:
        match = _LAB_ID.match(str(cell.get("id", "")))
        if match:
            counts[match["lab"]] = counts.get(match["lab"], 0) + 1
    return max(counts, key=counts.get) if counts else None


def _course_labs(labs_dir: str | Path | None) -> dict[str, Path]:
    """The course's learner notebooks by lab number; none when there is no course checkout."""
    from hadrlab.errors import SetupError

    if labs_dir is None:
        from hadrlab.course import course_root

        try:
            labs_dir = course_root() / "labs"
        except SetupError:
            return {}
    labs: dict[str, Path] = {}
    for path in sorted(Path(labs_dir).glob("*.ipynb")):
        match = _LAB_FILE.match(path.name)
        if match:
            labs.setdefault(match["lab"], path)
    return labs


def find_course_twin(nb: Any, submitted_as: str | Path, labs_dir: str | Path | None = None) -> Any | None:
    """The course's copy of the lab ``nb`` is a version of, or None when it is not a course lab.

    Args:
        nb: the learner's notebook (read, not changed).
        submitted_as: the submission's path; its file name (``02_...``) is used when the cell
            ids name no lab.
        labs_dir: the course's learner notebooks; default ``labs/`` of the course checkout.

    Returns:
        The course notebook (freshly read), or None: no course checkout, or no lab of that
        number in it (a notebook an instructor wrote, say).
    """
    from hadrlab.notebooks import read_notebook

    labs = _course_labs(labs_dir)
    by_name = _LAB_FILE.match(Path(submitted_as).name)
    lab = _lab_of_ids(nb) or (by_name["lab"] if by_name else None)
    if lab is None or lab not in labs:
        return None
    return read_notebook(labs[lab])


def course_lab_numbers(labs_dir: str | Path | None = None) -> set[str]:
    """The lab numbers the course ships (``{"00", "01", ...}``); empty without a checkout."""
    return set(_course_labs(labs_dir))


@dataclass
class LockReport:
    """What :func:`lock_check_cells` changed in the learner's notebook.

    Attributes:
        course_cells: ids of the course's graded-check cells, in course order.
        edited: ids of check cells whose source the learner had changed.
        restored: ids of check cells the learner had deleted, put back.
        untagged: ids of learner cells carrying the tag that the course does not tag.
    """

    course_cells: list[str] = field(default_factory=list)
    edited: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    untagged: list[str] = field(default_factory=list)

    @property
    def note(self) -> str:
        """One sentence for the grade report; empty when the learner's check cells were intact."""
        parts = []
        if self.edited:
            parts.append(f"check cells {', '.join(self.edited)} were edited")
        if self.restored:
            parts.append(f"check cells {', '.join(self.restored)} were deleted")
        if self.untagged:
            parts.append(f"cells {', '.join(self.untagged)} were tagged {CHECK_TAG} but are not the course's")
        if not parts:
            return ""
        return "; ".join(parts) + ": graded with the course's own check cells"


def lock_check_cells(nb: Any, course: Any) -> LockReport:
    """Make the graded-check cells of ``nb`` the course's, in place.

    Args:
        nb: the learner's notebook, an in-memory copy about to be executed.
        course: the course's copy of the same lab (see :func:`find_course_twin`).

    Returns:
        A :class:`LockReport` of what was changed.
    """
    report = LockReport()
    ours = [c for c in course.cells if _is_check(c)]
    report.course_cells = [c.id for c in ours]
    wanted = {c.id: c for c in ours}
    for cell in nb.cells:
        if _is_check(cell) and cell.get("id") not in wanted:
            cell.metadata["tags"] = [t for t in _tags(cell) if t != CHECK_TAG]
            report.untagged.append(str(cell.get("id", "?")))
    present = {c.get("id"): i for i, c in enumerate(nb.cells)}
    for course_cell in ours:
        i = present.get(course_cell.id)
        if i is None:
            continue
        cell = nb.cells[i]
        if cell.get("cell_type") != "code" or cell.source != course_cell.source or not _is_check(cell):
            report.edited.append(course_cell.id)
        replacement = copy.deepcopy(course_cell)
        replacement.outputs, replacement.execution_count = [], None
        nb.cells[i] = replacement
    # Deleted check cells go back after the nearest cell before them that is still there.
    order = [c.id for c in course.cells]
    for course_cell in ours:
        if course_cell.id in present:
            continue
        report.restored.append(course_cell.id)
        ids = [c.get("id") for c in nb.cells]
        before = order[: order.index(course_cell.id)]
        anchor = next((ids.index(b) for b in reversed(before) if b in ids), -1)
        replacement = copy.deepcopy(course_cell)
        replacement.outputs, replacement.execution_count = [], None
        nb.cells.insert(anchor + 1, replacement)
    return report


def read_check_outputs(nb: Any, only_tagged: bool = True) -> list[dict[str, Any]]:
    """The check records the executed graded-check cells displayed, last run of each check kept.

    Args:
        nb: the executed notebook.
        only_tagged: read graded-check cells only (the grader); False reads every cell.

    Returns:
        The records (:meth:`CheckResult.to_dict` dicts), in the order the checks first ran.
    """
    records: dict[tuple[str, str], dict[str, Any]] = {}
    for cell in nb.cells:
        if cell.get("cell_type") != "code" or (only_tagged and not _is_check(cell)):
            continue
        for output in cell.get("outputs", []):
            data = output.get("data", {}) if output.get("output_type") in ("display_data", "execute_result") else {}
            record = data.get(CHECK_MIME)
            if isinstance(record, dict) and record.get("name"):
                records[(str(record.get("lab", "")), str(record["name"]))] = dict(record)
    return list(records.values())
