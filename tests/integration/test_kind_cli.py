"""`python -m hadrlab.kind` on a machine without Docker, and the Lab 01 path on a real cluster.

The first tests run everywhere: they check that `up` fails fast and says exactly what is
missing and how to install it. The last one needs the course's kind cluster
(`python -m hadrlab.kind up`) and runs only under `python -m hadrlab.kind test`
(HADRLAB_BACKEND=kube); elsewhere it is skipped, saying why.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_kind(*args: str, path: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path}
    return subprocess.run([sys.executable, "-m", "hadrlab.kind", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_up_without_docker_kind_kubectl_fails_fast_and_says_how_to_install_each(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_kind("up", path=str(tmp_path))
    assert result.returncode == 2
    assert time.monotonic() - started < 30
    for tool in ("docker", "kind", "kubectl"):
        assert f"  {tool}: " in result.stderr
    for os_name in ("linux", "macos", "windows"):
        assert result.stderr.count(os_name) >= 3
    assert "brew install kind" in result.stderr and "local backend" in result.stderr


def _stub(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_up_with_a_stopped_docker_daemon_says_to_start_it(tmp_path: Path) -> None:
    _stub(tmp_path, "docker", 'echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock." >&2; exit 1')
    _stub(tmp_path, "kind", "exit 0")
    _stub(tmp_path, "kubectl", "exit 0")
    result = run_kind("up", path=f"{tmp_path}:/usr/bin:/bin")
    assert result.returncode == 2
    assert "daemon does not answer" in result.stderr and "Cannot connect to the Docker daemon" in result.stderr


def test_down_on_a_machine_without_kind_is_not_an_error(tmp_path: Path) -> None:
    result = run_kind("down", path=str(tmp_path))
    assert result.returncode == 0
    assert "no kind cluster 'hadrlab' to delete" in result.stdout


def test_down_of_a_missing_cluster_is_not_an_error(tmp_path: Path) -> None:
    _stub(tmp_path, "docker", "exit 0")
    _stub(tmp_path, "kind", 'if [ "$1 $2" = "get clusters" ]; then echo "No kind clusters found." >&2; fi; exit 0')
    result = run_kind("down", path=f"{tmp_path}:/usr/bin:/bin")
    assert result.returncode == 0 and "nothing to delete" in result.stdout


def test_chaos_mesh_is_installed_with_helm_once_and_pinned(tmp_path: Path, monkeypatch, capsys) -> None:
    from hadrlab import kind

    log = tmp_path / "helm.log"
    installed = tmp_path / "installed"
    # A helm that remembers: `status` fails until `upgrade --install` ran.
    _stub(tmp_path, "helm", f'echo "$@" >> {log}\n'
                            f'if [ "$1" = status ]; then [ -f {installed} ] || {{ echo "Error: release: not found"; exit 1; }}; fi\n'
                            f'if [ "$1" = upgrade ]; then touch {installed}; fi\nexit 0')
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert kind.install_chaos_mesh() is True
    calls = log.read_text().splitlines()
    assert calls[0].startswith("status chaos-mesh --namespace chaos-mesh --kube-context kind-hadrlab")
    install = next(c for c in calls if c.startswith("upgrade --install chaos-mesh chaos-mesh/chaos-mesh"))
    assert f"--version {kind.CHAOS_MESH_VERSION}" in install and "chaosDaemon.runtime=containerd" in install
    assert "--wait" in install and "--kube-context kind-hadrlab" in install
    # Run again: already there, nothing installed twice.
    assert kind.install_chaos_mesh() is True
    assert sum(c.startswith("upgrade") for c in log.read_text().splitlines()) == 1
    assert "Chaos Mesh is installed" in capsys.readouterr().out


def test_without_helm_chaos_mesh_is_skipped_with_a_note_that_says_how(tmp_path: Path, monkeypatch, capsys) -> None:
    from hadrlab import kind

    monkeypatch.setenv("PATH", str(tmp_path))
    assert kind.install_chaos_mesh() is False
    out = capsys.readouterr().out
    assert "helm is not installed" in out and "brew install helm" in out and "--no-chaos-mesh" in out


def test_a_failing_chart_repository_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    from hadrlab import kind
    from hadrlab.errors import HadrError

    _stub(tmp_path, "helm", 'if [ "$1" = repo ]; then echo "Error: looks like the URL is not reachable"; exit 1; fi; exit 1')
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    with pytest.raises(HadrError, match="not reachable.*--no-chaos-mesh"):
        kind.install_chaos_mesh()


def test_unknown_verb_prints_the_usage() -> None:
    result = run_kind("sideways", path=os.environ.get("PATH", ""))
    assert result.returncode == 64 and "usage: python -m hadrlab.kind up" in result.stderr


# --------------------------------------------------------------------------- real cluster


def _cluster_or_skip():
    if os.environ.get("HADRLAB_BACKEND", "").lower() != "kube":
        pytest.skip("needs the kind cluster: run `python -m hadrlab.kind up`, then `python -m hadrlab.kind test`")
    from hadrlab.platform import get_platform

    return get_platform("kube", quiet=True)


@pytest.mark.slow
def test_lab01_faults_on_the_kind_cluster() -> None:
    """A killed replica restarts in place, a hung one is restarted by liveness, v2 rolls out."""
    import httpx

    from hadrlab.processes import wait_until
    from hadrlab.serving import predict_payload

    platform = _cluster_or_skip()
    try:
        platform.apply(ROOT / "infra" / "k8s" / "model-api.yaml")
        platform.apply(ROOT / "infra" / "k8s" / "kind" / "model-api-service.yaml")
        platform.wait_for_rollout("model-api", timeout_s=180)
        url = platform.service_url("model-api")
        answer = httpx.post(url + "/predict", json=predict_payload(2, seed=0), timeout=10).json()
        assert len(answer["predictions"]) == 2

        victim = platform.kill_replica("model-api")
        wait_until(lambda: any(r.name == victim and r.restarts >= 1 and r.ready for r in platform.replicas("model-api")),
                   timeout_s=120, describe=f"{victim} restarted in place and ready")
        kinds = set(platform.events().query("replica == @victim")["kind"])
        assert {"killed", "restarted", "endpoint-removed"} <= kinds, kinds

        hung = platform.hang_replica("model-api")
        restarted = lambda: len(platform.events().query("replica == @hung and kind == 'restarted'"))  # noqa: E731
        wait_until(lambda: restarted() >= 1 and any(r.name == hung and r.ready for r in platform.replicas("model-api")),
                   timeout_s=120, describe=f"{hung} restarted by its liveness probe")
        assert "liveness-failed" in set(platform.events().query("replica == @hung")["kind"])

        platform.rollout("model-api", version="v2")
        platform.wait_for_rollout("model-api", timeout_s=180)
        assert {r.version for r in platform.replicas("model-api") if r.phase == "Running"} == {"v2"}
    finally:
        platform.apply(ROOT / "infra" / "k8s" / "model-api.yaml")  # back to v1 for the next run
        platform.close()


@pytest.mark.slow
def test_lab02_failover_and_rpo_on_the_kind_cluster() -> None:
    """Sentinel fails the primary over across the two workers; WAIT loses no acknowledged write."""
    from hadrlab.platform.kube_featurestore import start_kube_feature_store

    platform = _cluster_or_skip()
    try:
        fs = start_kube_feature_store(platform, down_after_ms=1000, timeout_s=300)
        old = fs.current_primary()
        rto = fs.measure_write_rto(kill="primary", timeout_s=60)
        assert rto.new_primary not in (None, old), rto
        assert 1.0 < rto.rto_s < 30, rto
        assert "+switch-master" in set(rto.events["kind"]), rto.events
        fs.wait_until_linked(timeout_s=120)  # the crashed server is back, as a replica
        rpo = fs.measure_rpo(mode="wait", duration_s=3, lag_fault="pause", pause_s=1.0)
        assert rpo.acknowledged > 0 and rpo.lost_acknowledged == 0, rpo
        fs.wait_until_linked(timeout_s=120)
    finally:
        platform.close()
