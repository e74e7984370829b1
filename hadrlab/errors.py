"""The exceptions hadrlab raises, one small tree a learner can catch.

    HadrError                      anything hadrlab raises on purpose
     ├── SetupError                a binary or package is missing; says how to install it
     ├── PortInUseError            a port asked for is taken; names who holds it
     ├── ProcessError              a child process failed
     │    ├── ProcessExited        it exited while we waited for it
     │    └── ServiceNotReady      it did not answer its readiness check in time
     ├── ManifestError             a Kubernetes manifest is invalid or uses an unsupported field
     ├── MonitoringError           Prometheus refused a rule or a query, or a target never answered
 ├── QuizError                 a quiz bank is malformed, or an answer has the wrong type
     └── GradingError              a notebook could not be graded

Every message is a full sentence: what happened, the likely cause, what to do next.
"""

from __future__ import annotations

__all__ = [
    "HadrError",
    "SetupError",
    "PortInUseError",
    "ProcessError",
    "ProcessExited",
    "ServiceNotReady",
    "DrillNotReady",
    "ManifestError",
    "MonitoringError",
    "QuizError",
    "GradingError",
]


class HadrError(Exception):
    """Base class of every error hadrlab raises on purpose."""


class SetupError(HadrError):
    """A binary or a package the labs need is missing or unusable."""


class PortInUseError(HadrError):
    """A port that was asked for explicitly is already bound by another process."""


class ProcessError(HadrError):
    """A child process started by hadrlab failed."""


class ProcessExited(ProcessError):
    """A child process exited while hadrlab was waiting for it to become ready."""


class ServiceNotReady(ProcessError):
    """A child process did not pass its readiness check within the timeout."""


class DrillNotReady(ServiceNotReady):
    """A DR drill could not start from a steady state (primary where expected, replica in sync, reads on it)."""


class ManifestError(HadrError):
    """A Kubernetes manifest is invalid, or uses a field the backend cannot honour."""


class MonitoringError(HadrError):
    """Prometheus or Alertmanager refused a rule file or a query, or a scrape target never answered."""


class QuizError(HadrError):
    """A quiz bank is malformed, or an answer has the wrong type."""


class GradingError(HadrError):
    """A notebook could not be graded at all (not found, not a notebook)."""
