"""hadrlab: the helper package behind the HA/DR-for-AI labs.

Notebooks teach; this package does the plumbing: child processes on loopback ports, Redis
pairs, the platform backends, load, metrics, plots, graded checks and quizzes.

Importing hadrlab starts nothing and changes no global state: every name below is loaded
from its module the first time it is used, so ``import hadrlab`` is fast and pulls in
neither matplotlib nor locust.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it. One public surface for notebooks.
_EXPORTS: dict[str, str] = {
    # errors
    "HadrError": "hadrlab.errors",
    "SetupError": "hadrlab.errors",
    "PortInUseError": "hadrlab.errors",
    "ProcessError": "hadrlab.errors",
    "ProcessExited": "hadrlab.errors",
    "ServiceNotReady": "hadrlab.errors",
    "DrillNotReady": "hadrlab.errors",
    "ManifestError": "hadrlab.errors",
    "QuizError": "hadrlab.errors",
    "MonitoringError": "hadrlab.errors",
    "GradingError": "hadrlab.errors",
    # processes
    "Child": "hadrlab.processes",
    "home_dir": "hadrlab.processes",
    "find_free_port": "hadrlab.processes",
    "check_port_free": "hadrlab.processes",
    "start_process": "hadrlab.processes",
    "wait_for_tcp": "hadrlab.processes",
    "wait_for_http": "hadrlab.processes",
    "wait_until": "hadrlab.processes",
    "stop_children": "hadrlab.processes",
    "stop_registered": "hadrlab.processes",
    # the course's own files (manifests, quizzes), wherever a notebook runs
    "course_root": "hadrlab.course",
    "course_file": "hadrlab.course",
    # serving: the model API (Lab 01)
    "start_model_api": "hadrlab.serving",
    "predict_payload": "hadrlab.serving",
    # platform
    "get_platform": "hadrlab.platform.base",
    "backend_name": "hadrlab.platform.base",
    "Platform": "hadrlab.platform.base",
    "Replica": "hadrlab.platform.base",
    "LocalPlatform": "hadrlab.platform.local",
    "KubePlatform": "hadrlab.platform.kube",
    "load_manifest": "hadrlab.platform.manifests",
    "validate_manifests": "hadrlab.platform.manifests",
    # quizzes
    "load_quiz": "hadrlab.quiz",
    "Quiz": "hadrlab.quiz",
    "AnswerResult": "hadrlab.quiz",
    "answer_sheet": "hadrlab.answers",
    "AnswerSheet": "hadrlab.answers",
    # grading and generated labs
    "CheckResult": "hadrlab.grading",
    "Scoreboard": "hadrlab.grading",
    "NotRun": "hadrlab.grading",
    "grade_notebooks": "hadrlab.grading",
    "generate_labs": "hadrlab.notebooks",
    "check_labs": "hadrlab.notebooks",
    # reliability maths (Lab 00)
    "nines": "hadrlab.reliability",
    "downtime_budget": "hadrlab.reliability",
    "error_budget": "hadrlab.reliability",
    "burn_rate": "hadrlab.reliability",
    "time_to_exhaust": "hadrlab.reliability",
    "availability_from_mtbf": "hadrlab.reliability",
    "series": "hadrlab.reliability",
    "parallel": "hadrlab.reliability",
    "replicas_needed": "hadrlab.reliability",
    "format_duration": "hadrlab.reliability",
    "ServingPath": "hadrlab.reliability",
    "Component": "hadrlab.reliability",
    # calculators (Lab 00)
    "downtime_calculator": "hadrlab.calculators",
    "path_calculator": "hadrlab.calculators",
    # replication (Labs 00, 02)
    "find_redis_server": "hadrlab.replication",
    "start_redis": "hadrlab.replication",
    "start_redis_pair": "hadrlab.replication",
    "RedisNode": "hadrlab.replication",
    "RedisPair": "hadrlab.replication",
    "WriteLatencyResult": "hadrlab.replication",
    "ReplicationLagResult": "hadrlab.replication",
    "measure_write_latency": "hadrlab.replication",
    "measure_replication_lag": "hadrlab.replication",
    "replication_offset_lag": "hadrlab.replication",
    # load (Labs 01-03): locust runs in a child process, never in the kernel
    "run_load": "hadrlab.load",
    "start_load": "hadrlab.load",
    "LoadResult": "hadrlab.load",
    "LoadRun": "hadrlab.load",
    # metrics on request timelines
    "availability": "hadrlab.metrics",
    "per_window": "hadrlab.metrics",
    "error_window": "hadrlab.metrics",
    "time_to_recover": "hadrlab.metrics",
    "latency_percentiles": "hadrlab.metrics",
    "budget_burn": "hadrlab.metrics",
    "summarize": "hadrlab.metrics",
    "compare": "hadrlab.metrics",
    "RunSummary": "hadrlab.metrics",
    # plots
    "plot_timeline": "hadrlab.plots",
    "plot_comparison": "hadrlab.plots",
    # scenarios: one configuration, one load, one fault (Lab 01)
    "run_scenario": "hadrlab.scenarios",
    "ScenarioResult": "hadrlab.scenarios",
    "probe_timings": "hadrlab.scenarios",
    "ProbeTimings": "hadrlab.scenarios",
    "deployment_of": "hadrlab.scenarios",
    "container_of": "hadrlab.scenarios",
    "service_of": "hadrlab.scenarios",
    "set_env": "hadrlab.scenarios",
    "get_env": "hadrlab.scenarios",
    # faults (Labs 01-03): a fault-injecting TCP proxy, process faults, a fault timeline
    "start_proxy": "hadrlab.faults",
    "FaultProxy": "hadrlab.faults",
    "Injector": "hadrlab.faults",
    # feature store in two regions with Sentinel, and its RTO/RPO (Lab 02)
    "start_feature_store": "hadrlab.featurestore",
    "start_kube_feature_store": "hadrlab.platform.kube_featurestore",
    "KubeFeatureStore": "hadrlab.platform.kube_featurestore",
    "start_kube_fraud_services": "hadrlab.platform.kube_fraud",
    "FeatureStore": "hadrlab.featurestore",
    "Region": "hadrlab.featurestore",
    "measure_write_rto": "hadrlab.featurestore",
    "measure_rpo": "hadrlab.featurestore",
    "WriteRtoResult": "hadrlab.featurestore",
    "RpoResult": "hadrlab.featurestore",
    # fraud scoring service and its feature writer (Lab 02)
    "generate_transactions": "hadrlab.fraud",
    "write_features": "hadrlab.fraud",
    "start_fraud_api": "hadrlab.fraud",
    "start_feature_writer": "hadrlab.fraud",
    "writer_stats": "hadrlab.fraud",
    "writer_timeline": "hadrlab.fraud",
    # health-checking sidecar, read-failover policies, alerts (Lab 02)
    "ThresholdPolicy": "hadrlab.sidecar",
    "start_sidecar": "hadrlab.sidecar",
    "start_alert_receiver": "hadrlab.sidecar",
    "write_policy_module": "hadrlab.sidecar",
    "fetch_alerts": "hadrlab.sidecar",
    # monitoring: Prometheus and Alertmanager
    "Monitoring": "hadrlab.monitoring",
    "start_monitoring": "hadrlab.monitoring",
    "monitoring_available": "hadrlab.monitoring",
    "render_rules": "hadrlab.alert_rules",
    # DR drills on the feature store under load (Lab 02)
    "run_drill": "hadrlab.drills",
    "DrillResult": "hadrlab.drills",
    "write_policy_class": "hadrlab.drills",
    "fail_back": "hadrlab.drills",
    "summary_table": "hadrlab.drills",
    "plot_reads": "hadrlab.drills",
    "plot_lag": "hadrlab.drills",
    "plot_dr_summary": "hadrlab.drills",
    # model registry and the online API that survives its outage (Lab 03)
    "start_registry": "hadrlab.registry",
    "Registry": "hadrlab.registry",
    "RegistryClient": "hadrlab.registry",
    "ModelVersion": "hadrlab.registry",
    "start_online_api": "hadrlab.registry",
    "RegistryError": "hadrlab.registry",
    "RegistryUnavailable": "hadrlab.registry",
    "ModelNotFound": "hadrlab.registry",
    "IntegrityError": "hadrlab.registry",
    "retrying": "hadrlab.resilience",
    "registry_breaker": "hadrlab.resilience",
    "BreakerTimeline": "hadrlab.resilience",
    "ModelLoader": "hadrlab.resilience",
    "LoadedModel": "hadrlab.resilience",
    "ModelUnavailable": "hadrlab.resilience",
    # data contracts, continuous training with checkpoints, exactly-once batch scoring (Lab 03)
    "DataContract": "hadrlab.contracts",
    "ContractResult": "hadrlab.contracts",
    "validate_training_data": "hadrlab.contracts",
    "corrupt": "hadrlab.contracts",
    "gate": "hadrlab.contracts",
    "GateDecision": "hadrlab.contracts",
    "make_training_data": "hadrlab.training",
    "write_training_data": "hadrlab.training",
    "read_training_data": "hadrlab.training",
    "save_model_file": "hadrlab.training",
    "start_trainer": "hadrlab.training",
    "trainer_status": "hadrlab.training",
    "TrainerStatus": "hadrlab.training",
    "make_batch_input": "hadrlab.batch",
    "start_batch_job": "hadrlab.batch",
    "run_batch_job": "hadrlab.batch",
    "audit_batch": "hadrlab.batch",
    "batch_status": "hadrlab.batch",
    "BatchAudit": "hadrlab.batch",
    "BatchResult": "hadrlab.batch",
    # chaos experiments on the pipeline, run by Chaos Toolkit, and the resilience report (Lab 03)
    "Hardening": "hadrlab.chaos",
    "UNHARDENED": "hadrlab.chaos",
    "HARDENED": "hadrlab.chaos",
    "Pipeline": "hadrlab.chaos",
    "start_pipeline": "hadrlab.chaos",
    "start_kube_pipeline": "hadrlab.platform.kube_pipeline",
    "list_experiments": "hadrlab.chaos",
    "load_experiment": "hadrlab.chaos",
    "write_experiment": "hadrlab.chaos",
    "toy_experiment": "hadrlab.chaos",
    "run_experiment": "hadrlab.chaos",
    "read_journal": "hadrlab.chaos",
    "ExperimentResult": "hadrlab.chaos",
    "comparison_table": "hadrlab.report",
    "plot_measurements": "hadrlab.report",
    "plot_scorecard": "hadrlab.report",
    "write_report": "hadrlab.report",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hadrlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
