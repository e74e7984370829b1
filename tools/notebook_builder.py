"""Build a solution notebook from cell texts written in a Python script.

The scripts ``tools/build_labNN.py`` hold each lab's cells as plain strings, which are easier
to review and diff than notebook JSON. They write the notebook WITHOUT outputs; then
``make solutions`` executes it to fill them in:

    .venv/bin/python tools/build_lab02.py
    .venv/bin/python -m hadrlab solutions solutions/02_feature_store_dr.ipynb
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]

# A code cell that calls the scoreboard is a check cell: the grader runs the course's copy of it
# (hadrlab/checkcells.py), so it must hold no solution and carry the tag.
CHECK_TAG = "graded-check"
_CHECK_CALL = re.compile(r"\bboard\.(check_\w+|skip|summary)\(")


class NotebookBuilder:
    """Collect markdown and code cells, then write them as one notebook.

    Example:
        >>> nb = NotebookBuilder("lab00", ROOT / "solutions" / "00_foundations.ipynb")
        >>> nb.md("# Lab 00")
        >>> nb.code("WRITES = 2000", tags=["parameters"])
        >>> nb.write()
    """

    def __init__(self, cell_id_prefix: str, out: Path) -> None:
        self.prefix = cell_id_prefix
        self.out = Path(out)
        self.cells: list[tuple[str, str, list[str]]] = []

    def md(self, text: str) -> None:
        self.cells.append(("markdown", text.strip("\n"), []))

    def code(self, text: str, tags: list[str] | None = None) -> None:
        text, tags = text.strip("\n"), list(tags or [])
        if _CHECK_CALL.search(text):
            if "BEGIN SOLUTION" in text:
                raise ValueError(
                    f"cell {len(self.cells)} of {self.out.name} calls the scoreboard and holds a solution: "
                    f"put the learner's code and the checks in separate cells"
                )
            tags += [CHECK_TAG] if CHECK_TAG not in tags else []
        self.cells.append(("code", text, tags))

    def quiz(self, lab: str) -> None:
        """The lab's quiz: widgets for instant feedback, then the answer sheet kept with the notebook."""
        self.code(f'hadrlab.load_quiz("{lab}").show()')
        self.md("""
Your answers, for the record: the widgets above check an answer as you go, but what you click
is not saved with the notebook. Write the answers you settle on in `quiz_answers`, by question
id: a letter for single choice, a list of letters for multiple choice, a number in the
question's unit for numeric ones. The cell checks them, and the course's grader collects them
with your notebook (it scores them again against the course's own bank).
""")
        self.code(f"""
quiz_answers = {{
    # "question-id": "a",
}}
hadrlab.answer_sheet("{lab}", quiz_answers)
""")

    def build(self) -> nbformat.NotebookNode:
        nb = nbformat.v4.new_notebook()
        nb.metadata = {
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        }
        for i, (kind, text, tags) in enumerate(self.cells):
            cell = (nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell)(text)
            if tags:
                cell.metadata["tags"] = tags
            # Stable ids: regenerating gives the same file, and learner twins derive from them.
            cell.id = f"{self.prefix}-{i:02d}"
            nb.cells.append(cell)
        nbformat.validate(nb)
        return nb

    def write(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(self.build(), self.out)
        print(f"wrote {self.out.relative_to(ROOT)} ({len(self.cells)} cells)")
