"""Each solution notebook's cells match the script that builds it (tools/build_labNN.py)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "tools").glob("build_lab*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_solution_notebook_matches_its_build_script(script, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    builder = runpy.run_path(str(script), run_name="not_main")["nb"]
    built = builder.build()
    committed = nbformat.read(builder.out, as_version=4)
    assert [c.id for c in committed.cells] == [c.id for c in built.cells], (
        f"{builder.out.name} and {script.name} differ in cells: run the script, then `make solutions`"
    )
    for ours, theirs in zip(built.cells, committed.cells):
        assert (ours.cell_type, ours.source, ours.metadata.get("tags")) == (
            theirs.cell_type, theirs.source, theirs.metadata.get("tags")
        ), f"cell {ours.id} of {builder.out.name} differs from {script.name}"


def test_every_solution_has_a_build_script(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    built = {runpy.run_path(str(s), run_name="not_main")["nb"].out.name for s in SCRIPTS} if SCRIPTS else set()
    assert {p.name for p in (ROOT / "solutions").glob("*.ipynb")} <= built
