"""Platforms that run the labs' services: the interface, and the local and kube backends.

    get_platform()          -> LocalPlatform (default) or KubePlatform (HADRLAB_BACKEND=kube)
    backend_name()          -> "local" or "kube", from HADRLAB_BACKEND
    load_manifest(path)     -> list of manifest dicts to edit and apply
    validate_manifests(x)   -> strict Kubernetes validation + the local backend's subset

See :mod:`hadrlab.platform.manifests` for the fields the local backend honours.
"""

from __future__ import annotations

from hadrlab.platform.base import AppliedObject, ApplyResult, Platform, Replica, backend_name, get_platform
from hadrlab.platform.manifests import SUPPORTED_FIELDS_DOC, load_manifest, validate_manifests

__all__ = [
    "AppliedObject",
    "ApplyResult",
    "LocalPlatform",
    "Platform",
    "Replica",
    "SUPPORTED_FIELDS_DOC",
    "backend_name",
    "get_platform",
    "load_manifest",
    "validate_manifests",
]


def __getattr__(name: str):
    # The local backend starts threads and processes only when used; import it lazily.
    if name == "LocalPlatform":
        from hadrlab.platform.local import LocalPlatform

        return LocalPlatform
    raise AttributeError(f"module 'hadrlab.platform' has no attribute {name!r}")
