"""The platform interface that labs program against, shaped like Kubernetes.

Two backends implement :class:`Platform`: ``local`` (the default: Deployments run as
processes on this machine, see :mod:`hadrlab.platform.local`) and ``kube`` (a real cluster).
A lab writes the same code for both:

    >>> with get_platform() as platform:
    ...     platform.apply("infra/k8s/model-api.yaml")
    ...     platform.wait_for_rollout("model-api")
    ...     url = platform.service_url("model-api")
    ...     platform.kill_replica("model-api")
    ...     platform.events()
"""

from __future__ import annotations

import abc
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hadrlab.errors import HadrError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "EVENT_KINDS",
    "Replica",
    "AppliedObject",
    "ApplyResult",
    "Platform",
    "backend_name",
    "get_platform",
]

# Every kind of event a platform timeline may hold.
EVENT_KINDS = (
    "started",
    "ready",
    "unready",
    "killed",
    "hung",
    "resumed",
    "exited",
    "restarted",
    "liveness-failed",
    "endpoint-added",
    "endpoint-removed",
    "scaled",
    "rollout-started",
    "rollout-finished",
    "terminating",
)


@dataclass
class Replica:
    """One replica (a pod) of a Deployment, as ``kubectl get pods`` would show it.

    ``phase`` is the STATUS column: Pending, Running, CrashLoopBackOff, Terminating,
    Terminated. A hung (SIGSTOPped) replica is still Running: only its probes notice.
    """

    name: str
    deployment: str
    pid: int | None
    port: int | None
    phase: str
    ready: bool
    restarts: int
    version: str
    started_at: float | None

    def __repr__(self) -> str:
        age = f"{time.time() - self.started_at:.0f}s" if self.started_at else "-"
        return (
            f"Replica({self.name} {self.phase} ready={self.ready} restarts={self.restarts} "
            f"version={self.version} port={self.port} pid={self.pid} age={age})"
        )


@dataclass
class AppliedObject:
    """One object that apply() created or changed, with what the backend did not honour."""

    kind: str
    name: str
    action: str
    not_honoured: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{self.kind.lower()}/{self.name} {self.action}"]
        if self.not_honoured:
            out.append(f"  not honoured by the local backend: {', '.join(self.not_honoured)}")
        out += [f"  note: {n}" for n in self.notes]
        return out

    def __repr__(self) -> str:
        return "\n".join(self.lines())


class ApplyResult(list):
    """The list of objects apply() acted on; prints like ``kubectl apply``."""

    @property
    def not_honoured(self) -> dict[str, list[str]]:
        """``{"deployment/model-api": [paths...]}`` for every object with unhonoured fields."""
        return {f"{o.kind.lower()}/{o.name}": o.not_honoured for o in self if o.not_honoured}

    def __repr__(self) -> str:
        return "\n".join(line for o in self for line in o.lines())


