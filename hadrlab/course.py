"""Where the course's own files are, wherever a notebook runs from.

A learner's notebook may be graded from ``submissions/`` or a temporary folder, so labs never
use paths relative to their own folder (``../infra/...``): they ask for a course file.
"""

from __future__ import annotations

import os
from pathlib import Path

from hadrlab.errors import SetupError

__all__ = ["course_root", "course_file"]


def course_root() -> Path:
    """Return the course checkout: ``$HADRLAB_COURSE_ROOT``, else the one hadrlab runs from."""
    env = os.environ.get("HADRLAB_COURSE_ROOT")
    root = Path(env).expanduser().resolve() if env else Path(__file__).resolve().parents[1]
    if not (root / "infra").is_dir():
        raise SetupError(
            f"The course files (infra/, quizzes/, solutions/) are not at {root}. hadrlab is "
            f"meant to be installed from a checkout with `make setup` (pip install -e .); "
            f"or set HADRLAB_COURSE_ROOT to the checkout."
        )
    return root


def course_file(relative: str | os.PathLike) -> Path:
    """Return the path of a course file, e.g. ``course_file("infra/k8s/model-api.yaml")``.

    Raises:
        SetupError: the course checkout, or that file in it, cannot be found.
    """
    path = course_root() / relative
    if not path.exists():
        raise SetupError(f"The course file {relative} is not in {course_root()}: is the checkout complete?")
    return path
