"""Lab 02's services on a cluster without a cluster: fraud.yaml against the code, the settings
substituted into it, and what start_kube_fraud_services applies, in which order, on a fake API server.

The end-to-end run of the same code with real processes is
tests/integration/test_kube_fraud_loopback.py.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from kube_fake import DEP_PATH, NS, POD_PATH, FakeKube

from hadrlab.errors import HadrError
from hadrlab.fraud import _region_of, writer_timeline
from hadrlab.platform import kube_fraud
from hadrlab.platform.kube import KubePlatform
from hadrlab.platform.kube_fraud import (
    POLICY_ANNOTATION,
    POLICY_MOUNT,
    RUN_ANNOTATION,
    SEED_MOUNT,
    fraud_manifests,
    parse_writer_log,
    policy_source,
    seed_manifests,
    start_kube_fraud_services,
)
from hadrlab.platform.manifests import validate_schema
from hadrlab.sidecar import write_policy_module

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


FRAUD = _docs(K8S / "fraud.yaml")
REDIS = _docs(K8S / "redis.yaml")
OBJECTS = {(d["kind"], d["metadata"]["name"]): d for d in FRAUD}
DEPLOYMENTS = [d for d in FRAUD if d["kind"] == "Deployment"]
CONTAINERS = [(d, c) for d in DEPLOYMENTS for c in d["spec"]["template"]["spec"]["containers"]]
# `python -m MODULE ARGS` -> the functions that read that command's environment.
READERS = {
    ("hadrlab.fraud", "api"): ["hadrlab.fraud:create_api", "hadrlab.fraud:_serve_api"],
    ("hadrlab.fraud", "writer"): ["hadrlab.fraud:run_writer", "hadrlab.fraud:_region_of"],
    ("hadrlab.sidecar",): ["hadrlab.sidecar:Sidecar", "hadrlab.sidecar:_run_sidecar", "hadrlab.sidecar:_serve"],
    ("hadrlab.sidecar", "alerts"): ["hadrlab.sidecar:_run_receiver", "hadrlab.sidecar:_serve"],
}


# Read by the runtime, not by hadrlab: BLAS's thread count, Python's module path.
RUNTIME_VARIABLES = {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONPATH"}


def _id(pair) -> str:
    return f"{pair[0]['metadata']['name']}/{pair[1]['name']}"


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def _readers(container: dict) -> list:
    import importlib

    key = tuple(container["command"][2:])
    assert container["command"][:2] == ["python", "-m"] and key in READERS, container["command"]
    out = []
    for spec in READERS[key]:
        module, _, name = spec.partition(":")
        out.append(getattr(importlib.import_module(module), name))
    return out


# --------------------------------------------------------------------------- fraud.yaml against the code


def test_fraud_yaml_has_the_four_services_and_one_writer_at_a_time() -> None:
    assert {d["metadata"]["name"] for d in DEPLOYMENTS} == {"fraud-api", "alert-receiver", "feature-writer"}
    writer = OBJECTS[("Deployment", "feature-writer")]["spec"]
    # Idle until a lab starts it, then exactly one (Recreate: never two streams at once).
    assert writer["replicas"] == 0 and writer["strategy"]["type"] == "Recreate"
    started = next(d for d in fraud_manifests() if d["metadata"]["name"] == "feature-writer")
    assert started["spec"]["replicas"] == 1
    assert _env(writer["template"]["spec"]["containers"][0])["WRITER_LOG"] == "-", "the timeline is the pod's log"
    assert [c["name"] for c in OBJECTS[("Deployment", "fraud-api")]["spec"]["template"]["spec"]["containers"]] == \
        ["fraud-api", "sidecar"]


@pytest.mark.parametrize("pair", CONTAINERS, ids=_id)
def test_every_variable_a_container_sets_is_read_by_the_code_it_runs(pair) -> None:
    container = pair[1]
    module = sys.modules[_readers(container)[0].__module__]
    assert 'if __name__ == "__main__":' in Path(module.__file__).read_text()
    source = "\n".join(inspect.getsource(f) for f in _readers(container))
    unread = [n for n in _env(container) if n not in RUNTIME_VARIABLES
              and not re.search(rf"[\"']{re.escape(n)}[\"']", source)]
    assert not unread, f"{_id(pair)} sets {unread}, which {[f.__name__ for f in _readers(container)]} never read"
    # ... and main() dispatches that command to them.
    main = inspect.getsource(module.main)
    assert any(f.__name__ in main for f in _readers(container)), f"{module.__name__}.main() does not run {_id(pair)}"


@pytest.mark.parametrize("pair", [p for p in CONTAINERS if p[1].get("ports")], ids=_id)
def test_servers_bind_the_port_the_pod_exposes_on_all_interfaces(pair) -> None:
    container = pair[1]
    env, ports = _env(container), {p["name"]: p["containerPort"] for p in container["ports"]}
    assert [str(p) for p in ports.values()] == [env["PORT"]], f"{_id(pair)}: PORT {env['PORT']} vs {ports}"
    assert env["HOST"] == "0.0.0.0", f"{_id(pair)}: a server on 127.0.0.1 is unreachable from outside its pod"
    assert container.get("readinessProbe"), f"{_id(pair)} has no readiness probe"


def _app(command: list[str]):
    """The FastAPI app that ``python -m MODULE ARGS`` serves (never started here)."""
    if command == ["hadrlab.fraud", "api"]:
        from hadrlab.fraud import create_api

        return create_api({"REDIS_A": "127.0.0.1:9"})
    from hadrlab.sidecar import Sidecar, create_receiver_app, create_sidecar_app

    if command == ["hadrlab.sidecar", "alerts"]:
        return create_receiver_app()
    assert command == ["hadrlab.sidecar"], command
    return create_sidecar_app(Sidecar({"REDIS_A": "127.0.0.1:9", "REDIS_B": "127.0.0.1:10"}))


def _routes(container: dict, method: str = "GET") -> set[str]:
    """The paths the container's server answers to ``method``: its FastAPI app's routes."""
    app = _app(container["command"][2:])
    return {r.path for r in app.routes if method in (getattr(r, "methods", None) or ())}


@pytest.mark.parametrize("pair", [p for p in CONTAINERS if p[1].get("ports")], ids=_id)
def test_probe_paths_are_routes_of_the_server_on_a_named_port(pair) -> None:
    container = pair[1]
    routes = _routes(container)
    assert "/healthz" in routes, routes  # the extraction found the route table
    names = {p["name"] for p in container["ports"]}
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = (container.get(kind) or {}).get("httpGet")
        if get:
            assert get["path"] in routes, f"{_id(pair)} {kind}: {get['path']} is not a route; it has {sorted(routes)}"
            assert get["port"] in names, f"{_id(pair)} {kind}: no container port named {get['port']!r}"


def test_the_api_is_unready_until_its_model_loads_and_alive_at_once() -> None:
    import httpx

    from hadrlab.fraud import create_api

    async def statuses() -> tuple[int, int]:
        app = create_api({"REDIS_A": "127.0.0.1:9"})
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pod") as client:
            return (await client.get("/healthz")).status_code, (await client.get("/readyz")).status_code

    assert asyncio.run(statuses()) == (200, 503)


def test_in_cluster_addresses_name_real_services_and_ports() -> None:
    redis_sets = {d["metadata"]["name"]: d for d in REDIS if d["kind"] == "StatefulSet"}
    redis_services = {d["metadata"]["name"] for d in REDIS if d["kind"] == "Service"}
    api = OBJECTS[("Deployment", "fraud-api")]["spec"]["template"]["spec"]["containers"]
    sidecar_port = next(p["containerPort"] for p in api[1]["ports"])
    receiver = OBJECTS[("Service", "alert-receiver")]["spec"]["ports"][0]
    checked = 0
    for pair in CONTAINERS:
        env = _env(pair[1])
        for var in ("REDIS_A", "REDIS_B"):
            if var in env:
                host, port = env[var].rsplit(":", 1)
                pod, service = host.split(".")
                sts = redis_sets[pod.rsplit("-", 1)[0]]
                assert service == sts["spec"]["serviceName"] in redis_services and port == "6379", f"{_id(pair)} {var}"
                assert sts["metadata"]["name"] == f"redis-{var[-1].lower()}", f"{_id(pair)}: {var} names the other region"
                checked += 1
        if "SIDECAR_URL" in env:
            url = urlsplit(env["SIDECAR_URL"])
            assert (url.hostname, url.port) == ("127.0.0.1", sidecar_port), "the sidecar is in the same pod"
        if "ALERT_URL" in env:
            url = urlsplit(env["ALERT_URL"])
            assert url.hostname == "alert-receiver" and (url.port or 80) == receiver["port"], env["ALERT_URL"]
            receiver_routes = _routes({"command": ["python", "-m", "hadrlab.sidecar", "alerts"]}, "POST")
            assert url.path in receiver_routes, f"no POST {url.path} on the receiver"
    assert checked == 6  # the API, the sidecar and the writer, both regions each


def test_secrets_exist_and_services_select_pods_with_those_ports() -> None:
    secrets = {d["metadata"]["name"]: d for d in REDIS if d["kind"] == "Secret"}
    for pair in CONTAINERS:
        for e in pair[1].get("env") or []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]]["stringData"], f"{_id(pair)}: {ref}"
    for (kind, name), doc in OBJECTS.items():
        if kind != "Service":
            continue
        pods = [d for d in DEPLOYMENTS if d["spec"]["template"]["metadata"]["labels"].items()
                >= doc["spec"]["selector"].items()]
        assert pods, f"Service {name!r} selects no pod"
        ports = {p["name"] for d in pods for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports") or []}
        assert {p["targetPort"] for p in doc["spec"]["ports"]} <= ports, f"Service {name!r}: unknown targetPort"


# --------------------------------------------------------------------------- settings substituted


def _container(docs: list[dict], deployment: str, name: str) -> dict:
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == deployment)
    return next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def test_the_lab_settings_replace_the_manifest_values_and_nothing_else_changes() -> None:
    docs = fraud_manifests(check_interval_ms=100, latency_threshold_ms=40, consecutive=2, recover_consecutive=4,
                           rate_tps=20, n_cards=40, seed=3, run="r1")
    sidecar = _env(_container(docs, "fraud-api", "sidecar"))
    assert (sidecar["CHECK_INTERVAL_MS"], sidecar["LATENCY_THRESHOLD_MS"], sidecar["CONSECUTIVE"],
            sidecar["RECOVER_CONSECUTIVE"]) == ("100", "40", "2", "4")
    assert "POLICY_CLASS" not in sidecar and "PYTHONPATH" not in sidecar
    writer = _env(_container(docs, "feature-writer", "feature-writer"))
    assert (writer["WRITE_RATE_TPS"], writer["N_CARDS"], writer["SEED"]) == ("20", "40", "3")
    template = next(d for d in docs if d["metadata"]["name"] == "feature-writer")["spec"]["template"]
    assert template["metadata"]["annotations"][RUN_ANNOTATION] == "r1"
    # Every other variable is the manifest's, and the file itself is untouched.
    original = _env(_container(FRAUD, "fraud-api", "sidecar"))
    assert {k: v for k, v in sidecar.items() if k not in ("CHECK_INTERVAL_MS", "LATENCY_THRESHOLD_MS", "CONSECUTIVE",
                                                          "RECOVER_CONSECUTIVE")} == \
        {k: v for k, v in original.items() if k not in ("CHECK_INTERVAL_MS", "LATENCY_THRESHOLD_MS", "CONSECUTIVE",
                                                        "RECOVER_CONSECUTIVE")}
    assert _env(_container(FRAUD, "feature-writer", "feature-writer"))["WRITE_RATE_TPS"] == "50"
    for doc in docs:
        validate_schema(doc, source="fraud_manifests()")


def test_a_manifest_without_a_variable_to_set_is_an_error_that_says_so(monkeypatch) -> None:
    from hadrlab.platform import manifests

    real = manifests.load_manifest

    def without_consecutive(path, validate=True):
        docs = real(path, validate=validate)
        c = _container(docs, "fraud-api", "sidecar")
        c["env"] = [e for e in c["env"] if e["name"] != "CONSECUTIVE"]
        return docs

    monkeypatch.setattr(manifests, "load_manifest", without_consecutive)
    with pytest.raises(HadrError, match="container 'sidecar' has no variable CONSECUTIVE"):
        fraud_manifests()


POLICY = """
class CautiousPolicy:
    def __init__(self, bad_after=2):
        self.bad_after, self.bad = bad_after, 0

    def decide(self, read_region, check, secondary):
        self.bad = 0 if check.ok else self.bad + 1
        return secondary.region if self.bad >= self.bad_after else check.region
