"""Scenarios of Lab 01: manifest helpers, probe timings, and one real kill under load."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from hadrlab.errors import ManifestError
from hadrlab.platform.manifests import load_manifest
from hadrlab.scenarios import (
    container_of,
    deployment_of,
    get_env,
    probe_timings,
    run_scenario,
    service_of,
    set_env,
)

MANIFEST = Path(__file__).resolve().parents[2] / "infra" / "k8s" / "model-api.yaml"


@pytest.fixture
def docs() -> list[dict]:
    return load_manifest(MANIFEST)


def test_helpers_edit_the_manifest_in_place(docs):
    container = container_of(docs)
    set_env(container, "SHUTDOWN_DRAIN_S", 5)
    set_env(container, "NEW_VAR", "x")
    deployment_of(docs)["spec"]["replicas"] = 3
    assert get_env(container_of(docs), "SHUTDOWN_DRAIN_S") == "5"
    assert get_env(container_of(docs), "NEW_VAR") == "x"
    assert docs[0]["spec"]["replicas"] == 3
    assert service_of(docs)["kind"] == "Service"


def test_a_missing_object_is_named_in_the_error(docs):
    with pytest.raises(ManifestError, match="no Deployment/other"):
        deployment_of(docs, "other")


def test_probe_timings_read_the_lab_manifest(docs):
    t = probe_timings(docs)
    assert t.startup_budget_s == 15.0  # periodSeconds 1 x failureThreshold 15
    assert t.liveness_detection_s == 2 * 3 + 1
    assert t.pod_grace_s == 10.0
    assert t.liveness_grace_s == 1.0  # the liveness probe's own grace period wins
    assert (t.pre_stop_s, t.drain_s) == (2.0, 2.0)


def test_probe_timings_without_probes_use_kubernetes_defaults(docs):
    bare = copy.deepcopy(docs)
    c = container_of(bare)
    for key in ("startupProbe", "readinessProbe", "livenessProbe", "lifecycle"):
        c.pop(key)
    bare[0]["spec"]["template"]["spec"].pop("terminationGracePeriodSeconds")
    t = probe_timings(bare)
    assert t.startup_budget_s is None and t.liveness_detection_s is None
    assert t.pod_grace_s == 30.0 and t.pre_stop_s == 0.0


@pytest.mark.slow
def test_killing_the_only_replica_fails_requests_after_the_fault(docs):
    """One replica without probes, killed under load: the steady state held, then requests failed."""
    one = copy.deepcopy(docs)
    deployment_of(one)["spec"]["replicas"] = 1
    c = container_of(one)
    for key in ("startupProbe", "readinessProbe", "livenessProbe", "lifecycle"):
        c.pop(key)
    set_env(c, "SHUTDOWN_DRAIN_S", 0)
    set_env(c, "MODEL_LOAD_DELAY_S", 1)
    result = run_scenario(one, "kill", label="one", users=2, duration_s=5, fault_at_s=2, wait_ms=20)
    assert result.target is not None and result.target.startswith("model-api-")
    assert result.steady_availability == pytest.approx(1.0)
    assert result.summary.failures > 0
    assert result.time_until("killed", result.target) == pytest.approx(0.0, abs=0.5)
    assert result.time_until("restarted", result.target) is not None
    failed = result.load.timeline.query("not ok")
    assert (failed["t_end"] >= result.fault_t - 0.5).all()
    assert docs[0]["spec"]["replicas"] == 2, "run_scenario must not change the manifests it was given"
