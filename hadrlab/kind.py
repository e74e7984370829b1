"""The course's local Kubernetes cluster on kind: create, fill, check, test, delete.

    python -m hadrlab.kind up       check docker/kind/kubectl, create the cluster (or reuse
                                    it), install Chaos Mesh (with helm), build and load the
                                    image, apply the manifests, wait for the rollouts, print
                                    what is where
    python -m hadrlab.kind status   the cluster's nodes and pods
    python -m hadrlab.kind test     the integration tests and lab notebooks, HADRLAB_BACKEND=kube
    python -m hadrlab.kind down     delete the cluster (deleting a missing one is fine)

Everything the labs reach is on 127.0.0.1 (NodePorts mapped by ``infra/kind/cluster.yaml``).
See ``infra/kind/README.md`` for the walk-through and the traps.
"""

from __future__ import annotations

import os
import platform as _platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hadrlab.errors import HadrError, SetupError

__all__ = ["CLUSTER", "CONTEXT", "IMAGE", "IMAGE_TAGS", "MANIFESTS", "CHAOS_MESH_VERSION", "missing_tools",
           "install_chaos_mesh", "up", "down", "status", "test", "main"]

CLUSTER = "hadrlab"
CONTEXT = f"kind-{CLUSTER}"
ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "infra" / "kind" / "cluster.yaml"
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"
# One image for every service; the manifests name it by these tags. The model-api tags
# exist so that a rolling update to "v2" finds its image (the version is MODEL_VERSION).
IMAGE = "hadrlab/course:v1"
IMAGE_TAGS = ["hadrlab/model-api:v1", "hadrlab/model-api:v2"]
# Pulled once on the host and loaded into the nodes, so a cluster re-created later does not
# pull again (and Docker Hub's rate limit is met once per machine, not once per node).
EXTERNAL_IMAGES = ["redis:7.2.5-alpine"]
MANIFESTS = ["model-api.yaml", "kind/model-api-service.yaml", "redis.yaml", "fraud.yaml", "pipeline.yaml"]
STATEFULSETS = ["redis-a", "redis-b", "sentinel-a", "sentinel-b", "sentinel-w", "registry"]
# The network faults of Labs 02 and 03 (a slow region, a partition) are Chaos Mesh objects.
# Pinned: its NetworkChaos fields are what infra/k8s/chaos/*.yaml and the kube backend write.
CHAOS_MESH_VERSION = "2.8.2"
CHAOS_MESH_NAMESPACE = "chaos-mesh"
ENDPOINTS = {
    "model API (Lab 01)": "http://127.0.0.1:30080",
    "fraud API (Lab 02)": "http://127.0.0.1:30081",
    "a fraud pod's sidecar /state": "http://127.0.0.1:30082/state",
    "alert receiver /alerts": "http://127.0.0.1:30083/alerts",
    "pipeline's online API (Lab 03)": "http://127.0.0.1:30084",
}

INSTALL = {
    "docker": {
        "what": "a container engine; kind runs each Kubernetes node as a container",
        "linux": "curl -fsSL https://get.docker.com | sh && sudo usermod -aG docker $USER   (then log in again)",
        "macos": "brew install --cask docker   (then start Docker Desktop)  -- or: brew install colima docker && colima start",
        "windows": "winget install Docker.DockerDesktop   (enable the WSL 2 backend; run the labs inside WSL)",
    },
    "kind": {
        "what": "Kubernetes in Docker, v0.25.0 or newer (the node image in infra/kind/cluster.yaml)",
        "linux": "go install sigs.k8s.io/kind@v0.25.0   -- or: curl -Lo kind https://kind.sigs.k8s.io/dl/v0.25.0/kind-linux-amd64 && chmod +x kind && sudo mv kind /usr/local/bin/   (arm64: kind-linux-arm64)",
        "macos": "brew install kind",
        "windows": "winget install Kubernetes.kind   (or inside WSL: the Linux command)",
    },
    "helm": {
        "what": "the Kubernetes package manager; installs Chaos Mesh, which the network faults of Lab 02 need",
        "linux": "curl -fsSL https://raw.githubusercontent.com/helm/helm/main/scripts/get-helm-3 | bash",
        "macos": "brew install helm",
        "windows": "winget install Helm.Helm   (or inside WSL: the Linux command)",
    },
    "kubectl": {
        "what": "the Kubernetes command line; port-forwards and `kubectl describe` when something is stuck",
        "linux": "curl -LO https://dl.k8s.io/release/v1.31.2/bin/linux/amd64/kubectl && chmod +x kubectl && sudo mv kubectl /usr/local/bin/   (arm64: .../linux/arm64/kubectl)",
        "macos": "brew install kubectl",
        "windows": "winget install Kubernetes.kubectl   (or inside WSL: the Linux command)",
    },
}