"""


def test_a_learner_policy_reaches_the_sidecar_as_a_mounted_module() -> None:
    spec = write_policy_module(POLICY, module="unit_policy")
    docs = fraud_manifests(policy=spec, policy_args={"bad_after": 3})
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    assert list(config["data"]) == ["unit_policy.py"] and config["data"]["unit_policy.py"].strip() == POLICY.strip()
    dep = next(d for d in docs if d["metadata"]["name"] == "fraud-api")
    sidecar = _container(docs, "fraud-api", "sidecar")
    env = _env(sidecar)
    assert env["POLICY_CLASS"] == "unit_policy:CautiousPolicy" and json.loads(env["POLICY_ARGS"]) == {"bad_after": 3}
    assert env["PYTHONPATH"] == POLICY_MOUNT == sidecar["volumeMounts"][0]["mountPath"]
    volume = dep["spec"]["template"]["spec"]["volumes"][0]
    assert volume["configMap"]["name"] == config["metadata"]["name"] and volume["name"] == sidecar["volumeMounts"][0]["name"]
    assert "volumeMounts" not in _container(docs, "fraud-api", "fraud-api"), "only the sidecar imports the policy"
    # The sidecar imports the module at start: a changed source changes the pod template (a rollout).
    digest = dep["spec"]["template"]["metadata"]["annotations"][POLICY_ANNOTATION]
    write_policy_module(POLICY.replace("bad_after=2", "bad_after=5"), module="unit_policy")
    again = next(d for d in fraud_manifests(policy=spec) if d["metadata"]["name"] == "fraud-api")
    assert again["spec"]["template"]["metadata"]["annotations"][POLICY_ANNOTATION] != digest
    for doc in docs:
        validate_schema(doc, source="fraud_manifests(policy=...)")


def test_a_package_policy_needs_no_module_and_notebook_classes_are_refused() -> None:
    from hadrlab.sidecar import PrimaryOnlyPolicy

    assert policy_source(PrimaryOnlyPolicy) == ("hadrlab.sidecar:PrimaryOnlyPolicy", {})
    docs = fraud_manifests(policy=PrimaryOnlyPolicy)
    assert not [d for d in docs if d["kind"] == "ConfigMap"]
    assert "PYTHONPATH" not in _env(_container(docs, "fraud-api", "sidecar"))
    Notebook = type("Notebook", (), {"__module__": "__main__", "decide": lambda *a: "a"})
    with pytest.raises(ValueError, match="defined in the notebook"):
        policy_source(Notebook)
    with pytest.raises(HadrError, match="write_policy_class"):
        policy_source("no_such_policy_module:P")
    write_policy_module(POLICY, module="unit_policy2")
    with pytest.raises(ValueError, match="defines no class 'Other'"):
        policy_source("unit_policy2:Other")


def test_the_seed_job_carries_the_transactions_and_the_writer_connection() -> None:
    import hadrlab

    txns = hadrlab.generate_transactions(50, seed=2, n_cards=10)
    config, job = seed_manifests(txns, "seed-x")
    rows = json.loads(config["data"]["transactions.json"])
    assert [r["card_id"] for r in rows] == list(txns.card_id) and rows[3]["amount"] == txns.amount[3]
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["python", "-m", "hadrlab.platform.kube_fraud", "seed", f"{SEED_MOUNT}/transactions.json"]
    assert container["volumeMounts"][0]["mountPath"] == SEED_MOUNT and pod["volumes"][0]["configMap"]["name"] == "seed-x"
    writer = _container(FRAUD, "feature-writer", "feature-writer")["env"]
    assert container["env"] == [e for e in writer if e["name"] in ("SENTINELS", "SENTINEL_MASTER", "REDIS_PASSWORD")]
    assert {e["name"] for e in container["env"]} <= set(re.findall(r'"([A-Z_]+)"', inspect.getsource(kube_fraud.seed_features)))
    assert job["spec"]["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"
    for doc in (config, job):
        validate_schema(doc, source="seed_manifests()")
    with pytest.raises(HadrError, match="more than a ConfigMap can carry"):
        seed_manifests(hadrlab.generate_transactions(12_000, seed=1), "seed-y")


def test_the_seed_entry_point_imports_without_yaml_or_the_kubernetes_client() -> None:
    """The course image has neither: the Job would crash on import."""
    code = ("import sys; sys.modules['yaml'] = None; sys.modules['kubernetes'] = None; "
            "from hadrlab.platform.kube_fraud import main; sys.exit(main(['seed']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "usage: python -m hadrlab.platform.kube_fraud seed" in done.stderr, done.stderr
    tree = ast.parse(Path(kube_fraud.__file__).read_text())
    top = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    top |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
    assert top <= {"__future__", "ast", "contextlib", "csv", "hashlib", "json", "secrets", "sys", "time",
                   "collections", "pathlib", "typing", "hadrlab"}, top


# --------------------------------------------------------------------------- the writer's log


LOG = """\
12:00:00.001 INFO hadrlab.fraud: Feature writer feature-writer: 50 writes/s, 200 cards, seed 0, through Sentinel a:1,b:2,c:3.
t,seq,card_id,ok,region,latency_ms,error
1700000000.100000,1,card-00001,1,a,0.812,
1700000000.120000,2,card-00007,0,a,501.000,"ConnectionError: Error 111 connecting to redis-a-0.redis-a:6379. Connection refused, retrying"
12:00:01.002 WARNING hadrlab.fraud: Write seq 2 failed (region a): ConnectionError: x, y, z, w, v, u
1700000000.140000,3,card-00002,1,b,1.500,
"""


def test_the_writer_rows_are_read_back_from_a_pod_log_among_its_log_lines() -> None:
    rows = parse_writer_log(LOG)
    assert [r[1] for r in rows] == ["1", "2", "3"]
    assert rows[1][6].endswith("Connection refused, retrying") and rows[2][4] == "b"


def test_writer_timeline_takes_a_cluster_writer_as_well_as_a_name() -> None:
    class Writer:
        def timeline(self):
            return "rows from the pod log"

    assert writer_timeline(Writer()) == "rows from the pod log"
    # A local writer's Child names its log: `writer=writer` is one notebook line on both backends.
    with pytest.raises(FileNotFoundError, match="unit-writer-writes.csv"):
        writer_timeline(type("Child", (), {"name": "unit-writer"})())


def test_a_write_is_labelled_with_its_region_when_both_listen_on_6379() -> None:
    env = {"REDIS_A": "redis-a-0.redis-a:6379", "REDIS_B": "redis-b-0.redis-b:6379"}
    assert _region_of(("redis-b-0.redis-b", 6379), env) == "b"
    assert _region_of(("redis-a-0.redis-a", 6379), env) == "a"
    assert _region_of(("10.0.0.9", 6379), env) == "10.0.0.9:6379"  # ambiguous by port alone: said as is
    assert _region_of(("127.0.0.1", 7002), {"REDIS_A": "127.0.0.1:7001", "REDIS_B": "localhost:7002"}) == "b"


# --------------------------------------------------------------------------- what start applies


class ServicesFake(FakeKube):
    """Deployments roll out at once with pods on two regions; the seed Job succeeds; the writer logs rows."""

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[tuple[str, str]] = []
        self.scaled: list[tuple[str, int]] = []
        self.on_apply.append(self.hook)
        for node, region in (("worker", "region-a"), ("worker2", "region-b")):
            self.put(f"/api/v1/nodes/{node}", {"metadata": {"name": node, "labels": {
                "topology.kubernetes.io/region": region}}}, event=None)

    def hook(self, path: str, obj: dict) -> None:
        kind, name = obj["kind"], obj["metadata"]["name"]
        self.applied.append((kind, name))
        if kind == "Job":
            obj["status"] = {"succeeded": 1}
            self.put(f"{POD_PATH}/{name}-pod", {"metadata": {"name": f"{name}-pod", "labels": {"job-name": name}}})
            self.pod_logs[f"{name}-pod"] = "seeded the features of 50 transactions into the primary at redis-a-0.redis-a:6379\n"
        if kind == "Deployment":
            self.roll(path)

    def roll(self, path: str) -> None:
        dep = self.objects[path]
        name, n = dep["metadata"]["name"], int(dep["spec"]["replicas"])
        for p in [p for p, o in self.objects.items() if p.startswith(POD_PATH + "/") and
                  (o["metadata"].get("labels") or {}).get("app") == name]:
            del self.objects[p]
        for i in range(n):
            pod = f"{name}-{i}"
            self.put(f"{POD_PATH}/{pod}", {
                "metadata": {"name": pod, "labels": {"app": name}, "creationTimestamp": f"2026-01-01T00:00:0{i}Z"},
                "spec": {"nodeName": ["worker", "worker2"][i % 2], "containers": dep["spec"]["template"]["spec"]["containers"]},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                           "containerStatuses": [{"name": "c", "restartCount": 0, "state": {"running": {}}}]}})
            if name == "feature-writer":
                self.pod_logs[pod] = "t,seq,card_id,ok,region,latency_ms,error\n1700000000.1,1,card-00001,1,a,0.9,\n"
        dep["status"] = {"observedGeneration": dep["metadata"]["generation"], "replicas": n, "updatedReplicas": n,
                         "readyReplicas": n, "availableReplicas": n}

    def request(self, method, path, *, query=(), body=None, content_type=None, timeout_s=10.0):
        answer = super().request(method, path, query=query, body=body, content_type=content_type, timeout_s=timeout_s)
        if method == "patch" and path.endswith("/scale"):
            self.scaled.append((path.rsplit("/", 2)[-2], body["spec"]["replicas"]))
            self.roll(path[: -len("/scale")])
        return answer


class ForwardingPlatform(KubePlatform):
    def forward_pod(self, pod: str, port: int) -> str:
        self.forwarded = (pod, port)
        return "http://127.0.0.1:18081"

    def stop_forward_pod(self, pod: str, port: int) -> None:
        self.forwarded = None


def test_start_stops_the_old_writer_seeds_then_applies_and_reads_one_sidecar(monkeypatch) -> None:
    import hadrlab
    from hadrlab import processes

    fake = ServicesFake()
    # A writer of an earlier run is running: it must stop before the seed writes.
    fake.put(f"{DEP_PATH}/feature-writer", {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
        "name": "feature-writer", "generation": 1}, "spec": {"replicas": 1, "selector": {"matchLabels": {
            "app": "feature-writer"}}, "template": {"spec": {"containers": []}}}})
    fake.roll(f"{DEP_PATH}/feature-writer")
    platform = ForwardingPlatform(api=fake, namespace=NS, quiet=True, watch=False,
                                  host_ports={30081: 18080, 30083: 19093})
    monkeypatch.setattr(processes, "http_status", lambda url, timeout_s=1.0: 200)
    store = type("Store", (), {"platform": platform})()
    services = start_kube_fraud_services(store, transactions=hadrlab.generate_transactions(50, seed=2, n_cards=10),
                                         check_interval_ms=100, rate_tps=20, n_cards=10, timeout_s=10)
    assert fake.scaled == [("feature-writer", 0)]
    seed = [name for kind, name in fake.applied if kind == "Job"][0]
    order = [k for k, n in fake.applied if k != "Namespace"]
    assert order[:2] == ["ConfigMap", "Job"] and order.index("Job") < order.index("Deployment")
    assert [n for k, n in fake.applied if k == "Deployment"] == ["fraud-api", "alert-receiver", "feature-writer"]
    assert not any(f"/{seed}" in p for p in fake.objects if "/configmaps/" in p or "/jobs/" in p), "seed objects deleted"
    applied = fake.objects[f"{DEP_PATH}/fraud-api"]["spec"]["template"]["spec"]["containers"][1]
    assert _env(applied)["CHECK_INTERVAL_MS"] == "100"
    # The sidecar read is the region-B pod's, on the sidecar's container port.
    assert platform.forwarded == ("fraud-api-1", 8081) and services.sidecar.pod == "fraud-api-1"
    assert (services.api.url, services.receiver.url, services.sidecar.url) == \
        ("http://127.0.0.1:18080", "http://127.0.0.1:19093", "http://127.0.0.1:18081")
    assert services.seeded == 50 and list(services.writer.timeline()["seq"]) == [1]
    assert services.writer.stats()["by_region"] == {"a": 1}
    services.stop()
    assert set(fake.scaled[1:]) == {("feature-writer", 0), ("fraud-api", 0), ("alert-receiver", 0)}
    assert platform.forwarded is None
    services.stop()  # idempotent


def test_a_failed_seed_job_stops_the_start_with_its_log() -> None:
    import hadrlab

    fake = ServicesFake()

    def failing(path: str, obj: dict) -> None:
        if obj["kind"] == "Job":
            obj["status"] = {"failed": 1, "conditions": [{"type": "Failed", "status": "True"}]}  # backoffLimit 0: ended
            fake.pod_logs[f"{obj['metadata']['name']}-pod"] = "seed failed: ValueError: SENTINELS is not set\n"

    fake.on_apply.append(failing)
    platform = ForwardingPlatform(api=fake, namespace=NS, quiet=True, watch=False)
    store = type("Store", (), {"platform": platform})()
    with pytest.raises(HadrError, match="seed Job .* failed without writing the features.*SENTINELS is not set"):
        start_kube_fraud_services(store, transactions=hadrlab.generate_transactions(5, seed=2), timeout_s=5)
    assert not [k for k, n in fake.applied if k == "Deployment"], "nothing is applied after a failed seed"
