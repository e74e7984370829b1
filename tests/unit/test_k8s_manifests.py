"""Every manifest under infra/k8s/ is valid Kubernetes, checked strictly and offline.

Built-in kinds are validated against the bundled Kubernetes schema in strict mode (a
misspelt field fails). Chaos Mesh kinds have no bundled schema; they are checked against a
strict schema of the fields this course uses, so a typo fails there too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hadrlab.errors import ManifestError
from hadrlab.platform.manifests import validate_manifests, validate_schema

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
MANIFESTS = sorted(K8S.rglob("*.yaml"))

_SELECTOR = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "namespaces": {"type": "array", "items": {"type": "string"}},
        "labelSelectors": {"type": "object", "additionalProperties": {"type": "string"}},
        "nodeSelectors": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_META = {"type": "object", "required": ["name"], "additionalProperties": False,
         "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                        "labels": {"type": "object"}, "annotations": {"type": "object"}}}
_MODES = ["one", "all", "fixed", "fixed-percent", "random-max-percent"]
CHAOS_SCHEMAS = {
    "PodChaos": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "chaos-mesh.org/v1alpha1"}, "kind": {"const": "PodChaos"}, "metadata": _META,
            "spec": {"type": "object", "required": ["action", "mode", "selector"], "additionalProperties": False,
                     "properties": {"action": {"enum": ["pod-kill", "pod-failure", "container-kill"]},
                                    "mode": {"enum": _MODES}, "value": {"type": "string"},
                                    "selector": _SELECTOR, "duration": {"type": "string"},
                                    "gracePeriod": {"type": "integer", "minimum": 0},
                                    "containerNames": {"type": "array", "items": {"type": "string"}}}},
        },
    },
    "NetworkChaos": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "chaos-mesh.org/v1alpha1"}, "kind": {"const": "NetworkChaos"}, "metadata": _META,
            "spec": {"type": "object", "required": ["action", "mode", "selector"], "additionalProperties": False,
                     "properties": {
                         "action": {"enum": ["delay", "loss", "duplicate", "corrupt", "partition", "bandwidth"]},
                         "mode": {"enum": _MODES}, "value": {"type": "string"}, "selector": _SELECTOR,
                         "direction": {"enum": ["to", "from", "both"]}, "duration": {"type": "string"},
                         "target": {"type": "object", "additionalProperties": False, "required": ["mode", "selector"],
                                    "properties": {"mode": {"enum": _MODES}, "selector": _SELECTOR}},
                         "delay": {"type": "object", "additionalProperties": False, "required": ["latency"],
                                   "properties": {"latency": {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s)$"},
                                                  "jitter": {"type": "string"}, "correlation": {"type": "string"}}}}},
        },
    },
}


def validate_chaos(doc: dict, source: str) -> None:
    """Strict check of a Chaos Mesh object; ManifestError names the file and the path."""
    import jsonschema

    schema = CHAOS_SCHEMAS.get(doc.get("kind"))
    if schema is None:
        raise ManifestError(f"{source}: Chaos Mesh kind {doc.get('kind')!r} has no schema in this test; add one.")
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        path = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ManifestError(f"{source}: {doc['kind']} {doc['metadata'].get('name')!r}: at {path}: {err.message}")


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_there_are_manifests_to_check() -> None:
    names = {str(p.relative_to(K8S)) for p in MANIFESTS}
    assert {"model-api.yaml", "redis.yaml", "fraud.yaml", "kind/model-api-service.yaml"} <= names


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_is_valid_kubernetes_in_strict_mode(path: Path) -> None:
    source = str(path.relative_to(ROOT))
    for doc in _docs(path):
        try:
            if str(doc.get("apiVersion", "")).startswith("chaos-mesh.org/"):
                validate_chaos(doc, source)
            else:
                validate_schema(doc, source=source)
        except ManifestError as exc:
            pytest.fail(str(exc))


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_explains_itself_in_comments(path: Path) -> None:
    comments = [line for line in path.read_text().splitlines() if line.lstrip().startswith("#")]
    assert len(comments) >= 3, f"{path.relative_to(ROOT)} has {len(comments)} comment lines; say why values are what they are"


def test_strict_validation_catches_a_misspelt_field() -> None:
    doc = _docs(K8S / "redis.yaml")[-2]  # the Sentinel StatefulSet
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 2
    with pytest.raises(ManifestError, match="periodSecond"):
        validate_schema(doc, source="redis.yaml")


def test_strict_chaos_check_catches_a_misspelt_field() -> None:
    doc = _docs(K8S / "chaos" / "delay-region-a.yaml")[0]
    doc["spec"]["delay"]["latncy"] = doc["spec"]["delay"].pop("latency")
    with pytest.raises(ManifestError, match="spec.delay"):
        validate_chaos(doc, "delay-region-a.yaml")


def test_local_backend_still_reads_the_model_api_and_the_kind_overlay() -> None:
    objects = validate_manifests(str(K8S / "model-api.yaml")) + validate_manifests(str(K8S / "kind" / "model-api-service.yaml"))
    assert [o.kind for o in objects] == ["Deployment", "Service", "PodDisruptionBudget", "Service"]
    assert objects[1].spec.selector == objects[3].spec.selector == {"app": "model-api"}


def test_every_node_port_is_mapped_by_the_kind_cluster_on_loopback() -> None:
    cluster = yaml.safe_load((ROOT / "infra" / "kind" / "cluster.yaml").read_text())
    mapped = {m["containerPort"]: m for n in cluster["nodes"] for m in n.get("extraPortMappings") or []}
    for path in MANIFESTS:
        for doc in _docs(path):
            if doc.get("kind") == "Service" and doc["spec"].get("type") == "NodePort":
                for port in doc["spec"]["ports"]:
                    assert port["nodePort"] in mapped, f"{path.name}: nodePort {port['nodePort']} is not mapped"
                    assert mapped[port["nodePort"]]["listenAddress"] == "127.0.0.1"


def test_kind_cluster_has_two_labelled_regions_and_a_pinned_node_image() -> None:
    cluster = yaml.safe_load((ROOT / "infra" / "kind" / "cluster.yaml").read_text())
    workers = [n for n in cluster["nodes"] if n["role"] == "worker"]
    assert sorted(n["labels"]["topology.kubernetes.io/region"] for n in workers) == ["region-a", "region-b"]
    assert all(n["image"].startswith("kindest/node:v1.31.") and "@sha256:" in n["image"] for n in cluster["nodes"])


def test_redis_and_sentinels_are_pinned_to_their_sites() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _docs(K8S / "redis.yaml")}
    for name, region in (("redis-a", "region-a"), ("redis-b", "region-b"), ("sentinel-a", "region-a"),
                         ("sentinel-b", "region-b")):
        terms = docs[("StatefulSet", name)]["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert terms[0]["matchExpressions"][0]["values"] == [region], name
    # The witness: a third site (kind's control plane), tolerated there for this pod only.
    witness = docs[("StatefulSet", "sentinel-w")]["spec"]["template"]["spec"]
    assert witness["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    assert witness["tolerations"][0]["key"] == "node-role.kubernetes.io/control-plane"
    sentinels = [d for (kind, name), d in docs.items() if kind == "StatefulSet" and name.startswith("sentinel-")]
    assert sum(d["spec"]["replicas"] for d in sentinels) == 3
    assert all(d["spec"]["serviceName"] == "sentinel" for d in sentinels)
    assert docs[("PodDisruptionBudget", "sentinel")]["spec"]["minAvailable"] == 2


def test_every_service_with_metrics_is_scraped_on_a_port_its_container_opens() -> None:
    scraped = {}
    for path in MANIFESTS:
        for doc in _docs(path):
            if doc.get("kind") not in ("Deployment", "StatefulSet"):
                continue
            template = doc["spec"]["template"]
            notes = (template.get("metadata") or {}).get("annotations") or {}
            if notes.get("prometheus.io/scrape") != "true":
                continue
            ports = {p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports") or []}
            assert int(notes["prometheus.io/port"]) in ports, (path.name, doc["metadata"]["name"], ports)
            assert notes["prometheus.io/path"] == "/metrics"
            scraped[doc["metadata"]["name"]] = int(notes["prometheus.io/port"])
    # Every course service that serves /metrics: the model API, the scoring API, the registry, the online API.
    assert {"model-api", "fraud-api", "registry", "online-api"} <= set(scraped), scraped
