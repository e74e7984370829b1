"""Kubernetes manifests: load, validate strictly, and read the subset the local backend honours.

Both backends read the SAME manifests (``infra/k8s/*.yaml``). Every document is first
validated against the Kubernetes schema (offline, strict: a misspelt field such as
``periodSecond`` is refused with its path and a "did you mean" hint). Then the local
backend reads the fields it honours, and lists every other field it found, so nothing is
silently ignored.

Honoured by the local backend (everything else is listed as "not honoured"):

- Deployment: ``spec.replicas``, ``spec.selector.matchLabels``, ``spec.strategy``
  (``RollingUpdate`` with ``maxSurge``/``maxUnavailable`` as numbers or percentages, and
  ``Recreate``), the pod template's labels and annotations,
  ``terminationGracePeriodSeconds``, ``restartPolicy: Always``, and for each container:
  ``name``, ``image`` (recorded as the replica's version; the local backend runs
  ``command``, not the image), ``command``, ``args``, ``env`` (``value``, or ``valueFrom.fieldRef``
  for ``metadata.name``, ``metadata.namespace``, ``status.podIP``), ``ports[0]``
  (``containerPort``, ``name``, ``protocol: TCP``), ``livenessProbe``, ``readinessProbe`` and
  ``startupProbe`` with ``httpGet`` (``path``, ``port``, ``scheme: HTTP``) and
  ``initialDelaySeconds``, ``periodSeconds``, ``timeoutSeconds``, ``failureThreshold``,
  ``successThreshold``, ``terminationGracePeriodSeconds``; ``lifecycle.preStop`` with ``exec``
  (``sleep N`` is a plain wait; any other command runs on this machine) or ``httpGet``.
- Service: ``spec.selector``, ``spec.ports`` (``port``, ``targetPort`` by number or name,
  ``name``, ``protocol: TCP``), ``spec.type: ClusterIP``. The Service listens on a free
  loopback port; ``service_url()`` gives it.
- PodDisruptionBudget: accepted and recorded. The local backend has no voluntary evictions
  (no node drains), so a PDB never blocks anything here.

How the local backend maps a container to a process: a leading ``python`` in ``command`` is
this interpreter (``sys.executable``); the container port is mapped to a free loopback port
per replica, passed to the process as env ``PORT`` (overriding any ``PORT`` in the manifest)
with ``HOST=127.0.0.1`` (replicas listen on loopback only);
probes that name the container port by number or by name target the mapped port.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hadrlab.errors import ManifestError

__all__ = [
    "set_env",
    "SUPPORTED_FIELDS_DOC",
    "KUBE_VERSION",
    "load_manifest",
    "validate_manifests",
    "ManifestObject",
    "ManifestList",
    "ProbeSpec",
    "PreStopSpec",
    "ContainerSpec",
    "DeploymentSpec",
    "ServiceSpec",
    "resolve_int_or_percent",
]

# The Kubernetes version whose schema we validate against. Pinned so that validation is
# the same on every machine; kubernetes-validate bundles it offline.
KUBE_VERSION = "1.30"

SUPPORTED_FIELDS_DOC = """\
### What the local backend honours

The local backend runs each Deployment's containers as processes on this machine and reads
the same manifests as a real cluster. It honours this subset; any other field is listed
when you `apply()` ("not honoured by the local backend: ..."), never silently ignored.

| Object | Honoured fields |
| --- | --- |
| Deployment | `replicas`, `selector.matchLabels`, `strategy` (`RollingUpdate` with `maxSurge` / `maxUnavailable`, numbers or percentages; `Recreate`) |
| Pod template | labels, annotations, `terminationGracePeriodSeconds`, `restartPolicy: Always` |
| Container | `name`, `image` (recorded as the version), `command`, `args`, `env` (`value`; `valueFrom.fieldRef` of `metadata.name`, `metadata.namespace`, `status.podIP`), the first entry of `ports` |
| Probes | `livenessProbe`, `readinessProbe`, `startupProbe` with `httpGet` (`path`, `port`); `initialDelaySeconds`, `periodSeconds`, `timeoutSeconds`, `failureThreshold`, `successThreshold`, `terminationGracePeriodSeconds` |
| Lifecycle | `preStop` with `exec` (`sleep N`, or any command) or `httpGet` |
| Service | `selector`, `ports` (`port`, `targetPort` by number or name), `type: ClusterIP` |
| PodDisruptionBudget | accepted and recorded; the local backend has no voluntary evictions, so it never blocks anything |

