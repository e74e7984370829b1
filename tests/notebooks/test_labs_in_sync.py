"""labs/ is exactly what `make labs` generates from solutions/, and gives no answer away."""

from __future__ import annotations

from pathlib import Path

import pytest

from hadrlab.notebooks import check_labs

ROOT = Path(__file__).resolve().parents[2]


def test_labs_are_generated_from_the_current_solutions():
    solutions = sorted((ROOT / "solutions").glob("*.ipynb"))
    if not solutions:
        pytest.skip("solutions/ has no notebook yet, so there is no lab to compare")
    problems = check_labs(ROOT / "solutions", ROOT / "labs")
    assert problems == [], "labs/ is out of sync with solutions/; run `make labs`:\n" + "\n".join(problems)