def _os_name() -> str:
    system = _platform.system().lower()
    return {"darwin": "macos", "windows": "windows"}.get(system, "linux")


def missing_tools(tools: Sequence[str] = ("docker", "kind", "kubectl")) -> list[str]:
    """The command-line tools in ``tools`` that are not on PATH."""
    return [t for t in tools if shutil.which(t) is None]


def _require_tools(tools: Sequence[str]) -> None:
    missing = missing_tools(tools)
    if not missing:
        return
    lines = [f"The kind backend needs {', '.join(tools)}; not found on PATH: {', '.join(missing)}.", ""]
    for tool in missing:
        lines += _install_help(tool)
    lines += ["", "Then run `python -m hadrlab.kind up` again. Without them, every lab runs on the local "
                  "backend (the default): no Docker needed."]
    raise SetupError("\n".join(lines))


def _run(cmd: Sequence[str], *, timeout_s: float = 600, check: bool = True, capture: bool = True,
         cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(list(cmd), cwd=cwd or ROOT, timeout=timeout_s, text=True,
                                stdout=subprocess.PIPE if capture else None,
                                stderr=subprocess.STDOUT if capture else None)
    except subprocess.TimeoutExpired:
        raise HadrError(f"`{' '.join(cmd)}` did not finish within {timeout_s:g} s. Is Docker overloaded or "
                        f"still pulling? Run it by hand to see its progress.") from None
    if check and result.returncode != 0:
        tail = "\n".join((result.stdout or "").strip().splitlines()[-15:])
        raise HadrError(f"`{' '.join(cmd)}` failed with exit code {result.returncode}:\n{tail}")
    return result


def _check_docker_daemon() -> None:
    result = _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout_s=30, check=False)
    if result.returncode != 0:
        hint = {"linux": "`sudo systemctl start docker` (and make sure your user is in the docker group)",
                "macos": "start Docker Desktop (or `colima start`)",
                "windows": "start Docker Desktop and enable its WSL 2 integration"}[_os_name()]
        last = (result.stdout or "").strip().splitlines()[-1:] or ["(no output)"]
        raise SetupError(f"docker is installed but its daemon does not answer (`docker info`: {last[0]}). "
                         f"Start it: {hint}. Then run `python -m hadrlab.kind up` again.")


def _cluster_exists() -> bool:
    out = _run(["kind", "get", "clusters"], timeout_s=60).stdout or ""
    return CLUSTER in out.split()


def _install_help(tool: str) -> list[str]:
    info, os_name = INSTALL[tool], _os_name()
    lines = [f"  {tool}: {info['what']}."]
    for name in ("linux", "macos", "windows"):
        marker = "->" if name == os_name else "  "
        lines.append(f"    {marker} {name:8} {info[name]}")
    return lines