> **Note** A leading `python` in `command` runs this Python interpreter. The container port
> is mapped to a free loopback port per replica and passed as env `PORT` (with
> `HOST=127.0.0.1`); probes that name
> the container port (by number or name) go to that mapped port. The Service listens on its
> own free loopback port: use `platform.service_url("model-api")`.
"""

# Fields the local backend honours, as glob patterns over dotted paths ([*] = any index).
_COMMON = [
    "apiVersion",
    "kind",
    "metadata.name",
    "metadata.labels.*",
    "metadata.annotations.*",
]
_CONTAINER = "spec.template.spec.containers[*]"
_PROBE_FIELDS = [
    "httpGet.path",
    "httpGet.port",
    "httpGet.scheme",
    "initialDelaySeconds",
    "periodSeconds",
    "timeoutSeconds",
    "failureThreshold",
    "successThreshold",
    "terminationGracePeriodSeconds",
]
_HONOURED: dict[str, list[str]] = {
    "Deployment": _COMMON
    + [
        "spec.replicas",
        "spec.selector.matchLabels.*",
        "spec.strategy.type",
        "spec.strategy.rollingUpdate.maxSurge",
        "spec.strategy.rollingUpdate.maxUnavailable",
        "spec.template.metadata.labels.*",
        "spec.template.metadata.annotations.*",
        "spec.template.spec.terminationGracePeriodSeconds",
        "spec.template.spec.restartPolicy",
        f"{_CONTAINER}.name",
        f"{_CONTAINER}.image",
        f"{_CONTAINER}.command[*]",
        f"{_CONTAINER}.args[*]",
        f"{_CONTAINER}.env[*].name",
        f"{_CONTAINER}.env[*].value",
        f"{_CONTAINER}.env[*].valueFrom.fieldRef.fieldPath",
        f"{_CONTAINER}.env[*].valueFrom.fieldRef.apiVersion",
        f"{_CONTAINER}.ports[0].containerPort",
        f"{_CONTAINER}.ports[0].name",
        f"{_CONTAINER}.ports[0].protocol",
        f"{_CONTAINER}.lifecycle.preStop.exec.command[*]",
        f"{_CONTAINER}.lifecycle.preStop.httpGet.path",
        f"{_CONTAINER}.lifecycle.preStop.httpGet.port",
        f"{_CONTAINER}.lifecycle.preStop.httpGet.scheme",
    ]
    + [
        f"{_CONTAINER}.{probe}.{name}"
        for probe in ("livenessProbe", "readinessProbe", "startupProbe")
        for name in _PROBE_FIELDS
    ],
    "Service": _COMMON
    + [
        "spec.selector.*",
        "spec.type",
        "spec.ports[*].port",
        "spec.ports[*].targetPort",
        "spec.ports[*].name",
        "spec.ports[*].protocol",
    ],
    "PodDisruptionBudget": _COMMON
    + [
        "spec.minAvailable",
        "spec.maxUnavailable",
        "spec.selector.matchLabels.*",
    ],
}

# Values that are honoured only when they equal what the local backend does anyway.
_ONLY_VALUES: dict[str, set] = {
    "spec.template.spec.restartPolicy": {"Always"},
    "spec.type": {"ClusterIP"},
    "httpGet.scheme": {"HTTP"},
    "protocol": {"TCP"},
    "spec.strategy.type": {"RollingUpdate", "Recreate"},
    "fieldPath": {"metadata.name", "metadata.namespace", "status.podIP"},
}


# --------------------------------------------------------------------------- loading


def set_env(container: dict, name: str, value: Any, *, add: bool = False, source: str = "the manifest") -> None:
    """Set variable ``name`` of ``container`` (a manifest's container, edited in place) to ``value``.

    Used where a lab edits a copy of a manifest in memory before applying it.

    Args:
        container: a container of a loaded manifest.
        name, value: the variable; ``value`` is written as a string (any ``valueFrom`` goes).
        add: add the variable if the manifest does not have it; otherwise a missing one is
            an error (a setting that would silently reach nothing).
        source: the manifest's file, for the error message.
    """
    for item in container.get("env") or []:
        if item["name"] == name:
            item.pop("valueFrom", None)
            item["value"] = str(value)
            return
    if not add:
        raise ManifestError(f"{source}: container {container['name']!r} has no variable {name} to set; "
                            f"restore the file from git (`git checkout {source}`).")
    container.setdefault("env", []).append({"name": name, "value": str(value)})


def load_manifest(path: str | os.PathLike, *, validate: bool = True) -> list[dict]:
    """Read a YAML file of Kubernetes manifests into a list of plain dicts.

    Edit the dicts freely (a variant without probes is ``del container["livenessProbe"]``)
    and pass the list to ``platform.apply()``.

    Args:
        path: the YAML file, e.g. ``"infra/k8s/model-api.yaml"``.
        validate: validate each document strictly against the Kubernetes schema.

    Returns:
        One dict per non-empty document, in file order.
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ManifestError(
            f"Could not read the manifest file {str(path)!r}: {exc.strerror}. "
            f"Check the path (relative paths start from {os.getcwd()})."
        ) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: is not valid YAML: {exc}. Fix the indentation or quoting.") from None
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise ManifestError(
                f"{path}: document {i + 1} is a {type(doc).__name__}, not a Kubernetes object "
                f"(a mapping with apiVersion, kind, metadata)."
            )
    if validate:
        for doc in docs:
            validate_schema(doc, source=str(path))
    return ManifestList(docs, source=str(path))


class ManifestList(list):
    """A list of manifest dicts that remembers the file it came from (for messages)."""

    def __init__(self, docs: Iterable[dict] = (), source: str | None = None) -> None:
        super().__init__(docs)
        self.source = source


def _format_path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _describe(doc: Mapping) -> str:
    kind = doc.get("kind", "?")
    name = (doc.get("metadata") or {}).get("name", "?")
    return f"{kind} {name!r}"


def validate_schema(doc: dict, *, source: str = "<dicts>", kube_version: str = KUBE_VERSION) -> None:
    """Validate one document strictly against the Kubernetes schema; raise ManifestError.

    The error names the file, the object, the field path and, for a misspelt field, the
    closest valid name.
    """
    import kubernetes_validate as kv

    for key in ("apiVersion", "kind"):
        if key not in doc:
            raise ManifestError(
                f"{source}: a document has no {key!r} ({_describe(doc)}). Every Kubernetes "
                f"object needs apiVersion, kind and metadata.name."
            )
    try:
        kv.validate(doc, kube_version, strict=True)
    except kv.SchemaNotFoundError as exc:
        raise ManifestError(
            f"{source}: {_describe(doc)}: {exc.message}. Check apiVersion and kind "
            f"(e.g. apps/v1 Deployment, v1 Service, policy/v1 PodDisruptionBudget)."
        ) from None
    except kv.ValidationError as exc:
        base = list(exc.absolute_path)
        hint = ""
        path = _format_path(base)
        # A misspelt required field fails as "X is a required property" (required is checked
        # before additionalProperties): the unknown field beside it is the real mistake.
        if (exc.validator == "required" and isinstance(exc.instance, dict)
                and any(k not in (exc.schema or {}).get("properties", {}) for k in exc.instance)):
            known = list((exc.schema or {}).get("properties", {}))
            extra = [k for k in exc.instance if k not in known]
            path = _format_path(base + [extra[0]])
            close = difflib.get_close_matches(extra[0], known, n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]}?" if close else f" Valid fields here: {', '.join(sorted(known))}."
            message = f"unknown field {extra[0]!r} ({exc.message})"
        elif exc.validator == "additionalProperties" and isinstance(exc.instance, dict):
            known = list((exc.schema or {}).get("properties", {}))
            extra = [k for k in exc.instance if k not in known]
            if extra:
                path = _format_path(base + [extra[0]])
                close = difflib.get_close_matches(extra[0], known, n=1, cutoff=0.6)
                hint = (
                    f" Did you mean {close[0]}?"
                    if close
                    else f" Valid fields here: {', '.join(sorted(known))}."
                )
                message = f"unknown field {extra[0]!r}"
            else:
                message = exc.message
        else:
            message = exc.message
        err = ManifestError(
            f"{source}: {_describe(doc)} is not a valid Kubernetes {doc.get('kind')} "
            f"(schema {kube_version}): at {path or '(top level)'}: {message}.{hint}"
        )
        err.source = source
        err.kind = doc.get("kind")
        err.name = (doc.get("metadata") or {}).get("name")
        err.path = path
        err.hint = hint.strip()
        raise err from None


