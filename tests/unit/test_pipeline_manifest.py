"""infra/k8s/pipeline.yaml runs what the code really offers: modules, variables, routes, volumes.

Strict schema validation (tests/unit/test_k8s_manifests.py) proves the YAML is Kubernetes;
these tests prove it matches hadrlab: every command runs a real entry point, every variable
set is one the module reads, every probe hits a real route, every volume and Secret exists.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
PIPELINE = K8S / "pipeline.yaml"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


DOCS = _docs(PIPELINE)
OBJECTS = {(d["kind"], d["metadata"]["name"]): d for d in DOCS}
WORKLOADS = [d for d in DOCS if d["kind"] in ("Deployment", "StatefulSet", "Job")]


def _containers(include_init: bool = True) -> list[tuple[dict, dict]]:
    """(workload, container) for every container, init containers included."""
    out = []
    for w in WORKLOADS:
        spec = w["spec"]["template"]["spec"]
        for c in (spec.get("initContainers") or []) + spec["containers"] if include_init else spec["containers"]:
            out.append((w, c))
    return out


def _id(pair: tuple[dict, dict]) -> str:
    return f"{pair[0]['metadata']['name']}/{pair[1]['name']}"


CONTAINERS = _containers()
MODULE_CONTAINERS = [p for p in CONTAINERS if p[1]["command"][:2] == ["python", "-m"]]
SCRIPT_CONTAINERS = [p for p in CONTAINERS if p[1]["command"][:2] == ["python", "-c"]]

# `python -m MODULE ARGS` -> the function that reads the environment for that command. The
# registry's `serve` runs the online API of hadrlab.resilience (checked below, not assumed).
ENTRY_POINTS = {
    ("hadrlab.registry",): "hadrlab.registry:run_registry",
    ("hadrlab.registry", "serve"): "hadrlab.resilience:run_online_api",
    ("hadrlab.training",): "hadrlab.training:run_trainer",
    ("hadrlab.batch",): "hadrlab.batch:run_batch",
}


def _entry(container: dict):
    key = tuple(container["command"][2:]) + tuple(container.get("args") or [])
    assert key in ENTRY_POINTS, f"{container['name']}: no known entry point for `python -m {' '.join(key)}`"
    module, _, func = ENTRY_POINTS[key].partition(":")
    return importlib.import_module(module), func


def _env_names(container: dict) -> list[str]:
    return [e["name"] for e in container.get("env") or []]


def _script_imports(code: str) -> list[tuple[str, list[str]]]:
    return [(node.module, [a.name for a in node.names]) for node in ast.walk(ast.parse(code))
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hadrlab")]


def test_the_pipeline_has_its_four_parts_and_their_wiring() -> None:
    kinds = {(k, n) for k, n in OBJECTS}
    assert {("StatefulSet", "registry"), ("Deployment", "online-api"), ("Job", "trainer"),
            ("Job", "batch-score"), ("Secret", "registry-auth"), ("PodDisruptionBudget", "online-api")} <= kinds
    registry = OBJECTS[("StatefulSet", "registry")]["spec"]
    assert registry["replicas"] == 1 and registry["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    online = OBJECTS[("Deployment", "online-api")]["spec"]
    assert online["replicas"] == 2
    spread = online["template"]["spec"]["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "topology.kubernetes.io/region"
    assert spread["labelSelector"]["matchLabels"] == online["selector"]["matchLabels"]


@pytest.mark.parametrize("pair", MODULE_CONTAINERS, ids=_id)
def test_command_runs_a_module_with_a_main(pair) -> None:
    container = pair[1]
    module = importlib.import_module(container["command"][2])
    assert callable(getattr(module, "main", None)), f"{module.__name__} has no main()"
    assert 'if __name__ == "__main__":' in Path(module.__file__).read_text(), f"{module.__name__} is not runnable with -m"
    entry_module, func = _entry(container)
    assert callable(getattr(entry_module, func, None)), f"{entry_module.__name__}.{func} does not exist"
    # The entry function is what main() really calls for these arguments.
    assert func in inspect.getsource(module.main), f"{module.__name__}.main() does not call {func}"


def test_registry_main_rejects_arguments_other_than_serve() -> None:
    from hadrlab.registry import main

    assert main(["serve-forever"]) == 2
    assert '["serve"]' in inspect.getsource(main)


@pytest.mark.parametrize("pair", MODULE_CONTAINERS, ids=_id)
def test_every_variable_a_container_sets_is_read_by_its_module(pair) -> None:
    container = pair[1]
    module, _ = _entry(container)
    source = Path(module.__file__).read_text()
    unread = [n for n in _env_names(container) if not re.search(rf"[\"']{re.escape(n)}[\"']", source)]
    assert not unread, f"{_id(pair)} sets {unread}, which {module.__name__} never reads"


@pytest.mark.parametrize("pair", SCRIPT_CONTAINERS, ids=_id)
def test_inline_scripts_compile_import_real_names_and_read_their_variables(pair) -> None:
    container = pair[1]
    code = container["command"][2]
    compile(code, _id(pair), "exec")
    texts = [code]
    for module_name, names in _script_imports(code):
        module = importlib.import_module(module_name)
        missing = [n for n in names if not hasattr(module, n)]
        assert not missing, f"{_id(pair)} imports {missing} from {module_name}, which has no such name"
        texts.append(Path(module.__file__).read_text())
    for name in _env_names(container):
        assert any(re.search(rf"[\"']{re.escape(name)}[\"']", t) for t in texts), \
            f"{_id(pair)} sets {name}, which neither its script nor the modules it imports read"


def _probes(container: dict) -> list[tuple[str, dict]]:
    return [(kind, container[kind]["httpGet"]) for kind in ("startupProbe", "readinessProbe", "livenessProbe")
            if "httpGet" in container.get(kind, {})]


def _registry_app(tmp_path: Path):
    from hadrlab.registry import create_registry_app

    return create_registry_app(tmp_path, "token")


def _online_app(tmp_path: Path):
    from hadrlab.registry import RegistryClient
    from hadrlab.resilience import ModelLoader, create_online_app

    loader = ModelLoader(RegistryClient("http://127.0.0.1:9", "token", timeout_s=0.1), "m", tmp_path)
    return create_online_app(loader, "test")


APPS = {"registry": _registry_app, "online-api": _online_app}


async def _get_statuses(app, paths: list[str]) -> dict[str, int]:
    """GET each path from the ASGI app in-process (no server, no port); the probes send no token."""
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pod") as client:
        return {path: (await client.get(path)).status_code for path in paths}


def test_every_http_container_has_probes_and_an_app_to_check_them() -> None:
    probed = {c["name"] for _, c in CONTAINERS if _probes(c)}
    assert probed == set(APPS)
    assert all(_probes(c) for _, c in CONTAINERS if c.get("ports"))


@pytest.mark.parametrize("name", sorted(APPS))
def test_probe_paths_are_real_routes_and_answer_as_the_probe_expects(name: str, tmp_path: Path) -> None:
    """Liveness paths answer 200 on a fresh app; /readyz answers 503 while no model is loaded."""
    container = next(c for _, c in CONTAINERS if c["name"] == name)
    app = APPS[name](tmp_path)
    routes = {getattr(r, "path", None) for r in app.routes}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    probes = _probes(container)
    statuses = asyncio.run(_get_statuses(app, [get["path"] for _, get in probes]))
    for kind, get in probes:
        assert get["path"] in routes, f"{name} {kind}: {get['path']} is not a route of the app"
        assert get["port"] in ports, f"{name} {kind}: port {get['port']!r} is not a named container port"
        status = statuses[get["path"]]
        assert status == (503 if get["path"] == "/readyz" else 200), f"{name} {kind} {get['path']}: {status}"
    assert str(ports["http"]) == env["PORT"], f"{name}: the server binds PORT {env['PORT']}, the pod exposes {ports}"
    assert env["HOST"] == "0.0.0.0", f"{name}: a server bound to 127.0.0.1 is unreachable from outside its pod"


def test_mounted_volumes_are_declared_and_claims_exist() -> None:
    claims = {n for k, n in OBJECTS if k == "PersistentVolumeClaim"}
    for w in WORKLOADS:
        spec = w["spec"]["template"]["spec"]
        declared = {v["name"] for v in spec.get("volumes") or []}
        declared |= {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates") or []}
        for v in spec.get("volumes") or []:
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims, f"{w['metadata']['name']}: {v}"
        used = {m["name"] for c in (spec.get("initContainers") or []) + spec["containers"]
                for m in c.get("volumeMounts") or []}
        assert used <= declared, f"{w['metadata']['name']} mounts undeclared volumes {used - declared}"
        assert declared <= used, f"{w['metadata']['name']} declares unused volumes {declared - used}"


# The variables that name a place on disk the process writes (or reads) state from.
PATH_VARIABLES = ("REGISTRY_DIR", "CHECKPOINT_DIR", "MODEL_CACHE_DIR", "INPUT", "OUTPUT")


@pytest.mark.parametrize("pair", CONTAINERS, ids=_id)
def test_state_paths_lie_on_a_mounted_volume(pair) -> None:
    """A checkpoint or database written outside a volume would vanish with the container."""
    container = pair[1]
    mounts = [m["mountPath"].rstrip("/") for m in container.get("volumeMounts") or []]
    for e in container.get("env") or []:
        if e["name"] in PATH_VARIABLES:
            path = e["value"]
            assert any(path == m or path.startswith(m + "/") for m in mounts), \
                f"{_id(pair)}: {e['name']}={path} is not under a mounted volume {mounts}"


def test_referenced_secrets_and_keys_exist() -> None:
    secrets = {d["metadata"]["name"]: d for path in (PIPELINE, K8S / "redis.yaml") for d in _docs(path)
               if d["kind"] == "Secret"}
    refs = [(e["valueFrom"]["secretKeyRef"], _id(p)) for p in CONTAINERS for e in p[1].get("env") or []
            if "secretKeyRef" in (e.get("valueFrom") or {})]
    assert refs
    for ref, where in refs:
        assert ref["name"] in secrets, f"{where}: Secret {ref['name']!r} is in neither pipeline.yaml nor redis.yaml"
        assert ref["key"] in secrets[ref["name"]]["stringData"], f"{where}: Secret {ref['name']!r} has no key {ref['key']!r}"


def test_clients_point_at_the_registry_service_and_services_select_pods() -> None:
    service = OBJECTS[("Service", "registry")]
    port = service["spec"]["ports"][0]["port"]
    for pair in CONTAINERS:
        for e in pair[1].get("env") or []:
            if e["name"] == "REGISTRY_URL":
                url = urlsplit(e["value"])
                assert (url.hostname, url.port) == ("registry", port), f"{_id(pair)}: {e['value']}"
    for (kind, name), doc in OBJECTS.items():
        if kind != "Service":
            continue
        pods = [w for w in WORKLOADS if w["spec"]["template"]["metadata"]["labels"].items()
                >= doc["spec"]["selector"].items()]
        assert pods, f"Service {name!r} selects no pod"
        names = {p["name"] for w in pods for c in w["spec"]["template"]["spec"]["containers"] for p in c.get("ports") or []}
        assert {p["targetPort"] for p in doc["spec"]["ports"]} <= names, f"Service {name!r}: unknown targetPort"
    assert OBJECTS[("StatefulSet", "registry")]["spec"]["serviceName"] == "registry"


def test_sentinel_addresses_match_redis_yaml() -> None:
    sentinels = [d for d in _docs(K8S / "redis.yaml") if d["kind"] == "StatefulSet" and d["metadata"]["name"].startswith("sentinel")]
    expected = {f"{d['metadata']['name']}-{i}.{d['spec']['serviceName']}:26379" for d in sentinels
                for i in range(d["spec"]["replicas"])}
    assert len(expected) == 3
    init = sentinels[0]["spec"]["template"]["spec"]["initContainers"][0]["command"][2]
    monitored = re.search(r"sentinel monitor (\S+) ", init).group(1)
    fraud = [c for d in _docs(K8S / "fraud.yaml") if d["kind"] == "Deployment"
             for c in d["spec"]["template"]["spec"]["containers"]]
    users = [(_id(pair), pair[1]) for pair in CONTAINERS] + [(f"fraud.yaml {c['name']}", c) for c in fraud]
    checked = 0
    for name, container in users:
        env = {e["name"]: e.get("value") for e in container.get("env") or []}
        if "SENTINELS" in env:
            assert set(env["SENTINELS"].split(",")) == expected, name
            assert env["SENTINEL_MASTER"] == monitored, name
            checked += 1
    assert checked >= 3  # the trainer's two and the fraud sidecar


@pytest.mark.parametrize("name, module", [("trainer", "hadrlab.training"), ("batch-score", "hadrlab.batch")])
def test_exit_code_the_job_fails_at_once_is_what_main_returns_when_misconfigured(name, module, monkeypatch) -> None:
    """podFailurePolicy's FailJob code must be the one main() really returns for a bad environment."""
    job = OBJECTS[("Job", name)]["spec"]
    rule = next(r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailJob")
    for var in ("CHECKPOINT_DIR", "INPUT", "OUTPUT"):
        monkeypatch.delenv(var, raising=False)
    assert importlib.import_module(module).main() in rule["onExitCodes"]["values"]
    assert job["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy requires it
    assert job["backoffLimit"] >= 1 and job["activeDeadlineSeconds"] > 0


def test_the_trainer_job_ends_and_keeps_its_checkpoints_on_a_claim() -> None:
    spec = OBJECTS[("Job", "trainer")]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert int(env["MAX_RUNS"]) > 0, "MAX_RUNS 0 trains forever: the Job would never complete"
    assert int(env["CHECKPOINT_EVERY"]) > 0
    volumes = {v["name"]: v for v in spec["volumes"]}
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == env["CHECKPOINT_DIR"])
    assert "persistentVolumeClaim" in volumes[mount["name"]], "an emptyDir dies with the pod the Job replaces"


def test_batch_job_commits_atomically_into_a_database_on_a_claim() -> None:
    from hadrlab.batch import COMMIT_MODES

    spec = OBJECTS[("Job", "batch-score")]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["COMMIT_MODE"] == "atomic" and env["COMMIT_MODE"] in COMMIT_MODES
    volumes = {v["name"]: v for v in spec["volumes"]}
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if env["OUTPUT"].startswith(m["mountPath"] + "/"))
    assert "persistentVolumeClaim" in volumes[mount["name"]]