def install_chaos_mesh(*, context: str = CONTEXT, timeout_s: float = 600) -> bool:
    """Install Chaos Mesh into the cluster with helm, unless it is there already.

    Chaos Mesh is what the kube backend's network faults are made of (``delay_region``,
    ``partition_region``); the pod faults need nothing. Without helm this prints how to get
    it and returns False: everything else on the cluster works without Chaos Mesh.

    Args:
        context: the kubeconfig context to install into.
        timeout_s: how long helm may wait for Chaos Mesh's pods.

    Returns:
        True if Chaos Mesh is installed (now or before).
    """
    if missing_tools(("helm",)):
        print("\n".join(["note: helm is not installed, so Chaos Mesh was not: Lab 02 on this cluster needs it (the "
                         "cross-region latency, the spikes, the partition) and will say so; Labs 01 and 03 do not.", *_install_help("helm"),
                         "Then run `python -m hadrlab.kind up --no-build` again (or add --no-chaos-mesh to skip "
                         "this step)."]))
        return False
    where = ["--namespace", CHAOS_MESH_NAMESPACE, "--kube-context", context]
    if _run(["helm", "status", "chaos-mesh", *where], timeout_s=60, check=False).returncode == 0:
        print(f"Chaos Mesh is installed (namespace {CHAOS_MESH_NAMESPACE})")
        return True
    print(f"installing Chaos Mesh {CHAOS_MESH_VERSION} with helm (1-3 minutes the first time)")
    added = _run(["helm", "repo", "add", "chaos-mesh", "https://charts.chaos-mesh.org"], timeout_s=120, check=False)
    if added.returncode != 0 and "already exists" not in (added.stdout or ""):
        raise HadrError(f"`helm repo add chaos-mesh https://charts.chaos-mesh.org` failed: "
                        f"{(added.stdout or '').strip()[-300:]}. Check the network, or skip this step with "
                        f"`python -m hadrlab.kind up --no-chaos-mesh`.")
    # kind's nodes run containerd: the chaos daemon injects faults through its socket.
    _run(["helm", "upgrade", "--install", "chaos-mesh", "chaos-mesh/chaos-mesh", *where, "--create-namespace",
          "--version", CHAOS_MESH_VERSION, "--set", "chaosDaemon.runtime=containerd",
          "--set", "chaosDaemon.socketPath=/run/containerd/containerd.sock", "--set", "dashboard.create=false",
          "--wait", "--timeout", f"{int(timeout_s)}s"], timeout_s=timeout_s + 60)
    print(f"Chaos Mesh {CHAOS_MESH_VERSION} installed (namespace {CHAOS_MESH_NAMESPACE})")
    return True


def up(*, build: bool = True, chaos_mesh: bool = True, wait_s: float = 300) -> dict[str, str]:
    """Create (or reuse) the kind cluster, load the image, apply the manifests, wait.

    Args:
        build: build and load the image (False reuses what the cluster already has).
        chaos_mesh: install Chaos Mesh with helm if it is missing (the network faults).
        wait_s: how long every rollout may take.

    Returns:
        ``{what: URL}`` of the services reachable from this machine.
    """
    _require_tools(("docker", "kind", "kubectl"))
    _check_docker_daemon()
    if _cluster_exists():
        print(f"cluster {CLUSTER!r} exists: reusing it (`python -m hadrlab.kind down` to start afresh)")
        _run(["kind", "export", "kubeconfig", "--name", CLUSTER], timeout_s=60)
    else:
        print(f"creating cluster {CLUSTER!r} from {CONFIG.relative_to(ROOT)} (1-3 minutes the first time)")
        _run(["kind", "create", "cluster", "--config", str(CONFIG), "--wait", "180s"], timeout_s=900, capture=False)
    if chaos_mesh:
        install_chaos_mesh()
    if build:
        print(f"building {IMAGE} from {DOCKERFILE.relative_to(ROOT)}")
        _run(["docker", "build", "-f", str(DOCKERFILE), "-t", IMAGE, "."], timeout_s=1200, capture=False)
        for tag in IMAGE_TAGS:
            _run(["docker", "tag", IMAGE, tag])
        _run(["kind", "load", "docker-image", "--name", CLUSTER, IMAGE, *IMAGE_TAGS], timeout_s=600)
        for image in EXTERNAL_IMAGES:
            pulled = _run(["docker", "pull", image], timeout_s=600, check=False).returncode == 0
            loaded = pulled and _run(["kind", "load", "docker-image", "--name", CLUSTER, image],
                                     timeout_s=600, check=False).returncode == 0
            if not loaded:
                print(f"note: could not pre-load {image}; the nodes will pull it themselves")
    from hadrlab.platform.kube import KubePlatform

    with KubePlatform(context=CONTEXT, watch=False, quiet=False) as platform:
        for name in MANIFESTS:
            platform.apply(ROOT / "infra" / "k8s" / name)
        start = time.monotonic()
        for name in STATEFULSETS:
            platform.wait_for_statefulset(name, timeout_s=wait_s - (time.monotonic() - start))
        platform.wait_for_rollout(timeout_s=max(30.0, wait_s - (time.monotonic() - start)))
        namespace = platform.namespace
    print(f"\ncluster {CLUSTER!r} is ready (context {CONTEXT}, namespace {namespace}):")
    for what, url in ENDPOINTS.items():
        print(f"  {what:30} {url}")
    print("Use it from a notebook with HADRLAB_BACKEND=kube, or hadrlab.get_platform('kube').")
    return dict(ENDPOINTS)