# --------------------------------------------------------------------------- honoured subset


def _leaf_paths(value: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            yield from _leaf_paths(sub, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and value:
        for i, sub in enumerate(value):
            yield from _leaf_paths(sub, f"{prefix}[{i}]")
    else:
        yield prefix, value


def _glob(pattern: str) -> re.Pattern:
    # fnmatch treats [..] as a character class; we mean literal indices, [*] = any index.
    # A trailing .* is a map (labels, annotations) whose keys may hold dots themselves.
    tail = r"\..+" if pattern.endswith(".*") else ""
    if tail:
        pattern = pattern[:-2]
    regex = re.escape(pattern).replace(r"\[\*\]", r"\[\d+\]").replace(r"\*", r"[^.\[]+")
    return re.compile(regex + tail + r"$")


_PATTERNS = {kind: [_glob(p) for p in pats] for kind, pats in _HONOURED.items()}


def _value_ok(path: str, value: Any) -> bool:
    for suffix, allowed in _ONLY_VALUES.items():
        if path == suffix or path.endswith("." + suffix):
            return value in allowed
    return True


def find_not_honoured(doc: Mapping) -> list[str]:
    """Return the paths of fields present in ``doc`` that the local backend does not honour."""
    patterns = _PATTERNS.get(doc.get("kind", ""))
    if patterns is None:
        return ["(the whole object)"]
    out = []
    for path, value in _leaf_paths(doc):
        if not any(p.match(path) for p in patterns) or not _value_ok(path, value):
            out.append(path if _value_ok(path, value) else f"{path}={value}")
    return out


# --------------------------------------------------------------------------- parsed specs


@dataclass
class ProbeSpec:
    """An httpGet probe, with Kubernetes defaults for fields the manifest leaves out."""

    path: str = "/"
    port: int | str = 0
    initial_delay_s: float = 0.0
    period_s: float = 10.0
    timeout_s: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1
    termination_grace_s: float | None = None

    @classmethod
    def from_manifest(cls, probe: Mapping | None) -> ProbeSpec | None:
        if not probe or "httpGet" not in probe:
            return None
        http = probe["httpGet"]
        return cls(
            path=http.get("path", "/"),
            port=http.get("port", 0),
            initial_delay_s=float(probe.get("initialDelaySeconds", 0)),
            period_s=float(probe.get("periodSeconds", 10)),
            timeout_s=float(probe.get("timeoutSeconds", 1)),
            failure_threshold=int(probe.get("failureThreshold", 3)),
            success_threshold=int(probe.get("successThreshold", 1)),
            termination_grace_s=(
                float(probe["terminationGracePeriodSeconds"])
                if "terminationGracePeriodSeconds" in probe
                else None
            ),
        )


@dataclass
class PreStopSpec:
    """A preStop hook: a plain wait (``sleep N``), a command, or an HTTP GET."""

    sleep_s: float | None = None
    command: list[str] | None = None
    http_path: str | None = None
    http_port: int | str | None = None

    @classmethod
    def from_manifest(cls, lifecycle: Mapping | None) -> PreStopSpec | None:
        pre = (lifecycle or {}).get("preStop")
        if not pre:
            return None
        if "exec" in pre:
            cmd = list(pre["exec"].get("command", []))
            sleep_s = _parse_sleep(cmd)
            return cls(sleep_s=sleep_s) if sleep_s is not None else cls(command=cmd)
        if "httpGet" in pre:
            return cls(http_path=pre["httpGet"].get("path", "/"), http_port=pre["httpGet"].get("port"))
        if "sleep" in pre:  # the native sleep action (Kubernetes 1.29+)
            return cls(sleep_s=float(pre["sleep"].get("seconds", 0)))
        return None


def _parse_sleep(cmd: Sequence[str]) -> float | None:
    """``["sleep", "5"]`` or ``["/bin/sh", "-c", "sleep 5"]`` -> 5.0; else None."""
    words = list(cmd)
    if len(words) == 3 and os.path.basename(words[0]) in ("sh", "bash") and words[1] == "-c":
        words = shlex.split(words[2])
    if len(words) == 2 and os.path.basename(words[0]) == "sleep":
        try:
            return float(words[1])
        except ValueError:
            return None
    return None


@dataclass
class ContainerSpec:
    """The parts of a container the local backend runs."""

    name: str
    image: str
    argv: list[str]
    env: dict[str, str]
    field_env: dict[str, str]
    port: int | None
    port_name: str | None
    liveness: ProbeSpec | None
    readiness: ProbeSpec | None
    startup: ProbeSpec | None
    pre_stop: PreStopSpec | None

    def resolve_port(self, port: int | str | None, where: str) -> int | None:
        """Check a probe/hook port names the container port; return the container port."""
        if port in (None, 0):
            return self.port
        if port == self.port or (self.port_name and port == self.port_name):
            return self.port
        raise ManifestError(
            f"{where} targets port {port!r}, but the container declares only "
            f"{self.port!r}{f' (named {self.port_name!r})' if self.port_name else ''}. "
            f"The local backend maps only the declared container port: point the probe at it."
        )

    @property
    def version(self) -> str:
        if "MODEL_VERSION" in self.env:
            return self.env["MODEL_VERSION"]
        if ":" in self.image.rsplit("/", 1)[-1]:
            return self.image.rsplit(":", 1)[-1]
        return self.image


@dataclass
class DeploymentSpec:
    """A Deployment, read into what the local controller needs."""

    name: str
    replicas: int
    labels: dict[str, str]
    selector: dict[str, str]
    strategy: str
    max_surge: int | str
    max_unavailable: int | str
    grace_s: float
    container: ContainerSpec
    manifest: dict = field(repr=False)


@dataclass
class ServiceSpec:
    """A Service: which pods it selects and which port it forwards to."""

    name: str
    selector: dict[str, str]
    port: int
    target_port: int | str
    manifest: dict = field(repr=False)


@dataclass
class ManifestObject:
    """One object from the manifests, after validation: what apply() acts on and reports."""

    kind: str
    name: str
    not_honoured: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    spec: DeploymentSpec | ServiceSpec | dict | None = field(default=None, repr=False)
    manifest: dict = field(default_factory=dict, repr=False)
    source: str = "<dicts>"


def resolve_int_or_percent(value: int | str, total: int, *, round_up: bool) -> int:
    """Resolve ``maxSurge``/``maxUnavailable`` (``1`` or ``"25%"``) against ``total``.

    Kubernetes rounds maxSurge up and maxUnavailable down.
    """
    if isinstance(value, str) and value.endswith("%"):
        raw = float(value[:-1]) * total / 100.0
        return int(math.ceil(raw) if round_up else math.floor(raw))
    return int(value)


def _map_python(argv: list[str]) -> list[str]:
    if argv and argv[0] in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    return argv


def _parse_container(c: Mapping, where: str) -> ContainerSpec:
    argv = _map_python([str(a) for a in (c.get("command") or []) + (c.get("args") or [])])
    if not argv:
        raise ManifestError(
            f"{where}: container {c.get('name')!r} has no command. The local backend runs the "
            f"container's command as a process (it cannot run the image): add "
            f"command: [python, -m, hadrlab.serving] or similar."
        )
    env: dict[str, str] = {}
    field_env: dict[str, str] = {}
    for item in c.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif (item.get("valueFrom") or {}).get("fieldRef"):
            field_env[item["name"]] = item["valueFrom"]["fieldRef"]["fieldPath"]
    ports = c.get("ports") or []
    port = int(ports[0]["containerPort"]) if ports else None
    port_name = ports[0].get("name") if ports else None
    spec = ContainerSpec(
        name=c["name"],
        image=c.get("image", ""),
        argv=argv,
        env=env,
        field_env=field_env,
        port=port,
        port_name=port_name,
        liveness=ProbeSpec.from_manifest(c.get("livenessProbe")),
        readiness=ProbeSpec.from_manifest(c.get("readinessProbe")),
        startup=ProbeSpec.from_manifest(c.get("startupProbe")),
        pre_stop=PreStopSpec.from_manifest(c.get("lifecycle")),
    )
    for label, probe in (("livenessProbe", spec.liveness), ("readinessProbe", spec.readiness),
                         ("startupProbe", spec.startup)):
        if probe is not None:
            spec.resolve_port(probe.port, f"{where}: {label}")
    if spec.pre_stop and spec.pre_stop.http_path is not None:
        spec.resolve_port(spec.pre_stop.http_port, f"{where}: lifecycle.preStop.httpGet")
    return spec


def _parse_deployment(doc: dict, where: str) -> DeploymentSpec:
    spec = doc.get("spec", {})
    template = spec.get("template", {})
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    selector = dict((spec.get("selector") or {}).get("matchLabels") or {})
    if any(labels.get(k) != v for k, v in selector.items()):
        raise ManifestError(
            f"{where}: spec.selector.matchLabels {selector} does not match the pod template "
            f"labels {labels}; Kubernetes refuses such a Deployment. Make the labels agree."
        )
    containers = template.get("spec", {}).get("containers", [])
    strategy = spec.get("strategy") or {}
    rolling = strategy.get("rollingUpdate") or {}
    return DeploymentSpec(
        name=doc["metadata"]["name"],
        replicas=int(spec.get("replicas", 1)),
        labels=labels,
        selector=selector,
        strategy=strategy.get("type", "RollingUpdate"),
        max_surge=rolling.get("maxSurge", "25%"),
        max_unavailable=rolling.get("maxUnavailable", "25%"),
        grace_s=float(template.get("spec", {}).get("terminationGracePeriodSeconds", 30)),
        container=_parse_container(containers[0], f"{where}: containers[0]"),
        manifest=doc,
    )


def _parse_service(doc: dict, where: str) -> ServiceSpec:
    spec = doc.get("spec", {})
    ports = spec.get("ports") or []
    if not ports:
        raise ManifestError(f"{where}: the Service has no ports; add ports: [{{port: 80, targetPort: http}}].")
    return ServiceSpec(
        name=doc["metadata"]["name"],
        selector=dict(spec.get("selector") or {}),
        port=int(ports[0]["port"]),
        target_port=ports[0].get("targetPort", ports[0]["port"]),
        manifest=doc,
    )


def validate_manifests(
    docs: str | os.PathLike | Mapping | Sequence[Mapping],
    *,
    source: str | None = None,
    kube_version: str = KUBE_VERSION,
) -> list[ManifestObject]:
    """Validate manifests strictly and read the subset the local backend honours.

    Args:
        docs: a YAML file path, one manifest dict, or a list of them.
        source: the name used in messages (defaults to the file name, or ``<dicts>``).
        kube_version: the Kubernetes schema version to validate against.

    Returns:
        One :class:`ManifestObject` per document, with ``not_honoured`` listing every field
        the local backend will not act on (a list for the learner, not an error).

    Raises:
        ManifestError: a document is not valid Kubernetes, or asks for something the local
            backend cannot map (e.g. a probe on an undeclared port).
    """
    if isinstance(docs, (str, os.PathLike)):
        source = source or str(docs)
        docs = load_manifest(docs, validate=False)
    elif isinstance(docs, Mapping):
        docs = [docs]
    source = source or getattr(docs, "source", None) or "<dicts>"
    objects = []
    for doc in docs:
        doc = copy.deepcopy(dict(doc))
        validate_schema(doc, source=source, kube_version=kube_version)
        kind = doc["kind"]
        name = doc.get("metadata", {}).get("name", "?")
        where = f"{source}: {kind} {name!r}"
        obj = ManifestObject(kind=kind, name=name, manifest=doc, source=source)
        obj.not_honoured = find_not_honoured(doc)
        if kind == "Deployment":
            obj.spec = _parse_deployment(doc, where)
            containers = doc["spec"]["template"]["spec"]["containers"]
            if len(containers) > 1:
                obj.notes.append("only the first container runs; sidecars are not honoured")
        elif kind == "Service":
            obj.spec = _parse_service(doc, where)
        elif kind == "PodDisruptionBudget":
            obj.spec = dict(doc.get("spec", {}))
            obj.notes.append(
                "recorded only: the local backend has no voluntary evictions (no node drains), "
                "so this budget never blocks anything here"
            )
        else:
            obj.notes.append(f"kind {kind} is not honoured by the local backend; it is skipped")
        objects.append(obj)
    return objects
