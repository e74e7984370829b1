"""hadrlab: the helper package behind the HA/DR-for-AI labs.

Notebooks teach; this package does the plumbing: child processes on loopback ports, Redis
pairs, the platform backends, load, metrics, plots, graded checks and quizzes.

Importing hadrlab starts nothing and changes no global state: every name below is loaded
from its module the first time it is used, so ``import hadrlab`` is fast and pulls in
neither matplotlib nor locust.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it. One public surface for notebooks.
_EXPORTS: dict[str, str] = {
    # errors
    "HadrError": "hadrlab.errors",
    "SetupError": "hadrlab.errors",
    "PortInUseError": "hadrlab.errors",
    "ProcessError": "hadrlab.errors",
    "ProcessExited": "hadrlab.errors",
    "ServiceNotReady": "hadrlab.errors",
    "ManifestError": "hadrlab.errors",
    "QuizError": "hadrlab.errors",
    "GradingError": "hadrlab.errors",
    # processes
    "Child": "hadrlab.processes",
    "home_dir": "hadrlab.processes",
    "find_free_port": "hadrlab.processes",
    "check_port_free": "hadrlab.processes",
    "start_process": "hadrlab.processes",
    "wait_for_tcp": "hadrlab.processes",
    "wait_for_http": "hadrlab.processes",
    "wait_until": "hadrlab.processes",
    "stop_children": "hadrlab.processes",
    "stop_registered": "hadrlab.processes",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hadrlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