def down() -> None:
    """Delete the kind cluster. Deleting a cluster that does not exist is not an error."""
    missing = missing_tools(("docker", "kind"))
    if missing:
        print(f"{' and '.join(missing)} not installed: there is no kind cluster {CLUSTER!r} to delete")
        return
    if not _cluster_exists():
        print(f"no cluster {CLUSTER!r}: nothing to delete")
        return
    _run(["kind", "delete", "cluster", "--name", CLUSTER], timeout_s=300)
    print(f"cluster {CLUSTER!r} deleted")


def status() -> int:
    """Print the cluster's nodes and the labs' pods; return 0 if the cluster exists."""
    _require_tools(("docker", "kind", "kubectl"))
    if not _cluster_exists():
        print(f"no cluster {CLUSTER!r}; create it with `python -m hadrlab.kind up`")
        return 1
    namespace = os.environ.get("HADRLAB_KUBE_NAMESPACE", "hadrlab")
    print(_run(["kubectl", "--context", CONTEXT, "get", "nodes", "-L", "topology.kubernetes.io/region"]).stdout)
    print(_run(["kubectl", "--context", CONTEXT, "-n", namespace, "get", "pods,svc", "-o", "wide"], check=False).stdout)
    return 0


def test(extra: Sequence[str] = ()) -> int:
    """Run the integration tests and the lab notebooks against the cluster (HADRLAB_BACKEND=kube)."""
    _require_tools(("docker", "kind", "kubectl"))
    if not _cluster_exists():
        raise SetupError(f"There is no cluster {CLUSTER!r} to test against. Run `python -m hadrlab.kind up` first.")
    env = {**os.environ, "HADRLAB_BACKEND": "kube", "HADRLAB_KUBE_CONTEXT": CONTEXT}
    cmd = [sys.executable, "-m", "pytest", "tests/integration", "tests/notebooks", "-q", *extra]
    print("HADRLAB_BACKEND=kube " + " ".join(cmd[1:]))
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hadrlab.kind up|down|status|test``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = argv[0] if argv else ""
    try:
        if verb == "up":
            up(build="--no-build" not in argv, chaos_mesh="--no-chaos-mesh" not in argv)
            return 0
        if verb == "down":
            down()
            return 0
        if verb == "status":
            return status()
        if verb == "test":
            return test(argv[1:])
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except HadrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("usage: python -m hadrlab.kind up [--no-build] [--no-chaos-mesh] | down | status | test [pytest args]",
          file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main())