def _third_party_imports(module_name: str, seen: set[str]) -> set[str]:
    """Top-level (import-time) third-party imports of a hadrlab module and its hadrlab imports."""
    if module_name in seen:
        return set()
    seen.add(module_name)
    module = importlib.import_module(module_name)
    out: set[str] = set()
    for node in ast.parse(Path(module.__file__).read_text()).body:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
        for name in names:
            top = name.split(".")[0]
            if top == "hadrlab":
                out |= _third_party_imports(name, seen)
            elif top not in sys.stdlib_module_names and top != "__future__":
                out.add(top)
    return out


def test_the_image_installs_what_the_pipeline_modules_import() -> None:
    dockerfile = (ROOT / "infra" / "docker" / "Dockerfile").read_text()
    installed = {m.lower() for m in re.findall(r'"([A-Za-z0-9_.-]+)[<>=!~ ]', dockerfile)}
    pip_names = {"sklearn": "scikit-learn", "yaml": "pyyaml"}
    needed: set[str] = set()
    seen: set[str] = set()
    for module in ("hadrlab.registry", "hadrlab.resilience", "hadrlab.training", "hadrlab.batch"):
        needed |= _third_party_imports(module, seen)
    missing = sorted(n for n in needed if pip_names.get(n, n).lower() not in installed)
    assert not missing, f"the image does not install {missing}"


