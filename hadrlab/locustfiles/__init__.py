"""Locustfiles that :mod:`hadrlab.load` runs in a separate locust process.

They are data for a subprocess, not modules for the notebook: importing one pulls in
locust and gevent, whose monkey-patching hangs a Jupyter kernel. Use :func:`locustfile_path`
to get a file's path without importing it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["locustfile_path"]


def locustfile_path(name: str = "http_api") -> Path:
    """Return the path of the locustfile ``name`` (without ``.py``) shipped with hadrlab."""
    path = Path(__file__).resolve().parent / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"No locustfile named {name!r} in {path.parent}; the ones shipped are: "
            f"{sorted(p.stem for p in path.parent.glob('*.py') if p.stem != '__init__')}."
        )
    return path
