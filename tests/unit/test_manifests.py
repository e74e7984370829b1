"""Manifest validation: strict Kubernetes schema, helpful errors, the honoured subset listed."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

from hadrlab.errors import HadrError, ManifestError
from hadrlab.platform import SUPPORTED_FIELDS_DOC, get_platform, load_manifest, validate_manifests
from hadrlab.platform.manifests import resolve_int_or_percent

ROOT = Path(__file__).resolve().parents[2]
MODEL_API = ROOT / "infra" / "k8s" / "model-api.yaml"


def _container(docs: list[dict]) -> dict:
    return docs[0]["spec"]["template"]["spec"]["containers"][0]


def test_model_api_manifest_is_valid_and_fully_honoured():
    objects = validate_manifests(MODEL_API)
    assert [(o.kind, o.name) for o in objects] == [
        ("Deployment", "model-api"),
        ("Service", "model-api"),
        ("PodDisruptionBudget", "model-api"),
    ]
    assert all(o.not_honoured == [] for o in objects)
    dep = objects[0].spec
    assert dep.replicas == 2 and dep.max_unavailable == 0
    assert dep.container.argv[0] == sys.executable  # a leading python is this interpreter
    assert dep.container.readiness.path == "/readyz"
    assert dep.container.pre_stop.sleep_s > 0
    assert "no voluntary evictions" in objects[2].notes[0]


def test_misspelt_field_is_refused_with_file_path_and_hint():
    docs = load_manifest(MODEL_API)
    _container(docs)["readinessProbe"]["periodSecond"] = 3
    with pytest.raises(ManifestError) as info:
        validate_manifests(docs)
    err = info.value
    assert err.path == "spec.template.spec.containers[0].readinessProbe.periodSecond"
    assert "Did you mean periodSeconds?" in str(err)
    assert "model-api.yaml" in str(err) and "Deployment 'model-api'" in str(err)


def test_misspelt_required_field_is_named_not_just_the_missing_one():
    docs = load_manifest(MODEL_API)
    port = _container(docs)["ports"][0]
    port["containerPrt"] = port.pop("containerPort")
    with pytest.raises(ManifestError) as info:
        validate_manifests(docs)
    assert info.value.path == "spec.template.spec.containers[0].ports[0].containerPrt"
    assert "unknown field 'containerPrt'" in str(info.value) and "Did you mean containerPort?" in str(info.value)


def test_wrong_type_is_refused_with_its_path():
    docs = load_manifest(MODEL_API)
    docs[0]["spec"]["replicas"] = "two"
    with pytest.raises(ManifestError, match=r"at spec\.replicas"):
        validate_manifests(docs)


def test_unhonoured_fields_are_listed_not_refused():
    docs = load_manifest(MODEL_API)
    container = _container(docs)
    container["resources"] = {"limits": {"cpu": "500m"}}
    container["imagePullPolicy"] = "IfNotPresent"
    docs[0]["spec"]["template"]["spec"]["nodeSelector"] = {"disk": "ssd"}
    objects = validate_manifests(docs)
    assert sorted(objects[0].not_honoured) == [
        "spec.template.spec.containers[0].imagePullPolicy",
        "spec.template.spec.containers[0].resources.limits.cpu",
        "spec.template.spec.nodeSelector.disk",
    ]


def test_unsupported_value_and_unknown_kind_are_listed():
    docs = load_manifest(MODEL_API)
    docs[1]["spec"]["type"] = "NodePort"
    docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "b"}})
    objects = validate_manifests(docs)
    assert objects[1].not_honoured == ["spec.type=NodePort"]
    assert objects[3].not_honoured == ["(the whole object)"]
    assert "not honoured by the local backend" in objects[3].notes[0]


def test_probe_on_undeclared_port_is_refused():
    docs = load_manifest(MODEL_API)
    _container(docs)["livenessProbe"]["httpGet"]["port"] = 9999
    with pytest.raises(ManifestError, match="targets port 9999"):
        validate_manifests(docs)


def test_variants_are_plain_dict_edits():
    docs = load_manifest(MODEL_API)
    variant = copy.deepcopy(docs)
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        del _container(variant)[probe]
    dep = validate_manifests(variant)[0].spec
    assert dep.container.readiness is None and dep.container.liveness is None
    assert validate_manifests(docs)[0].spec.container.readiness is not None  # original untouched


def test_percentages_round_like_kubernetes():
    assert resolve_int_or_percent("25%", 2, round_up=True) == 1  # maxSurge rounds up
    assert resolve_int_or_percent("25%", 2, round_up=False) == 0  # maxUnavailable rounds down
    assert resolve_int_or_percent(1, 10, round_up=False) == 1


def test_supported_fields_doc_names_the_subset():
    for name in ("readinessProbe", "maxUnavailable", "preStop", "PodDisruptionBudget"):
        assert name in SUPPORTED_FIELDS_DOC


def test_kube_backend_without_a_cluster_is_refused_clearly(monkeypatch, tmp_path):
    """With no reachable cluster, choosing the kube backend says how to create one."""
    monkeypatch.setenv("HADRLAB_BACKEND", "kube")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    with pytest.raises(HadrError, match="hadrlab.kind up"):
        get_platform()
    with pytest.raises(HadrError, match="Unknown platform backend 'nomad'"):
        get_platform("nomad")