class Platform(abc.ABC):
    """What a lab can do to a platform; a context manager that tears everything down.

    Replica-level faults mirror what happens on a cluster: ``kill_replica`` is a crash
    (SIGKILL, the container restarts in place), ``hang_replica`` freezes a process
    (alive, answering nothing), ``delete_replica`` is ``kubectl delete pod`` (graceful).
    """

    backend: str = "?"

    @abc.abstractmethod
    def apply(self, manifests: str | os.PathLike | Mapping | Sequence[Mapping]) -> ApplyResult:
        """Create or update the objects in ``manifests`` (a YAML path or dicts)."""

    @abc.abstractmethod
    def delete(self, manifests: Any = None) -> None:
        """Delete the objects in ``manifests`` (None: everything). Idempotent."""

    @abc.abstractmethod
    def scale(self, deployment: str, replicas: int) -> None:
        """Set the number of replicas of ``deployment``."""

    @abc.abstractmethod
    def replicas(self, deployment: str) -> list[Replica]:
        """The replicas of ``deployment``, oldest first, including terminating ones."""

    @abc.abstractmethod
    def kill_replica(self, deployment: str, name: str | None = None) -> str:
        """SIGKILL a replica's process, as a crash would; return its name."""

    @abc.abstractmethod
    def hang_replica(self, deployment: str, name: str | None = None) -> str:
        """Freeze a replica (SIGSTOP): it keeps its sockets but answers nothing."""

    @abc.abstractmethod
    def resume_replica(self, deployment: str, name: str | None = None) -> str:
        """Unfreeze a hung replica (SIGCONT)."""

    @abc.abstractmethod
    def delete_replica(self, deployment: str, name: str | None = None, *, wait: bool = False) -> str:
        """Delete a replica gracefully, like ``kubectl delete pod``; return its name."""

    @abc.abstractmethod
    def rollout(
        self,
        deployment: str,
        env: Mapping[str, str] | None = None,
        image: str | None = None,
        version: str | None = None,
    ) -> int:
        """Start a rolling update of ``deployment``'s pod template; return the new revision."""

    @abc.abstractmethod
    def wait_for_rollout(self, deployment: str | None = None, timeout_s: float = 60.0) -> float:
        """Wait until every replica runs the current template and is ready; return seconds."""

    @abc.abstractmethod
    def service_url(self, service: str) -> str:
        """The URL that reaches ``service`` from this machine, e.g. ``http://127.0.0.1:PORT``."""

    def metrics_urls(self, service: str) -> list[str]:
        """Base URLs whose ``/metrics`` a Prometheus on this machine scrapes to see ``service``
        as its clients do (the Service's load balancer). A backend that cannot offer them
        raises :class:`~hadrlab.errors.MonitoringError` saying where its metrics are."""
        from hadrlab.errors import MonitoringError

        raise MonitoringError(f"The {type(self).__name__} backend offers no scrape target for {service!r}.")

    @abc.abstractmethod
    def events(self) -> pd.DataFrame:
        """The timeline: columns t (epoch s), kind, replica, detail, object."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop everything this platform started. Idempotent."""

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Options that only the local backend understands; a lab may pass them whatever the backend.
_LOCAL_ONLY_OPTIONS = {"restart_backoff_s", "restart_backoff_max_s", "endpoint_lag_s"}


def backend_name(backend: str | None = None) -> str:
    """The backend the labs run on: ``backend`` if given, else env ``HADRLAB_BACKEND``, else ``"local"``.

    Raises:
        HadrError: a name other than ``local`` or ``kube``.
    """
    name = (backend or os.environ.get("HADRLAB_BACKEND") or "local").strip().lower()
    if name not in ("local", "kube"):
        raise HadrError(
            f"Unknown platform backend {name!r} (from "
            f"{'the backend argument' if backend else 'env HADRLAB_BACKEND'}). "
            f"Choose 'local' or 'kube'."
        )
    return name


def get_platform(backend: str | None = None, **options: Any) -> Platform:
    """Return a platform backend: ``local`` (default) or ``kube``.

    Args:
        backend: ``"local"`` or ``"kube"``; defaults to env ``HADRLAB_BACKEND``, else local.
        **options: passed to the backend, e.g. ``restart_backoff_s=1.0`` for local,
            ``context=`` / ``namespace=`` for kube (see :class:`~hadrlab.platform.kube.KubePlatform`).

    Returns:
        A :class:`Platform`, usable as a context manager.
    """
    name = backend_name(backend)
    if name == "local":
        from hadrlab.platform.local import LocalPlatform

        return LocalPlatform(**options)
    from hadrlab.platform.kube import KubePlatform

    ignored = sorted(set(options) & _LOCAL_ONLY_OPTIONS)
    for key in ignored:
        options.pop(key)
    if ignored:
        print(
            f"Note: {', '.join(ignored)} only tune the local backend; on a cluster the "
            f"kubelet's own restart back-off (10 s, doubling) and endpoint propagation apply."
        )
    return KubePlatform(**options)