def test_online_api_has_host_access_through_a_nodeport_that_kind_maps() -> None:
    """The online API's NodePort stands in for it and is one that infra/kind/cluster.yaml maps to 127.0.0.1."""
    from hadrlab.platform.kube import HOST_ACCESS_ANNOTATION, kind_host_ports

    host = [d for d in DOCS if d["kind"] == "Service"
            and (d["metadata"].get("annotations") or {}).get(HOST_ACCESS_ANNOTATION) == "online-api"]
    assert len(host) == 1, "one NodePort Service annotated for online-api"
    service, target = host[0], OBJECTS[("Service", "online-api")]
    assert service["spec"]["type"] == "NodePort" and service["spec"]["selector"] == target["spec"]["selector"]
    assert target["spec"].get("type", "ClusterIP") == "ClusterIP"  # in-cluster clients keep their ClusterIP
    mapped = kind_host_ports(ROOT / "infra" / "kind" / "cluster.yaml")
    for port in service["spec"]["ports"]:
        assert 30000 <= port["nodePort"] <= 32767
        assert port["nodePort"] in mapped, f"nodePort {port['nodePort']} is not mapped in infra/kind/cluster.yaml"
    # No other manifest claims the same NodePort (the API server would refuse the second).
    others = [p["nodePort"] for f in K8S.rglob("*.yaml") if f != PIPELINE for d in _docs(f)
              if d.get("kind") == "Service" for p in (d.get("spec") or {}).get("ports") or [] if p.get("nodePort")]
    assert not {p["nodePort"] for p in service["spec"]["ports"]} & set(others)
